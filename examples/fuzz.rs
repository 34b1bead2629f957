//! A structure-aware fuzzer for korgpkg's hostile-input promises, on stable Rust.
//!
//! It makes seed packages and tarballs with korgpkg itself (every format and
//! compression), mutates them deterministically by seed (ar members and their sizes,
//! control fields, tar header fields, GNU long names, PAX records, link targets, rpm
//! header index counts/offsets/sizes/types, compressed streams, the compression of a
//! tarball) and runs the real binary on each case: `korgpkg inspect`, `korgpkg publish`
//! into a scratch repository and `korgpkg build --from ... --allow-unverified`. Every
//! run has an address-space limit (setrlimit, like `ulimit -v`) and a timeout; the
//! harness counts panics (exit 101 or "panicked"), aborts (killed by a signal), hangs
//! (timeouts), the peak RSS of each run (wait4), runs over the RSS budget, and leftovers
//! (anything left in `--out` after a failed build, temp files or changes in the
//! repository after a failed publish).
//!
//!     cargo run --release --example fuzz -- --korgpkg target/release/korgpkg \
//!         --seed 1 --inspect 20000 --publish 2000 --build 5000
//!
//! Exit status 0 when nothing was found, 1 otherwise; `--keep DIR` keeps every finding's
//! input. `tests/fuzz.rs` runs a short deterministic campaign in the test suite;
//! docs/fuzzing.md has the long run's figures.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The korgpkg binary under test.
    pub korgpkg: PathBuf,
    /// Everything is derived from it: the same seed gives the same cases.
    pub seed: u64,
    /// Cases per target.
    pub inspect: usize,
    pub publish: usize,
    pub build: usize,
    /// Per run.
    pub timeout: Duration,
    /// Address-space limit of each run, bytes.
    pub mem_limit: u64,
    /// Peak RSS above this is a finding, KiB.
    pub rss_budget_kib: u64,
    /// Parallel runs.
    pub jobs: usize,
    /// Scratch directory (created; removed by the caller).
    pub work: PathBuf,
    /// Where to copy each finding's input.
    pub keep: Option<PathBuf>,
    /// Print a line per finding as it happens.
    pub verbose: bool,
    /// Which inputs are mutated (see [`Family`]).
    pub families: Vec<Family>,
    /// Size of the decompression bombs, MiB.
    pub bomb_mib: usize,
    /// A case is a bomb (unmutated) one time in this many, when bombs are enabled.
    pub bomb_one_in: usize,
}

/// A kind of input the campaign mutates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// .deb packages (ar; gzip, xz, zstd members).
    Deb,
    /// .rpm packages (lead, signature and main headers, gzip or zstd payload).
    Rpm,
    /// .ipk packages (ar and gzip'd tar outer containers).
    Ipk,
    /// Tarballs for `build --from` (plain, gzip, xz, zstd).
    Tarball,
    /// Small files that decompress into a huge GNU long name or PAX record (a .deb, an
    /// .ipk control member and tarballs), run unmutated now and then.
    Bomb,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Deb,
        Family::Rpm,
        Family::Ipk,
        Family::Tarball,
        Family::Bomb,
    ];

    /// `deb,rpm,ipk,tarball,bomb` or `all`.
    pub fn parse_list(s: &str) -> Result<Vec<Family>, String> {
        if s.trim() == "all" {
            return Ok(Family::ALL.to_vec());
        }
        s.split(',')
            .map(|f| match f.trim() {
                "deb" => Ok(Family::Deb),
                "rpm" => Ok(Family::Rpm),
                "ipk" => Ok(Family::Ipk),
                "tarball" => Ok(Family::Tarball),
                "bomb" => Ok(Family::Bomb),
                other => Err(format!(
                    "unknown family {other:?} (deb, rpm, ipk, tarball, bomb, all)"
                )),
            })
            .collect()
    }

    fn of_package(name: &str) -> Family {
        if name.ends_with(".rpm") {
            Family::Rpm
        } else if name.ends_with(".ipk") {
            Family::Ipk
        } else {
            Family::Deb
        }
    }
}

/// What a campaign found.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub cases: usize,
    pub panics: usize,
    pub aborts: usize,
    pub hangs: usize,
    pub over_rss: usize,
    pub leftovers: usize,
    /// Largest peak RSS of any run, KiB.
    pub max_rss_kib: u64,
    /// Exit codes seen (0 accepted, 1..6 refused as documented), by code.
    pub exits: BTreeMap<i32, usize>,
    /// One line per finding, by case number.
    pub findings: BTreeMap<usize, String>,
    /// Runs that ended with an exit code other than 0 (accepted) or 4 (bad input) but
    /// broke no promise: worth a look (a hostile input reported as an I/O error, say).
    pub notes: BTreeMap<usize, String>,
    pub elapsed: Duration,
}

impl Summary {
    /// Whether any promise was broken.
    pub fn clean(&self) -> bool {
        self.panics + self.aborts + self.hangs + self.over_rss + self.leftovers == 0
    }

    /// The report, several lines.
    pub fn report(&self) -> String {
        let mut s = format!(
            "{} cases in {:.1} s: {} panics, {} aborts, {} hangs, {} over the RSS budget, \
             {} leftovers; peak RSS {} KiB; exit codes {:?}\n",
            self.cases,
            self.elapsed.as_secs_f64(),
            self.panics,
            self.aborts,
            self.hangs,
            self.over_rss,
            self.leftovers,
            self.max_rss_kib,
            self.exits
        );
        for (case, f) in &self.findings {
            s.push_str(&format!("  case {case}: {f}\n"));
        }
        for (case, n) in &self.notes {
            s.push_str(&format!("  note, case {case}: {n}\n"));
        }
        s
    }
}

/// A small deterministic PRNG (xorshift64*), seeded per case.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, case: u64) -> Rng {
        // splitmix64 of the pair, so neighbouring cases are unrelated.
        let mut z = seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---- compression -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comp {
    None,
    Gz,
    Xz,
    Zst,
}

