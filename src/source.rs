//! The source stage: which releases upstream offers and where their bytes come from.
//!
//! Discovery reads only **verified** checksum lists: `sha256sums.asc` of each spec
//! directory is fetched from the mirror and its signature checked against the spec's
//! pinned autosigner fingerprint before any line of it is believed. Directory templates
//! with placeholders (`crosstool/files/bin/{{arch}}/{{version}}`) are expanded by listing
//! the mirror's directory index (HTTP autoindex or a local directory for `file://`).

use regex::Regex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fetch::{Cache, FetchOptions, Fetcher};
use crate::spec::{Spec, Vars};
use crate::templates::Templates;
use crate::verify::{self, Keyring, PinnedKey, SumsFile};
use crate::version::UpstreamVersion;

/// kernel.org's mirror of `pub/tools`.
pub const DEFAULT_MIRROR: &str = "https://mirrors.edge.kernel.org/pub/tools";
/// kernel.org's pgpkeys repository, where `<LONG-KEY-ID>.asc` files hold developer keys.
pub const DEFAULT_KEYS_URL: &str =
    "https://git.kernel.org/pub/scm/docs/kernel/pgpkeys.git/plain/keys";

/// A mirror base URL (`https://…/pub/tools` or `file:///srv/mirror/pub/tools`).
#[derive(Debug, Clone)]
pub struct Mirror {
    base: String,
}

impl Mirror {
    /// Validate and normalize a base URL.
    pub fn new(base: &str) -> Result<Self> {
        let base = base.trim_end_matches('/');
        let ok = (base.starts_with("https://")
            || base.starts_with("http://")
            || base.starts_with("file:///"))
            && !base.contains(char::is_whitespace);
        if !ok {
            return Err(Error::Usage(format!(
                "mirror {base:?} must be an http://, https:// or file:/// URL"
            )));
        }
        Ok(Mirror {
            base: base.to_string(),
        })
    }

    /// The URL of `rel` (a path below the base).
    pub fn url(&self, rel: &str) -> String {
        format!("{}/{}", self.base, rel.trim_start_matches('/'))
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// One release upstream offers, as listed by a verified sums file.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub spec: String,
    pub package: String,
    /// Upstream version (`18.1.0-rc3`).
    pub version: String,
    /// Upstream arch (`x86_64`, `arm64`).
    pub arch: String,
    pub file_name: String,
    pub url: String,
    pub signature_url: String,
    /// SHA-256 from the verified sums file.
    pub sha256: String,
    /// Primary fingerprint of the key that signed the sums file.
    pub sums_signer: String,
    /// All variables (`version`, `arch`, `ext`, `target`, `major`).
    #[serde(skip)]
    pub vars: Vars,
}

impl Release {
    fn sort_key(&self) -> (UpstreamVersion, String, String, u8) {
        // Versions come from names that matched the spec's version regex, so they parse.
        let v = UpstreamVersion::parse(&self.version).unwrap_or_else(|_| UpstreamVersion::zero());
        // Prefer .xz over other compressions of the same release.
        let ext_rank = u8::from(self.file_name.ends_with(".xz"));
        (v, self.package.clone(), self.arch.clone(), ext_rank)
    }
}

/// Where pinned keys come from: `--keyring` files first, then kernel.org's pgpkeys
/// repository (cached under the cache directory by fingerprint).
pub struct KeySource<'a> {
    keyring: Keyring,
    keys_url: Option<String>,
    fetcher: &'a Fetcher,
}

impl<'a> KeySource<'a> {
    /// `keyring` from `--keyring` files; `keys_url` = `None` forbids fetching keys.
    pub fn new(keyring: Keyring, keys_url: Option<String>, fetcher: &'a Fetcher) -> Self {
        KeySource {
            keyring,
            keys_url,
            fetcher,
        }
    }

