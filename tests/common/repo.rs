//! Repository test support: throwaway keys, an initialized repository, `korgpkg serve`
//! on a free loopback port, and the fixture packages built by korgpkg itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use std::process::Command;

use super::{build_json, korgpkg, ok, output_path, run};

/// An initialized repository served on 127.0.0.1; the server stops when dropped.
pub struct TestRepo {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub keys: PathBuf,
    pub url: String,
    server: Child,
}

impl Drop for TestRepo {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Start `korgpkg serve DIR --listen 127.0.0.1:0` and return it with its base URL.
pub fn serve(dir: &Path) -> (Child, String) {
    let mut child = korgpkg()
        .arg("serve")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start korgpkg serve");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("serve prints its address");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("address")
        .trim_end_matches('/')
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "serve said {line:?}");
    (child, url)
}

impl TestRepo {
    /// Keys (Ed25519 unless `rsa`), `repo init` with `init_args`, served.
    pub fn new(rsa: bool, init_args: &[&str]) -> TestRepo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = tmp.path().join("keys");
        let root = tmp.path().join("repo");
        let mut gen = korgpkg();
        gen.args([
            "key",
            "generate",
            "--name",
            "korgpkg test <test@example.invalid>",
            "--out",
        ])
        .arg(&keys);
        if rsa {
            gen.args(["--algo", "rsa4096"]);
        }
        ok(&mut gen);
        ok(korgpkg()
            .args(["repo", "init"])
            .arg(&root)
            .arg("--keys")
            .arg(&keys)
            .args(init_args));
        let (server, url) = serve(&root);
        let def = root.join("korgpkg-repo.toml");
        let text = std::fs::read_to_string(&def).expect("definition");
        let text = text.replace("http://127.0.0.1:8080", &url);
        std::fs::write(&def, text).expect("write definition");
        TestRepo {
            tmp,
            root,
            keys,
            url,
            server,
        }
    }

    /// `korgpkg publish --repo ROOT args...`, required to succeed.
    pub fn publish(&self, args: &[&Path]) -> String {
        let mut c = korgpkg();
        c.arg("publish").arg("--repo").arg(&self.root).args(args);
        ok(&mut c)
    }

    /// Serve both opkg feeds (OpenEmbedded and OpenWrt) from the repository.
    pub fn serve_both_opkg_flavours(&self) {
        let def = self.root.join("korgpkg-repo.toml");
        let text = std::fs::read_to_string(&def).unwrap();
        assert!(text.contains("flavours = [\"openembedded\"]"), "{text}");
        std::fs::write(
            &def,
            text.replace(
                "flavours = [\"openembedded\"]",
                "flavours = [\"openembedded\", \"openwrt\"]",
            ),
        )
        .unwrap();
    }
}

/// korg-clang-18 built from the standard LLVM fixture: (deb, rpm, ipk).
pub fn llvm_packages(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let tarball = super::llvm_tarball(dir);
    let out = dir.join("dist");
    let report = build_json("korg-clang-18", &tarball, &out, &[]);
    (
        output_path(&report, "deb"),
        output_path(&report, "rpm"),
        output_path(&report, "ipk"),
    )
}

/// An isolated apt/dpkg root whose status lists only the host's libc6.
pub struct AptRoot {
    pub dir: PathBuf,
}