fn detect(b: &[u8]) -> Comp {
    if b.starts_with(&[0x1f, 0x8b]) {
        Comp::Gz
    } else if b.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        Comp::Xz
    } else if b.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Comp::Zst
    } else {
        Comp::None
    }
}

/// Decompress at most 64 MiB (seeds are small; a mutated stream may claim more).
fn decompress(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let limit = 64 << 20;
    let ok = match detect(b) {
        Comp::None => return Some(b.to_vec()),
        Comp::Gz => flate2::read::GzDecoder::new(b)
            .take(limit)
            .read_to_end(&mut out)
            .is_ok(),
        Comp::Xz => xz2::read::XzDecoder::new(b)
            .take(limit)
            .read_to_end(&mut out)
            .is_ok(),
        Comp::Zst => zstd::stream::read::Decoder::new(b)
            .ok()?
            .take(limit)
            .read_to_end(&mut out)
            .is_ok(),
    };
    ok.then_some(out)
}

fn compress(c: Comp, b: &[u8]) -> Vec<u8> {
    match c {
        Comp::None => b.to_vec(),
        Comp::Gz => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = e.write_all(b);
            e.finish().unwrap_or_default()
        }
        Comp::Xz => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 0);
            let _ = e.write_all(b);
            e.finish().unwrap_or_default()
        }
        Comp::Zst => zstd::encode_all(b, 1).unwrap_or_default(),
    }
}

// ---- byte-level mutation ----------------------------------------------------------------

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    u64::MAX / 2,
    u64::MAX,
];

/// One generic mutation of `b`.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(rng.next_u64() as u8);
        return;
    }
    let at = rng.below(b.len());
    match rng.below(7) {
        0 => b[at] ^= 1 << rng.below(8),
        1 => b[at] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'/', b'.', b'\n']),
        2 => b.truncate(at),
        3 => {
            let n = rng.below(64).min(b.len() - at);
            b.drain(at..at + n);
        }
        4 => {
            let n = rng.below(32) + 1;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(at..at, bytes);
        }
        5 => {
            let n = rng.below(512).min(b.len() - at);
            let copy = b[at..at + n].to_vec();
            let to = rng.below(b.len());
            b.splice(to..to, copy);
        }
        _ => {
            let v = rng.pick(&INTERESTING).to_be_bytes();
            let n = (b.len() - at).min(*rng.pick(&[1usize, 2, 4, 8]));
            b[at..at + n].copy_from_slice(&v[8 - n..]);
        }
    }
}

// ---- tar ------------------------------------------------------------------------------

/// Offsets of the 512-byte headers of a tar stream (following sizes; stops at garbage).
fn tar_headers(t: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= t.len() {
        let h = &t[pos..pos + 512];
        if h.iter().all(|&c| c == 0) {
            break;
        }
        out.push(pos);
        let size = std::str::from_utf8(&h[124..136])
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_matches(|c| c == '\0' || c == ' '), 8).ok())
            .unwrap_or(0);
        pos += 512 + (size as usize).div_ceil(512) * 512;
    }
    out
}

fn set_field(h: &mut [u8], off: usize, len: usize, value: &[u8]) {
    let n = value.len().min(len);
    h[off..off + len].fill(0);
    h[off..off + n].copy_from_slice(&value[..n]);
}

fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// A raw tar member (header + padded data).
fn tar_member(name: &[u8], kind: u8, link: &[u8], size_field: &str, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    set_field(&mut h, 0, 100, name);
    set_field(&mut h, 100, 8, b"0000644\0");
    set_field(&mut h, 108, 8, b"0000000\0");
    set_field(&mut h, 116, 8, b"0000000\0");
    set_field(&mut h, 124, 12, size_field.as_bytes());
    set_field(&mut h, 136, 12, b"14533444400\0");
    h[156] = kind;
    set_field(&mut h, 157, 100, link);
    set_field(&mut h, 257, 8, b"ustar  \0");
    fix_checksum(&mut h);
    h.extend_from_slice(data);
    h.resize(512 + data.len().div_ceil(512) * 512, 0);
    h
}

const HOSTILE_NAMES: [&str; 10] = [
    "../../../../tmp/korgpkg-fuzz-escape",
    "/etc/passwd",
    "./",
    "",
    "a/../../b",
    "dir/\u{1b}[31mred\n",
    "llvm-18.1.8-x86_64/bin/../../x",
    "llvm-18.1.8-x86_64/bin/a/b/c/d/e/f/g",
    "llvm-18.1.8-x86_64/bin/clang",
    "llvm-18.1.8-x86_64",
];

