//! `korgpkg image`: build OCI images from korgpkg's packages and push them to registries.

use std::path::PathBuf;

use korgpkg::image::{
    self, Base, BuildRequest, LayerCompression, OutputFormat, PlatformInput, User,
};
use korgpkg::Error;

const BUILD_EXAMPLES: &str = "\
Examples:
  mmdebstrap --variant=minbase --include=make,libc6 bookworm base.tar
  SOURCE_DATE_EPOCH=1700000000 korgpkg image build korg-clang-18 --repo /srv/korg --base-rootfs base.tar --out korg-clang-18/
  korgpkg image build dist/korg-clang-18_18.1.8-1_amd64.deb --base oci:debian:bookworm --user 1000:1000 --out img/
  korgpkg image build korg-clang-18=18.1.8-1 korg-gcc-14-aarch64-linux --repo /srv/korg --base-rootfs base.tar --name korg-clang --tag 18 --tag latest --out img/
  korgpkg image build korg-clang-18 --repo /srv/korg --base-rootfs base.tar --format docker-archive --out korg-clang-18.tar
  podman load -i korg-clang-18.tar
  korgpkg image build korg-clang-18 --repo /srv/korg --base docker://registry.example.org/korg/bookworm-make:12 --out img/
  korgpkg image build korg-clang-18 --repo /srv/korg --base docker-archive:base.tar:korg/base:1 --out img/

Each package becomes its own layer, made only from its data.tar, so it has the same digest
on every base. The packages' Depends are checked against the base's dpkg status first: a
base that lacks one is refused (exit 4) and nothing is written. A docker:// base is pulled
into the cache (<cache>/oci, by digest), every blob checked against its digest (exit 5).";

const PUSH_EXAMPLES: &str = "\
Examples:
  korgpkg image push korg-clang-18/ registry.example.org/korg/korg-clang:18
  korgpkg image push oci:img:18 127.0.0.1:5000/korg-clang:18 --json
  REGISTRY_AUTH_FILE=auth.json korgpkg image push img/ registry.example.org/korg-clang:latest

Credentials: $KORGPKG_REGISTRY_USER/$KORGPKG_REGISTRY_PASSWORD, else $REGISTRY_AUTH_FILE,
$XDG_RUNTIME_DIR/containers/auth.json or ~/.docker/config.json (\"auths\").
https only, except 127.0.0.1/localhost or --insecure-registry.";

/// `korgpkg image` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an OCI image (layout directory or docker-archive) from korgpkg packages.
    #[command(after_help = BUILD_EXAMPLES)]
    Build(Box<BuildArgs>),
    /// Push an OCI image layout to a registry (OCI distribution API).
    #[command(after_help = PUSH_EXAMPLES)]
    Push(PushArgs),
    /// Write a Containerfile that installs toolchains from a korgpkg apt repository.
    #[command(after_help = CONTAINERFILE_EXAMPLES)]
    Containerfile(ContainerfileArgs),
}

const CONTAINERFILE_EXAMPLES: &str = "\
Examples:
  korgpkg image containerfile korg-clang-18 --repo-url https://korg.example.org > Containerfile
  korgpkg image containerfile korg-clang-18 korg-gcc-14-aarch64-linux --repo-url https://korg.example.org --user 1000:1000 --out Containerfile
  buildah bud -t korg-clang:18 .      # or docker build / podman build
  korgpkg image containerfile korg-clang-18 --name korg-clang --tag 18 --repo-url https://korg.example.org --out ci/clang-18.Containerfile
  make -C ci PREFIX=korg- clang-18    # podman build ... -t korg-clang:18 (ENGINE=docker for docker)
  korgpkg image containerfile --set images/korg.toml --repo-url https://korg.example.org --out ci/
  make -C ci PREFIX=korg- ENGINE=docker all

With --out, a Makefile beside the Containerfile gets one target per image, <short>-<tag>
(korg-clang:18 → clang-18), building $(REGISTRY)$(PREFIX)<short>:<tag> with $(ENGINE).";

