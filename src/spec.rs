//! Declarative package specs (`specs/*.toml`): what upstream publishes, how its files are
//! named, which arches exist in each format, what the package is called and where it
//! installs. Adding a toolchain is one new file here, no Rust.
//!
//! Naming fields (`upstream.tarball`, `package.name`, ...) use `{{var}}` placeholders and
//! work both ways: rendered to make a name, and matched to read the variables back out of
//! a file or package name. Each variable's shape is a regex under `[vars]`; `major` (the
//! first number of `version`) is always available.

use globset::{Glob, GlobSet, GlobSetBuilder};
use include_dir::{include_dir, Dir};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::deps::{DepsOverrides, DistroMaps, ForeignArch};
use crate::error::{one_line, Error, IoContext, Result};
use crate::model::relation::{Relation, RelationKind};
use crate::model::{
    ArchNames, Copyright, Format, FormatRelations, LicenseText, PackageMeta, Relations,
};
use crate::templates::Templates;
use crate::version::UpstreamVersion;

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/specs");
/// License texts a spec's `[copyright]` table can name with `file`.
static LICENSES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/specs/licenses");

/// Variables extracted from or used to render names (`version`, `arch`, `major`, ...).
pub type Vars = BTreeMap<String, String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    summary: String,
    upstream: Upstream,
    vars: BTreeMap<String, String>,
    arches: BTreeMap<String, ArchNames>,
    package: RawPackage,
    #[serde(default)]
    relations: RawRelations,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    deps: RawDeps,
    copyright: RawCopyright,
}

/// `[copyright]`: the upstream's notice and license, for the deb's DEP-5 copyright file
/// and the rpm's `%license` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopyright {
    /// The upstream's copyright notice (one line).
    notice: String,
    /// The license as a DEP-5 short name (`Apache-2.0 with LLVM exception`).
    dep5_license: String,
    /// The texts the license is made of.
    licenses: Vec<RawLicense>,
}

/// One license text: `file` (a built-in text in `specs/licenses/`) or `text` (inline).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLicense {
    name: String,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    text: Option<String>,
    /// The file in Debian's `/usr/share/common-licenses/` holding the same text.
    #[serde(default)]
    debian_common: Option<String>,
}

/// `[deps]`: exceptions to the distro maps for derived dependencies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeps {
    /// Sonames that are never dependencies (provided by other means).
    #[serde(default)]
    ignore_sonames: Vec<String>,
    /// Distro map name → soname → relation (`libfoo1 (>= 1.2)`), instead of that map's
    /// rule: `[deps.map.debian-12]`.
    #[serde(default)]
    map: BTreeMap<String, RawDepsMap>,
    /// ELF files for another machine: `allow` (default) or `error`.
    #[serde(default)]
    foreign_arch: ForeignArch,
}

/// One entry of `[deps] map`: a table per distro map; a bare string is the old
/// single-map form, refused with a pointer to the new one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDepsMap {
    PerDistro(BTreeMap<String, String>),
    Single(String),
}

