//! `image push`: an OCI layout to a registry with the OCI distribution API (reqwest
//! blocking + rustls). Each blob is checked with `HEAD` and uploaded only if missing
//! (monolithic `POST` + `PUT ?digest=`, streamed from the file); manifests are `PUT` by
//! digest, then the top one by tag. Authentication answers the registry's 401:
//! `Basic` with the credentials, or `Bearer` with a token from the realm it names.
//! Plain http only to 127.0.0.1/localhost unless `--insecure-registry`.

use base64::Engine as _;
use serde::Serialize;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;

use super::layout::{self, sha256_hex};
use super::{check_name, check_tag, INDEX, MANIFEST, REF_NAME};
use crate::error::{Error, Result};

/// What to push where.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub layout: PathBuf,
    /// The layout's tag [default: its only manifest].
    pub tag: Option<String>,
    /// `[docker://]HOST[:PORT]/NAME[:TAG]`.
    pub destination: String,
    pub insecure: bool,
    pub progress: bool,
    /// Upload blobs larger than this in chunks of this many bytes (`None`: one request).
    pub chunk_size: Option<u64>,
}

/// What was pushed.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub reference: String,
    /// Digest of the pushed manifest (or index).
    pub digest: String,
    pub uploaded: Vec<String>,
    pub existing: Vec<String>,
    pub manifests: Vec<String>,
}

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub host: String,
    pub name: String,
    pub tag: Option<String>,
    /// `@sha256:<hex>` (a pull by digest).
    pub digest: Option<String>,
}

impl Reference {
    /// Parse `[docker://]HOST[:PORT]/NAME[:TAG|@sha256:HEX]`.
    pub fn parse(text: &str) -> Result<Reference> {
        let rest = text.strip_prefix("docker://").unwrap_or(text);
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| Error::Usage(format!("{text:?}: expected HOST[:PORT]/NAME[:TAG]")))?;
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !host_ok {
            return Err(Error::Usage(format!(
                "{text:?}: bad registry host {host:?}"
            )));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                if layout::sha256_hex(d).is_none() {
                    return Err(Error::Usage(format!(
                        "{text:?}: {d:?} is not a sha256:<64 hex> digest"
                    )));
                }
                (p, Some(d.to_string()))
            }
            None => (path, None),
        };
        let (name, tag) = match path.rsplit_once(':') {
            Some((n, t)) => (n, Some(t.to_string())),
            None => (path, None),
        };
        check_name(name)?;
        if let Some(t) = &tag {
            check_tag(t)?;
        }
        Ok(Reference {
            host: host.to_string(),
            name: name.to_string(),
            tag,
            digest,
        })
    }

    fn loopback(&self) -> bool {
        let h = self
            .host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(h, p)| {
                if p.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    self.host.as_str()
                }
            });
        matches!(h, "127.0.0.1" | "localhost" | "[::1]")
    }
}

/// Registry credentials (user, password).
type Credentials = Option<(String, String)>;

/// Credentials for `host`: `KORGPKG_REGISTRY_USER`/`KORGPKG_REGISTRY_PASSWORD`, else the
/// first auth file (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.docker/config.json`) with an `auths` entry for it.
pub fn credentials(host: &str) -> Result<Credentials> {
    if let (Ok(u), Ok(p)) = (
        std::env::var("KORGPKG_REGISTRY_USER"),
        std::env::var("KORGPKG_REGISTRY_PASSWORD"),
    ) {
        return Ok(Some((u, p)));
    }
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&d).join("containers/auth.json"));
    }
    if let Some(h) = dirs::home_dir() {
        files.push(h.join(".docker/config.json"));
    }
    for f in files {
        if !f.is_file() {
            continue;
        }
        let bytes = layout::read_small(&f)?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::spec(&f, format!("not JSON: {e}")))?;
        let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
            continue;
        };
        for (key, entry) in auths {
            let k = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let k = k.split('/').next().unwrap_or(k);
            if k != host {
                continue;
            }
            let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) else {
                continue;
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| Error::spec(&f, format!("auths.{key}.auth is not base64")))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| Error::spec(&f, format!("auths.{key}.auth is not UTF-8")))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| Error::spec(&f, format!("auths.{key}.auth is not user:password")))?;
            return Ok(Some((u.to_string(), p.to_string())));
        }
    }
    Ok(None)
}

/// A registry session: base URL, repository name and the current Authorization.
pub(super) struct Session {
    http: Client,
    base: String,
    name: String,
    creds: Credentials,
    auth: Option<String>,
    /// Upload blobs larger than this in chunks of this size (`None`: monolithic).
    chunk: Option<u64>,
    /// The scope asked for when a Bearer challenge names none.
    actions: &'static str,
}

