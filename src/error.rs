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
    #[error("{}: {}", escape(&path.display().to_string()), escape(message))]
    Spec { path: PathBuf, message: String },

    /// The command line asked for something that cannot be done.
    #[error("{}", escape(.0))]
    Usage(String),

    /// An input (tarball, package file, build tree) is malformed or hostile.
    #[error("{}: {}", escape(&path.display().to_string()), escape(message))]
    Input { path: PathBuf, message: String },

    /// A hash or signature check failed, or a key is unusable (names the file or URL).
    #[error("{}: {}", escape(origin), escape(message))]
    Verify { origin: String, message: String },

    /// A download failed (names the URL).
    #[error("{}: {}", escape(url), escape(message))]
    Network { url: String, message: String },

    /// A template failed to render.
    #[error("template {}: {}", escape(name), escape(message))]
    Template { name: String, message: String },

    /// An I/O operation failed; `context` says what was being done to which file.
    #[error("{}: {}", escape(context), escape(&source.to_string()))]
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

/// `text` with every character that could move the cursor, recolour or rewrite a
/// terminal, or break the one-line error format, written as an escape: control
/// characters (C0, DEL, C1: `\n`, `\r`, `\t`, `\x1b`, `\u{9b}`), the Unicode line and
/// paragraph separators and the bidirectional overrides and isolates. Every error's
/// `Display` passes the text it quotes (file names, fields, entries, URLs, messages
/// that echo input) through it, so hostile input never reaches the terminal raw.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_plain_text_and_escapes_terminal_controls() {
        assert_eq!(
            escape("korg-clang-18_18.1.8-1_amd64.deb"),
            "korg-clang-18_18.1.8-1_amd64.deb"
        );
        assert_eq!(
            escape("a\x1b[31mred\nb\rc\td\u{9b}e\u{202e}f\u{7f}"),
            "a\\x1b[31mred\\nb\\rc\\td\\u{9b}e\\u{202e}f\\x7f"
        );
        let e = Error::input("evil\x1b]0;x\x07.deb", "Version: 1\n\x1b[2J");
        let shown = e.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "evil\\x1b]0;x\\x07.deb: Version: 1\\n\\x1b[2J");
    }
}
