//! The payload stage: one streaming pass over an upstream tarball that validates every
//! entry, maps it below the install prefix and stages file contents on disk.
//!
//! Tarballs are hostile input. An entry is rejected (with its name in the error) when it
//! has an absolute path or a `..` component, a path or link target of `PATH_MAX`
//! (4096) bytes or more or a name over `NAME_MAX` (255) bytes, lies outside the spec's top directory, is a
//! device node, FIFO or sparse file (GNU or any PAX form), is setuid/setgid, is a symlink
//! whose target leaves the package prefix (resolved through the payload's other symlinks
//! once all entries are known), is a hard link to anything but an earlier regular file,
//! sits below a symlink, or repeats an earlier path. The stream is read through a
//! [`TarGuard`], so oversized long names and PAX headers are refused before they are read. File contents are staged as numbered files in a
//! private directory, so no path or link from the archive is ever followed on disk.
//! Memory holds only the entry list; contents stream through a fixed buffer.

use indicatif::ProgressBar;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::targuard::{self, TarGuard};

/// Size of the copy buffer used for every streamed file.
pub const COPY_BUFFER: usize = 256 * 1024;

/// Linux's `PATH_MAX` (with the terminating NUL): no archive path or link target may be
/// this long.
const PATH_MAX: usize = 4096;

/// Linux's `NAME_MAX`: the longest name of one path component.
const NAME_MAX: usize = 255;

/// `path` cut to a length an error line can show.
fn shorten(path: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 160;
    if path.len() <= SHOWN {
        return path.into();
    }
    let mut end = SHOWN;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len()).into()
}

/// One path in the package, as it will be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute install path without a trailing slash (`/usr/lib/korg/llvm-18/bin/clang`).
    pub path: String,
    /// Permission bits (`0o755`); the file type is in `kind`.
    pub mode: u32,
    /// Modification time, seconds since the epoch (already clamped to `SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// What the path is.
    pub kind: EntryKind,
}

/// The type of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// A regular file (the first, in path order, of a hard-link group).
    File(FileData),
    /// A symbolic link with its target exactly as written (always relative).
    Symlink(String),
    /// A further name of a regular file; `target` is that file's install path.
    HardLink {
        target: String,
        data: FileData,
    },
}

/// A regular file's contents and digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    pub size: u64,
    pub sha256: [u8; 32],
    pub md5: [u8; 16],
    /// How many paths in the package name these contents (1 without hard links).
    pub links: u32,
    /// Identifies the contents: equal for all names of one hard-link group.
    pub inode: u32,
    pub source: DataSource,
}

/// Where a file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A file in the payload's staging directory.
    Staged(PathBuf),
    /// Small generated content (copyright files, changelogs).
    Inline(Arc<[u8]>),
    /// Streamed once to every consumer while the tarball was read ([`stream_payload`]);
    /// the bytes are not kept anywhere.
    Streamed,
}

impl FileData {
    /// Contents held in memory (for small generated files).
    pub fn inline(bytes: Vec<u8>, inode: u32) -> Self {
        FileData {
            size: bytes.len() as u64,
            sha256: Sha256::digest(&bytes).into(),
            md5: Md5::digest(&bytes).into(),
            links: 1,
            inode,
            source: DataSource::Inline(bytes.into()),
        }
    }

    /// Open the contents for streaming.
    pub fn open(&self) -> Result<Box<dyn Read + '_>> {
        Ok(match &self.source {
            DataSource::Staged(p) => {
                Box::new(File::open(p).ctx(|| format!("opening staged file {}", p.display()))?)
            }
            DataSource::Inline(b) => Box::new(&b[..]),
            DataSource::Streamed => {
                return Err(Error::Usage(
                    "a streamed payload's contents cannot be read again".into(),
                ))
            }
        })
    }

    /// Lowercase hex SHA-256.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Counts of what a payload holds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PayloadStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Sum of regular file sizes (each hard-link group once).
    pub file_bytes: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Newest entry mtime after clamping (0 for an empty payload).
    pub max_mtime: u64,
}

/// A validated, staged payload: entries sorted by path, contents on disk.
pub struct Payload {
    entries: Vec<Entry>,
    prefix: String,
    stats: PayloadStats,
    _staging: Vec<Arc<crate::cleanup::TempDir>>,
}

/// What to extract and where it goes.
pub struct StageOptions<'a> {
    /// The one top directory of the tarball (`llvm-18.1.8-x86_64`), may contain `/`.
    pub top_dir: &'a str,
    /// Install prefix that replaces the top directory (`/usr/lib/korg/llvm-18`).
    pub prefix: &'a str,
    /// Relative paths (below the top directory) to leave out.
    pub exclude: &'a dyn Fn(&str) -> bool,
    /// Clamp every mtime to this (`SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<u64>,
    /// Whether to take every file's MD5 (the deb's `md5sums` needs it); without it
    /// the MD5 fields stay zero.
    pub md5: bool,
}

impl Payload {
    /// All entries, sorted by path; the prefix directory is the first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The install prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Counts of what the payload holds.
    pub fn stats(&self) -> &PayloadStats {
        &self.stats
    }

    /// A payload without entries (what a moved-out payload leaves behind).
    pub fn empty() -> Payload {
        Payload {
            entries: Vec::new(),
            prefix: String::new(),
            stats: PayloadStats::default(),
            _staging: Vec::new(),
        }
    }

    /// This payload plus `extra` entries (replacing any of the same path), sharing the
    /// staged contents: one format's variant of a payload (rpm's kernel layout).
    pub fn with_entries(&self, extra: Vec<Entry>) -> Payload {
        let mut all: BTreeMap<String, Entry> = self
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect();
        for e in extra {
            all.insert(e.path.clone(), e);
        }
        Payload {
            entries: all.into_values().collect(),
            prefix: self.prefix.clone(),
            stats: self.stats.clone(),
            _staging: self._staging.clone(),
        }
    }
}

