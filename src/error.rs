//! The library's error type. Every variant carries the file, field, entry or URL it is
//! about, so the CLI can print one line that tells the user what to fix.

use std::io;
use std::path::{Path, PathBuf};

/// Collapse a multi-line error message into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in korgpkg's pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec, config or template file is malformed (names the file and the field).
    #[error("{}: {message}", path.display())]
    Spec { path: PathBuf, message: String },

    /// The command line asked for something that cannot be done.
    #[error("{0}")]
    Usage(String),

    /// An input (tarball, package file, build tree) is malformed or hostile.
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },

    /// A hash or signature check failed, or a key is unusable (names the file or URL).
    #[error("{origin}: {message}")]
    Verify { origin: String, message: String },

    /// A download failed (names the URL).
    #[error("{url}: {message}")]
    Network { url: String, message: String },

    /// A template failed to render.
    #[error("template {name}: {message}")]
    Template { name: String, message: String },

    /// An I/O operation failed; `context` says what was being done to which file.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::Input`].
    pub fn input(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Verify`].
    pub fn verify(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Verify {
            origin: origin.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Network`].
    pub fn network(url: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Network {
            url: url.into(),
            message: message.into(),
        }
    }

    /// A TOML file that does not parse or has unknown/missing fields: exit code 3, the
    /// message names the file and line.
    pub fn toml(path: impl AsRef<Path>, text: &str, e: &toml::de::Error) -> Self {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = one_line(e.message());
        match line {
            Some(l) => Error::spec(path, format!("line {l}: {msg}")),
            None => Error::spec(path, msg),
        }
    }

    /// Shorthand for [`Error::Spec`].
    pub fn spec(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Spec {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// The process exit code the CLI uses for this error (documented in README.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } => 1,
            Error::Usage(_) => 2,
            Error::Spec { .. } | Error::Template { .. } => 3,
            Error::Input { .. } => 4,
            Error::Verify { .. } => 5,
            Error::Network { .. } => 6,
        }
    }
}

/// Adds a human-readable context to `io::Result`s.
pub trait IoContext<T> {
    /// Wrap the error with a message computed only on failure.
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
