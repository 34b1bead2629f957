//! The `korgpkg` command line: parses arguments, loads config, specs and templates, runs
//! the library's pipeline and prints results for people or (`--json`) for machines.

use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use korgpkg::config::Config;
use korgpkg::fetch::{Cache, FetchOptions, Fetcher};
use korgpkg::package::{self, BuildOptions, DebCompression, Format, IpkOuter, RpmCompression};
use korgpkg::pipeline::{self, BuildRequest};
use korgpkg::source::{self, KeySource, Mirror, Release, Sources};
use korgpkg::spec::{Spec, SpecSet, Vars};
use korgpkg::templates::Templates;
use korgpkg::verify::Keyring;
use korgpkg::Error;

const EXAMPLES: &str = "\
Examples:
  korgpkg specs
  korgpkg list korg-clang-18
  korgpkg build korg-clang-18 --format deb
  korgpkg build korg-clang-18 --version 18.1.0-rc3 --arch aarch64 --out dist/
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --out dist/
  korgpkg inspect dist/korg-clang-18_18.1.8-1_amd64.deb --json
  korgpkg deps llvm-18.1.8-x86_64.tar.xz --target-distro ubuntu-24.04
  korgpkg kernel package --artifacts ./tuxmake-artifacts --format deb
  korgpkg completions bash > /etc/bash_completion.d/korgpkg

Exit codes: 0 success, 1 I/O error, 2 usage error, 3 bad spec/config/template,
4 bad input (tarball, package file), 5 verification failed (hash, signature, key),
6 network error.";

/// Turn kernel.org toolchains into verified .deb, .rpm and .ipk packages.
#[derive(Parser, Debug)]
#[command(name = "korgpkg", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Config file [default: $XDG_CONFIG_HOME/korgpkg/config.toml if it exists].
    #[arg(long, global = true, env = "KORGPKG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Extra specs directory; its *.toml override built-in specs of the same name.
    #[arg(long, global = true, env = "KORGPKG_SPECS_DIR", value_name = "DIR")]
    specs_dir: Option<PathBuf>,
    /// Extra templates directory; its *.hbs override built-in templates.
    #[arg(long, global = true, env = "KORGPKG_TEMPLATES_DIR", value_name = "DIR")]
    templates_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Mirror of kernel.org's pub/tools [default: https://mirrors.edge.kernel.org/pub/tools].
    #[arg(long, global = true, env = "KORGPKG_MIRROR", value_name = "URL")]
    mirror: Option<String>,
    /// Download cache [default: $XDG_CACHE_HOME/korgpkg].
    #[arg(long, global = true, env = "KORGPKG_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// OpenPGP keyring (armored or binary) with pinned signers' keys; repeatable.
    #[arg(long, global = true, value_name = "FILE")]
    keyring: Vec<PathBuf>,
    /// Where to fetch pinned keys not in a keyring (`<URL>/<KEYID>.asc`); "" = never fetch
    /// [default: kernel.org's pgpkeys repository].
    #[arg(long, global = true, env = "KORGPKG_KEYS_URL", value_name = "URL")]
    keys_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download, verify and package toolchains (or package a verified tarball on disk).
    #[command(after_help = "\
Examples:
  korgpkg build korg-clang-18
  korgpkg build korg-clang-18 korg-gcc-14-aarch64-linux --format deb --json
  korgpkg build korg-clang-18 --version 18.1.0-rc3 --arch aarch64 --dry-run
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz   # .tar.sign beside it
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --signature llvm-18.1.8-x86_64.tar.sign --sums sha256sums.asc
  korgpkg build korg-clang-18 --from llvm-18.1.0-rc3-aarch64.tar.gz --format rpm --rpm-compression gzip
  korgpkg build korg-gcc-14-aarch64-linux --from x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.xz --format ipk --ipk-outer tar
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --format deb --target-distro ubuntu-24.04
  SOURCE_DATE_EPOCH=1700000000 korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --json")]
    Build(BuildArgs),
    /// Print the dependencies derived from the ELF files of a tarball or directory.
    #[command(after_help = "\
