//! A streaming cpio "newc" (SVR4, magic `070701`) writer for rpm payloads, plus rpm's
//! "stripped" variant (magic `07070X`) that rpm ≥ 4.12 uses when a file is 4 GiB or larger.
//!
//! The writer only formats headers and padding; contents are copied from a reader
//! through a caller-supplied buffer, so memory use does not depend on file sizes.

use std::io::{self, Read, Write};

/// Magic of a newc header.
const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Magic of rpm's stripped header (metadata lives in the rpm header instead).
const STRIPPED_MAGIC: &[u8; 6] = b"07070X";
/// Name of the end-of-archive entry.
const TRAILER: &str = "TRAILER!!!";

/// The metadata of one newc entry. Device numbers, uid and gid are always 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Inode number; equal for all names of a hard-link group.
    pub ino: u32,
    /// Full mode including the file type bits (`0o100755`, `0o040755`, `0o120777`).
    pub mode: u32,
    /// Number of names of this inode in the archive.
    pub nlink: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Number of data bytes that follow the name (0 for directories and for hard-link
    /// names that do not carry the contents).
    pub size: u32,
}

/// Writes a cpio archive to `W`, entry by entry.
pub struct Writer<W: Write> {
    inner: W,
    /// Bytes written so far (for 4-byte alignment).
    pos: u64,
    /// Data bytes still owed by the current entry.
    pending: u64,
}

impl<W: Write> Writer<W> {
    /// Start an archive.
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            pos: 0,
            pending: 0,
        }
    }

    /// Bytes of archive written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = ((4 - self.pos % 4) % 4) as usize;
        self.put(&[0u8; 3][..n])
    }

    fn check_idle(&self) -> io::Result<()> {
        if self.pending != 0 {
            return Err(io::Error::other(format!(
                "cpio: previous entry is missing {} data bytes",
                self.pending
            )));
        }
        Ok(())
    }

    /// Write a newc header named `name` (written as is, e.g. `./usr/bin/x`). The entry's
    /// `header.size` data bytes must follow via [`Writer::data`] or [`Writer::copy`].
    pub fn entry(&mut self, name: &str, header: &Header) -> io::Result<()> {
        self.check_idle()?;
        if name.is_empty() || name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio: bad entry name {name:?}"),
            ));
        }
        self.newc_header(name, header)?;
        self.pending = u64::from(header.size);
        self.finish_if_complete()
    }

    /// Write rpm's stripped header for the file at `index` in the rpm header; `size` data
    /// bytes must follow.
    pub fn stripped_entry(&mut self, index: u32, size: u64) -> io::Result<()> {
        self.check_idle()?;
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(STRIPPED_MAGIC);
        h.extend_from_slice(format!("{index:08x}").as_bytes());
        self.put(&h)?;
        self.pad()?;
        self.pending = size;
        self.finish_if_complete()
    }

    fn newc_header(&mut self, name: &str, h: &Header) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio: name too long"))?;
        let fields = [
            h.ino, h.mode, 0, /* uid */
            0, /* gid */
            h.nlink, h.mtime, h.size, 0, /* devmajor */
            0, /* devminor */
            0, /* rdevmajor */
            0, /* rdevminor */
            namesize, 0, /* check */
        ];
        let mut buf = Vec::with_capacity(110 + name.len() + 4);
        buf.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        self.put(&buf)?;
        self.pad()
    }

    fn finish_if_complete(&mut self) -> io::Result<()> {
        if self.pending == 0 {
            self.pad()?;
        }
        Ok(())
    }

    /// Write (part of) the current entry's data from memory.
    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() as u64 > self.pending {
            return Err(io::Error::other("cpio: more data than the entry's size"));
        }
        self.put(bytes)?;
        self.pending -= bytes.len() as u64;
        self.finish_if_complete()
    }

    /// Copy exactly the rest of the current entry's data from `reader`, through `buf`.
    /// Fails if `reader` ends early or holds more bytes than announced.
    pub fn copy(&mut self, reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<()> {
        while self.pending > 0 {
            let want = buf
                .len()
                .min(usize::try_from(self.pending).unwrap_or(usize::MAX));
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("cpio: file ended {} bytes early", self.pending),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.data(&buf[..n])?;
        }
        // The source must not have grown since its size was taken.
        let mut probe = [0u8; 1];
        loop {
            match reader.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(io::Error::other(
                        "cpio: file is longer than its recorded size",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Write the `TRAILER!!!` entry the way rpm does and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check_idle()?;
        let h = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
        };
        self.newc_header(TRAILER, &h)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(bytes: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&bytes[6 + 8 * i..6 + 8 * (i + 1)]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn newc_layout_and_padding() {
        let mut w = Writer::new(Vec::new());
        let h = Header {
            ino: 7,
            mode: 0o100644,
            nlink: 1,
            mtime: 1_700_000_000,
            size: 5,
        };
        w.entry("./a", &h).unwrap();
        w.copy(&mut &b"hello"[..], &mut [0u8; 2]).unwrap();
        w.entry(
            "./d",
            &Header {
                mode: 0o040755,
                size: 0,
                ..h
            },
        )
        .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(field(&out, 0), 7);
        assert_eq!(field(&out, 1), 0o100644);
        assert_eq!(field(&out, 6), 5);
        assert_eq!(field(&out, 11), 4); // "./a\0"
                                        // 110 + 4 = 114 → pad to 116, data 5 → 121 → pad to 124.
        assert_eq!(&out[110..114], b"./a\0");
        assert_eq!(&out[116..121], b"hello");
        assert_eq!(&out[121..124], &[0, 0, 0]);
        assert_eq!(&out[124..130], b"070701");
        assert_eq!(out.len() % 4, 0);
        let trailer = out.len() - 124;
        assert_eq!(&out[trailer..trailer + 6], b"070701");
        assert_eq!(&out[trailer + 110..trailer + 121], b"TRAILER!!!\0");
    }

    #[test]
    fn size_mismatches_are_errors() {
        let h = Header {
            ino: 1,
            mode: 0o100644,
            nlink: 1,
            mtime: 0,
            size: 4,
        };
        let mut w = Writer::new(Vec::new());
        w.entry("./x", &h).unwrap();
        assert!(w.copy(&mut &b"abc"[..], &mut [0u8; 8]).is_err());
        let mut w = Writer::new(Vec::new());
        w.entry("./x", &h).unwrap();
        assert!(w.copy(&mut &b"abcde"[..], &mut [0u8; 8]).is_err());
        let mut w = Writer::new(Vec::new());
        w.entry("./x", &h).unwrap();
        assert!(w.finish().is_err());
    }

    #[test]
    fn stripped_header() {
        let mut w = Writer::new(Vec::new());
        w.stripped_entry(3, 2).unwrap();
        w.data(b"hi").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(&out[..16], b"07070X00000003\0\0");
        assert_eq!(&out[16..20], b"hi\0\0");
    }
}
