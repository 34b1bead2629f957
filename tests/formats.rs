//! Acceptance of each format by the real tools, and installation into throwaway roots:
//! dpkg-deb, lintian and dpkg for .deb; rpm -K/-qp, rpmlint and rpm --root for .rpm;
//! ar/tar for .ipk. Files must land below the prefix with their modes and link targets.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const PREFIX: &str = "usr/lib/korg/llvm-18";

fn check_installed_tree(root: &Path) {
    let p = root.join(PREFIX);
    let clang18 = std::fs::metadata(p.join("bin/clang-18")).expect("clang-18 installed");
    assert_eq!(clang18.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(p.join("bin/clang-18")).expect("read"),
        real_elf()
    );
    assert_eq!(
        std::fs::read_link(p.join("bin/clang"))
            .expect("symlink")
            .to_str(),
        Some("clang-18")
    );
    let lld = std::fs::metadata(p.join("bin/lld")).expect("lld");
    let ld = std::fs::metadata(p.join("bin/ld.lld")).expect("ld.lld");
    assert_eq!(
        lld.ino(),
        ld.ino(),
        "bin/ld.lld must be a hard link of bin/lld"
    );
    let hdr = std::fs::metadata(p.join("lib/clang/18/include/stddef.h")).expect("header");
    assert_eq!(hdr.permissions().mode() & 0o7777, 0o644);
    assert!(p.join("share/empty").is_dir(), "empty directory preserved");
    assert!(
        std::fs::read_dir(p.join("lib/clang/18/include"))
            .expect("dir")
            .count()
            == 2,
        "long-named nested directory and header present"
    );
    // The package installs nothing outside its prefix except its docs.
    assert!(
        !root.join("usr/bin").exists(),
        "nothing may land in /usr/bin"
    );
}

