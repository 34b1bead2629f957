//! `korgpkg sync`: make a repository equal to a declared policy over what kernel.org
//! publishes, safely and unattended.
//!
//! The policy (a `[sync]` table in `korgpkg-repo.toml`, or `sync.toml` beside it) names
//! packages (exact names or globs such as `korg-clang-*` with `min_major`), arches,
//! formats, how many versions to keep per package and where release candidates go. A
//! run:
//!
//! 1. discovers releases from verified sums files ([`source::discover`]; the sums files
//!    and directory listings are revalidated with `ETag`/`If-Modified-Since`, so an
//!    unchanged mirror costs a few `304`s),
//! 2. selects the wanted set of (package, version, arch, format, suite) and compares it
//!    with the repository state,
//! 3. for each release with a missing package, one at a time: downloads and verifies it
//!    into the cache, builds only the missing formats into a work directory under
//!    `.korgpkg/sync-work/` (kept until published, so a killed run does not rebuild it)
//!    and removes the tarball from the cache unless asked to keep it,
//! 4. publishes every new package and prunes what the policy no longer wants with one
//!    generation switch ([`publish::apply`]),
//! 5. appends what it did to `sync-log.jsonl` in the repository.
//!
//! A release that fails (bad signature, hash mismatch, network error after retries) is
//! reported and skipped; the others still land, and what it would have displaced stays.
//! Runs on one repository are serialized by `flock` on `.korgpkg/sync.lock`.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::model::Format;
use crate::package::{BuildOptions, DebCompression, IpkOuter, Output, RpmCompression};
use crate::pipeline::{self, BuildRequest};
use crate::publish::{self, Changes, OpkgFlavour, PackageId, RepoConfig, DEFINITION, STATE_DIR};
use crate::source::{self, Release, Sources};
use crate::spec::{Spec, SpecSet, Vars};
use crate::templates::Templates;
use crate::version::UpstreamVersion;

pub mod obs;

/// The policy file that may sit beside `korgpkg-repo.toml`.
pub const POLICY_FILE: &str = "sync.toml";
/// The log every sync appends to, in the repository directory.
pub const LOG_FILE: &str = "sync-log.jsonl";
/// Built packages waiting to be published, below the state directory.
const WORK_DIR: &str = "sync-work";
/// The marker a finished build leaves in its work directory.
const BUILT: &str = "built.json";

/// The sync policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Versions kept per package and channel.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Upstream arches (`x86_64`, `aarch64`; crosstool hosts `x86_64`, `arm64`)
    /// [default: every arch of the package's spec].
    #[serde(default)]
    pub arches: Vec<String>,
    /// Formats [default: deb, rpm, ipk].
    #[serde(default)]
    pub formats: Vec<Format>,
    /// Package revision of every build.
    #[serde(default = "default_revision")]
    pub revision: u32,
    /// Distro map for derived deb/ipk dependencies.
    #[serde(default)]
    pub target_distro: Option<String>,
    /// Per-format build options.
    #[serde(default)]
    pub build: BuildSettings,
    /// Where releases and release candidates go.
    #[serde(default)]
    pub channels: Channels,
    /// The packages to keep current.
    pub packages: Vec<Selector>,
}

fn default_keep() -> usize {
    3
}
fn default_revision() -> u32 {
    1
}

/// Per-format build options (as `korgpkg build`'s flags).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    pub deb_compression: Option<DebCompression>,
    pub rpm_compression: Option<RpmCompression>,
    pub ipk_outer: Option<IpkOuter>,
    pub zstd_level: Option<i32>,
    pub gzip_level: Option<u32>,
}

impl BuildSettings {
    fn options(&self) -> BuildOptions {
        let d = BuildOptions::default();
        BuildOptions {
            deb_compression: self.deb_compression.unwrap_or(d.deb_compression),
            rpm_compression: self.rpm_compression.unwrap_or(d.rpm_compression),
            ipk_outer: self.ipk_outer.unwrap_or(d.ipk_outer),
            zstd_level: self.zstd_level.unwrap_or(d.zstd_level),
            gzip_level: self.gzip_level.unwrap_or(d.gzip_level),
        }
    }
}

/// Channel routing: releases, and (only if configured) release candidates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    #[serde(default)]
    pub release: ChannelConfig,
    /// Release candidates newer than the package's newest release; none if absent.
    pub rc: Option<ChannelConfig>,
}

/// Where one channel's packages go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// apt suite [default: release → the first suite; rc → `testing`].
    pub suite: Option<String>,
    /// Formats of this channel published in this repository [default: the policy's].
    /// rpm-md and opkg have one index per repository directory: to give release
    /// candidates their own dnf/opkg repository, leave rpm and ipk out here and sync a
    /// second repository directory whose policy publishes only that channel.
    pub formats: Option<Vec<Format>>,
}

/// One entry of `packages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// A package name (`korg-clang-18`) or a glob over names (`korg-clang-*`).
    pub name: String,
    /// Only majors at least this.
    pub min_major: Option<u64>,
    /// Only majors at most this.
    pub max_major: Option<u64>,
    /// Overrides the policy's arches.
    pub arches: Option<Vec<String>>,
    /// Only these targets (crosstool: `aarch64-linux`, `riscv64-linux`).
    pub targets: Option<Vec<String>>,
    /// Overrides the policy's formats.
    pub formats: Option<Vec<Format>>,
    /// Overrides the policy's keep.
    pub keep: Option<usize>,
}

