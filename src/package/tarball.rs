//! Archive plumbing shared by the Debian-style formats (.deb and .ipk): deterministic
//! GNU tar members, a streaming `ar` writer, and reading such packages back.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::{FileKind, InspectedFile};
use crate::cleanup::Cancel;
use crate::error::{Error, IoContext, Result};
use crate::payload::{Entry, EntryKind};
use crate::targuard::{input_error, TarGuard};

/// A fresh GNU tar header owned by root:root.
pub(crate) fn header(mode: u32, mtime: u64, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    // Both names are short ASCII constants, so these cannot fail.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// Append one member named exactly `name` (and, for links, `link`) to `b`, using GNU
/// `././@LongLink` records for names over 100 bytes. The `tar` crate's own path setters
/// drop a leading `./`, which dpkg-deb keeps, hence this.
fn append_named<W: Write>(
    b: &mut tar::Builder<W>,
    mut h: tar::Header,
    name: &str,
    link: Option<&str>,
    data: impl Read,
) -> io::Result<()> {
    fn long_record<W: Write>(
        b: &mut tar::Builder<W>,
        kind: u8,
        value: &str,
        mtime: u64,
    ) -> io::Result<()> {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        let mut h = header(0o644, mtime, bytes.len() as u64, tar::EntryType::new(kind));
        set_field(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_cksum();
        b.append(&h, &bytes[..])
    }
    let mtime = h.mtime().unwrap_or(0);
    if let Some(target) = link {
        if target.len() > 100 {
            long_record(b, b'K', target, mtime)?;
        }
        set_field(&mut h.as_old_mut().linkname, target.as_bytes());
    }
    if name.len() > 100 {
        long_record(b, b'L', name, mtime)?;
    }
    set_field(&mut h.as_old_mut().name, name.as_bytes());
    h.set_cksum();
    b.append(&h, data)
}

/// Copy `value` into a fixed-size header field, truncating (a long record carries the
/// full value) and zero-filling the rest.
fn set_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// A Debian-style data archive written entry by entry, in the order given: `./` first,
/// then each entry preceded by those of its ancestor directories not written yet
/// (mode 0755, the archive's `mtime`), so the archive is valid for any entry order.
pub struct DataTar<W: Write> {
    b: tar::Builder<W>,
    mtime: u64,
    written: HashSet<String>,
}

impl<W: Write> DataTar<W> {
    /// Start an archive in `w` with its `./` member.
    pub fn new(w: W, mtime: u64) -> Result<Self> {
        let mut b = tar::Builder::new(w);
        let root = header(0o755, mtime, 0, tar::EntryType::Directory);
        append_named(&mut b, root, "./", None, io::empty())
            .ctx(|| "writing the data archive".into())?;
        Ok(DataTar {
            b,
            mtime,
            written: HashSet::new(),
        })
    }

    /// Whether `path` is in the archive already.
    pub fn contains(&self, path: &str) -> bool {
        self.written.contains(path)
    }

    /// [`DataTar::entry`], unless `cancel` is set (another format of the build failed).
    pub fn entry_unless_cancelled(
        &mut self,
        cancel: &Cancel,
        e: &Entry,
        data: &mut dyn Read,
    ) -> Result<()> {
        cancel.check().ctx(|| "writing the data archive".into())?;
        self.entry(e, data)
    }

    /// Add `e` (its missing ancestors first); a regular file's bytes are read from `data`.
    pub fn entry(&mut self, e: &Entry, data: &mut dyn Read) -> Result<()> {
        if e.path == "/" {
            return Ok(());
        }
        for dir in super::missing_ancestors(&e.path, &|p| self.written.contains(p), true) {
            let h = header(0o755, self.mtime, 0, tar::EntryType::Directory);
            append_named(&mut self.b, h, &format!(".{dir}/"), None, io::empty())
                .ctx(|| format!("adding {dir} to the data archive"))?;
            self.written.insert(dir);
        }
        let name = format!(".{}", e.path);
        let ctx = || format!("adding {} to the data archive", e.path);
        match &e.kind {
            EntryKind::Directory => {
                let h = header(e.mode, e.mtime, 0, tar::EntryType::Directory);
                append_named(&mut self.b, h, &format!("{name}/"), None, io::empty()).ctx(ctx)?;
            }
            EntryKind::File(d) => {
                let h = header(e.mode, e.mtime, d.size, tar::EntryType::Regular);
                append_named(&mut self.b, h, &name, None, data).ctx(ctx)?;
            }
            EntryKind::Symlink(target) => {
                let h = header(0o777, e.mtime, 0, tar::EntryType::Symlink);
                append_named(&mut self.b, h, &name, Some(target), io::empty()).ctx(ctx)?;
            }
            EntryKind::HardLink { target, .. } => {
                let h = header(e.mode, e.mtime, 0, tar::EntryType::Link);
                let target = format!(".{target}");
                append_named(&mut self.b, h, &name, Some(&target), io::empty()).ctx(ctx)?;
            }
        }
        self.written.insert(e.path.clone());
        Ok(())
    }

    /// End the archive and return the writer.
    pub fn finish(self) -> Result<W> {
        self.b
            .into_inner()
            .ctx(|| "finishing the data archive".into())
    }
}

/// A small control archive: `./` then each `(name, mode, bytes)` in the given order.
pub fn control_tar(files: &[(&str, u32, &[u8])], mtime: u64) -> Result<Vec<u8>> {
    let ctx = || "writing the control archive".to_string();
    let mut b = tar::Builder::new(Vec::new());
    let root = header(0o755, mtime, 0, tar::EntryType::Directory);
    append_named(&mut b, root, "./", None, io::empty()).ctx(ctx)?;
    for (name, mode, bytes) in files {
        let h = header(*mode, mtime, bytes.len() as u64, tar::EntryType::Regular);
        append_named(&mut b, h, &format!("./{name}"), None, *bytes).ctx(ctx)?;
    }
    b.into_inner().ctx(ctx)
}

/// Add one regular file `./name` to an .ipk's outer tar.
pub fn write_tar_member<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    mtime: u64,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let h = header(0o644, mtime, size, tar::EntryType::Regular);
    append_named(b, h, &format!("./{name}"), None, data)
        .ctx(|| format!("adding {name} to the package"))
}

/// Writes a System V `ar` archive (the .deb/.ipk outer container) to a seekable file.
///
/// The `ar` crate needs each member's size before its bytes; a compressed data member's
/// size is known only once it is written. This writer streams the member and then patches
/// the size field in place, so hundreds of MiB never pass through a second temporary file.
pub struct ArWriter<'a> {
    out: &'a mut File,
    mtime: u64,
}