#[test]
fn deb_is_accepted_by_dpkg_deb_lintian_and_dpkg() {
    need_tool("dpkg-deb");
    need_tool("lintian");
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let report = build_json(
        "korg-clang-18",
        &tarball,
        &tmp.path().join("out"),
        &["--format", "deb"],
    );
    let deb = output_path(&report, "deb");
    assert!(deb.ends_with("korg-clang-18_18.1.8-1_amd64.deb"), "{deb:?}");

    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for want in [
        "Package: korg-clang-18",
        "Version: 18.1.8-1",
        "Architecture: amd64",
        // The spec's libc6 (>= 2.17) merged with what /usr/bin/true needs (GLIBC_2.3x).
        "Depends: libc6 (>= 2.3",
        "Recommends: make",
        "Installed-Size: ",
        "Section: devel",
        "make LLVM=/usr/lib/korg/llvm-18/bin/",
        "md5sums",
    ] {
        assert!(
            info.contains(want),
            "dpkg-deb --info lacks {want:?}:\n{info}"
        );
    }
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(
        contents.contains("./usr/lib/korg/llvm-18/bin/clang -> clang-18"),
        "{contents}"
    );
    assert!(
        contents.contains("link to ./usr/lib/korg/llvm-18/bin/"),
        "hard link listed:\n{contents}"
    );
    assert!(
        contents.lines().all(|l| l.contains(" root/root ")),
        "owners must be root:root:\n{contents}"
    );

    // lintian: no errors on an xz build (what Debian's archive takes). Accepted
    // warnings are listed in README.md.
    let xz_report = build_json(
        "korg-clang-18",
        &tarball,
        &tmp.path().join("xz"),
        &["--format", "deb", "--deb-compression", "xz"],
    );
    let lint = |deb: &Path| {
        let out = run(Command::new("lintian").arg(deb));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = lint(&output_path(&xz_report, "deb"));
    assert!(
        !text.lines().any(|l| l.starts_with("E:")),
        "lintian errors:\n{text}"
    );
    // The DEP-5 copyright file carries LLVM's notice and license, referring to
    // common-licenses for Apache-2.0 and including the LLVM exception.
    for tag in [
        "copyright-without-copyright-notice",
        "missing-license-text-in-dep5-copyright",
        "copyright-not-using-common-license",
        "copyright-file-contains-full-apache-2-license",
    ] {
        assert!(!text.contains(tag), "lintian reports {tag}:\n{text}");
    }
    // The default zstd build: Debian 12's lintian (2.116) predates zstd members and
    // reports exactly those two as malformed; nothing else may be an error.
    let text = lint(&deb);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(
        errors
            .iter()
            .all(|l| l.contains("malformed-deb-archive") && l.contains(".tar.zst")),
        "lintian errors beyond zstd members:\n{text}"
    );

    let root = fresh_dpkg_root();
    ok(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .args(["--force-depends", "--log=/dev/null", "-i"])
        .arg(&deb));
    check_installed_tree(root.path());
    let copyright =
        std::fs::read_to_string(root.path().join("usr/share/doc/korg-clang-18/copyright"))
            .expect("copyright file");
    for want in [
        "Copyright: 2003-2019 University of Illinois at Urbana-Champaign",
        "License: Apache-2.0 with LLVM exception",
        " /usr/share/common-licenses/Apache-2.0.",
        " ---- LLVM Exceptions to the Apache 2.0 License ----",
        " Software.\n",
        // A --from build records the kernel.org URL of its file name.
        " https://mirrors.edge.kernel.org/pub/tools/llvm/files/llvm-18.1.8-x86_64.tar.xz\n",
        " Its signature was NOT verified",
    ] {
        assert!(
            copyright.contains(want),
            "copyright lacks {want:?}:\n{copyright}"
        );
    }
    assert!(!copyright.contains("license texts are in"), "{copyright}");
}

#[test]
fn deb_compressions_all_work() {
    need_tool("dpkg-deb");
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    for (comp, member) in [
        ("zstd", "data.tar.zst"),
        ("xz", "data.tar.xz"),
        ("gzip", "data.tar.gz"),
    ] {
        let out = tmp.path().join(comp);
        let report = build_json(
            "korg-clang-18",
            &tarball,
            &out,
            &["--format", "deb", "--deb-compression", comp],
        );
        let deb = output_path(&report, "deb");
        let members = ok(Command::new("ar").arg("t").arg(&deb));
        assert_eq!(
            members.lines().collect::<Vec<_>>()[0],
            "debian-binary",
            "{comp}"
        );
        assert!(members.contains(member), "{comp}: {members}");
        let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
        assert!(
            contents.contains("./usr/lib/korg/llvm-18/bin/clang-18"),
            "{comp}: {contents}"
        );
    }
}

#[test]
fn crosstool_deb_installs_at_its_prefix() {
    need_tool("dpkg");
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = crosstool_tarball(tmp.path());
    let report = build_json(
        "korg-gcc-14-aarch64-linux",
        &tarball,
        &tmp.path().join("out"),
        &["--format", "deb"],
    );
    let deb = output_path(&report, "deb");
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(
        info.contains("CROSS_COMPILE=/usr/lib/korg/gcc-14/aarch64-linux/bin/aarch64-linux-"),
        "{info}"
    );
    let root = fresh_dpkg_root();
    ok(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .args(["--force-depends", "--log=/dev/null", "-i"])
        .arg(&deb));
    let p = root.path().join("usr/lib/korg/gcc-14/aarch64-linux");
    assert!(p.join("bin/aarch64-linux-gcc").is_file());
    // GCC's notice and license: GPL-3+ from common-licenses, the runtime library
    // exception (not in common-licenses) in full; lintian finds nothing to say.
    let copyright = std::fs::read_to_string(
        root.path()
            .join("usr/share/doc/korg-gcc-14-aarch64-linux/copyright"),
    )
    .expect("copyright");
    for want in [
        "Copyright: 1986-2024 Free Software Foundation, Inc.",
        "License: GPL-3+ with GCC-exception-3.1 exception",
        " /usr/share/common-licenses/GPL-3.",
        " GCC RUNTIME LIBRARY EXCEPTION",
    ] {
        assert!(
            copyright.contains(want),
            "copyright lacks {want:?}:\n{copyright}"
        );
    }
    need_tool("lintian");
    let xz = build_json(
        "korg-gcc-14-aarch64-linux",
        &tarball,
        &tmp.path().join("xz"),
        &["--format", "deb", "--deb-compression", "xz"],
    );
    let lint = run(Command::new("lintian").arg(output_path(&xz, "deb")));
    let text = String::from_utf8_lossy(&lint.stdout);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("E:") || l.contains("copyright")),
        "lintian:\n{text}"
    );
    assert_eq!(
        std::fs::metadata(p.join("bin/aarch64-linux-gcc"))
            .expect("gcc")
            .ino(),
        std::fs::metadata(p.join("bin/aarch64-linux-gcc-14.2.0"))
            .expect("gcc-14.2.0")
            .ino()
    );
    assert_eq!(
        std::fs::read_link(p.join("aarch64-linux/bin/as"))
            .expect("link")
            .to_str(),
        Some("../../bin/as-real")
    );
    assert!(p.join("libexec/gcc/aarch64-linux/14.2.0/cc1").is_file());
}

