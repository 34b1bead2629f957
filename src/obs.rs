//! Open Build Service hand-off: package sources that make OBS repackage a verified
//! kernel.org release exactly as korgpkg does ([`export`]), project `_meta`/`_config`
//! ([`project_files`]), and a small client for OBS's REST API ([`Client`]) that pushes
//! only changed files and reads build results.
//!
//! Templates are `OBS/*.hbs`, embedded as `obs/<name>` and overridable through
//! `--templates-dir` (`<dir>/obs/<name>.hbs`).

use md5::{Digest as _, Md5};
use serde::Serialize;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::model::relation::RelationKind;
use crate::model::{Format, PackageMeta};
use crate::package::{rfc2822, BuildOptions, SYSTEM_DIRS};
use crate::pipeline::{self, BuildRequest, BuildSettings, Prepared, ReleaseSelection};
use crate::source::{Release, Sources};
use crate::spec::SpecSet;
use crate::templates::Templates;

/// Where OBS fetches the release from, and what it must hash to.
#[derive(Debug, Clone, Serialize)]
pub struct Upstream {
    /// The tarball's upstream URL (`Source0`, `download_url`).
    pub tarball_url: String,
    /// The detached `.tar.sign` URL (`Source1`).
    pub signature_url: String,
    /// SHA-256 of the tarball korgpkg verified.
    pub sha256: String,
    /// SHA-256 of the `.tar.sign` korgpkg verified the tarball with, if any.
    pub signature_sha256: Option<String>,
}

impl Upstream {
    /// The upstream facts for a prepared build: `tarball_url`/`signature_url` as given,
    /// the sha256 korgpkg computed while staging, the signature's sha256 if verified.
    pub fn new(
        prepared: &Prepared,
        tarball_url: String,
        signature_url: String,
        signature: Option<&[u8]>,
    ) -> Self {
        Upstream {
            tarball_url,
            signature_url,
            sha256: prepared
                .meta
                .provenance
                .as_ref()
                .map(|p| p.sha256.clone())
                .unwrap_or_default(),
            signature_sha256: signature.map(|s| hex::encode(Sha256::digest(s))),
        }
    }
}

/// The release an OBS package is made from, picked as `korgpkg build` picks it.
#[derive(Debug, Clone, Default)]
pub struct ObsRelease {
    /// The release of exactly one package (with `from`, the OBS sources still name the
    /// upstream URL).
    pub selection: ReleaseSelection,
    /// Package revision (rpm Release, Debian `-N`).
    pub revision: u32,
    /// Distro map for the Debian Depends; `None`: debian-12.
    pub target_distro: Option<String>,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<u64>,
}

/// Verify, stage and scan the release `release` selects (downloading it unless it is a
/// file on disk), in `work`; returns the prepared build and where OBS gets the release
/// from. A downloaded tarball that fails verification is removed from the cache.
pub fn prepare_release(
    release: &ObsRelease,
    specs: &SpecSet,
    sources: &Sources<'_>,
    work: &Path,
) -> Result<(Prepared, Upstream)> {
    let selection = &release.selection;
    let package = selection.packages.first().cloned().unwrap_or_default();
    let template = request_template(release, &package, work);
    let templates = sources.templates;
    let (req, urls) = match &selection.from {
        Some(from) => {
            let req = pipeline::local_request(selection, from, specs, sources, &template)?;
            let (spec, _) = specs.find_package(&package)?;
            let file_name = from
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::input(from, "not a file name"))?;
            let vars = spec.match_tarball(file_name).unwrap_or_default();
            let dir = spec.upstream_name("directory", &vars, templates)?;
            let sig = spec.upstream_name("signature", &vars, templates)?;
            let urls = (
                sources.mirror.url(&format!("{dir}/{file_name}")),
                sources.mirror.url(&format!("{dir}/{sig}")),
            );
            (req, urls)
        }
        None => {
            let releases = pipeline::pick_releases(selection, specs, sources)?;
            let mut requests =
                pipeline::release_requests(&releases, specs, sources, &template, true)?;
            let (Some(req), Some(rel)) = (requests.pop(), releases.first()) else {
                return Err(Error::Usage(format!("no release of {package}")));
            };
            (req, (rel.url.clone(), rel.signature_url.clone()))
        }
    };
    prepare_request(&req, urls, specs, templates, selection.from.is_none())
}

