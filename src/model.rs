//! The vocabulary every stage speaks: package formats, the format-neutral description
//! of a package ([`PackageMeta`]: names, versions, arches, texts, [`relation`]s,
//! provenance, maintainer scripts). It uses no other module of the crate, so the stages
//! (source, verify, payload, deps, package, publish) can all use it without using each
//! other.

pub mod relation;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use relation::{Relation, RelationKind};

/// A package format.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Deb,
    Rpm,
    Ipk,
}

impl Format {
    /// Every format, in the order korgpkg builds them.
    pub const ALL: [Format; 3] = [Format::Deb, Format::Rpm, Format::Ipk];

    /// Lowercase name (`deb`), also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Deb => "deb",
            Format::Rpm => "rpm",
            Format::Ipk => "ipk",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relations of one format, by kind, in spec order, without duplicates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Relations(pub BTreeMap<RelationKind, Vec<Relation>>);

impl Relations {
    /// The relations of `kind` (empty if none).
    pub fn of(&self, kind: RelationKind) -> &[Relation] {
        self.0.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `kind`'s relations printed in `format`'s syntax, comma-joined (`""` if none).
    pub fn joined(&self, kind: RelationKind, format: Format) -> String {
        self.of(kind)
            .iter()
            .map(|r| r.display(format))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Merge `other` into these relations: no duplicates, the highest minimum version
    /// of a package wins (see [`relation::merge_relation`]).
    pub fn merge(&mut self, other: &Relations) {
        for (kind, list) in &other.0 {
            let mine = self.0.entry(*kind).or_default();
            for rel in list {
                relation::merge_relation(mine, rel.clone());
            }
        }
    }

    /// Native field name → printed relations, for manifests and templates.
    pub fn by_field(&self, format: Format) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for kind in RelationKind::ALL {
            if let (Some(field), list) = (kind.field_name(format), self.of(kind)) {
                if !list.is_empty() {
                    out.insert(
                        field.to_string(),
                        list.iter().map(|r| r.display(format)).collect(),
                    );
                }
            }
        }
        out
    }
}

/// The relations of every format.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FormatRelations {
    pub deb: Relations,
    pub rpm: Relations,
    pub ipk: Relations,
}

impl FormatRelations {
    /// The relations of `format`.
    pub fn get(&self, format: Format) -> &Relations {
        match format {
            Format::Deb => &self.deb,
            Format::Rpm => &self.rpm,
            Format::Ipk => &self.ipk,
        }
    }

    /// Mutable access to the relations of `format`.
    pub fn get_mut(&mut self, format: Format) -> &mut Relations {
        match format {
            Format::Deb => &mut self.deb,
            Format::Rpm => &mut self.rpm,
            Format::Ipk => &mut self.ipk,
        }
    }
}

/// Where the packaged bytes came from and who vouched for them.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// Upstream URL of the tarball: where it was downloaded from, or for a local file
    /// (`--from`) the kernel.org URL the spec publishes that file name at.
    pub url: String,
    /// The local file a `--from` build read. Only in the build report, never in a
    /// package: a path on the build machine would make packages differ by directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    /// SHA-256 of the tarball as downloaded.
    pub sha256: String,
    /// Primary fingerprint of the developer key whose `.tar.sign` was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Primary fingerprint of the key that signed the checksum list, if one was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sums_signer: Option<String>,
}

/// The upstream's copyright notice and license, from the spec's `[copyright]` table:
/// the deb's DEP-5 `copyright` file and the rpm's `%license` file are made from it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Copyright {
    /// The copyright notice (DEP-5 `Copyright:`).
    pub notice: String,
    /// The license as a DEP-5 `License:` short name (`Apache-2.0 with LLVM exception`).
    pub dep5_license: String,
    /// The texts the license is made of, in order.
    pub licenses: Vec<LicenseText>,
}

/// One license text (`Apache-2.0`, `LLVM-exception`).
#[derive(Debug, Clone, Serialize)]
pub struct LicenseText {
    pub name: String,
    /// The file in Debian's `/usr/share/common-licenses/` with this text, if Debian
    /// ships it (the deb's copyright file then refers to it instead of repeating it).
    pub debian_common: Option<String>,
    /// The full text.
    pub text: String,
}

