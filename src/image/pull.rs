//! `--base docker://HOST[:PORT]/NAME[:TAG|@sha256:HEX]`: a base image pulled with the
//! OCI distribution API, through the same session (https rules, credentials, Basic and
//! Bearer authentication) as `image push`. The manifest is fetched with every manifest
//! and index media type accepted (OCI and Docker schema 2); from an index or manifest
//! list the manifest of the requested platform is taken. Manifests and the config are
//! bounded (`MAX_JSON`), each blob is streamed to a temp file, never past the size its
//! descriptor gives, and kept only if its SHA-256 is the digest it was asked for. Blobs
//! land in a content-addressed OCI layout in the cache (`<cache>/oci`), so a second
//! pull of the same base downloads nothing but the manifest (and not even that when the
//! reference is a digest already there).

use std::io::Read;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use super::layout::{self, BlobStore, HashReader, MAX_JSON};
use super::push::{Reference, Session};
use super::{INDEX, MANIFEST};
use crate::error::{Error, IoContext, Result};

/// Docker schema 2 media types (the registry's answer may use them).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Most layers a base may have, and the largest layer blob accepted.
const MAX_LAYERS: usize = 1000;
const MAX_LAYER: u64 = 64 << 30;
/// Most entries of an index.
const MAX_MANIFESTS: usize = 1000;

/// A base pulled into the cache: the layout directory and the manifest's digest.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub dir: PathBuf,
    pub manifest: String,
    /// The reference as pulled (`HOST/NAME:TAG` or `HOST/NAME@DIGEST`).
    pub name: String,
}

