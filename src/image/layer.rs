//! Layers: one per package, built only from the package's `data.tar` (streamed: .deb →
//! decompressed data.tar → normalized tar → gzip or zstd, hashed on the way), plus the
//! small generated layer with the dpkg database entries.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::package::{tarball, Compressed};
use crate::payload::COPY_BUFFER;

use super::layout::{Blob, BlobStore, HashWriter};

/// Largest compressed control member of a .deb read into memory.
const MAX_CONTROL: u64 = 16 << 20;

/// Compression of the layers korgpkg writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerCompression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip` (every runtime reads it).
    #[default]
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd` (smaller, faster; newer runtimes).
    Zstd,
}

impl LayerCompression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn writer<W: Write>(self, w: W) -> Result<Compressed<W>> {
        Ok(match self {
            LayerCompression::Gzip => Compressed::gzip(w, 6),
            LayerCompression::Zstd => Compressed::zstd(w, 3)?,
        })
    }
}

/// A written layer: its blob, the digest of the uncompressed tar (`diff_id`), its media
/// type, and the paths it holds (for dpkg's `info/<pkg>.list`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
    pub media_type: String,
}

/// What a .deb's control member says: the control text and `md5sums`.
#[derive(Debug, Clone)]
pub struct DebControl {
    pub path: PathBuf,
    pub control: String,
    pub md5sums: String,
}

/// Read a .deb's control member (no data is read).
pub fn read_control(path: &Path) -> Result<DebControl> {
    let file = tarball::open(path)?;
    let mut ar = ar::Archive::new(BufReader::new(file));
    let bad = |m: String| Error::input(path, m);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| bad(format!("not a valid .deb (ar archive): {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !name.starts_with("control.tar") {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_CONTROL + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("unreadable {name}: {e}")))?;
        if bytes.len() as u64 > MAX_CONTROL {
            return Err(bad(format!("{name} is larger than {MAX_CONTROL} bytes")));
        }
        let mut archive = tarball::decompressed(path, &name, &bytes[..])?;
        let mut control = None;
        let mut md5sums = String::new();
        for e in archive
            .entries()
            .map_err(|e| bad(format!("unreadable {name}: {e}")))?
        {
            let mut e = e.map_err(|e| bad(format!("unreadable {name}: {e}")))?;
            let member = e
                .path()
                .map_err(|e| bad(format!("unreadable {name}: {e}")))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut text = String::new();
            match member.as_str() {
                "control" | "md5sums" => {
                    (&mut e)
                        .take(MAX_CONTROL)
                        .read_to_string(&mut text)
                        .map_err(|e| bad(format!("{member} is not UTF-8 text: {e}")))?;
                }
                _ => continue,
            }
            if member == "control" {
                control = Some(text);
            } else {
                md5sums = text;
            }
        }
        let control =
            control.ok_or_else(|| bad("the control archive has no control file".into()))?;
        return Ok(DebControl {
            path: path.to_path_buf(),
            control,
            md5sums,
        });
    }
    Err(bad("not a .deb: no control.tar member".into()))
}

/// A path of a package entry, normalized for a layer (`usr/lib/x`, no `./`), or an
/// error naming the entry if it could escape the root, is a whiteout marker, or is not
/// plain UTF-8.
fn layer_path(deb: &Path, raw: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| Error::input(deb, "data.tar: an entry name is not UTF-8"))?;
    let trimmed = text.trim_start_matches("./").trim_start_matches('/');
    let trimmed = trimmed.trim_end_matches('/');
    let mut parts = Vec::new();
    for part in trimmed.split('/') {
        match part {
            "" | "." => continue,
            ".." => {
                return Err(Error::input(
                    deb,
                    format!("data.tar: entry {text:?} leaves the root"),
                ))
            }
            p if p.starts_with(".wh.") => {
                return Err(Error::input(
                    deb,
                    format!("data.tar: entry {text:?} is an OCI whiteout name"),
                ))
            }
            p if p.contains('\0') || p.contains('\n') => {
                return Err(Error::input(
                    deb,
                    format!("data.tar: entry {text:?} has a control character"),
                ))
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A tar header for a layer entry: root-owned, mtime clamped, permission bits only
/// (no setuid/setgid: a toolchain needs none).
fn layer_header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    crate::package::tarball::header(mode & 0o1777, mtime, size, kind)
}

/// The layer writer: tar → diff_id hash → compressor → blob hash → temp blob file.
pub struct LayerWriter {
    tar: tar::Builder<HashWriter<Compressed<HashWriter<BufWriter<tempfile::NamedTempFile>>>>>,
    compression: LayerCompression,
}

impl LayerWriter {
    /// Start a layer in `store`.
    pub fn new(store: &BlobStore, compression: LayerCompression) -> Result<Self> {
        let tmp = store.temp()?;
        let sink = HashWriter::new(BufWriter::with_capacity(COPY_BUFFER, tmp));
        let tar = tar::Builder::new(HashWriter::new(compression.writer(sink)?));
        Ok(LayerWriter { tar, compression })
    }

    /// Append an entry with its data (streamed).
    pub fn append(
        &mut self,
        mut header: tar::Header,
        path: &str,
        link: Option<&str>,
        data: impl Read,
    ) -> Result<()> {
        let res = match link {
            Some(target) => self.tar.append_link(&mut header, path, target),
            None => self.tar.append_data(&mut header, path, data),
        };
        res.ctx(|| format!("writing layer entry {path}"))
    }

    /// Append a regular file from memory.
    pub fn file(&mut self, path: &str, mode: u32, mtime: u64, bytes: &[u8]) -> Result<()> {
        let h = layer_header(tar::EntryType::Regular, mode, bytes.len() as u64, mtime);
        self.append(h, path, None, bytes)
    }

    /// Append a directory owned by `uid:gid`.
    pub fn dir(&mut self, path: &str, mode: u32, mtime: u64, owner: (u64, u64)) -> Result<()> {
        let mut h = layer_header(tar::EntryType::Directory, mode, 0, mtime);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        self.append(h, &format!("{path}/"), None, io::empty())
    }

    /// Finish the tar and the compressed stream; commit the blob.
    pub fn finish(self, store: &BlobStore) -> Result<Layer> {
        let ctx = || "finishing a layer".to_string();
        let hashed = self.tar.into_inner().ctx(ctx)?;
        let (compressed, diff_id, _) = hashed.finish();
        let sink = compressed.finish()?;
        let (buf, digest, size) = sink.finish();
        let tmp = buf.into_inner().map_err(|e| e.into_error()).ctx(ctx)?;
        store.commit(tmp, &digest)?;
        Ok(Layer {
            blob: Blob { digest, size },
            diff_id,
            media_type: self.compression.media_type().to_string(),
        })
    }
}

/// Build a package's layer from its `data.tar` member, streaming. Returns the layer and
/// the package's paths in archive order (`/.` first, as dpkg's `.list` files have them).
pub fn package_layer(
    deb: &Path,
    store: &BlobStore,
    compression: LayerCompression,
    clamp: Option<u64>,
) -> Result<(Layer, Vec<String>, u64)> {
    let file = tarball::open(deb)?;
    let mut ar = ar::Archive::new(BufReader::with_capacity(COPY_BUFFER, file));
    let bad = |m: String| Error::input(deb, m);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| bad(format!("not a valid .deb (ar archive): {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !name.starts_with("data.tar") {
            continue;
        }
        let mut archive = tarball::decompressed(deb, &name, entry)?;
        let mut writer = LayerWriter::new(store, compression)?;
        let mut list = vec!["/.".to_string()];
        let mut newest = 0u64;
        let mut seen = std::collections::HashSet::new();
        let unreadable = |e: io::Error| bad(format!("unreadable {name}: {e}"));
        for e in archive.entries().map_err(unreadable)? {
            let mut e = e.map_err(unreadable)?;
            let raw = e.path_bytes().into_owned();
            let path = layer_path(deb, &raw)?;
            if path.is_empty() {
                continue;
            }
            let h = e.header();
            let mode = h.mode().map_err(unreadable)?;
            let mtime = h.mtime().map_err(unreadable)?;
            newest = newest.max(mtime);
            let mtime = clamp.map_or(mtime, |c| mtime.min(c));
            let kind = h.entry_type();
            let link = match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let l = e
                        .link_name_bytes()
                        .ok_or_else(|| bad(format!("{name}: link {path} has no target")))?
                        .into_owned();
                    let l = std::str::from_utf8(&l)
                        .map_err(|_| bad(format!("{name}: link target of {path} is not UTF-8")))?
                        .to_string();
                    Some(l)
                }
                _ => None,
            };
            match kind {
                tar::EntryType::Directory => {
                    let h = layer_header(kind, mode, 0, mtime);
                    writer.append(h, &format!("{path}/"), None, io::empty())?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = e.size();
                    let h = layer_header(tar::EntryType::Regular, mode, size, mtime);
                    writer.append(h, &path, None, &mut e)?;
                }
                tar::EntryType::Symlink => {
                    let h = layer_header(kind, 0o777, 0, mtime);
                    writer.append(h, &path, link.as_deref(), io::empty())?;
                }
                tar::EntryType::Link => {
                    // A hard link in a layer must name an earlier entry of the same layer.
                    let target = layer_path(deb, link.as_deref().unwrap_or("").as_bytes())?;
                    if !seen.contains(&target) {
                        return Err(bad(format!(
                            "{name}: hard link {path} names {target:?}, which is not an earlier file"
                        )));
                    }
                    let h = layer_header(kind, mode, 0, mtime);
                    writer.append(h, &path, Some(&target), io::empty())?;
                }
                other => {
                    return Err(bad(format!(
                        "{name}: entry {path} has unsupported type {:?}",
                        other.as_byte() as char
                    )))
                }
            }
            list.push(format!("/{path}"));
            seen.insert(path);
        }
        let layer = writer.finish(store)?;
        return Ok((layer, list, newest));
    }
    Err(bad("not a .deb: no data.tar member".into()))
}

/// The directories `<prefix>/bin` of a package's file list that hold files, other than
/// the ones on every PATH (`/usr/bin`, `/bin`, ...), in list order.
pub fn bin_dirs(list: &[String]) -> Vec<String> {
    const STANDARD: &[&str] = &[
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ];
    let mut dirs: Vec<&str> = Vec::new();
    for path in list {
        if let Some((dir, _)) = path.rsplit_once('/') {
            if dir.ends_with("/bin") && !STANDARD.contains(&dir) && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    // Only the top-level bin directory of a prefix: not `<prefix>/<target>/bin` of a
    // cross toolchain, whose tools are the unprefixed copies.
    let prefixes: Vec<&str> = dirs.iter().map(|d| d.trim_end_matches("bin")).collect();
    dirs.iter()
        .filter(|d| {
            !prefixes
                .iter()
                .any(|p| d.len() > p.len() + 3 && d.starts_with(p))
        })
        .map(|d| d.to_string())
        .collect()
}

/// Open a layer blob as a tar stream, decompressing by media type.
pub fn open_layer(path: &Path, media_type: &str) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    decoder(file, media_type, path)
}

/// The uncompressed tar stream of a layer read from `reader`, by its media type (OCI's
/// and Docker's); `origin` names it in errors.
pub fn decoder(
    reader: impl Read + Send + 'static,
    media_type: &str,
    origin: &Path,
) -> Result<Box<dyn Read + Send>> {
    let reader = BufReader::with_capacity(COPY_BUFFER, reader);
    Ok(
        if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Box::new(flate2::read::MultiGzDecoder::new(reader))
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(reader)
                    .ctx(|| format!("starting zstd for {}", origin.display()))?,
            )
        } else if media_type.ends_with(".tar") || media_type.ends_with(".tar.v1") {
            Box::new(reader)
        } else {
            return Err(Error::input(
                origin,
                format!("unsupported layer media type {media_type:?}"),
            ));
        },
    )
}
