//! Downloads with a content-addressed cache, resume and retries.
//!
//! Large files (toolchain tarballs) stream into `<cache>/partial/<sha256>.part` through a
//! fixed buffer while their sha256 is computed, and are renamed to
//! `<cache>/sha256/<sha256>` only once the hash matches. An interrupted download keeps
//! its `.part` and resumes with a `Range` request. Small files (sums lists, signatures,
//! keys, directory listings) are read into memory under a size limit.

use std::collections::HashSet;
use std::error::Error as StdError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RANGE,
    RETRY_AFTER,
};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// Size of the streaming buffer: downloads never hold more than this in memory.
const BUF_SIZE: usize = 64 * 1024;
/// The longest `Retry-After` korgpkg honours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The error for an HTML page where a file was expected.
const HTML_MESSAGE: &str = "got an HTML page, not the file: is the mirror URL right?";

/// The content-addressed download cache: `<dir>/sha256/<hex>` for verified files,
/// `<dir>/partial/` for in-progress downloads, `<dir>/keys/` (used by others).
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache rooted at `dir` (created on first download).
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir }
    }

    /// `$XDG_CACHE_HOME/korgpkg` or `~/.cache/korgpkg`; `.korgpkg-cache` if neither is known.
    pub fn default_dir() -> PathBuf {
        dirs::cache_dir()
            .map(|d| d.join("korgpkg"))
            .unwrap_or_else(|| PathBuf::from(".korgpkg-cache"))
    }

    /// The cache's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn verified_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    fn partial_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("partial").join(format!("{sha256}.part"))
    }

    /// The cached file with this sha256 if present AND its content still hashes to it; a
    /// file whose content doesn't match is deleted and `None` returned (a cached file
    /// that fails verification is never reused).
    pub fn lookup(&self, sha256: &str) -> Result<Option<PathBuf>> {
        let sha256 = normalize_sha256(sha256, sha256)?;
        let path = self.verified_path(&sha256);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("opening cached file {}", path.display())),
        };
        let mut hasher = Sha256::new();
        hash_reader(&mut file, &mut hasher)
            .ctx(|| format!("reading cached file {}", path.display()))?;
        drop(file);
        if hex::encode(hasher.finalize()) == sha256 {
            return Ok(Some(path));
        }
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).ctx(|| format!("removing corrupt cached file {}", path.display()))
            }
            _ => Ok(None),
        }
    }
}

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Retries after the first attempt for transient failures (5xx, 408, 429, connection
    /// errors, timeouts, truncated bodies). An attempt that got further into the file
    /// than any before it does not count.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Limit for connecting and for each wait for data (not for the whole download).
    pub timeout: Duration,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Largest file [`Fetcher::fetch_small`] accepts, in bytes.
    pub max_small: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 4,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(60),
            progress: false,
            max_small: 16 * 1024 * 1024,
        }
    }
}

/// Downloads files into a [`Cache`]; shareable between threads.
pub struct Fetcher {
    cache: Cache,
    options: FetchOptions,
    client: Client,
    bars: MultiProgress,
    /// sha256s being downloaded by some thread of this process.
    in_flight: Mutex<HashSet<String>>,
    in_flight_done: Condvar,
}

/// Why one attempt failed.
enum Failure {
    /// Worth another try (after a backoff, or at least `Duration`).
    Retry(String, Option<Duration>),
    /// The `.part` was discarded; start over at once.
    Restart,
    /// Give up.
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(e)
    }
}

