//! `korgpkg kernel package`: Debian's own kernel laid out as TuxMake CI artifacts and
//! repackaged into every format (checked with dpkg-deb, lintian, rpm, rpmlint, ar/tar);
//! a synthetic build tree with a headers package; artifacts over HTTP; bad inputs.
//!
//! The Debian kernel is `apt-get download`ed once into `CARGO_TARGET_TMPDIR` and reused;
//! its modules tarball holds the first 50 modules plus the `modules.*` files, to keep the
//! suite fast. The qemu boot of a kernel built from `linux-source` is not part of the
//! suite (see README.md).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const REL: &str = "6.9.0-korg1";

/// A minimal x86 bzImage: the setup header's `HdrS` and `kernel_version` pointing at
/// `"<rel> (builder@host) #1"`.
fn fake_bzimage(rel: &str) -> Vec<u8> {
    let mut b = vec![0u8; 0x1000];
    b[0x202..0x206].copy_from_slice(b"HdrS");
    let off: u16 = 0x600;
    b[0x20E..0x210].copy_from_slice(&off.to_le_bytes());
    let s = format!("{rel} (builder@host) #1 SMP\0");
    let at = off as usize + 0x200;
    b[at..at + s.len()].copy_from_slice(s.as_bytes());
    b
}

/// A modules tarball with `lib/modules/<rel>/...` (and a build symlink to drop).
fn modules_tar(rel: &str) -> Vec<u8> {
    let m = |s: &str| format!("lib/modules/{rel}/{s}");
    let items = vec![
        (m("kernel/drivers/korg"), Item::Dir("", 0o755)),
        (
            m("kernel/drivers/korg/korg.ko"),
            Item::File(String::new(), 0o644, b"\x7fELF fake module".to_vec()),
        ),
        (
            m("modules.order"),
            Item::File(
                String::new(),
                0o644,
                b"kernel/drivers/korg/korg.ko\n".to_vec(),
            ),
        ),
    ];
    let mut t = tar_bytes(&items);
    // An absolute `build` symlink, as modules_install leaves it: dropped, not an error.
    t.truncate(t.len() - 1024);
    t.extend(raw_entry(&m("build"), b'2', "/home/ci/linux", 0o777, b""));
    t.extend(tar_end());
    t
}

fn metadata(rel: &str, arch: &str, image: &str) -> String {
    format!(
        r#"{{"build":{{"target_arch":"{arch}","toolchain":"gcc-12"}},
"source":{{"kernelrelease":"{rel}","kernelversion":"6.9.0"}},
"results":{{"status":"PASS","artifacts":{{"kernel":["{image}"],"config":["config"],
"modules":["modules.tar.xz"],"debugkernel":["System.map"]}}}},
"uname":{{"kernel_release":"6.12.0-buildhost"}}}}"#
    )
}

/// A synthetic artifacts directory: image, config, System.map, modules.tar.xz, metadata.
fn fake_artifacts(dir: &Path, meta_rel: &str, image_rel: &str, modules_rel: &str) -> PathBuf {
    let a = dir.join("artifacts");
    std::fs::create_dir_all(&a).expect("mkdir");
    write(&a, "bzImage", &fake_bzimage(image_rel));
    write(&a, "config", b"CONFIG_X86_64=y\nCONFIG_MODULES=y\n");
    write(&a, "System.map", b"ffffffff81000000 T _text\n");
    write(&a, "modules.tar.xz", &xz(&modules_tar(modules_rel)));
    write(
        &a,
        "metadata.json",
        metadata(meta_rel, "x86_64", "bzImage").as_bytes(),
    );
    a
}

fn sums_of(dir: &Path) -> String {
    let mut s = String::new();
    for name in dir_listing(dir) {
        let (_, sha) = korgpkg::pipeline::hash_file(&dir.join(&name)).expect("hash");
        s.push_str(&format!("{sha}  {name}\n"));
    }
    s
}

