//! `korgpkg specs`: the packages the specs offer.

use korgpkg::Result;

use super::{print_json, Context};

/// List the packages the specs offer.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  korgpkg specs\n  korgpkg specs --json")]
pub struct Args {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, ctx: &Context) -> Result<()> {
    let rows: Vec<_> = ctx.specs.specs().iter().map(|s| s.summary_row()).collect();
    if args.json {
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