/// Download, verify, stage and scan a release discovered on the mirror (as
/// [`source::discover`](crate::source::discover) returns it), in `work`. Returns the
/// prepared build, where OBS gets the release from, and the downloaded tarball in the
/// cache (removed here if it failed verification).
pub fn prepare_discovered(
    release: &ObsRelease,
    found: &Release,
    specs: &SpecSet,
    sources: &Sources<'_>,
    work: &Path,
) -> Result<(Prepared, Upstream, PathBuf)> {
    let template = request_template(release, &found.package, work);
    let req =
        pipeline::release_requests(std::slice::from_ref(found), specs, sources, &template, true)?
            .pop()
            .ok_or_else(|| Error::network(&found.url, "nothing downloaded"))?;
    let urls = (found.url.clone(), found.signature_url.clone());
    let (prepared, upstream) = prepare_request(&req, urls, specs, sources.templates, true)?;
    Ok((prepared, upstream, req.tarball))
}

/// The build request every OBS export starts from: deb and rpm, default options.
fn request_template(release: &ObsRelease, package: &str, work: &Path) -> BuildRequest {
    let settings = BuildSettings {
        formats: vec![Format::Deb, Format::Rpm],
        out_dir: work.to_path_buf(),
        revision: release.revision,
        options: BuildOptions::default(),
        source_date_epoch: release.source_date_epoch,
    };
    BuildRequest {
        package: package.to_string(),
        ..BuildRequest::template(settings, false, release.target_distro.clone())
    }
}

/// Prepare `req` (`urls`: the tarball's and signature's upstream URLs); a download that
/// fails verification is dropped from the cache.
fn prepare_request(
    req: &BuildRequest,
    urls: (String, String),
    specs: &SpecSet,
    templates: &Templates,
    downloaded: bool,
) -> Result<(Prepared, Upstream)> {
    let prepared = match pipeline::prepare(specs, templates, req) {
        Ok(p) => p,
        Err(e) => {
            if matches!(e, Error::Verify { .. }) && downloaded {
                pipeline::forget_download(req);
            }
            return Err(e);
        }
    };
    let signature = req.verification.as_ref().map(|v| v.signature.as_slice());
    let upstream = Upstream::new(&prepared, urls.0, urls.1, signature);
    Ok((prepared, upstream))
}

/// The commit message of a push: package, version, upstream file and its sha256.
pub fn commit_message(prepared: &Prepared, upstream: &Upstream) -> String {
    format!(
        "korgpkg: {} {}-{} from kernel.org {} (sha256 {})",
        prepared.meta.name,
        prepared.meta.version,
        prepared.meta.revision,
        upstream.tarball_url.rsplit('/').next().unwrap_or_default(),
        upstream.sha256
    )
}

/// One generated file of an OBS package or project.
#[derive(Debug, Clone, Serialize)]
pub struct ObsFile {
    pub name: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub md5: String,
}

impl ObsFile {
    fn new(name: impl Into<String>, text: String) -> Self {
        let bytes = text.into_bytes();
        ObsFile {
            name: name.into(),
            md5: hex::encode(Md5::digest(&bytes)),
            bytes,
        }
    }
}

/// `name: value` of one rpm relation line.
#[derive(Serialize)]
struct RpmLine {
    field: &'static str,
    pad: String,
    value: String,
}

