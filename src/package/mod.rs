//! The package stage: one module per format behind the [`Packager`] trait.
//!
//! A packager turns format-neutral [`PackageMeta`] plus a staged [`Payload`] into one
//! package file, and reads any maker's package of its format back for `korgpkg inspect`.
//! Adding a format (apk, pacman) is one new module implementing [`Packager`], its
//! templates under `templates/<format>/`, a [`Format`] variant (`src/model.rs`) and one
//! line in [`packager`].

pub mod arread;
pub mod control;
pub mod cpio;
pub mod deb;
pub mod gzip;
pub mod identity;
pub mod ipk;
pub mod rpm;
pub mod rpmheader;
pub mod tarball;
pub mod verify;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::model::relation::RelationKind;
use crate::model::{Format, PackageMeta, Provenance};
use crate::payload::{Entry, EntryKind, FileData, Payload};
use crate::templates::Templates;

/// Per-format build settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildOptions {
    pub deb_compression: DebCompression,
    pub rpm_compression: RpmCompression,
    pub ipk_outer: IpkOuter,
    /// Compression level for zstd (1–19) where a format uses zstd.
    pub zstd_level: i32,
    /// Compression level for gzip (1–9): the ipk, and deb or rpm set to gzip.
    #[serde(default = "default_gzip_level")]
    pub gzip_level: u32,
}

fn default_gzip_level() -> u32 {
    BuildOptions::default().gzip_level
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            deb_compression: DebCompression::Zstd,
            rpm_compression: RpmCompression::Zstd,
            ipk_outer: IpkOuter::Ar,
            zstd_level: 3,
            gzip_level: 6,
        }
    }
}

/// Compression of a .deb's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DebCompression {
    Zstd,
    Xz,
    Gzip,
}

/// Compression of an .rpm's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RpmCompression {
    Zstd,
    Gzip,
}

/// Outer container of an .ipk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IpkOuter {
    /// `ar`, as Yocto/OpenEmbedded opkg writes.
    Ar,
    /// gzip'd tar, as OpenWrt up to 24.10 writes.
    Tar,
}

/// Everything a packager may consult besides the package itself.
pub struct BuildContext<'a> {
    pub templates: &'a Templates,
    pub options: &'a BuildOptions,
    /// Set when another format failed: packagers stop at their next read of the payload.
    pub cancel: &'a crate::cleanup::Cancel,
}

/// One package format: writes packages and reads them back.
pub trait Packager: Send + Sync {
    /// The format this packager writes.
    fn format(&self) -> Format;

    /// The conventional file name (`korg-clang-18_18.1.8-1_amd64.deb`).
    fn file_name(&self, meta: &PackageMeta) -> String;

    /// Write the package to `out`, a fresh temporary file that the caller renames into
    /// place only if every format succeeded.
    fn write(
        &self,
        meta: &PackageMeta,
        payload: &Payload,
        ctx: &BuildContext<'_>,
        out: &mut File,
    ) -> Result<()>;

    /// A sink that takes the payload entry by entry, in any order (a one-pass build
    /// passes the tarball's order), compressing the data stream into a temporary file
    /// as the bytes arrive, and writes the package in [`PayloadSink::finish`]. `meta`
    /// gives the name, options and `build_time` (the mtime of generated entries), which
    /// must not change before `finish`.
    fn sink<'a>(
        &self,
        meta: &PackageMeta,
        ctx: &'a BuildContext<'a>,
    ) -> Result<Box<dyn PayloadSink + 'a>>;

    /// Whether this format's sink needs every name of a hard-link group before the
    /// group's contents (rpm: the contents travel with the group's last name). Such a
    /// sink is given the groups by [`PayloadSink::expect_links`] before its first entry,
    /// which takes a second read of the payload when the first one found hard links.
    fn needs_links_first(&self) -> bool {
        false
    }

    /// Whether a file with these leading bytes (and this name) is of this format.
    fn detect(&self, head: &[u8], path: &Path) -> bool;

    /// Read a package of this format, made by anyone.
    fn inspect(&self, path: &Path) -> Result<Inspection>;
}

