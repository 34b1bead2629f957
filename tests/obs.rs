//! `korgpkg obs`: the exported package sources build with the real tools (rpmbuild;
//! OBS's debtransform, dpkg-source -x and dpkg-buildpackage with debhelper) into packages with the same files and relations as
//! korgpkg's own; the push client against a fake OBS API on 127.0.0.1 creates, uploads
//! only changed files, commits once, and reports 401/404 clearly.

mod common;
use common::obs::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// korgpkg without any OBS settings from the environment.
fn kp() -> Command {
    let mut c = korgpkg();
    without_obs_env(&mut c);
    c
}

/// `korgpkg obs export <package> --from <tarball> --allow-unverified --out <out>`.
fn export(package: &str, tarball: &Path, out: &Path) -> serde_json::Value {
    export_with(package, tarball, out, &[])
}

/// [`export`] with extra arguments (`--specs-dir DIR`).
fn export_with(package: &str, tarball: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let text = ok(kp()
        .args(["obs", "export", package, "--allow-unverified", "--json"])
        .args(extra)
        .arg("--from")
        .arg(tarball)
        .arg("--out")
        .arg(out));
    serde_json::from_str(&text).expect("obs export --json prints JSON")
}

fn lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Export

#[test]
fn export_writes_service_spec_and_debian_sources() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let out = tmp.path().join("obs");
    let report = export("korg-clang-18", &tarball, &out);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&tarball).expect("tarball"),
    ));
    assert_eq!(report["upstream"]["sha256"], sha.as_str());
    assert_eq!(
        dir_listing(&out),
        [
            "_service",
            "debian.changelog",
            "debian.control",
            "debian.copyright",
            "debian.rules",
            "korg-clang-18.dsc",
            "korg-clang-18.spec"
        ]
    );
    let service = std::fs::read_to_string(out.join("_service")).expect("_service");
    let url = "https://mirrors.edge.kernel.org/pub/tools/llvm/files/llvm-18.1.8-x86_64.tar.xz";
    assert!(service.contains(&format!("<param name=\"url\">{url}</param>")));
    assert!(service.contains("llvm-18.1.8-x86_64.tar.sign</param>"));
    assert!(service
        .contains("<param name=\"file\">_service:download_url:llvm-18.1.8-x86_64.tar.xz</param>"));
    assert!(service.contains(&format!("<param name=\"checksum\">{sha}</param>")));
    let spec = std::fs::read_to_string(out.join("korg-clang-18.spec")).expect("spec");
    assert!(spec.contains(&format!("Source0:        {url}")), "{spec}");
    let dsc = std::fs::read_to_string(out.join("korg-clang-18.dsc")).expect("dsc");
    assert!(dsc.contains("Debtransform-Tar: llvm-18.1.8-x86_64.tar.xz"));
    assert!(dsc.contains("Version: 18.1.8-1"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("debian.rules"))
        .expect("rules")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "debian.rules is executable");
}

#[test]
fn project_files_name_the_four_distros_and_two_arches() {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(kp()
        .args(["obs", "project", "--project", "home:me:korg"])
        .args(["--maintainer", "me", "--out"])
        .arg(tmp.path()));
    let meta = std::fs::read_to_string(tmp.path().join("_meta")).expect("_meta");
    for repo in [
        "Debian_12",
        "xUbuntu_24.04",
        "Fedora_Rawhide",
        "openSUSE_Tumbleweed",
    ] {
        assert!(
            meta.contains(&format!("<repository name=\"{repo}\">")),
            "{meta}"
        );
    }
    assert_eq!(meta.matches("<arch>aarch64</arch>").count(), 4);
    assert_eq!(meta.matches("<arch>x86_64</arch>").count(), 4);
    assert!(tmp.path().join("_config").is_file());
}

// ---------------------------------------------------------------------------------------
// rpmbuild

