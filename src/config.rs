//! The optional config file (`$XDG_CONFIG_HOME/korgpkg/config.toml`, or `--config`,
//! or `KORGPKG_CONFIG`): defaults for command-line options. Flags always win.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::deps::UnmappedPolicy;
use crate::error::{Error, IoContext, Result};
use crate::package::{DebCompression, Format, IpkOuter, RpmCompression};

/// Settings a config file may give. Unknown keys are an error naming the key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default output directory for `build`.
    pub out: Option<PathBuf>,
    /// Default formats for `build`.
    pub formats: Option<Vec<Format>>,
    /// Default package revision.
    pub revision: Option<u32>,
    /// Extra specs directory (overrides built-in specs of the same name).
    pub specs_dir: Option<PathBuf>,
    /// Extra templates directory (overrides built-in templates of the same name).
    pub templates_dir: Option<PathBuf>,
    pub deb_compression: Option<DebCompression>,
    pub rpm_compression: Option<RpmCompression>,
    pub ipk_outer: Option<IpkOuter>,
    /// Sonames no distro map knows: `error` (default) or `warn`.
    pub unmapped: Option<UnmappedPolicy>,
    /// zstd level (1-19) for deb and rpm.
    pub zstd_level: Option<i32>,
    /// gzip level (1-9) for the ipk and for gzip deb/rpm.
    pub gzip_level: Option<u32>,
    /// Mirror base URL (`https://mirrors.edge.kernel.org/pub/tools`, `file:///...`).
    pub mirror: Option<String>,
    /// Download cache directory.
    pub cache_dir: Option<PathBuf>,
    /// OpenPGP keyrings (armored or binary) holding the pinned signers' keys.
    pub keyrings: Option<Vec<PathBuf>>,
    /// Where to fetch pinned keys missing from the keyrings (`""` turns fetching off).
    pub keys_url: Option<String>,
}

impl Config {
    /// The default config file location.
    pub fn default_path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("korgpkg").join("config.toml"))
    }

    /// Load `explicit` (which must exist), else the default location if it exists,
    /// else defaults. Returns the config and the file it came from.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match Self::default_path() {
                Some(p) if p.exists() => p,
                _ => return Ok((Config::default(), None)),
            },
        };
        let text = std::fs::read_to_string(&path)
            .ctx(|| format!("reading config file {}", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::toml(&path, &text, &e))?;
        if let Some(level) = config.zstd_level {
            if !(1..=19).contains(&level) {
                return Err(Error::spec(
                    &path,
                    format!("field zstd_level: {level} is not in 1..=19"),
                ));
            }
        }
        if let Some(level) = config.gzip_level {
            if !(1..=9).contains(&level) {
                return Err(Error::spec(
                    &path,
                    format!("field gzip_level: {level} is not in 1..=9"),
                ));
            }
        }
        Ok((config, Some(path)))
    }
}