/// One format's package being written while the payload streams past.
pub trait PayloadSink: Send {
    /// The next entry; a regular file's bytes are read from `data` (exactly its size).
    /// Ancestor directories missing so far are added before it.
    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()>;

    /// The hard-link groups of the payload: the name that carries each group's contents
    /// in the archive → its other names, sorted.
    fn expect_links(&mut self, _groups: &HashMap<String, Vec<String>>) {}

    /// Add the generated entries not passed yet, then write the whole package to `out`:
    /// `meta` is complete (relations, provenance) and `payload` lists every entry with
    /// its digests, sorted by path, for the parts written from the sorted list
    /// (control files, md5sums, the rpm header).
    fn finish(self: Box<Self>, meta: &PackageMeta, payload: &Payload, out: &mut File)
        -> Result<()>;
}

/// The hard-link groups of `payload`, as [`PayloadSink::expect_links`] takes them.
pub fn link_groups(payload: &Payload) -> HashMap<String, Vec<String>> {
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for e in payload.entries() {
        if let EntryKind::HardLink { target, .. } = &e.kind {
            groups
                .entry(target.clone())
                .or_default()
                .push(e.path.clone());
        }
    }
    for names in groups.values_mut() {
        names.sort();
    }
    groups
}

/// Pass `entries` (a staged payload's, laid out) to `sink` in order, reading each file's
/// staged contents; stops once `cancel` is set.
pub fn feed(
    sink: &mut dyn PayloadSink,
    entries: &[Entry],
    cancel: &crate::cleanup::Cancel,
) -> Result<()> {
    for e in entries {
        cancel.check().ctx(|| "writing the package".into())?;
        match &e.kind {
            EntryKind::File(data) => sink.entry(e, &mut cancel.reader(data.open()?))?,
            _ => sink.entry(e, &mut std::io::empty())?,
        }
    }
    Ok(())
}

/// The ancestor directories of `path`, top down, that `present` does not know, without
/// `/` and, unless `own_system_dirs`, without [`SYSTEM_DIRS`] (rpm).
pub fn missing_ancestors(
    path: &str,
    present: &dyn Fn(&str) -> bool,
    own_system_dirs: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = path;
    while let Some(i) = p.rfind('/') {
        p = &p[..i];
        if p.is_empty() || present(p) || (!own_system_dirs && SYSTEM_DIRS.contains(&p)) {
            continue;
        }
        out.push(p.to_string());
    }
    out.reverse();
    out
}

/// The packager for `format`.
pub fn packager(format: Format) -> Box<dyn Packager> {
    match format {
        Format::Deb => Box::new(deb::Deb),
        Format::Rpm => Box::new(rpm::Rpm),
        Format::Ipk => Box::new(ipk::Ipk),
    }
}

/// Read any .deb, .rpm or .ipk (detected from its contents and name). Its name, version
/// and architecture are checked against the format's grammar ([`identity`]), so callers
/// may build paths from them.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let mut head = vec![0u8; 512];
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut filled = 0;
    while filled < head.len() {
        let n = f
            .read(&mut head[filled..])
            .ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    for format in Format::ALL {
        let p = packager(format);
        if p.detect(&head, path) {
            let info = p.inspect(path)?;
            identity::check(path, &info)?;
            return Ok(info);
        }
    }
    Err(Error::input(path, "not a .deb, .rpm or .ipk package"))
}

/// What `korgpkg inspect` reports about a package.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub format: Format,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Other metadata fields, by their native names (`Maintainer`, `License`, ...).
    pub fields: BTreeMap<String, String>,
    /// Relations by native field name (`Depends`, `Requires`, ...).
    pub relations: BTreeMap<String, Vec<String>>,
    /// Every path in the package, sorted.
    pub files: Vec<InspectedFile>,
}

/// One path of an inspected package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedFile {
    /// Absolute install path (`/usr/lib/korg/llvm-18/bin/clang`).
    pub path: String,
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    pub user: String,
    pub group: String,
    /// Symlink target, or the other name of a hard link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The type of an [`InspectedFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Hardlink,
    Other,
}

