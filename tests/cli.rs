//! The command line: specs listing, dry runs, JSON, and clear errors for bad requests
//! and malformed specs (before any work starts).

mod common;
use common::*;

#[test]
fn specs_lists_both_toolchains() {
    let out = ok(korgpkg().arg("specs"));
    assert!(out.contains("korg-clang-{{major}}"), "{out}");
    assert!(out.contains("korg-gcc-{{major}}-{{target}}"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(korgpkg().args(["specs", "--json"]))).expect("json");
    let names: Vec<&str> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["spec"].as_str().expect("spec"))
        .collect();
    assert_eq!(names, ["crosstool", "llvm"]);
}

#[test]
fn help_shows_examples() {
    let out = ok(korgpkg().arg("--help"));
    assert!(
        out.contains("Examples:") && out.contains("korgpkg build korg-clang-18"),
        "{out}"
    );
    let out = ok(korgpkg().args(["build", "--help"]));
    assert!(
        out.contains("Examples:") && out.contains("--ipk-outer"),
        "{out}"
    );
}

#[test]
fn completions_are_generated() {
    let out = ok(korgpkg().args(["completions", "bash"]));
    assert!(out.contains("_korgpkg") && out.contains("inspect"), "{out}");
}

#[test]
fn dry_run_plans_without_writing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let out_dir = tmp.path().join("out");
    let o = build(
        "korg-clang-18",
        &tarball,
        &out_dir,
        &["--dry-run", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(plan["prefix"], "/usr/lib/korg/llvm-18");
    assert_eq!(plan["top_dir"], "llvm-18.1.8-x86_64");
    let files: Vec<String> = plan["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            o["path"]
                .as_str()
                .expect("path")
                .rsplit('/')
                .next()
                .expect("name")
                .to_string()
        })
        .collect();
    assert_eq!(
        files,
        [
            "korg-clang-18_18.1.8-1_amd64.deb",
            "korg-clang-18-18.1.8-1.x86_64.rpm",
            "korg-clang-18_18.1.8-1_x86_64.ipk"
        ]
    );
    assert!(
        !out_dir.exists(),
        "dry run must not create the output directory"
    );
}

#[test]
fn release_candidates_get_tilde_versions_and_revision() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = write(
        tmp.path(),
        "llvm-18.1.0-rc3-aarch64.tar.xz",
        b"unused by a dry run",
    );
    let o = build(
        "korg-clang-18",
        &tarball,
        &tmp.path().join("out"),
        &[
            "--dry-run",
            "--json",
            "--revision",
            "4",
            "--format",
            "deb",
            "--format",
            "rpm,ipk",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(plan["version"], "18.1.0~rc3");
    let names: Vec<&str> = plan["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["path"].as_str().expect("p"))
        .collect();
    assert!(
        names[0].ends_with("korg-clang-18_18.1.0~rc3-4_arm64.deb"),
        "{names:?}"
    );
    assert!(
        names[1].ends_with("korg-clang-18-18.1.0~rc3-4.aarch64.rpm"),
        "{names:?}"
    );
    assert!(
        names[2].ends_with("korg-clang-18_18.1.0~rc3-4_aarch64.ipk"),
        "{names:?}"
    );
}

fn fails_with(args: &[&str], code: i32, needle: &str) {
    let o = run(korgpkg().args(args));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error must be one line: {err}"
    );
}

#[test]
fn bad_requests_fail_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = write(tmp.path(), "llvm-17.0.6-x86_64.tar.xz", b"x");
    let t = t.to_str().expect("utf8");
    fails_with(
        &["build", "korg-clang-18", "--from", t, "--dry-run"],
        4,
        "has major 17",
    );
    fails_with(
        &["build", "korg-nope-1", "--from", t, "--dry-run"],
        2,
        "no spec offers a package named \"korg-nope-1\"",
    );
    let w = write(tmp.path(), "llvm-18.1.8-riscv64.tar.xz", b"x");
    fails_with(
        &[
            "build",
            "korg-clang-18",
            "--from",
            w.to_str().expect("utf8"),
            "--dry-run",
        ],
        4,
        "does not match spec llvm's tarball pattern",
    );
    fails_with(&["inspect", t], 4, "not a .deb, .rpm or .ipk");
}

