//! OpenPGP verification: real kernel.org sums files and generated keys/signatures.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use korgpkg::verify::testkeys::{self, Algo, Hash, KeyOptions, TestKey};
use korgpkg::verify::{verify_sums, DetachedVerifier, Keyring, PinnedKey};
use korgpkg::Error;

const AUTOSIGNER: &str = "B8868C80BA62A1FFFAF5FDA9632D3A06589DA6B1";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/kernel.org");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(FIXTURES).join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn autosigner() -> PinnedKey {
    let ring = Keyring::from_file(&fixture(&format!("autosigner-{AUTOSIGNER}.asc"))).unwrap();
    ring.pinned(AUTOSIGNER).unwrap()
}

/// Error message of a verification failure (panics on other errors).
fn verify_message<T: std::fmt::Debug>(r: korgpkg::Result<T>) -> String {
    match r {
        Err(Error::Verify { message, .. }) => message,
        other => panic!("expected a verification error, got {other:?}"),
    }
}

fn pin(key: &TestKey) -> PinnedKey {
    Keyring::from_bytes(key.public_armored().as_bytes(), "test")
        .unwrap()
        .pinned(&key.fingerprint())
        .unwrap()
}

/// Keys are cached: RSA generation is slow in debug builds.
fn key(which: &str) -> &'static TestKey {
    static ED: OnceLock<TestKey> = OnceLock::new();
    static SUB: OnceLock<TestKey> = OnceLock::new();
    static OTHER: OnceLock<TestKey> = OnceLock::new();
    static EVE: OnceLock<TestKey> = OnceLock::new();
    static RSA: OnceLock<TestKey> = OnceLock::new();
    let subkey = KeyOptions {
        signing_subkey: true,
        certify_only: true,
        ..Default::default()
    };
    match which {
        "ed" => ED.get_or_init(|| {
            testkeys::generate("Ed Tester <ed@example.org>", KeyOptions::default())
        }),
        "sub" => SUB.get_or_init(|| testkeys::generate("Sub Tester <sub@example.org>", subkey)),
        "eve" => {
            EVE.get_or_init(|| testkeys::generate("Eve <eve@example.org>", KeyOptions::default()))
        }
        "other" => {
            OTHER.get_or_init(|| testkeys::generate("Mallory <mallory@example.org>", subkey))
        }
        "rsa" => RSA.get_or_init(|| {
            let options = KeyOptions {
                algo: Algo::Rsa2048,
                signing_subkey: true,
                ..Default::default()
            };
            testkeys::generate("Rsa Tester <rsa@example.org>", options)
        }),
        _ => unreachable!(),
    }
}

/// Deterministic pseudo-random payload.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn verify_detached(sig: &[u8], key: &PinnedKey, data: &[u8]) -> korgpkg::Result<String> {
    let mut v = DetachedVerifier::new(sig, key, "x.tar.sign")?;
    v.write_all(data).unwrap();
    v.finish()
}

// ---- real kernel.org material ----

#[test]
fn real_autosigner_key_is_pinned() {
    let key = autosigner();
    assert_eq!(key.fingerprint(), AUTOSIGNER);
    assert_eq!(
        key.user_id().as_deref(),
        Some("Kernel.org checksum autosigner <autosigner@kernel.org>")
    );
    // Any case and spacing of the pin works; a subkey or short id does not.
    let ring = Keyring::from_file(&fixture(&format!("autosigner-{AUTOSIGNER}.asc"))).unwrap();
    assert!(ring.pinned(&AUTOSIGNER.to_ascii_lowercase()).is_ok());
    assert!(ring.pinned("632D3A06589DA6B1").is_err());
}

