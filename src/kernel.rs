//! Built Linux kernels → `korg-linux-image-<rel>` (and, from a build tree,
//! `korg-linux-headers-<rel>`) packages in every format.
//!
//! Two inputs: a local build tree (`include/config/kernel.release`, `.config`,
//! `System.map`, the boot image, modules from the tree's own `make modules_install` or an
//! already staged directory), or TuxMake-style CI artifacts (`metadata.json`, the image,
//! `modules.tar.xz`, `config`, `System.map`) in a directory or over HTTP(S), where every
//! file is downloaded through the verifying cache against a sha256sum-format `--sums`.
//! The release is cross-checked against the image (x86 boot header, `Linux version`
//! banner) and the modules directory. No ELF dependency scan runs: modules are
//! relocatable objects loaded by the kernel, not by ld.so.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;
use crate::model::relation::{Relation, RelationKind};
use crate::model::{
    ArchNames, Copyright, Format, FormatRelations, FormatScripts, LicenseText, PackageMeta,
    Relations, Scripts,
};
use crate::package::{packager, BuildOptions, Output};
use crate::payload::{self, Entry, EntryKind, Payload, PayloadBuilder, StageOptions};
use crate::pipeline::{self, PlannedOutput};
use crate::templates::Templates;

/// Where the built kernel comes from.
#[derive(Debug, Clone)]
pub enum KernelInput {
    /// A kernel build tree (`O=`), its source tree if separate, and optionally modules
    /// already installed with `INSTALL_MOD_PATH`.
    BuildTree {
        build_dir: PathBuf,
        src_dir: Option<PathBuf>,
        modules_dir: Option<PathBuf>,
    },
    /// A TuxMake-style artifacts directory or URL, and a sha256sum-format sums file
    /// (path or URL) covering its files.
    Artifacts {
        location: String,
        sums: Option<String>,
    },
}