/// The parameters of a `WWW-Authenticate` challenge (`Bearer realm="...",service="..."`).
fn challenge(header: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while let Some((k, v)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let v = v.trim_start();
        let (value, tail) = if let Some(q) = v.strip_prefix('"') {
            match q.split_once('"') {
                Some((val, t)) => (val.to_string(), t),
                None => (q.to_string(), ""),
            }
        } else {
            match v.split_once(',') {
                Some((val, t)) => (val.trim().to_string(), t),
                None => (v.trim().to_string(), ""),
            }
        };
        params.push((k, value));
        rest = tail.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

impl Session {
    /// A session with `dest`'s registry: https, or plain http to 127.0.0.1/localhost or
    /// with `insecure`; credentials from [`credentials`]. `actions` is the scope asked
    /// of a token server whose challenge names none (`pull` or `pull,push`).
    pub(super) fn open(
        dest: &Reference,
        insecure: bool,
        chunk: Option<u64>,
        actions: &'static str,
    ) -> Result<Session> {
        let plain = dest.loopback() || insecure;
        let scheme = if plain { "http" } else { "https" };
        let http = Client::builder()
            .user_agent(concat!("korgpkg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(3600))
            .tls_danger_accept_invalid_certs(insecure)
            .build()
            .map_err(|e| {
                Error::network(&dest.host, format!("cannot set up the HTTP client: {e}"))
            })?;
        Ok(Session {
            http,
            base: format!("{scheme}://{}", dest.host),
            name: dest.name.clone(),
            creds: credentials(&dest.host)?,
            auth: None,
            chunk,
            actions,
        })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.name)
    }

    pub(super) fn net(&self, url: &str, e: impl std::fmt::Display) -> Error {
        Error::network(url, crate::error::one_line(&e.to_string()))
    }

    /// Send a request made by `make` (called again after authenticating).
    pub(super) fn send(
        &mut self,
        url: &str,
        make: &dyn Fn(&Client) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        for attempt in 0..2 {
            let mut rb = make(&self.http)?;
            if let Some(a) = &self.auth {
                rb = rb.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = rb.send().map_err(|e| self.net(url, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 1 {
                return Err(self.net(
                    url,
                    "401 Unauthorized after authenticating: the registry refused the credentials",
                ));
            }
            let header = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.authenticate(url, &header)?;
        }
        Err(self.net(url, "401 Unauthorized"))
    }

    fn authenticate(&mut self, url: &str, header: &str) -> Result<()> {
        let (scheme, params) = challenge(header);
        let basic = |c: &(String, String)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.0, c.1))
            )
        };
        match scheme.as_str() {
            "basic" => {
                let c = self.creds.as_ref().ok_or_else(|| {
                    self.net(url, "401 Unauthorized: the registry wants credentials (KORGPKG_REGISTRY_USER/PASSWORD, REGISTRY_AUTH_FILE or ~/.docker/config.json)")
                })?;
                self.auth = Some(basic(c));
                Ok(())
            }
            "bearer" => {
                let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let realm = get("realm")
                    .ok_or_else(|| self.net(url, "401 with a Bearer challenge without realm"))?;
                if !(realm.starts_with("https://")
                    || (realm.starts_with("http://") && self.base.starts_with("http://")))
                {
                    return Err(self.net(url, format!("token realm {realm:?} is not https")));
                }
                let scope = get("scope")
                    .unwrap_or_else(|| format!("repository:{}:{}", self.name, self.actions));
                let mut query = vec![("scope", scope)];
                if let Some(s) = get("service") {
                    query.push(("service", s));
                }
                let token_url = reqwest::Url::parse_with_params(&realm, &query)
                    .map_err(|e| self.net(&realm, format!("bad token realm: {e}")))?;
                let mut rb = self.http.get(token_url);
                if let Some(c) = &self.creds {
                    rb = rb.header(reqwest::header::AUTHORIZATION, basic(c));
                }
                let resp = rb.send().map_err(|e| self.net(&realm, e))?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    let why = if self.creds.is_some() {
                        "the credentials for this registry were refused"
                    } else {
                        "the token server wants credentials (KORGPKG_REGISTRY_USER/PASSWORD, REGISTRY_AUTH_FILE or ~/.docker/config.json)"
                    };
                    return Err(self.net(&realm, format!("token request: {status}: {why}")));
                }
                if !status.is_success() {
                    return Err(self.net(&realm, format!("token request: {status}")));
                }
                let mut text = String::new();
                resp.take(1 << 20)
                    .read_to_string(&mut text)
                    .map_err(|e| self.net(&realm, format!("token response: {e}")))?;
                let body: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| self.net(&realm, format!("token response: {e}")))?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| self.net(&realm, "token response has no token"))?;
                self.auth = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(self.net(url, format!("401 Unauthorized ({header:?})"))),
        }
    }

    fn has_blob(&mut self, digest: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let u = url.clone();
        let resp = self.send(&url, &|c| Ok(c.head(&u)))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.net(&url, format!("HEAD blob: {s}"))),
        }
    }

    fn upload(&mut self, path: &Path, digest: &str, size: u64) -> Result<()> {
        let start = self.url("blobs/uploads/");
        let s = start.clone();
        let resp = self.send(&start, &|c| Ok(c.post(&s).header("Content-Length", "0")))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.net(&start, format!("starting an upload: {}", resp.status())));
        }
        let mut location = self.location(&start, &resp)?;
        let mut sent = 0u64;
        if let Some(chunk) = self.chunk.filter(|&c| c > 0 && size > c) {
            // Chunked upload: PATCH consecutive ranges, each answered with the next
            // Location, then PUT ?digest= with an empty body.
            while sent < size {
                let len = chunk.min(size - sent);
                let (l, file, start_at) = (location.clone(), path.to_path_buf(), sent);
                let resp = self.send(&location, &|c| {
                    let mut f = File::open(&file).map_err(|e| Error::Io {
                        context: format!("opening {}", file.display()),
                        source: e,
                    })?;
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start_at)).map_err(
                        |e| Error::Io {
                            context: format!("reading {}", file.display()),
                            source: e,
                        },
                    )?;
                    Ok(c.patch(&l)
                        .header("Content-Type", "application/octet-stream")
                        .header(
                            "Content-Range",
                            format!("{}-{}", start_at, start_at + len - 1),
                        )
                        .header("Content-Length", len.to_string())
                        .body(reqwest::blocking::Body::sized(f.take(len), len)))
                })?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.net(
                        &location,
                        format!("uploading a chunk of {digest}: {}", resp.status()),
                    ));
                }
                location = self.location(&location, &resp)?;
                sent += len;
            }
        }
        let mut put = location;
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str("digest=");
        put.push_str(digest);
        let p = put.clone();
        let file = path.to_path_buf();
        let rest = size - sent;
        let resp = self.send(&put, &|c| {
            if rest == 0 {
                return Ok(c.put(&p).header("Content-Length", "0"));
            }
            let f = File::open(&file).map_err(|e| Error::Io {
                context: format!("opening {}", file.display()),
                source: e,
            })?;
            Ok(c.put(&p)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", size.to_string())
                .body(reqwest::blocking::Body::sized(f, size)))
        })?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.net(&put, format!("uploading {digest}: {}", resp.status())));
        }
        Ok(())
    }

    /// The absolute upload URL of a response's `Location` (same registry only).
    fn location(&self, url: &str, resp: &Response) -> Result<String> {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| self.net(url, "upload response has no Location"))?
            .to_string();
        let abs = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            return Err(self.net(url, format!("bad upload Location {location:?}")));
        };
        if !abs.starts_with(&self.base) {
            return Err(self.net(url, format!("upload Location {abs:?} is another host")));
        }
        Ok(abs)
    }

    fn put_manifest(&mut self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        let url = self.url(&format!("manifests/{reference}"));
        let u = url.clone();
        let body = bytes.to_vec();
        let mt = media_type.to_string();
        let resp = self.send(&url, &|c| {
            Ok(c.put(&u)
                .header("Content-Type", mt.as_str())
                .body(body.clone()))
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().unwrap_or_default();
            let text: String = text.chars().take(300).collect();
            return Err(self.net(&url, format!("PUT manifest: {status} {}", text.trim())));
        }
        Ok(())
    }
}

