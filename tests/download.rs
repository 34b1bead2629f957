//! `korgpkg list` and `korgpkg build` without `--from`: discovery from verified
//! `sha256sums.asc` files on a mirror served on 127.0.0.1, download into the cache, and
//! every verification (sums signature, sha256, `.tar.sign` over the uncompressed tar,
//! pinned keys) before anything is packaged. Generated keys stand in for kernel.org's
//! signers (pinned through a spec override); kernel.org's real sums files and autosigner
//! key are checked by the `real_*` tests.

mod common;
use common::mirror::*;
use common::server::{Fault, Server};
use common::*;
use korgpkg::verify::testkeys::{self, Hash, KeyOptions, TestKey};
use std::path::Path;
use std::process::{Command, Output};

const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/kernel.org");

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "korgpkg failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// Exit code 5, a one-line error containing `needle`, nothing in `out`.
fn refused(o: &Output, needle: &str, out: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains(needle), "want {needle:?} in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        dir_listing(out).is_empty(),
        "nothing may be written: {:?}",
        dir_listing(out)
    );
}

fn cached_tarballs(cache: &Path) -> Vec<String> {
    dir_listing(&cache.join("sha256"))
}

#[test]
fn list_shows_versions_from_the_verified_sums_file() {
    let m = Mirror::new();
    let v = json(&run(m.korgpkg().args(["list", "korg-clang-18", "--json"])));
    let versions: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["version"].as_str().expect("version"))
        .collect();
    assert_eq!(
        versions,
        ["18.1.0-rc3", "18.1.8"],
        "rc sorts before release"
    );
    assert_eq!(v[1]["sums_signer"], m.autosigner.fingerprint());
    assert_eq!(
        v[1]["url"],
        m.server.url(&format!("{DIR}/llvm-18.1.8-x86_64.tar.xz"))
    );

    let text = ok(m.korgpkg().args(["list", "llvm"]));
    assert!(
        text.contains("korg-clang-17") && text.contains("korg-clang-18"),
        "{text}"
    );
    assert!(
        text.contains("18.1.0-rc3") && text.contains("x86_64"),
        "{text}"
    );
    // Listing downloads no tarball.
    assert_eq!(m.tarball_gets("18.1.8"), 0);
}

#[test]
fn list_ends_quietly_when_its_reader_goes_away() {
    let m = Mirror::new();
    ends_quietly_into_closed_pipe(m.korgpkg().args(["list", "llvm"]));
    ends_quietly_into_closed_pipe(m.korgpkg().args(["list", "llvm", "--json"]));
}

#[test]
fn build_downloads_the_newest_release_verifies_it_and_records_provenance() {
    need_tool("dpkg-deb");
    need_tool("rpm");
    let m = Mirror::new();
    let report = json(&m.build(&["korg-clang-18", "--json"]));
    assert_eq!(report["upstream_version"], "18.1.8");
    let url = m.server.url(&format!("{DIR}/llvm-18.1.8-x86_64.tar.xz"));
    let rel = &m.releases[2];
    for o in report["outputs"].as_array().expect("outputs") {
        let p = &o["provenance"];
        assert_eq!(p["url"], url.as_str(), "{o}");
        assert_eq!(p["sha256"], sha256_hex(&rel.xz), "{o}");
        assert_eq!(p["signer"], m.dev.fingerprint(), "{o}");
        assert_eq!(p["sums_signer"], m.autosigner.fingerprint(), "{o}");
    }
    let deb = output_path(&report, "deb");
    let field = |f: &str| ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f));
    assert_eq!(field("Korg-Upstream-URL").trim(), url);
    assert_eq!(field("Korg-Upstream-SHA256").trim(), sha256_hex(&rel.xz));
    assert_eq!(field("Korg-Upstream-Signer").trim(), m.dev.fingerprint());
    let rpm = output_path(&report, "rpm");
    let disturl = ok(Command::new("rpm")
        .args(["-qp", "--qf", "%{DISTURL}"])
        .arg(&rpm));
    assert_eq!(disturl, url);
    let desc = ok(Command::new("rpm")
        .args(["-qp", "--qf", "%{DESCRIPTION}"])
        .arg(&rpm));
    assert!(desc.contains(&m.dev.fingerprint()), "{desc}");
    // A verified build says so, and only so.
    assert!(
        desc.contains("as built and signed by\nkernel.org")
            && desc.contains("from the verified kernel.org release tarball")
            && !desc.contains("NOT verified"),
        "{desc}"
    );
    let ipk = json(&run(korgpkg()
        .arg("inspect")
        .arg(output_path(&report, "ipk"))
        .arg("--json")));
    assert_eq!(ipk["fields"]["Korg-Upstream-Signer"], m.dev.fingerprint());

    // Cached by content: a second build downloads nothing.
    assert_eq!(cached_tarballs(&m.cache()), [sha256_hex(&rel.xz)]);
    assert_eq!(m.tarball_gets("18.1.8"), 1);
    std::fs::remove_dir_all(m.out()).expect("clean out");
    json(&m.build(&["korg-clang-18", "--format", "deb", "--json"]));
    assert_eq!(
        m.tarball_gets("18.1.8"),
        1,
        "second build must use the cache"
    );
}

