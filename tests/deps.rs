//! The deps stage against the real tools: rpm's own `elfdeps -R` and Debian's
//! `dpkg-shlibdeps` on the same real binaries, a .deb whose derived Depends are exactly
//! what makes its binary start in an isolated Debian 12 root, per-spec overrides, and
//! cross-arch ELF files (from Debian's libc6-arm64-cross).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Real binaries of this Debian machine whose sonames the debian-12 map covers.
const ORACLE_BINARIES: &[&str] = &[
    "/usr/bin/true",
    "/usr/bin/ls",
    "/usr/bin/xz",
    "/usr/bin/zstd",
    "/usr/bin/xmllint",
    "/usr/bin/python3.11",
    "/usr/bin/rpm",
    "/usr/bin/gpgv",
    "/usr/bin/qemu-system-x86_64",
];

fn present(paths: &[&'static str]) -> Vec<&'static str> {
    let found: Vec<_> = paths
        .iter()
        .copied()
        .filter(|p| Path::new(p).is_file())
        .collect();
    assert!(found.len() >= 3, "too few oracle binaries on this machine");
    found
}

fn elfdeps() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/lib/rpm/elfdeps");
    if p.is_file() {
        return Some(p);
    }
    let out = Command::new("dpkg")
        .args(["-L", "rpm", "rpm-common", "librpmbuild9"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.ends_with("/elfdeps"))
        .map(PathBuf::from)
}

/// `korgpkg deps <dir> --json` (stdout parsed even when a format failed).
fn deps_json(source: &Path, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let out = run(korgpkg().arg("deps").arg(source).arg("--json").args(extra));
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn relations(report: &serde_json::Value, format: &str, field: &str) -> Vec<String> {
    report["formats"]
        .as_array()
        .expect("formats")
        .iter()
        .find(|f| f["format"] == format)
        .and_then(|f| f["relations"][field].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// A directory holding only a copy of `bin` (mode 0755).
fn single(dir: &Path, bin: &str) -> PathBuf {
    let d = dir.join(Path::new(bin).file_name().expect("name"));
    std::fs::create_dir_all(&d).expect("mkdir");
    let to = d.join(Path::new(bin).file_name().expect("name"));
    std::fs::copy(bin, &to).expect("copy");
    set_mode(&to, 0o755);
    d
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn rpm_requires_equal_rpm_elfdeps() {
    let Some(elfdeps) = elfdeps() else {
        eprintln!("SKIP: rpm's elfdeps is not installed (scripts/test installs the rpm package)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    for bin in present(ORACLE_BINARIES) {
        let d = single(tmp.path(), bin);
        let copy = d.join(Path::new(bin).file_name().expect("name"));
        let oracle = ok(Command::new(&elfdeps).arg("-R").arg(&copy));
        let want: BTreeSet<String> = oracle.lines().map(str::to_string).collect();
        let (_, report, err) = deps_json(&d, &[]);
        let got: BTreeSet<String> = relations(&report, "rpm", "Requires").into_iter().collect();
        assert!(!want.is_empty(), "elfdeps found nothing in {bin}");
        assert_eq!(got, want, "{bin}: korgpkg vs elfdeps -R ({err})");
    }
}

/// `dpkg-shlibdeps -O` on `bin`: package → minimum version (or "").
fn shlibdeps(bin: &str) -> Vec<(String, String)> {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(tmp.path().join("debian")).expect("mkdir");
    std::fs::write(
        tmp.path().join("debian/control"),
        "Source: x\n\nPackage: x\nArchitecture: any\n",
    )
    .expect("control");
    let out = ok(Command::new("dpkg-shlibdeps")
        .arg("-O")
        .arg(bin)
        .current_dir(tmp.path()));
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .unwrap_or_else(|| panic!("no shlibs:Depends for {bin}: {out}"));
    line.split(", ").map(split_relation).collect()
}

fn split_relation(r: &str) -> (String, String) {
    match r.split_once(" (>= ") {
        Some((n, v)) => (n.to_string(), v.trim_end_matches(')').to_string()),
        None => (r.trim().to_string(), String::new()),
    }
}

fn version_ge(a: &str, b: &str) -> bool {
    b.is_empty()
        || Command::new("dpkg")
            .args(["--compare-versions", a, "ge", b])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

#[test]
fn deb_depends_match_dpkg_shlibdeps_packages_with_equal_or_higher_minimums() {
    need_tool("dpkg-shlibdeps");
    let tmp = tempfile::tempdir().expect("tmp");
    for bin in present(ORACLE_BINARIES) {
        let theirs = shlibdeps(bin);
        let d = single(tmp.path(), bin);
        let (success, report, err) = deps_json(&d, &["--target-distro", "debian-12"]);
        assert!(success, "{bin}: {err}");
        let ours: Vec<(String, String)> = relations(&report, "deb", "Depends")
            .iter()
            .map(|r| split_relation(r))
            .collect();
        let names =
            |l: &[(String, String)]| l.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>();
        // The same packages: nothing missing, nothing invented.
        assert_eq!(
            names(&ours),
            names(&theirs),
            "{bin}: {ours:?} vs {theirs:?}"
        );
        for (name, min) in &theirs {
            let (_, mine) = ours.iter().find(|(n, _)| n == name).expect("same names");
            assert!(
                version_ge(mine, min),
                "{bin}: {name} (>= {mine}) is below dpkg-shlibdeps' (>= {min})"
            );
            // And never more than this Debian 12 machine has installed.
            let installed = ok(Command::new("dpkg-query")
                .args(["-W", "-f", "${Version}"])
                .arg(format!("{name}:amd64")));
            assert!(
                version_ge(&installed, mine),
                "{bin}: {name} (>= {mine}) is not satisfied by Debian 12's {installed}"
            );
        }
    }
}

/// An LLVM-shaped tarball `llvm-18.1.8-<arch>.tar.xz` with `bin/<name>` = `elf`.
fn tarball_with(dir: &Path, arch: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let top = format!("llvm-18.1.8-{arch}");
    let mut items = vec![
        (top.clone(), Item::Dir("", 0o755)),
        (format!("{top}/bin"), Item::Dir("", 0o755)),
    ];
    for (name, bytes) in files {
        items.push((
            format!("{top}/bin/{name}"),
            Item::File(String::new(), 0o755, bytes.clone()),
        ));
    }
    write(
        dir,
        &format!("llvm-18.1.8-{arch}.tar.xz"),
        &xz(&tar_bytes(&items)),
    )
}

fn control_field(deb: &Path, field: &str) -> String {
    ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))
        .trim()
        .to_string()
}

/// `/usr/bin/true` needing two sonames no distribution ships (patchelf --add-needed).
fn needs_unknown_libraries(dir: &Path) -> Vec<u8> {
    need_tool("patchelf");
    let f = dir.join("true-with-unknown-libs");
    std::fs::write(&f, real_elf()).expect("write");
    ok(Command::new("patchelf")
        .args(["--add-needed", "libkorgtest-one.so.1"])
        .args(["--add-needed", "libkorgtest-two.so.2"])
        .arg(&f));
    std::fs::read(&f).expect("read")
}

#[test]
fn every_unmapped_soname_of_every_format_is_named_in_one_error_or_a_warning() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = tarball_with(
        tmp.path(),
        "x86_64",
        &[("tool", needs_unknown_libraries(tmp.path()))],
    );
    let out_dir = tmp.path().join("out");
    // deb (debian-12) and the OpenWrt ipk (openwrt map) both lack both sonames: one
    // error names all four, and nothing is written for any format.
    let o = build("korg-clang-18", &tarball, &out_dir, &["--ipk-outer", "tar"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for want in [
        "debian-12: libkorgtest-one.so.1 (needed by /usr/lib/korg/llvm-18/bin/tool)",
        "libkorgtest-two.so.2",
        "openwrt: libkorgtest-one.so.1",
        "--unmapped warn",
    ] {
        assert!(err.contains(want), "{want} missing: {err}");
    }
    assert_eq!(err.matches("libkorgtest-two.so.2").count(), 2, "{err}");
    assert!(dir_listing(&out_dir).is_empty(), "nothing is left behind");

    // --unmapped warn: every format is written, without those two, with one warning.
    let o = build(
        "korg-clang-18",
        &tarball,
        &out_dir,
        &["--ipk-outer", "tar", "--unmapped", "warn", "--json"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("soname(s)"))
        .unwrap_or_default();
    assert!(
        warning.starts_with("korgpkg: warning: korg-clang-18: ")
            && warning.contains("libkorgtest-two.so.2"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        report["unmapped"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    let depends = control_field(&output_path(&report, "deb"), "Depends");
    assert!(
        depends.starts_with("libc6 (>= 2.") && !depends.contains("korgtest"),
        "{depends}"
    );
    // The same setting from the config file.
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "unmapped = \"warn\"\n").expect("config");
    let o = run(korgpkg()
        .arg("--config")
        .arg(&config)
        .arg("deps")
        .arg(&tarball));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn spec_overrides_are_per_distro_map() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = tarball_with(
        tmp.path(),
        "x86_64",
        &[("tool", needs_unknown_libraries(tmp.path()))],
    );
    let out_dir = tmp.path().join("out");
    let specs = tmp.path().join("specs");
    std::fs::create_dir(&specs).expect("mkdir");
    let llvm = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/llvm.toml"))
        .expect("llvm spec");
    std::fs::write(
        specs.join("llvm.toml"),
        format!(
            "{llvm}\n[deps]\nignore_sonames = [\"libkorgtest-two.so.2\"]\n\
             [deps.map.debian-12]\n\"libkorgtest-one.so.1\" = \"libkorgtest-one1 (>= 1.2)\"\n\
             [deps.map.openembedded]\n\"libkorgtest-one.so.1\" = \"korgtest-one\"\n"
        ),
    )
    .expect("spec");
    let report = build_json(
        "korg-clang-18",
        &tarball,
        &out_dir,
        &["--specs-dir", specs.to_str().expect("utf8")],
    );
    let deb = output_path(&report, "deb");
    let depends = control_field(&deb, "Depends");
    assert!(depends.contains("libkorgtest-one1 (>= 1.2)"), "{depends}");
    assert!(!depends.contains("two"), "{depends}");
    // The spec's libc6 (>= 2.17) and the derived libc6 (>= 2.3x) merge into one.
    assert_eq!(depends.matches("libc6").count(), 1, "{depends}");
    assert!(!depends.contains("libc6 (>= 2.17)"), "{depends}");
    // The Debian name does not leak into the ipk: it has the OpenEmbedded override.
    let info = ok(korgpkg()
        .args(["inspect", "--json"])
        .arg(output_path(&report, "ipk")));
    assert!(
        info.contains("korgtest-one") && !info.contains("libkorgtest-one1"),
        "{info}"
    );
    let reqs = ok(Command::new("rpm")
        .args(["-qp", "--requires"])
        .arg(output_path(&report, "rpm")));
    assert!(
        reqs.lines().any(|l| l == "libkorgtest-one.so.1()(64bit)"),
        "{reqs}"
    );
    assert!(!reqs.contains("libkorgtest-two"), "{reqs}");
    assert!(reqs.lines().any(|l| l == "glibc >= 2.17"), "{reqs}");

    // The old single map is refused, naming the per-distro form.
    std::fs::write(
        specs.join("llvm.toml"),
        format!("{llvm}\n[deps]\nmap = {{ \"libkorgtest-one.so.1\" = \"libkorgtest-one1\" }}\n"),
    )
    .expect("spec");
    let o = build(
        "korg-clang-18",
        &tarball,
        &out_dir,
        &["--specs-dir", specs.to_str().expect("utf8")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("[deps.map.debian-12]"), "{err}");
}

#[test]
fn target_distro_picks_the_map() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let (ok1, report, err) = deps_json(&tarball, &["--target-distro", "ubuntu-24.04"]);
    assert!(ok1, "{err}");
    assert_eq!(report["package"], "korg-clang-18");
    let deb = relations(&report, "deb", "Depends");
    assert!(deb.iter().any(|d| d.starts_with("libc6 (>= 2.")), "{deb:?}");
    let formats = report["formats"].as_array().expect("formats");
    assert!(formats.iter().any(|f| f["distro"] == "ubuntu-24.04"));
    assert!(formats.iter().any(|f| f["distro"] == "openembedded"));
    let o = build(
        "korg-clang-18",
        &tarball,
        &tmp.path().join("out"),
        &["--target-distro", "debian-99"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("debian-99"));
}

#[test]
fn aarch64_elf_gives_aarch64_deps_and_none_in_an_x86_64_package_unless_the_spec_refuses_it() {
    let lib = Path::new("/usr/aarch64-linux-gnu/lib/libm.so.6");
    let Ok(bytes) = std::fs::read(lib) else {
        panic!(
            "{} missing: run scripts/test (it installs libc6-arm64-cross)",
            lib.display()
        );
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = tarball_with(tmp.path(), "aarch64", &[("libm-tool", bytes.clone())]);
    let (success, report, err) = deps_json(&tarball, &[]);
    assert!(success, "{err}");
    assert_eq!(report["arch"], "aarch64");
    assert_eq!(report["files"][0]["machine"], "aarch64");
    let rpm: BTreeSet<String> = relations(&report, "rpm", "Requires").into_iter().collect();
    assert!(rpm.contains("libc.so.6(GLIBC_2.17)(64bit)"), "{rpm:?}");
    assert!(rpm.contains("ld-linux-aarch64.so.1()(64bit)"), "{rpm:?}");
    if let Some(elfdeps) = elfdeps() {
        let copy = tmp.path().join("libm-tool");
        std::fs::write(&copy, &bytes).expect("copy");
        set_mode(&copy, 0o755);
        let want: BTreeSet<String> = ok(Command::new(&elfdeps).arg("-R").arg(&copy))
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(rpm, want, "korgpkg vs elfdeps -R on aarch64 libm.so.6");
    }
    let deb = relations(&report, "deb", "Depends");
    assert_eq!(deb.len(), 1, "{deb:?}");
    assert!(deb[0].starts_with("libc6 (>= 2."), "{deb:?}");

    // The same ELF in an x86_64 package (a toolchain's target-side library): packaged,
    // listed in the report, no dependencies derived from it.
    let x86 = tmp.path().join("x86");
    std::fs::create_dir(&x86).expect("mkdir");
    let mixed = tarball_with(
        &x86,
        "x86_64",
        &[
            ("libm-tool", bytes),
            ("zstd", std::fs::read("/usr/bin/zstd").expect("zstd")),
        ],
    );
    let out_dir = tmp.path().join("out");
    let report = build_json("korg-clang-18", &mixed, &out_dir, &[]);
    let foreign = &report["foreign_arch"];
    assert_eq!(
        foreign[0]["path"], "/usr/lib/korg/llvm-18/bin/libm-tool",
        "{report}"
    );
    assert_eq!(foreign[0]["machine"], "aarch64");
    let reqs = ok(Command::new("rpm")
        .args(["-qp", "--requires"])
        .arg(output_path(&report, "rpm")));
    assert!(reqs.contains("liblzma.so.5()(64bit)"), "{reqs}");
    assert!(!reqs.contains("ld-linux-aarch64"), "{reqs}");
    let depends = control_field(&output_path(&report, "deb"), "Depends");
    assert!(depends.contains("liblzma5"), "{depends}");
    let (success, deps, err) = deps_json(&mixed, &[]);
    assert!(success, "{err}");
    assert_eq!(deps["foreign_arch"][0]["machine"], "aarch64");

    // Only the spec's [deps] foreign_arch = "error" makes it an error naming the file.
    let specs = tmp.path().join("specs");
    std::fs::create_dir(&specs).expect("mkdir");
    let llvm = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/llvm.toml"))
        .expect("llvm spec");
    std::fs::write(
        specs.join("llvm.toml"),
        format!("{llvm}\n[deps]\nforeign_arch = \"error\"\n"),
    )
    .expect("spec");
    let strict_out = tmp.path().join("strict");
    let o = build(
        "korg-clang-18",
        &mixed,
        &strict_out,
        &["--specs-dir", specs.to_str().expect("utf8")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("/usr/lib/korg/llvm-18/bin/libm-tool") && err.contains("aarch64"),
        "{err}"
    );
    assert!(dir_listing(&strict_out).is_empty());
}

/// Download `pkgs` (Debian 12's current versions) into `dir`; `None` if apt cannot.
fn download(dir: &Path, pkgs: &[String]) -> Option<Vec<PathBuf>> {
    let out = Command::new("apt-get")
        .arg("download")
        .args(pkgs)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIP: apt-get download failed (no network or apt lists?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    pkgs.iter()
        .map(|p| {
            std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{p}_")) && n.ends_with(".deb"))
                })
        })
        .collect()
}

/// A root holding exactly `debs` and our package, then `chroot root <bin> --version`.
fn run_in_root(
    tmp: &Path,
    name: &str,
    debs: &[&PathBuf],
    ours: &Path,
    bin: &str,
) -> (bool, String) {
    let root = tmp.join(name);
    std::fs::create_dir_all(&root).expect("root");
    for d in debs
        .iter()
        .copied()
        .chain(std::iter::once(&ours.to_path_buf()))
    {
        ok(Command::new("dpkg-deb").arg("-x").arg(d).arg(&root));
    }
    let out = run(Command::new("chroot").arg(&root).arg(bin).arg("--version"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn derived_depends_are_what_makes_the_binary_run_in_a_debian_12_root() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        eprintln!("SKIP: chroot into an isolated Debian 12 root needs root");
        return;
    }
    let zstd = std::fs::read("/usr/bin/zstd").expect("/usr/bin/zstd (scripts/test installs zstd)");
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = tarball_with(tmp.path(), "x86_64", &[("zstd", zstd)]);
    let report = build_json(
        "korg-clang-18",
        &tarball,
        &tmp.path().join("out"),
        &["--format", "deb"],
    );
    let deb = output_path(&report, "deb");
    let depends = control_field(&deb, "Depends");
    let pkgs: Vec<String> = depends.split(", ").map(|r| split_relation(r).0).collect();
    for want in ["libc6", "zlib1g", "liblzma5", "liblz4-1"] {
        assert!(
            pkgs.iter().any(|p| p == want),
            "{want} missing in {depends}"
        );
    }
    let dl = tmp.path().join("debs");
    std::fs::create_dir(&dl).expect("mkdir");
    let Some(debs) = download(&dl, &pkgs) else {
        return;
    };
    let bin = "/usr/lib/korg/llvm-18/bin/zstd";
    let all: Vec<&PathBuf> = debs.iter().collect();
    let (ran, text) = run_in_root(tmp.path(), "root-all", &all, &deb, bin);
    assert!(ran && text.contains("Zstandard"), "with {depends}: {text}");
    // Leave out any one derived dependency and the binary cannot start.
    for (i, pkg) in pkgs.iter().enumerate() {
        let some: Vec<&PathBuf> = debs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, d)| d)
            .collect();
        let (ran, text) = run_in_root(tmp.path(), &format!("root-no-{pkg}"), &some, &deb, bin);
        assert!(!ran, "zstd started without {pkg}: {text}");
        if pkg != "libc6" {
            assert!(
                text.contains("error while loading shared libraries"),
                "without {pkg}: {text}"
            );
        }
    }
}

/// A separate debug-info file, as `/usr/lib/debug/.build-id/` holds (`objcopy
/// --only-keep-debug` of a real binary): its program headers point at bytes it does not
/// hold (`PT_INTERP` has no data) and no loader runs it, so it adds no dependency and
/// fails no build, in `deps` and in one-pass and staged builds alike.
#[test]
fn a_separate_debug_info_file_adds_no_dependency_and_fails_nothing() {
    need_tool("objcopy");
    let tmp = tempfile::tempdir().expect("tmp");
    let bin = write(tmp.path(), "true", &real_elf());
    let debug = tmp.path().join("true.debug");
    ok(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&debug));
    let debug = std::fs::read(&debug).expect("read");
    let (alone_dir, debug_dir) = (tmp.path().join("alone"), tmp.path().join("debug"));
    std::fs::create_dir_all(&alone_dir).expect("mkdir");
    std::fs::create_dir_all(&debug_dir).expect("mkdir");
    let alone = tarball_with(&alone_dir, "x86_64", &[("true", real_elf())]);
    let with_debug = tarball_with(
        &debug_dir,
        "x86_64",
        &[("true", real_elf()), ("true.debug", debug)],
    );
    let (ok_alone, alone_report, err) = deps_json(&alone, &[]);
    assert!(ok_alone, "{err}");
    let (ok_debug, debug_report, err) = deps_json(&with_debug, &[]);
    assert!(ok_debug, "the debug file failed deps: {err}");
    for (format, field) in [("deb", "Depends"), ("rpm", "Requires")] {
        let want = relations(&alone_report, format, field);
        assert!(!want.is_empty(), "{alone_report}");
        assert_eq!(relations(&debug_report, format, field), want, "{format}");
    }
    let want = relations(&alone_report, "deb", "Depends").join(", ");
    for staged in ["", "1"] {
        let out_dir = tmp.path().join(format!("out{staged}"));
        let o = run(korgpkg()
            .env("KORGPKG_STAGED", staged)
            .arg("build")
            .arg("korg-clang-18")
            .arg("--from")
            .arg(&with_debug)
            .arg("--allow-unverified")
            .arg("--format")
            .arg("deb,rpm")
            .arg("--json")
            .arg("--out")
            .arg(&out_dir));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "KORGPKG_STAGED={staged:?}: {err}");
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let deb = output_path(&report, "deb");
        assert_eq!(
            control_field(&deb, "Depends"),
            want,
            "KORGPKG_STAGED={staged:?}"
        );
    }
}
