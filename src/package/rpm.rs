//! The .rpm format (v4 packages, as rpmbuild 4.x writes them).
//!
//! The `rpm` crate serializes the lead and both headers; the payload, a cpio archive
//! compressed with zstd or gzip, is streamed by [`super::cpio`] into a temporary file
//! while its digests are taken, then copied after the headers. Nothing proportional to
//! the payload size is ever held in memory.
//!
//! Like rpmbuild: files are listed sorted by path; hard-linked names share an inode and
//! their contents travel once, with the last name of the group; the archive lists files
//! without hard links first, then each hard-link group; files of 4 GiB or more switch the
//! archive to rpm's "stripped" cpio headers and the sizes to 64-bit tags.
//!
//! A one-pass build ([`Packager::sink`]) writes the archive in the order entries arrive
//! (the tarball's), so its file list is sorted except within a hard-link group, whose
//! contents-carrying name takes the group's last row; the group's other names come
//! before the contents in the archive, which needs the groups up front
//! ([`PayloadSink::expect_links`]: a second read of the payload, from the tarball or
//! from a spooled copy of its decoded stream).

use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use rpm::{
    Header, HeaderEntry, IndexData, IndexSignatureTag, IndexTag, Lead, PackageMetadata, RpmFormat,
    SignatureHeaderBuilder,
};

use super::{
    cpio, BuildContext, FileKind, InspectedFile, Inspection, Packager, PayloadSink, RpmCompression,
};
use crate::cleanup::Cancel;
use crate::error::{Error, IoContext, Result};
use crate::model::relation::{Relation, RelationKind};
use crate::model::{Format, PackageMeta};
use crate::payload::{Entry, EntryKind, FileData, Payload, COPY_BUFFER};

/// The .rpm packager.
pub struct Rpm;

/// The lead magic every .rpm starts with.
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// RPMSENSE_* dependency flags.
const SENSE_LESS: u32 = 0x02;
const SENSE_GREATER: u32 = 0x04;
const SENSE_EQUAL: u32 = 0x08;
const SENSE_RPMLIB: u32 = 1 << 24;
const SENSE_INTERP: u32 = 1 << 8;
const SENSE_SCRIPT_PRE: u32 = 1 << 9;
const SENSE_SCRIPT_POST: u32 = 1 << 10;
const SENSE_SCRIPT_PREUN: u32 = 1 << 11;
const SENSE_SCRIPT_POSTUN: u32 = 1 << 12;

/// RPMFILE_DOC: the file is `%doc`.
const RPMFILE_DOC: u32 = 1 << 1;
/// RPMFILE_LICENSE: the file is the package's `%license`.
const RPMFILE_LICENSE: u32 = 1 << 7;

/// PGPHASHALGO_SHA256, for file and payload digests.
const DIGEST_SHA256: u32 = 8;

impl Packager for Rpm {
    fn format(&self) -> Format {
        Format::Rpm
    }

    fn needs_links_first(&self) -> bool {
        true
    }

    fn file_name(&self, meta: &PackageMeta) -> String {
        format!(
            "{}-{}-{}.{}.rpm",
            meta.name, meta.version, meta.revision, meta.arch.rpm
        )
    }

    fn write(
        &self,
        meta: &PackageMeta,
        payload: &Payload,
        ctx: &BuildContext<'_>,
        out: &mut File,
    ) -> Result<()> {
        let (extra, flagged) = generated(meta, payload);
        let entries = super::layout(payload, extra, meta.build_time, false);
        write_rpm(
            meta,
            &entries,
            compressor(ctx),
            false,
            &flagged,
            out,
            ctx.cancel,
        )
    }

    fn sink<'a>(
        &self,
        meta: &PackageMeta,
        ctx: &'a BuildContext<'a>,
    ) -> Result<Box<dyn PayloadSink + 'a>> {
        let tmp =
            tempfile::tempfile().ctx(|| "writing the rpm payload to a temporary file".into())?;
        let compressed = HashingWriter::new(BufWriter::with_capacity(COPY_BUFFER, tmp));
        let compressor = compressor(ctx);
        let enc = match compressor {
            Compressor::Zstd(level) => super::Compressed::zstd(compressed, level)?,
            Compressor::Gzip(level) => super::Compressed::gzip(compressed, level),
        };
        Ok(Box::new(RpmSink {
            ctx,
            compressor,
            mtime: meta.build_time,
            cpio: cpio::Writer::new(HashingWriter::new(enc)),
            written: HashMap::new(),
            links: HashMap::new(),
            buf: vec![0u8; COPY_BUFFER],
        }))
    }

    fn detect(&self, head: &[u8], _path: &Path) -> bool {
        head.starts_with(&LEAD_MAGIC)
    }

    fn inspect(&self, path: &Path) -> Result<Inspection> {
        inspect_rpm(path)
    }
}

/// The payload compressor the options choose.
fn compressor(ctx: &BuildContext<'_>) -> Compressor {
    match ctx.options.rpm_compression {
        RpmCompression::Zstd => Compressor::Zstd(ctx.options.zstd_level),
        RpmCompression::Gzip => Compressor::Gzip(ctx.options.gzip_level),
    }
}

/// The files an rpm adds to the payload and their `RPMFILE_*` flags: the license file,
/// marked `%license` (rpm installs it even with `--excludedocs`), and a README with the
/// description and provenance, marked `%doc`, as rpmbuild packages name them.
fn generated(meta: &PackageMeta, payload: &Payload) -> (Vec<Entry>, Vec<(String, u32)>) {
    let mut flagged = Vec::new();
    let mut extra = Vec::new();
    let mut next_inode = payload.entries().len() as u32 + 1;
    let mut add = |path: String, text: String, flag: u32| {
        extra.push(super::generated_file(
            path.clone(),
            text.into_bytes(),
            meta.build_time,
            next_inode,
        ));
        next_inode += 1;
        flagged.push((path, flag));
    };
    if !meta.copyright.licenses.is_empty() {
        add(
            format!("/usr/share/licenses/{}/LICENSE", meta.name),
            meta.copyright.full_text(),
            RPMFILE_LICENSE,
        );
    }
    add(
        format!("/usr/share/doc/{}/README", meta.name),
        readme(meta),
        RPMFILE_DOC,
    );
    (extra, flagged)
}

