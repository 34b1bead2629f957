//! Bounds-checked reading of an rpm's lead and headers, and complete verification of an
//! rpm's digests.
//!
//! The `rpm` crate trusts the counts, sizes and offsets of a header: a huge index count
//! or data size makes it allocate gigabytes, an offset past the data makes it index out
//! of range. [`read`] therefore checks every header against rpm's own limits
//! (`HEADER_TAGS_MAX`, `HEADER_DATA_MAX`) and against the file size *before* reading it,
//! then checks every index entry (known type, alignment, `offset + count × size` inside
//! the data, strings NUL-terminated inside the data) before the crate sees a byte.
//!
//! [`verify`] then checks what `rpm -K` checks, streaming the payload once: the header
//! SHA-256 (required) and SHA-1 digests, the MD5 and size of header + payload, the
//! payload digest (required: SHA-256 or SHA-512 of the compressed payload), and, after
//! decompressing the payload to its end, the digests and size of the uncompressed
//! archive.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use rpm::{IndexSignatureTag, IndexTag, PackageMetadata};
use sha2::Digest;

use super::arread::read_all as read_exact;
use crate::error::{Error, IoContext, Result};

/// Size of the rpm lead.
pub const LEAD_SIZE: usize = 96;
/// The lead magic every .rpm starts with.
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
/// A header's intro: magic, version 1, four reserved zero bytes.
const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// rpm's `HEADER_TAGS_MAX`: most index entries in a header.
const MAX_TAGS: u32 = 0xffff;
/// rpm's `HEADER_DATA_MAX`: largest data section of a header.
const MAX_DATA: u32 = 0x0fff_ffff;
/// Most index entries in a signature header (rpm writes fewer than a dozen).
const MAX_SIGNATURE_TAGS: u32 = 1024;
/// Largest signature header data section (64 MiB, as rpm's reader allows).
const MAX_SIGNATURE_DATA: u32 = 64 << 20;

/// The lead and both headers of an rpm, checked, as they are in the file.
pub struct Headers {
    /// Lead, signature header with its padding, main header.
    pub bytes: Vec<u8>,
    /// Where the main header starts in `bytes` (and in the file).
    pub main_start: usize,
    /// The parsed metadata (parsed from `bytes` once they were checked).
    pub metadata: PackageMetadata,
}

impl Headers {
    /// The main header's bytes (what the header digests and signatures cover).
    pub fn main(&self) -> &[u8] {
        self.bytes.get(self.main_start..).unwrap_or_default()
    }

    /// Offset of the payload in the file.
    pub fn payload_offset(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// Read and check the lead and headers of the rpm `path` from `input` (positioned at the
/// start of the file, which is `file_len` bytes long); afterwards `input` is positioned
/// at the payload.
pub fn read(path: &Path, input: &mut impl Read, file_len: u64) -> Result<Headers> {
    let bad = |msg: String| Error::input(path, format!("not a valid rpm package: {msg}"));
    let mut bytes = vec![0u8; LEAD_SIZE];
    read_exact(path, input, &mut bytes, "the rpm lead")?;
    if bytes[..4] != LEAD_MAGIC {
        return Err(bad("no rpm lead magic".into()));
    }
    read_header(path, input, file_len, &mut bytes, Kind::Signature)?;
    // The signature header is padded to a multiple of 8 bytes.
    let pad = (8 - bytes.len() % 8) % 8;
    let at = bytes.len();
    check_fits(
        path,
        file_len,
        at as u64,
        pad as u64,
        "the signature header padding",
    )?;
    bytes.resize(at + pad, 0);
    read_exact(
        path,
        input,
        &mut bytes[at..],
        "the signature header padding",
    )?;
    let main_start = bytes.len();
    read_header(path, input, file_len, &mut bytes, Kind::Main)?;
    let metadata = PackageMetadata::parse(&mut &bytes[..]).map_err(|e| bad(format!("{e}")))?;
    Ok(Headers {
        bytes,
        main_start,
        metadata,
    })
}

/// Read and check the headers of the rpm at `path`, and return them with the file
/// positioned at the payload.
pub fn open(path: &Path) -> Result<(Headers, BufReader<File>)> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .ctx(|| format!("reading {}", path.display()))?
        .len();
    let mut reader = BufReader::with_capacity(crate::payload::COPY_BUFFER, file);
    let headers = read(path, &mut reader, len)?;
    Ok((headers, reader))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Signature,
    Main,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Signature => "signature header",
            Kind::Main => "header",
        }
    }
}

