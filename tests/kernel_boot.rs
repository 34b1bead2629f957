//! A real kernel, end to end: build an x86_64 kernel from Debian's `linux-source`
//! (tinyconfig plus a serial console, initramfs, ELF/script binaries and modules) and one
//! out-of-tree module, package the build tree with `korgpkg kernel package`, install the
//! image and headers .debs into a throwaway root with dpkg (maintainer scripts run with
//! `DPKG_ROOT`, so depmod writes the root's `modules.dep`), build the module again
//! against the installed headers, and boot the root's `/boot/vmlinuz-<rel>` in
//! `qemu-system-x86_64` (TCG) with a busybox initramfs that `modprobe`s the module from
//! the installed `/lib/modules/<rel>` and prints `uname -r`.
//!
//! The kernel build (about 3 minutes on 2 cores) is cached in
//! `CARGO_TARGET_TMPDIR/kernel-boot`, keyed by the linux-source tarball and [`RECIPE`].

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bump when the configuration or module below changes, to rebuild the cached kernel.
const RECIPE: &str = "tinyconfig+serial+initrd+modules v1";
const LOCALVERSION: &str = "-korgtest";
const CONFIG: &[&str] = &[
    "64BIT",
    "PRINTK",
    "TTY",
    "SERIAL_8250",
    "SERIAL_8250_CONSOLE",
    "BLK_DEV_INITRD",
    "BINFMT_ELF",
    "BINFMT_SCRIPT",
    "MODULES",
    "MODULE_UNLOAD",
    "PROC_FS",
    "SYSFS",
    "DEVTMPFS",
];
const MODULE_C: &str = r#"#include <linux/init.h>
#include <linux/module.h>
static int __init korgtest_init(void) { pr_info("korgtest: loaded\n"); return 0; }
static void __exit korgtest_exit(void) { }
module_init(korgtest_init);
module_exit(korgtest_exit);
MODULE_LICENSE("GPL");
"#;

fn make(dir: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-s").arg("-C").arg(dir).arg("ARCH=x86_64");
    c
}

fn linux_source_tarball() -> PathBuf {
    let mut found: Vec<PathBuf> = dir_listing(Path::new("/usr/src"))
        .into_iter()
        .filter(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        .map(|n| Path::new("/usr/src").join(n))
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no /usr/src/linux-source-*.tar.xz: run scripts/test (it installs linux-source-6.1)")
    })
}

/// The cached kernel: (source tree, build tree, staged modules with the test module).
fn cached_kernel() -> (PathBuf, PathBuf, PathBuf) {
    let tarball = linux_source_tarball();
    let size = std::fs::metadata(&tarball).expect("tarball").len();
    let key = format!("{} {size} {RECIPE}\n", tarball.display());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-boot");
    let (src_parent, build, module, stage) = (
        cache.join("src"),
        cache.join("build"),
        cache.join("module"),
        cache.join("stage"),
    );
    let stamp = cache.join("done");
    let src = |p: &Path| {
        dir_listing(p)
            .into_iter()
            .next()
            .map(|n| p.join(n))
            .expect("linux source directory")
    };
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        return (src(&src_parent), build, stage);
    }
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&cache);
    for d in [&src_parent, &build, &module, &stage] {
        std::fs::create_dir_all(d).expect("cache dir");
    }
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src_parent));
    let src_dir = src(&src_parent);
    ok(make(&src_dir)
        .arg(format!("O={}", build.display()))
        .arg("tinyconfig")
        .stdout(Stdio::null()));
    let mut cfg = Command::new(src_dir.join("scripts/config"));
    cfg.arg("--file").arg(build.join(".config"));
    for c in CONFIG {
        cfg.arg("-e").arg(c);
    }
    cfg.args([
        "--set-str",
        "LOCALVERSION",
        LOCALVERSION,
        "-d",
        "LOCALVERSION_AUTO",
    ]);
    ok(&mut cfg);
    ok(make(&src_dir)
        .arg(format!("O={}", build.display()))
        .arg("olddefconfig")
        .stdout(Stdio::null()));
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    ok(make(&build)
        .arg(format!("-j{jobs}"))
        .args(["bzImage", "modules"]));
    std::fs::write(module.join("korgtest.c"), MODULE_C).expect("module source");
    std::fs::write(module.join("Kbuild"), "obj-m := korgtest.o\n").expect("Kbuild");
    ok(make(&build)
        .arg(format!("M={}", module.display()))
        .arg("modules"));
    for m in [None, Some(&module)] {
        let mut c = make(&build);
        if let Some(m) = m {
            c.arg(format!("M={}", m.display()));
        }
        ok(c.arg("modules_install")
            .arg(format!("INSTALL_MOD_PATH={}", stage.display())));
    }
    std::fs::write(&stamp, key).expect("stamp");
    eprintln!("built the test kernel in {:?}", started.elapsed());
    (src_dir, build, stage)
}

fn dpkg_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(d)).expect("admindir");
    }
    std::fs::write(admin.join("status"), b"").expect("status");
    std::fs::write(admin.join("available"), b"").expect("available");
    root
}