#[test]
fn version_and_several_packages() {
    let m = Mirror::new();
    let r = json(&m.build(&[
        "korg-clang-18",
        "--version",
        "18.1.0-rc3",
        "--format",
        "deb",
        "--json",
    ]));
    assert_eq!(r["upstream_version"], "18.1.0-rc3");
    assert!(output_path(&r, "deb").ends_with("korg-clang-18_18.1.0~rc3-1_amd64.deb"));
    assert_eq!(
        m.tarball_gets("18.1.8"),
        0,
        "only the asked-for version is downloaded"
    );

    let o = m.build(&["korg-clang-18", "--version", "18.9.9", "--format", "deb"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no release of korg-clang-18 version 18.9.9")
    );

    // Two packages at once (downloaded in parallel): a JSON array of two reports.
    std::fs::remove_dir_all(m.out()).expect("clean");
    let both = json(&m.build(&[
        "korg-clang-17",
        "korg-clang-18",
        "--format",
        "rpm",
        "--json",
    ]));
    let names: Vec<&str> = both
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["package"].as_str().expect("package"))
        .collect();
    assert_eq!(names, ["korg-clang-17", "korg-clang-18"]);
    assert_eq!(dir_listing(&m.out()).len(), 2);

    // --dry-run resolves the release but downloads nothing.
    let before = m.tarball_gets("17.0.6");
    let plan = json(&m.build(&["korg-clang-17", "--dry-run", "--json"]));
    assert_eq!(plan["release"]["version"], "17.0.6");
    assert_eq!(m.tarball_gets("17.0.6"), before);
}

#[test]
fn a_tarball_that_does_not_match_the_signed_sums_is_refused_and_not_cached() {
    let m = Mirror::new();
    let mut evil = m.releases[2].xz.clone();
    let n = evil.len();
    evil[n - 100] ^= 1;
    m.server
        .file(&format!("{DIR}/llvm-18.1.8-x86_64.tar.xz"), evil);
    let o = m.build(&["korg-clang-18", "--format", "deb"]);
    refused(&o, "sha256", &m.out());
    assert!(cached_tarballs(&m.cache()).is_empty());
    assert!(dir_listing(&m.cache().join("partial")).is_empty());
}

#[test]
fn a_bad_tar_signature_is_refused_and_the_download_dropped() {
    // Signed by the right key but over different bytes (another release's tar).
    let m = Mirror::new();
    let other = m
        .dev
        .sign_detached(&m.releases[0].tar, Hash::Sha256, true, true);
    m.server
        .file(&format!("{DIR}/llvm-18.1.8-x86_64.tar.sign"), other);
    let o = m.build(&["korg-clang-18", "--format", "deb"]);
    refused(&o, "BAD signature", &m.out());
    assert!(
        cached_tarballs(&m.cache()).is_empty(),
        "a tarball that failed is not reused"
    );
}

