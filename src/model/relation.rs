//! Package relations (Depends/Requires, Provides, Conflicts, ...) in a format-neutral form,
//! parsed from the deb or rpm syntax a spec uses and printed back in each format's syntax.

use serde::Serialize;
use std::fmt;

use super::Format;

/// The kind of a relation. Each format has its own field name for a kind
/// (see [`RelationKind::field_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationKind {
    Depends,
    Recommends,
    Suggests,
    Provides,
    Conflicts,
    Breaks,
    Replaces,
}

impl RelationKind {
    /// Every kind, in the order control files list them.
    pub const ALL: [RelationKind; 7] = [
        RelationKind::Depends,
        RelationKind::Recommends,
        RelationKind::Suggests,
        RelationKind::Provides,
        RelationKind::Conflicts,
        RelationKind::Breaks,
        RelationKind::Replaces,
    ];

    /// The field name a format uses for this kind (`Requires`/`Obsoletes` in rpm),
    /// or `None` where the format has no such relation.
    pub fn field_name(self, format: Format) -> Option<&'static str> {
        use RelationKind::*;
        Some(match (format, self) {
            (Format::Rpm, Depends) => "Requires",
            (Format::Rpm, Replaces) => "Obsoletes",
            (Format::Rpm, Breaks) => return None,
            (Format::Ipk, Suggests | Breaks) => return None,
            (_, Depends) => "Depends",
            (_, Recommends) => "Recommends",
            (_, Suggests) => "Suggests",
            (_, Provides) => "Provides",
            (_, Conflicts) => "Conflicts",
            (_, Breaks) => "Breaks",
            (_, Replaces) => "Replaces",
        })
    }
}

/// A version comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = ">")]
    Gt,
}

impl Op {
    fn deb(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    fn rpm(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">",
        }
    }

    /// RPMSENSE_* flag bits for this comparison.
    pub fn rpm_flags(self) -> u32 {
        const LESS: u32 = 0x02;
        const GREATER: u32 = 0x04;
        const EQUAL: u32 = 0x08;
        match self {
            Op::Lt => LESS,
            Op::Le => LESS | EQUAL,
            Op::Eq => EQUAL,
            Op::Ge => GREATER | EQUAL,
            Op::Gt => GREATER,
        }
    }
}

/// One package name with an optional version constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Atom {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One relation clause: one atom, or (deb/ipk only) alternatives joined by `|`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relation {
    pub alternatives: Vec<Atom>,
}