/// An rpm's cpio payload being compressed into a temporary file, in the order the
/// entries arrive: each file's contents travel with the name that brings them (for a
/// hard-link group, its first name), the other names of a group with size 0.
struct RpmSink<'a> {
    ctx: &'a BuildContext<'a>,
    compressor: Compressor,
    mtime: u64,
    cpio: cpio::Writer<HashingWriter<super::Compressed<HashingWriter<BufWriter<File>>>>>,
    /// Path → cpio inode of every entry written.
    written: HashMap<String, u32>,
    /// Hard-link groups: contents-carrying name → the other names, written before it.
    links: HashMap<String, Vec<String>>,
    buf: Vec<u8>,
}

impl RpmSink<'_> {
    fn put(&mut self, e: &Entry, data: &mut dyn Read) -> Result<()> {
        let path = &e.path;
        let ctx = || format!("adding {path} to the rpm payload");
        let mtime = u32::try_from(e.mtime).map_err(|_| {
            Error::input(
                path,
                "modification time does not fit an rpm v4 header (32 bits)",
            )
        })?;
        let perm = e.mode & 0o7777;
        let ino = self.written.len() as u32 + 1;
        let mut nlink = 1;
        if let (EntryKind::File(_), Some(others)) = (&e.kind, self.links.get(path)) {
            nlink = others.len() as u32 + 1;
            // rpm reads a group's contents with its last name and links the names seen
            // before it to that file, so the other names go first, without contents.
            let header = cpio::Header {
                ino,
                mode: S_IFREG | perm,
                nlink,
                mtime,
                size: 0,
            };
            for other in others {
                self.cpio
                    .entry(&format!(".{other}"), &header)
                    .ctx(|| format!("adding {other} to the rpm payload"))?;
                self.written.insert(other.clone(), ino);
            }
        }
        let (mode, size, ino) = match &e.kind {
            EntryKind::Directory => (S_IFDIR | perm, 0, ino),
            EntryKind::Symlink(t) => (S_IFLNK | 0o777, t.len() as u64, ino),
            EntryKind::File(d) => (S_IFREG | perm, d.size, ino),
            EntryKind::HardLink { target, .. } => (
                S_IFREG | perm,
                0,
                self.written.get(target).copied().ok_or_else(|| {
                    Error::input(
                        path,
                        format!("hard link to {target}, which was not written"),
                    )
                })?,
            ),
        };
        let size32 = u32::try_from(size).map_err(|_| {
            Error::input(
                path,
                "files of 4 GiB or more need rpm's stripped cpio headers, written only from a staged payload",
            )
        })?;
        let header = cpio::Header {
            ino,
            mode,
            nlink,
            mtime,
            size: size32,
        };
        self.cpio.entry(&format!(".{path}"), &header).ctx(ctx)?;
        match &e.kind {
            EntryKind::Symlink(t) => self.cpio.data(t.as_bytes()).ctx(ctx)?,
            EntryKind::File(_) if size > 0 => self.cpio.copy(data, &mut self.buf).ctx(ctx)?,
            _ => {}
        }
        self.written.insert(path.clone(), ino);
        Ok(())
    }
}

impl PayloadSink for RpmSink<'_> {
    fn expect_links(&mut self, groups: &HashMap<String, Vec<String>>) {
        self.links = groups.clone();
    }

    fn entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        self.ctx
            .cancel
            .check()
            .ctx(|| "writing the rpm payload".into())?;
        if entry.path == "/" || self.written.contains_key(&entry.path) {
            return Ok(());
        }
        for dir in super::missing_ancestors(&entry.path, &|p| self.written.contains_key(p), false) {
            let d = Entry {
                path: dir,
                mode: 0o755,
                mtime: self.mtime,
                kind: EntryKind::Directory,
            };
            self.put(&d, &mut io::empty())?;
        }
        self.put(entry, data)
    }

    fn finish(
        mut self: Box<Self>,
        meta: &PackageMeta,
        payload: &Payload,
        out: &mut File,
    ) -> Result<()> {
        let (mut extra, flagged) = generated(meta, payload);
        extra.sort_by(|a, b| a.path.cmp(&b.path));
        for e in &extra {
            if let EntryKind::File(d) = &e.kind {
                let mut r = d.open()?;
                self.entry(e, &mut r)?;
            }
        }
        let entries = super::layout(payload, extra, meta.build_time, false);
        let mut plan = plan(&entries, false)?;
        if plan.rows.len() != self.written.len()
            || plan
                .rows
                .iter()
                .any(|r| !self.written.contains_key(&r.entry.path))
        {
            return Err(Error::Usage(format!(
                "the rpm payload of {} lists {} entries, its header {}",
                meta.name,
                self.written.len(),
                plan.rows.len()
            )));
        }
        carriers_last(&mut plan);
        let RpmSink {
            compressor, cpio, ..
        } = *self;
        let ctx = || "writing the rpm payload to a temporary file".to_string();
        let (enc, raw_sha256, raw_len) = cpio
            .finish()
            .ctx(|| "finishing the rpm payload".into())?
            .into_parts();
        let (buffered, sha256, len) = enc.finish()?.into_parts();
        let mut file = buffered.into_inner().map_err(|e| e.into_error()).ctx(ctx)?;
        file.seek(SeekFrom::Start(0)).ctx(ctx)?;
        let payload_file = PayloadFile {
            file,
            len,
            sha256,
            raw_sha256,
            raw_len,
        };
        assemble(meta, &plan, payload_file, compressor, &flagged, out)
    }
}

