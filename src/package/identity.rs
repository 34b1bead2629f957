//! The grammar of a package's identity (name, version, architecture) in each format.
//!
//! These values come from the package's own metadata and end up in pool paths, index
//! stanzas and file names, so every inspected package is checked against its format's
//! rules before anything else looks at it:
//!
//! - deb (Debian policy 5.6.1, 5.6.12, dpkg's architecture names): name
//!   `[a-z0-9][a-z0-9+.-]+`; version `[epoch:]upstream[-revision]` with a numeric
//!   epoch, an upstream part that starts with a digit and holds only alphanumerics and
//!   `.+~-` (`-` only when a revision follows), a revision of alphanumerics and `.+~`;
//!   architecture `[a-zA-Z0-9][a-zA-Z0-9-]*`.
//! - ipk (opkg follows Debian): the same name and version rules; architectures may also
//!   hold `_` (`x86_64`, `aarch64_cortex-a53`, `core2_64`).
//! - rpm (rpmbuild's checks): name of alphanumerics and `._+-` (and `%{}`), starting
//!   with an alphanumeric or `_`; version and release of alphanumerics and `._+~^`
//!   (and `%{}`); no `..` anywhere; a numeric epoch; architecture `[a-zA-Z0-9_]+`.
//!
//! No accepted value can contain `/`, NUL, whitespace or be `.`/`..`, and each is at most
//! [`MAX_LEN`] bytes.

use std::path::Path;

use super::{Format, Inspection};
use crate::error::{Error, Result};

/// Longest name, version or architecture accepted (a pool file name holds all three and
/// must stay below the file system's 255-byte limit).
pub const MAX_LEN: usize = 80;

/// Check `info`'s name, version and architecture against `info.format`'s grammar; the
/// error names `path` and the field.
pub fn check(path: &Path, info: &Inspection) -> Result<()> {
    let (name_field, version_field, arch_field) = match info.format {
        Format::Deb | Format::Ipk => ("Package", "Version", "Architecture"),
        Format::Rpm => ("Name", "Version", "Arch"),
    };
    let checks: [(&str, &str, RuleFn); 3] = match info.format {
        Format::Deb => [
            (name_field, &info.name, debian_name),
            (version_field, &info.version, debian_version),
            (arch_field, &info.arch, debian_arch),
        ],
        Format::Ipk => [
            (name_field, &info.name, debian_name),
            (version_field, &info.version, debian_version),
            (arch_field, &info.arch, opkg_arch),
        ],
        Format::Rpm => [
            (name_field, &info.name, rpm_name),
            (version_field, &info.version, rpm_evr),
            (arch_field, &info.arch, rpm_arch),
        ],
    };
    for (field, value, rule) in checks {
        if value.is_empty() {
            return Err(Error::input(
                path,
                format!("field {field} is missing or empty"),
            ));
        }
        if value.len() > MAX_LEN {
            return Err(Error::input(
                path,
                format!(
                    "field {field}: {} bytes long (at most {MAX_LEN})",
                    value.len()
                ),
            ));
        }
        rule(value).map_err(|why| Error::input(path, format!("field {field} {value:?}: {why}")))?;
    }
    Ok(())
}

type Rule = std::result::Result<(), String>;

/// One grammar rule: `Err(why)` if the value breaks it.
type RuleFn = fn(&str) -> Rule;

fn only(value: &str, allowed: impl Fn(char) -> bool, what: &str) -> Rule {
    match value.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(format!("character {c:?} is not allowed in {what}")),
        None => Ok(()),
    }
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Debian policy 5.6.1: at least two characters, `[a-z0-9][a-z0-9+.-]+`.
pub fn debian_name(name: &str) -> Rule {
    if name.len() < 2 {
        return Err("a package name has at least two characters".into());
    }
    if !name.starts_with(lower_alnum) {
        return Err("a package name starts with a lowercase letter or digit".into());
    }
    only(
        name,
        |c| lower_alnum(c) || matches!(c, '+' | '.' | '-'),
        "a package name (a-z, 0-9, +, ., -)",
    )
}

/// Debian policy 5.6.12: `[epoch:]upstream_version[-debian_revision]`.
pub fn debian_version(version: &str) -> Rule {
    let rest = match version.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() || !epoch.chars().all(|c| c.is_ascii_digit()) {
                return Err("the epoch is not a number".into());
            }
            if epoch.parse::<i32>().is_err() {
                return Err("the epoch is too large".into());
            }
            rest
        }
        None => version,
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("the upstream version does not start with a digit".into());
    }
    let hyphen_ok = revision.is_some();
    only(
        upstream,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~') || (hyphen_ok && c == '-'),
        "an upstream version (A-Z, a-z, 0-9, ., +, ~, -)",
    )?;
    if let Some(r) = revision {
        if r.is_empty() {
            return Err("the revision after the last '-' is empty".into());
        }
        only(
            r,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'),
            "a Debian revision (A-Z, a-z, 0-9, ., +, ~)",
        )?;
    }
    Ok(())
}