#[test]
fn signatures_by_unpinned_or_unusable_keys_are_refused() {
    let m = Mirror::new();
    let stranger = testkeys::generate(
        "Stranger <x@test.invalid>",
        KeyOptions {
            signing_subkey: true,
            certify_only: true,
            ..KeyOptions::default()
        },
    );
    let sig = stranger.sign_detached(&m.releases[2].tar, Hash::Sha256, true, true);
    m.server
        .file(&format!("{DIR}/llvm-18.1.8-x86_64.tar.sign"), sig);
    refused(
        &m.build(&["korg-clang-18", "--format", "deb"]),
        "not",
        &m.out(),
    );

    // SHA-1 (an RSA key, since Ed25519 cannot even make SHA-1 signatures).
    let rsa = Mirror::with(developer(KeyOptions {
        algo: testkeys::Algo::Rsa2048,
        ..KeyOptions::default()
    }));
    let weak = rsa
        .dev
        .sign_detached(&rsa.releases[2].tar, Hash::Sha1, true, true);
    rsa.server
        .file(&format!("{DIR}/llvm-18.1.8-x86_64.tar.sign"), weak);
    refused(
        &rsa.build(&["korg-clang-18", "--format", "deb"]),
        "SHA1",
        &rsa.out(),
    );

    let expired = Mirror::with(developer(KeyOptions {
        expired: true,
        ..KeyOptions::default()
    }));
    refused(
        &expired.build(&["korg-clang-18", "--format", "deb"]),
        "expired",
        &expired.out(),
    );

    let revoked = Mirror::with(developer(KeyOptions {
        revoked: true,
        ..KeyOptions::default()
    }));
    refused(
        &revoked.build(&["korg-clang-18", "--format", "deb"]),
        "revoked",
        &revoked.out(),
    );
}

#[test]
fn sums_files_that_are_not_signed_by_the_pinned_key_are_refused_before_download() {
    let m = Mirror::new();
    let stranger = testkeys::generate("Stranger <x@test.invalid>", KeyOptions::default());
    m.server
        .file(&format!("{DIR}/sha256sums.asc"), m.sums(&stranger));
    refused(
        &m.build(&["korg-clang-18", "--format", "deb"]),
        "sha256sums.asc",
        &m.out(),
    );
    let o = run(m.korgpkg().args(["list", "llvm"]));
    assert_eq!(o.status.code(), Some(5));

    // A line changed after signing.
    let sums = m
        .sums(&m.autosigner)
        .replacen("llvm-17.0.6", "llvm-17.0.7", 1);
    m.server.file(&format!("{DIR}/sha256sums.asc"), sums);
    refused(
        &m.build(&["korg-clang-18", "--format", "deb"]),
        "BAD signature",
        &m.out(),
    );
    assert_eq!(
        m.tarball_gets("18.1.8"),
        0,
        "nothing downloaded on a bad sums file"
    );
}

#[test]
fn keys_are_fetched_by_key_id_and_accepted_only_for_the_pinned_fingerprint() {
    let m = Mirror::new();
    let id = |k: &TestKey| k.fingerprint()[24..].to_string();
    m.server.file(
        &format!("/keys/{}.asc", id(&m.autosigner)),
        m.autosigner.public_armored(),
    );
    m.server
        .file(&format!("/keys/{}.asc", id(&m.dev)), m.dev.public_armored());
    let cmd = |cache: &Path| {
        let mut c = korgpkg();
        c.arg("--mirror")
            .arg(m.server.url("/pub/tools"))
            .arg("--specs-dir")
            .arg(m.tmp.path().join("specs"))
            .arg("--cache-dir")
            .arg(cache)
            .arg("--keys-url")
            .arg(m.server.url("/keys"));
        c
    };
    let cache = m.tmp.path().join("cache-fetched-keys");
    let r = json(&run(cmd(&cache)
        .args([
            "build",
            "korg-clang-18",
            "--format",
            "deb",
            "--json",
            "--out",
        ])
        .arg(m.out())));
    assert_eq!(r["outputs"][0]["provenance"]["signer"], m.dev.fingerprint());
    assert!(cache
        .join("keys")
        .join(format!("{}.asc", m.dev.fingerprint()))
        .is_file());

    // A different key served under the developer's key id is not accepted.
    let impostor = testkeys::generate("Impostor <dev@test.invalid>", KeyOptions::default());
    m.server.file(
        &format!("/keys/{}.asc", id(&m.dev)),
        impostor.public_armored(),
    );
    let fresh = m.tmp.path().join("cache-impostor");
    let out = m.tmp.path().join("out-impostor");
    let o = run(cmd(&fresh)
        .args(["build", "korg-clang-18", "--format", "deb", "--out"])
        .arg(&out));
    refused(&o, &m.dev.fingerprint(), &out);
}

