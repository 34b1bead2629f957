//! The image stage: OCI container images carrying korgpkg's packages, assembled without
//! a container daemon and without running anything inside the image.
//!
//! `build` reads a base (an OCI layout, or a root filesystem tarball that becomes the
//! base layer as it is), checks every package's `Pre-Depends`/`Depends` against the
//! base's `/var/lib/dpkg/status` before writing anything, then writes one layer per
//! package from the package's `data.tar` only (so a package's layer has the same digest
//! on every base), a last small layer that records the packages in the dpkg database
//! (and the build user), the image configuration, the manifest and `index.json`: an OCI
//! image layout directory, or a docker-archive tar. Everything is written into a temp
//! directory beside the output and renamed into place at the end. The same inputs and
//! `SOURCE_DATE_EPOCH` give the same digests. [`push`] sends a layout to a registry.

pub mod archive;
pub mod containerfile;
pub mod dpkgdb;
pub mod layer;
pub mod layout;
pub mod pull;
pub mod push;
pub mod set;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Serialize;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub use layer::LayerCompression;
use layer::{DebControl, Layer};
use layout::{Blob, BlobStore, HashReader};

/// The default PATH of a configuration without one (Debian's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest base file (dpkg status, passwd, group) read into memory.
const MAX_BASE_FILE: u64 = 64 << 20;
/// Media types.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Annotation naming a manifest's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where the image's base comes from.
#[derive(Debug, Clone)]
pub enum Base {
    /// An OCI image layout directory, optionally a tag of it (`oci:DIR[:TAG]`).
    Oci { dir: PathBuf, tag: Option<String> },
    /// A root filesystem tarball (plain, gzip or zstd), used as the base layer as is.
    Rootfs(PathBuf),
    /// An image in a registry (`docker://HOST[:PORT]/NAME[:TAG|@sha256:HEX]`), pulled
    /// into the cache first.
    Registry(String),
    /// A docker-archive tar, optionally one image of it (`docker-archive:FILE[:TAG]`).
    DockerArchive { file: PathBuf, tag: Option<String> },
}

impl Base {
    /// Parse `oci:DIR[:TAG]`, `docker://REF`, `docker-archive:FILE[:TAG]` (or a bare
    /// directory, an OCI layout).
    pub fn parse(text: &str) -> Result<Base> {
        if let Some(rest) = text.strip_prefix("docker://") {
            push::Reference::parse(rest)?;
            return Ok(Base::Registry(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            // FILE[:NAME:TAG]: the longest prefix naming an existing file is the file.
            let mut split = (rest, None);
            for (i, _) in rest.match_indices(':').rev() {
                if Path::new(&rest[..i]).is_file() {
                    split = (&rest[..i], Some(rest[i + 1..].to_string()));
                    break;
                }
            }
            if Path::new(rest).is_file() {
                split = (rest, None);
            }
            return Ok(Base::DockerArchive {
                file: PathBuf::from(split.0),
                tag: split.1.filter(|t| !t.is_empty()),
            });
        }
        Base::parse_oci(text)
    }

    /// Parse `oci:DIR[:TAG]` (or a bare directory).
    pub fn parse_oci(text: &str) -> Result<Base> {
        let (dir, tag) = Base::oci_parts(text)?;
        Ok(Base::Oci { dir, tag })
    }

    /// The directory and tag of `oci:DIR[:TAG]` (or a bare directory).
    pub fn oci_parts(text: &str) -> Result<(PathBuf, Option<String>)> {
        let rest = text.strip_prefix("oci:").unwrap_or(text);
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t.to_string())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            check_tag(t)?;
        }
        Ok((PathBuf::from(dir), tag))
    }
}

/// Output format of `image build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// An OCI image layout directory.
    Oci,
    /// A `docker save` tar (`docker load`, `podman load`, `skopeo copy docker-archive:`).
    DockerArchive,
}

/// A build user: `uid:gid`, named `kbuild`, home `/home/kbuild`.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Parse `UID:GID` (or `UID`, gid = uid).
    pub fn parse(text: &str) -> Result<User> {
        let bad = || Error::Usage(format!("--user {text:?}: expected UID:GID (numbers)"));
        let (u, g) = text.split_once(':').unwrap_or((text, text));
        let uid: u32 = u.parse().map_err(|_| bad())?;
        let gid: u32 = g.parse().map_err(|_| bad())?;
        if uid == 0 {
            return Err(Error::Usage(
                "--user 0 is root: omit --user for a root image".into(),
            ));
        }
        Ok(User { uid, gid })
    }
}

/// The build user's name and home.
pub const USER_NAME: &str = "kbuild";
pub const USER_HOME: &str = "/home/kbuild";

/// One platform of an image: its base and its packages (.deb files, in layer order).
#[derive(Debug, Clone)]
pub struct PlatformInput {
    pub base: Base,
    pub packages: Vec<PathBuf>,
}