/// Build the exported .spec with rpmbuild against a local copy of the tarball.
fn rpmbuild(spec: &Path, tarball: &Path, signature_name: &str, topdir: &Path) -> PathBuf {
    need_tool("rpmbuild");
    let sources = topdir.join("SOURCES");
    std::fs::create_dir_all(&sources).expect("SOURCES");
    std::fs::copy(tarball, sources.join(tarball.file_name().expect("name"))).expect("copy");
    std::fs::write(sources.join(signature_name), b"").expect("signature placeholder");
    ok(Command::new("rpmbuild")
        .args(["-bb", "--nodeps", "--define"])
        .arg(format!("_topdir {}", topdir.display()))
        .arg(spec));
    let rpms: Vec<PathBuf> = walk(&topdir.join("RPMS"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    assert_eq!(rpms.len(), 1, "{rpms:?}");
    rpms[0].clone()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn rpm_query(rpm: &Path, args: &[&str]) -> Vec<String> {
    let text = ok(Command::new("rpm").arg("-qp").args(args).arg(rpm));
    lines(&text)
        .into_iter()
        .filter(|l| !l.starts_with("rpmlib("))
        .collect()
}

fn check_rpmbuild(package: &str, tarball: &Path, signature_name: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("obs");
    export_with(package, tarball, &out, extra);
    let theirs = rpmbuild(
        &out.join(format!("{package}.spec")),
        tarball,
        signature_name,
        &tmp.path().join("rpmbuild"),
    );
    let args: Vec<&str> = ["-f", "rpm"].iter().chain(extra).copied().collect();
    let report = build_json(package, tarball, &tmp.path().join("dist"), &args);
    let ours = output_path(&report, "rpm");
    for q in [
        &["-l"][..],
        &["--requires"],
        &["--provides"],
        &["--recommends"],
        &["--conflicts"],
        &["--obsoletes"],
        &["--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}\n"],
        // path, size, digest, mode, owner, group, link target: byte for byte.
        &[
            "--qf",
            "[%{FILENAMES} %{FILESIZES} %{FILEDIGESTS} %{FILEMODES:octal} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILELINKTOS}\n]",
        ],
    ] {
        assert_eq!(
            rpm_query(&theirs, q),
            rpm_query(&ours, q),
            "rpm -qp {q:?} differs between rpmbuild's and korgpkg's {package}"
        );
    }
    assert!(!rpm_query(&ours, &["--requires"]).is_empty());
}

#[test]
fn exported_spec_builds_with_rpmbuild_like_korgpkgs_rpm() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    check_rpmbuild(
        "korg-clang-18",
        &tarball,
        "llvm-18.1.8-x86_64.tar.sign",
        &[],
    );
}

#[test]
fn exported_spec_of_a_nested_top_dir_builds_with_rpmbuild() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = crosstool_tarball(tmp.path());
    check_rpmbuild(
        "korg-gcc-14-aarch64-linux",
        &tarball,
        "x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.sign",
        &[],
    );
}

// ---------------------------------------------------------------------------------------
// dpkg-buildpackage

/// OBS's own debtransform (Debian package obs-build), as OBS runs it before a Debian
/// build: the exported files plus the tarball in, a format 1.0 source package out.
const DEBTRANSFORM: &str = "/usr/lib/obs-build/debtransform";

/// Run debtransform on the exported sources and `dpkg-source -x` the result into `tree`.
fn debtransform(export_dir: &Path, tarball: &Path, dsc: &str, work: &Path, tree: &Path) {
    assert!(
        Path::new(DEBTRANSFORM).is_file(),
        "{DEBTRANSFORM} is missing: run scripts/test (it installs obs-build)"
    );
    let (input, output) = (work.join("in"), work.join("out"));
    std::fs::create_dir_all(&output).expect("out");
    std::fs::create_dir_all(&input).expect("in");
    for f in std::fs::read_dir(export_dir).expect("export dir").flatten() {
        std::fs::copy(f.path(), input.join(f.file_name())).expect("copy");
    }
    std::fs::copy(tarball, input.join(tarball.file_name().expect("name"))).expect("copy");
    let path = format!(
        "/usr/lib/obs-build:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    ok(Command::new(DEBTRANSFORM)
        .arg(&input)
        .arg(input.join(dsc))
        .arg(&output)
        .env("PATH", path));
    let dscs: Vec<PathBuf> = walk(&output)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dsc"))
        .collect();
    assert_eq!(dscs.len(), 1, "{dscs:?}");
    std::fs::create_dir_all(tree.parent().expect("parent")).expect("tree parent");
    ok(Command::new("dpkg-source")
        .arg("-x")
        .arg(&dscs[0])
        .arg(tree));
}

fn deb_contents(deb: &Path) -> Vec<String> {
    // mode, size, path (and link target); owners and dates are not compared.
    let text = ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut v: Vec<String> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[2], f[5..].join(" "))
        })
        .collect();
    v.sort();
    linked_as_sets(v)
}