/// dpkg's architecture names: `[a-zA-Z0-9][a-zA-Z0-9-]*`.
pub fn debian_arch(arch: &str) -> Rule {
    if !arch.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("an architecture starts with a letter or digit".into());
    }
    only(
        arch,
        |c| c.is_ascii_alphanumeric() || c == '-',
        "an architecture (A-Z, a-z, 0-9, -)",
    )
}

/// opkg's architecture names: dpkg's, plus `_`.
pub fn opkg_arch(arch: &str) -> Rule {
    if !arch.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("an architecture starts with a letter or digit".into());
    }
    only(
        arch,
        |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'),
        "an architecture (A-Z, a-z, 0-9, -, _)",
    )
}

fn no_dot_dot(value: &str) -> Rule {
    if value.contains("..") {
        Err("the sequence \"..\" is not allowed".into())
    } else {
        Ok(())
    }
}

/// rpmbuild's Name check: alphanumerics and `._+-%{}`, first an alphanumeric or `_%{}`.
pub fn rpm_name(name: &str) -> Rule {
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '%' | '{' | '}'))
    {
        return Err("a package name starts with a letter, digit or _".into());
    }
    only(
        name,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '%' | '{' | '}'),
        "a package name (A-Z, a-z, 0-9, ., -, _, +)",
    )?;
    no_dot_dot(name)
}

/// rpmbuild's Version and Release check: alphanumerics and `._+~^%{}`, no `..`.
fn rpm_verrel(value: &str, what: &str) -> Rule {
    if value.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    only(
        value,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | '^' | '%' | '{' | '}'),
        &format!("a {what} (A-Z, a-z, 0-9, ., _, +, ~, ^)"),
    )?;
    no_dot_dot(value)
}

/// `[epoch:]version-release` as korgpkg reports an rpm's version.
pub fn rpm_evr(evr: &str) -> Rule {
    let rest = match evr.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() || !epoch.chars().all(|c| c.is_ascii_digit()) {
                return Err("the epoch is not a number".into());
            }
            rest
        }
        None => evr,
    };
    let Some((version, release)) = rest.rsplit_once('-') else {
        return Err("no release".into());
    };
    rpm_verrel(version, "version")?;
    rpm_verrel(release, "release")
}

/// rpm architecture names: `[a-zA-Z0-9_]+`.
pub fn rpm_arch(arch: &str) -> Rule {
    only(
        arch,
        |c| c.is_ascii_alphanumeric() || c == '_',
        "an architecture (A-Z, a-z, 0-9, _)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_grammar() {
        for ok in ["korg-clang-18", "libstdc++6", "g++-14", "0ad"] {
            assert!(debian_name(ok).is_ok(), "{ok}");
        }
        for bad in ["../../etc", "a", "Foo", "-x", "a/b", "a b", "a_b", ".."] {
            assert!(debian_name(bad).is_err(), "{bad}");
        }
        for ok in [
            "18.1.8-1",
            "1:2.3~rc1-0ubuntu1+b2",
            "5.2.15-2+b2",
            "1.0",
            "2023-01-01-abc-1",
        ] {
            assert!(debian_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1/../../../../victim",
            "1/../x-1",
            "..",
            "a1.0",
            "1.0-",
            "x:1.0",
            "1.0 -1",
            "1.0-1/2",
            "1.0\n",
            "",
        ] {
            assert!(debian_version(bad).is_err(), "{bad:?}");
        }
        assert!(debian_arch("amd64").is_ok() && debian_arch("all").is_ok());
        assert!(debian_arch("x86_64").is_err() && debian_arch("../x").is_err());
        assert!(opkg_arch("x86_64").is_ok() && opkg_arch("aarch64_cortex-a53").is_ok());
        assert!(opkg_arch("../x").is_err() && opkg_arch("_x").is_err());
    }

    #[test]
    fn rpm_grammar() {
        for ok in ["korg-clang-18", "perl-Foo_Bar", "libstdc++", "_x"] {
            assert!(rpm_name(ok).is_ok(), "{ok}");
        }
        for bad in ["../../../../x", "a/b", "a..b", ".x", "a b"] {
            assert!(rpm_name(bad).is_err(), "{bad}");
        }
        for ok in ["18.1.8-1", "1:2.3~rc1^git1-1.fc40", "1.0-1"] {
            assert!(rpm_evr(ok).is_ok(), "{ok}");
        }
        for bad in ["1.0", "1/..-1", "1..0-1", "1.0-../x", "x:1-1", "1.0-"] {
            assert!(rpm_evr(bad).is_err(), "{bad}");
        }
        assert!(rpm_arch("x86_64").is_ok() && rpm_arch("noarch").is_ok());
        assert!(rpm_arch("../x").is_err() && rpm_arch("x-y").is_err());
    }
}