Examples:
  korgpkg deps llvm-18.1.8-x86_64.tar.xz
  korgpkg deps llvm-18.1.8-x86_64.tar.xz --target-distro ubuntu-24.04 --json
  korgpkg deps x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.xz --package korg-gcc-14-aarch64-linux
  korgpkg deps /opt/llvm-18/bin --package korg-clang-18

The tarball is staged as `build` stages it but not verified: nothing is packaged.
rpm: what rpm's elfdeps -R prints; deb and ipk: sonames mapped to packages by
specs/distros/<distro>.toml (default debian-12 for deb, openembedded for ipk).")]
    Deps {
        /// An upstream tarball or a directory of files.
        source: PathBuf,
        /// The package whose spec applies (its [deps] table) [default: from the tarball name].
        #[arg(long)]
        package: Option<String>,
        /// Distro map for deb or ipk dependencies (`debian-12`, `ubuntu-24.04`, `openembedded`).
        #[arg(long, value_name = "DISTRO")]
        target_distro: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the versions and arches upstream offers, from verified sha256sums.asc files.
    #[command(after_help = "\
Examples:
  korgpkg list
  korgpkg list llvm
  korgpkg list korg-clang-18 --json
  korgpkg list korg-gcc-14-aarch64-linux --arch arm64")]
    List {
        /// A spec (`llvm`) or package (`korg-clang-18`); all specs if omitted.
        name: Option<String>,
        /// Only this upstream arch [default: all].
        #[arg(long)]
        arch: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the packages the specs offer.
    #[command(after_help = "Examples:\n  korgpkg specs\n  korgpkg specs --json")]
    Specs {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the metadata and file list of a .deb, .rpm or .ipk (any maker's).
    #[command(
        after_help = "Examples:\n  korgpkg inspect dist/korg-clang-18_18.1.8-1_amd64.deb\n  korgpkg inspect some.rpm --json"
    )]
    Inspect {
        /// The package file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Package a built Linux kernel (build tree or CI artifacts).
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  korgpkg completions bash > /etc/bash_completion.d/korgpkg\n  korgpkg completions zsh > \"${fpath[1]}/_korgpkg\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

// ---- korgpkg kernel (issue 6) -------------------------------------------------------

#[derive(Subcommand, Debug)]
enum KernelCommand {
    /// Make korg-linux-image-<rel> (and, from a build tree, korg-linux-headers-<rel>).
    #[command(after_help = "\
Examples:
  korgpkg kernel package --build-dir ~/linux/build --format deb
  korgpkg kernel package --build-dir build --src ~/linux --modules-dir staging --out dist/
  korgpkg kernel package --artifacts ./tuxmake-artifacts --format deb,rpm,ipk --json
  korgpkg kernel package --artifacts https://ci.example.org/builds/123/ --sums https://ci.example.org/builds/123/sha256sums.txt

Artifacts over HTTP(S) are downloaded into the cache and packaged only when every file
matches --sums (sha256sum format); a local artifacts directory is checked against --sums
when given. A build tree is the user's own and is packaged as it is.")]
    Package(KernelArgs),
}

#[derive(clap::Args, Debug)]
struct KernelArgs {
    /// A kernel build tree (`O=`): include/config/kernel.release, .config, System.map, image.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "artifacts",
        conflicts_with = "artifacts"
    )]
    build_dir: Option<PathBuf>,
    /// The kernel source tree, when built out of tree [default: --build-dir].
    #[arg(long, value_name = "DIR", requires = "build_dir")]
    src: Option<PathBuf>,
    /// Modules already installed with INSTALL_MOD_PATH (or lib/modules/<rel> itself)
    /// [default: run `make modules_install` in the build tree].
    #[arg(long, value_name = "DIR", requires = "build_dir")]
    modules_dir: Option<PathBuf>,
    /// A TuxMake-style artifacts directory or URL (metadata.json, image, modules.tar.xz, config, System.map).
    #[arg(long, value_name = "DIR|URL")]
    artifacts: Option<String>,
    /// sha256sum-format list covering the artifacts (required for a URL).
    #[arg(long, value_name = "FILE|URL", requires = "artifacts")]
    sums: Option<String>,
    /// Formats to write [default: all, or the config file's `formats`].
    #[arg(long, value_delimiter = ',')]
    format: Vec<Format>,
    /// Output directory [default: dist].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Package revision (deb/ipk `-N`, rpm Release) [default: 1].
    #[arg(long)]
    revision: Option<u32>,
    /// Compression of .deb members.
    #[arg(long)]
    deb_compression: Option<DebCompression>,
    /// Compression of the .rpm payload.
    #[arg(long)]
    rpm_compression: Option<RpmCompression>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn kernel_package(
    args: &KernelArgs,
    cli: &Cli,
    config: &Config,
    templates: &Templates,
) -> Result<(), Error> {
    use korgpkg::kernel::{self, KernelInput, KernelRequest};
    let defaults = BuildOptions::default();
    let input = match (&args.build_dir, &args.artifacts) {
        (Some(b), _) => KernelInput::BuildTree {
            build_dir: b.clone(),
            src_dir: args.src.clone(),
            modules_dir: args.modules_dir.clone(),
        },
        (None, Some(a)) => KernelInput::Artifacts {
            location: a.clone(),
            sums: args.sums.clone(),
        },
        (None, None) => return Err(Error::Usage("give --build-dir or --artifacts".into())),
    };
    let req = KernelRequest {
        input,
        formats: if args.format.is_empty() {
            config
                .formats
                .clone()
                .unwrap_or_else(|| Format::ALL.to_vec())
        } else {
            args.format.clone()
        },
        out_dir: args
            .out
            .clone()
            .or(config.out.clone())
            .unwrap_or_else(|| PathBuf::from("dist")),
        revision: args.revision.or(config.revision).unwrap_or(1),
        options: BuildOptions {
            deb_compression: args
                .deb_compression
                .or(config.deb_compression)
                .unwrap_or(defaults.deb_compression),
            rpm_compression: args
                .rpm_compression
                .or(config.rpm_compression)
                .unwrap_or(defaults.rpm_compression),
            zstd_level: config.zstd_level.unwrap_or(defaults.zstd_level),
            ..defaults
        },
        source_date_epoch: source_date_epoch()?,
        make: std::env::var("MAKE").unwrap_or_else(|_| "make".into()),
    };
    let remote = args.artifacts.as_deref().is_some_and(|a| a.contains("://"))
        || args.sums.as_deref().is_some_and(|s| s.contains("://"));
    let net = if remote {
        let terminal = !cli.quiet && std::io::stderr().is_terminal();
        Some(Net::new(cli, config, terminal && !args.json)?)
    } else {
        None
    };
    let report = kernel::build(&req, templates, net.as_ref().map(|n| &n.fetcher))?;
    if args.json {
        return print_json(&report);
    }
    for p in &report.packages {
        for o in &p.outputs {
            println!(
                "{} {} ({}, sha256 {})",
                o.format,
                o.path.display(),
                human_size(o.size),
                o.sha256
            );
        }
    }
    Ok(())
}

// ---- end korgpkg kernel ----------------------------------------------------------------

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// Packages to build, as `korgpkg specs` lists them (`korg-clang-18`).
    #[arg(required = true)]
    packages: Vec<String>,
    /// Package this tarball on disk instead of downloading (`llvm-18.1.8-x86_64.tar.xz`).
    #[arg(long, value_name = "TARBALL")]
    from: Option<PathBuf>,
    /// Exact upstream version to download (`18.1.0-rc3`) [default: newest].
    #[arg(long, value_name = "VERSION", conflicts_with = "from")]
    version: Option<String>,
    /// Upstream arch to download (`x86_64`, `aarch64`; crosstool: host `x86_64`, `arm64`)
    /// [default: this machine's].
    #[arg(long, conflicts_with = "from")]
    arch: Option<String>,
    /// Detached signature of the --from tarball [default: <name>.tar.sign beside it].
    #[arg(long, value_name = "FILE", requires = "from")]
    signature: Option<PathBuf>,
    /// Signed sums file listing the --from tarball [default: sha256sums.asc beside it, if any].
    #[arg(long, value_name = "FILE", requires = "from")]
    sums: Option<PathBuf>,
    /// Package a --from tarball that has no signature. Never needed for downloads.
    #[arg(long, requires = "from")]
    allow_unverified: bool,
    /// Formats, comma-separated or repeated [default: deb,rpm,ipk].
    #[arg(long, short, value_delimiter = ',', value_name = "FORMAT")]
    format: Vec<Format>,
    /// Output directory [default: dist].
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Package revision (deb/ipk `-N`, rpm Release) [default: 1].
    #[arg(long)]
    revision: Option<u32>,
    /// Compression of the .deb members [default: zstd].
    #[arg(long, value_enum)]
    deb_compression: Option<DebCompression>,
    /// Compression of the .rpm payload [default: zstd].
    #[arg(long, value_enum)]
    rpm_compression: Option<RpmCompression>,
    /// Outer container of the .ipk: ar (Yocto/OE opkg) or tar (OpenWrt <= 24.10) [default: ar].
    #[arg(long, value_enum)]
    ipk_outer: Option<IpkOuter>,
    /// zstd level for deb and rpm, 1-19 [default: 3, as dpkg-deb].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: Option<i32>,
    /// Distro map for dependencies derived from the ELF files, for the formats it is
    /// for (`debian-12`, `ubuntu-24.04`: deb; `openembedded`: ipk)
    /// [default: debian-12 for deb, openembedded for ipk].
    #[arg(long, value_name = "DISTRO")]
    target_distro: Option<String>,
    /// Show what would be built, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a machine-readable manifest of the outputs.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("korgpkg: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Usage(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Network, cache and key settings shared by `list` and `build`.
struct Net {
    mirror: Mirror,
    fetcher: Fetcher,
    keyring: Keyring,
    keys_url: Option<String>,
}

impl Net {
    fn new(cli: &Cli, config: &Config, progress: bool) -> Result<Self, Error> {
        let mirror = Mirror::new(
            cli.mirror
                .as_deref()
                .or(config.mirror.as_deref())
                .unwrap_or(source::DEFAULT_MIRROR),
        )?;
        let cache_dir = cli
            .cache_dir
            .clone()
            .or(config.cache_dir.clone())
            .unwrap_or_else(Cache::default_dir);
        let fetcher = Fetcher::new(
            Cache::new(cache_dir),
            FetchOptions {
                progress,
                ..FetchOptions::default()
            },
        )?;
        let mut keyring = Keyring::new();
        let files = config.keyrings.iter().flatten().chain(&cli.keyring);
        for file in files {
            keyring.extend(Keyring::from_file(file)?);
        }
        let keys_url = cli
            .keys_url
            .clone()
            .or(config.keys_url.clone())
            .unwrap_or_else(|| source::DEFAULT_KEYS_URL.to_string());
        Ok(Net {
            mirror,
            fetcher,
            keyring,
            keys_url: (!keys_url.is_empty()).then_some(keys_url),
        })
    }

    fn sources<'a>(&'a self, templates: &'a Templates) -> Sources<'a> {
        Sources {
            mirror: self.mirror.clone(),
            fetcher: &self.fetcher,
            keys: KeySource::new(self.keyring.clone(), self.keys_url.clone(), &self.fetcher),
            templates,
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let (config, _config_path) = Config::load(cli.config.as_deref())?;
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "korgpkg",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let templates_dir = cli.templates_dir.clone().or(config.templates_dir.clone());
    let specs_dir = cli.specs_dir.clone().or(config.specs_dir.clone());
    let templates = Templates::load(templates_dir.as_deref())?;
    let specs = SpecSet::load(specs_dir.as_deref(), &templates)?;
    let terminal = !cli.quiet && std::io::stderr().is_terminal();

    match &cli.command {
        Command::Completions { .. } => Ok(()),
        Command::Specs { json } => {
            let rows: Vec<_> = specs.specs().iter().map(|s| s.summary_row()).collect();
            if *json {
                return print_json(&rows);
            }
            for r in rows {
                println!("{:<28} {}", r.package, r.summary);
                println!(
                    "{:<28} spec {} ({}), arches {}",
                    "",
                    r.spec,
                    r.source,
                    r.arches.join(", ")
                );
                println!("{:<28} from {}", "", r.tarball);
                println!("{:<28} installs to {}", "", r.prefix);
            }
            Ok(())
        }
        Command::List { name, arch, json } => {
            let net = Net::new(&cli, &config, terminal && !json)?;
            list(
                &net,
                &specs,
                &templates,
                name.as_deref(),
                arch.as_deref(),
                *json,
            )
        }
        Command::Inspect { file, json } => {
            let info = package::inspect(file)?;
            if *json {
                return print_json(&info);
            }
            println!("Format: {}", info.format);
            println!("Name: {}", info.name);
            println!("Version: {}", info.version);
            println!("Architecture: {}", info.arch);
            for (k, v) in &info.fields {
                println!("{k}: {}", v.replace('\n', "\n  "));
            }
            for (k, v) in &info.relations {
                println!("{k}: {}", v.join(", "));
            }
            println!("Files:");
            for f in &info.files {
                let target = f
                    .target
                    .as_ref()
                    .map(|t| format!(" -> {t}"))
                    .unwrap_or_default();
                println!(
                    "  {:?} {:04o} {}/{} {:>10} {}{}",
                    f.kind, f.mode, f.user, f.group, f.size, f.path, target
                );
            }
            Ok(())
        }
        Command::Deps {
            source,
            package,
            target_distro,
            json,
        } => {
            let report = pipeline::deps(
                &specs,
                &templates,
                source,
                package.as_deref(),
                target_distro.as_deref(),
            )?;
            let first_error = |report: pipeline::DepsReport| match report
                .formats
                .into_iter()
                .find_map(|f| f.failure)
            {
                Some(e) => Err(e),
                None => Ok(()),
            };
            if *json {
                print_json(&report)?;
                return first_error(report);
            }
            println!(
                "{} ELF file(s) in {}",
                report.files.len(),
                report.source.display()
            );
            for f in &report.files {
                println!(
                    "  {} ({}-bit {}): needs {}",
                    f.path,
                    f.class,
                    f.machine,
                    if f.needed.is_empty() {
                        "nothing".to_string()
                    } else {
                        f.needed.join(", ")
                    }
                );
            }
            for fd in &report.formats {
                let distro = fd
                    .distro
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                if let Some(e) = &fd.error {
                    println!("{}{distro}: error: {e}", fd.format);
                } else if fd.relations.is_empty() {
                    println!("{}{distro}: no dependencies", fd.format);
                }
                for (field, list) in &fd.relations {
                    println!("{}{distro} {field}: {}", fd.format, list.join(", "));
                }
            }
            first_error(report)
        }
        Command::Kernel(KernelCommand::Package(args)) => {
            kernel_package(args, &cli, &config, &templates)
        }
        Command::Build(args) => {
            let net = Net::new(&cli, &config, terminal && !args.json)?;
            build(args, &config, &net, &specs, &templates, terminal)
        }
    }
}

/// The specs (with the variables a package name fixes) that `name` selects.
fn select<'s>(specs: &'s SpecSet, name: Option<&str>) -> Result<Vec<(&'s Spec, Vars)>, Error> {
    match name {
        None => Ok(specs.specs().iter().map(|s| (s, Vars::new())).collect()),
        Some(n) => match specs.get(n) {
            Some(spec) => Ok(vec![(spec, Vars::new())]),
            None => Ok(vec![specs.find_package(n)?]),
        },
    }
}

fn list(
    net: &Net,
    specs: &SpecSet,
    templates: &Templates,
    name: Option<&str>,
    arch: Option<&str>,
    json: bool,
) -> Result<(), Error> {
    let sources = net.sources(templates);
    let mut all: Vec<Release> = Vec::new();
    for (spec, mut known) in select(specs, name)? {
        if let Some(a) = arch {
            if !spec.arches.contains_key(a) {
                return Err(Error::Usage(format!(
                    "spec {} has no arch {a} (it has {})",
                    spec.name,
                    spec.arches.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            known.insert("arch".into(), a.to_string());
        }
        all.extend(source::discover(
            spec,
            &known,
            &sources.mirror,
            sources.fetcher,
            &sources.keys,
            templates,
        )?);
    }
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        println!("no releases found on {}", net.mirror.base());
        return Ok(());
    }
    for (package, versions) in source::by_package(&all) {
        println!("{package}");
        for (version, arches) in versions.iter().rev() {
            println!("  {version:<16} {}", arches.join(" "));
        }
    }
    Ok(())
}

/// Read `SOURCE_DATE_EPOCH` if set.
fn source_date_epoch() -> Result<Option<u64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.trim().parse::<u64>().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        })?)),
        _ => Ok(None),
    }
}