/// One structure-aware mutation of an uncompressed tar stream.
fn mutate_tar(rng: &mut Rng, t: &mut Vec<u8>) {
    let heads = tar_headers(t);
    if heads.is_empty() || rng.chance(12) {
        mutate_bytes(rng, t);
        return;
    }
    let at = *rng.pick(&heads);
    let top = "llvm-18.1.8-x86_64/";
    match rng.below(12) {
        // The size field: huge, zero, off by one block, not octal, base-256.
        0 => {
            let v = *rng.pick(&[
                "77777777777\0",
                "00000000000\0",
                "00000001000\0",
                "99999999999\0",
                "           \0",
                "00000000001\0",
            ]);
            set_field(&mut t[at..], 124, 12, v.as_bytes());
            if rng.chance(3) {
                t[at + 124] = 0x80;
                t[at + 131] = 0x7f;
            }
            fix_checksum(&mut t[at..]);
        }
        // The type flag.
        1 => {
            t[at + 156] = *rng.pick(b"0123456789LKxgSDMNV\0A");
            fix_checksum(&mut t[at..]);
        }
        // The name.
        2 => {
            let n = rng.pick(&HOSTILE_NAMES).to_string();
            set_field(&mut t[at..], 0, 100, n.as_bytes());
            fix_checksum(&mut t[at..]);
        }
        // The link target (and make it a symlink or hard link).
        3 => {
            let target = *rng.pick(&[
                "../../../../etc/passwd",
                "/etc/shadow",
                "up/../../../../etc",
                "..",
                "bin/../../../..",
                "",
                "self",
            ]);
            set_field(&mut t[at..], 157, 100, target.as_bytes());
            t[at + 156] = *rng.pick(b"12");
            fix_checksum(&mut t[at..]);
        }
        // Mode bits: setuid, device bits, all ones.
        4 => {
            let m = *rng.pick(&["0004755\0", "0002755\0", "7777777\0", "0000000\0"]);
            set_field(&mut t[at..], 100, 8, m.as_bytes());
            fix_checksum(&mut t[at..]);
        }
        // A GNU long name (or link) record, with a declared size that may be huge.
        5 => {
            let kind = *rng.pick(b"LK");
            let len = *rng.pick(&[200usize, 5000, 70_000]);
            let name: Vec<u8> = format!("{top}{}", "n/".repeat(len / 2)).into_bytes();
            let size = if rng.chance(2) {
                format!("{:011o}\0", name.len())
            } else {
                format!("{:011o}\0", 3u64 << 30)
            };
            let m = tar_member(b"././@LongLink", kind, b"", &size, &name);
            t.splice(at..at, m);
        }
        // A PAX header: long path, linkpath, size, sparse keys, bogus lengths.
        6 => {
            let rec = match rng.below(6) {
                0 => format!(
                    "{} path={top}{}\n",
                    6 + top.len() + 3000 + 1,
                    "p".repeat(3000)
                ),
                1 => "30 linkpath=../../../../etc\n".to_string(),
                2 => "20 size=99999999999\n".to_string(),
                3 => "27 GNU.sparse.major=1\n25 GNU.sparse.minor=0\n".to_string(),
                4 => "99999999999 path=x\n".to_string(),
                _ => "5 a=\n".to_string(),
            };
            let size = if rng.chance(3) {
                format!("{:011o}\0", 3u64 << 30)
            } else {
                format!("{:011o}\0", rec.len())
            };
            let m = tar_member(
                b"./PaxHeaders/x",
                *rng.pick(b"xg"),
                b"",
                &size,
                rec.as_bytes(),
            );
            t.splice(at..at, m);
        }
        // A new hostile entry.
        7 => {
            let name = format!("{top}{}", rng.pick(&["a", "bin/x", "lib/y", "dev"]));
            let kind = *rng.pick(b"03456S7");
            let m = tar_member(name.as_bytes(), kind, b"", "00000000004\0", b"data");
            t.splice(at..at, m);
        }
        // Duplicate a member (repeated paths).
        8 => {
            let next = heads.iter().find(|&&h| h > at).copied().unwrap_or(t.len());
            let copy = t[at..next].to_vec();
            t.splice(at..at, copy);
        }
        // Drop the end-of-archive blocks, or cut inside a member.
        9 => {
            let cut = at + rng.below(t.len() - at);
            t.truncate(cut);
        }
        // Garbage in the header without a matching checksum.
        10 => {
            let off = at + rng.below(512);
            t[off] ^= 0xff;
        }
        // Magic: plain v7, ustar with prefix.
        _ => {
            const MAGICS: [&[u8]; 2] = [b"ustar\x0000", b"\0\0\0\0\0\0\0\0"];
            let magic: &[u8] = MAGICS[rng.below(MAGICS.len())];
            set_field(&mut t[at..], 257, 8, magic);
            set_field(&mut t[at..], 345, 155, b"llvm-18.1.8-x86_64/../..");
            fix_checksum(&mut t[at..]);
        }
    }
}

/// Mutate a possibly compressed tar: decompress, mutate the tar, recompress (the same
/// or another compression), or mutate the compressed bytes themselves.
fn mutate_compressed_tar(rng: &mut Rng, b: &mut Vec<u8>) {
    let comp = detect(b);
    if rng.chance(5) {
        mutate_bytes(rng, b);
        return;
    }
    let Some(mut t) = decompress(b) else {
        mutate_bytes(rng, b);
        return;
    };
    for _ in 0..=rng.below(2) {
        mutate_tar(rng, &mut t);
    }
    let to = if rng.chance(6) {
        *rng.pick(&[Comp::None, Comp::Gz, Comp::Xz, Comp::Zst])
    } else {
        comp
    };
    *b = compress(to, &t);
}

// ---- control files ------------------------------------------------------------------------

const CONTROL_EDITS: [(&str, &str); 12] = [
    ("Version", "1/../../../../../../victim"),
    ("Package", "../../etc"),
    ("Architecture", "amd64/../../x"),
    ("Version", ""),
    ("Package", "a\n\nPackage: injected"),
    ("Filename", "../../../etc/passwd"),
    ("SHA256", "00"),
    ("Size", "99999999999999999999"),
    ("Installed-Size", "-1"),
    ("Depends", "a (>> ), , |"),
    ("Description", "\u{1b}]0;title\u{7}"),
    ("Version", "99999999999999999999999:1"),
];

fn mutate_control(rng: &mut Rng, text: &mut String) {
    let (field, value) = *rng.pick(&CONTROL_EDITS);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match lines
        .iter()
        .position(|l| l.starts_with(&format!("{field}:")))
    {
        Some(i) if rng.chance(2) => lines[i] = format!("{field}: {value}"),
        _ => lines.push(format!("{field}: {value}")),
    }
    if rng.chance(8) {
        lines.push(format!("X-Big: {}", "x".repeat(1 << 16)));
    }
    *text = lines.join("\n") + "\n";
}

