//! The `korgpkg` subcommands, one file each: its clap arguments and a `run` that maps
//! them onto the library and prints the result, for people or (`--json`) for machines.
//! This module holds what they share: the global options, the [`Context`] built from
//! them, and the printing helpers.

pub mod build;
pub mod completions;
pub mod deps;
pub mod distromap;
pub mod image;
pub mod inspect;
pub mod kernel;
pub mod key;
pub mod list;
pub mod obs;
pub mod publish;
pub mod repo;
pub mod serve;
pub mod specs;
pub mod sync;

use std::io::IsTerminal;
use std::path::PathBuf;

use korgpkg::config::Config;
use korgpkg::fetch::FetchLimits;
use korgpkg::pipeline::ReleaseSelection;
use korgpkg::source::{Network, NetworkOptions};
use korgpkg::spec::SpecSet;
use korgpkg::templates::Templates;
use korgpkg::{Error, Result};

/// The top-level help's examples and exit codes.
pub const EXAMPLES: &str = "\
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
  korgpkg sync --repo /srv/korg --dry-run
  korgpkg serve /srv/korg --listen 127.0.0.1:8080
  korgpkg kernel package --artifacts ./tuxmake-artifacts --format deb
  korgpkg completions bash > /etc/bash_completion.d/korgpkg
  korgpkg obs export korg-clang-18 --out obs/korg-clang-18
  korgpkg obs push korg-clang-18 --api https://api.opensuse.org --project home:me:korg
  korgpkg image build korg-clang-18 --repo /srv/korg --base-rootfs base.tar --out img/
  korgpkg image push img/ registry.example.org/korg/korg-clang-18:18

Exit codes: 0 success, 1 I/O error, 2 usage error, 3 bad spec/config/template,
4 bad input (tarball, package file), 5 verification failed (hash, signature, key),
6 network error.";

/// Options every subcommand takes.
#[derive(clap::Args, Debug)]
pub struct GlobalArgs {
    /// Config file [default: $XDG_CONFIG_HOME/korgpkg/config.toml if it exists].
    #[arg(long, global = true, env = "KORGPKG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Extra specs directory; its *.toml override built-in specs of the same name.
    #[arg(long, global = true, env = "KORGPKG_SPECS_DIR", value_name = "DIR")]
    pub specs_dir: Option<PathBuf>,
    /// Extra templates directory; its *.hbs override built-in templates.
    #[arg(long, global = true, env = "KORGPKG_TEMPLATES_DIR", value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Mirror of kernel.org's pub/tools [default: https://mirrors.edge.kernel.org/pub/tools].
    #[arg(long, global = true, env = "KORGPKG_MIRROR", value_name = "URL")]
    pub mirror: Option<String>,
    /// Download cache [default: $XDG_CACHE_HOME/korgpkg].
    #[arg(long, global = true, env = "KORGPKG_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// OpenPGP keyring (armored or binary) with pinned signers' keys; repeatable.
    #[arg(long, global = true, value_name = "FILE")]
    pub keyring: Vec<PathBuf>,
    /// Where to fetch pinned keys not in a keyring (`<URL>/<KEYID>.asc`); "" = never fetch
    /// [default: kernel.org's pgpkeys repository].
    #[arg(long, global = true, env = "KORGPKG_KEYS_URL", value_name = "URL")]
    pub keys_url: Option<String>,
    /// Give up on a download not complete after this many seconds, retries included;
    /// 0 = no limit [default: 7200].
    #[arg(
        long,
        global = true,
        env = "KORGPKG_DOWNLOAD_TIMEOUT",
        value_name = "SECS"
    )]
    pub download_timeout: Option<u64>,
    /// Largest file to download (4GiB, 512M, bytes) [default: 4GiB].
    #[arg(long, global = true, env = "KORGPKG_DOWNLOAD_MAX_SIZE", value_name = "SIZE",
          value_parser = korgpkg::fetch::parse_size)]
    pub download_max_size: Option<u64>,
    /// Abandon a download slower than this many bytes/s over --low-speed-time; 0 = never
    /// [default: 1024].
    #[arg(
        long,
        global = true,
        env = "KORGPKG_LOW_SPEED_LIMIT",
        value_name = "BYTES"
    )]
    pub low_speed_limit: Option<u64>,
    /// The window, in seconds, over which --low-speed-limit is measured [default: 60].
    #[arg(long, global = true, env = "KORGPKG_LOW_SPEED_TIME", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub low_speed_time: Option<u64>,
}

