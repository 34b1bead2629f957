//! `korgpkg deps`: the dependencies derived from the ELF files of a tarball or directory.

use std::path::PathBuf;

use korgpkg::deps::UnmappedPolicy;
use korgpkg::pipeline::{self, DepsReport};
use korgpkg::Result;

use super::{print_json, Context};

/// Print the dependencies derived from the ELF files of a tarball or directory.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  korgpkg deps llvm-18.1.8-x86_64.tar.xz
  korgpkg deps llvm-18.1.8-x86_64.tar.xz --target-distro ubuntu-24.04 --json
  korgpkg deps x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.xz --package korg-gcc-14-aarch64-linux
  korgpkg deps /opt/llvm-18/bin --package korg-clang-18

The tarball is staged as `build` stages it but not verified: nothing is packaged.
rpm: what rpm's elfdeps -R prints; deb and ipk: sonames mapped to packages by
specs/distros/<distro>.toml (default debian-12 for deb, openembedded for ipk).
Every soname no map knows is named in one error (exit 4), or a warning with
--unmapped warn.")]
pub struct Args {
    /// An upstream tarball or a directory of files.
    source: PathBuf,
    /// The package whose spec applies (its [deps] table) [default: from the tarball name].
    #[arg(long)]
    package: Option<String>,
    /// Distro map for deb or ipk dependencies (`debian-12`, `ubuntu-24.04`,
    /// `openembedded`, `openwrt`).
    #[arg(long, value_name = "DISTRO")]
    target_distro: Option<String>,
    /// Sonames no distro map knows: an error, or a warning [default: error].
    #[arg(long, value_enum, value_name = "POLICY")]
    unmapped: Option<UnmappedPolicy>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// The report is printed in full; then every unmapped soname is one error (or warning).
pub fn run(args: &Args, ctx: &Context) -> Result<()> {
    let report = pipeline::deps(
        &ctx.specs,
        &ctx.templates,
        &args.source,
        args.package.as_deref(),
        args.target_distro.as_deref(),
    )?;
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    match report.unmapped_error() {
        Some(e) if ctx.config.unmapped(args.unmapped) == UnmappedPolicy::Warn => {
            eprintln!("korgpkg: warning: {e}");
            Ok(())
        }
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_report(report: &DepsReport) {
    println!(
        "{} ELF file(s) in {}",
        report.files.len(),
        report.source.display()
    );
    for f in &report.files {
        println!(
            "  {} ({}-bit {}): needs {}",
            f.path,
            f.class,
            f.machine,
            if f.needed.is_empty() {
                "nothing".to_string()
            } else {
                f.needed.join(", ")
            }
        );
    }
    for fd in &report.formats {
        let distro = fd
            .distro
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        for u in &fd.unmapped {
            println!(
                "{}{distro}: unmapped: {} (needed by {})",
                fd.format, u.soname, u.needed_by
            );
        }
        if fd.relations.is_empty() {
            println!("{}{distro}: no dependencies", fd.format);
        }
        for (field, list) in &fd.relations {
            println!("{}{distro} {field}: {}", fd.format, list.join(", "));
        }
    }
}