/// Rewrite the `control` member inside a (compressed) control tar.
fn mutate_control_tar(rng: &mut Rng, b: &mut Vec<u8>) {
    let comp = detect(b);
    let Some(t) = decompress(b) else { return };
    let mut a = tar::Archive::new(&t[..]);
    let mut out = tar::Builder::new(Vec::new());
    let Ok(entries) = a.entries() else { return };
    for e in entries {
        let Ok(mut e) = e else { return };
        let mut data = Vec::new();
        if e.read_to_end(&mut data).is_err() {
            return;
        }
        let mut h = e.header().clone();
        let name = e
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if name.trim_start_matches("./") == "control" {
            let mut text = String::from_utf8_lossy(&data).into_owned();
            mutate_control(rng, &mut text);
            data = text.into_bytes();
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        if out.append(&h, &data[..]).is_err() {
            return;
        }
    }
    if let Ok(t) = out.into_inner() {
        *b = compress(comp, &t);
    }
}

// ---- ar (deb, ipk) ----------------------------------------------------------------------------

/// (name, header offset, data offset, size) of each member.
fn ar_members(b: &[u8]) -> Vec<(String, usize, usize, usize)> {
    let mut out = Vec::new();
    if !b.starts_with(b"!<arch>\n") {
        return out;
    }
    let mut pos = 8;
    while pos + 60 <= b.len() {
        let h = &b[pos..pos + 60];
        let name = String::from_utf8_lossy(&h[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let Some(size) = std::str::from_utf8(&h[48..58])
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            break;
        };
        let data = pos + 60;
        if data + size > b.len() {
            break;
        }
        out.push((name, pos, data, size));
        pos = data + size + (size & 1);
    }
    out
}

fn ar_archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                100644,
                data.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn mutate_ar(rng: &mut Rng, b: &mut Vec<u8>) {
    let members = ar_members(b);
    if members.is_empty() || rng.chance(10) {
        mutate_bytes(rng, b);
        return;
    }
    let mut parts: Vec<(String, Vec<u8>)> = members
        .iter()
        .map(|(n, _, d, s)| (n.clone(), b[*d..*d + *s].to_vec()))
        .collect();
    match rng.below(8) {
        // The size field of a member header.
        0 => {
            let (_, h, _, _) = *rng.pick(&members);
            let v = *rng.pick(&[
                "9999999999",
                "0         ",
                "-1        ",
                "abc       ",
                "1         ",
            ]);
            b[h + 48..h + 58].copy_from_slice(v.as_bytes());
            return;
        }
        // Drop, duplicate or swap members.
        1 => {
            let i = rng.below(parts.len());
            parts.remove(i);
        }
        2 => {
            let i = rng.below(parts.len());
            let dup = parts[i].clone();
            parts.insert(rng.below(parts.len() + 1), dup);
        }
        3 => {
            let (i, j) = (rng.below(parts.len()), rng.below(parts.len()));
            parts.swap(i, j);
        }
        // Rename a member (its compression no longer matches its name).
        4 => {
            let i = rng.below(parts.len());
            parts[i].0 = rng
                .pick(&[
                    "data.tar.xz",
                    "data.tar.zst",
                    "control.tar",
                    "data.tar.bz2",
                    "debian-binary",
                    "x",
                ])
                .to_string();
        }
        // The control fields.
        5 => {
            if let Some(p) = parts.iter_mut().find(|p| p.0.starts_with("control.tar")) {
                mutate_control_tar(rng, &mut p.1);
            }
        }
        // The tar inside a member.
        6 => {
            let i = rng.below(parts.len());
            if parts[i].0.contains(".tar") {
                mutate_compressed_tar(rng, &mut parts[i].1);
            } else {
                mutate_bytes(rng, &mut parts[i].1);
            }
        }
        _ => {
            let i = rng.below(parts.len());
            mutate_bytes(rng, &mut parts[i].1);
        }
    }
    *b = ar_archive(&parts);
}

/// An ipk whose outer container is a gzip'd tar: mutate its members like ar members.
fn mutate_tar_ipk(rng: &mut Rng, b: &mut Vec<u8>) {
    let Some(t) = decompress(b) else {
        mutate_bytes(rng, b);
        return;
    };
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut a = tar::Archive::new(&t[..]);
    if let Ok(entries) = a.entries() {
        for e in entries.flatten() {
            let mut e = e;
            let name = e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let mut data = Vec::new();
            let _ = e.read_to_end(&mut data);
            members.push((name, data));
        }
    }
    if members.is_empty() || rng.chance(4) {
        let mut t = t;
        mutate_tar(rng, &mut t);
        *b = compress(Comp::Gz, &t);
        return;
    }
    let i = rng.below(members.len());
    if members[i].0.contains("control") && rng.chance(2) {
        mutate_control_tar(rng, &mut members[i].1);
    } else if members[i].0.contains(".tar") {
        mutate_compressed_tar(rng, &mut members[i].1);
    } else {
        mutate_bytes(rng, &mut members[i].1);
    }
    let mut out = tar::Builder::new(Vec::new());
    for (name, data) in &members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        let _ = out.append_data(&mut h, name, &data[..]);
    }
    *b = compress(Comp::Gz, &out.into_inner().unwrap_or_default());
}

// ---- rpm ------------------------------------------------------------------------------------

/// Offsets of the signature and main header structures (the magic of each).
fn rpm_headers(b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 96;
    for _ in 0..2 {
        if pos + 16 > b.len() || b[pos..pos + 3] != [0x8e, 0xad, 0xe8] {
            break;
        }
        out.push(pos);
        let n = u32::from_be_bytes([b[pos + 8], b[pos + 9], b[pos + 10], b[pos + 11]]) as usize;
        let size =
            u32::from_be_bytes([b[pos + 12], b[pos + 13], b[pos + 14], b[pos + 15]]) as usize;
        pos += 16 + n.saturating_mul(16).saturating_add(size);
        if out.len() == 1 {
            pos = pos.div_ceil(8) * 8;
        }
    }
    out
}

fn put_be32(b: &mut [u8], at: usize, v: u32) {
    if at + 4 <= b.len() {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
}

fn mutate_rpm(rng: &mut Rng, b: &mut Vec<u8>) {
    let heads = rpm_headers(b);
    if heads.is_empty() || rng.chance(10) {
        mutate_bytes(rng, b);
        return;
    }
    let h = *rng.pick(&heads);
    let n = u32::from_be_bytes([b[h + 8], b[h + 9], b[h + 10], b[h + 11]]) as usize;
    let store = h + 16 + n * 16;
    let interesting32 = |rng: &mut Rng| -> u32 {
        *rng.pick(&[
            0,
            1,
            7,
            0x7fff_ffff,
            0xffff_fff0,
            0xffff_ffff,
            0x10_0000,
            0x4000_0000,
        ])
    };
    match rng.below(7) {
        // The index count or the store size.
        0 => {
            let v = interesting32(rng);
            put_be32(b, h + 8, v);
        }
        1 => {
            let v = interesting32(rng);
            put_be32(b, h + 12, v);
        }
        // An index entry: tag, type, offset or count.
        2..=4 if n > 0 => {
            let e = h + 16 + rng.below(n) * 16;
            let field = rng.below(4);
            let v = match field {
                1 => rng.below(12) as u32,
                _ => interesting32(rng),
            };
            put_be32(b, e + field * 4, v);
        }
        // Bytes in the store (strings lose their NUL, numbers change).
        5 if store < b.len() => {
            let at = store + rng.below(b.len() - store).min(4096);
            b[at] = *rng.pick(&[0u8, 0xff, b'/', b'.', 0x80]);
        }
        // The payload (after the headers): compressed bytes.
        _ => {
            if let Some(&main) = heads.get(1) {
                let n = u32::from_be_bytes([b[main + 8], b[main + 9], b[main + 10], b[main + 11]])
                    as usize;
                let size =
                    u32::from_be_bytes([b[main + 12], b[main + 13], b[main + 14], b[main + 15]])
                        as usize;
                let start = main + 16 + n * 16 + size;
                if start < b.len() {
                    let mut payload = b.split_off(start);
                    mutate_bytes(rng, &mut payload);
                    b.extend_from_slice(&payload);
                    return;
                }
            }
            mutate_bytes(rng, b);
        }
    }
}

// ---- seeds ---------------------------------------------------------------------------------

/// A seed file: its name (extension matters) and bytes.
#[derive(Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The tar of a small kernel.org-shaped LLVM release (a real ELF file, a symlink, a
/// hard link, a long name, an empty directory).
fn seed_tar() -> Vec<u8> {
    let top = "llvm-18.1.8-x86_64";
    let elf = std::fs::read("/usr/bin/true").unwrap_or_else(|_| b"\x7fELF".to_vec());
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        match link {
            Some(l) => b.append_link(&mut h, path, l).expect("link"),
            None => b.append_data(&mut h, path, data).expect("entry"),
        }
    };
    add(
        &format!("{top}/"),
        tar::EntryType::Directory,
        0o755,
        b"",
        None,
    );
    add(
        &format!("{top}/bin/"),
        tar::EntryType::Directory,
        0o755,
        b"",
        None,
    );
    add(
        &format!("{top}/bin/clang-18"),
        tar::EntryType::Regular,
        0o755,
        &elf,
        None,
    );
    add(
        &format!("{top}/bin/clang"),
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("clang-18"),
    );
    add(
        &format!("{top}/bin/lld"),
        tar::EntryType::Regular,
        0o755,
        b"#!/bin/sh\n",
        None,
    );
    add(
        &format!("{top}/bin/ld.lld"),
        tar::EntryType::Link,
        0o755,
        b"",
        Some(&format!("{top}/bin/lld")),
    );
    let long = format!("{top}/lib/{}/h.h", "a-long-directory-name".repeat(6));
    add(&long, tar::EntryType::Regular, 0o644, b"/* long */\n", None);
    add(
        &format!("{top}/share/empty/"),
        tar::EntryType::Directory,
        0o755,
        b"",
        None,
    );
    add(
        &format!("{top}/README.md"),
        tar::EntryType::Regular,
        0o644,
        b"LLVM\n",
        None,
    );
    b.into_inner().expect("tar")
}

/// Seed tarballs (every compression) and packages built from them by `korgpkg`.
pub fn seeds(korgpkg: &Path, work: &Path) -> Result<(Vec<Seed>, Vec<Seed>), String> {
    let tar = seed_tar();
    let tarballs: Vec<Seed> = [
        (Comp::Xz, "tar.xz"),
        (Comp::Gz, "tar.gz"),
        (Comp::Zst, "tar.zst"),
        (Comp::None, "tar"),
    ]
    .iter()
    .map(|(c, ext)| Seed {
        name: format!("llvm-18.1.8-x86_64.{ext}"),
        bytes: compress(*c, &tar),
    })
    .collect();
    let dir = work.join("seeds");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let tarball = dir.join(&tarballs[0].name);
    std::fs::write(&tarball, &tarballs[0].bytes).map_err(|e| e.to_string())?;
    let mut packages = Vec::new();
    let variants: [&[&str]; 6] = [
        &["--format", "deb,rpm,ipk"],
        &["--format", "deb", "--deb-compression", "xz"],
        &["--format", "deb", "--deb-compression", "gzip"],
        &["--format", "rpm", "--rpm-compression", "gzip"],
        &["--format", "ipk", "--ipk-outer", "tar"],
        &[
            "--format",
            "deb",
            "--deb-compression",
            "zstd",
            "--revision",
            "2",
        ],
    ];
    for (i, args) in variants.iter().enumerate() {
        let out = dir.join(format!("out{i}"));
        let o = Command::new(korgpkg)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "korg-clang-18", "--from"])
            .arg(&tarball)
            .args(["--allow-unverified", "-q", "--out"])
            .arg(&out)
            .args(*args)
            .output()
            .map_err(|e| format!("running {}: {e}", korgpkg.display()))?;
        if !o.status.success() {
            return Err(format!(
                "seed build failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        for e in std::fs::read_dir(&out)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).map_err(|e| e.to_string())?;
            packages.push(Seed { name, bytes });
        }
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name).then(a.bytes.len().cmp(&b.bytes.len())));
    Ok((tarballs, packages))
}