/// Refuse `len` bytes at `at` unless the file holds them.
fn check_fits(path: &Path, file_len: u64, at: u64, len: u64, what: &str) -> Result<()> {
    if at.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(Error::input(
            path,
            format!(
                "not a valid rpm package: {what} ({len} bytes at offset {at}) runs past the end of the file ({file_len} bytes)"
            ),
        ));
    }
    Ok(())
}

/// Read one header (intro, index, data) onto the end of `bytes`, checking it whole.
fn read_header(
    path: &Path,
    input: &mut impl Read,
    file_len: u64,
    bytes: &mut Vec<u8>,
    kind: Kind,
) -> Result<()> {
    let what = kind.name();
    let bad = |msg: String| Error::input(path, format!("not a valid rpm package: {what}: {msg}"));
    let start = bytes.len();
    check_fits(path, file_len, start as u64, 16, what)?;
    bytes.resize(start + 16, 0);
    read_exact(path, input, &mut bytes[start..], what)?;
    let intro = &bytes[start..start + 16];
    if intro[..8] != HEADER_MAGIC {
        return Err(bad("bad header magic".into()));
    }
    let il = be32(&intro[8..12]);
    let dl = be32(&intro[12..16]);
    let (max_tags, max_data) = match kind {
        Kind::Signature => (MAX_SIGNATURE_TAGS, MAX_SIGNATURE_DATA),
        Kind::Main => (MAX_TAGS, MAX_DATA),
    };
    if il == 0 || il > max_tags {
        return Err(bad(format!(
            "index count {il} is out of range (1 to {max_tags})"
        )));
    }
    if dl > max_data {
        return Err(bad(format!(
            "data length {dl} is out of range (at most {max_data})"
        )));
    }
    // Both are bounded above, so this cannot overflow.
    let rest = u64::from(il) * 16 + u64::from(dl);
    check_fits(path, file_len, (start + 16) as u64, rest, what)?;
    let rest = rest as usize;
    bytes.resize(start + 16 + rest, 0);
    read_exact(path, input, &mut bytes[start + 16..], what)?;
    let index_end = start + 16 + il as usize * 16;
    let (index, data) = bytes[start + 16..].split_at(index_end - start - 16);
    for (i, e) in index.chunks_exact(16).enumerate() {
        check_entry(e, data).map_err(|msg| bad(format!("index entry {i}: {msg}")))?;
    }
    Ok(())
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Check one index entry (tag, type, offset, count) against the data section.
fn check_entry(e: &[u8], data: &[u8]) -> std::result::Result<(), String> {
    let tag = be32(&e[0..4]);
    let ty = be32(&e[4..8]);
    let offset = be32(&e[8..12]) as i32;
    let count = be32(&e[12..16]);
    let dl = data.len() as u64;
    if offset < 0 || offset as u64 > dl {
        return Err(format!(
            "tag {tag}: offset {offset} is outside the data ({dl} bytes)"
        ));
    }
    let off = offset as u64;
    let fixed = |size: u64| -> std::result::Result<(), String> {
        if !off.is_multiple_of(size) {
            return Err(format!("tag {tag}: offset {off} is not aligned to {size}"));
        }
        let end = u64::from(count)
            .checked_mul(size)
            .and_then(|n| n.checked_add(off));
        match end {
            Some(end) if end <= dl => Ok(()),
            _ => Err(format!(
                "tag {tag}: {count} items of {size} bytes at offset {off} overrun the data ({dl} bytes)"
            )),
        }
    };
    match ty {
        0 => Ok(()),
        1 | 2 | 7 => fixed(1),
        3 => fixed(2),
        4 => fixed(4),
        5 => fixed(8),
        6 | 8 | 9 => {
            if ty == 6 && count != 1 {
                return Err(format!("tag {tag}: a string with count {count}"));
            }
            if u64::from(count) > dl - off {
                return Err(format!(
                    "tag {tag}: {count} strings cannot fit in {} bytes",
                    dl - off
                ));
            }
            let mut pos = &data[off as usize..];
            for _ in 0..count {
                match pos.iter().position(|&b| b == 0) {
                    Some(nul) => pos = &pos[nul + 1..],
                    None => {
                        return Err(format!("tag {tag}: a string runs past the end of the data"))
                    }
                }
            }
            Ok(())
        }
        _ => Err(format!("tag {tag}: unknown data type {ty}")),
    }
}

/// Reads through to `inner`, counting every byte and hashing it with the digests that
/// are wanted (only those the package carries are computed).
struct Hashing<R> {
    inner: R,
    sha256: Option<sha2::Sha256>,
    sha512: Option<sha2::Sha512>,
    md5: Option<md5::Md5>,
    count: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R, sha256: bool, sha512: bool, md5: bool) -> Self {
        Hashing {
            inner,
            sha256: sha256.then(sha2::Sha256::new),
            sha512: sha512.then(sha2::Sha512::new),
            md5: md5.then(md5::Md5::new),
            count: 0,
        }
    }

    fn update(&mut self, buf: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(buf);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(buf);
        }
        if let Some(h) = &mut self.md5 {
            md5::Digest::update(h, buf);
        }
        self.count += buf.len() as u64;
    }

    /// The hex digests taken (`None` for those not wanted).
    fn finish(self) -> (Option<String>, Option<String>, Option<Vec<u8>>) {
        (
            self.sha256.map(|h| hex::encode(h.finalize())),
            self.sha512.map(|h| hex::encode(h.finalize())),
            self.md5.map(|h| md5::Digest::finalize(h).to_vec()),
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }
}