impl<'a> ArWriter<'a> {
    /// Start an archive in `out` (at its current position).
    pub fn new(out: &'a mut File, mtime: u64) -> Result<Self> {
        out.write_all(b"!<arch>\n")
            .ctx(|| "writing the ar header".into())?;
        Ok(ArWriter { out, mtime })
    }

    fn member_header(&self, name: &str, size: u64) -> Vec<u8> {
        format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name, self.mtime, 0, 0, "100644", size
        )
        .into_bytes()
    }

    /// Append a member whose bytes are in memory.
    pub fn append(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let ctx = || format!("writing ar member {name}");
        let header = self.member_header(name, bytes.len() as u64);
        self.out.write_all(&header).ctx(ctx)?;
        self.out.write_all(bytes).ctx(ctx)?;
        if bytes.len() % 2 == 1 {
            self.out.write_all(b"\n").ctx(ctx)?;
        }
        Ok(())
    }

    /// Append a member produced by `fill`, which writes it into the archive directly.
    pub fn append_streamed(
        &mut self,
        name: &str,
        fill: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<()> {
        let ctx = || format!("writing ar member {name}");
        let start = self.out.stream_position().ctx(ctx)?;
        let placeholder = self.member_header(name, 0);
        self.out.write_all(&placeholder).ctx(ctx)?;
        fill(self.out)?;
        let end = self.out.seek(SeekFrom::End(0)).ctx(ctx)?;
        let size = end - start - placeholder.len() as u64;
        let header = self.member_header(name, size);
        if header.len() != placeholder.len() {
            return Err(Error::input(
                Path::new(name),
                "ar member is too large (over 9,999,999,999 bytes)",
            ));
        }
        self.out.seek(SeekFrom::Start(start)).ctx(ctx)?;
        self.out.write_all(&header).ctx(ctx)?;
        self.out.seek(SeekFrom::End(0)).ctx(ctx)?;
        if size % 2 == 1 {
            self.out.write_all(b"\n").ctx(ctx)?;
        }
        Ok(())
    }
}

/// The largest `control` file (and ipk control member) korgpkg reads into memory.
pub const MAX_CONTROL: u64 = crate::targuard::MAX_TAR_METADATA;