/// Builds a payload from loose files, directory trees and tar streams (kernel packages):
/// each file is streamed into a private staging directory while it is hashed, and paths
/// may be added only once.
pub struct PayloadBuilder {
    work_dir: PathBuf,
    staging: Vec<Arc<crate::cleanup::TempDir>>,
    dir: PathBuf,
    entries: BTreeMap<String, Entry>,
    next_inode: u32,
    clamp_mtime: Option<u64>,
    tar_bytes: u64,
}

impl PayloadBuilder {
    /// A builder staging below `work_dir`; mtimes are clamped to `clamp_mtime`.
    pub fn new(work_dir: &Path, clamp_mtime: Option<u64>) -> Result<Self> {
        let staging = crate::cleanup::TempDir::staging_in(work_dir)
            .ctx(|| format!("creating a staging directory in {}", work_dir.display()))?;
        Ok(PayloadBuilder {
            work_dir: work_dir.to_path_buf(),
            dir: staging.path().to_path_buf(),
            staging: vec![Arc::new(staging)],
            entries: BTreeMap::new(),
            next_inode: 1,
            clamp_mtime,
            tar_bytes: 0,
        })
    }

    fn clamp(&self, mtime: u64) -> u64 {
        self.clamp_mtime.map_or(mtime, |c| mtime.min(c))
    }

    fn insert(&mut self, origin: &Path, entry: Entry) -> Result<()> {
        if let Some(prev) = self.entries.get(&entry.path) {
            if matches!(
                (&prev.kind, &entry.kind),
                (EntryKind::Directory, EntryKind::Directory)
            ) {
                return Ok(());
            }
            return Err(Error::input(
                origin,
                format!("{} is packaged twice", entry.path),
            ));
        }
        self.entries.insert(entry.path.clone(), entry);
        Ok(())
    }

    /// Whether `path` is already in the payload.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// Stage the regular file `source` as `path` with permission bits `mode`.
    pub fn file(&mut self, path: &str, source: &Path, mode: u32) -> Result<FileData> {
        self.file_with(path, source, mode, None)
    }

    /// Stage the gzip'd regular file `source` decompressed as `path`; more than `max`
    /// decompressed bytes is an error naming `source` (a gzip bomb is not staged).
    pub fn file_gunzipped(
        &mut self,
        path: &str,
        source: &Path,
        mode: u32,
        max: u64,
    ) -> Result<FileData> {
        self.file_with(path, source, mode, Some(max))
    }