impl GlobalArgs {
    /// The config file (`--config`, else the default location if it exists).
    pub fn config(&self) -> Result<Config> {
        Ok(Config::load(self.config.as_deref())?.0)
    }
}

/// What every subcommand runs with: the global options, the config file, and the
/// validated specs and templates.
pub struct Context {
    pub global: GlobalArgs,
    pub config: Config,
    pub templates: Templates,
    pub specs: SpecSet,
    /// Progress bars may be drawn: stderr is a terminal and there is no `--quiet`.
    pub terminal: bool,
}

impl Context {
    /// Load the templates and specs the options and config file name.
    pub fn new(global: GlobalArgs, config: Config) -> Result<Self> {
        let templates = Templates::load(
            config
                .templates_dir(global.templates_dir.as_deref())
                .as_deref(),
        )?;
        let specs = SpecSet::load(
            config.specs_dir(global.specs_dir.as_deref()).as_deref(),
            &templates,
        )?;
        let terminal = !global.quiet && std::io::stderr().is_terminal();
        Ok(Context {
            global,
            config,
            templates,
            specs,
            terminal,
        })
    }

    /// The mirror, download cache and keys; progress bars unless `json` (or not a
    /// terminal).
    pub fn network(&self, json: bool) -> Result<Network> {
        let g = &self.global;
        Network::new(&self.config.network(&NetworkOptions {
            mirror: g.mirror.clone(),
            cache_dir: g.cache_dir.clone(),
            keyrings: g.keyring.clone(),
            keys_url: g.keys_url.clone(),
            progress: self.terminal && !json,
            limits: FetchLimits {
                download_timeout: g.download_timeout,
                download_max_size: g.download_max_size,
                low_speed_limit: g.low_speed_limit,
                low_speed_time: g.low_speed_time,
            },
        }))
    }
}

/// Which upstream release to use: downloaded (newest, or `--version`/`--arch`) or a
/// tarball on disk (`--from`, verified by its signature). Shared by `build` and `obs`.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Use this tarball on disk instead of downloading (`llvm-18.1.8-x86_64.tar.xz`).
    #[arg(long, value_name = "TARBALL")]
    pub from: Option<PathBuf>,
    /// Exact upstream version to download (`18.1.0-rc3`) [default: newest].
    #[arg(long, value_name = "VERSION", conflicts_with = "from")]
    pub version: Option<String>,
    /// Upstream arch to download (`x86_64`, `aarch64`; crosstool: host `x86_64`, `arm64`)
    /// [default: this machine's].
    #[arg(long, conflicts_with = "from")]
    pub arch: Option<String>,
    /// Detached signature of the --from tarball [default: <name>.tar.sign beside it].
    #[arg(long, value_name = "FILE", requires = "from")]
    pub signature: Option<PathBuf>,
    /// Signed sums file listing the --from tarball [default: sha256sums.asc beside it, if any].
    #[arg(long, value_name = "FILE", requires = "from")]
    pub sums: Option<PathBuf>,
    /// Accept a --from tarball that has no signature. Never needed for downloads.
    #[arg(long, requires = "from")]
    pub allow_unverified: bool,
}

impl SourceArgs {
    /// The release selection for `packages`.
    pub fn selection(&self, packages: Vec<String>) -> ReleaseSelection {
        ReleaseSelection {
            packages,
            version: self.version.clone(),
            arch: self.arch.clone(),
            from: self.from.clone(),
            signature: self.signature.clone(),
            sums: self.sums.clone(),
            allow_unverified: self.allow_unverified,
        }
    }
}

/// Where the OpenPGP secret key's passphrase comes from (never the command line).
#[derive(clap::Args, Debug, Clone)]
pub struct PassphraseArgs {
    /// Read the passphrase from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "passphrase_file")]
    pub passphrase_env: Option<String>,
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    /// The passphrase, if one was given.
    pub fn read(&self) -> Result<Option<String>> {
        korgpkg::signing::read_passphrase(
            self.passphrase_env.as_deref(),
            self.passphrase_file.as_deref(),
        )
    }
}

/// Print `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Usage(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Print one value as JSON, several as a JSON array.
pub fn print_json_one_or_many(values: &[impl serde::Serialize]) -> Result<()> {
    match values {
        [one] => print_json(one),
        many => print_json(&many),
    }
}

/// One line per written package: format, path, size and sha256.
pub fn print_outputs(outputs: &[korgpkg::package::Output]) {
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

/// `bytes` in B, KiB, MiB or GiB.
pub fn human_size(bytes: u64) -> String {
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