/// A tar stream whose first member is a GNU long name ('L') or PAX ('x') record of
/// `mib` MiB, zstd-compressed as it is made (the harness never holds it whole).
fn bomb_tar_zst(kind: u8, mib: usize, top: &str) -> Vec<u8> {
    let size = (mib as u64) << 20;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    let name: &[u8] = if kind == b'L' {
        b"././@LongLink"
    } else {
        b"./PaxHeaders/bomb"
    };
    let head = tar_member(name, kind, b"", &format!("{size:011o}\0"), b"");
    let _ = enc.write_all(&head);
    let mut first = Vec::new();
    if kind == b'x' {
        // One record "<len> path=aaaa...\n" filling the whole size.
        first.extend_from_slice(format!("{size} path={top}/").as_bytes());
    } else {
        first.extend_from_slice(format!("{top}/").as_bytes());
    }
    let chunk = vec![b'a'; 1 << 20];
    let mut written = first.len() as u64;
    let _ = enc.write_all(&first);
    while written < size {
        let n = (size - written).min(chunk.len() as u64) as usize;
        let _ = enc.write_all(&chunk[..n]);
        written += n as u64;
    }
    let entry = tar_member(
        format!("{top}/README").as_bytes(),
        b'0',
        b"",
        "00000000004\0",
        b"data",
    );
    let _ = enc.write_all(&entry);
    let _ = enc.write_all(&[0u8; 1024]);
    enc.finish().unwrap_or_default()
}