impl KernelInput {
    /// Whether building needs the network (artifacts or sums given as a URL).
    pub fn is_remote(&self) -> bool {
        match self {
            KernelInput::BuildTree { .. } => false,
            KernelInput::Artifacts { location, sums } => {
                location.contains("://") || sums.as_deref().is_some_and(|s| s.contains("://"))
            }
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct KernelRequest {
    pub input: KernelInput,
    pub formats: Vec<Format>,
    pub out_dir: PathBuf,
    pub revision: u32,
    pub options: BuildOptions,
    pub source_date_epoch: Option<u64>,
    /// `make` program for `modules_install` in a build tree.
    pub make: String,
}

/// What a kernel build produced.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    pub release: String,
    /// Kernel arch (`x86_64`, `arm64`).
    pub arch: String,
    pub packages: Vec<KernelPackage>,
}

/// One package (in every format) of a kernel build.
#[derive(Debug, Clone, Serialize)]
pub struct KernelPackage {
    pub package: String,
    pub version: String,
    pub outputs: Vec<Output>,
}

/// The files a kernel package is made of, once located (and downloaded) on disk.
struct Located {
    release: String,
    arch: String,
    image: PathBuf,
    config: Option<PathBuf>,
    system_map: Option<PathBuf>,
    modules: Modules,
    /// Build tree input: (source tree, build tree) for the headers package.
    headers: Option<(PathBuf, PathBuf)>,
    /// Keeps a `modules_install` staging directory alive.
    _tmp: Option<tempfile::TempDir>,
}

enum Modules {
    None,
    /// A `modules.tar.*` with `lib/modules/<rel>/...`.
    Tar(PathBuf),
    /// The `lib/modules/<rel>` directory itself.
    Dir(PathBuf),
}

/// Package a built kernel. `fetcher` is needed only for artifacts over HTTP(S).
pub fn build(
    req: &KernelRequest,
    templates: &Templates,
    fetcher: Option<&Fetcher>,
) -> Result<KernelReport> {
    if req.formats.is_empty() {
        return Err(Error::Usage("no formats requested".into()));
    }
    let located = match &req.input {
        KernelInput::Artifacts { location, sums } => {
            locate_artifacts(location, sums.as_deref(), fetcher)?
        }
        KernelInput::BuildTree {
            build_dir,
            src_dir,
            modules_dir,
        } => locate_tree(
            build_dir,
            src_dir.as_deref(),
            modules_dir.as_deref(),
            &req.make,
        )?,
    };
    check_release_name(&located.release)?;
    let image_rel = image_release(&located.image)?;
    if image_rel != located.release {
        return Err(Error::input(
            &located.image,
            format!(
                "the image says kernel release {image_rel}, but the input says {}",
                located.release
            ),
        ));
    }
    let arch = arch_names(&located.arch)?;
    std::fs::create_dir_all(&req.out_dir)
        .ctx(|| format!("creating output directory {}", req.out_dir.display()))?;

    let rel = &located.release;
    let mut builder = PayloadBuilder::new(&req.out_dir, req.source_date_epoch)?;
    // A gzip'd arm64/riscv `Image.gz` is installed decompressed, as Debian's own arm64
    // and riscv64 kernel packages install `Image`: EFI loaders and Debian's GRUB boot
    // only the uncompressed image.
    let vmlinuz = format!("/boot/vmlinuz-{rel}");
    let image_data = if is_gzip(&located.image)? {
        builder.file_gunzipped(&vmlinuz, &located.image, 0o644, MAX_IMAGE_BYTES)?
    } else {
        builder.file(&vmlinuz, &located.image, 0o644)?
    };
    if let Some(c) = &located.config {
        builder.file(&format!("/boot/config-{rel}"), c, 0o644)?;
    }
    if let Some(m) = &located.system_map {
        builder.file(&format!("/boot/System.map-{rel}"), m, 0o644)?;
    }
    let top = format!("lib/modules/{rel}");
    let prefix = format!("/{top}");
    let drop_links = |r: &str| r == "build" || r == "source";
    match &located.modules {
        Modules::None => {}
        Modules::Tar(path) => {
            let reader = payload::open_tarball(path, None)?;
            let opts = StageOptions {
                top_dir: &top,
                prefix: &prefix,
                exclude: &drop_links,
                clamp_mtime: req.source_date_epoch,
                md5: true,
            };
            builder.tar(path, reader, &opts).map_err(|e| match e {
                Error::Input { path, message } if message.contains("outside the top directory") => {
                    Error::input(path, format!("{message}: not modules of release {rel}"))
                }
                e => e,
            })?;
        }
        Modules::Dir(dir) => {
            builder.tree(dir, &prefix, &|r: &str, _| !drop_links(r))?;
        }
    }
    let image_payload = builder.finish("/");
    let image_time = req
        .source_date_epoch
        .unwrap_or(image_payload.stats().max_mtime);
    // rpm: kernel-install takes the image from /lib/modules/<rel>/vmlinuz.
    let rpm_payload = image_payload.with_entries(vec![Entry {
        path: format!("{prefix}/vmlinuz"),
        mode: 0o644,
        mtime: image_time,
        kind: EntryKind::File(image_data),
    }]);

    let mut packages = Vec::new();
    let image_meta = image_meta(rel, &arch, req, templates, &image_payload)?;
    let planned = plan_outputs(&image_meta, req);
    let outputs = pipeline::write_packages(
        &image_meta,
        &planned,
        &|f| match f {
            Format::Rpm => &rpm_payload,
            _ => &image_payload,
        },
        templates,
        &req.options,
    )?;
    packages.push(KernelPackage {
        package: image_meta.name.clone(),
        version: image_meta.version.clone(),
        outputs,
    });

    if let Some((src, obj)) = &located.headers {
        let headers = headers_payload(src, obj, &located.arch, rel, req)?;
        let meta = headers_meta(rel, &arch, req, &headers);
        let planned = plan_outputs(&meta, req);
        let outputs =
            pipeline::write_packages(&meta, &planned, &|_| &headers, templates, &req.options)?;
        packages.push(KernelPackage {
            package: meta.name.clone(),
            version: meta.version.clone(),
            outputs,
        });
    }
    Ok(KernelReport {
        release: rel.clone(),
        arch: located.arch.clone(),
        packages,
    })
}

fn plan_outputs(meta: &PackageMeta, req: &KernelRequest) -> Vec<PlannedOutput> {
    pipeline::dedup(&req.formats)
        .into_iter()
        .map(|f| PlannedOutput {
            format: f,
            path: req.out_dir.join(packager(f).file_name(meta)),
            arch: meta.arch.for_format(f).to_string(),
        })
        .collect()
}

/// A release string must be usable in paths and package names.
fn check_release_name(rel: &str) -> Result<()> {
    let ok = !rel.is_empty()
        && rel.len() <= 64
        && rel.as_bytes()[0].is_ascii_alphanumeric()
        && rel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-_~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "kernel release {rel:?} is not a plain release string (letters, digits, . + - _ ~)"
        )))
    }
}