/// What the package templates are rendered with.
#[derive(Serialize)]
struct PackageData<'a> {
    #[serde(flatten)]
    meta: &'a PackageMeta,
    #[serde(flatten)]
    upstream: &'a Upstream,
    obs_package: String,
    project: String,
    tarball: String,
    signature: String,
    top_dir: String,
    strip_components: usize,
    sub_dir: String,
    excludes: Vec<String>,
    /// `tar` arguments excluding them, quoted for debian.rules and for the .spec.
    rules_excludes: Vec<String>,
    rpm_excludes: Vec<String>,
    /// With excludes: `find` arguments keeping the directories korgpkg ships empty, so
    /// debian.rules can drop the directories that only excluded files filled.
    keep_empty_dirs: Vec<String>,
    owned_dirs: Vec<String>,
    deb_version: String,
    deb_date: String,
    date: String,
    rpm_date: String,
    /// Summary and description with `%` doubled (rpm would expand macros).
    rpm_summary: String,
    rpm_description: String,
    /// The `%license` file's text (`%` escaped), as korgpkg's own rpm carries it.
    rpm_license: Option<String>,
    /// The `%doc` README's text (`%` escaped), as korgpkg's own rpm carries it.
    rpm_readme: String,
    rpm_relations: Vec<RpmLine>,
    deb_relations: BTreeMap<String, String>,
}

fn file_name_of(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_string()
}

/// Ancestors of `prefix` (and `prefix` itself excluded) that the package owns: every
/// directory korgpkg's own .rpm lists, i.e. not a system directory.
pub fn owned_dirs(prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = prefix.trim_end_matches('/');
    while let Some(i) = p.rfind('/') {
        p = &p[..i];
        if p.is_empty() || SYSTEM_DIRS.contains(&p) {
            continue;
        }
        out.push(p.to_string());
    }
    out.reverse();
    out
}

/// Directories of the payload without entries below them, relative to `prefix`.
fn empty_dirs(prepared: &Prepared, prefix: &str) -> Vec<String> {
    use crate::payload::EntryKind;
    let entries = prepared.payload.entries();
    let parents: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| e.path.rfind('/').map(|i| &e.path[..i]))
        .collect();
    let base = format!("{}/", prefix.trim_end_matches('/'));
    entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Directory) && !parents.contains(e.path.as_str()))
        .filter_map(|e| e.path.strip_prefix(&base).map(str::to_string))
        .collect()
}

/// Escape the wildcard characters of `find -path`.
fn find_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Single-quote `s` for a shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Single-quote `s` for a shell line inside a makefile (`$` doubled for make).
fn make_shell_quote(s: &str) -> String {
    shell_quote(s).replace('$', "$$")
}

fn rpm_date(secs: u64) -> String {
    // "Tue, 14 Nov 2023 22:13:20 +0000" → "Tue Nov 14 2023"
    let d = rfc2822(secs);
    let parts: Vec<&str> = d.split([',', ' ']).filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [wd, day, mon, year, ..] => format!("{wd} {mon} {day} {year}"),
        _ => d,
    }
}

fn package_data<'a>(
    prepared: &'a Prepared,
    upstream: &'a Upstream,
    specs: &SpecSet,
    project: &str,
) -> PackageData<'a> {
    let meta = &prepared.meta;
    let top_dir = prepared.top_dir.trim_matches('/').to_string();
    let components: Vec<&str> = top_dir.split('/').filter(|c| !c.is_empty()).collect();
    let sub_dir = if components.len() > 1 {
        components[1..].join("/")
    } else {
        ".".to_string()
    };
    let excludes = specs
        .get(&prepared.plan.spec)
        .map(|s| s.exclude_patterns().to_vec())
        .unwrap_or_default();
    let rpm_excludes = excludes
        .iter()
        .map(|p| shell_quote(&format!("--exclude={top_dir}/{p}")).replace('%', "%%"))
        .collect();
    let rels = &meta.relations.rpm;
    let mut rpm_relations = Vec::new();
    for kind in RelationKind::ALL {
        if let Some(field) = kind.field_name(Format::Rpm) {
            for r in rels.of(kind) {
                rpm_relations.push(RpmLine {
                    field,
                    pad: " ".repeat(16usize.saturating_sub(field.len() + 1).max(1)),
                    value: r.display(Format::Rpm),
                });
            }
        }
    }
    let mut deb_relations = BTreeMap::new();
    for kind in RelationKind::ALL {
        if let Some(field) = kind.field_name(Format::Deb) {
            let joined = meta.relations.deb.joined(kind, Format::Deb);
            if !joined.is_empty() {
                deb_relations.insert(field.to_string(), joined);
            }
        }
    }
    PackageData {
        meta,
        upstream,
        obs_package: meta.name.clone(),
        project: project.to_string(),
        tarball: file_name_of(&upstream.tarball_url),
        signature: file_name_of(&upstream.signature_url),
        strip_components: components.len(),
        top_dir,
        sub_dir,
        keep_empty_dirs: if excludes.is_empty() {
            Vec::new()
        } else {
            empty_dirs(prepared, &meta.prefix)
                .iter()
                .map(|d| make_shell_quote(&format!("./{}", find_escape(d))))
                .collect()
        },
        rules_excludes: excludes
            .iter()
            .map(|p| make_shell_quote(&format!("--exclude=./{p}")))
            .collect(),
        rpm_excludes,
        excludes,
        owned_dirs: owned_dirs(&meta.prefix),
        deb_version: meta.full_version(Format::Deb),
        deb_date: rfc2822(meta.build_time),
        date: rfc2822(meta.build_time),
        rpm_date: rpm_date(meta.build_time),
        rpm_summary: meta.summary.replace('%', "%%"),
        rpm_description: meta.description.trim_end().replace('%', "%%"),
        rpm_license: (!meta.copyright.licenses.is_empty())
            .then(|| meta.copyright.full_text().replace('%', "%%")),
        rpm_readme: crate::package::rpm::readme(meta).replace('%', "%%"),
        rpm_relations,
        deb_relations,
    }
}