/// `archive` read through a [`TarGuard`], so its long names and PAX headers are bounded.
pub fn guarded<R: Read>(archive: tar::Archive<R>) -> tar::Archive<TarGuard<R>> {
    tar::Archive::new(TarGuard::new(archive.into_inner()))
}

/// Read the `control` file out of a control tar.
pub fn read_control<R: Read>(path: &Path, archive: tar::Archive<R>) -> Result<String> {
    let bad = |e: io::Error| input_error(path, "unreadable control archive", &e);
    let mut archive = guarded(archive);
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if name.trim_start_matches("./") == "control" {
            if entry.size() > MAX_CONTROL {
                return Err(Error::input(
                    path,
                    format!(
                        "control file of {} bytes is over the {} MiB limit",
                        entry.size(),
                        MAX_CONTROL >> 20
                    ),
                ));
            }
            let mut text = String::new();
            entry
                .take(MAX_CONTROL)
                .read_to_string(&mut text)
                .map_err(|e| Error::input(path, format!("control file is not UTF-8: {e}")))?;
            return Ok(text);
        }
    }
    Err(Error::input(
        path,
        "the control archive has no control file",
    ))
}

/// List every path of a data tar, without reading file contents into memory.
pub fn list_data<R: Read>(path: &Path, archive: tar::Archive<R>) -> Result<Vec<InspectedFile>> {
    let bad = |e: io::Error| input_error(path, "unreadable data archive", &e);
    let mut archive = guarded(archive);
    let mut files = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let h = entry.header();
        let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let trimmed = raw.trim_start_matches('.').trim_end_matches('/');
        if trimmed.is_empty() {
            continue;
        }
        let install = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        let link = entry
            .link_name()
            .map_err(bad)?
            .map(|l| l.to_string_lossy().into_owned());
        let (kind, target) = match h.entry_type() {
            tar::EntryType::Directory => (FileKind::Directory, None),
            tar::EntryType::Regular | tar::EntryType::Continuous => (FileKind::File, None),
            tar::EntryType::Symlink => (FileKind::Symlink, link),
            tar::EntryType::Link => (
                FileKind::Hardlink,
                link.map(|l| format!("/{}", l.trim_start_matches('.').trim_start_matches('/'))),
            ),
            _ => (FileKind::Other, None),
        };
        files.push(InspectedFile {
            path: install,
            kind,
            mode: h.mode().map_err(bad)? & 0o7777,
            size: entry.size(),
            user: h
                .username()
                .ok()
                .flatten()
                .map(str::to_string)
                .unwrap_or_else(|| h.uid().map(|u| u.to_string()).unwrap_or_default()),
            group: h
                .groupname()
                .ok()
                .flatten()
                .map(str::to_string)
                .unwrap_or_else(|| h.gid().map(|g| g.to_string()).unwrap_or_default()),
            target,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A tar reader over a member compressed as its name says (`.gz`, `.xz`, `.zst`, none).
pub fn decompressed<'a, R: Read + 'a>(
    path: &Path,
    member: &str,
    reader: R,
) -> Result<tar::Archive<Box<dyn Read + 'a>>> {
    let inner: Box<dyn Read + 'a> = if member.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else if member.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new(reader))
    } else if member.ends_with(".zst") {
        Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| Error::input(path, format!("bad zstd member {member}: {e}")))?,
        )
    } else if member.ends_with(".tar") {
        Box::new(reader)
    } else {
        return Err(Error::input(
            path,
            format!("unknown compression of member {member}"),
        ));
    };
    Ok(tar::Archive::new(inner))
}

/// `Inspection` fields from a parsed control file: everything but the identity fields
/// and the relation fields, which the caller reports separately.
pub fn split_control(
    fields: &BTreeMap<String, String>,
    relation_fields: &[&str],
) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let mut other = BTreeMap::new();
    let mut relations = BTreeMap::new();
    for (k, v) in fields {
        if relation_fields.contains(&k.as_str()) {
            relations.insert(
                k.clone(),
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        } else if !matches!(k.as_str(), "Package" | "Version" | "Architecture") {
            other.insert(k.clone(), v.clone());
        }
    }
    (other, relations)
}

/// Relation fields of Debian-style control files.
pub const DEB_RELATION_FIELDS: &[&str] = &[
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Suggests",
    "Enhances",
    "Breaks",
    "Conflicts",
    "Provides",
    "Replaces",
];

/// Open `path` for reading, with context.
pub fn open(path: &Path) -> Result<File> {
    File::open(path).ctx(|| format!("opening {}", path.display()))
}
