//! `korgpkg distro-map`: soname → package maps generated from a distribution's data.

use std::path::PathBuf;

use korgpkg::distromap::{self, GenerateOptions};
use korgpkg::Result;

use super::Context;

/// Generate a soname → package map from a distribution's Contents index.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
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

pub fn run(command: &Command, _ctx: &Context) -> Result<()> {
    let Command::Generate {
        contents,
        triplet,
        shlibs,
        base,
        summary,
        out,
    } = command;
    let opts = GenerateOptions {
        contents: contents.clone(),
        triplets: triplet.clone(),
        shlibs: shlibs.clone(),
        base: base.clone(),
        summary: summary.clone(),
        command: distromap::command_line(std::env::args()),
    };
    distromap::write(out, &distromap::generate(&opts)?)
}
