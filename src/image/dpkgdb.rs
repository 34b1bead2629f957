//! The base's dpkg database: which packages it has installed (for the dependency check,
//! with korgpkg's own relation and version code) and the entries that record the
//! image's packages in it (`status` stanza, `info/<pkg>.list`, `info/<pkg>.md5sums`).

use std::collections::BTreeMap;

use crate::model::relation::{compare_versions, Atom, Op, Relation};

/// One installed package of the base (or of the image).
#[derive(Debug, Clone)]
struct Installed {
    name: String,
    version: String,
    /// `Provides` of the package: (name, exact version if any).
    provides: Vec<(String, Option<String>)>,
}

/// The installed packages of a dpkg status file.
#[derive(Debug, Clone, Default)]
pub struct Status {
    text: String,
    installed: Vec<Installed>,
}

/// Split a status or control text into stanzas (blank-line separated).
fn stanzas(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n").map(str::trim).filter(|s| !s.is_empty())
}

fn installed_of(fields: &BTreeMap<String, String>) -> Option<Installed> {
    let name = fields.get("Package")?.trim().to_string();
    let provides = fields
        .get("Provides")
        .map(|p| {
            p.split(',')
                .filter_map(|r| Relation::parse_deb(r.trim()).ok())
                .filter_map(|r| r.alternatives.into_iter().next())
                .map(|a| {
                    let v = match a.op {
                        Some(Op::Eq) => a.version,
                        _ => None,
                    };
                    (strip_arch(&a.name).to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Installed {
        name,
        version: fields.get("Version").cloned().unwrap_or_default(),
        provides,
    })
}

/// `libc6:amd64` → `libc6` (the image has one architecture).
fn strip_arch(name: &str) -> &str {
    name.split_once(':').map_or(name, |(n, _)| n)
}

impl Status {
    /// Parse a status file; only packages whose `Status` ends in `installed` count.
    pub fn parse(text: &str) -> Status {
        let installed = stanzas(text)
            .map(stanza_fields)
            .filter(|f| {
                f.get("Status")
                    .is_some_and(|s| s.split_whitespace().last() == Some("installed"))
            })
            .filter_map(|f| installed_of(&f))
            .collect();
        Status {
            text: text.to_string(),
            installed,
        }
    }

    /// Record a package from its control text as installed (for relations between the
    /// image's own packages).
    pub fn add_control(&mut self, control: &str) {
        if let Some(i) = installed_of(&stanza_fields(control)) {
            self.installed.retain(|p| p.name != i.name);
            self.installed.push(i);
        }
    }

    fn satisfies(&self, atom: &Atom) -> bool {
        let name = strip_arch(&atom.name);
        let version_ok = |v: &str| match (atom.op, &atom.version) {
            (Some(op), Some(want)) => {
                let ord = compare_versions(v, want);
                match op {
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                    Op::Eq => ord.is_eq(),
                    Op::Ge => ord.is_ge(),
                    Op::Gt => ord.is_gt(),
                }
            }
            _ => true,
        };
        self.installed.iter().any(|p| {
            (p.name == name && version_ok(&p.version))
                || p.provides.iter().any(|(n, v)| {
                    n == name
                        && match v {
                            Some(v) => version_ok(v),
                            None => atom.op.is_none(),
                        }
                })
        })
    }

    /// The relations of `Pre-Depends`/`Depends` in `control` that nothing installed
    /// satisfies, as printed in the control file; malformed ones are reported as such.
    pub fn missing(&self, control: &str) -> Vec<String> {
        let fields = stanza_fields(control);
        let mut missing = Vec::new();
        for field in ["Pre-Depends", "Depends"] {
            let Some(value) = fields.get(field) else {
                continue;
            };
            for text in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                match Relation::parse_deb(&text) {
                    Ok(rel) if rel.alternatives.iter().any(|a| self.satisfies(a)) => {}
                    _ => missing.push(text),
                }
            }
        }
        missing
    }

    /// The status file with `controls`' stanzas added (`Status: install ok installed`
    /// after `Package`), replacing earlier stanzas of the same packages.
    pub fn with_packages(&self, controls: &[&str]) -> String {
        let names: Vec<String> = controls
            .iter()
            .filter_map(|c| stanza_fields(c).get("Package").cloned())
            .collect();
        let mut out = String::new();
        for stanza in stanzas(&self.text) {
            let fields = stanza_fields(stanza);
            if fields.get("Package").is_some_and(|p| names.contains(p)) {
                continue;
            }
            out.push_str(stanza);
            out.push_str("\n\n");
        }
        for control in controls {
            for line in control.trim().lines() {
                if line.starts_with("Status:") {
                    continue;
                }
                out.push_str(line);
                out.push('\n');
                if line.starts_with("Package:") {
                    out.push_str("Status: install ok installed\n");
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The mmdebstrap `--include=` list that would supply `missing` relations: the first
/// alternative's package name of each.
pub fn include_hint(missing: &[String]) -> String {
    let mut names: Vec<String> = Vec::new();
    for m in missing {
        let first = m.split('|').next().unwrap_or(m);
        let name = first.split(['(', ' ']).next().unwrap_or(first).trim();
        let name = strip_arch(name).to_string();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(",")
}

/// `/etc/passwd` and `/etc/group` with a build user added (unless the name exists).
/// Returns `Err` naming the clash if the uid or gid belongs to another name.
pub fn add_user(
    passwd: &str,
    group: &str,
    name: &str,
    uid: u32,
    gid: u32,
    home: &str,
) -> Result<(String, String), String> {
    let field = |line: &str, i: usize| line.split(':').nth(i).map(str::to_string);
    let mut passwd = passwd.to_string();
    let mut group = group.to_string();
    let has_user = passwd.lines().any(|l| field(l, 0).as_deref() == Some(name));
    if !has_user {
        if let Some(l) = passwd
            .lines()
            .find(|l| field(l, 2).as_deref() == Some(&uid.to_string()))
        {
            return Err(format!(
                "uid {uid} belongs to {:?} in the base's /etc/passwd",
                field(l, 0).unwrap_or_default()
            ));
        }
        if !passwd.is_empty() && !passwd.ends_with('\n') {
            passwd.push('\n');
        }
        passwd.push_str(&format!(
            "{name}:x:{uid}:{gid}:korgpkg build user:{home}:/bin/sh\n"
        ));
    }
    let has_group = group.lines().any(|l| field(l, 0).as_deref() == Some(name))
        || group
            .lines()
            .any(|l| field(l, 2).as_deref() == Some(&gid.to_string()));
    if !has_group {
        if !group.is_empty() && !group.ends_with('\n') {
            group.push('\n');
        }
        group.push_str(&format!("{name}:x:{gid}:\n"));
    }
    Ok((passwd, group))
}

/// The fields of one stanza of the base's dpkg `status` file (continuation lines joined
/// with `\n`). Lenient, as dpkg is with its own database: the base is the user's chosen
/// root file system, and a stanza korgpkg cannot read simply satisfies nothing.
fn stanza_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = last.as_ref().and_then(|f| fields.get_mut(f)) {
                v.push('\n');
                v.push_str(line);
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nProvides: libc6-abi (= 1)\n\nPackage: make\nStatus: deinstall ok config-files\nVersion: 4.3-4.1\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\n";

    #[test]
    fn relations_are_checked_against_installed_packages() {
        let s = Status::parse(STATUS);
        let control = "Package: korg-clang-18\nVersion: 18.1.8-1\nDepends: libc6 (>= 2.34), zlib1g (>= 1:1.2.0), make, libc6 (>= 2.40), libc6-abi (= 1), libzstd1 | libzstd2\n";
        assert_eq!(
            s.missing(control),
            ["make", "libc6 (>= 2.40)", "libzstd1 | libzstd2"]
        );
        assert_eq!(include_hint(&s.missing(control)), "make,libc6,libzstd1");
    }

    #[test]
    fn status_gets_the_new_stanza() {
        let s = Status::parse(STATUS);
        let out = s.with_packages(&["Package: korg-x\nVersion: 1\nArchitecture: amd64\n"]);
        assert!(out.contains("Package: korg-x\nStatus: install ok installed\nVersion: 1\n"));
        assert!(out.starts_with("Package: libc6\n"));
        let mut again = Status::parse(&out);
        again.add_control("Package: korg-x\nVersion: 2\n");
        assert!(again.missing("Depends: korg-x (>= 2)").is_empty());
    }

    #[test]
    fn users_are_added_once() {
        let (p, g) = add_user(
            "root:x:0:0::/root:/bin/sh",
            "root:x:0:\n",
            "kbuild",
            1000,
            1000,
            "/home/kbuild",
        )
        .expect("adds");
        assert!(p.ends_with("kbuild:x:1000:1000:korgpkg build user:/home/kbuild:/bin/sh\n"));
        assert!(g.ends_with("kbuild:x:1000:\n"));
        assert!(add_user(
            "other:x:1000:1000::/:/bin/sh\n",
            "",
            "kbuild",
            1000,
            1000,
            "/h"
        )
        .is_err());
    }
}