fn kernel(args: &[&str]) -> std::process::Output {
    let mut c = korgpkg();
    c.args(["kernel", "package"])
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    run(&mut c)
}

fn kernel_json(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = kernel(&a);
    assert!(
        o.status.success(),
        "kernel package failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON report")
}

fn output(report: &serde_json::Value, package_prefix: &str, format: &str) -> PathBuf {
    let pkgs = report["packages"].as_array().expect("packages");
    let p = pkgs
        .iter()
        .find(|p| {
            p["package"]
                .as_str()
                .is_some_and(|n| n.starts_with(package_prefix))
        })
        .unwrap_or_else(|| panic!("no {package_prefix} package in {report}"));
    output_path(p, format)
}

/// Expect failure with exit `code`, a one-line error naming `names`, and nothing in `out`.
fn expect_error(o: &std::process::Output, code: i32, names: &str, out: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(names), "error must name {names}: {err}");
    let left: Vec<String> = dir_listing(out)
        .into_iter()
        .filter(|n| {
            n.ends_with(".deb")
                || n.ends_with(".rpm")
                || n.ends_with(".ipk")
                || n.starts_with(".korgpkg")
        })
        .collect();
    assert!(left.is_empty(), "nothing may be written: {left:?}");
}

fn control_member(pkg: &Path, member: &str, name: &str) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(Command::new("ar")
        .arg("x")
        .arg(pkg)
        .arg(member)
        .current_dir(tmp.path()));
    ok(Command::new("tar")
        .arg("-xf")
        .arg(member)
        .current_dir(tmp.path()));
    std::fs::read_to_string(tmp.path().join(name)).expect("control member")
}

// ---------------------------------------------------------------------------------------
// Debian's real kernel as CI artifacts