/// A policy with where it came from and its resolved settings.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub policy: Policy,
    /// The file it was read from.
    pub path: PathBuf,
    selectors: Vec<Resolved>,
    release_suite: String,
    rc_suite: String,
}

/// A selector with its name matcher and the specs (with fixed variables) it draws from.
#[derive(Debug, Clone)]
struct Resolved {
    matcher: GlobMatcher,
    targets: Vec<(String, Vars)>,
    arches: Option<Vec<String>>,
    only_targets: Option<Vec<String>>,
    formats: Vec<Format>,
    keep: usize,
}

#[derive(Deserialize)]
struct InDefinition {
    sync: Option<Policy>,
    #[serde(flatten)]
    _rest: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InFile {
    sync: Policy,
}

impl LoadedPolicy {
    /// Read the policy of the repository at `root` (`[sync]` in its definition, or
    /// `sync.toml` beside it) and check it against the specs and the definition. Every
    /// error is a spec error (exit 3) naming the file and the key.
    pub fn load(root: &Path, config: &RepoConfig, specs: &SpecSet) -> Result<Self> {
        let def_path = root.join(DEFINITION);
        let file_path = root.join(POLICY_FILE);
        let in_file = file_path.is_file();
        let (policy, path) = match (&config.sync, in_file) {
            (Some(_), true) => {
                return Err(Error::spec(
                    &file_path,
                    format!("sync: also defined in {}; keep one", def_path.display()),
                ))
            }
            (Some(_), false) => {
                let text = fs::read_to_string(&def_path)
                    .ctx(|| format!("reading {}", def_path.display()))?;
                let parsed: InDefinition =
                    toml::from_str(&text).map_err(|e| Error::toml(&def_path, &text, &e))?;
                let policy = parsed
                    .sync
                    .ok_or_else(|| Error::spec(&def_path, "sync: not a table"))?;
                (policy, def_path)
            }
            (None, true) => {
                let text = fs::read_to_string(&file_path)
                    .ctx(|| format!("reading {}", file_path.display()))?;
                let parsed: InFile =
                    toml::from_str(&text).map_err(|e| Error::toml(&file_path, &text, &e))?;
                (parsed.sync, file_path)
            }
            (None, false) => {
                return Err(Error::spec(
                    &def_path,
                    format!(
                        "sync: no sync policy (add a [sync] table here or write {})",
                        file_path.display()
                    ),
                ))
            }
        };
        Self::resolve(policy, path, &config.apt.suites, specs)
    }

    /// Read a policy file (`[sync]` table, as `sync.toml`) that belongs to no repository
    /// (`sync --obs`): apt suites are not checked.
    pub fn load_file(path: &Path, specs: &SpecSet) -> Result<Self> {
        let text = fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
        let parsed: InFile = toml::from_str(&text).map_err(|e| Error::toml(path, &text, &e))?;
        Self::resolve(parsed.sync, path.to_path_buf(), &[], specs)
    }

