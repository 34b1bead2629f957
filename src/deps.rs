//! The deps stage, between payload and package: read the ELF files of a staged payload
//! and derive each format's run-time dependencies, the way rpm's `elfdeps` and
//! `dpkg-shlibdeps` do, without the target distribution installed.
//!
//! [`scan`] reads only ELF headers, program headers, the dynamic section, `.dynstr` and
//! the version-needs section of every file through a bounded [`ReadCache`] (never a
//! whole binary) into an [`ElfReport`]. [`derive`] turns the report into relations:
//!
//! - **rpm**: exactly what `elfdeps -R` prints for each executable file
//!   (`libc.so.6()(64bit)`, `libc.so.6(GLIBC_2.28)(64bit)`, `rtld(GNU_HASH)`), minus
//!   sonames the package ships itself. No Provides are exported.
//! - **deb, ipk**: each soname (and the interpreter) mapped to a package through a
//!   [`DistroMap`] (`specs/distros/<name>.toml`, data, not code), with a minimum version
//!   from the highest symbol version used (`GLIBC_2.28` → `libc6 (>= 2.28)`) or the
//!   map's fixed minimum. An unmapped soname is an error naming it and the ELF file,
//!   unless the spec's `[deps]` table maps or ignores it.

use include_dir::{include_dir, Dir};
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, ReadCache, ReadRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::model::relation::{at_least, compare_versions, merge_relation, Relation, RelationKind};
use crate::model::{Format, Relations};
use crate::package::IpkOuter;
use crate::payload::{DataSource, EntryKind, FileData, Payload};

static BUILTIN_DISTROS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/specs/distros");

/// One dynamically linked (or static) ELF executable or shared object of the payload.
#[derive(Debug, Clone, Serialize)]
pub struct ElfFile {
    /// Install path (`/usr/lib/korg/llvm-18/bin/clang`), or the path scanned.
    pub path: String,
    /// 32 or 64.
    pub class: u8,
    /// Machine name (`x86_64`, `aarch64`, or `e_machine N`).
    pub machine: String,
    #[serde(skip)]
    pub e_machine: u16,
    /// Any execute bit set.
    pub executable: bool,
    /// `ET_DYN`: a shared object (or a position-independent executable).
    #[serde(skip)]
    pub dso: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soname: Option<String>,
    /// DT_NEEDED, in file order.
    pub needed: Vec<String>,
    /// Version needs (`.gnu.version_r`): soname → versions (`GLIBC_2.28`), in file order.
    pub version_needs: Vec<(String, Vec<String>)>,
    /// PT_INTERP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// DT_GNU_HASH present.
    pub gnu_hash: bool,
    /// DT_HASH present.
    pub sysv_hash: bool,
    /// DT_RUNPATH and DT_RPATH entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runpath: Vec<String>,
}

/// Everything [`scan`] found: the ELF files and the library names the payload ships.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ElfReport {
    pub files: Vec<ElfFile>,
    /// Sonames and file names (of files and symlinks) in the payload: a needed soname
    /// in this set is the package's own, not an external dependency.
    pub shipped: BTreeSet<String>,
}

impl ElfReport {
    fn ships(&self, soname: &str) -> bool {
        self.shipped.contains(soname)
    }
}

/// Scan every regular file of a staged payload.
pub fn scan(payload: &Payload) -> Result<ElfReport> {
    let mut report = ElfReport::default();
    for entry in payload.entries() {
        let base = entry.path.rsplit('/').next().unwrap_or("").to_string();
        match &entry.kind {
            EntryKind::File(data) => {
                report.shipped.insert(base);
                if let Some(f) = scan_data(&entry.path, entry.mode, data)? {
                    report.add(f);
                }
            }
            EntryKind::HardLink { .. } | EntryKind::Symlink(_) => {
                report.shipped.insert(base);
            }
            EntryKind::Directory => {}
        }
    }
    Ok(report)
}

/// Scan every regular file below `dir` (symlinks are not followed, but their names
/// count as shipped).
pub fn scan_dir(dir: &Path) -> Result<ElfReport> {
    use std::os::unix::fs::PermissionsExt;
    let mut report = ElfReport::default();
    let mut stack = vec![dir.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).ctx(|| format!("reading directory {}", d.display()))?;
        for e in rd {
            let e = e.ctx(|| format!("reading directory {}", d.display()))?;
            let ft = e
                .file_type()
                .ctx(|| format!("reading {}", e.path().display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_symlink() {
                report.shipped.insert(name);
            } else if ft.is_file() {
                report.shipped.insert(name);
                files.push(e.path());
            }
        }
    }
    files.sort();
    for p in files {
        let mode = std::fs::metadata(&p)
            .ctx(|| format!("reading {}", p.display()))?
            .permissions()
            .mode();
        let mut f = File::open(&p).ctx(|| format!("opening {}", p.display()))?;
        let mut magic = [0u8; 4];
        if f.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
            continue;
        }
        let cache = ReadCache::new(f);
        if let Some(found) = parse(&p.display().to_string(), mode, &cache)? {
            report.add(found);
        }
    }
    Ok(report)
}

impl ElfReport {
    fn add(&mut self, f: ElfFile) {
        if let Some(s) = &f.soname {
            self.shipped.insert(s.clone());
        }
        self.files.push(f);
    }
}