impl<R> io::Write for Hashing<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The largest memory a decompressor may use (xz dictionaries, zstd windows): enough for
/// `xz -9` and `zstd --ultra -22`'s default window limit, and bounded.
const DECODER_MEMORY: u64 = 128 << 20;

/// A reader of `reader` decompressed as `compressor` says (`gzip`, `zstd`, `xz`,
/// `lzma`, or `none`), reading every stream to its end and checking the compressed
/// format's own checksums; `None` for a compressor korgpkg cannot read.
pub fn decoder<'a, R: BufRead + 'a>(compressor: &str, reader: R) -> Option<Box<dyn Read + 'a>> {
    Some(match compressor {
        "gzip" => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::with_buffer(reader).ok()?;
            // Frames that need a window above the limit fail to decode (no allocation).
            d.window_log_max(27).ok()?;
            Box::new(d)
        }
        "xz" => Box::new(xz2::bufread::XzDecoder::new_stream(
            reader,
            xz2::stream::Stream::new_stream_decoder(DECODER_MEMORY, xz2::stream::CONCATENATED)
                .ok()?,
        )),
        "lzma" => Box::new(xz2::bufread::XzDecoder::new_stream(
            reader,
            xz2::stream::Stream::new_lzma_decoder(DECODER_MEMORY).ok()?,
        )),
        "none" | "identity" => Box::new(reader),
        _ => return None,
    })
}