    /// Check `policy` against the specs and the repository's apt `suites` (none: any
    /// suite is accepted).
    fn resolve(policy: Policy, path: PathBuf, suites: &[String], specs: &SpecSet) -> Result<Self> {
        let bad = |key: &str, msg: String| Error::spec(&path, format!("{key}: {msg}"));
        if policy.keep == 0 {
            return Err(bad("sync.keep", "must be at least 1".into()));
        }
        if policy.packages.is_empty() {
            return Err(bad("sync.packages", "names no package".into()));
        }
        if let Some(l) = policy.build.zstd_level {
            if !(1..=19).contains(&l) {
                return Err(bad("sync.build.zstd_level", format!("{l} is not in 1-19")));
            }
        }
        if let Some(l) = policy.build.gzip_level {
            if !(1..=9).contains(&l) {
                return Err(bad("sync.build.gzip_level", format!("{l} is not in 1-9")));
            }
        }
        if let Some(d) = &policy.target_distro {
            specs
                .distros()
                .get(d)
                .map_err(|e| bad("sync.target_distro", e.to_string()))?;
        }
        let all_arches: BTreeSet<&String> =
            specs.specs().iter().flat_map(|s| s.arches.keys()).collect();
        for a in &policy.arches {
            if !all_arches.contains(a) {
                return Err(bad(
                    "sync.arches",
                    format!("no spec has arch {a:?} (specs have {})", join(&all_arches)),
                ));
            }
        }
        let suite_ok = |key: &str, s: &str| {
            if suites.is_empty() || suites.iter().any(|x| x == s) {
                Ok(())
            } else {
                Err(bad(
                    key,
                    format!(
                        "{s:?} is not one of the repository's apt suites ({})",
                        suites.join(", ")
                    ),
                ))
            }
        };
        let release_suite = match &policy.channels.release.suite {
            Some(s) => {
                suite_ok("sync.channels.release.suite", s)?;
                s.clone()
            }
            None => suites.first().cloned().unwrap_or_else(|| "stable".into()),
        };
        let rc_suite = match policy.channels.rc.as_ref().and_then(|c| c.suite.as_ref()) {
            Some(s) => {
                suite_ok("sync.channels.rc.suite", s)?;
                s.clone()
            }
            None => "testing".to_string(),
        };
        if let Some(rc) = &policy.channels.rc {
            let needs_deb = rc
                .formats
                .as_deref()
                .unwrap_or(&policy.formats)
                .contains(&Format::Deb)
                || (rc.formats.is_none() && policy.formats.is_empty());
            if rc.suite.is_none() && needs_deb {
                suite_ok("sync.channels.rc.suite", &rc_suite)?;
            }
        }
        let policy_formats = if policy.formats.is_empty() {
            Format::ALL.to_vec()
        } else {
            pipeline::dedup(&policy.formats)
        };
        let mut selectors = Vec::new();
        for (i, sel) in policy.packages.iter().enumerate() {
            let key = |k: &str| format!("sync.packages[{i}].{k}");
            let name = &sel.name;
            let valid = !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-+.*?".contains(c));
            if !valid {
                return Err(bad(
                    &key("name"),
                    format!("{name:?} is not a package name or glob (a-z 0-9 - + . * ?)"),
                ));
            }
            let matcher = Glob::new(name)
                .map_err(|e| bad(&key("name"), e.to_string()))?
                .compile_matcher();
            let targets: Vec<(String, Vars)> = if name.contains(['*', '?']) {
                let found: Vec<(String, Vars)> = specs
                    .specs()
                    .iter()
                    .filter(|s| may_match(s, name))
                    .map(|s| (s.name.clone(), Vars::new()))
                    .collect();
                if found.is_empty() {
                    return Err(bad(
                        &key("name"),
                        format!("no spec makes packages like {name}"),
                    ));
                }
                found
            } else {
                let (spec, vars) = specs
                    .find_package(name)
                    .map_err(|e| bad(&key("name"), e.to_string()))?;
                vec![(spec.name.clone(), vars)]
            };
            if let (Some(lo), Some(hi)) = (sel.min_major, sel.max_major) {
                if lo > hi {
                    return Err(bad(
                        &key("min_major"),
                        format!("{lo} is above max_major {hi}"),
                    ));
                }
            }
            if let Some(arches) = &sel.arches {
                for a in arches {
                    let known = targets
                        .iter()
                        .any(|(s, _)| specs.get(s).is_some_and(|s| s.arches.contains_key(a)));
                    if !known {
                        return Err(bad(&key("arches"), format!("{name} has no arch {a:?}")));
                    }
                }
            }
            if let Some(ts) = &sel.targets {
                let has_target = targets.iter().any(|(s, _)| {
                    specs
                        .get(s)
                        .is_some_and(|s| s.tarball_pattern().contains("target"))
                });
                if !has_target {
                    return Err(bad(&key("targets"), format!("{name} has no targets")));
                }
                for t in ts {
                    let ok = !t.is_empty()
                        && t.len() <= 64
                        && t.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c)
                        });
                    if !ok {
                        return Err(bad(&key("targets"), format!("{t:?} is not a target name")));
                    }
                }
            }
            let formats = match &sel.formats {
                Some(f) if f.is_empty() => {
                    return Err(bad(&key("formats"), "names no format".into()));
                }
                Some(f) => pipeline::dedup(f),
                None => policy_formats.clone(),
            };
            let keep = sel.keep.unwrap_or(policy.keep);
            if keep == 0 {
                return Err(bad(&key("keep"), "must be at least 1".into()));
            }
            selectors.push(Resolved {
                matcher,
                targets,
                arches: sel
                    .arches
                    .clone()
                    .or_else(|| (!policy.arches.is_empty()).then(|| policy.arches.clone())),
                only_targets: sel.targets.clone(),
                formats,
                keep,
            });
        }
        Ok(LoadedPolicy {
            policy,
            path,
            selectors,
            release_suite,
            rc_suite,
        })
    }

    fn build_options(&self) -> BuildOptions {
        self.policy.build.options()
    }

    /// Formats of `channel` for selector `i`.
    fn formats(&self, i: usize, channel: ChannelKind) -> Vec<Format> {
        let ch = match channel {
            ChannelKind::Release => Some(&self.policy.channels.release),
            ChannelKind::Rc => self.policy.channels.rc.as_ref(),
        };
        let mut f = self.selectors[i].formats.clone();
        if let Some(only) = ch.and_then(|c| c.formats.as_ref()) {
            f.retain(|x| only.contains(x));
        }
        f
    }

    fn suite(&self, channel: ChannelKind) -> &str {
        match channel {
            ChannelKind::Release => &self.release_suite,
            ChannelKind::Rc => &self.rc_suite,
        }
    }

    /// Whether the policy manages packages named `name` (so sync may remove them).
    fn manages(&self, name: &str) -> bool {
        self.selectors.iter().any(|s| s.matcher.is_match(name))
    }
}

/// Whether spec `spec` can make a package matching `glob`: the literal parts before the
/// first placeholder and the first wildcard agree.
fn may_match(spec: &Spec, glob: &str) -> bool {
    let template = spec.package_pattern();
    let t = template.split("{{").next().unwrap_or("");
    let g = glob.split(['*', '?']).next().unwrap_or("");
    t.starts_with(g) || g.starts_with(t)
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Releases or release candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Release,
    Rc,
}

/// A release the policy selects, with the packages it makes.
#[derive(Debug, Clone, Serialize)]
pub struct Selected {
    pub release: Release,
    pub channel: ChannelKind,
    /// apt suite of its deb.
    pub suite: String,
    pub formats: Vec<Format>,
    /// Every package it makes, and whether the repository already holds it.
    pub packages: Vec<PackageId>,
    /// The ones the repository lacks.
    pub missing: Vec<PackageId>,
}

/// What failed, and with which exit code.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub package: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub arch: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    pub error: String,
    pub exit_code: i32,
}

