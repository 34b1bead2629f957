//! Crash safety and concurrency: publishers killed with SIGKILL at many points leave a
//! repository that `apt-get update` and `dnf makecache` accept; concurrent publishers
//! are serialized and all their packages land.

mod common;

use common::repo::{dnf, AptRoot, TestRepo};
use common::{build_json, korgpkg, llvm_tarball, need_tool, ok, output_path};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// deb and rpm of korg-clang-18 with package revision `rev`.
fn revision(repo: &TestRepo, rev: u32) -> (PathBuf, PathBuf) {
    let tarball = repo.tmp.path().join("llvm-18.1.8-x86_64.tar.xz");
    if !tarball.exists() {
        llvm_tarball(repo.tmp.path());
    }
    let out = repo.tmp.path().join(format!("dist-{rev}"));
    let r = build_json(
        "korg-clang-18",
        &tarball,
        &out,
        &["--format", "deb,rpm", "--revision", &rev.to_string()],
    );
    (output_path(&r, "deb"), output_path(&r, "rpm"))
}

/// An apt root pointed at `repo`, a dnf install root and its (empty) repos.d.
fn clients(repo: &TestRepo) -> (AptRoot, PathBuf, PathBuf) {
    let line = format!(
        "deb [signed-by={}] {}/apt stable main",
        repo.root.join("apt/korg-archive-keyring.gpg").display(),
        repo.url
    );
    let apt = AptRoot::new(repo.tmp.path(), &line);
    let dnfroot = repo.tmp.path().join("dnfroot");
    let repos = repo.tmp.path().join("repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    (apt, dnfroot, repos)
}

fn listed(repo: &TestRepo) -> String {
    ok(korgpkg().args(["repo", "list"]).arg(&repo.root))
}

#[test]
fn killed_publishers_leave_a_valid_repository_and_concurrent_ones_all_land() {
    need_tool("apt-get");
    need_tool("dnf");
    let repo = TestRepo::new(false, &["--arch", "amd64"]);
    let (apt, dnfroot, repos) = clients(&repo);

    // How long one publish takes, to spread the kills over it.
    let (deb, rpm) = revision(&repo, 1);
    let t = Instant::now();
    repo.publish(&[&deb, &rpm]);
    let full = t.elapsed().max(Duration::from_millis(20));
    std::fs::copy(repo.root.join("rpm/korg.repo"), repos.join("korg.repo")).unwrap();

    let rounds = 12u32;
    for i in 0..rounds {
        let (deb, rpm) = revision(&repo, 100 + i);
        let mut child = korgpkg()
            .arg("publish")
            .arg("--repo")
            .arg(&repo.root)
            .arg(&deb)
            .arg(&rpm)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * i / rounds);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let (good, text) = apt.update();
        assert!(
            good,
            "round {i}: apt-get update failed after a kill:\n{text}"
        );
        assert!(!text.contains("W:"), "round {i}:\n{text}");
        let o = common::run(dnf(&dnfroot, &repos, &format!("cache{i}")).arg("makecache"));
        assert!(
            o.status.success(),
            "round {i}: dnf makecache failed after a kill:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // Every package the served indexes list is in the pool.
        let packages = std::fs::read_to_string(
            repo.root
                .join("apt/dists/stable/main/binary-amd64/Packages"),
        )
        .unwrap();
        for f in packages
            .lines()
            .filter_map(|l| l.strip_prefix("Filename: "))
        {
            assert!(
                repo.root.join("apt").join(f).is_file(),
                "round {i}: {f} missing"
            );
        }
    }

    // A publisher that completes after the kills sees a consistent state.
    let (deb, rpm) = revision(&repo, 1000);
    repo.publish(&[&deb, &rpm]);
    assert!(listed(&repo).contains("18.1.8-1000"));

    // Concurrent publishers: all packages land.
    let builds: Vec<(PathBuf, PathBuf)> = (0..4).map(|i| revision(&repo, 2000 + i)).collect();
    let handles: Vec<_> = builds
        .iter()
        .map(|(deb, rpm)| {
            let mut c = korgpkg();
            c.arg("publish")
                .arg("--repo")
                .arg(&repo.root)
                .arg(deb)
                .arg(rpm);
            c.stdout(std::process::Stdio::null()).spawn().unwrap()
        })
        .collect();
    for mut h in handles {
        assert!(h.wait().unwrap().success());
    }
    let list = listed(&repo);
    for i in 0..4 {
        let v = format!("18.1.8-{}", 2000 + i);
        assert!(
            list.contains(&format!("deb korg-clang-18 {v} amd64")),
            "{v}:\n{list}"
        );
        assert!(
            list.contains(&format!("rpm korg-clang-18 {v} x86_64")),
            "{v}:\n{list}"
        );
    }
    let (good, text) = apt.update();
    assert!(good, "{text}");
    // Killed publishers' temporary files were cleaned up by the later ones.
    for d in ["rpm/Packages", "apt/pool/main/k/korg-clang-18"] {
        let left: Vec<String> = std::fs::read_dir(repo.root.join(d))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
    let policy = ok(apt.apt("apt-cache").args(["madison", "korg-clang-18"]));
    for i in 0..4 {
        assert!(policy.contains(&format!("18.1.8-{}", 2000 + i)), "{policy}");
    }
}

/// A publish of many packages takes the batched path (pool files written in place, one
/// `syncfs` before the state is saved). Killed at any point, it may leave pool files
/// that no state refers to, possibly cut short; the indexes clients see must never list
/// such a file, and publishing the same packages again must replace them.
#[test]
fn killed_batch_publishes_leave_no_served_partial_file() {
    need_tool("apt-get");
    need_tool("dnf");
    use sha2::Digest;
    let repo = TestRepo::new(false, &["--arch", "amd64"]);
    let (apt, dnfroot, repos) = clients(&repo);
    let batch = |first: u32| -> Vec<PathBuf> {
        (first..first + 8)
            .flat_map(|r| {
                let (deb, rpm) = revision(&repo, r);
                [deb, rpm]
            })
            .collect()
    };
    let publish = |files: &[PathBuf]| {
        let args: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
        repo.publish(&args);
    };
    let first = batch(1);
    let t = Instant::now();
    publish(&first);
    let full = t.elapsed().max(Duration::from_millis(20));
    std::fs::copy(repo.root.join("rpm/korg.repo"), repos.join("korg.repo")).unwrap();

    let rounds = 6u32;
    for i in 0..rounds {
        let files = batch(100 + 10 * i);
        let mut child = korgpkg()
            .arg("publish")
            .arg("--repo")
            .arg(&repo.root)
            .args(&files)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * (i + 1) / (rounds + 1));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let check = |when: &str| {
            let (good, text) = apt.update();
            assert!(good && !text.contains("W:"), "round {i} {when}:\n{text}");
            let o = common::run(dnf(&dnfroot, &repos, &format!("b{i}{when}")).arg("makecache"));
            assert!(o.status.success(), "round {i} {when}: dnf makecache failed");
            // Every pool file the served Packages lists has the listed SHA-256.
            let packages = std::fs::read_to_string(
                repo.root
                    .join("apt/dists/stable/main/binary-amd64/Packages"),
            )
            .unwrap();
            for stanza in packages.split("\n\n").filter(|s| !s.trim().is_empty()) {
                let field = |k: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(k))
                        .unwrap_or_else(|| panic!("no {k} in {stanza}"))
                        .to_string()
                };
                let bytes = std::fs::read(repo.root.join("apt").join(field("Filename: ")))
                    .unwrap_or_else(|e| panic!("round {i} {when}: {e}"));
                assert_eq!(
                    hex::encode(sha2::Sha256::digest(&bytes)),
                    field("SHA256: "),
                    "round {i} {when}: a listed pool file has other bytes"
                );
            }
        };
        check("killed");
        // The same packages again: orphans of the killed publish are replaced.
        publish(&files);
        check("republished");
        let list = listed(&repo);
        let v = format!("18.1.8-{}", 100 + 10 * i + 7);
        assert!(
            list.contains(&format!("deb korg-clang-18 {v} amd64")),
            "{list}"
        );
        assert!(
            list.contains(&format!("rpm korg-clang-18 {v} x86_64")),
            "{list}"
        );
    }
}
