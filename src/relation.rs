//! Package relations (Depends/Requires, Provides, Conflicts, ...) in a format-neutral form,
//! parsed from the deb or rpm syntax a spec uses and printed back in each format's syntax.

use serde::Serialize;
use std::fmt;

use crate::package::Format;

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
}
