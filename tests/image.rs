//! `korgpkg image`: OCI images from korgpkg packages, checked with the real tools
//! (skopeo, umoci, chroot + dpkg inside the image, Debian's docker-registry, podman where
//! it runs). The base is a minimal bookworm made once with mmdebstrap and cached under
//! `CARGO_TARGET_TMPDIR/image-base`; the toolchain is a real C program compiled by the
//! test and laid out as a kernel.org LLVM release.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{build_json, dir_listing, korgpkg, need_tool, ok, output_path, run, tar_bytes, Item};

/// The mmdebstrap command line of the cached base (part of the cache key).
const BASE_RECIPE: &str = "mmdebstrap --variant=minbase --include=make bookworm";
const TAG: &str = "18.1.8-1";

static BASE_LOCK: Mutex<()> = Mutex::new(());

/// The cached minimal bookworm root filesystem tarball.
fn cached_base() -> PathBuf {
    let _guard = BASE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-base");
    let base = cache.join("base.tar");
    let stamp = cache.join("done");
    let key = format!("{BASE_RECIPE} {}\n", common::MTIME);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) && base.is_file() {
        return base;
    }
    need_tool("mmdebstrap");
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).expect("cache dir");
    let partial = cache.join("base.tar.part.tar");
    let mut words = BASE_RECIPE.split_whitespace();
    let mut cmd = Command::new(words.next().expect("tool"));
    cmd.args(words)
        .arg(&partial)
        .env("SOURCE_DATE_EPOCH", common::MTIME.to_string())
        .stdout(Stdio::null());
    ok(&mut cmd);
    std::fs::rename(&partial, &base).expect("rename base");
    std::fs::write(&stamp, key).expect("stamp");
    eprintln!(
        "image test: built the bookworm base in {:?}",
        started.elapsed()
    );
    base
}

/// korg-clang-18 whose `clang-18` is a real C program (prints `korg-hello` and its
/// argument count), built by korgpkg from a kernel.org-shaped tarball.
fn toolchain_deb(dir: &Path) -> PathBuf {
    need_tool("gcc");
    let src = dir.join("hello.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(int argc, char **argv) { (void)argv; printf(\"korg-hello %d\\n\", argc); return 0; }\n",
    )
    .expect("write hello.c");
    let elf = dir.join("hello");
    ok(Command::new("gcc").arg("-O2").arg("-o").arg(&elf).arg(&src));
    let top = "llvm-18.1.8-x86_64";
    let items = vec![
        (top.to_string(), Item::Dir("", 0o755)),
        (format!("{top}/bin"), Item::Dir("", 0o755)),
        (
            format!("{top}/bin/clang-18"),
            Item::File(String::new(), 0o755, std::fs::read(&elf).expect("elf")),
        ),
        (format!("{top}/bin/clang"), Item::Symlink("", "clang-18")),
        (
            format!("{top}/lib/clang/18/include/stddef.h"),
            Item::File(String::new(), 0o644, b"/* stddef */\n".to_vec()),
        ),
    ];
    let tarball = common::write(
        dir,
        &format!("{top}.tar.xz"),
        &common::xz(&tar_bytes(&items)),
    );
    let report = build_json(
        "korg-clang-18",
        &tarball,
        &dir.join("dist"),
        &["--format", "deb"],
    );
    output_path(&report, "deb")
}

/// `korgpkg image build` with SOURCE_DATE_EPOCH set.
fn image_build(args: &[&str]) -> Command {
    let mut c = korgpkg();
    c.args(["image", "build"])
        .args(args)
        .env("SOURCE_DATE_EPOCH", common::MTIME.to_string());
    c
}

fn build_image(deb: &Path, base: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut c = image_build(extra);
    c.arg(deb)
        .arg("--base-rootfs")
        .arg(base)
        .arg("--out")
        .arg(out)
        .arg("--json");
    serde_json::from_str(&ok(&mut c)).expect("image build --json")
}

fn unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    need_tool("umoci");
    ok(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .stdout(Stdio::null()));
    bundle.join("rootfs")
}

fn chroot(rootfs: &Path, path_env: &str, script: &str) -> String {
    ok(Command::new("/usr/sbin/chroot")
        .arg(rootfs)
        .args(["/bin/sh", "-c", script])
        .env_clear()
        .env("PATH", path_env))
}

#[test]
fn image_runs_the_toolchain_and_dpkg_knows_it() {
    need_tool("skopeo");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let out = tmp.path().join("img");
    let report = build_image(&deb, &base, &out, &["--user", "1000:1000"]);
    assert_eq!(report["tags"][0], TAG);

    let inspect = ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{TAG}", out.display())));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo json");
    assert_eq!(inspect["Digest"], report["manifest"]);
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(3));
    let labels = &inspect["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "korg-clang-18");
    assert_eq!(labels["org.opencontainers.image.version"], TAG);
    assert_eq!(labels["org.opencontainers.image.base.name"], "base.tar");
    assert_eq!(
        labels["org.opencontainers.image.base.digest"],
        inspect["Layers"][0]
    );
    assert!(labels["org.kernel.korgpkg.korg-clang-18.upstream-sha256"].is_string());
    let env = inspect["Env"][0].as_str().expect("env");
    assert!(
        env.starts_with("PATH=/usr/lib/korg/llvm-18/bin:"),
        "toolchain bin first: {env}"
    );

    let raw = ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:{TAG}", out.display())));
    let config: serde_json::Value = serde_json::from_str(&raw).expect("config json");
    assert_eq!(config["config"]["User"], "1000:1000");
    assert_eq!(config["config"]["WorkingDir"], "/home/kbuild");
    assert!(config["config"].get("Entrypoint").is_none());
    assert!(config["config"].get("Cmd").is_none());

    let rootfs = unpack(&out, TAG, &tmp.path().join("bundle"));
    let path_env = env.trim_start_matches("PATH=");
    // The toolchain runs by name, through the image's PATH, against the base's libc.
    assert_eq!(
        chroot(&rootfs, path_env, "clang a b").trim(),
        "korg-hello 3"
    );
    let listed = chroot(&rootfs, path_env, "dpkg -l korg-clang-18");
    assert!(listed.contains("ii  korg-clang-18"), "{listed}");
    let owner = chroot(
        &rootfs,
        path_env,
        "dpkg -S /usr/lib/korg/llvm-18/bin/clang-18",
    );
    assert_eq!(
        owner.trim(),
        "korg-clang-18: /usr/lib/korg/llvm-18/bin/clang-18"
    );
    // md5sums recorded: dpkg --verify finds nothing changed; make from the base is there.
    chroot(
        &rootfs,
        path_env,
        "dpkg --verify korg-clang-18 && make --version",
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains("kbuild:x:1000:1000:"), "{passwd}");
    let home = std::fs::metadata(rootfs.join("home/kbuild")).expect("home");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
}

