//! The `korgpkg` command line: parses arguments, loads config, specs and templates, runs
//! the library's pipeline and prints results for people or (`--json`) for machines.

use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use korgpkg::config::Config;
use korgpkg::package::{self, BuildOptions, DebCompression, Format, IpkOuter, RpmCompression};
use korgpkg::pipeline::{self, BuildRequest};
use korgpkg::spec::SpecSet;
use korgpkg::templates::Templates;
use korgpkg::Error;

const EXAMPLES: &str = "\
Examples:
  korgpkg specs
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --out dist/
  korgpkg build korg-gcc-14-aarch64-linux --from x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.xz --format deb,rpm
  korgpkg inspect dist/korg-clang-18_18.1.8-1_amd64.deb --json
  korgpkg completions bash > /etc/bash_completion.d/korgpkg

Exit codes: 0 success, 1 I/O error, 2 usage error, 3 bad spec/config/template,
4 bad input (tarball, package file).";

/// Turn kernel.org toolchains into verified .deb, .rpm and .ipk packages.
#[derive(Parser, Debug)]
#[command(name = "korgpkg", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Config file [default: $XDG_CONFIG_HOME/korgpkg/config.toml if it exists].
    #[arg(long, global = true, env = "KORGPKG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Extra specs directory; its *.toml override built-in specs of the same name.
    #[arg(long, global = true, env = "KORGPKG_SPECS_DIR", value_name = "DIR")]
    specs_dir: Option<PathBuf>,
    /// Extra templates directory; its *.hbs override built-in templates.
    #[arg(long, global = true, env = "KORGPKG_TEMPLATES_DIR", value_name = "DIR")]
    templates_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build packages from an upstream tarball on disk.
    #[command(after_help = "\
Examples:
  korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz
  korgpkg build korg-clang-18 --from llvm-18.1.0-rc3-aarch64.tar.gz --format rpm --rpm-compression gzip
  korgpkg build korg-gcc-14-aarch64-linux --from x86_64-gcc-14.2.0-nolibc-aarch64-linux.tar.xz --format ipk --ipk-outer tar
  SOURCE_DATE_EPOCH=1700000000 korgpkg build korg-clang-18 --from llvm-18.1.8-x86_64.tar.xz --json")]
    Build(BuildArgs),
    /// List the packages the specs offer.
    #[command(after_help = "Examples:\n  korgpkg specs\n  korgpkg specs --json")]
    Specs {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the metadata and file list of a .deb, .rpm or .ipk (any maker's).
    #[command(
        after_help = "Examples:\n  korgpkg inspect dist/korg-clang-18_18.1.8-1_amd64.deb\n  korgpkg inspect some.rpm --json"
    )]
    Inspect {
        /// The package file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  korgpkg completions bash > /etc/bash_completion.d/korgpkg\n  korgpkg completions zsh > \"${fpath[1]}/_korgpkg\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// Package to build, as `korgpkg specs` lists it (`korg-clang-18`).
    package: String,
    /// The upstream tarball (`llvm-18.1.8-x86_64.tar.xz`).
    #[arg(long, value_name = "TARBALL")]
    from: PathBuf,
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
    /// Show what would be built, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a machine-readable manifest of the outputs.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("korgpkg: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Usage(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    let (config, _config_path) = Config::load(cli.config.as_deref())?;
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "korgpkg",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let templates_dir = cli.templates_dir.clone().or(config.templates_dir.clone());
    let specs_dir = cli.specs_dir.clone().or(config.specs_dir.clone());
    let templates = Templates::load(templates_dir.as_deref())?;
    let specs = SpecSet::load(specs_dir.as_deref(), &templates)?;

    match cli.command {
        Command::Completions { .. } => Ok(()),
        Command::Specs { json } => {
            let rows: Vec<_> = specs.specs().iter().map(|s| s.summary_row()).collect();
            if json {
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
        Command::Inspect { file, json } => {
            let info = package::inspect(&file)?;
            if json {
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
        Command::Build(args) => build(args, &config, &specs, &templates, cli.quiet),
    }
}

fn build(
    args: BuildArgs,
    config: &Config,
    specs: &SpecSet,
    templates: &Templates,
    quiet: bool,
) -> Result<(), Error> {
    let defaults = BuildOptions::default();
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(v.trim().parse::<u64>().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        })?),
        _ => None,
    };
    let formats = if !args.format.is_empty() {
        args.format.clone()
    } else {
        config
            .formats
            .clone()
            .unwrap_or_else(|| Format::ALL.to_vec())
    };
    let req = BuildRequest {
        package: args.package.clone(),
        tarball: args.from.clone(),
        formats,
        out_dir: args
            .out
            .clone()
            .or(config.out.clone())
            .unwrap_or_else(|| PathBuf::from("dist")),
        revision: args.revision.or(config.revision).unwrap_or(1),
        options: BuildOptions {
            deb_compression: args
                .deb_compression
                .or(config.deb_compression)
                .unwrap_or(defaults.deb_compression),
            rpm_compression: args
                .rpm_compression
                .or(config.rpm_compression)
                .unwrap_or(defaults.rpm_compression),
            ipk_outer: args
                .ipk_outer
                .or(config.ipk_outer)
                .unwrap_or(defaults.ipk_outer),
            zstd_level: args
                .zstd_level
                .or(config.zstd_level)
                .unwrap_or(defaults.zstd_level),
        },
        source_date_epoch,
        progress: !quiet && !args.json && std::io::stderr().is_terminal(),
    };
    if args.dry_run {
        let plan = pipeline::plan(specs, templates, &req)?;
        if !args.from.is_file() {
            return Err(Error::input(&args.from, "no such file"));
        }
        if args.json {
            return print_json(&plan);
        }
        println!(
            "would build {} {} (upstream {}) from {}, top directory {:?} → {}",
            plan.package,
            plan.version,
            plan.upstream_version,
            plan.tarball.display(),
            plan.top_dir,
            plan.prefix
        );
        for o in &plan.outputs {
            println!("  {} {}", o.format, o.path.display());
        }
        return Ok(());
    }
    let report = pipeline::build(specs, templates, &req)?;
    if args.json {
        return print_json(&report);
    }
    for o in &report.outputs {
        println!(
            "{} {} ({}, sha256 {})",
            o.format,
            o.path.display(),
            human_size(o.size),
            o.sha256
        );
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