#[test]
fn rpm_is_accepted_by_rpm_and_rpmlint_and_installs() {
    need_tool("rpm");
    need_tool("rpmlint");
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    for comp in ["zstd", "gzip"] {
        let report = build_json(
            "korg-clang-18",
            &tarball,
            &tmp.path().join(comp),
            &["--format", "rpm", "--rpm-compression", comp],
        );
        let rpm = output_path(&report, "rpm");
        assert!(
            rpm.ends_with("korg-clang-18-18.1.8-1.x86_64.rpm"),
            "{rpm:?}"
        );
        let k = ok(Command::new("rpm").arg("-K").arg(&rpm));
        assert!(k.contains("digests OK"), "{comp}: rpm -K: {k}");
        let info = ok(Command::new("rpm").arg("-qpi").arg(&rpm));
        for want in [
            "Name        : korg-clang-18",
            "Version     : 18.1.8",
            "Release     : 1",
            "Architecture: x86_64",
            "make LLVM=/usr/lib/korg/llvm-18/bin/",
        ] {
            assert!(
                info.contains(want),
                "{comp}: rpm -qpi lacks {want:?}:\n{info}"
            );
        }
        let reqs = ok(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm));
        assert!(reqs.lines().any(|l| l == "glibc >= 2.17"), "{comp}: {reqs}");
        let recs = ok(Command::new("rpm").args(["-qp", "--recommends"]).arg(&rpm));
        assert!(recs.lines().any(|l| l == "make"), "{comp}: {recs}");
        let list = ok(Command::new("rpm").arg("-qpl").arg(&rpm));
        assert!(
            list.lines().any(|l| l == "/usr/lib/korg/llvm-18/bin/clang"),
            "{list}"
        );
        assert!(
            !list.lines().any(|l| l == "/usr" || l == "/usr/lib"),
            "must not own system dirs:\n{list}"
        );
        let links = ok(Command::new("rpm")
            .args([
                "-qp",
                "--qf",
                "[%{FILENAMES} %{FILEMODES:perms} %{FILELINKTOS}\n]",
            ])
            .arg(&rpm));
        assert!(
            links.contains("/usr/lib/korg/llvm-18/bin/clang lrwxrwxrwx clang-18"),
            "{links}"
        );
        assert!(
            links.contains("/usr/lib/korg/llvm-18/bin/clang-18 -rwxr-xr-x"),
            "{links}"
        );

        let out = run(Command::new("rpmlint")
            .arg("-c")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rpmlint.toml"
            ))
            .arg(&rpm));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(" 0 errors"),
            "{comp}: rpmlint errors:\n{text}"
        );
        // A %doc README and a %license file; DistURL is the kernel.org URL.
        for tag in ["no-documentation", "invalid-url"] {
            assert!(
                !text.contains(tag),
                "{comp}: rpmlint reports {tag}:\n{text}"
            );
        }
        let licenses = ok(Command::new("rpm").arg("-qpL").arg(&rpm));
        assert_eq!(
            licenses.trim(),
            "/usr/share/licenses/korg-clang-18/LICENSE",
            "{comp}"
        );
        let docs = ok(Command::new("rpm").arg("-qpd").arg(&rpm));
        assert_eq!(docs.trim(), "/usr/share/doc/korg-clang-18/README", "{comp}");
        let disturl = ok(Command::new("rpm")
            .args(["-qp", "--qf", "%{DISTURL}"])
            .arg(&rpm));
        assert_eq!(
            disturl,
            "https://mirrors.edge.kernel.org/pub/tools/llvm/files/llvm-18.1.8-x86_64.tar.xz"
        );

        let root = tempfile::tempdir().expect("root");
        ok(Command::new("rpm").arg("--root").arg(root.path()).args([
            "--dbpath",
            "/var/lib/rpm",
            "--initdb",
        ]));
        ok(Command::new("rpm")
            .arg("--root")
            .arg(root.path())
            .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts"])
            .arg(&rpm));
        check_installed_tree(root.path());
        let license =
            std::fs::read_to_string(root.path().join("usr/share/licenses/korg-clang-18/LICENSE"))
                .expect("license file installed");
        assert!(
            license.contains("University of Illinois")
                && license.contains("Apache License")
                && license.contains("LLVM Exceptions"),
            "{license}"
        );
    }
}