/// What `image build` is asked to do. One platform makes an image manifest; several
/// make an image index over one manifest per platform.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub platforms: Vec<PlatformInput>,
    pub out: PathBuf,
    pub format: OutputFormat,
    pub compression: LayerCompression,
    pub user: Option<User>,
    pub workdir: Option<String>,
    /// Image name (title, docker-archive `RepoTags`) [default: the first package's name].
    pub name: Option<String>,
    /// Tags [default: the first package's version].
    pub tags: Vec<String>,
    /// `org.opencontainers.image.source` [default: the first package's upstream URL].
    pub source: Option<String>,
    /// Clamp for mtimes and the `created` time (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<u64>,
    /// `org.opencontainers.image.base.name` [default: from the base: the registry
    /// reference, the layout or archive and tag, the rootfs file name].
    pub base_name: Option<String>,
    /// Where bases pulled from a registry are kept (`<cache>/oci`, by digest).
    pub cache_dir: PathBuf,
    /// Allow plain http (and unverified https) to a base's registry.
    pub insecure_registry: bool,
}

/// One package's layer in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PackageLayer {
    pub package: String,
    pub version: String,
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
}

/// One platform's image in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformReport {
    pub platform: String,
    pub manifest: String,
    pub config: String,
    pub base_name: String,
    pub base_digest: String,
    pub layers: Vec<PackageLayer>,
    pub dpkg_layer: String,
}

/// The result of `image build`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub out: PathBuf,
    pub format: OutputFormat,
    /// The digest `index.json` names: the manifest, or the index of several platforms.
    pub manifest: String,
    pub media_type: String,
    pub tags: Vec<String>,
    pub platforms: Vec<PlatformReport>,
}

/// A tag as the distribution spec allows it.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "tag {tag:?}: letters, digits, _ . - (at most 128, not starting with . or -)"
        )))
    }
}

/// A repository name component as the distribution spec allows it.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "image name {name:?}: lowercase letters, digits and . _ - between slashes"
        )))
    }
}

/// A Debian version as a tag (`18.1.0~rc3-1` → `18.1.0-rc3-1`, `1:2.0` → `2.0`).
fn version_tag(version: &str) -> String {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

/// The OCI architecture (GOARCH) of a Debian architecture.
pub fn oci_arch(deb: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match deb {
        "amd64" => ("amd64", None),
        "arm64" => ("arm64", Some("v8")),
        "armhf" => ("arm", Some("v7")),
        "armel" => ("arm", Some("v5")),
        "i386" => ("386", None),
        "ppc64el" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        _ => return None,
    })
}

/// The Debian architecture of the machine korgpkg runs on.
pub fn host_deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "x86" => "i386",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Find `name[=version]` (the highest version if none is given) of `arch` (or `all`)
/// among a korgpkg repository's published .deb files.
pub fn resolve_package(repo: &Path, spec: &str, arch: &str) -> Result<PathBuf> {
    let (name, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let mut found: Vec<_> = crate::publish::list(repo)?
        .into_iter()
        .filter(|p| p.format == crate::model::Format::Deb && p.name == name)
        .filter(|p| p.arch == arch || p.arch == "all")
        .filter(|p| version.is_none_or(|v| p.version == v))
        .collect();
    found.sort_by(|a, b| crate::model::relation::compare_versions(&a.version, &b.version));
    let pkg = found.pop().ok_or_else(|| {
        Error::Usage(format!(
            "{}: no published .deb {spec} for {arch}",
            repo.display()
        ))
    })?;
    let rel = Path::new(&pkg.path);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::input(
            repo,
            format!(
                "repository state names pool file {:?} outside the repository",
                pkg.path
            ),
        ));
    }
    Ok(repo.join(rel))
}

/// Files of the base the image stage reads.
#[derive(Debug, Default)]
struct BaseFiles {
    status: Option<String>,
    passwd: Option<String>,
    group: Option<String>,
}

impl BaseFiles {
    fn slot(&mut self, path: &str) -> Option<&mut Option<String>> {
        match path {
            "var/lib/dpkg/status" => Some(&mut self.status),
            "etc/passwd" => Some(&mut self.passwd),
            "etc/group" => Some(&mut self.group),
            _ => None,
        }
    }
}