fn scan_data(path: &str, mode: u32, data: &FileData) -> Result<Option<ElfFile>> {
    if data.size < 64 {
        return Ok(None);
    }
    let mut magic = [0u8; 4];
    let mut r = data.open()?;
    if r.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
        return Ok(None);
    }
    drop(r);
    match &data.source {
        DataSource::Staged(p) => {
            let f = File::open(p).ctx(|| format!("opening staged file {}", p.display()))?;
            let cache = ReadCache::new(f);
            parse(path, mode, &cache)
        }
        DataSource::Inline(bytes) => parse(path, mode, &bytes[..]),
        DataSource::Streamed => Err(Error::Usage(format!(
            "{path}: a streamed payload is scanned with deps::StreamScanner"
        ))),
    }
}

/// ELF files up to this size are held in memory while they pass by [`StreamScanner`];
/// larger ones are spooled to an unlinked temporary file.
pub const STREAM_BUFFER_LIMIT: u64 = 64 << 20;

/// Scans a payload's ELF files while its bytes stream past once, for
/// [`crate::payload::stream_payload`]: each regular file that starts with the ELF magic
/// is collected (one at a time: in memory up to [`STREAM_BUFFER_LIMIT`], else in an
/// unlinked temporary file in the work directory) and parsed by the same code as
/// [`scan`] when its last byte has passed, so the report is the same. A malformed ELF
/// file is reported by [`StreamScanner::finish`], after the archive's own checks.
pub struct StreamScanner {
    work_dir: PathBuf,
    report: ElfReport,
    current: Option<Collecting>,
    error: Option<Error>,
}

struct Collecting {
    path: String,
    mode: u32,
    size: u64,
    seen: u64,
    /// The first bytes, until the magic is known; then the whole file (small files).
    head: Vec<u8>,
    spool: Option<File>,
    elf: Option<bool>,
}

impl StreamScanner {
    /// A scanner spooling large ELF files below `work_dir`.
    pub fn new(work_dir: &Path) -> Self {
        StreamScanner {
            work_dir: work_dir.to_path_buf(),
            report: ElfReport::default(),
            current: None,
            error: None,
        }
    }

    /// The next entry of the payload, in any order.
    pub fn entry(&mut self, entry: &crate::payload::Entry) -> Result<()> {
        self.current = None;
        let base = entry.path.rsplit('/').next().unwrap_or("").to_string();
        match &entry.kind {
            EntryKind::File(data) => {
                self.report.shipped.insert(base);
                if data.size >= 64 {
                    self.current = Some(Collecting {
                        path: entry.path.clone(),
                        mode: entry.mode,
                        size: data.size,
                        seen: 0,
                        head: Vec::new(),
                        spool: None,
                        elf: None,
                    });
                }
            }
            EntryKind::HardLink { .. } | EntryKind::Symlink(_) => {
                self.report.shipped.insert(base);
            }
            EntryKind::Directory => {}
        }
        Ok(())
    }

