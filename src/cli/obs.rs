//! `korgpkg obs`: hand packages to Open Build Service.

use std::path::{Path, PathBuf};

use korgpkg::config::source_date_epoch;
use korgpkg::obs::{self, ObsRelease, PushReport, Upstream};
use korgpkg::pipeline::Prepared;
use korgpkg::source::Network;
use korgpkg::{Error, Result};

use super::{print_json, Context, SourceArgs};

const EXAMPLES: &str = "\
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

/// Hand packages to Open Build Service: package sources, push, build results.
#[derive(clap::Subcommand, Debug)]
#[command(after_help = EXAMPLES)]
pub enum Command {
    /// Write an OBS package directory (.spec, Debian sources, _service) for a release.
    #[command(after_help = EXAMPLES)]
    Export {
        #[command(flatten)]
        release: ReleaseArgs,
        /// Directory to write the package files into (created if missing).
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Upload a release's package files to OBS: create the package if missing, upload
    /// only changed files, commit.
    #[command(after_help = EXAMPLES)]
    Push {
        #[command(flatten)]
        release: ReleaseArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// List what would change; upload and commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Summarise a project's build results (/build/<project>/_result).
    #[command(after_help = EXAMPLES)]
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this package.
        #[arg(long)]
        package: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write a project _meta and _config (Debian 12, Ubuntu 24.04, Fedora Rawhide,
    /// openSUSE Tumbleweed; x86_64 and aarch64).
    #[command(after_help = EXAMPLES)]
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
pub struct ReleaseArgs {
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
pub struct ApiArgs {
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

impl ApiArgs {
    fn client(&self) -> Result<obs::Client> {
        obs::connect(self.api.as_deref(), self.oscrc.as_deref())
    }
}

/// Verify, stage and scan the release `args` selects, in `work`.
fn prepare(
    args: &ReleaseArgs,
    ctx: &Context,
    net: &Network,
    work: &Path,
) -> Result<(Prepared, Upstream)> {
    let release = ObsRelease {
        selection: args.source.selection(vec![args.package.clone()]),
        revision: args.revision.unwrap_or(1),
        target_distro: args.target_distro.clone(),
        source_date_epoch: source_date_epoch()?,
    };
    obs::prepare_release(&release, &ctx.specs, &net.sources(&ctx.templates), work)
}

/// A staging directory, removed when dropped.
fn work_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("korgpkg-obs-")
        .tempdir()
        .map_err(|e| Error::Io {
            context: "creating a staging directory".into(),
            source: e,
        })
}

pub fn run(command: &Command, ctx: &Context) -> Result<()> {
    match command {
        Command::Export { release, out, json } => {
            let net = ctx.network(*json)?;
            let tmp = work_dir()?;
            let (prepared, upstream) = prepare(release, ctx, &net, tmp.path())?;
            let files = obs::export(&prepared, &upstream, &ctx.specs, &ctx.templates)?;
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
        Command::Push {
            release,
            api,
            dry_run,
            json,
        } => {
            let client = api.client()?;
            let net = ctx.network(*json)?;
            let tmp = work_dir()?;
            let (prepared, upstream) = prepare(release, ctx, &net, tmp.path())?;
            let (specs, templates) = (&ctx.specs, &ctx.templates);
            let files = obs::export(&prepared, &upstream, specs, templates)?;
            let meta = obs::package_meta(&prepared, &upstream, specs, templates, &api.project)?;
            let report = obs::push(
                &client,
                &api.project,
                &prepared.meta.name,
                &meta,
                &files,
                &obs::commit_message(&prepared, &upstream),
                *dry_run,
            )?;
            if *json {
                return print_json(&report);
            }
            print_push(&report, *dry_run);
            Ok(())
        }
        Command::Status { api, package, json } => {
            let client = api.client()?;
            let results = client.build_results(&api.project, package.as_deref())?;
            if *json {
                return print_json(&results);
            }
            print_status(&api.project, &results);
            Ok(())
        }
        Command::Project {
            project,
            maintainer,
            out,
        } => {
            let files = obs::project_files(&ctx.templates, project, maintainer)?;
            for p in obs::write_files(out, &files)? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
    }
}

fn print_push(report: &PushReport, dry_run: bool) {
    let would = if dry_run { "would " } else { "" };
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
}

fn print_status(project: &str, results: &[obs::BuildResult]) {
    if results.is_empty() {
        println!("no build results for {project}");
    }
    for r in results {
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
}
