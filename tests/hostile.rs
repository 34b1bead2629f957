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

/// Both build paths must refuse: staged (`KORGPKG_STAGED=1`) and one pass.
fn rejected(entries: &[Vec<u8>], needle: &str) {
    rejected_by(entries, needle, false);
    rejected_by(entries, needle, true);
}

fn rejected_by(entries: &[Vec<u8>], needle: &str, one_pass: bool) {
    let tmp = tempfile::tempdir().expect("tmp");
    let tarball = tarball_with(tmp.path(), entries);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).expect("out");
    std::fs::write(out.join("keep.txt"), b"pre-existing").expect("keep");
    let mut c = korgpkg();
    c.args(["build", "korg-clang-18", "--allow-unverified", "--from"])
        .arg(&tarball)
        .arg("--out")
        .arg(&out);
    if one_pass {
        c.env("SOURCE_DATE_EPOCH", MTIME.to_string());
    } else {
        c.env("KORGPKG_STAGED", "1");
    }
    let o = run(&mut c);
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

/// An entry whose name comes from a GNU long name record (`L`) or whose link target
/// comes from a long link record (`K`).
fn long_entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let record = |k: u8, text: &str| {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        raw_entry("././@LongLink", k, "", 0o644, &bytes)
    };
    let mut out = record(b'L', name);
    if !link.is_empty() {
        out.extend(record(b'K', link));
    }
    out.extend(raw_entry("placeholder", kind, "placeholder", 0o755, data));
    out
}

#[test]
fn paths_no_file_system_takes_are_refused_before_they_are_walked() {
    // A directory two million levels deep (4 MB of name, under the 4 MiB record
    // limit): walking its ancestors once per level took quadratic time.
    let deep = format!("{TOP}/{}", "n/".repeat(2_000_000));
    rejected(
        &[long_entry(&deep, b'5', "", b"")],
        "bytes (the limit is 4095)",
    );
    let long_name = format!("{TOP}/bin/{}", "x".repeat(256));
    rejected(
        &[long_entry(&long_name, b'0', "", b"x")],
        "a name of 256 bytes (the limit is 255)",
    );
    let far = "a/".repeat(3000);
    rejected(
        &[long_entry(&format!("{TOP}/bin/far"), b'2', &far, b"")],
        "link target of 6000 bytes (the limit is 4095)",
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

#[test]
fn symlink_chains_that_leave_the_prefix() {
    let dirs = || {
        ["a", "a/b", "a/b/c", "a/b/c/d"]
            .map(|d| raw_entry(&format!("{TOP}/{d}/"), b'5', "", 0o755, b""))
            .to_vec()
    };
    let up = raw_entry(
        &format!("{TOP}/a/b/c/d/up"),
        b'2',
        "../../../..",
        0o777,
        b"",
    );
    let esc = raw_entry(
        &format!("{TOP}/a/b/c/d/esc"),
        b'2',
        "up/../../../../etc/passwd",
        0o777,
        b"",
    );
    // Each target stays inside on its own; through `up` (the top directory) `esc`
    // climbs four levels above it. The order in the archive does not matter.
    for links in [[up.clone(), esc.clone()], [esc.clone(), up.clone()]] {
        let mut entries = dirs();
        entries.extend(links);
        rejected(
            &entries,
            "\"llvm-18.1.8-x86_64/a/b/c/d/esc\": symlink to \"up/../../../../etc/passwd\" leaves the package prefix",
        );
    }
    // A link whose target climbs out through another link's target.
    let mut entries = dirs();
    entries.push(raw_entry(&format!("{TOP}/a/top"), b'2', "..", 0o777, b""));
    entries.push(raw_entry(
        &format!("{TOP}/a/b/c/d/out"),
        b'2',
        "../../../top/../x",
        0o777,
        b"",
    ));
    entries.push(raw_entry(
        &format!("{TOP}/bin/via"),
        b'2',
        "../a/b/c/d/out",
        0o777,
        b"",
    ));
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o = build(
        "korg-clang-18",
        &tarball_with(tmp.path(), &entries),
        &out,
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("leaves the package prefix"), "{err}");
    // Loops are refused like ELOOP.
    rejected(
        &[
            raw_entry(&format!("{TOP}/bin/l1"), b'2', "l2", 0o777, b""),
            raw_entry(&format!("{TOP}/bin/l2"), b'2', "l1", 0o777, b""),
        ],
        "passes through more than 40 symlinks",
    );
}

#[test]
fn symlink_chains_that_stay_inside_are_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let entries = [
        raw_entry(&format!("{TOP}/lib/"), b'5', "", 0o755, b""),
        raw_entry(&format!("{TOP}/lib/libx.so.1"), b'0', "", 0o644, b"elf"),
        raw_entry(&format!("{TOP}/lib/libx.so"), b'2', "libx.so.1", 0o777, b""),
        raw_entry(&format!("{TOP}/bin/up"), b'2', "..", 0o777, b""),
        raw_entry(
            &format!("{TOP}/bin/lib"),
            b'2',
            "up/lib/libx.so",
            0o777,
            b"",
        ),
    ];
    let out = tmp.path().join("out");
    let report = build_json(
        "korg-clang-18",
        &tarball_with(tmp.path(), &entries),
        &out,
        &["--format", "deb"],
    );
    assert_eq!(report["payload"]["symlinks"], 3, "{report}");
}

#[test]
fn every_sparse_form_is_refused() {
    // (GNU 'S' entries are refused as `sparse file` by the entry type.)
    let pax = |records: &[(&str, &str)]| {
        raw_entry(
            &format!("{TOP}/PaxHeaders/s"),
            b'x',
            "",
            0o644,
            &pax_records(records),
        )
    };
    // PAX 1.0: the real name in a record, the entry named GNUSparseFile.<pid>/<name>.
    rejected(
        &[
            pax(&[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", &format!("{TOP}/bin/sparse")),
                ("GNU.sparse.realsize", "1048576"),
            ]),
            raw_entry(
                &format!("{TOP}/bin/GNUSparseFile.19890/sparse"),
                b'0',
                "",
                0o644,
                b"1\n0\n5\nhello",
            ),
        ],
        "sparse file",
    );
    // PAX 0.1 and 0.0: records only.
    rejected(
        &[
            pax(&[
                ("GNU.sparse.size", "1048576"),
                ("GNU.sparse.numblocks", "1"),
                ("GNU.sparse.map", "0,5"),
            ]),
            raw_entry(&format!("{TOP}/bin/sparse"), b'0', "", 0o644, b"hello"),
        ],
        "sparse file (PAX GNU.sparse records)",
    );
    rejected(
        &[
            pax(&[
                ("GNU.sparse.size", "1048576"),
                ("GNU.sparse.numblocks", "1"),
                ("GNU.sparse.offset", "0"),
                ("GNU.sparse.numbytes", "5"),
            ]),
            raw_entry(&format!("{TOP}/bin/sparse"), b'0', "", 0o644, b"hello"),
        ],
        "sparse file (PAX GNU.sparse records)",
    );
    // A name in that form without records.
    rejected(
        &[raw_entry(
            &format!("{TOP}/bin/GNUSparseFile.1/x"),
            b'0',
            "",
            0o644,
            b"x",
        )],
        "sparse file",
    );
}

/// The address-space limit the memory tests run korgpkg under.
const MEMORY_LIMIT: u64 = 1 << 30;

#[test]
fn gigabyte_long_names_and_pax_headers_are_refused_in_bounded_memory() {
    for (kind, what) in [(b'L', "GNU long name"), (b'x', "PAX extended header")] {
        let tmp = tempfile::tempdir().expect("tmp");
        // 1.25 GiB of header content that decompresses from a few hundred KB: without
        // a bound the tar reader would try to hold all of it.
        let bomb = metadata_bomb(
            kind,
            5 << 28,
            &raw_entry(&format!("{TOP}/x"), b'0', "", 0o644, b"x"),
        );
        let tarball = write(tmp.path(), "llvm-18.1.8-x86_64.tar.xz", &bomb);
        let out = tmp.path().join("out");
        let mut c = korgpkg();
        c.args(["build", "korg-clang-18", "--allow-unverified", "--from"])
            .arg(&tarball)
            .arg("--out")
            .arg(&out);
        let o = run(limit_memory(&mut c, MEMORY_LIMIT));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{what}: {err}");
        assert!(
            err.contains(&format!(
                "{what} of 1342177280 bytes is over the 4 MiB limit"
            )),
            "{what}: {err}"
        );
        assert!(err.contains("llvm-18.1.8-x86_64.tar.xz"), "{err}");
        assert!(dir_listing(&out).is_empty(), "{:?}", dir_listing(&out));
    }
}

/// A gzip'd control tar with a minimal control file.
fn control_tar_gz() -> Vec<u8> {
    let text =
        b"Package: x\nVersion: 1\nArchitecture: amd64\nMaintainer: A <a@b.c>\nDescription: x\n";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "./control", &text[..])
        .expect("control");
    gz(&b.into_inner().expect("tar"))
}