/// The media type of a manifest document: its `mediaType`, else the response's
/// `Content-Type`, else guessed from its shape.
fn media_type(bytes: &[u8], content_type: Option<&str>) -> String {
    let body: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    if let Some(m) = body
        .as_ref()
        .and_then(|b| b.get("mediaType"))
        .and_then(|m| m.as_str())
    {
        return m.to_string();
    }
    if let Some(c) = content_type {
        let c = c.split(';').next().unwrap_or(c).trim();
        if !c.is_empty() && c != "application/json" {
            return c.to_string();
        }
    }
    if body.as_ref().is_some_and(|b| b.get("manifests").is_some()) {
        INDEX.to_string()
    } else {
        MANIFEST.to_string()
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// GET a manifest (by tag or digest), check it against `expect` and keep it in the
/// store. A digest already in the store is read from there.
fn manifest(
    s: &mut Session,
    store: &BlobStore,
    reference: &str,
    expect: Option<&str>,
) -> Result<(String, String, Vec<u8>)> {
    if let Some(d) = expect {
        if store.path(d)?.is_file() {
            let bytes = layout::read_small(&store.path(d)?)?;
            if digest_of(&bytes) == d {
                let mt = media_type(&bytes, None);
                return Ok((d.to_string(), mt, bytes));
            }
        }
    }
    let url = s.url(&format!("manifests/{reference}"));
    let u = url.clone();
    let accept = [MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
    let resp = s.send(&url, &|c| Ok(c.get(&u).header("Accept", accept.as_str())))?;
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(s.net(&url, "no such image (404 Not Found)")),
        st => return Err(s.net(&url, format!("GET manifest: {st}"))),
    }
    if resp.content_length().is_some_and(|n| n > MAX_JSON) {
        return Err(s.net(&url, format!("manifest larger than {MAX_JSON} bytes")));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let header_digest = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let mut bytes = Vec::new();
    resp.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| s.net(&url, format!("reading the manifest: {e}")))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(s.net(&url, format!("manifest larger than {MAX_JSON} bytes")));
    }
    let actual = digest_of(&bytes);
    let wanted = expect.map(str::to_string).or_else(|| {
        header_digest
            .clone()
            .filter(|d| layout::sha256_hex(d).is_some())
    });
    if let Some(w) = wanted {
        if actual != w {
            return Err(Error::verify(
                &url,
                format!("manifest {w} does not match its content ({actual})"),
            ));
        }
    }
    store.put(&bytes)?;
    let mt = media_type(&bytes, content_type.as_deref());
    Ok((actual, mt, bytes))
}

/// GET a blob into the store, streamed, at most `size` bytes, kept only if it hashes to
/// `digest`. A blob already in the store is kept (it was checked when it was written;
/// the image build checks it again as it copies it).
fn blob(s: &mut Session, store: &BlobStore, digest: &str, size: u64) -> Result<PathBuf> {
    let path = store.path(digest)?;
    if path.is_file() {
        return Ok(path);
    }
    let url = s.url(&format!("blobs/{digest}"));
    let u = url.clone();
    let resp = s.send(&url, &|c| Ok(c.get(&u)))?;
    if resp.status() != StatusCode::OK {
        return Err(s.net(&url, format!("GET blob {digest}: {}", resp.status())));
    }
    if let Some(n) = resp.content_length().filter(|&n| n != size) {
        return Err(Error::verify(
            &url,
            format!("blob {digest} is {n} bytes, its descriptor says {size}"),
        ));
    }
    let mut reader = HashReader::new(resp.take(size + 1));
    let mut tmp = store.temp()?;
    layout::copy(&mut reader, tmp.as_file_mut())
        .map_err(|e| s.net(&url, format!("downloading blob {digest}: {e}")))?;
    let (actual, count) = reader.finish();
    if count != size || actual != digest {
        return Err(Error::verify(
            &url,
            format!(
                "blob {digest} does not match its content ({actual}, {count} bytes; expected {size})"
            ),
        ));
    }
    store.commit(tmp, digest)?;
    Ok(path)
}

/// Pull `reference` for `linux/arch[/variant]` into `<cache>/oci` (see the module docs).
pub fn pull(
    reference: &str,
    arch: &str,
    variant: Option<&str>,
    insecure: bool,
    cache: &Path,
) -> Result<Pulled> {
    let r = Reference::parse(reference)?;
    let root = cache.join("oci");
    std::fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
    let store = BlobStore::create(&root)?;
    let mut s = Session::open(&r, insecure, None, "pull")?;
    let (tag_or_digest, name) = match (&r.digest, &r.tag) {
        (Some(d), _) => (d.clone(), format!("{}/{}@{d}", r.host, r.name)),
        (None, Some(t)) => (t.clone(), format!("{}/{}:{t}", r.host, r.name)),
        (None, None) => (
            "latest".to_string(),
            format!("{}/{}:latest", r.host, r.name),
        ),
    };
    let (mut digest, mut mt, mut bytes) =
        manifest(&mut s, &store, &tag_or_digest, r.digest.as_deref())?;
    if mt == INDEX || mt == DOCKER_LIST {
        let index: oci_spec::image::ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&name, format!("index {digest}: {e}")))?;
        if index.manifests().len() > MAX_MANIFESTS {
            return Err(Error::input(
                &name,
                format!("index {digest} has more than {MAX_MANIFESTS} entries"),
            ));
        }
        let matches = |d: &&oci_spec::image::Descriptor, want_variant: bool| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux"
                    && p.architecture().to_string() == arch
                    && (!want_variant || p.variant().as_deref() == variant)
            })
        };
        let chosen = index
            .manifests()
            .iter()
            .find(|d| matches(d, true))
            .or_else(|| index.manifests().iter().find(|d| matches(d, false)))
            .ok_or_else(|| {
                Error::input(&name, format!("the index has no manifest for linux/{arch}"))
            })?;
        let d = chosen.digest().to_string();
        if layout::sha256_hex(&d).is_none() {
            return Err(Error::input(
                &name,
                format!("manifest digest {d:?} is not sha256"),
            ));
        }
        (digest, mt, bytes) = manifest(&mut s, &store, &d, Some(&d))?;
    }
    if mt != MANIFEST && mt != DOCKER_MANIFEST {
        return Err(Error::input(
            &name,
            format!("unsupported manifest media type {mt:?}"),
        ));
    }
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&name, format!("manifest {digest}: {e}")))?;
    if m.layers().len() > MAX_LAYERS {
        return Err(Error::input(
            &name,
            format!("more than {MAX_LAYERS} layers"),
        ));
    }
    let check = |d: &str, size: u64, max: u64| -> Result<()> {
        if layout::sha256_hex(d).is_none() {
            return Err(Error::input(
                &name,
                format!("blob digest {d:?} is not sha256"),
            ));
        }
        if size > max {
            return Err(Error::input(
                &name,
                format!("blob {d} is {size} bytes, more than {max}"),
            ));
        }
        Ok(())
    };
    let config = m.config().digest().to_string();
    check(&config, m.config().size(), MAX_JSON)?;
    blob(&mut s, &store, &config, m.config().size())?;
    for l in m.layers() {
        let d = l.digest().to_string();
        check(&d, l.size(), MAX_LAYER)?;
        blob(&mut s, &store, &d, l.size())?;
    }
    Ok(Pulled {
        dir: root,
        manifest: digest,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_document_or_the_header() {
        assert_eq!(
            media_type(br#"{"mediaType":"x/y","layers":[]}"#, Some("a/b")),
            "x/y"
        );
        assert_eq!(
            media_type(br#"{"layers":[]}"#, Some(DOCKER_MANIFEST)),
            DOCKER_MANIFEST
        );
        assert_eq!(
            media_type(br#"{"manifests":[]}"#, Some("application/json")),
            INDEX
        );
        assert_eq!(media_type(b"{}", None), MANIFEST);
    }
}
