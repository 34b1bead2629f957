//! Complete verification of a package before it is published (and, for rpm, re-signed):
//! every byte is read, every compressed stream decompressed to its end (so gzip CRCs
//! and sizes, xz and zstd checksums are checked), and every digest the package carries
//! compared. Nothing is kept in memory beyond a copy buffer.
//!
//! - rpm: see [`super::rpmheader::verify`].
//! - deb and ar-form ipk: the `ar` members must be `debian-binary` (`2.x`), then
//!   `control.tar[.gz|.xz|.zst]`, then `data.tar[.gz|.xz|.zst]` (members named `_*`, such
//!   as signatures, may follow `debian-binary` and are read through); both archives are
//!   decompressed to the end.
//! - tar-form ipk: the outer gzip'd tar must hold exactly `debian-binary`,
//!   `control.tar.gz` and `data.tar.gz` as regular members; each is decompressed to the
//!   end, and so is the outer stream.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::arread::ArReader;
use super::rpmheader::decoder;
use super::Format;
use crate::error::{Error, IoContext, Result};
use crate::payload::COPY_BUFFER;

/// Verify the package `path` of `format` completely (see the module documentation).
pub fn verify(path: &Path, format: Format) -> Result<()> {
    match format {
        Format::Rpm => super::rpmheader::verify(path),
        Format::Deb => verify_ar(path),
        Format::Ipk => {
            let mut head = [0u8; 2];
            let n = File::open(path)
                .and_then(|mut f| f.read(&mut head))
                .ctx(|| format!("reading {}", path.display()))?;
            if n == 2 && head == [0x1f, 0x8b] {
                verify_tar_outer(path)
            } else {
                verify_ar(path)
            }
        }
    }
}

/// The compressor of an archive member named `control.tar.gz` and the like.
fn member_compressor(name: &str) -> Option<(&'static str, &'static str)> {
    let (kind, ext) = name.split_once(".tar")?;
    let kind = match kind {
        "control" => "control",
        "data" => "data",
        _ => return None,
    };
    let compressor = match ext {
        "" => "none",
        ".gz" => "gzip",
        ".xz" => "xz",
        ".zst" => "zstd",
        _ => return None,
    };
    Some((kind, compressor))
}

/// Decompress `member` (named `name`, compressed with `compressor`) to its end.
fn drain_member(path: &Path, name: &str, compressor: &str, member: impl Read) -> Result<()> {
    let corrupt = |e: io::Error| Error::input(path, format!("member {name}: corrupt: {e}"));
    let Some(mut dec) = decoder(compressor, BufReader::with_capacity(COPY_BUFFER, member)) else {
        return Err(Error::input(
            path,
            format!("member {name}: unknown compression"),
        ));
    };
    io::copy(&mut dec, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

fn check_debian_binary(path: &Path, member: impl Read) -> Result<()> {
    let mut text = Vec::new();
    member
        .take(64)
        .read_to_end(&mut text)
        .ctx(|| format!("reading {}", path.display()))?;
    if !(text.starts_with(b"2.") && text.ends_with(b"\n") && text.len() < 64) {
        return Err(Error::input(
            path,
            "member debian-binary: not a format 2.x package",
        ));
    }
    Ok(())
}

fn verify_ar(path: &Path) -> Result<()> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .ctx(|| format!("reading {}", path.display()))?
        .len();
    let mut ar = ArReader::new(path, BufReader::with_capacity(COPY_BUFFER, file), len)?;
    let mut seen = Vec::new();
    while let Some((name, mut member)) = ar.next_member()? {
        let expected = match seen.len() {
            0 => "debian-binary",
            1 => "control.tar",
            2 => "data.tar",
            _ => "",
        };
        if seen.is_empty() {
            if name != "debian-binary" {
                return Err(Error::input(
                    path,
                    format!("the first member is {name:?}, not debian-binary"),
                ));
            }
            check_debian_binary(path, &mut member)?;
        } else if name.starts_with('_') && seen.len() == 1 {
            io::copy(&mut member, &mut io::sink()).ctx(|| format!("reading {}", path.display()))?;
            continue;
        } else {
            match member_compressor(&name) {
                Some((kind, compressor)) if expected.starts_with(kind) => {
                    drain_member(path, &name, compressor, &mut member)?;
                }
                _ => {
                    let want = if expected.is_empty() {
                        "nothing".to_string()
                    } else {
                        format!("{expected}[.gz|.xz|.zst]")
                    };
                    return Err(Error::input(
                        path,
                        format!("unexpected member {name:?} (expected {want})"),
                    ));
                }
            }
        }
        // The member must have been read to its end.
        if io::copy(&mut member, &mut io::sink()).ctx(|| format!("reading {}", path.display()))?
            != 0
        {
            return Err(Error::input(
                path,
                format!("member {name}: data after the end of its content"),
            ));
        }
        seen.push(name);
    }
    if seen.len() < 3 {
        let missing = ["debian-binary", "control.tar", "data.tar"][seen.len()];
        return Err(Error::input(path, format!("member {missing} is missing")));
    }
    Ok(())
}

/// Walk the outer tar of a tar-form ipk by its raw 512-byte headers (regular members
/// only, no extension headers), decompressing each member to its end.
fn verify_tar_outer(path: &Path) -> Result<()> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let gz = flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(COPY_BUFFER, file));
    let mut outer = BufReader::with_capacity(COPY_BUFFER, gz);
    let corrupt =
        |e: io::Error| Error::input(path, format!("the outer gzip'd tar is corrupt: {e}"));
    let mut seen: Vec<String> = Vec::new();
    loop {
        let mut h = [0u8; 512];
        outer.read_exact(&mut h).map_err(corrupt)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        let field = |r: std::ops::Range<usize>| {
            let t = String::from_utf8_lossy(&h[r]).into_owned();
            t.trim_matches(|c: char| c == '\0' || c == ' ').to_string()
        };
        if u32::from_str_radix(&field(148..156), 8).ok() != Some(sum) {
            return Err(Error::input(path, "outer tar: bad header checksum"));
        }
        let name = field(0..100);
        let name = name.trim_start_matches("./").to_string();
        let size = u64::from_str_radix(&field(124..136), 8)
            .map_err(|_| Error::input(path, format!("outer tar member {name:?}: bad size")))?;
        if !matches!(h[156], b'0' | 0) {
            return Err(Error::input(
                path,
                format!("outer tar member {name:?}: not a regular file"),
            ));
        }
        if seen.contains(&name) {
            return Err(Error::input(path, format!("member {name} appears twice")));
        }
        let mut member = (&mut outer).take(size);
        match name.as_str() {
            "debian-binary" => check_debian_binary(path, &mut member)?,
            "control.tar.gz" | "data.tar.gz" => drain_member(path, &name, "gzip", &mut member)?,
            _ => {
                return Err(Error::input(
                    path,
                    format!("unexpected member {name:?} in the ipk"),
                ))
            }
        }
        if io::copy(&mut member, &mut io::sink()).map_err(corrupt)? != 0 {
            return Err(Error::input(
                path,
                format!("member {name}: data after the end of its content"),
            ));
        }
        let mut padding = vec![0u8; ((512 - size % 512) % 512) as usize];
        outer.read_exact(&mut padding).map_err(corrupt)?;
        seen.push(name);
    }
    for need in ["debian-binary", "control.tar.gz", "data.tar.gz"] {
        if !seen.iter().any(|s| s == need) {
            return Err(Error::input(path, format!("member {need} is missing")));
        }
    }
    // The rest of the outer stream (the second end block, padding) and its CRC.
    io::copy(&mut outer, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}
