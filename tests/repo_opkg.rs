//! opkg feeds: `Packages.sig` checked with `signify-openbsd -V` (OpenWrt's usign format),
//! `Packages.asc` with `gpgv`, and `Packages` parsed back to exactly what was published.
//! Also the key files `korgpkg key generate` writes (modes, passphrases).

mod common;

use common::repo::{llvm_packages, TestRepo};
use common::{build_json, crosstool_tarball, korgpkg, need_tool, ok, output_path, run};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let mut m = BTreeMap::new();
            for l in s.lines().filter(|l| !l.starts_with(' ')) {
                let (k, v) = l.split_once(':').expect("field");
                m.insert(k.to_string(), v.trim().to_string());
            }
            m
        })
        .collect()
}

/// The usign public key file in a feed (named by its 16-hex-digit key number).
fn usign_key_in(feed: &Path) -> PathBuf {
    std::fs::read_dir(feed)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 16 && n.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .expect("usign key file in the feed")
}

fn gpgv(keyring: &Path, sig: &Path, data: &Path) -> std::process::Output {
    run(Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .arg(sig)
        .arg(data))
}

fn signify(key: &Path, sig: &Path, data: &Path) -> std::process::Output {
    run(Command::new("signify-openbsd")
        .arg("-V")
        .arg("-p")
        .arg(key)
        .arg("-x")
        .arg(sig)
        .arg("-m")
        .arg(data))
}

/// Check that `Packages` (and `Packages.gz`) of `feed` list exactly `published`, each
/// Filename resolving to the same bytes; returns the stanzas.
fn check_lists(feed: &Path, published: &[&Path]) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(feed.join("Packages")).unwrap();
    let mut gz = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(feed.join("Packages.gz")).unwrap()),
        &mut gz,
    )
    .unwrap();
    assert_eq!(gz, text);
    let list = stanzas(&text);
    assert_eq!(list.len(), published.len(), "{text}");
    for (src, s) in published.iter().zip(&list) {
        let bytes = std::fs::read(src).unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&ok(korgpkg().arg("inspect").arg("--json").arg(src))).unwrap();
        assert_eq!(s["Package"], info["name"].as_str().unwrap());
        assert_eq!(s["Version"], info["version"].as_str().unwrap());
        assert_eq!(s["Architecture"], info["arch"].as_str().unwrap());
        assert_eq!(s["Size"], bytes.len().to_string());
        let sha = ok(Command::new("sha256sum").arg(src));
        assert_eq!(s["SHA256sum"], sha.split_whitespace().next().unwrap());
        assert!(s.contains_key("MD5Sum"));
        // The Filename resolves, through the served feed, to the same bytes.
        let served = std::fs::read(feed.join(&s["Filename"])).unwrap();
        assert_eq!(served, bytes);
    }
    list
}