#[test]
fn ipk_has_the_opkg_layout_in_both_outer_forms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = crosstool_tarball(tmp.path());
    // ar outer (Yocto/OE opkg)
    let report = build_json(
        "korg-gcc-14-aarch64-linux",
        &tarball,
        &tmp.path().join("ar"),
        &["--format", "ipk"],
    );
    let ipk = output_path(&report, "ipk");
    assert!(
        ipk.ends_with("korg-gcc-14-aarch64-linux_14.2.0-1_x86_64.ipk"),
        "{ipk:?}"
    );
    let members = ok(Command::new("ar").arg("t").arg(&ipk));
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        ["debian-binary", "control.tar.gz", "data.tar.gz"]
    );
    let x = tempfile::tempdir().expect("x");
    ok(Command::new("ar").arg("x").arg(&ipk).current_dir(x.path()));
    // OpenEmbedded's C library package.
    check_ipk_members(x.path(), "Depends: libc6 (>= 2.");

    // gzip'd tar outer (OpenWrt <= 24.10)
    let report = build_json(
        "korg-gcc-14-aarch64-linux",
        &tarball,
        &tmp.path().join("tar"),
        &["--format", "ipk", "--ipk-outer", "tar"],
    );
    let ipk = output_path(&report, "ipk");
    let bytes = std::fs::read(&ipk).expect("read");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "outer must be gzip");
    let x = tempfile::tempdir().expect("x");
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(&ipk)
        .current_dir(x.path()));
    // The tar form is OpenWrt's, whose C library package is `libc` (opkg-lede refuses
    // `libc6`): the openwrt distro map is the default.
    check_ipk_members(x.path(), "Depends: libc\n");
}

