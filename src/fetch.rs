//! Downloads with a content-addressed cache, resume and retries.
//!
//! Large files (toolchain tarballs) stream into `<cache>/partial/<sha256>.part` through a
//! fixed buffer while their sha256 is computed, and are renamed to
//! `<cache>/sha256/<sha256>` only once the hash matches. An interrupted download keeps
//! its `.part` and resumes with a `Range` request. Small files (sums lists, signatures,
//! keys, directory listings) are read into memory under a size limit.
//!
//! Every download runs under limits, so a misbehaving mirror cannot hold korgpkg or fill
//! the disk: a deadline per file (retries included), a low-speed abort (fewer than N
//! bytes/s over M seconds), and a maximum size, checked against `Content-Length` before
//! the body is read and against the bytes as they arrive. Processes sharing a cache
//! take a `flock` per file, so a second one waits for the first and reuses its result.

use std::collections::HashSet;
use std::error::Error as StdError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

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
/// `<dir>/partial/` for in-progress downloads, `<dir>/locks/<hex>` (one process
/// downloads a file at a time), `<dir>/keys/` (used by others).
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

    /// An exclusive lock on downloading `sha256` into this cache, held until dropped
    /// (`flock` on `<dir>/locks/<sha256>`, so the kernel releases it when a process
    /// dies). Waits, saying so on `bar`, while another process holds it.
    fn lock(&self, sha256: &str, bar: &ProgressBar) -> Result<File> {
        let dir = self.dir.join("locks");
        fs::create_dir_all(&dir).ctx(|| format!("creating cache directory {}", dir.display()))?;
        let path = dir.join(sha256);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).ctx(|| format!("locking {}", path.display()))
            }
        }
        let message = bar.message();
        bar.set_message(format!("{message} (another korgpkg is downloading it)"));
        file.lock().ctx(|| format!("locking {}", path.display()))?;
        bar.set_message(message);
        Ok(file)
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
    /// Largest file [`Fetcher::fetch_verified`] downloads, in bytes; a mirror announcing
    /// more (`Content-Length`, `Content-Range`) is refused before the body is read.
    pub max_size: u64,
    /// The longest one file may take, retries and backoff included (checked as data
    /// arrives; a silent connection ends after `timeout`); zero: no limit.
    pub deadline: Duration,
    /// A download averaging fewer than this many bytes per second over `low_speed_time`
    /// is abandoned (its `.part` is kept for the next run); 0 turns the check off.
    pub low_speed_limit: u64,
    /// The window over which `low_speed_limit` is measured.
    pub low_speed_time: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 4,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(60),
            progress: false,
            max_small: 16 * 1024 * 1024,
            max_size: DEFAULT_MAX_SIZE,
            deadline: Duration::from_secs(DEFAULT_DEADLINE_SECS),
            low_speed_limit: DEFAULT_LOW_SPEED_LIMIT,
            low_speed_time: Duration::from_secs(DEFAULT_LOW_SPEED_TIME_SECS),
        }
    }
}

/// Default [`FetchOptions::max_size`]: 4 GiB (kernel.org's largest toolchain is ~1 GB).
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;
/// Default [`FetchOptions::deadline`]: two hours per file.
pub const DEFAULT_DEADLINE_SECS: u64 = 2 * 60 * 60;
/// Default [`FetchOptions::low_speed_limit`]: 1 KiB/s ...
pub const DEFAULT_LOW_SPEED_LIMIT: u64 = 1024;
/// ... over [`FetchOptions::low_speed_time`]: one minute.
pub const DEFAULT_LOW_SPEED_TIME_SECS: u64 = 60;

/// Download limits as the config file and the command line give them; `None` keeps
/// what is already set.
#[derive(Debug, Default, Clone, Copy)]
pub struct FetchLimits {
    /// [`FetchOptions::deadline`] in seconds.
    pub download_timeout: Option<u64>,
    /// [`FetchOptions::max_size`].
    pub download_max_size: Option<u64>,
    /// [`FetchOptions::low_speed_limit`].
    pub low_speed_limit: Option<u64>,
    /// [`FetchOptions::low_speed_time`] in seconds.
    pub low_speed_time: Option<u64>,
}

impl FetchLimits {
    /// Set the limits that are given on `options`.
    pub fn apply(&self, options: &mut FetchOptions) {
        if let Some(s) = self.download_timeout {
            options.deadline = Duration::from_secs(s);
        }
        if let Some(n) = self.download_max_size {
            options.max_size = n;
        }
        if let Some(n) = self.low_speed_limit {
            options.low_speed_limit = n;
        }
        if let Some(s) = self.low_speed_time {
            options.low_speed_time = Duration::from_secs(s);
        }
    }
}

/// Parse a byte size: a number with an optional binary unit (`K`, `M`, `G`, `T`, with
/// or without `iB`/`B`, any case): `4G`, `512MiB`, `1048576`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 4G, 512MiB or 1048576)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?}: unknown unit (use K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
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

/// When a file must be complete (`None`: no limit).
struct Budget {
    deadline: Option<Instant>,
}

impl Budget {
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn left(&self) -> Duration {
        self.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }
}

