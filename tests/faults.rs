//! Bad luck during a build or a publish: a full disk (a small tmpfs), SIGINT, SIGTERM,
//! SIGHUP and SIGKILL, a rename that fails for one format. Each ends with one line and
//! the documented exit code, nothing left in `--out`, and a repository still served at
//! its previous generation.

mod common;

use common::repo::{AptRoot, TestRepo};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Names in `dir` that korgpkg uses for temporary files and directories.
fn leftovers(dir: &Path) -> Vec<String> {
    dir_listing(dir)
        .into_iter()
        .filter(|n| n.starts_with(".korgpkg-"))
        .collect()
}

/// Start `korgpkg build` in the background (unsigned test tarball).
/// A build through the staged path (`KORGPKG_STAGED=1`), whose staging directory these
/// tests watch; [`spawn_one_pass`] for the one-pass build.
fn spawn_build(tarball: &Path, out: &Path, extra: &[&str]) -> Child {
    spawn(tarball, out, extra, |c| {
        c.env("KORGPKG_STAGED", "1");
    })
}

/// A one-pass build whose temporary files (the compressed data streams) go to `tmp`.
fn spawn_one_pass(tarball: &Path, out: &Path, extra: &[&str], tmp: &Path) -> Child {
    spawn(tarball, out, extra, |c| {
        c.env("TMPDIR", tmp);
    })
}

fn spawn(
    tarball: &Path,
    out: &Path,
    extra: &[&str],
    setup: impl FnOnce(&mut std::process::Command),
) -> Child {
    let mut c = korgpkg();
    setup(&mut c);
    c.arg("build")
        .arg("korg-clang-18")
        .arg("--from")
        .arg(tarball)
        .arg("--allow-unverified")
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start korgpkg build")
}

