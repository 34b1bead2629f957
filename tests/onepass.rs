//! One-pass builds: the tarball is decoded once and every
//! format is written while it streams, nothing of the payload is staged on disk, and
//! memory stays flat. Data streams follow the archive order; for a tarball already in
//! path order the packages equal the staged path's (`KORGPKG_STAGED=1`) byte for byte.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOP: &str = "llvm-18.1.8-x86_64";
const PREFIX: &str = "usr/lib/korg/llvm-18";

fn build_cmd(tarball: &Path, out: &Path, staged: bool) -> Command {
    let mut c = korgpkg();
    c.args(["build", "korg-clang-18", "--allow-unverified", "--json"])
        .args(["--format", "deb,rpm,ipk"])
        .arg("--from")
        .arg(tarball)
        .arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", MTIME.to_string());
    if staged {
        c.env("KORGPKG_STAGED", "1");
    }
    c
}

fn built(tarball: &Path, out: &Path, staged: bool) -> serde_json::Value {
    serde_json::from_str(&ok(&mut build_cmd(tarball, out, staged))).expect("--json")
}

/// `llvm_items` in path order, every directory listed, as `tar --sort=name` writes
/// them: the first name of the hard-link pair (in path order) carries the contents.
fn sorted_items(with_hard_link: bool) -> Vec<(String, Item)> {
    let mut items: Vec<(String, Item)> = llvm_items(TOP)
        .into_iter()
        .filter(|(p, _)| !p.ends_with("/bin/ld.lld") && !p.ends_with("/bin/lld"))
        .collect();
    let elf = real_elf();
    if with_hard_link {
        items.push((
            format!("{TOP}/bin/ld.lld"),
            Item::File(String::new(), 0o755, elf),
        ));
        items.push((format!("{TOP}/bin/lld"), Item::HardLink("", "bin/ld.lld")));
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (p, _) in &items {
        let mut d = p.as_str();
        while let Some(i) = d.rfind('/') {
            d = &d[..i];
            dirs.insert(d.to_string());
        }
    }
    for d in dirs {
        if !items.iter().any(|(p, _)| *p == d) {
            items.push((d, Item::Dir("", 0o755)));
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items
}

#[test]
fn sorted_tarballs_give_the_same_packages_as_the_staged_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (hard_link, formats) in [(true, &["deb", "ipk"][..]), (false, &["deb", "rpm", "ipk"])] {
        let name = if hard_link { "links" } else { "plain" };
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let tarball = write(
            &dir,
            "llvm-18.1.8-x86_64.tar.xz",
            &xz(&tar_bytes(&sorted_items(hard_link))),
        );
        let one = built(&tarball, &dir.join("one"), false);
        let staged = built(&tarball, &dir.join("staged"), true);
        for f in formats {
            assert!(
                std::fs::read(output_path(&one, f)).expect("read")
                    == std::fs::read(output_path(&staged, f)).expect("read"),
                "{name}: the one-pass {f} differs from the staged one"
            );
        }
    }
}

/// Files in no particular order, a hard-link group of three whose names come in
/// anything but path order, and a directory the archive never lists.
fn unsorted_items() -> Vec<(String, Item)> {
    let elf = real_elf();
    let p = |s: &str| format!("{TOP}/{s}");
    vec![
        (p(""), Item::Dir("", 0o755)),
        (p("zeta"), Item::Dir("", 0o755)),
        (p("zeta/tool"), Item::File(String::new(), 0o755, elf)),
        (
            p("lib/z.txt"),
            Item::File(String::new(), 0o644, b"z\n".to_vec()),
        ),
        (p("bin"), Item::Dir("", 0o755)),
        (p("bin/tool-2"), Item::HardLink("", "zeta/tool")),
        (
            p("lib/a.txt"),
            Item::File(String::new(), 0o644, b"a\n".to_vec()),
        ),
        (p("alpha"), Item::Dir("", 0o755)),
        (p("alpha/tool"), Item::HardLink("", "zeta/tool")),
        (p("bin/cc"), Item::Symlink("", "../zeta/tool")),
    ]
}

fn check_tree(root: &Path) {
    let p = root.join(PREFIX);
    let elf = real_elf();
    let inode = |rel: &str| std::fs::metadata(p.join(rel)).expect(rel).ino();
    for rel in ["zeta/tool", "bin/tool-2", "alpha/tool"] {
        assert_eq!(std::fs::read(p.join(rel)).expect(rel), elf, "{rel}");
        assert_eq!(inode(rel), inode("zeta/tool"), "{rel} is a hard link");
    }
    assert_eq!(std::fs::read(p.join("lib/a.txt")).expect("a"), b"a\n");
    assert_eq!(std::fs::read(p.join("lib/z.txt")).expect("z"), b"z\n");
    assert_eq!(
        std::fs::read_link(p.join("bin/cc")).expect("link"),
        PathBuf::from("../zeta/tool")
    );
}

#[test]
fn unsorted_tarballs_with_hard_links_install_and_verify_with_dpkg_and_rpm() {
    need_tool("dpkg");
    need_tool("rpm");
    let tar = tar_bytes(&unsorted_items());
    // gzip: the rpm's second read decodes the tarball again; xz: it reads the spooled
    // copy of the first read's decoded stream.
    for (name, bytes) in [
        ("llvm-18.1.8-x86_64.tar.gz", gz(&tar)),
        ("llvm-18.1.8-x86_64.tar.xz", xz(&tar)),
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        install_and_verify(&write(tmp.path(), name, &bytes));
    }
}

/// Build `tarball` (the [`unsorted_items`]) twice, then install and verify the deb with
/// dpkg and the rpm with rpm.
fn install_and_verify(tarball: &Path) {
    let tmp = tempfile::tempdir().expect("tmp");
    let report = built(tarball, &tmp.path().join("out"), false);
    // Reproducible: the archive's order fixes the packages' bytes.
    let again = built(tarball, &tmp.path().join("again"), false);
    for f in ["deb", "rpm", "ipk"] {
        assert!(
            std::fs::read(output_path(&report, f)).expect("read")
                == std::fs::read(output_path(&again, f)).expect("read"),
            "{f} is not reproducible"
        );
    }

    let root = fresh_dpkg_root();
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.path().display()))
            .args(["--force-depends", "--log=/dev/null"])
            .args(args);
        c
    };
    let deb = output_path(&report, "deb");
    ok(dpkg(&["-i"]).arg(&deb));
    check_tree(root.path());
    let verify = ok(&mut dpkg(&["--verify", "korg-clang-18"]));
    assert!(verify.trim().is_empty(), "dpkg --verify: {verify}");

    let root = tempfile::tempdir().expect("root");
    let rpm = |args: &[&str]| {
        let mut c = Command::new("rpm");
        c.arg("--root")
            .arg(root.path())
            .args(["--dbpath", "/var/lib/rpm"])
            .args(args);
        c
    };
    ok(&mut rpm(&["--initdb"]));
    ok(rpm(&["-i", "--nodeps", "--noscripts"]).arg(output_path(&report, "rpm")));
    check_tree(root.path());
    let verify = ok(&mut rpm(&["-V", "--nodeps", "korg-clang-18"]));
    assert!(verify.trim().is_empty(), "rpm -V: {verify}");
    // cpio (what rpm2cpio users and rpmlint extract with) sees one file with three names:
    // every name of the group carries the group's link count.
    let listing = ok(Command::new("sh").arg("-c").arg(format!(
        "rpm2cpio '{}' | cpio -itv --quiet",
        output_path(&report, "rpm").display()
    )));
    let links: Vec<&str> = listing
        .lines()
        .filter(|l| {
            ["zeta/tool", "bin/tool-2", "alpha/tool"]
                .iter()
                .any(|n| l.ends_with(&format!(" ./{PREFIX}/{n}")))
        })
        .collect();
    assert_eq!(links.len(), 3, "{listing}");
    for l in links {
        assert_eq!(l.split_whitespace().nth(1), Some("3"), "{listing}");
    }
}