impl AptRoot {
    pub fn new(parent: &Path, line: &str) -> AptRoot {
        let dir = parent.join("aptroot");
        for d in [
            "etc/apt/sources.list.d",
            "etc/apt/preferences.d",
            "etc/apt/apt.conf.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/log/apt",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // The host's libc6, without its own dependencies.
        let version = ok(Command::new("dpkg-query").args(["-W", "-f=${Version}", "libc6"]));
        let status = format!(
            "Package: libc6\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n\
             Multi-Arch: same\nVersion: {version}\nMaintainer: host\nDescription: host C library\n\n"
        );
        std::fs::write(dir.join("var/lib/dpkg/status"), status).unwrap();
        std::fs::write(dir.join("etc/apt/sources.list"), format!("{line}\n")).unwrap();
        AptRoot { dir }
    }

    pub fn apt(&self, tool: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(tool);
        for o in [
            format!("Dir={d}"),
            format!("Dir::State::status={d}/var/lib/dpkg/status"),
            format!("Dir::Etc::sourcelist={d}/etc/apt/sources.list"),
            format!("Dir::Etc::sourceparts={d}/etc/apt/sources.list.d"),
            format!("Dir::Etc::parts={d}/etc/apt/apt.conf.d"),
            format!("Dir::Etc::preferencesparts={d}/etc/apt/preferences.d"),
            "Dir::Etc::trusted=/dev/null".into(),
            "Dir::Etc::trustedparts=/dev/null".into(),
            "Debug::NoLocking=1".into(),
            "APT::Architecture=amd64".into(),
            "Acquire::Retries=0".into(),
            format!("DPkg::Options::=--root={d}"),
            format!("DPkg::Options::=--admindir={d}/var/lib/dpkg"),
            "DPkg::Options::=--force-script-chrootless".into(),
        ] {
            c.arg("-o").arg(o);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// `apt-get update`: (success, combined output).
    pub fn update(&self) -> (bool, String) {
        let _ = std::fs::remove_dir_all(self.dir.join("var/lib/apt/lists"));
        std::fs::create_dir_all(self.dir.join("var/lib/apt/lists/partial")).unwrap();
        let o = run(self.apt("apt-get").arg("update"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (
            o.status.success() && !text.contains("\nE:") && !text.starts_with("E:"),
            text,
        )
    }
}

/// dnf with gpgcheck and repo_gpgcheck on, into `root`, with its own cache.
pub fn dnf(root: &Path, repos: &Path, cache: &str) -> Command {
    let mut c = Command::new("dnf");
    c.arg("-y")
        .arg(format!("--installroot={}", root.display()))
        .arg(format!("--setopt=reposdir={}", repos.display()))
        .arg(format!("--setopt=cachedir={}/{cache}", root.display()))
        .args([
            "--setopt=gpgcheck=1",
            "--setopt=repo_gpgcheck=1",
            "--setopt=install_weak_deps=0",
            "--setopt=retries=1",
            "--setopt=skip_if_unavailable=0",
            "--releasever=40",
            "--nodocs",
        ]);
    c
}

/// Every directory, file and symlink below `root` (symlinks are not followed): relative
/// path → contents (`->target` for a symlink, `/` for a directory). Equal snapshots
/// mean the repository is byte-identical, pools, state and generations included.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("->{}", t.display()).into_bytes());
            } else if ft.is_dir() {
                out.insert(rel, b"/".to_vec());
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A noarch rpm (made with rpmbuild, unsigned) that provides everything `rpm` requires,
/// so the korg package installs into an empty root.
pub fn provider_for(rpm: &Path, dir: &Path) -> PathBuf {
    let requires = ok(Command::new("rpm").args(["-qpR"]).arg(rpm));
    let mut provides = String::new();
    for r in requires.lines().map(str::trim) {
        if r.is_empty() || r.starts_with("rpmlib(") || r.starts_with('/') {
            continue;
        }
        let name = r.split_whitespace().next().unwrap();
        provides.push_str(&format!("Provides: {name} = 99\n"));
    }
    let spec = dir.join("provider.spec");
    std::fs::write(
        &spec,
        format!(
            "Name: korg-test-provider\nVersion: 1\nRelease: 1\nSummary: Test stub\n\
             License: MIT\nBuildArch: noarch\n{provides}\n%description\nTest stub.\n\n%files\n"
        ),
    )
    .unwrap();
    let top = dir.join("rpmbuild");
    ok(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("--define")
        .arg("_build_id_links none")
        .arg(&spec));
    top.join("RPMS/noarch/korg-test-provider-1-1.noarch.rpm")
}