/// Every name of a hard-link group as the file it is (`mode size path (linked)`): which
/// name carries the contents in a data.tar follows the archive order in korgpkg's one
/// pass and the path order in dh's, and both install the same tree.
fn linked_as_sets(v: Vec<String>) -> Vec<String> {
    let mut links = Vec::new();
    for l in &v {
        if let Some((name, target)) = l.strip_prefix('h').and_then(|r| r.split_once(" link to ")) {
            let name = name.rsplit(' ').next().unwrap_or(name).to_string();
            links.push((name, target.to_string()));
        }
    }
    let file_of = |path: &str| {
        v.iter()
            .find(|l| l.starts_with('-') && l.ends_with(&format!(" {path}")))
            .cloned()
    };
    let mut out: Vec<String> = v
        .iter()
        .filter(|l| !l.starts_with('h'))
        .filter(|l| {
            !links
                .iter()
                .any(|(_, t)| l.starts_with('-') && l.ends_with(&format!(" {t}")))
        })
        .cloned()
        .collect();
    for (name, target) in &links {
        let file = file_of(target).expect("a hard link's target is in the package");
        let (mode_size, _) = file.rsplit_once(' ').expect("mode size path");
        for p in [name, target] {
            out.push(format!("{mode_size} {p} (linked)"));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn check_dpkg_buildpackage(package: &str, tarball: &Path, extra: &[&str]) {
    need_tool("dpkg-buildpackage");
    need_tool("dh");
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("obs");
    let report = export_with(package, tarball, &out, extra);
    let version = report["version"].as_str().expect("version");
    let tree = tmp.path().join("src").join(format!("{package}-{version}"));
    let dsc = format!("{package}.dsc");
    debtransform(&out, tarball, &dsc, &tmp.path().join("debtransform"), &tree);
    ok(Command::new("dpkg-buildpackage")
        .args(["-b", "-us", "-uc", "-d"])
        .current_dir(&tree)
        .env("DEB_BUILD_OPTIONS", "nocheck"));
    let debs: Vec<PathBuf> = walk(&tmp.path().join("src"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let theirs = &debs[0];
    let args: Vec<&str> = ["-f", "deb"].iter().chain(extra).copied().collect();
    let built = build_json(package, tarball, &tmp.path().join("dist"), &args);
    let ours = output_path(&built, "deb");
    let (t, o) = (deb_contents(theirs), deb_contents(&ours));
    let prefix = report["prefix"].as_str().expect("prefix");
    let under = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|l| l.contains(&format!(" .{prefix}/")))
            .cloned()
            .collect()
    };
    assert!(!under(&o).is_empty());
    assert_eq!(under(&t), under(&o), "files below {prefix} differ");
    assert_eq!(t, o, "whole file lists differ");
    for field in [
        "Package",
        "Version",
        "Architecture",
        "Depends",
        "Recommends",
    ] {
        let f = |deb: &Path| ok(Command::new("dpkg-deb").args(["-f"]).arg(deb).arg(field));
        assert_eq!(f(theirs), f(&ours), "{field} differs");
    }
}

#[test]
fn exported_debian_sources_build_with_dpkg_buildpackage_like_korgpkgs_deb() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    check_dpkg_buildpackage("korg-clang-18", &tarball, &[]);
}

#[test]
fn exported_debian_sources_of_a_nested_top_dir_build_with_dpkg_buildpackage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = crosstool_tarball(tmp.path());
    check_dpkg_buildpackage("korg-gcc-14-aarch64-linux", &tarball, &[]);
}

#[test]
fn a_specs_exclude_globs_apply_to_the_exported_sources_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let specs = tmp.path().join("specs");
    std::fs::create_dir_all(&specs).expect("specs");
    let llvm = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/llvm.toml"))
        .expect("llvm.toml");
    // Top-level keys go before the first table.
    let llvm = llvm.replacen(
        "\n[",
        "\nexclude = [\"lib/clang/18/include/*.h\", \"README.md\"]\n\n[",
        1,
    );
    std::fs::write(specs.join("llvm.toml"), llvm).expect("spec");
    let specs = specs.to_string_lossy().into_owned();
    let extra = ["--specs-dir", specs.as_str()];
    let out = tmp.path().join("obs");
    export_with("korg-clang-18", &tarball, &out, &extra);
    let spec = std::fs::read_to_string(out.join("korg-clang-18.spec")).expect("spec");
    assert!(
        spec.contains("'--exclude=llvm-18.1.8-x86_64/README.md'"),
        "{spec}"
    );
    check_rpmbuild(
        "korg-clang-18",
        &tarball,
        "llvm-18.1.8-x86_64.tar.sign",
        &extra,
    );
    check_dpkg_buildpackage("korg-clang-18", &tarball, &extra);
}