/// With an xz tarball, the rpm of a payload with hard links (written by a second read)
/// reads a copy of the first read's decoded stream: the tarball's bytes are read once.
#[test]
fn an_xz_tarball_with_hard_links_is_read_once_for_every_format() {
    need_tool("strace");
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = write(
        tmp.path(),
        "llvm-18.1.8-x86_64.tar.xz",
        &xz(&tar_bytes(&unsorted_items())),
    );
    let size = std::fs::metadata(&tarball).expect("stat").len();
    let log = tmp.path().join("strace.log");
    let cmd = build_cmd(&tarball, &tmp.path().join("out"), false);
    let mut traced = Command::new("strace");
    traced
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=read,pread64",
            "-e",
            "signal=none",
        ])
        .arg("-o")
        .arg(&log)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let report: serde_json::Value = serde_json::from_str(&ok(&mut traced)).expect("--json");
    for f in ["deb", "rpm", "ipk"] {
        assert!(output_path(&report, f).is_file(), "no {f}");
    }
    let needle = format!("<{}>", tarball.display());
    let read: u64 = std::fs::read_to_string(&log)
        .expect("strace log")
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.rsplit_once(" = ")?.1.trim().parse::<u64>().ok())
        .sum();
    assert!(
        read >= size && read < size + size / 2,
        "{read} bytes read from a {size}-byte tarball"
    );
}