/// Read a layer's tar stream: the base files it holds (later layers override earlier
/// ones) and the digest of the whole uncompressed stream (its `diff_id`).
fn scan_layer(reader: impl Read, origin: &Path, files: &mut BaseFiles) -> Result<String> {
    let bad = |e: io::Error| Error::input(origin, format!("unreadable layer tar: {e}"));
    let mut archive = tar::Archive::new(HashReader::new(reader));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw);
        let path = path.trim_start_matches("./").trim_start_matches('/');
        let path = path.to_string();
        let kind = entry.header().entry_type();
        let Some(slot) = files.slot(&path) else {
            continue;
        };
        if kind != tar::EntryType::Regular {
            continue;
        }
        if entry.size() > MAX_BASE_FILE {
            return Err(Error::input(
                origin,
                format!("/{path} is larger than {MAX_BASE_FILE} bytes"),
            ));
        }
        let mut text = String::new();
        (&mut entry)
            .take(MAX_BASE_FILE)
            .read_to_string(&mut text)
            .map_err(|e| Error::input(origin, format!("/{path} is not UTF-8 text: {e}")))?;
        *slot = Some(text);
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(bad)?;
    Ok(rest.finish().0)
}

/// A base layer to copy into the output.
struct BaseLayer {
    src: PathBuf,
    /// `(offset, size)` of the layer in `src` (a docker-archive member), or all of it.
    range: Option<(u64, u64)>,
    layer: Layer,
}

/// The base as read: its layers, configuration (if it has one) and files.
struct BaseImage {
    name: String,
    digest: String,
    layers: Vec<BaseLayer>,
    config: Option<ImageConfiguration>,
    files: BaseFiles,
}

/// The OCI layer media type of a tar stream by its first bytes (plain, gzip or zstd).
fn tar_layer_type(head: &[u8]) -> Option<&'static str> {
    match crate::payload::detect_compression(head) {
        Some(crate::payload::Compression::Gzip) => {
            Some("application/vnd.oci.image.layer.v1.tar+gzip")
        }
        Some(crate::payload::Compression::Zstd) => {
            Some("application/vnd.oci.image.layer.v1.tar+zstd")
        }
        Some(crate::payload::Compression::None) => Some("application/vnd.oci.image.layer.v1.tar"),
        _ => None,
    }
}

/// A base's config must be for `arch` and name one `diff_id` per layer.
fn check_base_config(
    config: &ImageConfiguration,
    arch: &str,
    layers: usize,
    origin: &Path,
) -> Result<()> {
    if config.architecture().to_string() != arch {
        return Err(Error::input(
            origin,
            format!(
                "the base is for {}, the packages for {arch}",
                config.architecture()
            ),
        ));
    }
    if config.rootfs().diff_ids().len() != layers {
        return Err(Error::input(
            origin,
            "the base's config and manifest list different numbers of layers",
        ));
    }
    Ok(())
}

fn read_rootfs(path: &Path) -> Result<BaseImage> {
    let mut head = [0u8; 512];
    let n = fs::File::open(path)
        .and_then(|f| f.take(512).read(&mut head))
        .ctx(|| format!("reading {}", path.display()))?;
    let media_type = tar_layer_type(&head[..n]).ok_or_else(|| {
        Error::input(
            path,
            "a base rootfs must be a tar, .tar.gz or .tar.zst (OCI layers are not xz)",
        )
    })?;
    let mut files = BaseFiles::default();
    let diff_id = scan_layer(layer::open_layer(path, media_type)?, path, &mut files)?;
    Ok(BaseImage {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        // The blob digest is computed when the tarball is copied into the image.
        digest: String::new(),
        layers: vec![BaseLayer {
            src: path.to_path_buf(),
            range: None,
            layer: Layer {
                blob: Blob {
                    digest: String::new(),
                    size: 0,
                },
                diff_id,
                media_type: media_type.to_string(),
            },
        }],
        config: None,
        files,
    })
}

/// The manifest of an OCI layout: by tag, or the only one; an index is searched for
/// the `arch` manifest.
fn select_manifest(dir: &Path, tag: Option<&str>, arch: &str) -> Result<(String, ImageManifest)> {
    let index_path = dir.join("index.json");
    let bytes = layout::read_small(&index_path)?;
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&index_path, format!("not an OCI index: {e}")))?;
    let candidates: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| {
            tag.is_none_or(|t| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|r| r == t)
            })
        })
        .collect();
    let desc = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::input(
                &index_path,
                format!("no manifest tagged {:?}", tag.unwrap_or("")),
            ))
        }
        _ => {
            return Err(Error::Usage(format!(
                "{}: several manifests; name one as oci:{}:TAG",
                index_path.display(),
                dir.display()
            )))
        }
    };
    let digest = desc.digest().to_string();
    if desc.media_type().to_string() == INDEX {
        let (nested, _): (ImageIndex, _) = layout::read_json_blob(dir, &digest, "image index")?;
        let found = nested.manifests().iter().find(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| p.architecture().to_string() == arch)
        });
        let d = found.ok_or_else(|| {
            Error::input(dir, format!("the image index has no manifest for {arch}"))
        })?;
        let digest = d.digest().to_string();
        let (m, _) = layout::read_json_blob(dir, &digest, "image manifest")?;
        return Ok((digest, m));
    }
    let (m, _) = layout::read_json_blob(dir, &digest, "image manifest")?;
    Ok((digest, m))
}