#[test]
fn real_sums_files_verify() {
    let key = autosigner();
    for (file, name, sha) in [
        (
            "llvm-files-sha256sums.asc",
            "llvm-11.1.0-x86_64.tar.gz",
            "aa069ab507e27b9193373e8f20d505b1bc01b713916f062d71d6be9bb8dc68ea",
        ),
        (
            "crosstool-bin-x86_64-14.2.0-sha256sums.asc",
            "x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.xz",
            "",
        ),
        (
            "crosstool-bin-arm64-14.2.0-sha256sums.asc",
            "arm64-gcc-14.2.0-nolibc-xtensa-linux.tar.xz",
            "6f15feefec227944b8a4386a98df4996d7d247e9cdce69f76539cce5e7a35408",
        ),
    ] {
        let sums =
            verify_sums(&read_fixture(file), &key, file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(sums.signer(), AUTOSIGNER);
        assert!(sums.names().count() > 10, "{file}");
        let got = sums
            .get(name)
            .unwrap_or_else(|| panic!("{file} lacks {name}"));
        assert_eq!(got.len(), 64);
        assert!(got
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if !sha.is_empty() {
            assert_eq!(got, sha, "{file}");
        }
        assert!(sums.names().all(|n| sums.get(n).is_some()));
    }
    let llvm = verify_sums(&read_fixture("llvm-files-sha256sums.asc"), &key, "llvm").unwrap();
    assert_eq!(llvm.names().next(), Some("llvm-11.1.0-aarch64.tar.gz"));
}

#[test]
fn real_sums_file_with_any_byte_changed_is_bad() {
    let key = autosigner();
    let orig = read_fixture("llvm-files-sha256sums.asc");
    let text = String::from_utf8(orig.clone()).unwrap();
    let body = text.find("\n\n").unwrap() + 2;
    let sig = text.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    // A hex digit in the first line, one in the middle, a file name letter, the last line.
    let first_name = body + 64 + 2;
    let last_line = text[..sig - 1].rfind('\n').unwrap() + 1;
    for pos in [
        body,
        body + 5,
        first_name + 3,
        (body + sig) / 2,
        last_line + 10,
    ] {
        let mut bad = orig.clone();
        bad[pos] = if bad[pos] == b'1' { b'2' } else { b'1' };
        assert_ne!(bad, orig);
        let msg = verify_message(verify_sums(&bad, &key, "llvm"));
        assert!(msg.contains("BAD signature"), "byte {pos}: {msg}");
    }
    // Dropping a line is caught too.
    let mut dropped = text.clone();
    let line_end = text[body..].find('\n').unwrap() + body + 1;
    dropped.replace_range(body..line_end, "");
    assert!(
        verify_message(verify_sums(dropped.as_bytes(), &key, "llvm")).contains("BAD signature")
    );
}

#[test]
fn real_sums_text_outside_the_signed_part_is_ignored() {
    let key = autosigner();
    let text = String::from_utf8(read_fixture("llvm-files-sha256sums.asc")).unwrap();
    let extra =
        "1111111111111111111111111111111111111111111111111111111111111111  evil-before.tar.xz\n";
    let after =
        "2222222222222222222222222222222222222222222222222222222222222222  evil-after.tar.xz\n";
    let wrapped = format!("{extra}\n{text}{after}");
    let sums = verify_sums(wrapped.as_bytes(), &key, "llvm").unwrap();
    assert_eq!(sums.get("evil-before.tar.xz"), None);
    assert_eq!(sums.get("evil-after.tar.xz"), None);
    assert!(sums.names().all(|n| n.starts_with("llvm-")));
    assert_eq!(
        sums.get("llvm-11.1.0-x86_64.tar.gz"),
        Some("aa069ab507e27b9193373e8f20d505b1bc01b713916f062d71d6be9bb8dc68ea")
    );
    // A line inserted into the signed part is a BAD signature, not an extra entry.
    let injected = text.replacen("\n\n", &format!("\n\n{extra}"), 1);
    assert!(
        verify_message(verify_sums(injected.as_bytes(), &key, "llvm")).contains("BAD signature")
    );
}

#[test]
fn real_sums_file_against_another_pin_fails() {
    let other = pin(key("ed"));
    let msg = verify_message(verify_sums(
        &read_fixture("llvm-files-sha256sums.asc"),
        &other,
        "llvm",
    ));
    assert!(msg.contains("632D3A06589DA6B1"), "{msg}");
    assert!(msg.contains(&other.fingerprint()), "{msg}");
}

// ---- keyrings ----

#[test]
fn keyrings_from_armored_binary_and_concatenated_files() {
    let (a, b) = (key("ed"), key("sub"));
    let dir = tempfile::tempdir().unwrap();

    let both_armored = format!("{}\n{}", a.public_armored(), b.public_armored());
    let p = dir.path().join("armored.asc");
    std::fs::write(&p, &both_armored).unwrap();
    let ring = Keyring::from_file(&p).unwrap();
    assert!(!ring.is_empty());
    assert_eq!(
        ring.pinned(&a.fingerprint()).unwrap().fingerprint(),
        a.fingerprint()
    );
    assert_eq!(
        ring.pinned(&b.fingerprint()).unwrap().fingerprint(),
        b.fingerprint()
    );

    let mut both_binary = a.public_binary();
    both_binary.extend(b.public_binary());
    let ring = Keyring::from_bytes(&both_binary, "binary").unwrap();
    assert!(ring.pinned(&a.fingerprint()).is_ok());
    assert!(ring.pinned(&b.fingerprint()).is_ok());

    let mut ring = Keyring::new();
    assert!(ring.is_empty());
    ring.extend(Keyring::from_bytes(&a.public_binary(), "a").unwrap());
    ring.extend(Keyring::from_bytes(b.public_armored().as_bytes(), "b").unwrap());
    assert_eq!(
        ring.pinned(&b.fingerprint()).unwrap().user_id().as_deref(),
        Some("Sub Tester <sub@example.org>")
    );

    // A subkey fingerprint is never a pin.
    let sub_fpr = b.subkey_fingerprint().unwrap();
    let msg = verify_message(ring.pinned(&sub_fpr));
    assert!(msg.contains("no key with primary fingerprint"), "{msg}");

    // Garbage is refused with the file name.
    let junk = dir.path().join("junk.asc");
    std::fs::write(&junk, "not a key\n").unwrap();
    let e = Keyring::from_file(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.asc"), "{e}");
    assert!(Keyring::from_file(&dir.path().join("missing.asc")).is_err());
    assert!(Keyring::from_bytes(b"", "empty").is_err());
}

#[test]
fn expired_key_is_refused() {
    let k = testkeys::generate(
        "Old <old@example.org>",
        KeyOptions {
            expired: true,
            ..Default::default()
        },
    );
    let ring = Keyring::from_bytes(k.public_armored().as_bytes(), "old").unwrap();
    let msg = verify_message(ring.pinned(&k.fingerprint()));
    assert_eq!(
        msg,
        format!("key {} expired on 2020-01-02", k.fingerprint())
    );
}

#[test]
fn revoked_key_is_refused() {
    let k = testkeys::generate(
        "Gone <gone@example.org>",
        KeyOptions {
            revoked: true,
            ..Default::default()
        },
    );
    let ring = Keyring::from_bytes(&k.public_binary(), "gone").unwrap();
    let msg = verify_message(ring.pinned(&k.fingerprint()));
    assert!(
        msg.starts_with(&format!("key {} is revoked", k.fingerprint())),
        "{msg}"
    );
}

#[test]
fn tampered_self_signature_makes_key_unusable() {
    // Swap the user id packet of one key into another: its self-signature no longer verifies.
    let k = key("ed");
    let mut public = k.public();
    public.details.users[0].id =
        pgp::packet::UserId::from_str(Default::default(), "Someone Else").unwrap();
    let bytes = pgp::ser::Serialize::to_bytes(&public).unwrap();
    let msg = verify_message(
        Keyring::from_bytes(&bytes, "t")
            .unwrap()
            .pinned(&k.fingerprint()),
    );
    assert!(msg.contains("no valid self-signature"), "{msg}");
}

// ---- sums files with generated keys ----

const SUMS: &str = "\
0000000000000000000000000000000000000000000000000000000000000001  a.tar.xz
00000000000000000000000000000000000000000000000000000000000000AB *b.tar.gz

-----this line starts with dashes  x
";

#[test]
fn generated_sums_file_verifies() {
    let k = key("ed");
    let signed = k.sign_cleartext("0000000000000000000000000000000000000000000000000000000000000001  a.tar.xz\n00000000000000000000000000000000000000000000000000000000000000AB *b.tar.gz\n\n", Hash::Sha256);
    let sums = verify_sums(signed.as_bytes(), &pin(k), "gen").unwrap();
    assert_eq!(sums.names().collect::<Vec<_>>(), ["a.tar.xz", "b.tar.gz"]);
    assert_eq!(
        sums.get("b.tar.gz"),
        Some("00000000000000000000000000000000000000000000000000000000000000ab")
    );
    assert_eq!(sums.signer(), k.fingerprint());
}

#[test]
fn malformed_signed_line_is_an_error_with_its_line_number() {
    let k = key("ed");
    let signed = k.sign_cleartext(SUMS, Hash::Sha256);
    assert!(
        signed.contains("\n- -----this line"),
        "dash-escaped:\n{signed}"
    );
    let msg = verify_message(verify_sums(signed.as_bytes(), &pin(k), "gen"));
    // BEGIN, Hash:, blank, then body lines 4, 5, 6 (blank), 7.
    assert!(msg.starts_with("line 7:"), "{msg}");
}

#[test]
fn sums_file_signed_by_a_subkey_verifies() {
    let k = key("sub");
    let signed = k.sign_cleartext_with(
        "0000000000000000000000000000000000000000000000000000000000000001  a.tar.xz\n",
        Hash::Sha256,
        true,
    );
    let sums = verify_sums(signed.as_bytes(), &pin(k), "gen").unwrap();
    assert_eq!(sums.signer(), k.fingerprint());
}

#[test]
fn sums_file_signed_by_another_key_is_refused() {
    let (good, eve) = (key("ed"), key("eve"));
    let text = "0000000000000000000000000000000000000000000000000000000000000001  a.tar.xz\n";
    let signed = eve.sign_cleartext(text, Hash::Sha256);
    let msg = verify_message(verify_sums(signed.as_bytes(), &pin(good), "gen"));
    assert!(msg.contains(&eve.fingerprint()), "{msg}");
    assert!(
        msg.contains(&format!("not the pinned key {}", good.fingerprint())),
        "{msg}"
    );

    // A subkey of another key is not a subkey of the pinned key.
    let mallory = key("other");
    let signed = mallory.sign_cleartext_with(text, Hash::Sha256, true);
    let msg = verify_message(verify_sums(signed.as_bytes(), &pin(key("sub")), "gen"));
    assert!(
        msg.contains(&mallory.subkey_fingerprint().unwrap()),
        "{msg}"
    );
}

#[test]
fn sums_file_with_weak_hash_is_refused() {
    let k = key("rsa");
    let text = "0000000000000000000000000000000000000000000000000000000000000001  a.tar.xz\n";
    let signed = k.sign_cleartext(text, Hash::Sha1);
    let msg = verify_message(verify_sums(signed.as_bytes(), &pin(k), "gen"));
    assert_eq!(msg, "weak hash algorithm SHA1 is refused");
    // SHA-512 is fine.
    let signed = k.sign_cleartext(text, Hash::Sha512);
    assert!(verify_sums(signed.as_bytes(), &pin(k), "gen").is_ok());
}

#[test]
fn sums_file_without_signature_is_refused() {
    let k = pin(key("ed"));
    let msg = verify_message(verify_sums(SUMS.as_bytes(), &k, "plain"));
    assert!(msg.contains("BEGIN PGP SIGNED MESSAGE"), "{msg}");
    assert!(verify_sums(b"\xff\xfe", &k, "binary").is_err());
}

// ---- detached signatures ----

#[test]
fn detached_signature_by_primary_verifies_armored_and_binary() {
    let k = key("ed");
    let data = payload(100_000);
    for armored in [true, false] {
        let sig = k.sign_detached(&data, Hash::Sha256, armored, false);
        assert_eq!(sig.starts_with(b"-----BEGIN PGP SIGNATURE-----"), armored);
        assert_eq!(
            verify_detached(&sig, &pin(k), &data).unwrap(),
            k.fingerprint()
        );
    }
}

#[test]
fn detached_signature_by_signing_subkey_verifies() {
    for which in ["sub", "rsa"] {
        let k = key(which);
        let data = payload(4096);
        let sig = k.sign_detached(&data, Hash::Sha256, true, true);
        assert_eq!(
            verify_detached(&sig, &pin(k), &data).unwrap(),
            k.fingerprint(),
            "{which}"
        );
        let pinned = pin(k);
        assert_eq!(
            pinned.signing_subkeys().collect::<Vec<_>>(),
            [k.subkey_fingerprint().unwrap().as_str()]
        );
    }
}

#[test]
fn detached_signature_by_certify_only_primary_is_refused() {
    let k = key("sub");
    let data = payload(10);
    let sig = k.sign_detached(&data, Hash::Sha256, true, false);
    let msg = verify_message(verify_detached(&sig, &pin(k), &data));
    assert!(msg.contains("not marked for signing"), "{msg}");
}

#[test]
fn detached_signature_by_unrelated_key_is_refused_up_front() {
    let data = payload(10);
    for (signer, with_subkey) in [(key("eve"), false), (key("other"), true)] {
        let sig = signer.sign_detached(&data, Hash::Sha256, true, with_subkey);
        let e = DetachedVerifier::new(&sig, &pin(key("sub")), "x.tar.sign").unwrap_err();
        let msg = verify_message::<()>(Err(e));
        assert!(msg.starts_with("signature by key "), "{msg}");
        assert!(
            msg.contains(&format!("not the pinned key {}", key("sub").fingerprint())),
            "{msg}"
        );
    }
}

#[test]
fn detached_signature_over_modified_data_is_bad() {
    let k = key("sub");
    let data = payload(50_000);
    let sig = k.sign_detached(&data, Hash::Sha256, false, true);
    let pinned = pin(k);
    let mut flipped = data.clone();
    flipped[25_000] ^= 1;
    for bad in [&flipped[..], &data[..data.len() - 1], &[][..]] {
        let msg = verify_message(verify_detached(&sig, &pinned, bad));
        assert!(msg.starts_with("BAD signature by subkey "), "{msg}");
    }
    let mut longer = data.clone();
    longer.push(0);
    assert!(verify_detached(&sig, &pinned, &longer).is_err());
}

#[test]
fn detached_signature_with_weak_hash_is_refused_up_front() {
    let k = key("rsa");
    let data = payload(10);
    for (hash, name) in [(Hash::Sha1, "SHA1"), (Hash::Md5, "MD5")] {
        let sig = k.sign_detached(&data, hash, true, false);
        let msg = verify_message(DetachedVerifier::new(&sig, &pin(k), "x.tar.sign"));
        assert_eq!(msg, format!("weak hash algorithm {name} is refused"));
    }
}

#[test]
fn small_chunks_equal_one_write() {
    let k = key("ed");
    let data = payload(70_001);
    let sig = k.sign_detached(&data, Hash::Sha512, true, false);
    let pinned = pin(k);
    let mut v = DetachedVerifier::new(&sig, &pinned, "x").unwrap();
    for chunk in data.chunks(7) {
        v.write_all(chunk).unwrap();
    }
    v.flush().unwrap();
    assert_eq!(v.finish().unwrap(), k.fingerprint());
    // A zero-length write changes nothing; dropping an unfinished verifier is harmless.
    let mut v = DetachedVerifier::new(&sig, &pinned, "x").unwrap();
    assert_eq!(v.write(&[]).unwrap(), 0);
    v.write_all(&data[..10]).unwrap();
    drop(v);
}

#[test]
fn verifier_works_as_a_tap_from_another_thread() {
    let k = key("ed");
    let data = payload(200_000);
    let sig = k.sign_detached(&data, Hash::Sha256, true, false);
    let mut v = DetachedVerifier::new(&sig, &pin(k), "x").unwrap();
    let tap: &mut (dyn Write + Send) = &mut v;
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in data.chunks(8192) {
                tap.write_all(chunk).unwrap();
            }
        });
    });
    assert_eq!(v.finish().unwrap(), k.fingerprint());
}

