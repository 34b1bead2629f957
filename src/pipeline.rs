//! Wires the stages together for one build: **select** (which releases to build: picked
//! from the mirror's verified sums files and downloaded into the cache, or a tarball on
//! disk with its signature; [`select`]) → **verify** (the `.tar.sign` over the
//! uncompressed tar, checked in the same pass that stages the payload; the tarball's
//! sha256 against the verified sums file) → **payload** (stream, validate, stage) →
//! **deps** → **package** (every requested format in parallel, each into a temporary
//! file) → rename into the output directory only when all succeeded.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::cleanup::{Cancel, Registration};
use crate::deps::{self, ElfFile, ElfReport, Unmapped, UnmappedPolicy};
use crate::error::{Error, IoContext, Result};
use crate::model::{Format, PackageMeta, Provenance};
use crate::package::{packager, BuildContext, BuildOptions, IpkOuter, Output};
use crate::payload::{self, PayloadStats, StageOptions};
use crate::source::{self, Release, Sources, Verification};
use crate::spec::{Spec, SpecSet, Vars};
use crate::templates::Templates;
use crate::verify::DetachedVerifier;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Package name (`korg-clang-18`).
    pub package: String,
    /// The upstream tarball on disk.
    pub tarball: PathBuf,
    /// The tarball's upstream file name when `tarball` is named otherwise (cache files
    /// are `<cache>/sha256/<hex>`); `None` means `tarball`'s own file name.
    pub tarball_name: Option<String>,
    /// What the tarball must be verified against; `None` only with `--allow-unverified`.
    pub verification: Option<Verification>,
    /// Formats to write (deduplicated, in this order).
    pub formats: Vec<Format>,
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Package revision (deb/ipk `-N`, rpm Release).
    pub revision: u32,
    pub options: BuildOptions,
    /// `SOURCE_DATE_EPOCH`: clamps mtimes and sets build timestamps.
    pub source_date_epoch: Option<u64>,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Distro map for derived deb/ipk dependencies (`debian-12`, `ubuntu-24.04`,
    /// `openembedded`, `openwrt`); `None`: debian-12 for deb, openwrt for a tar-form
    /// ipk, openembedded for an ar-form ipk.
    pub target_distro: Option<String>,
    /// Whether sonames no distro map knows fail the build or only warn.
    pub unmapped: UnmappedPolicy,
}

/// Where and how a build writes its packages: everything in a [`BuildRequest`] but the
/// release (`Config::build_settings` resolves it from flags and the config file).
#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub formats: Vec<Format>,
    pub out_dir: PathBuf,
    pub revision: u32,
    pub options: BuildOptions,
    pub source_date_epoch: Option<u64>,
}

impl BuildRequest {
    /// A request without a release yet (see [`select`]): no package, tarball or
    /// verification.
    pub fn template(
        settings: BuildSettings,
        progress: bool,
        target_distro: Option<String>,
    ) -> Self {
        let BuildSettings {
            formats,
            out_dir,
            revision,
            options,
            source_date_epoch,
        } = settings;
        BuildRequest {
            package: String::new(),
            tarball: PathBuf::new(),
            tarball_name: None,
            verification: None,
            formats,
            out_dir,
            revision,
            options,
            source_date_epoch,
            progress,
            target_distro,
            unmapped: UnmappedPolicy::Error,
        }
    }
}

/// What a build will produce, known before any work starts.
#[derive(Debug, Clone, Serialize)]
pub struct BuildPlan {
    pub spec: String,
    pub package: String,
    pub version: String,
    pub upstream_version: String,
    pub tarball: PathBuf,
    pub top_dir: String,
    /// Where kernel.org publishes this file name: the spec's directory below the
    /// canonical kernel.org base (recorded as provenance for a `--from` tarball).
    pub upstream_url: String,
    pub prefix: String,
    pub outputs: Vec<PlannedOutput>,
    /// Whether the tarball will be verified (`false` only with `--allow-unverified`).
    pub verified: bool,
    #[serde(skip)]
    meta: PackageMeta,
}

/// One file a build will write.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedOutput {
    pub format: Format,
    pub path: PathBuf,
    pub arch: String,
}

/// What a build produced.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub package: String,
    /// ELF files for another machine than the package's arch (no dependencies derived).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign_arch: Vec<ForeignFile>,
    /// Sonames no distro map knows, left out of the dependencies (`--unmapped warn`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<Unmapped>,
    pub version: String,
    pub upstream_version: String,
    pub prefix: String,
    pub build_time: u64,
    pub payload: PayloadStats,
    pub outputs: Vec<Output>,
}

