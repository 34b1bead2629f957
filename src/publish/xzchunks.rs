//! `Packages.xz` as a multi-block xz stream whose blocks are cached between publishes.
//!
//! Compressing a 10,000-package `Packages` file with xz -6 takes more than a second, and
//! an add changes one stanza. So the text is cut into chunks at stanza ends chosen by
//! the stanzas' content (a cut after a stanza with a probability proportional to its
//! length, about one per [`TARGET`] bytes; at most [`MAX`] bytes per chunk), each chunk
//! is compressed on its own as one xz block (in parallel), and the blocks are joined
//! into one stream with a new index. An add or remove changes the chunk around it only,
//! so the other blocks come from the cache (`.korgpkg/cache/xz/<sha256 of the chunk>`:
//! the sha256 of the stored stream, then the stream, written without fsync and checked
//! on every read, so a torn cache file is recompressed, never used).
//!
//! The output depends only on the text: the same `Packages` gives the same
//! `Packages.xz`, with or without a cache. Each block is the one block of a standalone
//! `xz -6` stream of its chunk, so any xz decoder (apt's liblzma) reads the whole.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Average chunk size.
pub const TARGET: u64 = 512 * 1024;
/// Largest chunk (cut after the stanza that reaches it).
pub const MAX: usize = 2 * 1024 * 1024;

/// Byte ranges of the chunks of `text`, whose stanzas end at `ends` (ascending offsets,
/// the last one `text.len()`).
pub fn chunks(text: &str, ends: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut prev) = (0, 0);
    for &end in ends {
        let stanza = &text.as_bytes()[prev..end];
        prev = end;
        let cut = fnv1a(stanza) % TARGET < stanza.len() as u64 || end - start >= MAX;
        if cut || end == text.len() {
            if end > start {
                out.push((start, end));
            }
            start = end;
        }
    }
    out
}

/// FNV-1a, then a 64-bit finalizer (so the low bits are as good as the high ones).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// xz -6 of `bytes` as a standalone stream (CRC64 check).
pub fn xz(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(bytes)
        .ctx(|| "compressing Packages with xz".into())?;
    enc.finish().ctx(|| "compressing Packages with xz".into())
}