impl Fetcher {
    /// A fetcher with an HTTP client (rustls, user agent `korgpkg/<version>`).
    pub fn new(cache: Cache, options: FetchOptions) -> Result<Self> {
        let client = Client::builder()
            .user_agent(concat!("korgpkg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.timeout)
            .timeout(options.timeout)
            .build()
            .map_err(|e| {
                Error::network(
                    "https://",
                    format!("cannot set up the HTTP client: {}", one_line(&e)),
                )
            })?;
        let target = if options.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Ok(Fetcher {
            cache,
            options,
            client,
            bars: MultiProgress::with_draw_target(target),
            in_flight: Mutex::new(HashSet::new()),
            in_flight_done: Condvar::new(),
        })
    }

    /// The cache this fetcher downloads into.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A small file (sums file, signature, key) into memory, at most `max_small` bytes,
    /// with retries. An HTML page is an error. `file://` URLs read the file.
    pub fn fetch_small(&self, url: &str) -> Result<Vec<u8>> {
        self.small(url, false, false)
    }

    /// Like [`Fetcher::fetch_small`], but HTML is allowed (directory listings).
    pub fn fetch_small_index(&self, url: &str) -> Result<Vec<u8>> {
        self.small(url, true, false)
    }

    /// Like [`Fetcher::fetch_small`] (or, with `allow_html`, `fetch_small_index`), but
    /// revalidated: the last response is kept under `<cache>/http/` with its `ETag` and
    /// `Last-Modified`, and the request carries `If-None-Match`/`If-Modified-Since`; a
    /// `304 Not Modified` returns the kept copy. Callers verify the bytes as they would
    /// fresh ones (a sums file's signature is checked either way).
    pub fn fetch_small_revalidated(&self, url: &str, allow_html: bool) -> Result<Vec<u8>> {
        self.small(url, allow_html, true)
    }

    /// A large file into the cache, verified against `sha256` (hex) while it streams in;
    /// returns `<cache>/sha256/<sha256>`. A valid cached copy is returned without network
    /// access. Interrupted downloads resume from `<cache>/partial/<sha256>.part`; a hash
    /// mismatch deletes the `.part` and is an [`Error::Verify`].
    pub fn fetch_verified(&self, url: &str, sha256: &str) -> Result<PathBuf> {
        let sha256 = normalize_sha256(url, sha256)?;
        let _claim = self.claim(&sha256);
        if let Some(path) = self.cache.lookup(&sha256)? {
            return Ok(path);
        }
        let part = self.cache.partial_path(&sha256);
        let dest = self.cache.verified_path(&sha256);
        for dir in [part.parent(), dest.parent()].into_iter().flatten() {
            fs::create_dir_all(dir)
                .ctx(|| format!("creating cache directory {}", dir.display()))?;
        }

        let bar = self.bars.add(ProgressBar::no_length());
        bar.set_style(bar_style(false));
        bar.set_message(file_name(url).to_string());
        let got = if is_file_url(url) {
            self.copy_local(url, &part, &bar)
        } else {
            self.retrying(
                url,
                || part_len(&part),
                || self.attempt(url, &sha256, &part, &bar),
            )
        };
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        if got != sha256 {
            bar.abandon();
            remove_if_exists(&part)?;
            return Err(Error::verify(
                url,
                format!("sha256 mismatch: expected {sha256}, got {got}"),
            ));
        }
        fs::rename(&part, &dest).ctx(|| {
            format!(
                "moving {} into the cache as {}",
                part.display(),
                dest.display()
            )
        })?;
        bar.finish();
        Ok(dest)
    }

    /// Several [`Fetcher::fetch_verified`] downloads of `(url, sha256)` in parallel (up to
    /// four at once); results are in input order.
    pub fn fetch_many(&self, items: &[(String, String)]) -> Vec<Result<PathBuf>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<PathBuf>>>> =
            Mutex::new(items.iter().map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..items.len().min(4) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((url, sha256)) = items.get(i) else {
                        break;
                    };
                    let r = self.fetch_verified(url, sha256);
                    lock(&results)[i] = Some(r);
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        results
            .into_iter()
            .zip(items)
            .map(|(r, (url, _))| {
                r.unwrap_or_else(|| Err(Error::network(url.as_str(), "download thread failed")))
            })
            .collect()
    }

    /// Wait until no other thread downloads `sha256`, then mark it as ours until the
    /// returned guard drops.
    fn claim(&self, sha256: &str) -> Claim<'_> {
        let mut set = lock(&self.in_flight);
        while set.contains(sha256) {
            set = self
                .in_flight_done
                .wait(set)
                .unwrap_or_else(|e| e.into_inner());
        }
        set.insert(sha256.to_string());
        Claim {
            fetcher: self,
            sha256: sha256.to_string(),
        }
    }

    /// Run `attempt` until it succeeds, fails fatally, or has failed `retries + 1` times
    /// without getting further (`position` tells how far a download got).
    fn retrying<T>(
        &self,
        url: &str,
        position: impl Fn() -> u64,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut attempts = 0u32;
        let mut failures = 0u32;
        let mut furthest = position();
        loop {
            attempts += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Restart) => {}
                Err(Failure::Retry(message, at_least)) => {
                    let now = position();
                    if now > furthest {
                        furthest = now;
                        failures = 0;
                    }
                    if failures >= self.options.retries {
                        let tries = if attempts == 1 { "attempt" } else { "attempts" };
                        return Err(Error::network(
                            url,
                            format!("{message} after {attempts} {tries}"),
                        ));
                    }
                    let backoff = self
                        .options
                        .backoff
                        .saturating_mul(1u32 << failures.min(16));
                    std::thread::sleep(backoff.max(at_least.unwrap_or_default()));
                    failures += 1;
                }
            }
        }
    }

    /// One HTTP request continuing `part`; returns the sha256 of the complete file.
    fn attempt(
        &self,
        url: &str,
        sha256: &str,
        part: &Path,
        bar: &ProgressBar,
    ) -> std::result::Result<String, Failure> {
        let offset = part_len(part);
        let mut request = self.client.get(url);
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let mut response = request.send().map_err(|e| request_failure(url, &e))?;
        let status = response.status();
        let resume = match status {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                if content_range_start(&response) != Some(offset) {
                    remove_if_exists(part)?;
                    return Err(Failure::Restart);
                }
                true
            }
            StatusCode::OK => false,
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                // Perhaps the .part is already complete (interrupted before the rename).
                if content_range_total(&response) == Some(offset) {
                    let got = hash_file(part)?;
                    if got == sha256 {
                        return Ok(got);
                    }
                }
                remove_if_exists(part)?;
                return Err(Failure::Restart);
            }
            s => return Err(status_failure(url, s, &response)),
        };
        if is_html_type(&response) {
            return Err(Error::network(url, HTML_MESSAGE).into());
        }

        let mut hasher = Sha256::new();
        let mut file = if resume {
            let mut existing =
                File::open(part).ctx(|| format!("reading partial download {}", part.display()))?;
            hash_reader(&mut existing, &mut hasher)
                .ctx(|| format!("reading partial download {}", part.display()))?;
            OpenOptions::new()
                .append(true)
                .open(part)
                .ctx(|| format!("opening partial download {}", part.display()))?
        } else {
            File::create(part).ctx(|| format!("creating partial download {}", part.display()))?
        };
        let start = if resume { offset } else { 0 };
        let expected = response.content_length();
        if let Some(len) = expected {
            bar.set_length(start + len);
            bar.set_style(bar_style(true));
        }
        bar.set_position(start);
        bar.reset_eta();

        let mut buf = vec![0u8; BUF_SIZE];
        let mut received = 0u64;
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure::Retry(
                        format!(
                            "download interrupted at byte {} ({})",
                            start + received,
                            one_line(&e)
                        ),
                        None,
                    ))
                }
            };
            file.write_all(&buf[..n])
                .ctx(|| format!("writing partial download {}", part.display()))?;
            hasher.update(&buf[..n]);
            received += n as u64;
            bar.inc(n as u64);
        }
        if let Some(len) = expected {
            if received < len {
                return Err(Failure::Retry(
                    format!(
                        "connection closed after {} of {} bytes",
                        start + received,
                        start + len
                    ),
                    None,
                ));
            }
        }
        file.sync_all()
            .ctx(|| format!("writing partial download {}", part.display()))?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Copy a `file://` URL into `part`, returning its sha256.
    fn copy_local(&self, url: &str, part: &Path, bar: &ProgressBar) -> Result<String> {
        let path = file_url_path(url)?;
        let mut src = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        if let Ok(meta) = src.metadata() {
            bar.set_length(meta.len());
            bar.set_style(bar_style(true));
        }
        let mut out =
            File::create(part).ctx(|| format!("creating partial download {}", part.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
            };
            out.write_all(&buf[..n])
                .ctx(|| format!("writing partial download {}", part.display()))?;
            hasher.update(&buf[..n]);
            bar.inc(n as u64);
        }
        out.sync_all()
            .ctx(|| format!("writing partial download {}", part.display()))?;
        Ok(hex::encode(hasher.finalize()))
    }

    fn small(&self, url: &str, allow_html: bool, revalidate: bool) -> Result<Vec<u8>> {
        let max = self.options.max_small;
        let too_big = || {
            Error::network(
                url,
                format!("larger than the {} limit for small files", HumanBytes(max)),
            )
        };
        let body = if is_file_url(url) {
            let path = file_url_path(url)?;
            let file = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
            let mut body = Vec::new();
            file.take(max.saturating_add(1))
                .read_to_end(&mut body)
                .ctx(|| format!("reading {}", path.display()))?;
            if body.len() as u64 > max {
                return Err(too_big());
            }
            body
        } else {
            let kept = if revalidate {
                Revalidation::load(&self.cache, url, max)
            } else {
                None
            };
            let mut validators = None;
            let body = self.retrying(
                url,
                || 0,
                || {
                    let mut request = self.client.get(url);
                    if let Some(k) = &kept {
                        if let Some(etag) = &k.meta.etag {
                            request = request.header(IF_NONE_MATCH, etag.as_str());
                        }
                        if let Some(lm) = &k.meta.last_modified {
                            request = request.header(IF_MODIFIED_SINCE, lm.as_str());
                        }
                    }
                    let response = request.send().map_err(|e| request_failure(url, &e))?;
                    let status = response.status();
                    if status == StatusCode::NOT_MODIFIED {
                        if let Some(k) = &kept {
                            return Ok(k.body.clone());
                        }
                    }
                    validators = Some(RevalidationMeta::of(url, &response));
                    if !status.is_success() {
                        return Err(status_failure(url, status, &response));
                    }
                    let expected = response.content_length();
                    if expected.is_some_and(|len| len > max) {
                        return Err(too_big().into());
                    }
                    if !allow_html && is_html_type(&response) {
                        return Err(Error::network(url, HTML_MESSAGE).into());
                    }
                    let mut body = Vec::new();
                    if let Err(e) = response.take(max.saturating_add(1)).read_to_end(&mut body) {
                        return Err(Failure::Retry(
                            format!("download interrupted ({})", one_line(&e)),
                            None,
                        ));
                    }
                    if body.len() as u64 > max {
                        return Err(too_big().into());
                    }
                    if let Some(len) = expected {
                        if (body.len() as u64) < len {
                            return Err(Failure::Retry(
                                format!("connection closed after {} of {len} bytes", body.len()),
                                None,
                            ));
                        }
                    }
                    Ok(body)
                },
            )?;
            if revalidate {
                if let Some(meta) = validators {
                    if !allow_html && looks_like_html(&body) {
                        return Err(Error::network(url, HTML_MESSAGE));
                    }
                    // Best effort: a cache that cannot be written only costs a download.
                    let _ = Revalidation::store(&self.cache, &meta, &body);
                }
            }
            body
        };
        if !allow_html && looks_like_html(&body) {
            return Err(Error::network(url, HTML_MESSAGE));
        }
        Ok(body)
    }
}