/// Decompression bombs built from the seeds: tarballs with a huge long name and PAX
/// record, a .deb whose data member holds such a tar, an .ipk whose control member does.
pub fn bombs(packages: &[Seed], mib: usize) -> (Vec<Seed>, Vec<Seed>) {
    let top = "llvm-18.1.8-x86_64";
    let tarballs = vec![
        Seed {
            name: format!("{top}.tar.zst"),
            bytes: bomb_tar_zst(b'L', mib, top),
        },
        Seed {
            name: format!("{top}.tar.zst"),
            bytes: bomb_tar_zst(b'x', mib, top),
        },
    ];
    let mut pkgs = Vec::new();
    let member_bomb = bomb_tar_zst(b'L', mib, ".");
    for (ext, member) in [(".deb", "data.tar"), (".ipk", "control.tar")] {
        let Some(seed) = packages
            .iter()
            .find(|p| p.name.ends_with(ext) && p.bytes.starts_with(b"!<arch>\n"))
        else {
            continue;
        };
        let parts: Vec<(String, Vec<u8>)> = ar_members(&seed.bytes)
            .iter()
            .map(|(n, _, d, sz)| {
                if n.starts_with(member) {
                    (format!("{member}.zst"), member_bomb.clone())
                } else {
                    (n.clone(), seed.bytes[*d..*d + *sz].to_vec())
                }
            })
            .collect();
        pkgs.push(Seed {
            name: seed.name.clone(),
            bytes: ar_archive(&parts),
        });
    }
    (tarballs, pkgs)
}

/// One mutated package: 1–3 structure-aware mutations of a seed chosen by the RNG.
pub fn mutate_package(rng: &mut Rng, seeds: &[Seed]) -> Seed {
    let mut s = rng.pick(seeds).clone();
    for _ in 0..=rng.below(3) {
        if s.name.ends_with(".rpm") {
            mutate_rpm(rng, &mut s.bytes);
        } else if s.bytes.starts_with(b"!<arch>\n") {
            mutate_ar(rng, &mut s.bytes);
        } else if s.name.ends_with(".ipk") {
            mutate_tar_ipk(rng, &mut s.bytes);
        } else {
            mutate_bytes(rng, &mut s.bytes);
        }
    }
    s
}

/// One mutated tarball.
pub fn mutate_tarball(rng: &mut Rng, seeds: &[Seed]) -> Seed {
    let mut s = rng.pick(seeds).clone();
    for _ in 0..=rng.below(3) {
        mutate_compressed_tar(rng, &mut s.bytes);
    }
    s
}

// ---- running -------------------------------------------------------------------------------

/// How one run ended.
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    maxrss_kib: u64,
    stderr: String,
}

/// Run `cmd` with the address-space limit and the timeout; peak RSS from wait4.
fn run_limited(cmd: &mut Command, cfg: &Config, stderr_file: &Path) -> std::io::Result<Outcome> {
    let err = std::fs::File::create(stderr_file)?;
    let limit = cfg.mem_limit;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
    // SAFETY: setrlimit is async-signal-safe and only affects the child.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::setrlimit(libc::RLIMIT_AS, &rl);
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &core);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut timed_out = false;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data, written by wait4.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        // SAFETY: wait4 on our own child with valid out pointers.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if r == pid {
            let mut stderr = String::new();
            let _ = std::fs::File::open(stderr_file)
                .and_then(|f| f.take(64 * 1024).read_to_string(&mut stderr));
            return Ok(Outcome {
                code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
                signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
                timed_out,
                maxrss_kib: ru.ru_maxrss as u64,
                stderr,
            });
        }
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if start.elapsed() > cfg.timeout && !timed_out {
            timed_out = true;
            // SAFETY: kill our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            continue;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every path below `dir` with its size (directories as -1), sorted.
fn snapshot(dir: &Path) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    stack.push(p.clone());
                    out.push((rel, -1));
                }
                _ => out.push((rel, e.metadata().map_or(0, |m| m.len() as i64))),
            }
        }
    }
    out.sort();
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Inspect,
    Publish,
    Build,
}