    fn file_with(
        &mut self,
        path: &str,
        source: &Path,
        mode: u32,
        gunzip_max: Option<u64>,
    ) -> Result<FileData> {
        let file = File::open(source).ctx(|| format!("opening {}", source.display()))?;
        let meta = file
            .metadata()
            .ctx(|| format!("reading {}", source.display()))?;
        if !meta.is_file() {
            return Err(Error::input(source, "not a regular file"));
        }
        let mut input: Box<dyn Read> = match gunzip_max {
            // One byte past the bound tells "too large" from "exactly the bound".
            Some(max) => Box::new(
                flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file))
                    .take(max.saturating_add(1)),
            ),
            None => Box::new(file),
        };
        let mtime = self.clamp(mtime_of(&meta));
        let inode = self.next_inode;
        self.next_inode += 1;
        let staged = self.dir.join(format!("f{inode:08}"));
        let mut out = File::create_new(&staged)
            .ctx(|| format!("creating staged file {}", staged.display()))?;
        let mut sha = Sha256::new();
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut size = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if gunzip_max.is_some() => {
                    return Err(Error::input(source, format!("not a valid gzip file: {e}")))
                }
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("reading {}", source.display()),
                        source: e,
                    })
                }
            };
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            md5.update(&buf[..n]);
            out.write_all(&buf[..n])
                .ctx(|| format!("writing staged file {}", staged.display()))?;
            size += n as u64;
            if let Some(max) = gunzip_max.filter(|&m| size > m) {
                return Err(Error::input(
                    source,
                    format!("decompresses to more than {max} bytes"),
                ));
            }
        }
        let data = FileData {
            size,
            sha256: sha.finalize().into(),
            md5: md5.finalize().into(),
            links: 1,
            inode,
            source: DataSource::Staged(staged),
        };
        self.insert(
            source,
            Entry {
                path: path.to_string(),
                mode: mode & 0o777,
                mtime,
                kind: EntryKind::File(data.clone()),
            },
        )?;
        Ok(data)
    }

    /// A symlink `path` → `target` (written as given).
    pub fn symlink(&mut self, path: &str, target: &str, mtime: u64) -> Result<()> {
        let mtime = self.clamp(mtime);
        self.insert(
            Path::new(path),
            Entry {
                path: path.to_string(),
                mode: 0o777,
                mtime,
                kind: EntryKind::Symlink(target.to_string()),
            },
        )
    }

    /// Stage a directory tree: `source` becomes `prefix`, `keep(rel, is_dir)` selects what
    /// is packaged. Symlinks must stay inside the tree; devices, FIFOs, sockets and
    /// setuid/setgid files are rejected, naming the path.
    pub fn tree(
        &mut self,
        source: &Path,
        prefix: &str,
        keep: &dyn Fn(&str, bool) -> bool,
    ) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let prefix = prefix.trim_end_matches('/');
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                source.to_path_buf()
            } else {
                source.join(&rel)
            };
            let meta =
                std::fs::symlink_metadata(&dir).ctx(|| format!("reading {}", dir.display()))?;
            let install = if rel.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}/{rel}")
            };
            let mtime = self.clamp(mtime_of(&meta));
            self.insert(
                &dir,
                Entry {
                    path: install,
                    mode: meta.permissions().mode() & 0o777,
                    mtime,
                    kind: EntryKind::Directory,
                },
            )?;
            let rd =
                std::fs::read_dir(&dir).ctx(|| format!("reading directory {}", dir.display()))?;
            for e in rd {
                let e = e.ctx(|| format!("reading directory {}", dir.display()))?;
                let name = e.file_name();
                let name = name
                    .to_str()
                    .ok_or_else(|| Error::input(e.path(), "file name is not UTF-8"))?;
                if name.contains('\n') || name.contains('\\') {
                    return Err(Error::input(
                        e.path(),
                        "file name contains a newline or backslash",
                    ));
                }
                let child = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let path = e.path();
                let meta = std::fs::symlink_metadata(&path)
                    .ctx(|| format!("reading {}", path.display()))?;
                let ft = meta.file_type();
                if !keep(&child, ft.is_dir()) {
                    continue;
                }
                let install = format!("{prefix}/{child}");
                if ft.is_dir() {
                    stack.push(child);
                } else if ft.is_symlink() {
                    let target = std::fs::read_link(&path)
                        .ctx(|| format!("reading link {}", path.display()))?;
                    let target = target
                        .to_str()
                        .ok_or_else(|| Error::input(&path, "link target is not UTF-8"))?;
                    if !stays_inside(&child, target) {
                        return Err(Error::input(
                            &path,
                            format!("symlink to {target:?} leaves the packaged tree"),
                        ));
                    }
                    self.symlink(&install, target, mtime_of(&meta))?;
                } else if ft.is_file() {
                    let mode = meta.permissions().mode();
                    if mode & 0o6000 != 0 {
                        return Err(Error::input(&path, "setuid/setgid file"));
                    }
                    self.file(&install, &path, mode)?;
                } else {
                    return Err(Error::input(
                        &path,
                        "not a regular file, directory or symlink",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Stage a tar stream as [`stage_stream`] does (all its checks apply) and add its
    /// entries; `name` is used in errors.
    pub fn tar(&mut self, name: &Path, reader: impl Read, opts: &StageOptions<'_>) -> Result<()> {
        let staged = stage_stream(name, reader, &self.work_dir, opts, None)?;
        self.tar_bytes += staged.stats.tar_bytes;
        for e in staged.entries {
            self.insert(name, e)?;
        }
        self.staging.extend(staged._staging);
        Ok(())
    }

    /// The payload: entries sorted by path, with their statistics; `prefix` is recorded
    /// as the payload's install prefix.
    pub fn finish(self, prefix: &str) -> Payload {
        let mut stats = PayloadStats {
            tar_bytes: self.tar_bytes,
            ..Default::default()
        };
        for e in self.entries.values() {
            stats.max_mtime = stats.max_mtime.max(e.mtime);
            match &e.kind {
                EntryKind::Directory => stats.directories += 1,
                EntryKind::Symlink(_) => stats.symlinks += 1,
                EntryKind::HardLink { .. } => stats.hardlinks += 1,
                EntryKind::File(d) => {
                    stats.files += 1;
                    stats.file_bytes += d.size;
                }
            }
        }
        Payload {
            entries: self.entries.into_values().collect(),
            prefix: prefix.to_string(),
            stats,
            _staging: self.staging,
        }
    }
}

fn mtime_of(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime().max(0) as u64
}

/// Whether the relative symlink `target` at `rel` resolves inside its tree.
pub(crate) fn stays_inside(rel: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth = rel.split('/').count() as i64 - 1;
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// The compression of a tarball, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    Zstd,
    None,
}

/// Detect the compression from the leading magic bytes.
pub fn detect_compression(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Some(Compression::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Compression::None)
    } else {
        None
    }
}

/// Open `path` and return a reader of the uncompressed tar stream. `progress`, if given,
/// advances with the compressed bytes read.
pub fn open_tarball(path: &Path, progress: Option<&ProgressBar>) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    decompress(path, Box::new(file), progress, crate::worker_threads())
}

/// Like [`open_tarball`], also feeding every compressed byte read to `hasher`, and
/// decoding a multi-block xz file with up to `decode_threads` threads.
pub fn open_tarball_hashed(
    path: &Path,
    progress: Option<&ProgressBar>,
    hasher: std::sync::Arc<std::sync::Mutex<Sha256>>,
    decode_threads: usize,
) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    decompress(
        path,
        Box::new(HashingReader::new(file, hasher)),
        progress,
        decode_threads,
    )
}

/// Detect the compression of `raw` and return a reader of the uncompressed stream.
fn decompress(
    path: &Path,
    raw: Box<dyn Read + Send>,
    progress: Option<&ProgressBar>,
    workers: usize,
) -> Result<Box<dyn Read + Send>> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let raw: Box<dyn Read + Send> = match progress {
        Some(pb) => {
            pb.set_length(len);
            Box::new(pb.wrap_read(raw))
        }
        None => raw,
    };
    let mut reader = BufReader::with_capacity(COPY_BUFFER, raw);
    let head = reader
        .fill_buf()
        .ctx(|| format!("reading {}", path.display()))?;
    let compression = detect_compression(head).ok_or_else(|| {
        Error::input(
            path,
            "not a tar archive (expected .tar, .tar.xz, .tar.gz or .tar.zst)",
        )
    })?;
    Ok(match compression {
        Compression::Xz => match crate::xz::layout(path) {
            Some(layout) if crate::xz::parallel_worthwhile(&layout, workers) => {
                Box::new(crate::xz::ParallelDecoder::new(reader, layout, workers))
            }
            _ => Box::new(xz2::read::XzDecoder::new_multi_decoder(reader)),
        },
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .ctx(|| format!("starting zstd decoder for {}", path.display()))?,
        ),
        Compression::None => Box::new(reader),
    })
}

