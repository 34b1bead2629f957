//! korgpkg turns kernel.org compiler toolchains into verified distribution packages.
//!
//! The pipeline has one module per stage: **source** (where the tarball comes from) →
//! **verify** (hashes and signatures, later) → [`payload`] (stream, validate, stage) →
//! [`deps`] (dependencies derived from the ELF files) →
//! [`package`] (one module per format behind [`package::Packager`]) → [`publish`]
//! (repositories). [`pipeline`] wires the stages together for the CLI.
//! Declarative data lives outside the code: [`spec`] reads `specs/*.toml`, and
//! [`templates`] renders `templates/**/*.hbs`.

pub mod config;
pub mod deps;
pub mod distromap;
pub mod error;
pub mod fetch;
pub mod kernel;
pub mod obs;
pub mod package;
pub mod payload;
pub mod pipeline;
pub mod publish;
pub mod relation;
pub mod signing;
pub mod source;
pub mod spec;
pub mod templates;
pub mod verify;
pub mod version;
pub mod xz;

pub use error::{Error, Result};

/// How many threads a parallel stage (xz decoding, compression, publishing) uses: the
/// `KORGPKG_THREADS` environment variable if set to a positive number, else the number
/// of CPUs available to this process. The output never depends on it.
pub fn worker_threads() -> usize {
    std::env::var("KORGPKG_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(64)
}
