//! `korgpkg build`: download (or take from disk), verify and package toolchains.

use std::path::PathBuf;

use korgpkg::config::BuildOptionFlags;
use korgpkg::deps::UnmappedPolicy;
use korgpkg::model::Format;
use korgpkg::package::{DebCompression, IpkOuter, RpmCompression};
use korgpkg::pipeline::{self, BuildPlan, BuildRequest, Selected};
use korgpkg::Result;

use super::{print_json_one_or_many, print_outputs, Context, SourceArgs};

/// Download, verify and package toolchains (or package a verified tarball on disk).
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  korgpkg build korg-clang-18
  korgpkg build korg-clang-18 korg-gcc-14-aarch64-linux --format deb --json
  korgpkg build korg-clang-18 --version 18.1.0-rc3 --arch aarch64 --dry-run
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz   # .tar.sign beside it
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --signature llvm-18.1.8-x86_64.tar.sign --sums sha256sums.asc
  korgpkg build korg-clang-18 --from llvm-18.1.0-rc3-aarch64.tar.gz --format rpm --rpm-compression gzip
  korgpkg build korg-gcc-14-aarch64-linux --from x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.xz --format ipk --ipk-outer tar
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --format deb --target-distro ubuntu-24.04
  SOURCE_DATE_EPOCH=1700000000 korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --json")]
pub struct Args {
    /// Packages to build, as `korgpkg specs` lists them (`korg-clang-18`).
    #[arg(required = true)]
    packages: Vec<String>,
    #[command(flatten)]
    source: SourceArgs,
    /// Formats, comma-separated or repeated [default: deb,rpm,ipk].
    #[arg(long, short, value_delimiter = ',', value_name = "FORMAT")]
    format: Vec<Format>,
    /// Output directory [default: dist].
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Package revision (deb/ipk `-N`, rpm Release) [default: 1].
    #[arg(long)]
    revision: Option<u32>,
    /// Compression of the .deb members [default: zstd].
    #[arg(long, value_enum)]
    deb_compression: Option<DebCompression>,
    /// Compression of the .rpm payload [default: zstd].
    #[arg(long, value_enum)]
    rpm_compression: Option<RpmCompression>,
    /// Outer container of the .ipk: ar (Yocto/OE opkg) or tar (OpenWrt <= 24.10) [default: ar].
    #[arg(long, value_enum)]
    ipk_outer: Option<IpkOuter>,
    /// zstd level for deb and rpm, 1-19 [default: 3, as dpkg-deb].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: Option<i32>,
    /// gzip level for the ipk (and gzip deb/rpm), 1-9 [default: 6].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    gzip_level: Option<u32>,
    /// Distro map for dependencies derived from the ELF files, for the formats it is
    /// for (`debian-12`, `ubuntu-24.04`: deb; `openembedded`, `openwrt`: ipk)
    /// [default: debian-12 for deb; openwrt for --ipk-outer tar, else openembedded].
    #[arg(long, value_name = "DISTRO")]
    target_distro: Option<String>,
    /// Sonames no distro map knows: fail naming all of them, or warn and leave them
    /// out [default: error].
    #[arg(long, value_enum, value_name = "POLICY")]
    unmapped: Option<UnmappedPolicy>,
    /// Show what would be built, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a machine-readable manifest of the outputs.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, ctx: &Context) -> Result<()> {
    let net = ctx.network(args.json)?;
    let settings = ctx.config.build_settings(
        &args.format,
        args.out.as_deref(),
        args.revision,
        &BuildOptionFlags {
            deb_compression: args.deb_compression,
            rpm_compression: args.rpm_compression,
            ipk_outer: args.ipk_outer,
            zstd_level: args.zstd_level,
            gzip_level: args.gzip_level,
        },
    )?;
    let progress = ctx.terminal && !args.json;
    let template = BuildRequest {
        unmapped: ctx.config.unmapped(args.unmapped),
        ..BuildRequest::template(settings, progress, args.target_distro.clone())
    };
    let selected = pipeline::select(
        &args.source.selection(args.packages.clone()),
        &ctx.specs,
        &net.sources(&ctx.templates),
        &template,
        !args.dry_run,
    )?;
    if args.dry_run {
        let plans = selected
            .requests
            .iter()
            .map(|r| pipeline::plan(&ctx.specs, &ctx.templates, r))
            .collect::<Result<Vec<_>>>()?;
        return print_plans(args, &plans, &selected);
    }
    let reports = pipeline::build_selected(&ctx.specs, &ctx.templates, &selected)?;
    for report in reports.iter().filter(|r| !r.unmapped.is_empty()) {
        eprintln!(
            "korgpkg: warning: {}: {}",
            report.package,
            korgpkg::deps::unmapped_message(&report.unmapped)
        );
    }
    if args.json {
        return print_json_one_or_many(&reports);
    }
    for report in &reports {
        print_outputs(&report.outputs);
    }
    Ok(())
}

/// What `--dry-run` prints: each plan, with the mirror release it comes from.
fn print_plans(args: &Args, plans: &[BuildPlan], selected: &Selected) -> Result<()> {
    let releases = &selected.releases;
    if args.json {
        let rows: Vec<serde_json::Value> = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let mut v = serde_json::to_value(plan).unwrap_or_default();
                if let (Some(r), Some(obj)) = (releases.get(i), v.as_object_mut()) {
                    obj.insert(
                        "release".into(),
                        serde_json::to_value(r).unwrap_or_default(),
                    );
                }
                v
            })
            .collect();
        return print_json_one_or_many(&rows);
    }
    for (i, plan) in plans.iter().enumerate() {
        let (origin, check) = match releases.get(i) {
            Some(r) => (
                r.url.clone(),
                format!(
                    " (sha256 {} from sums signed by {}; .tar.sign checked when built)",
                    r.sha256, r.sums_signer
                ),
            ),
            None if plan.verified => (plan.tarball.display().to_string(), String::new()),
            None => (
                plan.tarball.display().to_string(),
                " (UNVERIFIED)".to_string(),
            ),
        };
        println!(
            "would build {} {} (upstream {}) from {}{}, top directory {:?} → {}",
            plan.package,
            plan.version,
            plan.upstream_version,
            origin,
            check,
            plan.top_dir,
            plan.prefix
        );
        for o in &plan.outputs {
            println!("  {} {}", o.format, o.path.display());
        }
    }
    Ok(())
}
