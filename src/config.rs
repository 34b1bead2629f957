//! The optional config file (`$XDG_CONFIG_HOME/korgpkg/config.toml`, or `--config`,
//! or `KORGPKG_CONFIG`): defaults for command-line options. Flags always win.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::deps::UnmappedPolicy;
use crate::error::{Error, IoContext, Result};
use crate::fetch::{parse_size, FetchLimits};
use crate::model::Format;
use crate::package::{BuildOptions, DebCompression, IpkOuter, RpmCompression};
use crate::pipeline::BuildSettings;
use crate::source::NetworkOptions;

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
    /// Seconds one download may take, retries included (0: no limit).
    pub download_timeout: Option<u64>,
    /// Largest file to download (`"4GiB"`, `"512M"`, bytes).
    pub download_max_size: Option<String>,
    /// Abandon a download slower than this many bytes per second (0: never) ...
    pub low_speed_limit: Option<u64>,
    /// ... over this many seconds.
    pub low_speed_time: Option<u64>,
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
        if let Some(size) = &config.download_max_size {
            parse_size(size)
                .map_err(|e| Error::spec(&path, format!("field download_max_size: {e}")))?;
        }
        if config.low_speed_time == Some(0) {
            return Err(Error::spec(
                &path,
                "field low_speed_time: must be at least 1",
            ));
        }
        Ok((config, Some(path)))
    }

    /// The download limits this file sets.
    pub fn fetch_limits(&self) -> FetchLimits {
        FetchLimits {
            download_timeout: self.download_timeout,
            download_max_size: self
                .download_max_size
                .as_deref()
                .and_then(|s| parse_size(s).ok()),
            low_speed_limit: self.low_speed_limit,
            low_speed_time: self.low_speed_time,
        }
    }
}

/// Per-format settings given on the command line; `None` falls back to the config file,
/// then to [`BuildOptions::default`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptionFlags {
    pub deb_compression: Option<DebCompression>,
    pub rpm_compression: Option<RpmCompression>,
    pub ipk_outer: Option<IpkOuter>,
    pub zstd_level: Option<i32>,
    pub gzip_level: Option<u32>,
}

impl Config {
    /// The formats to write: the flag's, else the config file's, else all.
    pub fn formats(&self, flag: &[Format]) -> Vec<Format> {
        if flag.is_empty() {
            self.formats.clone().unwrap_or_else(|| Format::ALL.to_vec())
        } else {
            flag.to_vec()
        }
    }

    /// The output directory: the flag's, else the config file's, else `dist`.
    pub fn out_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.or(self.out.as_deref())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("dist"))
    }

    /// What sonames no distro map knows mean: the flag's, else the config file's, else
    /// an error.
    pub fn unmapped(&self, flag: Option<UnmappedPolicy>) -> UnmappedPolicy {
        flag.or(self.unmapped).unwrap_or_default()
    }

    /// The package revision: the flag's, else the config file's, else 1.
    pub fn revision(&self, flag: Option<u32>) -> u32 {
        flag.or(self.revision).unwrap_or(1)
    }

    /// Per-format settings: each flag, else the config file, else the default.
    pub fn build_options(&self, flags: &BuildOptionFlags) -> BuildOptions {
        let defaults = BuildOptions::default();
        BuildOptions {
            deb_compression: flags
                .deb_compression
                .or(self.deb_compression)
                .unwrap_or(defaults.deb_compression),
            rpm_compression: flags
                .rpm_compression
                .or(self.rpm_compression)
                .unwrap_or(defaults.rpm_compression),
            ipk_outer: flags
                .ipk_outer
                .or(self.ipk_outer)
                .unwrap_or(defaults.ipk_outer),
            zstd_level: flags
                .zstd_level
                .or(self.zstd_level)
                .unwrap_or(defaults.zstd_level),
            gzip_level: flags
                .gzip_level
                .or(self.gzip_level)
                .unwrap_or(defaults.gzip_level),
        }
    }

    /// Formats, output directory, revision and per-format settings (each the flag's,
    /// else the config file's, else the default) and `SOURCE_DATE_EPOCH`.
    pub fn build_settings(
        &self,
        formats: &[Format],
        out_dir: Option<&Path>,
        revision: Option<u32>,
        flags: &BuildOptionFlags,
    ) -> Result<BuildSettings> {
        Ok(BuildSettings {
            formats: self.formats(formats),
            out_dir: self.out_dir(out_dir),
            revision: self.revision(revision),
            options: self.build_options(flags),
            source_date_epoch: source_date_epoch()?,
        })
    }

    /// The specs directory: the flag's, else the config file's.
    pub fn specs_dir(&self, flag: Option<&Path>) -> Option<PathBuf> {
        flag.map(Path::to_path_buf).or(self.specs_dir.clone())
    }

    /// The templates directory: the flag's, else the config file's.
    pub fn templates_dir(&self, flag: Option<&Path>) -> Option<PathBuf> {
        flag.map(Path::to_path_buf).or(self.templates_dir.clone())
    }

    /// Network settings: each flag, else the config file's; keyrings from the config
    /// file come before those given as flags.
    pub fn network(&self, flags: &NetworkOptions) -> NetworkOptions {
        NetworkOptions {
            mirror: flags.mirror.clone().or(self.mirror.clone()),
            cache_dir: flags.cache_dir.clone().or(self.cache_dir.clone()),
            keyrings: self
                .keyrings
                .iter()
                .flatten()
                .chain(&flags.keyrings)
                .cloned()
                .collect(),
            keys_url: flags.keys_url.clone().or(self.keys_url.clone()),
            progress: flags.progress,
            limits: FetchLimits {
                download_timeout: flags.limits.download_timeout.or(self.download_timeout),
                download_max_size: flags
                    .limits
                    .download_max_size
                    .or(self.fetch_limits().download_max_size),
                low_speed_limit: flags.limits.low_speed_limit.or(self.low_speed_limit),
                low_speed_time: flags.limits.low_speed_time.or(self.low_speed_time),
            },
        }
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, if set (clamps mtimes, sets build times).
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.trim().parse::<u64>().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        })?)),
        _ => Ok(None),
    }
}