/// rpm reads a hard-link group's contents from the archive entry of the group's name
/// that comes last in the header, so the name that carried the contents (the `File`
/// entry) takes the group's last row; the other rows of the group keep path order.
fn carriers_last(plan: &mut Plan<'_>) {
    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, r) in plan.rows.iter().enumerate() {
        if r.nlink > 1 {
            groups.entry(r.inode).or_default().push(i);
        }
    }
    for positions in groups.values() {
        let Some(carrier) = positions
            .iter()
            .position(|&i| matches!(plan.rows[i].entry.kind, EntryKind::File(_)))
        else {
            continue;
        };
        // Rotate the carrier to the end of the group: rows after it move up by one.
        for k in carrier..positions.len() - 1 {
            plan.rows.swap(positions[k], positions[k + 1]);
        }
    }
}

/// How the cpio payload is compressed.
#[derive(Debug, Clone, Copy)]
enum Compressor {
    /// zstd at this level.
    Zstd(i32),
    /// gzip at this level.
    Gzip(u32),
}

impl Compressor {
    /// `PAYLOADCOMPRESSOR` and `PAYLOADFLAGS` as rpmbuild writes them.
    fn tags(self) -> (&'static str, String) {
        match self {
            Compressor::Zstd(level) => ("zstd", level.to_string()),
            Compressor::Gzip(level) => ("gzip", level.to_string()),
        }
    }
}

/// One path of the package as the rpm header lists it.
struct Row<'a> {
    entry: &'a Entry,
    /// Mode with file type bits.
    mode: u32,
    /// `FILESIZES`: contents for files (every name of a hard link), target length for
    /// symlinks, 0 for directories.
    size: u64,
    mtime: u32,
    digest: String,
    linkto: String,
    inode: u32,
    nlink: u32,
    data: Option<&'a FileData>,
}

/// The header's file list plus the order in which the archive carries it.
struct Plan<'a> {
    rows: Vec<Row<'a>>,
    /// Archive order: (row index, whether this name carries the contents).
    order: Vec<(usize, bool)>,
    /// Installed size: regular files, each hard-link group once.
    total_size: u64,
    /// Some file is 4 GiB or larger: 64-bit size tags and stripped cpio headers.
    large_files: bool,
}

fn plan<'a>(entries: &'a [Entry], force_large: bool) -> Result<Plan<'a>> {
    let too_big = |what: &str, path: &str| {
        Error::input(
            path,
            format!("{what} does not fit an rpm v4 header (32 bits)"),
        )
    };
    // Hard-link groups, keyed by the name that holds the data in the payload.
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        match &e.kind {
            EntryKind::File(_) => groups.entry(e.path.as_str()).or_default().push(i),
            EntryKind::HardLink { target, .. } => {
                groups.entry(target.as_str()).or_default().push(i)
            }
            _ => {}
        }
    }
    let mut group_of: HashMap<usize, &Vec<usize>> = HashMap::new();
    for members in groups.values() {
        if members.len() > 1 {
            for &i in members {
                group_of.insert(i, members);
            }
        }
    }
    if u32::try_from(entries.len()).is_err() {
        return Err(Error::Usage("too many files for an rpm package".into()));
    }

    let mut rows = Vec::with_capacity(entries.len());
    let mut total_size = 0u64;
    let mut large_files = force_large;
    for (i, e) in entries.iter().enumerate() {
        if !e.path.starts_with('/') || e.path.len() < 2 || e.path.ends_with('/') {
            return Err(Error::input(
                &e.path,
                "not an absolute path without a trailing slash",
            ));
        }
        let mtime = u32::try_from(e.mtime).map_err(|_| too_big("modification time", &e.path))?;
        let perm = e.mode & 0o7777;
        let (inode, nlink) = match group_of.get(&i) {
            Some(members) => (members[0] as u32 + 1, members.len() as u32),
            None => (i as u32 + 1, 1),
        };
        let row = match &e.kind {
            EntryKind::Directory => Row {
                entry: e,
                mode: S_IFDIR | perm,
                size: 0,
                mtime,
                digest: String::new(),
                linkto: String::new(),
                inode,
                nlink,
                data: None,
            },
            EntryKind::Symlink(target) => Row {
                entry: e,
                mode: S_IFLNK | 0o777,
                size: target.len() as u64,
                mtime,
                digest: String::new(),
                linkto: target.clone(),
                inode,
                nlink,
                data: None,
            },
            EntryKind::File(data) | EntryKind::HardLink { data, .. } => {
                if group_of.get(&i).is_none_or(|m| m[0] == i) {
                    total_size += data.size;
                }
                if data.size > u64::from(u32::MAX) {
                    large_files = true;
                }
                Row {
                    entry: e,
                    mode: S_IFREG | perm,
                    size: data.size,
                    mtime,
                    digest: data.sha256_hex(),
                    linkto: String::new(),
                    inode,
                    nlink,
                    data: Some(data),
                }
            }
        };
        rows.push(row);
    }

    // rpmbuild's archive order: names without hard links in header order, then each
    // hard-link group (in order of its first name) with the contents on its last name.
    let mut order: Vec<(usize, bool)> = (0..rows.len())
        .filter(|i| !group_of.contains_key(i))
        .map(|i| (i, true))
        .collect();
    let mut firsts: BTreeSet<usize> = BTreeSet::new();
    for members in group_of.values() {
        firsts.insert(members[0]);
    }
    for first in firsts {
        let members = group_of[&first];
        let last = members[members.len() - 1];
        order.extend(members.iter().map(|&i| (i, i == last)));
    }
    Ok(Plan {
        rows,
        order,
        total_size,
        large_files,
    })
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    fn into_parts(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.sha.finalize()), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressed payload, in a temporary file, and its digests.
struct PayloadFile {
    file: File,
    /// Compressed length.
    len: u64,
    /// SHA-256 of the compressed payload (`PAYLOADDIGEST`).
    sha256: String,
    /// SHA-256 of the uncompressed cpio archive (`PAYLOADDIGESTALT`).
    raw_sha256: String,
    /// Length of the uncompressed archive.
    raw_len: u64,
}

