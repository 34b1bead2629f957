//! Hostile packages through `korgpkg publish` and `korgpkg inspect`: metadata that would
//! lead a pool path out of the repository, packages whose digests or compressed members
//! do not verify, control files that would inject index fields or stanzas, escape
//! sequences in what an error quotes, and rpm headers whose counts, sizes and offsets
//! lie. Each is refused with one line naming the file and the field, the documented exit
//! code (4 bad input, 5 verification failed), no panic, nothing written anywhere and the
//! repository byte-identical.

mod common;

use common::repo::{llvm_packages, snapshot, TestRepo};
use common::{gz, korgpkg, need_tool, ok, raw_entry, run, tar_end, write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// korgpkg's own packages of the LLVM fixture (deb, rpm, ipk), built once per run.
fn built() -> &'static (PathBuf, PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("publish_hostile");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        llvm_packages(&dir)
    })
}

/// An `ar` archive of `members`, as dpkg-deb and opkg-build lay it out.
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let h = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            data.len()
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn control_tar_gz(control: &str) -> Vec<u8> {
    let mut t = raw_entry("./", b'5', "", 0o755, b"");
    t.extend(raw_entry("./control", b'0', "", 0o644, control.as_bytes()));
    t.extend(tar_end());
    gz(&t)
}

fn data_tar_gz() -> Vec<u8> {
    let mut t = raw_entry("./", b'5', "", 0o755, b"");
    t.extend(raw_entry("./usr/", b'5', "", 0o755, b""));
    t.extend(raw_entry("./usr/share/", b'5', "", 0o755, b""));
    t.extend(raw_entry("./usr/share/hello-korg/", b'5', "", 0o755, b""));
    t.extend(raw_entry(
        "./usr/share/hello-korg/README",
        b'0',
        "",
        0o644,
        b"hello\n",
    ));
    t.extend(tar_end());
    gz(&t)
}

/// A control file with the fields a valid package needs, `extra` lines appended.
fn control(package: &str, version: &str, arch: &str, extra: &str) -> String {
    format!(
        "Package: {package}\nVersion: {version}\nArchitecture: {arch}\n\
         Maintainer: Test <test@example.invalid>\n{extra}Description: a test package\n hello.\n"
    )
}

/// A hand-made .deb (or ar-form .ipk, by `name`'s extension) with this control text.
fn package(dir: &Path, name: &str, control: &str) -> PathBuf {
    write(
        dir,
        name,
        &ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control_tar_gz(control)),
            ("data.tar.gz", &data_tar_gz()),
        ]),
    )
}

/// Every file name below `dir` containing `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            out.push(p.clone());
        }
        if e.file_type().unwrap().is_dir() {
            out.extend(files_containing(&p, needle));
        }
    }
    out
}