/// What a sync will do (or, once run, did).
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The policy file.
    pub policy: PathBuf,
    /// Every selected release.
    pub selected: Vec<Selected>,
    /// Packages to remove.
    pub remove: Vec<PackageId>,
    /// Packages already there.
    pub unchanged: Vec<PackageId>,
    /// Discovery failures (their packages are neither added nor removed).
    pub failed: Vec<Failure>,
    #[serde(skip)]
    candidates: Vec<Candidate>,
    #[serde(skip)]
    failed_selectors: HashSet<usize>,
}

impl Plan {
    /// Releases that need building.
    pub fn to_build(&self) -> impl Iterator<Item = &Selected> {
        self.selected.iter().filter(|s| !s.missing.is_empty())
    }
}

/// A discovered release and the selector that chose it.
#[derive(Debug, Clone)]
struct Candidate {
    release: Release,
    selector: usize,
    version: UpstreamVersion,
}

/// One package a sync added, with where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    #[serde(flatten)]
    pub id: PackageId,
    /// sha256 of the published file (rpm: after re-signing).
    pub sha256: String,
    pub path: String,
    pub upstream_url: String,
    pub upstream_sha256: String,
    pub signers: Vec<String>,
}

/// What a sync did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// The generation switched to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    pub added: Vec<Added>,
    pub removed: Vec<PackageId>,
    pub unchanged: Vec<PackageId>,
    pub failed: Vec<Failure>,
    /// Releases whose packages were taken from an earlier, interrupted run's work
    /// directory instead of being built again.
    pub reused: Vec<String>,
    pub plan: Plan,
}

impl Report {
    /// The error the run ends with when some release failed: exit 5 if any failure was
    /// a verification failure, else 6 for network errors, else the first one's code.
    pub fn failure(&self) -> Option<Error> {
        failure_error(&self.failed)
    }
}