/// The validators of a kept response (`<cache>/http/<sha256 of URL>.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RevalidationMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl RevalidationMeta {
    fn of(url: &str, response: &Response) -> Self {
        // Only values that can be sent back as header values are kept, bounded in size.
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 256)
                .map(str::to_string)
        };
        RevalidationMeta {
            url: url.to_string(),
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        }
    }
}

/// A kept response: its validators and body (`<cache>/http/<sha256 of URL>.body`).
struct Revalidation {
    meta: RevalidationMeta,
    body: Vec<u8>,
}

impl Revalidation {
    fn paths(cache: &Cache, url: &str) -> (PathBuf, PathBuf) {
        let key = hex::encode(Sha256::digest(url.as_bytes()));
        let dir = cache.dir().join("http");
        (
            dir.join(format!("{key}.json")),
            dir.join(format!("{key}.body")),
        )
    }

    /// The kept response for `url`, if it is complete, names `url`, has a validator and
    /// fits in `max` bytes.
    fn load(cache: &Cache, url: &str, max: u64) -> Option<Revalidation> {
        let (meta_path, body_path) = Self::paths(cache, url);
        let mut meta_bytes = Vec::new();
        File::open(&meta_path)
            .ok()?
            .take(4096)
            .read_to_end(&mut meta_bytes)
            .ok()?;
        let meta: RevalidationMeta = serde_json::from_slice(&meta_bytes).ok()?;
        if meta.url != url || (meta.etag.is_none() && meta.last_modified.is_none()) {
            return None;
        }
        let mut body = Vec::new();
        File::open(&body_path)
            .ok()?
            .take(max.saturating_add(1))
            .read_to_end(&mut body)
            .ok()?;
        if body.len() as u64 > max {
            return None;
        }
        Some(Revalidation { meta, body })
    }