fn read_oci(dir: &Path, tag: Option<&str>, arch: &str) -> Result<BaseImage> {
    let (digest, manifest) = select_manifest(dir, tag, arch)?;
    let name = match tag {
        Some(t) => format!("oci:{}:{t}", dir.display()),
        None => format!("oci:{}", dir.display()),
    };
    read_oci_manifest(dir, digest, &manifest, name, arch)
}

/// The OCI layer media type of a layer descriptor's (Docker's are mapped to OCI's, as
/// the image korgpkg writes is an OCI image).
fn oci_layer_type(media_type: &str, origin: &Path) -> Result<String> {
    Ok(match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip".to_string()
        }
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd".to_string()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar".to_string()
        }
        m if m.starts_with("application/vnd.oci.image.layer.v1.tar") => m.to_string(),
        m => {
            return Err(Error::input(
                origin,
                format!("unsupported base layer media type {m:?}"),
            ))
        }
    })
}

/// A base from one manifest of an OCI layout (or the cache a registry base is pulled
/// into): its config and every layer, each checked against its `diff_id`.
fn read_oci_manifest(
    dir: &Path,
    digest: String,
    manifest: &ImageManifest,
    name: String,
    arch: &str,
) -> Result<BaseImage> {
    let config_digest = manifest.config().digest().to_string();
    let (config, _): (ImageConfiguration, _) =
        layout::read_json_blob(dir, &config_digest, "image config")?;
    check_base_config(&config, arch, manifest.layers().len(), dir)?;
    let diff_ids = config.rootfs().diff_ids();
    let mut files = BaseFiles::default();
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let d = desc.digest().to_string();
        let hex = layout::sha256_hex(&d)
            .ok_or_else(|| Error::input(dir, format!("layer digest {d:?} is not sha256")))?;
        let src = dir.join("blobs/sha256").join(hex);
        let media_type = oci_layer_type(desc.media_type().as_ref(), &src)?;
        let actual = scan_layer(layer::open_layer(&src, &media_type)?, &src, &mut files)?;
        if &actual != diff_id {
            return Err(Error::input(
                &src,
                format!("layer content is {actual}, the base's config says {diff_id}"),
            ));
        }
        layers.push(BaseLayer {
            src,
            range: None,
            layer: Layer {
                blob: Blob {
                    digest: d,
                    size: desc.size(),
                },
                diff_id: diff_id.clone(),
                media_type,
            },
        });
    }
    Ok(BaseImage {
        name,
        digest,
        layers,
        config: Some(config),
        files,
    })
}

/// A base from a docker-archive (see [`archive`]): the config by its path in
/// `manifest.json`, each layer member read in place and checked against its `diff_id`.
fn read_docker_archive(file: &Path, tag: Option<&str>, arch: &str) -> Result<BaseImage> {
    let archive = archive::DockerArchive::open(file)?;
    let image = archive.image(tag)?;
    let config_bytes = archive.read_small(&image.config)?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| Error::input(file, format!("{}: not an image config: {e}", image.config)))?;
    check_base_config(&config, arch, image.layers.len(), file)?;
    let diff_ids = config.rootfs().diff_ids();
    let mut files = BaseFiles::default();
    let mut layers = Vec::new();
    for (member, diff_id) in image.layers.iter().zip(diff_ids) {
        let range = archive.member(member)?;
        let mut head = [0u8; 512];
        let n = layout::open_range(file, Some(range))?
            .read(&mut head)
            .ctx(|| format!("reading {member} in {}", file.display()))?;
        let media_type = tar_layer_type(&head[..n]).ok_or_else(|| {
            Error::input(
                file,
                format!("{member}: a layer must be a tar, .tar.gz or .tar.zst"),
            )
        })?;
        // One pass: the blob's digest outside, the diff_id and base files inside.
        let origin = file.join(member);
        let (outer_tx, outer_rx) = std::sync::mpsc::channel();
        let outer = ReportingHashReader {
            inner: Some(HashReader::new(layout::open_range(file, Some(range))?)),
            done: outer_tx,
        };
        let actual = scan_layer(
            layer::decoder(outer, media_type, &origin)?,
            &origin,
            &mut files,
        )?;
        let (blob_digest, size) = outer_rx.recv().unwrap_or_default();
        if &actual != diff_id {
            return Err(Error::input(
                file,
                format!("{member}: layer content is {actual}, the base's config says {diff_id}"),
            ));
        }
        if size != range.1 {
            return Err(Error::input(file, format!("{member}: truncated layer")));
        }
        layers.push(BaseLayer {
            src: file.to_path_buf(),
            range: Some(range),
            layer: Layer {
                blob: Blob {
                    digest: blob_digest,
                    size,
                },
                diff_id: diff_id.clone(),
                media_type: media_type.to_string(),
            },
        });
    }
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match image.repo_tags.iter().flatten().next() {
        Some(t) => t.clone(),
        None => file_name,
    };
    Ok(BaseImage {
        name,
        // A docker-archive has no manifest digest: the image ID (config digest) names it.
        digest: format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&config_bytes))
        ),
        layers,
        config: Some(config),
        files,
    })
}