fn write_payload(plan: &Plan<'_>, compressor: Compressor, cancel: &Cancel) -> Result<PayloadFile> {
    let ctx = || "writing the rpm payload to a temporary file".to_string();
    let tmp = tempfile::tempfile().ctx(ctx)?;
    let sink = HashingWriter::new(BufWriter::with_capacity(COPY_BUFFER, tmp));
    let (sink, raw_sha256, raw_len) = match compressor {
        Compressor::Zstd(level) => {
            let enc = super::Compressed::zstd(sink, level)?;
            let (enc, sha, len) =
                write_archive(plan, HashingWriter::new(enc), cancel)?.into_parts();
            (enc.finish()?, sha, len)
        }
        Compressor::Gzip(level) => {
            let enc = super::Compressed::gzip(sink, level);
            let (enc, sha, len) =
                write_archive(plan, HashingWriter::new(enc), cancel)?.into_parts();
            (enc.finish()?, sha, len)
        }
    };
    let (buffered, sha256, len) = sink.into_parts();
    let mut file = buffered.into_inner().map_err(|e| e.into_error()).ctx(ctx)?;
    file.seek(SeekFrom::Start(0)).ctx(ctx)?;
    Ok(PayloadFile {
        file,
        len,
        sha256,
        raw_sha256,
        raw_len,
    })
}

/// Stream the cpio archive of `plan` into `w`; stops with an error once `cancel` is set.
fn write_archive<W: Write>(plan: &Plan<'_>, w: W, cancel: &Cancel) -> Result<W> {
    let mut cw = cpio::Writer::new(w);
    let mut buf = vec![0u8; COPY_BUFFER];
    for &(i, content) in &plan.order {
        cancel.check().ctx(|| "writing the rpm payload".into())?;
        let row = &plan.rows[i];
        let path = &row.entry.path;
        let ctx = || format!("adding {path} to the rpm payload");
        let size = if content { row.size } else { 0 };
        if plan.large_files {
            cw.stripped_entry(i as u32, size).ctx(ctx)?;
        } else {
            let header = cpio::Header {
                ino: row.inode,
                mode: row.mode,
                nlink: row.nlink,
                mtime: row.mtime,
                size: u32::try_from(size)
                    .map_err(|_| Error::input(path, "file too large for cpio"))?,
            };
            cw.entry(&format!(".{path}"), &header).ctx(ctx)?;
        }
        if size == 0 {
            continue;
        }
        match (&row.entry.kind, row.data) {
            (EntryKind::Symlink(target), _) => cw.data(target.as_bytes()).ctx(ctx)?,
            (_, Some(data)) => {
                let mut reader = cancel.reader(data.open()?);
                cw.copy(&mut reader, &mut buf).ctx(ctx)?;
            }
            _ => return Err(Error::input(path, "entry has a size but no contents")),
        }
    }
    cw.finish().ctx(|| "finishing the rpm payload".into())
}

/// A dependency as the header stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Dep {
    name: String,
    version: String,
    flags: u32,
}

impl Dep {
    fn new(name: impl Into<String>, flags: u32, version: impl Into<String>) -> Self {
        Dep {
            name: name.into(),
            version: version.into(),
            flags,
        }
    }

    fn rpmlib(feature: &str, version: &str) -> Self {
        Dep::new(
            format!("rpmlib({feature})"),
            SENSE_RPMLIB | SENSE_LESS | SENSE_EQUAL,
            version,
        )
    }

    /// A spec relation; alternatives become a rich dependency `(a or b)`.
    fn from_relation(rel: &Relation) -> Self {
        if let [atom] = rel.alternatives.as_slice() {
            return Dep::new(
                atom.name.clone(),
                atom.op.map(|o| o.rpm_flags()).unwrap_or(0),
                atom.version.clone().unwrap_or_default(),
            );
        }
        let alts: Vec<String> = rel
            .alternatives
            .iter()
            .map(|a| {
                Relation {
                    alternatives: vec![a.clone()],
                }
                .display(Format::Rpm)
            })
            .collect();
        Dep::new(format!("({})", alts.join(" or ")), 0, "")
    }

    fn is_rich(&self) -> bool {
        self.name.starts_with('(')
    }
}

/// `deps` sorted like rpmbuild sorts them (name, version, flags), without duplicates,
/// as NAME, VERSION and FLAGS header entries.
fn dep_entries(deps: Vec<Dep>, tags: (IndexTag, IndexTag, IndexTag)) -> Vec<HeaderEntry> {
    let deps: BTreeSet<Dep> = deps.into_iter().collect();
    if deps.is_empty() {
        return Vec::new();
    }
    let (names, versions, flags) = (
        deps.iter().map(|d| d.name.clone()).collect(),
        deps.iter().map(|d| d.version.clone()).collect(),
        deps.iter().map(|d| d.flags).collect(),
    );
    vec![
        entry(tags.0, IndexData::StringArray(names)),
        entry(tags.1, IndexData::StringArray(versions)),
        entry(tags.2, IndexData::Int32(flags)),
    ]
}

fn entry(tag: IndexTag, data: IndexData) -> HeaderEntry {
    HeaderEntry::new(tag as u32, data)
}

fn string(tag: IndexTag, value: impl Into<String>) -> HeaderEntry {
    entry(tag, IndexData::StringTag(value.into()))
}

fn i18n(tag: IndexTag, value: impl Into<String>) -> HeaderEntry {
    entry(tag, IndexData::I18NString(vec![value.into()]))
}

/// The `name(isa)` rpm derives from an arch for its automatic provide.
fn isa(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" => "x86-64",
        "i386" | "i486" | "i586" | "i686" => "x86-32",
        "aarch64" => "aarch-64",
        "armv7hl" => "armv7hl-32",
        "ppc64le" | "ppc64" => "ppc-64",
        "s390x" => "s390-64",
        "riscv64" => "riscv-64",
        "loongarch64" => "loongarch-64",
        _ => return None,
    })
}