/// `korgpkg image containerfile`.
#[derive(clap::Args, Debug)]
pub struct ContainerfileArgs {
    /// Package names (`korg-clang-18`).
    #[arg(required_unless_present = "set")]
    packages: Vec<String>,
    /// Every image of a set file (`images/korg.toml`): `--out DIR` gets
    /// `<target>.Containerfile` per image and one Makefile.
    #[arg(long, value_name = "FILE", requires = "out")]
    set: Option<PathBuf>,
    /// Image tag for the Makefile target; repeatable [default: latest].
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// URL of the published korgpkg repository (its `base_url`).
    #[arg(long, value_name = "URL")]
    repo_url: String,
    /// The repository's name (keyring `apt/<name>-archive-keyring.gpg`).
    #[arg(long, default_value = "korg")]
    repo_name: String,
    /// apt suite.
    #[arg(long, default_value = "stable")]
    suite: String,
    /// apt component.
    #[arg(long, default_value = "main")]
    component: String,
    /// Base image.
    #[arg(long = "from", default_value = "debian:bookworm")]
    from: String,
    /// Image name (title label) [default: the first package's name].
    #[arg(long)]
    name: Option<String>,
    /// Add and switch to the unprivileged user `kbuild` (home /home/kbuild).
    #[arg(long, value_name = "UID:GID")]
    user: Option<String>,
    /// Write here instead of standard output (temp file + rename), and a Makefile
    /// beside it (with --set: a directory).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `korgpkg image build`.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// Packages: .deb files, or `NAME[=VERSION]` from `--repo`.
    #[arg(required_unless_present = "set")]
    packages: Vec<String>,
    /// Build every image of a set file (`images/korg.toml`) into `--out DIR/<name>-<tag>`.
    #[arg(long, value_name = "FILE")]
    set: Option<PathBuf>,
    /// A korgpkg repository to take packages from by name.
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Base image: an OCI layout `oci:DIR[:TAG]`, a registry image
    /// `docker://HOST[:PORT]/NAME[:TAG|@sha256:HEX]` (pulled into the cache, every blob
    /// checked against its digest) or a `docker-archive:FILE[:NAME:TAG]`; `ARCH=...`
    /// per platform.
    #[arg(
        long,
        value_name = "[ARCH=]oci:DIR[:TAG]|docker://REF|docker-archive:FILE"
    )]
    base: Vec<String>,
    /// Record this as the base's name (org.opencontainers.image.base.name) [default:
    /// the registry reference, layout or archive tag, or rootfs file name].
    #[arg(long, value_name = "REF")]
    base_name: Option<String>,
    /// Allow plain http (and unverified https) to a `docker://` base's registry other
    /// than 127.0.0.1.
    #[arg(long)]
    insecure_registry: bool,
    /// Base root filesystem tarball (tar, .tar.gz, .tar.zst), used as the base layer as
    /// is; `ARCH=FILE` per platform (`arm64=bookworm-arm64.tar`).
    #[arg(long, value_name = "[ARCH=]FILE")]
    base_rootfs: Vec<String>,
    /// Output: a directory (oci) or a file (docker-archive).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "oci")]
    format: FormatArg,
    /// Compression of the layers korgpkg writes.
    #[arg(long, value_enum, default_value = "gzip")]
    layer_compression: CompressionArg,
    /// Run as this unprivileged user (`kbuild`, home /home/kbuild), e.g. 1000:1000.
    #[arg(long, value_name = "UID:GID")]
    user: Option<String>,
    /// Working directory [default: /home/kbuild with --user, else /].
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Image name [default: the first package's name].
    #[arg(long)]
    name: Option<String>,
    /// Tag; repeatable [default: the first package's version].
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// org.opencontainers.image.source [default: the first package's upstream URL].
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// Platforms, `linux/ARCH` (GOARCH), comma-separated; several make an image index,
    /// with a base per architecture [default: the packages' architecture].
    #[arg(long, value_name = "linux/ARCH,...", value_delimiter = ',')]
    platform: Vec<String>,
    /// Machine-readable report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FormatArg {
    Oci,
    DockerArchive,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CompressionArg {
    Gzip,
    Zstd,
}

/// Default `--chunk-size`: 64 MiB.
const DEFAULT_CHUNK: u64 = 64 << 20;

/// `korgpkg image push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The image: an OCI layout directory or `oci:DIR[:TAG]` (with --set: the directory
    /// `image build --set` wrote).
    image: String,
    /// Destination `[docker://]HOST[:PORT]/NAME[:TAG]` [tag default: the layout's tag]
    /// (with --set: `HOST[:PORT][/PREFIX]`, each image going to `PREFIX/<name>:<tag>`).
    destination: String,
    /// Upload blobs larger than this many bytes in chunks of this size (POST, a PATCH
    /// with Content-Range per chunk, PUT ?digest=), streamed from the file; 0 uploads
    /// every blob in one request.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK)]
    chunk_size: u64,
    /// Push every image of a set file with all its tags.
    #[arg(long, value_name = "FILE")]
    set: Option<PathBuf>,
    /// Allow plain http (and unverified https) to a registry other than 127.0.0.1.
    #[arg(long)]
    insecure_registry: bool,
    /// Machine-readable report.
    #[arg(long)]
    json: bool,
}

