//! The publish stage: signed apt, dnf and opkg repositories, one module per format
//! behind the [`Repository`] trait.
//!
//! A repository directory holds a definition (`korgpkg-repo.toml`, see [`RepoConfig`]),
//! the package pools, and generations of signed indexes:
//!
//! ```text
//! DIR/korgpkg-repo.toml
//! DIR/apt/pool/main/k/korg-clang-18/*.deb      DIR/apt/dists -> ../.korgpkg/gen/N/apt/dists
//! DIR/rpm/Packages/*.rpm                       DIR/rpm/repodata -> ../.korgpkg/gen/N/rpm/repodata
//! DIR/opkg-pool/<flavour>/*.ipk               DIR/opkg -> .korgpkg/gen/N/opkg  (<flavour>/pool -> opkg-pool/<flavour>)
//! DIR/.korgpkg/{lock,state.json,gen/N/}
//! ```
//!
//! Publishing is serialized by `flock` on `.korgpkg/lock`. A new package is read once,
//! when added; its index entries (Packages stanza, primary/filelists/other XML) are kept
//! in `state.json` with its path, size, mtime and sha256, so an add never re-reads the
//! other packages. New packages are read, checked and imported on all cores
//! ([`par_map`], results in input order, so the output does not depend on the thread
//! count); an import of many packages makes its pool files durable with one `syncfs`
//! before the state is saved ([`Durability::Batch`]) instead of two fsyncs per file.
//! `Packages.xz` is built from cached per-chunk xz blocks ([`xzchunks`]), so an add
//! recompresses one chunk, not the whole index. Each publish writes a complete new generation of indexes under
//! `.korgpkg/gen/N`, fsyncs it, saves the state, then switches each format's index
//! symlink with one `rename`: a publisher killed at any point leaves every client seeing
//! a complete, signed generation. The previous generation is kept (apt's `by-hash` copies
//! of it live on in the new one) so clients holding the old `InRelease` still work.

pub mod apt;
pub mod opkg;
pub mod rpmmd;
pub mod rpmsign;
pub mod serve;
pub mod xzchunks;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{one_line, Error, IoContext, Result};
use crate::model::Format;
use crate::package;
use crate::signing::Signer;
use crate::templates::Templates;

/// The repository definition's file name.
pub const DEFINITION: &str = "korgpkg-repo.toml";
pub const STATE_DIR: &str = ".korgpkg";

/// A repository definition (`korgpkg-repo.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Short name: `.repo` id, key file names (`korg`).
    #[serde(default = "default_name")]
    pub name: String,
    /// `Origin`/`Label` of apt's Release, `name=` of the `.repo` file.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Key directory from `korgpkg key generate` (relative to the repository directory).
    pub keys: PathBuf,
    /// URL clients reach the repository at (for the `.repo` file and `opkg.conf`).
    #[serde(default = "default_url")]
    pub base_url: String,
    #[serde(default)]
    pub apt: AptConfig,
    #[serde(default)]
    pub rpm: RpmConfig,
    #[serde(default)]
    pub opkg: OpkgConfig,
    /// Index generations kept (at least 2, so clients with the previous index work).
    #[serde(default = "default_generations")]
    pub keep_generations: u64,
    /// The `korgpkg sync` policy, read and validated by `sync::Policy::load`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<toml::Table>,
}

fn default_name() -> String {
    "korg".into()
}
fn default_origin() -> String {
    "korgpkg".into()
}
fn default_url() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_generations() -> u64 {
    2
}

/// apt settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptConfig {
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
    /// `Valid-Until` is `Date` plus this many days (0: no Valid-Until).
    pub valid_until_days: u64,
}

impl Default for AptConfig {
    fn default() -> Self {
        AptConfig {
            suites: vec!["stable".into()],
            components: vec!["main".into()],
            architectures: vec!["amd64".into(), "arm64".into()],
            valid_until_days: 30,
        }
    }
}

/// dnf settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmConfig {
    pub architectures: Vec<String>,
    /// `zstd` (default) or `gzip` (old yum) for primary/filelists/other.
    pub compression: MetadataCompression,
}

impl Default for RpmConfig {
    fn default() -> Self {
        RpmConfig {
            architectures: vec!["x86_64".into(), "aarch64".into(), "noarch".into()],
            compression: MetadataCompression::Zstd,
        }
    }
}

/// Compression of dnf metadata.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetadataCompression {
    Zstd,
    Gzip,
}

/// opkg settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpkgConfig {
    pub architectures: Vec<String>,
    /// The feeds served, one per client family, each at `opkg/<flavour>/` with its own
    /// pool: an ipk goes to the feed of its outer form and is refused if that feed is
    /// not listed.
    #[serde(default = "default_flavours")]
    pub flavours: Vec<OpkgFlavour>,
}

fn default_flavours() -> Vec<OpkgFlavour> {
    vec![OpkgFlavour::Openembedded]
}

impl Default for OpkgConfig {
    fn default() -> Self {
        OpkgConfig {
            architectures: vec!["x86_64".into(), "aarch64".into(), "all".into()],
            flavours: default_flavours(),
        }
    }
}

/// An opkg client family and the feed it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpkgFlavour {
    /// Yocto/OpenEmbedded opkg: `ar`-form ipk, OpenPGP-signed `Packages.asc` and
    /// per-package `.ipk.asc` signatures.
    Openembedded,
    /// OpenWrt's opkg: gzip'd-tar-form ipk (it unpacks an `ar` one to nothing),
    /// usign-signed `Packages.sig`.
    Openwrt,
}

impl OpkgFlavour {
    /// The name in the definition and in feed paths (`openembedded`).
    pub fn as_str(self) -> &'static str {
        match self {
            OpkgFlavour::Openembedded => "openembedded",
            OpkgFlavour::Openwrt => "openwrt",
        }
    }

    /// The flavour whose clients read an ipk of this outer form.
    pub fn of_outer(outer: package::IpkOuter) -> Self {
        match outer {
            package::IpkOuter::Ar => OpkgFlavour::Openembedded,
            package::IpkOuter::Tar => OpkgFlavour::Openwrt,
        }
    }
}