/// Package name part from a release: lowercase, `_` → `-`, only `[a-z0-9.+-]`.
pub fn sanitize(rel: &str) -> String {
    rel.to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '+' | '-' => c,
            _ => '-',
        })
        .collect()
}

/// Package version from a release: the leading `N.N[.N]`, then `~rcN` for a release
/// candidate, so `6.8.0-rc3` < `6.8.0`; the local version is part of the name.
pub fn package_version(rel: &str) -> String {
    let end = rel
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rel.len());
    let base = rel[..end].trim_end_matches('.');
    let rest = &rel[end..];
    let base = if base.is_empty() { "0" } else { base };
    match rest.strip_prefix("-rc") {
        Some(r) => {
            let n: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
            if n.is_empty() {
                base.to_string()
            } else {
                format!("{base}~rc{n}")
            }
        }
        None => base.to_string(),
    }
}

/// Package arch names for a kernel arch (`x86_64`, `arm64`, ...).
fn arch_names(arch: &str) -> Result<ArchNames> {
    let (deb, rpm) = match arch {
        "x86_64" | "x86" | "amd64" => ("amd64", "x86_64"),
        "arm64" | "aarch64" => ("arm64", "aarch64"),
        "riscv" | "riscv64" => ("riscv64", "riscv64"),
        "i386" => ("i386", "i686"),
        other => {
            return Err(Error::Usage(format!(
                "kernel arch {other:?} is not supported (x86_64, arm64, riscv, i386)"
            )))
        }
    };
    Ok(ArchNames {
        upstream: arch.to_string(),
        deb: deb.into(),
        rpm: rpm.into(),
        ipk: rpm.into(),
    })
}

/// The kernel's `SRCARCH` directory name for an arch.
fn srcarch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86" | "amd64" | "i386" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        a => a,
    }
}

fn relations(rel: &str) -> Result<FormatRelations> {
    let mut r = FormatRelations::default();
    let add = |rels: &mut Relations, kind, format, text: &str| -> Result<()> {
        let parsed = Relation::parse(format, text)
            .map_err(|e| Error::Usage(format!("built-in kernel relation {text:?}: {e}")))?;
        rels.0.entry(kind).or_default().push(parsed);
        Ok(())
    };
    add(&mut r.deb, RelationKind::Depends, Format::Deb, "kmod")?;
    add(
        &mut r.deb,
        RelationKind::Depends,
        Format::Deb,
        "initramfs-tools | linux-initramfs-tool",
    )?;
    add(
        &mut r.deb,
        RelationKind::Provides,
        Format::Deb,
        "linux-image",
    )?;
    add(&mut r.rpm, RelationKind::Depends, Format::Rpm, "kmod")?;
    add(
        &mut r.rpm,
        RelationKind::Provides,
        Format::Rpm,
        &format!("kernel-uname-r = {rel}"),
    )?;
    add(&mut r.ipk, RelationKind::Depends, Format::Ipk, "kmod")?;
    Ok(r)
}

#[derive(Serialize)]
struct ScriptData<'a> {
    name: &'a str,
    release: &'a str,
}