    /// The next bytes of the current file.
    pub fn data(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        c.seen += bytes.len() as u64;
        match c.elf {
            Some(false) => return Ok(()),
            Some(true) => c.keep(bytes)?,
            None => {
                c.head.extend_from_slice(bytes);
                if c.head.len() >= 4 {
                    let is_elf = &c.head[..4] == b"\x7fELF";
                    c.elf = Some(is_elf);
                    if !is_elf {
                        c.head = Vec::new();
                    } else if c.size > STREAM_BUFFER_LIMIT {
                        let mut f = tempfile::tempfile_in(&self.work_dir).ctx(|| {
                            format!(
                                "creating a temporary file in {} for {}",
                                self.work_dir.display(),
                                c.path
                            )
                        })?;
                        f.write_all(&c.head)
                            .ctx(|| format!("spooling {} for its ELF headers", c.path))?;
                        c.head = Vec::new();
                        c.spool = Some(f);
                    } else {
                        c.head.reserve_exact(c.size as usize - c.head.len());
                    }
                }
            }
        }
        if c.seen == c.size {
            let c = self.current.take();
            if let Some(c) = c.filter(|c| c.elf == Some(true)) {
                match c.parse() {
                    Ok(Some(f)) => self.report.add(f),
                    Ok(None) => {}
                    Err(e) => {
                        self.error.get_or_insert(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// The report, ELF files sorted by path as [`scan`] lists them.
    pub fn finish(mut self) -> Result<ElfReport> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.report.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(self.report)
    }
}

impl Collecting {
    fn keep(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.spool {
            Some(f) => f
                .write_all(bytes)
                .ctx(|| format!("spooling {} for its ELF headers", self.path)),
            None => {
                self.head.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn parse(self) -> Result<Option<ElfFile>> {
        match self.spool {
            Some(mut f) => {
                f.flush()
                    .ctx(|| format!("spooling {} for its ELF headers", self.path))?;
                let cache = ReadCache::new(f);
                parse(&self.path, self.mode, &cache)
            }
            None => parse(&self.path, self.mode, &self.head[..]),
        }
    }
}

/// Parse one ELF file (`data` starts with `\x7fELF`); `None` for relocatable objects,
/// core files, other non-loadable ELF types and separate debug-info files.
fn parse<'d, R: ReadRef<'d>>(path: &str, mode: u32, data: R) -> Result<Option<ElfFile>> {
    let ident = data
        .read_bytes_at(0, 16)
        .map_err(|_| Error::input(path, "truncated ELF header"))?;
    match ident[4] {
        elf::ELFCLASS64 => parse_as::<elf::FileHeader64<Endianness>, R>(path, mode, data),
        elf::ELFCLASS32 => parse_as::<elf::FileHeader32<Endianness>, R>(path, mode, data),
        c => Err(Error::input(path, format!("unknown ELF class {c}"))),
    }
}

fn parse_as<'d, H, R>(path: &str, mode: u32, data: R) -> Result<Option<ElfFile>>
where
    H: FileHeader<Endian = Endianness>,
    R: ReadRef<'d>,
{
    let bad = |what: &str, e: object::read::Error| {
        Error::input(path, format!("malformed ELF file ({what}: {e})"))
    };
    let header = H::parse(data).map_err(|e| bad("header", e))?;
    let endian = header.endian().map_err(|e| bad("header", e))?;
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Ok(None);
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| bad("section headers", e))?;
    if is_separate_debug_info(&sections, endian) {
        return Ok(None);
    }
    let e_machine = header.e_machine(endian);
    let mut out = ElfFile {
        path: path.to_string(),
        class: if header.is_type_64() { 64 } else { 32 },
        machine: machine_name(e_machine),
        e_machine,
        executable: mode & 0o111 != 0,
        dso: e_type == elf::ET_DYN,
        soname: None,
        needed: Vec::new(),
        version_needs: Vec::new(),
        interpreter: None,
        gnu_hash: false,
        sysv_hash: false,
        runpath: Vec::new(),
    };
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| bad("program headers", e))?;
    for ph in phdrs {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| bad("PT_INTERP", e))?
        {
            out.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    if let Some((dynamic, link)) = sections
        .dynamic(endian, data)
        .map_err(|e| bad("dynamic section", e))?
    {
        let strings = sections
            .strings(endian, data, link)
            .map_err(|e| bad("dynamic string table", e))?;
        for d in dynamic {
            let tag: i64 = d.d_tag(endian).into();
            if tag == elf::DT_NULL {
                break;
            }
            let string = || -> Result<String> {
                d.string(endian, strings)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .map_err(|e| bad("dynamic string", e))
            };
            match tag {
                elf::DT_NEEDED => out.needed.push(string()?),
                elf::DT_SONAME => out.soname = Some(string()?),
                elf::DT_RUNPATH | elf::DT_RPATH => {
                    out.runpath.extend(string()?.split(':').map(str::to_string));
                }
                elf::DT_GNU_HASH => out.gnu_hash = true,
                elf::DT_HASH => out.sysv_hash = true,
                _ => {}
            }
        }
    }
    if let Some((mut needs, link)) = sections
        .gnu_verneed(endian, data)
        .map_err(|e| bad("version needs", e))?
    {
        let strings = sections
            .strings(endian, data, link)
            .map_err(|e| bad("version string table", e))?;
        while let Some((need, mut auxes)) = needs.next().map_err(|e| bad("version needs", e))? {
            let file = need
                .file(endian, strings)
                .map_err(|e| bad("version needs", e))?;
            let mut versions = Vec::new();
            while let Some(aux) = auxes.next().map_err(|e| bad("version needs", e))? {
                let name = aux
                    .name(endian, strings)
                    .map_err(|e| bad("version needs", e))?;
                versions.push(String::from_utf8_lossy(name).into_owned());
            }
            out.version_needs
                .push((String::from_utf8_lossy(file).into_owned(), versions));
        }
    }
    Ok(Some(out))
}

/// Whether the section headers describe a separate debug-info file (what `objcopy
/// --only-keep-debug` writes, as under `/usr/lib/debug/.build-id/`): every allocated
/// section but the notes is `SHT_NOBITS`, so the program headers point at bytes the
/// file does not hold (`PT_INTERP` has no data). No loader runs such a file; it has no
/// dependencies of its own.
fn is_separate_debug_info<'d, H, R>(
    sections: &object::read::elf::SectionTable<'d, H, R>,
    endian: Endianness,
) -> bool
where
    H: FileHeader<Endian = Endianness>,
    R: ReadRef<'d>,
{
    let mut allocated = sections
        .iter()
        .filter(|s| {
            let flags: u64 = s.sh_flags(endian).into();
            flags & u64::from(elf::SHF_ALLOC) != 0 && s.sh_type(endian) != elf::SHT_NOTE
        })
        .peekable();
    allocated.peek().is_some() && allocated.all(|s| s.sh_type(endian) == elf::SHT_NOBITS)
}

/// The ELF class and machine a package arch (rpm spelling) must have, if known.
fn arch_elf(arch: &str) -> Option<(u8, u16)> {
    Some(match arch {
        "x86_64" | "amd64" => (64, elf::EM_X86_64),
        "aarch64" | "arm64" => (64, elf::EM_AARCH64),
        "i386" | "i486" | "i586" | "i686" => (32, elf::EM_386),
        "armv7hl" | "armhf" | "armv7" | "arm" => (32, elf::EM_ARM),
        "ppc64le" | "ppc64el" | "ppc64" => (64, elf::EM_PPC64),
        "riscv64" => (64, elf::EM_RISCV),
        "s390x" => (64, elf::EM_S390),
        "loongarch64" => (64, elf::EM_LOONGARCH),
        _ => return None,
    })
}

fn machine_name(m: u16) -> String {
    match m {
        elf::EM_X86_64 => "x86_64".into(),
        elf::EM_AARCH64 => "aarch64".into(),
        elf::EM_386 => "i386".into(),
        elf::EM_ARM => "arm".into(),
        elf::EM_PPC64 => "ppc64".into(),
        elf::EM_RISCV => "riscv".into(),
        elf::EM_S390 => "s390".into(),
        elf::EM_LOONGARCH => "loongarch".into(),
        other => format!("e_machine {other}"),
    }
}

/// The ELF files that are not for the package's arch (`arch` in rpm spelling,
/// `x86_64`): a toolchain's target-side objects (`libclang_rt.asan-i386.so` in an
/// x86_64 LLVM). They get no derived dependencies. Unknown arches match everything.
pub fn foreign_files<'r>(report: &'r ElfReport, arch: &str) -> Vec<&'r ElfFile> {
    match arch_elf(arch) {
        Some((class, machine)) => report
            .files
            .iter()
            .filter(|f| f.class != class || f.e_machine != machine)
            .collect(),
        None => Vec::new(),
    }
}

/// What a spec's `[deps] foreign_arch` makes of ELF files for another machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForeignArch {
    /// Package them, derive nothing from them and list them in the report.
    #[default]
    Allow,
    /// Refuse the build, naming the first such file.
    Error,
}

/// Apply `policy` to the files [`foreign_files`] finds: with [`ForeignArch::Error`]
/// the first one is an input error naming it; otherwise they are returned.
pub fn check_foreign<'r>(
    report: &'r ElfReport,
    arch: &str,
    policy: ForeignArch,
) -> Result<Vec<&'r ElfFile>> {
    let foreign = foreign_files(report, arch);
    if policy == ForeignArch::Error {
        if let (Some(f), Some((class, machine))) = (foreign.first(), arch_elf(arch)) {
            return Err(Error::input(
                &f.path,
                format!(
                    "is a {}-bit {} ELF file, but the package is for {arch} ({class}-bit {}) \
                     and the spec's [deps] foreign_arch is \"error\"{}",
                    f.class,
                    f.machine,
                    machine_name(machine),
                    match foreign.len() {
                        1 => String::new(),
                        n => format!(" ({} more such files)", n - 1),
                    }
                ),
            ));
        }
    }
    Ok(foreign)
}

/// A spec's `[deps]` table: per-package exceptions to the distro maps.
#[derive(Debug, Clone, Default)]
pub struct DepsOverrides {
    /// Sonames that are never dependencies (in any format).
    pub ignore_sonames: BTreeSet<String>,
    /// Distro map name (`debian-12`, `openwrt`) → soname → relation in that
    /// distribution's syntax, used instead of the map's own rule.
    pub map: BTreeMap<String, BTreeMap<String, Relation>>,
    /// What ELF files for another machine than the package's arch mean.
    pub foreign_arch: ForeignArch,
}

/// How one soname maps to a package of a distribution.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SonameRule {
    /// Package that ships the soname (`libc6`).
    pub package: String,
    /// Minimum version always required (and the floor for derived ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    /// Symbol-version prefix whose number is a package version: with `GLIBC_`,
    /// a need for `GLIBC_2.28` requires the package at `>= 2.28`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_prefix: Option<String>,
}