impl RepoConfig {
    /// Read `DIR/korgpkg-repo.toml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(DEFINITION);
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Usage(format!(
                    "{}: no repository definition (run `korgpkg repo init {} --keys DIR`)",
                    path.display(),
                    dir.display()
                ))
            } else {
                Error::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                }
            }
        })?;
        let config: RepoConfig =
            toml::from_str(&text).map_err(|e| Error::spec(&path, one_line(&e.to_string())))?;
        if config.apt.suites.is_empty() || config.apt.components.is_empty() {
            return Err(Error::spec(
                &path,
                "apt: suites and components must not be empty",
            ));
        }
        let flavours = &config.opkg.flavours;
        if flavours.is_empty()
            || flavours
                .iter()
                .enumerate()
                .any(|(i, f)| flavours[..i].contains(f))
        {
            return Err(Error::spec(
                &path,
                "opkg.flavours: list openembedded and/or openwrt, each once",
            ));
        }
        if config.keep_generations < 2 {
            return Err(Error::spec(&path, "keep_generations: must be at least 2"));
        }
        Ok(config)
    }

    fn keys_dir(&self, dir: &Path) -> PathBuf {
        dir.join(&self.keys)
    }
}

/// The format-specific index data of a package, computed once when it is added.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IndexData {
    /// A Debian-style control stanza without Filename/Size/checksums (deb, ipk).
    Control { stanza: String },
    /// rpm-md XML fragments.
    Rpm {
        primary: String,
        filelists: String,
        other: String,
    },
}

/// One package in a repository, with the index entries made from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedPackage {
    pub format: Format,
    /// apt suite (deb), opkg feed flavour (ipk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Path of the pool file, relative to the repository directory.
    pub path: String,
    pub size: u64,
    pub mtime: i64,
    pub sha256: String,
    pub md5: String,
}

/// A package as the index writers see it: the package and its index entries.
pub type Listed<'a> = (&'a PublishedPackage, &'a IndexData);

/// The persistent state: every package and the current generation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    generation: u64,
    packages: Vec<StoredPackage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPackage {
    #[serde(flatten)]
    package: PublishedPackage,
    index: IndexData,
    /// rpm: sha256 of the file it was imported from (before re-signing). Older states
    /// kept it in `.korgpkg/sources/<sha256>` instead, which is still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_sha256: Option<String>,
}

/// Shared context of one publish.
pub struct Context<'a> {
    pub root: &'a Path,
    pub config: &'a RepoConfig,
    pub signer: &'a Signer,
    /// Index date (`SOURCE_DATE_EPOCH` or now).
    pub time: u64,
    pub templates: &'a Templates,
    /// How pool files are made durable (see [`Durability`]).
    pub durability: Durability,
    /// Pool paths (relative to the root) the saved state refers to.
    pub referenced: HashSet<String>,
}

/// How a publish makes the pool files it adds durable before the state that refers to
/// them is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync every file before renaming it into place, then its directory (few files).
    EachFile,
    /// Write and rename every file without syncing, then one `syncfs` of the repository's
    /// file system before the state is saved (many files: one flush instead of two
    /// fsyncs per package). A crash before that flush can leave a pool file that no state
    /// refers to with incomplete content; the next publish replaces such orphans.
    Batch,
}

/// Digests and size of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSums {
    pub sha256: String,
    pub md5: String,
    pub size: u64,
}

/// What importing one package produced: its index entries and the pool file's sums.
#[derive(Debug)]
pub struct Imported {
    pub index: IndexData,
    pub sums: FileSums,
}

/// Copy `file` (whose sums are `sums`) into the pool at `pool` (relative to the
/// repository root), or accept it if the very same bytes are already there. Different
/// bytes under a pool path the state refers to are an error naming `file`; an orphan
/// (left by a publisher that died before saving its state) is replaced.
pub(crate) fn place_in_pool(
    ctx: &Context<'_>,
    file: &Path,
    sums: &FileSums,
    pool: &str,
) -> Result<FileSums> {
    let dst = pool_file(ctx.root, file, pool)?;
    if dst.exists() {
        let (sha256, _, _) = file_sums(&dst)?;
        if sha256 == sums.sha256 {
            return Ok(sums.clone());
        }
        if ctx.referenced.contains(pool) {
            return Err(Error::input(
                file,
                format!("{pool} exists in the pool with different content"),
            ));
        }
    }
    copy_into_pool(file, &dst, ctx.durability, &sums.sha256)?;
    Ok(sums.clone())
}

/// A pool path (relative to the repository root) from `dirs` and a file `name`, each of
/// which must be one plain path component: not empty, `.` or `..`, without `/` or NUL,
/// at most 255 bytes. The values come from a package's metadata (already checked
/// against its format's grammar); this is the second line of defence, so that no
/// value can ever name a file outside the pool. Errors name `file`.
pub fn pool_path(file: &Path, dirs: &[&str], name: &str) -> Result<String> {
    let mut rel = String::new();
    for part in dirs.iter().chain([&name]) {
        let plain = !part.is_empty()
            && *part != "."
            && *part != ".."
            && part.len() <= 255
            && !part.contains(['/', '\0']);
        if !plain {
            return Err(Error::input(
                file,
                format!("{part:?} cannot be part of a pool path"),
            ));
        }
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(part);
    }
    Ok(rel)
}

/// `root` joined with the pool path `rel`, refused unless the result is a file strictly
/// inside `root` reached through plain components only.
pub fn pool_file(root: &Path, file: &Path, rel: &str) -> Result<PathBuf> {
    use std::path::Component;
    let inside = !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    let joined = root.join(rel);
    if !inside || !joined.starts_with(root) || joined == root {
        return Err(Error::input(
            file,
            format!("pool path {rel:?} leaves the repository"),
        ));
    }
    Ok(joined)
}