/// The error a run with these failures ends with: exit 5 if any was a verification
/// failure, else 6 for network errors, else the first one's code; `None` if none failed.
pub fn failure_error(failed: &[Failure]) -> Option<Error> {
    let first = failed.first()?;
    let code = if failed.iter().any(|f| f.exit_code == 5) {
        5
    } else if failed.iter().any(|f| f.exit_code == 6) {
        6
    } else {
        first.exit_code
    };
    let what = failed
        .iter()
        .map(|f| {
            let v = if f.version.is_empty() {
                String::new()
            } else {
                format!(" {}", f.version)
            };
            format!("{}{v}: {}", f.package, f.error)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("{} failed ({what})", plural(failed.len(), "release"));
    Some(match code {
        5 => Error::verify("sync", message),
        6 => Error::network("sync", message),
        3 => Error::Spec {
            path: PathBuf::from("sync"),
            message,
        },
        4 => Error::input("sync", message),
        2 => Error::Usage(message),
        _ => Error::Io {
            context: "sync".into(),
            source: std::io::Error::other(message),
        },
    })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// How to run a sync.
pub struct Options<'a> {
    pub root: &'a Path,
    pub specs: &'a SpecSet,
    pub templates: &'a Templates,
    pub sources: &'a Sources<'a>,
    pub passphrase: Option<String>,
    pub source_date_epoch: Option<u64>,
    /// Plan only: no lock, no download, no build, no publish.
    pub dry_run: bool,
    /// Keep downloaded tarballs in the cache after their packages are built.
    pub keep_cache: bool,
    /// Wait for another sync's lock instead of refusing.
    pub wait: bool,
    /// Progress bars while building.
    pub progress: bool,
    /// One line per step on stderr.
    pub log: &'a (dyn Fn(&str) + Sync),
}

/// Discover, select and compare with the repository: what a sync would do.
pub fn plan(opts: &Options<'_>, policy: &LoadedPolicy) -> Result<Plan> {
    let (candidates, mut failed, failed_selectors) = discover(opts, policy);
    let state = publish::list(opts.root)?;
    let mut plan = Plan {
        policy: policy.path.clone(),
        selected: Vec::new(),
        remove: Vec::new(),
        unchanged: Vec::new(),
        failed: Vec::new(),
        candidates,
        failed_selectors,
    };
    let (selected, errors) = select(opts, policy, &plan.candidates, &HashSet::new());
    failed.extend(errors);
    plan.failed = failed;
    let held: HashSet<PackageId> = state.iter().map(PackageId::of).collect();
    let mut wanted = HashSet::new();
    for mut s in selected {
        s.missing = s
            .packages
            .iter()
            .filter(|id| !held.contains(id))
            .cloned()
            .collect();
        for id in &s.packages {
            wanted.insert(id.clone());
            if held.contains(id) {
                plan.unchanged.push(id.clone());
            }
        }
        plan.selected.push(s);
    }
    plan.remove = removals(policy, &plan.failed_selectors, &state, &wanted);
    plan.unchanged.sort();
    Ok(plan)
}

/// Packages in `state` that the policy manages but no longer wants. Packages a failed
/// discovery could have selected are kept.
fn removals(
    policy: &LoadedPolicy,
    failed_selectors: &HashSet<usize>,
    state: &[publish::PublishedPackage],
    wanted: &HashSet<PackageId>,
) -> Vec<PackageId> {
    let mut out: Vec<PackageId> = state
        .iter()
        .filter(|p| policy.manages(&p.name))
        .filter(|p| {
            !failed_selectors
                .iter()
                .any(|&i| policy.selectors[i].matcher.is_match(&p.name))
        })
        .map(PackageId::of)
        .filter(|id| !wanted.contains(id))
        .collect();
    out.sort();
    out
}

/// Every release the selectors' specs offer that a selector accepts (one per package,
/// version and arch, preferring `.xz`), the discovery failures, and which selectors
/// failed.
fn discover(
    opts: &Options<'_>,
    policy: &LoadedPolicy,
) -> (Vec<Candidate>, Vec<Failure>, HashSet<usize>) {
    let mut found: HashMap<(String, String), std::result::Result<Vec<Release>, Error>> =
        HashMap::new();
    let mut failures = Vec::new();
    let mut failed_selectors = HashSet::new();
    let mut best: BTreeMap<(String, String, String), Candidate> = BTreeMap::new();
    for (i, sel) in policy.selectors.iter().enumerate() {
        for (spec_name, known) in &sel.targets {
            let key = (spec_name.clone(), format!("{known:?}"));
            let result = found.entry(key).or_insert_with(|| {
                let spec = opts
                    .specs
                    .get(spec_name)
                    .ok_or_else(|| Error::Usage(format!("spec {spec_name} vanished")))?;
                (opts.log)(&format!("discovering {} releases", spec.name));
                source::discover(
                    spec,
                    known,
                    &opts.sources.mirror,
                    opts.sources.fetcher,
                    &opts.sources.keys,
                    opts.templates,
                )
            });
            let releases = match result {
                Ok(r) => r,
                Err(e) => {
                    if failed_selectors.insert(i) {
                        failures.push(Failure {
                            package: policy.policy.packages[i].name.clone(),
                            version: String::new(),
                            arch: String::new(),
                            url: String::new(),
                            error: e.to_string(),
                            exit_code: e.exit_code(),
                        });
                    }
                    continue;
                }
            };
            let p = &policy.policy.packages[i];
            for r in releases.iter() {
                if !sel.matcher.is_match(&r.package) {
                    continue;
                }
                if sel.arches.as_ref().is_some_and(|a| !a.contains(&r.arch)) {
                    continue;
                }
                if let Some(ts) = &sel.only_targets {
                    if !r.vars.get("target").is_some_and(|t| ts.contains(t)) {
                        continue;
                    }
                }
                let Ok(version) = UpstreamVersion::parse(&r.version) else {
                    continue;
                };
                let major = version.major();
                if p.min_major.is_some_and(|m| major < m) || p.max_major.is_some_and(|m| major > m)
                {
                    continue;
                }
                let key = (r.package.clone(), r.version.clone(), r.arch.clone());
                let better = match best.get(&key) {
                    None => true,
                    // Same release in several compressions: prefer .xz.
                    Some(c) => {
                        !c.release.file_name.ends_with(".xz") && r.file_name.ends_with(".xz")
                    }
                };
                if better {
                    best.insert(
                        key,
                        Candidate {
                            release: r.clone(),
                            selector: i,
                            version,
                        },
                    );
                }
            }
        }
    }
    (best.into_values().collect(), failures, failed_selectors)
}

/// The releases the policy wants among `candidates` (minus `excluded` URLs): per package
/// the `keep` newest releases, and (if the rc channel is configured) the `keep` newest
/// release candidates newer than the newest release. Errors resolving a release's
/// package names are failures of that release.
fn select(
    opts: &Options<'_>,
    policy: &LoadedPolicy,
    candidates: &[Candidate],
    excluded: &HashSet<String>,
) -> (Vec<Selected>, Vec<Failure>) {
    let live: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !excluded.contains(&c.release.url))
        .collect();
    let mut versions: BTreeMap<&str, BTreeSet<&UpstreamVersion>> = BTreeMap::new();
    for c in &live {
        versions
            .entry(c.release.package.as_str())
            .or_default()
            .insert(&c.version);
    }
    let mut chosen: HashMap<(&str, &UpstreamVersion), ChannelKind> = HashMap::new();
    for (package, vs) in &versions {
        let keep = live
            .iter()
            .find(|c| c.release.package == *package)
            .map(|c| policy.selectors[c.selector].keep)
            .unwrap_or(policy.policy.keep);
        let releases: Vec<&&UpstreamVersion> =
            vs.iter().rev().filter(|v| !v.is_prerelease()).collect();
        for v in releases.iter().take(keep) {
            chosen.insert((package, v), ChannelKind::Release);
        }
        if policy.policy.channels.rc.is_some() {
            let newest = releases.first();
            for v in vs
                .iter()
                .rev()
                .filter(|v| v.is_prerelease() && newest.is_none_or(|n| ***v > ***n))
                .take(keep)
            {
                chosen.insert((package, v), ChannelKind::Rc);
            }
        }
    }
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for c in live {
        let Some(&channel) = chosen.get(&(c.release.package.as_str(), &c.version)) else {
            continue;
        };
        let formats = policy.formats(c.selector, channel);
        if formats.is_empty() {
            continue;
        }
        let suite = policy.suite(channel).to_string();
        match package_ids(opts, policy, &c.release, &formats, &suite) {
            Ok(packages) => out.push(Selected {
                release: c.release.clone(),
                channel,
                suite,
                formats,
                packages,
                missing: Vec::new(),
            }),
            Err(e) => failures.push(failure(&c.release, &e)),
        }
    }
    (out, failures)
}

fn failure(r: &Release, e: &Error) -> Failure {
    Failure {
        package: r.package.clone(),
        version: r.version.clone(),
        arch: r.arch.clone(),
        url: r.url.clone(),
        error: e.to_string(),
        exit_code: e.exit_code(),
    }
}

/// The packages a release makes in `formats`, as the repository state names them.
fn package_ids(
    opts: &Options<'_>,
    policy: &LoadedPolicy,
    r: &Release,
    formats: &[Format],
    suite: &str,
) -> Result<Vec<PackageId>> {
    let req = request(opts, policy, r, formats, PathBuf::new());
    let plan = pipeline::plan(opts.specs, opts.templates, &req)?;
    Ok(plan
        .outputs
        .iter()
        .map(|o| PackageId {
            format: o.format,
            // The state keeps a deb's apt suite and an ipk's opkg feed.
            suite: match o.format {
                Format::Deb => Some(suite.to_string()),
                Format::Ipk => Some(OpkgFlavour::of_outer(req.options.ipk_outer).as_str().into()),
                Format::Rpm => None,
            },
            name: plan.package.clone(),
            version: format!("{}-{}", plan.version, policy.policy.revision),
            arch: o.arch.clone(),
        })
        .collect())
}

fn request(
    opts: &Options<'_>,
    policy: &LoadedPolicy,
    r: &Release,
    formats: &[Format],
    out_dir: PathBuf,
) -> BuildRequest {
    BuildRequest {
        package: r.package.clone(),
        tarball: PathBuf::from(&r.file_name),
        tarball_name: Some(r.file_name.clone()),
        verification: None,
        formats: formats.to_vec(),
        out_dir,
        revision: policy.policy.revision,
        options: policy.build_options(),
        source_date_epoch: opts.source_date_epoch,
        progress: opts.progress,
        target_distro: policy.policy.target_distro.clone(),
        // A scheduled sync never publishes a package with dependencies left out.
        unmapped: crate::deps::UnmappedPolicy::Error,
    }
}

/// The upstream release a package was built from.
#[derive(Debug, Clone, Default)]
struct Origin {
    url: String,
    sha256: String,
    signers: Vec<String>,
}

/// What a finished build left in its work directory.
#[derive(Debug, Serialize, Deserialize)]
struct Built {
    url: String,
    sha256: String,
    revision: u32,
    formats: Vec<Format>,
    signers: Vec<String>,
    /// Package file names in the work directory, by format.
    files: BTreeMap<Format, String>,
}

/// The work directory of a release: its tarball digest and the revision.
fn work_dir(root: &Path, r: &Release, revision: u32) -> PathBuf {
    let digest: String = r
        .sha256
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(64)
        .collect();
    root.join(STATE_DIR)
        .join(WORK_DIR)
        .join(format!("{}-{revision}", digest.to_ascii_lowercase()))
}

/// The exclusive sync lock of a repository, released on drop.
struct SyncLock {
    _file: fs::File,
}

impl SyncLock {
    /// The lock of the repository at `root`.
    fn acquire(root: &Path, wait: bool, log: &dyn Fn(&str)) -> Result<SyncLock> {
        let (file, path) = publish::open_lock_file(root, "sync.lock")?;
        Self::take(file, &path, &format!("on {}", root.display()), wait, log)
    }

    /// Lock `file` (at `path`; `target` says what it guards, for the messages), waiting
    /// for another holder only with `wait`.
    fn take(
        file: fs::File,
        path: &Path,
        target: &str,
        wait: bool,
        log: &dyn Fn(&str),
    ) -> Result<SyncLock> {
        match file.try_lock() {
            Ok(()) => return Ok(SyncLock { _file: file }),
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::Io {
                    context: format!("locking {}", path.display()),
                    source: e,
                })
            }
            Err(fs::TryLockError::WouldBlock) if !wait => {
                return Err(Error::Io {
                    context: format!(
                        "another korgpkg sync is running {target} (it holds {}); pass --wait to wait for it",
                        path.display()
                    ),
                    source: std::io::ErrorKind::WouldBlock.into(),
                });
            }
            Err(fs::TryLockError::WouldBlock) => {}
        }
        log(&format!(
            "waiting for another korgpkg sync {target} to finish"
        ));
        file.lock().ctx(|| format!("locking {}", path.display()))?;
        Ok(SyncLock { _file: file })
    }
}