/// A map entry: `"libz3.so.4" = "libz3-4"` (a package, no minimum) or a full rule.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRule {
    Package(String),
    Rule(SonameRule),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistroMap {
    summary: String,
    format: Format,
    #[serde(default)]
    interpreters: BTreeMap<String, String>,
    #[serde(default)]
    debian_renaming: bool,
    sonames: BTreeMap<String, RawRule>,
}

/// A soname → package map for one distribution release (`specs/distros/debian-12.toml`).
#[derive(Debug, Clone, Serialize)]
pub struct DistroMap {
    /// File stem (`debian-12`), as `--target-distro` names it.
    pub name: String,
    pub summary: String,
    /// The package format the distribution uses.
    pub format: Format,
    /// Interpreter path (`/lib64/ld-linux-x86-64.so.2`) → package.
    pub interpreters: BTreeMap<String, String>,
    pub sonames: BTreeMap<String, SonameRule>,
    /// Sonames not in `sonames` get the package name OpenEmbedded's `debian.bbclass`
    /// gives a library package (`libz3.so.4` → `libz3-4`, `libedit.so.2` → `libedit2`).
    pub debian_renaming: bool,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The package OpenEmbedded's `debian.bbclass` names after a library's soname
/// (`socrunch`): lowercase, `_` → `-`, the `.so.` dropped, and a `-` kept between a
/// digit and the version: `libz3.so.4` → `libz3-4`, `libstdc++.so.6` → `libstdc++6`.
pub fn debian_renamed(soname: &str) -> Option<String> {
    let s = soname.to_ascii_lowercase().replace('_', "-");
    let (name, version) = s.split_once(".so.")?;
    let last = name.chars().last()?;
    let package = if last.is_ascii_digit() {
        format!("{name}-{version}")
    } else {
        format!("{name}{version}")
    };
    Relation::parse_deb(&package)
        .ok()
        .filter(|r| r.alternatives.len() == 1 && r.alternatives[0].op.is_none())
        .map(|_| package)
}

impl DistroMap {
    /// The rule for `soname`: listed, or derived by [`debian_renamed`] when the map
    /// uses OpenEmbedded's renaming.
    pub fn rule(&self, soname: &str) -> Option<std::borrow::Cow<'_, SonameRule>> {
        if let Some(r) = self.sonames.get(soname) {
            return Some(std::borrow::Cow::Borrowed(r));
        }
        if !self.debian_renaming {
            return None;
        }
        debian_renamed(soname).map(|package| {
            std::borrow::Cow::Owned(SonameRule {
                package,
                min_version: None,
                version_prefix: None,
            })
        })
    }