/// With `KORGPKG_TEST_OPKG=/path/to/opkg` (and `KORGPKG_TEST_OPKG_FLAVOUR`, default
/// openembedded), install `package` from the served feed with that client, configured
/// by the feed's own snippet; otherwise say the client was skipped.
fn with_real_client(repo: &TestRepo, flavour: &str, package: &str, installed: &str) {
    let Some(opkg) = std::env::var_os("KORGPKG_TEST_OPKG") else {
        eprintln!(
            "skipped the {flavour} opkg client: set KORGPKG_TEST_OPKG=/path/to/opkg \
             (Yocto's and OpenWrt's opkg are not in Debian); checked with signify-openbsd, \
             gpgv and a parse of the feed instead"
        );
        return;
    };
    let wanted = std::env::var("KORGPKG_TEST_OPKG_FLAVOUR").unwrap_or("openembedded".into());
    if wanted != flavour {
        eprintln!("skipped the {flavour} opkg client: KORGPKG_TEST_OPKG is {wanted}'s");
        return;
    }
    let feed = repo.root.join("opkg").join(flavour);
    let root = repo.tmp.path().join(format!("opkg-root-{flavour}"));
    let etc = root.join("etc/opkg");
    std::fs::create_dir_all(etc.join("keys")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/opkg")).unwrap();
    let snippet = std::fs::read_to_string(feed.join("opkg.conf")).unwrap();
    let mut conf = format!(
        "dest root /\noption lists_dir {0}/var/lib/opkg/lists\noption info_dir {0}/var/lib/opkg/info\n\
         option status_file {0}/var/lib/opkg/status\narch all 1\narch x86_64 10\n",
        root.display()
    );
    if flavour == "openwrt" {
        let key = usign_key_in(&feed);
        std::fs::copy(&key, etc.join("keys").join(key.file_name().unwrap())).unwrap();
        conf.push_str("option check_signature 1\n");
    } else {
        // The snippet's key setup: import and trust the key in opkg's keyring.
        let gpg_dir = etc.join("gpg");
        std::fs::create_dir_all(&gpg_dir).unwrap();
        ok(Command::new("gpg")
            .arg("--homedir")
            .arg(&gpg_dir)
            .arg("--import")
            .arg(feed.join("korg.asc")));
        let fpr = snippet
            .lines()
            .find_map(|l| l.split('\'').nth(1).filter(|f| f.ends_with(":6:")))
            .expect("ownertrust line in the snippet");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("echo \"$1\" | gpg --homedir \"$2\" --import-ownertrust")
            .arg("sh")
            .arg(fpr)
            .arg(&gpg_dir);
        ok(&mut c);
        conf.push_str(&format!("option gpg_dir {}\n", gpg_dir.display()));
    }
    conf.push_str(&snippet);
    let conf_path = root.join("opkg.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let opkg_cmd = |args: &[&str]| {
        let mut c = Command::new(&opkg);
        c.arg("-f").arg(&conf_path).arg("-o").arg(&root).args(args);
        c
    };
    ok(&mut opkg_cmd(&["update"]));
    ok(&mut opkg_cmd(&["install", "--force-depends", package]));
    assert!(root.join(installed).is_file(), "{installed} not installed");
}

#[test]
fn opkg_feeds_for_openwrt_and_yocto_are_signed_and_parse_back() {
    need_tool("signify-openbsd");
    need_tool("gpgv");
    let repo = TestRepo::new(false, &[]);
    repo.serve_both_opkg_flavours();
    let (_, _, ipk_ar) = llvm_packages(repo.tmp.path());
    let tar = build_json(
        "korg-clang-18",
        &common::llvm_tarball(repo.tmp.path()),
        &repo.tmp.path().join("tar"),
        &["--format", "ipk", "--ipk-outer", "tar"],
    );
    let ipk_tar = output_path(&tar, "ipk");
    // Both outer forms of one package have the same file name; they live side by side.
    assert_eq!(ipk_ar.file_name(), ipk_tar.file_name());
    let cross = build_json(
        "korg-gcc-14-aarch64-linux",
        &crosstool_tarball(repo.tmp.path()),
        &repo.tmp.path().join("cross"),
        &["--format", "ipk", "--ipk-outer", "tar"],
    );
    let cross = output_path(&cross, "ipk");
    repo.publish(&[&ipk_ar, &ipk_tar, &cross]);
    let keyring = repo.keys.join("openpgp.pub.gpg");

    // OpenEmbedded: OpenPGP over Packages and over every package (check_pkg_signature).
    let oe = repo.root.join("opkg/openembedded");
    let o = gpgv(&keyring, &oe.join("Packages.asc"), &oe.join("Packages"));
    assert!(o.status.success(), "{o:?}");
    assert!(
        !oe.join("Packages.sig").exists(),
        "no usign signature for Yocto"
    );
    let list = check_lists(&oe, &[&ipk_ar]);
    let pkg = oe.join(&list[0]["Filename"]);
    let sig = oe.join(format!("{}.asc", list[0]["Filename"]));
    let o = gpgv(&keyring, &sig, &pkg);
    assert!(o.status.success(), "per-package signature: {o:?}");
    let o = gpgv(&keyring, &sig, &ipk_tar);
    assert!(
        !o.status.success(),
        "the signature covers the package's bytes"
    );
    let conf = std::fs::read_to_string(oe.join("opkg.conf")).unwrap();
    let tmp_home = repo.tmp.path().join("gnupg");
    std::fs::create_dir_all(&tmp_home).unwrap();
    let keys = ok(Command::new("gpg")
        .arg("--homedir")
        .arg(&tmp_home)
        .args(["--with-colons", "--show-keys"])
        .arg(repo.keys.join("openpgp.pub.asc")));
    let fpr = keys
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .expect("fingerprint")
        .to_string();
    for want in [
        format!("src/gz korg {}/opkg/openembedded\n", repo.url),
        "option check_signature 1\n".to_string(),
        "option signature_type gpg-asc\n".to_string(),
        "option check_pkg_signature 1\n".to_string(),
        format!("echo '{fpr}:6:' | gpg --homedir /etc/opkg/gpg --import-ownertrust"),
        format!("{}/opkg/openembedded/korg.asc", repo.url),
    ] {
        assert!(
            conf.contains(&want),
            "Yocto snippet lacks {want:?}:\n{conf}"
        );
    }

    // OpenWrt: usign over Packages, the key named by its key number.
    let wrt = repo.root.join("opkg/openwrt");
    let key = usign_key_in(&wrt);
    let o = signify(&key, &wrt.join("Packages.sig"), &wrt.join("Packages"));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Signature Verified"),
        "{o:?}"
    );
    assert!(!wrt.join("Packages.asc").exists());
    check_lists(&wrt, &[&ipk_tar, &cross]);
    let keynum = key.file_name().unwrap().to_str().unwrap();
    let conf = std::fs::read_to_string(wrt.join("opkg.conf")).unwrap();
    for want in [
        format!("src/gz korg {}/opkg/openwrt\n", repo.url),
        format!("/etc/opkg/keys/{keynum} {}/opkg/openwrt/{keynum}", repo.url),
    ] {
        assert!(
            conf.contains(&want),
            "OpenWrt snippet lacks {want:?}:\n{conf}"
        );
    }

    // Tampering breaks both signatures.
    for (feed, check) in [
        (
            &oe,
            &(|f: &Path| gpgv(&keyring, &f.join("Packages.asc"), &f.join("Packages")))
                as &dyn Fn(&Path) -> std::process::Output,
        ),
        (&wrt, &|f: &Path| {
            signify(&key, &f.join("Packages.sig"), &f.join("Packages"))
        }),
    ] {
        let real = std::fs::canonicalize(feed.join("Packages")).unwrap();
        let original = std::fs::read(&real).unwrap();
        let mut bad = original.clone();
        bad[10] ^= 1;
        std::fs::write(&real, &bad).unwrap();
        assert!(!check(feed).status.success(), "{}", feed.display());
        std::fs::write(&real, &original).unwrap();
        assert!(check(feed).status.success(), "{}", feed.display());
    }

    // Removing the package removes its signature with it.
    let pool_sig = repo
        .root
        .join("opkg-pool/openembedded/korg-clang-18_18.1.8-1_x86_64.ipk.asc");
    assert!(pool_sig.is_file());
    let keep = repo.tmp.path().join("kept-feed");
    ok(Command::new("cp").arg("-a").arg(&repo.root).arg(&keep));
    ok(korgpkg()
        .args(["repo", "remove"])
        .arg(&keep)
        .args(["korg-clang-18", "--format", "ipk"]));
    assert!(!keep
        .join("opkg-pool/openembedded/korg-clang-18_18.1.8-1_x86_64.ipk.asc")
        .exists());
    assert!(!keep
        .join("opkg-pool/openwrt/korg-clang-18_18.1.8-1_x86_64.ipk")
        .exists());

    with_real_client(
        &repo,
        "openembedded",
        "korg-clang-18",
        "usr/lib/korg/llvm-18/bin/clang-18",
    );
    with_real_client(
        &repo,
        "openwrt",
        "korg-clang-18",
        "usr/lib/korg/llvm-18/bin/clang-18",
    );
}