/// Run a sync: plan, build what is missing (one release at a time), publish and prune
/// with one generation switch, log. Failed releases are in the report
/// ([`Report::failure`]); an error here means nothing was published.
pub fn run(opts: &Options<'_>) -> Result<Report> {
    let config = RepoConfig::load(opts.root)?;
    let policy = LoadedPolicy::load(opts.root, &config, opts.specs)?;
    let _lock = if opts.dry_run {
        None
    } else {
        Some(SyncLock::acquire(opts.root, opts.wait, opts.log)?)
    };
    let plan = plan(opts, &policy)?;
    let mut report = Report {
        dry_run: opts.dry_run,
        generation: None,
        added: Vec::new(),
        removed: Vec::new(),
        unchanged: plan.unchanged.clone(),
        failed: plan.failed.clone(),
        reused: Vec::new(),
        plan,
    };
    if opts.dry_run {
        report.removed = report.plan.remove.clone();
        return Ok(report);
    }

    // Build what is missing, one release at a time.
    let mut adds: Vec<(PathBuf, String)> = Vec::new();
    // (format, name, arch) of each package built → where it came from.
    let mut provenance: HashMap<(Format, String, String), Origin> = HashMap::new();
    let mut failed_urls: HashSet<String> = HashSet::new();
    let mut used_dirs: Vec<PathBuf> = Vec::new();
    let to_build: Vec<Selected> = report.plan.to_build().cloned().collect();
    for s in &to_build {
        let dir = work_dir(opts.root, &s.release, policy.policy.revision);
        let formats: Vec<Format> = s.missing.iter().map(|id| id.format).collect();
        match build_release(opts, &policy, s, &formats, &dir) {
            Ok((built, reused)) => {
                if reused {
                    report.reused.push(s.release.file_name.clone());
                }
                for id in &s.missing {
                    let Some(file) = built.files.get(&id.format) else {
                        continue;
                    };
                    // The apt suite matters for debs only; publish checks every
                    // file's against the definition, so the others get the release
                    // suite (always one of the repository's).
                    let suite = match id.format {
                        Format::Deb => s.suite.clone(),
                        _ => policy.suite(ChannelKind::Release).to_string(),
                    };
                    adds.push((dir.join(file), suite));
                    provenance.insert(
                        (id.format, id.name.clone(), id.arch.clone()),
                        Origin {
                            url: built.url.clone(),
                            sha256: built.sha256.clone(),
                            signers: built.signers.clone(),
                        },
                    );
                }
                used_dirs.push(dir);
            }
            Err(e) => {
                (opts.log)(&format!("failed: {}: {e}", s.release.file_name));
                failed_urls.insert(s.release.url.clone());
                report.failed.push(failure(&s.release, &e));
            }
        }
    }

    // What the policy wants once the failed releases are left out: what they would
    // have displaced stays.
    let mut remove = report.plan.remove.clone();
    if !failed_urls.is_empty() {
        let state = publish::list(opts.root)?;
        let (selected, _) = select(opts, &policy, &report.plan.candidates, &failed_urls);
        let wanted: HashSet<PackageId> = selected.into_iter().flat_map(|s| s.packages).collect();
        remove = removals(&policy, &report.plan.failed_selectors, &state, &wanted);
    }

    if !adds.is_empty() || !remove.is_empty() {
        (opts.log)(&format!(
            "publishing: {} to add, {} to remove",
            adds.len(),
            remove.len()
        ));
        let changes = Changes {
            add: adds,
            remove: remove.clone(),
        };
        let published = publish::apply(
            opts.root,
            &changes,
            opts.passphrase.clone(),
            opts.source_date_epoch,
            opts.templates,
        )?;
        report.generation = (!published.added.is_empty() || !published.removed.is_empty())
            .then_some(published.generation);
        for p in &published.added {
            let Origin {
                url,
                sha256: sha,
                signers,
            } = provenance
                .get(&(p.format, p.name.clone(), p.arch.clone()))
                .cloned()
                .unwrap_or_default();
            report.added.push(Added {
                id: PackageId::of(p),
                sha256: p.sha256.clone(),
                path: p.path.clone(),
                upstream_url: url,
                upstream_sha256: sha,
                signers,
            });
        }
        report.removed = published.removed.iter().map(PackageId::of).collect();
        append_log(opts.root, &report)?;
        // Published: the work directories are no longer needed.
        for d in &used_dirs {
            let _ = fs::remove_dir_all(d);
        }
    }
    sweep_work(opts.root, &used_dirs);
    Ok(report)
}

