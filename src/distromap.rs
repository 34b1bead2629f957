//! `korgpkg distro-map generate`: a soname → package map (`specs/distros/<name>.toml`)
//! made from a distribution's own data instead of by hand.
//!
//! - A release's `Contents-<arch>` index (`dists/<suite>/main/Contents-amd64.gz`) says
//!   which package ships every file. Library file names below `lib/<triplet>/` and
//!   `usr/lib/<triplet>/` (`libxml2.so.2`, `libz3.so.4`) become sonames. The fully
//!   versioned file a soname symlink points at (`libxml2.so.2.9.14`) is left out when a
//!   shorter name of the same library is in the same package, so the map stays small.
//! - dpkg's `*.symbols` and `*.shlibs` control files (`/var/lib/dpkg/info`) give minimum
//!   versions: the highest version in a library's symbols file, else its shlibs
//!   `(>= version)`, so a derived minimum is never below what `dpkg-shlibdeps` computes.
//! - A hand-kept base map (interpreters, glibc's `version_prefix` rules, pinned minimums)
//!   wins over both.
//!
//! The output is deterministic (sorted, no dates) and starts with a header naming the
//! inputs (the Contents file's sha256) and the command that regenerates it.

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::deps::{DistroMap, SonameRule};
use crate::error::{Error, IoContext, Result};
use crate::fetch::{Cache, FetchOptions, Fetcher};
use crate::model::relation::{compare_versions, Op, Relation};
use crate::model::Format;

/// Longest Contents line read; longer lines (none in Debian's indexes) are skipped.
const MAX_LINE: usize = 16 * 1024;
/// Largest Contents file fetched over HTTP (Ubuntu's amd64 index is about 51 MB).
const MAX_CONTENTS_DOWNLOAD: u64 = 256 * 1024 * 1024;
/// Largest dpkg control file (symbols/shlibs) read.
const MAX_CONTROL_FILE: u64 = 64 * 1024 * 1024;

/// What `distro-map generate` reads.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// A `Contents-<arch>` index: a path, or an `http(s)://` / `file://` URL; gzip,
    /// xz or plain.
    pub contents: String,
    /// Multiarch triplets whose library directories count (`x86_64-linux-gnu`).
    pub triplets: Vec<String>,
    /// Directories of dpkg control files (`*.symbols`, `*.shlibs`) or single files.
    pub shlibs: Vec<PathBuf>,
    /// A map whose interpreters and soname rules are kept as they are.
    pub base: Option<PathBuf>,
    /// `summary` of the map (default: the base map's).
    pub summary: Option<String>,
    /// The command line to print in the header.
    pub command: String,
}

/// Generate the map's TOML text.
pub fn generate(opts: &GenerateOptions) -> Result<String> {
    if opts.triplets.is_empty() {
        return Err(Error::Usage("give at least one --triplet".into()));
    }
    for t in &opts.triplets {
        if t.is_empty()
            || t.len() > 64
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::Usage(format!(
                "--triplet {t:?} is not a multiarch triplet"
            )));
        }
    }
    let base = match &opts.base {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).ctx(|| format!("reading base map {}", p.display()))?;
            Some(DistroMap::parse(p, &text)?)
        }
        None => None,
    };
    let summary = opts
        .summary
        .clone()
        .or_else(|| base.as_ref().map(|b| b.summary.clone()))
        .ok_or_else(|| Error::Usage("give --summary or a --base map".into()))?;
    let (raw, sha256) = open_contents(&opts.contents)?;
    let mut hashing = HashingRead {
        inner: raw,
        sha: Sha256::new(),
    };
    let found = {
        let reader = decompressed(&opts.contents, &mut hashing)?;
        read_contents(&opts.contents, reader, &opts.triplets)?
    };
    // Drain what the decoder left (trailing bytes) so the hash covers the whole file.
    std::io::copy(&mut hashing, &mut std::io::sink())
        .ctx(|| format!("reading {}", opts.contents))?;
    let sha256 = sha256.unwrap_or_else(|| hex::encode(hashing.sha.finalize()));
    let libraries = reduce(found);

    let mut minimums = Minimums::default();
    for p in &opts.shlibs {
        minimums.read(p)?;
    }
    let mut sonames: BTreeMap<String, SonameRule> = BTreeMap::new();
    for (soname, package) in &libraries {
        sonames.insert(
            soname.clone(),
            SonameRule {
                package: package.clone(),
                min_version: minimums.for_soname(soname, package),
                version_prefix: None,
            },
        );
    }
    let (format, interpreters) = match &base {
        Some(b) => {
            for (s, rule) in &b.sonames {
                sonames.insert(s.clone(), rule.clone());
            }
            (b.format, b.interpreters.clone())
        }
        None => (Format::Deb, BTreeMap::new()),
    };
    Ok(render(
        opts,
        &summary,
        format,
        &sha256,
        libraries.len(),
        &interpreters,
        &sonames,
    ))
}