#[test]
fn image_is_reproducible_across_dirs_umask_and_tz() {
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let mut digests = Vec::new();
    for (dir, umask, tz, comp) in [
        ("a", "022", "UTC", "gzip"),
        ("b/deeper", "077", "Asia/Kolkata", "gzip"),
        ("c", "022", "UTC", "zstd"),
    ] {
        let out = tmp.path().join(dir).join("img");
        std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("umask {umask} && exec \"$@\""))
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_korgpkg"))
            .args(["image", "build", "--json", "--layer-compression", comp])
            .arg(&deb)
            .arg("--base-rootfs")
            .arg(&base)
            .arg("--out")
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", common::MTIME.to_string())
            .env("TZ", tz)
            .env_remove("KORGPKG_THREADS");
        let report: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
        digests.push((
            report["manifest"].as_str().expect("m").to_string(),
            report["platforms"][0]["layers"][0]["diff_id"]
                .as_str()
                .expect("d")
                .to_string(),
        ));
    }
    assert_eq!(digests[0], digests[1], "same inputs, same manifest digest");
    assert_ne!(digests[0].0, digests[2].0, "zstd layers are another image");
    assert_eq!(digests[0].1, digests[2].1, "but the same layer content");
}

#[test]
fn base_missing_a_dependency_is_refused_and_nothing_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    // A base whose dpkg database knows only base-files: no libc6.
    let status = b"Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n\n".to_vec();
    let items = vec![
        ("var/lib/dpkg".to_string(), Item::Dir("", 0o755)),
        (
            "var/lib/dpkg/status".to_string(),
            Item::File(String::new(), 0o644, status),
        ),
    ];
    let base = common::write(tmp.path(), "nolibc.tar", &tar_bytes(&items));
    let outdir = tmp.path().join("out");
    std::fs::create_dir_all(&outdir).expect("mkdir");
    let out = run(image_build(&[])
        .arg(&deb)
        .arg("--base-rootfs")
        .arg(&base)
        .arg("--out")
        .arg(outdir.join("img")));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("libc6 (>= "), "{err}");
    assert!(
        err.contains("mmdebstrap --variant=minbase --include=libc6"),
        "{err}"
    );
    assert!(
        dir_listing(&outdir).is_empty(),
        "nothing written: {:?}",
        dir_listing(&outdir)
    );
}

#[test]
fn docker_archive_is_accepted_by_skopeo_and_podman() {
    need_tool("skopeo");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let archive = tmp.path().join("korg.tar");
    let report = build_image(
        &deb,
        &base,
        &archive,
        &[
            "--format",
            "docker-archive",
            "--name",
            "korg-clang",
            "--tag",
            "18",
        ],
    );
    let oci = tmp.path().join("copied");
    ok(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:18", oci.display())));
    let inspect: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", archive.display()))))
    .expect("json");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.title"],
        "korg-clang"
    );
    let rootfs = unpack(&oci, "18", &tmp.path().join("bundle"));
    assert_eq!(
        chroot(
            &rootfs,
            "/usr/bin:/bin",
            "/usr/lib/korg/llvm-18/bin/clang x"
        )
        .trim(),
        "korg-hello 2"
    );
    assert!(report["manifest"].is_string());

    // podman: load the archive and run the compiler, where podman works in this sandbox.
    let storage = tmp.path().join("podman");
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    if !Path::new("/usr/bin/podman").exists() {
        eprintln!("image test: podman is not installed; skipping podman load/run");
        return;
    }
    let load = run(podman(&["load", "-i"]).arg(&archive));
    if !load.status.success() {
        eprintln!(
            "image test: podman load does not work in this sandbox, skipping: {}",
            String::from_utf8_lossy(&load.stderr).trim()
        );
        return;
    }
    let loaded = String::from_utf8_lossy(&load.stdout).into_owned();
    let name = loaded
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image: "))
        .next_back()
        .unwrap_or_else(|| panic!("podman load named no image: {loaded}"))
        .trim()
        .to_string();
    assert!(name.ends_with("korg-clang:18"), "{name}");
    let ran = run(&mut podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        &name,
        "clang",
        "x",
    ]));
    if ran.status.success() {
        assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "korg-hello 2");
    } else {
        eprintln!(
            "image test: podman run does not work in this sandbox, skipping: {}",
            String::from_utf8_lossy(&ran.stderr).trim()
        );
    }
}

/// Debian's docker-registry on a free loopback port; stopped when dropped.
struct Registry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Registry {
        need_tool("docker-registry");
        let dir = tempfile::tempdir().expect("tmp");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(entry) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, entry).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: korg\n    path: {}\n",
                file.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
        }
    }

    /// The file the registry stores a blob in (its filesystem driver's layout).
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// No registry credentials but those in `env`.
fn only_creds<'a>(c: &'a mut Command, env: &[(&str, &str)]) -> &'a mut Command {
    c.env_remove("REGISTRY_AUTH_FILE")
        .env_remove("KORGPKG_REGISTRY_USER")
        .env_remove("KORGPKG_REGISTRY_PASSWORD")
        .env("HOME", "/nonexistent-korgpkg-home")
        .env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn push(layout: &Path, dest: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = korgpkg();
    c.args(["image", "push", "--json"]).arg(layout).arg(dest);
    run(only_creds(&mut c, env))
}

/// The `--json` report of a command that must have succeeded.
fn json_report(out: std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} --json: {e}"))
}

fn pushed(out: std::process::Output) -> serde_json::Value {
    json_report(out, "image push")
}