/// Wait until `dir` holds a name satisfying `want` (or the child ends, or 120 s pass).
fn wait_for(dir: &Path, child: &mut Child, want: impl Fn(&str) -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until {
        if dir_listing(dir).iter().any(|n| want(n)) {
            return true;
        }
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Wait for `child` with a deadline; kill it and fail if it does not end in time.
fn finish(mut child: Child, limit: Duration, what: &str) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: korgpkg still running after {limit:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn a_full_disk_fails_every_format_and_compression_promptly_leaving_nothing() {
    let work = tempfile::tempdir().expect("tmp");
    // 2 MiB of noise: staging fits the 3 MiB tmpfs, no package does; more than one
    // 1 MiB chunk, so the parallel gzip writer and zstd's workers are used.
    let tarball = noise_tarball(work.path(), 2);
    let Some(fs) = Tmpfs::mount("3m") else { return };
    let cases: &[&[&str]] = &[
        &["--format", "deb", "--deb-compression", "gzip"],
        &["--format", "deb", "--deb-compression", "xz"],
        &["--format", "deb", "--deb-compression", "zstd"],
        &["--format", "rpm", "--rpm-compression", "gzip"],
        &["--format", "rpm", "--rpm-compression", "zstd"],
        &["--format", "ipk", "--ipk-outer", "ar"],
        &["--format", "ipk", "--ipk-outer", "tar"],
        &[],
    ];
    for (i, (args, one_pass)) in cases
        .iter()
        .flat_map(|a| [(a, false), (a, true)])
        .enumerate()
    {
        let out = fs.dir.join(format!("out{i}"));
        let c = if one_pass {
            spawn_one_pass(&tarball, &out, args, &fs.dir)
        } else {
            spawn_build(&tarball, &out, args)
        };
        let what = format!("{args:?} one pass: {one_pass}");
        let (code, err, took) = finish(c, Duration::from_secs(120), &what);
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(err.contains("No space left on device"), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
        assert_eq!(dir_listing(&out), Vec::<String>::new(), "{what}: --out");
        std::fs::remove_dir(&out).expect("--out is empty");
        assert_eq!(dir_listing(&fs.dir), Vec::<String>::new(), "{what}");
        eprintln!("{what}: exit 1 after {took:?}");
    }
    // An xz tarball: the one-pass rpm also spools a copy of the decoded stream (for a
    // second read, should hard links turn up) into the output directory. 4 MiB of
    // noise, the rpm's own temporary file elsewhere: the spool is what fills the disk,
    // and the error says so.
    let xz_dir = work.path().join("xz");
    std::fs::create_dir(&xz_dir).expect("mkdir");
    let xz_tarball = write(
        &xz_dir,
        "llvm-18.1.8-x86_64.tar.xz",
        &xz(&tar_bytes(&noise_items("llvm-18.1.8-x86_64", 4))),
    );
    let out = fs.dir.join("out-xz");
    let child = spawn(&xz_tarball, &out, &["--format", "rpm"], |c| {
        c.env("TMPDIR", &xz_dir);
    });
    let (code, err, _) = finish(child, Duration::from_secs(120), "xz input");
    assert_eq!(code, Some(1), "xz input: {err}");
    assert!(
        err.contains("copy of the decoded tarball") && err.contains("No space left on device"),
        "xz input: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "xz input: one line: {err}"
    );
    assert_eq!(dir_listing(&out), Vec::<String>::new(), "xz input: --out");
    std::fs::remove_dir(&out).expect("empty");
    assert_eq!(dir_listing(&fs.dir), Vec::<String>::new(), "xz input");
    // The same with the anonymous temp files (rpm payload, tar-outer ipk) on the full
    // disk as well.
    for args in [
        &["--format", "rpm"][..],
        &["--format", "ipk", "--ipk-outer", "tar"],
    ] {
        let out = fs.dir.join("out-tmpdir");
        let child = spawn(&tarball, &out, args, |c| {
            c.env("TMPDIR", &fs.dir).env("KORGPKG_STAGED", "1");
        });
        let (code, err, _) = finish(child, Duration::from_secs(120), &format!("{args:?}"));
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
        assert_eq!(dir_listing(&out), Vec::<String>::new(), "{args:?}: --out");
        std::fs::remove_dir(&out).expect("empty");
    }
}

#[test]
fn signals_during_a_build_leave_nothing_in_out() {
    let work = tempfile::tempdir().expect("tmp");
    let tarball = noise_tarball(work.path(), 12);
    // SIGINT while staging, SIGTERM and SIGHUP while packaging.
    let cases = [
        (libc::SIGINT, ".korgpkg-staging-", 130),
        (libc::SIGTERM, ".part", 143),
        (libc::SIGHUP, ".part", 129),
    ];
    for (sig, during, code) in cases {
        let out = work.path().join(format!("out-{sig}"));
        let mut child = spawn_build(&tarball, &out, &["--deb-compression", "gzip"]);
        let seen = wait_for(&out, &mut child, |n| {
            n.starts_with(".korgpkg-") && (n.starts_with(during) || n.ends_with(during))
        });
        assert!(seen, "signal {sig}: the build never reached {during}");
        kill(&child, sig);
        let (got, err, took) = finish(child, Duration::from_secs(10), "signalled build");
        assert_eq!(got, Some(code), "signal {sig}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert_eq!(
            dir_listing(&out),
            Vec::<String>::new(),
            "signal {sig}: --out must be empty"
        );
        eprintln!("signal {sig}: exit {code} after {took:?}");
    }
}

#[test]
fn a_killed_builds_leftovers_are_removed_by_the_next_build_but_a_running_ones_are_not() {
    let work = tempfile::tempdir().expect("tmp");
    let big = noise_tarball(work.path(), 12);
    let small_dir = work.path().join("small");
    std::fs::create_dir(&small_dir).expect("dir");
    let small = llvm_tarball(&small_dir);
    let out = work.path().join("out");

    // kill -9 while packaging: the staging directory and the .part files stay.
    let mut child = spawn_build(&big, &out, &[]);
    assert!(wait_for(&out, &mut child, |n| n.ends_with(".part")));
    kill(&child, libc::SIGKILL);
    let _ = child.wait();
    let left = leftovers(&out);
    assert!(
        left.iter().any(|n| n.starts_with(".korgpkg-staging-")),
        "{left:?}"
    );

    // A build that runs meanwhile: its staging directory and temp files are locked.
    let mut running = spawn_build(&big, &out, &["--format", "deb"]);
    assert!(wait_for(&out, &mut running, |n| {
        n.starts_with(".korgpkg-staging-") && !left.iter().any(|l| l == n)
    }));
    // The next build removes the killed build's leftovers, not the running build's.
    let o = build("korg-clang-18", &small, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let now = leftovers(&out);
    assert!(
        !now.iter().any(|n| left.contains(n)),
        "stale leftovers not removed: {now:?}"
    );
    let (code, err, _) = finish(running, Duration::from_secs(300), "running build");
    assert_eq!(code, Some(0), "the running build was disturbed: {err}");
    assert_eq!(leftovers(&out), Vec::<String>::new());
}

#[test]
fn a_failed_rename_of_one_format_leaves_none_of_them() {
    let work = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(work.path());
    let out = work.path().join("out");
    // The rpm's name is taken by a non-empty directory: its rename fails after the
    // deb's succeeded.
    let blocker = out.join("korg-clang-18-18.1.8-1.x86_64.rpm");
    std::fs::create_dir_all(&blocker).expect("dir");
    std::fs::write(blocker.join("keep"), b"x").expect("file");
    let o = build("korg-clang-18", &tarball, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("renaming the finished package"), "{err}");
    assert_eq!(
        dir_listing(&out),
        ["korg-clang-18-18.1.8-1.x86_64.rpm"],
        "the deb renamed before the failure must be removed again"
    );
}

/// Symlink targets of the served index links.
fn served(root: &Path) -> Vec<PathBuf> {
    ["apt/dists", "rpm/repodata", "opkg"]
        .iter()
        .map(|l| std::fs::read_link(root.join(l)).expect("index link"))
        .collect()
}

/// Every file below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn a_publish_on_a_full_disk_leaves_the_previous_generation_and_no_orphans() {
    need_tool("apt-get");
    let work = tempfile::tempdir().expect("tmp");
    let (deb, rpm, ipk) = common::repo::llvm_packages(work.path());
    let big_dir = work.path().join("big");
    std::fs::create_dir(&big_dir).expect("dir");
    let big_tar = noise_tarball(&big_dir, 3);
    let big = build_json(
        "korg-clang-18",
        &big_tar,
        &big_dir.join("dist"),
        &["--revision", "2"],
    );
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let repo = TestRepo::with_root(
        tempfile::tempdir().expect("tmp"),
        fs.dir.join("repo"),
        false,
        &["--arch", "amd64"],
    );
    repo.publish(&[&deb, &rpm, &ipk]);
    let line = format!(
        "deb [signed-by={}] {}/apt stable main",
        repo.root.join("apt/korg-archive-keyring.gpg").display(),
        repo.url
    );
    let apt = AptRoot::new(work.path(), &line);
    let before_links = served(&repo.root);
    let before_tree = tree(&repo.root);

    // Leave less room than the three big packages need.
    let filler = fs.fill_leaving(5 << 20);
    let mut c = korgpkg();
    c.arg("publish").arg("--repo").arg(&repo.root);
    for f in ["deb", "rpm", "ipk"] {
        c.arg(output_path(&big, f));
    }
    let start = Instant::now();
    let o = run(&mut c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(
        served(&repo.root),
        before_links,
        "the served generation changed"
    );
    assert_eq!(
        tree(&repo.root),
        before_tree,
        "a failed publish must leave no pool file, temp file or generation behind"
    );
    let (good, text) = apt.update();
    assert!(good && !text.contains("W:"), "{text}");

    // What a killed publisher leaves (an orphaned pool file, a temp file, an unfinished
    // generation) is removed by the next publish.
    std::fs::remove_file(&filler).expect("unfill");
    let pool = repo.root.join("apt/pool/main/k/korg-orphan");
    std::fs::create_dir_all(&pool).expect("dir");
    std::fs::write(pool.join("korg-orphan_1_amd64.deb"), b"half").expect("orphan");
    std::fs::write(repo.root.join("rpm/Packages/.korgpkg-x.part"), b"t").expect("part");
    std::fs::write(repo.root.join("opkg-pool/x_1_all.ipk"), b"half").expect("orphan");
    std::fs::create_dir_all(repo.root.join(".korgpkg/gen/7/apt")).expect("gen");
    let r3 = build_json(
        "korg-clang-18",
        &big_tar,
        &work.path().join("r3"),
        &["--format", "deb", "--revision", "3"],
    );
    repo.publish(&[&output_path(&r3, "deb")]);
    let after = tree(&repo.root);
    for gone in [
        "apt/pool/main/k/korg-orphan",
        "rpm/Packages/.korgpkg-x.part",
        "opkg-pool/x_1_all.ipk",
        ".korgpkg/gen/7",
    ] {
        assert!(!after.iter().any(|p| p == gone), "{gone} left: {after:?}");
    }
    let (good, text) = apt.update();
    assert!(good && !text.contains("W:"), "{text}");
}

/// Run `cmd` to its end: exit code, stderr and the CPU time it used (user + system).
/// The child is reaped by `wait4`, which also reports its CPU time.
#[allow(clippy::zombie_processes)]
fn run_cpu(cmd: &mut std::process::Command) -> (Option<i32>, String, f64) {
    let err = tempfile::NamedTempFile::new().expect("tmp");
    let child = cmd
        .stdout(Stdio::null())
        .stderr(err.reopen().expect("reopen"))
        .spawn()
        .expect("start");
    let mut status = 0;
    // SAFETY: rusage is plain data filled by wait4 for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut ru) }, pid);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let text = std::fs::read_to_string(err.path()).unwrap_or_default();
    (code, text, secs(ru.ru_utime) + secs(ru.ru_stime))
}

#[test]
fn when_one_format_fails_the_others_stop_instead_of_finishing() {
    let work = tempfile::tempdir().expect("tmp");
    let tarball = noise_tarball(work.path(), 12);
    // The ipk's control template fails to render: the ipk fails at once, while the deb
    // and the rpm have 12 MiB to compress.
    let templates = work.path().join("templates");
    std::fs::create_dir_all(templates.join("ipk")).expect("dir");
    std::fs::write(templates.join("ipk/control.hbs"), "{{no_such_variable}}\n").expect("tpl");
    let build_cmd = |out: &str, extra: &[&str]| {
        let mut c = korgpkg();
        c.arg("build")
            .arg("korg-clang-18")
            .arg("--from")
            .arg(&tarball)
            .arg("--allow-unverified")
            .arg("--out")
            .arg(work.path().join(out))
            .args(["--deb-compression", "gzip", "--rpm-compression", "gzip"])
            .args(extra);
        c
    };
    let (code, err, ok_cpu) = run_cpu(&mut build_cmd("ok", &["--format", "deb,rpm"]));
    assert_eq!(code, Some(0), "{err}");
    let (code, err, failed_cpu) = run_cpu(
        build_cmd("failed", &[])
            .arg("--templates-dir")
            .arg(&templates),
    );
    // The error reported is the ipk's, not the "stopped" of the formats it cancelled.
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("ipk/control"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(
        dir_listing(&work.path().join("failed")),
        Vec::<String>::new()
    );
    eprintln!("CPU: deb+rpm built {ok_cpu:.2} s, cancelled by the ipk {failed_cpu:.2} s");
    assert!(
        failed_cpu < ok_cpu * 0.6,
        "the deb and rpm went on compressing after the ipk failed: \
         {failed_cpu:.2} s CPU vs {ok_cpu:.2} s for building them"
    );
}