#[test]
fn revoked_expired_or_unbound_subkeys_cannot_sign() {
    let data = payload(100);
    for (options, why) in [
        (
            KeyOptions {
                subkey_revoked: true,
                ..KeyOptions::default()
            },
            "is revoked".to_string(),
        ),
        (
            KeyOptions {
                subkey_expired: true,
                ..KeyOptions::default()
            },
            "expired on 2020-01-02".to_string(),
        ),
        (
            KeyOptions {
                subkey_without_backsig: true,
                ..KeyOptions::default()
            },
            "back-signature".to_string(),
        ),
    ] {
        let options = KeyOptions {
            signing_subkey: true,
            ..options
        };
        let k = testkeys::generate("Sub Problems <sp@example.org>", options);
        let pinned = pin(&k);
        assert_eq!(pinned.signing_subkeys().count(), 0);
        let sig = k.sign_detached(&data, Hash::Sha256, true, true);
        let msg = verify_message(DetachedVerifier::new(&sig, &pinned, "x"));
        assert!(msg.contains(&k.subkey_fingerprint().unwrap()), "{msg}");
        assert!(msg.contains(&why), "{msg}");
        // The (signing-capable) primary still works.
        let sig = k.sign_detached(&data, Hash::Sha256, true, false);
        assert!(verify_detached(&sig, &pinned, &data).is_ok());
    }
}

