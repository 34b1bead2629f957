//! `korgpkg publish`: packages into a signed apt, dnf and opkg repository.

use std::path::PathBuf;

use korgpkg::config::source_date_epoch;
use korgpkg::publish;
use korgpkg::Result;

use super::{print_json, Context, PassphraseArgs};

/// Publish packages into a signed apt, dnf and opkg repository.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  korgpkg publish --repo /srv/korg dist/*.deb dist/*.rpm dist/*.ipk
  korgpkg publish --repo /srv/korg --suite testing dist/korg-clang-18_18.1.8-1_amd64.deb
  KORGPKG_PASSPHRASE=... korgpkg publish --repo /srv/korg --passphrase-env KORGPKG_PASSPHRASE dist/")]
pub struct Args {
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

pub fn run(args: &Args, ctx: &Context) -> Result<()> {
    let pass = args.passphrase.read()?;
    let report = publish::publish(
        &args.repo,
        args.suite.as_deref(),
        &args.packages,
        pass,
        source_date_epoch()?,
        &ctx.templates,
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