fn check_ipk_members(dir: &Path, depends: &str) {
    assert_eq!(
        std::fs::read(dir.join("debian-binary")).expect("debian-binary"),
        b"2.0\n"
    );
    let control_tar = std::fs::read(dir.join("control.tar.gz")).expect("control.tar.gz");
    // GNU tar format ("ustar  \0" magic) inside gzip.
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&control_tar[..]),
        &mut raw,
    )
    .expect("gunzip");
    assert_eq!(
        &raw[257..265],
        b"ustar  \0",
        "control.tar must be GNU format"
    );
    ok(Command::new("tar")
        .args(["-xzf", "control.tar.gz"])
        .current_dir(dir));
    let control = std::fs::read_to_string(dir.join("control")).expect("control");
    for want in [
        "Package: korg-gcc-14-aarch64-linux",
        "Version: 14.2.0-1",
        "Architecture: x86_64",
        depends,
        "Installed-Size: ",
        "Maintainer: ",
        "Description: ",
    ] {
        assert!(
            control.contains(want),
            "ipk control lacks {want:?}:\n{control}"
        );
    }
    let list = ok(Command::new("tar")
        .args(["-tvzf", "data.tar.gz"])
        .current_dir(dir));
    assert!(
        list.contains("./usr/lib/korg/gcc-14/aarch64-linux/bin/aarch64-linux-gcc"),
        "{list}"
    );
    assert!(
        list.contains("aarch64-linux/bin/as -> ../../bin/as-real"),
        "{list}"
    );
    assert!(list.lines().all(|l| l.contains("root/root")), "{list}");
    assert!(!list.contains("usr/share/doc"), "no docs in ipk:\n{list}");
}

#[test]
fn inspect_round_trips_every_format() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = llvm_tarball(tmp.path());
    let report = build_json("korg-clang-18", &tarball, &tmp.path().join("out"), &[]);
    for (format, dep_field, dep) in [
        // Explicit spec relations merged with those derived from the ELF files.
        ("deb", "Depends", "libc6 (>= 2.3"),
        ("rpm", "Requires", "glibc >= 2.17"),
        ("rpm", "Requires", "libc.so.6()(64bit)"),
        ("ipk", "Depends", "libc6 (>= 2.3"),
    ] {
        let path = output_path(&report, format);
        let info: serde_json::Value =
            serde_json::from_str(&ok(korgpkg().arg("inspect").arg(&path).arg("--json")))
                .expect("json");
        assert_eq!(info["format"], format);
        assert_eq!(info["name"], "korg-clang-18");
        let deps: Vec<&str> = info["relations"][dep_field]
            .as_array()
            .unwrap_or_else(|| panic!("{format}: {info}"))
            .iter()
            .map(|d| d.as_str().expect("s"))
            .collect();
        assert!(
            deps.iter().any(|d| d.starts_with(dep))
                && deps.len() == deps.iter().collect::<std::collections::BTreeSet<_>>().len(),
            "{format}: {deps:?}"
        );
        let files = info["files"].as_array().expect("files");
        let find = |p: &str| {
            files
                .iter()
                .find(|f| f["path"] == p)
                .unwrap_or_else(|| panic!("{format}: no {p} in {info}"))
        };
        assert_eq!(
            find("/usr/lib/korg/llvm-18/bin/clang")["target"],
            "clang-18",
            "{format}"
        );
        assert_eq!(
            find("/usr/lib/korg/llvm-18/bin/clang")["kind"],
            "symlink",
            "{format}"
        );
        assert_eq!(
            find("/usr/lib/korg/llvm-18/bin/clang-18")["mode"],
            0o755,
            "{format}"
        );
        assert_eq!(
            find("/usr/lib/korg/llvm-18/bin/clang-18")["size"],
            real_elf().len(),
            "{format}"
        );
        assert_eq!(
            find("/usr/lib/korg/llvm-18/share/empty")["kind"],
            "directory",
            "{format}"
        );
        let hl = [
            find("/usr/lib/korg/llvm-18/bin/ld.lld"),
            find("/usr/lib/korg/llvm-18/bin/lld"),
        ];
        assert!(
            hl.iter().any(|f| f["kind"] == "hardlink"),
            "{format}: one name is a hard link: {hl:?}"
        );
        assert!(
            files
                .iter()
                .all(|f| f["user"] == "root" && f["group"] == "root"),
            "{format}"
        );
        // The human-readable form carries the same facts.
        let text = ok(korgpkg().arg("inspect").arg(&path));
        assert!(
            text.contains("Name: korg-clang-18")
                && text.contains("/usr/lib/korg/llvm-18/bin/clang -> clang-18"),
            "{text}"
        );
    }
}

