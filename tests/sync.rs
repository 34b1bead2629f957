//! `korgpkg sync` against an LLVM mirror on 127.0.0.1 (generated releases signed by
//! throwaway keys pinned through a spec override), publishing into a repository served
//! by `korgpkg serve`, checked with the real apt-get, dpkg, dnf and rpm.

mod common;
use common::mirror::{developer, Mirror, DIR};
use common::obs::{commits, oscrc, puts, without_obs_env, FakeObs, PASSWORD};
use common::repo::{dnf, provider_for, snapshot, AptRoot, TestRepo};
use common::*;
use korgpkg::verify::testkeys::{Hash, KeyOptions};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The policy the tests sync: korg-clang-17 and newer, x86_64, two versions per
/// package; release candidates as debs in `testing`.
const POLICY: &str = r#"
[sync]
keep = 2
arches = ["x86_64"]

[[sync.packages]]
name = "korg-clang-*"
min_major = 17

[sync.channels.release]
suite = "stable"

[sync.channels.rc]
suite = "testing"
formats = ["deb"]
"#;

/// A mirror with `versions` and a served repository (suites stable and testing) whose
/// definition carries [`POLICY`].
fn setup(versions: &[&str]) -> (Mirror, TestRepo) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("repo");
    setup_at(versions, tmp, root)
}

/// [`setup`] with the repository at `root` (keys and server state in `tmp`).
fn setup_at(versions: &[&str], tmp: tempfile::TempDir, root: PathBuf) -> (Mirror, TestRepo) {
    let m = Mirror::with_versions(developer(KeyOptions::default()), versions);
    let repo = TestRepo::with_root(
        tmp,
        root,
        false,
        &["--arch", "amd64", "--suite", "stable", "--suite", "testing"],
    );
    let def = repo.root.join("korgpkg-repo.toml");
    let mut text = std::fs::read_to_string(&def).expect("definition");
    text.push_str(POLICY);
    std::fs::write(&def, text).expect("write definition");
    (m, repo)
}

fn sync(m: &Mirror, repo: &TestRepo, extra: &[&str]) -> Output {
    run(m
        .korgpkg()
        .args(["sync", "--repo"])
        .arg(&repo.root)
        .args(extra))
}

fn sync_json(m: &Mirror, repo: &TestRepo, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    success_json(sync(m, repo, &args))
}

/// The JSON a successful `korgpkg sync --json` printed.
fn success_json(o: Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "sync failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("sync --json prints JSON")
}

/// `format name version arch [suite]` of every package in the repository.
fn contents(root: &Path) -> BTreeSet<String> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(korgpkg().args(["repo", "list", "--json"]).arg(root)))
            .expect("repo list --json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|p| {
            let suite = p["suite"]
                .as_str()
                .map(|s| format!(" [{s}]"))
                .unwrap_or_default();
            format!(
                "{} {} {} {}{suite}",
                p["format"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["arch"].as_str().unwrap()
            )
        })
        .collect()
}

/// Every format of korg-clang-`major` `version` in the release channel.
fn release_set(major: u32, version: &str) -> Vec<String> {
    vec![
        format!("deb korg-clang-{major} {version}-1 amd64 [stable]"),
        format!("rpm korg-clang-{major} {version}-1 x86_64"),
        format!("ipk korg-clang-{major} {version}-1 x86_64 [openembedded]"),
    ]
}

fn generation(root: &Path) -> u64 {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(".korgpkg/state.json")).expect("state.json"),
    )
    .expect("state");
    state["generation"].as_u64().expect("generation")
}

/// Tarball downloads the mirror has served so far.
fn tarball_gets(m: &Mirror) -> Vec<String> {
    m.server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(".tar.xz"))
        .map(|r| r.path)
        .collect()
}

/// Every index of the repository, as text.
fn all_indexes(root: &Path) -> String {
    let mut text = String::new();
    for suite in ["stable", "testing"] {
        text.push_str(
            &std::fs::read_to_string(
                root.join(format!("apt/dists/{suite}/main/binary-amd64/Packages")),
            )
            .unwrap_or_default(),
        );
    }
    text.push_str(
        &std::fs::read_to_string(root.join("opkg/openembedded/Packages")).unwrap_or_default(),
    );
    let repomd = std::fs::read_to_string(root.join("rpm/repodata/repomd.xml")).unwrap_or_default();
    if let Some(href) = repomd
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("-primary.xml"))
    {
        let bytes = std::fs::read(root.join("rpm").join(href)).expect("primary");
        let xml = if href.ends_with(".zst") {
            zstd::decode_all(&bytes[..]).expect("zstd")
        } else {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                .expect("gzip");
            out
        };
        text.push_str(&String::from_utf8_lossy(&xml));
    }
    text
}

