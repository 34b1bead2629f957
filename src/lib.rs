//! korgpkg turns kernel.org compiler toolchains (and built Linux kernels) into verified
//! distribution packages and signed repositories.
//!
//! The pipeline has one module per stage, each using only the stages before it:
//! [`source`] (which releases the mirror offers, from verified sums files; downloads into
//! the cache through [`fetch`], or a tarball on disk) → [`verify`] (OpenPGP: the signed
//! sums file, the detached `.tar.sign` checked while the payload is staged) →
//! [`payload`] (stream, validate, stage; [`xz`] decodes in parallel; [`targuard`] bounds
//! what the tar reader may hold) → [`deps`]
//! (dependencies derived from the ELF files, mapped to distro packages) → [`package`]
//! (one module per format behind [`package::Packager`]) → [`publish`] (signed apt, dnf
//! and opkg repositories, with [`signing`]).
//! [`pipeline`] runs the stages for one build: it selects releases
//! ([`pipeline::select`]), verifies and stages them ([`pipeline::prepare`]) and writes
//! every format ([`pipeline::build`]). [`kernel`] packages a built kernel and [`obs`]
//! hands a prepared release to Open Build Service; both reuse the pipeline.
//! Every stage speaks the vocabulary of [`model`] (formats, [`model::PackageMeta`],
//! relations), which uses no stage. Declarative data lives outside the code: [`spec`]
//! reads `specs/*.toml`, [`templates`] renders `templates/**/*.hbs` and `OBS/*.hbs`, and
//! [`config`] reads the optional config file and resolves options against it;
//! [`distromap`] generates the Debian/Ubuntu soname maps the deps stage reads from a
//! release's own Contents index.

pub mod cleanup;
pub mod config;
pub mod deps;
pub mod distromap;
pub mod error;
pub mod fetch;
pub mod image;
pub mod kernel;
pub mod model;
pub mod obs;
pub mod package;
pub mod payload;
pub mod pipeline;
pub mod publish;
pub mod signing;
pub mod source;
pub mod spec;
pub mod sync;
pub mod targuard;
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