/// The files of an OBS package for a prepared (verified, scanned) release: `_service`,
/// `<name>.spec`, `<name>.dsc`, `debian.control`, `debian.rules`, `debian.changelog`
/// and `debian.copyright`, sorted by name.
pub fn export(
    prepared: &Prepared,
    upstream: &Upstream,
    specs: &SpecSet,
    templates: &Templates,
) -> Result<Vec<ObsFile>> {
    let data = package_data(prepared, upstream, specs, "");
    let name = &prepared.meta.name;
    let mut files = vec![
        ObsFile::new("_service", templates.render("obs/_service", &data)?),
        ObsFile::new(
            format!("{name}.spec"),
            templates.render("obs/package.spec", &data)?,
        ),
        ObsFile::new(
            format!("{name}.dsc"),
            templates.render("obs/package.dsc", &data)?,
        ),
        ObsFile::new(
            "debian.control",
            templates.render("obs/debian.control", &data)?,
        ),
        ObsFile::new("debian.rules", templates.render("obs/debian.rules", &data)?),
        ObsFile::new(
            "debian.changelog",
            templates.render("obs/debian.changelog", &data)?,
        ),
        ObsFile::new(
            "debian.copyright",
            templates.render("deb/copyright", &data)?,
        ),
    ];
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The package `_meta` for `project` (what `push` creates when the package is missing).
pub fn package_meta(
    prepared: &Prepared,
    upstream: &Upstream,
    specs: &SpecSet,
    templates: &Templates,
    project: &str,
) -> Result<String> {
    let data = package_data(prepared, upstream, specs, project);
    templates.render("obs/_meta", &data)
}

/// Project `_meta` and `_config` for `project`: Debian 12, Ubuntu 24.04, Fedora Rawhide
/// and openSUSE Tumbleweed, each for x86_64 and aarch64.
pub fn project_files(
    templates: &Templates,
    project: &str,
    maintainer: &str,
) -> Result<Vec<ObsFile>> {
    let data = serde_json::json!({
        "project": project,
        "title": format!("{project}: kernel.org toolchains"),
        "maintainer": maintainer,
    });
    Ok(vec![
        ObsFile::new("_config", templates.render("obs/project_config", &data)?),
        ObsFile::new("_meta", templates.render("obs/project_meta", &data)?),
    ])
}

/// Write `files` into `dir` (created if missing); `debian.rules` is made executable.
pub fn write_files(dir: &Path, files: &[ObsFile]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.bytes).ctx(|| format!("writing {}", path.display()))?;
        if f.name == "debian.rules" {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .ctx(|| format!("making {} executable", path.display()))?;
        }
        out.push(path);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Credentials

/// HTTP Basic credentials for an OBS API.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.user)
    }
}