#[test]
fn file_mirrors_and_interrupted_downloads_work() {
    let m = Mirror::new();
    // Interrupted once mid-body: resumed with a Range request.
    m.server.fault(
        &format!("{DIR}/llvm-18.1.8-x86_64.tar.xz"),
        Fault::DropAfter(1000),
    );
    json(&m.build(&["korg-clang-18", "--format", "deb", "--json"]));
    let reqs = m
        .server
        .requests_for(&format!("{DIR}/llvm-18.1.8-x86_64.tar.xz"));
    assert!(reqs.iter().any(|r| r.range.is_some()), "{reqs:?}");

    // The same release from a file:// mirror.
    let root = m.tmp.path().join("mirror/llvm/files");
    std::fs::create_dir_all(&root).expect("mirror");
    for r in &m.releases {
        std::fs::write(root.join(r.name()), &r.xz).expect("w");
        std::fs::write(
            root.join(r.sign_name()),
            m.dev.sign_detached(&r.tar, Hash::Sha256, false, true),
        )
        .expect("w");
    }
    std::fs::write(root.join("sha256sums.asc"), m.sums(&m.autosigner)).expect("w");
    let out = m.tmp.path().join("out-file");
    let r = json(&run(korgpkg()
        .arg("--mirror")
        .arg(format!("file://{}", m.tmp.path().join("mirror").display()))
        .arg("--specs-dir")
        .arg(m.tmp.path().join("specs"))
        .arg("--keyring")
        .arg(m.tmp.path().join("keyring.asc"))
        .arg("--cache-dir")
        .arg(m.tmp.path().join("cache-file"))
        .args([
            "--keys-url",
            "",
            "build",
            "korg-clang-17",
            "--format",
            "ipk",
            "--json",
            "--out",
        ])
        .arg(&out)));
    assert_eq!(r["outputs"][0]["provenance"]["signer"], m.dev.fingerprint());
}

#[test]
fn local_tarballs_are_verified_by_the_signature_beside_them() {
    let m = Mirror::new();
    let dir = m.tmp.path().join("local");
    std::fs::create_dir_all(&dir).expect("dir");
    let r = &m.releases[2];
    let tarball = dir.join(r.name());
    std::fs::write(&tarball, &r.xz).expect("w");
    let local = |extra: &[&str], out: &Path| {
        run(m
            .korgpkg()
            .args([
                "build",
                "korg-clang-18",
                "--format",
                "deb",
                "--json",
                "--from",
            ])
            .arg(&tarball)
            .args(extra)
            .arg("--out")
            .arg(out))
    };
    // No signature: refused unless --allow-unverified.
    let out = m.tmp.path().join("o1");
    refused(&local(&[], &out), "no detached signature", &out);
    // The .tar.sign and sha256sums.asc beside it.
    std::fs::write(
        dir.join(r.sign_name()),
        m.dev.sign_detached(&r.tar, Hash::Sha256, true, true),
    )
    .expect("w");
    std::fs::write(dir.join("sha256sums.asc"), m.sums(&m.autosigner)).expect("w");
    let rep = json(&local(&[], &m.tmp.path().join("o2")));
    let p = &rep["outputs"][0]["provenance"];
    assert_eq!(p["signer"], m.dev.fingerprint());
    assert_eq!(p["sums_signer"], m.autosigner.fingerprint());
    // An explicit --signature that does not cover the tar.
    let bad = dir.join("bad.sign");
    std::fs::write(
        &bad,
        m.dev
            .sign_detached(b"something else", Hash::Sha256, true, true),
    )
    .expect("w");
    let out = m.tmp.path().join("o3");
    refused(
        &local(&["--signature", bad.to_str().expect("utf8")], &out),
        "BAD signature",
        &out,
    );
}

/// kernel.org's real sums files, served as the mirror, with the real autosigner key.
fn real_mirror() -> Server {
    let s = Server::start();
    let read =
        |f: &str| std::fs::read(format!("{REAL}/{f}")).expect("fixture (see ../shared/fixtures)");
    s.file(
        "/pub/tools/llvm/files/sha256sums.asc",
        read("llvm-files-sha256sums.asc"),
    );
    for host in ["x86_64", "arm64"] {
        s.file(
            &format!("/pub/tools/crosstool/files/bin/{host}/14.2.0/sha256sums.asc"),
            read(&format!("crosstool-bin-{host}-14.2.0-sha256sums.asc")),
        );
    }
    s
}