/// Resolve the spec, variables and output names for `req` without touching the payload.
pub fn plan(specs: &SpecSet, templates: &Templates, req: &BuildRequest) -> Result<BuildPlan> {
    let (spec, pkg_vars) = specs.find_package(&req.package)?;
    let file_name = match &req.tarball_name {
        Some(n) => n.as_str(),
        None => req
            .tarball
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::input(&req.tarball, "not a file name"))?,
    };
    let vars = spec.match_tarball(file_name).ok_or_else(|| {
        Error::input(
            &req.tarball,
            format!(
                "file name does not match spec {}'s tarball pattern {} (arches: {})",
                spec.name,
                spec.tarball_pattern(),
                spec.arches.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    check_consistent(spec, &req.package, &pkg_vars, &vars, &req.tarball)?;
    let meta = spec.resolve(
        &vars,
        req.revision,
        req.verification.is_some(),
        0,
        templates,
    )?;
    if meta.name != req.package {
        return Err(Error::Usage(format!(
            "tarball {} makes package {}, not {}",
            file_name, meta.name, req.package
        )));
    }
    if req.formats.is_empty() {
        return Err(Error::Usage("no formats requested".into()));
    }
    if let Some(d) = &req.target_distro {
        specs.distros().get(d)?;
    }
    let top_dir = spec.top_dir(&vars, templates)?;
    let directory = spec.upstream_name("directory", &vars, templates)?;
    let upstream_url = format!(
        "{}/{}/{file_name}",
        crate::source::DEFAULT_MIRROR,
        directory.trim_matches('/')
    );
    let outputs = dedup(&req.formats)
        .into_iter()
        .map(|f| PlannedOutput {
            format: f,
            path: req.out_dir.join(packager(f).file_name(&meta)),
            arch: meta.arch.for_format(f).to_string(),
        })
        .collect();
    Ok(BuildPlan {
        spec: spec.name.clone(),
        package: meta.name.clone(),
        version: meta.version.clone(),
        upstream_version: meta.upstream_version.clone(),
        tarball: req.tarball.clone(),
        top_dir,
        upstream_url,
        prefix: meta.prefix.clone(),
        outputs,
        verified: req.verification.is_some(),
        meta,
    })
}

/// `formats` without repeats, in their order.
pub fn dedup(formats: &[Format]) -> Vec<Format> {
    let mut out = Vec::new();
    for f in formats {
        if !out.contains(f) {
            out.push(*f);
        }
    }
    out
}

fn check_consistent(
    spec: &Spec,
    package: &str,
    pkg: &Vars,
    tar: &Vars,
    tarball: &Path,
) -> Result<()> {
    for (k, v) in pkg {
        if let Some(t) = tar.get(k) {
            if t != v {
                return Err(Error::input(
                    tarball,
                    format!(
                        "has {k} {t}, but package {package} (spec {}) has {k} {v}",
                        spec.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A verified, staged tarball with its package metadata complete: the spec's relations
/// merged with those derived from the ELF files (for every planned format), build time,
/// installed size and provenance. What `build` packages and `obs export` describes.
pub struct Prepared {
    pub plan: BuildPlan,
    pub meta: PackageMeta,
    pub payload: payload::Payload,
    /// The upstream top directory inside the tarball (`llvm-18.1.8-x86_64`).
    pub top_dir: String,
    /// ELF files for another machine than the package's arch.
    pub foreign_arch: Vec<ForeignFile>,
    /// Sonames left unmapped (only with [`UnmappedPolicy::Warn`]).
    pub unmapped: Vec<Unmapped>,
    bar: Option<ProgressBar>,
}

/// An ELF file for another machine than the package's (a toolchain's target-side
/// library): packaged as it is, no dependencies derived from it.
#[derive(Debug, Clone, Serialize)]
pub struct ForeignFile {
    pub path: String,
    pub class: u8,
    pub machine: String,
}

/// The ELF files for another machine than `arch`, or the error the spec's
/// `foreign_arch = "error"` makes of them.
fn foreign_arch(
    report: &ElfReport,
    arch: &str,
    overrides: &deps::DepsOverrides,
) -> Result<Vec<ForeignFile>> {
    Ok(deps::check_foreign(report, arch, overrides.foreign_arch)?
        .into_iter()
        .map(|f| ForeignFile {
            path: f.path.clone(),
            class: f.class,
            machine: f.machine.clone(),
        })
        .collect())
}

/// The deps stage of `build`: refuse foreign-arch files if the spec says so, derive
/// every planned format's dependencies into `meta`, and collect every unmapped soname
/// of every format, so one error (or warning) names them all.
fn derive_all(
    specs: &SpecSet,
    spec: &Spec,
    req: &BuildRequest,
    outputs: &[PlannedOutput],
    report: &ElfReport,
    meta: &mut PackageMeta,
) -> Result<(Vec<ForeignFile>, Vec<Unmapped>)> {
    let foreign = foreign_arch(report, &meta.arch.rpm, &spec.deps)?;
    let mut unmapped = Vec::new();
    for o in outputs {
        let map = specs.distros().for_format(
            o.format,
            req.target_distro.as_deref(),
            req.options.ipk_outer,
        )?;
        let derived = deps::derive(report, map, o.format, Some(&meta.arch.rpm), &spec.deps)?;
        meta.relations.get_mut(o.format).merge(&derived.relations);
        unmapped.extend(derived.unmapped);
    }
    if !unmapped.is_empty() && req.unmapped == UnmappedPolicy::Error {
        return Err(Error::input(
            &req.tarball,
            deps::unmapped_message(&unmapped),
        ));
    }
    Ok((foreign, unmapped))
}

/// Stage and verify `req`'s tarball (every check passes or nothing is returned), then
/// derive dependencies and complete the metadata. The staging directory is in
/// `req.out_dir` (created if missing) and removed when the result is dropped.
pub fn prepare(specs: &SpecSet, templates: &Templates, req: &BuildRequest) -> Result<Prepared> {
    let decode_threads = crate::worker_threads();
    prepare_with(
        specs,
        templates,
        req,
        decode_threads,
        &mut |name, reader, opts, tap| {
            Ok((
                payload::stage_stream(name, reader, &req.out_dir, opts, tap)?,
                None,
            ))
        },
    )
}

/// How [`prepare_with`] reads the tarball: the payload, and the ELF report if the read
/// made one on the way (else [`deps::scan`] reads the staged files afterwards).
type ReadPayload<'r> = dyn FnMut(
        &Path,
        Box<dyn Read + Send>,
        &StageOptions<'_>,
        Option<&mut (dyn std::io::Write + Send)>,
    ) -> Result<(payload::Payload, Option<Result<ElfReport>>)>
    + 'r;

/// [`prepare`] with the tarball read by `read` (staging, or streaming to packagers),
/// a multi-block xz tarball decoded by up to `decode_threads` threads.
/// Whatever `read` found wrong with ELF files is reported only after every check of the
/// archive and its signature passed.
fn prepare_with(
    specs: &SpecSet,
    templates: &Templates,
    req: &BuildRequest,
    decode_threads: usize,
    read: &mut ReadPayload<'_>,
) -> Result<Prepared> {
    let plan = plan(specs, templates, req)?;
    let spec = specs
        .get(&plan.spec)
        .ok_or_else(|| Error::Usage(format!("spec {} vanished", plan.spec)))?;
    std::fs::create_dir_all(&req.out_dir)
        .ctx(|| format!("creating output directory {}", req.out_dir.display()))?;
    crate::cleanup::sweep_stale(&req.out_dir);

    let bar = req.progress.then(|| {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message("unpacking");
        pb
    });
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let exclude = |rel: &str| spec.is_excluded(rel);
    let opts = StageOptions {
        top_dir: &plan.top_dir,
        prefix: &plan.prefix,
        exclude: &exclude,
        clamp_mtime: req.source_date_epoch,
        md5: true,
    };
    let mut verifier = match &req.verification {
        Some(v) => Some(DetachedVerifier::new(
            &v.signature,
            &v.key,
            &v.signature_origin,
        )?),
        None => None,
    };
    // With a signed sha256, the compressed file is hashed in one read before anything
    // decompresses it: a tarball that is not the one the sums file lists is refused
    // without unpacking a byte of it. The hash is computed again in the staging pass,
    // so a file changed in between is refused too.
    if let Some(v) = &req.verification {
        if let Some(expected) = &v.sha256 {
            let (_, actual) = hash_file(&req.tarball)?;
            check_sha256(&req.tarball, expected, &actual)?;
        }
    }
    let reader =
        payload::open_tarball_hashed(&req.tarball, bar.as_ref(), hasher.clone(), decode_threads)?;
    let tap = verifier
        .as_mut()
        .map(|v| v as &mut (dyn std::io::Write + Send));
    let staged = read(&req.tarball, reader, &opts, tap);
    let tarball_sha256 = hex::encode(
        hasher
            .lock()
            .map_err(|_| Error::Usage("hash state poisoned".into()))?
            .clone()
            .finalize(),
    );
    // A broken archive is reported as such first; then every check must pass before
    // anything is packaged.
    let (payload, scanned) = staged?;
    let mut signer = None;
    if let Some(v) = &req.verification {
        if let Some(expected) = &v.sha256 {
            check_sha256(&req.tarball, expected, &tarball_sha256)?;
        }
        if let Some(verifier) = verifier.take() {
            signer = Some(verifier.finish()?);
        }
    }

    // The deps stage: dependencies derived from the ELF files, merged into the spec's.
    let mut meta = plan.meta.clone();
    let report = match scanned {
        Some(report) => report?,
        None => deps::scan(&payload)?,
    };
    let (foreign_arch, unmapped) = derive_all(specs, spec, req, &plan.outputs, &report, &mut meta)?;
    meta.build_time = req.source_date_epoch.unwrap_or(payload.stats().max_mtime);
    meta.installed_size = payload.stats().file_bytes;
    // A downloaded tarball records the URL it came from; a local one (no upstream name
    // given) the kernel.org URL its name is published at, and its path for the report.
    let local = req.tarball_name.is_none();
    meta.provenance = Some(Provenance {
        url: match &req.verification {
            Some(v) if !local => v.url.clone(),
            _ => plan.upstream_url.clone(),
        },
        local_path: local.then(|| {
            std::path::absolute(&req.tarball)
                .unwrap_or_else(|_| req.tarball.clone())
                .display()
                .to_string()
        }),
        sha256: tarball_sha256,
        signer,
        sums_signer: req
            .verification
            .as_ref()
            .and_then(|v| v.sums_signer.clone()),
    });

    Ok(Prepared {
        top_dir: plan.top_dir.clone(),
        foreign_arch,
        unmapped,
        plan,
        meta,
        payload,
        bar,
    })
}

/// Run the whole pipeline for `req` and rename every format's package into place only
/// if all succeeded. The tarball is read once and every format is written while it is
/// decoded ([`build_one_pass`]); with `KORGPKG_STAGED=1`, or when a file of 4 GiB or
/// more meets an rpm, the payload is staged first ([`build_staged`]). On error nothing new is left in the output directory. A
/// successful build without verification (`--allow-unverified`) says so in one warning
/// line on stderr (a failed one prints only its error).
pub fn build(specs: &SpecSet, templates: &Templates, req: &BuildRequest) -> Result<BuildReport> {
    let staged_only = std::env::var_os("KORGPKG_STAGED").is_some_and(|v| v == "1");
    if !staged_only {
        let mut restage = false;
        match build_one_pass(specs, templates, req, &mut restage) {
            Err(_) if restage => {}
            done => return done.inspect(|_| warn_unverified(req)),
        }
    }
    build_staged(specs, templates, req)
}

fn warn_unverified(req: &BuildRequest) {
    if req.verification.is_none() {
        eprintln!(
            "korgpkg: warning: {}: packaged UNVERIFIED bytes (--allow-unverified): no signature was checked, and the packages say so",
            req.tarball.display()
        );
    }
}

/// What flows from the tarball reader to one format's writer thread.
enum Flow {
    Entry(payload::Entry),
    Data(Arc<[u8]>),
    /// Every check passed: write the package.
    Finish(Arc<PackageMeta>, Arc<payload::Payload>),
    /// This format needs a second read (hard links arrived): stop without output.
    Abandon,
}

/// Messages in flight per format (at most this many 256 KiB chunks).
const FLOW_DEPTH: usize = 16;

/// The [`payload::StreamVisitor`] of a one-pass build: each entry and chunk goes to the
/// ELF scanner and to every format's thread.
struct OnePass<'r> {
    scanner: Option<deps::StreamScanner>,
    /// Per format still fed: its index in the plan, whether it needs hard-link groups
    /// before their contents ([`crate::package::Packager::needs_links_first`]), and
    /// its channel.
    senders: Vec<(usize, bool, std::sync::mpsc::SyncSender<Flow>)>,
    /// Formats dropped at the first hard link, to be written by a second read.
    abandoned: Vec<usize>,
    rpm: bool,
    restage: &'r mut bool,
    sink_failed: bool,
}

impl OnePass<'_> {
    fn send(&mut self, make: impl Fn() -> Flow) -> Result<()> {
        for (_, _, tx) in &self.senders {
            if tx.send(make()).is_err() {
                self.sink_failed = true;
                return Err(Error::Usage("a package writer stopped".into()));
            }
        }
        Ok(())
    }
}

impl payload::StreamVisitor for OnePass<'_> {
    fn entry(&mut self, entry: &payload::Entry) -> Result<()> {
        if let (true, payload::EntryKind::File(d)) = (self.rpm, &entry.kind) {
            if d.size > u64::from(u32::MAX) {
                *self.restage = true;
                return Err(Error::input(
                    &entry.path,
                    "4 GiB or larger: the rpm needs a staged payload",
                ));
            }
        }
        if let Some(s) = self.scanner.as_mut() {
            s.entry(entry)?;
        }
        if matches!(entry.kind, payload::EntryKind::HardLink { .. }) {
            let (later, keep) = std::mem::take(&mut self.senders)
                .into_iter()
                .partition(|(_, links_first, _)| *links_first);
            self.senders = keep;
            for (i, _, tx) in later {
                let _ = tx.send(Flow::Abandon);
                self.abandoned.push(i);
            }
        }
        self.send(|| Flow::Entry(entry.clone()))
    }

    fn data(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(s) = self.scanner.as_mut() {
            s.data(bytes)?;
        }
        let chunk: Arc<[u8]> = bytes.into();
        self.send(|| Flow::Data(chunk.clone()))
    }
}

/// A file's bytes as they arrive on a format's channel, ending after `left` bytes.
struct FlowReader<'a> {
    rx: &'a std::sync::mpsc::Receiver<Flow>,
    chunk: Arc<[u8]>,
    at: usize,
    left: u64,
}

impl Read for FlowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Flow::Data(c)) => {
                    self.chunk = c;
                    self.at = 0;
                }
                _ => return Err(std::io::Error::other("the payload stream stopped")),
            }
        }
        let n = buf
            .len()
            .min(self.chunk.len() - self.at)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Makes one format's sink, given the mtime of the directories its data stream starts
/// with (the package's ancestors of the prefix).
type MakeSink<'a> = dyn Fn(u64) -> Result<Box<dyn crate::package::PayloadSink + 'a>> + Sync + 'a;

/// The sink of `format` for a one-pass build: `meta` with `build_time` replaced by the
/// start time (the generated entries written by `finish` take the final metadata's).
fn one_pass_sink<'a>(
    format: Format,
    meta: &PackageMeta,
    ctx: &'a BuildContext<'a>,
    links: Option<&HashMap<String, Vec<String>>>,
    start: u64,
) -> Result<Box<dyn crate::package::PayloadSink + 'a>> {
    let mut meta = meta.clone();
    meta.build_time = start;
    let mut sink = packager(format).sink(&meta, ctx)?;
    if let Some(groups) = links {
        sink.expect_links(groups);
    }
    Ok(sink)
}