/// One repository format.
///
/// `import` is the only place a package file is read: it validates the package, puts it
/// into the pool (rpm: re-signed) and returns its index entries. `write_indexes` writes
/// a complete signed index generation from stored entries alone.
pub trait Repository {
    fn format(&self) -> Format;
    /// Pool path (relative to the repository) the package `file` of this format goes
    /// to, built with [`pool_path`] so that no value can leave the pool; `feed` is the
    /// opkg feed flavour (ipk only).
    fn pool_path(
        &self,
        file: &Path,
        info: &package::Inspection,
        feed: Option<&str>,
    ) -> Result<String>;
    /// Copy `file` (whose sums are `sums`) into the pool at `pool` (atomically, made
    /// durable as `ctx.durability` says) and describe it. Called from several threads
    /// at once for different packages. By default (apt, opkg) the file is copied as it
    /// is and described by its control stanza.
    fn import(
        &self,
        ctx: &Context<'_>,
        file: &Path,
        info: &package::Inspection,
        sums: &FileSums,
        pool: &str,
    ) -> Result<Imported> {
        import_as_is(ctx, file, info, sums, pool)
    }
    /// Write every index file of this format for `packages` below `gen` (a fresh
    /// generation directory); `prev` is the previous generation, if any.
    fn write_indexes(
        &self,
        ctx: &Context<'_>,
        packages: &[Listed<'_>],
        gen: &Path,
        prev: Option<&Path>,
    ) -> Result<()>;
    /// The served index link (relative to the repository) and its target inside a
    /// generation directory.
    fn index_link(&self) -> (&'static str, &'static str);
    /// Files outside the generations written once per publish (public keys, client
    /// configuration): relative path → bytes.
    fn static_files(&self, ctx: &Context<'_>) -> Result<Vec<(String, Vec<u8>)>>;
}

/// The repository implementation of `format`.
pub fn repository(format: Format) -> Box<dyn Repository + Send + Sync> {
    match format {
        Format::Deb => Box::new(apt::Apt),
        Format::Rpm => Box::new(rpmmd::RpmMd),
        Format::Ipk => Box::new(opkg::Opkg),
    }
}

/// What a publish did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub generation: u64,
    pub added: Vec<PublishedPackage>,
    pub unchanged: Vec<PublishedPackage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<PublishedPackage>,
}

/// The default [`Repository::import`]: copy `file` into the pool at `pool` as it is
/// and describe it by its rebuilt control stanza.
pub(crate) fn import_as_is(
    ctx: &Context<'_>,
    file: &Path,
    info: &package::Inspection,
    sums: &FileSums,
    pool: &str,
) -> Result<Imported> {
    let stanza = control_stanza(file, info)?;
    Ok(Imported {
        sums: place_in_pool(ctx, file, sums, pool)?,
        index: IndexData::Control { stanza },
    })
}

/// An exclusive `flock` on the repository, released on drop (and by the kernel if the
/// process dies).
struct Lock {
    _file: File,
}

impl Lock {
    fn acquire(root: &Path) -> Result<Lock> {
        let (file, path) = open_lock_file(root, "lock")?;
        file.lock().ctx(|| format!("locking {}", path.display()))?;
        Ok(Lock { _file: file })
    }
}

/// Open (creating it) the lock file `name` in the repository's state directory, for
/// `File::lock`/`try_lock` (an exclusive `flock`, released by the kernel when the
/// process dies). Returns the file and its path.
pub(crate) fn open_lock_file(root: &Path, name: &str) -> Result<(File, PathBuf)> {
    let dir = root.join(STATE_DIR);
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    Ok((file, path))
}

fn state_path(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join("state.json")
}

fn load_state(root: &Path) -> Result<State> {
    let path = state_path(root);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&path, format!("corrupt repository state: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(Error::Io {
            context: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

/// fsync a directory (makes renames in it durable).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".korgpkg-")
        .suffix(".part")
        .tempfile_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .ctx(|| format!("writing {}", path.display()))?;
    set_public_mode(tmp.path())?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx(|| format!("renaming into {}", path.display()))?;
    sync_dir(dir)
}

fn set_public_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .ctx(|| format!("setting the mode of {}", path.display()))
}

/// Write a new generation file (not yet visible to clients; synced before the switch).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    let mut f = File::create(path).ctx(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {}", path.display()))
}

/// Remove temporary files a killed publisher left in the pool directory `dir` (only
/// called under the repository lock, so no live publisher owns them).
pub fn clean_stale(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".korgpkg-") && name.ends_with(".part") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Copy `src` into the pool at `dst` (see [`PoolFile`]).
pub fn copy_into_pool(src: &Path, dst: &Path, durability: Durability, sha256: &str) -> Result<()> {
    let mut out = PoolFile::create(dst, durability)?;
    let mut input = File::open(src).ctx(|| format!("opening {}", src.display()))?;
    // The bytes copied are hashed again: a file changed since it was verified must not
    // reach the pool (or be signed there).
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; crate::payload::COPY_BUFFER];
    loop {
        let n = input
            .read(&mut buf)
            .ctx(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.file()
            .write_all(&buf[..n])
            .ctx(|| format!("copying {} into {}", src.display(), dst.display()))?;
    }
    if hex::encode(hasher.finalize()) != sha256 {
        return Err(Error::verify(
            src.display().to_string(),
            "changed while it was being published (its sha256 is no longer the one verified)",
        ));
    }
    out.finish()
}

/// A pool file being written.
///
/// With [`Durability::EachFile`] it is a temp file in the pool directory, fsynced, renamed
/// into place, and the directory fsynced: a file under its pool name is always complete.
/// With [`Durability::Batch`] the file is created under its pool name directly (no
/// rename, whose directory lock the parallel imports would queue on): until the publish
/// saves its state nothing refers to it, a publisher killed while writing leaves an
/// orphan, and orphans are replaced by the next publish ([`place_in_pool`]). An existing
/// file (an orphan) is replaced atomically through a temp file.
pub struct PoolFile {
    file: Option<File>,
    tmp: Option<tempfile::NamedTempFile>,
    dst: PathBuf,
    durability: Durability,
}