/// `args` (program name first) as one shell-quoted line for the header, the program
/// named `korgpkg`.
pub fn command_line(args: impl Iterator<Item = String>) -> String {
    std::iter::once("korgpkg".to_string())
        .chain(args.skip(1).map(|a| {
            let a = a.replace('\n', " ");
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Write `text` to `out` through a temporary file and a rename.
pub fn write(out: &Path, text: &str) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".korgpkg-")
        .suffix(".part")
        .tempfile_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .ctx(|| format!("writing {}", out.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .ctx(|| format!("writing {}", out.display()))?;
    }
    tmp.persist(out)
        .map_err(|e| e.error)
        .ctx(|| format!("renaming the finished map to {}", out.display()))?;
    Ok(())
}

struct HashingRead<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for HashingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// The raw bytes of the Contents file (a local file is streamed; a download is held,
/// bounded by [`MAX_CONTENTS_DOWNLOAD`]).
fn open_contents(source: &str) -> Result<(Box<dyn Read>, Option<String>)> {
    let is_url = ["http://", "https://", "file://"]
        .iter()
        .any(|p| source.starts_with(p));
    if is_url {
        let fetcher = Fetcher::new(
            Cache::new(Cache::default_dir()),
            FetchOptions {
                max_small: MAX_CONTENTS_DOWNLOAD,
                ..FetchOptions::default()
            },
        )?;
        let bytes = fetcher.fetch_small(source)?;
        let sha = hex::encode(Sha256::digest(&bytes));
        Ok((Box::new(std::io::Cursor::new(bytes)), Some(sha)))
    } else {
        let f = std::fs::File::open(source).ctx(|| format!("opening {source}"))?;
        Ok((Box::new(f), None))
    }
}

/// A line reader of the uncompressed index (gzip and xz by magic, else plain text).
fn decompressed<'r>(origin: &str, raw: &'r mut dyn Read) -> Result<Box<dyn BufRead + 'r>> {
    let mut reader = BufReader::with_capacity(256 * 1024, raw);
    let head = reader.fill_buf().ctx(|| format!("reading {origin}"))?;
    Ok(if head.starts_with(&[0x1F, 0x8B]) {
        Box::new(BufReader::new(MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(BufReader::new(xz2::read::XzDecoder::new_multi_decoder(
            reader,
        )))
    } else {
        Box::new(reader)
    })
}

/// A Debian package name: `[a-z0-9][a-z0-9+.-]+`.
fn valid_package(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+.-".contains(c))
}

/// A library file name `lib<name>.so.<N>[.<N>...]`; returns the part after `.so.`.
fn library_version(name: &str) -> Option<&str> {
    if !name.starts_with("lib")
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    {
        return None;
    }
    let (_, version) = name.split_once(".so.")?;
    let ok = !version.is_empty()
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(version)
}

/// Library file name → first package listed for it, for files directly below
/// `lib/<triplet>/` or `usr/lib/<triplet>/`. Lines are `PATH<space>SECTION/PACKAGE[,...]`
/// (paths may contain spaces, the location is the last column).
fn read_contents(
    origin: &str,
    mut reader: Box<dyn BufRead + '_>,
    triplets: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut line = Vec::new();
    let mut lines = 0u64;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .ctx(|| format!("reading {origin}"))?;
        if n == 0 {
            break;
        }
        lines += 1;
        if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut rest)
                    .ctx(|| format!("reading {origin}"))?;
                if m == 0 || rest.ends_with(b"\n") {
                    break;
                }
            }
            continue;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        let text = text.trim_end();
        let Some((path, location)) = text.rsplit_once(|c: char| c.is_ascii_whitespace()) else {
            continue;
        };
        let path = path.trim_end();
        let rest = path.strip_prefix("usr/").unwrap_or(path);
        let Some(rest) = rest.strip_prefix("lib/") else {
            continue;
        };
        let Some((triplet, name)) = rest.split_once('/') else {
            continue;
        };
        if name.contains('/')
            || !triplets.iter().any(|t| t == triplet)
            || library_version(name).is_none()
        {
            continue;
        }
        let Some(package) = location
            .split(',')
            .next()
            .and_then(|l| l.rsplit('/').next())
        else {
            continue;
        };
        if !valid_package(package) {
            return Err(Error::input(
                origin,
                format!("line {lines}: {package:?} is not a package name"),
            ));
        }
        found
            .entry(name.to_string())
            .or_insert_with(|| package.to_string());
    }
    if lines == 0 {
        return Err(Error::input(origin, "empty Contents index"));
    }
    Ok(found)
}