fn push(
    obs: &FakeObs,
    project: &str,
    tarball: &Path,
    oscrc: &Path,
    extra: &[&str],
) -> std::process::Output {
    run(kp()
        .args(["obs", "push", "korg-clang-18", "--allow-unverified"])
        .arg("--from")
        .arg(tarball)
        .args(["--api", &obs.api(), "--project", project])
        .arg("--oscrc")
        .arg(oscrc)
        .args(extra))
}

fn llvm(dir: &Path, version: &str) -> PathBuf {
    let top = format!("llvm-{version}-x86_64");
    write(
        dir,
        &format!("{top}.tar.xz"),
        &xz(&tar_bytes(&llvm_items(&top))),
    )
}

#[test]
fn push_creates_uploads_commits_once_and_then_only_changes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let obs = FakeObs::start(&["home:tester:korg"]);
    let rc = oscrc(tmp.path(), &obs.api(), PASSWORD);
    let v1 = llvm(tmp.path(), "18.1.8");
    let prj = "home:tester:korg";

    // A dry run changes nothing.
    let out = push(&obs, prj, &v1, &rc, &["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would create package home:tester:korg/korg-clang-18"),
        "{text}"
    );
    assert!(text.contains("would upload korg-clang-18.spec"), "{text}");
    let log = obs.take_log();
    assert!(log.iter().all(|l| l.starts_with("GET ")), "{log:?}");

    // First push: meta created, every file uploaded, one commit naming version and sha256.
    let out = push(&obs, prj, &v1, &rc, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("push --json");
    assert_eq!(report["created"], true);
    assert_eq!(report["dry_run"], false);
    assert_eq!(
        report["changed"].as_array().map(Vec::len),
        Some(7),
        "{report}"
    );
    let log = obs.take_log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("PUT /source/home:tester:korg/korg-clang-18/_meta")),
        "{log:?}"
    );
    let all: BTreeSet<String> = [
        "_service",
        "debian.changelog",
        "debian.control",
        "debian.copyright",
        "debian.rules",
        "korg-clang-18.dsc",
        "korg-clang-18.spec",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(puts(&log), all);
    assert_eq!(commits(&log), 1);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&v1).expect("v1"),
    ));
    {
        let st = obs.state.lock().expect("state");
        let p = &st.packages[&(prj.to_string(), "korg-clang-18".to_string())];
        assert_eq!(p.commits.len(), 1);
        assert!(
            p.commits[0].contains("18.1.8") && p.commits[0].contains(&sha),
            "{:?}",
            p.commits
        );
        // What was committed is what `obs export` writes.
        let dir = tmp.path().join("export1");
        export("korg-clang-18", &v1, &dir);
        for (name, bytes) in &p.files {
            assert_eq!(
                &std::fs::read(dir.join(name)).expect("exported"),
                bytes,
                "{name}"
            );
        }
    }

    // Second push, nothing changed: no upload, no commit.
    let out = push(&obs, prj, &v1, &rc, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up to date"));
    let log = obs.take_log();
    assert!(puts(&log).is_empty(), "{log:?}");
    assert_eq!(commits(&log), 0, "{log:?}");
    assert!(log.iter().all(|l| l.starts_with("GET ")), "{log:?}");

    // A new upstream version: only the files whose content changed are sent.
    let v2 = llvm(tmp.path(), "18.1.9");
    let (d1, d2) = (tmp.path().join("e1"), tmp.path().join("e2"));
    export("korg-clang-18", &v1, &d1);
    export("korg-clang-18", &v2, &d2);
    let changed: BTreeSet<String> = all
        .iter()
        .filter(|n| std::fs::read(d1.join(n)).ok() != std::fs::read(d2.join(n)).ok())
        .cloned()
        .collect();
    assert!(changed.contains("korg-clang-18.spec") && changed.contains("_service"));
    assert!(!changed.contains("debian.rules"));
    let out = push(&obs, prj, &v2, &rc, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = obs.take_log();
    assert_eq!(puts(&log), changed, "{log:?}");
    assert_eq!(commits(&log), 1);
    assert!(!log
        .iter()
        .any(|l| l.contains("/_meta") && l.starts_with("PUT")));
    let st = obs.state.lock().expect("state");
    let p = &st.packages[&(prj.to_string(), "korg-clang-18".to_string())];
    assert!(p.commits[1].contains("18.1.9"), "{:?}", p.commits);
}

#[test]
fn push_reports_401_404_and_409_in_one_line_with_exit_6() {
    let tmp = tempfile::tempdir().expect("tmp");
    let obs = FakeObs::start(&["home:tester:korg", "home:tester:locked"]);
    let v1 = llvm(tmp.path(), "18.1.8");

    let bad = oscrc(tmp.path(), &obs.api(), "wrong");
    let out = push(&obs, "home:tester:korg", &v1, &bad, &[]);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("401 Unauthorized") && err.contains(USER),
        "{err}"
    );

    let good = oscrc(tmp.path(), &obs.api(), PASSWORD);
    let out = push(&obs, "home:nobody", &v1, &good, &[]);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("404") && err.contains("project home:nobody does not exist"),
        "{err}"
    );
    assert!(!obs.take_log().iter().any(|l| !l.starts_with("GET ")));

    let out = push(&obs, "home:tester:locked", &v1, &good, &[]);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("409 Conflict: project home:tester:locked is locked"),
        "{err}"
    );

    // Credentials from the environment win over oscrc.
    let out = run(kp()
        .args([
            "obs",
            "status",
            "--api",
            &obs.api(),
            "--project",
            "home:tester:korg",
        ])
        .arg("--oscrc")
        .arg(&bad)
        .env("OBS_USER", USER)
        .env("OBS_PASSWORD", PASSWORD));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn status_summarises_build_results() {
    let tmp = tempfile::tempdir().expect("tmp");
    let obs = FakeObs::start(&["home:tester:korg"]);
    let rc = oscrc(tmp.path(), &obs.api(), PASSWORD);
    let text = ok(kp()
        .args(["obs", "status", "--project", "home:tester:korg", "--oscrc"])
        .arg(&rc));
    assert!(
        text.contains("Debian_12/x86_64 (published): 1 succeeded"),
        "{text}"
    );
    assert!(
        text.contains("Fedora_Rawhide/aarch64 (building): 1 failed"),
        "{text}"
    );
    assert!(text.contains("  korg-clang-18: failed"), "{text}");
    let json = ok(kp()
        .args([
            "obs",
            "status",
            "--project",
            "home:tester:korg",
            "--json",
            "--oscrc",
        ])
        .arg(&rc));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[1]["packages"]["korg-clang-18"], "failed");
    let log = obs.take_log();
    assert_eq!(log.len(), 2);
    assert!(
        log[0].starts_with("GET /build/home:tester:korg/_result"),
        "{log:?}"
    );
}