/// One format's thread of a one-pass build: make its sink when the first message
/// arrives, feed it what arrives, then write the package into a registered temp file
/// beside its final path. The data stream starts at `SOURCE_DATE_EPOCH` or, without it,
/// at the mtime of the archive's first entry, both known before the first byte is
/// written (the newest mtime, today's build time without `SOURCE_DATE_EPOCH`, is known
/// only at the end); the same archive always gives the same start.
fn run_sink(
    make: &MakeSink<'_>,
    epoch: Option<u64>,
    rx: &std::sync::mpsc::Receiver<Flow>,
    o: &PlannedOutput,
) -> Result<Option<Written>> {
    let mut sink = None;
    loop {
        match rx.recv() {
            Ok(Flow::Entry(e)) => {
                let sink = match &mut sink {
                    Some(s) => s,
                    None => sink.insert(make(epoch.unwrap_or(e.mtime))?),
                };
                let left = match &e.kind {
                    payload::EntryKind::File(d) => d.size,
                    _ => 0,
                };
                let mut r = FlowReader {
                    rx,
                    chunk: Arc::from(&[][..]),
                    at: 0,
                    left,
                };
                sink.entry(&e, &mut r)?;
                if r.left != 0 {
                    return Err(Error::Usage(format!("{}: contents not consumed", e.path)));
                }
            }
            Ok(Flow::Data(_)) => {
                return Err(Error::Usage("payload bytes without an entry".into()));
            }
            Ok(Flow::Finish(meta, payload)) => {
                let sink = match sink {
                    Some(s) => s,
                    None => make(epoch.unwrap_or(meta.build_time))?,
                };
                return write_temp(o, |out| sink.finish(&meta, &payload, out)).map(Some);
            }
            Ok(Flow::Abandon) => return Ok(None),
            Err(_) => return Err(Error::Usage("the build stopped before its end".into())),
        }
    }
}