/// osc's configuration file: `--oscrc`, else `$OSC_CONFIG`, else
/// `~/.config/osc/oscrc`, else `~/.oscrc`.
pub fn oscrc_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("OSC_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = dirs::home_dir()?;
    let xdg = dirs::config_dir()
        .unwrap_or_else(|| home.join(".config"))
        .join("osc/oscrc");
    if xdg.is_file() {
        return Some(xdg);
    }
    Some(home.join(".oscrc"))
}

/// Sections of an INI file: section name → key → value (keys lowercased).
fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            out.entry(section.clone()).or_default();
        } else if let Some((k, v)) = line.split_once(['=', ':']) {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn same_api(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Credentials for `api`: `OBS_USER` and `OBS_PASSWORD` if both are set, else `user`
/// and `pass` from the oscrc section named by the API URL.
pub fn credentials(api: &str, oscrc: Option<&Path>) -> Result<Credentials> {
    if let (Ok(user), Ok(password)) = (std::env::var("OBS_USER"), std::env::var("OBS_PASSWORD")) {
        if !user.is_empty() {
            return Ok(Credentials { user, password });
        }
    }
    let Some(path) = oscrc_path(oscrc) else {
        return Err(Error::Usage(format!(
            "no credentials for {api}: set OBS_USER and OBS_PASSWORD, or give --oscrc FILE"
        )));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "no credentials for {api}: set OBS_USER and OBS_PASSWORD, or add [{api}] with user= and pass= to {}",
                path.display()
            )))
        }
        Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
    };
    let ini = parse_ini(&text);
    let section = ini
        .iter()
        .find(|(name, _)| same_api(name, api))
        .map(|(_, s)| s)
        .ok_or_else(|| Error::spec(&path, format!("no [{api}] section")))?;
    let user = section
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::spec(&path, format!("[{api}]: no user=")))?;
    let password = match (section.get("pass"), section.get("passx")) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => {
            return Err(Error::spec(
                &path,
                format!("[{api}]: passx= (obfuscated) is not supported; use pass= or OBS_PASSWORD"),
            ))
        }
        (None, None) => {
            return Err(Error::spec(
                &path,
                format!("[{api}]: no pass= (keyring credential managers are not supported; set OBS_PASSWORD)"),
            ))
        }
    };
    Ok(Credentials {
        user: user.clone(),
        password,
    })
}

/// The default API from oscrc's `[general] apiurl`, if any.
pub fn default_api(oscrc: Option<&Path>) -> Option<String> {
    let path = oscrc_path(oscrc)?;
    let text = std::fs::read_to_string(path).ok()?;
    parse_ini(&text)
        .get("general")?
        .get("apiurl")
        .map(|s| s.trim_end_matches('/').to_string())
}

// ---------------------------------------------------------------------------------------
// Minimal XML reading: start tags and their attributes, entities decoded.

/// Attributes of every `<tag ...>` start (or empty) element named `tag`, in order.
pub fn xml_elements(xml: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let open = format!("<{tag}");
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let boundary = after.chars().next();
        if !matches!(boundary, Some(c) if c.is_whitespace() || c == '>' || c == '/') {
            rest = after;
            continue;
        }
        let Some(end) = find_tag_end(after) else {
            break;
        };
        out.push(parse_attrs(&after[..end]));
        rest = &after[end..];
    }
    out
}

/// Index of the `>` closing a start tag, skipping quoted attribute values.
fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_attrs(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim_end_matches('/');
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(close) = after[1..].find(q) else {
            break;
        };
        out.insert(name, xml_unescape(&after[1..1 + close]));
        rest = &after[close + 2..];
    }
    out
}

/// The text of the first `<tag>...</tag>` element, entities decoded.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml_unescape(xml[start..end].trim()))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------
// The REST client

/// A file in an OBS package, as `GET /source/<prj>/<pkg>` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub md5: String,
}

/// One repository/arch of `GET /build/<prj>/_result`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildResult {
    pub repository: String,
    pub arch: String,
    /// The repository's state (`published`, `building`, `blocked`, ...).
    pub state: String,
    /// Package → status code (`succeeded`, `failed`, `unresolvable`, ...).
    pub packages: BTreeMap<String, String>,
}