    /// The validated key with this primary fingerprint.
    pub fn pinned(&self, fingerprint: &str) -> Result<PinnedKey> {
        let fpr = fingerprint.to_ascii_uppercase();
        if self.keyring.contains(&fpr) {
            // Present in a --keyring: that key decides (an expired or revoked key fails).
            return self.keyring.pinned(&fpr);
        }
        let cached = self
            .fetcher
            .cache()
            .dir()
            .join("keys")
            .join(format!("{fpr}.asc"));
        if cached.is_file() {
            let ring = Keyring::from_file(&cached)?;
            return ring.pinned(&fpr);
        }
        let Some(base) = &self.keys_url else {
            return Err(Error::verify(
                fpr.clone(),
                "key not in the given --keyring and key fetching is off",
            ));
        };
        let url = format!(
            "{}/{}.asc",
            base.trim_end_matches('/'),
            &fpr[fpr.len().saturating_sub(16)..]
        );
        let bytes = self.fetcher.fetch_small(&url)?;
        let ring = Keyring::from_bytes(&bytes, &url)?;
        // Only a key whose primary fingerprint matches the pin is accepted.
        let key = ring.pinned(&fpr)?;
        write_atomic(&cached, &bytes)?;
        Ok(key)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).ctx(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).ctx(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// List the releases of `spec` on `mirror` whose variables agree with `known`
/// (e.g. `major=18`, `arch=x86_64`), newest last.
pub fn discover(
    spec: &Spec,
    known: &Vars,
    mirror: &Mirror,
    fetcher: &Fetcher,
    keys: &KeySource<'_>,
    templates: &Templates,
) -> Result<Vec<Release>> {
    let autosigner = keys.pinned(&spec.upstream.sums_signer)?;
    let mut releases = Vec::new();
    for (dir, dir_vars) in expand_directory(spec, known, mirror, fetcher)? {
        let sums_name = spec.upstream_name("sums", &dir_vars, templates)?;
        let sums_url = mirror.url(&format!("{dir}/{sums_name}"));
        // Revalidated (ETag/If-Modified-Since): an unchanged sums file costs a 304; the
        // kept copy is verified exactly like a fresh one.
        let text = fetcher.fetch_small_revalidated(&sums_url, false)?;
        let sums: SumsFile = verify::verify_sums(&text, &autosigner, &sums_url)?;
        for name in sums.names() {
            let Some(vars) = spec.match_tarball(name) else {
                continue;
            };
            if !agrees(&vars, &dir_vars) || !agrees(&vars, known) {
                continue;
            }
            let Some(sha256) = sums.get(name) else {
                continue;
            };
            let package = spec.package_name(&vars, templates)?;
            let signature = spec.upstream_name("signature", &vars, templates)?;
            releases.push(Release {
                spec: spec.name.clone(),
                package,
                version: vars.get("version").cloned().unwrap_or_default(),
                arch: vars.get("arch").cloned().unwrap_or_default(),
                file_name: name.to_string(),
                url: mirror.url(&format!("{dir}/{name}")),
                signature_url: mirror.url(&format!("{dir}/{signature}")),
                sha256: sha256.to_string(),
                sums_signer: sums.signer().to_string(),
                vars,
            });
        }
    }
    releases.sort_by_key(|r| r.sort_key());
    Ok(releases)
}

/// Whether every variable present in both maps has the same value.
fn agrees(a: &Vars, b: &Vars) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

/// Expand `upstream.directory` into concrete directories with the variables they fix.
fn expand_directory(
    spec: &Spec,
    known: &Vars,
    mirror: &Mirror,
    fetcher: &Fetcher,
) -> Result<Vec<(String, Vars)>> {
    let mut partial: Vec<(String, Vars)> = vec![(String::new(), Vars::new())];
    for segment in spec.upstream.directory.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for (dir, vars) in partial {
            let join = |name: &str| {
                if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                }
            };
            if !segment.contains("{{") {
                next.push((join(segment), vars));
                continue;
            }
            for name in list_directory(mirror, &dir, fetcher)? {
                let Some(mut seg_vars) = spec.match_segment(segment, &name) else {
                    continue;
                };
                if let Some(v) = seg_vars.get("version").cloned() {
                    match UpstreamVersion::parse(&v) {
                        Ok(parsed) => {
                            seg_vars.insert("major".into(), parsed.major().to_string());
                        }
                        Err(_) => continue,
                    }
                }
                if seg_vars
                    .get("arch")
                    .is_some_and(|a| !spec.arches.contains_key(a))
                {
                    continue;
                }
                if !agrees(&seg_vars, known) || !agrees(&seg_vars, &vars) {
                    continue;
                }
                let mut all = vars.clone();
                all.extend(seg_vars);
                next.push((join(&name), all));
            }
        }
        partial = next;
    }
    Ok(partial)
}