/// The built packages of `s` in `formats`: from its work directory if a run finished
/// them before, else downloaded, verified and built there. Returns the build record and
/// whether it was reused.
fn build_release(
    opts: &Options<'_>,
    policy: &LoadedPolicy,
    s: &Selected,
    formats: &[Format],
    dir: &Path,
) -> Result<(Built, bool)> {
    let r = &s.release;
    if let Some(built) = read_built(dir) {
        let complete = built.url == r.url
            && built.sha256.eq_ignore_ascii_case(&r.sha256)
            && formats
                .iter()
                .all(|f| built.files.get(f).is_some_and(|n| dir.join(n).is_file()));
        if complete {
            (opts.log)(&format!(
                "reusing the packages of {} built by an earlier run",
                r.file_name
            ));
            return Ok((built, true));
        }
    }
    // Anything here is from a build that did not finish.
    if dir.exists() {
        fs::remove_dir_all(dir).ctx(|| format!("removing {}", dir.display()))?;
    }
    (opts.log)(&format!("downloading {}", r.url));
    let (tarball, verification) = opts
        .sources
        .fetch(opts.specs, std::slice::from_ref(r))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::network(&r.url, "nothing downloaded"))?;
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut req = request(opts, policy, r, formats, dir.to_path_buf());
    req.tarball = tarball.clone();
    req.verification = Some(verification);
    (opts.log)(&format!(
        "building {} {} ({}) as {}",
        r.package,
        r.version,
        r.arch,
        join(formats)
    ));
    let report = match pipeline::build(opts.specs, opts.templates, &req) {
        Ok(rep) => rep,
        Err(e) => {
            if matches!(e, Error::Verify { .. }) {
                // A tarball that failed verification is not kept for reuse.
                let _ = fs::remove_file(&tarball);
            }
            let _ = fs::remove_dir_all(dir);
            return Err(e);
        }
    };
    let built = built_record(r, policy.policy.revision, formats, &report.outputs);
    let json = serde_json::to_vec_pretty(&built)
        .map_err(|e| Error::Usage(format!("cannot encode the build record: {e}")))?;
    publish::write_atomic(&dir.join(BUILT), &json)?;
    if !opts.keep_cache {
        // The packages are safe in the work directory until published.
        let _ = fs::remove_file(&tarball);
    }
    Ok((built, false))
}

fn built_record(r: &Release, revision: u32, formats: &[Format], outputs: &[Output]) -> Built {
    let mut signers = Vec::new();
    if let Some(p) = outputs.first().and_then(|o| o.provenance.as_ref()) {
        signers.extend(p.signer.clone());
        signers.extend(p.sums_signer.clone());
    }
    Built {
        url: r.url.clone(),
        sha256: r.sha256.to_ascii_lowercase(),
        revision,
        formats: formats.to_vec(),
        signers,
        files: outputs
            .iter()
            .map(|o| (o.format, o.file_name.clone()))
            .collect(),
    }
}