impl PoolFile {
    pub fn create(dst: &Path, durability: Durability) -> Result<PoolFile> {
        let dir = dst.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        if durability == Durability::Batch {
            use std::os::unix::fs::OpenOptionsExt;
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(dst)
            {
                Ok(f) => {
                    return Ok(PoolFile {
                        file: Some(f),
                        tmp: None,
                        dst: dst.to_path_buf(),
                        durability,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("creating {}", dst.display()),
                        source: e,
                    })
                }
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix(".korgpkg-")
            .suffix(".part")
            .tempfile_in(dir)
            .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
        Ok(PoolFile {
            file: None,
            tmp: Some(tmp),
            dst: dst.to_path_buf(),
            durability,
        })
    }

    pub fn file(&mut self) -> &mut File {
        match (&mut self.file, &mut self.tmp) {
            (Some(f), _) => f,
            (None, Some(t)) => t.as_file_mut(),
            (None, None) => unreachable!("a PoolFile has a file until finished"),
        }
    }

    /// Make the mode 0644 (whatever the umask) and put the file in place.
    pub fn finish(mut self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dst = self.dst.clone();
        let mode = fs::Permissions::from_mode(0o644);
        if let Some(f) = self.file.take() {
            return f
                .set_permissions(mode)
                .ctx(|| format!("setting the mode of {}", dst.display()));
        }
        let tmp = self
            .tmp
            .take()
            .expect("a PoolFile has a file until finished");
        if self.durability == Durability::EachFile {
            tmp.as_file()
                .sync_all()
                .ctx(|| format!("writing {}", dst.display()))?;
        }
        tmp.as_file()
            .set_permissions(mode)
            .ctx(|| format!("setting the mode of {}", dst.display()))?;
        tmp.persist(&dst)
            .map_err(|e| e.error)
            .ctx(|| format!("renaming into {}", dst.display()))?;
        if self.durability == Durability::EachFile {
            sync_dir(dst.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }
}

impl Drop for PoolFile {
    fn drop(&mut self) {
        // Not finished (an error while writing): remove a directly created file (a temp
        // file removes itself).
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.dst);
        }
    }
}

/// Flush everything written to the file system that holds `dir` (`syncfs`).
fn sync_fs(dir: &Path) -> Result<()> {
    let d = File::open(dir).ctx(|| format!("opening {}", dir.display()))?;
    // SAFETY: syncfs on a file descriptor we own; no memory is involved.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::Io {
            context: format!("syncing the file system of {}", dir.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `f` over `items` on up to [`crate::worker_threads`] threads; results in the order of
/// `items`.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = crate::worker_threads().min(items.len());
    if n <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let parts: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (i, r) in parts.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.expect("every item is mapped once"))
        .collect()
}

/// SHA-256, MD5 and size of a file, streamed.
pub fn file_sums(path: &Path) -> Result<(String, String, u64)> {
    digests(path, true)
}

/// SHA-256 and size of a file (the MD5 is empty), streamed.
pub fn file_sha256(path: &Path) -> Result<(String, u64)> {
    digests(path, false).map(|(sha256, _, size)| (sha256, size))
}

fn digests(path: &Path, with_md5: bool) -> Result<(String, String, u64)> {
    thread_local! {
        // One copy buffer per thread: a fresh 256 KiB buffer per file, between the small
        // allocations that outlive it, fragments the heap (hundreds of MiB of RSS for
        // 10,000 packages).
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut sha = Sha256::new();
    let mut md5 = md5::Md5::new();
    let mut size = 0u64;
    BUF.with_borrow_mut(|buf| -> Result<()> {
        buf.resize(crate::payload::COPY_BUFFER, 0);
        loop {
            let n = f.read(buf).ctx(|| format!("reading {}", path.display()))?;
            if n == 0 {
                return Ok(());
            }
            sha.update(&buf[..n]);
            if with_md5 {
                md5::Digest::update(&mut md5, &buf[..n]);
            }
            size += n as u64;
        }
    })?;
    let md5 = if with_md5 {
        hex::encode(md5::Digest::finalize(md5))
    } else {
        String::new()
    };
    Ok((hex::encode(sha.finalize()), md5, size))
}

fn mtime_of(path: &Path) -> Result<i64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(path)
        .ctx(|| format!("reading {}", path.display()))?
        .mtime())
}

/// Expand directories into the package files they hold (sorted).
fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = fs::read_dir(p)
                .ctx(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .is_some_and(|e| e == "deb" || e == "rpm" || e == "ipk")
                })
                .collect();
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::input(p, "no such file or directory"));
        }
    }
    Ok(out)
}

/// Check that `arch` is one the repository definition allows for `format`.
pub fn check_arch(config: &RepoConfig, file: &Path, format: Format, arch: &str) -> Result<()> {
    let (allowed, what): (Vec<&str>, &str) = match format {
        Format::Deb => (
            config
                .apt
                .architectures
                .iter()
                .map(String::as_str)
                .chain(["all"])
                .collect(),
            "apt.architectures",
        ),
        Format::Rpm => (
            config
                .rpm
                .architectures
                .iter()
                .map(String::as_str)
                .collect(),
            "rpm.architectures",
        ),
        Format::Ipk => (
            config
                .opkg
                .architectures
                .iter()
                .map(String::as_str)
                .collect(),
            "opkg.architectures",
        ),
    };
    if allowed.contains(&arch) {
        Ok(())
    } else {
        Err(Error::input(
            file,
            format!(
                "architecture {arch:?} is not in the repository's {what} ({})",
                allowed.join(", ")
            ),
        ))
    }
}

/// Signature time and the signer of a repository.
fn open_signer(
    root: &Path,
    config: &RepoConfig,
    passphrase: Option<String>,
    time: u64,
) -> Result<Signer> {
    Signer::load(
        &config.keys_dir(root),
        passphrase,
        crate::signing::signature_time(Some(time)),
    )
}