#[test]
fn a_directory_after_its_contents_is_refused_in_one_pass() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut tar = raw_entry(&format!("{TOP}/"), b'5', "", 0o755, b"");
    tar.extend(raw_entry(&format!("{TOP}/lib/x"), b'0', "", 0o644, b"x"));
    tar.extend(raw_entry(&format!("{TOP}/lib/"), b'5', "", 0o700, b""));
    tar.extend(tar_end());
    let tarball = write(tmp.path(), "llvm-18.1.8-x86_64.tar.xz", &xz(&tar));
    let out = tmp.path().join("out");
    let o = run(&mut build_cmd(&tarball, &out, false));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("lib/") && err.contains("comes after entries below it"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(dir_listing(&out), Vec::<String>::new());
}

/// `mib` MiB of text that compresses to a few hundred KiB, in one file.
fn text_tarball(dir: &Path, mib: usize) -> PathBuf {
    let mut text = Vec::with_capacity(mib << 20);
    let mut i = 0u64;
    while text.len() < mib << 20 {
        let n = i % 4096;
        text.extend_from_slice(format!("static int f{n}(void) {{ return {n}; }}\n").as_bytes());
        i += 1;
    }
    text.truncate(mib << 20);
    let items = vec![
        (TOP.to_string(), Item::Dir("", 0o755)),
        (format!("{TOP}/lib"), Item::Dir("", 0o755)),
        (
            format!("{TOP}/lib/big.c"),
            Item::File(String::new(), 0o644, text),
        ),
    ];
    write(dir, "llvm-18.1.8-x86_64.tar.gz", &gz(&tar_bytes(&items)))
}

#[test]
fn a_one_pass_build_stages_nothing_on_disk() {
    let Some(fs) = Tmpfs::mount("24m") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    // 48 MiB of payload that compresses to almost nothing: staging it cannot fit in
    // the 24 MiB file system that holds the output and every temporary file.
    let tarball = text_tarball(tmp.path(), 48);
    let build = |staged: bool, out: &str| {
        let mut c = build_cmd(&tarball, &fs.dir.join(out), staged);
        c.env("TMPDIR", &fs.dir);
        run(&mut c)
    };
    let o = build(false, "one");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(fs.dir.join("one")).expect("rm");
    // Without SOURCE_DATE_EPOCH too: the data streams start at the first entry's mtime.
    let mut c = build_cmd(&tarball, &fs.dir.join("no-epoch"), false);
    c.env("TMPDIR", &fs.dir).env_remove("SOURCE_DATE_EPOCH");
    let o = run(&mut c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(fs.dir.join("no-epoch")).expect("rm");
    let o = build(true, "staged");
    assert!(!o.status.success(), "staging 48 MiB fit into 24 MiB");
}

/// Without `SOURCE_DATE_EPOCH` a one-pass build is still reproducible: the directories
/// a data stream starts with take the archive's first mtime, the rest the newest.
#[test]
fn one_pass_builds_without_source_date_epoch_are_reproducible() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = write(
        tmp.path(),
        "llvm-18.1.8-x86_64.tar.xz",
        &xz(&tar_bytes(&unsorted_items())),
    );
    let build = |out: &str| {
        let mut c = build_cmd(&tarball, &tmp.path().join(out), false);
        c.env_remove("SOURCE_DATE_EPOCH");
        ok(&mut c);
        let mut files: Vec<_> = std::fs::read_dir(tmp.path().join(out))
            .expect("out")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    };
    let (a, b) = (build("a"), build("b"));
    assert_eq!(a.len(), 3, "{a:?}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.file_name(), y.file_name());
        assert!(
            std::fs::read(x).expect("read") == std::fs::read(y).expect("read"),
            "{} differs between two builds without SOURCE_DATE_EPOCH",
            x.display()
        );
    }
}