#[test]
fn push_refuses_plain_http_to_other_hosts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let v1 = llvm(tmp.path(), "18.1.8");
    let out = run(kp()
        .args([
            "obs",
            "push",
            "korg-clang-18",
            "--allow-unverified",
            "--from",
        ])
        .arg(&v1)
        .args(["--api", "http://obs.example.invalid", "--project", "p"])
        .env("OBS_USER", USER)
        .env("OBS_PASSWORD", PASSWORD));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
}

// ---------------------------------------------------------------------------------------
// Export of a discovered release (no --from): verified like `korgpkg build`

mod mirror {
    use super::*;
    use common::server::Server;
    use korgpkg::verify::testkeys::{self, Hash, KeyOptions, TestKey};

    pub const DIR: &str = "/pub/tools/llvm/files";

    /// A signed test mirror with LLVM 18.1.0-rc3 and 18.1.8, a spec pinning the test
    /// keys, and a keyring holding them.
    pub struct Mirror {
        pub tmp: tempfile::TempDir,
        pub server: Server,
        pub signatures: BTreeMap<String, Vec<u8>>,
        pub tarballs: BTreeMap<String, Vec<u8>>,
    }

    impl Mirror {
        pub fn new() -> Mirror {
            let autosigner = testkeys::generate(
                "Test autosigner <autosigner@test.invalid>",
                KeyOptions::default(),
            );
            let dev: TestKey = testkeys::generate(
                "Test Developer <dev@test.invalid>",
                KeyOptions {
                    signing_subkey: true,
                    certify_only: true,
                    ..KeyOptions::default()
                },
            );
            let m = Mirror {
                tmp: tempfile::tempdir().expect("tmp"),
                server: Server::start(),
                signatures: BTreeMap::new(),
                tarballs: BTreeMap::new(),
            };
            let mut m = m;
            let mut sums = String::new();
            for v in ["18.1.0-rc3", "18.1.8"] {
                let top = format!("llvm-{v}-x86_64");
                let tar = tar_bytes(&llvm_items(&top));
                let xz = xz(&tar);
                let sig = dev.sign_detached(&tar, Hash::Sha256, true, true);
                sums.push_str(&format!(
                    "{}  {top}.tar.xz\n",
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&xz))
                ));
                m.server.file(&format!("{DIR}/{top}.tar.xz"), xz.clone());
                m.server.file(&format!("{DIR}/{top}.tar.sign"), sig.clone());
                m.tarballs.insert(v.to_string(), xz);
                m.signatures.insert(v.to_string(), sig);
            }
            m.server.file(
                &format!("{DIR}/sha256sums.asc"),
                autosigner.sign_cleartext(&sums, Hash::Sha256),
            );
            let specs = m.tmp.path().join("specs");
            std::fs::create_dir_all(&specs).expect("specs");
            let llvm =
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/llvm.toml"))
                    .expect("llvm.toml")
                    .replace(
                        "B8868C80BA62A1FFFAF5FDA9632D3A06589DA6B1",
                        &autosigner.fingerprint(),
                    )
                    .replace(
                        "2437CB76E544CB6AB3D9DFD399739260CB6CB716",
                        &dev.fingerprint(),
                    );
            std::fs::write(specs.join("llvm.toml"), llvm).expect("spec");
            let mut ring = autosigner.public_armored();
            ring.push_str(&dev.public_armored());
            std::fs::write(m.tmp.path().join("keyring.asc"), ring).expect("keyring");
            m
        }

        /// korgpkg pointed at this mirror, keyring and a private cache; key fetching off.
        pub fn korgpkg(&self) -> Command {
            let mut c = kp();
            c.arg("--mirror")
                .arg(self.server.url("/pub/tools"))
                .arg("--specs-dir")
                .arg(self.tmp.path().join("specs"))
                .arg("--keyring")
                .arg(self.tmp.path().join("keyring.asc"))
                .arg("--cache-dir")
                .arg(self.tmp.path().join("cache"))
                .args(["--keys-url", ""]);
            c
        }
    }
}