#[test]
fn push_to_a_registry_and_copy_back() {
    need_tool("skopeo");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let out = tmp.path().join("img");
    let report = build_image(&deb, &base, &out, &[]);
    let manifest = report["manifest"].as_str().expect("manifest");

    let registry = Registry::start(None);
    let dest = format!("{}/korg/korg-clang:18", registry.host);
    let first = pushed(push(&out, &dest, &[]));
    assert_eq!(first["digest"], manifest);
    assert_eq!(
        first["uploaded"].as_array().map(Vec::len),
        Some(4),
        "{first}"
    );
    let again = pushed(push(&out, &dest, &[]));
    assert_eq!(
        again["uploaded"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );
    assert_eq!(again["existing"].as_array().map(Vec::len), Some(4));

    let served: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))))
    .expect("json");
    assert_eq!(
        served["Digest"], manifest,
        "the registry serves the same manifest"
    );
    let back = tmp.path().join("back");
    ok(Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:18", back.display())));
    let inspect: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:18", back.display()))))
    .expect("json");
    assert_eq!(inspect["Digest"], manifest, "copied back unchanged");

    // Chunked upload (PATCH ranges, then PUT ?digest=) to another repository: 4 MiB
    // chunks, so the base layer goes in dozens of them.
    let chunked = format!("{}/korg/chunked:18", registry.host);
    let mut c = korgpkg();
    c.args(["image", "push", "--json", "--chunk-size", "4194304"])
        .arg(&out)
        .arg(&chunked);
    let report: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
    assert_eq!(
        report["uploaded"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    let served: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{chunked}"))))
    .expect("json");
    assert_eq!(served["Digest"], manifest);
    let back2 = tmp.path().join("back2");
    ok(Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{chunked}"))
        .arg(format!("oci:{}:chunked", back2.display())));
    let inspect: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:chunked", back2.display()))))
    .expect("json");
    assert_eq!(
        inspect["Digest"], manifest,
        "chunked: copied back unchanged"
    );
    assert_eq!(
        inspect["Layers"], served["Layers"],
        "chunked: same layer digests"
    );

    // https is required for anything but loopback.
    let refused = push(&out, "registry.invalid/korg-clang:18", &[]);
    assert_eq!(refused.status.code(), Some(6));
}

#[test]
fn push_with_basic_auth() {
    need_tool("htpasswd");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let out = tmp.path().join("img");
    build_image(&deb, &base, &out, &[]);
    let entry = ok(Command::new("htpasswd").args(["-Bbn", "korg", "s3cret"]));
    let registry = Registry::start(Some(&entry));
    let dest = format!("{}/korg-clang:18", registry.host);

    let anonymous = push(&out, &dest, &[]);
    assert_eq!(anonymous.status.code(), Some(6), "{anonymous:?}");
    let err = String::from_utf8_lossy(&anonymous.stderr);
    assert!(err.contains("credentials"), "{err}");

    // Credentials from a containers-auth.json file.
    let auth = tmp.path().join("auth.json");
    let token = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("korg:s3cret")
    };
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{token}"}}}}}}"#,
            registry.host
        ),
    )
    .expect("auth.json");
    let report = pushed(push(
        &out,
        &dest,
        &[("REGISTRY_AUTH_FILE", auth.to_str().expect("utf8"))],
    ));
    assert_eq!(report["uploaded"].as_array().map(Vec::len), Some(4));
    // And from the environment; nothing left to upload.
    let report = pushed(push(
        &out,
        &dest,
        &[
            ("KORGPKG_REGISTRY_USER", "korg"),
            ("KORGPKG_REGISTRY_PASSWORD", "s3cret"),
        ],
    ));
    assert_eq!(report["uploaded"].as_array().map(Vec::len), Some(0));
    ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", "korg:s3cret"])
        .arg(format!("docker://{dest}")));

    // The pushed image as a base, pulled with the same credentials (and refused
    // without them).
    let cache = tmp.path().join("cache");
    let anonymous = build_on(
        &deb,
        &format!("docker://{dest}"),
        &tmp.path().join("a"),
        &cache,
        &[],
    );
    assert_eq!(anonymous.status.code(), Some(6), "{anonymous:?}");
    let pulled = built(build_on(
        &deb,
        &format!("docker://{dest}"),
        &tmp.path().join("b"),
        &cache,
        &[("REGISTRY_AUTH_FILE", auth.to_str().expect("utf8"))],
    ));
    assert_eq!(pulled["platforms"][0]["base_digest"], report["digest"]);
}

#[test]
fn image_on_an_oci_base_keeps_the_package_layer_digest() {
    need_tool("skopeo");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let first = tmp.path().join("first");
    let one = build_image(&deb, &base, &first, &["--tag", "base"]);
    let second = tmp.path().join("second");
    let mut c = image_build(&["--json", "--tag", "on-oci"]);
    c.arg(&deb)
        .arg("--base")
        .arg(format!("oci:{}:base", first.display()))
        .arg("--out")
        .arg(&second);
    let two: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
    assert_eq!(
        one["platforms"][0]["layers"][0]["digest"], two["platforms"][0]["layers"][0]["digest"],
        "a package's layer is the same on every base"
    );
    assert_eq!(two["platforms"][0]["base_digest"], one["manifest"]);
    let inspect: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:on-oci", second.display()))))
    .expect("json");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(5));
    let rootfs = unpack(&second, "on-oci", &tmp.path().join("bundle"));
    let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")).expect("status");
    assert_eq!(
        status.matches("Package: korg-clang-18\n").count(),
        1,
        "one stanza"
    );

    // A tampered base blob is refused (exit 4) and nothing is written.
    let manifest = one["manifest"]
        .as_str()
        .expect("m")
        .trim_start_matches("sha256:");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(first.join("blobs/sha256").join(manifest)).expect("manifest"),
    )
    .expect("json");
    let layer = m["layers"][1]["digest"]
        .as_str()
        .expect("d")
        .trim_start_matches("sha256:");
    std::fs::write(first.join("blobs/sha256").join(layer), b"tampered").expect("tamper");
    let third = tmp.path().join("third");
    let out = run(image_build(&[])
        .arg(&deb)
        .arg("--base")
        .arg(format!("oci:{}:base", first.display()))
        .arg("--out")
        .arg(&third));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(!third.exists());
}

