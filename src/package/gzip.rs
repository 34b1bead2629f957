//! A multi-threaded gzip writer, in the manner of pigz: the input is cut into 1 MiB
//! chunks, each compressed independently on a worker thread as raw deflate ending in a
//! sync flush (so the pieces join into one deflate stream), and the pieces are written
//! in order on the caller's thread under one gzip header, closed by an empty final
//! block and the trailer (the CRC-32 combined from the chunks' CRCs).
//!
//! The result is a single ordinary gzip member, which every reader accepts (some, like
//! flate2's `GzDecoder`, read only the first member of a file). It depends only on the
//! input and the level, never on the number of threads or on how the caller splits its
//! writes, so packages stay reproducible. Input smaller than one chunk is compressed on
//! the caller's thread and no worker is started. At most `workers + 1` chunks are in
//! flight, so memory does not grow with the input.
//!
//! The first error (writing to the inner writer, or compressing) stops the pool: the
//! workers are told to quit and joined, and that error is returned by this and every
//! later call, so a caller that keeps writing after a failure (as `tar::Builder`'s drop
//! does) gets the error at once instead of waiting for pieces that will never come.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes of input per independently compressed chunk (deflate's window is 32 KiB).
pub const CHUNK: usize = 1 << 20;

/// A compressed chunk: its sequence number, deflate bytes, CRC-32 and input length.
type Piece = (usize, io::Result<Vec<u8>>, u32, u64);

/// Compress one chunk into a [`Piece`].
fn piece(seq: usize, chunk: &[u8], level: u32) -> Piece {
    (
        seq,
        deflate_chunk(chunk, level),
        crc32fast::hash(chunk),
        chunk.len() as u64,
    )
}

/// The worker pool, started with the first full chunk.
struct Pool {
    jobs: Option<mpsc::SyncSender<(usize, Vec<u8>)>>,
    results: mpsc::Receiver<Piece>,
    threads: Vec<JoinHandle<()>>,
}

/// A gzip writer that compresses on `workers` threads (see the module documentation).
pub struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    level: u32,
    workers: usize,
    buf: Vec<u8>,
    pool: Option<Pool>,
    /// Pieces that arrived before their turn.
    early: BTreeMap<usize, Piece>,
    sent: usize,
    written: usize,
    crc: crc32fast::Hasher,
    total: u64,
    header_written: bool,
    /// The first error, repeated by every later call.
    failed: Option<(io::ErrorKind, String)>,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// A gzip writer at `level` (1–9) with no name and a zero timestamp, compressing on
    /// up to `workers` threads.
    pub fn new(inner: W, level: u32, workers: usize) -> Self {
        ParallelGzEncoder {
            inner: Some(inner),
            level: level.min(9),
            workers: workers.max(1),
            buf: Vec::new(),
            pool: None,
            early: BTreeMap::new(),
            sent: 0,
            written: 0,
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
            failed: None,
        }
    }

    /// The stored first error, if any, as a fresh `io::Error`.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    /// Remember `e` as the stream's failure and stop the workers, then return it.
    fn fail(&mut self, e: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some((e.kind(), e.to_string()));
        }
        self.stop_pool();
        e
    }

    /// Close the job queue and the result queue and join the workers (each finishes at
    /// most the one chunk it is compressing).
    fn stop_pool(&mut self) {
        if let Some(mut pool) = self.pool.take() {
            pool.jobs.take();
            drop(pool.results);
            for t in pool.threads.drain(..) {
                let _ = t.join();
            }
        }
        self.early.clear();
    }

    fn inner(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // Magic, deflate, no flags, mtime 0, extra flags as gzip sets them, Unix.
            let xfl = match self.level {
                9 => 2,
                0 | 1 => 4,
                _ => 0,
            };
            self.inner()?
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Write one finished piece and fold its CRC into the total.
    fn emit(&mut self, piece: Piece) -> io::Result<()> {
        let (_, bytes, crc, len) = piece;
        let bytes = bytes?;
        self.write_header()?;
        self.inner()?.write_all(&bytes)?;
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
        self.written += 1;
        Ok(())
    }

    /// Write every piece that is next in line, waiting for the workers until at most
    /// `keep` pieces are still outstanding.
    fn drain(&mut self, keep: usize) -> io::Result<()> {
        loop {
            if let Some(piece) = self.early.remove(&self.written) {
                self.emit(piece)?;
                continue;
            }
            if self.sent - self.written <= keep {
                return Ok(());
            }
            let Some(pool) = &self.pool else {
                return Ok(());
            };
            let piece = pool
                .results
                .recv()
                .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
            self.early.insert(piece.0, piece);
        }
    }

    fn start_pool(&mut self) -> Pool {
        let (job_tx, job_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(self.workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Piece>();
        let level = self.level;
        let threads = (0..self.workers)
            .map(|_| {
                let jobs = job_rx.clone();
                let done = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = match jobs.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, chunk)) = job else { return };
                    if done.send(piece(seq, &chunk, level)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(job_tx),
            results: done_rx,
            threads,
        }
    }

    /// Hand the buffered full chunk to the pool.
    fn dispatch(&mut self) -> io::Result<()> {
        self.check()?;
        self.dispatch_inner().map_err(|e| self.fail(e))
    }

    fn dispatch_inner(&mut self) -> io::Result<()> {
        if self.pool.is_none() {
            self.pool = Some(self.start_pool());
        }
        self.drain(self.workers)?;
        let chunk = std::mem::take(&mut self.buf);
        let seq = self.sent;
        let sent = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .is_some_and(|jobs| jobs.send((seq, chunk)).is_ok());
        if !sent {
            return Err(io::Error::other("gzip worker threads stopped"));
        }
        self.sent += 1;
        Ok(())
    }

    /// Compress what is left, write the final block and the trailer, and return the
    /// inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        self.finish_inner().map_err(|e| self.fail(e))
    }

    fn finish_inner(&mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            // The last, partial chunk, on this thread.
            let chunk = std::mem::take(&mut self.buf);
            let piece = piece(self.sent, &chunk, self.level);
            self.drain(0)?;
            self.sent += 1;
            self.emit(piece)?;
        } else {
            self.drain(0)?;
        }
        self.write_header()?;
        let crc = self.crc.clone().finalize();
        let total = self.total;
        let level = self.level;
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        inner.write_all(&final_block(level)?)?;
        inner.write_all(&crc.to_le_bytes())?;
        // ISIZE: the input length modulo 2^32.
        inner.write_all(&(total as u32).to_le_bytes())?;
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = data.len();
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(CHUNK);
            }
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.dispatch()?;
            }
        }
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Whole chunks only: flushing mid-chunk would make the output depend on when
        // callers flush.
        self.check()?;
        let flushed = self
            .drain(usize::MAX)
            .and_then(|_| match self.inner.as_mut() {
                Some(w) => w.flush(),
                None => Ok(()),
            });
        flushed.map_err(|e| self.fail(e))
    }
}

