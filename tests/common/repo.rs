//! Repository test support: throwaway keys, an initialized repository, `korgpkg serve`
//! on a free loopback port, and the fixture packages built by korgpkg itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::{build_json, korgpkg, ok, output_path};

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