/// A reader that copies everything it reads into a tap (for hashing the uncompressed
/// stream for signature checks in the same pass) and counts bytes.
struct TapReader<'a, R> {
    inner: R,
    tap: Option<&'a mut (dyn Write + Send)>,
    count: u64,
}

impl<R: Read> Read for TapReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(tap) = self.tap.as_mut() {
            tap.write_all(&buf[..n])?;
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Extract and validate the tarball at `tarball` into a staging directory created in
/// `work_dir`. `tap` receives every byte of the uncompressed tar stream.
pub fn stage(
    tarball: &Path,
    work_dir: &Path,
    opts: &StageOptions<'_>,
    progress: Option<&ProgressBar>,
    tap: Option<&mut (dyn Write + Send)>,
) -> Result<Payload> {
    let reader = open_tarball(tarball, progress)?;
    stage_stream(tarball, reader, work_dir, opts, tap)
}

/// Like [`stage`], for an already decompressed tar stream; `name` is used in errors.
pub fn stage_stream(
    name: &Path,
    reader: impl Read,
    work_dir: &Path,
    opts: &StageOptions<'_>,
    tap: Option<&mut (dyn Write + Send)>,
) -> Result<Payload> {
    let staging = crate::cleanup::TempDir::staging_in(work_dir)
        .ctx(|| format!("creating a staging directory in {}", work_dir.display()))?;
    let staging_dir = staging.path().to_path_buf();
    let stager = Stager::new(name, opts, Contents::Staged(&staging_dir));
    read_archive(name, reader, opts, tap, stager, Some(staging))
}

/// Receives the entries of a tarball in archive order while [`stream_payload`] reads it,
/// so every consumer sees each byte once and nothing is staged on disk.
pub trait StreamVisitor {
    /// The next entry, already validated and mapped below the prefix; every ancestor
    /// directory came before it. A regular file's `size` bytes follow through
    /// [`StreamVisitor::data`]; its digests are zero here and complete in the final
    /// [`Payload`]. A hard link's data names its (earlier) target's complete digests.
    fn entry(&mut self, entry: &Entry) -> Result<()>;

    /// The next bytes of the current regular file.
    fn data(&mut self, bytes: &[u8]) -> Result<()>;
}

/// Read and validate a tar stream in one pass, as [`stage_stream`] does (every check
/// applies, the symlink check once the whole list is known), handing each entry and its
/// bytes to `visitor` in archive order instead of staging them. Directories the archive
/// does not list are passed before their first child, with the mtime `clamp_mtime`
/// (else that child's); a directory entry that comes after an entry below it, or
/// repeats one with another mode or mtime, is refused (its first form was already
/// passed on). The returned payload has the sorted entry list with every digest; each
/// hard-link group's contents belong to its first name in archive order. Its contents
/// cannot be read again ([`DataSource::Streamed`]).
pub fn stream_payload(
    name: &Path,
    reader: impl Read,
    opts: &StageOptions<'_>,
    tap: Option<&mut (dyn Write + Send)>,
    visitor: &mut dyn StreamVisitor,
) -> Result<Payload> {
    let stager = Stager::new(name, opts, Contents::Streamed(visitor));
    read_archive(name, reader, opts, tap, stager, None)
}

fn read_archive(
    name: &Path,
    reader: impl Read,
    opts: &StageOptions<'_>,
    tap: Option<&mut (dyn Write + Send)>,
    mut stager: Stager<'_>,
    staging: Option<crate::cleanup::TempDir>,
) -> Result<Payload> {
    let mut archive = tar::Archive::new(TarGuard::new(TapReader {
        inner: reader,
        tap,
        count: 0,
    }));
    let corrupt = |e: io::Error| targuard::input_error(name, "corrupt or truncated tarball", &e);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        stager.add(&mut entry)?;
    }
    // Read to the end, so the decompressor checks its trailer (and the tap sees all bytes).
    let mut guard = archive.into_inner();
    io::copy(&mut guard, &mut io::sink()).map_err(corrupt)?;
    let inner = guard.into_inner();
    if stager.entries.is_empty() {
        return Err(Error::input(
            name,
            format!("no entries below the top directory {:?}", opts.top_dir),
        ));
    }
    stager.check_symlinks()?;
    let mut payload = stager.finish(staging)?;
    payload.stats.tar_bytes = inner.count;
    Ok(payload)
}

/// The longest link target korgpkg accepts (Linux's `PATH_MAX` less the NUL).
const MAX_LINK_TARGET: usize = 4095;

/// The most symlinks one path resolution may follow (Linux's limit before `ELOOP`).
const MAX_SYMLINK_FOLLOWS: u32 = 40;

/// Why a symlink is refused once the whole payload is known.
enum LinkProblem {
    /// Leaves the prefix: the `..` that climbs out is in this link's target.
    Escapes(String),
    /// Follows more than [`MAX_SYMLINK_FOLLOWS`] symlinks (or a loop).
    Loop,
}

/// Where the stager puts file contents.
enum Contents<'a> {
    /// Numbered files in this private directory.
    Staged(&'a Path),
    /// Nowhere: each entry and its bytes go to the visitor as they are read.
    Streamed(&'a mut dyn StreamVisitor),
}

/// What the stager knows about a path seen so far.
struct Stager<'a> {
    name: &'a Path,
    opts: &'a StageOptions<'a>,
    contents: Contents<'a>,
    /// Directories passed to the visitor without an archive entry of their own.
    implicit: std::collections::HashSet<String>,
    top: Vec<&'a str>,
    /// Relative path (below top dir) → entry; "" is the top directory itself.
    entries: BTreeMap<String, Staged>,
    next_inode: u32,
}

