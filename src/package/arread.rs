//! A bounds-checked reader of the `ar` container of .deb and .ipk files.
//!
//! Debian-style packages use only short member names (`debian-binary`,
//! `control.tar.gz`, `data.tar.xz`, `_gpgorigin`), so GNU and BSD long-name tables are
//! refused rather than read: their sizes come from the file and would otherwise be
//! allocated as they are. Every member's size is checked against what is left of the
//! file before it is read, and a member is read as a bounded stream, never into memory.

use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The global header of an `ar` archive.
pub const MAGIC: &[u8; 8] = b"!<arch>\n";

/// Reads the members of an `ar` archive one after the other.
pub struct ArReader<'p, R: Read> {
    path: &'p Path,
    input: R,
    /// Bytes of the file not read yet.
    left: u64,
    /// Padding byte owed after the previous member (members start at even offsets).
    pad: bool,
}

impl<'p, R: Read> ArReader<'p, R> {
    /// Check the global header of `input` (the whole file `path`, `len` bytes long).
    pub fn new(path: &'p Path, mut input: R, len: u64) -> Result<Self> {
        let mut magic = [0u8; 8];
        read_all(path, &mut input, &mut magic, "the ar header")?;
        if &magic != MAGIC {
            return Err(Error::input(path, "not an ar archive"));
        }
        Ok(ArReader {
            path,
            input,
            left: len.saturating_sub(8),
            pad: false,
        })
    }

    /// The next member's name and a reader of exactly its bytes; `None` at the end. The
    /// previous member must have been read to its end.
    pub fn next_member(&mut self) -> Result<Option<(String, io::Take<&mut R>)>> {
        let path = self.path;
        if self.pad && self.left > 0 {
            let mut b = [0u8; 1];
            read_all(path, &mut self.input, &mut b, "ar padding")?;
            self.left -= 1;
        }
        self.pad = false;
        if self.left == 0 {
            return Ok(None);
        }
        if self.left < 60 {
            return Err(Error::input(path, "truncated ar member header"));
        }
        let mut h = [0u8; 60];
        read_all(path, &mut self.input, &mut h, "an ar member header")?;
        self.left -= 60;
        if &h[58..60] != b"`\n" {
            return Err(Error::input(path, "bad ar member header"));
        }
        let raw_name = String::from_utf8_lossy(&h[..16]);
        let name = raw_name.trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name).to_string();
        if name.is_empty() || name.starts_with('/') || name.starts_with("#1/") {
            return Err(Error::input(
                path,
                format!("ar member {name:?}: long-name tables are not used by packages"),
            ));
        }
        let size_text = String::from_utf8_lossy(&h[48..58]);
        let size: u64 = size_text
            .trim_end_matches(' ')
            .parse()
            .map_err(|_| Error::input(path, format!("ar member {name:?}: bad size field")))?;
        if size > self.left {
            return Err(Error::input(
                path,
                format!(
                    "ar member {name:?}: {size} bytes, but only {} are left in the file",
                    self.left
                ),
            ));
        }
        self.left -= size;
        self.pad = size % 2 == 1;
        Ok(Some((name, (&mut self.input).take(size))))
    }
}

/// Fill `buf` from `input`; running out of bytes is bad input ("truncated in `what`"),
/// any other failure an I/O error naming `path`.
pub(crate) fn read_all(
    path: &Path,
    input: &mut impl Read,
    buf: &mut [u8],
    what: &str,
) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::input(path, format!("truncated in {what}"))
        } else {
            Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            }
        }
    })
}
