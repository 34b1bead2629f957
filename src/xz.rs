//! Multi-threaded decoding of multi-block `.xz` files.
//!
//! `xz -T0` (the default of xz 5.6 and later) cuts its input into independent blocks and
//! records each block's sizes in the stream index at the end of the file. [`layout`]
//! reads that index; [`ParallelDecoder`] then reads the file once, front to back (so a
//! hashing or progress reader around it sees every byte in order), hands each block to
//! a pool of workers, and returns the decoded blocks in order. Each worker decodes its
//! block with liblzma as a one-block stream built around it (same stream flags, an
//! index with the block's sizes), so liblzma checks the block's integrity check and
//! sizes exactly as it would in the original file.
//!
//! A file with one block, an unreadable index, or blocks too large to hold a few of in
//! memory is decoded by the ordinary single-threaded decoder instead; the output is the
//! same either way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

/// Blocks larger than this (uncompressed) are not decoded in parallel: a few of them are
/// in memory at once.
pub const MAX_PARALLEL_BLOCK: u64 = 64 << 20;

const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];

/// One block of an .xz file, as its stream index describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Offset of the block header in the file.
    pub offset: u64,
    /// Block header + compressed data + check, without the padding.
    pub unpadded: u64,
    /// Size of the decoded block.
    pub uncompressed: u64,
    /// The stream flags of the stream the block belongs to.
    pub flags: [u8; 2],
}

/// Where the blocks of an .xz file are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Every block, in file order.
    pub blocks: Vec<Block>,
    /// The file's length.
    pub len: u64,
}

/// Read the stream indexes of the .xz file at `path` (every concatenated stream, stream
/// padding allowed). `None` if the file is not a well-formed .xz file: the ordinary
/// decoder then reports what is wrong.
pub fn layout(path: &Path) -> Option<Layout> {
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut streams = Vec::new();
    let mut end = len;
    while end > 0 {
        // Stream padding: zero bytes in multiples of four.
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, end.checked_sub(4)?).ok()?;
        if word == [0; 4] {
            end -= 4;
            continue;
        }
        let (start, blocks) = stream_before(&file, end)?;
        streams.push(blocks);
        end = start;
    }
    streams.reverse();
    Some(Layout {
        blocks: streams.into_iter().flatten().collect(),
        len,
    })
}

/// Parse the stream that ends at `end`: its start offset and its blocks.
fn stream_before(file: &File, end: u64) -> Option<(u64, Vec<Block>)> {
    let mut footer = [0u8; 12];
    file.read_exact_at(&mut footer, end.checked_sub(12)?).ok()?;
    if footer[10..12] != FOOTER_MAGIC || crc32(&footer[4..10]) != le32(&footer[0..4]) {
        return None;
    }
    let flags = [footer[8], footer[9]];
    let index_size = (u64::from(le32(&footer[4..8])) + 1) * 4;
    let index_start = (end - 12).checked_sub(index_size)?;
    let mut index = vec![0u8; usize::try_from(index_size).ok()?];
    file.read_exact_at(&mut index, index_start).ok()?;
    let records = parse_index(&index)?;
    let blocks_len: u64 = records.iter().try_fold(0u64, |acc, &(unpadded, _)| {
        acc.checked_add(round4(unpadded))
    })?;
    let start = index_start.checked_sub(blocks_len)?.checked_sub(12)?;
    let mut header = [0u8; 12];
    file.read_exact_at(&mut header, start).ok()?;
    if header[0..6] != HEADER_MAGIC
        || header[6..8] != flags
        || crc32(&header[6..8]) != le32(&header[8..12])
    {
        return None;
    }
    let mut offset = start + 12;
    let blocks = records
        .into_iter()
        .map(|(unpadded, uncompressed)| {
            let b = Block {
                offset,
                unpadded,
                uncompressed,
                flags,
            };
            offset += round4(unpadded);
            b
        })
        .collect();
    Some((start, blocks))
}