#[derive(Debug, Clone)]
struct Staged {
    mode: u32,
    mtime: u64,
    kind: StagedKind,
}

#[derive(Debug, Clone)]
enum StagedKind {
    Dir,
    File { data: FileData },
    Symlink(String),
    HardLink(String),
}

impl<'a> Stager<'a> {
    fn new(name: &'a Path, opts: &'a StageOptions<'a>, contents: Contents<'a>) -> Self {
        Stager {
            name,
            opts,
            contents,
            implicit: Default::default(),
            top: opts.top_dir.split('/').filter(|c| !c.is_empty()).collect(),
            entries: BTreeMap::new(),
            next_inode: 1,
        }
    }

    fn reject(&self, path: &str, why: impl std::fmt::Display) -> Error {
        Error::input(self.name, format!("entry {:?}: {why}", shorten(path)))
    }

    /// Split an archive path into normal components, rejecting absolute paths, `..`,
    /// and paths or names no file system takes (over `PATH_MAX` or `NAME_MAX` bytes),
    /// before anything walks their components.
    fn components<'p>(&self, raw: &'p str, shown: &str) -> Result<Vec<&'p str>> {
        if raw.starts_with('/') {
            return Err(self.reject(shown, "absolute path"));
        }
        if raw.len() >= PATH_MAX {
            return Err(self.reject(
                shown,
                format!(
                    "path of {} bytes (the limit is {})",
                    raw.len(),
                    PATH_MAX - 1
                ),
            ));
        }
        let mut out = Vec::new();
        for c in raw.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(self.reject(shown, "path contains `..`")),
                c if c.len() > NAME_MAX => {
                    return Err(self.reject(
                        shown,
                        format!("a name of {} bytes (the limit is {NAME_MAX})", c.len()),
                    ))
                }
                c => out.push(c),
            }
        }
        Ok(out)
    }

    /// Map an archive path to a path relative to the top directory. `Ok(None)` for the
    /// top directory's own parents (`gcc-14.2.0-nolibc/`), which are skipped.
    fn relative(&self, raw: &str, is_dir: bool) -> Result<Option<String>> {
        let comps = self.components(raw, raw)?;
        if comps.len() < self.top.len() {
            if is_dir && comps[..] == self.top[..comps.len()] {
                return Ok(None);
            }
            return Err(self.reject(
                raw,
                format!("outside the top directory {:?}", self.opts.top_dir),
            ));
        }
        if comps[..self.top.len()] != self.top[..] {
            return Err(self.reject(
                raw,
                format!("outside the top directory {:?}", self.opts.top_dir),
            ));
        }
        Ok(Some(comps[self.top.len()..].join("/")))
    }

    fn add<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| Error::input(self.name, "an entry's path is not UTF-8"))?;
        // Every form of sparse file: GNU 'S' entries (below), PAX 0.0/0.1/1.0 ones,
        // whose records are `GNU.sparse.*` and whose 1.0 names are `GNUSparseFile.N/...`.
        if raw_path.split('/').any(|c| c.starts_with("GNUSparseFile.")) {
            return Err(self.reject(&raw_path, "sparse file (PAX format)"));
        }
        let pax = entry
            .pax_extensions()
            .map_err(|e| self.reject(&raw_path, format!("bad PAX header: {e}")))?;
        for record in pax.into_iter().flatten() {
            let record =
                record.map_err(|e| self.reject(&raw_path, format!("bad PAX header: {e}")))?;
            if record.key_bytes().starts_with(b"GNU.sparse.") {
                return Err(self.reject(&raw_path, "sparse file (PAX GNU.sparse records)"));
            }
        }
        let header = entry.header();
        let etype = header.entry_type();
        use tar::EntryType as T;
        match etype {
            T::XGlobalHeader => return Ok(()),
            T::Char | T::Block => return Err(self.reject(&raw_path, "device node")),
            T::Fifo => return Err(self.reject(&raw_path, "FIFO")),
            T::GNUSparse => return Err(self.reject(&raw_path, "sparse file")),
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link => {}
            other => {
                return Err(self.reject(&raw_path, format!("unsupported entry type {other:?}")))
            }
        }
        let is_dir = etype == T::Directory;
        let Some(rel) = self.relative(&raw_path, is_dir)? else {
            return Ok(());
        };
        if rel.contains('\n') || rel.contains('\\') {
            return Err(self.reject(&raw_path, "path contains a newline or backslash"));
        }
        if self.opts.prefix.len() + 1 + rel.len() >= PATH_MAX {
            return Err(self.reject(
                &raw_path,
                format!("installed path longer than {} bytes", PATH_MAX - 1),
            ));
        }
        if !rel.is_empty() && (self.opts.exclude)(&rel) {
            return Ok(());
        }
        let mode = header
            .mode()
            .map_err(|e| self.reject(&raw_path, format!("bad mode: {e}")))?;
        let mtime = header
            .mtime()
            .map_err(|e| self.reject(&raw_path, format!("bad mtime: {e}")))?;
        let mtime = match self.opts.clamp_mtime {
            Some(c) => mtime.min(c),
            None => mtime,
        };
        if !is_dir && mode & 0o6000 != 0 {
            return Err(self.reject(
                &raw_path,
                format!("setuid/setgid bit set (mode {:o})", mode & 0o7777),
            ));
        }
        // No entry may live below a symlink or a file.
        if !rel.is_empty() {
            let mut ancestor = String::new();
            for comp in rel
                .split('/')
                .collect::<Vec<_>>()
                .iter()
                .rev()
                .skip(1)
                .rev()
            {
                if !ancestor.is_empty() {
                    ancestor.push('/');
                }
                ancestor.push_str(comp);
                match self.entries.get(&ancestor).map(|e| &e.kind) {
                    Some(StagedKind::Dir) | None => {}
                    Some(_) => {
                        return Err(self.reject(
                            &raw_path,
                            format!("lies below {ancestor:?}, which is not a directory"),
                        ))
                    }
                }
            }
        }
        let streaming = matches!(self.contents, Contents::Streamed(_));
        if let Some(prev) = self.entries.get(&rel) {
            if !(is_dir && matches!(prev.kind, StagedKind::Dir)) {
                return Err(self.reject(&raw_path, "appears twice in the archive"));
            }
            if streaming {
                // Streamed in archive order: the directory was already passed on.
                if self.implicit.contains(&rel) {
                    return Err(self.reject(
                        &raw_path,
                        "directory entry comes after entries below it (packages follow the archive order, so a directory must precede its contents)",
                    ));
                }
                if prev.mode != mode & 0o777 || prev.mtime != mtime {
                    return Err(self.reject(
                        &raw_path,
                        "repeats an earlier directory entry with another mode or mtime",
                    ));
                }
                return Ok(());
            }
            // Repeated directory entries are harmless; the last mode wins.
        }
        if streaming {
            self.pass_ancestors(&rel, mtime)?;
        }

        let perm = match etype {
            T::Symlink => 0o777,
            _ => mode & 0o777,
        };
        let kind = match etype {
            T::Directory => StagedKind::Dir,
            T::Symlink => {
                let target = self.link_target(entry, &raw_path)?;
                self.check_symlink(&rel, &target, &raw_path)?;
                StagedKind::Symlink(target)
            }
            T::Link => {
                let target_raw = self.link_target(entry, &raw_path)?;
                let Some(target) = self.relative(&target_raw, false)? else {
                    return Err(self.reject(&raw_path, "hard link to a directory"));
                };
                match self.entries.get(&target).map(|e| &e.kind) {
                    Some(StagedKind::File { .. }) => StagedKind::HardLink(target),
                    _ => {
                        return Err(self.reject(
                            &raw_path,
                            format!(
                                "hard link to {target_raw:?}, which is not an earlier regular file"
                            ),
                        ))
                    }
                }
            }
            _ => {
                let size = entry.size();
                let data = self.stage_file(entry, size, &raw_path, &rel, perm, mtime)?;
                StagedKind::File { data }
            }
        };
        if let Contents::Streamed(_) = self.contents {
            let passed = match &kind {
                StagedKind::Dir => Some(Entry {
                    path: self.install_path(&rel),
                    mode: perm,
                    mtime,
                    kind: EntryKind::Directory,
                }),
                StagedKind::Symlink(t) => Some(Entry {
                    path: self.install_path(&rel),
                    mode: perm,
                    mtime,
                    kind: EntryKind::Symlink(t.clone()),
                }),
                StagedKind::HardLink(t) => match self.entries.get(t) {
                    Some(Staged {
                        mode: file_mode,
                        kind: StagedKind::File { data },
                        ..
                    }) => Some(Entry {
                        path: self.install_path(&rel),
                        mode: *file_mode,
                        mtime,
                        kind: EntryKind::HardLink {
                            target: self.install_path(t),
                            data: data.clone(),
                        },
                    }),
                    _ => None,
                },
                // Passed on before its bytes (in `stage_file`).
                StagedKind::File { .. } => None,
            };
            if let (Some(e), Contents::Streamed(v)) = (passed, &mut self.contents) {
                v.entry(&e)?;
            }
        }
        self.entries.insert(
            rel,
            Staged {
                mode: perm,
                mtime,
                kind,
            },
        );
        Ok(())
    }

    /// The install path of `rel` (below the top directory).
    fn install_path(&self, rel: &str) -> String {
        let prefix = self.opts.prefix.trim_end_matches('/');
        if rel.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}/{rel}")
        }
    }

    /// Pass on every ancestor directory of `rel` the archive has not listed yet, top
    /// down, with mode 0755 and the clamp mtime (else `mtime`, the child's).
    fn pass_ancestors(&mut self, rel: &str, mtime: u64) -> Result<()> {
        if rel.is_empty() {
            return Ok(());
        }
        let mut ancestors = vec![String::new()];
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            ancestors.push(rel[..at + i].to_string());
            at += i + 1;
        }
        let mtime = self.opts.clamp_mtime.unwrap_or(mtime);
        for a in ancestors {
            if self.entries.contains_key(&a) {
                continue;
            }
            let e = Entry {
                path: self.install_path(&a),
                mode: 0o755,
                mtime,
                kind: EntryKind::Directory,
            };
            if let Contents::Streamed(v) = &mut self.contents {
                v.entry(&e)?;
            }
            self.implicit.insert(a.clone());
            self.entries.insert(
                a,
                Staged {
                    mode: 0o755,
                    mtime,
                    kind: StagedKind::Dir,
                },
            );
        }
        Ok(())
    }

    fn link_target<R: Read>(&self, entry: &tar::Entry<'_, R>, raw_path: &str) -> Result<String> {
        let bytes = entry
            .link_name_bytes()
            .ok_or_else(|| self.reject(raw_path, "link without a target"))?;
        let target = String::from_utf8(bytes.into_owned())
            .map_err(|_| self.reject(raw_path, "link target is not UTF-8"))?;
        if target.is_empty() {
            return Err(self.reject(raw_path, "link with an empty target"));
        }
        if target.len() >= PATH_MAX {
            return Err(self.reject(
                raw_path,
                format!(
                    "link target of {} bytes (the limit is {})",
                    target.len(),
                    PATH_MAX - 1
                ),
            ));
        }
        if target.len() > MAX_LINK_TARGET {
            return Err(self.reject(
                raw_path,
                format!(
                    "link target of {} bytes is longer than {MAX_LINK_TARGET}",
                    target.len()
                ),
            ));
        }
        Ok(target)
    }

    /// Resolve every symlink through the symlinks of the whole payload, as the file
    /// system will once it is installed (a link's own target may stay inside while a
    /// link it passes through climbs out), and refuse any that leaves the prefix or
    /// follows more than [`MAX_SYMLINK_FOLLOWS`] links.
    fn check_symlinks(&self) -> Result<()> {
        let mut memo = HashMap::new();
        for (rel, e) in &self.entries {
            let StagedKind::Symlink(target) = &e.kind else {
                continue;
            };
            if let Err(problem) = self.resolve_link(rel, &mut memo, 0) {
                let raw = self.archive_path(rel);
                let why = match problem {
                    LinkProblem::Escapes(via) if via == *rel => {
                        format!("symlink to {target:?} leaves the package prefix")
                    }
                    LinkProblem::Escapes(via) => format!(
                        "symlink to {target:?} leaves the package prefix through symlink {:?}",
                        self.archive_path(&via)
                    ),
                    LinkProblem::Loop => format!(
                        "symlink to {target:?} passes through more than {MAX_SYMLINK_FOLLOWS} symlinks"
                    ),
                };
                return Err(self.reject(&raw, why));
            }
        }
        Ok(())
    }

    /// The path below the top directory that the symlink `link` resolves to, and how
    /// many symlinks that took; results are remembered in `memo`, so each link's target
    /// is walked once.
    fn resolve_link(
        &self,
        link: &str,
        memo: &mut HashMap<String, (String, u32)>,
        depth: u32,
    ) -> std::result::Result<(String, u32), LinkProblem> {
        if let Some(done) = memo.get(link) {
            return Ok(done.clone());
        }
        if depth > MAX_SYMLINK_FOLLOWS {
            return Err(LinkProblem::Loop);
        }
        let Some(StagedKind::Symlink(target)) = self.entries.get(link).map(|e| &e.kind) else {
            return Ok((link.to_string(), 0));
        };
        // Start in the link's directory.
        let mut path = match link.rfind('/') {
            Some(i) => link[..i].to_string(),
            None => String::new(),
        };
        let mut follows = 0u32;
        for comp in target.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if path.is_empty() {
                        return Err(LinkProblem::Escapes(link.to_string()));
                    }
                    path.truncate(path.rfind('/').unwrap_or(0));
                }
                c => {
                    if !path.is_empty() {
                        path.push('/');
                    }
                    path.push_str(c);
                    if matches!(
                        self.entries.get(&path).map(|e| &e.kind),
                        Some(StagedKind::Symlink(_))
                    ) {
                        let (resolved, n) = self.resolve_link(&path, memo, depth + 1)?;
                        follows = follows.saturating_add(n).saturating_add(1);
                        if follows > MAX_SYMLINK_FOLLOWS {
                            return Err(LinkProblem::Loop);
                        }
                        path = resolved;
                    }
                }
            }
        }
        memo.insert(link.to_string(), (path.clone(), follows));
        Ok((path, follows))
    }

    /// The archive path of `rel` (below the top directory), for messages.
    fn archive_path(&self, rel: &str) -> String {
        let top = self.top.join("/");
        if rel.is_empty() {
            top
        } else {
            format!("{top}/{rel}")
        }
    }

    /// A symlink may point anywhere inside the top directory, never outside it.
    fn check_symlink(&self, rel: &str, target: &str, raw_path: &str) -> Result<()> {
        if target.starts_with('/') {
            return Err(self.reject(
                raw_path,
                format!("symlink to absolute path {target:?} leaves the package prefix"),
            ));
        }
        let mut stack: Vec<&str> = rel.split('/').collect();
        stack.pop(); // the link's own name
        for comp in target.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if stack.pop().is_none() {
                        return Err(self.reject(
                            raw_path,
                            format!("symlink to {target:?} leaves the package prefix"),
                        ));
                    }
                }
                c => stack.push(c),
            }
        }
        Ok(())
    }

    /// Read one regular file's bytes, hashing them, into a numbered staging file or,
    /// when streaming, to the visitor right after the file's entry.
    #[allow(clippy::too_many_arguments)]
    fn stage_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
        raw_path: &str,
        rel: &str,
        perm: u32,
        mtime: u64,
    ) -> Result<FileData> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let mut data = FileData {
            size,
            sha256: [0; 32],
            md5: [0; 16],
            links: 1,
            inode,
            source: DataSource::Streamed,
        };
        let mut out = match &mut self.contents {
            Contents::Staged(dir) => {
                let path = dir.join(format!("{inode:08}"));
                let file = File::create_new(&path)
                    .ctx(|| format!("creating staged file {}", path.display()))?;
                data.source = DataSource::Staged(path.clone());
                Some((file, path))
            }
            Contents::Streamed(_) => None,
        };
        if out.is_none() {
            let e = Entry {
                path: self.install_path(rel),
                mode: perm,
                mtime,
                kind: EntryKind::File(data.clone()),
            };
            if let Contents::Streamed(v) = &mut self.contents {
                v.entry(&e)?;
            }
        }
        let mut sha = Sha256::new();
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut copied = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| {
                Error::input(
                    self.name,
                    format!("corrupt or truncated tarball at {raw_path:?}: {e}"),
                )
            })?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            if self.opts.md5 {
                md5.update(&buf[..n]);
            }
            match (&mut out, &mut self.contents) {
                (Some((file, path)), _) => file
                    .write_all(&buf[..n])
                    .ctx(|| format!("writing staged file {}", path.display()))?,
                (None, Contents::Streamed(v)) => v.data(&buf[..n])?,
                (None, Contents::Staged(_)) => {}
            }
            copied += n as u64;
        }
        if copied != size {
            return Err(Error::input(
                self.name,
                format!("truncated tarball: entry {raw_path:?} has {copied} of {size} bytes"),
            ));
        }
        data.sha256 = sha.finalize().into();
        if self.opts.md5 {
            data.md5 = md5.finalize().into();
        }
        Ok(data)
    }

    /// Turn the staged map into the sorted entry list, adding implicit directories and
    /// assigning each hard-link group's data to its first path in sorted order (staged)
    /// or to the name that carried it in the archive (streamed, already passed on so).
    fn finish(mut self, staging: Option<crate::cleanup::TempDir>) -> Result<Payload> {
        let streamed = matches!(self.contents, Contents::Streamed(_));
        let max_mtime = self.entries.values().map(|e| e.mtime).max().unwrap_or(0);
        // Implicit parent directories (and the top directory itself).
        let mut missing = Vec::new();
        for rel in self.entries.keys() {
            let mut parent = rel.as_str();
            while let Some(i) = parent.rfind('/') {
                parent = &parent[..i];
                if !self.entries.contains_key(parent) {
                    missing.push(parent.to_string());
                }
            }
            if !rel.is_empty() && !self.entries.contains_key("") {
                missing.push(String::new());
            }
        }
        for m in missing {
            self.entries.entry(m).or_insert(Staged {
                mode: 0o755,
                mtime: max_mtime,
                kind: StagedKind::Dir,
            });
        }

        let prefix = self.opts.prefix.trim_end_matches('/');
        let abs = |rel: &str| {
            if rel.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}/{rel}")
            }
        };
        // Hard-link groups: original file rel → all rels sharing it.
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (rel, e) in &self.entries {
            match &e.kind {
                StagedKind::File { .. } => groups.entry(rel.clone()).or_default().push(rel.clone()),
                StagedKind::HardLink(t) => groups.entry(t.clone()).or_default().push(rel.clone()),
                _ => {}
            }
        }
        // For each name, the path (first in sorted order) that carries the data.
        let mut primary_of: BTreeMap<String, (String, FileData)> = BTreeMap::new();
        let mut stats = PayloadStats {
            max_mtime,
            ..Default::default()
        };
        for (orig, mut names) in groups {
            names.sort();
            let mut data = match &self.entries[&orig].kind {
                StagedKind::File { data } => data.clone(),
                _ => unreachable_group(self.name, &orig)?,
            };
            data.links = names.len() as u32;
            stats.files += 1;
            stats.file_bytes += data.size;
            stats.hardlinks += names.len() as u64 - 1;
            let primary = if streamed { abs(&orig) } else { abs(&names[0]) };
            for n in names {
                primary_of.insert(n, (primary.clone(), data.clone()));
            }
        }
        // Every name of a hard-link group takes the mode of the file it names.
        let file_modes: BTreeMap<String, u32> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.kind, StagedKind::File { .. }))
            .map(|(rel, e)| (rel.clone(), e.mode))
            .collect();
        let mut entries = Vec::with_capacity(self.entries.len());
        for (rel, e) in self.entries {
            let mode = match &e.kind {
                StagedKind::HardLink(orig) => file_modes.get(orig).copied().unwrap_or(e.mode),
                _ => e.mode,
            };
            let path = abs(&rel);
            let kind = match e.kind {
                StagedKind::Dir => {
                    stats.directories += 1;
                    EntryKind::Directory
                }
                StagedKind::Symlink(t) => {
                    stats.symlinks += 1;
                    EntryKind::Symlink(t)
                }
                StagedKind::File { .. } | StagedKind::HardLink(_) => {
                    let (primary, data) = primary_of.get(&rel).cloned().ok_or_else(|| {
                        Error::input(
                            self.name,
                            format!("entry {rel:?}: lost its hard-link group"),
                        )
                    })?;
                    if primary == path {
                        EntryKind::File(data)
                    } else {
                        EntryKind::HardLink {
                            target: primary,
                            data,
                        }
                    }
                }
            };
            entries.push(Entry {
                path,
                mode,
                mtime: e.mtime,
                kind,
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Payload {
            entries,
            prefix: prefix.to_string(),
            stats,
            _staging: staging.into_iter().map(Arc::new).collect(),
        })
    }
}