/// Leave out names with three or more version numbers (`libxml2.so.2.9.14`) when a
/// shorter name of the same library (`libxml2.so.2`) is in the same package: that is
/// the real file a soname symlink points at, never a soname itself.
fn reduce(found: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, package) in &found {
        let Some((stem, version)) = name.split_once(".so.") else {
            continue;
        };
        let parts: Vec<&str> = version.split('.').collect();
        let shorter_in_same_package = parts.len() >= 3
            && (1..parts.len()).any(|k| {
                found.get(&format!("{stem}.so.{}", parts[..k].join("."))) == Some(package)
            });
        if !shorter_in_same_package {
            out.insert(name.clone(), package.clone());
        }
    }
    out
}

/// Minimum versions per (soname, package) from dpkg's symbols and shlibs files.
#[derive(Debug, Default)]
struct Minimums {
    /// From `*.symbols`: the highest version any symbol of the soname has.
    symbols: BTreeMap<(String, String), String>,
    /// From `*.shlibs`: the `(>= version)` of the dependency template.
    shlibs: BTreeMap<(String, String), String>,
}

impl Minimums {
    fn for_soname(&self, soname: &str, package: &str) -> Option<String> {
        let key = (soname.to_string(), package.to_string());
        self.symbols
            .get(&key)
            .or_else(|| self.shlibs.get(&key))
            .cloned()
    }

    /// Read `path`: a directory (its `*.symbols` and `*.shlibs`, not recursive) or one
    /// such file.
    fn read(&mut self, path: &Path) -> Result<()> {
        let mut files = Vec::new();
        if path.is_dir() {
            for e in std::fs::read_dir(path).ctx(|| format!("reading {}", path.display()))? {
                let p = e.ctx(|| format!("reading {}", path.display()))?.path();
                files.push(p);
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_symbols = name.ends_with(".symbols") || name == "symbols";
            let is_shlibs = name.ends_with(".shlibs") || name == "shlibs";
            if !is_symbols && !is_shlibs {
                continue;
            }
            let len = std::fs::metadata(&f)
                .ctx(|| format!("reading {}", f.display()))?
                .len();
            if len > MAX_CONTROL_FILE {
                return Err(Error::input(&f, "larger than 64 MiB"));
            }
            let bytes = std::fs::read(&f).ctx(|| format!("reading {}", f.display()))?;
            let text = String::from_utf8_lossy(&bytes);
            if is_symbols {
                self.read_symbols(&text);
            } else {
                self.read_shlibs(&text);
            }
        }
        Ok(())
    }

    /// `deb-symbols(5)`: `<soname> <package> #MINVER#` headers, then ` <symbol>
    /// <version> [<id>]` lines (a symbol may be a quoted `(c++)"..."` with spaces).
    fn read_symbols(&mut self, text: &str) {
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                let Some(key) = &current else { continue };
                let Some(version) = symbol_version(line.trim_start()) else {
                    continue;
                };
                let e = self.symbols.entry(key.clone()).or_default();
                if e.is_empty() || compare_versions(version, e) == std::cmp::Ordering::Greater {
                    *e = version.to_string();
                }
            } else if line.starts_with('|') || line.starts_with('*') || line.starts_with('#') {
                continue;
            } else {
                let mut words = line.split_whitespace();
                current = match (words.next(), words.next()) {
                    (Some(soname), Some(package)) if valid_package(package) => {
                        Some((soname.to_string(), package.to_string()))
                    }
                    _ => None,
                };
            }
        }
    }

    /// `deb-shlibs(5)`: `[type:] <library> <soversion> <dependencies>`; the soname is
    /// `<library>.so.<soversion>` (or `<library>-<soversion>.so`).
    fn read_shlibs(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words: Vec<&str> = line.split_whitespace().collect();
            if words.first().is_some_and(|w| w.ends_with(':')) {
                if words[0] != "deb:" {
                    continue; // udeb: and other package types
                }
                words.remove(0);
            }
            let [first, soversion, deps @ ..] = words.as_slice() else {
                continue;
            };
            let deps = deps.join(" ");
            let Some(first_dep) = deps.split(',').next() else {
                continue;
            };
            let Ok(rel) = Relation::parse_deb(first_dep.trim()) else {
                continue;
            };
            let Some(atom) = rel.alternatives.first() else {
                continue;
            };
            let (Some(Op::Ge), Some(version)) = (&atom.op, &atom.version) else {
                continue;
            };
            let soname = if first.ends_with(|c: char| c.is_ascii_digit()) {
                format!("{first}-{soversion}.so")
            } else {
                format!("{first}.so.{soversion}")
            };
            self.shlibs
                .insert((soname.clone(), atom.name.clone()), version.clone());
            // Library names ending in a digit use `.so.N` in practice too.
            self.shlibs.insert(
                (format!("{first}.so.{soversion}"), atom.name.clone()),
                version.clone(),
            );
        }
    }
}