#[test]
fn malformed_and_text_mode_signatures_are_refused() {
    let k = key("ed");
    let pinned = pin(k);
    assert!(DetachedVerifier::new(b"", &pinned, "x").is_err());
    assert!(DetachedVerifier::new(b"garbage", &pinned, "x").is_err());
    assert!(DetachedVerifier::new(k.public_armored().as_bytes(), &pinned, "x").is_err());
    let msg = verify_message(DetachedVerifier::new(
        &k.sign_detached_text(b"x\n"),
        &pinned,
        "x",
    ));
    assert!(msg.contains("text-mode"), "{msg}");
    // A cleartext signature is not a detached one.
    let cleartext = k.sign_cleartext("hello\n", Hash::Sha256);
    assert!(DetachedVerifier::new(cleartext.as_bytes(), &pinned, "x").is_err());
}

#[test]
fn generated_keys_are_deterministic() {
    let a = testkeys::generate("Same <same@example.org>", KeyOptions::default());
    let b = testkeys::generate("Same <same@example.org>", KeyOptions::default());
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.public_binary(), b.public_binary());
    assert_eq!(
        a.sign_detached(b"x", Hash::Sha256, false, false),
        b.sign_detached(b"x", Hash::Sha256, false, false)
    );
}

// ---- GnuPG as an oracle (skipped when gpgv is not installed) ----