/// The Debian architecture of a `linux/GOARCH[/VARIANT]` platform.
fn platform_deb_arch(platform: &str) -> Result<String, Error> {
    let arch = platform
        .strip_prefix("linux/")
        .map(|a| a.split('/').next().unwrap_or(a))
        .ok_or_else(|| Error::Usage(format!("--platform {platform:?}: expected linux/ARCH")))?;
    for deb in [
        "amd64", "arm64", "armhf", "armel", "i386", "ppc64el", "s390x", "riscv64",
    ] {
        if image::oci_arch(deb).is_some_and(|(a, _)| a == arch) {
            return Ok(deb.to_string());
        }
    }
    Err(Error::Usage(format!(
        "--platform {platform:?}: unknown architecture"
    )))
}

fn source_date_epoch() -> Result<Option<u64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH={v:?} is not a number"))),
        _ => Ok(None),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Usage(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Run an `image` subcommand.
pub fn run(cmd: &ImageCommand, ctx: &super::Context) -> Result<(), Error> {
    match cmd {
        ImageCommand::Build(args) => build(args, &cache_dir(ctx)),
        ImageCommand::Push(args) => push(args, ctx.global.quiet),
        ImageCommand::Containerfile(args) => containerfile(args, &ctx.specs, &ctx.templates),
    }
}

fn containerfile(
    args: &ContainerfileArgs,
    specs: &korgpkg::spec::SpecSet,
    templates: &korgpkg::templates::Templates,
) -> Result<(), Error> {
    use image::containerfile::MakeTarget;
    let request = |name: String, packages: Vec<String>, user: Option<&str>| {
        Ok::<_, Error>(image::containerfile::ContainerfileRequest {
            name,
            packages,
            base: args.from.clone(),
            repo_url: args.repo_url.clone(),
            repo_name: args.repo_name.clone(),
            suite: args.suite.clone(),
            component: args.component.clone(),
            user: user.map(User::parse).transpose()?,
        })
    };
    if let Some(set_file) = &args.set {
        let dir = args.out.clone().unwrap_or_default();
        let set = image::set::ImageSet::load(set_file)?;
        let mut targets = Vec::new();
        let mut files = Vec::new();
        for img in &set.images {
            let user = img.user.as_deref().or(args.user.as_deref());
            let req = request(img.name.clone(), img.packages.clone(), user)?;
            let text = image::containerfile::containerfile(&req, specs, templates)?;
            let target = MakeTarget::new(&img.name, &img.tags)?;
            files.push((dir.join(&target.containerfile), text));
            targets.push(target);
        }
        // Everything is rendered and checked before anything is written.
        let make = image::containerfile::makefile(&targets, templates)?;
        let make_path = dir.join("Makefile");
        check_makefile(&make_path)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
        for (path, text) in files {
            korgpkg::publish::write_atomic(&path, text.as_bytes())?;
        }
        return korgpkg::publish::write_atomic(&make_path, make.as_bytes());
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| args.packages[0].clone());
    let req = request(name.clone(), args.packages.clone(), args.user.as_deref())?;
    let text = image::containerfile::containerfile(&req, specs, templates)?;
    let Some(out) = &args.out else {
        print!("{text}");
        return Ok(());
    };
    let tags = if args.tags.is_empty() {
        vec!["latest".to_string()]
    } else {
        args.tags.clone()
    };
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Usage(format!("--out {}: not a file name", out.display())))?;
    let target = MakeTarget::new(&name, &tags)?.with_containerfile(&file_name)?;
    let make = image::containerfile::makefile(&[target], templates)?;
    let make_path = out
        .parent()
        .map(|p| p.join("Makefile"))
        .unwrap_or_else(|| PathBuf::from("Makefile"));
    check_makefile(&make_path)?;
    korgpkg::publish::write_atomic(out, text.as_bytes())?;
    korgpkg::publish::write_atomic(&make_path, make.as_bytes())
}