/// A [`HashReader`] that drains its input to the end when dropped and sends the digest
/// and count: the layer decoder owns it and may stop before the compressed stream's end.
struct ReportingHashReader<R: Read> {
    inner: Option<HashReader<R>>,
    done: std::sync::mpsc::Sender<(String, u64)>,
}

impl<R: Read> Read for ReportingHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

impl<R: Read> Drop for ReportingHashReader<R> {
    fn drop(&mut self) {
        if let Some(mut r) = self.inner.take() {
            let _ = io::copy(&mut r, &mut io::sink());
            let _ = self.done.send(r.finish());
        }
    }
}

/// The package fields the image needs from a control file.
struct PackageInfo {
    control: DebControl,
    name: String,
    version: String,
    arch: String,
    fields: BTreeMap<String, String>,
}

fn package_info(path: &Path) -> Result<PackageInfo> {
    let control = layer::read_control(path)?;
    let fields = crate::package::control::parse(path, &control.control)?;
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let (name, version, arch) = (get("Package"), get("Version"), get("Architecture"));
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !name_ok {
        return Err(Error::input(path, format!("control: bad Package {name:?}")));
    }
    if version.is_empty() || version.contains(char::is_whitespace) {
        return Err(Error::input(
            path,
            format!("control: bad Version {version:?}"),
        ));
    }
    Ok(PackageInfo {
        control,
        name,
        version,
        arch,
        fields,
    })
}

/// A platform read and checked, before anything is written.
struct Prepared {
    infos: Vec<PackageInfo>,
    arch: &'static str,
    variant: Option<&'static str>,
    base: BaseImage,
    status_text: String,
    user_files: Option<(String, String)>,
}

/// Read a platform's packages and base, check the dependencies and the build user.
fn prepare(input: &PlatformInput, req: &BuildRequest) -> Result<Prepared> {
    let user = req.user;
    if input.packages.is_empty() {
        return Err(Error::Usage(
            "image build: name at least one package".into(),
        ));
    }
    let infos = input
        .packages
        .iter()
        .map(|p| package_info(p))
        .collect::<Result<Vec<_>>>()?;
    let deb_arch = infos
        .iter()
        .map(|i| i.arch.as_str())
        .find(|a| *a != "all")
        .unwrap_or_else(|| host_deb_arch())
        .to_string();
    for i in &infos {
        if i.arch != deb_arch && i.arch != "all" {
            return Err(Error::Usage(format!(
                "{}: {} is for {}, the image for {deb_arch}",
                i.control.path.display(),
                i.name,
                i.arch
            )));
        }
    }
    let (arch, variant) = oci_arch(&deb_arch).ok_or_else(|| {
        Error::Usage(format!(
            "no OCI platform for Debian architecture {deb_arch}"
        ))
    })?;
    let (mut base, base_origin) = match &input.base {
        Base::Rootfs(p) => (read_rootfs(p)?, p.clone()),
        Base::Oci { dir, tag } => (read_oci(dir, tag.as_deref(), arch)?, dir.clone()),
        Base::DockerArchive { file, tag } => (
            read_docker_archive(file, tag.as_deref(), arch)?,
            file.clone(),
        ),
        Base::Registry(reference) => {
            let pulled = pull::pull(
                reference,
                arch,
                variant,
                req.insecure_registry,
                &req.cache_dir,
            )?;
            let (m, _): (ImageManifest, _) =
                layout::read_json_blob(&pulled.dir, &pulled.manifest, "image manifest")?;
            let base = read_oci_manifest(&pulled.dir, pulled.manifest, &m, pulled.name, arch)?;
            (base, PathBuf::from(reference))
        }
    };
    if let Some(n) = &req.base_name {
        base.name = n.clone();
    }

    // Dependencies: every relation must be met by the base or the image's packages.
    let status_text = base.files.status.clone().unwrap_or_default();
    let mut status = dpkgdb::Status::parse(&status_text);
    for i in &infos {
        status.add_control(&i.control.control);
    }
    let mut missing: Vec<String> = Vec::new();
    for i in &infos {
        for m in status.missing(&i.control.control) {
            let m = format!("{m} (for {})", i.name);
            if !missing.contains(&m) {
                missing.push(m);
            }
        }
    }
    if !missing.is_empty() {
        let hint = dpkgdb::include_hint(&missing);
        let what = if base.files.status.is_none() {
            "has no /var/lib/dpkg/status and lacks"
        } else {
            "lacks"
        };
        return Err(Error::input(
            &base_origin,
            format!(
                "the base {what} {}; build a base that has them, e.g. `mmdebstrap --variant=minbase --include={hint} bookworm base.tar`",
                missing.join(", ")
            ),
        ));
    }
    let user_files = match user {
        Some(u) => Some(
            dpkgdb::add_user(
                base.files.passwd.as_deref().unwrap_or(""),
                base.files.group.as_deref().unwrap_or(""),
                USER_NAME,
                u.uid,
                u.gid,
                USER_HOME,
            )
            .map_err(|m| Error::input(&base_origin, m))?,
        ),
        None => None,
    };

    Ok(Prepared {
        infos,
        arch,
        variant,
        base,
        status_text,
        user_files,
    })
}