/// `korgpkg inspect file` under the memory limit: exit 4 with `needle`.
fn inspect_refused(file: &std::path::Path, needle: &str) {
    let mut c = korgpkg();
    c.arg("inspect").arg(file);
    let o = run(limit_memory(&mut c, MEMORY_LIMIT));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(needle), "want {needle:?} in {err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn inspect_bounds_long_names_and_control_members() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A .deb whose data.tar.zst starts with a 1.25 GiB GNU long name.
    let control = control_tar_gz();
    let data = metadata_bomb(b'L', 5 << 28, &[]);
    let mut ar = ar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar.gz", &control[..]),
        ("data.tar.zst", &data[..]),
    ] {
        let header = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
        ar.append(&header, bytes).expect("ar");
    }
    let deb = write(
        tmp.path(),
        "bomb_1_amd64.deb",
        &ar.into_inner().expect("ar"),
    );
    inspect_refused(
        &deb,
        "GNU long name of 1342177280 bytes is over the 4 MiB limit",
    );

    // An ipk (gzip'd tar outer) whose control member is 1.25 GiB.
    let mut gzip = std::process::Command::new("gzip")
        .arg("-1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = gzip.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut member = |name: &str, size: u64, byte: u8| {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).expect("name");
            h.set_size(size);
            h.set_mode(0o644);
            h.set_cksum();
            stdin.write_all(h.as_bytes()).expect("gzip");
            let chunk = vec![byte; 1 << 20];
            let mut left = size.div_ceil(512) * 512;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                stdin.write_all(&chunk[..n]).expect("gzip");
                left -= n as u64;
            }
        };
        member("./debian-binary", 4, b'\n');
        member("./control.tar.gz", 5 << 28, 0);
        stdin.write_all(&tar_end()).expect("gzip");
    });
    let out = gzip.wait_with_output().expect("gzip");
    writer.join().expect("writer");
    let ipk = write(tmp.path(), "bomb_1_all.ipk", &out.stdout);
    inspect_refused(
        &ipk,
        "member \"control.tar.gz\" of 1342177280 bytes is over the 4 MiB limit",
    );
}
