//! `korgpkg sync --obs PROJECT`: the same planning as a repository sync, handed to Open
//! Build Service instead of built here.
//!
//! The policy selects releases exactly as for a repository (discovery from verified
//! sums files, `min_major`, targets, arches). An OBS package holds the sources of one
//! version, so each package name gets the newest selected *release* (release candidates
//! and `keep` beyond the newest do not apply; OBS keeps the history of every commit).
//! Whether OBS already has it is read from OBS itself: the package's committed
//! `_service` names the release's URL and sha256 and its `.spec` the policy's revision.
//! Only releases OBS lacks are downloaded, verified, staged and exported
//! ([`crate::obs::prepare_discovered`], [`crate::obs::export`]) and pushed with
//! [`crate::obs::push`] (changed files only, one commit per package). Nothing is deleted
//! on OBS: a package the policy no longer selects keeps its last sources.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::PathBuf;

use super::{
    discover, failure, failure_error, select, ChannelKind, Failure, LoadedPolicy, Options, SyncLock,
};
use crate::error::{Error, IoContext, Result};
use crate::obs::{self, Client, ObsRelease, PushReport};
use crate::source::Release;
use crate::version::UpstreamVersion;

/// How to run a sync into an OBS project.
pub struct ObsOptions<'a> {
    /// Specs, sources, dry run, cache and log settings (`root` is not used).
    pub sync: &'a Options<'a>,
    /// The policy ([`LoadedPolicy::load_file`]).
    pub policy: &'a LoadedPolicy,
    pub project: &'a str,
    pub client: &'a Client,
}

/// One OBS package the policy wants, and the release its sources name.
#[derive(Debug, Clone, Serialize)]
pub struct ObsPackage {
    pub package: String,
    pub version: String,
    pub arch: String,
    pub revision: u32,
    pub upstream_url: String,
    pub upstream_sha256: String,
}

/// One package pushed, with the push's details.
#[derive(Debug, Clone, Serialize)]
pub struct ObsPushed {
    #[serde(flatten)]
    pub package: ObsPackage,
    pub signers: Vec<String>,
    pub push: PushReport,
}

/// What a sync into OBS did (or, with `dry_run`, would do).
#[derive(Debug, Serialize)]
pub struct ObsReport {
    pub dry_run: bool,
    pub project: String,
    pub policy: PathBuf,
    /// Packages whose sources on OBS name another release (or that are missing).
    pub to_push: Vec<ObsPackage>,
    /// Packages pushed (empty with `dry_run`).
    pub pushed: Vec<ObsPushed>,
    /// Packages OBS already has at the wanted release.
    pub unchanged: Vec<ObsPackage>,
    pub failed: Vec<Failure>,
}

impl ObsReport {
    /// The error the run ends with when some release failed (as [`super::Report::failure`]).
    pub fn failure(&self) -> Option<Error> {
        failure_error(&self.failed)
    }
}

/// Plan the policy against OBS and push every release OBS lacks. Errors talking to OBS
/// while planning end the run; a release that fails to download, verify, export or push
/// is reported in [`ObsReport::failed`] and the others still go.
pub fn run(o: &ObsOptions<'_>) -> Result<ObsReport> {
    let opts = o.sync;
    let policy = o.policy;
    let _lock = if opts.dry_run { None } else { Some(lock(o)?) };
    let revision = policy.policy.revision;
    let (candidates, mut failed, _) = discover(opts, policy);
    let (selected, errors) = select(opts, policy, &candidates, &HashSet::new());
    failed.extend(errors);
    let releases: Vec<Release> = selected
        .into_iter()
        .filter(|s| s.channel == ChannelKind::Release)
        .map(|s| s.release)
        .collect();
    let wanted = newest_per_package(policy, releases);

    let mut report = ObsReport {
        dry_run: opts.dry_run,
        project: o.project.to_string(),
        policy: policy.path.clone(),
        to_push: Vec::new(),
        pushed: Vec::new(),
        unchanged: Vec::new(),
        failed,
    };
    let mut missing = Vec::new();
    for r in wanted {
        let p = ObsPackage {
            package: r.package.clone(),
            version: r.version.clone(),
            arch: r.arch.clone(),
            revision,
            upstream_url: r.url.clone(),
            upstream_sha256: r.sha256.to_ascii_lowercase(),
        };
        if up_to_date(o.client, o.project, &p)? {
            report.unchanged.push(p);
        } else {
            report.to_push.push(p);
            missing.push(r);
        }
    }
    if opts.dry_run {
        return Ok(report);
    }
    let release = ObsRelease {
        revision,
        target_distro: policy.policy.target_distro.clone(),
        source_date_epoch: opts.source_date_epoch,
        ..ObsRelease::default()
    };
    for (r, p) in missing.iter().zip(report.to_push.clone()) {
        match push_release(o, &release, r) {
            Ok((push, signers)) => report.pushed.push(ObsPushed {
                package: p,
                signers,
                push,
            }),
            Err(e) => {
                (opts.log)(&format!("failed: {}: {e}", r.file_name));
                report.failed.push(failure(r, &e));
            }
        }
    }
    Ok(report)
}