fn now_or(source_date_epoch: Option<u64>) -> u64 {
    source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// `korgpkg repo init`: write a definition and an empty, signed repository.
pub fn init(
    dir: &Path,
    keys: &Path,
    suites: &[String],
    arches: &[String],
    passphrase: Option<String>,
    source_date_epoch: Option<u64>,
    templates: &Templates,
) -> Result<()> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join(DEFINITION);
    if path.exists() {
        return Err(Error::Usage(format!("{} exists", path.display())));
    }
    let keys =
        fs::canonicalize(keys).ctx(|| format!("opening key directory {}", keys.display()))?;
    let mut config = RepoConfig {
        name: default_name(),
        origin: default_origin(),
        keys,
        base_url: default_url(),
        apt: AptConfig::default(),
        rpm: RpmConfig::default(),
        opkg: OpkgConfig::default(),
        keep_generations: default_generations(),
        sync: None,
    };
    if !suites.is_empty() {
        config.apt.suites = suites.to_vec();
    }
    if !arches.is_empty() {
        config.apt.architectures = arches.to_vec();
    }
    let text = toml::to_string_pretty(&config)
        .map_err(|e| Error::Usage(format!("cannot encode {DEFINITION}: {e}")))?;
    write_atomic(&path, text.as_bytes())?;
    publish(dir, None, &[], passphrase, source_date_epoch, templates).map(|_| ())
}

/// `korgpkg publish`: add package files to the repository and re-sign its indexes.
pub fn publish(
    root: &Path,
    suite: Option<&str>,
    inputs: &[PathBuf],
    passphrase: Option<String>,
    source_date_epoch: Option<u64>,
    templates: &Templates,
) -> Result<Report> {
    let config = RepoConfig::load(root)?;
    if let Some(s) = suite {
        if !config.apt.suites.iter().any(|x| x == s) {
            return Err(Error::Usage(format!(
                "--suite {s}: not a suite of {} ({})",
                root.join(DEFINITION).display(),
                config.apt.suites.join(", ")
            )));
        }
    }
    let suite = suite.unwrap_or(&config.apt.suites[0]).to_string();
    let add = expand_inputs(inputs)?
        .into_iter()
        .map(|f| (f, suite.clone()))
        .collect();
    let changes = Changes {
        add,
        remove: Vec::new(),
    };
    apply_with(
        root,
        config,
        &changes,
        passphrase,
        source_date_epoch,
        templates,
        true,
    )
}

/// Identity of one package in a repository: what [`Changes::remove`] names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageId {
    pub format: Format,
    /// apt suite (deb) or opkg feed flavour (ipk).
    pub suite: Option<String>,
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl PackageId {
    /// The identity of a published package.
    pub fn of(p: &PublishedPackage) -> Self {
        PackageId {
            format: p.format,
            suite: p.suite.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.arch.clone(),
        }
    }
}

/// Packages to add (file, apt suite for debs) and packages to remove, applied together
/// by one generation switch.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub add: Vec<(PathBuf, String)>,
    pub remove: Vec<PackageId>,
}

/// Add and remove packages with one new generation (none when nothing changes). Inputs
/// are inspected before the repository is touched; a removal naming a package the
/// repository does not hold is ignored. Pool files no package refers to any more are
/// deleted after the switch.
pub fn apply(
    root: &Path,
    changes: &Changes,
    passphrase: Option<String>,
    source_date_epoch: Option<u64>,
    templates: &Templates,
) -> Result<Report> {
    let config = RepoConfig::load(root)?;
    for (file, suite) in &changes.add {
        if !config.apt.suites.iter().any(|x| x == suite) {
            return Err(Error::spec(
                root.join(DEFINITION),
                format!(
                    "apt.suites: has no suite {suite} (wanted for {})",
                    file.display()
                ),
            ));
        }
    }
    apply_with(
        root,
        config,
        changes,
        passphrase,
        source_date_epoch,
        templates,
        false,
    )
}