    /// Parse and validate one map file.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: RawDistroMap = toml::from_str(text).map_err(|e| Error::toml(path, text, &e))?;
        if raw.format == Format::Rpm {
            return Err(Error::spec(
                path,
                "field format: rpm needs no distro map (its requires are sonames)",
            ));
        }
        let mut sonames = BTreeMap::new();
        for (soname, rule) in raw.sonames {
            let rule = match rule {
                RawRule::Package(package) => SonameRule {
                    package,
                    min_version: None,
                    version_prefix: None,
                },
                RawRule::Rule(r) => r,
            };
            let text = match &rule.min_version {
                Some(v) => format!("{} (>= {v})", rule.package),
                None => rule.package.clone(),
            };
            let parsed = Relation::parse_deb(&text)
                .map_err(|m| Error::spec(path, format!("field sonames.{soname:?}: {m}")))?;
            if parsed.alternatives.len() != 1 {
                return Err(Error::spec(
                    path,
                    format!("field sonames.{soname:?}: one package, not alternatives"),
                ));
            }
            sonames.insert(soname, rule);
        }
        for (interp, pkg) in &raw.interpreters {
            Relation::parse_deb(pkg)
                .map_err(|m| Error::spec(path, format!("field interpreters.{interp:?}: {m}")))?;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| Error::spec(path, "distro map file has no name"))?;
        Ok(DistroMap {
            name,
            summary: raw.summary,
            format: raw.format,
            interpreters: raw.interpreters,
            sonames,
            debian_renaming: raw.debian_renaming,
            path: path.to_path_buf(),
        })
    }
}

/// The distro maps known to this run: built-in ones plus `<specs dir>/distros/*.toml`.
#[derive(Debug, Clone, Default)]
pub struct DistroMaps {
    maps: BTreeMap<String, DistroMap>,
}