/// The version field of one symbols-file symbol line.
fn symbol_version(line: &str) -> Option<&str> {
    let rest = if let Some(after_tag) = line.strip_prefix('(') {
        let (_, after) = after_tag.split_once(')')?;
        if let Some(quoted) = after.strip_prefix('"') {
            quoted.split_once('"')?.1
        } else {
            after.split_once(char::is_whitespace)?.1
        }
    } else if let Some(quoted) = line.strip_prefix('"') {
        quoted.split_once('"')?.1
    } else {
        line.split_once(char::is_whitespace)?.1
    };
    let version = rest.split_whitespace().next()?;
    let ok = version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b));
    ok.then_some(version)
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn render(
    opts: &GenerateOptions,
    summary: &str,
    format: Format,
    sha256: &str,
    from_contents: usize,
    interpreters: &BTreeMap<String, String>,
    sonames: &BTreeMap<String, SonameRule>,
) -> String {
    let mut out = String::new();
    out.push_str("# Generated by `korgpkg distro-map generate`; do not edit, regenerate:\n");
    out.push_str(&format!("#   {}\n", opts.command));
    out.push_str(&format!(
        "# Sonames: every lib*.so.N file below {} of {} (sha256 {sha256}), {from_contents} names;\n",
        opts.triplets
            .iter()
            .map(|t| format!("lib/{t}/ and usr/lib/{t}/"))
            .collect::<Vec<_>>()
            .join(", "),
        opts.contents,
    ));
    out.push_str("# the fully versioned file behind a soname symlink is left out.\n");
    out.push_str(
        "# Minimum versions: the base map's rules win; else the highest version in the library's\n\
         # dpkg symbols file, else its shlibs (>= version); else none.\n",
    );
    if let Some(b) = &opts.base {
        out.push_str(&format!("# Base map: {}\n", b.display()));
    }
    out.push_str(&format!("summary = {}\n", quoted(summary)));
    out.push_str(&format!(
        "format = {}\n\n[interpreters]\n",
        quoted(format.as_str())
    ));
    for (path, package) in interpreters {
        out.push_str(&format!("{} = {}\n", quoted(path), quoted(package)));
    }
    out.push_str("\n[sonames]\n");
    for (soname, rule) in sonames {
        if rule.min_version.is_none() && rule.version_prefix.is_none() {
            out.push_str(&format!("{} = {}\n", quoted(soname), quoted(&rule.package)));
            continue;
        }
        let mut fields = vec![format!("package = {}", quoted(&rule.package))];
        if let Some(v) = &rule.min_version {
            fields.push(format!("min_version = {}", quoted(v)));
        }
        if let Some(p) = &rule.version_prefix {
            fields.push(format!("version_prefix = {}", quoted(p)));
        }
        out.push_str(&format!(
            "{} = {{ {} }}\n",
            quoted(soname),
            fields.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENTS: &str = "\
bin/abpoa                                               science/abpoa
lib/x86_64-linux-gnu/libbz2.so.1                        libs/libbz2-1.0
lib/x86_64-linux-gnu/libbz2.so.1.0                      libs/libbz2-1.0
lib/x86_64-linux-gnu/libbz2.so.1.0.4                    libs/libbz2-1.0
usr/lib/x86_64-linux-gnu/libxml2.so                     libdevel/libxml2-dev
usr/lib/x86_64-linux-gnu/libxml2.so.2                   libs/libxml2
usr/lib/x86_64-linux-gnu/libxml2.so.2.9.14              libs/libxml2
usr/lib/x86_64-linux-gnu/libQt5Gui.so.5                 libs/libqt5gui5,libs/libqt5gui5-gles
usr/lib/x86_64-linux-gnu/libz3.so.4\t\t\t    universe/libs/libz3-4
usr/lib/x86_64-linux-gnu/sub dir/libx.so.1              libs/libx1
usr/lib/aarch64-linux-gnu/libfoo.so.1                   libs/libfoo1
usr/lib/i386-linux-gnu/libfoo.so.1                      libs/libfoo1
";

    #[test]
    fn contents_give_sonames_and_packages() {
        let found = read_contents(
            "Contents",
            Box::new(CONTENTS.as_bytes()),
            &["x86_64-linux-gnu".to_string()],
        )
        .expect("parses");
        let reduced = reduce(found);
        let names: Vec<(&str, &str)> = reduced
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("libQt5Gui.so.5", "libqt5gui5"),
                ("libbz2.so.1", "libbz2-1.0"),
                ("libbz2.so.1.0", "libbz2-1.0"),
                ("libxml2.so.2", "libxml2"),
                ("libz3.so.4", "libz3-4"),
            ]
        );
        let bad = "usr/lib/x86_64-linux-gnu/libx.so.1 libs/Bad_Name\n";
        let e = read_contents(
            "Contents",
            Box::new(bad.as_bytes()),
            &["x86_64-linux-gnu".to_string()],
        )
        .expect_err("bad package name")
        .to_string();
        assert!(e.contains("Contents") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn symbols_and_shlibs_give_minimums() {
        let mut m = Minimums::default();
        m.read_symbols(
            "libxml2.so.2 libxml2 #MINVER#\n\
             * Build-Depends-Package: libxml2-dev\n \
             LIBXML2_2.4.30@LIBXML2_2.4.30 2.7.4\n \
             xmlAddChild@LIBXML2_2.4.30 2.9.14\n \
             (c++)\"foo(int, int)@Base\" 2.9.10 1\n \
             (optional)bar@Base 2.9.1\n",
        );
        m.read_shlibs("libbz2 1.0 libbz2-1.0\nlibffi 8 libffi8 (>= 3.4)\nudeb: libffi 8 libffi8-udeb (>= 3.4)\n");
        assert_eq!(
            m.for_soname("libxml2.so.2", "libxml2").as_deref(),
            Some("2.9.14")
        );
        assert_eq!(
            m.for_soname("libffi.so.8", "libffi8").as_deref(),
            Some("3.4")
        );
        assert_eq!(m.for_soname("libbz2.so.1.0", "libbz2-1.0"), None);
        assert_eq!(m.for_soname("libxml2.so.2", "other"), None);
        assert_eq!(symbol_version("(c++)\"a b@Base\" 1.2 1"), Some("1.2"));
        assert_eq!(symbol_version("x@Base #MINVER#"), None);
    }

    #[test]
    fn generates_a_valid_deterministic_map_with_the_base_winning() {
        let tmp = tempfile::tempdir().expect("tmp");
        let contents = tmp.path().join("Contents-amd64");
        std::fs::write(&contents, CONTENTS).expect("write");
        let base = tmp.path().join("base.toml");
        std::fs::write(
            &base,
            "summary = \"Test 1\"\nformat = \"deb\"\n[interpreters]\n\
             \"/lib64/ld-linux-x86-64.so.2\" = \"libc6\"\n[sonames]\n\
             \"libxml2.so.2\" = { package = \"libxml2\", min_version = \"2.9.11\" }\n",
        )
        .expect("write");
        let opts = GenerateOptions {
            contents: contents.display().to_string(),
            triplets: vec!["x86_64-linux-gnu".into()],
            shlibs: vec![],
            base: Some(base),
            summary: None,
            command: "korgpkg distro-map generate ...".into(),
        };
        let text = generate(&opts).expect("generates");
        assert_eq!(text, generate(&opts).expect("again"), "deterministic");
        let map = DistroMap::parse(Path::new("test-1.toml"), &text).expect("valid map");
        assert_eq!(map.summary, "Test 1");
        assert_eq!(
            map.sonames["libxml2.so.2"].min_version.as_deref(),
            Some("2.9.11")
        );
        assert_eq!(map.sonames["libz3.so.4"].package, "libz3-4");
        assert_eq!(map.interpreters["/lib64/ld-linux-x86-64.so.2"], "libc6");
        assert!(text.starts_with("# Generated by `korgpkg distro-map generate`"));
        let expected_sha = hex::encode(Sha256::digest(CONTENTS.as_bytes()));
        assert!(text.contains(&expected_sha), "{text}");
    }
}