/// The records (unpadded size, uncompressed size) of an index field.
fn parse_index(index: &[u8]) -> Option<Vec<(u64, u64)>> {
    let (body, crc) = index.split_at(index.len().checked_sub(4)?);
    if crc32(body) != le32(crc) || body.first() != Some(&0) {
        return None;
    }
    let mut pos = 1;
    let count = varint(body, &mut pos)?;
    let mut records = Vec::new();
    for _ in 0..count {
        let unpadded = varint(body, &mut pos)?;
        let uncompressed = varint(body, &mut pos)?;
        if unpadded == 0 {
            return None;
        }
        records.push((unpadded, uncompressed));
    }
    // What is left is index padding: up to three zero bytes.
    let rest = &body[pos..];
    (rest.len() < 4 && rest.iter().all(|&b| b == 0) && body.len() % 4 == 0).then_some(records)
}

/// An .xz multibyte integer at `*pos`.
fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..9 {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A multibyte integer has no superfluous zero continuation byte.
            return (i == 0 || b != 0).then_some(value);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn round4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A complete one-block .xz stream around `block`, whose bytes (padded to four bytes,
/// as in the file) `fill` reads straight into place.
fn single_block_stream(
    block: &Block,
    fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    let size = usize::try_from(round4(block.unpadded)).map_err(io::Error::other)?;
    let mut s = Vec::with_capacity(size + 64);
    s.extend_from_slice(&HEADER_MAGIC);
    s.extend_from_slice(&block.flags);
    s.extend_from_slice(&crc32(&block.flags).to_le_bytes());
    let start = s.len();
    s.resize(start + size, 0);
    fill(&mut s[start..])?;
    let mut index = vec![0u8];
    put_varint(&mut index, 1);
    put_varint(&mut index, block.unpadded);
    put_varint(&mut index, block.uncompressed);
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let index_crc = crc32(&index);
    index.extend_from_slice(&index_crc.to_le_bytes());
    let backward = (index.len() as u32 / 4) - 1;
    s.extend_from_slice(&index);
    let mut tail = Vec::with_capacity(6);
    tail.extend_from_slice(&backward.to_le_bytes());
    tail.extend_from_slice(&block.flags);
    s.extend_from_slice(&crc32(&tail).to_le_bytes());
    s.extend_from_slice(&tail);
    s.extend_from_slice(&FOOTER_MAGIC);
    Ok(s)
}

/// Decode one block, given as a one-block stream, into `out`, which must end up holding
/// exactly `block.uncompressed` bytes.
fn decode_block(block: &Block, stream: &[u8], mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    let cap = usize::try_from(block.uncompressed).map_err(io::Error::other)?;
    out.clear();
    out.reserve_exact(cap);
    xz2::read::XzDecoder::new(stream).read_to_end(&mut out)?;
    if out.len() as u64 != block.uncompressed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "xz block size does not match the index",
        ));
    }
    Ok(out)
}

/// Whether `layout` is worth decoding in parallel with `workers` threads.
pub fn parallel_worthwhile(layout: &Layout, workers: usize) -> bool {
    workers > 1
        && layout.blocks.len() > 1
        && layout
            .blocks
            .iter()
            .all(|b| b.uncompressed <= MAX_PARALLEL_BLOCK)
}

/// A block to decode: its sequence number, the one-block stream around it, and a
/// buffer to decode into.
struct Job {
    seq: usize,
    block: Block,
    stream: Vec<u8>,
    out: Vec<u8>,
}

/// What the workers send back: a decoded block (by sequence number), or the end.
enum Done {
    Block(usize, io::Result<Vec<u8>>),
    /// The reader reached the end of the file (or failed reading it).
    End(io::Result<()>),
}