fn read_built(dir: &Path) -> Option<Built> {
    let path = dir.join(BUILT);
    let meta = fs::metadata(&path).ok()?;
    if meta.len() > 1024 * 1024 {
        return None;
    }
    let bytes = fs::read(&path).ok()?;
    let built: Built = serde_json::from_slice(&bytes).ok()?;
    // File names come from our own record, but are still checked before use as paths.
    let safe = built
        .files
        .values()
        .all(|n| !n.is_empty() && !n.contains('/') && n != ".." && n != "." && !n.starts_with('.'));
    safe.then_some(built)
}

/// Remove work directories no current release uses (published, or no longer wanted).
fn sweep_work(root: &Path, keep: &[PathBuf]) {
    let base = root.join(STATE_DIR).join(WORK_DIR);
    let Ok(rd) = fs::read_dir(&base) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if !keep.contains(&p) {
            let _ = fs::remove_dir_all(&p);
        }
    }
}

/// Append one JSON line per added and removed package to `sync-log.jsonl`.
fn append_log(root: &Path, report: &Report) -> Result<()> {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut text = String::new();
    for a in &report.added {
        let line = serde_json::json!({
            "time": time,
            "action": "add",
            "generation": report.generation,
            "package": a.id.name,
            "version": a.id.version,
            "arch": a.id.arch,
            "format": a.id.format,
            "suite": a.id.suite,
            "sha256": a.sha256,
            "upstream_url": a.upstream_url,
            "upstream_sha256": a.upstream_sha256,
            "signers": a.signers,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    for id in &report.removed {
        let line = serde_json::json!({
            "time": time,
            "action": "remove",
            "generation": report.generation,
            "package": id.name,
            "version": id.version,
            "arch": id.arch,
            "format": id.format,
            "suite": id.suite,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = root.join(LOG_FILE);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .ctx(|| format!("appending to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LoadedPolicy> {
        let templates = Templates::load(None).unwrap();
        let specs = SpecSet::load(None, &templates).unwrap();
        let config: RepoConfig = toml::from_str(
            "keys = \"k\"\n[apt]\nsuites = [\"stable\", \"testing\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nvalid_until_days = 0\n",
        )
        .unwrap();
        let parsed: InFile =
            toml::from_str(text).map_err(|e| Error::toml(Path::new("sync.toml"), text, &e))?;
        LoadedPolicy::resolve(
            parsed.sync,
            PathBuf::from("sync.toml"),
            &config.apt.suites,
            &specs,
        )
    }

    #[test]
    fn a_policy_resolves_globs_and_names_to_specs() {
        let p = load(
            "[sync]\nkeep = 2\n[[sync.packages]]\nname = \"korg-clang-*\"\nmin_major = 17\n[[sync.packages]]\nname = \"korg-gcc-14-aarch64-linux\"\n[sync.channels.rc]\nsuite = \"testing\"\nformats = [\"deb\"]\n",
        )
        .unwrap();
        assert_eq!(p.selectors[0].targets[0].0, "llvm");
        assert_eq!(p.selectors[1].targets[0].0, "crosstool");
        assert!(p.manages("korg-clang-19") && !p.manages("korg-gcc-13-arm-linux"));
        assert_eq!(p.formats(0, ChannelKind::Rc), vec![Format::Deb]);
        assert_eq!(p.formats(0, ChannelKind::Release).len(), 3);
        assert_eq!(p.suite(ChannelKind::Rc), "testing");
    }

    #[test]
    fn the_example_policy_is_valid() {
        let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("repo/sync.toml"))
            .unwrap();
        let p = load(&text).unwrap();
        assert_eq!(p.selectors.len(), 2);
        assert_eq!(p.selectors[1].targets[0].0, "crosstool");
        assert_eq!(p.suite(ChannelKind::Release), "stable");
    }

    #[test]
    fn policy_errors_name_the_key() {
        for (text, key) in [
            ("[sync]\nkeep = 0\n[[sync.packages]]\nname = \"korg-clang-18\"\n", "sync.keep"),
            ("[sync]\npackages = []\n", "sync.packages"),
            (
                "[sync]\n[[sync.packages]]\nname = \"korg-nothing-*\"\n",
                "sync.packages[0].name",
            ),
            (
                "[sync]\n[[sync.packages]]\nname = \"../etc\"\n",
                "sync.packages[0].name",
            ),
            (
                "[sync]\n[[sync.packages]]\nname = \"korg-clang-18\"\narches = [\"mips\"]\n",
                "sync.packages[0].arches",
            ),
            (
                "[sync]\n[[sync.packages]]\nname = \"korg-clang-18\"\n[sync.channels.rc]\nsuite = \"unstable\"\n",
                "sync.channels.rc.suite",
            ),
            (
                "[sync]\n[[sync.packages]]\nname = \"korg-clang-18\"\ntargets = [\"x\"]\n",
                "sync.packages[0].targets",
            ),
            ("[sync]\nkep = 1\n[[sync.packages]]\nname = \"korg-clang-18\"\n", "kep"),
        ] {
            let e = load(text).unwrap_err();
            assert_eq!(e.exit_code(), 3, "{text}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("sync.toml") && msg.contains(key), "{text}: {msg}");
        }
    }
}