/// Debian's cloud kernel image package for `arch` (`amd64`, `arm64`), downloaded once
/// per machine into `target/tmp` (a foreign arch through a private apt state there);
/// `None` (with a message) when the Debian mirror cannot be reached.
fn debian_kernel_deb(arch: &str) -> Option<PathBuf> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let cache = tmp.join(match arch {
        "amd64" => "debian-kernel".to_string(),
        a => format!("debian-kernel-{a}"),
    });
    std::fs::create_dir_all(&cache).expect("cache dir");
    let found = |dir: &Path| {
        dir_listing(dir)
            .into_iter()
            .find(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
            .map(|n| dir.join(n))
    };
    if let Some(p) = found(&cache) {
        return Some(p);
    }
    let apt = |tool: &str| {
        let mut c = Command::new(tool);
        if arch != "amd64" {
            let state = tmp.join(format!("debian-apt-{arch}"));
            for d in ["lists/partial", "cache/archives/partial"] {
                std::fs::create_dir_all(state.join(d)).expect("apt state dir");
            }
            for o in [
                format!("APT::Architecture={arch}"),
                format!("APT::Architectures={arch}"),
                format!("Dir::State::Lists={}", state.join("lists").display()),
                format!("Dir::Cache={}", state.join("cache").display()),
                "Dir::State::status=/dev/null".into(),
                "Debug::NoLocking=1".into(),
            ] {
                c.arg("-o").arg(o);
            }
        }
        c
    };
    if arch != "amd64" {
        let o = run(apt("apt-get").args(["-q", "update"]));
        if !o.status.success() {
            eprintln!(
                "SKIPPED: apt-get update for {arch} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
    }
    let meta = format!("linux-image-cloud-{arch}");
    let deps = run(apt("apt-cache").args(["depends", &meta]));
    let name = String::from_utf8_lossy(&deps.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").map(str::to_string))?;
    let o = run(apt("apt-get")
        .args(["download", "-q", &name])
        .current_dir(&cache));
    if !o.status.success() {
        eprintln!(
            "SKIPPED: apt-get download {name} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    found(&cache)
}

/// Lay Debian's kernel package for `arch` out as a TuxMake artifacts directory (amd64:
/// `bzImage`; arm64: `Image.gz`, as TuxMake and `make` build it); returns it, the
/// release and the unpacked Debian package.
fn debian_artifacts(dir: &Path, arch: &str) -> Option<(PathBuf, String, PathBuf)> {
    let deb = debian_kernel_deb(arch)?;
    let x = dir.join("x");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let rel = dir_listing(&x.join("lib/modules")).into_iter().next()?;
    let a = dir.join("artifacts");
    std::fs::create_dir_all(&a).expect("mkdir");
    let boot = x.join("boot");
    let vmlinuz = boot.join(format!("vmlinuz-{rel}"));
    let (image, target_arch) = match arch {
        "amd64" => {
            std::fs::copy(&vmlinuz, a.join("bzImage")).expect("image");
            ("bzImage", "x86_64")
        }
        _ => {
            let image = std::fs::read(&vmlinuz).expect("image");
            write(&a, "Image.gz", &gz(&image));
            ("Image.gz", "arm64")
        }
    };
    std::fs::copy(boot.join(format!("config-{rel}")), a.join("config")).expect("config");
    std::fs::copy(boot.join(format!("System.map-{rel}")), a.join("System.map")).expect("map");
    // 50 modules and the modules.* files keep the test fast.
    let found = ok(Command::new("find")
        .arg(format!("lib/modules/{rel}"))
        .args(["-name", "*.ko*"])
        .current_dir(&x));
    let mut list: Vec<&str> = found.lines().collect();
    list.sort();
    list.truncate(50);
    let mut list: Vec<String> = list.into_iter().map(str::to_string).collect();
    for n in dir_listing(&x.join(format!("lib/modules/{rel}"))) {
        if n.starts_with("modules.") {
            list.push(format!("./lib/modules/{rel}/{n}"));
        }
    }
    write(dir, "list", list.join("\n").as_bytes());
    ok(Command::new("tar")
        .arg("-cJf")
        .arg(a.join("modules.tar.xz"))
        .arg("-C")
        .arg(&x)
        .arg("-T")
        .arg(dir.join("list")));
    write(
        &a,
        "metadata.json",
        metadata(&rel, target_arch, image).as_bytes(),
    );
    Some((a, rel, x))
}

#[test]
fn debian_arm64_kernel_from_image_gz_installs_the_uncompressed_image_as_debian_does() {
    for t in ["dpkg-deb", "rpm2cpio", "cpio", "file"] {
        need_tool(t);
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let Some((art, rel, debian)) = debian_artifacts(tmp.path(), "arm64") else {
        return;
    };
    let out = tmp.path().join("out");
    let report = kernel_json(&[
        "--artifacts",
        art.to_str().expect("utf8"),
        "--format",
        "deb,rpm",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    let name = format!("korg-linux-image-{rel}");
    let theirs = std::fs::read(debian.join(format!("boot/vmlinuz-{rel}"))).expect("debian's");
    // The deb installs exactly Debian's own /boot/vmlinuz: the uncompressed Image.
    let deb = output(&report, &name, "deb");
    let x = tmp.path().join("ours");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let ours = x.join(format!("boot/vmlinuz-{rel}"));
    assert!(
        std::fs::read(&ours).expect("ours") == theirs,
        "not Debian's Image"
    );
    let kind = ok(Command::new("file").arg("-b").arg(&ours));
    assert!(
        kind.starts_with("Linux kernel ARM64 boot executable Image"),
        "{kind}"
    );
    // The rpm's kernel-install copy too.
    let rpm = output(&report, &name, "rpm");
    let r = tmp.path().join("rpm");
    std::fs::create_dir_all(&r).expect("mkdir");
    ok(Command::new("sh")
        .arg("-c")
        .arg("rpm2cpio \"$1\" | cpio -idm --quiet")
        .arg("sh")
        .arg(&rpm)
        .current_dir(&r));
    for p in [
        format!("boot/vmlinuz-{rel}"),
        format!("lib/modules/{rel}/vmlinuz"),
    ] {
        assert!(std::fs::read(r.join(&p)).expect(&p) == theirs, "{p}");
    }
}

#[test]
fn debian_kernel_as_ci_artifacts_in_every_format() {
    for t in ["dpkg-deb", "lintian", "rpm", "rpmlint", "ar", "tar", "xz"] {
        need_tool(t);
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let Some((art, rel, _)) = debian_artifacts(tmp.path(), "amd64") else {
        return;
    };
    let out = tmp.path().join("out");
    let report = kernel_json(&[
        "--artifacts",
        art.to_str().expect("utf8"),
        "--format",
        "deb,rpm,ipk",
        "--deb-compression",
        "xz",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(report["release"], rel.as_str());
    let name = format!("korg-linux-image-{rel}");

    let deb = output(&report, &name, "deb");
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for want in [
        format!("Package: {name}"),
        "Depends: kmod, initramfs-tools | linux-initramfs-tool".to_string(),
        "Provides: linux-image".to_string(),
        "postinst".into(),
        "prerm".into(),
        "postrm".into(),
        "preinst".into(),
    ] {
        assert!(info.contains(&want), "dpkg-deb -I lacks {want:?}:\n{info}");
    }
    let postinst = ok(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("postinst"));
    assert!(
        postinst.contains(&format!(
            "--arg={rel} --arg=/boot/vmlinuz-{rel} \"${{DPKG_ROOT}}/etc/kernel/postinst.d\""
        )),
        "{postinst}"
    );
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for want in [
        format!("./boot/vmlinuz-{rel}"),
        format!("./boot/config-{rel}"),
        format!("./boot/System.map-{rel}"),
        format!("./lib/modules/{rel}/modules.order"),
    ] {
        assert!(contents.contains(&want), "deb lacks {want}");
    }
    assert!(contents.matches(".ko").count() >= 50, "modules packaged");
    let lint = run(Command::new("lintian").arg(&deb));
    let lint = String::from_utf8_lossy(&lint.stdout);
    let errors: Vec<&str> = lint.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{lint}");

    let rpm = output(&report, &name, "rpm");
    let provides = ok(Command::new("rpm").args(["-qp", "--provides"]).arg(&rpm));
    assert!(
        provides.contains(&format!("kernel-uname-r = {rel}")),
        "{provides}"
    );
    let scripts = ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    assert!(
        scripts.contains(&format!(
            "kernel-install add {rel} /lib/modules/{rel}/vmlinuz"
        )) && scripts.contains(&format!("kernel-install remove {rel}"))
            && scripts.contains(&format!("depmod -a {rel}"))
            && scripts.contains("using /bin/sh"),
        "{scripts}"
    );
    let files = ok(Command::new("rpm").args(["-qpl"]).arg(&rpm));
    assert!(
        files.contains(&format!("/lib/modules/{rel}/vmlinuz\n")),
        "{files}"
    );
    ok(Command::new("rpm").args(["-K", "--nosignature"]).arg(&rpm));
    let rl = run(Command::new("rpmlint")
        .arg("-c")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/rpmlint.toml"
        ))
        .arg(&rpm));
    let rl = String::from_utf8_lossy(&rl.stdout);
    assert!(rl.contains(" 0 errors"), "rpmlint errors:\n{rl}");

    let ipk = output(&report, &name, "ipk");
    let postinst = control_member(&ipk, "control.tar.gz", "postinst");
    assert!(postinst.contains(&format!("depmod -a {rel}")), "{postinst}");
}

// ---------------------------------------------------------------------------------------
// Synthetic inputs

#[test]
fn artifacts_are_packaged_reproducibly_and_build_links_dropped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let art = fake_artifacts(tmp.path(), REL, REL, REL);
    let mut shas = Vec::new();
    for run_no in 0..2 {
        let out = tmp.path().join(format!("out{run_no}"));
        let report = kernel_json(&[
            "--artifacts",
            art.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ]);
        let outs = report["packages"][0]["outputs"]
            .as_array()
            .expect("outputs")
            .clone();
        assert_eq!(outs.len(), 3);
        shas.push(outs.iter().map(|o| o["sha256"].clone()).collect::<Vec<_>>());
        let deb = output(&report, "korg-linux-image-6.9.0-korg1", "deb");
        assert!(deb.ends_with(format!("korg-linux-image-{REL}_6.9.0-1_amd64.deb")));
        let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
        assert!(contents.contains("korg/korg.ko"), "{contents}");
        assert!(
            !contents.contains("/build"),
            "build symlink dropped:\n{contents}"
        );
    }
    assert_eq!(shas[0], shas[1], "SOURCE_DATE_EPOCH builds are identical");
}

#[test]
fn release_candidates_sort_before_the_release() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rel = "6.10.0-rc3";
    let art = fake_artifacts(tmp.path(), rel, rel, rel);
    let out = tmp.path().join("out");
    let report = kernel_json(&[
        "--artifacts",
        art.to_str().expect("utf8"),
        "--format",
        "deb",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(report["packages"][0]["version"], "6.10.0~rc3");
    assert_eq!(
        report["packages"][0]["package"],
        "korg-linux-image-6.10.0-rc3"
    );
}

#[test]
fn arm64_image_gz_banner_is_checked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = fake_artifacts(tmp.path(), REL, REL, REL);
    std::fs::remove_file(a.join("bzImage")).expect("rm");
    let mut image = vec![0u8; 300_000];
    image.extend_from_slice(b"Linux version 6.9.0-other (ci@runner) (gcc 12) #1 SMP\n\0");
    write(&a, "Image.gz", &gz(&image));
    write(
        &a,
        "metadata.json",
        metadata(REL, "arm64", "Image.gz").as_bytes(),
    );
    let out = tmp.path().join("out");
    let o = kernel(&[
        "--artifacts",
        a.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]);
    expect_error(&o, 4, "Image.gz", &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("6.9.0-other"));

    image.truncate(300_000);
    image.extend_from_slice(format!("Linux version {REL} (ci@runner) #1\n").as_bytes());
    write(&a, "Image.gz", &gz(&image));
    let report = kernel_json(&[
        "--artifacts",
        a.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]);
    let rpm = output(&report, "korg-linux-image", "rpm");
    assert!(
        rpm.ends_with(format!("korg-linux-image-{REL}-6.9.0-1.aarch64.rpm")),
        "{rpm:?}"
    );
}

#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let outs = out.to_str().expect("utf8");

    // A build tree without include/config/kernel.release.
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("include/config")).expect("mkdir");
    write(&tree, ".config", b"CONFIG_X86_64=y\n");
    let o = kernel(&["--build-dir", tree.to_str().expect("utf8"), "--out", outs]);
    expect_error(&o, 4, "kernel.release", &out);

    // A modules tarball of another release.
    let d = tmp.path().join("other-modules");
    let art = fake_artifacts(&d, REL, REL, "6.8.0-elsewhere");
    let o = kernel(&["--artifacts", art.to_str().expect("utf8"), "--out", outs]);
    expect_error(&o, 4, "modules.tar.xz", &out);

    // An image whose boot header names another release.
    let d = tmp.path().join("other-image");
    let art = fake_artifacts(&d, REL, "6.9.0-wrong", REL);
    let o = kernel(&["--artifacts", art.to_str().expect("utf8"), "--out", outs]);
    expect_error(&o, 4, "bzImage", &out);

    // A local artifact that does not match --sums.
    let d = tmp.path().join("bad-sum");
    let art = fake_artifacts(&d, REL, REL, REL);
    let sums = sums_of(&art).replace(
        &korgpkg::pipeline::hash_file(&art.join("config"))
            .expect("hash")
            .1,
        &"0".repeat(64),
    );
    let sums_file = write(&d, "sha256sums", sums.as_bytes());
    let o = kernel(&[
        "--artifacts",
        art.to_str().expect("utf8"),
        "--sums",
        sums_file.to_str().expect("utf8"),
        "--out",
        outs,
    ]);
    expect_error(&o, 5, "config", &out);
}

#[test]
fn artifacts_over_http_are_verified_against_sums() {
    let tmp = tempfile::tempdir().expect("tmp");
    let art = fake_artifacts(tmp.path(), REL, REL, REL);
    let server = server::Server::start();
    server.dir("/ci/1", &art);
    let good = sums_of(&art);
    server.file("/ci/1.sums", good.clone());
    let bzimage_sha = korgpkg::pipeline::hash_file(&art.join("bzImage"))
        .expect("hash")
        .1;
    server.file("/ci/bad.sums", good.replace(&bzimage_sha, &"1".repeat(64)));
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let base = server.url("/ci/1/");
    let args = |sums: &str| {
        vec![
            "--cache-dir".to_string(),
            cache.display().to_string(),
            "--artifacts".into(),
            base.clone(),
            "--sums".into(),
            server.url(sums),
            "--out".into(),
            out.display().to_string(),
        ]
    };

    let bad = args("/ci/bad.sums");
    let o = kernel(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    expect_error(&o, 5, "bzImage", &out);

    // Without sums, a URL is refused.
    let o = kernel(&["--artifacts", &base, "--out", out.to_str().expect("utf8")]);
    expect_error(&o, 2, "--sums", &out);

    let good_args = args("/ci/1.sums");
    let mut a = vec!["--json"];
    a.extend(good_args.iter().map(String::as_str));
    let o = kernel(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        report["packages"][0]["outputs"].as_array().map(Vec::len),
        Some(3)
    );
}

/// A synthetic build tree: the files install-extmod-build takes, plus some it must not.
fn fake_tree(dir: &Path) -> PathBuf {
    let t = dir.join("build");
    let mk = |p: &str, bytes: &[u8], mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let path = t.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    mk(
        "include/config/kernel.release",
        format!("{REL}\n").as_bytes(),
        0o644,
    );
    mk("include/config/auto.conf", b"CONFIG_X86_64=y\n", 0o644);
    mk(
        "include/generated/autoconf.h",
        b"#define CONFIG_X86_64 1\n",
        0o644,
    );
    mk("include/linux/module.h", b"/* module.h */\n", 0o644);
    mk("arch/x86/include/asm/page.h", b"/* page.h */\n", 0o644);
    mk(
        "arch/x86/include/generated/asm/rwonce.h",
        b"/* gen */\n",
        0o644,
    );
    mk("arch/x86/Makefile", b"# arch makefile\n", 0o644);
    mk("arch/x86/boot/bzImage", &fake_bzimage(REL), 0o644);
    mk("arch/x86/kernel/setup.o", b"object", 0o644);
    mk("Makefile", b"# top makefile\n", 0o644);
    mk("drivers/net/Kconfig", b"# Kconfig\n", 0o644);
    mk("drivers/net/e1000.c", b"/* source */\n", 0o644);
    mk("scripts/mod/modpost", &real_elf(), 0o755);
    mk("scripts/mod/modpost.o", b"object", 0o644);
    mk("scripts/mod/.modpost.cmd", b"cmd", 0o644);
    mk(
        "Module.symvers",
        b"0x0\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n",
        0o644,
    );
    mk("System.map", b"ffffffff81000000 T _text\n", 0o644);
    mk(".config", b"CONFIG_X86_64=y\nCONFIG_MODULES=y\n", 0o644);
    mk("vmlinux", b"big", 0o755);
    std::os::unix::fs::symlink("/home/builder/linux", t.join("source")).expect("symlink");
    t
}

#[test]
fn build_tree_makes_image_and_headers_packages() {
    need_tool("dpkg-deb");
    let tmp = tempfile::tempdir().expect("tmp");
    let tree = fake_tree(tmp.path());
    // Modules as `make modules_install INSTALL_MOD_PATH=staging` leaves them.
    let staging = tmp.path().join("staging");
    let mdir = staging.join(format!("lib/modules/{REL}"));
    std::fs::create_dir_all(mdir.join("kernel/drivers")).expect("mkdir");
    write(&mdir.join("kernel/drivers"), "korg.ko", b"\x7fELF module");
    write(&mdir, "modules.dep", b"kernel/drivers/korg.ko:\n");
    std::os::unix::fs::symlink(&tree, mdir.join("build")).expect("symlink");
    let out = tmp.path().join("out");
    let report = kernel_json(&[
        "--build-dir",
        tree.to_str().expect("utf8"),
        "--modules-dir",
        staging.to_str().expect("utf8"),
        "--format",
        "deb,rpm",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    let image = output(&report, "korg-linux-image-", "deb");
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&image));
    assert!(contents.contains(&format!("./lib/modules/{REL}/kernel/drivers/korg.ko")));
    assert!(contents.contains(&format!("./boot/config-{REL}")));
    assert!(!contents.contains(&format!("{REL}/build")), "{contents}");

    let headers = output(&report, "korg-linux-headers-", "deb");
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&headers));
    let h = format!("./usr/src/linux-headers-{REL}");
    for want in [
        "Makefile",
        "Module.symvers",
        ".config",
        "include/config/auto.conf",
        "include/config/kernel.release",
        "include/generated/autoconf.h",
        "include/linux/module.h",
        "arch/x86/include/asm/page.h",
        "arch/x86/include/generated/asm/rwonce.h",
        "arch/x86/Makefile",
        "drivers/net/Kconfig",
        "scripts/mod/modpost",
    ] {
        assert!(
            contents.contains(&format!("{h}/{want}\n")),
            "headers lack {want}:\n{contents}"
        );
    }
    for unwanted in [
        "modpost.o",
        ".modpost.cmd",
        "e1000.c",
        "setup.o",
        "vmlinux",
        "bzImage",
        "/source",
    ] {
        assert!(
            !contents.contains(unwanted),
            "headers must not ship {unwanted}:\n{contents}"
        );
    }
    assert!(
        contents.contains(&format!(
            "./lib/modules/{REL}/build -> /usr/src/linux-headers-{REL}"
        )),
        "{contents}"
    );
    let rpm = output(&report, "korg-linux-headers-", "rpm");
    let files = ok(Command::new("rpm").args(["-qpl"]).arg(&rpm));
    assert!(files.contains(&format!("/usr/src/linux-headers-{REL}/scripts/mod/modpost")));
}

#[test]
fn build_tree_runs_modules_install() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tree = fake_tree(tmp.path());
    // The tree's own Makefile: modules_install into INSTALL_MOD_PATH.
    write(
        &tree,
        "Makefile",
        format!(
            "modules_install:\n\tmkdir -p $(INSTALL_MOD_PATH)/lib/modules/{REL}/kernel\n\
             \techo module > $(INSTALL_MOD_PATH)/lib/modules/{REL}/kernel/m.ko\n\
             \tln -s /nowhere $(INSTALL_MOD_PATH)/lib/modules/{REL}/source\n"
        )
        .as_bytes(),
    );
    need_tool("make");
    let out = tmp.path().join("out");
    let report = kernel_json(&[
        "--build-dir",
        tree.to_str().expect("utf8"),
        "--format",
        "ipk",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    let ipk = output(&report, "korg-linux-image-", "ipk");
    let info = ok(korgpkg().arg("inspect").arg(&ipk));
    assert!(
        info.contains(&format!("/lib/modules/{REL}/kernel/m.ko")),
        "{info}"
    );
    assert!(
        !info.contains(&format!("/lib/modules/{REL}/source")),
        "{info}"
    );
}