/// Build `req` in one pass over the tarball: while it is decoded and checked, each
/// entry and chunk is hashed, scanned for ELF dependencies and passed to every format's
/// thread, which compresses its data stream into a temporary file; once the archive,
/// its signature and the symlink check passed, each writes its package (control parts
/// from the sorted list, then the compressed stream) and all are renamed into place.
/// Data streams follow the archive order; `restage` is set when this payload needs the
/// staged path (a file of 4 GiB or more with an rpm).
fn build_one_pass(
    specs: &SpecSet,
    templates: &Templates,
    req: &BuildRequest,
    restage: &mut bool,
) -> Result<BuildReport> {
    let planned = plan(specs, templates, req)?;
    std::fs::create_dir_all(&req.out_dir)
        .ctx(|| format!("creating output directory {}", req.out_dir.display()))?;
    let pre_meta = planned.meta.clone();
    let epoch = req.source_date_epoch;
    let cancel = Cancel::new();
    let ctx = BuildContext {
        templates,
        options: &req.options,
        cancel: &cancel,
    };
    let outputs = &planned.outputs;
    // A format that needs hard-link groups before their contents (rpm) is written by a
    // second read when the payload has hard links, which only its end can tell. For an
    // xz tarball, a plain copy of the decoded tar stream is written as it passes into
    // an anonymous file in the output directory, so that read need not decode the xz
    // again; other inputs are read again from the tarball.
    let spool = if decoding_is_slow(&req.tarball)
        && outputs
            .iter()
            .any(|o| packager(o.format).needs_links_first())
    {
        Some(
            tempfile::tempfile_in(&req.out_dir)
                .ctx(|| format!("creating a temporary file in {}", req.out_dir.display()))?,
        )
    } else {
        None
    };
    let first_failure = AtomicUsize::new(usize::MAX);
    let (prepared, results) = std::thread::scope(|s| -> Result<_> {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for (i, o) in outputs.iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel(FLOW_DEPTH);
            senders.push((i, packager(o.format).needs_links_first(), tx));
            let (ctx, first_failure, pre_meta) = (&ctx, &first_failure, &pre_meta);
            handles.push(s.spawn(move || {
                let make = |start| one_pass_sink(o.format, pre_meta, ctx, None, start);
                let written = run_sink(&make, epoch, &rx, o);
                // Recorded while the channel is still open, so the failures this one
                // causes (the reader stops, the others see the stream end) come later.
                if written.is_err() {
                    let _ = first_failure.compare_exchange(
                        usize::MAX,
                        i,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    ctx.cancel.cancel();
                }
                drop(rx);
                written
            }));
        }
        let mut visitor = OnePass {
            scanner: Some(deps::StreamScanner::new(&req.out_dir)),
            senders,
            abandoned: Vec::new(),
            rpm: outputs.iter().any(|o| o.format == Format::Rpm),
            restage,
            sink_failed: false,
        };
        let decode_threads = one_pass_decode_threads(outputs.len());
        let prepared = prepare_with(
            specs,
            templates,
            req,
            decode_threads,
            &mut |name, reader, opts, tap| {
                let payload = match &spool {
                    Some(file) => read_spooling(reader, file, &spool_name(req), |tee| {
                        payload::stream_payload(name, tee, opts, tap, &mut visitor)
                    })?,
                    None => payload::stream_payload(name, reader, opts, tap, &mut visitor)?,
                };
                let report = visitor.scanner.take().map(deps::StreamScanner::finish);
                Ok((payload, report))
            },
        );
        let sink_failed = visitor.sink_failed;
        let abandoned = std::mem::take(&mut visitor.abandoned);
        let mut senders = std::mem::take(&mut visitor.senders);
        let prepared = match prepared {
            Ok(mut p) => {
                let payload = std::mem::replace(&mut p.payload, payload::Payload::empty());
                let (meta, payload) = (Arc::new(p.meta.clone()), Arc::new(payload));
                for (_, _, tx) in senders.drain(..) {
                    let _ = tx.send(Flow::Finish(meta.clone(), payload.clone()));
                }
                Ok((p, payload, abandoned))
            }
            Err(e) => {
                cancel.cancel();
                Err((e, sink_failed))
            }
        };
        drop(senders);
        let results: Vec<Result<Option<Written>>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Usage("a packager thread panicked".into())))
            })
            .collect();
        Ok((prepared, results))
    })?;
    let (prepared, payload, abandoned) = match prepared {
        Ok(p) => p,
        // A writer's own failure explains a stopped stream better than the stop does.
        Err((e, sink_failed)) => {
            let first = first_failure.load(Ordering::SeqCst);
            return Err(match results.into_iter().nth(first) {
                Some(Err(w)) if sink_failed => w,
                _ => e,
            });
        }
    };
    let mut results: Vec<Result<Written>> = results
        .into_iter()
        .map(|r| r.and_then(|w| w.ok_or_else(|| Error::Usage("not written".into()))))
        .collect();
    let first = first_failure.load(Ordering::SeqCst);
    if first == usize::MAX {
        for i in abandoned {
            results[i] = second_pass(
                specs,
                req,
                &prepared,
                &payload,
                &pre_meta,
                &ctx,
                &outputs[i],
                spool.as_ref(),
            );
        }
    }
    if let Some(pb) = &prepared.bar {
        pb.finish_and_clear();
    }
    let meta = &prepared.meta;
    // The format that failed first explains the others' stops; else (a second read
    // failed) the first failed format.
    let first = if first == usize::MAX {
        results.iter().position(|r| r.is_err()).unwrap_or(first)
    } else {
        first
    };
    let outputs = commit(meta, outputs, results, first)?;
    Ok(BuildReport {
        package: meta.name.clone(),
        foreign_arch: prepared.foreign_arch,
        unmapped: prepared.unmapped,
        version: meta.version.clone(),
        upstream_version: meta.upstream_version.clone(),
        prefix: meta.prefix.clone(),
        build_time: meta.build_time,
        payload: payload.stats().clone(),
        outputs,
    })
}