    /// Keep `body` with its validators (body first, so the validators never describe
    /// a body that is not there). A response without validators is not kept.
    fn store(cache: &Cache, meta: &RevalidationMeta, body: &[u8]) -> Result<()> {
        let (meta_path, body_path) = Self::paths(cache, &meta.url);
        let _ = fs::remove_file(&meta_path);
        if meta.etag.is_none() && meta.last_modified.is_none() {
            return Ok(());
        }
        let json = serde_json::to_vec(meta)
            .map_err(|e| Error::Usage(format!("cannot encode cache metadata: {e}")))?;
        write_file_atomic(&body_path, body)?;
        write_file_atomic(&meta_path, &json)
    }
}

/// Write `bytes` to `path` via a temp file in the same directory and a rename.
fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).ctx(|| format!("writing {}", path.display()))?;
    tmp.write_all(bytes)
        .ctx(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Marks a sha256 as being downloaded by this thread.
struct Claim<'a> {
    fetcher: &'a Fetcher,
    sha256: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.fetcher.in_flight).remove(&self.sha256);
        self.fetcher.in_flight_done.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lowercase `sha256` after checking it is 64 hex digits (it becomes a file name).
fn normalize_sha256(origin: &str, sha256: &str) -> Result<String> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(Error::verify(
            origin,
            format!("expected sha256 {sha256:?} is not 64 hex digits"),
        ))
    }
}

