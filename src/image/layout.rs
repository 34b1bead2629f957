//! The OCI image layout on disk: content-addressed blobs written through a hashing
//! writer (never held whole in memory), canonical JSON, reading a base layout, and the
//! docker-archive tar that `docker load`/`podman load`/`skopeo copy docker-archive:` read.

use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::payload::COPY_BUFFER;

/// Largest JSON document (index, manifest, config) read from a layout or a registry.
pub const MAX_JSON: u64 = 4 << 20;

/// A writer that hashes (SHA-256) and counts everything written through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> HashWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (SHA-256) everything read through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The `sha256:<hex>` digest and count of what was read.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The hex part of a `sha256:<64 lowercase hex>` digest, or `None` if it is not one
/// (digests from a base layout or a registry are checked before they name a file).
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// Serialize as canonical JSON: object keys sorted (serde_json's map is a BTreeMap),
/// no whitespace, so equal documents have equal digests whatever map type produced them.
pub fn canonical_json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value).map_err(|e| Error::Usage(format!("JSON: {e}")))?;
    serde_json::to_vec(&v).map_err(|e| Error::Usage(format!("JSON: {e}")))
}

/// A blob written to a layout: digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// The `blobs/sha256` directory of a layout being written.
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Create `root/blobs/sha256` and the `oci-layout` marker.
    pub fn create(root: &Path) -> Result<Self> {
        let dir = root.join("blobs/sha256");
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let marker = root.join("oci-layout");
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .ctx(|| format!("writing {}", marker.display()))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob by digest (the digest must be valid).
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest)
            .ok_or_else(|| Error::Usage(format!("not a sha256 digest: {digest:?}")))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// A new blob's temp file, to be passed to [`BlobStore::commit`] with its digest.
    pub fn temp(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.root.join("blobs/sha256");
        tempfile::Builder::new()
            .prefix(".korgpkg-blob-")
            .tempfile_in(&dir)
            .ctx(|| format!("creating a blob in {}", dir.display()))
    }

    /// Move a finished temp file into place under its digest.
    pub fn commit(&self, tmp: tempfile::NamedTempFile, digest: &str) -> Result<()> {
        let dst = self.path(digest)?;
        tmp.persist(&dst)
            .map_err(|e| e.error)
            .ctx(|| format!("writing blob {}", dst.display()))?;
        Ok(())
    }

    /// Write a small in-memory blob (JSON).
    pub fn put(&self, bytes: &[u8]) -> Result<Blob> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let mut tmp = self.temp()?;
        tmp.write_all(bytes).ctx(|| "writing a blob".into())?;
        self.commit(tmp, &digest)?;
        Ok(Blob {
            digest,
            size: bytes.len() as u64,
        })
    }

    /// Copy a file (or the `(offset, size)` range of one) in as a blob, hashing it on
    /// the way.
    pub fn copy_hashed(&self, src: &Path, range: Option<(u64, u64)>) -> Result<Blob> {
        let mut reader = HashReader::new(open_range(src, range)?);
        let mut tmp = self.temp()?;
        copy(&mut reader, tmp.as_file_mut()).ctx(|| format!("copying {}", src.display()))?;
        let (digest, size) = reader.finish();
        self.commit(tmp, &digest)?;
        Ok(Blob { digest, size })
    }

    /// Copy a blob from another file (or the `(offset, size)` range of one), checking
    /// it against `expected` (digest and size) as it is copied; a mismatch is refused as
    /// bad input naming `origin`.
    pub fn copy_verified(
        &self,
        src: &Path,
        range: Option<(u64, u64)>,
        expected: &Blob,
        origin: &str,
    ) -> Result<()> {
        let dst = self.path(&expected.digest)?;
        if dst.exists() {
            return Ok(());
        }
        let mut reader = HashReader::new(open_range(src, range)?);
        let mut tmp = self.temp()?;
        copy(&mut reader, tmp.as_file_mut()).ctx(|| format!("copying {}", src.display()))?;
        let (digest, size) = reader.finish();
        if digest != expected.digest || size != expected.size {
            return Err(Error::input(
                src,
                format!(
                    "{origin}: blob is {digest} ({size} bytes), its descriptor says {} ({} bytes)",
                    expected.digest, expected.size
                ),
            ));
        }
        self.commit(tmp, &digest)
    }
}