fn unreachable_group(name: &Path, orig: &str) -> Result<FileData> {
    Err(Error::input(
        name,
        format!("entry {orig:?}: hard-link group without a regular file"),
    ))
}

/// A reader that feeds a shared SHA-256 with everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Arc<Mutex<Sha256>>,
}

impl<R> HashingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R, hasher: Arc<Mutex<Sha256>>) -> Self {
        HashingReader { inner, hasher }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher
            .lock()
            .map_err(|_| io::Error::other("hash state poisoned"))?
            .update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn gunzipped_files_are_staged_decompressed_within_their_bound() {
        let tmp = tempfile::tempdir().expect("tmp");
        let image = vec![7u8; 100_000];
        let src = tmp.path().join("Image.gz");
        std::fs::write(&src, gzip(&image)).expect("write");
        let mut b = PayloadBuilder::new(tmp.path(), None).expect("builder");
        let data = b
            .file_gunzipped("/boot/vmlinuz", &src, 0o644, 100_000)
            .expect("exactly the bound is accepted");
        assert_eq!(data.size, 100_000);
        let e = b
            .file_gunzipped("/boot/other", &src, 0o644, 99_999)
            .expect_err("one byte more than the bound");
        assert!(
            e.to_string().contains("Image.gz") && e.to_string().contains("more than 99999"),
            "{e}"
        );
        std::fs::write(&src, b"\x1f\x8bnot gzip at all").expect("write");
        let e = b
            .file_gunzipped("/boot/third", &src, 0o644, 100)
            .expect_err("corrupt gzip");
        assert!(e.to_string().contains("not a valid gzip"), "{e}");
    }
}