/// Refuse to overwrite a Makefile korgpkg did not write.
fn check_makefile(path: &std::path::Path) -> Result<(), Error> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if !text.starts_with(image::containerfile::MAKEFILE_MARK) {
            return Err(Error::Usage(format!(
                "{}: exists and was not written by korgpkg; write the Containerfile elsewhere",
                path.display()
            )));
        }
    } else if path.exists() {
        return Err(Error::Usage(format!(
            "{}: exists and is not a Makefile korgpkg wrote",
            path.display()
        )));
    }
    Ok(())
}

/// Split `[ARCH=]VALUE` where ARCH is an OCI architecture; returns the Debian arch.
fn arch_prefixed(text: &str) -> (Option<String>, &str) {
    if let Some((a, rest)) = text.split_once('=') {
        if let Ok(deb) = platform_deb_arch(&format!("linux/{a}")) {
            return (Some(deb), rest);
        }
    }
    (None, text)
}

/// The cache directory (`--cache-dir`, `$KORGPKG_CACHE_DIR`, the config file's, else
/// `~/.cache/korgpkg`); pulled bases go under `oci/`.
fn cache_dir(ctx: &super::Context) -> PathBuf {
    ctx.global
        .cache_dir
        .clone()
        .or(ctx.config.cache_dir.clone())
        .unwrap_or_else(korgpkg::fetch::Cache::default_dir)
}

fn build(args: &BuildArgs, cache: &std::path::Path) -> Result<(), Error> {
    let Some(set_file) = &args.set else {
        let report = build_one(args, cache)?;
        if args.json {
            return print_json(&report);
        }
        print_report(&report);
        return Ok(());
    };
    let set = image::set::ImageSet::load(set_file)?;
    let mut reports = Vec::new();
    for img in &set.images {
        let mut a = args.clone();
        a.set = None;
        a.packages = img.packages.clone();
        a.platform = img.platforms.clone();
        a.base = Vec::new();
        a.base_rootfs = Vec::new();
        for (arch, base) in &img.bases {
            if ["oci:", "docker://", "docker-archive:"]
                .iter()
                .any(|p| base.starts_with(p))
            {
                a.base.push(format!("{arch}={base}"));
            } else {
                a.base_rootfs.push(format!("{arch}={base}"));
            }
        }
        a.name = Some(img.name.clone());
        a.tags = img.tags.clone();
        a.user = img.user.clone().or(a.user);
        a.workdir = img.workdir.clone().or(a.workdir);
        a.out = if args.format == FormatArg::DockerArchive {
            args.out.join(format!("{}.tar", img.dir()))
        } else {
            args.out.join(img.dir())
        };
        let report = build_one(&a, cache)?;
        if !args.json {
            print_report(&report);
        }
        reports.push(report);
    }
    if args.json {
        return print_json(&reports);
    }
    Ok(())
}

fn print_report(report: &image::BuildReport) {
    println!(
        "{} {} ({})",
        report.out.display(),
        report.manifest,
        report.tags.join(", ")
    );
    for p in &report.platforms {
        println!("  {} manifest {}", p.platform, p.manifest);
        for l in &p.layers {
            println!("    {} {} layer {}", l.package, l.version, l.digest);
        }
    }
}