impl DistroMaps {
    /// Load the built-in maps, then `dir/*.toml` (same name replaces a built-in map).
    pub fn load(dir: Option<&Path>) -> Result<Self> {
        let mut maps = BTreeMap::new();
        for file in BUILTIN_DISTROS.files() {
            if file.path().extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let path = Path::new("specs/distros").join(file.path());
            let text = file
                .contents_utf8()
                .ok_or_else(|| Error::spec(&path, "not UTF-8"))?;
            let m = DistroMap::parse(&path, text)?;
            maps.insert(m.name.clone(), m);
        }
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            let mut paths = Vec::new();
            for e in std::fs::read_dir(dir)
                .ctx(|| format!("reading distro maps directory {}", dir.display()))?
            {
                let p = e
                    .ctx(|| format!("reading distro maps directory {}", dir.display()))?
                    .path();
                if p.extension().is_some_and(|e| e == "toml") {
                    paths.push(p);
                }
            }
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p)
                    .ctx(|| format!("reading distro map {}", p.display()))?;
                let m = DistroMap::parse(&p, &text)?;
                maps.insert(m.name.clone(), m);
            }
        }
        Ok(DistroMaps { maps })
    }

    /// All maps, by name.
    pub fn all(&self) -> impl Iterator<Item = &DistroMap> {
        self.maps.values()
    }

    /// The map `--target-distro` names (must exist) if it is for `format`, else the
    /// format's default: `debian-12` for deb; for ipk `openwrt` when the ipk is the
    /// tar form OpenWrt's opkg reads, else `openembedded`; `None` for rpm.
    pub fn for_format(
        &self,
        format: Format,
        target: Option<&str>,
        ipk_outer: IpkOuter,
    ) -> Result<Option<&DistroMap>> {
        if format == Format::Rpm {
            return Ok(None);
        }
        if let Some(name) = target {
            let m = self.get(name)?;
            if m.format == format {
                return Ok(Some(m));
            }
        }
        let default = match (format, ipk_outer) {
            (Format::Deb, _) => "debian-12",
            (_, IpkOuter::Tar) => "openwrt",
            _ => "openembedded",
        };
        self.get(default).map(Some)
    }

    /// The map named `name`, or a usage error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&DistroMap> {
        self.maps.get(name).ok_or_else(|| {
            Error::Usage(format!(
                "no distro map {name:?} (known: {})",
                self.maps.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// rpm's soname sanity filter (`skipSoname` in elfdeps): keep names containing `.so`
/// that start with `lib` or are a dynamic linker.
fn rpm_soname_ok(soname: &str) -> bool {
    if soname.trim().is_empty() || !soname.contains(".so") {
        return false;
    }
    ["ld.", "ld-", "ld64.", "ld64-", "lib"]
        .iter()
        .any(|p| soname.starts_with(p))
}

/// Whether rpm's generator derives requires from `f`: rpm 4.18's `elfdeps` does for
/// executable files and for shared libraries (`ET_DYN` without an interpreter) of any
/// mode, so a 0644 `.so` counts but a 0644 PIE does not.
fn rpm_requires_from(f: &ElfFile) -> bool {
    f.executable || (f.dso && f.interpreter.is_none())
}

/// What to do with a soname (or interpreter) the distro map does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnmappedPolicy {
    /// Refuse the build, listing every unmapped soname of every format.
    #[default]
    Error,
    /// Build without a dependency for them and print one warning listing them.
    Warn,
}

/// A soname (or interpreter path) a distro map has no package for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmapped {
    /// The distro map consulted.
    pub distro: String,
    /// The soname, or the interpreter path.
    pub soname: String,
    /// The first ELF file needing it, and how many need it.
    pub needed_by: String,
    pub files: usize,
}

/// Derived relations of one format, and what could not be mapped.
#[derive(Debug, Clone, Default)]
pub struct Derived {
    pub relations: Relations,
    pub unmapped: Vec<Unmapped>,
}

/// One line naming every unmapped soname (grouped by distro map) and how to fix it.
pub fn unmapped_message(unmapped: &[Unmapped]) -> String {
    let mut by_distro: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for u in unmapped {
        let more = match u.files {
            0 | 1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        by_distro
            .entry(&u.distro)
            .or_default()
            .push(format!("{} (needed by {}{more})", u.soname, u.needed_by));
    }
    let groups: Vec<String> = by_distro
        .iter()
        .map(|(d, list)| format!("{d}: {}", list.join(", ")))
        .collect();
    format!(
        "{} soname(s) no distro map maps to a package: {} (add them to the distro map, to \
         the spec's [deps.map.<distro>] or ignore_sonames, or build with --unmapped warn)",
        unmapped.len(),
        groups.join("; ")
    )
}

/// Derive `format`'s dependencies from `report`. `map` is required for deb and ipk;
/// with `arch` (rpm spelling), files for another machine derive nothing. Sonames the
/// map cannot place are returned in [`Derived::unmapped`], never an error here.
pub fn derive(
    report: &ElfReport,
    map: Option<&DistroMap>,
    format: Format,
    arch: Option<&str>,
    overrides: &DepsOverrides,
) -> Result<Derived> {
    let foreign: BTreeSet<&str> = arch
        .map(|a| {
            foreign_files(report, a)
                .into_iter()
                .map(|f| f.path.as_str())
                .collect()
        })
        .unwrap_or_default();
    let native = || {
        report
            .files
            .iter()
            .filter(|f| !foreign.contains(f.path.as_str()))
    };
    let external =
        |soname: &str| !report.ships(soname) && !overrides.ignore_sonames.contains(soname);
    let mut list: Vec<Relation> = Vec::new();
    let mut unmapped: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut miss = |name: &str, file: &str| {
        let e = unmapped
            .entry(name.to_string())
            .or_insert_with(|| (file.to_string(), 0));
        e.1 += 1;
    };
    match format {
        Format::Rpm => {
            let mut caps = BTreeSet::new();
            for f in native().filter(|f| rpm_requires_from(f)) {
                let marker = if f.class == 64 && f.e_machine != elf::EM_ALPHA {
                    "(64bit)"
                } else {
                    ""
                };
                for (soname, versions) in &f.version_needs {
                    if !rpm_soname_ok(soname) || !external(soname) {
                        continue;
                    }
                    for v in versions {
                        caps.insert(format!("{soname}({v}){marker}"));
                    }
                }
                for soname in &f.needed {
                    if !rpm_soname_ok(soname) || !external(soname) {
                        continue;
                    }
                    caps.insert(if marker.is_empty() {
                        soname.clone()
                    } else {
                        format!("{soname}(){marker}")
                    });
                }
                if f.gnu_hash && !f.sysv_hash {
                    caps.insert("rtld(GNU_HASH)".to_string());
                }
            }
            for c in caps {
                list.push(Relation::parse_rpm(&c).map_err(|m| Error::input("ELF files", m))?);
            }
        }
        Format::Deb | Format::Ipk => {
            let map = map
                .ok_or_else(|| Error::Usage(format!("no distro map for {format} dependencies")))?;
            let spec_map = overrides.map.get(&map.name);
            let mut found: Vec<Relation> = Vec::new();
            for f in native() {
                let needs_of = |soname: &str| -> Vec<&String> {
                    f.version_needs
                        .iter()
                        .filter(|(s, _)| s == soname)
                        .flat_map(|(_, v)| v.iter())
                        .collect()
                };
                for soname in &f.needed {
                    if !external(soname) {
                        continue;
                    }
                    if let Some(rel) = spec_map.and_then(|m| m.get(soname)) {
                        merge_relation(&mut found, rel.clone());
                        continue;
                    }
                    let Some(rule) = map.rule(soname) else {
                        miss(soname, &f.path);
                        continue;
                    };
                    let mut min = rule.min_version.clone();
                    if let Some(prefix) = &rule.version_prefix {
                        for v in needs_of(soname) {
                            let Some(num) = v.strip_prefix(prefix.as_str()) else {
                                continue;
                            };
                            if num.is_empty()
                                || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
                            {
                                continue; // GLIBC_PRIVATE and the like
                            }
                            let higher = min.as_deref().is_none_or(|m| {
                                compare_versions(num, m) == std::cmp::Ordering::Greater
                            });
                            if higher {
                                min = Some(num.to_string());
                            }
                        }
                    }
                    merge_relation(&mut found, at_least(&rule.package, min.as_deref()));
                }
                if let Some(interp) = &f.interpreter {
                    let base = interp.rsplit('/').next().unwrap_or(interp);
                    if !external(base) {
                        continue;
                    }
                    match map.interpreters.get(interp) {
                        Some(pkg) => merge_relation(&mut found, at_least(pkg, None)),
                        None => miss(interp, &f.path),
                    }
                }
            }
            found.sort_by_key(|r| r.display(format));
            list = found;
        }
    }
    let mut rels = Relations::default();
    if !list.is_empty() {
        rels.0.insert(RelationKind::Depends, list);
    }
    let distro = map.map(|m| m.name.clone()).unwrap_or_default();
    Ok(Derived {
        relations: rels,
        unmapped: unmapped
            .into_iter()
            .map(|(soname, (needed_by, files))| Unmapped {
                distro: distro.clone(),
                soname,
                needed_by,
                files,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regular files of this machine's binary and library directories (not recursive),
    /// plus every file over the in-memory limit there (libLLVM, where installed).
    fn system_files() -> Vec<PathBuf> {
        let mut small = Vec::new();
        let mut large = Vec::new();
        for dir in ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib"] {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let Ok(m) = std::fs::symlink_metadata(&p) else {
                    continue;
                };
                if !m.is_file() {
                    continue;
                }
                if m.len() > STREAM_BUFFER_LIMIT {
                    large.push(p);
                } else if small.len() < 400 {
                    small.push(p);
                }
            }
        }
        small.extend(large.into_iter().take(2));
        small
    }

    /// The stream scanner, fed in uneven chunks, reports exactly what the staged scan
    /// reports for every real file (ELF or not, in memory or spooled).
    #[test]
    fn streamed_scans_equal_staged_scans_of_real_files() {
        use std::os::unix::fs::PermissionsExt;
        let work = tempfile::tempdir().expect("tmp");
        let mut elf = 0;
        for p in system_files() {
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            let data = FileData {
                size: meta.len(),
                sha256: [0; 32],
                md5: [0; 16],
                links: 1,
                inode: 1,
                source: DataSource::Staged(p.clone()),
            };
            let name = p.display().to_string();
            let staged = scan_data(&name, mode, &data).map_err(|e| e.to_string());
            let mut scanner = StreamScanner::new(work.path());
            let entry = crate::payload::Entry {
                path: name.clone(),
                mode,
                mtime: 0,
                kind: EntryKind::File(FileData {
                    source: DataSource::Streamed,
                    ..data
                }),
            };
            scanner.entry(&entry).expect("entry");
            let mut f = File::open(&p).expect("open");
            let mut buf = vec![0u8; 100_003];
            loop {
                let n = f.read(&mut buf[..3 + elf % 100_000]).expect("read");
                if n == 0 {
                    break;
                }
                scanner.data(&buf[..n]).expect("data");
            }
            let streamed = scanner.finish().map_err(|e| e.to_string());
            match (staged, streamed) {
                (Ok(Some(a)), Ok(r)) => {
                    elf += 1;
                    assert_eq!(r.files.len(), 1, "{name}");
                    assert_eq!(format!("{a:?}"), format!("{:?}", r.files[0]), "{name}");
                }
                (Ok(None), Ok(r)) => assert!(r.files.is_empty(), "{name}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "{name}"),
                (a, b) => panic!("{name}: staged {a:?}, streamed {b:?}"),
            }
        }
        assert!(elf > 50, "only {elf} ELF files found");
    }

    fn file(needed: &[&str], needs: &[(&str, &[&str])]) -> ElfFile {
        ElfFile {
            path: "/usr/lib/korg/x/bin/x".into(),
            class: 64,
            machine: "x86_64".into(),
            e_machine: elf::EM_X86_64,
            executable: true,
            dso: false,
            soname: None,
            needed: needed.iter().map(|s| s.to_string()).collect(),
            version_needs: needs
                .iter()
                .map(|(s, v)| (s.to_string(), v.iter().map(|v| v.to_string()).collect()))
                .collect(),
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            gnu_hash: true,
            sysv_hash: false,
            runpath: vec![],
        }
    }

    fn shown(r: &Relations, f: Format) -> Vec<String> {
        r.of(RelationKind::Depends)
            .iter()
            .map(|r| r.display(f))
            .collect()
    }

    #[test]
    fn builtin_maps_load() {
        let maps = DistroMaps::load(None).expect("built-in maps are valid");
        for n in ["debian-12", "ubuntu-24.04", "openembedded", "openwrt"] {
            maps.get(n).expect(n);
        }
        let pick = |f, t, outer| {
            maps.for_format(f, t, outer)
                .expect("ok")
                .map(|m| m.name.clone())
        };
        assert_eq!(
            pick(Format::Ipk, Some("debian-12"), IpkOuter::Ar).as_deref(),
            Some("openembedded")
        );
        assert_eq!(
            pick(Format::Ipk, None, IpkOuter::Tar).as_deref(),
            Some("openwrt")
        );
        assert_eq!(
            pick(Format::Ipk, Some("openembedded"), IpkOuter::Tar).as_deref(),
            Some("openembedded")
        );
        assert_eq!(
            pick(Format::Deb, Some("ubuntu-24.04"), IpkOuter::Tar).as_deref(),
            Some("ubuntu-24.04")
        );
        assert!(maps
            .for_format(Format::Deb, Some("nope"), IpkOuter::Ar)
            .is_err());
    }

    #[test]
    fn openwrt_names_its_c_library_libc() {
        let maps = DistroMaps::load(None).expect("maps");
        let mut report = ElfReport::default();
        report.files.push(file(
            &["libc.so.6", "libstdc++.so.6", "libz3.so.4", "libedit.so.2"],
            &[("libc.so.6", &["GLIBC_2.34"])],
        ));
        let none = DepsOverrides::default();
        let ipk =
            derive(&report, maps.get("openwrt").ok(), Format::Ipk, None, &none).expect("derives");
        assert_eq!(shown(&ipk.relations, Format::Ipk), ["libc", "libstdcpp6"]);
        assert_eq!(ipk.unmapped.len(), 2);
        let oe = derive(
            &report,
            maps.get("openembedded").ok(),
            Format::Ipk,
            None,
            &none,
        )
        .expect("derives");
        assert_eq!(
            shown(&oe.relations, Format::Ipk),
            ["libc6 (>= 2.34)", "libedit2", "libstdc++6", "libz3-4"]
        );
        assert!(oe.unmapped.is_empty());
        assert_eq!(
            debian_renamed("libFoo_bar.so.1.2").as_deref(),
            Some("libfoo-bar1.2")
        );
        assert_eq!(debian_renamed("libx.so"), None);
    }

    #[test]
    fn derives_per_format_and_skips_shipped_sonames() {
        let maps = DistroMaps::load(None).expect("maps");
        let mut report = ElfReport::default();
        report.files.push(file(
            &["libLLVM.so.18.1", "libz.so.1", "libm.so.6", "libc.so.6"],
            &[
                ("libc.so.6", &["GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_PRIVATE"]),
                ("libm.so.6", &["GLIBC_2.29"]),
                ("libLLVM.so.18.1", &["LLVM_18.1"]),
            ],
        ));
        report.shipped.insert("libLLVM.so.18.1".into());
        let none = DepsOverrides::default();
        let deb = derive(
            &report,
            maps.get("debian-12").ok(),
            Format::Deb,
            Some("x86_64"),
            &none,
        )
        .expect("derives");
        assert_eq!(
            shown(&deb.relations, Format::Deb),
            ["libc6 (>= 2.34)", "zlib1g (>= 1:1.2.13.dfsg)"]
        );
        let rpm = derive(&report, None, Format::Rpm, Some("x86_64"), &none).expect("derives");
        let rpm = shown(&rpm.relations, Format::Rpm);
        assert!(
            rpm.contains(&"libc.so.6(GLIBC_2.34)(64bit)".to_string()),
            "{rpm:?}"
        );
        assert!(
            rpm.contains(&"libc.so.6(GLIBC_PRIVATE)(64bit)".to_string()),
            "{rpm:?}"
        );
        assert!(rpm.contains(&"rtld(GNU_HASH)".to_string()), "{rpm:?}");
        assert!(!rpm.iter().any(|r| r.contains("LLVM")), "{rpm:?}");

        // A file for another machine derives nothing; a spec can make it an error.
        let other = derive(&report, None, Format::Rpm, Some("aarch64"), &none).expect("ok");
        assert!(other.relations.of(RelationKind::Depends).is_empty());
        assert_eq!(foreign_files(&report, "aarch64").len(), 1);
        let err = check_foreign(&report, "aarch64", ForeignArch::Error)
            .expect_err("spec says error")
            .to_string();
        assert!(
            err.contains("/usr/lib/korg/x/bin/x") && err.contains("aarch64"),
            "{err}"
        );

        // Every unmapped soname is reported, none is an error by itself.
        report.files[0].needed.push("libfoo.so.3".into());
        report.files[0].needed.push("libbar.so.1".into());
        let d = derive(
            &report,
            maps.get("debian-12").ok(),
            Format::Deb,
            None,
            &none,
        )
        .expect("unmapped is reported");
        let names: Vec<&str> = d.unmapped.iter().map(|u| u.soname.as_str()).collect();
        assert_eq!(names, ["libbar.so.1", "libfoo.so.3"]);
        let msg = unmapped_message(&d.unmapped);
        assert!(
            msg.contains("debian-12: libbar.so.1 (needed by /usr/lib/korg/x/bin/x)")
                && msg.contains("libfoo.so.3"),
            "{msg}"
        );
        let mut o = DepsOverrides::default();
        o.ignore_sonames.insert("libbar.so.1".into());
        o.map.insert(
            "debian-12".into(),
            [(
                "libfoo.so.3".to_string(),
                Relation::parse_deb("libfoo3 (>= 3.1)").expect("parses"),
            )]
            .into(),
        );
        let deb = derive(&report, maps.get("debian-12").ok(), Format::Deb, None, &o)
            .expect("override maps it");
        assert!(deb.unmapped.is_empty());
        assert!(shown(&deb.relations, Format::Deb).contains(&"libfoo3 (>= 3.1)".to_string()));
        // The debian-12 override does not leak into another map.
        let oe = derive(
            &report,
            maps.get("openembedded").ok(),
            Format::Ipk,
            None,
            &o,
        )
        .expect("derives");
        let oe = shown(&oe.relations, Format::Ipk);
        assert!(
            oe.contains(&"libfoo3".to_string()) && !oe.iter().any(|r| r.contains("3.1")),
            "{oe:?}"
        );
    }

    #[test]
    fn rpm_scans_shared_libraries_of_any_mode_but_not_non_executable_pies() {
        let mut report = ElfReport::default();
        let mut lib = file(&["libxml2.so.2"], &[]);
        lib.executable = false;
        lib.dso = true;
        lib.interpreter = None;
        let mut pie = file(&["libz.so.1"], &[]);
        pie.executable = false;
        pie.dso = true;
        report.files.push(lib);
        report.files.push(pie);
        let rpm = derive(
            &report,
            None,
            Format::Rpm,
            Some("x86_64"),
            &DepsOverrides::default(),
        )
        .expect("derives");
        assert_eq!(
            shown(&rpm.relations, Format::Rpm),
            ["libxml2.so.2()(64bit)", "rtld(GNU_HASH)"]
        );
    }
}