fn apply_with(
    root: &Path,
    config: RepoConfig,
    changes: &Changes,
    passphrase: Option<String>,
    source_date_epoch: Option<u64>,
    templates: &Templates,
    always_commit: bool,
) -> Result<Report> {
    let time = now_or(source_date_epoch);
    let signer = open_signer(root, &config, passphrase, time)?;

    // Read and validate every input before touching the repository (in parallel; the
    // first bad input in command-line order is the one reported).
    let checked = par_map(&changes.add, |(file, suite)| -> Result<_> {
        let mut info = package::inspect(file)?;
        // The file list is not indexed (rpm-md's comes from the signed header): drop it.
        info.files = Vec::new();
        if info.name.is_empty() || info.version.is_empty() || info.arch.is_empty() {
            return Err(Error::input(
                file,
                "package has no name, version or architecture",
            ));
        }
        check_arch(&config, file, info.format, &info.arch)?;
        if info.format != Format::Rpm {
            // The index stanza must be buildable before anything is written.
            control_stanza(file, &info)?;
        }
        // Every byte checked before the repository key goes near it.
        package::verify::verify(file, info.format)?;
        let feed = match info.format {
            Format::Ipk => Some(opkg::feed_of(&config, file)?.as_str().to_string()),
            _ => None,
        };
        // An rpm's MD5 is the re-signed pool file's, computed when it is written.
        let (sha256, md5, size) = if info.format == Format::Rpm {
            let (sha256, size) = file_sha256(file)?;
            (sha256, String::new(), size)
        } else {
            file_sums(file)?
        };
        Ok((
            file.clone(),
            suite.clone(),
            info,
            FileSums { sha256, md5, size },
            feed,
        ))
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;

    let _lock = Lock::acquire(root)?;
    let mut state = load_state(root)?;
    let mut report = Report {
        generation: state.generation,
        added: Vec::new(),
        unchanged: Vec::new(),
        removed: Vec::new(),
    };
    // Removals first, so an add of the same identity (a rebuilt package) is not
    // mistaken for a conflict with the package it replaces.
    if !changes.remove.is_empty() {
        let gone: HashSet<&PackageId> = changes.remove.iter().collect();
        let (removed, kept): (Vec<_>, Vec<_>) = state
            .packages
            .drain(..)
            .partition(|s| gone.contains(&PackageId::of(&s.package)));
        state.packages = kept;
        report.removed = removed.into_iter().map(|s| s.package).collect();
    }
    // Conflicts first: nothing is written if any input clashes. An ipk is identified
    // within its feed (the two outer forms of one package live side by side).
    type Id = (Format, Option<String>, String, String, String);
    let feed_of = |format: Format, suite: &Option<String>| {
        (format == Format::Ipk).then(|| suite.clone()).flatten()
    };
    let id_of = |p: &PublishedPackage| {
        (
            p.format,
            feed_of(p.format, &p.suite),
            p.name.clone(),
            p.version.clone(),
            p.arch.clone(),
        )
    };
    let mut known: HashMap<Id, Vec<usize>> = HashMap::new();
    for (i, s) in state.packages.iter().enumerate() {
        known.entry(id_of(&s.package)).or_default().push(i);
    }
    let mut planned: HashMap<Id, Vec<usize>> = HashMap::new();
    let mut plans: Vec<(PathBuf, package::Inspection, FileSums, PublishedPackage)> = Vec::new();
    for (file, suite, info, sums, feed) in checked {
        let repo = repository(info.format);
        let pool = repo.pool_path(&file, &info, feed.as_deref())?;
        pool_file(root, &file, &pool)?;
        // The apt suite of a deb, the opkg feed of an ipk.
        let pkg_suite = match info.format {
            Format::Deb => Some(suite.clone()),
            _ => feed,
        };
        let id: Id = (
            info.format,
            feed_of(info.format, &pkg_suite),
            info.name.clone(),
            info.version.clone(),
            info.arch.clone(),
        );
        // Published ones first, then the ones planned by this publish.
        let mut same: Vec<(&PublishedPackage, Option<&StoredPackage>)> = Vec::new();
        for &i in known.get(&id).into_iter().flatten() {
            same.push((&state.packages[i].package, Some(&state.packages[i])));
        }
        for &i in planned.get(&id).into_iter().flatten() {
            same.push((&plans[i].3, None));
        }
        if let Some(&(p, stored)) = same.first() {
            // rpm files are re-signed into the pool: compare the digest of the file
            // they were imported from.
            let theirs = match stored {
                Some(s) if info.format == Format::Rpm => {
                    source_digest(root, s)?.unwrap_or_else(|| p.sha256.clone())
                }
                _ => p.sha256.clone(),
            };
            if theirs != sums.sha256 && !(info.format == Format::Rpm && p.sha256 == sums.sha256) {
                return Err(Error::input(
                    &file,
                    format!(
                        "{} {} ({}) is already in the repository with different content",
                        info.name, info.version, info.arch
                    ),
                ));
            }
            if same.iter().any(|(k, _)| k.suite == pkg_suite) {
                report.unchanged.push(p.clone());
                continue;
            }
        }
        let published = PublishedPackage {
            format: info.format,
            suite: pkg_suite,
            name: info.name.clone(),
            version: info.version.clone(),
            arch: info.arch.clone(),
            path: pool,
            size: sums.size,
            mtime: 0,
            sha256: sums.sha256.clone(),
            md5: sums.md5.clone(),
        };
        planned.entry(id).or_default().push(plans.len());
        plans.push((file, info, sums, published));
    }

    let ctx = Context {
        root,
        config: &config,
        signer: &signer,
        time,
        templates,
        durability: if plans.len() > BATCH_FROM {
            Durability::Batch
        } else {
            Durability::EachFile
        },
        referenced: state
            .packages
            .iter()
            .map(|s| s.package.path.clone())
            .collect(),
    };
    // What a failed or killed publisher left: orphaned pool files, temp files and an
    // unfinished generation. Judged by the saved state: the packages this run removes
    // are still served until the switch.
    if let Ok(saved) = load_state(root) {
        remove_leftovers(root, &saved);
    }
    let previous = state.generation;
    let added = import_and_commit(&ctx, plans, &mut state, &mut report, always_commit);
    if added.is_err() && load_state(root).is_ok_and(|s| s.generation == previous) {
        // The state was not saved, so nothing refers to what this publish wrote: remove
        // its pool files and its generation now rather than leave them to the next one.
        if let Ok(saved) = load_state(root) {
            remove_leftovers(root, &saved);
        }
    }
    report.generation = added?;
    delete_unreferenced(root, &state, &report.removed);
    Ok(report)
}

/// Import `plans` into the pools, add them to `state` and `report`, and commit a new
/// generation (see [`commit`]) unless nothing changed and `always_commit` is false;
/// returns the generation served afterwards.
fn import_and_commit(
    ctx: &Context<'_>,
    plans: Vec<(PathBuf, package::Inspection, FileSums, PublishedPackage)>,
    state: &mut State,
    report: &mut Report,
    always_commit: bool,
) -> Result<u64> {
    let root = ctx.root;
    // Import (copy or re-sign into the pool) in parallel; entries keep the input order.
    let imported = par_map(&plans, |(file, info, sums, published)| -> Result<_> {
        let repo = repository(info.format);
        let imported = repo.import(ctx, file, info, sums, &published.path)?;
        let mtime = mtime_of(&root.join(&published.path))?;
        Ok((imported, mtime))
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    if ctx.durability == Durability::Batch {
        // Every pool file (and directory) is on disk before the state names it.
        sync_fs(root)?;
    }
    for ((_, info, sums, mut published), (imported, mtime)) in plans.into_iter().zip(imported) {
        published.sha256 = imported.sums.sha256;
        published.md5 = imported.sums.md5;
        published.size = imported.sums.size;
        published.mtime = mtime;
        report.added.push(published.clone());
        state.packages.push(StoredPackage {
            package: published,
            index: imported.index,
            source_sha256: (info.format == Format::Rpm).then_some(sums.sha256),
        });
    }
    if !always_commit && report.added.is_empty() && report.removed.is_empty() {
        return Ok(state.generation);
    }
    commit(ctx, state)
}

/// The directories that hold pool files, relative to the repository directory.
const POOLS: [&str; 3] = ["apt/pool", "rpm/Packages", "opkg-pool"];

/// Remove what a failed or killed publisher left behind, as far as `state` (the saved
/// state) shows: pool files it does not refer to and the directories they leave empty,
/// `.korgpkg-*.part` temp files, and generation directories newer than its generation.
/// Called only under the repository lock; best effort (what cannot be removed stays,
/// and is tried again by the next publish).
fn remove_leftovers(root: &Path, state: &State) {
    let mut referenced: HashSet<PathBuf> = HashSet::new();
    for s in &state.packages {
        referenced.insert(root.join(&s.package.path));
        if s.package.format == Format::Ipk {
            // The package's detached signature (OpenEmbedded feeds).
            referenced.insert(root.join(format!("{}.asc", s.package.path)));
        }
    }
    for pool in POOLS {
        remove_unreferenced(&root.join(pool), &referenced, false);
    }
    for dir in ["", STATE_DIR, "apt", "rpm"] {
        clean_stale(&root.join(dir));
    }
    let gen_root = root.join(STATE_DIR).join("gen");
    if let Ok(dir) = fs::read_dir(&gen_root) {
        for e in dir.flatten() {
            let n: Option<u64> = e.file_name().to_str().and_then(|s| s.parse().ok());
            if n.is_some_and(|n| n > state.generation) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Remove the files below `dir` that are not in `referenced` (and `.korgpkg-*.part`
/// temp files), then the directories left empty (not `dir` itself unless `remove_dir`).
/// Returns whether `dir` is now empty.
fn remove_unreferenced(dir: &Path, referenced: &HashSet<PathBuf>, remove_dir: bool) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries.flatten() {
        let path = e.path();
        let gone = match e.file_type() {
            Ok(t) if t.is_dir() => remove_unreferenced(&path, referenced, true),
            Ok(t) if t.is_file() && !referenced.contains(&path) => fs::remove_file(&path).is_ok(),
            _ => false,
        };
        empty &= gone;
    }
    if empty && remove_dir {
        return fs::remove_dir(dir).is_ok();
    }
    empty
}

/// Delete the pool files of `removed` packages that no package in `state` refers to
/// (another suite may still list the same file). Done after the switch: the new
/// generation no longer names them.
fn delete_unreferenced(root: &Path, state: &State, removed: &[PublishedPackage]) {
    let referenced: BTreeSet<&str> = state
        .packages
        .iter()
        .map(|s| s.package.path.as_str())
        .collect();
    for p in removed {
        if !referenced.contains(p.path.as_str()) {
            let _ = fs::remove_file(root.join(&p.path));
            if p.format == Format::Ipk {
                // The package's detached signature (OpenEmbedded feeds).
                let _ = fs::remove_file(root.join(format!("{}.asc", p.path)));
            }
        }
    }
}

/// Above this many new packages a publish syncs the file system once instead of every
/// pool file ([`Durability::Batch`]).
const BATCH_FROM: usize = 8;

/// The sha256 of the file an rpm in the pool was imported from (before re-signing).
fn source_digest(root: &Path, s: &StoredPackage) -> Result<Option<String>> {
    if let Some(d) = &s.source_sha256 {
        return Ok(Some(d.clone()));
    }
    let path = root.join(STATE_DIR).join("sources").join(&s.package.sha256);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            context: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

/// Write a new generation from `state`, save the state, switch the index links, prune.
fn commit(ctx: &Context<'_>, state: &mut State) -> Result<u64> {
    let root = ctx.root;
    state.packages.sort_by(|a, b| {
        let (a, b) = (&a.package, &b.package);
        (a.format, &a.suite, &a.name, &a.version, &a.arch)
            .cmp(&(b.format, &b.suite, &b.name, &b.version, &b.arch))
    });
    let previous = state.generation;
    let generation = previous + 1;
    let gen_root = root.join(STATE_DIR).join("gen");
    let gen = gen_root.join(generation.to_string());
    if gen.exists() {
        // Left over by a publisher that died before switching to it.
        fs::remove_dir_all(&gen).ctx(|| format!("removing {}", gen.display()))?;
    }
    let prev = (previous > 0)
        .then(|| gen_root.join(previous.to_string()))
        .filter(|p| p.is_dir());
    for format in Format::ALL {
        let repo = repository(format);
        let mine: Vec<Listed<'_>> = state
            .packages
            .iter()
            .filter(|s| s.package.format == format)
            .map(|s| (&s.package, &s.index))
            .collect();
        repo.write_indexes(ctx, &mine, &gen, prev.as_deref())?;
        for (rel, bytes) in repo.static_files(ctx)? {
            let path = root.join(&rel);
            if fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                write_atomic(&path, &bytes)?;
            }
        }
    }
    sync_tree(&gen)?;
    sync_dir(&gen_root)?;

    state.generation = generation;
    let json = serde_json::to_vec_pretty(&*state)
        .map_err(|e| Error::Usage(format!("cannot encode the repository state: {e}")))?;
    write_atomic(&state_path(root), &json)?;

    // The switch: one rename per format.
    for format in Format::ALL {
        let (link, target) = repository(format).index_link();
        let link_path = root.join(link);
        let depth = Path::new(link).components().count() - 1;
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rel.push("..");
        }
        rel.push(STATE_DIR);
        rel.push("gen");
        rel.push(generation.to_string());
        rel.push(target);
        switch_link(&link_path, &rel)?;
    }

    // Prune generations no longer kept.
    let keep_from = generation.saturating_sub(ctx.config.keep_generations - 1);
    if let Ok(dir) = fs::read_dir(&gen_root) {
        for e in dir.flatten() {
            let n: Option<u64> = e.file_name().to_str().and_then(|s| s.parse().ok());
            if n.is_some_and(|n| n < keep_from || n > generation) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(generation)
}

/// Atomically point the symlink `link` at `target` (rename over the old link).
fn switch_link(link: &Path, target: &Path) -> Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    if link.exists() && !link.is_symlink() {
        return Err(Error::input(
            link,
            "exists and is not a korgpkg index link; refusing to replace it",
        ));
    }
    let name = link.file_name().and_then(|n| n.to_str()).unwrap_or("link");
    let tmp = dir.join(format!(".{name}.korgpkg-new"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .ctx(|| format!("creating symlink {}", tmp.display()))?;
    fs::rename(&tmp, link).ctx(|| format!("switching {}", link.display()))?;
    sync_dir(dir)
}

/// fsync every directory below `dir` (files were synced when written).
fn sync_tree(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let e = e.ctx(|| format!("listing {}", dir.display()))?;
        let ft = e
            .file_type()
            .ctx(|| format!("reading {}", e.path().display()))?;
        if ft.is_dir() {
            sync_tree(&e.path())?;
        }
    }
    sync_dir(dir)
}

/// `korgpkg repo list`.
pub fn list(root: &Path) -> Result<Vec<PublishedPackage>> {
    RepoConfig::load(root)?;
    Ok(load_state(root)?
        .packages
        .into_iter()
        .map(|s| s.package)
        .collect())
}

/// `korgpkg repo remove`: drop packages (`name` or `name=version`) and re-sign.
pub fn remove(
    root: &Path,
    specs: &[String],
    format: Option<Format>,
    suite: Option<&str>,
    passphrase: Option<String>,
    source_date_epoch: Option<u64>,
    templates: &Templates,
) -> Result<Vec<PublishedPackage>> {
    let config = RepoConfig::load(root)?;
    let time = now_or(source_date_epoch);
    let signer = open_signer(root, &config, passphrase, time)?;
    let _lock = Lock::acquire(root)?;
    let mut state = load_state(root)?;
    let matches = |p: &PublishedPackage| {
        format.is_none_or(|f| f == p.format)
            // `--suite` is apt's: ipk's `suite` field is its feed.
            && (p.format != Format::Deb
                || suite.is_none_or(|s| p.suite.as_deref().is_none_or(|ps| ps == s)))
            && specs.iter().any(|spec| match spec.split_once('=') {
                Some((n, v)) => p.name == n && p.version == v,
                None => p.name == *spec,
            })
    };
    let (removed, kept): (Vec<_>, Vec<_>) =
        state.packages.drain(..).partition(|s| matches(&s.package));
    if removed.is_empty() {
        return Err(Error::Usage(format!(
            "no package in {} matches {}",
            root.display(),
            specs.join(", ")
        )));
    }
    state.packages = kept;
    let ctx = Context {
        root,
        config: &config,
        signer: &signer,
        time,
        templates,
        durability: Durability::EachFile,
        referenced: HashSet::new(),
    };
    commit(&ctx, &mut state)?;
    let removed: Vec<PublishedPackage> = removed.into_iter().map(|s| s.package).collect();
    delete_unreferenced(root, &state, &removed);
    Ok(removed)
}

/// XML-escape text for rpm-md.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// sha256 hex of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha512 hex of bytes.
pub fn sha512_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha512::digest(bytes))
}

/// Fields a Packages index writes itself for every package (compared without case); a
/// package that carries one of them in its control file is refused.
const INDEX_FIELDS: &[&str] = &[
    "Filename",
    "Size",
    "MD5sum",
    "SHA1",
    "SHA256",
    "SHA512",
    "SHA256sum",
    "Package",
    "Version",
    "Architecture",
];

/// A Debian-style control stanza (without Filename/Size/sums) rebuilt from the parsed
/// fields of the package `file`: the identity fields first, every other field on one
/// line (continuation lines of folded fields joined with a space), relations normalized,
/// and only `Description` keeping its continuation lines. A field the index writes
/// itself is refused, as is any value that could end the stanza early.
pub fn control_stanza(file: &Path, info: &package::Inspection) -> Result<String> {
    let one_line = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s = format!(
        "Package: {}\nVersion: {}\nArchitecture: {}\n",
        info.name, info.version, info.arch
    );
    for k in info.fields.keys().chain(info.relations.keys()) {
        if INDEX_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)) {
            return Err(Error::input(
                file,
                format!("control field {k}: written by the repository index, a package must not carry it"),
            ));
        }
    }
    for (k, v) in &info.fields {
        if k != "Description" {
            s.push_str(&format!("{k}: {}\n", one_line(v)));
        }
    }
    for (k, v) in &info.relations {
        let list: Vec<String> = v.iter().map(|r| one_line(r)).collect();
        s.push_str(&format!("{k}: {}\n", list.join(", ")));
    }
    if let Some(d) = info.fields.get("Description") {
        let mut lines = d.split('\n');
        s.push_str(&format!(
            "Description: {}\n",
            lines.next().unwrap_or("").trim()
        ));
        for line in lines {
            // Continuation lines as the package has them (space or tab, then text).
            if !line.starts_with([' ', '\t']) {
                s.push(' ');
            }
            s.push_str(line);
            s.push('\n');
        }
    }
    // Every line a field or a non-blank continuation line, nothing but tab below 0x20:
    // nothing can end the stanza or start another one.
    let safe = s
        .lines()
        .all(|l| !l.trim().is_empty() && !l.chars().any(|c| c.is_control() && c != '\t'))
        && !s.contains("\n\n");
    if !safe {
        return Err(Error::input(
            file,
            "control fields would not make one index stanza",
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_definitions_parse() {
        for f in ["repo/stable.toml", "repo/multi-suite.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let text = fs::read_to_string(&path).unwrap();
            let c: RepoConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!c.apt.suites.is_empty() && c.keep_generations >= 2, "{f}");
        }
        let bad = "keys = \"k\"\n[apt]\nsuites = []\nbogus = 1\n";
        assert!(toml::from_str::<RepoConfig>(bad).is_err());
    }

    #[test]
    fn xml_escape_escapes_markup_and_drops_control_characters() {
        assert_eq!(
            xml_escape("a<b>&\"'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;&apos;\n"
        );
    }
}