fn build(
    args: &BuildArgs,
    config: &Config,
    net: &Net,
    specs: &SpecSet,
    templates: &Templates,
    terminal: bool,
) -> Result<(), Error> {
    let defaults = BuildOptions::default();
    let formats = if !args.format.is_empty() {
        args.format.clone()
    } else {
        config
            .formats
            .clone()
            .unwrap_or_else(|| Format::ALL.to_vec())
    };
    let template = BuildRequest {
        package: String::new(),
        tarball: PathBuf::new(),
        tarball_name: None,
        verification: None,
        formats,
        out_dir: args
            .out
            .clone()
            .or(config.out.clone())
            .unwrap_or_else(|| PathBuf::from("dist")),
        revision: args.revision.or(config.revision).unwrap_or(1),
        options: BuildOptions {
            deb_compression: args
                .deb_compression
                .or(config.deb_compression)
                .unwrap_or(defaults.deb_compression),
            rpm_compression: args
                .rpm_compression
                .or(config.rpm_compression)
                .unwrap_or(defaults.rpm_compression),
            ipk_outer: args
                .ipk_outer
                .or(config.ipk_outer)
                .unwrap_or(defaults.ipk_outer),
            zstd_level: args
                .zstd_level
                .or(config.zstd_level)
                .unwrap_or(defaults.zstd_level),
        },
        source_date_epoch: source_date_epoch()?,
        progress: terminal && !args.json,
        target_distro: args.target_distro.clone(),
    };
    let sources = net.sources(templates);
    let (requests, releases) = match &args.from {
        Some(from) => (
            vec![local_request(args, from, specs, &sources, template)?],
            Vec::new(),
        ),
        None => remote_requests(args, specs, &sources, template)?,
    };

    if args.dry_run {
        let plans = requests
            .iter()
            .map(|r| pipeline::plan(specs, templates, r))
            .collect::<Result<Vec<_>, _>>()?;
        if args.json {
            let rows: Vec<serde_json::Value> = plans
                .iter()
                .enumerate()
                .map(|(i, plan)| {
                    let mut v = serde_json::to_value(plan).unwrap_or_default();
                    if let (Some(r), Some(obj)) = (releases.get(i), v.as_object_mut()) {
                        obj.insert(
                            "release".into(),
                            serde_json::to_value(r).unwrap_or_default(),
                        );
                    }
                    v
                })
                .collect();
            return if rows.len() == 1 {
                print_json(&rows[0])
            } else {
                print_json(&rows)
            };
        }
        for (i, plan) in plans.iter().enumerate() {
            let (origin, check) = match releases.get(i) {
                Some(r) => (
                    r.url.clone(),
                    format!(
                        " (sha256 {} from sums signed by {}; .tar.sign checked when built)",
                        r.sha256, r.sums_signer
                    ),
                ),
                None if plan.verified => (plan.tarball.display().to_string(), String::new()),
                None => (
                    plan.tarball.display().to_string(),
                    " (UNVERIFIED)".to_string(),
                ),
            };
            println!(
                "would build {} {} (upstream {}) from {}{}, top directory {:?} → {}",
                plan.package,
                plan.version,
                plan.upstream_version,
                origin,
                check,
                plan.top_dir,
                plan.prefix
            );
            for o in &plan.outputs {
                println!("  {} {}", o.format, o.path.display());
            }
        }
        return Ok(());
    }
    let mut reports = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        match pipeline::build(specs, templates, req) {
            Ok(r) => reports.push(r),
            Err(e) => {
                if matches!(e, Error::Verify { .. }) && releases.get(i).is_some() {
                    // A downloaded tarball whose signature failed is not kept for reuse.
                    let _ = std::fs::remove_file(&req.tarball);
                }
                return Err(e);
            }
        }
    }
    if args.json {
        return if reports.len() == 1 {
            print_json(&reports[0])
        } else {
            print_json(&reports)
        };
    }
    for report in &reports {
        for o in &report.outputs {
            println!(
                "{} {} ({}, sha256 {})",
                o.format,
                o.path.display(),
                human_size(o.size),
                o.sha256
            );
        }
    }
    Ok(())
}

