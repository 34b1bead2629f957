//! opkg feeds: `Packages.sig` checked with `signify-openbsd -V` (OpenWrt's usign format),
//! `Packages.asc` with `gpgv`, and `Packages` parsed back to exactly what was published.
//! Also the key files `korgpkg key generate` writes (modes, passphrases).

mod common;

use common::repo::{llvm_packages, TestRepo};
use common::{build_json, crosstool_tarball, korgpkg, need_tool, ok, output_path, run};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
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

#[test]
fn opkg_feed_is_signed_for_openwrt_and_yocto_and_parses_back() {
    need_tool("signify-openbsd");
    need_tool("gpgv");
    let repo = TestRepo::new(false, &[]);
    let (_, _, ipk) = llvm_packages(repo.tmp.path());
    let cross = build_json(
        "korg-gcc-14-aarch64-linux",
        &crosstool_tarball(repo.tmp.path()),
        &repo.tmp.path().join("cross"),
        &["--format", "ipk"],
    );
    let cross = output_path(&cross, "ipk");
    repo.publish(&[&ipk, &cross]);

    let feed = repo.root.join("opkg");
    let packages = feed.join("Packages");
    let usign_key = ok(korgpkg()
        .args(["key", "generate", "--json", "--name", "x", "--out"])
        .arg(repo.tmp.path().join("unused-keys")));
    assert!(usign_key.contains("usign_fingerprint"));

    // usign: the public key file is named by its key number, as /etc/opkg/keys wants.
    let pub_key = std::fs::read_dir(&feed)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 16 && n.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .expect("usign key file in the feed");
    let o = ok(Command::new("signify-openbsd")
        .arg("-V")
        .arg("-p")
        .arg(&pub_key)
        .arg("-x")
        .arg(feed.join("Packages.sig"))
        .arg("-m")
        .arg(&packages));
    assert!(o.contains("Signature Verified"), "{o}");
    let o = ok(Command::new("gpgv")
        .arg("--keyring")
        .arg(repo.keys.join("openpgp.pub.gpg"))
        .arg(feed.join("Packages.asc"))
        .arg(&packages));
    let _ = o;

    // Tampering breaks both signatures.
    let real = std::fs::canonicalize(&packages).unwrap();
    let original = std::fs::read(&real).unwrap();
    let mut bad = original.clone();
    bad[10] ^= 1;
    std::fs::write(&real, &bad).unwrap();
    let o = run(Command::new("signify-openbsd")
        .arg("-V")
        .arg("-p")
        .arg(&pub_key)
        .arg("-x")
        .arg(feed.join("Packages.sig"))
        .arg("-m")
        .arg(&packages));
    assert!(!o.status.success());
    let o = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(repo.keys.join("openpgp.pub.gpg"))
        .arg(feed.join("Packages.asc"))
        .arg(&packages));
    assert!(!o.status.success());
    std::fs::write(&real, &original).unwrap();

    // Packages (and Packages.gz) list exactly the published packages.
    let text = std::fs::read_to_string(&packages).unwrap();
    let mut gz = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(feed.join("Packages.gz")).unwrap()),
        &mut gz,
    )
    .unwrap();
    assert_eq!(gz, text);
    let list = stanzas(&text);
    assert_eq!(list.len(), 2, "{text}");
    for (src, s) in [(&ipk, &list[0]), (&cross, &list[1])] {
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
    let conf = std::fs::read_to_string(feed.join("opkg.conf")).unwrap();
    assert!(
        conf.contains(&format!("src/gz korg {}/opkg", repo.url)),
        "{conf}"
    );
    assert!(conf.contains("option check_signature"), "{conf}");
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
        let o = ok(Command::new("signify-openbsd")
            .arg("-V")
            .arg("-p")
            .arg(keys.join("usign.pub"))
            .arg("-x")
            .arg(root.join("opkg/Packages.sig"))
            .arg("-m")
            .arg(root.join("opkg/Packages")));
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