/// Peak RSS is measured by GNU time around the build: a child's own `ru_maxrss` would
/// include the test process's memory, which it shares until `exec`.
#[test]
fn peak_memory_does_not_grow_with_the_payload() {
    need_tool("time");
    let tmp = tempfile::tempdir().expect("tmp");
    let rss = |mib: usize| {
        let dir = tmp.path().join(format!("{mib}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let tarball = text_tarball(&dir, mib);
        let build = build_cmd(&tarball, &dir.join("out"), false);
        let mut timed = Command::new("/usr/bin/time");
        timed.args(["-f", "maxrss %M"]).arg(build.get_program());
        timed.args(build.get_args());
        for (k, v) in build.get_envs() {
            match v {
                Some(v) => timed.env(k, v),
                None => timed.env_remove(k),
            };
        }
        let o = run(&mut timed);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        err.lines()
            .find_map(|l| l.strip_prefix("maxrss "))
            .and_then(|k| k.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no maxrss in {err}"))
    };
    let small = rss(24);
    let big = rss(120);
    eprintln!("peak RSS: 24 MiB payload {small} KiB, 120 MiB payload {big} KiB");
    assert!(
        big < small + 64 * 1024 && big < 256 * 1024,
        "peak RSS grew from {small} KiB to {big} KiB with the payload"
    );
}

#[test]
fn a_full_disk_stops_every_format_of_a_one_pass_build_leaving_nothing() {
    let Some(fs) = Tmpfs::mount("6m") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    // 24 MiB that does not compress: the formats' temporary data fills 6 MiB at once.
    let tarball = noise_tarball(tmp.path(), 24);
    let out = fs.dir.join("out");
    let started = std::time::Instant::now();
    let mut c = korgpkg();
    c.args(["build", "korg-clang-18", "--allow-unverified", "--from"])
        .arg(&tarball)
        .arg("--out")
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", MTIME.to_string())
        .env("TMPDIR", &fs.dir);
    let o = run(&mut c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(dir_listing(&out), Vec::<String>::new());
    assert_eq!(dir_listing(&fs.dir), ["out"], "temporary files left");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// The `.tar.sign` is checked in the same pass that writes the packages: a signature over
/// other bytes leaves nothing, a good one gives packages that name their signer.
#[test]
fn the_tar_signature_is_checked_in_the_one_pass() {
    use common::mirror::{Mirror, DIR};
    use korgpkg::verify::testkeys::Hash;
    let build = |m: &Mirror| {
        run(m
            .korgpkg()
            .env("SOURCE_DATE_EPOCH", MTIME.to_string())
            .args([
                "build",
                "korg-clang-18",
                "--format",
                "deb,rpm,ipk",
                "--json",
            ])
            .arg("--out")
            .arg(m.out()))
    };
    let m = Mirror::new();
    let other = m
        .dev
        .sign_detached(&m.releases[0].tar, Hash::Sha256, true, true);
    m.server
        .file(&format!("{DIR}/llvm-18.1.8-x86_64.tar.sign"), other);
    let o = build(&m);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("BAD signature"), "{err}");
    assert!(
        dir_listing(&m.out()).is_empty(),
        "{:?}",
        dir_listing(&m.out())
    );

    let m = Mirror::new();
    let o = build(&m);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    for f in ["deb", "rpm", "ipk"] {
        assert!(output_path(&report, f).is_file(), "{f}");
    }
    assert!(
        report.to_string().contains("\"signer\""),
        "provenance names the signer: {report}"
    );
}