/// The lead's (ignored, informational) arch number from rpmrc.
fn lead_arch(arch: &str) -> u16 {
    match arch {
        "x86_64" | "i386" | "i486" | "i586" | "i686" => 1,
        "ppc64le" => 16,
        "s390x" => 15,
        "aarch64" => 19,
        _ => 0,
    }
}

/// A binary package lead. The crate builds leads only with its `payload` feature, so
/// one is parsed from a minimal package image instead.
fn make_lead(nvr: &str, arch: &str) -> Result<Lead> {
    let mut b = Vec::with_capacity(96 + 32);
    b.extend_from_slice(&LEAD_MAGIC);
    b.extend_from_slice(&[3, 0]); // format 3.0
    b.extend_from_slice(&0u16.to_be_bytes()); // binary package
    b.extend_from_slice(&lead_arch(arch).to_be_bytes());
    let mut name = [0u8; 66];
    let n = nvr.len().min(65);
    name[..n].copy_from_slice(&nvr.as_bytes()[..n]);
    b.extend_from_slice(&name);
    b.extend_from_slice(&1u16.to_be_bytes()); // os: Linux
    b.extend_from_slice(&5u16.to_be_bytes()); // signature type: header-style
    b.extend_from_slice(&[0u8; 16]);
    for _ in 0..2 {
        // An empty header structure (signature, then main header).
        b.extend_from_slice(&[0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    PackageMetadata::parse(&mut &b[..])
        .map(|m| m.lead)
        .map_err(|e| rpm_error("building the rpm lead", e))
}

fn rpm_error(what: &str, e: rpm::Error) -> Error {
    Error::Io {
        context: what.to_string(),
        source: io::Error::other(e.to_string()),
    }
}

/// The rpm's `%doc` README: summary, description and provenance.
pub fn readme(meta: &PackageMeta) -> String {
    format!("{}\n\n{}\n", meta.summary.trim(), description(meta))
}

/// The spec's description plus the provenance. The URL is the `DISTURL` tag; the text
/// names only the file, so no line exceeds what rpmlint accepts.
fn description(meta: &PackageMeta) -> String {
    let mut description = meta.description.trim_end().to_string();
    if let Some(p) = &meta.provenance {
        let file = p.url.rsplit('/').next().unwrap_or(&p.url);
        description.push_str("\n\nRepackaged from (URL in the DistURL tag):\n  ");
        description.push_str(file);
        description.push_str("\nSHA-256 of that tarball:\n  ");
        description.push_str(&p.sha256);
        match &p.signer {
            Some(signer) => {
                description.push_str("\nSignature verified with OpenPGP key:\n  ");
                description.push_str(signer);
            }
            None => description.push_str("\nIts signature was NOT verified."),
        }
    }
    description
}

/// Everything but the file list and payload digests, from `meta`.
fn meta_entries(
    meta: &PackageMeta,
    plan: &Plan<'_>,
    compressor: Compressor,
) -> Result<Vec<HeaderEntry>> {
    let build_time = u32::try_from(meta.build_time)
        .map_err(|_| Error::Usage("build time does not fit an rpm header".into()))?;
    let release = meta.revision.to_string();
    let evr = format!("{}-{}", meta.version, release);
    let description = description(meta);
    let (compressor_name, compressor_flags) = compressor.tags();
    let mut h = vec![
        entry(
            IndexTag::RPMTAG_HEADERI18NTABLE,
            IndexData::StringArray(vec!["C".into()]),
        ),
        string(IndexTag::RPMTAG_NAME, meta.name.clone()),
        string(IndexTag::RPMTAG_VERSION, meta.version.clone()),
        string(IndexTag::RPMTAG_RELEASE, release.clone()),
        i18n(IndexTag::RPMTAG_SUMMARY, meta.summary.trim().to_string()),
        i18n(IndexTag::RPMTAG_DESCRIPTION, description),
        entry(
            IndexTag::RPMTAG_BUILDTIME,
            IndexData::Int32(vec![build_time]),
        ),
        string(IndexTag::RPMTAG_BUILDHOST, "korgpkg"),
        string(IndexTag::RPMTAG_LICENSE, meta.license.clone()),
        i18n(IndexTag::RPMTAG_GROUP, meta.rpm_group.clone()),
        string(IndexTag::RPMTAG_URL, meta.homepage.clone()),
        string(IndexTag::RPMTAG_OS, "linux"),
        string(IndexTag::RPMTAG_ARCH, meta.arch.rpm.clone()),
        string(
            IndexTag::RPMTAG_PLATFORM,
            format!("{}-unknown-linux", meta.arch.rpm),
        ),
        string(
            IndexTag::RPMTAG_SOURCERPM,
            format!("{}-{}.src.rpm", meta.name, evr),
        ),
        string(IndexTag::RPMTAG_PACKAGER, meta.maintainer.clone()),
        string(
            IndexTag::RPMTAG_RPMVERSION,
            format!("korgpkg {}", env!("CARGO_PKG_VERSION")),
        ),
        string(IndexTag::RPMTAG_ENCODING, "utf-8"),
        string(IndexTag::RPMTAG_PAYLOADFORMAT, "cpio"),
        string(IndexTag::RPMTAG_PAYLOADCOMPRESSOR, compressor_name),
        string(IndexTag::RPMTAG_PAYLOADFLAGS, compressor_flags),
        entry(
            IndexTag::RPMTAG_FILEDIGESTALGO,
            IndexData::Int32(vec![DIGEST_SHA256]),
        ),
        // One changelog entry, so tools that expect one (rpmlint) find it.
        entry(
            IndexTag::RPMTAG_CHANGELOGTIME,
            IndexData::Int32(vec![build_time - build_time % 86400]),
        ),
        entry(
            IndexTag::RPMTAG_CHANGELOGNAME,
            IndexData::StringArray(vec![format!("{} - {}", meta.maintainer, evr)]),
        ),
        entry(
            IndexTag::RPMTAG_CHANGELOGTEXT,
            IndexData::StringArray(vec![{
                let mut text = format!(
                    "- Repackaged upstream {} from kernel.org with korgpkg{}",
                    meta.upstream_version,
                    if meta.provenance.is_some() && !meta.verified {
                        " (signature NOT verified)"
                    } else {
                        ""
                    }
                );
                if let Some(p) = &meta.provenance {
                    text.push_str(&format!(
                        "\n- Upstream release {}\n  sha256 {}",
                        super::upstream_file(&p.url),
                        p.sha256
                    ));
                }
                text
            }]),
        ),
    ];
    if let Some(p) = &meta.provenance {
        h.push(string(IndexTag::RPMTAG_DISTURL, p.url.clone()));
    }
    if plan.total_size > u64::from(u32::MAX) {
        h.push(entry(
            IndexTag::RPMTAG_LONGSIZE,
            IndexData::Int64(vec![plan.total_size]),
        ));
    } else {
        h.push(entry(
            IndexTag::RPMTAG_SIZE,
            IndexData::Int32(vec![plan.total_size as u32]),
        ));
    }

    // Relations.
    let rels = &meta.relations.rpm;
    let deps = |kind| {
        rels.of(kind)
            .iter()
            .map(Dep::from_relation)
            .collect::<Vec<_>>()
    };
    let mut requires = deps(RelationKind::Depends);
    let mut provides = deps(RelationKind::Provides);
    let conflicts = deps(RelationKind::Conflicts);
    let obsoletes = deps(RelationKind::Replaces);
    let recommends = deps(RelationKind::Recommends);
    let suggests = deps(RelationKind::Suggests);
    provides.push(Dep::new(meta.name.clone(), SENSE_EQUAL, evr.clone()));
    if let Some(isa) = isa(&meta.arch.rpm) {
        provides.push(Dep::new(
            format!("{}({isa})", meta.name),
            SENSE_EQUAL,
            evr.clone(),
        ));
    }
    requires.push(Dep::rpmlib("CompressedFileNames", "3.0.4-1"));
    requires.push(Dep::rpmlib("FileDigests", "4.6.0-1"));
    requires.push(Dep::rpmlib("PayloadFilesHavePrefix", "4.0-1"));
    if matches!(compressor, Compressor::Zstd(_)) {
        requires.push(Dep::rpmlib("PayloadIsZstd", "5.4.18-1"));
    }
    if plan.large_files {
        requires.push(Dep::rpmlib("LargeFiles", "4.12.0-1"));
    }
    // Maintainer scripts, run by /bin/sh, as rpmbuild records `%post` and friends.
    let scripts = &meta.scripts.rpm;
    for (script, tag, prog, sense) in [
        (
            &scripts.preinst,
            IndexTag::RPMTAG_PREIN,
            IndexTag::RPMTAG_PREINPROG,
            SENSE_SCRIPT_PRE,
        ),
        (
            &scripts.postinst,
            IndexTag::RPMTAG_POSTIN,
            IndexTag::RPMTAG_POSTINPROG,
            SENSE_SCRIPT_POST,
        ),
        (
            &scripts.prerm,
            IndexTag::RPMTAG_PREUN,
            IndexTag::RPMTAG_PREUNPROG,
            SENSE_SCRIPT_PREUN,
        ),
        (
            &scripts.postrm,
            IndexTag::RPMTAG_POSTUN,
            IndexTag::RPMTAG_POSTUNPROG,
            SENSE_SCRIPT_POSTUN,
        ),
    ] {
        if let Some(body) = script {
            h.push(string(tag, body.clone()));
            h.push(entry(prog, IndexData::StringArray(vec!["/bin/sh".into()])));
            requires.push(Dep::new("/bin/sh", SENSE_INTERP | sense, ""));
        }
    }
    let rich = [
        &requires,
        &provides,
        &conflicts,
        &obsoletes,
        &recommends,
        &suggests,
    ]
    .iter()
    .any(|l| l.iter().any(Dep::is_rich));
    if rich {
        requires.push(Dep::rpmlib("RichDependencies", "4.12.0-1"));
    }
    use IndexTag as T;
    h.extend(dep_entries(
        provides,
        (
            T::RPMTAG_PROVIDENAME,
            T::RPMTAG_PROVIDEVERSION,
            T::RPMTAG_PROVIDEFLAGS,
        ),
    ));
    h.extend(dep_entries(
        requires,
        (
            T::RPMTAG_REQUIRENAME,
            T::RPMTAG_REQUIREVERSION,
            T::RPMTAG_REQUIREFLAGS,
        ),
    ));
    h.extend(dep_entries(
        conflicts,
        (
            T::RPMTAG_CONFLICTNAME,
            T::RPMTAG_CONFLICTVERSION,
            T::RPMTAG_CONFLICTFLAGS,
        ),
    ));
    h.extend(dep_entries(
        obsoletes,
        (
            T::RPMTAG_OBSOLETENAME,
            T::RPMTAG_OBSOLETEVERSION,
            T::RPMTAG_OBSOLETEFLAGS,
        ),
    ));
    h.extend(dep_entries(
        recommends,
        (
            T::RPMTAG_RECOMMENDNAME,
            T::RPMTAG_RECOMMENDVERSION,
            T::RPMTAG_RECOMMENDFLAGS,
        ),
    ));
    h.extend(dep_entries(
        suggests,
        (
            T::RPMTAG_SUGGESTNAME,
            T::RPMTAG_SUGGESTVERSION,
            T::RPMTAG_SUGGESTFLAGS,
        ),
    ));
    Ok(h)
}

/// The file tags of `plan`; the paths of `flagged` get their `RPMFILE_*` flags.
fn file_entries(plan: &Plan<'_>, flagged: &[(String, u32)]) -> Vec<HeaderEntry> {
    let rows = &plan.rows;
    if rows.is_empty() {
        return Vec::new();
    }
    let mut dirnames: Vec<String> = Vec::new();
    let mut dir_index: HashMap<&str, u32> = HashMap::new();
    let mut dirindexes = Vec::with_capacity(rows.len());
    let mut basenames = Vec::with_capacity(rows.len());
    for row in rows {
        let path = row.entry.path.as_str();
        let cut = path.rfind('/').map_or(0, |i| i + 1);
        let (dir, base) = path.split_at(cut);
        let idx = *dir_index.entry(dir).or_insert_with(|| {
            dirnames.push(dir.to_string());
            dirnames.len() as u32 - 1
        });
        dirindexes.push(idx);
        basenames.push(base.to_string());
    }
    let n = rows.len();
    let sizes = if plan.large_files {
        entry(
            IndexTag::RPMTAG_LONGFILESIZES,
            IndexData::Int64(rows.iter().map(|r| r.size).collect()),
        )
    } else {
        entry(
            IndexTag::RPMTAG_FILESIZES,
            IndexData::Int32(rows.iter().map(|r| r.size as u32).collect()),
        )
    };
    vec![
        sizes,
        entry(
            IndexTag::RPMTAG_FILEMODES,
            IndexData::Int16(rows.iter().map(|r| r.mode as u16).collect()),
        ),
        entry(IndexTag::RPMTAG_FILERDEVS, IndexData::Int16(vec![0; n])),
        entry(
            IndexTag::RPMTAG_FILEMTIMES,
            IndexData::Int32(rows.iter().map(|r| r.mtime).collect()),
        ),
        entry(
            IndexTag::RPMTAG_FILEDIGESTS,
            IndexData::StringArray(rows.iter().map(|r| r.digest.clone()).collect()),
        ),
        entry(
            IndexTag::RPMTAG_FILELINKTOS,
            IndexData::StringArray(rows.iter().map(|r| r.linkto.clone()).collect()),
        ),
        entry(
            IndexTag::RPMTAG_FILEFLAGS,
            IndexData::Int32(
                rows.iter()
                    .map(|r| {
                        flagged
                            .iter()
                            .find(|(p, _)| *p == r.entry.path)
                            .map_or(0, |(_, f)| *f)
                    })
                    .collect(),
            ),
        ),
        entry(
            IndexTag::RPMTAG_FILEUSERNAME,
            IndexData::StringArray(vec!["root".into(); n]),
        ),
        entry(
            IndexTag::RPMTAG_FILEGROUPNAME,
            IndexData::StringArray(vec!["root".into(); n]),
        ),
        entry(
            IndexTag::RPMTAG_FILEVERIFYFLAGS,
            IndexData::Int32(vec![u32::MAX; n]),
        ),
        entry(IndexTag::RPMTAG_FILEDEVICES, IndexData::Int32(vec![1; n])),
        entry(
            IndexTag::RPMTAG_FILEINODES,
            IndexData::Int32(rows.iter().map(|r| r.inode).collect()),
        ),
        entry(
            IndexTag::RPMTAG_FILELANGS,
            IndexData::StringArray(vec![String::new(); n]),
        ),
        entry(IndexTag::RPMTAG_DIRINDEXES, IndexData::Int32(dirindexes)),
        entry(
            IndexTag::RPMTAG_BASENAMES,
            IndexData::StringArray(basenames),
        ),
        entry(IndexTag::RPMTAG_DIRNAMES, IndexData::StringArray(dirnames)),
    ]
}

/// Write a complete package for `entries` (already laid out) to `out`.
fn write_rpm(
    meta: &PackageMeta,
    entries: &[Entry],
    compressor: Compressor,
    force_large: bool,
    flagged: &[(String, u32)],
    out: &mut File,
    cancel: &Cancel,
) -> Result<()> {
    let plan = plan(entries, force_large)?;
    let payload = write_payload(&plan, compressor, cancel)?;
    assemble(meta, &plan, payload, compressor, flagged, out)
}

/// Write the lead and headers of `plan` and then the compressed `payload` to `out`.
fn assemble(
    meta: &PackageMeta,
    plan: &Plan<'_>,
    payload: PayloadFile,
    compressor: Compressor,
    flagged: &[(String, u32)],
    out: &mut File,
) -> Result<()> {
    let mut tags = meta_entries(meta, plan, compressor)?;
    tags.extend(file_entries(plan, flagged));
    tags.push(entry(
        IndexTag::RPMTAG_PAYLOADSHA256,
        IndexData::StringArray(vec![payload.sha256.clone()]),
    ));
    tags.push(entry(
        IndexTag::RPMTAG_PAYLOADSHA256ALGO,
        IndexData::Int32(vec![DIGEST_SHA256]),
    ));
    tags.push(entry(
        IndexTag::RPMTAG_PAYLOADSHA256ALT,
        IndexData::StringArray(vec![payload.raw_sha256.clone()]),
    ));
    let header = Header::<IndexTag>::from_entries(tags, IndexTag::RPMTAG_HEADERIMMUTABLE);

    let nvr = format!("{}-{}-{}", meta.name, meta.version, meta.revision);
    let lead = make_lead(&nvr, &meta.arch.rpm)?;
    let header_bytes = PackageMetadata {
        lead: lead.clone(),
        signature: Header::<IndexSignatureTag>::new_empty(),
        header: header.clone(),
    }
    .header_bytes()
    .map_err(|e| rpm_error("serializing the rpm header", e))?;

    let signature = SignatureHeaderBuilder::new()
        .format(RpmFormat::V4)
        .set_content_length(header_bytes.len() as u64 + payload.len)
        .calculate_digests(&header_bytes)
        .build()
        .map_err(|e| rpm_error("building the rpm signature header", e))?;
    // Add the uncompressed archive size, as rpmbuild does (rpm reports install progress
    // against it).
    let mut sig_entries: Vec<HeaderEntry> = signature
        .get_all_entries()
        .map_err(|e| rpm_error("building the rpm signature header", e))?
        .into_iter()
        .filter(|(tag, _)| *tag != IndexSignatureTag::HEADER_SIGNATURES as u32)
        .map(|(tag, data)| HeaderEntry::new(tag, data))
        .collect();
    sig_entries.push(match u32::try_from(payload.raw_len) {
        Ok(n) => HeaderEntry::new(
            IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE as u32,
            IndexData::Int32(vec![n]),
        ),
        Err(_) => HeaderEntry::new(
            IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE as u32,
            IndexData::Int64(vec![payload.raw_len]),
        ),
    });
    let signature = Header::<IndexSignatureTag>::from_entries(
        sig_entries,
        IndexSignatureTag::HEADER_SIGNATURES,
    );

    let mut w = BufWriter::with_capacity(COPY_BUFFER, out);
    PackageMetadata {
        lead,
        signature,
        header,
    }
    .write(&mut w)
    .map_err(|e| rpm_error("writing the rpm headers", e))?;
    let mut file = payload.file;
    let copied = io::copy(&mut (&mut file).take(payload.len), &mut w)
        .ctx(|| "writing the rpm payload".into())?;
    if copied != payload.len {
        return Err(Error::Io {
            context: "writing the rpm payload".into(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "temporary payload file shrank",
            ),
        });
    }
    w.flush().ctx(|| "writing the rpm package".into())?;
    Ok(())
}

/// Printed form of a dependency: `name`, or `name op version`.
fn dep_display(d: &rpm::Dependency) -> String {
    let flags = d.flags.bits() & (SENSE_LESS | SENSE_GREATER | SENSE_EQUAL);
    let op = match flags {
        f if f == SENSE_LESS => "<",
        f if f == SENSE_LESS | SENSE_EQUAL => "<=",
        f if f == SENSE_EQUAL => "=",
        f if f == SENSE_GREATER | SENSE_EQUAL => ">=",
        f if f == SENSE_GREATER => ">",
        _ => "",
    };
    if d.version.is_empty() || op.is_empty() {
        d.name.clone()
    } else {
        format!("{} {op} {}", d.name, d.version)
    }
}

fn inspect_rpm(path: &Path) -> Result<Inspection> {
    let bad = |e: rpm::Error| Error::input(path, format!("not a valid rpm package: {e}"));
    // Bounds-checked before the crate parses it.
    let md = super::rpmheader::open(path)?.0.metadata;
    let name = md.get_name().map_err(bad)?.to_string();
    let version = md.get_version().map_err(bad)?;
    let release = md.get_release().map_err(bad)?;
    let version = match md.get_epoch() {
        Ok(epoch) => format!("{epoch}:{version}-{release}"),
        Err(_) => format!("{version}-{release}"),
    };
    let arch = md.get_arch().map_err(bad)?.to_string();

    let mut fields = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: std::result::Result<&str, rpm::Error>| {
        if let Ok(v) = v {
            if !v.is_empty() {
                fields.insert(k.to_string(), v.to_string());
            }
        }
    };
    put("Summary", md.get_summary());
    put("Description", md.get_description());
    put("License", md.get_license());
    put("URL", md.get_url());
    put("Group", md.get_group());
    put("Packager", md.get_packager());
    put("Vendor", md.get_vendor());
    put("BuildHost", md.get_build_host());
    put("SourceRPM", md.get_source_rpm());
    put(
        "DistURL",
        md.header.get_entry_data_as_string(IndexTag::RPMTAG_DISTURL),
    );
    put(
        "PayloadCompressor",
        md.header
            .get_entry_data_as_string(IndexTag::RPMTAG_PAYLOADCOMPRESSOR),
    );
    if let Ok(t) = md.get_build_time() {
        fields.insert("BuildTime".into(), t.to_string());
    }
    if let Ok(s) = md.get_installed_size() {
        fields.insert("Size".into(), s.to_string());
    }

    let mut relations = std::collections::BTreeMap::new();
    let lists = [
        ("Requires", md.get_requires()),
        ("Provides", md.get_provides()),
        ("Conflicts", md.get_conflicts()),
        ("Obsoletes", md.get_obsoletes()),
        ("Recommends", md.get_recommends()),
        ("Suggests", md.get_suggests()),
        ("Enhances", md.get_enhances()),
        ("Supplements", md.get_supplements()),
    ];
    for (field, list) in lists {
        let list = match list {
            Ok(l) => l,
            Err(rpm::Error::TagNotFound(_)) => continue,
            Err(e) => return Err(bad(e)),
        };
        if !list.is_empty() {
            relations.insert(field.to_string(), list.iter().map(dep_display).collect());
        }
    }

    let file_entries = md.get_file_entries().map_err(bad)?;
    let inodes = md
        .header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEINODES)
        .ok();
    let devices = md
        .header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEDEVICES)
        .ok();
    let mut first_name: HashMap<(u32, u32), String> = HashMap::new();
    let mut files = Vec::with_capacity(file_entries.len());
    for (i, f) in file_entries.iter().enumerate() {
        let path = f.path().to_string_lossy().into_owned();
        let mode = f.mode();
        let (kind, target) = match mode.file_type() {
            rpm::FileType::Dir => (FileKind::Directory, None),
            rpm::FileType::SymbolicLink => (FileKind::Symlink, f.linkto().map(str::to_string)),
            rpm::FileType::Regular => {
                let key = inodes.as_ref().and_then(|v| v.get(i)).map(|&ino| {
                    (
                        devices
                            .as_ref()
                            .and_then(|d| d.get(i))
                            .copied()
                            .unwrap_or(0),
                        ino,
                    )
                });
                match key {
                    Some(k) => match first_name.get(&k) {
                        Some(first) => (FileKind::Hardlink, Some(first.clone())),
                        None => {
                            first_name.insert(k, path.clone());
                            (FileKind::File, None)
                        }
                    },
                    None => (FileKind::File, None),
                }
            }
            _ => (FileKind::Other, None),
        };
        files.push(InspectedFile {
            path,
            kind,
            mode: u32::from(mode.permissions()),
            size: f.size() as u64,
            user: f.user().to_string(),
            group: f.group().to_string(),
            target,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Inspection {
        format: Format::Rpm,
        name,
        version,
        arch,
        fields,
        relations,
        files,
    })
}