/// The lock that serializes syncs into one OBS project on this machine:
/// `<cache>/locks/obs-sync-<sha256 of the project>.lock`.
fn lock(o: &ObsOptions<'_>) -> Result<SyncLock> {
    let dir = o.sync.sources.fetcher.cache().dir().join("locks");
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let digest = hex::encode(Sha256::digest(o.project.as_bytes()));
    let path = dir.join(format!("obs-sync-{}.lock", &digest[..16]));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    let target = format!("into OBS project {}", o.project);
    SyncLock::take(file, &path, &target, o.sync.wait, o.sync.log)
}

/// Per package name, the newest release; of its arches the first the policy lists
/// (else the first by name), since one OBS package carries one upstream tarball.
fn newest_per_package(policy: &LoadedPolicy, releases: Vec<Release>) -> Vec<Release> {
    let rank = |arch: &str| {
        policy
            .policy
            .arches
            .iter()
            .position(|a| a == arch)
            .unwrap_or(usize::MAX)
    };
    let mut best: BTreeMap<String, (UpstreamVersion, Release)> = BTreeMap::new();
    for r in releases {
        let Ok(v) = UpstreamVersion::parse(&r.version) else {
            continue;
        };
        let better = match best.get(&r.package) {
            None => true,
            Some((bv, b)) => {
                v > *bv || (v == *bv && (rank(&r.arch), &r.arch) < (rank(&b.arch), &b.arch))
            }
        };
        if better {
            best.insert(r.package.clone(), (v, r));
        }
    }
    best.into_values().map(|(_, r)| r).collect()
}

/// Whether OBS's committed sources of `p.package` already name its release: the
/// `_service` downloads that URL and checks that sha256, and the `.spec`'s `Release:` is
/// the policy's revision. A missing package or file is not up to date.
fn up_to_date(client: &Client, project: &str, p: &ObsPackage) -> Result<bool> {
    let Some(service) = client.get_file(project, &p.package, "_service")? else {
        return Ok(false);
    };
    let url = format!(">{}<", crate::templates::xml_escape(&p.upstream_url));
    let sha = format!(">{}<", p.upstream_sha256);
    if !service.contains(&url) || !service.to_ascii_lowercase().contains(&sha) {
        return Ok(false);
    }
    let spec_name = format!("{}.spec", p.package);
    let Some(spec) = client.get_file(project, &p.package, &spec_name)? else {
        return Ok(false);
    };
    let revision = p.revision.to_string();
    Ok(spec.lines().any(|l| {
        l.strip_prefix("Release:")
            .is_some_and(|v| v.trim() == revision)
    }))
}

/// Download, verify and stage release `r`, export its OBS sources and push them. Returns
/// the push and the release's signers; the tarball leaves the cache unless kept.
fn push_release(
    o: &ObsOptions<'_>,
    release: &ObsRelease,
    r: &Release,
) -> Result<(PushReport, Vec<String>)> {
    let opts = o.sync;
    let work = tempfile::Builder::new()
        .prefix("korgpkg-obs-")
        .tempdir()
        .map_err(|e| Error::Io {
            context: "creating a staging directory".into(),
            source: e,
        })?;
    (opts.log)(&format!("downloading {}", r.url));
    let (prepared, upstream, tarball) =
        obs::prepare_discovered(release, r, opts.specs, opts.sources, work.path())?;
    let result = (|| {
        let files = obs::export(&prepared, &upstream, opts.specs, opts.templates)?;
        let meta = obs::package_meta(&prepared, &upstream, opts.specs, opts.templates, o.project)?;
        (opts.log)(&format!(
            "pushing {} {} to {}",
            prepared.meta.name, prepared.meta.version, o.project
        ));
        obs::push(
            o.client,
            o.project,
            &prepared.meta.name,
            &meta,
            &files,
            &obs::commit_message(&prepared, &upstream),
            false,
        )
    })();
    let mut signers = Vec::new();
    if let Some(p) = &prepared.meta.provenance {
        signers.extend(p.signer.clone());
        signers.extend(p.sums_signer.clone());
    }
    drop(prepared);
    if !opts.keep_cache {
        let _ = std::fs::remove_file(&tarball);
    }
    Ok((result?, signers))
}