#[test]
fn multi_arch_image_is_an_index_and_pushes() {
    need_tool("skopeo");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let amd64 = toolchain_deb(tmp.path());
    // arm64: a real aarch64 ELF (from libc6-arm64-cross) as the compiler, and a small
    // arm64 base whose dpkg database has the libc6 it needs.
    let top = "llvm-18.1.8-aarch64";
    let elf = std::fs::read("/usr/aarch64-linux-gnu/lib/libm.so.6")
        .expect("libc6-arm64-cross is installed (scripts/test installs it)");
    let items = vec![
        (top.to_string(), Item::Dir("", 0o755)),
        (format!("{top}/bin"), Item::Dir("", 0o755)),
        (
            format!("{top}/bin/clang-18"),
            Item::File(String::new(), 0o755, elf),
        ),
    ];
    let arm_dir = tmp.path().join("arm64");
    std::fs::create_dir_all(&arm_dir).expect("mkdir");
    let tarball = common::write(
        &arm_dir,
        &format!("{top}.tar.xz"),
        &common::xz(&tar_bytes(&items)),
    );
    let report = build_json(
        "korg-clang-18",
        &tarball,
        &arm_dir.join("dist"),
        &["--format", "deb"],
    );
    let arm64 = output_path(&report, "deb");
    let status = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nArchitecture: arm64\n\n".to_vec();
    let arm_base = common::write(
        &arm_dir,
        "arm64-base.tar",
        &tar_bytes(&[(
            "var/lib/dpkg/status".to_string(),
            Item::File(String::new(), 0o644, status),
        )]),
    );

    let out = tmp.path().join("multi");
    let mut c = image_build(&[
        "--json",
        "--platform",
        "linux/amd64,linux/arm64",
        "--tag",
        "18",
        "--name",
        "korg-clang",
    ]);
    c.arg(&amd64)
        .arg(&arm64)
        .arg("--base-rootfs")
        .arg(format!("amd64={}", base.display()))
        .arg("--base-rootfs")
        .arg(format!("arm64={}", arm_base.display()))
        .arg("--out")
        .arg(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
    assert_eq!(
        report["media_type"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(report["platforms"][1]["platform"], "linux/arm64/v8");
    let raw: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:18", out.display()))))
    .expect("json");
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2), "{raw}");
    let arm: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["--override-arch", "arm64", "inspect"])
        .arg(format!("oci:{}:18", out.display()))))
    .expect("json");
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(
        arm["Layers"][1],
        report["platforms"][1]["layers"][0]["digest"]
    );

    let registry = Registry::start(None);
    let dest = format!("{}/korg-clang:18", registry.host);
    let pushed = pushed(push(&out, &dest, &[]));
    assert_eq!(pushed["digest"], report["manifest"]);
    assert_eq!(pushed["manifests"].as_array().map(Vec::len), Some(3));
    let served: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))))
    .expect("json");
    assert_eq!(served, raw, "the registry serves the same index");

    // The index as a base: each platform pulls its own manifest from it.
    let mut c = image_build(&[
        "--json",
        "--platform",
        "linux/amd64,linux/arm64",
        "--tag",
        "on-index",
        "--cache-dir",
    ]);
    c.arg(tmp.path().join("cache"))
        .arg(&amd64)
        .arg(&arm64)
        .arg("--base")
        .arg(format!("amd64=docker://{dest}"))
        .arg("--base")
        .arg(format!("arm64=docker://{dest}"))
        .arg("--out")
        .arg(tmp.path().join("on-index"));
    let on_index: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
    for i in 0..2 {
        assert_eq!(
            on_index["platforms"][i]["base_digest"], report["platforms"][i]["manifest"],
            "platform {i}"
        );
        assert_eq!(
            on_index["platforms"][i]["layers"][0]["digest"],
            report["platforms"][i]["layers"][0]["digest"]
        );
    }
}

#[test]
fn containerfile_builds_with_buildah_from_a_served_repository() {
    need_tool("buildah");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let repo = common::repo::TestRepo::new(false, &[]);
    repo.publish(&[deb.as_path()]);

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    let storage = tmp.path().join("buildah");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    // The base image: the cached bookworm root filesystem imported as is.
    std::fs::hard_link(&base, ctx.join("base.tar"))
        .or_else(|_| std::fs::copy(&base, ctx.join("base.tar")).map(|_| ()))
        .expect("base in context");
    std::fs::write(
        ctx.join("Base.containerfile"),
        "FROM scratch\nADD base.tar /\n",
    )
    .expect("write");
    let imported = run(
        buildah(&["bud", "--isolation", "chroot", "-t", "korg-test-base", "-f"])
            .arg(ctx.join("Base.containerfile"))
            .arg(&ctx),
    );
    if !imported.status.success() {
        eprintln!(
            "image test: buildah cannot build in this sandbox, skipping: {}",
            String::from_utf8_lossy(&imported.stderr).trim()
        );
        return;
    }
    let file = ctx.join("Containerfile");
    ok(korgpkg()
        .args([
            "image",
            "containerfile",
            "korg-clang-18",
            "--from",
            "localhost/korg-test-base",
        ])
        .args(["--repo-url", &repo.url, "--user", "1000:1000", "--out"])
        .arg(&file));
    let text = std::fs::read_to_string(&file).expect("Containerfile");
    assert!(
        text.contains("signed-by=/usr/share/keyrings/korg-archive-keyring.gpg"),
        "{text}"
    );
    assert!(
        text.contains("ENV PATH=/usr/lib/korg/llvm-18/bin:"),
        "{text}"
    );
    ok(
        buildah(&["bud", "--isolation", "chroot", "-t", "korg-clang:18", "-f"])
            .arg(&file)
            .arg(&ctx),
    );
    let ctr = ok(&mut buildah(&["from", "korg-clang:18"]))
        .trim()
        .to_string();
    let out = ok(&mut buildah(&[
        "run",
        "--isolation",
        "chroot",
        &ctr,
        "--",
        "clang",
        "a",
    ]));
    assert_eq!(out.trim(), "korg-hello 2");
    let owner = ok(&mut buildah(&[
        "run",
        "--isolation",
        "chroot",
        &ctr,
        "--",
        "dpkg",
        "-S",
        "/usr/lib/korg/llvm-18/bin/clang-18",
    ]));
    assert!(owner.starts_with("korg-clang-18:"), "{owner}");
}