/// Names in a mirror directory: an HTTP autoindex page's links, or a local directory.
fn list_directory(mirror: &Mirror, dir: &str, fetcher: &Fetcher) -> Result<Vec<String>> {
    let url = mirror.url(&format!("{dir}/"));
    if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(path);
        let mut names = Vec::new();
        let rd = std::fs::read_dir(&path)
            .ctx(|| format!("listing mirror directory {}", path.display()))?;
        for e in rd {
            let e = e.ctx(|| format!("listing mirror directory {}", path.display()))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        return Ok(names);
    }
    let page = fetcher.fetch_small_revalidated(&url, true)?;
    let text = String::from_utf8_lossy(&page);
    let href = Regex::new(r#"href="([^"?#/]+)/?""#).map_err(|e| Error::Usage(e.to_string()))?;
    let mut names: Vec<String> = href
        .captures_iter(&text)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
        .filter(|n| n != ".." && n != ".")
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The spec arch that matches the machine korgpkg runs on (by rpm arch name).
pub fn host_arch(spec: &Spec) -> Option<String> {
    spec.arches
        .iter()
        .find(|(_, a)| a.rpm == std::env::consts::ARCH)
        .map(|(k, _)| k.clone())
}

/// Pick the release to build: the exact `version` if given, else the newest (release
/// candidates sort before their release), preferring `.xz`.
pub fn pick<'r>(releases: &'r [Release], version: Option<&str>) -> Option<&'r Release> {
    releases
        .iter()
        .rev()
        .find(|r| version.is_none_or(|v| r.version == v))
}

/// Group releases by package for listings: package → versions (ascending) → arches.
pub fn by_package(releases: &[Release]) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for r in releases {
        let arches = out
            .entry(r.package.clone())
            .or_default()
            .entry(r.version.clone())
            .or_default();
        if !arches.contains(&r.arch) {
            arches.push(r.arch.clone());
        }
    }
    out
}

/// The network side of a run: the mirror, the download cache and the keys that pinned
/// fingerprints are looked up in (keyrings first, then `keys_url`).
pub struct Network {
    pub mirror: Mirror,
    pub fetcher: Fetcher,
    pub keyring: Keyring,
    /// Where missing pinned keys are fetched from (`<keys_url>/<KEYID>.asc`); `None`:
    /// never.
    pub keys_url: Option<String>,
}

/// What a [`Network`] is made from; `None` fields take the defaults.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// Mirror base URL [default: [`DEFAULT_MIRROR`]].
    pub mirror: Option<String>,
    /// Download cache directory [default: [`Cache::default_dir`]].
    pub cache_dir: Option<PathBuf>,
    /// Keyring files (armored or binary) with the pinned signers' keys.
    pub keyrings: Vec<PathBuf>,
    /// Where to fetch pinned keys not in a keyring; `""` = never [default:
    /// [`DEFAULT_KEYS_URL`]].
    pub keys_url: Option<String>,
    /// Show download progress bars on stderr.
    pub progress: bool,
}

impl Network {
    /// Check the mirror URL, open the cache and read every keyring.
    pub fn new(options: &NetworkOptions) -> Result<Self> {
        let mirror = Mirror::new(options.mirror.as_deref().unwrap_or(DEFAULT_MIRROR))?;
        let cache_dir = options.cache_dir.clone().unwrap_or_else(Cache::default_dir);
        let fetcher = Fetcher::new(
            Cache::new(cache_dir),
            FetchOptions {
                progress: options.progress,
                ..FetchOptions::default()
            },
        )?;
        let mut keyring = Keyring::new();
        for file in &options.keyrings {
            keyring.extend(Keyring::from_file(file)?);
        }
        let keys_url = options
            .keys_url
            .clone()
            .unwrap_or_else(|| DEFAULT_KEYS_URL.to_string());
        Ok(Network {
            mirror,
            fetcher,
            keyring,
            keys_url: (!keys_url.is_empty()).then_some(keys_url),
        })
    }

    /// The source stage over this network, rendering names with `templates`.
    pub fn sources<'a>(&'a self, templates: &'a Templates) -> Sources<'a> {
        Sources {
            mirror: self.mirror.clone(),
            fetcher: &self.fetcher,
            keys: KeySource::new(self.keyring.clone(), self.keys_url.clone(), &self.fetcher),
            templates,
        }
    }
}

/// How a tarball is proven to be what kernel.org's signers published.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Upstream URL (or local file name) recorded as provenance.
    pub url: String,
    /// SHA-256 from a verified `sha256sums.asc`, if one covers the tarball.
    pub sha256: Option<String>,
    /// Primary fingerprint of the key that signed that sums file.
    pub sums_signer: Option<String>,
    /// The detached `.tar.sign` over the uncompressed tar (armored or binary).
    pub signature: Vec<u8>,
    /// Where the signature came from, for error messages.
    pub signature_origin: String,
    /// The pinned developer key the signature must be made by (or by its subkey).
    pub key: PinnedKey,
}