/// Verify the rpm at `path` completely (see the module documentation): every digest it
/// carries must match, and it must carry a header SHA-256 and a payload digest. A
/// mismatch is a verification error (exit 5); a damaged structure is bad input (exit 4).
pub fn verify(path: &Path) -> Result<()> {
    let (headers, reader) = open(path)?;
    let md = &headers.metadata;
    let origin = path.display().to_string();
    let mismatch = |what: &str, expected: &str, actual: &str| {
        Error::verify(
            &origin,
            format!("{what} digest: BAD (expected {expected}, computed {actual})"),
        )
    };
    let sig = &md.signature;
    let main = headers.main();

    // Header digests.
    let header_sha256 = sig
        .get_entry_data_as_string(IndexSignatureTag::RPMSIGTAG_SHA256)
        .map_err(|_| {
            Error::verify(
                &origin,
                "the rpm has no header SHA256 digest: cannot verify it",
            )
        })?;
    let actual = hex::encode(sha2::Sha256::digest(main));
    if !header_sha256.eq_ignore_ascii_case(&actual) {
        return Err(mismatch("Header SHA256", header_sha256, &actual));
    }
    if let Ok(expected) = sig.get_entry_data_as_string(IndexSignatureTag::RPMSIGTAG_SHA1) {
        let actual = hex::encode(sha1::Sha1::digest(main));
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(mismatch("Header SHA1", expected, &actual));
        }
    }

    // Payload digests (the compressed payload; SHA-256 or SHA-512 must be there).
    let h = &md.header;
    let string = |tag: IndexTag| h.get_entry_data_as_string(tag).ok();
    if let Ok(algo) = h.get_entry_data_as_u32(IndexTag::RPMTAG_PAYLOADSHA256ALGO) {
        if algo != 8 {
            return Err(Error::verify(
                &origin,
                format!("payload digest algorithm {algo} is not SHA256: cannot verify it"),
            ));
        }
    }
    let payload_sha256 = string(IndexTag::RPMTAG_PAYLOADSHA256);
    let payload_sha512 = string(IndexTag::RPMTAG_PAYLOAD_SHA512);
    if payload_sha256.is_none() && payload_sha512.is_none() {
        return Err(Error::verify(
            &origin,
            "the rpm has no payload SHA256 or SHA512 digest: cannot verify it",
        ));
    }
    let alt_sha256 = string(IndexTag::RPMTAG_PAYLOADSHA256ALT);
    let alt_sha512 = string(IndexTag::RPMTAG_PAYLOAD_SHA512_ALT);
    let compressor = string(IndexTag::RPMTAG_PAYLOADCOMPRESSOR).unwrap_or("gzip");

    let md5_expected = sig
        .get_entry_data_as_binary(IndexSignatureTag::RPMSIGTAG_MD5)
        .ok();
    let mut raw = Hashing::new(
        reader,
        payload_sha256.is_some(),
        payload_sha512.is_some(),
        md5_expected.is_some(),
    );
    // The legacy MD5 covers header + payload.
    if let Some(h) = &mut raw.md5 {
        md5::Digest::update(h, main);
    }
    let mut archive = Hashing::new((), alt_sha256.is_some(), alt_sha512.is_some(), false);
    let decoded = {
        let Some(mut dec) = decoder(compressor, BufReader::new(&mut raw)) else {
            return Err(Error::input(
                path,
                format!(
                    "payload compressor {compressor:?} is not supported: cannot verify the payload"
                ),
            ));
        };
        io::copy(&mut dec, &mut archive)
    };
    // Bytes after the compressed stream (or after a decoding error) are part of the
    // payload too: the payload digest is compared first, so a damaged payload is
    // reported as the digest mismatch it is.
    io::copy(&mut raw, &mut io::sink()).ctx(|| format!("reading {}", path.display()))?;

    let payload_len = raw.count;
    let (sha256, sha512, md5) = raw.finish();
    for (what, expected, actual) in [
        ("Payload SHA256", payload_sha256, sha256),
        ("Payload SHA512", payload_sha512, sha512),
    ] {
        if let (Some(expected), Some(actual)) = (expected, actual) {
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(mismatch(what, expected, &actual));
            }
        }
    }
    decoded.map_err(|e| Error::input(path, format!("the {compressor} payload is corrupt: {e}")))?;
    let archive_count = archive.count;
    let (alt256, alt512, _) = archive.finish();
    for (what, expected, actual) in [
        ("Payload SHA256 ALT", alt_sha256, alt256),
        ("Payload SHA512 ALT", alt_sha512, alt512),
    ] {
        if let (Some(expected), Some(actual)) = (expected, actual) {
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(mismatch(what, expected, &actual));
            }
        }
    }

    // Sizes and the legacy MD5 over header + payload.
    let content = main.len() as u64 + payload_len;
    let size = sig
        .get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_SIZE)
        .map(u64::from)
        .or_else(|_| sig.get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGSIZE));
    if let Ok(size) = size {
        if size != content {
            return Err(Error::verify(
                &origin,
                format!("header and payload size: BAD (the signature header says {size}, the file holds {content})"),
            ));
        }
    }
    let archive_size = sig
        .get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE)
        .map(u64::from)
        .or_else(|_| sig.get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE));
    if let Ok(size) = archive_size {
        if size != archive_count {
            return Err(Error::verify(
                &origin,
                format!(
                    "payload size: BAD (the signature header says {size}, the payload holds {})",
                    archive_count
                ),
            ));
        }
    }
    if let (Some(expected), Some(actual)) = (md5_expected, md5) {
        if expected != actual.as_slice() {
            return Err(mismatch(
                "MD5",
                &hex::encode(expected),
                &hex::encode(actual),
            ));
        }
    }
    Ok(())
}
