//! A reader that bounds what the `tar` crate may hold in memory.
//!
//! The `tar` crate reads a GNU long name (`L`), long link (`K`) or PAX extended header
//! (`x`) completely into memory before it returns the entry it describes, however large
//! the header's size field says it is: a few hundred bytes of compressed input can ask
//! for gigabytes. [`TarGuard`] sits between the (decompressed) tar stream and the crate
//! and reads every header block before passing it on. A metadata header (`L`, `K`, `x`,
//! `g`) whose size is over the limit is refused with an error before any of its content
//! is read. To know where the next header is, it follows the stream as the crate does:
//! content sizes rounded up to 512-byte blocks, a PAX `size` record overriding the size
//! of the entry that follows it, GNU sparse extension blocks, and the end of the archive
//! at the first all-zero block (everything after it is passed through unexamined).
//!
//! Every tar reader in korgpkg goes through it: payload staging (upstream tarballs and
//! kernel module tarballs) and package inspection (`control.tar`, `data.tar`, the outer
//! tar of an ipk).

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use crate::error::Error;

/// The largest GNU long name/link or PAX header korgpkg reads (4 MiB; a path is at
/// most 4 KiB on Linux, so this only stops hostile input).
pub const MAX_TAR_METADATA: u64 = 4 << 20;

const BLOCK: usize = 512;

/// Why a [`TarGuard`] refused a stream; carried inside the `io::Error` it returns.
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The refusal message if `e` came from a [`TarGuard`].
pub fn refusal(e: &io::Error) -> Option<&str> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
        .map(|r| r.0.as_str())
}

/// An input error about the tar stream `path`: a guard's refusal as it is, any other
/// read error after `what` (`"corrupt or truncated tarball"`).
pub fn input_error(path: &Path, what: &str, e: &io::Error) -> Error {
    match refusal(e) {
        Some(m) => Error::input(path, m.to_string()),
        None => Error::input(path, format!("{what}: {e}")),
    }
}

/// Wraps a tar stream; see the module documentation.
pub struct TarGuard<R> {
    inner: R,
    limit: u64,
    /// The current header block and how much of it has been filled and handed out.
    block: Box<[u8; BLOCK]>,
    filled: usize,
    served: usize,
    /// Bytes (content and padding) of the current entry not yet passed on.
    remaining: u64,
    /// Content of the PAX header being passed on, and how many bytes of it are left.
    pax: Option<(Vec<u8>, u64)>,
    /// The `size` record of the last complete PAX header, for the entry that follows it.
    pax_size: Option<u64>,
    /// Whether a PAX header is waiting for its entry.
    pax_pending: bool,
    /// Padded content size of a GNU sparse entry whose extension blocks come first.
    sparse_content: Option<u64>,
    /// Past the end of the archive (or at a header the crate itself rejects).
    passthrough: bool,
    /// Stream offset of the current block, for messages.
    offset: u64,
}