#[test]
fn image_set_builds_from_a_repository_and_pushes_every_tag() {
    need_tool("skopeo");
    let base = cached_base();
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let repo = common::repo::TestRepo::new(false, &[]);
    repo.publish(&[deb.as_path()]);
    let set = tmp.path().join("korg.toml");
    std::fs::write(
        &set,
        format!(
            "[[image]]\nname = \"korg/korg-clang\"\ntags = [\"18\", \"latest\"]\npackages = [\"korg-clang-18\"]\n[image.bases]\namd64 = \"{b}\"\n\n\
             [[image]]\nname = \"korg/korg-clang\"\ntags = [\"18-user\"]\npackages = [\"korg-clang-18=18.1.8-1\"]\nuser = \"1000:1000\"\n[image.bases]\namd64 = \"{b}\"\n",
            b = base.display()
        ),
    )
    .expect("set");
    let out = tmp.path().join("images");
    let mut c = image_build(&["--json", "--set"]);
    c.arg(&set)
        .arg("--repo")
        .arg(&repo.root)
        .arg("--out")
        .arg(&out);
    let reports: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
    assert_eq!(reports.as_array().map(Vec::len), Some(2));
    assert_eq!(
        dir_listing(&out),
        ["korg_korg-clang-18", "korg_korg-clang-18-user"]
    );
    assert_eq!(
        reports[0]["platforms"][0]["layers"][0]["digest"],
        reports[1]["platforms"][0]["layers"][0]["digest"],
        "the package layer is shared"
    );

    let registry = Registry::start(None);
    let mut c = korgpkg();
    c.args(["image", "push", "--json", "--set"])
        .arg(&set)
        .arg(&out)
        .arg(&registry.host);
    let pushed: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
    assert_eq!(pushed.as_array().map(Vec::len), Some(3));
    for (tag, report) in [("18", 0), ("latest", 0), ("18-user", 1)] {
        let served: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/korg/korg-clang:{tag}", registry.host))))
        .expect("json");
        assert_eq!(served["Digest"], reports[report]["manifest"], "{tag}");
    }
}

/// A .deb assembled by hand (binutils' ar) around a raw, possibly hostile, data.tar.
fn raw_deb(dir: &Path, name: &str, data_tar: &[u8]) -> PathBuf {
    need_tool("ar");
    let work = dir.join(format!("{name}.parts"));
    std::fs::create_dir_all(&work).expect("mkdir");
    let control = format!(
        "Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: t <t@example.invalid>\nDescription: hostile\n"
    );
    let control_tar = tar_bytes(&[(
        "control".to_string(),
        Item::File(String::new(), 0o644, control.into_bytes()),
    )]);
    common::write(&work, "debian-binary", b"2.0\n");
    common::write(&work, "control.tar.gz", &common::gz(&control_tar));
    common::write(&work, "data.tar.gz", &common::gz(data_tar));
    let deb = dir.join(format!("{name}_1.0-1_amd64.deb"));
    ok(Command::new("ar")
        .arg("qc")
        .arg(&deb)
        .arg(work.join("debian-binary"))
        .arg(work.join("control.tar.gz"))
        .arg(work.join("data.tar.gz")));
    deb
}

#[test]
fn hostile_package_entries_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let status = b"Package: base-files\nStatus: install ok installed\nVersion: 12.4\n\n".to_vec();
    let base = common::write(
        tmp.path(),
        "base.tar",
        &tar_bytes(&[(
            "var/lib/dpkg/status".to_string(),
            Item::File(String::new(), 0o644, status),
        )]),
    );
    let file = |n: &str| common::raw_entry(n, b'0', "", 0o644, b"x");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "escape",
            [file("./../../etc/evil"), common::tar_end()].concat(),
            "leaves the root",
        ),
        (
            "whiteout",
            [file("./usr/.wh.passwd"), common::tar_end()].concat(),
            "whiteout",
        ),
        (
            "hardlink",
            [
                file("./usr/a"),
                common::raw_entry("./usr/b", b'1', "./usr/missing", 0o644, b""),
                common::tar_end(),
            ]
            .concat(),
            "not an earlier file",
        ),
        (
            "device",
            [
                common::raw_entry("./dev/sda", b'3', "", 0o644, b""),
                common::tar_end(),
            ]
            .concat(),
            "unsupported type",
        ),
    ];
    for (name, data, want) in cases {
        let deb = raw_deb(tmp.path(), &format!("evil-{name}"), &data);
        let outdir = tmp.path().join(format!("out-{name}"));
        std::fs::create_dir_all(&outdir).expect("mkdir");
        let out = run(image_build(&[])
            .arg(&deb)
            .arg("--base-rootfs")
            .arg(&base)
            .arg("--out")
            .arg(outdir.join("img")));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(dir_listing(&outdir).is_empty(), "{name}: nothing written");
    }
}

/// An OCI layout `dir` (tag `base`) built from the cached bookworm base: a base with a
/// config and layers, as a registry or a docker-archive would hold it.
fn oci_base(deb: &Path, dir: &Path) -> serde_json::Value {
    build_image(deb, &cached_base(), dir, &["--tag", "base"])
}

/// `image build DEB --base BASE --base-name korg/base --out OUT --json` with a cache.
fn build_on(
    deb: &Path,
    base: &str,
    out: &Path,
    cache: &Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = image_build(&["--json", "--tag", "on", "--base-name", "korg/base"]);
    c.arg(deb)
        .arg("--base")
        .arg(base)
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache);
    run(only_creds(&mut c, env))
}

fn built(out: std::process::Output) -> serde_json::Value {
    json_report(out, "image build")
}