/// A reader of the decoded contents of a multi-block .xz file, decoded by a pool of
/// threads. At most `workers` blocks are in flight (read, being decoded, or decoded
/// and waiting) besides the one being read, each decoded into a buffer that is reused,
/// so memory is bounded by the block size, not the file size.
pub struct ParallelDecoder {
    results: mpsc::Receiver<Done>,
    /// One token (an output buffer to reuse) per block the reader may dispatch; handed
    /// back as blocks are consumed.
    tokens: mpsc::SyncSender<Vec<u8>>,
    waiting: BTreeMap<usize, io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    next: usize,
    total: usize,
    finished: bool,
}

impl ParallelDecoder {
    /// Decode the file that `raw` reads from its first byte, whose blocks are `layout`,
    /// with `workers` threads. `raw` is read sequentially to its end on a thread of its
    /// own.
    pub fn new(mut raw: impl Read + Send + 'static, layout: Layout, workers: usize) -> Self {
        let workers = workers.max(1);
        let in_flight = workers;
        let (token_tx, token_rx) = mpsc::sync_channel::<Vec<u8>>(in_flight + 1);
        for _ in 0..in_flight {
            // The channel has room for all of them.
            let _ = token_tx.try_send(Vec::new());
        }
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        for _ in 0..workers {
            let jobs = job_rx.clone();
            let done = done_tx.clone();
            std::thread::spawn(move || loop {
                let job = match jobs.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(Job {
                    seq,
                    block,
                    stream,
                    out,
                }) = job
                else {
                    return;
                };
                if done
                    .send(Done::Block(seq, decode_block(&block, &stream, out)))
                    .is_err()
                {
                    return;
                }
            });
        }
        let total = layout.blocks.len();
        std::thread::spawn(move || {
            let end = read_blocks(&mut raw, &layout, &job_tx, &token_rx);
            drop(job_tx);
            let _ = done_tx.send(Done::End(end));
        });
        ParallelDecoder {
            results: done_rx,
            tokens: token_tx,
            waiting: BTreeMap::new(),
            current: Vec::new(),
            pos: 0,
            next: 0,
            total,
            finished: false,
        }
    }

    /// Make the next block current, waiting for the workers as needed. `Ok(false)` at
    /// the end of the file.
    fn advance(&mut self) -> io::Result<bool> {
        loop {
            if self.next < self.total {
                if let Some(result) = self.waiting.remove(&self.next) {
                    self.next += 1;
                    let decoded = result?;
                    // The reader may read one more block, into the buffer just used up.
                    let spent = std::mem::replace(&mut self.current, decoded);
                    let _ = self.tokens.try_send(spent);
                    self.pos = 0;
                    return Ok(true);
                }
            } else if self.finished {
                return Ok(false);
            }
            match self.results.recv() {
                Ok(Done::Block(seq, result)) => {
                    self.waiting.insert(seq, result);
                }
                Ok(Done::End(Ok(()))) => self.finished = true,
                Ok(Done::End(Err(e))) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other("xz decoder threads stopped early"));
                }
            }
        }
    }
}

impl Read for ParallelDecoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if !self.advance()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read the whole file front to back, sending each block to the workers as a job once a
/// token allows it. Ends when every byte was read.
fn read_blocks(
    raw: &mut dyn Read,
    layout: &Layout,
    jobs: &mpsc::SyncSender<Job>,
    tokens: &mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut at = 0u64;
    for (seq, block) in layout.blocks.iter().enumerate() {
        skip(raw, block.offset - at)?;
        let stream = single_block_stream(block, |buf| raw.read_exact(buf))?;
        at = block.offset + round4(block.unpadded);
        let Ok(out) = tokens.recv() else {
            // The consumer has gone away.
            return Ok(());
        };
        let job = Job {
            seq,
            block: *block,
            stream,
            out,
        };
        if jobs.send(job).is_err() {
            return Ok(());
        }
    }
    // Index, footer, padding and any bytes after: read so that every byte is seen.
    let rest = io::copy(raw, &mut io::sink())?;
    if at + rest != layout.len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "xz file changed while it was read",
        ));
    }
    Ok(())
}