/// Everything the source stage needs for one run.
pub struct Sources<'a> {
    pub mirror: Mirror,
    pub fetcher: &'a Fetcher,
    pub keys: KeySource<'a>,
    pub templates: &'a Templates,
}

impl Sources<'_> {
    /// Every release the specs `name` selects (a spec name, a package name, or all
    /// specs when `None`) offer on the mirror, for upstream `arch` or all arches,
    /// from the verified sums files.
    pub fn list(
        &self,
        specs: &crate::spec::SpecSet,
        name: Option<&str>,
        arch: Option<&str>,
    ) -> Result<Vec<Release>> {
        let mut all: Vec<Release> = Vec::new();
        for (spec, mut known) in specs.select(name)? {
            if let Some(a) = arch {
                if !spec.arches.contains_key(a) {
                    return Err(Error::Usage(format!(
                        "spec {} has no arch {a} (it has {})",
                        spec.name,
                        spec.arches.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                known.insert("arch".into(), a.to_string());
            }
            all.extend(discover(
                spec,
                &known,
                &self.mirror,
                self.fetcher,
                &self.keys,
                self.templates,
            )?);
        }
        Ok(all)
    }

    /// Download (or take from the cache) every release and its signature, in parallel,
    /// returning the cached tarball and what it must be verified against.
    pub fn fetch(
        &self,
        specs: &crate::spec::SpecSet,
        releases: &[Release],
    ) -> Result<Vec<(PathBuf, Verification)>> {
        // Keys and signatures first: they are small, and a release whose signature or
        // key is missing is not worth downloading.
        let mut checks = Vec::new();
        for release in releases {
            let spec = specs
                .get(&release.spec)
                .ok_or_else(|| Error::Usage(format!("spec {} vanished", release.spec)))?;
            let key = self.keys.pinned(&spec.upstream.tarball_signer)?;
            let signature = self.fetcher.fetch_small(&release.signature_url)?;
            checks.push((key, signature));
        }
        let items: Vec<(String, String)> = releases
            .iter()
            .map(|r| (r.url.clone(), r.sha256.clone()))
            .collect();
        let paths = self.fetcher.fetch_many(&items);
        let mut out = Vec::new();
        for ((release, path), (key, signature)) in releases.iter().zip(paths).zip(checks) {
            out.push((
                path?,
                Verification {
                    url: release.url.clone(),
                    sha256: Some(release.sha256.clone()),
                    sums_signer: Some(release.sums_signer.clone()),
                    signature,
                    signature_origin: release.signature_url.clone(),
                    key,
                },
            ));
        }
        Ok(out)
    }

    /// How to verify a tarball on disk: its `.tar.sign` (from `signature`, or the
    /// spec's signature name beside it) and, if present, the `sha256sums.asc` beside it
    /// (or `sums`). `Ok(None)` when no signature exists.
    pub fn local(
        &self,
        spec: &Spec,
        vars: &Vars,
        tarball: &Path,
        signature: Option<&Path>,
        sums: Option<&Path>,
    ) -> Result<Option<Verification>> {
        let dir = tarball.parent().unwrap_or(Path::new("."));
        let sig_path = match signature {
            Some(p) => p.to_path_buf(),
            None => dir.join(spec.upstream_name("signature", vars, self.templates)?),
        };
        if !sig_path.is_file() {
            if signature.is_some() {
                return Err(Error::input(&sig_path, "no such signature file"));
            }
            return Ok(None);
        }
        let signature_bytes =
            std::fs::read(&sig_path).ctx(|| format!("reading {}", sig_path.display()))?;
        let key = self.keys.pinned(&spec.upstream.tarball_signer)?;
        let sums_path = match sums {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let p = dir.join(spec.upstream_name("sums", vars, self.templates)?);
                p.is_file().then_some(p)
            }
        };
        let file_name = tarball
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (sha256, sums_signer) = match sums_path {
            None => (None, None),
            Some(p) => {
                let text = std::fs::read(&p).ctx(|| format!("reading {}", p.display()))?;
                let autosigner = self.keys.pinned(&spec.upstream.sums_signer)?;
                let origin = p.display().to_string();
                let sums = verify::verify_sums(&text, &autosigner, &origin)?;
                let sha = sums
                    .get(&file_name)
                    .ok_or_else(|| {
                        Error::verify(origin.clone(), format!("does not list {file_name}"))
                    })?
                    .to_string();
                (Some(sha), Some(sums.signer().to_string()))
            }
        };
        Ok(Some(Verification {
            url: file_name,
            sha256,
            sums_signer,
            signature: signature_bytes,
            signature_origin: sig_path.display().to_string(),
            key,
        }))
    }
}