#[test]
fn malformed_spec_names_file_and_field_before_any_work() {
    let tmp = tempfile::tempdir().expect("tmp");
    let specs = tmp.path().join("specs");
    std::fs::create_dir(&specs).expect("mkdir");
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/llvm.toml"))
        .expect("spec");
    let tarball = llvm_tarball(tmp.path());
    let out = tmp.path().join("out");
    let cases = [
        (
            good.replace(
                "section = \"devel\"",
                "section = \"devel\"\nsectoin = \"x\"",
            ),
            "sectoin",
        ),
        (
            good.replace("license = \"Apache-2.0 WITH LLVM-exception\"\n", ""),
            "license",
        ),
        (
            good.replace("korg-clang-{{major}}\"", "korg-clang-{{majr}}\""),
            "package.name",
        ),
        (
            good.replace("make LLVM={{prefix}}/bin/", "make LLVM={{#each}}"),
            "package.description",
        ),
        (
            good.replace(
                "depends = [\"libc6 (>= 2.17)\"]",
                "depends = [\"libc6 (>= 2.17\"]",
            ),
            "relations.deb.depends",
        ),
    ];
    for (text, field) in cases {
        std::fs::write(specs.join("llvm.toml"), &text).expect("write spec");
        let o = build(
            "korg-clang-18",
            &tarball,
            &out,
            &["--specs-dir", specs.to_str().expect("utf8")],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{field}: {err}");
        assert!(
            err.contains("llvm.toml") && err.contains(field),
            "{field}: {err}"
        );
        assert!(!out.exists(), "no work may start on a bad spec");
    }
}

#[test]
fn config_file_sets_defaults_and_bad_keys_are_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write(
        tmp.path(),
        "config.toml",
        b"formats = [\"rpm\"]\nrevision = 7\n",
    );
    let tarball = llvm_tarball(tmp.path());
    let o = run(korgpkg()
        .args([
            "--config",
            cfg.to_str().expect("utf8"),
            "build",
            "korg-clang-18",
            "--dry-run",
            "--json",
            "--allow-unverified",
            "--from",
        ])
        .arg(&tarball));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let outs = plan["outputs"].as_array().expect("outputs");
    assert_eq!(outs.len(), 1);
    assert!(outs[0]["path"]
        .as_str()
        .expect("p")
        .ends_with("korg-clang-18-18.1.8-7.x86_64.rpm"));
    let bad = write(tmp.path(), "bad.toml", b"revison = 7\n");
    fails_with(
        &["--config", bad.to_str().expect("utf8"), "specs"],
        3,
        "revison",
    );
}

#[test]
fn commands_end_quietly_when_their_reader_goes_away() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let out = tmp.path().join("out");
    let report = build_json("korg-clang-18", &tarball, &out, &["--format", "deb"]);
    let deb = output_path(&report, "deb");
    ends_quietly_into_closed_pipe(korgpkg().arg("specs"));
    ends_quietly_into_closed_pipe(korgpkg().args(["specs", "--json"]));
    ends_quietly_into_closed_pipe(korgpkg().arg("inspect").arg(&deb));
    ends_quietly_into_closed_pipe(korgpkg().arg("deps").arg(&tarball));
    // The same through a real `| head -1`.
    let piped = ok(std::process::Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; \"$0\" inspect \"$1\" | head -1; s=$?; [ $s = 0 ] || [ $s = 141 ]")
        .arg(env!("CARGO_BIN_EXE_korgpkg"))
        .arg(&deb));
    assert_eq!(piped.lines().count(), 1, "{piped}");
}

#[test]
fn unverified_builds_warn_once_and_say_so_in_every_text() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let out = tmp.path().join("out");
    let o = build("korg-clang-18", &tarball, &out, &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("UNVERIFIED"),
        "one warning line expected:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    for o in report["outputs"].as_array().expect("outputs") {
        // The kernel.org URL the file name implies, the local path apart (report only).
        assert_eq!(
            o["provenance"]["url"],
            "https://mirrors.edge.kernel.org/pub/tools/llvm/files/llvm-18.1.8-x86_64.tar.xz"
        );
        assert_eq!(
            o["provenance"]["local_path"],
            tarball.to_str().expect("utf-8 path")
        );
    }
    for format in ["deb", "rpm", "ipk"] {
        let info: serde_json::Value = serde_json::from_str(&ok(korgpkg()
            .arg("inspect")
            .arg("--json")
            .arg(output_path(&report, format))))
        .expect("json");
        let text = info["fields"]
            .get("Description")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            text.contains("NOT verified")
                && text.contains("UNVERIFIED")
                && !text.contains("signed by kernel.org")
                && !text.contains("from the verified"),
            "{format}: {text}"
        );
        assert!(
            !info
                .to_string()
                .contains(tmp.path().to_str().expect("utf-8")),
            "{format}: no local path in a package"
        );
    }
}
