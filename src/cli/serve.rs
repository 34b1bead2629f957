//! `korgpkg serve`: a static, read-only HTTP server for a directory.

use std::path::PathBuf;

use korgpkg::Result;

use super::Context;

/// Serve a directory over HTTP (static, read-only; for tests and local use).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  korgpkg serve /srv/korg --listen 127.0.0.1:8080")]
pub struct Args {
    /// The directory to serve.
    dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
}

pub fn run(args: &Args, _ctx: &Context) -> Result<()> {
    korgpkg::publish::serve::serve(&args.dir, &args.listen)
}
