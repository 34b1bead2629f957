//! apt repositories checked with the real `apt-get` (Debian's apt, its own Dir settings,
//! the repository's keyring as `signed-by`), served by `korgpkg serve` on 127.0.0.1.

mod common;

use common::repo::{llvm_packages, AptRoot, TestRepo};
use common::{korgpkg, need_tool, ok, run};
use std::path::{Path, PathBuf};
use std::process::Command;

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x20;
    // Replace (not modify) the file: by-hash copies may share nothing, but be safe.
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, b).unwrap();
}

fn files_named(dir: &Path, prefix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_named(&p, prefix, out);
        } else {
            out.push(p);
        }
    }
    out.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix) || n.len() >= 64)
    });
}

#[test]
fn apt_get_update_and_install_from_a_served_repository() {
    need_tool("apt-get");
    let repo = TestRepo::new(
        false,
        &[
            "--arch", "amd64", "--arch", "arm64", "--suite", "stable", "--suite", "testing",
        ],
    );
    let (deb, rpm, ipk) = llvm_packages(repo.tmp.path());
    let out = repo.publish(&[&deb, &rpm, &ipk]);
    assert!(out.contains("added deb korg-clang-18"), "{out}");

    let keyring = repo.root.join("apt/korg-archive-keyring.gpg");
    assert!(keyring.is_file());
    let line = format!(
        "deb [signed-by={}] {}/apt stable main",
        keyring.display(),
        repo.url
    );
    let apt = AptRoot::new(repo.tmp.path(), &line);
    let (good, text) = apt.update();
    assert!(good, "apt-get update failed:\n{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("W:") || l.starts_with("E:")),
        "apt-get update warned:\n{text}"
    );

    // Release: both hash lists, by-hash, dates.
    let release = std::fs::read_to_string(repo.root.join("apt/dists/stable/Release")).unwrap();
    for f in [
        "SHA256:",
        "SHA512:",
        "Acquire-By-Hash: yes",
        "Valid-Until: ",
        "Date: ",
        "Architectures: amd64 arm64",
        "Components: main",
        "Codename: stable",
        "main/binary-arm64/Packages.xz",
    ] {
        assert!(release.contains(f), "Release lacks {f}:\n{release}");
    }
    let packages = std::fs::read_to_string(
        repo.root
            .join("apt/dists/stable/main/binary-amd64/Packages"),
    )
    .unwrap();
    for f in [
        "Filename: pool/main/k/korg-clang-18/",
        "Size: ",
        "SHA256: ",
        "MD5sum: ",
    ] {
        assert!(packages.contains(f), "Packages lacks {f}:\n{packages}");
    }

    // Install into the isolated root.
    let o = run(apt.apt("apt-get").args(["install", "-y", "korg-clang-18"]));
    assert!(
        o.status.success(),
        "apt-get install failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let clang = apt.dir.join("usr/lib/korg/llvm-18/bin/clang-18");
    assert!(clang.is_file(), "{} not installed", clang.display());
    let status = ok(Command::new("dpkg")
        .arg(format!("--root={}", apt.dir.display()))
        .args(["-s", "korg-clang-18"]));
    assert!(status.contains("Status: install ok installed"), "{status}");

    // A second generation keeps the first one's indexes reachable by hash.
    let old_sha = release
        .lines()
        .find(|l| l.ends_with("main/binary-amd64/Packages.xz"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let o = ok(korgpkg()
        .args(["publish", "--suite", "testing", "--repo"])
        .arg(&repo.root)
        .arg(&deb));
    assert!(o.contains("added deb"), "{o}");
    let by_hash = repo
        .root
        .join("apt/dists/stable/main/binary-amd64/by-hash/SHA256")
        .join(&old_sha);
    assert!(
        by_hash.is_file(),
        "previous generation's Packages.xz is gone from by-hash"
    );
    let (good, text) = apt.update();
    assert!(
        good,
        "apt-get update after a second publish failed:\n{text}"
    );

    // Tampered Packages (every copy of the compressed and plain index) is refused.
    let dir = std::fs::canonicalize(repo.root.join("apt/dists/stable/main/binary-amd64")).unwrap();
    let mut files = Vec::new();
    files_named(&dir, "Packages", &mut files);
    let saved: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    for p in &files {
        flip_byte(p, 40);
    }
    let (good, text) = apt.update();
    assert!(
        !good,
        "apt-get update accepted a tampered Packages:\n{text}"
    );
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    let (good, text) = apt.update();
    assert!(good, "restoring Packages did not help:\n{text}");

    // Tampered InRelease is refused.
    let inrelease = std::fs::canonicalize(repo.root.join("apt/dists/stable/InRelease")).unwrap();
    let original = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        original.replacen("Suite: stable", "Suite: stablE", 1),
    )
    .unwrap();
    let (good, text) = apt.update();
    assert!(
        !good || text.contains("W:"),
        "apt-get update accepted a tampered InRelease:\n{text}"
    );
    assert!(
        text.contains("NOSPLIT")
            || text.contains("not signed")
            || text.contains("BADSIG")
            || text.contains("invalid"),
        "{text}"
    );
}

#[test]
fn bad_input_leaves_the_repository_untouched() {
    let repo = TestRepo::new(false, &["--arch", "arm64"]);
    let (deb, _, _) = llvm_packages(repo.tmp.path());
    let snapshot = |r: &TestRepo| {
        (
            std::fs::read(r.root.join(".korgpkg/state.json")).unwrap(),
            std::fs::read(r.root.join("apt/dists/stable/InRelease")).unwrap(),
        )
    };
    let before = snapshot(&repo);
    // A publish of `file` fails with exit 4, names `needle`, and changes nothing.
    let refused = |file: &std::path::Path, needle: &str, before: &(Vec<u8>, Vec<u8>)| {
        let o = run(korgpkg()
            .args(["publish", "--repo"])
            .arg(&repo.root)
            .arg(file));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{err}");
        assert!(err.contains(needle), "{err}");
        assert_eq!(&snapshot(&repo), before);
    };

    // Not a package.
    let junk = repo.tmp.path().join("junk.deb");
    std::fs::write(&junk, b"this is not a package").unwrap();
    refused(&junk, "junk.deb", &before);

    // Unknown arch (the repository only has arm64).
    refused(&deb, "amd64", &before);

    // Same name/version/arch, different content.
    let def = repo.root.join("korgpkg-repo.toml");
    let text = std::fs::read_to_string(&def).unwrap();
    std::fs::write(&def, text.replace("\"arm64\"", "\"arm64\", \"amd64\"")).unwrap();
    repo.publish(&[&deb]);
    let before = snapshot(&repo);
    let other = repo.tmp.path().join("other");
    let tarball = common::llvm_tarball(repo.tmp.path());
    let o = run(korgpkg()
        .env("SOURCE_DATE_EPOCH", "1600000000")
        .args([
            "build",
            "korg-clang-18",
            "--format",
            "deb",
            "--allow-unverified",
            "--from",
        ])
        .arg(&tarball)
        .arg("--out")
        .arg(&other));
    assert!(o.status.success());
    refused(&other, "different content", &before);

    // Publishing the same file again is a no-op success.
    let out = repo.publish(&[&deb]);
    assert!(out.contains("unchanged deb korg-clang-18"), "{out}");

    // list and remove.
    let list = ok(korgpkg().args(["repo", "list"]).arg(&repo.root));
    assert!(list.contains("deb korg-clang-18 18.1.8-1 amd64"), "{list}");
    ok(korgpkg()
        .args(["repo", "remove"])
        .arg(&repo.root)
        .arg("korg-clang-18"));
    let list = ok(korgpkg().args(["repo", "list"]).arg(&repo.root));
    assert!(list.trim().is_empty(), "{list}");
    let packages = std::fs::read_to_string(
        repo.root
            .join("apt/dists/stable/main/binary-amd64/Packages"),
    )
    .unwrap();
    assert!(packages.is_empty(), "{packages}");
}

#[test]
fn same_inputs_and_source_date_epoch_give_identical_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    ok(korgpkg()
        .args(["key", "generate", "--name", "repro", "--out"])
        .arg(&keys));
    let (deb, rpm, ipk) = llvm_packages(tmp.path());
    let make = |name: &str| {
        let root = tmp.path().join(name);
        ok(korgpkg()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["repo", "init"])
            .arg(&root)
            .arg("--keys")
            .arg(&keys));
        ok(korgpkg()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["publish", "--repo"])
            .arg(&root)
            .args([&deb, &rpm, &ipk]));
        root
    };
    let (a, b) = (make("a"), make("b"));
    for f in [
        "apt/dists/stable/Release",
        "apt/dists/stable/InRelease",
        "apt/dists/stable/Release.gpg",
        "apt/dists/stable/main/binary-amd64/Packages.xz",
        "rpm/repodata/repomd.xml",
        "rpm/repodata/repomd.xml.asc",
        "rpm/Packages/korg-clang-18-18.1.8-1.x86_64.rpm",
        "opkg/openembedded/Packages",
        "opkg/openembedded/Packages.asc",
        "opkg-pool/openembedded/korg-clang-18_18.1.8-1_x86_64.ipk.asc",
    ] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(x == y, "{f} differs between identical publishes");
    }
    let release = std::fs::read_to_string(a.join("apt/dists/stable/Release")).unwrap();
    assert!(
        release.contains("Date: Tue, 14 Nov 2023 22:13:20 UTC"),
        "{release}"
    );
}