#[test]
fn inspect_reads_packages_made_by_dpkg_deb() {
    need_tool("dpkg-deb");
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: hello-x\nVersion: 1.0-1\nArchitecture: all\nMaintainer: A <a@b.c>\nDepends: bash (>= 5)\nDescription: test\n",
    )
    .expect("control");
    std::fs::write(root.join("usr/bin/hello"), b"#!/bin/sh\necho hi\n").expect("file");
    std::fs::set_permissions(
        root.join("usr/bin/hello"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let deb = tmp.path().join("hello-x_1.0-1_all.deb");
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb));
    let info: serde_json::Value =
        serde_json::from_str(&ok(korgpkg().arg("inspect").arg(&deb).arg("--json"))).expect("json");
    assert_eq!(info["name"], "hello-x");
    assert_eq!(info["version"], "1.0-1");
    assert_eq!(info["relations"]["Depends"][0], "bash (>= 5)");
    assert!(info["files"]
        .as_array()
        .expect("files")
        .iter()
        .any(|f| f["path"] == "/usr/bin/hello" && f["mode"] == 0o755));
}

#[test]
fn inspect_reads_packages_made_by_rpmbuild() {
    need_tool("rpmbuild");
    let tmp = tempfile::tempdir().expect("tmp");
    let top = tmp.path().join("rpmbuild");
    std::fs::create_dir_all(top.join("SPECS")).expect("mkdir");
    let spec = top.join("SPECS/hello-x.spec");
    std::fs::write(
        &spec,
        "Name: hello-x\nVersion: 1.0\nRelease: 2\nSummary: test\nLicense: MIT\nBuildArch: noarch\nRequires: bash >= 5\n\
         %description\ntest\n%install\nmkdir -p %{buildroot}/usr/bin\nprintf '#!/bin/sh\\n' > %{buildroot}/usr/bin/hello\nchmod 755 %{buildroot}/usr/bin/hello\n\
         %files\n/usr/bin/hello\n",
    )
    .expect("spec");
    ok(Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .args(["--nodeps", "-bb"])
        .arg(&spec));
    let rpm = top.join("RPMS/noarch/hello-x-1.0-2.noarch.rpm");
    let info: serde_json::Value =
        serde_json::from_str(&ok(korgpkg().arg("inspect").arg(&rpm).arg("--json"))).expect("json");
    assert_eq!(info["name"], "hello-x");
    assert_eq!(info["version"], "1.0-2");
    assert_eq!(info["arch"], "noarch");
    let reqs = info["relations"]["Requires"].as_array().expect("requires");
    assert!(reqs.iter().any(|r| r == "bash >= 5"), "{reqs:?}");
    assert!(info["files"]
        .as_array()
        .expect("files")
        .iter()
        .any(|f| f["path"] == "/usr/bin/hello" && f["mode"] == 0o755));
}

/// Compressible, not trivially repetitive bytes (like code).
fn code_like(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let words: Vec<[u8; 4]> = (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 4);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&words[(x % 64) as usize]);
    }
    out.truncate(len);
    out
}

