//! Signing .rpm files: an OpenPGP v4 detached signature over the main header, stored in
//! the signature header as rpm 4.x expects (`RPMSIGTAG_RSA` for RSA keys,
//! `RPMSIGTAG_DSA` for EdDSA). The payload is streamed, never held in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use rpm::{Header, HeaderEntry, IndexData, IndexSignatureTag, PackageMetadata};

use crate::error::{Error, IoContext, Result};
use crate::signing::Signer;

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// An opened rpm: its metadata, the byte range of its main header, and a reader
/// positioned at the payload.
pub struct Opened {
    pub metadata: PackageMetadata,
    /// `(start, end)` of the main header in the file (rpm-md's `header-range`).
    pub header_range: (u64, u64),
    reader: BufReader<Counting<File>>,
}

/// Parse the lead and headers of `path`.
pub fn open(path: &Path) -> Result<Opened> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(Counting {
        inner: file,
        count: 0,
    });
    let metadata = PackageMetadata::parse(&mut reader)
        .map_err(|e| Error::input(path, format!("not a valid rpm package: {e}")))?;
    let end = reader.get_ref().count - reader.buffer().len() as u64;
    let header_len = metadata
        .header_bytes()
        .map_err(|e| Error::input(path, format!("unreadable rpm header: {e}")))?
        .len() as u64;
    Ok(Opened {
        metadata,
        header_range: (end - header_len, end),
        reader,
    })
}

/// Counts the bytes written through it.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A signed rpm as written: its metadata and the byte range of its main header.
pub struct Signed {
    pub metadata: PackageMetadata,
    /// `(start, end)` of the main header in the written file.
    pub header_range: (u64, u64),
}

/// Write `src`, signed with `signer` (replacing any earlier OpenPGP signature), to `out`.
pub fn sign(src: &Path, signer: &Signer, out: &mut impl Write) -> Result<Signed> {
    let Opened {
        metadata,
        mut reader,
        ..
    } = open(src)?;
    let bad = |e: rpm::Error| Error::input(src, format!("cannot re-sign rpm: {e}"));
    let header_bytes = metadata.header_bytes().map_err(bad)?;
    let signature = signer.detached(&header_bytes, false)?;
    let tag = if signer.is_rsa() {
        IndexSignatureTag::RPMSIGTAG_RSA
    } else {
        IndexSignatureTag::RPMSIGTAG_DSA
    };
    let drop = [
        IndexSignatureTag::HEADER_SIGNATURES as u32,
        IndexSignatureTag::RPMSIGTAG_RSA as u32,
        IndexSignatureTag::RPMSIGTAG_DSA as u32,
        IndexSignatureTag::RPMSIGTAG_PGP as u32,
        IndexSignatureTag::RPMSIGTAG_GPG as u32,
        IndexSignatureTag::RPMSIGTAG_OPENPGP as u32,
    ];
    let mut entries: Vec<HeaderEntry> = metadata
        .signature
        .get_all_entries()
        .map_err(bad)?
        .into_iter()
        .filter(|(t, _)| !drop.contains(t))
        .map(|(t, d)| HeaderEntry::new(t, d))
        .collect();
    entries.push(HeaderEntry::new(tag as u32, IndexData::Bin(signature)));
    let signed = PackageMetadata {
        lead: metadata.lead,
        signature: Header::<IndexSignatureTag>::from_entries(
            entries,
            IndexSignatureTag::HEADER_SIGNATURES,
        ),
        header: metadata.header,
    };
    let header_len = header_bytes.len() as u64;
    let mut counted = CountingWriter {
        inner: &mut *out,
        count: 0,
    };
    signed
        .write(&mut counted)
        .map_err(|e| Error::input(src, format!("writing the signed rpm headers: {e}")))?;
    let end = counted.count;
    loop {
        let buf = reader
            .fill_buf()
            .ctx(|| format!("reading {}", src.display()))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        out.write_all(buf)
            .ctx(|| "writing the signed rpm".to_string())?;
        reader.consume(n);
    }
    out.flush().ctx(|| "writing the signed rpm".to_string())?;
    Ok(Signed {
        metadata: signed,
        header_range: (end - header_len, end),
    })
}