/// Where and how upstream publishes the tarballs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Directory below the mirror base (`llvm/files`), may use variables.
    pub directory: String,
    /// Tarball file name (`llvm-{{version}}-{{arch}}.tar.{{ext}}`).
    pub tarball: String,
    /// The single top directory inside the tarball that maps to the install prefix.
    pub top_dir: String,
    /// Detached signature file over the uncompressed tar.
    pub signature: String,
    /// The signed checksum list in `directory`.
    pub sums: String,
    /// Pinned primary fingerprint of the key that signs `sums`.
    pub sums_signer: String,
    /// Pinned primary fingerprint of the key that signs the tarballs.
    pub tarball_signer: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: String,
    prefix: String,
    summary: String,
    description: String,
    license: String,
    homepage: String,
    maintainer: String,
    section: String,
    priority: String,
    rpm_group: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelations {
    #[serde(default)]
    deb: DebRelations,
    #[serde(default)]
    rpm: RpmRelations,
    #[serde(default)]
    ipk: IpkRelations,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DebRelations {
    #[serde(default)]
    depends: Vec<String>,
    #[serde(default)]
    recommends: Vec<String>,
    #[serde(default)]
    suggests: Vec<String>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    conflicts: Vec<String>,
    #[serde(default)]
    breaks: Vec<String>,
    #[serde(default)]
    replaces: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RpmRelations {
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    recommends: Vec<String>,
    #[serde(default)]
    suggests: Vec<String>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    conflicts: Vec<String>,
    #[serde(default)]
    obsoletes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpkRelations {
    #[serde(default)]
    depends: Vec<String>,
    #[serde(default)]
    recommends: Vec<String>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    conflicts: Vec<String>,
    #[serde(default)]
    replaces: Vec<String>,
}

/// One placeholder-template name that can be rendered and matched.
#[derive(Debug, Clone)]
struct NamePattern {
    template: String,
    regex: Regex,
    /// Group name → variable name (a variable used twice gets two groups).
    groups: Vec<(String, String)>,
}

/// A validated spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Spec name: the file stem (`llvm`).
    pub name: String,
    /// Where the spec was read from (for error messages).
    pub path: PathBuf,
    /// One-line summary of what the spec offers.
    pub summary: String,
    /// Upstream layout and pinned signers.
    pub upstream: Upstream,
    /// Per-arch names, keyed by upstream arch.
    pub arches: BTreeMap<String, ArchNames>,
    vars: BTreeMap<String, String>,
    package: RawPackage,
    relations: Vec<(Format, RelationKind, String)>,
    tarball: NamePattern,
    package_name: NamePattern,
    exclude: GlobSet,
    exclude_patterns: Vec<String>,
    /// `[deps]` exceptions to the distro maps.
    pub deps: DepsOverrides,
    copyright: Copyright,
}

/// A short description of one spec, for `korgpkg specs`.
#[derive(Debug, Clone, Serialize)]
pub struct SpecSummary {
    pub spec: String,
    pub package: String,
    pub tarball: String,
    pub prefix: String,
    pub arches: Vec<String>,
    pub summary: String,
    pub source: String,
}

/// A distro map name as a file stem: `debian-12`, `ubuntu-24.04`, `openwrt`.
fn valid_distro_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !name.starts_with('.')
}

/// All specs known to this run: the built-in ones plus a user directory.
#[derive(Debug, Clone)]
pub struct SpecSet {
    specs: Vec<Spec>,
    distros: DistroMaps,
}

const FINGERPRINT_LEN: usize = 40;
/// Directories a spec prefix must live under, so korgpkg never ships a file that a
/// distribution's own packages own.
pub const ALLOWED_PREFIX_ROOTS: [&str; 2] = ["/usr/lib/korg/", "/opt/korg/"];

impl SpecSet {
    /// Load the built-in specs, then every `*.toml` in `dir` (a file of the same name
    /// replaces the built-in one). Every spec is validated before this returns.
    pub fn load(dir: Option<&Path>, templates: &Templates) -> Result<Self> {
        let mut by_name: BTreeMap<String, Spec> = BTreeMap::new();
        for file in BUILTIN.files() {
            if file.path().extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let path = Path::new("specs").join(file.path());
            let text = file
                .contents_utf8()
                .ok_or_else(|| Error::spec(&path, "not UTF-8"))?;
            let spec = Spec::parse(&path, text, templates)?;
            by_name.insert(spec.name.clone(), spec);
        }
        if let Some(dir) = dir {
            let rd = std::fs::read_dir(dir)
                .ctx(|| format!("reading specs directory {}", dir.display()))?;
            let mut paths = Vec::new();
            for e in rd {
                let p = e
                    .ctx(|| format!("reading specs directory {}", dir.display()))?
                    .path();
                if p.extension().is_some_and(|e| e == "toml") {
                    paths.push(p);
                }
            }
            paths.sort();
            for p in paths {
                let text =
                    std::fs::read_to_string(&p).ctx(|| format!("reading spec {}", p.display()))?;
                let spec = Spec::parse(&p, &text, templates)?;
                by_name.insert(spec.name.clone(), spec);
            }
        }
        let distros = DistroMaps::load(dir.map(|d| d.join("distros")).as_deref())?;
        for spec in by_name.values() {
            for distro in spec.deps.map.keys() {
                distros.get(distro).map_err(|e| {
                    Error::spec(&spec.path, format!("field deps.map.{distro}: {e}"))
                })?;
            }
        }
        Ok(SpecSet {
            specs: by_name.into_values().collect(),
            distros,
        })
    }

    /// The soname → package maps (`specs/distros/*.toml`, plus `<dir>/distros/`).
    pub fn distros(&self) -> &DistroMaps {
        &self.distros
    }

    /// All specs, sorted by name.
    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }

    /// The spec with this name (`llvm`).
    pub fn get(&self, name: &str) -> Option<&Spec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// The specs (with the variables a package name fixes) that `name` selects: a spec
    /// name, a package name, or every spec when `None`.
    pub fn select(&self, name: Option<&str>) -> Result<Vec<(&Spec, Vars)>> {
        match name {
            None => Ok(self.specs.iter().map(|s| (s, Vars::new())).collect()),
            Some(n) => match self.get(n) {
                Some(spec) => Ok(vec![(spec, Vars::new())]),
                None => Ok(vec![self.find_package(n)?]),
            },
        }
    }

    /// The spec whose package-name pattern matches `package`, with the variables read
    /// from the name (`korg-clang-18` → llvm, `major=18`).
    pub fn find_package(&self, package: &str) -> Result<(&Spec, Vars)> {
        let mut found = self
            .specs
            .iter()
            .filter_map(|s| s.package_name.matches(package).map(|v| (s, v)));
        match (found.next(), found.next()) {
            (Some(hit), None) => Ok(hit),
            (Some((a, _)), Some((b, _))) => Err(Error::Usage(format!(
                "package {package:?} matches both spec {} and spec {}",
                a.name, b.name
            ))),
            (None, _) => {
                let known: Vec<String> =
                    self.specs.iter().map(|s| s.package.name.clone()).collect();
                Err(Error::Usage(format!(
                    "no spec offers a package named {package:?} (known: {}; see `korgpkg specs`)",
                    known.join(", ")
                )))
            }
        }
    }
}