/// Write the format of `o`, whose sink needs every hard-link group before its contents,
/// by reading the payload a second time with the groups the first read found: from
/// `spool` (the copy of the decoded tar stream the first read made) when
/// there is one, else from the tarball. The second read must give exactly the first
/// one's entries, every file's SHA-256 included, so it packages only verified bytes.
#[allow(clippy::too_many_arguments)]
fn second_pass(
    specs: &SpecSet,
    req: &BuildRequest,
    prepared: &Prepared,
    payload: &Arc<payload::Payload>,
    pre_meta: &PackageMeta,
    ctx: &BuildContext<'_>,
    o: &PlannedOutput,
    spool: Option<&File>,
) -> Result<Written> {
    let spec = specs
        .get(&prepared.plan.spec)
        .ok_or_else(|| Error::Usage(format!("spec {} vanished", prepared.plan.spec)))?;
    let exclude = |rel: &str| spec.is_excluded(rel);
    let opts = StageOptions {
        top_dir: &prepared.plan.top_dir,
        prefix: &prepared.plan.prefix,
        exclude: &exclude,
        clamp_mtime: req.source_date_epoch,
        md5: false,
    };
    let groups = crate::package::link_groups(payload);
    let make = |start| one_pass_sink(o.format, pre_meta, ctx, Some(&groups), start);
    let spool_name = spool_name(req);
    let source = match spool {
        Some(_) => spool_name.as_path(),
        None => req.tarball.as_path(),
    };
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(FLOW_DEPTH);
        let writer = s.spawn(move || run_sink(&make, req.source_date_epoch, &rx, o));
        let mut restage = false;
        let mut visitor = OnePass {
            scanner: None,
            senders: vec![(0, false, tx)],
            abandoned: Vec::new(),
            rpm: false,
            restage: &mut restage,
            sink_failed: false,
        };
        let reader: Result<Box<dyn Read>> = match spool {
            Some(mut file) => file
                .seek(std::io::SeekFrom::Start(0))
                .map(|_| {
                    Box::new(std::io::BufReader::with_capacity(SPOOL_BUFFER, file)) as Box<dyn Read>
                })
                .ctx(|| format!("reading {}", spool_name.display())),
            None => payload::open_tarball(&req.tarball, None).map(|r| r as Box<dyn Read>),
        };
        let read = reader
            .and_then(|reader| payload::stream_payload(source, reader, &opts, None, &mut visitor));
        let mut senders = std::mem::take(&mut visitor.senders);
        match read {
            Ok(again) if same_except_md5(again.entries(), payload.entries()) => {
                for (_, _, tx) in senders.drain(..) {
                    let _ = tx.send(Flow::Finish(
                        Arc::new(prepared.meta.clone()),
                        payload.clone(),
                    ));
                }
            }
            Ok(_) => {
                drop(senders);
                let _ = writer.join();
                return Err(Error::input(
                    source,
                    "changed while it was read a second time (for the rpm's hard links)",
                ));
            }
            Err(e) => {
                drop(senders);
                return Err(match writer.join() {
                    Ok(Err(w)) if visitor.sink_failed => w,
                    _ => e,
                });
            }
        }
        writer
            .join()
            .unwrap_or_else(|_| Err(Error::Usage("a packager thread panicked".into())))?
            .ok_or_else(|| Error::Usage("the rpm was not written".into()))
    })
}

/// Whether the second read's `again` gives the first read's `first`, every file's size,
/// SHA-256 and place included; the second read skips the MD5 (only the deb needs it).
fn same_except_md5(again: &[payload::Entry], first: &[payload::Entry]) -> bool {
    again
        .iter()
        .map(without_md5)
        .eq(first.iter().map(without_md5))
}

/// `entry` with its MD5 (if it has contents) zeroed.
fn without_md5(entry: &payload::Entry) -> payload::Entry {
    let mut entry = entry.clone();
    if let payload::EntryKind::File(d) | payload::EntryKind::HardLink { data: d, .. } =
        &mut entry.kind
    {
        d.md5 = [0; 16];
    }
    entry
}

/// Threads for decoding a multi-block xz tarball in a one-pass build that writes
/// `formats` packages: every core when there are more cores than formats, else one.
/// Each format compresses on every core already, so with fewer cores the formats keep
/// them busy and parallel decoding would only add its buffers (several decoded blocks
/// of up to 24 MiB each) without making the build faster.
fn one_pass_decode_threads(formats: usize) -> usize {
    let cores = crate::worker_threads();
    if cores > formats {
        cores
    } else {
        1
    }
}

/// Whether decoding `tarball` again costs much more than a spool: xz does (a plain
/// copy is written and read back in a fraction of the time xz takes to decode);
/// gzip, zstd and plain tar decode fast enough to read again without a copy on disk.
fn decoding_is_slow(tarball: &Path) -> bool {
    let mut head = [0u8; 6];
    File::open(tarball)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && payload::detect_compression(&head) == Some(payload::Compression::Xz)
}

/// Buffer size for writing and reading the spool.
const SPOOL_BUFFER: usize = 1 << 20;

/// How errors name the spool of `req`: an anonymous file in the output directory.
fn spool_name(req: &BuildRequest) -> PathBuf {
    req.out_dir
        .join("(copy of the decoded tarball for the rpm's hard links)")
}

/// Run `read` over `reader` while a thread of its own writes a copy of every byte it
/// gives into `spool`. A failed spool write is reported (naming `name`) before the
/// read's own error, which that failure causes.
fn read_spooling<T>(
    reader: impl Read,
    spool: &File,
    name: &Path,
    read: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let writer = s.spawn(move || -> std::io::Result<()> {
            let mut out = spool;
            for chunk in rx {
                out.write_all(&chunk)?;
            }
            out.flush()
        });
        let mut tee = SpoolingReader {
            inner: reader,
            pending: Vec::with_capacity(SPOOL_BUFFER),
            tx: Some(tx),
        };
        let value = read(&mut tee);
        let rest = tee.send_pending();
        drop(tee);
        writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spool writer panicked")))
            .ctx(|| format!("writing {}", name.display()))?;
        let value = value?;
        rest.ctx(|| format!("writing {}", name.display()))?;
        Ok(value)
    })
}

/// A reader that hands every byte read through it, in buffers of [`SPOOL_BUFFER`],
/// to the spool writer.
struct SpoolingReader<R> {
    inner: R,
    pending: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

impl<R> SpoolingReader<R> {
    /// Send what is buffered; an error once the writer has stopped.
    fn send_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.pending, Vec::with_capacity(SPOOL_BUFFER));
        match &self.tx {
            Some(tx) if tx.send(full).is_ok() => Ok(()),
            _ => {
                self.tx = None;
                Err(std::io::Error::other("the spool writer stopped"))
            }
        }
    }
}

impl<R: Read> Read for SpoolingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= SPOOL_BUFFER {
            self.send_pending()?;
        }
        Ok(n)
    }
}