fn image_meta(
    rel: &str,
    arch: &ArchNames,
    req: &KernelRequest,
    templates: &Templates,
    payload: &Payload,
) -> Result<PackageMeta> {
    let name = format!("korg-linux-image-{}", sanitize(rel));
    let data = ScriptData {
        name: &name,
        release: rel,
    };
    let render = |t: &str| templates.render(t, &data).map(Some);
    let scripts = FormatScripts {
        deb: Scripts {
            preinst: render("kernel/deb-preinst")?,
            postinst: render("kernel/deb-postinst")?,
            prerm: render("kernel/deb-prerm")?,
            postrm: render("kernel/deb-postrm")?,
        },
        rpm: Scripts {
            postinst: render("kernel/rpm-post")?,
            prerm: render("kernel/rpm-preun")?,
            ..Default::default()
        },
        ipk: Scripts {
            postinst: render("kernel/ipk-postinst")?,
            ..Default::default()
        },
    };
    let mut meta = base_meta(
        name,
        rel,
        arch,
        req,
        payload,
        format!("Linux kernel {rel}"),
        format!(
            "The Linux kernel image, configuration, System.map and modules of\n\
             release {rel}, repackaged by korgpkg."
        ),
    );
    meta.section = "kernel".into();
    meta.rpm_group = "System Environment/Kernel".into();
    meta.relations = relations(rel)?;
    meta.scripts = scripts;
    Ok(meta)
}

fn headers_meta(
    rel: &str,
    arch: &ArchNames,
    req: &KernelRequest,
    payload: &Payload,
) -> PackageMeta {
    let mut meta = base_meta(
        format!("korg-linux-headers-{}", sanitize(rel)),
        rel,
        arch,
        req,
        payload,
        format!("Header files and scripts for building modules for Linux {rel}"),
        format!(
            "What building external modules for Linux {rel} needs,\n\
             as the kernel's install-extmod-build selects it, in\n\
             /usr/src/linux-headers-{rel},\n\
             with /lib/modules/{rel}/build pointing there.\n\
             Repackaged by korgpkg."
        ),
    );
    meta.section = "kernel".into();
    meta.rpm_group = "Development/System".into();
    meta.prefix = format!("/usr/src/linux-headers-{rel}");
    meta
}

/// The kernel's notice and license (its `COPYING`: GPL-2.0).
fn kernel_copyright() -> Copyright {
    Copyright {
        notice: "1991-2024 Linus Torvalds and many others".into(),
        dep5_license: "GPL-2".into(),
        licenses: vec![LicenseText {
            name: "GPL-2".into(),
            debian_common: Some("GPL-2".into()),
            text: crate::spec::builtin_license("GPL-2.txt")
                .unwrap_or("GNU General Public License, version 2")
                .to_string(),
        }],
    }
}

fn base_meta(
    name: String,
    rel: &str,
    arch: &ArchNames,
    req: &KernelRequest,
    payload: &Payload,
    summary: String,
    description: String,
) -> PackageMeta {
    PackageMeta {
        spec: "kernel".into(),
        name,
        upstream_version: rel.to_string(),
        version: package_version(rel),
        revision: req.revision,
        arch: arch.clone(),
        summary,
        description,
        license: "GPL-2.0-only".into(),
        homepage: "https://www.kernel.org/".into(),
        maintainer: "korgpkg <korgpkg@example.invalid>".into(),
        section: "kernel".into(),
        priority: "optional".into(),
        rpm_group: "System Environment/Kernel".into(),
        prefix: "/".into(),
        build_time: req.source_date_epoch.unwrap_or(payload.stats().max_mtime),
        relations: FormatRelations::default(),
        provenance: None,
        verified: false,
        copyright: kernel_copyright(),
        installed_size: payload.stats().file_bytes,
        scripts: FormatScripts::default(),
    }
}

// ---------------------------------------------------------------------------------------
// Inputs

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file://")
}

/// Parse a sha256sum-format file: `<hex>  [*]<name>` per line → name → hex.
fn parse_sums(text: &str, origin: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hex, name) = line.split_once(char::is_whitespace).ok_or_else(|| {
            Error::input(origin, format!("line {}: not `<sha256>  <file>`", i + 1))
        })?;
        let name = name
            .trim_start()
            .trim_start_matches('*')
            .trim_start_matches("./");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::input(
                origin,
                format!("line {}: {hex:?} is not a sha256", i + 1),
            ));
        }
        out.insert(name.to_string(), hex.to_ascii_lowercase());
    }
    Ok(out)
}