/// A client for `api` (else oscrc's `[general] apiurl`, else api.opensuse.org) with the
/// credentials for it. Plain http is refused before any credentials are looked up.
pub fn connect(api: Option<&str>, oscrc: Option<&Path>) -> Result<Client> {
    let api = api
        .map(str::to_string)
        .or_else(|| default_api(oscrc))
        .unwrap_or_else(|| "https://api.opensuse.org".to_string());
    let api = api.trim_end_matches('/').to_string();
    check_api(&api)?;
    let credentials = credentials(&api, oscrc)?;
    Client::new(&api, credentials)
}

/// Parse an API URL and refuse to send credentials in the clear: `https://` only, plain
/// `http://` only to 127.0.0.1, ::1 or localhost (tests, local instances).
pub fn check_api(api: &str) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(api)
        .map_err(|e| Error::Usage(format!("--api {api:?} is not a URL: {e}")))?;
    let local = matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    match url.scheme() {
        "https" => Ok(url),
        "http" if local => Ok(url),
        _ => Err(Error::Usage(format!(
            "--api {api}: OBS credentials are only sent over https:// (plain http:// only to 127.0.0.1)"
        ))),
    }
}

/// The largest OBS API response read (16 MiB).
const MAX_RESPONSE: u64 = 16 << 20;

/// A blocking client for the few OBS API calls korgpkg uses. Every error is
/// [`Error::Network`] (exit code 6) naming the URL and, for 401/403/404/409, what to do.
pub struct Client {
    api: reqwest::Url,
    http: reqwest::blocking::Client,
    credentials: Credentials,
}

impl Client {
    /// A client for `api` (checked with [`check_api`]).
    pub fn new(api: &str, credentials: Credentials) -> Result<Self> {
        let url = check_api(api)?;
        let http = reqwest::blocking::Client::builder()
            .user_agent(concat!("korgpkg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| Error::network(api, format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            api: url,
            http,
            credentials,
        })
    }