impl<W: Write> Drop for ParallelGzEncoder<W> {
    fn drop(&mut self) {
        self.stop_pool();
    }
}

/// `chunk` as raw deflate at `level`, ending in a sync flush (byte-aligned, not final).
fn deflate_chunk(chunk: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(chunk.len() / 2 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = c.total_in() as usize;
        let before = c.total_out();
        let status = c
            .compress_vec(&chunk[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == chunk.len();
        // The flush is complete when output room is left over, or when zlib refuses
        // a repeated flush (nothing more to write).
        let flushed =
            out.len() < out.capacity() || (status == Status::BufError && c.total_out() == before);
        if all_in && flushed {
            return Ok(out);
        }
    }
}

/// The empty final deflate block that closes the stream.
fn final_block(level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(16);
    c.compress_vec(&[], &mut out, FlushCompress::Finish)
        .map_err(io::Error::other)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Mostly repetitive, some noise: compressible like code.
                if i % 7 == 0 {
                    x as u8
                } else {
                    (i / 3 % 61) as u8
                }
            })
            .collect()
    }

    fn compress(data: &[u8], level: u32, workers: usize, piece: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::new(Vec::new(), level, workers);
        for part in data.chunks(piece) {
            enc.write_all(part).expect("write");
        }
        enc.finish().expect("finish")
    }

    #[test]
    fn output_is_one_gzip_member_that_decodes_to_the_input() {
        for len in [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let data = sample(len);
            let gz = compress(&data, 6, 3, 100_000);
            // flate2's GzDecoder reads exactly one member: all bytes must be in it.
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .expect("decode");
            assert_eq!(back.len(), data.len(), "len {len}");
            assert!(back == data, "len {len}");
            assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        }
    }

    #[test]
    fn output_does_not_depend_on_threads_or_write_sizes() {
        let data = sample(5 * CHUNK + 777);
        let one = compress(&data, 5, 1, CHUNK);
        assert!(one == compress(&data, 5, 4, 4096));
        assert!(one == compress(&data, 5, 2, 3 * CHUNK + 1));
        assert!(one != compress(&data, 1, 2, CHUNK), "level is honoured");
    }

    /// A writer that takes `room` bytes, then fails like a full disk.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Run `f` on a thread; fail the test if it has not returned within a minute (a
    /// deadlock never returns; debug builds compress slowly on a loaded machine).
    fn within_seconds(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("the gzip writer hung after a write error");
    }

    #[test]
    fn a_write_error_is_returned_by_every_later_call_without_hanging() {
        within_seconds(|| {
            let data = sample(4 * CHUNK);
            let mut enc = ParallelGzEncoder::new(Full { room: CHUNK / 4 }, 1, 2);
            let err = data
                .chunks(64 * 1024)
                .find_map(|part| enc.write_all(part).err())
                .expect("the full writer must fail");
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            // Writing on after the failure (as tar::Builder's drop does) must not wait
            // for the stopped workers.
            for _ in 0..3 {
                let again = enc.write_all(&data[..2 * CHUNK]).expect_err("still failed");
                assert!(again.to_string().contains("space"), "{again}");
            }
            assert!(enc.flush().is_err());
            assert!(enc.finish().is_err());
        });
    }

    #[test]
    fn a_failure_in_finish_is_reported() {
        within_seconds(|| {
            let data = sample(3 * CHUNK + 10);
            let mut enc = ParallelGzEncoder::new(Full { room: 100 }, 1, 3);
            // Chunks may still be in flight: the error comes from write or finish.
            let failed = enc.write_all(&data).is_err();
            assert!(failed || enc.finish().is_err());
        });
    }

    #[test]
    fn gzip_tool_accepts_it() {
        let data = sample(2 * CHUNK + 5);
        let gz = compress(&data, 5, 2, 65536);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).expect("write");
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .expect("gzip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data);
    }
}
