//! dnf repositories checked with the real `dnf` (Debian's dnf, `--installroot`, the
//! generated `.repo` file with gpgcheck=1 and repo_gpgcheck=1) and `rpm -K`, served by
//! `korgpkg serve` on 127.0.0.1.

mod common;

use common::repo::{dnf, llvm_packages, provider_for, TestRepo};
use common::{need_tool, ok, run};
use std::path::Path;
use std::process::Command;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn dnf_makecache_and_install_with_repo_and_package_signatures() {
    need_tool("dnf");
    need_tool("rpmbuild");
    let repo = TestRepo::new(false, &[]);
    let (_, rpm, _) = llvm_packages(repo.tmp.path());
    let provider = provider_for(&rpm, repo.tmp.path());
    let out = repo.publish(&[&rpm, &provider]);
    assert!(out.contains("added rpm korg-clang-18"), "{out}");
    assert!(out.contains("added rpm korg-test-provider"), "{out}");

    let repodata = repo.root.join("rpm/repodata");
    let repomd = std::fs::read_to_string(repodata.join("repomd.xml")).unwrap();
    for kind in ["primary", "filelists", "other"] {
        assert!(
            repomd.contains(&format!("-{kind}.xml.zst\"")),
            "{kind} is not zstd:\n{repomd}"
        );
    }
    assert!(repodata.join("repomd.xml.asc").is_file());
    let repo_file = std::fs::read_to_string(repo.root.join("rpm/korg.repo")).unwrap();
    for l in ["gpgcheck=1", "repo_gpgcheck=1", "gpgkey=http://127.0.0.1:"] {
        assert!(repo_file.contains(l), "{repo_file}");
    }

    // The pool rpm carries a header signature that rpm -K accepts once the key is in.
    let pool_rpm = repo
        .root
        .join("rpm/Packages/korg-clang-18-18.1.8-1.x86_64.rpm");
    let rpmroot = repo.tmp.path().join("rpmroot");
    ok(Command::new("rpm")
        .arg("--root")
        .arg(&rpmroot)
        .arg("--initdb"));
    let o = run(Command::new("rpm")
        .arg("--root")
        .arg(&rpmroot)
        .arg("-K")
        .arg(&pool_rpm));
    assert!(!text(&o).contains("signatures OK"), "{}", text(&o));
    ok(Command::new("rpm")
        .arg("--root")
        .arg(&rpmroot)
        .arg("--import")
        .arg(repo.root.join("rpm/RPM-GPG-KEY-korg")));
    let o = ok(Command::new("rpm")
        .arg("--root")
        .arg(&rpmroot)
        .arg("-K")
        .arg(&pool_rpm));
    assert!(o.contains("digests signatures OK"), "{o}");
    let o = ok(Command::new("rpm")
        .arg("--root")
        .arg(&rpmroot)
        .arg("-Kv")
        .arg(&pool_rpm));
    assert!(
        o.contains("Header V4 EdDSA/SHA512 Signature") && o.contains(": OK"),
        "{o}"
    );

    // dnf: metadata and package signatures checked, installs into an empty root.
    let root = repo.tmp.path().join("dnfroot");
    let repos = repo.tmp.path().join("repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::copy(repo.root.join("rpm/korg.repo"), repos.join("korg.repo")).unwrap();
    let o = run(dnf(&root, &repos, "cache1").arg("makecache"));
    assert!(o.status.success(), "dnf makecache failed:\n{}", text(&o));
    let o = run(dnf(&root, &repos, "cache1").args(["install", "korg-clang-18"]));
    assert!(o.status.success(), "dnf install failed:\n{}", text(&o));
    let clang = root.join("usr/lib/korg/llvm-18/bin/clang-18");
    assert!(
        clang.is_file(),
        "{} not installed:\n{}",
        clang.display(),
        text(&o)
    );
    let q = ok(Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args(["-q", "korg-clang-18"]));
    assert!(q.starts_with("korg-clang-18-18.1.8-1"), "{q}");

    // A tampered repomd.xml is refused.
    let real = std::fs::canonicalize(repodata.join("repomd.xml")).unwrap();
    let original = std::fs::read_to_string(&real).unwrap();
    std::fs::write(&real, original.replacen("<revision>", "<revision>1", 1)).unwrap();
    let o = run(dnf(&root, &repos, "cache2").arg("makecache"));
    assert!(
        !o.status.success() && text(&o).contains("GPG signature verification error"),
        "dnf accepted a tampered repomd.xml:\n{}",
        text(&o)
    );
    std::fs::write(&real, original).unwrap();
    let o = run(dnf(&root, &repos, "cache3").arg("makecache"));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn gzip_metadata_for_old_yum_is_accepted_by_dnf() {
    need_tool("dnf");
    let repo = TestRepo::new(false, &[]);
    let def = repo.root.join("korgpkg-repo.toml");
    let text = std::fs::read_to_string(&def).unwrap();
    assert!(text.contains("compression = \"zstd\""), "{text}");
    std::fs::write(
        &def,
        text.replace("compression = \"zstd\"", "compression = \"gzip\""),
    )
    .unwrap();
    let (_, rpm, _) = llvm_packages(repo.tmp.path());
    repo.publish(&[&rpm]);
    let repomd = std::fs::read_to_string(repo.root.join("rpm/repodata/repomd.xml")).unwrap();
    assert!(repomd.contains("-primary.xml.gz\""), "{repomd}");
    let root = repo.tmp.path().join("dnfroot");
    let repos = repo.tmp.path().join("repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::copy(repo.root.join("rpm/korg.repo"), repos.join("korg.repo")).unwrap();
    let o = run(dnf(&root, &repos, "cache").args(["makecache"]));
    assert!(o.status.success(), "{}", text_of(&o));
    let o = ok(dnf(&root, &repos, "cache").args(["-q", "list", "--available", "korg-clang-18"]));
    assert!(o.contains("korg-clang-18"), "{o}");
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}

/// Corrupt the header signature of an rpm in place (same size): flip the last byte of
/// the OpenPGP signature in the signature header (tag 268 RSAHEADER for RSA keys, 267
/// DSAHEADER for the others).
fn break_header_signature(rpm: &Path) {
    let mut b = std::fs::read(rpm).unwrap();
    let sig = 96; // after the lead
    assert_eq!(
        &b[sig..sig + 4],
        &[0x8e, 0xad, 0xe8, 0x01],
        "signature header"
    );
    let n = u32::from_be_bytes(b[sig + 8..sig + 12].try_into().unwrap()) as usize;
    let store = sig + 16 + 16 * n;
    let mut hit = None;
    for i in 0..n {
        let e = &b[sig + 16 + 16 * i..sig + 32 + 16 * i];
        let tag = u32::from_be_bytes(e[0..4].try_into().unwrap());
        let offset = u32::from_be_bytes(e[8..12].try_into().unwrap()) as usize;
        let count = u32::from_be_bytes(e[12..16].try_into().unwrap()) as usize;
        if tag == 268 || tag == 267 {
            hit = Some(store + offset + count - 1);
        }
    }
    let at = hit.expect("the pool rpm has a header signature");
    b[at] ^= 0x55;
    std::fs::write(rpm, b).unwrap();
}

/// zypper with its own root, cache and configuration.
fn zypper(root: &Path) -> Command {
    let mut c = Command::new("zypper");
    c.arg("--root")
        .arg(root)
        .args(["--non-interactive", "--no-color"]);
    c
}

#[test]
fn zypper_and_dnf_refuse_a_package_whose_header_signature_is_broken() {
    need_tool("dnf");
    need_tool("zypper");
    need_tool("rpmbuild");
    let repo = TestRepo::new(false, &[]);
    let (_, rpm, _) = llvm_packages(repo.tmp.path());
    let provider = provider_for(&rpm, repo.tmp.path());
    repo.publish(&[&rpm, &provider]);
    let repo_file = std::fs::read_to_string(repo.root.join("rpm/korg.repo")).unwrap();
    assert!(repo_file.contains("\npkg_gpgcheck=1\n"), "{repo_file}");

    // zypper with the published .repo file: metadata and packages checked ("(r p)"),
    // and a good package installs.
    let zroot = repo.tmp.path().join("zroot");
    ok(zypper(&zroot)
        .arg("addrepo")
        .arg(format!("{}/rpm/korg.repo", repo.url)));
    let o = ok(zypper(&zroot).args(["repos", "--details"]));
    assert!(o.contains("korg"), "{o}");
    // zypper keeps the package check: openSUSE's libzypp checks packages of a signed
    // repository only with pkg_gpgcheck (Debian 12's 17.25 checks them either way).
    let added =
        std::fs::read_to_string(zroot.join("etc/zypp/repos.d/korg.repo")).expect("zypper's copy");
    assert!(added.contains("\npkg_gpgcheck=1\n"), "{added}");
    let o = ok(zypper(&zroot).args(["--gpg-auto-import-keys", "refresh"]));
    assert!(o.contains("korg"), "{o}");
    let o = ok(zypper(&zroot).args(["info", "--repo", "korg", "korg-clang-18"]));
    assert!(o.contains("korg-clang-18"), "{o}");

    // Break the pool rpm's header signature and let the repository list it as it now
    // is (its checksum in the state, then a publish writes new signed metadata), so only
    // the package signature stands between the client and the bytes.
    let pool_rpm = std::fs::canonicalize(
        repo.root
            .join("rpm/Packages/korg-clang-18-18.1.8-1.x86_64.rpm"),
    )
    .unwrap();
    let before = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&pool_rpm).unwrap(),
    ));
    break_header_signature(&pool_rpm);
    let after = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&pool_rpm).unwrap(),
    ));
    let o = run(Command::new("rpm").arg("-K").arg(&pool_rpm));
    assert!(!text(&o).contains("signatures OK"), "{}", text(&o));
    let state = repo.root.join(".korgpkg/state.json");
    let s = std::fs::read_to_string(&state).unwrap();
    assert!(s.contains(&before));
    std::fs::write(&state, s.replace(&before, &after)).unwrap();
    let other = common::crosstool_tarball(repo.tmp.path());
    let report = common::build_json(
        "korg-gcc-14-aarch64-linux",
        &other,
        &repo.tmp.path().join("other"),
        &["--format", "rpm"],
    );
    repo.publish(&[&common::output_path(&report, "rpm")]);

    let o = run(zypper(&zroot).args(["--gpg-auto-import-keys", "refresh", "--force"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = run(zypper(&zroot).args(["install", "--no-recommends", "korg-clang-18"]));
    assert!(
        !o.status.success() && !zroot.join("usr/lib/korg/llvm-18/bin/clang-18").exists(),
        "zypper installed a package with a broken signature:\n{}",
        text(&o)
    );
    assert!(
        text(&o).to_lowercase().contains("signature"),
        "{}",
        text(&o)
    );

    let root = repo.tmp.path().join("dnfroot");
    let repos = repo.tmp.path().join("repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::copy(repo.root.join("rpm/korg.repo"), repos.join("korg.repo")).unwrap();
    let o = run(dnf(&root, &repos, "cache").args(["install", "korg-clang-18"]));
    assert!(
        !o.status.success() && !root.join("usr/lib/korg/llvm-18/bin/clang-18").exists(),
        "dnf installed a package with a broken signature:\n{}",
        text(&o)
    );
    assert!(
        text(&o).to_lowercase().contains("signature") || text(&o).contains("GPG"),
        "{}",
        text(&o)
    );
}