    /// `<api>/<segments...>` with each segment percent-encoded, plus `query`.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Send a request; `Ok(None)` for 404 when `missing_ok`, the body otherwise.
    fn send(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Vec<u8>>,
        missing_ok: bool,
    ) -> Result<Option<String>> {
        let shown = url.to_string();
        let mut req = self
            .http
            .request(method, url)
            .basic_auth(&self.credentials.user, Some(&self.credentials.password));
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .map_err(|e| Error::network(&shown, crate::fetch::one_line(&e)))?;
        let status = resp.status();
        // OBS answers are small XML documents or package source files: bounded.
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(resp, MAX_RESPONSE + 1), &mut body)
            .map_err(|e| Error::network(&shown, format!("reading the response: {e}")))?;
        if body.len() as u64 > MAX_RESPONSE {
            return Err(Error::network(
                &shown,
                format!("the response is larger than {MAX_RESPONSE} bytes"),
            ));
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            return Ok(Some(text));
        }
        let summary = xml_text(&text, "summary")
            .map(|s| format!(": {}", crate::error::one_line(&s)))
            .unwrap_or_default();
        let message = match status.as_u16() {
            404 if missing_ok => return Ok(None),
            401 => format!(
                "401 Unauthorized: OBS rejected the credentials of user {} (check OBS_USER/OBS_PASSWORD or user=/pass= in oscrc){summary}",
                self.credentials.user
            ),
            403 => format!(
                "403 Forbidden: user {} may not do this{summary}",
                self.credentials.user
            ),
            404 => format!("404 Not Found{summary}"),
            409 => format!("409 Conflict{summary}"),
            code => format!("HTTP {code}{summary}"),
        };
        Err(Error::network(shown, message))
    }

    /// Whether `project` exists (`GET /source/<prj>/_meta`).
    pub fn project_exists(&self, project: &str) -> Result<bool> {
        let url = self.url(&["source", project, "_meta"], &[]);
        Ok(self.send(reqwest::Method::GET, url, None, true)?.is_some())
    }

    /// Whether `package` exists in `project` (`GET /source/<prj>/<pkg>/_meta`).
    pub fn package_exists(&self, project: &str, package: &str) -> Result<bool> {
        let url = self.url(&["source", project, package, "_meta"], &[]);
        Ok(self.send(reqwest::Method::GET, url, None, true)?.is_some())
    }

    /// Create (or replace) a package's `_meta`.
    pub fn put_package_meta(&self, project: &str, package: &str, meta: &str) -> Result<()> {
        let url = self.url(&["source", project, package, "_meta"], &[]);
        self.send(
            reqwest::Method::PUT,
            url,
            Some(meta.as_bytes().to_vec()),
            false,
        )?;
        Ok(())
    }

    /// The committed files of a package, with their md5.
    pub fn list_files(&self, project: &str, package: &str) -> Result<Vec<RemoteFile>> {
        let url = self.url(&["source", project, package], &[]);
        let body = self
            .send(reqwest::Method::GET, url, None, false)?
            .unwrap_or_default();
        Ok(xml_elements(&body, "entry")
            .into_iter()
            .filter_map(|a| {
                Some(RemoteFile {
                    name: a.get("name")?.clone(),
                    md5: a.get("md5").cloned().unwrap_or_default(),
                })
            })
            .collect())
    }

    /// A committed file of a package; `None` if the package or the file is missing.
    pub fn get_file(&self, project: &str, package: &str, name: &str) -> Result<Option<String>> {
        let url = self.url(&["source", project, package, name], &[]);
        self.send(reqwest::Method::GET, url, None, true)
    }

    /// Upload one file into the package's upload revision (`?rev=upload`).
    pub fn put_file(&self, project: &str, package: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let url = self.url(&["source", project, package, name], &[("rev", "upload")]);
        self.send(reqwest::Method::PUT, url, Some(bytes.to_vec()), false)?;
        Ok(())
    }

    /// Commit the upload revision with `message` (`POST ?cmd=commit`).
    pub fn commit(&self, project: &str, package: &str, message: &str) -> Result<()> {
        let url = self.url(
            &["source", project, package],
            &[("cmd", "commit"), ("comment", message)],
        );
        self.send(reqwest::Method::POST, url, Some(Vec::new()), false)?;
        Ok(())
    }

    /// Build results of `project` (`GET /build/<prj>/_result`), optionally one package's.
    pub fn build_results(&self, project: &str, package: Option<&str>) -> Result<Vec<BuildResult>> {
        let query: Vec<(&str, &str)> = package.map(|p| ("package", p)).into_iter().collect();
        let url = self.url(&["build", project, "_result"], &query);
        let body = self
            .send(reqwest::Method::GET, url, None, false)?
            .unwrap_or_default();
        Ok(parse_results(&body))
    }
}

/// Parse a `<resultlist>`: each `<result>` with its `<status>` children.
pub fn parse_results(xml: &str) -> Vec<BuildResult> {
    let mut out = Vec::new();
    for chunk in xml.split("<result").skip(1) {
        if !chunk.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/') {
            continue;
        }
        let Some(end) = find_tag_end(chunk) else {
            continue;
        };
        let attrs = parse_attrs(&chunk[..end]);
        let body = chunk[end..].split("</result>").next().unwrap_or("");
        let packages = xml_elements(body, "status")
            .into_iter()
            .filter_map(|s| Some((s.get("package")?.clone(), s.get("code")?.clone())))
            .collect();
        out.push(BuildResult {
            repository: attrs.get("repository").cloned().unwrap_or_default(),
            arch: attrs.get("arch").cloned().unwrap_or_default(),
            state: attrs
                .get("state")
                .or_else(|| attrs.get("code"))
                .cloned()
                .unwrap_or_default(),
            packages,
        });
    }
    out
}

/// What a push did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub project: String,
    pub package: String,
    /// The package `_meta` was (or would be) created.
    pub created: bool,
    /// Files uploaded (or to upload): new or with a different md5.
    pub changed: Vec<String>,
    /// Files already up to date.
    pub unchanged: Vec<String>,
    /// The commit message, if a commit was (or would be) made.
    pub commit: Option<String>,
    pub dry_run: bool,
}