/// Why one attempt failed.
enum Failure {
    /// Worth another try (after a backoff, or at least `Duration`).
    Retry(String, Option<Duration>),
    /// The `.part` was discarded; start over at once.
    Restart,
    /// The file is larger than [`FetchOptions::max_size`] (or `max_small`).
    TooLarge,
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
        // Another process sharing the cache may be downloading the same file: wait for
        // it, then use what it verified.
        let _lock = self.cache.lock(&sha256, &bar)?;
        if let Some(path) = self.cache.lookup(&sha256)? {
            bar.finish_and_clear();
            return Ok(path);
        }
        let budget = self.budget();
        let got = if is_file_url(url) {
            self.copy_local(url, &part, &bar)
        } else {
            self.retrying(
                url,
                &budget,
                || part_len(&part),
                || self.attempt(url, &sha256, &part, &bar, &budget),
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

    fn budget(&self) -> Budget {
        let deadline = self.options.deadline;
        Budget {
            deadline: (!deadline.is_zero())
                .then(|| Instant::now().checked_add(deadline))
                .flatten(),
        }
    }

    /// The error for a file that took longer than the deadline.
    fn too_slow(&self, url: &str) -> Error {
        Error::network(
            url,
            format!(
                "not complete after {} s, the download time limit (--download-timeout)",
                self.options.deadline.as_secs()
            ),
        )
    }

    /// Pass `body` to `sink` through a fixed buffer, `start` bytes into the file, under
    /// the budget: the deadline, the size limit `max` and the low-speed limit.
    fn read_body(
        &self,
        url: &str,
        body: &mut Response,
        start: u64,
        max: u64,
        budget: &Budget,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> std::result::Result<u64, Failure> {
        let mut buf = vec![0u8; BUF_SIZE];
        let mut received = 0u64;
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => return Ok(received),
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
            if start + received + n as u64 > max {
                return Err(Failure::TooLarge);
            }
            sink(&buf[..n])?;
            received += n as u64;
            if budget.expired() {
                return Err(Failure::Fatal(self.too_slow(url)));
            }
            let now = Instant::now();
            window_bytes += n as u64;
            let window = now.duration_since(window_start);
            let limit = self.options.low_speed_limit;
            if limit > 0 && window >= self.options.low_speed_time {
                let wanted = (limit as f64 * window.as_secs_f64()) as u64;
                if window_bytes < wanted {
                    return Err(Failure::Fatal(Error::network(
                        url,
                        format!(
                            "slower than {limit} bytes/s for {} s ({window_bytes} bytes in {:.1} s; --low-speed-limit, --low-speed-time), stopped at byte {}",
                            self.options.low_speed_time.as_secs(),
                            window.as_secs_f64(),
                            start + received
                        ),
                    )));
                }
                window_start = now;
                window_bytes = 0;
            }
        }
    }

    /// Run `attempt` until it succeeds, fails fatally, or has failed `retries + 1` times
    /// without getting further (`position` tells how far a download got); never past
    /// the budget's deadline.
    fn retrying<T>(
        &self,
        url: &str,
        budget: &Budget,
        position: impl Fn() -> u64,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut attempts = 0u32;
        let mut failures = 0u32;
        let mut furthest = position();
        loop {
            if budget.expired() {
                return Err(self.too_slow(url));
            }
            attempts += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::TooLarge) => {
                    return Err(Error::network(
                        url,
                        format!(
                            "larger than the {} download limit (--download-max-size)",
                            HumanBytes(self.options.max_size)
                        ),
                    ))
                }
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
                        .saturating_mul(1u32 << failures.min(16))
                        .max(at_least.unwrap_or_default());
                    std::thread::sleep(backoff.min(budget.left()));
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
        budget: &Budget,
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
        let start = if resume { offset } else { 0 };
        let expected = response.content_length();
        if expected.is_some_and(|len| start.saturating_add(len) > self.options.max_size) {
            remove_if_exists(part)?;
            return Err(Failure::TooLarge);
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
        if let Some(len) = expected {
            bar.set_length(start + len);
            bar.set_style(bar_style(true));
        }
        bar.set_position(start);
        bar.reset_eta();

        let received = self.read_body(
            url,
            &mut response,
            start,
            self.options.max_size,
            budget,
            &mut |chunk| {
                file.write_all(chunk)
                    .ctx(|| format!("writing partial download {}", part.display()))?;
                hasher.update(chunk);
                bar.inc(chunk.len() as u64);
                Ok(())
            },
        );
        let received = match received {
            Ok(n) => n,
            Err(Failure::TooLarge) => {
                // An endless or oversized body is no use to a later run either.
                drop(file);
                remove_if_exists(part)?;
                return Err(Failure::TooLarge);
            }
            Err(e) => return Err(e),
        };
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
            let budget = self.budget();
            let kept = if revalidate {
                Revalidation::load(&self.cache, url, max)
            } else {
                None
            };
            let mut validators = None;
            let body = self.retrying(
                url,
                &budget,
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
                    let mut response = request.send().map_err(|e| request_failure(url, &e))?;
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
                    let read = self.read_body(url, &mut response, 0, max, &budget, &mut |c| {
                        body.extend_from_slice(c);
                        Ok(())
                    });
                    match read {
                        Ok(_) => {}
                        Err(Failure::TooLarge) => return Err(too_big().into()),
                        Err(e) => return Err(e),
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