/// Directories that distributions' base packages own. No korgpkg package owns them in
/// rpm; deb and ipk data archives still list them, as dpkg-deb does.
pub const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/usr",
    "/usr/lib",
    "/usr/share",
    "/usr/share/doc",
    "/usr/share/licenses",
    "/opt",
    "/boot",
    "/lib",
    "/lib/modules",
    "/usr/src",
    "/etc",
];

/// The payload's entries plus `extra` generated entries and every missing ancestor
/// directory of them (mode 0755, `mtime`), sorted by path. With `own_system_dirs` false,
/// ancestors in [`SYSTEM_DIRS`] are left out (rpm).
pub fn layout(
    payload: &Payload,
    extra: Vec<Entry>,
    mtime: u64,
    own_system_dirs: bool,
) -> Vec<Entry> {
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for e in payload.entries().iter().cloned().chain(extra) {
        all.insert(e.path.clone(), e);
    }
    let mut missing = Vec::new();
    for path in all.keys() {
        let mut p = path.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            let dir = if p.is_empty() { "/" } else { p };
            if !all.contains_key(dir) {
                missing.push(dir.to_string());
            }
        }
    }
    for dir in missing {
        if dir == "/" || (!own_system_dirs && SYSTEM_DIRS.contains(&dir.as_str())) {
            continue;
        }
        all.entry(dir.clone()).or_insert(Entry {
            path: dir,
            mode: 0o755,
            mtime,
            kind: EntryKind::Directory,
        });
    }
    all.into_values().collect()
}

/// A generated regular file (mode 0644) for [`layout`]'s `extra`.
pub fn generated_file(path: String, bytes: Vec<u8>, mtime: u64, inode: u32) -> Entry {
    Entry {
        path,
        mode: 0o644,
        mtime,
        kind: EntryKind::File(FileData::inline(bytes, inode)),
    }
}

/// Gzip `bytes` reproducibly (no name, mtime 0, level 9), as Debian's changelogs want.
pub fn gzip_reproducible(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)
        .ctx(|| "compressing a generated file".into())?;
    enc.finish().ctx(|| "compressing a generated file".into())
}

/// Installed size in KiB the way dpkg-gencontrol counts it: each file rounded up to
/// whole KiB, one KiB for every other entry.
pub fn installed_size_kib(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::File(d) => d.size.div_ceil(1024).max(1),
            _ => 1,
        })
        .sum()
}

/// One package file written by a build.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    pub format: Format,
    pub path: PathBuf,
    pub file_name: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub sha256: String,
    pub relations: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// `secs` since the epoch as an RFC 2822 date in UTC (`Sun, 13 Sep 2020 12:26:40 +0000`),
