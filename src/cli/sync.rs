//! `korgpkg sync`: the command line of [`korgpkg::sync`].

use std::path::PathBuf;

use korgpkg::config::source_date_epoch;
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

The policy is the [sync] table of DIR/korgpkg-repo.toml or DIR/sync.toml (see
repo/sync.toml). A release that fails is reported and skipped; the others are
published. Exit 5 if a verification failed, 6 if a download failed.";

/// Keep a repository equal to its sync policy over kernel.org's releases.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The repository directory (its korgpkg-repo.toml has a [sync] table, or a sync.toml
    /// is beside it).
    #[arg(long)]
    pub repo: PathBuf,
    /// Print the plan; download, build and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep downloaded tarballs in the cache after their packages are built.
    #[arg(long)]
    pub keep_cache: bool,
    /// Wait for another sync of the same repository to finish instead of refusing.
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
    let opts = sync::Options {
        root: &args.repo,
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