#[test]
fn base_pulled_from_a_registry_gives_the_same_image_as_the_layout() {
    need_tool("skopeo");
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let layout = tmp.path().join("base");
    let base = oci_base(&deb, &layout);
    let registry = Registry::start(None);
    ok(Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:base", layout.display()))
        .arg(format!("docker://{}/base:1", registry.host)));
    let cache = tmp.path().join("cache");
    let from_layout = built(build_on(
        &deb,
        &format!("oci:{}:base", layout.display()),
        &tmp.path().join("a"),
        &cache,
        &[],
    ));
    let pulled = built(build_on(
        &deb,
        &format!("docker://{}/base:1", registry.host),
        &tmp.path().join("b"),
        &cache,
        &[],
    ));
    assert_eq!(
        pulled["manifest"], from_layout["manifest"],
        "a pulled base gives the same image as the same base from a layout"
    );
    assert_eq!(pulled["platforms"][0]["base_digest"], base["manifest"]);
    // By digest, from the cache: the same again.
    let by_digest = built(build_on(
        &deb,
        &format!(
            "docker://{}/base@{}",
            registry.host,
            base["manifest"].as_str().expect("digest")
        ),
        &tmp.path().join("c"),
        &cache,
        &[],
    ));
    assert_eq!(by_digest["manifest"], from_layout["manifest"]);
    // Without --base-name the reference is recorded.
    let mut c = image_build(&["--json", "--tag", "named"]);
    c.arg(&deb)
        .arg("--base")
        .arg(format!("docker://{}/base:1", registry.host))
        .arg("--out")
        .arg(tmp.path().join("d"))
        .arg("--cache-dir")
        .arg(&cache);
    let named: serde_json::Value = serde_json::from_str(&ok(&mut c)).expect("json");
    assert_eq!(
        named["platforms"][0]["base_name"],
        format!("{}/base:1", registry.host)
    );

    // A Docker schema 2 manifest of the same base: the same layers, recorded as OCI's.
    ok(Command::new("skopeo")
        .args(["copy", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:base", layout.display()))
        .arg(format!("docker://{}/base:v2s2", registry.host)));
    let raw: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/base:v2s2", registry.host))))
    .expect("json");
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let v2s2 = built(build_on(
        &deb,
        &format!("docker://{}/base:v2s2", registry.host),
        &tmp.path().join("v2s2"),
        &cache,
        &[],
    ));
    let out_raw: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:on", tmp.path().join("v2s2").display()))))
    .expect("json");
    for (i, l) in raw["layers"].as_array().expect("layers").iter().enumerate() {
        assert_eq!(out_raw["layers"][i]["digest"], l["digest"]);
        let docker = l["mediaType"].as_str().expect("media type");
        let oci = match docker {
            "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            "application/vnd.docker.image.rootfs.diff.tar" => {
                "application/vnd.oci.image.layer.v1.tar"
            }
            other => panic!("unexpected layer type {other}"),
        };
        assert_eq!(out_raw["layers"][i]["mediaType"], oci);
    }
    assert_ne!(v2s2["platforms"][0]["base_digest"], base["manifest"]);

    // A blob the registry serves that does not match its digest is refused, naming it,
    // and nothing is written.
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout.join("blobs/sha256").join(
                base["manifest"]
                    .as_str()
                    .expect("m")
                    .trim_start_matches("sha256:"),
            ),
        )
        .expect("manifest"),
    )
    .expect("json");
    let layer = m["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    let stored = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&stored).expect("stored blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&stored, &bytes).expect("tamper");
    let fresh = tmp.path().join("fresh-cache");
    let outdir = tmp.path().join("tampered");
    std::fs::create_dir_all(&outdir).expect("mkdir");
    let out = build_on(
        &deb,
        &format!("docker://{}/base:1", registry.host),
        &outdir.join("img"),
        &fresh,
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(&layer), "names the digest: {err}");
    assert!(dir_listing(&outdir).is_empty(), "nothing written");
    assert!(
        !fresh
            .join("oci/blobs/sha256")
            .join(layer.trim_start_matches("sha256:"))
            .exists(),
        "the bad blob is not cached"
    );
}

#[test]
fn docker_archive_base() {
    need_tool("skopeo");
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let layout = tmp.path().join("base");
    let base = oci_base(&deb, &layout);
    let archive = tmp.path().join("base-archive.tar");
    ok(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:base", layout.display()))
        .arg(format!("docker-archive:{}:korg/base:1", archive.display())));
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("img");
    let report = built(build_on(
        &deb,
        &format!("docker-archive:{}", archive.display()),
        &out,
        &cache,
        &[],
    ));
    // The same again, naming the image in the archive.
    let again = built(build_on(
        &deb,
        &format!("docker-archive:{}:korg/base:1", archive.display()),
        &tmp.path().join("again"),
        &cache,
        &[],
    ));
    assert_eq!(report["manifest"], again["manifest"]);
    assert_eq!(
        report["platforms"][0]["layers"][0]["digest"], base["platforms"][0]["layers"][0]["digest"],
        "the package layer is the same on this base"
    );
    let raw: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:on", out.display()))))
    .expect("json");
    let config: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:on", out.display()))))
    .expect("json");
    // The archive's layers are kept uncompressed: their digest is their diff_id.
    let layers = raw["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 5, "{raw}");
    for i in 0..3 {
        assert_eq!(
            layers[i]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(layers[i]["digest"], config["rootfs"]["diff_ids"][i]);
    }
    let rootfs = unpack(&out, "on", &tmp.path().join("bundle"));
    assert_eq!(
        chroot(
            &rootfs,
            "/usr/lib/korg/llvm-18/bin:/usr/bin:/bin",
            "clang a"
        )
        .trim(),
        "korg-hello 2"
    );
    // A tag the archive does not hold is refused.
    let refused = build_on(
        &deb,
        &format!("docker-archive:{}:korg/other:2", archive.display()),
        &tmp.path().join("none"),
        &cache,
        &[],
    );
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");

    // A layer whose content is not its diff_id is refused, naming it; nothing written.
    let names: serde_json::Value = {
        let mut a = tar::Archive::new(std::fs::File::open(&archive).expect("open"));
        let mut found = None;
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            if e.path().expect("path").to_str() == Some("manifest.json") {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut e, &mut text).expect("read");
                found = Some(serde_json::from_str(&text).expect("json"));
            }
        }
        found.expect("manifest.json")
    };
    let first = names[0]["Layers"][0].as_str().expect("layer").to_string();
    let (offset, size) = {
        let mut a = tar::Archive::new(std::fs::File::open(&archive).expect("open"));
        let e = a
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry"))
            .find(|e| e.path().expect("path").to_str() == Some(first.as_str()))
            .expect("layer member");
        (e.raw_file_position(), e.size())
    };
    let mut bytes = std::fs::read(&archive).expect("read");
    // A non-zero byte from the middle of the layer member (file data or a header).
    let at = usize::try_from(offset + size / 2).expect("offset");
    let pos = (at..).find(|&i| bytes[i] != 0).expect("a data byte");
    bytes[pos] ^= 0x01;
    let tampered = tmp.path().join("tampered.tar");
    std::fs::write(&tampered, &bytes).expect("write");
    let outdir = tmp.path().join("out-tampered");
    std::fs::create_dir_all(&outdir).expect("mkdir");
    let out = build_on(
        &deb,
        &format!("docker-archive:{}", tampered.display()),
        &outdir.join("img"),
        &cache,
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&first), "names the layer: {err}");
    assert!(dir_listing(&outdir).is_empty());
}