impl NamePattern {
    fn new(field: &str, template: &str, vars: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut regex = String::from("^");
        let mut groups = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            regex.push_str(&regex::escape(&rest[..start]));
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("field {field}: unclosed {{{{ in {template:?}"))?;
            let var = after[..end].trim();
            let shape = vars.get(var).ok_or_else(|| {
                format!(
                    "field {field}: unknown placeholder {{{{{var}}}}} (declare it under [vars])"
                )
            })?;
            let group = format!("g{}", groups.len());
            regex.push_str(&format!("(?P<{group}>{shape})"));
            groups.push((group, var.to_string()));
            rest = &after[end + 2..];
        }
        regex.push_str(&regex::escape(rest));
        regex.push('$');
        let regex = Regex::new(&regex)
            .map_err(|e| format!("field {field}: {}", one_line(&e.to_string())))?;
        Ok(NamePattern {
            template: template.to_string(),
            regex,
            groups,
        })
    }

    /// Match `text`, returning the variables, or `None` (also when a repeated variable
    /// matched two different values).
    fn matches(&self, text: &str) -> Option<Vars> {
        let caps = self.regex.captures(text)?;
        let mut vars = Vars::new();
        for (group, var) in &self.groups {
            let value = caps.name(group)?.as_str().to_string();
            if let Some(prev) = vars.insert(var.clone(), value.clone()) {
                if prev != value {
                    return None;
                }
            }
        }
        Some(vars)
    }
}

