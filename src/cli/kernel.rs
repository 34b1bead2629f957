//! `korgpkg kernel`: packages of a built Linux kernel.

use std::path::PathBuf;

use korgpkg::config::BuildOptionFlags;
use korgpkg::kernel::{self, KernelInput, KernelRequest};
use korgpkg::model::Format;
use korgpkg::package::{DebCompression, RpmCompression};
use korgpkg::{Error, Result};

use super::{print_json, print_outputs, Context};

/// Package a built Linux kernel (build tree or CI artifacts).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Make korg-linux-image-<rel> (and, from a build tree, korg-linux-headers-<rel>).
    #[command(after_help = "\
Examples:
  korgpkg kernel package --build-dir ~/linux/build --format deb
  korgpkg kernel package --build-dir build --src ~/linux --modules-dir staging --out dist/
  korgpkg kernel package --artifacts ./tuxmake-artifacts --format deb,rpm,ipk --json
  korgpkg kernel package --artifacts https://ci.example.org/builds/123/ --sums https://ci.example.org/builds/123/sha256sums.txt

Artifacts over HTTP(S) are downloaded into the cache and packaged only when every file
matches --sums (sha256sum format); a local artifacts directory is checked against --sums
when given. A build tree is the user's own and is packaged as it is.")]
    Package(PackageArgs),
}

#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// A kernel build tree (`O=`): include/config/kernel.release, .config, System.map, image.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "artifacts",
        conflicts_with = "artifacts"
    )]
    build_dir: Option<PathBuf>,
    /// The kernel source tree, when built out of tree [default: --build-dir].
    #[arg(long, value_name = "DIR", requires = "build_dir")]
    src: Option<PathBuf>,
    /// Modules already installed with INSTALL_MOD_PATH (or lib/modules/<rel> itself)
    /// [default: run `make modules_install` in the build tree].
    #[arg(long, value_name = "DIR", requires = "build_dir")]
    modules_dir: Option<PathBuf>,
    /// A TuxMake-style artifacts directory or URL (metadata.json, image, modules.tar.xz, config, System.map).
    #[arg(long, value_name = "DIR|URL")]
    artifacts: Option<String>,
    /// sha256sum-format list covering the artifacts (required for a URL).
    #[arg(long, value_name = "FILE|URL", requires = "artifacts")]
    sums: Option<String>,
    /// Formats to write [default: all, or the config file's `formats`].
    #[arg(long, value_delimiter = ',')]
    format: Vec<Format>,
    /// Output directory [default: dist].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Package revision (deb/ipk `-N`, rpm Release) [default: 1].
    #[arg(long)]
    revision: Option<u32>,
    /// Compression of .deb members.
    #[arg(long)]
    deb_compression: Option<DebCompression>,
    /// Compression of the .rpm payload.
    #[arg(long)]
    rpm_compression: Option<RpmCompression>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(command: &Command, ctx: &Context) -> Result<()> {
    let Command::Package(args) = command;
    let input = match (&args.build_dir, &args.artifacts) {
        (Some(b), _) => KernelInput::BuildTree {
            build_dir: b.clone(),
            src_dir: args.src.clone(),
            modules_dir: args.modules_dir.clone(),
        },
        (None, Some(a)) => KernelInput::Artifacts {
            location: a.clone(),
            sums: args.sums.clone(),
        },
        (None, None) => return Err(Error::Usage("give --build-dir or --artifacts".into())),
    };
    let flags = BuildOptionFlags {
        deb_compression: args.deb_compression,
        rpm_compression: args.rpm_compression,
        ..BuildOptionFlags::default()
    };
    let settings =
        ctx.config
            .build_settings(&args.format, args.out.as_deref(), args.revision, &flags)?;
    let req = KernelRequest {
        input,
        formats: settings.formats,
        out_dir: settings.out_dir,
        revision: settings.revision,
        options: settings.options,
        source_date_epoch: settings.source_date_epoch,
        make: std::env::var("MAKE").unwrap_or_else(|_| "make".into()),
    };
    let net = match req.input.is_remote() {
        true => Some(ctx.network(args.json)?),
        false => None,
    };
    let report = kernel::build(&req, &ctx.templates, net.as_ref().map(|n| &n.fetcher))?;
    if args.json {
        return print_json(&report);
    }
    for p in &report.packages {
        print_outputs(&p.outputs);
    }
    Ok(())
}