#[test]
fn export_of_a_discovered_release_pins_the_verified_tarball_and_signature() {
    let m = mirror::Mirror::new();
    let out = m.tmp.path().join("obs");
    ok(m.korgpkg()
        .args([
            "obs",
            "export",
            "korg-clang-18",
            "--arch",
            "x86_64",
            "--out",
        ])
        .arg(&out));
    let service = std::fs::read_to_string(out.join("_service")).expect("_service");
    let sha = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
    let url = m
        .server
        .url(&format!("{}/llvm-18.1.8-x86_64.tar.xz", mirror::DIR));
    assert!(service.contains(&format!(">{url}<")), "{service}");
    assert!(service.contains(&sha(&m.tarballs["18.1.8"])), "{service}");
    assert!(
        service.contains(
            "<param name=\"file\">_service:download_url:llvm-18.1.8-x86_64.tar.sign</param>"
        ),
        "{service}"
    );
    assert!(service.contains(&sha(&m.signatures["18.1.8"])), "{service}");
    let spec = std::fs::read_to_string(out.join("korg-clang-18.spec")).expect("spec");
    assert!(spec.contains(&format!("Source0:        {url}")), "{spec}");

    // An older version, with rpm's and Debian's spelling of the rc.
    let rc = m.tmp.path().join("rc");
    ok(m.korgpkg()
        .args(["obs", "export", "korg-clang-18", "--arch", "x86_64"])
        .args(["--version", "18.1.0-rc3", "--out"])
        .arg(&rc));
    let spec = std::fs::read_to_string(rc.join("korg-clang-18.spec")).expect("spec");
    assert!(spec.contains("Version:        18.1.0~rc3\n"), "{spec}");
    let dsc = std::fs::read_to_string(rc.join("korg-clang-18.dsc")).expect("dsc");
    assert!(dsc.contains("Version: 18.1.0~rc3-1\n"), "{dsc}");
}

#[test]
fn export_refuses_a_bad_signature_and_writes_nothing() {
    let m = mirror::Mirror::new();
    // Replace 18.1.8's signature with 18.1.0-rc3's: a valid signature over other bytes.
    m.server.file(
        &format!("{}/llvm-18.1.8-x86_64.tar.sign", mirror::DIR),
        m.signatures["18.1.0-rc3"].clone(),
    );
    let out = m.tmp.path().join("obs");
    let o = run(m
        .korgpkg()
        .args([
            "obs",
            "export",
            "korg-clang-18",
            "--arch",
            "x86_64",
            "--out",
        ])
        .arg(&out));
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !out.exists(),
        "nothing is written for an unverified release"
    );
    let cache = m.tmp.path().join("cache");
    let cached: Vec<PathBuf> = (if cache.is_dir() {
        walk(&cache)
    } else {
        Vec::new()
    })
    .into_iter()
    .filter(|p| std::fs::read(p).ok().as_ref() == Some(&m.tarballs["18.1.8"]))
    .collect();
    assert!(
        cached.is_empty(),
        "the failed tarball is not kept: {cached:?}"
    );
}