fn hash_reader(r: &mut impl Read, hasher: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn hash_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).ctx(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    hash_reader(&mut f, &mut hasher).ctx(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

fn part_len(part: &Path) -> u64 {
    fs::metadata(part).map(|m| m.len()).unwrap_or(0)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn is_file_url(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("file://"))
}

fn file_url_path(url: &str) -> Result<PathBuf> {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .ok_or_else(|| Error::network(url, "not a usable file:// URL"))
}

/// The last path segment of a URL, for progress messages.
fn file_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

fn bar_style(known_length: bool) -> ProgressStyle {
    let template = if known_length {
        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{msg:30!} {spinner} {bytes} {bytes_per_sec}"
    };
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A failed `send()`: malformed URLs and redirect loops are fatal, the rest transient.
fn request_failure(url: &str, e: &reqwest::Error) -> Failure {
    let message = one_line(e);
    if e.is_builder() || e.is_redirect() {
        Failure::Fatal(Error::network(url, message))
    } else {
        Failure::Retry(message, None)
    }
}

/// A non-success status: 5xx, 408 and 429 are transient, anything else fatal.
fn status_failure(url: &str, status: StatusCode, response: &Response) -> Failure {
    let message = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string();
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        Failure::Retry(message, retry_after)
    } else {
        Failure::Fatal(Error::network(url, message))
    }
}

/// `start` of a `Content-Range: bytes start-end/total` header.
fn content_range_start(response: &Response) -> Option<u64> {
    let v = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// `total` of a `Content-Range: bytes */total` (or `start-end/total`) header.
fn content_range_total(response: &Response) -> Option<u64> {
    let v = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    v.rsplit('/').next()?.trim().parse().ok()
}

fn is_html_type(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

/// Whether a body starts like an HTML document.
fn looks_like_html(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head = &body[start..body.len().min(start + 14)];
    let head = head.to_ascii_lowercase();
    head.starts_with(b"<!doctype html") || head.starts_with(b"<html")
}

/// An error and its causes on one line, with well-known socket errors named plainly.
pub(crate) fn one_line(e: &(dyn StdError + 'static)) -> String {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                io::ErrorKind::ConnectionReset => return "connection reset".into(),
                io::ErrorKind::TimedOut => return "timed out".into(),
                _ => {}
            }
        }
        if let Some(re) = err.downcast_ref::<reqwest::Error>() {
            if re.is_timeout() {
                return "timed out".into();
            }
        }
        last = err.to_string();
        current = err.source();
    }
    last.split_whitespace().collect::<Vec<_>>().join(" ")
}
