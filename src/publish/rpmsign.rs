//! Signing .rpm files: an OpenPGP v4 detached signature over the main header, stored in
//! the signature header as rpm 4.x expects (`RPMSIGTAG_RSA` for RSA keys,
//! `RPMSIGTAG_DSA` for EdDSA). The payload is streamed, never held in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use rpm::{Header, HeaderEntry, IndexData, IndexSignatureTag, IndexTag, PackageMetadata};
use sha2::{Digest, Sha256, Sha512};

use crate::error::{Error, IoContext, Result};
use crate::signing::Signer;

/// An opened rpm: its metadata, the byte range of its main header, and a reader
/// positioned at the payload.
pub struct Opened {
    pub metadata: PackageMetadata,
    /// `(start, end)` of the main header in the file (rpm-md's `header-range`).
    pub header_range: (u64, u64),
    reader: BufReader<File>,
}

/// Parse the lead and headers of `path` (bounds-checked first, see
/// [`crate::package::rpmheader`]).
pub fn open(path: &Path) -> Result<Opened> {
    let (headers, reader) = crate::package::rpmheader::open(path)?;
    let end = headers.payload_offset();
    Ok(Opened {
        header_range: (headers.main_start as u64, end),
        metadata: headers.metadata,
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
    // The file was verified before import; these checks make sure that the bytes signed
    // and copied now are the ones verified (the header digest here, the payload digest
    // while it is copied; on a mismatch the caller discards the output).
    let tampered = |what: &str| {
        Error::verify(
            src.display().to_string(),
            format!("{what} changed since it was verified; not signed"),
        )
    };
    let header_sha256 = metadata
        .signature
        .get_entry_data_as_string(IndexSignatureTag::RPMSIGTAG_SHA256)
        .map_err(|_| tampered("the header SHA256 digest"))?;
    if !header_sha256.eq_ignore_ascii_case(&hex::encode(Sha256::digest(&header_bytes))) {
        return Err(tampered("the header"));
    }
    let payload_digest = |tag: IndexTag| {
        metadata
            .header
            .get_entry_data_as_string(tag)
            .ok()
            .map(str::to_ascii_lowercase)
    };
    let payload_sha256 = payload_digest(IndexTag::RPMTAG_PAYLOADSHA256);
    let payload_sha512 = payload_digest(IndexTag::RPMTAG_PAYLOAD_SHA512);
    if payload_sha256.is_none() && payload_sha512.is_none() {
        return Err(tampered("the payload digest"));
    }
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
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
        sha256.update(buf);
        if payload_sha256.is_none() {
            sha512.update(buf);
        }
        out.write_all(buf)
            .ctx(|| "writing the signed rpm".to_string())?;
        reader.consume(n);
    }
    let payload_ok = match (&payload_sha256, &payload_sha512) {
        (Some(d), _) => *d == hex::encode(sha256.finalize()),
        (None, Some(d)) => *d == hex::encode(sha512.finalize()),
        (None, None) => false,
    };
    if !payload_ok {
        return Err(tampered("the payload"));
    }
    out.flush().ctx(|| "writing the signed rpm".to_string())?;
    Ok(Signed {
        metadata: signed,
        header_range: (end - header_len, end),
    })
}