fn build_one(args: &BuildArgs, cache: &std::path::Path) -> Result<image::BuildReport, Error> {
    let is_file = |p: &str| p.ends_with(".deb") || std::path::Path::new(p).is_file();
    let arches: Vec<String> = if args.platform.is_empty() {
        match args.packages.iter().find(|p| is_file(p)) {
            Some(p) => {
                let a = image::package_arch(std::path::Path::new(p))?;
                vec![if a == "all" {
                    image::host_deb_arch().to_string()
                } else {
                    a
                }]
            }
            None => vec![image::host_deb_arch().to_string()],
        }
    } else {
        args.platform
            .iter()
            .map(|p| platform_deb_arch(p))
            .collect::<Result<_, _>>()?
    };
    let mut bases: Vec<(Option<String>, Base)> = Vec::new();
    for b in &args.base {
        let (arch, rest) = arch_prefixed(b);
        bases.push((arch, Base::parse(rest)?));
    }
    for b in &args.base_rootfs {
        let (arch, rest) = arch_prefixed(b);
        bases.push((arch, Base::Rootfs(PathBuf::from(rest))));
    }
    let mut platforms = Vec::new();
    for arch in &arches {
        let matching: Vec<&Base> = bases
            .iter()
            .filter(|(a, _)| a.as_deref().is_none_or(|a| a == arch))
            .map(|(_, b)| b)
            .collect();
        let base = match (matching.as_slice(), arches.len()) {
            ([one], _)
                if arches.len() == 1
                    || bases
                        .iter()
                        .any(|(a, _)| a.as_deref() == Some(arch.as_str())) =>
            {
                (*one).clone()
            }
            ([], _) => {
                return Err(Error::Usage(format!(
                    "no base for {arch}: name --base-rootfs {arch}=FILE or --base {arch}=oci:DIR"
                )))
            }
            _ => {
                return Err(Error::Usage(format!(
                    "name one base per platform for {arch} (--base-rootfs ARCH=FILE)"
                )))
            }
        };
        let mut packages = Vec::new();
        for p in &args.packages {
            if is_file(p) {
                let path = PathBuf::from(p);
                let a = image::package_arch(&path)?;
                if arches.len() == 1 || a == *arch || a == "all" {
                    packages.push(path);
                }
            } else {
                let repo = args.repo.as_ref().ok_or_else(|| {
                    Error::Usage(format!(
                        "{p}: not a .deb file; name packages by name only with --repo DIR"
                    ))
                })?;
                packages.push(image::resolve_package(repo, p, arch)?);
            }
        }
        platforms.push(PlatformInput { base, packages });
    }
    let req = BuildRequest {
        platforms,
        out: args.out.clone(),
        format: match args.format {
            FormatArg::Oci => OutputFormat::Oci,
            FormatArg::DockerArchive => OutputFormat::DockerArchive,
        },
        compression: match args.layer_compression {
            CompressionArg::Gzip => LayerCompression::Gzip,
            CompressionArg::Zstd => LayerCompression::Zstd,
        },
        user: args.user.as_deref().map(User::parse).transpose()?,
        workdir: args.workdir.clone(),
        name: args.name.clone(),
        tags: args.tags.clone(),
        source: args.source.clone(),
        source_date_epoch: source_date_epoch()?,
        base_name: args.base_name.clone(),
        cache_dir: cache.to_path_buf(),
        insecure_registry: args.insecure_registry,
    };
    image::build(&req)
}

fn push(args: &PushArgs, quiet: bool) -> Result<(), Error> {
    if let Some(set_file) = &args.set {
        let set = image::set::ImageSet::load(set_file)?;
        let prefix = args.destination.trim_end_matches('/');
        let mut reports = Vec::new();
        for img in &set.images {
            for tag in &img.tags {
                let report = image::push::push(&image::push::PushRequest {
                    layout: PathBuf::from(&args.image).join(img.dir()),
                    tag: Some(tag.clone()),
                    destination: format!("{prefix}/{}:{tag}", img.name),
                    insecure: args.insecure_registry,
                    progress: !quiet && !args.json,
                    chunk_size: (args.chunk_size > 0).then_some(args.chunk_size),
                })?;
                if !args.json {
                    println!("{} {}", report.reference, report.digest);
                }
                reports.push(report);
            }
        }
        if args.json {
            return print_json(&reports);
        }
        return Ok(());
    }
    let (dir, tag) = Base::oci_parts(&args.image)?;
    let report = image::push::push(&image::push::PushRequest {
        layout: dir,
        tag,
        destination: args.destination.clone(),
        insecure: args.insecure_registry,
        progress: !quiet && !args.json,
        chunk_size: (args.chunk_size > 0).then_some(args.chunk_size),
    })?;
    if args.json {
        return print_json(&report);
    }
    println!(
        "{} {} ({} blobs uploaded, {} already there)",
        report.reference,
        report.digest,
        report.uploaded.len(),
        report.existing.len()
    );
    Ok(())
}