/// A token-authentication front for a registry on 127.0.0.1 (std threads, one request
/// per connection): `/token` answers `{"token": ...}` to the right Basic credentials;
/// every other request without that Bearer token gets 401 with a Bearer challenge, and
/// with it is forwarded to the registry. Logs `METHOD PATH` of forwarded requests.
struct TokenFront {
    host: String,
    log: std::sync::Arc<Mutex<Vec<String>>>,
}

impl TokenFront {
    const TOKEN: &'static str = "korg-test-token-1";

    fn start(upstream: &str, user: &str, password: &str) -> TokenFront {
        use base64::Engine as _;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let upstream = upstream.to_string();
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (basic, upstream, log) = (basic.clone(), upstream.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = Self::serve(stream, port, &basic, &upstream, &log);
                });
            }
        });
        TokenFront {
            host: format!("127.0.0.1:{port}"),
            log,
        }
    }

    fn serve(
        stream: TcpStream,
        port: u16,
        basic: &str,
        upstream: &str,
        log: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut out = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            headers.push(h);
        }
        let header = |name: &str| {
            headers.iter().find_map(|h| {
                h.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        let reply = |out: &mut TcpStream, status: &str, extra: &str, body: &str| {
            write!(
                out,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        if path.starts_with("/token") {
            if header("Authorization").as_deref() == Some(basic) {
                let body = format!(r#"{{"token":"{}"}}"#, Self::TOKEN);
                return reply(
                    &mut out,
                    "200 OK",
                    "Content-Type: application/json\r\n",
                    &body,
                );
            }
            return reply(&mut out, "401 Unauthorized", "", "");
        }
        if header("Authorization") != Some(format!("Bearer {}", Self::TOKEN)) {
            let name = path.strip_prefix("/v2/").and_then(|p| {
                ["/blobs/", "/manifests/"]
                    .iter()
                    .find_map(|k| p.split_once(k).map(|(n, _)| n.to_string()))
            });
            let scope = name
                .map(|n| format!(",scope=\"repository:{n}:pull,push\""))
                .unwrap_or_default();
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\"{scope}\r\n"
            );
            return reply(&mut out, "401 Unauthorized", &challenge, "");
        }
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{method} {path}"));
        let mut up = TcpStream::connect(upstream)?;
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for h in &headers {
            let k = h.split(':').next().unwrap_or("").to_ascii_lowercase();
            if k != "authorization" && k != "connection" {
                head.push_str(h);
                head.push_str("\r\n");
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        up.write_all(head.as_bytes())?;
        let len: u64 = header("Content-Length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        std::io::copy(&mut (&mut reader).take(len), &mut up)?;
        std::io::copy(&mut up, &mut out)?;
        Ok(())
    }

    fn count(&self, method: &str) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.starts_with(&format!("{method} ")))
            .count()
    }
}

#[test]
fn bearer_token_auth_push_and_pull() {
    need_tool("skopeo");
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let layout = tmp.path().join("img");
    let built_base = oci_base(&deb, &layout);
    let registry = Registry::start(None);
    let front = TokenFront::start(&registry.host, "korg", "s3cret");
    let auth_file = |name: &str, creds: &str| {
        use base64::Engine as _;
        let file = tmp.path().join(name);
        let auth = base64::engine::general_purpose::STANDARD.encode(creds);
        std::fs::write(
            &file,
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, front.host),
        )
        .expect("auth.json");
        file.to_str().expect("utf8").to_string()
    };
    let good = auth_file("auth.json", "korg:s3cret");
    let bad = auth_file("bad.json", "korg:wrong");
    let dest = format!("{}/korg/base:1", front.host);

    // Wrong credentials: one line, network exit code, nothing pushed.
    let refused = push(&layout, &dest, &[("REGISTRY_AUTH_FILE", &bad)]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(6), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("/token") && err.contains("refused"), "{err}");
    assert_eq!(front.count("PUT"), 0);

    // The right ones, in 8 MiB chunks: PATCH requests carry the base layer.
    let mut c = korgpkg();
    c.args(["image", "push", "--json", "--chunk-size", "8388608"])
        .arg(&layout)
        .arg(&dest);
    let report = pushed(run(only_creds(&mut c, &[("REGISTRY_AUTH_FILE", &good)])));
    assert_eq!(report["digest"], built_base["manifest"]);
    assert!(front.count("PATCH") >= 2, "chunked: {:?}", front.log);
    let served: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/korg/base:1", registry.host))))
    .expect("json");
    assert_eq!(served["Digest"], built_base["manifest"]);

    // Pull the base through the front: the same image as from the layout.
    let cache = tmp.path().join("cache");
    let wrong = build_on(
        &deb,
        &format!("docker://{dest}"),
        &tmp.path().join("x"),
        &cache,
        &[("REGISTRY_AUTH_FILE", &bad)],
    );
    assert_eq!(wrong.status.code(), Some(6), "{wrong:?}");
    let pulled = built(build_on(
        &deb,
        &format!("docker://{dest}"),
        &tmp.path().join("a"),
        &cache,
        &[("REGISTRY_AUTH_FILE", &good)],
    ));
    let local = built(build_on(
        &deb,
        &format!("oci:{}:base", layout.display()),
        &tmp.path().join("b"),
        &cache,
        &[],
    ));
    assert_eq!(pulled["manifest"], local["manifest"]);
    assert!(front.count("GET") >= 4, "{:?}", front.log);
}

#[test]
fn containerfile_makefile_targets() {
    need_tool("make");
    let tmp = tempfile::tempdir().expect("tmp");
    // One image: the Makefile beside the Containerfile.
    let one = tmp.path().join("one");
    std::fs::create_dir_all(&one).expect("mkdir");
    ok(korgpkg()
        .args([
            "image",
            "containerfile",
            "korg-clang-18",
            "--name",
            "korg-clang",
        ])
        .args(["--tag", "18", "--tag", "latest"])
        .args(["--repo-url", "https://korg.example.org", "--out"])
        .arg(one.join("clang-18.Containerfile")));
    let make_n = |dir: &Path, args: &[&str]| {
        ok(Command::new("make")
            .arg("-n")
            .arg("-s")
            .arg("-C")
            .arg(dir)
            .args(args))
    };
    let here = format!("{}/", one.display());
    assert_eq!(
        make_n(&one, &["PREFIX=korg-", "clang-18"]).trim(),
        format!("podman build  -f {here}clang-18.Containerfile -t korg-clang:18 -t korg-clang:latest {here}")
    );
    assert_eq!(
        make_n(&one, &["PREFIX=ci-", "ENGINE=docker", "REGISTRY=r.example/k/", "clang-18"]).trim(),
        format!("docker build  -f {here}clang-18.Containerfile -t r.example/k/ci-clang:18 -t r.example/k/ci-clang:latest {here}")
    );

    // A set: one Containerfile per image and one Makefile covering them all.
    let set_dir = tmp.path().join("set");
    ok(korgpkg()
        .args(["image", "containerfile", "--set"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("images/korg.toml"))
        .args(["--repo-url", "https://korg.example.org", "--out"])
        .arg(&set_dir));
    assert_eq!(
        dir_listing(&set_dir),
        [
            "Makefile",
            "clang-18.Containerfile",
            "gcc-14-arm64.Containerfile",
            "gcc-14.Containerfile"
        ]
    );
    let gcc = std::fs::read_to_string(set_dir.join("gcc-14.Containerfile")).expect("read");
    assert!(
        gcc.contains("korg-gcc-14-x86_64-linux korg-gcc-14-aarch64-linux"),
        "{gcc}"
    );
    let here = format!("{}/", set_dir.display());
    let all = make_n(&set_dir, &["PREFIX=korg-", "all"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all}");
    assert!(
        lines.contains(
            &format!(
                "podman build  -f {here}gcc-14-arm64.Containerfile -t korg-gcc:14-arm64 {here}"
            )
            .as_str()
        ),
        "{all}"
    );

    // A Makefile korgpkg did not write is left alone.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("Makefile"), "all:\n\ttrue\n").expect("write");
    let refused = run(korgpkg()
        .args(["image", "containerfile", "korg-clang-18"])
        .args(["--repo-url", "https://korg.example.org", "--out"])
        .arg(other.join("Containerfile")));
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(dir_listing(&other), ["Makefile"]);
}

#[test]
fn hostile_registry_bases_are_refused() {
    use common::mirror::sha256_hex;
    let tmp = tempfile::tempdir().expect("tmp");
    let deb = toolchain_deb(tmp.path());
    let server = common::server::Server::start();
    let host = server.base().trim_start_matches("http://").to_string();
    let digest = |b: &[u8]| format!("sha256:{}", sha256_hex(b));
    let manifest = |config: &str, config_size: u64, layers: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{layers}]}}"#
        )
    };
    // Larger than the 4 MiB a manifest may be.
    server.file("/v2/big/manifests/1", vec![b' '; 5 << 20]);
    // A config blob longer than its descriptor says.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    server.file("/v2/long/manifests/1", manifest(&digest(config), 10, ""));
    server.file(
        &format!("/v2/long/blobs/{}", digest(config)),
        config.to_vec(),
    );
    // A layer the descriptor makes absurdly large, and a digest that is not sha256.
    let huge = format!(
        r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":1099511627776}}"#,
        digest(b"x")
    );
    server.file(
        "/v2/huge/manifests/1",
        manifest(&digest(config), config.len() as u64, &huge),
    );
    server.file(
        &format!("/v2/huge/blobs/{}", digest(config)),
        config.to_vec(),
    );
    server.file(
        "/v2/alg/manifests/1",
        manifest(&format!("sha512:{}", "0".repeat(128)), 2, ""),
    );
    // An index without the platform.
    server.file(
        "/v2/index/manifests/1",
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":2,"platform":{{"architecture":"s390x","os":"linux"}}}}]}}"#,
            digest(b"{}")
        ),
    );
    // A manifest asked for by a digest it does not have.
    let wrong = digest(b"other");
    server.file(
        &format!("/v2/pinned/manifests/{wrong}"),
        manifest(&digest(config), 2, ""),
    );

    for (repo, code, want) in [
        ("big:1", 6, "larger than 4194304 bytes"),
        ("long:1", 5, "is 78 bytes, its descriptor says 10"),
        ("huge:1", 4, "more than"),
        ("alg:1", 4, "not sha256"),
        ("index:1", 4, "no manifest for linux/amd64"),
        (&format!("pinned@{wrong}"), 5, "does not match its content"),
        ("missing:1", 6, "404"),
    ] {
        let outdir = tmp
            .path()
            .join(format!("out-{}", repo.replace(['@', ':'], "-")));
        std::fs::create_dir_all(&outdir).expect("mkdir");
        let out = build_on(
            &deb,
            &format!("docker://{host}/{repo}"),
            &outdir.join("img"),
            &tmp.path().join("cache"),
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{repo}: {err}");
        assert!(err.contains(want), "{repo}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{repo}: {err}");
        assert!(dir_listing(&outdir).is_empty(), "{repo}: nothing written");
    }
    // Plain http is refused for anything but loopback.
    let refused = build_on(
        &deb,
        "docker://registry.invalid/base:1",
        &tmp.path().join("remote"),
        &tmp.path().join("cache"),
        &[],
    );
    assert_eq!(refused.status.code(), Some(6), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("https://registry.invalid/"));
}
