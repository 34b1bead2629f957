//! Reading a docker-archive (`docker save`, `skopeo copy ... docker-archive:`) as a
//! base: the tar is indexed once (regular members: offset and size), then
//! `manifest.json`, the config and the layers are read in place by offset, never
//! extracted. Layers in a docker-archive are uncompressed tars (some writers gzip
//! them; the compression is detected): korgpkg uses each as it is, as an
//! `application/vnd.oci.image.layer.v1.tar` layer (or `+gzip`/`+zstd`), so the blob is
//! exactly the archive's bytes and, uncompressed, its digest is its `diff_id`.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::layout::{self, MAX_JSON};
use crate::error::{Error, IoContext, Result};

/// Most members of an archive indexed.
const MAX_MEMBERS: usize = 100_000;

/// An indexed docker-archive.
pub struct DockerArchive {
    pub path: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

/// One image of `manifest.json`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveImage {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// A member name as `manifest.json` gives it: relative, no `..`, normalized.
fn member_name(name: &str) -> Option<String> {
    let p = Path::new(name.trim_start_matches("./"));
    if !p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let parts: Vec<String> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl DockerArchive {
    /// Index the archive's regular members.
    pub fn open(path: &Path) -> Result<DockerArchive> {
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let bad = |e: std::io::Error| Error::input(path, format!("not a docker-archive tar: {e}"));
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut members = HashMap::new();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            if members.len() >= MAX_MEMBERS {
                return Err(Error::input(
                    path,
                    format!("more than {MAX_MEMBERS} members: not a docker-archive"),
                ));
            }
            let raw = entry.path_bytes();
            let name = String::from_utf8_lossy(&raw);
            if let Some(n) = member_name(&name) {
                members.insert(n, (entry.raw_file_position(), entry.size()));
            }
        }
        Ok(DockerArchive {
            path: path.to_path_buf(),
            members,
        })
    }

    /// `(offset, size)` of a member named by `manifest.json`.
    pub fn member(&self, name: &str) -> Result<(u64, u64)> {
        member_name(name)
            .and_then(|n| self.members.get(&n).copied())
            .ok_or_else(|| {
                Error::input(
                    &self.path,
                    format!("manifest.json names {name:?}, which the archive does not hold"),
                )
            })
    }

    /// A small member (JSON) whole, at most `MAX_JSON` bytes.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (offset, size) = self.member(name)?;
        if size > MAX_JSON {
            return Err(Error::input(
                &self.path,
                format!("{name} is larger than {MAX_JSON} bytes"),
            ));
        }
        let mut bytes = Vec::new();
        layout::open_range(&self.path, Some((offset, size)))?
            .read_to_end(&mut bytes)
            .ctx(|| format!("reading {name} in {}", self.path.display()))?;
        Ok(bytes)
    }

    /// The image of `manifest.json` tagged `tag` (`NAME:TAG`, or a bare `TAG`), or the
    /// only one.
    pub fn image(&self, tag: Option<&str>) -> Result<ArchiveImage> {
        let bytes = self.read_small("manifest.json")?;
        let images: Vec<ArchiveImage> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&self.path, format!("manifest.json: {e}")))?;
        let tagged = |i: &ArchiveImage, t: &str| {
            i.repo_tags.iter().flatten().any(|r| {
                // `docker.io/korg/base:1` is `korg/base:1`, `korg/base` and tag `1`.
                r == t
                    || r.ends_with(&format!("/{t}"))
                    || r.rsplit_once(':').is_some_and(|(_, rt)| rt == t)
                    || r == &format!("{t}:latest")
                    || r.ends_with(&format!("/{t}:latest"))
            })
        };
        let mut found: Vec<ArchiveImage> = images
            .into_iter()
            .filter(|i| tag.is_none_or(|t| tagged(i, t)))
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::input(
                &self.path,
                format!("manifest.json has no image tagged {:?}", tag.unwrap_or("")),
            )),
            _ => Err(Error::Usage(format!(
                "{}: several images; name one as docker-archive:{}:NAME:TAG",
                self.path.display(),
                self.path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_stay_inside() {
        assert_eq!(
            member_name("./abc/layer.tar").as_deref(),
            Some("abc/layer.tar")
        );
        assert_eq!(
            member_name("blobs/sha256/x").as_deref(),
            Some("blobs/sha256/x")
        );
        assert_eq!(member_name("../etc/passwd"), None);
        assert_eq!(member_name("/etc/passwd"), None);
        assert_eq!(member_name(""), None);
    }
}
