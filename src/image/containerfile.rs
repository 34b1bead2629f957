//! `image containerfile`: a vendor-neutral Containerfile (docker, podman, buildah) that
//! installs toolchains from a published korgpkg apt repository with `signed-by`,
//! rendered from `templates/image/Containerfile.hbs`.

use serde::Serialize;

use super::{check_name, User, USER_HOME, USER_NAME};
use crate::error::{Error, Result};
use crate::spec::SpecSet;
use crate::templates::Templates;

/// What the Containerfile installs from where.
#[derive(Debug, Clone)]
pub struct ContainerfileRequest {
    /// Image name (for the title label).
    pub name: String,
    /// Package names (`korg-clang-18`).
    pub packages: Vec<String>,
    /// The base image (`debian:bookworm`).
    pub base: String,
    /// The repository's URL (`korgpkg-repo.toml`'s `base_url`).
    pub repo_url: String,
    /// The repository's short name (keyring `<name>-archive-keyring.gpg`).
    pub repo_name: String,
    pub suite: String,
    pub component: String,
    pub user: Option<User>,
}

#[derive(Serialize)]
struct UserData {
    uid: u32,
    gid: u32,
    name: &'static str,
    home: &'static str,
}

#[derive(Serialize)]
struct Data<'a> {
    name: &'a str,
    base: &'a str,
    repo_url: &'a str,
    keyring: String,
    suite: &'a str,
    component: &'a str,
    packages: &'a [String],
    path: String,
    user: Option<UserData>,
    labels: std::collections::BTreeMap<String, String>,
}

/// A word that goes into a shell line or an instruction unquoted: checked so no input
/// can add instructions or shell syntax.
fn plain(what: &str, value: &str, extra: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c) || extra.contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{what} {value:?}: unexpected characters"
        )))
    }
}

/// Render the Containerfile. `PATH` gets each package's `<prefix>/bin` first, the
/// prefix taken from the package's spec.
pub fn containerfile(
    req: &ContainerfileRequest,
    specs: &SpecSet,
    templates: &Templates,
) -> Result<String> {
    check_name(&req.name)?;
    plain("--from", &req.base, ":/@")?;
    plain("--repo-url", &req.repo_url, ":/%")?;
    if !(req.repo_url.starts_with("https://") || req.repo_url.starts_with("http://")) {
        return Err(Error::Usage(format!(
            "--repo-url {:?}: expected http(s)://",
            req.repo_url
        )));
    }
    plain("--suite", &req.suite, "")?;
    plain("--component", &req.component, "")?;
    plain("repository name", &req.repo_name, "")?;
    let mut bins = Vec::new();
    for p in &req.packages {
        plain("package", p, "")?;
        let (spec, vars) = specs.find_package(p)?;
        bins.push(format!("{}/bin", spec.prefix_for(&vars, templates)?));
    }
    bins.push(super::DEFAULT_PATH.to_string());
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        "org.opencontainers.image.title".to_string(),
        req.name.clone(),
    );
    labels.insert(
        "org.opencontainers.image.base.name".to_string(),
        req.base.clone(),
    );
    let data = Data {
        name: &req.name,
        base: &req.base,
        repo_url: req.repo_url.trim_end_matches('/'),
        keyring: format!("{}-archive-keyring", req.repo_name),
        suite: &req.suite,
        component: &req.component,
        packages: &req.packages,
        path: bins.join(":"),
        user: req.user.map(|u| UserData {
            uid: u.uid,
            gid: u.gid,
            name: USER_NAME,
            home: USER_HOME,
        }),
        labels,
    };
    templates.render("image/Containerfile", &data)
}

/// First line of a Makefile korgpkg writes: one without it is never overwritten.
pub const MAKEFILE_MARK: &str = "# Container images of kernel.org toolchains";

/// One image's target in the Makefile.
#[derive(Debug, Clone, Serialize)]
pub struct MakeTarget {
    /// The make target: `<short>-<first tag>` (`clang-18`).
    pub target: String,
    /// The image name after `$(PREFIX)`: the name's last component without a leading
    /// `korg-` (`korg/korg-clang` → `clang`), so `PREFIX=korg-` gives `korg-clang`.
    pub short: String,
    pub tags: Vec<String>,
    /// The Containerfile's name, beside the Makefile.
    pub containerfile: String,
}

impl MakeTarget {
    /// The target of image `name` with `tags`, built from `<target>.Containerfile`.
    pub fn new(name: &str, tags: &[String]) -> Result<MakeTarget> {
        check_name(name)?;
        for t in tags {
            super::check_tag(t)?;
        }
        let last = name.rsplit('/').next().unwrap_or(name);
        let short = last.strip_prefix("korg-").unwrap_or(last).to_string();
        let first = tags
            .first()
            .ok_or_else(|| Error::Usage(format!("image {name}: no tag")))?;
        let target = format!("{short}-{first}");
        Ok(MakeTarget {
            containerfile: format!("{target}.Containerfile"),
            target,
            short,
            tags: tags.to_vec(),
        })
    }

    /// The same target, built from the Containerfile `file` (a name beside the Makefile).
    pub fn with_containerfile(mut self, file: &str) -> Result<MakeTarget> {
        plain("Containerfile name", file, "")?;
        self.containerfile = file.to_string();
        Ok(self)
    }
}

#[derive(Serialize)]
struct MakeData<'a> {
    images: &'a [MakeTarget],
}

/// Render the Makefile (`templates/image/Makefile.hbs`): `$(ENGINE) build` per image.
pub fn makefile(images: &[MakeTarget], templates: &Templates) -> Result<String> {
    let mut seen = Vec::new();
    for i in images {
        if seen.contains(&&i.target) {
            return Err(Error::Usage(format!(
                "two images would have the make target {}",
                i.target
            )));
        }
        seen.push(&i.target);
    }
    templates.render("image/Makefile", &MakeData { images })
}