fn installed_version(apt: &AptRoot, package: &str) -> String {
    ok(Command::new("dpkg-query")
        .arg(format!("--admindir={}/var/lib/dpkg", apt.dir.display()))
        .args(["-W", "-f=${Version}", package]))
}

#[test]
fn sync_keeps_the_repository_equal_to_the_policy() {
    need_tool("apt-get");
    need_tool("dnf");
    need_tool("rpmbuild");
    let (mut m, repo) = setup(&[
        "16.0.6",
        "17.0.6",
        "18.1.6",
        "18.1.7",
        "18.1.8",
        "19.1.0-rc1",
    ]);

    // A dry run plans and changes nothing.
    let plan = sync_json(&m, &repo, &["--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert!(tarball_gets(&m).is_empty(), "a dry run downloaded");
    assert!(contents(&repo.root).is_empty());
    let planned: usize = plan["plan"]["selected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["missing"].as_array().unwrap().len())
        .sum();
    assert_eq!(planned, 10, "{plan}");

    // First sync: exactly the policy's set.
    let report = sync_json(&m, &repo, &[]);
    let mut want: BTreeSet<String> = BTreeSet::new();
    want.extend(release_set(17, "17.0.6"));
    want.extend(release_set(18, "18.1.7"));
    want.extend(release_set(18, "18.1.8"));
    want.insert("deb korg-clang-19 19.1.0~rc1-1 amd64 [testing]".into());
    assert_eq!(contents(&repo.root), want);
    // Provenance of every added package.
    let added = report["added"].as_array().unwrap();
    assert_eq!(added.len(), 10);
    for a in added {
        let url = a["upstream_url"].as_str().unwrap();
        assert!(url.starts_with(&m.server.url(DIR)), "{a}");
        assert_eq!(a["upstream_sha256"].as_str().unwrap().len(), 64, "{a}");
        assert_eq!(a["signers"].as_array().unwrap().len(), 2, "{a}");
    }
    let mut gets = tarball_gets(&m);
    gets.sort();
    assert_eq!(
        gets.len(),
        4,
        "each wanted release downloaded once: {gets:?}"
    );
    // The tarballs left the cache once their packages were built.
    assert!(dir_listing(&m.cache().join("sha256")).is_empty());
    // The sync log names every package with its upstream release.
    let log = std::fs::read_to_string(repo.root.join("sync-log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 10, "{log}");
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for k in [
        "time",
        "package",
        "version",
        "arch",
        "format",
        "sha256",
        "upstream_url",
        "upstream_sha256",
        "signers",
    ] {
        assert!(!first[k].is_null(), "log line lacks {k}: {first}");
    }

    // Each package's changelog names the upstream release it came from.
    let deb = repo
        .root
        .join("apt/pool/main/k/korg-clang-18/korg-clang-18_18.1.8-1_amd64.deb");
    let o = ok(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile {} | tar -xO ./usr/share/doc/korg-clang-18/changelog.Debian.gz | gzip -dc",
        deb.display()
    )));
    assert!(
        o.contains("Upstream release llvm-18.1.8-x86_64.tar.xz"),
        "{o}"
    );
    let rpm = repo
        .root
        .join("rpm/Packages/korg-clang-18-18.1.8-1.x86_64.rpm");
    let o = ok(Command::new("rpm").args(["-qp", "--changelog"]).arg(&rpm));
    assert!(
        o.contains("Upstream release llvm-18.1.8-x86_64.tar.xz"),
        "{o}"
    );
    let upstream = m.releases.iter().find(|r| r.version == "18.1.8").unwrap();
    assert!(o.contains(&common::mirror::sha256_hex(&upstream.xz)), "{o}");

    // apt: the newest 18.x installs; the rc is in testing only.
    let keyring = repo.root.join("apt/korg-archive-keyring.gpg");
    let line = format!(
        "deb [signed-by={}] {}/apt stable main",
        keyring.display(),
        repo.url
    );
    let apt = AptRoot::new(repo.tmp.path(), &line);
    let (good, text) = apt.update();
    assert!(good, "apt-get update failed:\n{text}");
    let o = run(apt.apt("apt-get").args(["install", "-y", "korg-clang-18"]));
    assert!(
        o.status.success(),
        "apt-get install: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(installed_version(&apt, "korg-clang-18"), "18.1.8-1");
    let o = run(apt
        .apt("apt-get")
        .args(["install", "-y", "--simulate", "korg-clang-19"]));
    assert!(!o.status.success(), "the rc must not be in stable");
    let testing = std::fs::read_to_string(
        repo.root
            .join("apt/dists/testing/main/binary-amd64/Packages"),
    )
    .unwrap();
    assert!(testing.contains("Package: korg-clang-19\n"), "{testing}");
    let stable = std::fs::read_to_string(
        repo.root
            .join("apt/dists/stable/main/binary-amd64/Packages"),
    )
    .unwrap();
    assert!(!stable.contains("korg-clang-19"), "{stable}");

    // dnf from rpm-md: the same newest 18.x.
    let rpm18 = repo
        .root
        .join("rpm/Packages/korg-clang-18-18.1.8-1.x86_64.rpm");
    let provider = provider_for(&rpm18, repo.tmp.path());
    repo.publish(&[&provider]);
    let root = repo.tmp.path().join("dnfroot");
    let repos = repo.tmp.path().join("repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::copy(repo.root.join("rpm/korg.repo"), repos.join("korg.repo")).unwrap();
    let o = run(dnf(&root, &repos, "cache").args(["install", "korg-clang-18"]));
    assert!(
        o.status.success(),
        "dnf install: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let q = ok(Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args(["-q", "korg-clang-18"]));
    assert_eq!(q.trim(), "korg-clang-18-18.1.8-1.x86_64");

    // A newer release: only it is downloaded and built; the oldest beyond keep goes.
    m.add("18.1.9");
    let before = tarball_gets(&m).len();
    let gen_before = generation(&repo.root);
    let report = sync_json(&m, &repo, &[]);
    let new_gets = tarball_gets(&m)[before..].to_vec();
    assert_eq!(new_gets, [format!("{DIR}/llvm-18.1.9-x86_64.tar.xz")]);
    assert_eq!(report["added"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(
        generation(&repo.root),
        gen_before + 1,
        "one generation switch"
    );
    for p in release_set(18, "18.1.9") {
        want.insert(p);
    }
    for p in release_set(18, "18.1.7") {
        want.remove(&p);
    }
    // The hand-published provider is not the policy's and stays.
    want.insert("rpm korg-test-provider 1-1 noarch".into());
    assert_eq!(contents(&repo.root), want);
    assert!(!all_indexes(&repo.root).contains("18.1.7"));
    for gone in [
        "apt/pool/main/k/korg-clang-18/korg-clang-18_18.1.7-1_amd64.deb",
        "rpm/Packages/korg-clang-18-18.1.7-1.x86_64.rpm",
    ] {
        assert!(
            !repo.root.join(gone).exists(),
            "{gone} is still in the pool"
        );
    }
    let (good, text) = apt.update();
    assert!(good, "apt-get update failed:\n{text}");
    let o = run(apt.apt("apt-get").args(["upgrade", "-y"]));
    assert!(
        o.status.success(),
        "apt-get upgrade: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(installed_version(&apt, "korg-clang-18"), "18.1.9-1");

    // Nothing new upstream: no download, no build, no new generation, and the sums
    // file is only revalidated.
    let before = m.server.requests().len();
    let gen_before = generation(&repo.root);
    let o = sync(&m, &repo, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no change"), "{out}");
    assert!(out.contains("0 added, 0 removed"), "{out}");
    assert_eq!(generation(&repo.root), gen_before);
    let requests = m.server.requests()[before..].to_vec();
    assert!(
        requests
            .iter()
            .all(|r| !r.path.ends_with(".tar.xz") && !r.path.ends_with(".tar.sign")),
        "{requests:?}"
    );
    let sums: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("sha256sums.asc"))
        .collect();
    assert_eq!(sums.len(), 1, "{requests:?}");
    assert!(
        sums[0].if_none_match.is_some(),
        "not revalidated: {requests:?}"
    );
}

/// The policy of a second repository that carries only release candidates, as rpm and
/// ipk: the dnf/opkg testing feed beside [`POLICY`]'s repository.
const RC_ONLY_POLICY: &str = r#"
[sync]
keep = 2
arches = ["x86_64"]

[[sync.packages]]
name = "korg-clang-*"
min_major = 17

[sync.channels.release]
formats = []

[sync.channels.rc]
formats = ["rpm", "ipk"]
"#;

/// What `dnf repoquery korg-clang-19` finds in `repo`'s rpm-md repository.
fn dnf_query(repo: &TestRepo, name: &str) -> String {
    let root = repo.tmp.path().join("dnfroot");
    let repos = repo.tmp.path().join("repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::copy(repo.root.join("rpm/korg.repo"), repos.join("korg.repo")).unwrap();
    ok(dnf(&root, &repos, "cache").args(["repoquery", "--refresh", name]))
}

#[test]
fn release_candidates_reach_dnf_and_opkg_through_a_testing_repository() {
    need_tool("dnf");
    let (mut m, stable) = setup(&["18.1.8", "19.1.0-rc1"]);
    let testing = TestRepo::new(false, &["--arch", "amd64"]);
    let def = testing.root.join("korgpkg-repo.toml");
    let mut text = std::fs::read_to_string(&def).expect("definition");
    text.push_str(RC_ONLY_POLICY);
    std::fs::write(&def, text).expect("write definition");

    sync_json(&m, &stable, &[]);
    sync_json(&m, &testing, &[]);
    let mut want: BTreeSet<String> = release_set(18, "18.1.8").into_iter().collect();
    want.insert("deb korg-clang-19 19.1.0~rc1-1 amd64 [testing]".into());
    assert_eq!(contents(&stable.root), want);
    let rcs: BTreeSet<String> = [
        "rpm korg-clang-19 19.1.0~rc1-1 x86_64".to_string(),
        "ipk korg-clang-19 19.1.0~rc1-1 x86_64 [openembedded]".into(),
    ]
    .into();
    assert_eq!(contents(&testing.root), rcs);

    // dnf: the testing repository has the rc, the stable one does not (but has 18.x).
    let q = dnf_query(&testing, "korg-clang-19");
    assert!(q.contains("korg-clang-19-0:19.1.0~rc1-1.x86_64"), "{q}");
    let q = dnf_query(&stable, "korg-clang-*");
    assert!(q.contains("korg-clang-18-0:18.1.8-1.x86_64"), "{q}");
    assert!(
        !q.contains("korg-clang-19"),
        "the rc is in the stable rpm-md: {q}"
    );
    // opkg: the same split.
    let feed =
        |r: &TestRepo| std::fs::read_to_string(r.root.join("opkg/openembedded/Packages")).unwrap();
    assert!(feed(&testing).contains("Package: korg-clang-19\n"));
    assert!(!feed(&stable).contains("korg-clang-19"));

    // The release: into stable; the rc leaves the testing repository.
    m.add("19.1.0");
    sync_json(&m, &stable, &[]);
    sync_json(&m, &testing, &[]);
    assert!(
        contents(&testing.root).is_empty(),
        "{:?}",
        contents(&testing.root)
    );
    let q = dnf_query(&stable, "korg-clang-19");
    assert!(q.contains("korg-clang-19-0:19.1.0-1.x86_64"), "{q}");
}

#[test]
fn a_release_with_a_bad_signature_is_skipped_and_the_others_land() {
    let (m, repo) = setup(&["17.0.6", "18.1.8", "19.1.0-rc1", "20.1.0"]);
    // 18.1.8's .tar.sign is over another release's tar.
    let other = m
        .dev
        .sign_detached(&m.releases[0].tar, Hash::Sha256, true, true);
    m.server
        .file(&format!("{DIR}/llvm-18.1.8-x86_64.tar.sign"), other);
    // 20.1.0's tarball does not match the signed sums file.
    let mut evil = m.releases[3].xz.clone();
    let at = evil.len() / 2;
    evil[at] ^= 1;
    m.server
        .file(&format!("{DIR}/llvm-20.1.0-x86_64.tar.xz"), evil);
    let o = sync(&m, &repo, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("18.1.8"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("failed korg-clang-18 18.1.8"), "{out}");
    assert!(out.contains("failed korg-clang-20 20.1.0"), "{out}");
    let mut want: BTreeSet<String> = release_set(17, "17.0.6").into_iter().collect();
    want.insert("deb korg-clang-19 19.1.0~rc1-1 amd64 [testing]".into());
    assert_eq!(contents(&repo.root), want);
    let indexes = all_indexes(&repo.root);
    assert!(!indexes.contains("korg-clang-18"), "{indexes}");
    assert!(!indexes.contains("korg-clang-20"), "{indexes}");
    assert!(dir_listing(&m.cache().join("sha256")).is_empty());

    // Still bad: retried, refused again, nothing else changes.
    let gen = generation(&repo.root);
    let o = sync(&m, &repo, &[]);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(generation(&repo.root), gen);
}

#[test]
fn a_download_that_keeps_failing_exits_6_and_the_others_land() {
    let (m, repo) = setup(&["17.0.6", "18.1.8"]);
    m.server.fault(
        &format!("{DIR}/llvm-17.0.6-x86_64.tar.xz"),
        common::server::Fault::Status(503, 1000),
    );
    let o = sync(&m, &repo, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("17.0.6"), "{err}");
    let gets = m
        .server
        .requests_for(&format!("{DIR}/llvm-17.0.6-x86_64.tar.xz"))
        .len();
    assert!(gets > 1, "not retried: {gets}");
    let want: BTreeSet<String> = release_set(18, "18.1.8").into_iter().collect();
    assert_eq!(contents(&repo.root), want);
}

#[test]
fn a_second_sync_with_wait_waits_for_the_first() {
    let (m, repo) = setup(&["18.1.8"]);
    let tarball = format!("{DIR}/llvm-18.1.8-x86_64.tar.xz");
    m.server.fault(&tarball, common::server::Fault::Stall(100));
    let mut first = m
        .korgpkg()
        .args(["sync", "--repo"])
        .arg(&repo.root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sync");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while m.server.requests_for(&tarball).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no download started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = sync(&m, &repo, &["--wait"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("waiting for another korgpkg sync"), "{err}");
    // The first one published; the second found nothing to do.
    assert!(String::from_utf8_lossy(&o.stdout).contains("no change"));
    assert!(first.wait().expect("wait").success());
    let want: BTreeSet<String> = release_set(18, "18.1.8").into_iter().collect();
    assert_eq!(contents(&repo.root), want);
}

#[test]
fn policy_errors_exit_3_naming_the_file_and_key() {
    let (m, repo) = setup(&["18.1.8"]);
    let def = repo.root.join("korgpkg-repo.toml");
    let text = std::fs::read_to_string(&def)
        .unwrap()
        .replace("keep = 2", "keep = 0");
    std::fs::write(&def, text).unwrap();
    let o = sync(&m, &repo, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("korgpkg-repo.toml") && err.contains("sync.keep"),
        "{err}"
    );
    assert!(m.server.requests().is_empty());
}

/// A repository on a tmpfs of `size` (None where tmpfs cannot be mounted), synced once
/// from a mirror holding 17.0.6.
fn synced_on_tmpfs(size: &str) -> Option<(Tmpfs, Mirror, TestRepo)> {
    let fs = Tmpfs::mount(size)?;
    let (m, repo) = setup_at(
        &["17.0.6"],
        tempfile::tempdir().expect("tmp"),
        fs.dir.join("repo"),
    );
    sync_json(&m, &repo, &[]);
    Some((fs, m, repo))
}

#[test]
fn a_sync_on_a_full_disk_fails_clearly_and_leaves_the_repository_as_it_was() {
    let Some((fs, mut m, repo)) = synced_on_tmpfs("24m") else {
        return;
    };
    let want: BTreeSet<String> = release_set(17, "17.0.6").into_iter().collect();
    assert_eq!(contents(&repo.root), want);
    let before = snapshot(&repo.root);
    let gen = generation(&repo.root);

    // A new release, and almost no room left for building or publishing it.
    m.add("18.1.8");
    let filler = fs.fill_leaving(64 << 10);
    let o = sync(&m, &repo, &["--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&repo.root.display().to_string()),
        "the error names no path in the repository: {err}"
    );
    // Byte for byte the previous generation, with nothing left behind (no work
    // directory, temp file, pool file or generation).
    assert_eq!(generation(&repo.root), gen);
    let after = snapshot(&repo.root);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "the repository changed: {changed:?}");
    assert_served_complete(&repo, "after a full disk");

    // Room again: the rerun completes.
    std::fs::remove_file(&filler).expect("unfill");
    sync_json(&m, &repo, &[]);
    let mut want = want;
    want.extend(release_set(18, "18.1.8"));
    assert_eq!(contents(&repo.root), want);
    assert_eq!(generation(&repo.root), gen + 1);
}

#[test]
fn a_disk_that_fills_while_publishing_keeps_the_served_generation_and_the_build() {
    let Some((fs, mut m, repo)) = synced_on_tmpfs("48m") else {
        return;
    };
    let before = snapshot(&repo.root);
    let gen = generation(&repo.root);

    // A release of 6 MiB of noise: its three packages take about 14 MiB. Building needs
    // about 20 MiB (staged payload and packages), building and publishing about 28 MiB
    // (packages in the work directory and in the pools).
    let top = "llvm-18.1.8-x86_64";
    m.add_rel(common::mirror::Rel::with_items(
        "18.1.8",
        &noise_items(top, 6),
    ));
    let filler = fs.fill_leaving(24 << 20);
    let o = sync(&m, &repo, &["--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    // It names the pool file that could not be written.
    let pool = [
        repo.root.join("apt/pool"),
        repo.root.join("rpm/Packages"),
        repo.root.join("opkg-pool"),
    ];
    assert!(
        pool.iter()
            .any(|p| err.contains(&format!(" into {}", p.display()))),
        "{err}"
    );
    let work = repo.root.join(".korgpkg/sync-work");
    let built: Vec<String> = dir_listing(&work)
        .into_iter()
        .filter(|d| work.join(d).join("built.json").is_file())
        .collect();
    assert_eq!(built.len(), 1, "the build did not finish: {err}");
    // The repository is byte for byte as before, but for the finished build.
    assert_eq!(generation(&repo.root), gen);
    let after = snapshot(&repo.root);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| !k.starts_with(".korgpkg/sync-work"))
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "the repository changed: {changed:?}");
    assert_served_complete(&repo, "after a full disk while publishing");

    // Room again: the rerun publishes the finished build without downloading it again.
    std::fs::remove_file(&filler).expect("unfill");
    let gets = m.tarball_gets("18.1.8");
    let o = sync(&m, &repo, &["--json"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    success_json(o);
    assert!(
        err.contains("reusing the packages of llvm-18.1.8-x86_64.tar.xz"),
        "{err}"
    );
    assert_eq!(m.tarball_gets("18.1.8"), gets);
    let mut want: BTreeSet<String> = release_set(17, "17.0.6").into_iter().collect();
    want.extend(release_set(18, "18.1.8"));
    assert_eq!(contents(&repo.root), want);
    assert!(dir_listing(&work).is_empty());
}

/// Whether every served index link points at a complete generation that apt accepts.
fn assert_served_complete(repo: &TestRepo, when: &str) {
    for link in ["apt/dists", "rpm/repodata", "opkg"] {
        let p = repo.root.join(link);
        if p.symlink_metadata().is_ok() {
            assert!(p.exists(), "{when}: {link} points nowhere");
        }
    }
    if repo.root.join("rpm/repodata").exists() {
        assert!(
            repo.root.join("rpm/repodata/repomd.xml").is_file(),
            "{when}"
        );
    }
    if repo.root.join("apt/dists").exists() {
        let keyring = repo.root.join("apt/korg-archive-keyring.gpg");
        let line = format!(
            "deb [signed-by={}] {}/apt stable main",
            keyring.display(),
            repo.url
        );
        let dir = tempfile::tempdir().unwrap();
        let apt = AptRoot::new(dir.path(), &line);
        let (good, text) = apt.update();
        assert!(good, "{when}: apt-get update failed:\n{text}");
    }
}

/// Start a sync and kill -9 it when its stderr shows `trigger`; returns what it printed.
fn kill_at(m: &Mirror, repo: &TestRepo, trigger: &str) -> String {
    let mut child = m
        .korgpkg()
        .args(["sync", "--repo"])
        .arg(&repo.root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sync");
    let mut seen = String::new();
    let reader = BufReader::new(child.stderr.take().expect("stderr"));
    for line in reader.lines() {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(trigger) {
            // SIGKILL, as kill -9.
            child.kill().expect("kill");
            break;
        }
    }
    let _ = child.wait();
    seen
}

#[test]
fn a_killed_sync_leaves_a_complete_repository_and_a_rerun_finishes_it() {
    need_tool("apt-get");
    let (mut m, repo) = setup(&["17.0.6", "18.1.7", "18.1.8"]);
    let mut want: BTreeSet<String> = BTreeSet::new();
    for (major, v) in [(17, "17.0.6"), (18, "18.1.7"), (18, "18.1.8")] {
        want.extend(release_set(major, v));
    }

    // During a download (the server stalls), a second sync is refused by the lock.
    m.server.fault(
        &format!("{DIR}/llvm-17.0.6-x86_64.tar.xz"),
        common::server::Fault::Stall(100),
    );
    let mut child = m
        .korgpkg()
        .args(["sync", "--repo"])
        .arg(&repo.root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sync");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while m
        .server
        .requests_for(&format!("{DIR}/llvm-17.0.6-x86_64.tar.xz"))
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no download started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = sync(&m, &repo, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("another korgpkg sync is running"), "{err}");
    child.kill().expect("kill");
    let _ = child.wait();
    assert_served_complete(&repo, "killed while downloading");
    assert!(contents(&repo.root).is_empty());

    // During packaging: what was built survives in the work directory.
    kill_at(&m, &repo, "building korg-clang-18 18.1.7");
    assert_served_complete(&repo, "killed while packaging");
    let work = repo.root.join(".korgpkg/sync-work");
    let finished = dir_listing(&work)
        .iter()
        .filter(|d| work.join(d).join("built.json").is_file())
        .count();
    assert!(finished >= 1, "17.0.6's finished build was not kept");

    // During publishing: the build finished before is reused, not redone.
    let seen = kill_at(&m, &repo, "publishing:");
    assert!(seen.contains("publishing:"), "{seen}");
    assert!(
        seen.contains("reusing the packages of llvm-17.0.6-x86_64.tar.xz"),
        "{seen}"
    );
    assert_served_complete(&repo, "killed while publishing");

    // The rerun completes without downloading or building again what was built.
    let before = tarball_gets(&m).len();
    let report = sync_json(&m, &repo, &[]);
    assert_eq!(contents(&repo.root), want);
    assert_eq!(
        tarball_gets(&m).len(),
        before,
        "a rerun downloaded again: {report}"
    );
    assert!(
        dir_listing(&repo.root.join(".korgpkg/sync-work")).is_empty(),
        "work directories left after publishing"
    );
    assert_served_complete(&repo, "after the rerun");

    // A newer release after all that: only it is built.
    m.add("18.1.9");
    let before = tarball_gets(&m).len();
    sync_json(&m, &repo, &[]);
    assert_eq!(tarball_gets(&m).len(), before + 1);
}

/// The no-change benchmark (`scripts/bench-sync`, not part of the suite): a mirror with
/// `KORGPKG_BENCH_RELEASES` LLVM releases (default 667, so 2,001 packages in three
/// formats), a first sync, then a sync with nothing new: its wall time and the requests
/// it made.
#[test]
#[ignore = "benchmark: run by scripts/bench-sync"]
fn bench_no_change_sync() {
    let n: usize = std::env::var("KORGPKG_BENCH_RELEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(667);
    let versions: Vec<String> = (0..n)
        .map(|i| format!("18.{}.{}", i / 100, i % 100))
        .collect();
    let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
    let t = std::time::Instant::now();
    let (m, repo) = setup(&refs);
    eprintln!(
        "bench: mirror with {n} releases made in {:.1?}",
        t.elapsed()
    );
    let def = repo.root.join("korgpkg-repo.toml");
    let text = std::fs::read_to_string(&def)
        .unwrap()
        .replace("keep = 2", &format!("keep = {n}"));
    std::fs::write(&def, text).unwrap();

    let t = std::time::Instant::now();
    let report = sync_json(&m, &repo, &[]);
    let added = report["added"].as_array().unwrap().len();
    eprintln!(
        "bench: first sync added {added} packages in {:.1?}",
        t.elapsed()
    );
    assert_eq!(added, 3 * n);

    let before = m.server.requests().len();
    let gen = generation(&repo.root);
    let t = std::time::Instant::now();
    let o = sync(&m, &repo, &[]);
    let wall = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let requests = m.server.requests()[before..].to_vec();
    assert_eq!(generation(&repo.root), gen);
    eprintln!(
        "bench: no-change sync of {} packages: {:.3} s wall, {} request(s): {:?}",
        3 * n,
        wall.as_secs_f64(),
        requests.len(),
        requests
            .iter()
            .map(|r| format!(
                "{} {} (If-None-Match: {})",
                r.method,
                r.path,
                r.if_none_match.is_some()
            ))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// sync --obs: the same planning, handed to a fake OBS API on 127.0.0.1

const OBS_PROJECT: &str = "home:tester:korg";

/// A mirror with `versions`, a fake OBS with the project, the policy file and an oscrc.
fn obs_setup(versions: &[&str]) -> (Mirror, FakeObs, std::path::PathBuf, std::path::PathBuf) {
    let m = Mirror::with_versions(developer(KeyOptions::default()), versions);
    let fake = FakeObs::start(&[OBS_PROJECT]);
    let policy = m.tmp.path().join("sync.toml");
    std::fs::write(&policy, POLICY).expect("policy");
    let rc = oscrc(m.tmp.path(), &fake.api(), PASSWORD);
    (m, fake, policy, rc)
}

fn sync_obs(m: &Mirror, fake: &FakeObs, policy: &Path, rc: &Path, extra: &[&str]) -> Output {
    run(without_obs_env(&mut m.korgpkg())
        .args(["sync", "--obs", OBS_PROJECT, "--policy"])
        .arg(policy)
        .args(["--obs-api", &fake.api(), "--oscrc"])
        .arg(rc)
        .args(extra))
}

fn sync_obs_json(
    m: &Mirror,
    fake: &FakeObs,
    policy: &Path,
    rc: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    success_json(sync_obs(m, fake, policy, rc, &args))
}

/// The committed `_service` of an OBS package.
fn obs_service(fake: &FakeObs, package: &str) -> Option<String> {
    let st = fake.state.lock().expect("state");
    st.packages
        .get(&(OBS_PROJECT.to_string(), package.to_string()))
        .and_then(|p| p.files.get("_service"))
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn obs_packages(fake: &FakeObs) -> Vec<String> {
    let st = fake.state.lock().expect("state");
    st.packages.keys().map(|(_, p)| p.clone()).collect()
}

#[test]
fn sync_to_obs_pushes_the_newest_release_per_package_once() {
    let (mut m, fake, policy, rc) =
        obs_setup(&["16.0.6", "17.0.6", "18.1.7", "18.1.8", "19.1.0-rc1"]);

    // A dry run reads OBS and plans; it writes nothing and downloads nothing.
    let plan = sync_obs_json(&m, &fake, &policy, &rc, &["--dry-run"]);
    let to_push: BTreeSet<String> = plan["to_push"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["package"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        to_push,
        BTreeSet::from([
            "korg-clang-17 17.0.6".to_string(),
            "korg-clang-18 18.1.8".into()
        ]),
        "{plan}"
    );
    let log = fake.take_log();
    assert!(log.iter().all(|l| l.starts_with("GET ")), "{log:?}");
    assert!(tarball_gets(&m).is_empty());

    // First run: one package and one commit per package, the newest release only.
    let report = sync_obs_json(&m, &fake, &policy, &rc, &[]);
    assert_eq!(report["pushed"].as_array().unwrap().len(), 2, "{report}");
    for p in report["pushed"].as_array().unwrap() {
        assert_eq!(p["signers"].as_array().unwrap().len(), 2, "{p}");
        assert!(p["push"]["commit"].is_string(), "{p}");
    }
    let log = fake.take_log();
    assert_eq!(commits(&log), 2, "{log:?}");
    assert_eq!(obs_packages(&fake), ["korg-clang-17", "korg-clang-18"]);
    let service = obs_service(&fake, "korg-clang-18").expect("_service");
    let url = m.server.url(&format!("{DIR}/llvm-18.1.8-x86_64.tar.xz"));
    assert!(service.contains(&format!(">{url}<")), "{service}");
    let mut gets = tarball_gets(&m);
    gets.sort();
    assert_eq!(
        gets,
        [
            format!("{DIR}/llvm-17.0.6-x86_64.tar.xz"),
            format!("{DIR}/llvm-18.1.8-x86_64.tar.xz")
        ]
    );
    assert!(dir_listing(&m.cache().join("sha256")).is_empty());

    // Second run, nothing new upstream: no upload, no commit, no download.
    let before = tarball_gets(&m).len();
    let o = sync_obs(&m, &fake, &policy, &rc, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("0 pushed, 2 unchanged, 0 failed"), "{out}");
    let log = fake.take_log();
    assert!(puts(&log).is_empty(), "{log:?}");
    assert_eq!(commits(&log), 0, "{log:?}");
    assert!(
        log.iter().all(|l| l.starts_with("GET ")),
        "a no-change run only reads: {log:?}"
    );
    assert_eq!(tarball_gets(&m).len(), before);

    // A newer 18.x: only korg-clang-18 is pushed, with only its changed files.
    m.add("18.1.9");
    let report = sync_obs_json(&m, &fake, &policy, &rc, &[]);
    assert_eq!(report["pushed"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["pushed"][0]["version"], "18.1.9");
    let log = fake.take_log();
    assert_eq!(commits(&log), 1, "{log:?}");
    let uploaded = puts(&log);
    assert!(uploaded.contains("_service") && uploaded.contains("korg-clang-18.spec"));
    assert!(
        !uploaded.contains("debian.rules"),
        "an unchanged file was uploaded again: {uploaded:?}"
    );
    assert!(
        log.iter().all(|l| !l.contains("/korg-clang-17?")),
        "{log:?}"
    );
    assert_eq!(
        tarball_gets(&m).len(),
        before + 1,
        "only the new release is downloaded"
    );
}

#[test]
fn sync_to_obs_reports_a_bad_signature_and_pushes_the_others() {
    let (m, fake, policy, rc) = obs_setup(&["17.0.6", "18.1.8"]);
    let other = m
        .dev
        .sign_detached(&m.releases[0].tar, Hash::Sha256, true, true);
    m.server
        .file(&format!("{DIR}/llvm-18.1.8-x86_64.tar.sign"), other);
    let o = sync_obs(&m, &fake, &policy, &rc, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("18.1.8"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("failed korg-clang-18 18.1.8"), "{out}");
    assert!(out.contains("1 pushed"), "{out}");
    assert_eq!(obs_packages(&fake), ["korg-clang-17"]);
    assert_eq!(commits(&fake.take_log()), 1);
    assert!(dir_listing(&m.cache().join("sha256")).is_empty());

    // A policy error is exit 3 naming the file and the key, before OBS is asked.
    let bad = m.tmp.path().join("bad.toml");
    std::fs::write(&bad, POLICY.replace("keep = 2", "keep = 0")).unwrap();
    let o = sync_obs(&m, &fake, &bad, &rc, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("sync.keep"),
        "{err}"
    );
    assert!(fake.take_log().is_empty());

    // Still bad on the next run: refused again, nothing pushed.
    let o = sync_obs(&m, &fake, &policy, &rc, &[]);
    assert_eq!(o.status.code(), Some(5));
    let log = fake.take_log();
    assert_eq!(commits(&log), 0, "{log:?}");
    assert_eq!(obs_packages(&fake), ["korg-clang-17"]);
}

#[test]
fn a_second_sync_into_the_same_obs_project_is_refused_while_the_first_runs() {
    let (m, fake, policy, rc) = obs_setup(&["18.1.8"]);
    let tarball = format!("{DIR}/llvm-18.1.8-x86_64.tar.xz");
    m.server.fault(&tarball, common::server::Fault::Stall(100));
    let mut first = without_obs_env(&mut m.korgpkg())
        .args(["sync", "--obs", OBS_PROJECT, "--policy"])
        .arg(&policy)
        .args(["--obs-api", &fake.api(), "--oscrc"])
        .arg(&rc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sync");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while m.server.requests_for(&tarball).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no download started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = sync_obs(&m, &fake, &policy, &rc, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "another korgpkg sync is running into OBS project {OBS_PROJECT}"
        )),
        "{err}"
    );
    // A dry run only reads, and is not held up.
    let plan = sync_obs_json(&m, &fake, &policy, &rc, &["--dry-run"]);
    assert_eq!(plan["to_push"].as_array().unwrap().len(), 1, "{plan}");
    first.kill().expect("kill");
    let _ = first.wait();
    assert!(obs_packages(&fake).is_empty());
}
