//! A strict parser of Debian-style binary control files (deb, ipk), as dpkg reads them
//! (deb822, Debian policy 5.1): exactly one paragraph; field names of printable ASCII
//! other than `:`, not starting with `#` or `-`; no field twice (names compare without
//! case); continuation lines start with a space or tab and are not blank; no control
//! characters but tab and the line feeds that end lines.
//!
//! A control file is input from whoever built the package, and its fields are copied
//! into repository indexes, so anything that could end a paragraph early (a blank or
//! whitespace-only line, a NUL, a carriage return) or repeat a field is refused here
//! rather than passed on.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Fields whose canonical spelling korgpkg relies on (matched without case).
const CANONICAL: &[&str] = &["Package", "Version", "Architecture"];

/// Parse `text`, the control file of the package `path`: field name → value, with
/// continuation lines joined by `\n` and kept as they are (leading space included).
pub fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, String>> {
    let bad = |msg: String| Error::input(path, format!("control file: {msg}"));
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    let mut ended = false;
    for (n, line) in text.split('\n').enumerate() {
        let n = n + 1;
        if let Some(c) = line.chars().find(|&c| c.is_control() && c != '\t') {
            return Err(bad(format!("line {n}: control character {c:?}")));
        }
        if line.trim_matches([' ', '\t']).is_empty() {
            // Blank lines end the paragraph; only more blank lines may follow.
            if !fields.is_empty() {
                ended = true;
            }
            continue;
        }
        if ended {
            return Err(bad(format!(
                "line {n}: a second paragraph after a blank line (one package has one paragraph)"
            )));
        }
        if line.starts_with([' ', '\t']) {
            let Some(field) = &last else {
                return Err(bad(format!(
                    "line {n}: a continuation line before any field"
                )));
            };
            if let Some(v) = fields.get_mut(field) {
                v.push('\n');
                v.push_str(line);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("line {n}: not a field (no ':')")));
        };
        let valid_name = !name.is_empty()
            && !name.starts_with(['#', '-'])
            && name.chars().all(|c| c.is_ascii_graphic() && c != ':');
        if !valid_name {
            return Err(bad(format!("line {n}: bad field name {name:?}")));
        }
        let name = CANONICAL
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name))
            .map_or_else(|| name.to_string(), |c| c.to_string());
        if fields.keys().any(|k| k.eq_ignore_ascii_case(&name)) {
            return Err(bad(format!("line {n}: field {name} appears twice")));
        }
        fields.insert(name.clone(), value.trim_matches([' ', '\t']).to_string());
        last = Some(name);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<BTreeMap<String, String>> {
        parse(Path::new("p.deb"), text)
    }

    #[test]
    fn one_paragraph_with_continuations() {
        let f =
            parsed("Package: a1\nversion: 1.0\nDescription: short\n long\n .\n more\n\n").unwrap();
        assert_eq!(f["Package"], "a1");
        assert_eq!(f["Version"], "1.0");
        assert_eq!(f["Description"], "short\n long\n .\n more");
    }

    #[test]
    fn injections_are_refused() {
        for (text, needle) in [
            ("Package: a1\n\nPackage: injected\n", "second paragraph"),
            ("Package: a1\n \t\nPackage: injected\n", "second paragraph"),
            (
                "Package: a1\nDescription: x\n \nFilename: y\n",
                "second paragraph",
            ),
            ("Package: a1\nPackage: a2\n", "appears twice"),
            ("Package: a1\nfilename: x\nFilename: y\n", "appears twice"),
            ("Package: a1\x00\n", "control character"),
            ("Package: a1\r\nVersion: 1\n", "control character"),
            ("Package: a1\nnonsense\n", "not a field"),
            (" x\nPackage: a1\n", "continuation line before"),
            ("Package: a1\n#Comment: x\n", "bad field name"),
        ] {
            let e = parsed(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