impl Relation {
    /// Parse deb/ipk syntax: `libc6 (>= 2.28)`, `a | b (<< 2)`.
    pub fn parse_deb(text: &str) -> Result<Self, String> {
        let alternatives = text
            .split('|')
            .map(|alt| parse_deb_atom(alt.trim()).map_err(|e| format!("{text:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Relation { alternatives })
    }

    /// Parse rpm syntax: `glibc >= 2.28`, `libc.so.6(GLIBC_2.28)(64bit)`.
    pub fn parse_rpm(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let atom = match words.as_slice() {
            [name] => Atom {
                name: check_rpm_name(name, text)?,
                op: None,
                version: None,
            },
            [name, op, version] => {
                let op = match *op {
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    "=" | "==" => Op::Eq,
                    ">=" => Op::Ge,
                    ">" => Op::Gt,
                    other => return Err(format!("{text:?}: unknown comparison {other:?}")),
                };
                Atom {
                    name: check_rpm_name(name, text)?,
                    op: Some(op),
                    version: Some(version.to_string()),
                }
            }
            _ => {
                return Err(format!(
                    "{text:?}: expected `name` or `name OP version` (rpm syntax)"
                ))
            }
        };
        Ok(Relation {
            alternatives: vec![atom],
        })
    }

    /// Parse in the syntax of `format`.
    pub fn parse(format: Format, text: &str) -> Result<Self, String> {
        match format {
            Format::Rpm => Relation::parse_rpm(text),
            Format::Deb | Format::Ipk => Relation::parse_deb(text),
        }
    }

    /// Print in the syntax of `format`.
    pub fn display(&self, format: Format) -> String {
        let parts: Vec<String> = self
            .alternatives
            .iter()
            .map(|a| match (a.op, &a.version, format) {
                (Some(op), Some(v), Format::Rpm) => format!("{} {} {}", a.name, op.rpm(), v),
                (Some(op), Some(v), _) => format!("{} ({} {})", a.name, op.deb(), v),
                _ => a.name.clone(),
            })
            .collect();
        parts.join(" | ")
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display(Format::Deb))
    }
}

fn check_rpm_name(name: &str, text: &str) -> Result<String, String> {
    if name.is_empty() || name.contains(',') {
        return Err(format!("{text:?}: bad rpm dependency name {name:?}"));
    }
    Ok(name.to_string())
}

fn parse_deb_atom(text: &str) -> Result<Atom, String> {
    let (name, rest) = match text.find('(') {
        Some(i) => (text[..i].trim(), Some(text[i..].trim())),
        None => (text.trim(), None),
    };
    let valid_name = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.:".contains(c));
    if !valid_name {
        return Err(format!(
            "bad package name {name:?} (lowercase letters, digits, + - . only)"
        ));
    }
    let (op, version) = match rest {
        None => (None, None),
        Some(r) => {
            let inner = r
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("bad version constraint {r:?}"))?
                .trim();
            let split = inner
                .find(|c: char| !"<>=".contains(c))
                .ok_or_else(|| format!("bad version constraint {r:?}"))?;
            let (op, version) = inner.split_at(split);
            let op = match op {
                "<<" => Op::Lt,
                "<=" => Op::Le,
                "=" => Op::Eq,
                ">=" => Op::Ge,
                ">>" => Op::Gt,
                other => return Err(format!("unknown comparison {other:?} (use << <= = >= >>)")),
            };
            let version = version.trim();
            if version.is_empty() || version.contains(char::is_whitespace) {
                return Err(format!("bad version in {r:?}"));
            }
            (Some(op), Some(version.to_string()))
        }
    };
    Ok(Atom {
        name: name.to_string(),
        op,
        version,
    })
}

/// Compare two versions the way dpkg does (`epoch:upstream-revision`, `~` sorts before
/// everything, digits numerically). opkg uses the same rules; for the plain dotted
/// versions korgpkg derives, rpm's ordering agrees.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
                (e.parse().unwrap_or(u64::MAX), r)
            }
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    fn part(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            // Non-digit prefix, compared character by character.
            while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit())
            {
                let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
                let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
                let (oa, ob) = (order(ca), order(cb));
                if oa != ob {
                    return oa.cmp(&ob);
                }
                if ca.is_some() {
                    i += 1;
                }
                if cb.is_some() {
                    j += 1;
                }
            }
            // Digit run, compared numerically (ignoring leading zeros).
            while i < a.len() && a[i] == b'0' {
                i += 1;
            }
            while j < b.len() && b[j] == b'0' {
                j += 1;
            }
            let (si, sj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (da, db) = (&a[si..i], &b[sj..j]);
            let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| part(ra.as_bytes(), rb.as_bytes()))
}

/// Add `rel` to `list` without duplicates. When both name the same single package with
/// a minimum version (`>=`) or none, the higher minimum wins, kept at the earlier place.
pub fn merge_relation(list: &mut Vec<Relation>, rel: Relation) {
    if list.contains(&rel) {
        return;
    }
    let minimum = |r: &Relation| -> Option<(String, Option<String>)> {
        match r.alternatives.as_slice() {
            [a] if matches!(a.op, None | Some(Op::Ge)) => Some((a.name.clone(), a.version.clone())),
            _ => None,
        }
    };
    if let Some((name, version)) = minimum(&rel) {
        for existing in list.iter_mut() {
            if let Some((n, v)) = minimum(existing) {
                if n == name {
                    let higher = match (&v, &version) {
                        (_, None) => false,
                        (None, Some(_)) => true,
                        (Some(old), Some(new)) => {
                            compare_versions(new, old) == std::cmp::Ordering::Greater
                        }
                    };
                    if higher {
                        *existing = rel;
                    }
                    return;
                }
            }
        }
    }
    list.push(rel);
}

