//! `korgpkg sync`: the command line of [`korgpkg::sync`].

use std::path::PathBuf;

use korgpkg::config::source_date_epoch;
use korgpkg::obs;
use korgpkg::publish::PackageId;
use korgpkg::sync;
use korgpkg::Error;

use super::{print_json, Context, PassphraseArgs};

/// Examples and notes shown by `korgpkg sync --help`.
pub const EXAMPLES: &str = "\
Examples:
  korgpkg sync --repo /srv/korg --dry-run
  korgpkg sync --repo /srv/korg --passphrase-file /run/credentials/korgpkg-sync.service/passphrase
  korgpkg sync --repo /srv/korg --json --keep-cache
  korgpkg sync --obs home:me:korg --policy repo/sync.toml --dry-run
  OBS_USER=me OBS_PASSWORD=... korgpkg sync --obs home:me:korg --policy repo/sync.toml

The policy is the [sync] table of DIR/korgpkg-repo.toml or DIR/sync.toml (see
repo/sync.toml). A release that fails is reported and skipped; the others are
published. Exit 5 if a verification failed, 6 if a download failed.

With --obs, each package gets the newest release the policy selects; what OBS
already has is read from the package's committed _service and .spec, so only
missing releases are downloaded, verified and pushed (changed files, one commit
per package). Nothing is deleted on OBS.";

/// Keep a repository equal to its sync policy over kernel.org's releases.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The repository directory (its korgpkg-repo.toml has a [sync] table, or a sync.toml
    /// is beside it).
    #[arg(long, required_unless_present = "obs", conflicts_with = "obs")]
    pub repo: Option<PathBuf>,
    /// Hand each missing release to this Open Build Service project (`home:me:korg`)
    /// instead of building into a repository; needs --policy.
    #[arg(long, value_name = "PROJECT", requires = "policy")]
    pub obs: Option<String>,
    /// The policy file for --obs (a [sync] table, as repo/sync.toml).
    #[arg(long, value_name = "FILE", requires = "obs")]
    pub policy: Option<PathBuf>,
    /// OBS API URL for --obs [default: oscrc's [general] apiurl, else https://api.opensuse.org].
    #[arg(long, env = "OBS_API", value_name = "URL", requires = "obs")]
    pub obs_api: Option<String>,
    /// osc configuration file with the OBS credentials for --obs [default: $OSC_CONFIG,
    /// ~/.config/osc/oscrc]; OBS_USER/OBS_PASSWORD win.
    #[arg(long, value_name = "FILE", requires = "obs")]
    pub oscrc: Option<PathBuf>,
    /// Print the plan; download, build and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep downloaded tarballs in the cache after their packages are built.
    #[arg(long)]
    pub keep_cache: bool,
    /// Wait for another sync of the same repository (or OBS project) to finish instead of
    /// refusing.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Machine-readable plan and result (with each added package's provenance).
    #[arg(long)]
    pub json: bool,
}

fn id_line(id: &PackageId) -> String {
    let suite = id
        .suite
        .as_deref()
        .map(|s| format!(" [{s}]"))
        .unwrap_or_default();
    format!(
        "{} {} {} ({}){suite}",
        id.format, id.name, id.version, id.arch
    )
}

/// Run `korgpkg sync`.
pub fn run(args: &Args, ctx: &Context) -> Result<(), Error> {
    let net = ctx.network(args.json)?;
    let sources = net.sources(&ctx.templates);
    let quiet = ctx.global.quiet;
    let log = move |msg: &str| {
        if !quiet {
            eprintln!("korgpkg: sync: {msg}");
        }
    };
    let root = match (&args.repo, &args.policy) {
        (Some(r), _) => r.clone(),
        (None, Some(p)) => p.parent().map(PathBuf::from).unwrap_or_default(),
        (None, None) => return Err(Error::Usage("sync needs --repo or --obs".into())),
    };
    let opts = sync::Options {
        root: &root,
        specs: &ctx.specs,
        templates: &ctx.templates,
        sources: &sources,
        passphrase: if args.dry_run {
            None
        } else {
            args.passphrase.read()?
        },
        source_date_epoch: source_date_epoch()?,
        dry_run: args.dry_run,
        keep_cache: args.keep_cache,
        wait: args.wait,
        progress: ctx.terminal && !args.json,
        log: &log,
    };
    if let (Some(project), Some(policy)) = (&args.obs, &args.policy) {
        // The policy first: its errors (exit 3) need no OBS credentials.
        let policy = sync::LoadedPolicy::load_file(policy, &ctx.specs)?;
        let client = obs::connect(args.obs_api.as_deref(), args.oscrc.as_deref())?;
        let report = sync::obs::run(&sync::obs::ObsOptions {
            sync: &opts,
            policy: &policy,
            project,
            client: &client,
        })?;
        print_obs(&report, args.json)?;
        return match report.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        };
    }
    let report = sync::run(&opts)?;
    if args.json {
        print_json(&report)?;
    } else if args.dry_run {
        for s in report.plan.to_build() {
            for id in &s.missing {
                println!("would add {} from {}", id_line(id), s.release.url);
            }
        }
        for id in &report.plan.remove {
            println!("would remove {}", id_line(id));
        }
        for f in &report.failed {
            println!(
                "failed {} {} ({}): {}",
                f.package, f.version, f.arch, f.error
            );
        }
        let adds: usize = report.plan.to_build().map(|s| s.missing.len()).sum();
        println!(
            "plan: {adds} to add, {} to remove, {} unchanged, {} failed",
            report.plan.remove.len(),
            report.unchanged.len(),
            report.failed.len()
        );
    } else {
        for a in &report.added {
            println!(
                "added {} from {} (sha256 {})",
                id_line(&a.id),
                a.upstream_url,
                a.upstream_sha256
            );
        }
        for id in &report.removed {
            println!("removed {}", id_line(id));
        }
        for f in &report.failed {
            println!(
                "failed {} {} ({}): {}",
                f.package, f.version, f.arch, f.error
            );
        }
        match report.generation {
            Some(g) => println!("generation {g}"),
            None => println!("no change"),
        }
        println!(
            "summary: {} added, {} removed, {} unchanged, {} failed",
            report.added.len(),
            report.removed.len(),
            report.unchanged.len(),
            report.failed.len()
        );
    }
    match report.failure() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_obs(report: &sync::obs::ObsReport, json: bool) -> Result<(), Error> {
    if json {
        return print_json(report);
    }
    let at = |p: &sync::obs::ObsPackage| {
        format!(
            "{}/{} {}-{} ({})",
            report.project, p.package, p.version, p.revision, p.arch
        )
    };
    if report.dry_run {
        for p in &report.to_push {
            println!("would push {} from {}", at(p), p.upstream_url);
        }
    }
    for p in &report.pushed {
        let files = p.push.changed.len();
        println!(
            "pushed {} from {} ({files} file(s) changed, sha256 {})",
            at(&p.package),
            p.package.upstream_url,
            p.package.upstream_sha256
        );
    }
    for f in &report.failed {
        println!(
            "failed {} {} ({}): {}",
            f.package, f.version, f.arch, f.error
        );
    }
    let pushed = if report.dry_run {
        format!("{} to push", report.to_push.len())
    } else {
        format!("{} pushed", report.pushed.len())
    };
    println!(
        "summary: {pushed}, {} unchanged, {} failed",
        report.unchanged.len(),
        report.failed.len()
    );
    Ok(())
}