#[test]
fn adding_a_package_does_not_reread_the_packages_already_published() {
    // Publish korg-clang-18, then make its pool file unreadable as a package. Adding
    // korg-clang-17 must still succeed and keep korg-clang-18's index entry as it was:
    // proof that the add read only the new package (entries come from the state cache).
    let repo = TestRepo::new(false, &[]);
    let (deb18, _, _) = llvm_packages(repo.tmp.path());
    repo.publish(&[&deb18]);
    let packages = repo
        .root
        .join("apt/dists/stable/main/binary-amd64/Packages");
    let stanza18 = std::fs::read_to_string(&packages).unwrap();
    let mut pool = Vec::new();
    files_named(&repo.root.join("apt/pool"), "korg-clang-18_", &mut pool);
    assert_eq!(pool.len(), 1, "{pool:?}");
    std::fs::write(&pool[0], b"not a package any more").unwrap();

    let tarball = common::write(
        repo.tmp.path(),
        "llvm-17.0.6-x86_64.tar.xz",
        &common::xz(&common::tar_bytes(&common::llvm_items(
            "llvm-17.0.6-x86_64",
        ))),
    );
    let report = common::build_json(
        "korg-clang-17",
        &tarball,
        &repo.tmp.path().join("dist17"),
        &["--format", "deb"],
    );
    let deb17 = common::output_path(&report, "deb");
    let out = repo.publish(&[&deb17]);
    assert!(out.contains("added deb korg-clang-17"), "{out}");
    let after = std::fs::read_to_string(&packages).unwrap();
    assert!(after.contains("Package: korg-clang-17"), "{after}");
    assert!(
        after.contains(stanza18.trim()),
        "korg-clang-18's entry changed:\n{after}"
    );
}