fn gpgv_available() -> bool {
    Command::new("gpgv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn gpgv_agrees_on_detached_signatures() {
    if !gpgv_available() {
        eprintln!("gpgv not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = payload(33_333);
    let data_path = dir.path().join("data.tar");
    std::fs::write(&data_path, &data).unwrap();
    for (which, with_subkey) in [("ed", false), ("sub", true), ("rsa", true)] {
        let k = key(which);
        let keyring = dir.path().join(format!("{which}.gpg"));
        std::fs::write(&keyring, k.public_binary()).unwrap();
        let sig = k.sign_detached(&data, Hash::Sha256, true, with_subkey);
        let sig_path = dir.path().join(format!("{which}.tar.sign"));
        std::fs::write(&sig_path, &sig).unwrap();
        let out = Command::new("gpgv")
            .arg("--homedir")
            .arg(dir.path())
            .arg("--keyring")
            .arg(&keyring)
            .arg(&sig_path)
            .arg(&data_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpgv ({which}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(verify_detached(&sig, &pin(k), &data).is_ok());

        // Both refuse modified data.
        let bad_path = dir.path().join("bad.tar");
        let mut bad = data.clone();
        bad[0] ^= 0x80;
        std::fs::write(&bad_path, &bad).unwrap();
        let out = Command::new("gpgv")
            .arg("--homedir")
            .arg(dir.path())
            .arg("--keyring")
            .arg(&keyring)
            .arg(&sig_path)
            .arg(&bad_path)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "gpgv accepted modified data ({which})"
        );
        assert!(verify_detached(&sig, &pin(k), &bad).is_err());
    }
}

#[test]
fn gpgv_agrees_on_generated_cleartext() {
    if !gpgv_available() {
        eprintln!("gpgv not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let k = key("sub");
    let keyring = dir.path().join("k.gpg");
    std::fs::write(&keyring, k.public_binary()).unwrap();
    let signed = k.sign_cleartext_with(
        SUMS.lines().take(2).collect::<Vec<_>>().join("\n").as_str(),
        Hash::Sha256,
        true,
    );
    let path = dir.path().join("sha256sums.asc");
    std::fs::write(&path, &signed).unwrap();
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(dir.path())
        .arg("--keyring")
        .arg(&keyring)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpgv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sums = verify_sums(signed.as_bytes(), &pin(k), "gen").unwrap();
    assert_eq!(sums.names().count(), 2);
}

#[test]
fn real_sums_file_with_crlf_line_endings_verifies() {
    // Text signatures hash canonical CRLF text, so converting line endings keeps it good.
    let text = String::from_utf8(read_fixture("llvm-files-sha256sums.asc")).unwrap();
    let crlf = text.replace('\n', "\r\n");
    let sums = verify_sums(crlf.as_bytes(), &autosigner(), "llvm").unwrap();
    assert_eq!(
        sums.get("llvm-11.1.0-x86_64.tar.gz"),
        Some("aa069ab507e27b9193373e8f20d505b1bc01b713916f062d71d6be9bb8dc68ea")
    );
}

#[test]
fn real_sums_file_with_a_lying_hash_header_is_refused() {
    let text = String::from_utf8(read_fixture("llvm-files-sha256sums.asc")).unwrap();
    let lying = text.replacen("Hash: SHA256", "Hash: SHA512", 1);
    let msg = verify_message(verify_sums(lying.as_bytes(), &autosigner(), "llvm"));
    assert_eq!(
        msg,
        "signature uses SHA256 but the Hash: header announces SHA512"
    );
}

#[test]
fn large_sums_files_parse_in_linear_time_and_are_bounded() {
    let signer = key("ed");
    let pinned = pin(signer);
    let h = "aa069ab507e27b9193373e8f20d505b1bc01b713916f062d71d6be9bb8dc68ea";
    // 3.5 MB of lines, just under the bound (the parser that was quadratic took minutes).
    let text: String = (0..44_000)
        .map(|i| format!("{h}  f{i:06}.tar.xz\n"))
        .collect();
    let signed = signer.sign_cleartext(&text, Hash::Sha256);
    assert!(signed.len() < 4 << 20);
    let started = std::time::Instant::now();
    let sums = verify_sums(signed.as_bytes(), &pinned, "big").expect("verifies");
    assert_eq!(sums.len(), 44_000);
    assert_eq!(sums.get("f043999.tar.xz"), Some(h));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // Over the bound: refused before any parsing.
    let big = format!("{}{signed}", "x".repeat(4 << 20));
    let msg = verify_message(verify_sums(big.as_bytes(), &pinned, "big"));
    assert!(msg.contains("more than the 4 MiB"), "{msg}");
}