/// A gen_init_cpio list: busybox, /init, /dev/console and the root's /lib/modules.
fn initramfs_list(root: &Path, init: &Path) -> String {
    let mut s = String::from(
        "dir /bin 755 0 0\ndir /dev 755 0 0\nnod /dev/console 600 0 0 c 5 1\n\
         file /bin/busybox /bin/busybox 755 0 0\n",
    );
    s.push_str(&format!("file /init {} 755 0 0\n", init.display()));
    let mut stack = vec![PathBuf::from("lib")];
    while let Some(rel) = stack.pop() {
        s.push_str(&format!("dir /{} 755 0 0\n", rel.display()));
        for name in dir_listing(&root.join(&rel)) {
            let r = rel.join(&name);
            let p = root.join(&r);
            if p.is_dir() {
                stack.push(r);
            } else if p.is_file() {
                s.push_str(&format!("file /{} {} 644 0 0\n", r.display(), p.display()));
            }
        }
    }
    s
}

#[test]
fn real_kernel_package_installs_and_boots_in_qemu() {
    for t in [
        "qemu-system-x86_64",
        "make",
        "gcc",
        "flex",
        "bison",
        "bc",
        "busybox",
        "dpkg",
        "tar",
    ] {
        need_tool(t);
    }
    let (src, build, stage) = cached_kernel();
    let rel = std::fs::read_to_string(build.join("include/config/kernel.release"))
        .expect("kernel.release")
        .trim()
        .to_string();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o = run(korgpkg()
        .args(["kernel", "package", "--json", "--format", "deb"])
        .arg("--build-dir")
        .arg(&build)
        .arg("--src")
        .arg(&src)
        .arg("--modules-dir")
        .arg(&stage)
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["release"], rel.as_str());
    let debs: Vec<PathBuf> = report["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| output_path(p, "deb"))
        .collect();
    assert_eq!(debs.len(), 2, "image and headers: {report}");

    // Install both into a throwaway root; the scripts act on DPKG_ROOT.
    let root = dpkg_root(tmp.path());
    ok(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "-i",
        ])
        .args(&debs));
    let modules = root.join(format!("lib/modules/{rel}"));
    assert!(
        std::fs::read_to_string(modules.join("modules.dep"))
            .expect("postinst ran depmod")
            .contains("korgtest.ko"),
        "modules.dep lists the module"
    );
    let headers = root.join(format!("usr/src/linux-headers-{rel}"));
    assert_eq!(
        std::fs::read_link(modules.join("build")).expect("build symlink"),
        Path::new("/usr/src").join(format!("linux-headers-{rel}"))
    );

    // The headers package builds the module again.
    let ext = tmp.path().join("ext");
    std::fs::create_dir_all(&ext).expect("mkdir");
    std::fs::write(ext.join("korgtest.c"), MODULE_C).expect("module source");
    std::fs::write(ext.join("Kbuild"), "obj-m := korgtest.o\n").expect("Kbuild");
    ok(make(&headers)
        .arg(format!("M={}", ext.display()))
        .arg("modules"));
    assert!(
        ext.join("korgtest.ko").is_file(),
        "built against the headers package"
    );

    // Boot the installed image with an initramfs that loads the installed module.
    let init = write(
        tmp.path(),
        "init",
        b"#!/bin/busybox sh\n\
          /bin/busybox mkdir -p /proc /sys\n\
          /bin/busybox mount -t proc proc /proc\n\
          /bin/busybox mount -t sysfs sys /sys\n\
          /bin/busybox modprobe korgtest && echo KORG-MODULE-LOADED\n\
          /bin/busybox grep -q '^korgtest ' /proc/modules && echo KORG-MODULE-LISTED\n\
          echo \"KORG-UNAME=$(/bin/busybox uname -r)\"\n\
          /bin/busybox reboot -f\n",
    );
    let list = write(
        tmp.path(),
        "initramfs.list",
        initramfs_list(&root, &init).as_bytes(),
    );
    let initrd = tmp.path().join("initramfs.cpio");
    let f = std::fs::File::create(&initrd).expect("initramfs");
    let st = Command::new(build.join("usr/gen_init_cpio"))
        .arg(&list)
        .stdout(f)
        .status()
        .expect("gen_init_cpio");
    assert!(st.success());
    let console_log = tmp.path().join("console.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-nographic", "-no-reboot", "-m", "256"])
        .arg("-kernel")
        .arg(root.join(format!("boot/vmlinuz-{rel}")))
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&console_log).expect("console log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let deadline = Instant::now() + Duration::from_secs(300);
    while qemu.try_wait().expect("qemu").is_none() {
        if Instant::now() > deadline {
            let _ = qemu.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = qemu.wait();
    let console =
        String::from_utf8_lossy(&std::fs::read(&console_log).expect("console log")).into_owned();
    assert!(
        console.contains("KORG-MODULE-LOADED"),
        "console:\n{console}"
    );
    assert!(
        console.contains("KORG-MODULE-LISTED"),
        "console:\n{console}"
    );
    let printed = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("KORG-UNAME="))
        .unwrap_or_else(|| panic!("no uname line; console:\n{console}"));
    assert_eq!(printed, rel);
    assert_eq!(printed, report["release"].as_str().expect("release"));
}
