//! A real toolchain, end to end: Debian 12's LLVM 14 packages (`apt-get download`
//! clang-14, lld-14, llvm-14 and their libraries) laid out as a kernel.org tarball
//! (`llvm-14.0.6-x86_64/{bin,lib}`, RUNPATH `$ORIGIN/../lib` set by patchelf, shared
//! libraries mode 0644, compiler-rt's i386 libraries as target-side files), built in all
//! three formats with the default command. Then:
//!
//! - the rpm's Requires equal what rpm's own generator (`rpmdeps --requires` over the
//!   tree, minus what the tree provides) derives from the files for the package's
//!   machine; the i386 files are listed in the `--json` report and derive nothing;
//! - the .deb is installed with `apt-get install ./x.deb` into a `debootstrap
//!   --variant=minbase` bookworm root, which resolves every dependency from Debian;
//! - the installed clang and ld.lld compile and link a C program there, and it runs.
//!
//! The tree and tarball (`CARGO_TARGET_TMPDIR/debian-llvm`, about 1 minute) and the
//! minbase root (about 3 minutes) are built once and reused, keyed by [`RECIPE`].

mod common;
use common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bump when the layout below changes, to rebuild the cached tree and tarball.
const RECIPE: &str = "llvm-14 tree v1";
/// Bump when the root's recipe changes.
const ROOT_RECIPE: &str = "bookworm minbase + libc6-dev libgcc-12-dev v1";
const MIRROR: &str = "http://deb.debian.org/debian";
const TOP: &str = "llvm-14.0.6-x86_64";
/// Debian 12's LLVM 14: the tools, their libraries, clang's headers and compiler-rt.
const DEBS: &[&str] = &[
    "clang-14",
    "lld-14",
    "llvm-14",
    "llvm-14-runtime",
    "llvm-14-linker-tools",
    "libllvm14",
    "libclang-cpp14",
    "libclang1-14",
    "libclang-common-14-dev",
    "libclang-rt-14-dev",
];

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-llvm")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn stamped(stamp: &Path, recipe: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|s| s == recipe)
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// ELF files whose e_machine is x86-64 (62), read straight from the header.
fn is_x86_64_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[..4] == b"\x7fELF"
        && u16::from_le_bytes([head[18], head[19]]) == 62
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The cached kernel.org-shaped tree and its tarball; `None` if apt cannot download.
fn fixture() -> Option<(PathBuf, PathBuf)> {
    let dir = cache();
    let tree = dir.join("tree");
    let tarball = dir.join(format!("{TOP}.tar.gz"));
    let stamp = dir.join("tarball.done");
    if stamped(&stamp, RECIPE) && tarball.is_file() {
        return Some((tree.join(TOP), tarball));
    }
    need_tool("patchelf");
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&debs).expect("mkdir");
    let out = run(Command::new("apt-get")
        .arg("download")
        .args(DEBS)
        .current_dir(&debs));
    if !out.status.success() {
        eprintln!(
            "SKIP: apt-get download of Debian's LLVM 14 failed (no mirror?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let ex = dir.join("extract");
    let _ = std::fs::remove_dir_all(&ex);
    std::fs::create_dir_all(&ex).expect("mkdir");
    for d in dir_listing(&debs) {
        ok(Command::new("dpkg-deb")
            .arg("-x")
            .arg(debs.join(d))
            .arg(&ex));
    }
    // kernel.org's layout: the tools in bin/, every library and clang's resource
    // directory in lib/ (Debian keeps the shared libraries in the multiarch directory).
    let top = tree.join(TOP);
    std::fs::create_dir_all(&top).expect("mkdir");
    let llvm = ex.join("usr/lib/llvm-14");
    ok(Command::new("cp")
        .arg("-a")
        .arg(llvm.join("bin"))
        .arg(top.join("bin")));
    ok(Command::new("cp")
        .arg("-a")
        .arg(llvm.join("lib"))
        .arg(top.join("lib")));
    let multiarch = ex.join("usr/lib/x86_64-linux-gnu");
    for name in dir_listing(&multiarch) {
        let from = multiarch.join(&name);
        let meta = std::fs::symlink_metadata(&from).expect("stat");
        let target = std::fs::read_link(&from).ok();
        if meta.file_type().is_symlink()
            && target.is_some_and(|t| t.to_string_lossy().contains("llvm-14"))
        {
            continue; // points back into lib/, which has the file itself
        }
        let to = top.join("lib").join(&name);
        let _ = std::fs::remove_file(&to);
        ok(Command::new("cp").arg("-a").arg(&from).arg(&to));
    }
    for f in files_below(&top) {
        if !is_elf(&f) {
            continue;
        }
        let in_bin = f.parent() == Some(top.join("bin").as_path());
        let in_lib = f.parent() == Some(top.join("lib").as_path());
        if in_bin {
            ok(Command::new("patchelf")
                .args(["--set-rpath", "$ORIGIN/../lib"])
                .arg(&f));
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        } else {
            if in_lib && is_x86_64_elf(&f) {
                ok(Command::new("patchelf")
                    .args(["--set-rpath", "$ORIGIN"])
                    .arg(&f));
            }
            // Shared libraries as kernel.org (and Debian) ship them: not executable.
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
    let _ = std::fs::remove_dir_all(&ex);
    let part = dir.join("tarball.part");
    ok(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@1700000000",
            "-I",
            "gzip -1",
            "-cf",
        ])
        .arg(&part)
        .arg("-C")
        .arg(&tree)
        .arg(TOP));
    std::fs::rename(&part, &tarball).expect("rename");
    std::fs::write(&stamp, RECIPE).expect("stamp");
    Some((top, tarball))
}

/// The cached minbase bookworm root (with the C library's and GCC's development files,
/// which clang links against); `None` if debootstrap cannot reach the mirror.
fn minbase_root() -> Option<PathBuf> {
    let dir = cache();
    let root = dir.join("root");
    let stamp = dir.join("root.done");
    if stamped(&stamp, ROOT_RECIPE) && root.is_dir() {
        return Some(root);
    }
    need_tool("debootstrap");
    let _ = std::fs::remove_dir_all(&root);
    let out = run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=libc6-dev,libgcc-12-dev",
            "bookworm",
        ])
        .arg(&root)
        .arg(MIRROR));
    if !out.status.success() {
        eprintln!(
            "SKIP: debootstrap failed (no mirror?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    std::fs::write(&stamp, ROOT_RECIPE).expect("stamp");
    Some(root)
}

/// Run `script` with `sh -c` chrooted into `root`, with its own /proc (clang and the
/// dynamic loader resolve `$ORIGIN` through /proc/self/exe) in a private mount namespace.
fn in_root(root: &Path, script: &str) -> std::process::Output {
    run(Command::new("unshare")
        .args(["--mount", "--pid", "--fork"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", script])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn installed(root: &Path, package: &str) -> bool {
    let o = in_root(
        root,
        &format!("dpkg-query -W -f='${{Status}}' {package} 2>/dev/null"),
    );
    String::from_utf8_lossy(&o.stdout).contains("install ok installed")
}

/// `rpmdeps` over `files`, one capability per line, as a set.
fn rpmdeps(flag: &str, files: &[PathBuf]) -> BTreeSet<String> {
    use std::io::Write;
    let mut child = Command::new("/usr/lib/rpm/rpmdeps")
        .arg(flag)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("rpmdeps (scripts/test installs rpm)");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for f in files {
            writeln!(stdin, "{}", f.display()).expect("write");
        }
    }
    let out = child.wait_with_output().expect("rpmdeps");
    assert!(out.status.success(), "rpmdeps {flag}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn debian_llvm_as_a_kernel_org_tarball_installs_from_debian_and_links_a_program() {
    if !is_root() {
        eprintln!("SKIP: debootstrap and chroot need root");
        return;
    }
    let Some((tree, tarball)) = fixture() else {
        return;
    };
    let Some(base_root) = minbase_root() else {
        return;
    };
    let tmp = tempfile::tempdir_in(cache()).expect("tmp");
    let out = tmp.path().join("out");

    // The default command: every format, default distro maps, no spec override.
    let report = build_json("korg-clang-14", &tarball, &out, &[]);
    let foreign: Vec<String> = report["foreign_arch"]
        .as_array()
        .expect("foreign_arch listed")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect();
    assert!(
        foreign.contains(
            &"/usr/lib/korg/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.asan-i386.so"
                .to_string()
        ),
        "{foreign:?}"
    );
    assert!(report["unmapped"].is_null(), "{report}");

    // rpm: exactly rpm's own generator over the x86_64 files, minus self-provides.
    let native: Vec<PathBuf> = files_below(&tree)
        .into_iter()
        .filter(|f| !is_elf(f) || is_x86_64_elf(f))
        .collect();
    let provided = rpmdeps("--provides", &native);
    let want: BTreeSet<String> = rpmdeps("--requires", &native)
        .difference(&provided)
        .cloned()
        .collect();
    for lib in [
        "libxml2.so.2()(64bit)",
        "libffi.so.8()(64bit)",
        "libedit.so.2()(64bit)",
    ] {
        assert!(want.contains(lib), "rpmdeps lacks {lib}: {want:?}");
    }
    let rpm = output_path(&report, "rpm");
    let got: BTreeSet<String> = ok(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm))
        .lines()
        .filter(|l| !l.starts_with("rpmlib(") && *l != "glibc >= 2.17")
        .map(str::to_string)
        .collect();
    assert_eq!(got, want, "rpm Requires vs rpmdeps");

    // ipk: the OpenEmbedded names for every soname.
    let ipk = output_path(&report, "ipk");
    assert!(ipk.is_file());

    // deb: apt resolves every dependency from Debian in a minbase root.
    let root = tmp.path().join("root");
    ok(Command::new("cp").arg("-a").arg(&base_root).arg(&root));
    let deb = output_path(&report, "deb");
    std::fs::copy(&deb, root.join("tmp/korg-clang-14.deb")).expect("copy deb");
    for pkg in ["libz3-4", "libxml2", "libedit2"] {
        assert!(
            !installed(&root, pkg),
            "{pkg} is already in the minbase root"
        );
    }
    let mut o = in_root(&root, "apt-get install -y -q ./tmp/korg-clang-14.deb");
    if !o.status.success() {
        // The root's package lists are from when it was cached; refresh them once.
        o = in_root(
            &root,
            "apt-get update -q && apt-get install -y -q ./tmp/korg-clang-14.deb",
        );
    }
    assert!(o.status.success(), "apt-get install: {}", text(&o));
    for pkg in ["korg-clang-14", "libz3-4", "libxml2", "libedit2", "libffi8"] {
        assert!(installed(&root, pkg), "{pkg} not installed: {}", text(&o));
    }

    // clang and ld.lld from the package compile, link and run a program.
    std::fs::write(
        root.join("tmp/hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hello from korg-clang-14\"); return 0; }\n",
    )
    .expect("write");
    let o = in_root(
        &root,
        "/usr/lib/korg/llvm-14/bin/clang -fuse-ld=lld -o /tmp/hello /tmp/hello.c && /tmp/hello \
         && grep -a -q 'Linker: .*LLD 14' /tmp/hello && /usr/lib/korg/llvm-14/bin/ld.lld --version",
    );
    let t = text(&o);
    assert!(o.status.success(), "clang in the root: {t}");
    assert!(
        t.contains("hello from korg-clang-14") && t.contains("LLD 14"),
        "{t}"
    );
}