/// `text` (stanzas ending at `ends`) as one xz stream of cached per-chunk blocks.
/// `cache` is the cache directory; `used` collects the cache names this text needs.
pub fn compress(
    text: &str,
    ends: &[usize],
    cache: &Path,
    used: &mut Vec<String>,
) -> Result<Vec<u8>> {
    let ranges = chunks(text, ends);
    if ranges.is_empty() {
        // An empty stream has no block, so the preset only changes the encoder's memory.
        let enc = xz2::write::XzEncoder::new(Vec::new(), 0);
        return enc.finish().ctx(|| "compressing Packages with xz".into());
    }
    let streams = super::par_map(&ranges, |&(a, b)| -> Result<(String, Vec<u8>)> {
        let chunk = &text.as_bytes()[a..b];
        let name = super::sha256_hex(chunk);
        let path = cache.join(&name);
        if let Some(stream) = read_cached(&path) {
            return Ok((name, stream));
        }
        let stream = xz(chunk)?;
        store(&path, &stream);
        Ok((name, stream))
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let mut parts = Vec::with_capacity(streams.len());
    for (name, stream) in &streams {
        used.push(name.clone());
        parts.push(stream.as_slice());
    }
    join(&parts).map_err(|e| Error::Usage(format!("joining xz blocks: {e}")))
}

fn read_cached(path: &Path) -> Option<Vec<u8>> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() < 32 {
        return None;
    }
    let (sum, stream) = bytes.split_at(32);
    use sha2::Digest;
    (sha2::Sha256::digest(stream).as_slice() == sum).then(|| stream.to_vec())
}

/// Best effort: a cache that cannot be written only costs time on the next publish.
fn store(path: &Path, stream: &[u8]) {
    use sha2::Digest;
    let Some(dir) = path.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(mut tmp) = tempfile::Builder::new()
        .prefix(".korgpkg-")
        .suffix(".part")
        .tempfile_in(dir)
    else {
        return;
    };
    let ok = tmp.write_all(&sha2::Sha256::digest(stream)).is_ok() && tmp.write_all(stream).is_ok();
    if ok {
        let _ = tmp.persist(path);
    }
}

/// Remove cache entries not in `used` (and temp files of killed publishers).
pub fn prune(cache: &Path, used: &[String]) {
    let keep: std::collections::HashSet<&str> = used.iter().map(String::as_str).collect();
    if let Ok(entries) = fs::read_dir(cache) {
        for e in entries.flatten() {
            let name = e.file_name();
            if !keep.contains(name.to_string_lossy().as_ref()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The cache directory of a repository.
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join(super::STATE_DIR).join("cache").join("xz")
}

const HEADER_LEN: usize = 12;
const FOOTER_LEN: usize = 12;

/// One block of a single-block xz stream: (block bytes, unpadded size, uncompressed size).
fn single_block(stream: &[u8]) -> std::result::Result<(&[u8], u64, u64), String> {
    let n = stream.len();
    if n < HEADER_LEN + FOOTER_LEN || &stream[..6] != b"\xfd7zXZ\0" || &stream[n - 2..] != b"YZ" {
        return Err("not an xz stream".into());
    }
    let footer = &stream[n - FOOTER_LEN..];
    let backward = u32::from_le_bytes(footer[4..8].try_into().expect("4 bytes")) as usize;
    let index_len = (backward + 1) * 4;
    let index_start = n
        .checked_sub(FOOTER_LEN + index_len)
        .filter(|&s| s >= HEADER_LEN)
        .ok_or("bad xz backward size")?;
    let index = &stream[index_start..n - FOOTER_LEN];
    let mut pos = 1;
    if index[0] != 0 {
        return Err("bad xz index indicator".into());
    }
    let records = varint(index, &mut pos)?;
    if records != 1 {
        return Err(format!("{records} blocks in a chunk stream, expected 1"));
    }
    let unpadded = varint(index, &mut pos)?;
    let uncompressed = varint(index, &mut pos)?;
    let block = &stream[HEADER_LEN..index_start];
    if block.len() as u64 != unpadded.div_ceil(4) * 4 {
        return Err("xz block size does not match its index".into());
    }
    Ok((block, unpadded, uncompressed))
}

fn varint(bytes: &[u8], pos: &mut usize) -> std::result::Result<u64, String> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *bytes.get(*pos).ok_or("truncated xz index")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("bad xz varint".into())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn crc32(bytes: &[u8]) -> [u8; 4] {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum().to_le_bytes()
}

/// Join single-block xz streams (same check type) into one multi-block stream.
pub fn join(streams: &[&[u8]]) -> std::result::Result<Vec<u8>, String> {
    let first = streams.first().ok_or("nothing to join")?;
    let header = &first[..HEADER_LEN];
    let mut out = header.to_vec();
    let mut index = vec![0u8];
    put_varint(&mut index, streams.len() as u64);
    for s in streams {
        if &s[..HEADER_LEN] != header {
            return Err("xz streams with different headers".into());
        }
        let (block, unpadded, uncompressed) = single_block(s)?;
        out.extend_from_slice(block);
        put_varint(&mut index, unpadded);
        put_varint(&mut index, uncompressed);
    }
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let crc = crc32(&index);
    index.extend_from_slice(&crc);
    out.extend_from_slice(&index);
    let backward = (index.len() / 4 - 1) as u32;
    let flags = &header[6..8];
    let mut tail = backward.to_le_bytes().to_vec();
    tail.extend_from_slice(flags);
    out.extend_from_slice(&crc32(&tail));
    out.extend_from_slice(&tail);
    out.extend_from_slice(b"YZ");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn unxz(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        xz2::read::XzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn packages(n: usize, extra: usize) -> (String, Vec<usize>) {
        let mut text = String::new();
        let mut ends = Vec::new();
        for i in 0..n {
            text.push_str(&format!(
                "Package: p{i:05}\nVersion: 1.{i}\nDescription: {}\n\n",
                "x".repeat((i * 7919) % 300 + extra)
            ));
            ends.push(text.len());
        }
        (text, ends)
    }

    #[test]
    fn chunked_stream_decodes_to_the_text_and_reuses_unchanged_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (text, ends) = packages(12_000, 100);
        let mut used = Vec::new();
        let a = compress(&text, &ends, dir.path(), &mut used).unwrap();
        assert!(used.len() > 3, "{} chunks", used.len());
        assert_eq!(unxz(&a), text.as_bytes());
        // Without the cache: the same bytes.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            compress(&text, &ends, empty.path(), &mut Vec::new()).unwrap(),
            a
        );
        // One stanza more in the middle: every chunk but one is reused.
        let mid = ends[6000];
        let mut text2 = text[..mid].to_string();
        text2.push_str("Package: p06000a\nVersion: 1\nDescription: new\n\n");
        let added = text2.len() - mid;
        text2.push_str(&text[mid..]);
        let mut ends2: Vec<usize> = ends[..=6000].to_vec();
        ends2.push(mid + added);
        ends2.extend(ends[6001..].iter().map(|e| e + added));
        let mut used2 = Vec::new();
        let b = compress(&text2, &ends2, dir.path(), &mut used2).unwrap();
        assert_eq!(unxz(&b), text2.as_bytes());
        let new: Vec<_> = used2.iter().filter(|n| !used.contains(n)).collect();
        // The chunk it lands in, or two if the new stanza ends a chunk itself.
        assert!((1..=2).contains(&new.len()), "changed chunks: {new:?}");
        // A torn cache file is not used.
        for name in &used2 {
            fs::write(dir.path().join(name), b"garbage").unwrap();
        }
        assert_eq!(
            compress(&text2, &ends2, dir.path(), &mut Vec::new()).unwrap(),
            b
        );
        prune(dir.path(), &used2[..1]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn one_chunk_is_plain_xz_and_empty_text_is_an_empty_stream() {
        let (text, ends) = packages(3, 10);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            compress(&text, &ends, dir.path(), &mut Vec::new()).unwrap(),
            xz(text.as_bytes()).unwrap()
        );
        let empty = compress("", &[], dir.path(), &mut Vec::new()).unwrap();
        assert!(unxz(&empty).is_empty());
        assert_eq!(empty, xz(b"").unwrap());
    }
}