/// Push `files` to `project`/`package`: create the package from `meta` if missing,
/// upload only files whose md5 differs from the committed ones, then commit with
/// `message`. Nothing is written when no file changed, or with `dry_run`.
pub fn push(
    client: &Client,
    project: &str,
    package: &str,
    meta: &str,
    files: &[ObsFile],
    message: &str,
    dry_run: bool,
) -> Result<PushReport> {
    if !client.project_exists(project)? {
        return Err(Error::network(
            client.url(&["source", project, "_meta"], &[]).to_string(),
            format!("404 Not Found: project {project} does not exist (create it first, e.g. with `korgpkg obs project`)"),
        ));
    }
    let exists = client.package_exists(project, package)?;
    if !exists && !dry_run {
        client.put_package_meta(project, package, meta)?;
    }
    let remote: BTreeMap<String, String> = if exists {
        client
            .list_files(project, package)?
            .into_iter()
            .map(|f| (f.name, f.md5))
            .collect()
    } else {
        BTreeMap::new()
    };
    let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
    for f in files {
        if remote
            .get(&f.name)
            .is_some_and(|m| m.eq_ignore_ascii_case(&f.md5))
        {
            unchanged.push(f.name.clone());
        } else {
            changed.push(f);
        }
    }
    if !dry_run {
        for f in &changed {
            client.put_file(project, package, &f.name, &f.bytes)?;
        }
        if !changed.is_empty() {
            client.commit(project, package, message)?;
        }
    }
    Ok(PushReport {
        project: project.to_string(),
        package: package.to_string(),
        created: !exists,
        commit: (!changed.is_empty()).then(|| message.to_string()),
        changed: changed.iter().map(|f| f.name.clone()).collect(),
        unchanged,
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_dirs_skip_system_dirs() {
        assert_eq!(
            owned_dirs("/usr/lib/korg/llvm-18"),
            vec!["/usr/lib/korg".to_string()]
        );
        assert!(owned_dirs("/opt/x").is_empty());
    }

    #[test]
    fn xml_entries_and_results_parse() {
        let dir = r#"<directory name="p" rev="2"><entry name="a&amp;b" md5="11" size="1"/><entryx name="no"/>
            <entry md5='22' name="_service"></entry></directory>"#;
        let e = xml_elements(dir, "entry");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["name"], "a&b");
        assert_eq!(e[1]["md5"], "22");
        let res = r#"<resultlist state="x"><result project="p" repository="Debian_12" arch="x86_64" code="published" state="published">
            <status package="korg-clang-18" code="succeeded"/></result>
            <result project="p" repository="Fedora_Rawhide" arch="aarch64" code="building" state="building"><status package="korg-clang-18" code="failed"><details>x</details></status></result></resultlist>"#;
        let r = parse_results(res);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].repository, "Fedora_Rawhide");
        assert_eq!(r[1].packages["korg-clang-18"], "failed");
    }

    #[test]
    fn oscrc_credentials_and_their_errors() {
        if std::env::var_os("OBS_USER").is_some() {
            return; // the environment wins; nothing to check here
        }
        let dir = tempfile::tempdir().expect("tmp");
        let rc = dir.path().join("oscrc");
        std::fs::write(
            &rc,
            "[https://a.example/]\nuser = me\npass = pw\n[https://b.example]\nuser = me\npassx = QlpoOTFBWQ==\n",
        )
        .expect("oscrc");
        let c = credentials("https://a.example", Some(&rc)).expect("credentials");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("me", "pw"));
        let e = credentials("https://b.example", Some(&rc)).expect_err("passx");
        assert!(e.to_string().contains("passx"), "{e}");
        let e = credentials("https://c.example", Some(&rc)).expect_err("no section");
        assert!(
            e.to_string().contains("no [https://c.example] section"),
            "{e}"
        );
        assert!(check_api("http://obs.example").is_err());
        assert!(check_api("http://127.0.0.1:8080").is_ok());
    }

    #[test]
    fn oscrc_sections_and_rpm_dates() {
        let ini = parse_ini("[general]\napiurl = https://api.example/\n\n[https://api.example]\nuser=me\npass = s=cret\n");
        assert_eq!(ini["https://api.example"]["pass"], "s=cret");
        assert_eq!(rpm_date(1_700_000_000), "Tue Nov 14 2023");
    }
}