impl<R: Read> TarGuard<R> {
    /// Guard `inner` with the default limit, [`MAX_TAR_METADATA`].
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_TAR_METADATA)
    }

    /// Guard `inner`, refusing metadata headers larger than `limit` bytes.
    pub fn with_limit(inner: R, limit: u64) -> Self {
        TarGuard {
            inner,
            limit,
            block: Box::new([0; BLOCK]),
            filled: 0,
            served: 0,
            remaining: 0,
            pax: None,
            pax_size: None,
            pax_pending: false,
            sparse_content: None,
            passthrough: false,
            offset: 0,
        }
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The wrapped reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Read the next block; `false` at a clean end of stream.
    fn fill_block(&mut self) -> io::Result<bool> {
        self.offset += self.filled as u64;
        self.filled = 0;
        self.served = 0;
        while self.filled < BLOCK {
            match self.inner.read(&mut self.block[self.filled..]) {
                Ok(0) => break,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.filled > 0)
    }

    /// Look at a complete header block before it is passed on.
    fn inspect(&mut self) -> io::Result<()> {
        if self.filled < BLOCK {
            // A truncated header: the crate reports it.
            self.passthrough = true;
            return Ok(());
        }
        if let Some(content) = self.sparse_content {
            // A GNU sparse extension block; its last byte but 7 says whether another follows.
            if self.block[504] != 1 {
                self.sparse_content = None;
                self.remaining = content;
            }
            return Ok(());
        }
        if self.block.iter().all(|&b| b == 0) {
            // The crate stops at the first zero block.
            self.passthrough = true;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.block[..]);
        let kind = header.entry_type();
        let Ok(size) = header.entry_size() else {
            self.passthrough = true;
            return Ok(());
        };
        let what = match kind.as_byte() {
            b'L' => Some("GNU long name"),
            b'K' => Some("GNU long link name"),
            b'x' => Some("PAX extended header"),
            b'g' => Some("PAX global header"),
            _ => None,
        };
        if let Some(what) = what {
            if size > self.limit {
                let name = String::from_utf8_lossy(&header.as_old().name);
                let name = name.trim_end_matches('\0');
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Refused(format!(
                        "tar header {name:?} at byte {}: {what} of {size} bytes is over the {} MiB limit",
                        self.offset,
                        self.limit >> 20
                    )),
                ));
            }
        }
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let sparse_extended =
            kind.is_gnu_sparse() && header.as_gnu().is_some_and(|gnu| gnu.is_extended());
        // The crate consumes a recognized L, K or x itself and carries a PAX header over
        // to the next header it returns, whose size the PAX `size` record replaces
        // (unless that header is itself of a metadata type).
        let consumed = recognized && matches!(kind.as_byte(), b'L' | b'K' | b'x');
        let mut data = size;
        if !consumed {
            if what.is_none() && self.pax_pending {
                data = self.pax_size.unwrap_or(size);
            }
            self.pax_pending = false;
            self.pax_size = None;
        }
        let Some(padded) = data
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            self.passthrough = true;
            return Ok(());
        };
        if consumed && kind.as_byte() == b'x' {
            // Bounded by the limit above.
            self.pax = Some((Vec::with_capacity(size.min(64 * 1024) as usize), size));
            if size == 0 {
                self.finish_pax();
            }
        }
        if sparse_extended {
            self.sparse_content = Some(padded);
        } else {
            self.remaining = padded;
        }
        Ok(())
    }

    /// A PAX header's content is complete: keep its `size` for the next entry, read as
    /// the crate reads it (the first `size` record; none if a record before it is bad).
    fn finish_pax(&mut self) {
        let Some((bytes, _)) = self.pax.take() else {
            return;
        };
        let mut size = None;
        for record in tar::PaxExtensions::new(&bytes) {
            let Ok(record) = record else {
                break;
            };
            if record.key() != Ok("size") {
                continue;
            }
            size = record.value().ok().and_then(|v| v.parse::<u64>().ok());
            break;
        }
        self.pax_size = size;
        self.pax_pending = true;
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.served < self.filled {
                let n = (self.filled - self.served).min(buf.len());
                buf[..n].copy_from_slice(&self.block[self.served..self.served + n]);
                self.served += n;
                return Ok(n);
            }
            if self.passthrough {
                return self.inner.read(buf);
            }
            if self.remaining > 0 {
                let want = buf
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    // Truncated content: the crate reports it.
                    self.passthrough = true;
                    return Ok(0);
                }
                self.remaining -= n as u64;
                self.offset += n as u64;
                if let Some((bytes, left)) = self.pax.as_mut() {
                    let take = (*left).min(n as u64) as usize;
                    bytes.extend_from_slice(&buf[..take]);
                    *left -= take as u64;
                    if *left == 0 {
                        self.finish_pax();
                    }
                }
                return Ok(n);
            }
            if !self.fill_block()? {
                return Ok(0);
            }
            self.inspect()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    fn names(tar: &[u8], limit: u64) -> io::Result<Vec<(String, Vec<u8>)>> {
        let mut archive = tar::Archive::new(TarGuard::with_limit(tar, limit));
        let mut out = Vec::new();
        for e in archive.entries()? {
            let mut e = e?;
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data)?;
            out.push((name, data));
        }
        Ok(out)
    }

    #[test]
    fn long_names_and_pax_within_the_limit_pass() {
        let long = "d/".repeat(200) + "file";
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let got = names(&tar, 1 << 20).unwrap();
        assert_eq!(got, [(long, b"abc".to_vec())]);

        // A PAX size record replaces the header's size of the next entry.
        let record = b"12 size=700\n";
        let mut tar = header("PaxHeaders/f", b'x', record.len() as u64);
        tar.extend(padded(record));
        tar.extend(header("f", b'0', 0));
        tar.extend(padded(&[7u8; 700]));
        tar.extend(header("g", b'0', 2));
        tar.extend(padded(b"hi"));
        tar.extend([0u8; 1024]);
        let got = names(&tar, 1 << 20).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), 700);
        assert_eq!(got[1], ("g".to_string(), b"hi".to_vec()));
    }

    #[test]
    fn oversized_metadata_is_refused_before_it_is_read() {
        for kind in [b'L', b'K', b'x', b'g'] {
            // Only the header exists: reading its content would hit the end of input.
            let tar = header("././@LongLink", kind, 3 << 30);
            let err = names(&tar, 1 << 20).unwrap_err();
            let msg = refusal(&err).expect("a refusal");
            assert!(msg.contains("3221225472 bytes"), "{msg}");
            assert!(msg.contains("at byte 0"), "{msg}");
        }
        // The same header later in the stream names its offset.
        let mut tar = header("a", b'0', 5);
        tar.extend(padded(b"hello"));
        tar.extend(header("././@LongLink", b'L', 2 << 20));
        let err = names(&tar, 1 << 20).unwrap_err();
        assert!(refusal(&err).unwrap().contains("at byte 1024"));
    }

    #[test]
    fn trailing_bytes_after_the_end_are_not_examined() {
        let mut tar = header("a", b'0', 1);
        tar.extend(padded(b"x"));
        tar.extend([0u8; 1024]);
        tar.extend(header("././@LongLink", b'L', 3 << 30));
        let mut guard = TarGuard::with_limit(&tar[..], 1 << 20);
        let mut all = Vec::new();
        guard.read_to_end(&mut all).unwrap();
        assert_eq!(all, tar);
    }
}