/// Run korgpkg with `args`; require exit `code`, one line of stderr naming `file` and
/// every needle, no panic and no raw control character.
fn fails(args: &[&std::ffi::OsStr], file: &Path, code: i32, needles: &[&str]) -> String {
    let o = run(korgpkg().args(args).arg(file));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "{args:?} {}: {err}",
        file.display()
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(
        !err.trim_end().chars().any(char::is_control),
        "raw control characters: {err:?}"
    );
    // The file name as errors show it: control characters escaped.
    let shown: String = file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect();
    assert!(
        err.contains(&shown),
        "error must name the file {shown:?}: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    err
}

/// `publish` of `file` is refused with `code` naming the needles, and the repository
/// is left byte-identical.
fn refused(repo: &TestRepo, file: &Path, code: i32, needles: &[&str]) -> String {
    let before = snapshot(&repo.root);
    let err = fails(
        &["publish".as_ref(), "--repo".as_ref(), repo.root.as_os_str()],
        file,
        code,
        needles,
    );
    assert!(
        snapshot(&repo.root) == before,
        "the repository changed after a refused publish of {}",
        file.display()
    );
    err
}

/// `inspect` of `file` is refused with exit 4 naming the needles.
fn inspect_refused(file: &Path, needles: &[&str]) {
    fails(&["inspect".as_ref()], file, 4, needles);
}

#[test]
fn a_hand_made_package_publishes_with_exactly_its_own_fields() {
    need_tool("dpkg-deb");
    let repo = TestRepo::new(false, &[]);
    let deb = package(
        repo.tmp.path(),
        "hello-korg_1.0-1_amd64.deb",
        &control(
            "hello-korg",
            "1.0-1",
            "amd64",
            "Depends: libc6 (>= 2.28),\n base-files\n",
        ),
    );
    ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    repo.publish(&[&deb]);
    let packages = std::fs::read_to_string(
        repo.root
            .join("apt/dists/stable/main/binary-amd64/Packages"),
    )
    .unwrap();
    assert!(
        packages.starts_with(
            "Package: hello-korg\nVersion: 1.0-1\nArchitecture: amd64\n\
             Maintainer: Test <test@example.invalid>\nDepends: libc6 (>= 2.28), base-files\n\
             Description: a test package\n hello.\nFilename: pool/main/h/hello-korg/hello-korg_1.0-1_amd64.deb\n"
        ),
        "{packages}"
    );
    assert_eq!(packages.matches("\n\n").count(), 1, "{packages}");
}

#[test]
fn metadata_never_leads_a_pool_path_out_of_the_repository() {
    let repo = TestRepo::new(false, &[]);
    let tmp = repo.tmp.path();
    // Seven `..` after the pool directories lead to the directory holding the repository.
    let climb = "1/../../../../../../../victim";
    let cases = [
        (
            package(
                tmp,
                "version.deb",
                &control("hello-korg", climb, "amd64", ""),
            ),
            "field Version",
        ),
        (
            package(tmp, "name.deb", &control("../../etc", "1.0-1", "amd64", "")),
            "field Package",
        ),
        (
            package(
                tmp,
                "arch.deb",
                &control("hello-korg", "1.0-1", "../../x", ""),
            ),
            "field Architecture",
        ),
        (
            package(
                tmp,
                "version.ipk",
                &control("hello-korg", climb, "x86_64", ""),
            ),
            "field Version",
        ),
    ];
    for (file, field) in &cases {
        inspect_refused(file, &[field]);
        refused(&repo, file, 4, &[field]);
    }

    // An rpm whose Name is patched to the same length.
    let (_, rpm, _) = built();
    let mut bytes = std::fs::read(rpm).unwrap();
    let main = main_header(&bytes);
    let at =
        main + find(&bytes[main..], b"korg-clang-18\0").expect("the Name string in the header");
    bytes[at..at + 13].copy_from_slice(b"../../../../x");
    let evil = write(tmp, "name.rpm", &bytes);
    inspect_refused(&evil, &["field Name"]);
    refused(&repo, &evil, 4, &["field Name"]);

    for written in ["victim", "etc_", "x-18.1.8", "x86_64.deb"] {
        assert!(
            files_containing(tmp, written).is_empty(),
            "a file was written outside the pool: {written}"
        );
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Offset of the main header of an rpm (after the lead and the padded signature header).
fn main_header(b: &[u8]) -> usize {
    let sig = 96;
    let end = sig + 16 + 16 * be32(b, sig + 8) as usize + be32(b, sig + 12) as usize;
    end.div_ceil(8) * 8
}

/// `rpm -Kv` of `file`: (success, output).
fn rpm_k(file: &Path) -> (bool, String) {
    let o = run(Command::new("rpm").arg("-Kv").arg(file));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn packages_that_do_not_verify_are_never_signed_or_published() {
    need_tool("rpm");
    need_tool("dpkg-deb");
    let repo = TestRepo::new(false, &[]);
    repo.serve_both_opkg_flavours();
    let tmp = repo.tmp.path();
    let (_, rpm, _) = built();
    let (good, text) = rpm_k(rpm);
    assert!(good, "the fixture rpm must verify: {text}");

    // The header changed after it was digested (Name korg- -> Korg-, still a valid name).
    let mut bytes = std::fs::read(rpm).unwrap();
    let main = main_header(&bytes);
    let at = main + find(&bytes[main..], b"korg-clang-18\0").unwrap();
    bytes[at] = b'K';
    let header = write(tmp, "header.rpm", &bytes);
    let (good, text) = rpm_k(&header);
    assert!(
        !good && text.contains("Header SHA256 digest: BAD"),
        "{text}"
    );
    refused(&repo, &header, 5, &["Header SHA256 digest: BAD"]);

    // The payload changed (one byte in the middle of the compressed payload).
    let mut bytes = std::fs::read(rpm).unwrap();
    let end_of_headers = {
        let m = main_header(&bytes);
        m + 16 + 16 * be32(&bytes, m + 8) as usize + be32(&bytes, m + 12) as usize
    };
    let mid = end_of_headers + (bytes.len() - end_of_headers) / 2;
    bytes[mid] ^= 0x55;
    let payload = write(tmp, "payload.rpm", &bytes);
    let (good, text) = rpm_k(&payload);
    assert!(
        !good && text.contains("Payload SHA256 digest: BAD"),
        "{text}"
    );
    refused(&repo, &payload, 5, &["Payload SHA256 digest: BAD"]);

    // A .deb whose data member fails its gzip check (CRC in the trailer).
    let mut data = data_tar_gz();
    let crc = data.len() - 8;
    data[crc] ^= 0xff;
    let deb = write(
        tmp,
        "crc.deb",
        &ar(&[
            ("debian-binary", b"2.0\n"),
            (
                "control.tar.gz",
                &control_tar_gz(&control("hello-korg", "1.0-1", "amd64", "")),
            ),
            ("data.tar.gz", &data),
        ]),
    );
    let o = run(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&deb));
    assert!(!o.status.success(), "dpkg-deb accepted the bad gzip member");
    refused(&repo, &deb, 4, &["member data.tar.gz", "corrupt"]);

    // A truncated gzip member in an ipk.
    let mut data = data_tar_gz();
    data.truncate(data.len() - 4);
    let ipk = write(
        tmp,
        "short.ipk",
        &ar(&[
            ("debian-binary", b"2.0\n"),
            (
                "control.tar.gz",
                &control_tar_gz(&control("hello-korg", "1.0-1", "x86_64", "")),
            ),
            ("data.tar.gz", &data),
        ]),
    );
    refused(&repo, &ipk, 4, &["member data.tar.gz"]);

    // The same in an OpenWrt ipk (gzip'd tar outer): first whole, then with the CRC of
    // its data member broken.
    let outer = |data: &[u8]| {
        let mut t = raw_entry("./debian-binary", b'0', "", 0o644, b"2.0\n");
        t.extend(raw_entry("./data.tar.gz", b'0', "", 0o644, data));
        t.extend(raw_entry(
            "./control.tar.gz",
            b'0',
            "",
            0o644,
            &control_tar_gz(&control("hello-korg", "1.0-1", "x86_64", "")),
        ));
        t.extend(tar_end());
        gz(&t)
    };
    let whole = write(tmp, "whole.ipk", &outer(&data_tar_gz()));
    ok(korgpkg().arg("inspect").arg(&whole));
    let mut data = data_tar_gz();
    let crc = data.len() - 8;
    data[crc] ^= 0xff;
    let openwrt = write(tmp, "openwrt.ipk", &outer(&data));
    refused(&repo, &openwrt, 4, &["member data.tar.gz", "corrupt"]);
    repo.publish(&[&whole]);

    assert!(
        files_containing(&repo.root, ".rpm").is_empty(),
        "an rpm reached the pool"
    );
}

#[test]
fn control_files_cannot_inject_index_fields_or_stanzas() {
    let repo = TestRepo::new(false, &[]);
    let tmp = repo.tmp.path();
    let zeros = "0".repeat(64);
    let cases = [
        (
            control(
                "hello-korg",
                "1.0-1",
                "amd64",
                "Filename: ../../../evil.deb\n",
            ),
            "control field Filename",
        ),
        (
            control(
                "hello-korg",
                "1.0-1",
                "amd64",
                &format!("SHA256: {zeros}\n"),
            ),
            "control field SHA256",
        ),
        (
            control("hello-korg", "1.0-1", "amd64", "size: 1\n"),
            "control field size",
        ),
        (
            format!(
                "{}\nPackage: injected\nVersion: 6.6.6\nArchitecture: amd64\n",
                control("hello-korg", "1.0-1", "amd64", "")
            ),
            "second paragraph",
        ),
        (
            control(
                "hello-korg",
                "1.0-1",
                "amd64",
                "Description-Extra: x\n \nPackage: injected\n",
            ),
            "second paragraph",
        ),
        (
            control("hello-korg", "1.0-1", "amd64", "Homepage: x\0y\n"),
            "control character",
        ),
        (
            control("hello-korg", "1.0-1", "amd64", "Maintainer: twice\n"),
            "appears twice",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let deb = package(tmp, &format!("inject{i}.deb"), text);
        refused(&repo, &deb, 4, &[needle]);
    }
}

#[test]
fn errors_never_echo_raw_terminal_controls() {
    let repo = TestRepo::new(false, &[]);
    let tmp = repo.tmp.path();
    let evil = write(
        tmp,
        "evil\x1b]0;pwned\x07\x1b[2J.deb",
        b"not a package at all",
    );
    let err = refused(&repo, &evil, 4, &["\\x1b]0;pwned\\x07\\x1b[2J"]);
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    let deb = package(
        tmp,
        "esc.deb",
        &control("hello-korg\x1b[31m", "1.0-1", "amd64", ""),
    );
    let err = refused(&repo, &deb, 4, &["control character"]);
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[test]
fn lying_rpm_headers_are_refused_without_a_panic_or_a_huge_allocation() {
    let repo = TestRepo::new(false, &[]);
    let tmp = repo.tmp.path();
    let (_, rpm, _) = built();
    let good = std::fs::read(rpm).unwrap();
    let sig = 96;
    let main = main_header(&good);
    let il = be32(&good, main + 8) as usize;
    let dl = be32(&good, main + 12);
    // Index entries: tag, type, offset, count.
    let entry = move |i: usize| main + 16 + 16 * i;
    let of_type = |ty: u32| {
        (1..il)
            .find(|&i| be32(&good, entry(i) + 4) == ty)
            .expect("an entry of that type")
    };
    let string_array = of_type(8);
    let int32 = of_type(4);
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch, &str)> = vec![
        (
            "sig-count",
            Box::new(move |b| put32(b, sig + 8, 0xffff_fff0)),
            "index count",
        ),
        (
            "count",
            Box::new(move |b| put32(b, main + 8, 0x7fff_ffff)),
            "index count",
        ),
        (
            "data",
            Box::new(move |b| put32(b, main + 12, 0xffff_fff0)),
            "data length",
        ),
        (
            "data-past-file",
            Box::new(move |b| put32(b, main + 12, 0x0800_0000)),
            "past the end of the file",
        ),
        (
            "offset",
            Box::new(move |b| put32(b, entry(string_array) + 8, dl + 4096)),
            "outside the data",
        ),
        (
            "negative-offset",
            Box::new(move |b| put32(b, entry(1) + 8, 0x8000_0000)),
            "outside the data",
        ),
        (
            "strings-overflow",
            Box::new(move |b| put32(b, entry(string_array) + 12, 0xffff_ffff)),
            "cannot fit",
        ),
        (
            "ints-overflow",
            Box::new(move |b| put32(b, entry(int32) + 12, 0x4000_0001)),
            "overrun the data",
        ),
    ];
    for (name, patch, needle) in cases {
        let mut bytes = good.clone();
        patch(&mut bytes);
        let file = write(tmp, &format!("{name}.rpm"), &bytes);
        inspect_refused(&file, &[needle]);
        refused(&repo, &file, 4, &[needle]);
    }
}