fn real_korgpkg(s: &Server, cache: &Path) -> Command {
    let mut c = korgpkg();
    c.arg("--mirror")
        .arg(s.url("/pub/tools"))
        .arg("--keyring")
        .arg(format!("{REAL}/autosigner-{REAL_AUTOSIGNER}.asc"))
        .arg("--cache-dir")
        .arg(cache)
        .args(["--keys-url", ""]);
    c
}

#[test]
fn real_kernel_org_sums_are_verified_and_listed() {
    let s = real_mirror();
    let tmp = tempfile::tempdir().expect("tmp");
    let v = json(&run(real_korgpkg(&s, tmp.path()).args([
        "list",
        "korg-clang-17",
        "--arch",
        "x86_64",
        "--json",
    ])));
    let versions: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["version"].as_str().expect("v"))
        .collect();
    let pos = |x: &str| {
        versions
            .iter()
            .position(|v| *v == x)
            .unwrap_or_else(|| panic!("{x} in {versions:?}"))
    };
    // kernel.org published 17.0.0-rc1..rc4, then 17.0.1 (there is no 17.0.0 tarball).
    assert!(pos("17.0.0-rc1") < pos("17.0.0-rc2") && pos("17.0.0-rc4") < pos("17.0.1"));
    assert!(pos("17.0.1") < pos("17.0.6"));
    let xz = v
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["file_name"] == "llvm-17.0.0-rc1-x86_64.tar.xz")
        .expect("rc1 xz");
    assert_eq!(
        xz["sha256"],
        "ab0849a978f22a5d3f3d9176413e2d8484230956a3f1013281bf6866b555bfee"
    );
    assert_eq!(xz["sums_signer"], REAL_AUTOSIGNER);

    // Crosstool: directories bin/<host>/<version>/ are found by listing the mirror.
    let text = ok(real_korgpkg(&s, tmp.path()).args(["list", "korg-gcc-14-aarch64-linux"]));
    assert!(
        text.contains("14.2.0") && text.contains("x86_64") && text.contains("arm64"),
        "{text}"
    );
    // Everything at once.
    let all = ok(real_korgpkg(&s, tmp.path()).arg("list"));
    assert!(
        all.contains("korg-clang-18") && all.contains("korg-gcc-14-riscv64-linux"),
        "{all}"
    );
}

