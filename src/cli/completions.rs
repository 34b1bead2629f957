//! `korgpkg completions`: a shell completion script.

use clap::CommandFactory;

use korgpkg::Result;

/// Print a shell completion script.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  korgpkg completions bash > /etc/bash_completion.d/korgpkg\n  korgpkg completions zsh > \"${fpath[1]}/_korgpkg\""
)]
pub struct Args {
    /// The shell.
    shell: clap_complete::Shell,
}

pub fn run(args: &Args) -> Result<()> {
    clap_complete::generate(
        args.shell,
        &mut crate::Cli::command(),
        "korgpkg",
        &mut std::io::stdout(),
    );
    Ok(())
}