/// A file, or the `(offset, size)` range of one (a member of a tar archive).
pub fn open_range(path: &Path, range: Option<(u64, u64)>) -> Result<io::Take<File>> {
    use std::io::Seek as _;
    let mut file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    Ok(match range {
        Some((offset, size)) => {
            file.seek(io::SeekFrom::Start(offset))
                .ctx(|| format!("reading {}", path.display()))?;
            file.take(size)
        }
        None => file.take(u64::MAX),
    })
}

/// Copy through a fixed buffer.
pub fn copy<R: Read + ?Sized, W: Write + ?Sized>(r: &mut R, w: &mut W) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Read a small file (JSON) whole, refusing more than `MAX_JSON` bytes.
pub fn read_small(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .ctx(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(Error::input(
            path,
            format!("larger than {MAX_JSON} bytes, not an OCI JSON document"),
        ));
    }
    Ok(bytes)
}

/// Read a JSON blob of a layout and check it against its digest.
pub fn read_json_blob<T: serde::de::DeserializeOwned>(
    root: &Path,
    digest: &str,
    what: &str,
) -> Result<(T, Vec<u8>)> {
    let hex = sha256_hex(digest)
        .ok_or_else(|| Error::input(root, format!("{what}: {digest:?} is not a sha256 digest")))?;
    let path = root.join("blobs/sha256").join(hex);
    let bytes = read_small(&path)?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(Error::input(
            &path,
            format!("{what}: content is {actual}, not {digest}"),
        ));
    }
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&path, format!("{what}: not valid JSON: {e}")))?;
    Ok((value, bytes))
}

/// Write a docker-archive (`docker save` format): `manifest.json` names the config and
/// the layers by their paths under `blobs/sha256/` (as Docker 25 lays them out). No OCI
/// `index.json` is included: podman would then read the tar as an oci-archive and take
/// the bare tag for the image name. The tar is written to a temp file beside `out` and
/// renamed into place.
pub fn write_docker_archive(
    layout: &Path,
    config: &str,
    layers: &[String],
    repo_tags: &[String],
    mtime: u64,
    out: &Path,
) -> Result<()> {
    let blob = |d: &str| -> Result<String> {
        let hex = sha256_hex(d).ok_or_else(|| Error::Usage(format!("bad digest {d}")))?;
        Ok(format!("blobs/sha256/{hex}"))
    };
    let manifest = serde_json::json!([{
        "Config": blob(config)?,
        "RepoTags": repo_tags,
        "Layers": layers.iter().map(|l| blob(l)).collect::<Result<Vec<_>>>()?,
    }]);
    let manifest = canonical_json(&manifest)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".korgpkg-")
        .suffix(".part")
        .tempfile_in(&parent)
        .ctx(|| format!("creating a temp file in {}", parent.display()))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(COPY_BUFFER, tmp));
    let header = |size: u64, kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    let io_err = |e: io::Error| Error::Io {
        context: format!("writing {}", out.display()),
        source: e,
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, tar::EntryType::Directory, 0o755);
        tar.append_data(&mut h, dir, io::empty()).map_err(io_err)?;
    }
    let mut names: Vec<String> = fs::read_dir(layout.join("blobs/sha256"))
        .ctx(|| format!("listing {}", layout.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let path = layout.join("blobs/sha256").join(&name);
        let file = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        let size = file
            .metadata()
            .ctx(|| format!("reading {}", path.display()))?
            .len();
        let mut h = header(size, tar::EntryType::Regular, 0o644);
        tar.append_data(&mut h, format!("blobs/sha256/{name}"), file)
            .map_err(io_err)?;
    }
    let mut h = header(manifest.len() as u64, tar::EntryType::Regular, 0o644);
    tar.append_data(&mut h, "manifest.json", &manifest[..])
        .map_err(io_err)?;
    let tmp = tar
        .into_inner()
        .map_err(io_err)?
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(out).map_err(|e| io_err(e.error))?;
    Ok(())
}