#[test]
fn a_tampered_real_sums_file_is_refused() {
    let s = real_mirror();
    let text =
        std::fs::read_to_string(format!("{REAL}/llvm-files-sha256sums.asc")).expect("fixture");
    let tampered = text.replacen(
        "aa069ab507e27b9193373e8f20d505b1bc01b713916f062d71d6be9bb8dc68ea",
        "ba069ab507e27b9193373e8f20d505b1bc01b713916f062d71d6be9bb8dc68ea",
        1,
    );
    assert_ne!(text, tampered);
    s.file("/pub/tools/llvm/files/sha256sums.asc", tampered);
    let tmp = tempfile::tempdir().expect("tmp");
    let o = run(real_korgpkg(&s, tmp.path()).args(["list", "llvm"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains("BAD signature") && err.contains("sha256sums.asc"),
        "{err}"
    );
}

/// A fault: name, how to break the mirror, expected exit code, expected message part.
type Case<'a> = (&'static str, Box<dyn Fn(&Mirror) + 'a>, i32, &'static str);

#[test]
fn every_upstream_fault_is_refused_with_nothing_written_and_the_cache_clean() {
    let xz_path = format!("{DIR}/llvm-18.1.8-x86_64.tar.xz");
    let sign_path = format!("{DIR}/llvm-18.1.8-x86_64.tar.sign");
    let cases: Vec<Case<'_>> = vec![
        (
            "signature over the compressed file",
            Box::new(|m: &Mirror| {
                let sig = m
                    .dev
                    .sign_detached(&m.releases[2].xz, Hash::Sha256, true, true);
                m.server.file(&sign_path, sig);
            }),
            5,
            "BAD signature",
        ),
        (
            "sums signed by the developer key",
            Box::new(|m: &Mirror| {
                m.server
                    .file(&format!("{DIR}/sha256sums.asc"), m.sums(&m.dev));
            }),
            5,
            "sha256sums.asc",
        ),
        (
            "truncated body",
            Box::new(|m: &Mirror| {
                let xz = &m.releases[2].xz;
                m.server.file(&xz_path, xz[..xz.len() / 2].to_vec());
            }),
            5,
            "sha256",
        ),
        (
            "HTML page served with 200",
            Box::new(|m: &Mirror| {
                m.server.fault(&xz_path, Fault::Html);
            }),
            6,
            "HTML",
        ),
        (
            "missing signature",
            Box::new(|m: &Mirror| {
                m.server.fault(&sign_path, Fault::Status(404, 100));
            }),
            6,
            "404",
        ),
    ];
    for (name, break_it, code, needle) in cases {
        let m = Mirror::new();
        break_it(&m);
        let o = m.build(&["korg-clang-18", "--format", "deb"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{name}: {err}");
        assert!(err.contains(needle), "{name}: want {needle:?} in {err}");
        assert!(dir_listing(&m.out()).is_empty(), "{name}: output written");
        assert!(
            cached_tarballs(&m.cache()).is_empty(),
            "{name}: cache poisoned: {:?}",
            cached_tarballs(&m.cache())
        );
    }
}

#[test]
fn transient_server_errors_are_retried() {
    let m = Mirror::new();
    let xz_path = format!("{DIR}/llvm-18.1.8-x86_64.tar.xz");
    m.server.fault(&xz_path, Fault::Status(500, 2));
    let r = json(&m.build(&["korg-clang-18", "--format", "deb", "--json"]));
    assert_eq!(
        r["outputs"][0]["provenance"]["sha256"],
        sha256_hex(&m.releases[2].xz)
    );
    assert_eq!(
        m.server.requests_for(&xz_path).len(),
        3,
        "two 500s, then success"
    );
}

#[test]
fn a_local_tarball_missing_from_its_sums_file_is_refused() {
    let m = Mirror::new();
    let dir = m.tmp.path().join("local");
    std::fs::create_dir_all(&dir).expect("dir");
    // A release the sums file does not list, signed correctly by the developer.
    let extra = Rel::new("18.1.7");
    let tarball = dir.join(extra.name());
    std::fs::write(&tarball, &extra.xz).expect("w");
    std::fs::write(
        dir.join(extra.sign_name()),
        m.dev.sign_detached(&extra.tar, Hash::Sha256, true, true),
    )
    .expect("w");
    std::fs::write(dir.join("sha256sums.asc"), m.sums(&m.autosigner)).expect("w");
    let out = m.tmp.path().join("o");
    let o = run(m
        .korgpkg()
        .args(["build", "korg-clang-18", "--format", "deb", "--from"])
        .arg(&tarball)
        .arg("--out")
        .arg(&out));
    refused(&o, "does not list llvm-18.1.7-x86_64.tar.xz", &out);
}

#[test]
fn the_mirror_comes_from_the_environment_or_the_config_file() {
    let m = Mirror::new();
    let base = |c: &mut Command| {
        c.arg("--specs-dir")
            .arg(m.tmp.path().join("specs"))
            .arg("--keyring")
            .arg(m.tmp.path().join("keyring.asc"))
            .arg("--cache-dir")
            .arg(m.cache())
            .args(["--keys-url", ""]);
    };
    let mut c = korgpkg();
    base(&mut c);
    c.env("KORGPKG_MIRROR", m.server.url("/pub/tools"))
        .args(["list", "korg-clang-18"]);
    assert!(ok(&mut c).contains("18.1.8"));

    let cfg = m.tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("mirror = \"{}\"\n", m.server.url("/pub/tools")),
    )
    .expect("w");
    let mut c = korgpkg();
    base(&mut c);
    c.arg("--config").arg(&cfg).args(["list", "korg-clang-18"]);
    assert!(ok(&mut c).contains("18.1.8"));

    // A flag beats both; a bad mirror URL is a usage error.
    let mut c = korgpkg();
    base(&mut c);
    c.env("KORGPKG_MIRROR", "http://127.0.0.1:9/nowhere").args([
        "--mirror",
        "ftp://example.invalid/",
        "list",
    ]);
    let o = run(&mut c);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