/// A build of a tarball on disk: verified by its `.tar.sign` (and sums file, if any).
fn local_request(
    args: &BuildArgs,
    from: &std::path::Path,
    specs: &SpecSet,
    sources: &Sources<'_>,
    mut req: BuildRequest,
) -> Result<BuildRequest, Error> {
    let [package] = args.packages.as_slice() else {
        return Err(Error::Usage(
            "--from packages one tarball: name exactly one package".into(),
        ));
    };
    if !from.is_file() {
        return Err(Error::input(from, "no such file"));
    }
    let (spec, _) = specs.find_package(package)?;
    let file_name = from
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::input(from, "not a file name"))?;
    req.package = package.clone();
    req.tarball = from.to_path_buf();
    // Name, arch and version mistakes are reported before signature problems.
    pipeline::plan(specs, sources.templates, &req)?;
    let vars = spec.match_tarball(file_name).unwrap_or_default();
    if !args.allow_unverified || args.signature.is_some() {
        req.verification = sources.local(
            spec,
            &vars,
            from,
            args.signature.as_deref(),
            args.sums.as_deref(),
        )?;
        if req.verification.is_none() && !args.allow_unverified {
            return Err(Error::verify(
                from.display().to_string(),
                "no detached signature (.tar.sign) beside it: give --signature FILE, \
                 or --allow-unverified to package unverified bytes",
            ));
        }
    }
    Ok(req)
}

