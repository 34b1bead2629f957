//! Hostile and broken tarballs: each is rejected with one line naming the entry, exit
//! code 4, and nothing left in the output directory.

mod common;
use common::*;

const TOP: &str = "llvm-18.1.8-x86_64";

fn tarball_with(dir: &std::path::Path, entries: &[Vec<u8>]) -> std::path::PathBuf {
    let mut tar = raw_entry(&format!("{TOP}/"), b'5', "", 0o755, b"");
    tar.extend(raw_entry(
        &format!("{TOP}/bin/ok"),
        b'0',
        "",
        0o755,
        b"fine",
    ));
    for e in entries {
        tar.extend_from_slice(e);
    }
    tar.extend(tar_end());
    write(dir, "llvm-18.1.8-x86_64.tar.xz", &xz(&tar))
}

fn rejected(entries: &[Vec<u8>], needle: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = tarball_with(tmp.path(), entries);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).expect("out");
    std::fs::write(out.join("keep.txt"), b"pre-existing").expect("keep");
    let o = build("korg-clang-18", &tarball, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(4),
        "expected rejection ({needle}): {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        err.contains("llvm-18.1.8-x86_64.tar.xz"),
        "error must name the file: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(
        dir_listing(&out),
        ["keep.txt"],
        "nothing may be left in --out"
    );
}

#[test]
fn absolute_path() {
    rejected(
        &[raw_entry("/etc/passwd", b'0', "", 0o644, b"x")],
        "\"/etc/passwd\": absolute path",
    );
}

#[test]
fn dot_dot_component() {
    rejected(
        &[raw_entry(&format!("{TOP}/../evil"), b'0', "", 0o644, b"x")],
        "contains `..`",
    );
}

#[test]
fn entry_outside_top_directory() {
    rejected(
        &[raw_entry("other-dir/file", b'0', "", 0o644, b"x")],
        "outside the top directory",
    );
}

#[test]
fn symlink_escaping_the_prefix() {
    rejected(
        &[raw_entry(
            &format!("{TOP}/bin/esc"),
            b'2',
            "../../etc/shadow",
            0o777,
            b"",
        )],
        "leaves the package prefix",
    );
}

#[test]
fn absolute_symlink() {
    rejected(
        &[raw_entry(
            &format!("{TOP}/bin/abs"),
            b'2',
            "/usr/bin/cc",
            0o777,
            b"",
        )],
        "absolute path \"/usr/bin/cc\"",
    );
}

#[test]
fn hard_link_outside() {
    rejected(
        &[raw_entry(
            &format!("{TOP}/bin/hl"),
            b'1',
            "/etc/shadow",
            0o644,
            b"",
        )],
        "absolute path",
    );
    rejected(
        &[raw_entry(
            &format!("{TOP}/bin/hl"),
            b'1',
            &format!("{TOP}/bin/missing"),
            0o644,
            b"",
        )],
        "not an earlier regular file",
    );
}

#[test]
fn device_nodes_and_fifos() {
    rejected(
        &[raw_entry(&format!("{TOP}/dev-null"), b'3', "", 0o644, b"")],
        "device node",
    );
    rejected(
        &[raw_entry(&format!("{TOP}/disk"), b'4', "", 0o644, b"")],
        "device node",
    );
    rejected(
        &[raw_entry(&format!("{TOP}/pipe"), b'6', "", 0o644, b"")],
        "FIFO",
    );
}

#[test]
fn setuid_and_setgid() {
    rejected(
        &[raw_entry(&format!("{TOP}/bin/su"), b'0', "", 0o4755, b"x")],
        "setuid/setgid",
    );
    rejected(
        &[raw_entry(&format!("{TOP}/bin/sg"), b'0', "", 0o2755, b"x")],
        "setuid/setgid",
    );
}

#[test]
fn entry_below_a_symlink() {
    rejected(
        &[
            raw_entry(&format!("{TOP}/lib64"), b'2', "lib", 0o777, b""),
            raw_entry(&format!("{TOP}/lib64/x.so"), b'0', "", 0o644, b"x"),
        ],
        "not a directory",
    );
}

#[test]
fn duplicate_entry() {
    rejected(
        &[raw_entry(
            &format!("{TOP}/bin/ok"),
            b'0',
            "",
            0o755,
            b"again",
        )],
        "appears twice",
    );
}

#[test]
fn truncated_and_corrupt_tarballs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = std::fs::read(llvm_tarball(tmp.path())).expect("read");
    let out = tmp.path().join("out");
    for (name, bytes, needle) in [
        (
            "truncated xz",
            good[..good.len() / 2].to_vec(),
            "corrupt or truncated",
        ),
        (
            "garbage",
            b"this is not a tarball at all, just text".to_vec(),
            "not a tar archive",
        ),
        (
            "corrupt middle",
            {
                let mut b = good.clone();
                let mid = b.len() / 2;
                b[mid] ^= 0xff;
                b
            },
            "corrupt or truncated",
        ),
    ] {
        let t = write(tmp.path(), "llvm-18.1.8-x86_64.tar.xz", &bytes);
        let o = build("korg-clang-18", &t, &out, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            dir_listing(&out).is_empty(),
            "{name}: nothing may be left in --out"
        );
    }
    // A tar (inside valid gzip) whose last file is cut short.
    let mut tar = raw_entry(&format!("{TOP}/bin/big"), b'0', "", 0o755, &vec![7u8; 5000]);
    tar.truncate(2048);
    let t = write(tmp.path(), "llvm-18.1.8-x86_64.tar.gz", &gz(&tar));
    let o = build("korg-clang-18", &t, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(dir_listing(&out).is_empty());
}

/// A multi-block .tar.xz (as `xz -T0` writes) is decoded by several threads; damage in
/// one block, in the index, or a cut-off file must still be a one-line error naming
/// the file, with nothing left behind.
#[test]
fn damaged_multi_block_xz_tarballs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut items = llvm_items(TOP);
    // Enough data for several 64 KiB blocks.
    let filler: Vec<u8> = (0..600_000u32).map(|i| (i * 31 % 251) as u8).collect();
    items.push((
        format!("{TOP}/lib/libfiller.so"),
        Item::File(String::new(), 0o644, filler),
    ));
    let stream = xz2::stream::MtStreamBuilder::new()
        .threads(2)
        .block_size(64 * 1024)
        .preset(1)
        .encoder()
        .expect("xz encoder");
    let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
    std::io::Write::write_all(&mut enc, &tar_bytes(&items)).expect("xz");
    let good = enc.finish().expect("xz");
    let out = tmp.path().join("out");
    let t = write(tmp.path(), "llvm-18.1.8-x86_64.tar.xz", &good);
    let o = build("korg-clang-18", &t, &out, &["--format", "deb"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&out).expect("clean");
    let n = good.len();
    for (name, bytes) in [
        ("flipped byte in an early block", {
            let mut b = good.clone();
            b[200] ^= 0x55;
            b
        }),
        ("flipped byte in the index", {
            let mut b = good.clone();
            b[n - 20] ^= 0x01;
            b
        }),
        ("cut off before the index", good[..n * 3 / 4].to_vec()),
    ] {
        let t = write(tmp.path(), "llvm-18.1.8-x86_64.tar.xz", &bytes);
        let o = build("korg-clang-18", &t, &out, &["--format", "deb"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err}");
        assert!(
            err.contains("llvm-18.1.8-x86_64.tar.xz") && err.contains("corrupt or truncated"),
            "{name}: {err}"
        );
        assert!(
            dir_listing(&out).is_empty(),
            "{name}: nothing may be left in --out"
        );
    }
}
