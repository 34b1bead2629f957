//! The `korgpkg` command line: parses arguments, loads config, specs and templates, runs
//! the library's pipeline and prints results for people or (`--json`) for machines.

use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use korgpkg::config::Config;
use korgpkg::deps::UnmappedPolicy;
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
  korgpkg key generate --name 'korg <korg@example.org>' --out keys/
  korgpkg repo init /srv/korg --keys keys/
  korgpkg publish --repo /srv/korg dist/
  korgpkg serve /srv/korg --listen 127.0.0.1:8080
  korgpkg kernel package --artifacts ./tuxmake-artifacts --format deb
  korgpkg completions bash > /etc/bash_completion.d/korgpkg
  korgpkg obs export korg-clang-18 --out obs/korg-clang-18
  korgpkg obs push korg-clang-18 --api https://api.opensuse.org --project home:me:korg

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
specs/distros/<distro>.toml (default debian-12 for deb, openembedded for ipk).
Every soname no map knows is named in one error (exit 4), or a warning with
--unmapped warn.")]
    Deps {
        /// An upstream tarball or a directory of files.
        source: PathBuf,
        /// The package whose spec applies (its [deps] table) [default: from the tarball name].
        #[arg(long)]
        package: Option<String>,
        /// Distro map for deb or ipk dependencies (`debian-12`, `ubuntu-24.04`,
        /// `openembedded`, `openwrt`).
        #[arg(long, value_name = "DISTRO")]
        target_distro: Option<String>,
        /// Sonames no distro map knows: an error, or a warning [default: error].
        #[arg(long, value_enum, value_name = "POLICY")]
        unmapped: Option<UnmappedPolicy>,
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
    /// Generate repository signing keys (OpenPGP and usign).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Publish packages into a signed apt, dnf and opkg repository.
    #[command(after_help = "\
Examples:
  korgpkg publish --repo /srv/korg dist/*.deb dist/*.rpm dist/*.ipk
  korgpkg publish --repo /srv/korg --suite testing dist/korg-clang-18_18.1.8-1_amd64.deb
  KORGPKG_PASSPHRASE=... korgpkg publish --repo /srv/korg --passphrase-env KORGPKG_PASSPHRASE dist/")]
    Publish(PublishArgs),
    /// Create, list and prune repositories.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Serve a directory over HTTP (static, read-only; for tests and local use).
    #[command(after_help = "Examples:\n  korgpkg serve /srv/korg --listen 127.0.0.1:8080")]
    Serve {
        /// The directory to serve.
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Package a built Linux kernel (build tree or CI artifacts).
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Hand packages to Open Build Service: package sources, push, build results.
    #[command(subcommand, after_help = OBS_EXAMPLES)]
    Obs(ObsCommand),
    /// Generate a soname → package map from a distribution's Contents index.
    #[command(subcommand)]
    DistroMap(DistroMapCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  korgpkg completions bash > /etc/bash_completion.d/korgpkg\n  korgpkg completions zsh > \"${fpath[1]}/_korgpkg\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum DistroMapCommand {
    /// Write specs/distros/<name>.toml from a Contents-<arch> index, dpkg
    /// symbols/shlibs files and a hand-kept base map.
    #[command(after_help = "\
Examples:
  korgpkg distro-map generate --contents http://deb.debian.org/debian/dists/bookworm/main/Contents-amd64.gz \\
      --shlibs /var/lib/dpkg/info --base specs/distros/base/debian-12.toml --out specs/distros/debian-12.toml
  korgpkg distro-map generate --contents Contents-amd64.gz --summary 'My distro' --out my.toml")]
    Generate {
        /// The Contents-<arch> index: a path or an http(s)/file URL (gzip, xz or plain).
        #[arg(long, value_name = "FILE|URL")]
        contents: String,
        /// Multiarch triplet whose lib/ and usr/lib/ directories count (repeatable).
        #[arg(long, value_name = "TRIPLET", default_value = "x86_64-linux-gnu")]
        triplet: Vec<String>,
        /// dpkg control files for minimum versions: a directory of *.symbols and
        /// *.shlibs (`/var/lib/dpkg/info`) or one file (repeatable).
        #[arg(long, value_name = "PATH")]
        shlibs: Vec<PathBuf>,
        /// A map whose interpreters and soname rules win over the generated ones.
        #[arg(long, value_name = "FILE")]
        base: Option<PathBuf>,
        /// The map's summary [default: the base map's].
        #[arg(long)]
        summary: Option<String>,
        /// Where to write the map.
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Make an OpenPGP v4 signing key and a usign key for OpenWrt feeds.
    #[command(after_help = "\
Examples:
  korgpkg key generate --name 'korg packages <korg@example.org>' --out keys/
  korgpkg key generate --name 'korg packages' --algo rsa4096 --out keys/
  KEYPASS=secret korgpkg key generate --name korg --passphrase-env KEYPASS --out keys/")]
    Generate {
        /// User ID of the OpenPGP key (`Name <email>`).
        #[arg(long)]
        name: String,
        /// Directory for the key files (created; existing keys are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// OpenPGP key algorithm.
        #[arg(long, value_enum, default_value = "ed25519")]
        algo: korgpkg::signing::KeyAlgo,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Where the OpenPGP secret key's passphrase comes from (never the command line).
#[derive(clap::Args, Debug, Clone)]
struct PassphraseArgs {
    /// Read the passphrase from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "passphrase_file")]
    passphrase_env: Option<String>,
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    fn read(&self) -> Result<Option<String>, Error> {
        korgpkg::signing::read_passphrase(
            self.passphrase_env.as_deref(),
            self.passphrase_file.as_deref(),
        )
    }
}

#[derive(clap::Args, Debug)]
struct PublishArgs {
    /// The repository directory (see `korgpkg repo init`).
    #[arg(long)]
    repo: PathBuf,
    /// apt suite to publish into [default: the first suite of the definition].
    #[arg(long)]
    suite: Option<String>,
    /// Package files, or directories of build outputs.
    #[arg(required = true)]
    packages: Vec<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum RepoCommand {
    /// Write a repository definition (korgpkg-repo.toml) and an empty repository.
    #[command(after_help = "\
Examples:
  korgpkg repo init /srv/korg --keys keys/
  korgpkg repo init /srv/korg --keys keys/ --suite stable --suite testing --arch amd64 --arch arm64")]
    Init {
        /// The repository directory.
        dir: PathBuf,
        /// Key directory made by `korgpkg key generate`.
        #[arg(long)]
        keys: PathBuf,
        /// apt suites (repeatable) [default: stable].
        #[arg(long)]
        suite: Vec<String>,
        /// Debian arches (repeatable) [default: amd64, arm64].
        #[arg(long)]
        arch: Vec<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// List the packages in a repository.
    #[command(
        after_help = "Examples:\n  korgpkg repo list /srv/korg\n  korgpkg repo list /srv/korg --json"
    )]
    List {
        /// The repository directory.
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove packages (by name, or name=version) and re-sign the indexes.
    #[command(
        after_help = "Examples:\n  korgpkg repo remove /srv/korg korg-clang-18\n  korgpkg repo remove /srv/korg korg-clang-18=18.1.8-1 --format deb --suite testing"
    )]
    Remove {
        /// The repository directory.
        dir: PathBuf,
        /// `name` or `name=version`.
        #[arg(required = true)]
        packages: Vec<String>,
        /// Only this format.
        #[arg(long)]
        format: Option<Format>,
        /// Only this apt suite.
        #[arg(long)]
        suite: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

/// Which upstream release to use: downloaded (newest, or `--version`/`--arch`) or a
/// tarball on disk (`--from`, verified by its signature). Shared by `build` and `obs`.
#[derive(clap::Args, Debug, Clone)]
struct SourceArgs {
    /// Use this tarball on disk instead of downloading (`llvm-18.1.8-x86_64.tar.xz`).
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
    /// Accept a --from tarball that has no signature. Never needed for downloads.
    #[arg(long, requires = "from")]
    allow_unverified: bool,
}

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// Packages to build, as `korgpkg specs` lists them (`korg-clang-18`).
    #[arg(required = true)]
    packages: Vec<String>,
    #[command(flatten)]
    source: SourceArgs,
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
    /// gzip level for the ipk (and gzip deb/rpm), 1-9 [default: 6].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    gzip_level: Option<u32>,
    /// Distro map for dependencies derived from the ELF files, for the formats it is
    /// for (`debian-12`, `ubuntu-24.04`: deb; `openembedded`, `openwrt`: ipk)
    /// [default: debian-12 for deb; openwrt for --ipk-outer tar, else openembedded].
    #[arg(long, value_name = "DISTRO")]
    target_distro: Option<String>,
    /// Sonames no distro map knows: fail naming all of them, or warn and leave them
    /// out [default: error].
    #[arg(long, value_enum, value_name = "POLICY")]
    unmapped: Option<UnmappedPolicy>,
    /// Show what would be built, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a machine-readable manifest of the outputs.
    #[arg(long)]
    json: bool,
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
        formats: formats(&args.format, config),
        out_dir: out_dir(args.out.as_ref(), config),
        revision: args.revision.or(config.revision).unwrap_or(1),
        options: build_options(
            args.deb_compression,
            args.rpm_compression,
            None,
            None,
            None,
            config,
        ),
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
        print_outputs(&p.outputs);
    }
    Ok(())
}

// ---- end korgpkg kernel ----------------------------------------------------------------

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
            unmapped,
            json,
        } => {
            let report = pipeline::deps(
                &specs,
                &templates,
                source,
                package.as_deref(),
                target_distro.as_deref(),
            )?;
            let warn = unmapped.or(config.unmapped).unwrap_or_default() == UnmappedPolicy::Warn;
            let first_error = |report: pipeline::DepsReport| match report.unmapped_error() {
                Some(e) if warn => {
                    eprintln!("warning: {e}");
                    Ok(())
                }
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
                for u in &fd.unmapped {
                    println!(
                        "{}{distro}: unmapped: {} (needed by {})",
                        fd.format, u.soname, u.needed_by
                    );
                }
                if fd.relations.is_empty() {
                    println!("{}{distro}: no dependencies", fd.format);
                }
                for (field, list) in &fd.relations {
                    println!("{}{distro} {field}: {}", fd.format, list.join(", "));
                }
            }
            first_error(report)
        }
        Command::Build(args) => {
            let net = Net::new(&cli, &config, terminal && !args.json)?;
            build(args, &config, &net, &specs, &templates, terminal)
        }
        Command::Kernel(KernelCommand::Package(args)) => {
            kernel_package(args, &cli, &config, &templates)
        }
        Command::Obs(command) => obs_command(command, &cli, &config, &specs, &templates, terminal),
        Command::Key(cmd) => key_command(cmd),
        Command::Publish(args) => publish_command(args, &templates),
        Command::Repo(cmd) => repo_command(cmd, &templates),
        Command::Serve { dir, listen } => korgpkg::publish::serve::serve(dir, listen),
        Command::DistroMap(DistroMapCommand::Generate {
            contents,
            triplet,
            shlibs,
            base,
            summary,
            out,
        }) => {
            let opts = korgpkg::distromap::GenerateOptions {
                contents: contents.clone(),
                triplets: triplet.clone(),
                shlibs: shlibs.clone(),
                base: base.clone(),
                summary: summary.clone(),
                command: std::iter::once("korgpkg".to_string())
                    .chain(std::env::args().skip(1).map(|a| {
                        let a = a.replace('\n', " ");
                        if a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                            format!("'{}'", a.replace('\'', "'\\''"))
                        } else {
                            a
                        }
                    }))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            korgpkg::distromap::write(out, &korgpkg::distromap::generate(&opts)?)
        }
    }
}

fn key_command(cmd: &KeyCommand) -> Result<(), Error> {
    let KeyCommand::Generate {
        name,
        out,
        algo,
        passphrase,
        json,
    } = cmd;
    let pass = passphrase.read()?;
    let keys = korgpkg::signing::generate(name, *algo, pass.as_deref(), out)?;
    if *json {
        return print_json(&keys);
    }
    println!("OpenPGP key {}", keys.fingerprint);
    println!("usign key {}", keys.usign_fingerprint);
    for f in &keys.files {
        println!("  {}", f.display());
    }
    Ok(())
}

fn publish_command(args: &PublishArgs, templates: &Templates) -> Result<(), Error> {
    use korgpkg::publish;
    let pass = args.passphrase.read()?;
    let report = publish::publish(
        &args.repo,
        args.suite.as_deref(),
        &args.packages,
        pass,
        source_date_epoch()?,
        templates,
    )?;
    if args.json {
        return print_json(&report);
    }
    for p in &report.added {
        println!("added {} {} {} ({})", p.format, p.name, p.version, p.arch);
    }
    for p in &report.unchanged {
        println!(
            "unchanged {} {} {} ({})",
            p.format, p.name, p.version, p.arch
        );
    }
    println!("generation {}", report.generation);
    Ok(())
}

fn repo_command(cmd: &RepoCommand, templates: &Templates) -> Result<(), Error> {
    use korgpkg::publish;
    match cmd {
        RepoCommand::Init {
            dir,
            keys,
            suite,
            arch,
            passphrase,
        } => {
            let pass = passphrase.read()?;
            publish::init(
                dir,
                keys,
                suite,
                arch,
                pass,
                source_date_epoch()?,
                templates,
            )?;
            println!("initialized {}", dir.display());
            Ok(())
        }
        RepoCommand::List { dir, json } => {
            let rows = publish::list(dir)?;
            if *json {
                return print_json(&rows);
            }
            for p in rows {
                let suite = p
                    .suite
                    .as_deref()
                    .map(|s| format!(" [{s}]"))
                    .unwrap_or_default();
                println!(
                    "{} {} {} {}{} {}",
                    p.format, p.name, p.version, p.arch, suite, p.path
                );
            }
            Ok(())
        }
        RepoCommand::Remove {
            dir,
            packages,
            format,
            suite,
            passphrase,
        } => {
            let pass = passphrase.read()?;
            let removed = publish::remove(
                dir,
                packages,
                *format,
                suite.as_deref(),
                pass,
                source_date_epoch()?,
                templates,
            )?;
            for p in removed {
                println!("removed {} {} {} ({})", p.format, p.name, p.version, p.arch);
            }
            Ok(())
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

/// The formats to write: the flag's, else the config file's, else all.
fn formats(flag: &[Format], config: &Config) -> Vec<Format> {
    if flag.is_empty() {
        config
            .formats
            .clone()
            .unwrap_or_else(|| Format::ALL.to_vec())
    } else {
        flag.to_vec()
    }
}

/// The output directory: the flag's, else the config file's, else `dist`.
fn out_dir(flag: Option<&PathBuf>, config: &Config) -> PathBuf {
    flag.or(config.out.as_ref())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("dist"))
}

/// Per-format settings: each flag, else the config file, else the default.
fn build_options(
    deb: Option<DebCompression>,
    rpm: Option<RpmCompression>,
    ipk: Option<IpkOuter>,
    zstd_level: Option<i32>,
    gzip_level: Option<u32>,
    config: &Config,
) -> BuildOptions {
    let defaults = BuildOptions::default();
    BuildOptions {
        deb_compression: deb
            .or(config.deb_compression)
            .unwrap_or(defaults.deb_compression),
        rpm_compression: rpm
            .or(config.rpm_compression)
            .unwrap_or(defaults.rpm_compression),
        ipk_outer: ipk.or(config.ipk_outer).unwrap_or(defaults.ipk_outer),
        zstd_level: zstd_level
            .or(config.zstd_level)
            .unwrap_or(defaults.zstd_level),
        gzip_level: gzip_level
            .or(config.gzip_level)
            .unwrap_or(defaults.gzip_level),
    }
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
    let template = BuildRequest {
        package: String::new(),
        tarball: PathBuf::new(),
        tarball_name: None,
        verification: None,
        formats: formats(&args.format, config),
        out_dir: out_dir(args.out.as_ref(), config),
        revision: args.revision.or(config.revision).unwrap_or(1),
        options: build_options(
            args.deb_compression,
            args.rpm_compression,
            args.ipk_outer,
            args.zstd_level,
            args.gzip_level,
            config,
        ),
        source_date_epoch: source_date_epoch()?,
        progress: terminal && !args.json,
        target_distro: args.target_distro.clone(),
        unmapped: args.unmapped.or(config.unmapped).unwrap_or_default(),
    };
    let sources = net.sources(templates);
    let (requests, releases) = match &args.source.from {
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
    for report in reports.iter().filter(|r| !r.unmapped.is_empty()) {
        eprintln!(
            "warning: {}: {}",
            report.package,
            korgpkg::deps::unmapped_message(&report.unmapped)
        );
    }
    if args.json {
        return if reports.len() == 1 {
            print_json(&reports[0])
        } else {
            print_json(&reports)
        };
    }
    for report in &reports {
        print_outputs(&report.outputs);
    }
    Ok(())
}

/// One line per written package: format, path, size and sha256.
fn print_outputs(outputs: &[korgpkg::package::Output]) {
    for o in outputs {
        println!(
            "{} {} ({}, sha256 {})",
            o.format,
            o.path.display(),
            human_size(o.size),
            o.sha256
        );
    }
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
    if !args.source.allow_unverified || args.source.signature.is_some() {
        req.verification = sources.local(
            spec,
            &vars,
            from,
            args.source.signature.as_deref(),
            args.source.sums.as_deref(),
        )?;
        if req.verification.is_none() && !args.source.allow_unverified {
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
        let arch = match &args.source.arch {
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
        let release = source::pick(&releases, args.source.version.as_deref()).ok_or_else(|| {
            Error::Usage(format!(
                "no release of {package}{} for arch {arch} on {} (`korgpkg list {package}` shows what there is)",
                args.source.version
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

// ---------------------------------------------------------------------------------------
// `korgpkg obs`: Open Build Service hand-off (src/obs.rs).

const OBS_EXAMPLES: &str = "\
Examples:
  korgpkg obs export korg-clang-18 --out obs/korg-clang-18
  korgpkg obs export korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --out obs/korg-clang-18
  korgpkg obs project --project home:me:korg --maintainer me --out obs/project
  korgpkg obs push korg-clang-18 --api https://api.opensuse.org --project home:me:korg --dry-run
  OBS_USER=me OBS_PASSWORD=... korgpkg obs push korg-clang-18 --project home:me:korg
  korgpkg obs status --project home:me:korg --json

Credentials: OBS_USER and OBS_PASSWORD, else user= and pass= in the [<api>] section
of osc's own file (--oscrc, $OSC_CONFIG, ~/.config/osc/oscrc or ~/.oscrc). The API is
--api, $OBS_API, or oscrc's [general] apiurl; only https:// (http:// only to 127.0.0.1).
API errors (401, 403, 404, 409, unreachable) exit with 6.";

#[derive(Subcommand, Debug)]
enum ObsCommand {
    /// Write an OBS package directory (.spec, Debian sources, _service) for a release.
    #[command(after_help = OBS_EXAMPLES)]
    Export {
        #[command(flatten)]
        release: ObsRelease,
        /// Directory to write the package files into (created if missing).
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Upload a release's package files to OBS: create the package if missing, upload
    /// only changed files, commit.
    #[command(after_help = OBS_EXAMPLES)]
    Push {
        #[command(flatten)]
        release: ObsRelease,
        #[command(flatten)]
        api: ObsApi,
        /// List what would change; upload and commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Summarise a project's build results (/build/<project>/_result).
    #[command(after_help = OBS_EXAMPLES)]
    Status {
        #[command(flatten)]
        api: ObsApi,
        /// Only this package.
        #[arg(long)]
        package: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write a project _meta and _config (Debian 12, Ubuntu 24.04, Fedora Rawhide,
    /// openSUSE Tumbleweed; x86_64 and aarch64).
    #[command(after_help = OBS_EXAMPLES)]
    Project {
        /// The OBS project (`home:me:korg`).
        #[arg(long)]
        project: String,
        /// OBS user id of the project's maintainer.
        #[arg(long, value_name = "USERID")]
        maintainer: String,
        /// Directory to write `_meta` and `_config` into.
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Which release an OBS package is made from (as `korgpkg build` picks it).
#[derive(clap::Args, Debug)]
struct ObsRelease {
    /// The package, as `korgpkg specs` lists it (`korg-clang-18`).
    package: String,
    /// The release (with `--from`, the OBS sources still name the upstream URL).
    #[command(flatten)]
    source: SourceArgs,
    /// Package revision (rpm Release, Debian `-N`) [default: 1].
    #[arg(long)]
    revision: Option<u32>,
    /// Distro map for the Debian Depends (`debian-12`, `ubuntu-24.04`) [default: debian-12].
    #[arg(long, value_name = "DISTRO")]
    target_distro: Option<String>,
}

/// Where the OBS API is and how to log in.
#[derive(clap::Args, Debug)]
struct ObsApi {
    /// OBS API URL [default: oscrc's [general] apiurl, else https://api.opensuse.org].
    #[arg(long, env = "OBS_API", value_name = "URL")]
    api: Option<String>,
    /// The OBS project (`home:me:korg`).
    #[arg(long)]
    project: String,
    /// osc configuration file with credentials [default: $OSC_CONFIG, ~/.config/osc/oscrc].
    #[arg(long, value_name = "FILE")]
    oscrc: Option<PathBuf>,
}

impl ObsApi {
    fn client(&self) -> Result<korgpkg::obs::Client, Error> {
        let api = self
            .api
            .clone()
            .or_else(|| korgpkg::obs::default_api(self.oscrc.as_deref()))
            .unwrap_or_else(|| "https://api.opensuse.org".to_string());
        let api = api.trim_end_matches('/').to_string();
        // Refuse plain http before any credentials are looked up.
        korgpkg::obs::check_api(&api)?;
        let credentials = korgpkg::obs::credentials(&api, self.oscrc.as_deref())?;
        korgpkg::obs::Client::new(&api, credentials)
    }
}

/// Verify, stage and scan the release `r` selects (downloading it unless `--from`), in
/// `work`; returns the prepared build and where OBS gets the release from.
fn obs_prepare(
    r: &ObsRelease,
    net: &Net,
    specs: &SpecSet,
    templates: &Templates,
    work: &std::path::Path,
) -> Result<(pipeline::Prepared, korgpkg::obs::Upstream), Error> {
    let args = BuildArgs {
        packages: vec![r.package.clone()],
        source: r.source.clone(),
        format: vec![Format::Deb, Format::Rpm],
        out: Some(work.to_path_buf()),
        revision: r.revision,
        deb_compression: None,
        rpm_compression: None,
        ipk_outer: None,
        zstd_level: None,
        gzip_level: None,
        target_distro: r.target_distro.clone(),
        unmapped: None,
        dry_run: false,
        json: true,
    };
    let template = BuildRequest {
        package: r.package.clone(),
        tarball: PathBuf::new(),
        tarball_name: None,
        verification: None,
        formats: args.format.clone(),
        out_dir: work.to_path_buf(),
        revision: r.revision.unwrap_or(1),
        options: BuildOptions::default(),
        source_date_epoch: source_date_epoch()?,
        progress: false,
        target_distro: r.target_distro.clone(),
        unmapped: UnmappedPolicy::Error,
    };
    let sources = net.sources(templates);
    let (req, urls) = match &r.source.from {
        Some(from) => {
            let req = local_request(&args, from, specs, &sources, template)?;
            let (spec, _) = specs.find_package(&r.package)?;
            let file_name = from
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::input(from, "not a file name"))?;
            let vars = spec.match_tarball(file_name).unwrap_or_default();
            let dir = spec.upstream_name("directory", &vars, templates)?;
            let sig = spec.upstream_name("signature", &vars, templates)?;
            let urls = (
                net.mirror.url(&format!("{dir}/{file_name}")),
                net.mirror.url(&format!("{dir}/{sig}")),
            );
            (req, urls)
        }
        None => {
            let (mut requests, releases) = remote_requests(&args, specs, &sources, template)?;
            let (Some(req), Some(rel)) = (requests.pop(), releases.first()) else {
                return Err(Error::Usage(format!("no release of {}", r.package)));
            };
            (req, (rel.url.clone(), rel.signature_url.clone()))
        }
    };
    let prepared = match pipeline::prepare(specs, templates, &req) {
        Ok(p) => p,
        Err(e) => {
            if matches!(e, Error::Verify { .. }) && r.source.from.is_none() {
                // A downloaded tarball whose signature failed is not kept for reuse.
                let _ = std::fs::remove_file(&req.tarball);
            }
            return Err(e);
        }
    };
    let signature = req.verification.as_ref().map(|v| v.signature.as_slice());
    let upstream = korgpkg::obs::Upstream::new(&prepared, urls.0, urls.1, signature);
    Ok((prepared, upstream))
}

fn obs_command(
    command: &ObsCommand,
    cli: &Cli,
    config: &Config,
    specs: &SpecSet,
    templates: &Templates,
    terminal: bool,
) -> Result<(), Error> {
    use korgpkg::obs;
    let work = || {
        tempfile::Builder::new()
            .prefix("korgpkg-obs-")
            .tempdir()
            .map_err(|e| Error::Io {
                context: "creating a staging directory".into(),
                source: e,
            })
    };
    match command {
        ObsCommand::Export { release, out, json } => {
            let net = Net::new(cli, config, terminal && !json)?;
            let tmp = work()?;
            let (prepared, upstream) = obs_prepare(release, &net, specs, templates, tmp.path())?;
            let files = obs::export(&prepared, &upstream, specs, templates)?;
            let paths = obs::write_files(out, &files)?;
            if *json {
                return print_json(&serde_json::json!({
                    "package": prepared.meta.name,
                    "version": prepared.meta.version,
                    "upstream_version": prepared.meta.upstream_version,
                    "prefix": prepared.meta.prefix,
                    "upstream": upstream,
                    "dir": out,
                    "files": files,
                }));
            }
            for p in paths {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        ObsCommand::Push {
            release,
            api,
            dry_run,
            json,
        } => {
            let client = api.client()?;
            let net = Net::new(cli, config, terminal && !json)?;
            let tmp = work()?;
            let (prepared, upstream) = obs_prepare(release, &net, specs, templates, tmp.path())?;
            let files = obs::export(&prepared, &upstream, specs, templates)?;
            let meta = obs::package_meta(&prepared, &upstream, specs, templates, &api.project)?;
            let message = format!(
                "korgpkg: {} {}-{} from kernel.org {} (sha256 {})",
                prepared.meta.name,
                prepared.meta.version,
                prepared.meta.revision,
                upstream.tarball_url.rsplit('/').next().unwrap_or_default(),
                upstream.sha256
            );
            let report = obs::push(
                &client,
                &api.project,
                &prepared.meta.name,
                &meta,
                &files,
                &message,
                *dry_run,
            )?;
            if *json {
                return print_json(&report);
            }
            let would = if *dry_run { "would " } else { "" };
            let at = format!("{}/{}", report.project, report.package);
            if report.created {
                println!("{would}create package {at}");
            }
            for f in &report.changed {
                println!("{would}upload {f}");
            }
            match &report.commit {
                Some(m) => println!("{would}commit {at}: {m}"),
                None => println!(
                    "{at} is up to date ({} files unchanged)",
                    report.unchanged.len()
                ),
            }
            Ok(())
        }
        ObsCommand::Status { api, package, json } => {
            let client = api.client()?;
            let results = client.build_results(&api.project, package.as_deref())?;
            if *json {
                return print_json(&results);
            }
            if results.is_empty() {
                println!("no build results for {}", api.project);
            }
            for r in &results {
                let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
                for code in r.packages.values() {
                    *counts.entry(code.as_str()).or_default() += 1;
                }
                let summary = counts
                    .iter()
                    .map(|(c, n)| format!("{n} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                println!("{}/{} ({}): {}", r.repository, r.arch, r.state, summary);
                for (p, code) in &r.packages {
                    if code != "succeeded" && code != "disabled" && code != "excluded" {
                        println!("  {p}: {code}");
                    }
                }
            }
            Ok(())
        }
        ObsCommand::Project {
            project,
            maintainer,
            out,
        } => {
            let files = obs::project_files(templates, project, maintainer)?;
            for p in obs::write_files(out, &files)? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
    }
}