/// Per-thread scratch: a repository for publish, an output directory for build.
struct Lane {
    dir: PathBuf,
    repo: PathBuf,
    repo_state: Vec<(String, i64)>,
}

fn korgpkg(cfg: &Config) -> Command {
    let mut c = Command::new(&cfg.korgpkg);
    for v in [
        "KORGPKG_CONFIG",
        "KORGPKG_MIRROR",
        "KORGPKG_CACHE_DIR",
        "KORGPKG_KEYS_URL",
    ] {
        c.env_remove(v);
    }
    c.env("XDG_CACHE_HOME", "/nonexistent-korgpkg-fuzz")
        .env("XDG_CONFIG_HOME", "/nonexistent-korgpkg-fuzz")
        .env("KORGPKG_THREADS", "2")
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn new_lane(cfg: &Config, keys: &Path, i: usize) -> Result<Lane, String> {
    let dir = cfg.work.join(format!("lane{i}"));
    let repo = dir.join("repo");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let o = korgpkg(cfg)
        .args(["repo", "init"])
        .arg(&repo)
        .arg("--keys")
        .arg(keys)
        .args(["--arch", "amd64", "--arch", "arm64"])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("repo init: {}", String::from_utf8_lossy(&o.stderr)));
    }
    let repo_state = snapshot(&repo);
    Ok(Lane {
        dir,
        repo,
        repo_state,
    })
}

/// Run one case; `Some(finding)` if a promise was broken.
fn run_case(
    cfg: &Config,
    lane: &mut Lane,
    target: Target,
    case: usize,
    input: &Seed,
    summary: &Mutex<Summary>,
) -> Option<String> {
    let file_dir = lane.dir.join("in");
    let _ = std::fs::remove_dir_all(&file_dir);
    std::fs::create_dir_all(&file_dir).ok()?;
    let file = file_dir.join(&input.name);
    std::fs::write(&file, &input.bytes).ok()?;
    let out = lane.dir.join("out");
    let mut cmd = korgpkg(cfg);
    match target {
        Target::Inspect => {
            cmd.arg("inspect").arg(&file);
        }
        Target::Publish => {
            cmd.args(["publish", "--repo"]).arg(&lane.repo).arg(&file);
        }
        Target::Build => {
            let _ = std::fs::remove_dir_all(&out);
            cmd.args(["build", "korg-clang-18", "--from"])
                .arg(&file)
                .args(["--allow-unverified", "-q", "--out"])
                .arg(&out);
        }
    }
    let o = match run_limited(&mut cmd, cfg, &lane.dir.join("stderr")) {
        Ok(o) => o,
        Err(e) => return Some(format!("{target:?}: cannot run korgpkg: {e}")),
    };
    let mut findings = Vec::new();
    let first_line = o
        .stderr
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    if o.timed_out {
        findings.push(format!("hang (killed after {:?})", cfg.timeout));
    } else if o.code == Some(101) || o.stderr.contains("panicked") {
        let at = o
            .stderr
            .lines()
            .find(|l| l.contains("panicked"))
            .unwrap_or(&first_line);
        findings.push(format!(
            "panic: {}",
            at.chars().take(300).collect::<String>()
        ));
    } else if let Some(sig) = o.signal {
        findings.push(format!("abort: signal {sig}: {first_line}"));
    }
    if o.maxrss_kib > cfg.rss_budget_kib {
        findings.push(format!("peak RSS {} MiB", o.maxrss_kib / 1024));
    }
    let failed = o.code != Some(0);
    match target {
        Target::Build => {
            let left = snapshot(&out);
            if failed && !left.is_empty() {
                findings.push(format!(
                    "left in --out: {:?}",
                    left.iter().take(5).collect::<Vec<_>>()
                ));
            }
            let _ = std::fs::remove_dir_all(&out);
        }
        Target::Publish => {
            let now = snapshot(&lane.repo);
            if failed && !o.timed_out && o.signal.is_none() && now != lane.repo_state {
                let changed: Vec<_> = now
                    .iter()
                    .filter(|e| !lane.repo_state.contains(e))
                    .take(5)
                    .collect();
                findings.push(format!(
                    "repository changed by a failed publish: {changed:?}"
                ));
            }
            lane.repo_state = now;
        }
        Target::Inspect => {}
    }
    let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
    s.cases += 1;
    s.max_rss_kib = s.max_rss_kib.max(o.maxrss_kib);
    if let Some(c) = o.code {
        *s.exits.entry(c).or_default() += 1;
    }
    for f in &findings {
        if f.starts_with("hang") {
            s.hangs += 1;
        } else if f.starts_with("panic") {
            s.panics += 1;
        } else if f.starts_with("abort") {
            s.aborts += 1;
        } else if f.starts_with("peak RSS") {
            s.over_rss += 1;
        } else {
            s.leftovers += 1;
        }
    }
    if findings.is_empty() && !matches!(o.code, Some(0) | Some(4) | None) {
        s.notes.insert(
            case,
            format!("{target:?} {}: exit {:?}: {first_line}", input.name, o.code),
        );
    }
    drop(s);
    if findings.is_empty() {
        return None;
    }
    if let Some(keep) = &cfg.keep {
        let _ = std::fs::create_dir_all(keep);
        let _ = std::fs::write(
            keep.join(format!("case{case}-{}", input.name)),
            &input.bytes,
        );
    }
    Some(format!(
        "{target:?} {}: {}",
        input.name,
        findings.join("; ")
    ))
}

