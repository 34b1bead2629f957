//! The `korgpkg` command line: parses the arguments, runs the subcommand (`src/cli/`)
//! and turns an error into one line on stderr and its documented exit code.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use cli::{Context, GlobalArgs};

/// Turn kernel.org toolchains into verified .deb, .rpm and .ipk packages.
#[derive(Parser, Debug)]
#[command(name = "korgpkg", version, about, after_help = cli::EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Build(cli::build::Args),
    Deps(cli::deps::Args),
    List(cli::list::Args),
    Specs(cli::specs::Args),
    Inspect(cli::inspect::Args),
    #[command(subcommand)]
    Key(cli::key::Command),
    Publish(cli::publish::Args),
    Sync(cli::sync::Args),
    #[command(subcommand)]
    Repo(cli::repo::Command),
    Serve(cli::serve::Args),
    #[command(subcommand)]
    Kernel(cli::kernel::Command),
    #[command(subcommand)]
    Obs(cli::obs::Command),
    /// Build OCI container images from korgpkg packages and push them to registries.
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    #[command(subcommand)]
    DistroMap(cli::distromap::Command),
    Completions(cli::completions::Args),
}

fn main() -> ExitCode {
    // End like other Unix tools when the reader goes away (`korgpkg list | head -1`):
    // Rust ignores SIGPIPE, which would turn the next print into a panic.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    korgpkg::cleanup::install_signal_handlers();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("korgpkg: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> korgpkg::Result<()> {
    let config = cli.global.config()?;
    if let Command::Completions(args) = &cli.command {
        return cli::completions::run(args);
    }
    let ctx = Context::new(cli.global, config)?;
    match &cli.command {
        Command::Build(args) => cli::build::run(args, &ctx),
        Command::Deps(args) => cli::deps::run(args, &ctx),
        Command::List(args) => cli::list::run(args, &ctx),
        Command::Specs(args) => cli::specs::run(args, &ctx),
        Command::Inspect(args) => cli::inspect::run(args, &ctx),
        Command::Key(command) => cli::key::run(command, &ctx),
        Command::Publish(args) => cli::publish::run(args, &ctx),
        Command::Sync(args) => cli::sync::run(args, &ctx),
        Command::Repo(command) => cli::repo::run(command, &ctx),
        Command::Serve(args) => cli::serve::run(args, &ctx),
        Command::Kernel(command) => cli::kernel::run(command, &ctx),
        Command::Obs(command) => cli::obs::run(command, &ctx),
        Command::Image(command) => cli::image::run(command, &ctx),
        Command::DistroMap(command) => cli::distromap::run(command, &ctx),
        Command::Completions(args) => cli::completions::run(args),
    }
}