/// [`build`] through a staged payload: stage once while verifying, then write every
/// format from the staged files.
fn build_staged(specs: &SpecSet, templates: &Templates, req: &BuildRequest) -> Result<BuildReport> {
    let Prepared {
        plan,
        meta,
        payload,
        bar,
        foreign_arch,
        unmapped,
        ..
    } = prepare(specs, templates, req)?;
    if let Some(pb) = &bar {
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(format!(
            "building {}",
            plan.outputs
                .iter()
                .map(|o| o.format.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    let outputs = write_packages(&meta, &plan.outputs, &|_| &payload, templates, &req.options);
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    let outputs = outputs?;
    warn_unverified(req);
    Ok(BuildReport {
        package: meta.name.clone(),
        foreign_arch,
        unmapped,
        version: meta.version.clone(),
        upstream_version: meta.upstream_version.clone(),
        prefix: meta.prefix.clone(),
        build_time: meta.build_time,
        payload: payload.stats().clone(),
        outputs,
    })
}

/// Write `meta` in every format of `planned`, each on its own thread into a temporary
/// file in its output directory (`payload_for` gives each format's payload), and rename
/// them all into place only when every one succeeded. When one format fails, the others
/// are stopped ([`Cancel`]) and that first failure is returned; when a rename fails, the
/// packages already renamed are removed again, so the output directory gets all of them
/// or none. Leftovers of killed builds in the output directories are removed first
/// ([`crate::cleanup::sweep_stale`]).
pub fn write_packages<'p>(
    meta: &PackageMeta,
    planned: &[PlannedOutput],
    payload_for: &(dyn Fn(Format) -> &'p crate::payload::Payload + Sync),
    templates: &Templates,
    options: &BuildOptions,
) -> Result<Vec<Output>> {
    let cancel = Cancel::new();
    let ctx = BuildContext {
        templates,
        options,
        cancel: &cancel,
    };
    for o in planned {
        crate::cleanup::sweep_stale(o.path.parent().unwrap_or(Path::new(".")));
    }
    // Each thread also hashes its finished file, so the hashing overlaps the others'
    // compression instead of following it.
    let first_failure = AtomicUsize::new(usize::MAX);
    let results: Vec<Result<Written>> = std::thread::scope(|s| {
        let handles: Vec<_> = planned
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let (meta, ctx, first_failure) = (meta, &ctx, &first_failure);
                let payload = payload_for(o.format);
                s.spawn(move || -> Result<Written> {
                    let written = write_one(meta, o, payload, ctx);
                    if written.is_err() {
                        let _ = first_failure.compare_exchange(
                            usize::MAX,
                            i,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        ctx.cancel.cancel();
                    }
                    written
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Usage("a packager thread panicked".into())))
            })
            .collect()
    });
    commit(meta, planned, results, first_failure.load(Ordering::SeqCst))
}

/// A finished package in its registered temp file, with its size and sha256.
type Written = (tempfile::NamedTempFile, Registration, u64, String);

/// Rename every format's finished temp file into place, all or none, and describe them;
/// if any format failed, return the failure of format `first` (the one that stopped the
/// others) and rename nothing.
fn commit(
    meta: &PackageMeta,
    planned: &[PlannedOutput],
    results: Vec<Result<Written>>,
    first: usize,
) -> Result<Vec<Output>> {
    // The failure that stopped the others, not the "stopped" errors it caused.
    let mut temps = Vec::new();
    let mut failure = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(w) => temps.push(w),
            Err(e) if i == first || failure.is_none() => failure = Some(e),
            Err(_) => {}
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // Everything succeeded: move the files into place, all or none, without an
    // interrupt in between (the registrations end after the section).
    let mut registrations = Vec::new();
    let mut finished = Vec::new();
    for (tmp, registration, size, sha256) in temps {
        registrations.push(registration);
        finished.push((tmp, size, sha256));
    }
    let sums = crate::cleanup::uninterrupted(|| commit_outputs(finished, planned))?;
    drop(registrations);
    let mut outputs = Vec::new();
    for ((size, sha256), planned) in sums.into_iter().zip(planned) {
        let f = planned.format;
        outputs.push(Output {
            format: f,
            path: planned.path.clone(),
            file_name: planned
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            name: meta.name.clone(),
            version: match f {
                Format::Rpm => format!("{}-{}", meta.version, meta.revision),
                _ => meta.full_version(f),
            },
            arch: planned.arch.clone(),
            size,
            sha256,
            relations: meta.relations.get(f).by_field(f),
            provenance: meta.provenance.clone(),
        });
    }
    Ok(outputs)
}

/// One format's package in a registered temp file beside its final path, synced, with
/// its size and sha256.
fn write_one(
    meta: &PackageMeta,
    o: &PlannedOutput,
    payload: &crate::payload::Payload,
    ctx: &BuildContext<'_>,
) -> Result<Written> {
    write_temp(o, |out| packager(o.format).write(meta, payload, ctx, out))
}

/// Run `fill` on a registered temp file beside `o`'s final path, sync it and hash it.
fn write_temp(o: &PlannedOutput, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<Written> {
    let out_dir = o.path.parent().unwrap_or(Path::new("."));
    let (mut tmp, registration) = crate::cleanup::temp_file_in(out_dir)
        .ctx(|| format!("creating a temporary file in {}", out_dir.display()))?;
    // An I/O error names the package being written (the disk that filled up).
    fill(tmp.as_file_mut()).map_err(|e| match e {
        Error::Io { context, source } => Error::Io {
            context: format!("writing {}: {context}", o.path.display()),
            source,
        },
        other => other,
    })?;
    tmp.as_file()
        .sync_all()
        .ctx(|| format!("writing {}", o.path.display()))?;
    let (size, sha256) = hash_file(tmp.path())?;
    Ok((tmp, registration, size, sha256))
}

/// Rename every finished temp file to its planned path; if one rename fails, remove the
/// packages renamed before it and return the error.
fn commit_outputs(
    finished: Vec<(tempfile::NamedTempFile, u64, String)>,
    planned: &[PlannedOutput],
) -> Result<Vec<(u64, String)>> {
    let mut done: Vec<&Path> = Vec::new();
    let mut sums = Vec::new();
    for ((tmp, size, sha256), planned) in finished.into_iter().zip(planned) {
        set_mode_0644(tmp.path());
        let renamed = tmp.persist(&planned.path).map_err(|e| e.error).ctx(|| {
            format!(
                "renaming the finished package to {}",
                planned.path.display()
            )
        });
        if let Err(e) = renamed {
            for path in done {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        done.push(&planned.path);
        sums.push((size, sha256));
    }
    Ok(sums)
}

/// What `korgpkg deps` found: the ELF files and each format's derived dependencies.
#[derive(Debug, Serialize)]
pub struct DepsReport {
    /// The tarball or directory scanned.
    pub source: PathBuf,
    /// The package the tarball makes (or `--package`), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The package arch (rpm spelling) the files were checked against, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    pub files: Vec<ElfFile>,
    /// ELF files for another machine than `arch` (no dependencies derived).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign_arch: Vec<ForeignFile>,
    pub formats: Vec<FormatDeps>,
    /// Every soname no distro map knows, of every format.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<Unmapped>,
}

impl DepsReport {
    /// The one error naming every unmapped soname, if there are any.
    pub fn unmapped_error(&self) -> Option<Error> {
        (!self.unmapped.is_empty())
            .then(|| Error::input(&self.source, deps::unmapped_message(&self.unmapped)))
    }
}

/// One format's derived dependencies.
#[derive(Debug, Serialize)]
pub struct FormatDeps {
    pub format: Format,
    /// The distro map used (none for rpm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distro: Option<String>,
    /// Native field name (`Depends`, `Requires`) → relations.
    pub relations: std::collections::BTreeMap<String, Vec<String>>,
    /// Sonames this format's map does not know (left out of `relations`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<Unmapped>,
}

/// Scan a tarball (staged like `build` stages it, without verification: nothing is
/// packaged) or a directory, and derive every format's dependencies. `package` picks
/// the spec (its `[deps]` table and, for a tarball, the arch check); for a tarball it
/// defaults to the package the file name makes.
pub fn deps(
    specs: &SpecSet,
    templates: &Templates,
    source: &Path,
    package: Option<&str>,
    target_distro: Option<&str>,
) -> Result<DepsReport> {
    if let Some(d) = target_distro {
        specs.distros().get(d)?;
    }
    let (report, spec, package, arch) = if source.is_dir() {
        let spec = match package {
            Some(p) => Some(specs.find_package(p)?.0),
            None => None,
        };
        (
            deps::scan_dir(source)?,
            spec,
            package.map(str::to_string),
            None,
        )
    } else if source.is_file() {
        let file_name = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::input(source, "not a file name"))?;
        let package =
            match package {
                Some(p) => p.to_string(),
                None => {
                    let mut found = Vec::new();
                    for spec in specs.specs() {
                        if let Some(vars) = spec.match_tarball(file_name) {
                            found.push(spec.package_name(&vars, templates)?);
                        }
                    }
                    match found.as_slice() {
                        [one] => one.clone(),
                        _ => return Err(Error::input(
                            source,
                            "no single spec's tarball pattern matches this name; give --package",
                        )),
                    }
                }
            };
        let settings = BuildSettings {
            formats: Format::ALL.to_vec(),
            out_dir: std::env::temp_dir(),
            revision: 1,
            options: Default::default(),
            source_date_epoch: None,
        };
        let req = BuildRequest {
            package,
            tarball: source.to_path_buf(),
            unmapped: UnmappedPolicy::Warn,
            ..BuildRequest::template(settings, false, None)
        };
        let plan = plan(specs, templates, &req)?;
        let spec = specs
            .get(&plan.spec)
            .ok_or_else(|| Error::Usage(format!("spec {} vanished", plan.spec)))?;
        let exclude = |rel: &str| spec.is_excluded(rel);
        let opts = StageOptions {
            top_dir: &plan.top_dir,
            prefix: &plan.prefix,
            exclude: &exclude,
            clamp_mtime: None,
            md5: true,
        };
        let payload = payload::stage(source, &std::env::temp_dir(), &opts, None, None)?;
        (
            deps::scan(&payload)?,
            Some(spec),
            Some(plan.package.clone()),
            Some(plan.meta.arch.rpm.clone()),
        )
    } else {
        return Err(Error::input(source, "no such file or directory"));
    };
    let overrides = spec.map(|s| s.deps.clone()).unwrap_or_default();
    let foreign_arch = match &arch {
        Some(a) => foreign_arch(&report, a, &overrides)?,
        None => Vec::new(),
    };
    let mut formats = Vec::new();
    let mut unmapped = Vec::new();
    for format in Format::ALL {
        let map = specs
            .distros()
            .for_format(format, target_distro, IpkOuter::Ar)?;
        let derived = deps::derive(&report, map, format, arch.as_deref(), &overrides)?;
        unmapped.extend(derived.unmapped.iter().cloned());
        formats.push(FormatDeps {
            format,
            distro: map.map(|m| m.name.clone()),
            relations: derived.relations.by_field(format),
            unmapped: derived.unmapped,
        });
    }
    Ok(DepsReport {
        source: source.to_path_buf(),
        package,
        arch,
        files: report.files,
        foreign_arch,
        formats,
        unmapped,
    })
}

fn set_mode_0644(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: a package left 0600 by the temp file is still correct, only less handy.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
}

/// Size and lowercase hex SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; payload::COPY_BUFFER];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(sha.finalize())))
}

/// The tarball's sha256 must be the one from the signed sums file.
fn check_sha256(tarball: &Path, expected: &str, actual: &str) -> Result<()> {
    if expected.eq_ignore_ascii_case(actual) {
        return Ok(());
    }
    Err(Error::verify(
        tarball.display().to_string(),
        format!("sha256 {actual} does not match {expected} from the signed sums file"),
    ))
}

/// Which upstream releases to build: downloaded from the mirror (the newest, or
/// `version`, for `arch` or this machine's), or one tarball on disk (`from`), verified by
/// its detached signature (`signature`, else the spec's `.tar.sign` name beside it) and,
/// if there is one, a signed sums file (`sums`, else `sha256sums.asc` beside it).
#[derive(Debug, Clone, Default)]
pub struct ReleaseSelection {
    /// Package names, as the specs make them (`korg-clang-18`); exactly one with `from`.
    pub packages: Vec<String>,
    /// Exact upstream version to download (`18.1.0-rc3`); `None`: the newest.
    pub version: Option<String>,
    /// Upstream arch to download; `None`: this machine's.
    pub arch: Option<String>,
    /// A tarball on disk instead of a download.
    pub from: Option<PathBuf>,
    /// Detached signature of the `from` tarball.
    pub signature: Option<PathBuf>,
    /// Signed sums file listing the `from` tarball.
    pub sums: Option<PathBuf>,
    /// Accept a `from` tarball without a signature (its build is then unverified).
    pub allow_unverified: bool,
}

/// The builds a [`ReleaseSelection`] makes, with the mirror releases they come from.
#[derive(Debug, Clone)]
pub struct Selected {
    /// One request per package, from `template` with package, tarball and verification.
    pub requests: Vec<BuildRequest>,
    /// The release each request was picked from (same order); empty for a `from` tarball.
    pub releases: Vec<Release>,
}

/// Turn `selection` into build requests (every other field from `template`).
///
/// From the mirror: each package's releases are discovered from verified sums files and
/// one is picked; with `download` the tarballs and signatures are then fetched into the
/// cache in parallel and each request carries its [`Verification`]; without it
/// (`--dry-run`) nothing is downloaded and the requests name the upstream files.
/// From disk: names, arch and version are checked first ([`plan`]), then the signature
/// and sums file; a tarball without a signature is refused unless `allow_unverified`.
pub fn select(
    selection: &ReleaseSelection,
    specs: &SpecSet,
    sources: &Sources<'_>,
    template: &BuildRequest,
    download: bool,
) -> Result<Selected> {
    match &selection.from {
        Some(from) => Ok(Selected {
            requests: vec![local_request(selection, from, specs, sources, template)?],
            releases: Vec::new(),
        }),
        None => {
            let releases = pick_releases(selection, specs, sources)?;
            let requests = release_requests(&releases, specs, sources, template, download)?;
            Ok(Selected { requests, releases })
        }
    }
}

/// The release of each of `selection.packages` on the mirror: discovered from the
/// verified sums files, filtered to `selection.arch` (default: this machine's) and
/// picked by `selection.version` (default: the newest). Nothing is downloaded but sums.
pub fn pick_releases(
    selection: &ReleaseSelection,
    specs: &SpecSet,
    sources: &Sources<'_>,
) -> Result<Vec<Release>> {
    let mut picked: Vec<Release> = Vec::new();
    for package in &selection.packages {
        let (spec, mut known) = specs.find_package(package)?;
        let arch = match &selection.arch {
            Some(a) => a.clone(),
            None => source::host_arch(spec).ok_or_else(|| {
                Error::Usage(format!(
                    "spec {} has no build for this machine's arch; pass --arch ({})",
                    spec.name,
                    spec.arches.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?,
        };
        known.insert("arch".into(), arch.clone());
        let releases = source::discover(
            spec,
            &known,
            &sources.mirror,
            sources.fetcher,
            &sources.keys,
            sources.templates,
        )?;
        let releases: Vec<Release> = releases
            .into_iter()
            .filter(|r| &r.package == package)
            .collect();
        let release = source::pick(&releases, selection.version.as_deref()).ok_or_else(|| {
            Error::Usage(format!(
                "no release of {package}{} for arch {arch} on {} (`korgpkg list {package}` shows what there is)",
                selection
                    .version
                    .as_deref()
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default(),
                sources.mirror.base()
            ))
        })?;
        picked.push(release.clone());
    }
    Ok(picked)
}

/// Build requests for mirror releases: with `download`, fetched into the cache (keys and
/// signatures first, then the tarballs in parallel) and carrying their verification;
/// without, planned against the file names the verified sums files list.
pub fn release_requests(
    releases: &[Release],
    specs: &SpecSet,
    sources: &Sources<'_>,
    template: &BuildRequest,
    download: bool,
) -> Result<Vec<BuildRequest>> {
    if !download {
        return Ok(releases
            .iter()
            .map(|r| BuildRequest {
                package: r.package.clone(),
                tarball: PathBuf::from(&r.file_name),
                tarball_name: Some(r.file_name.clone()),
                ..template.clone()
            })
            .collect());
    }
    let fetched = sources.fetch(specs, releases)?;
    Ok(releases
        .iter()
        .zip(fetched)
        .map(|(release, (path, verification))| BuildRequest {
            package: release.package.clone(),
            tarball: path,
            tarball_name: Some(release.file_name.clone()),
            verification: Some(verification),
            ..template.clone()
        })
        .collect())
}

/// A build of the tarball `from` on disk (the one package `selection` names), verified
/// by its `.tar.sign` (and sums file, if any).
pub fn local_request(
    selection: &ReleaseSelection,
    from: &Path,
    specs: &SpecSet,
    sources: &Sources<'_>,
    template: &BuildRequest,
) -> Result<BuildRequest> {
    let [package] = selection.packages.as_slice() else {
        return Err(Error::Usage(
            "--from packages one tarball: name exactly one package".into(),
        ));
    };
    if !from.is_file() {
        return Err(Error::input(from, "no such file"));
    }
    let (spec, _) = specs.find_package(package)?;
    let file_name = from
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::input(from, "not a file name"))?;
    let mut req = template.clone();
    req.package = package.clone();
    req.tarball = from.to_path_buf();
    // Name, arch and version mistakes are reported before signature problems.
    plan(specs, sources.templates, &req)?;
    let vars = spec.match_tarball(file_name).unwrap_or_default();
    if !selection.allow_unverified || selection.signature.is_some() {
        req.verification = sources.local(
            spec,
            &vars,
            from,
            selection.signature.as_deref(),
            selection.sums.as_deref(),
        )?;
        if req.verification.is_none() && !selection.allow_unverified {
            return Err(Error::verify(
                from.display().to_string(),
                "no detached signature (.tar.sign) beside it: give --signature FILE, \
                 or --allow-unverified to package unverified bytes",
            ));
        }
    }
    Ok(req)
}

/// Build every request of `selected` in turn, stopping at the first error. A downloaded
/// tarball that fails verification is removed from the cache, so it is not reused.
pub fn build_selected(
    specs: &SpecSet,
    templates: &Templates,
    selected: &Selected,
) -> Result<Vec<BuildReport>> {
    let mut reports = Vec::new();
    for (i, req) in selected.requests.iter().enumerate() {
        match build(specs, templates, req) {
            Ok(r) => reports.push(r),
            Err(e) => {
                if matches!(e, Error::Verify { .. }) && selected.releases.get(i).is_some() {
                    forget_download(req);
                }
                return Err(e);
            }
        }
    }
    Ok(reports)
}

/// Remove a downloaded tarball from the cache after it failed verification.
pub fn forget_download(req: &BuildRequest) {
    let _ = std::fs::remove_file(&req.tarball);
}

#[cfg(test)]
mod tests {
    use super::same_except_md5;
    use crate::payload::{DataSource, Entry, EntryKind, FileData};

    fn file(path: &str, sha: u8, md5: u8) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o755,
            mtime: 1,
            kind: EntryKind::File(FileData {
                size: 3,
                sha256: [sha; 32],
                md5: [md5; 16],
                links: 2,
                inode: 1,
                source: DataSource::Streamed,
            }),
        }
    }

    fn link(path: &str, sha: u8, md5: u8) -> Entry {
        let EntryKind::File(data) = file(path, sha, md5).kind else {
            unreachable!()
        };
        Entry {
            kind: EntryKind::HardLink {
                target: "/p/a".into(),
                data,
            },
            ..file(path, sha, md5)
        }
    }

    /// The second read (no MD5) matches the first on everything else, and any other
    /// difference, a SHA-256 above all, is a mismatch.
    #[test]
    fn the_second_read_is_compared_on_everything_but_the_md5() {
        let first = [file("/p/a", 1, 7), link("/p/b", 1, 7)];
        assert!(same_except_md5(
            &[file("/p/a", 1, 0), link("/p/b", 1, 0)],
            &first
        ));
        assert!(!same_except_md5(
            &[file("/p/a", 2, 0), link("/p/b", 1, 0)],
            &first
        ));
        assert!(!same_except_md5(
            &[file("/p/a", 1, 0), link("/p/b", 2, 0)],
            &first
        ));
        assert!(!same_except_md5(
            &[file("/p/a", 1, 0), link("/p/c", 1, 0)],
            &first
        ));
        assert!(!same_except_md5(&[file("/p/a", 1, 0)], &first));
        let mut bigger = file("/p/a", 1, 0);
        if let EntryKind::File(d) = &mut bigger.kind {
            d.size = 4;
        }
        assert!(!same_except_md5(&[bigger, link("/p/b", 1, 0)], &first));
    }
}