fn skip(raw: &mut dyn Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut raw.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "xz file ended early",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A multi-block .xz file made by liblzma's multi-threaded encoder.
    fn multi_block(data: &[u8], block_size: u64) -> Vec<u8> {
        let stream = xz2::stream::MtStreamBuilder::new()
            .threads(2)
            .block_size(block_size)
            .preset(1)
            .check(xz2::stream::Check::Crc64)
            .encoder()
            .expect("encoder");
        let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(data).expect("compress");
        enc.finish().expect("finish")
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(bytes).expect("write");
        f
    }

    #[test]
    fn multi_block_file_decodes_in_parallel_to_the_same_bytes() {
        let data = sample(3_000_000);
        let mut xz = multi_block(&data, 256 * 1024);
        // A second stream and stream padding, as `cat a.xz b.xz` and xz allow.
        xz.extend_from_slice(&multi_block(&data[..100_000], 64 * 1024));
        xz.extend_from_slice(&[0; 8]);
        let f = write_temp(&xz);
        let layout = layout(f.path()).expect("layout");
        assert_eq!(layout.blocks.len(), 12 + 2);
        assert!(parallel_worthwhile(&layout, 2));
        let mut out = Vec::new();
        ParallelDecoder::new(File::open(f.path()).expect("open"), layout, 3)
            .read_to_end(&mut out)
            .expect("decode");
        assert_eq!(out.len(), data.len() + 100_000);
        assert!(out[..data.len()] == data[..] && out[data.len()..] == data[..100_000]);
    }

    #[test]
    fn corrupt_block_is_an_error() {
        let data = sample(1_000_000);
        let mut xz = multi_block(&data, 128 * 1024);
        let layout_ok = layout(write_temp(&xz).path()).expect("layout");
        // Flip a byte inside the third block's compressed data: the index still parses,
        // the block's check must fail.
        let b = layout_ok.blocks[2];
        xz[(b.offset + b.unpadded / 2) as usize] ^= 0x55;
        let f = write_temp(&xz);
        let layout = layout(f.path()).expect("index is intact");
        let mut out = Vec::new();
        let err = ParallelDecoder::new(File::open(f.path()).expect("open"), layout, 2)
            .read_to_end(&mut out)
            .expect_err("corrupt block");
        assert!(out.len() < data.len(), "{err}");
    }

    #[test]
    fn single_block_and_damaged_files_have_no_parallel_layout() {
        let data = sample(200_000);
        let single = {
            let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
            enc.write_all(&data).expect("compress");
            enc.finish().expect("finish")
        };
        let l = layout(write_temp(&single).path()).expect("layout");
        assert_eq!(l.blocks.len(), 1);
        assert!(!parallel_worthwhile(&l, 2));
        let mut truncated = multi_block(&data, 64 * 1024);
        truncated.truncate(truncated.len() - 5);
        assert_eq!(layout(write_temp(&truncated).path()), None);
        let mut bad_index = multi_block(&data, 64 * 1024);
        let n = bad_index.len();
        bad_index[n - 16] ^= 1; // inside the index: its CRC32 no longer matches
        assert_eq!(layout(write_temp(&bad_index).path()), None);
    }

    #[test]
    fn file_that_grows_after_the_index_was_read_is_an_error() {
        let data = sample(500_000);
        let xz = multi_block(&data, 64 * 1024);
        let f = write_temp(&xz);
        let layout = layout(f.path()).expect("layout");
        let mut longer = xz.clone();
        longer.extend_from_slice(&[0; 4]);
        let mut out = Vec::new();
        let err = ParallelDecoder::new(io::Cursor::new(longer), layout, 2)
            .read_to_end(&mut out)
            .expect_err("changed file");
        assert!(err.to_string().contains("changed"), "{err}");
    }
}