/// Every regular file below `dir` (following the index symlinks), by relative path.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(".korgpkg") || rel.ends_with("/pool") {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn parallel_and_single_threaded_publishes_give_identical_repositories() {
    // Enough packages for the batched import (many pool files, one file-system sync):
    // nine revisions of korg-clang-18 in all three formats. Publishing them with one
    // worker thread and with four must give the same pools and indexes, byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    ok(korgpkg()
        .args(["key", "generate", "--name", "repro", "--out"])
        .arg(&keys));
    let tarball = common::llvm_tarball(tmp.path());
    let mut files = Vec::new();
    for rev in 1..=9 {
        let report = common::build_json(
            "korg-clang-18",
            &tarball,
            &tmp.path().join(format!("dist-{rev}")),
            &["--revision", &rev.to_string()],
        );
        for f in ["deb", "rpm", "ipk"] {
            files.push(common::output_path(&report, f));
        }
    }
    let make = |name: &str, threads: &str| {
        let root = tmp.path().join(name);
        ok(korgpkg()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["repo", "init"])
            .arg(&root)
            .arg("--keys")
            .arg(&keys));
        let out = ok(korgpkg()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("KORGPKG_THREADS", threads)
            .args(["publish", "--repo"])
            .arg(&root)
            .args(&files));
        assert_eq!(out.matches("added ").count(), 27, "{out}");
        root
    };
    let (one, four) = (make("one", "1"), make("four", "4"));
    let (a, b) = (tree(&one), tree(&four));
    assert!(
        a.keys().any(|k| k.ends_with("Packages.xz")) && a.len() > 40,
        "{:?}",
        a.keys()
    );
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different files"
    );
    for (k, v) in &a {
        assert!(b[k] == *v, "{k} differs between 1 and 4 threads");
    }
    let packages =
        String::from_utf8(a["apt/dists/stable/main/binary-amd64/Packages"].clone()).unwrap();
    assert_eq!(packages.matches("Package: korg-clang-18\n").count(), 9);
}

#[test]
fn a_pool_file_left_by_a_killed_publisher_is_replaced() {
    // A publisher killed after renaming a pool file into place but before saving its
    // state leaves a file no index refers to, possibly with incomplete content when the
    // batched sync had not run. The next publish of that package replaces it.
    let repo = TestRepo::new(false, &[]);
    let (deb, _, _) = llvm_packages(repo.tmp.path());
    let pool = repo
        .root
        .join("apt/pool/main/k/korg-clang-18/korg-clang-18_18.1.8-1_amd64.deb");
    std::fs::create_dir_all(pool.parent().unwrap()).unwrap();
    std::fs::write(&pool, b"").unwrap();
    let out = repo.publish(&[&deb]);
    assert!(out.contains("added deb korg-clang-18"), "{out}");
    assert!(std::fs::read(&pool).unwrap() == std::fs::read(&deb).unwrap());
    let packages = std::fs::read_to_string(
        repo.root
            .join("apt/dists/stable/main/binary-amd64/Packages"),
    )
    .unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&deb).unwrap()))
    };
    assert!(packages.contains(&format!("SHA256: {sha}")), "{packages}");
}
