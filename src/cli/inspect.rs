//! `korgpkg inspect`: the metadata and file list of any .deb, .rpm or .ipk.

use std::path::PathBuf;

use korgpkg::package;
use korgpkg::Result;

use super::{print_json, Context};

/// Print the metadata and file list of a .deb, .rpm or .ipk (any maker's).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  korgpkg inspect dist/korg-clang-18_18.1.8-1_amd64.deb\n  korgpkg inspect some.rpm --json"
)]
pub struct Args {
    /// The package file.
    file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, _ctx: &Context) -> Result<()> {
    let info = package::inspect(&args.file)?;
    if args.json {
        return print_json(&info);
    }
    println!("Format: {}", info.format);
    println!("Name: {}", info.name);
    println!("Version: {}", info.version);
    println!("Architecture: {}", info.arch);
    for (k, v) in &info.fields {
        println!("{k}: {}", v.replace('\n', "\n  "));
    }
    for (k, v) in &info.relations {
        println!("{k}: {}", v.join(", "));
    }
    println!("Files:");
    for f in &info.files {
        let target = f
            .target
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        println!(
            "  {:?} {:04o} {}/{} {:>10} {}{}",
            f.kind, f.mode, f.user, f.group, f.size, f.path, target
        );
    }
    Ok(())
}