/// `name (>= version)`, or just `name` without a version.
pub fn at_least(name: &str, version: Option<&str>) -> Relation {
    Relation {
        alternatives: vec![Atom {
            name: name.to_string(),
            op: version.map(|_| Op::Ge),
            version: version.map(str::to_string),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_round_trip() {
        let r = Relation::parse_deb("libc6 (>= 2.28) | libc6.1 (>> 1)").expect("parses");
        assert_eq!(r.alternatives.len(), 2);
        assert_eq!(r.display(Format::Deb), "libc6 (>= 2.28) | libc6.1 (>> 1)");
        assert_eq!(r.display(Format::Rpm), "libc6 >= 2.28 | libc6.1 > 1");
    }

    #[test]
    fn rpm_round_trip() {
        let r = Relation::parse_rpm("libc.so.6(GLIBC_2.28)(64bit)").expect("parses");
        assert_eq!(r.display(Format::Rpm), "libc.so.6(GLIBC_2.28)(64bit)");
        let r = Relation::parse_rpm("glibc >= 2.28").expect("parses");
        assert_eq!(r.alternatives[0].op.map(Op::rpm_flags), Some(0x0c));
    }

    #[test]
    fn bad_relations_are_rejected() {
        assert!(Relation::parse_deb("Libc6").is_err());
        assert!(Relation::parse_deb("libc6 (~ 2)").is_err());
        assert!(Relation::parse_deb("libc6 (>= 2").is_err());
        assert!(Relation::parse_rpm("glibc >= ").is_err());
        assert!(Relation::parse_rpm("glibc ~ 2").is_err());
    }

    #[test]
    fn versions_compare_like_dpkg() {
        use std::cmp::Ordering::*;
        for (a, b, want) in [
            ("2.28", "2.34", Less),
            ("2.34", "2.4", Greater),
            ("5.4", "5.4.0", Less),
            ("1.0~rc1", "1.0", Less),
            ("1:1.1.4", "1.2.13", Greater),
            ("1:1.2.13.dfsg", "1:1.2.13", Greater),
            ("2.36-9+deb12u4", "2.36", Greater),
            ("5.1.1alpha+20120614", "5.4.0", Less),
            ("6.3+20220423", "6.3", Greater),
            ("12", "4.2", Greater),
            ("007", "7", Equal),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn merge_dedupes_and_keeps_the_highest_minimum() {
        let p = |s: &str| Relation::parse_deb(s).expect("parses");
        let mut list = vec![p("libc6 (>= 2.17)"), p("make"), p("a | b")];
        merge_relation(&mut list, p("libc6 (>= 2.34)"));
        merge_relation(&mut list, p("libc6 (>= 2.28)"));
        merge_relation(&mut list, p("libc6"));
        merge_relation(&mut list, p("make"));
        merge_relation(&mut list, p("make (>= 4)"));
        merge_relation(&mut list, p("a | b"));
        merge_relation(&mut list, p("zlib1g (>= 1:1.2.13)"));
        merge_relation(&mut list, p("libc6 (<< 3)"));
        let shown: Vec<String> = list.iter().map(|r| r.display(Format::Deb)).collect();
        assert_eq!(
            shown,
            [
                "libc6 (>= 2.34)",
                "make (>= 4)",
                "a | b",
                "zlib1g (>= 1:1.2.13)",
                "libc6 (<< 3)"
            ]
        );
        // rpm capability names dedupe by equality.
        let mut rpm = vec![Relation::parse_rpm("glibc >= 2.17").expect("parses")];
        for r in ["libc.so.6()(64bit)", "libc.so.6()(64bit)", "glibc >= 2.34"] {
            merge_relation(&mut rpm, Relation::parse_rpm(r).expect("parses"));
        }
        let shown: Vec<String> = rpm.iter().map(|r| r.display(Format::Rpm)).collect();
        assert_eq!(shown, ["glibc >= 2.34", "libc.so.6()(64bit)"]);
    }
}