/// Builds of releases found on the mirror, downloaded in parallel into the cache.
fn remote_requests(
    args: &BuildArgs,
    specs: &SpecSet,
    sources: &Sources<'_>,
    template: BuildRequest,
) -> Result<(Vec<BuildRequest>, Vec<Release>), Error> {
    let mut picked: Vec<Release> = Vec::new();
    for package in &args.packages {
        let (spec, mut known) = specs.find_package(package)?;
        let arch = match &args.arch {
            Some(a) => a.clone(),
            None => source::host_arch(spec).ok_or_else(|| {
                Error::Usage(format!(
                    "spec {} has no build for this machine's arch; pass --arch ({})",
                    spec.name,
                    spec.arches.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?,
        };
        known.insert("arch".into(), arch.clone());
        let releases = source::discover(
            spec,
            &known,
            &sources.mirror,
            sources.fetcher,
            &sources.keys,
            sources.templates,
        )?;
        let releases: Vec<Release> = releases
            .into_iter()
            .filter(|r| &r.package == package)
            .collect();
        let release = source::pick(&releases, args.version.as_deref()).ok_or_else(|| {
            Error::Usage(format!(
                "no release of {package}{} for arch {arch} on {} (`korgpkg list {package}` shows what there is)",
                args.version
                    .as_deref()
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default(),
                sources.mirror.base()
            ))
        })?;
        picked.push(release.clone());
    }
    if args.dry_run {
        // Nothing is downloaded: plan against the names the verified sums file lists.
        let requests = picked
            .iter()
            .map(|r| BuildRequest {
                package: r.package.clone(),
                tarball: PathBuf::from(&r.file_name),
                tarball_name: Some(r.file_name.clone()),
                ..template.clone()
            })
            .collect();
        return Ok((requests, picked));
    }
    let fetched = sources.fetch(specs, &picked)?;
    let requests = picked
        .iter()
        .zip(fetched)
        .map(|(release, (path, verification))| BuildRequest {
            package: release.package.clone(),
            tarball: path,
            tarball_name: Some(release.file_name.clone()),
            verification: Some(verification),
            ..template.clone()
        })
        .collect();
    Ok((requests, picked))
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
