//! `korgpkg repo`: create, list and prune repositories.

use std::path::PathBuf;

use korgpkg::config::source_date_epoch;
use korgpkg::model::Format;
use korgpkg::publish;
use korgpkg::Result;

use super::{print_json, Context, PassphraseArgs};

/// Create, list and prune repositories.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
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

pub fn run(command: &Command, ctx: &Context) -> Result<()> {
    match command {
        Command::Init {
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
                &ctx.templates,
            )?;
            println!("initialized {}", dir.display());
            Ok(())
        }
        Command::List { dir, json } => {
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
        Command::Remove {
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
                &ctx.templates,
            )?;
            for p in removed {
                println!("removed {} {} {} ({})", p.format, p.name, p.version, p.arch);
            }
            Ok(())
        }
    }
}
