//! `korgpkg list`: the versions and arches upstream offers.

use korgpkg::source;
use korgpkg::Result;

use super::{print_json, Context};

/// List the versions and arches upstream offers, from verified sha256sums.asc files.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  korgpkg list
  korgpkg list llvm
  korgpkg list korg-clang-18 --json
  korgpkg list korg-gcc-14-aarch64-linux --arch arm64")]
pub struct Args {
    /// A spec (`llvm`) or package (`korg-clang-18`); all specs if omitted.
    name: Option<String>,
    /// Only this upstream arch [default: all].
    #[arg(long)]
    arch: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, ctx: &Context) -> Result<()> {
    let net = ctx.network(args.json)?;
    let all =
        net.sources(&ctx.templates)
            .list(&ctx.specs, args.name.as_deref(), args.arch.as_deref())?;
    if args.json {
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