#[test]
fn a_feed_refuses_the_other_outer_form() {
    let repo = TestRepo::new(false, &[]);
    let tar = build_json(
        "korg-clang-18",
        &common::llvm_tarball(repo.tmp.path()),
        &repo.tmp.path().join("tar"),
        &["--format", "ipk", "--ipk-outer", "tar"],
    );
    let ipk_tar = output_path(&tar, "ipk");
    let before = std::fs::read_to_string(repo.root.join("opkg/openembedded/Packages")).unwrap();
    let o = run(korgpkg()
        .arg("publish")
        .arg("--repo")
        .arg(&repo.root)
        .arg(&ipk_tar));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(ipk_tar.to_str().unwrap())
            && err.contains("tar-form (OpenWrt)")
            && err.contains("openembedded only"),
        "{err}"
    );
    let after = std::fs::read_to_string(repo.root.join("opkg/openembedded/Packages")).unwrap();
    assert_eq!(before, after);
    assert!(std::fs::read_dir(repo.root.join("opkg-pool/openembedded"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn key_generate_protects_secret_keys_and_passphrases() {
    need_tool("gpg");
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    ok(korgpkg()
        .env("KEYPASS", "correct horse")
        .args([
            "key",
            "generate",
            "--name",
            "t <t@example.invalid>",
            "--algo",
            "rsa4096",
        ])
        .args(["--passphrase-env", "KEYPASS", "--out"])
        .arg(&keys));
    for (f, mode) in [
        ("openpgp.sec.asc", 0o600),
        ("usign.sec", 0o600),
        ("openpgp.pub.asc", 0o644),
        ("openpgp.pub.gpg", 0o644),
        ("usign.pub", 0o644),
    ] {
        let m = std::fs::metadata(keys.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    // The secret key is encrypted.
    let packets = ok(Command::new("gpg")
        .args(["--homedir"])
        .arg(tmp.path())
        .args(["--list-packets"])
        .arg(keys.join("openpgp.sec.asc")));
    assert!(packets.contains("protec"), "{packets}");
    assert!(packets.contains("algo 1,"), "not RSA:\n{packets}");
    assert!(packets.contains("pkey[0]: [4096 bits]"), "{packets}");
    // Never overwritten.
    let o = run(korgpkg()
        .args(["key", "generate", "--name", "t", "--out"])
        .arg(&keys));
    assert!(!o.status.success());

    // Publishing needs the passphrase: wrong → exit 5, right → signed with RSA.
    let root = tmp.path().join("repo");
    let o = run(korgpkg()
        .env("KEYPASS", "wrong")
        .args(["repo", "init"])
        .arg(&root)
        .arg("--keys")
        .arg(&keys)
        .args(["--passphrase-env", "KEYPASS"]));
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_file(root.join("korgpkg-repo.toml"));
    let passfile = tmp.path().join("pass");
    std::fs::write(&passfile, "correct horse\n").unwrap();
    ok(korgpkg()
        .args(["repo", "init"])
        .arg(&root)
        .arg("--keys")
        .arg(&keys)
        .arg("--passphrase-file")
        .arg(&passfile));
    let inrelease = root.join("apt/dists/stable/InRelease");
    let o = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(keys.join("openpgp.pub.gpg"))
        .arg(&inrelease));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("using RSA key"), "{err}");
    // The usign secret key is encrypted too (signify: bcrypt_pbkdf, 42 rounds), and the
    // feed signed with the unlocked key verifies with signify.
    let sec = std::fs::read_to_string(keys.join("usign.sec")).unwrap();
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        sec.lines().nth(1).unwrap().trim(),
    )
    .unwrap();
    assert_eq!(&raw[..4], b"EdBK");
    assert_eq!(
        u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
        42,
        "kdf rounds"
    );
    if which("signify-openbsd") {
        // An OpenWrt feed (usign-signed) with one tar-form package.
        let def = root.join("korgpkg-repo.toml");
        let text = std::fs::read_to_string(&def).unwrap();
        std::fs::write(
            &def,
            text.replace("flavours = [\"openembedded\"]", "flavours = [\"openwrt\"]"),
        )
        .unwrap();
        let tar = build_json(
            "korg-clang-18",
            &common::llvm_tarball(tmp.path()),
            &tmp.path().join("tar"),
            &["--format", "ipk", "--ipk-outer", "tar"],
        );
        ok(korgpkg()
            .arg("publish")
            .arg("--repo")
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&passfile)
            .arg(output_path(&tar, "ipk")));
        let o = ok(Command::new("signify-openbsd")
            .arg("-V")
            .arg("-p")
            .arg(keys.join("usign.pub"))
            .arg("-x")
            .arg(root.join("opkg/openwrt/Packages.sig"))
            .arg("-m")
            .arg(root.join("opkg/openwrt/Packages")));
        assert!(o.contains("Signature Verified"), "{o}");
    }
    let packets = ok(Command::new("gpg")
        .args(["--homedir"])
        .arg(tmp.path())
        .args(["--list-packets"])
        .arg(root.join("apt/dists/stable/Release.gpg")));
    assert!(
        packets.contains("version 4") && packets.contains("digest algo 10"),
        "{packets}"
    );
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
