//! A kernel.org-like LLVM mirror on 127.0.0.1: releases made of generated tarballs,
//! `.tar.sign` signatures and a signed `sha256sums.asc` from throwaway keys that a spec
//! override pins in place of kernel.org's, a keyring holding them and a private cache.

use super::server::Server;
use super::*;
use korgpkg::verify::testkeys::{self, Hash, KeyOptions, TestKey};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::{Command, Output};

/// kernel.org's checksum autosigner, replaced by the test key in the spec override.
pub const REAL_AUTOSIGNER: &str = "B8868C80BA62A1FFFAF5FDA9632D3A06589DA6B1";
/// The LLVM release directory below the mirror base.
pub const DIR: &str = "/pub/tools/llvm/files";

pub fn autosigner() -> TestKey {
    testkeys::generate(
        "Test autosigner <autosigner@test.invalid>",
        KeyOptions::default(),
    )
}

/// Like kernel.org developers: a certify-only primary with an ed25519 signing subkey.
pub fn developer(options: KeyOptions) -> TestKey {
    testkeys::generate(
        "Test Developer <dev@test.invalid>",
        KeyOptions {
            signing_subkey: true,
            certify_only: true,
            ..options
        },
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One LLVM release on the test mirror.
pub struct Rel {
    pub version: String,
    pub tar: Vec<u8>,
    pub xz: Vec<u8>,
}

impl Rel {
    pub fn new(version: &str) -> Rel {
        Self::with_items(version, &llvm_items(&format!("llvm-{version}-x86_64")))
    }

    /// Release `version` with these entries (below `llvm-<version>-x86_64`).
    pub fn with_items(version: &str, items: &[(String, Item)]) -> Rel {
        let tar = tar_bytes(items);
        let xz = xz(&tar);
        Rel {
            version: version.to_string(),
            tar,
            xz,
        }
    }
    pub fn name(&self) -> String {
        format!("llvm-{}-x86_64.tar.xz", self.version)
    }
    pub fn sign_name(&self) -> String {
        format!("llvm-{}-x86_64.tar.sign", self.version)
    }
}

/// A kernel.org-like mirror with signed releases, a spec pinning the test keys, a
/// keyring holding them, and a private cache directory.
pub struct Mirror {
    pub tmp: tempfile::TempDir,
    pub server: Server,
    pub autosigner: TestKey,
    pub dev: TestKey,
    pub releases: Vec<Rel>,
}

impl Mirror {
    pub fn new() -> Mirror {
        Self::with(developer(KeyOptions::default()))
    }

    /// The mirror with 17.0.6, 18.1.0-rc3 and 18.1.8 signed by `dev`.
    pub fn with(dev: TestKey) -> Mirror {
        Self::with_versions(dev, &["17.0.6", "18.1.0-rc3", "18.1.8"])
    }

    /// The mirror with these LLVM versions (x86_64) signed by `dev`.
    pub fn with_versions(dev: TestKey, versions: &[&str]) -> Mirror {
        let mut m = Mirror {
            tmp: tempfile::tempdir().expect("tmp"),
            server: Server::start(),
            autosigner: autosigner(),
            dev,
            releases: Vec::new(),
        };
        for v in versions {
            m.add(v);
        }
        // Specs pinning the test keys instead of kernel.org's.
        let specs = m.tmp.path().join("specs");
        std::fs::create_dir_all(&specs).expect("specs");
        let llvm = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/llvm.toml"))
            .expect("llvm.toml")
            .replace(REAL_AUTOSIGNER, &m.autosigner.fingerprint())
            .replace(
                "2437CB76E544CB6AB3D9DFD399739260CB6CB716",
                &m.dev.fingerprint(),
            );
        std::fs::write(specs.join("llvm.toml"), llvm).expect("write spec");
        let mut ring = m.autosigner.public_armored();
        ring.push_str(&m.dev.public_armored());
        std::fs::write(m.tmp.path().join("keyring.asc"), ring).expect("keyring");
        m
    }

    /// Put release `version` (tarball and `.tar.sign`) on the mirror and list it in a
    /// newly signed sums file.
    pub fn add(&mut self, version: &str) {
        self.add_rel(Rel::new(version));
    }

    /// Put release `r` on the mirror and list it in a newly signed sums file.
    pub fn add_rel(&mut self, r: Rel) {
        self.server
            .file(&format!("{DIR}/{}", r.name()), r.xz.clone());
        let sig = self.dev.sign_detached(&r.tar, Hash::Sha256, true, true);
        self.server.file(&format!("{DIR}/{}", r.sign_name()), sig);
        self.releases.push(r);
        self.server.file(
            &format!("{DIR}/sha256sums.asc"),
            self.sums(&self.autosigner),
        );
    }

    /// The signed sums file listing every release.
    pub fn sums(&self, signer: &TestKey) -> String {
        let text: String = self
            .releases
            .iter()
            .map(|r| format!("{}  {}\n", sha256_hex(&r.xz), r.name()))
            .collect();
        signer.sign_cleartext(&text, Hash::Sha256)
    }

    pub fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    pub fn out(&self) -> PathBuf {
        self.tmp.path().join("out")
    }

    /// korgpkg pointed at this mirror, keyring and cache; key fetching off.
    pub fn korgpkg(&self) -> Command {
        let mut c = korgpkg();
        c.arg("--mirror")
            .arg(self.server.url("/pub/tools"))
            .arg("--specs-dir")
            .arg(self.tmp.path().join("specs"))
            .arg("--keyring")
            .arg(self.tmp.path().join("keyring.asc"))
            .arg("--cache-dir")
            .arg(self.cache())
            .args(["--keys-url", ""]);
        c
    }

    pub fn build(&self, args: &[&str]) -> Output {
        run(self
            .korgpkg()
            .arg("build")
            .args(args)
            .arg("--out")
            .arg(self.out()))
    }

    pub fn tarball_gets(&self, version: &str) -> usize {
        self.server
            .requests_for(&format!("{DIR}/llvm-{version}-x86_64.tar.xz"))
            .len()
    }
}
