//! Declarative image sets: a TOML file (`images/korg.toml`) naming a family of images,
//! each with its tags, packages, bases and platforms, so one `image build --set` makes
//! them all and one `image push --set` tags them all in a registry.
//!
//! ```toml
//! [[image]]
//! name = "korg-clang"
//! tags = ["18", "latest"]
//! packages = ["korg-clang-18"]
//! platforms = ["linux/amd64"]
//! user = "1000:1000"
//! [image.bases]
//! amd64 = "bookworm-amd64.tar"     # a rootfs tarball, "oci:DIR[:TAG]",
//!                                  # "docker://HOST/NAME:TAG", "docker-archive:FILE"
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{check_name, check_tag};
use crate::error::{Error, Result};

/// One image of a set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetImage {
    pub name: String,
    pub tags: Vec<String>,
    pub packages: Vec<String>,
    #[serde(default)]
    pub platforms: Vec<String>,
    /// GOARCH → base (`oci:DIR[:TAG]`, `docker://REF`, `docker-archive:FILE[:TAG]` or a
    /// rootfs tarball); paths are relative to the set file.
    pub bases: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub workdir: Option<String>,
}

impl SetImage {
    /// The image's directory under the set's output directory: `<name>-<first tag>`
    /// (`/` in the name becomes `_`), so images of one name with other tags do not clash.
    pub fn dir(&self) -> String {
        let tag = self.tags.first().map(String::as_str).unwrap_or("latest");
        format!("{}-{tag}", self.name.replace('/', "_"))
    }
}

/// A set file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSet {
    #[serde(rename = "image")]
    pub images: Vec<SetImage>,
}

impl ImageSet {
    /// Read and validate a set file; base paths become relative to its directory.
    pub fn load(path: &Path) -> Result<ImageSet> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::spec(path, format!("cannot read: {e}")))?;
        let mut set: ImageSet = toml::from_str(&text).map_err(|e| Error::toml(path, &text, &e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut dirs: Vec<String> = Vec::new();
        for img in &mut set.images {
            let bad = |m: String| Error::spec(path, format!("image {:?}: {m}", img.name));
            check_name(&img.name).map_err(|e| bad(e.to_string()))?;
            if img.tags.is_empty() || img.packages.is_empty() || img.bases.is_empty() {
                return Err(bad("needs tags, packages and bases".into()));
            }
            for t in &img.tags {
                check_tag(t).map_err(|e| bad(e.to_string()))?;
                let key = (img.name.clone(), t.clone());
                if seen.contains(&key) {
                    return Err(bad(format!("tag {t} is given twice")));
                }
                seen.push(key);
            }
            if dirs.contains(&img.dir()) {
                return Err(bad(format!("two images would be written to {}", img.dir())));
            }
            dirs.push(img.dir());
            for base in img.bases.values_mut() {
                if base.starts_with("docker://") {
                    continue;
                }
                let (prefix, rest) = ["oci:", "docker-archive:"]
                    .iter()
                    .find_map(|p| base.strip_prefix(p).map(|r| (*p, r.to_string())))
                    .unwrap_or(("", base.clone()));
                let p = PathBuf::from(&rest);
                let joined = if p.is_absolute() { p } else { dir.join(p) };
                *base = format!("{prefix}{}", joined.display());
            }
        }
        if set.images.is_empty() {
            return Err(Error::spec(path, "no [[image]]"));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_set_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/korg.toml");
        let set = ImageSet::load(&path).expect("images/korg.toml is valid");
        assert_eq!(set.images[0].name, "korg-clang");
        assert_eq!(set.images[0].dir(), "korg-clang-18");
        assert!(set.images[0].bases["amd64"].ends_with("images/bookworm-amd64.tar"));
        assert_eq!(set.images[2].dir(), "korg-gcc-14-arm64");
    }

    #[test]
    fn clashing_tags_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("set.toml");
        let one = "[[image]]\nname = \"a\"\ntags = [\"1\"]\npackages = [\"p\"]\n[image.bases]\namd64 = \"b.tar\"\n";
        std::fs::write(&path, format!("{one}{one}")).expect("write");
        let err = ImageSet::load(&path).expect_err("refused").to_string();
        assert!(err.contains("tag 1 is given twice"), "{err}");
        std::fs::write(&path, "[[image]]\nname = \"a\"\nbogus = 1\n").expect("write");
        assert_eq!(ImageSet::load(&path).expect_err("refused").exit_code(), 3);
    }
}