/// Payloads larger than one compression chunk are compressed on several threads (zstd
/// by libzstd's workers, gzip in deflate pieces joined under one gzip header) and a
/// multi-block .tar.xz is decoded in parallel. The real tools must read every piece,
/// and the packages must not depend on the number of threads.
#[test]
fn large_payloads_compressed_in_parallel_are_read_by_the_real_tools() {
    need_tool("dpkg-deb");
    need_tool("rpm");
    let tmp = tempfile::tempdir().expect("tmp");
    let big = code_like(21 << 20, 7);
    let mut items = llvm_items("llvm-18.1.8-x86_64");
    items.push((
        "llvm-18.1.8-x86_64/lib/libbig.so.18".into(),
        Item::File(String::new(), 0o644, big.clone()),
    ));
    // A multi-block .xz, as `xz -T0` writes: 1 MiB blocks.
    let stream = xz2::stream::MtStreamBuilder::new()
        .threads(2)
        .block_size(1 << 20)
        .preset(1)
        .encoder()
        .expect("xz encoder");
    let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
    std::io::Write::write_all(&mut enc, &tar_bytes(&items)).expect("xz");
    let tarball = write(
        tmp.path(),
        "llvm-18.1.8-x86_64.tar.xz",
        &enc.finish().expect("xz"),
    );
    let build_with = |threads: &str, out: &str| {
        let mut c = korgpkg();
        c.env("KORGPKG_THREADS", threads)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "korg-clang-18", "--allow-unverified", "--json"])
            .arg("--from")
            .arg(&tarball)
            .arg("--out")
            .arg(tmp.path().join(out))
            .args(["--format", "deb,rpm,ipk"]);
        let report: serde_json::Value =
            serde_json::from_str(&ok(&mut c)).expect("build --json prints JSON");
        report
    };
    let report = build_with("3", "three");
    let single = build_with("1", "one");
    for f in ["deb", "rpm", "ipk"] {
        let (a, b) = (output_path(&report, f), output_path(&single, f));
        assert!(
            std::fs::read(&a).expect("read") == std::fs::read(&b).expect("read"),
            "{f}: output depends on the thread count"
        );
    }

    // deb: Debian 12's dpkg reads only the first frame of a zstd member, so the data
    // member must be one frame (libzstd's own worker threads), read whole by dpkg.
    let deb = output_path(&report, "deb");
    let data = tmp.path().join("data.tar.zst");
    ok(Command::new("sh").arg("-c").arg(format!(
        "ar p {} data.tar.zst > {}",
        deb.display(),
        data.display()
    )));
    let frames = ok(Command::new("zstd").args(["-lv"]).arg(&data));
    assert!(
        frames.lines().any(|l| l.trim() == "# Zstandard Frames: 1"),
        "{frames}"
    );
    let root = fresh_dpkg_root();
    ok(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .args(["--force-depends", "--log=/dev/null", "-i"])
        .arg(&deb));
    check_installed_tree(root.path());
    let installed = root.path().join(PREFIX).join("lib/libbig.so.18");
    assert!(std::fs::read(&installed).expect("installed") == big, "deb");

    // rpm: digests check out and the payload installs.
    let rpm = output_path(&report, "rpm");
    let k = ok(Command::new("rpm").arg("-K").arg(&rpm));
    assert!(k.contains("digests OK"), "rpm -K: {k}");
    let root = tempfile::tempdir().expect("root");
    ok(Command::new("rpm").arg("--root").arg(root.path()).args([
        "--dbpath",
        "/var/lib/rpm",
        "--initdb",
    ]));
    ok(Command::new("rpm")
        .arg("--root")
        .arg(root.path())
        .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts"])
        .arg(&rpm));
    check_installed_tree(root.path());
    let installed = root.path().join(PREFIX).join("lib/libbig.so.18");
    assert!(std::fs::read(&installed).expect("installed") == big, "rpm");

    // ipk: data.tar.gz is one gzip member (a single-member reader gets everything)
    // that gzip itself accepts.
    let ipk = output_path(&report, "ipk");
    let gz = tmp.path().join("data.tar.gz");
    ok(Command::new("sh").arg("-c").arg(format!(
        "ar p {} data.tar.gz > {}",
        ipk.display(),
        gz.display()
    )));
    ok(Command::new("gzip").arg("-t").arg(&gz));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&gz).expect("open"),
    ));
    let mut found = false;
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").ends_with("lib/libbig.so.18") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
            assert!(bytes == big, "ipk");
            found = true;
        }
    }
    assert!(found, "libbig.so.18 missing from the ipk's data.tar.gz");
}