/// Run a campaign.
pub fn run(cfg: &Config) -> Result<Summary, String> {
    let start = Instant::now();
    std::fs::create_dir_all(&cfg.work).map_err(|e| e.to_string())?;
    let (tarballs, mut packages) = seeds(&cfg.korgpkg, &cfg.work)?;
    let want = |f: Family| cfg.families.contains(&f);
    let (bomb_tarballs, bomb_packages) = if want(Family::Bomb) {
        bombs(&packages, cfg.bomb_mib)
    } else {
        (Vec::new(), Vec::new())
    };
    packages.retain(|p| want(Family::of_package(&p.name)));
    let tarballs = if want(Family::Tarball) {
        tarballs
    } else {
        Vec::new()
    };
    let keys = cfg.work.join("keys");
    let o = korgpkg(cfg)
        .args([
            "key",
            "generate",
            "--name",
            "fuzz <fuzz@example.invalid>",
            "--out",
        ])
        .arg(&keys)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "key generate: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // Case numbers: inspect cases first, then publish, then build; each case's input
    // depends only on the seed and its number, whatever thread runs it.
    let inspect = if packages.is_empty() && bomb_packages.is_empty() {
        0
    } else {
        cfg.inspect
    };
    let publish = if packages.is_empty() && bomb_packages.is_empty() {
        0
    } else {
        cfg.publish
    };
    let build = if tarballs.is_empty() && bomb_tarballs.is_empty() {
        0
    } else {
        cfg.build
    };
    let total = inspect + publish + build;
    let target_of = |i: usize| {
        if i < inspect {
            Target::Inspect
        } else if i < inspect + publish {
            Target::Publish
        } else {
            Target::Build
        }
    };
    // `KORGPKG_FUZZ_ONLY=N` replays case N alone (same seed and counts as the campaign).
    let only: Option<usize> = std::env::var("KORGPKG_FUZZ_ONLY")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let next = AtomicUsize::new(0);
    let summary = Mutex::new(Summary::default());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for lane_no in 0..cfg.jobs.max(1) {
            let (next, summary, errors, keys) = (&next, &summary, &errors, &keys);
            let (tarballs, packages) = (&tarballs, &packages);
            let (bomb_tarballs, bomb_packages) = (&bomb_tarballs, &bomb_packages);
            s.spawn(move || {
                let mut lane = match new_lane(cfg, keys, lane_no) {
                    Ok(l) => l,
                    Err(e) => {
                        errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                        return;
                    }
                };
                loop {
                    let case = next.fetch_add(1, Ordering::SeqCst);
                    if case >= total {
                        return;
                    }
                    if only.is_some_and(|o| o != case) {
                        continue;
                    }
                    let target = target_of(case);
                    let mut rng = Rng::new(cfg.seed, case as u64);
                    // A bomb now and then (always, when it is the only family).
                    let (seeds, bombs) = match target {
                        Target::Build => (tarballs, bomb_tarballs),
                        _ => (packages, bomb_packages),
                    };
                    let input =
                        if !bombs.is_empty() && (seeds.is_empty() || rng.chance(cfg.bomb_one_in)) {
                            rng.pick(bombs).clone()
                        } else if target == Target::Build {
                            mutate_tarball(&mut rng, seeds)
                        } else {
                            mutate_package(&mut rng, seeds)
                        };
                    if let Some(f) = run_case(cfg, &mut lane, target, case, &input, summary) {
                        if cfg.verbose {
                            eprintln!("case {case}: {f}");
                        }
                        summary
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .findings
                            .insert(case, f);
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if let Some(e) = errors.first() {
        return Err(e.clone());
    }
    let mut s = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    s.elapsed = start.elapsed();
    Ok(s)
}

#[allow(dead_code)]
fn main() {
    let mut cfg = Config {
        korgpkg: PathBuf::from("target/release/korgpkg"),
        seed: 1,
        inspect: 2000,
        publish: 300,
        build: 700,
        timeout: Duration::from_secs(30),
        mem_limit: 4 << 30,
        rss_budget_kib: 256 * 1024,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        work: std::env::temp_dir().join(format!("korgpkg-fuzz-{}", std::process::id())),
        keep: None,
        verbose: true,
        families: Family::ALL.to_vec(),
        bomb_mib: 300,
        bomb_one_in: 200,
    };
    let mut args = std::env::args().skip(1);
    let usage = "usage: fuzz [--korgpkg BIN] [--seed N] [--inspect N] [--publish N] [--build N] \
                 [--timeout SECS] [--mem-limit-mib N] [--rss-budget-mib N] [--jobs N] [--work DIR] [--keep DIR] \
                 [--families deb,rpm,ipk,tarball,bomb|all] [--bomb-mib N] [--bomb-one-in N] [-q]";
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs a value\n{usage}"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("not a number: {v}"))
        };
        match a.as_str() {
            "--korgpkg" => cfg.korgpkg = PathBuf::from(value()),
            "--seed" => cfg.seed = num(value()),
            "--inspect" => cfg.inspect = num(value()) as usize,
            "--publish" => cfg.publish = num(value()) as usize,
            "--build" => cfg.build = num(value()) as usize,
            "--timeout" => cfg.timeout = Duration::from_secs(num(value())),
            "--mem-limit-mib" => cfg.mem_limit = num(value()) << 20,
            "--rss-budget-mib" => cfg.rss_budget_kib = num(value()) << 10,
            "--jobs" => cfg.jobs = num(value()) as usize,
            "--work" => cfg.work = PathBuf::from(value()),
            "--keep" => cfg.keep = Some(PathBuf::from(value())),
            "--families" => {
                cfg.families = Family::parse_list(&value()).unwrap_or_else(|e| panic!("{e}"))
            }
            "--bomb-mib" => cfg.bomb_mib = num(value()) as usize,
            "--bomb-one-in" => cfg.bomb_one_in = num(value()) as usize,
            "-q" => cfg.verbose = false,
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    }
    let result = run(&cfg);
    let _ = std::fs::remove_dir_all(&cfg.work);
    match result {
        Ok(s) => {
            print!("{}", s.report());
            std::process::exit(if s.clean() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("fuzz: {e}");
            std::process::exit(2);
        }
    }
}
