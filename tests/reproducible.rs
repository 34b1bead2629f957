//! Same inputs and SOURCE_DATE_EPOCH give byte-identical packages, whatever the
//! directory, umask and time zone; mtimes are clamped to SOURCE_DATE_EPOCH.

mod common;
use common::*;
use std::process::Command;

fn build_in(dir: &std::path::Path, umask: &str, tz: &str) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let tarball = llvm_tarball(dir);
    let out = dir.join("out");
    let script = format!(
        "umask {umask} && exec \"$0\" build korg-clang-18 --from \"$1\" --allow-unverified --out \"$2\" --format deb,rpm,ipk"
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_korgpkg"))
        .arg(&tarball)
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "1600000000")
        .env("TZ", tz)
        .env("XDG_CONFIG_HOME", "/nonexistent");
    ok(&mut c);
    let mut files: Vec<(String, Vec<u8>)> = dir_listing(&out)
        .into_iter()
        .map(|n| {
            let b = std::fs::read(out.join(&n)).expect("read output");
            (n, b)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn builds_in_different_dirs_umasks_and_timezones_are_identical() {
    let a = tempfile::tempdir().expect("a");
    let b = tempfile::tempdir().expect("b");
    let one = build_in(&a.path().join("first/place"), "022", "UTC");
    let two = build_in(&b.path().join("elsewhere"), "077", "America/New_York");
    assert_eq!(
        one.len(),
        3,
        "three packages: {:?}",
        one.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((n1, b1), (n2, b2)) in one.iter().zip(&two) {
        assert_eq!(n1, n2);
        assert!(b1 == b2, "{n1} differs between the two builds");
    }
}

#[test]
fn mtimes_are_clamped_to_source_date_epoch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let files = build_in(tmp.path(), "022", "UTC");
    let (name, _) = files
        .iter()
        .find(|(n, _)| n.ends_with(".deb"))
        .expect("deb");
    let deb = tmp.path().join("out").join(name);
    let listing = ok(Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -tv --full-time")
        .arg("sh")
        .arg(&deb)
        .env("TZ", "UTC"));
    assert!(!listing.is_empty());
    for line in listing.lines() {
        assert!(
            line.contains("2020-09-13 12:26:40"),
            "mtime not clamped to SOURCE_DATE_EPOCH: {line}"
        );
    }
}