/// as Debian changelogs want.
pub fn rfc2822(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = crate::model::civil_date(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days.rem_euclid(7)) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp (`2020-09-13T12:26:40Z`), as OCI
/// image configurations and annotations want.
pub fn rfc3339(secs: u64) -> String {
    let (year, month, day) = crate::model::civil_date((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The data a Debian-style `control` template (deb, ipk) is rendered with.
#[derive(Serialize)]
pub struct ControlData<'a> {
    #[serde(flatten)]
    pub meta: &'a PackageMeta,
    /// `Version:` value (`18.1.0~rc3-1`).
    pub version: String,
    /// `Architecture:` value.
    pub arch: String,
    /// `Installed-Size:` value (KiB for deb, bytes for ipk).
    pub installed_size: u64,
    /// Relation field name → comma-joined relations, for the format.
    pub relations: BTreeMap<String, String>,
    /// Further fields (provenance), by name.
    pub extra_fields: BTreeMap<String, String>,
    /// RFC 2822 build date, for changelogs.
    pub date: String,
    /// File name of the upstream tarball the package was made from ("" if unknown),
    /// and its sha256, for changelogs.
    pub upstream_file: String,
    pub upstream_sha256: String,
}

impl<'a> ControlData<'a> {
    /// Control data for `meta` in `format`, with `installed_size` already computed.
    pub fn new(meta: &'a PackageMeta, format: Format, installed_size: u64) -> Self {
        let rel = meta.relations.get(format);
        let mut relations = BTreeMap::new();
        for kind in RelationKind::ALL {
            if let Some(field) = kind.field_name(format) {
                let joined = rel.joined(kind, format);
                if !joined.is_empty() {
                    relations.insert(field.to_string(), joined);
                }
            }
        }
        let mut extra_fields = BTreeMap::new();
        if let Some(p) = &meta.provenance {
            extra_fields.insert("Korg-Upstream-URL".to_string(), p.url.clone());
            extra_fields.insert("Korg-Upstream-SHA256".to_string(), p.sha256.clone());
            if let Some(s) = &p.signer {
                extra_fields.insert("Korg-Upstream-Signer".to_string(), s.clone());
            }
            if let Some(s) = &p.sums_signer {
                extra_fields.insert("Korg-Upstream-Sums-Signer".to_string(), s.clone());
            }
        }
        ControlData {
            meta,
            version: meta.full_version(format),
            arch: meta.arch.for_format(format).to_string(),
            installed_size,
            relations,
            extra_fields,
            date: rfc2822(meta.build_time),
            upstream_file: meta
                .provenance
                .as_ref()
                .map(|p| upstream_file(&p.url))
                .unwrap_or_default(),
            upstream_sha256: meta
                .provenance
                .as_ref()
                .map(|p| p.sha256.clone())
                .unwrap_or_default(),
        }
    }
}

/// The file name at the end of an upstream URL or path.
pub fn upstream_file(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_string()
}

/// A compressing writer for a Debian-style archive member.
pub enum Compressed<W: std::io::Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(xz2::write::XzEncoder<W>),
    Gzip(gzip::ParallelGzEncoder<W>),
}

impl<W: std::io::Write> Compressed<W> {
    /// zstd at `level`, one frame, compressed by libzstd's worker threads
    /// ([`crate::worker_threads`] of them). With one or more workers libzstd's output
    /// does not depend on their number, so packages stay reproducible.
    pub fn zstd(w: W, level: i32) -> Result<Self> {
        let mut enc = zstd::stream::write::Encoder::new(w, level)
            .ctx(|| format!("starting zstd at level {level}"))?;
        let workers = u32::try_from(crate::worker_threads()).unwrap_or(1);
        enc.multithread(workers)
            .ctx(|| format!("starting {workers} zstd worker threads"))?;
        Ok(Compressed::Zstd(enc))
    }

    /// xz at the default preset (6), as dpkg-deb.
    pub fn xz(w: W) -> Self {
        Compressed::Xz(xz2::write::XzEncoder::new(w, 6))
    }

    /// gzip at `level`, with a zero timestamp and no name (reproducible), compressed
    /// on [`crate::worker_threads`] threads once the data exceeds one chunk.
    pub fn gzip(w: W, level: u32) -> Self {
        Compressed::Gzip(gzip::ParallelGzEncoder::new(
            w,
            level,
            crate::worker_threads(),
        ))
    }

    /// Flush the compressed stream's trailer and return the inner writer.
    pub fn finish(self) -> Result<W> {
        let ctx = || "finishing a compressed archive member".to_string();
        match self {
            Compressed::Zstd(e) => e.finish().ctx(ctx),
            Compressed::Xz(e) => e.finish().ctx(ctx),
            Compressed::Gzip(e) => e.finish().ctx(ctx),
        }
    }
}

impl<W: std::io::Write> std::io::Write for Compressed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressed::Zstd(e) => e.write(buf),
            Compressed::Xz(e) => e.write(buf),
            Compressed::Gzip(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressed::Zstd(e) => e.flush(),
            Compressed::Xz(e) => e.flush(),
            Compressed::Gzip(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2822_dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_600_000_000), "Sun, 13 Sep 2020 12:26:40 +0000");
        assert_eq!(rfc2822(951_825_600), "Tue, 29 Feb 2000 12:00:00 +0000");
    }
}