/// Write one platform's layers, config and manifest into `store`.
fn write_platform(
    store: &BlobStore,
    prepared: Prepared,
    req: &BuildRequest,
    name: &str,
    tags: &[String],
) -> Result<(PlatformReport, Blob, serde_json::Value, Vec<String>, u64)> {
    let Prepared {
        infos,
        arch,
        variant,
        mut base,
        status_text,
        user_files,
    } = prepared;
    for b in &mut base.layers {
        if b.layer.blob.digest.is_empty() {
            b.layer.blob = store.copy_hashed(&b.src, b.range)?;
            base.digest = b.layer.blob.digest.clone();
        } else {
            store.copy_verified(&b.src, b.range, &b.layer.blob, "base layer")?;
        }
    }
    let clamp = req.source_date_epoch;
    let mut newest = 0u64;
    let mut layers: Vec<(Layer, String)> = Vec::new();
    let mut report_layers = Vec::new();
    let mut lists = Vec::new();
    let mut bins: Vec<String> = Vec::new();
    for i in &infos {
        let (l, list, n) = layer::package_layer(&i.control.path, store, req.compression, clamp)?;
        newest = newest.max(n);
        for b in layer::bin_dirs(&list) {
            if !bins.contains(&b) {
                bins.push(b);
            }
        }
        report_layers.push(PackageLayer {
            package: i.name.to_string(),
            version: i.version.clone(),
            digest: l.blob.digest.clone(),
            diff_id: l.diff_id.clone(),
            size: l.blob.size,
        });
        layers.push((l, format!("korgpkg image: {} {}", i.name, i.version)));
        lists.push(list);
    }
    let time = clamp.unwrap_or(newest);

    // The dpkg database layer.
    let mut db = layer::LayerWriter::new(store, req.compression)?;
    if let Some((passwd, group)) = &user_files {
        db.file("etc/group", 0o644, time, group.as_bytes())?;
        db.file("etc/passwd", 0o644, time, passwd.as_bytes())?;
        if let Some(u) = req.user {
            db.dir(
                USER_HOME.trim_start_matches('/'),
                0o755,
                time,
                (u64::from(u.uid), u64::from(u.gid)),
            )?;
        }
    }
    for (i, list) in infos.iter().zip(&lists) {
        let mut text = list.join("\n");
        text.push('\n');
        db.file(
            &format!("var/lib/dpkg/info/{}.list", i.name),
            0o644,
            time,
            text.as_bytes(),
        )?;
        if !i.control.md5sums.is_empty() {
            db.file(
                &format!("var/lib/dpkg/info/{}.md5sums", i.name),
                0o644,
                time,
                i.control.md5sums.as_bytes(),
            )?;
        }
    }
    let controls: Vec<&str> = infos.iter().map(|i| i.control.control.as_str()).collect();
    let new_status = dpkgdb::Status::parse(&status_text).with_packages(&controls);
    db.file("var/lib/dpkg/status", 0o644, time, new_status.as_bytes())?;
    let db_layer = db.finish(store)?;
    let dpkg_digest = db_layer.blob.digest.clone();
    let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    layers.push((
        db_layer,
        format!("korgpkg image: dpkg database ({})", names.join(" ")),
    ));

    // Labels and annotations.
    let created = crate::package::rfc3339(time);
    let first = &infos[0];
    let source = req
        .source
        .clone()
        .or_else(|| first.fields.get("Korg-Upstream-URL").cloned())
        .or_else(|| first.fields.get("Homepage").cloned())
        .unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    let oci = |k: &str| format!("org.opencontainers.image.{k}");
    annotations.insert(oci("title"), name.to_string());
    annotations.insert(oci("version"), tags[0].clone());
    annotations.insert(oci("created"), created.clone());
    if !source.is_empty() {
        annotations.insert(oci("source"), source);
    }
    annotations.insert(oci("base.name"), base.name.to_string());
    annotations.insert(oci("base.digest"), base.digest.clone());
    let mut labels = annotations.clone();
    for i in &infos {
        for (field, key) in [
            ("Korg-Upstream-URL", "upstream-url"),
            ("Korg-Upstream-SHA256", "upstream-sha256"),
            ("Korg-Upstream-Signer", "upstream-signer"),
            ("Korg-Upstream-Sums-Signer", "upstream-sums-signer"),
        ] {
            if let Some(v) = i.fields.get(field) {
                labels.insert(format!("org.kernel.korgpkg.{}.{key}", i.name), v.clone());
            }
        }
        labels.insert(
            format!("org.kernel.korgpkg.{}.version", i.name),
            i.version.clone(),
        );
    }

    // The image configuration, on top of the base's.
    let mut config = base.config.clone().unwrap_or_default();
    config.set_created(Some(created.clone()));
    config.set_architecture(arch.into());
    config.set_os(oci_spec::image::Os::Linux);
    config.set_variant(variant.map(str::to_string));
    let mut run = config.config().clone().unwrap_or_default();
    let mut env: Vec<String> = run.env().clone().unwrap_or_default();
    let old_path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    env.retain(|e| !e.starts_with("PATH="));
    let mut path: Vec<String> = bins.clone();
    for p in old_path.split(':') {
        if !path.iter().any(|q| q == p) {
            path.push(p.to_string());
        }
    }
    env.insert(0, format!("PATH={}", path.join(":")));
    run.set_env(Some(env));
    run.set_entrypoint(None);
    run.set_cmd(None);
    match req.user {
        Some(u) => run.set_user(Some(format!("{}:{}", u.uid, u.gid))),
        None => run.set_user(None),
    };
    let workdir = req
        .workdir
        .clone()
        .unwrap_or_else(|| if req.user.is_some() { USER_HOME } else { "/" }.to_string());
    run.set_working_dir(Some(workdir));
    let mut all_labels: HashMap<String, String> = run.labels().clone().unwrap_or_default();
    all_labels.extend(labels);
    run.set_labels(Some(all_labels));
    config.set_config(Some(run));
    let mut diff_ids: Vec<String> = base
        .layers
        .iter()
        .map(|b| b.layer.diff_id.clone())
        .collect();
    diff_ids.extend(layers.iter().map(|(l, _)| l.diff_id.clone()));
    config.rootfs_mut().set_diff_ids(diff_ids);
    let mut history = config.history().clone().unwrap_or_default();
    if history
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .count()
        != base.layers.len()
    {
        history.clear();
        if base.config.is_none() {
            let h = oci_spec::image::HistoryBuilder::default()
                .created(created.clone())
                .created_by(format!("base rootfs {}", base.name))
                .build()
                .map_err(|e| Error::Usage(format!("image history: {e}")))?;
            history.push(h);
        }
    }
    for (_, by) in &layers {
        let h = oci_spec::image::HistoryBuilder::default()
            .created(created.clone())
            .created_by(by.clone())
            .build()
            .map_err(|e| Error::Usage(format!("image history: {e}")))?;
        history.push(h);
    }
    let non_empty = history
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .count();
    config.set_history(if non_empty == diff_ids_len(&config) {
        Some(history)
    } else {
        None
    });
    let config_blob = store.put(&layout::canonical_json(&config)?)?;

    // The manifest and index.json.
    let mut layer_descs = Vec::new();
    for l in base
        .layers
        .iter()
        .map(|b| &b.layer)
        .chain(layers.iter().map(|(l, _)| l))
    {
        layer_descs.push(serde_json::json!({
            "mediaType": l.media_type,
            "digest": l.blob.digest,
            "size": l.blob.size,
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_blob.digest, "size": config_blob.size},
        "layers": layer_descs,
        "annotations": annotations,
    });
    let manifest_blob = store.put(&layout::canonical_json(&manifest)?)?;
    let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
    if let Some(v) = variant {
        platform["variant"] = v.into();
    }
    let platform_name = match variant {
        Some(v) => format!("linux/{arch}/{v}"),
        None => format!("linux/{arch}"),
    };
    let layer_digests: Vec<String> = base
        .layers
        .iter()
        .map(|b| b.layer.blob.digest.clone())
        .chain(layers.iter().map(|(l, _)| l.blob.digest.clone()))
        .collect();
    let report = PlatformReport {
        platform: platform_name,
        manifest: manifest_blob.digest.clone(),
        config: config_blob.digest,
        base_name: base.name,
        base_digest: base.digest,
        layers: report_layers,
        dpkg_layer: dpkg_digest,
    };
    Ok((report, manifest_blob, platform, layer_digests, time))
}

/// The `Architecture` of a .deb (reads only its control member).
pub fn package_arch(path: &Path) -> Result<String> {
    Ok(package_info(path)?.arch)
}

/// Build the image (see the module docs).
pub fn build(req: &BuildRequest) -> Result<BuildReport> {
    if req.platforms.is_empty() {
        return Err(Error::Usage("image build: no platform".into()));
    }
    if req.platforms.len() > 1 && req.format == OutputFormat::DockerArchive {
        return Err(Error::Usage(
            "a docker-archive holds one platform; write an OCI layout for several".into(),
        ));
    }
    // Every platform is read and checked before anything is written.
    let mut prepared = Vec::new();
    for input in &req.platforms {
        let p = prepare(input, req)?;
        if prepared
            .iter()
            .any(|q: &Prepared| q.arch == p.arch && q.variant == p.variant)
        {
            return Err(Error::Usage(format!(
                "platform linux/{} is named twice",
                p.arch
            )));
        }
        prepared.push(p);
    }
    let first = &prepared[0];
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| first.infos[0].name.clone());
    check_name(&name)?;
    let tags = if req.tags.is_empty() {
        vec![version_tag(&first.infos[0].version)]
    } else {
        req.tags.clone()
    };
    for t in &tags {
        check_tag(t)?;
    }

    // Everything is written into a temp directory beside the output.
    let parent = match req.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".korgpkg-image-")
        .tempdir_in(&parent)
        .ctx(|| format!("creating a temp directory in {}", parent.display()))?;
    let store = BlobStore::create(work.path())?;
    let mut reports = Vec::new();
    let mut descs = Vec::new();
    let mut archive = None;
    for p in prepared {
        let (report, manifest_blob, platform, layer_digests, time) =
            write_platform(&store, p, req, &name, &tags)?;
        descs.push(serde_json::json!({
            "mediaType": MANIFEST,
            "digest": manifest_blob.digest,
            "size": manifest_blob.size,
            "platform": platform,
        }));
        archive = Some((report.config.clone(), layer_digests, time));
        reports.push(report);
    }
    let (top, media_type) = if descs.len() == 1 {
        let d = descs.remove(0);
        (d, MANIFEST)
    } else {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": descs,
        });
        let blob = store.put(&layout::canonical_json(&index)?)?;
        (
            serde_json::json!({"mediaType": INDEX, "digest": blob.digest, "size": blob.size}),
            INDEX,
        )
    };
    let top_digest = top["digest"].as_str().unwrap_or_default().to_string();
    let tagged: Vec<_> = tags
        .iter()
        .map(|t| {
            let mut d = top.clone();
            d["annotations"] = serde_json::json!({REF_NAME: t});
            d
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": tagged});
    let index_path = work.path().join("index.json");
    fs::write(&index_path, layout::canonical_json(&index)?)
        .ctx(|| format!("writing {}", index_path.display()))?;
    match (req.format, archive) {
        (OutputFormat::DockerArchive, Some((config, layer_digests, time))) => {
            let repo_tags: Vec<String> = tags.iter().map(|t| format!("{name}:{t}")).collect();
            layout::write_docker_archive(
                work.path(),
                &config,
                &layer_digests,
                &repo_tags,
                time,
                &req.out,
            )?;
        }
        _ => replace_dir(work, &req.out)?,
    }
    Ok(BuildReport {
        out: req.out.clone(),
        format: req.format,
        manifest: top_digest,
        media_type: media_type.to_string(),
        tags,
        platforms: reports,
    })
}

fn diff_ids_len(config: &ImageConfiguration) -> usize {
    config.rootfs().diff_ids().len()
}

/// Move a finished layout into place. An existing output is replaced only if it is an
/// OCI layout (or empty), so a mistyped `--out` never deletes unrelated files.
fn replace_dir(work: tempfile::TempDir, out: &Path) -> Result<()> {
    if out.exists() {
        let is_layout = out.join("oci-layout").is_file()
            || fs::read_dir(out)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !is_layout {
            return Err(Error::Usage(format!(
                "{}: exists and is not an OCI image layout; choose another --out",
                out.display()
            )));
        }
        let old = tempfile::Builder::new()
            .prefix(".korgpkg-old-")
            .tempdir_in(work.path().parent().unwrap_or(Path::new(".")))
            .ctx(|| format!("replacing {}", out.display()))?;
        let old_path = old.path().join("image");
        fs::rename(out, &old_path).ctx(|| format!("moving {} aside", out.display()))?;
        let path = work.keep();
        if let Err(e) = fs::rename(&path, out) {
            let _ = fs::rename(&old_path, out);
            let _ = fs::remove_dir_all(&path);
            return Err(Error::Io {
                context: format!("renaming the image into {}", out.display()),
                source: e,
            });
        }
        drop(old);
    } else {
        let path = work.keep();
        fs::rename(&path, out).ctx(|| format!("renaming the image into {}", out.display()))?;
    }
    Ok(())
}