/// A manifest or index read from the layout: digest, media type, bytes.
struct Doc {
    digest: String,
    media_type: String,
    bytes: Vec<u8>,
}

fn read_doc(layout: &Path, digest: &str, media_type: &str) -> Result<Doc> {
    let (_, bytes): (serde_json::Value, _) = layout::read_json_blob(layout, digest, media_type)?;
    Ok(Doc {
        digest: digest.to_string(),
        media_type: media_type.to_string(),
        bytes,
    })
}

/// The blobs (digest, size) a manifest names.
fn manifest_blobs(layout: &Path, doc: &Doc) -> Result<Vec<(String, u64)>> {
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(&doc.bytes)
        .map_err(|e| Error::input(layout, format!("manifest {}: {e}", doc.digest)))?;
    let mut blobs = vec![(m.config().digest().to_string(), m.config().size())];
    blobs.extend(
        m.layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size())),
    );
    Ok(blobs)
}

/// Push (see the module docs).
pub fn push(req: &PushRequest) -> Result<PushReport> {
    let dest = Reference::parse(&req.destination)?;
    if dest.digest.is_some() {
        return Err(Error::Usage(format!(
            "{}: push to a tag (NAME:TAG), not a digest",
            req.destination
        )));
    }
    let index_path = req.layout.join("index.json");
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&layout::read_small(&index_path)?)
            .map_err(|e| Error::input(&index_path, format!("not an OCI index: {e}")))?;
    let candidates: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| {
            req.tag.as_deref().is_none_or(|t| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|r| r == t)
            })
        })
        .collect();
    let mut digests: Vec<String> = candidates.iter().map(|d| d.digest().to_string()).collect();
    digests.dedup();
    let top = match (candidates.first(), digests.len()) {
        (Some(d), 1) => *d,
        (None, _) => {
            return Err(Error::input(
                &index_path,
                format!("no manifest tagged {:?}", req.tag.as_deref().unwrap_or("")),
            ))
        }
        _ => {
            return Err(Error::Usage(format!(
                "{}: several images; name one as oci:DIR:TAG",
                req.layout.display()
            )))
        }
    };
    let layout_tag = top
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .cloned();
    let tag = dest
        .tag
        .clone()
        .or(layout_tag)
        .ok_or_else(|| Error::Usage(format!("{}: name a tag (NAME:TAG)", req.destination)))?;
    check_tag(&tag)?;
    let top_doc = read_doc(
        &req.layout,
        top.digest().as_ref(),
        top.media_type().as_ref(),
    )?;
    // An index is pushed after its manifests; each manifest after its blobs.
    let mut docs = Vec::new();
    if top_doc.media_type == INDEX {
        let idx: oci_spec::image::ImageIndex = serde_json::from_slice(&top_doc.bytes)
            .map_err(|e| Error::input(&req.layout, format!("index {}: {e}", top_doc.digest)))?;
        for m in idx.manifests() {
            docs.push(read_doc(&req.layout, m.digest().as_ref(), MANIFEST)?);
        }
    } else if top_doc.media_type != MANIFEST {
        return Err(Error::input(
            &req.layout,
            format!("unsupported manifest media type {}", top_doc.media_type),
        ));
    }

    let mut session = Session::open(&dest, req.insecure, req.chunk_size, "pull,push")?;
    let mut uploaded = Vec::new();
    let mut existing = Vec::new();
    let mut manifests = Vec::new();
    let singles: Vec<&Doc> = if docs.is_empty() {
        vec![&top_doc]
    } else {
        docs.iter().collect()
    };
    let bar = req.progress.then(|| {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    for doc in &singles {
        for (digest, size) in manifest_blobs(&req.layout, doc)? {
            if uploaded.contains(&digest) || existing.contains(&digest) {
                continue;
            }
            let hex = sha256_hex(&digest).ok_or_else(|| {
                Error::input(&req.layout, format!("blob digest {digest:?} is not sha256"))
            })?;
            let path = req.layout.join("blobs/sha256").join(hex);
            if session.has_blob(&digest)? {
                existing.push(digest);
                continue;
            }
            if let Some(pb) = &bar {
                pb.set_message(format!("pushing {}", &hex[..12]));
                pb.inc_length(size);
            }
            session.upload(&path, &digest, size)?;
            if let Some(pb) = &bar {
                pb.inc(size);
            }
            uploaded.push(digest);
        }
        if !docs.is_empty() {
            session.put_manifest(&doc.digest, &doc.media_type, &doc.bytes)?;
            manifests.push(doc.digest.clone());
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    session.put_manifest(&tag, &top_doc.media_type, &top_doc.bytes)?;
    manifests.push(top_doc.digest.clone());
    Ok(PushReport {
        reference: format!("{}/{}:{tag}", dest.host, dest.name),
        digest: top_doc.digest,
        uploaded,
        existing,
        manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("docker://127.0.0.1:5000/korg/clang:18").expect("parses");
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.name, "korg/clang");
        assert_eq!(r.tag.as_deref(), Some("18"));
        assert!(r.loopback());
        assert!(!Reference::parse("registry.example.org/x")
            .expect("parses")
            .loopback());
        assert!(Reference::parse("noslash").is_err());
        assert!(Reference::parse("h/UPPER:1").is_err());
        assert!(Reference::parse("h/x:-bad").is_err());
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("docker://h:1/base@{d}")).expect("parses");
        assert_eq!((r.name.as_str(), r.tag, r.digest), ("base", None, Some(d)));
        assert!(Reference::parse("h/base@sha256:short").is_err());
    }

    #[test]
    fn challenges_parse() {
        let (s, p) = challenge(
            r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry".into()));
        assert_eq!(p[2].1, "repository:a:pull");
        assert_eq!(challenge("Basic realm=\"x\"").0, "basic");
    }
}