fn locate_artifacts(
    location: &str,
    sums: Option<&str>,
    fetcher: Option<&Fetcher>,
) -> Result<Located> {
    let remote = is_url(location);
    let base = location.trim_end_matches('/');
    let read_small = |what: &str| -> Result<Vec<u8>> {
        if is_url(what) {
            let f = fetcher.ok_or_else(|| Error::Usage("no downloader for URLs".into()))?;
            f.fetch_small(what)
        } else {
            std::fs::read(what).ctx(|| format!("reading {what}"))
        }
    };
    let sums = match sums {
        Some(s) => Some(parse_sums(
            &String::from_utf8_lossy(&read_small(s)?),
            s,
        )?),
        None if remote => {
            return Err(Error::Usage(format!(
                "{location}: artifacts over HTTP are packaged only when verified: give --sums FILE|URL (sha256sum format)"
            )))
        }
        None => None,
    };
    let meta_origin = format!("{base}/metadata.json");
    let meta_bytes = if remote {
        read_small(&meta_origin)?
    } else {
        let p = Path::new(location).join("metadata.json");
        if !p.is_file() {
            return Err(Error::input(
                &p,
                "missing: not a TuxMake-style artifacts directory",
            ));
        }
        std::fs::read(&p).ctx(|| format!("reading {}", p.display()))?
    };
    if let Some(s) = &sums {
        if let Some(want) = s.get("metadata.json") {
            let got = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&meta_bytes));
            if &got != want {
                return Err(Error::verify(
                    meta_origin,
                    format!("sha256 mismatch: expected {want}, got {got}"),
                ));
            }
        }
    }
    let md: serde_json::Value = serde_json::from_slice(&meta_bytes)
        .map_err(|e| Error::input(&meta_origin, format!("not JSON: {e}")))?;
    let release = md
        .pointer("/source/kernelrelease")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::input(&meta_origin, "no source.kernelrelease"))?
        .trim()
        .to_string();
    let arch = md
        .pointer("/build/target_arch")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::input(&meta_origin, "no build.target_arch"))?
        .to_string();
    let artifacts = md.pointer("/results/artifacts");
    let listed = |key: &str| -> Vec<String> {
        artifacts
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all_listed: Vec<String> = artifacts
        .and_then(|a| a.as_object())
        .map(|o| {
            o.values()
                .filter_map(|v| v.as_array())
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let image_name = listed("kernel")
        .into_iter()
        .next()
        .ok_or_else(|| Error::input(&meta_origin, "no results.artifacts.kernel"))?;
    let find = |names: &[&str]| -> Option<String> {
        all_listed
            .iter()
            .find(|n| names.contains(&n.as_str()))
            .cloned()
            .or_else(|| {
                (!remote)
                    .then(|| names.iter().find(|n| Path::new(location).join(n).is_file()))
                    .flatten()
                    .map(|n| n.to_string())
            })
    };
    let config_name = listed("config")
        .into_iter()
        .next()
        .or_else(|| find(&["config"]));
    let map_name = find(&["System.map"]);
    let modules_name = listed("modules").into_iter().next();

    for n in [
        &Some(image_name.clone()),
        &config_name,
        &map_name,
        &modules_name,
    ]
    .into_iter()
    .flatten()
    {
        if n.contains('/') || n.starts_with('.') {
            return Err(Error::input(
                &meta_origin,
                format!("artifact name {n:?} is not a plain file name"),
            ));
        }
    }
    let get = |name: &str| -> Result<PathBuf> {
        let want = match &sums {
            Some(s) => Some(
                s.get(name)
                    .ok_or_else(|| Error::verify(name, "no sha256 for it in the sums file"))?,
            ),
            None => None,
        };
        if remote {
            let f = fetcher.ok_or_else(|| Error::Usage("no downloader for URLs".into()))?;
            // `sums` is always set for remote input.
            let want = want.ok_or_else(|| Error::verify(name, "no sha256"))?;
            f.fetch_verified(&format!("{base}/{name}"), want)
        } else {
            let p = Path::new(location).join(name);
            if !p.is_file() {
                return Err(Error::input(&p, "missing (listed in metadata.json)"));
            }
            if let Some(want) = want {
                let (_, got) = pipeline::hash_file(&p)?;
                if &got != want {
                    return Err(Error::verify(
                        p.display().to_string(),
                        format!("sha256 mismatch: expected {want}, got {got}"),
                    ));
                }
            }
            Ok(p)
        }
    };
    Ok(Located {
        image: get(&image_name)?,
        config: config_name.as_deref().map(get).transpose()?,
        system_map: map_name.as_deref().map(get).transpose()?,
        modules: match modules_name.as_deref().map(get).transpose()? {
            Some(p) => Modules::Tar(p),
            None => Modules::None,
        },
        release,
        arch,
        headers: None,
        _tmp: None,
    })
}

fn read_trimmed(path: &Path, what: &str) -> Result<String> {
    if !path.is_file() {
        return Err(Error::input(path, format!("missing: {what}")));
    }
    Ok(std::fs::read_to_string(path)
        .ctx(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn locate_tree(
    build: &Path,
    src: Option<&Path>,
    modules_dir: Option<&Path>,
    make: &str,
) -> Result<Located> {
    if !build.is_dir() {
        return Err(Error::input(build, "no such directory"));
    }
    let release = read_trimmed(
        &build.join("include/config/kernel.release"),
        "not a built kernel tree (run make first)",
    )?;
    let config_path = build.join(".config");
    let config = read_trimmed(&config_path, "the build tree has no .config")?;
    let has = |sym: &str| config.lines().any(|l| l == format!("{sym}=y"));
    let arch = if has("CONFIG_X86_64") {
        "x86_64"
    } else if has("CONFIG_ARM64") {
        "arm64"
    } else if has("CONFIG_RISCV") {
        "riscv"
    } else if has("CONFIG_X86_32") {
        "i386"
    } else {
        return Err(Error::input(
            &config_path,
            "cannot tell the arch (no CONFIG_X86_64, CONFIG_ARM64, CONFIG_RISCV or CONFIG_X86_32)",
        ));
    };
    let candidates: &[&str] = match srcarch(arch) {
        "x86" => &["arch/x86/boot/bzImage"],
        "arm64" => &["arch/arm64/boot/Image.gz", "arch/arm64/boot/Image"],
        _ => &["arch/riscv/boot/Image.gz", "arch/riscv/boot/Image"],
    };
    let image = candidates
        .iter()
        .map(|c| build.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::input(build.join(candidates[0]), "missing: no boot image built"))?;
    let system_map = build.join("System.map");
    if !system_map.is_file() {
        return Err(Error::input(&system_map, "missing"));
    }
    let mut tmp = None;
    let modules = match modules_dir {
        Some(d) => Modules::Dir(modules_below(d, &release)?),
        None if has("CONFIG_MODULES") => {
            let t = tempfile::Builder::new()
                .prefix(".korgpkg-modules-")
                .tempdir()
                .ctx(|| "creating a modules_install directory".into())?;
            let status = Command::new(make)
                .arg("-C")
                .arg(build)
                .arg("-s")
                .arg("modules_install")
                .arg(format!("INSTALL_MOD_PATH={}", t.path().display()))
                .status()
                .ctx(|| format!("running {make} modules_install in {}", build.display()))?;
            if !status.success() {
                return Err(Error::input(
                    build,
                    format!("{make} modules_install failed ({status})"),
                ));
            }
            let dir = modules_below(t.path(), &release)?;
            tmp = Some(t);
            Modules::Dir(dir)
        }
        None => Modules::None,
    };
    let src = src.unwrap_or(build).to_path_buf();
    Ok(Located {
        release,
        arch: arch.to_string(),
        image,
        config: Some(config_path),
        system_map: Some(system_map),
        modules,
        headers: Some((src, build.to_path_buf())),
        _tmp: tmp,
    })
}

/// `dir/lib/modules/<rel>` (an `INSTALL_MOD_PATH`), `dir/<rel>`, or `dir` itself when it
/// is named `<rel>`; anything else is modules of another release.
fn modules_below(dir: &Path, rel: &str) -> Result<PathBuf> {
    for cand in [dir.join("lib/modules").join(rel), dir.join(rel)] {
        if cand.is_dir() {
            return Ok(cand);
        }
    }
    if dir.file_name().is_some_and(|n| n == rel) && dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let found: Vec<String> = std::fs::read_dir(dir.join("lib/modules"))
        .or_else(|_| std::fs::read_dir(dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    Err(Error::input(
        dir,
        format!(
            "no modules for release {rel} (lib/modules/{rel}); found: {}",
            if found.is_empty() {
                "nothing".to_string()
            } else {
                found.join(", ")
            }
        ),
    ))
}

// ---------------------------------------------------------------------------------------
// Release checks

/// The largest decompressed kernel image accepted (arm64 `Image`s are 30-70 MiB).
const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// Whether the file starts with the gzip magic.
fn is_gzip(path: &Path) -> Result<bool> {
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut head = [0u8; 2];
    let n = read_full(&mut f, &mut head).ctx(|| format!("reading {}", path.display()))?;
    Ok(n == 2 && head == [0x1f, 0x8b])
}

/// The release an image names: the x86 boot header's `kernel_version`, else the
/// `Linux version <rel> ` banner (in a gzip'd image, after decompressing), streamed.
pub fn image_release(path: &Path) -> Result<String> {
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut head = vec![0u8; 0x210];
    let n = read_full(&mut f, &mut head).ctx(|| format!("reading {}", path.display()))?;
    head.truncate(n);
    if head.len() >= 0x210 && &head[0x202..0x206] == b"HdrS" {
        let off = u16::from_le_bytes([head[0x20E], head[0x20F]]) as u64 + 0x200;
        f.seek(SeekFrom::Start(off))
            .ctx(|| format!("reading {}", path.display()))?;
        let mut s = vec![0u8; 256];
        let n = read_full(&mut f, &mut s).ctx(|| format!("reading {}", path.display()))?;
        let s = &s[..n];
        let end = s
            .iter()
            .position(|&b| b == 0 || b == b' ')
            .unwrap_or(s.len());
        let rel = String::from_utf8_lossy(&s[..end]).into_owned();
        if rel.is_empty() {
            return Err(Error::input(
                path,
                "the x86 boot header has no kernel_version",
            ));
        }
        return Ok(rel);
    }
    f.seek(SeekFrom::Start(0))
        .ctx(|| format!("reading {}", path.display()))?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(f)
    };
    banner_release(reader)
        .map_err(|e| Error::input(path, format!("reading the image: {e}")))?
        .ok_or_else(|| {
            Error::input(
                path,
                "no x86 boot header and no `Linux version` banner: not a kernel image",
            )
        })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Scan a stream for `Linux version <rel> ` with a fixed buffer.
fn banner_release(mut r: impl Read) -> std::io::Result<Option<String>> {
    const NEEDLE: &[u8] = b"Linux version ";
    const KEEP: usize = 128;
    let mut buf = vec![0u8; payload::COPY_BUFFER];
    let mut len = 0;
    loop {
        let n = r.read(&mut buf[len..])?;
        len += n;
        let mut from = 0;
        while let Some(i) = find(&buf[from..len], NEEDLE) {
            let start = from + i + NEEDLE.len();
            let rest = &buf[start..len];
            match rest.iter().position(|&b| b == b' ' || b == 0) {
                Some(end) if end > 0 && rest[0] != b'%' => {
                    return Ok(Some(String::from_utf8_lossy(&rest[..end]).into_owned()))
                }
                Some(_) => from = start,
                None if n == 0 => return Ok(None),
                None => break, // the banner continues in the next read
            }
        }
        if n == 0 {
            return Ok(None);
        }
        if len == buf.len() {
            let keep_from = len - KEEP;
            buf.copy_within(keep_from..len, 0);
            len = KEEP;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// Headers

/// The files `install-extmod-build` selects, at `/usr/src/linux-headers-<rel>`, plus the
/// `/lib/modules/<rel>/build` symlink.
fn headers_payload(
    src: &Path,
    obj: &Path,
    arch: &str,
    rel: &str,
    req: &KernelRequest,
) -> Result<Payload> {
    let dest = format!("/usr/src/linux-headers-{rel}");
    let sa = srcarch(arch);
    let arch_inc = format!("arch/{sa}/include/");
    let junk = |r: &str| {
        let base = r.rsplit('/').next().unwrap_or(r);
        base.ends_with(".o")
            || base.ends_with(".cmd")
            || base.ends_with(".d")
            || base.ends_with(".a")
            || (base.starts_with('.') && base != ".config")
    };
    // Other arches' files, and include/config/<SYMBOL> dependency timestamps, are not
    // needed to build modules.
    let other_arch = |r: &str| r.starts_with("arch/") && !r.starts_with(&format!("arch/{sa}/"));
    let config_stamp = |r: &str| {
        r.strip_prefix("include/config/")
            .is_some_and(|n| n != "auto.conf" && n != "kernel.release")
    };
    let from_obj = |r: &str| {
        r == "Module.symvers"
            || r == ".config"
            || r == "tools/objtool/objtool"
            || r.starts_with("include/")
            || r.starts_with(&arch_inc)
            || r.starts_with("scripts/")
    };
    let from_src = |r: &str| {
        let base = r.rsplit('/').next().unwrap_or(r);
        base.starts_with("Makefile")
            || base.starts_with("Kconfig")
            || base.starts_with("Kbuild")
            || (r.starts_with(&format!("arch/{sa}/")) && base == "Platform")
            || r.starts_with("include/")
            || r.starts_with(&arch_inc)
            || r.starts_with("scripts/")
    };
    let mut b = PayloadBuilder::new(&req.out_dir, req.source_date_epoch)?;
    for (root, pick) in [
        (obj, &from_obj as &dyn Fn(&str) -> bool),
        (src, &from_src as &dyn Fn(&str) -> bool),
    ] {
        for (r, path, kind) in walk(root)? {
            if junk(&r) || other_arch(&r) || config_stamp(&r) || !pick(&r) {
                continue;
            }
            let install = format!("{dest}/{r}");
            if b.contains(&install) {
                continue;
            }
            match kind {
                Walked::File(mode) => {
                    b.file(&install, &path, mode)?;
                }
                Walked::Link(target, mtime) => {
                    // Links leaving the tree (a build machine's paths) are left out.
                    if crate::payload::stays_inside(&r, &target) {
                        b.symlink(&install, &target, mtime)?;
                    }
                }
            }
        }
    }
    let mtime = std::fs::metadata(obj.join("include/config/kernel.release"))
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    b.symlink(&format!("/lib/modules/{rel}/build"), &dest, mtime)?;
    Ok(b.finish(&dest))
}

enum Walked {
    File(u32),
    Link(String, u64),
}

/// Every file and symlink below `root` (not following links), skipping `.git`.
fn walk(root: &Path) -> Result<Vec<(String, PathBuf, Walked)>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).ctx(|| format!("reading directory {}", dir.display()))?;
        for e in rd {
            let e = e.ctx(|| format!("reading directory {}", dir.display()))?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name == ".git" || name.contains('\n') || name.contains('\\') {
                continue;
            }
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = e.path();
            let meta =
                std::fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push((r, path));
            } else if ft.is_symlink() {
                let t =
                    std::fs::read_link(&path).ctx(|| format!("reading link {}", path.display()))?;
                if let Some(t) = t.to_str() {
                    out.push((
                        r,
                        path,
                        Walked::Link(t.to_string(), meta.mtime().max(0) as u64),
                    ));
                }
            } else if ft.is_file() {
                let mode = meta.permissions().mode() & 0o777;
                out.push((r, path, Walked::File(mode)));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_names() {
        assert_eq!(package_version("6.1.0-56-cloud-amd64"), "6.1.0");
        assert_eq!(package_version("6.8.0-rc3"), "6.8.0~rc3");
        assert_eq!(package_version("6.8.0-rc3-foo"), "6.8.0~rc3");
        assert_eq!(package_version("6.9.2+"), "6.9.2");
        assert_eq!(sanitize("6.8.0-rc3_My+Local"), "6.8.0-rc3-my+local");
    }

    #[test]
    fn banner_is_found_across_reads() {
        let mut data = vec![b'x'; payload::COPY_BUFFER - 20];
        data.extend_from_slice(b"Linux version 6.9.0-arm64 (builder@host) #1");
        assert_eq!(
            banner_release(&data[..]).ok().flatten().as_deref(),
            Some("6.9.0-arm64")
        );
        assert_eq!(banner_release(&b"nothing"[..]).ok().flatten(), None);
    }

    #[test]
    fn sums_are_parsed() {
        let h = "a".repeat(64);
        let m = parse_sums(&format!("{h}  bzImage\n{h} *./config\n"), "s").expect("sums");
        assert_eq!(m.get("bzImage"), Some(&h));
        assert_eq!(m.get("config"), Some(&h));
        assert!(parse_sums("zz  x", "s").is_err());
    }
}