impl Spec {
    /// Parse and validate one spec file. `path` is used in error messages.
    pub fn parse(path: &Path, text: &str, templates: &Templates) -> Result<Self> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| Error::toml(path, text, &e))?;
        let bad = |msg: String| Error::spec(path, msg);
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| bad("spec file has no name".into()))?;

        let mut vars = raw.vars.clone();
        for required in ["version"] {
            if !vars.contains_key(required) {
                return Err(bad(format!(
                    "field vars.{required}: missing (every spec needs it)"
                )));
            }
        }
        if vars.contains_key("major") {
            return Err(bad(
                "field vars.major: `major` is derived from `version`; do not declare it".into(),
            ));
        }
        vars.insert("major".into(), "[0-9]+".into());
        for (k, v) in &vars {
            Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                bad(format!(
                    "field vars.{k}: bad regex: {}",
                    one_line(&e.to_string())
                ))
            })?;
        }
        if !vars.contains_key("arch") {
            return Err(bad("field vars.arch: missing (every spec needs it)".into()));
        }
        if raw.arches.is_empty() {
            return Err(bad("field arches: at least one arch is needed".into()));
        }
        let mut arches = raw.arches;
        let arch_re =
            Regex::new(&format!("^(?:{})$", vars["arch"])).map_err(|e| bad(e.to_string()))?;
        for (key, a) in arches.iter_mut() {
            a.upstream = key.clone();
            if !arch_re.is_match(key) {
                return Err(bad(format!("field arches.{key}: does not match vars.arch")));
            }
            for (f, v) in [("deb", &a.deb), ("rpm", &a.rpm), ("ipk", &a.ipk)] {
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(bad(format!("field arches.{key}.{f}: bad arch name {v:?}")));
                }
            }
        }

        let tarball =
            NamePattern::new("upstream.tarball", &raw.upstream.tarball, &vars).map_err(bad)?;
        let package_name =
            NamePattern::new("package.name", &raw.package.name, &vars).map_err(bad)?;
        for (field, t) in [
            ("upstream.directory", &raw.upstream.directory),
            ("upstream.top_dir", &raw.upstream.top_dir),
            ("upstream.signature", &raw.upstream.signature),
            ("upstream.sums", &raw.upstream.sums),
            ("package.prefix", &raw.package.prefix),
        ] {
            NamePattern::new(field, t, &vars).map_err(bad)?;
        }
        for (field, fp) in [
            ("upstream.sums_signer", &raw.upstream.sums_signer),
            ("upstream.tarball_signer", &raw.upstream.tarball_signer),
        ] {
            if fp.len() != FINGERPRINT_LEN || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "field {field}: {fp:?} is not a 40-hex-digit OpenPGP v4 fingerprint"
                )));
            }
        }

        let mut relations = Vec::new();
        let r = &raw.relations;
        let lists: [(Format, RelationKind, &str, &Vec<String>); 18] = [
            (
                Format::Deb,
                RelationKind::Depends,
                "relations.deb.depends",
                &r.deb.depends,
            ),
            (
                Format::Deb,
                RelationKind::Recommends,
                "relations.deb.recommends",
                &r.deb.recommends,
            ),
            (
                Format::Deb,
                RelationKind::Suggests,
                "relations.deb.suggests",
                &r.deb.suggests,
            ),
            (
                Format::Deb,
                RelationKind::Provides,
                "relations.deb.provides",
                &r.deb.provides,
            ),
            (
                Format::Deb,
                RelationKind::Conflicts,
                "relations.deb.conflicts",
                &r.deb.conflicts,
            ),
            (
                Format::Deb,
                RelationKind::Breaks,
                "relations.deb.breaks",
                &r.deb.breaks,
            ),
            (
                Format::Deb,
                RelationKind::Replaces,
                "relations.deb.replaces",
                &r.deb.replaces,
            ),
            (
                Format::Rpm,
                RelationKind::Depends,
                "relations.rpm.requires",
                &r.rpm.requires,
            ),
            (
                Format::Rpm,
                RelationKind::Recommends,
                "relations.rpm.recommends",
                &r.rpm.recommends,
            ),
            (
                Format::Rpm,
                RelationKind::Suggests,
                "relations.rpm.suggests",
                &r.rpm.suggests,
            ),
            (
                Format::Rpm,
                RelationKind::Provides,
                "relations.rpm.provides",
                &r.rpm.provides,
            ),
            (
                Format::Rpm,
                RelationKind::Conflicts,
                "relations.rpm.conflicts",
                &r.rpm.conflicts,
            ),
            (
                Format::Rpm,
                RelationKind::Replaces,
                "relations.rpm.obsoletes",
                &r.rpm.obsoletes,
            ),
            (
                Format::Ipk,
                RelationKind::Depends,
                "relations.ipk.depends",
                &r.ipk.depends,
            ),
            (
                Format::Ipk,
                RelationKind::Recommends,
                "relations.ipk.recommends",
                &r.ipk.recommends,
            ),
            (
                Format::Ipk,
                RelationKind::Provides,
                "relations.ipk.provides",
                &r.ipk.provides,
            ),
            (
                Format::Ipk,
                RelationKind::Conflicts,
                "relations.ipk.conflicts",
                &r.ipk.conflicts,
            ),
            (
                Format::Ipk,
                RelationKind::Replaces,
                "relations.ipk.replaces",
                &r.ipk.replaces,
            ),
        ];
        for (format, kind, _, list) in lists {
            for text in list {
                relations.push((format, kind, text.clone()));
            }
        }

        let mut globs = GlobSetBuilder::new();
        for (i, g) in raw.exclude.iter().enumerate() {
            let glob = Glob::new(g)
                .map_err(|e| bad(format!("field exclude[{i}]: {}", one_line(&e.to_string()))))?;
            globs.add(glob);
        }
        let exclude = globs
            .build()
            .map_err(|e| bad(format!("field exclude: {}", one_line(&e.to_string()))))?;

        let mut deps = DepsOverrides {
            ignore_sonames: raw.deps.ignore_sonames.iter().cloned().collect(),
            foreign_arch: raw.deps.foreign_arch,
            ..DepsOverrides::default()
        };
        for (distro, entries) in &raw.deps.map {
            let entries = match entries {
                RawDepsMap::PerDistro(e) => e,
                RawDepsMap::Single(text) => {
                    return Err(bad(format!(
                        "field deps.map.{distro:?}: overrides are per distro map: \
                         [deps.map.debian-12] {distro:?} = {text:?} (and [deps.map.openembedded], ...)"
                    )))
                }
            };
            if !valid_distro_name(distro) {
                return Err(bad(format!(
                    "field deps.map.{distro:?}: not a distro map name (like debian-12)"
                )));
            }
            let mut map = BTreeMap::new();
            for (soname, text) in entries {
                let rel = Relation::parse_deb(text)
                    .map_err(|m| bad(format!("field deps.map.{distro}.{soname:?}: {m}")))?;
                map.insert(soname.clone(), rel);
            }
            deps.map.insert(distro.clone(), map);
        }

        let copyright = parse_copyright(&raw.copyright).map_err(bad)?;

        let spec = Spec {
            copyright,
            name,
            path: path.to_path_buf(),
            summary: raw.summary,
            upstream: raw.upstream,
            arches,
            vars,
            package: raw.package,
            relations,
            tarball,
            package_name,
            exclude,
            exclude_patterns: raw.exclude,
            deps,
        };
        // Render every templated field once with sample values, so a bad template or an
        // unknown placeholder fails now, naming the field, before any work starts.
        spec.check_templates(templates)?;
        Ok(spec)
    }

    fn sample_vars(&self) -> Vars {
        let mut v = Vars::new();
        for k in self.vars.keys() {
            v.insert(k.clone(), "1".into());
        }
        v.insert("version".into(), "1.0.0".into());
        if let Some(a) = self.arches.keys().next() {
            v.insert("arch".into(), a.clone());
        }
        v
    }

    fn check_templates(&self, templates: &Templates) -> Result<()> {
        let vars = self.sample_vars();
        // Both verification states, so neither branch of a `{{#if verified}}` is unchecked.
        self.resolve(&vars, 1, false, 0, templates)?;
        let meta = self.resolve(&vars, 1, true, 0, templates)?;
        let prefix_ok = ALLOWED_PREFIX_ROOTS
            .iter()
            .any(|r| meta.prefix.starts_with(r))
            && !meta.prefix.split('/').any(|c| c == ".." || c == ".");
        if !prefix_ok {
            return Err(Error::spec(
                &self.path,
                format!(
                    "field package.prefix: {:?} must be below {} so no distribution file is shadowed",
                    self.package.prefix,
                    ALLOWED_PREFIX_ROOTS.join(" or ")
                ),
            ));
        }
        Ok(())
    }

    /// Render a naming field with `vars` (strict: unknown placeholders fail).
    fn render(
        &self,
        templates: &Templates,
        field: &str,
        template: &str,
        vars: &Vars,
    ) -> Result<String> {
        templates
            .render_str(
                &format!("{} field {field}", self.path.display()),
                template,
                vars,
            )
            .map_err(|e| Error::spec(&self.path, format!("field {field}: {e}")))
    }

    /// Read the variables out of a tarball file name, or `None` if it is not this spec's.
    pub fn match_tarball(&self, file_name: &str) -> Option<Vars> {
        let mut vars = self.tarball.matches(file_name)?;
        let version = UpstreamVersion::parse(vars.get("version")?).ok()?;
        vars.insert("major".into(), version.major().to_string());
        if !self.arches.contains_key(vars.get("arch")?) {
            return None;
        }
        Some(vars)
    }

    /// Match one path segment of `upstream.directory` (e.g. `{{version}}`) against a
    /// directory name, returning its variables.
    pub fn match_segment(&self, segment_template: &str, name: &str) -> Option<Vars> {
        NamePattern::new("upstream.directory", segment_template, &self.vars)
            .ok()?
            .matches(name)
    }

    /// Read the variables out of a package name, or `None` if it is not this spec's.
    pub fn match_package(&self, package: &str) -> Option<Vars> {
        self.package_name.matches(package)
    }

    /// The package-name pattern (`korg-clang-{{major}}`).
    pub fn package_pattern(&self) -> &str {
        &self.package_name.template
    }

    /// The tarball-name pattern.
    pub fn tarball_pattern(&self) -> &str {
        &self.tarball.template
    }

    /// Render the package name for `vars`.
    pub fn package_name(&self, vars: &Vars, templates: &Templates) -> Result<String> {
        self.render(templates, "package.name", &self.package.name, vars)
    }

    /// The top directory inside the tarball for `vars`.
    pub fn top_dir(&self, vars: &Vars, templates: &Templates) -> Result<String> {
        self.render(templates, "upstream.top_dir", &self.upstream.top_dir, vars)
    }

    /// Render an upstream naming field (`tarball`, `signature`, `directory`, `sums`).
    pub fn upstream_name(&self, field: &str, vars: &Vars, templates: &Templates) -> Result<String> {
        let t = match field {
            "tarball" => &self.upstream.tarball,
            "signature" => &self.upstream.signature,
            "directory" => &self.upstream.directory,
            "sums" => &self.upstream.sums,
            "top_dir" => &self.upstream.top_dir,
            other => return Err(Error::Usage(format!("unknown upstream field {other}"))),
        };
        self.render(templates, &format!("upstream.{field}"), t, vars)
    }

    /// Whether a path relative to the top directory is excluded by the spec.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        self.exclude.is_match(rel_path)
    }

    /// The exclude patterns as written.
    pub fn exclude_patterns(&self) -> &[String] {
        &self.exclude_patterns
    }

    /// The install prefix for the variables read from a package name (`korg-clang-18`
    /// → `/usr/lib/korg/llvm-18`).
    pub fn prefix_for(&self, vars: &Vars, templates: &Templates) -> Result<String> {
        let prefix = self.render(templates, "package.prefix", &self.package.prefix, vars)?;
        Ok(prefix.trim_end_matches('/').to_string())
    }

    /// Summary for listings.
    pub fn summary_row(&self) -> SpecSummary {
        SpecSummary {
            spec: self.name.clone(),
            package: self.package.name.clone(),
            tarball: self.upstream.tarball.clone(),
            prefix: self.package.prefix.clone(),
            arches: self.arches.keys().cloned().collect(),
            summary: self.summary.clone(),
            source: self.path.display().to_string(),
        }
    }

    /// Build the package metadata for a concrete release. `vars` must hold `version`
    /// and `arch` (as read from a tarball name); `build_time` feeds timestamps.
    pub fn resolve(
        &self,
        vars: &Vars,
        revision: u32,
        verified: bool,
        build_time: u64,
        templates: &Templates,
    ) -> Result<PackageMeta> {
        let version_raw = vars
            .get("version")
            .ok_or_else(|| Error::Usage("no version known for the package".into()))?;
        let version =
            UpstreamVersion::parse(version_raw).map_err(|m| Error::spec(&self.path, m))?;
        let arch_key = vars
            .get("arch")
            .ok_or_else(|| Error::Usage("no arch known for the package".into()))?;
        let arch = self.arches.get(arch_key).cloned().ok_or_else(|| {
            Error::Usage(format!(
                "spec {} has no arch {arch_key:?} (known: {})",
                self.name,
                self.arches.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let mut ctx = vars.clone();
        ctx.insert("major".into(), version.major().to_string());
        ctx.insert("package_version".into(), version.package_version());
        // For `{{#if verified}}`: a non-empty string is true, the empty one false.
        ctx.insert(
            "verified".into(),
            if verified { "true" } else { "" }.to_string(),
        );
        let name = self.render(templates, "package.name", &self.package.name, &ctx)?;
        let prefix = self.render(templates, "package.prefix", &self.package.prefix, &ctx)?;
        let prefix = prefix.trim_end_matches('/').to_string();
        ctx.insert("name".into(), name.clone());
        ctx.insert("prefix".into(), prefix.clone());
        let field = |f: &str, t: &str| self.render(templates, f, t, &ctx);

        let mut relations = FormatRelations::default();
        for (format, kind, text) in &self.relations {
            let field_name = format!(
                "relations.{}.{}",
                format.as_str(),
                kind.field_name(*format).unwrap_or("?").to_lowercase()
            );
            let rendered = field(&field_name, text)?;
            let rel = Relation::parse(*format, &rendered)
                .map_err(|m| Error::spec(&self.path, format!("field {field_name}: {m}")))?;
            relations.get_mut(*format).add(*kind, rel);
        }

        Ok(PackageMeta {
            spec: self.name.clone(),
            name,
            upstream_version: version.as_str().to_string(),
            version: version.package_version(),
            revision,
            arch,
            summary: field("package.summary", &self.package.summary)?,
            description: field("package.description", &self.package.description)?,
            license: field("package.license", &self.package.license)?,
            homepage: field("package.homepage", &self.package.homepage)?,
            maintainer: field("package.maintainer", &self.package.maintainer)?,
            section: field("package.section", &self.package.section)?,
            priority: field("package.priority", &self.package.priority)?,
            rpm_group: field("package.rpm_group", &self.package.rpm_group)?,
            prefix,
            build_time,
            relations,
            provenance: None,
            verified,
            copyright: self.copyright.clone(),
            installed_size: 0,
            scripts: Default::default(),
        })
    }
}

/// A built-in license text of `specs/licenses/` (`GPL-2.txt`).
pub fn builtin_license(file: &str) -> Option<&'static str> {
    LICENSES.get_file(file).and_then(|f| f.contents_utf8())
}

/// Validate `[copyright]` and read the license texts it names.
fn parse_copyright(raw: &RawCopyright) -> std::result::Result<Copyright, String> {
    let one_line_field = |field: &str, v: &str| {
        if v.trim().is_empty() || v.contains('\n') || v.chars().any(char::is_control) {
            Err(format!(
                "field copyright.{field}: must be one non-empty line"
            ))
        } else {
            Ok(v.trim().to_string())
        }
    };
    let notice = one_line_field("notice", &raw.notice)?;
    let dep5_license = one_line_field("dep5_license", &raw.dep5_license)?;
    if raw.licenses.is_empty() {
        return Err("field copyright.licenses: at least one license text is needed".into());
    }
    let mut licenses = Vec::new();
    for (i, l) in raw.licenses.iter().enumerate() {
        let field = format!("copyright.licenses[{i}]");
        let name = one_line_field(&format!("licenses[{i}].name"), &l.name)?;
        let text = match (&l.file, &l.text) {
            (Some(file), None) => LICENSES
                .get_file(file)
                .filter(|_| !file.contains('/'))
                .and_then(|f| f.contents_utf8())
                .ok_or_else(|| {
                    format!(
                        "field {field}.file: no built-in license text {file:?} (known: {})",
                        LICENSES
                            .files()
                            .map(|f| f.path().display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?
                .to_string(),
            (None, Some(text)) if !text.trim().is_empty() => text.clone(),
            _ => return Err(format!("field {field}: give either `file` or `text`")),
        };
        if let Some(c) = &l.debian_common {
            if c.is_empty()
                || !c
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
            {
                return Err(format!(
                    "field {field}.debian_common: {c:?} is not a file name in /usr/share/common-licenses"
                ));
            }
        }
        licenses.push(LicenseText {
            name,
            debian_common: l.debian_common.clone(),
            text,
        });
    }
    Ok(Copyright {
        notice,
        dep5_license,
        licenses,
    })
}

impl Relations {
    fn add(&mut self, kind: RelationKind, rel: Relation) {
        let list = self.0.entry(kind).or_default();
        if !list.contains(&rel) {
            list.push(rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        Templates::load(None).expect("templates")
    }

    #[test]
    fn builtin_specs_load_and_match_names() {
        let t = templates();
        let set = SpecSet::load(None, &t).expect("built-in specs are valid");
        let (spec, vars) = set
            .find_package("korg-clang-18")
            .expect("llvm offers korg-clang-18");
        assert_eq!(spec.name, "llvm");
        assert_eq!(vars["major"], "18");
        let tv = spec
            .match_tarball("llvm-18.1.0-rc3-aarch64.tar.xz")
            .expect("tarball matches");
        assert_eq!(tv["version"], "18.1.0-rc3");
        assert_eq!(tv["arch"], "aarch64");
        assert_eq!(tv["major"], "18");
        let meta = spec.resolve(&tv, 1, true, 0, &t).expect("resolves");
        assert_eq!(meta.version, "18.1.0~rc3");
        assert_eq!(meta.arch.deb, "arm64");
        assert_eq!(meta.prefix, "/usr/lib/korg/llvm-18");

        let (spec, vars) = set
            .find_package("korg-gcc-14-aarch64-linux")
            .expect("crosstool offers korg-gcc-14-aarch64-linux");
        assert_eq!(spec.name, "crosstool");
        assert_eq!(vars["target"], "aarch64-linux");
        let tv = spec
            .match_tarball("arm64-gcc-14.2.0-nolibc-aarch64-linux.tar.gz")
            .expect("tarball matches");
        assert_eq!(tv["arch"], "arm64");
        assert_eq!(
            spec.top_dir(&tv, &t).expect("top dir"),
            "gcc-14.2.0-nolibc/aarch64-linux"
        );
        let meta = spec.resolve(&tv, 2, true, 0, &t).expect("resolves");
        assert_eq!(meta.arch.rpm, "aarch64");
        assert_eq!(meta.name, "korg-gcc-14-aarch64-linux");
        assert_eq!(meta.prefix, "/usr/lib/korg/gcc-14/aarch64-linux");
    }

    const MINIMAL: &str = r#"
summary = "x"
[upstream]
directory = "x"
tarball = "x-{{version}}-{{arch}}.tar.xz"
top_dir = "x-{{version}}"
signature = "x.tar.sign"
sums = "sha256sums.asc"
sums_signer = "B8868C80BA62A1FFFAF5FDA9632D3A06589DA6B1"
tarball_signer = "2437CB76E544CB6AB3D9DFD399739260CB6CB716"
[vars]
version = '[0-9.]+'
arch = 'x86_64'
[arches.x86_64]
deb = "amd64"
rpm = "x86_64"
ipk = "x86_64"
[package]
name = "korg-x-{{major}}"
prefix = "/usr/lib/korg/x-{{major}}"
summary = "s"
description = "d"
license = "MIT"
homepage = "https://example.org"
maintainer = "m <m@example.org>"
section = "devel"
priority = "optional"
rpm_group = "Development/Tools"
[copyright]
notice = "2024 x authors"
dep5_license = "MIT"
licenses = [{ name = "MIT", text = "Permission is hereby granted." }]
"#;

    fn parse_err(text: &str) -> String {
        Spec::parse(Path::new("specs/x.toml"), text, &templates())
            .expect_err("spec must be rejected")
            .to_string()
    }

    #[test]
    fn minimal_spec_is_valid() {
        Spec::parse(Path::new("specs/x.toml"), MINIMAL, &templates()).expect("valid");
    }

    #[test]
    fn malformed_specs_name_file_and_field() {
        let e = parse_err(&MINIMAL.replace("summary = \"s\"", "summary = \"s\"\nsumary = 1"));
        assert!(
            e.starts_with("specs/x.toml: line ") && e.contains("sumary"),
            "{e}"
        );
        let e = parse_err(&MINIMAL.replace("license = \"MIT\"\n", ""));
        assert!(e.contains("specs/x.toml") && e.contains("license"), "{e}");
        let e = parse_err(&MINIMAL.replace("korg-x-{{major}}\"", "korg-x-{{majr}}\""));
        assert!(e.contains("package.name") && e.contains("majr"), "{e}");
        let e = parse_err(&MINIMAL.replace("description = \"d\"", "description = \"{{#if}}\""));
        assert!(e.contains("package.description"), "{e}");
        let e = parse_err(&MINIMAL.replace("/usr/lib/korg/x-", "/usr/lib/x-"));
        assert!(e.contains("package.prefix"), "{e}");
        let e = parse_err(&MINIMAL.replace("B8868C80BA62A1FFFAF5FDA9632D3A06589DA6B1", "B886"));
        assert!(e.contains("upstream.sums_signer"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}\n[relations.deb]\ndepends = [\"Bad Name\"]\n"
        ));
        assert!(e.contains("relations.deb.depends"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}\n[deps]\nignore_sonames = []\nmapp = {{}}\n"
        ));
        assert!(e.contains("line ") && e.contains("mapp"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}\n[deps.map.debian-12]\n\"libfoo.so.1\" = \"Foo\"\n"
        ));
        assert!(
            e.contains("deps.map.debian-12") && e.contains("libfoo.so.1"),
            "{e}"
        );
        // The old single map is refused with the per-distro form in the message.
        let e = parse_err(&format!(
            "{MINIMAL}\n[deps]\nmap = {{ \"libfoo.so.1\" = \"libfoo1\" }}\n"
        ));
        assert!(e.contains("[deps.map.debian-12]"), "{e}");
        let e = parse_err(&format!("{MINIMAL}\n[deps]\nforeign_arch = \"maybe\"\n"));
        assert!(
            e.contains("maybe") && e.contains("`allow` or `error`"),
            "{e}"
        );
        let ok = Spec::parse(
            Path::new("specs/x.toml"),
            &format!(
                "{MINIMAL}\n[deps]\nignore_sonames = [\"libbar.so.2\"]\nforeign_arch = \"error\"\n\
                 [deps.map.debian-12]\n\"libfoo.so.1\" = \"libfoo1 (>= 1.2)\"\n\
                 [deps.map.openembedded]\n\"libfoo.so.1\" = \"libfoo\"\n"
            ),
            &templates(),
        )
        .expect("valid [deps]");
        assert!(ok.deps.ignore_sonames.contains("libbar.so.2"));
        assert_eq!(ok.deps.foreign_arch, ForeignArch::Error);
        assert_eq!(
            ok.deps.map["debian-12"]["libfoo.so.1"].to_string(),
            "libfoo1 (>= 1.2)"
        );
        assert_eq!(
            ok.deps.map["openembedded"]["libfoo.so.1"].to_string(),
            "libfoo"
        );
        let e = parse_err(&MINIMAL.replace("notice = \"2024 x authors\"", "notice = \"\""));
        assert!(e.contains("copyright.notice"), "{e}");
        let e = parse_err(&MINIMAL.replace("text = \"Permission", "file = \"MIT.txt\", x = \""));
        assert!(e.contains("line ") && e.contains('x'), "{e}");
        let e = parse_err(&MINIMAL.replace(
            "text = \"Permission is hereby granted.\"",
            "file = \"../MIT.txt\"",
        ));
        assert!(e.contains("copyright.licenses[0].file"), "{e}");
        let e = parse_err(&MINIMAL.replace(
            "name = \"MIT\",",
            "name = \"MIT\", debian_common = \"../x\",",
        ));
        assert!(e.contains("debian_common"), "{e}");
        let e = parse_err(&MINIMAL.replace("arch = 'x86_64'", "arch = 'x86_64('"));
        assert!(e.contains("vars.arch"), "{e}");
    }
}