impl Copyright {
    /// The notice and every license text in full: the rpm's `%license` file.
    pub fn full_text(&self) -> String {
        let mut out = format!(
            "Copyright: {}\nLicense: {}\n",
            self.notice, self.dep5_license
        );
        for l in &self.licenses {
            out.push_str(&format!("\n==== {} ====\n\n", l.name));
            out.push_str(l.text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Format-neutral description of one binary package.
#[derive(Debug, Clone, Serialize)]
pub struct PackageMeta {
    /// The spec it came from (`llvm`).
    pub spec: String,
    /// Package name (`korg-clang-18`).
    pub name: String,
    /// Version as upstream spells it (`18.1.0-rc3`).
    pub upstream_version: String,
    /// Version as packages spell it (`18.1.0~rc3`).
    pub version: String,
    /// Package revision (deb/ipk `-N`, rpm Release).
    pub revision: u32,
    /// Arch names in every format.
    pub arch: ArchNames,
    pub summary: String,
    pub description: String,
    pub license: String,
    pub homepage: String,
    pub maintainer: String,
    pub section: String,
    pub priority: String,
    pub rpm_group: String,
    /// Install prefix (`/usr/lib/korg/llvm-18`).
    pub prefix: String,
    /// Build timestamp: `SOURCE_DATE_EPOCH`, else the newest payload mtime.
    pub build_time: u64,
    pub relations: FormatRelations,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// Whether the upstream tarball's signature was checked (`false` only for
    /// `--allow-unverified` builds and for kernels); texts say which.
    pub verified: bool,
    /// Copyright notice and license texts.
    pub copyright: Copyright,
    /// Sum of file sizes in bytes (filled in once the payload is known).
    pub installed_size: u64,
    /// Maintainer scripts per format (none for toolchains).
    #[serde(skip)]
    pub scripts: FormatScripts,
}

/// Maintainer scripts of one format: shell scripts run by the package manager.
#[derive(Debug, Clone, Default)]
pub struct Scripts {
    pub preinst: Option<String>,
    pub postinst: Option<String>,
    pub prerm: Option<String>,
    pub postrm: Option<String>,
}

impl Scripts {
    /// The scripts that are set, by their Debian control member name, in that order.
    pub fn members(&self) -> Vec<(&'static str, &str)> {
        [
            ("postinst", &self.postinst),
            ("postrm", &self.postrm),
            ("preinst", &self.preinst),
            ("prerm", &self.prerm),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.as_deref().map(|s| (n, s)))
        .collect()
    }
}

/// The maintainer scripts of every format.
#[derive(Debug, Clone, Default)]
pub struct FormatScripts {
    pub deb: Scripts,
    pub rpm: Scripts,
    pub ipk: Scripts,
}

impl FormatScripts {
    /// The scripts of `format`.
    pub fn get(&self, format: Format) -> &Scripts {
        match format {
            Format::Deb => &self.deb,
            Format::Rpm => &self.rpm,
            Format::Ipk => &self.ipk,
        }
    }
}

impl PackageMeta {
    /// Full version in `format` (`18.1.0~rc3-1`; rpm: version only, see `revision`).
    pub fn full_version(&self, format: Format) -> String {
        match format {
            Format::Rpm => self.version.clone(),
            Format::Deb | Format::Ipk => format!("{}-{}", self.version, self.revision),
        }
    }
}

/// The per-format names of one upstream arch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchNames {
    /// The arch as upstream spells it (the `[arches.<name>]` key).
    #[serde(default, skip_deserializing)]
    pub upstream: String,
    /// Debian architecture (`amd64`, `arm64`).
    pub deb: String,
    /// RPM architecture (`x86_64`, `aarch64`).
    pub rpm: String,
    /// opkg architecture (`x86_64`, `aarch64`).
    pub ipk: String,
}

impl ArchNames {
    /// The arch name in `format`.
    pub fn for_format(&self, format: Format) -> &str {
        match format {
            Format::Deb => &self.deb,
            Format::Rpm => &self.rpm,
            Format::Ipk => &self.ipk,
        }
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's
/// civil_from_days).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
