//! `korgpkg key`: repository signing keys.

use std::path::PathBuf;

use korgpkg::signing::{self, KeyAlgo};
use korgpkg::Result;

use super::{print_json, Context, PassphraseArgs};

/// Generate repository signing keys (OpenPGP and usign).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
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
        algo: KeyAlgo,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: &Command, _ctx: &Context) -> Result<()> {
    let Command::Generate {
        name,
        out,
        algo,
        passphrase,
        json,
    } = command;
    let pass = passphrase.read()?;
    let keys = signing::generate(name, *algo, pass.as_deref(), out)?;
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
