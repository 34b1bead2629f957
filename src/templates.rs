//! Handlebars templates: control files, changelogs, copyright files, kernel maintainer
//! scripts and repository snippets (`templates/`), and Open Build Service package and
//! project files (`OBS/`, named `obs/<name>`). The defaults are built into the binary; a
//! directory given with `--templates-dir` overrides any of them by relative name.

use handlebars::{handlebars_helper, no_escape, Handlebars};
use include_dir::{include_dir, Dir};
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::error::{one_line, Error, IoContext, Result};

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");
/// Open Build Service templates, addressed as `obs/<name>` (`obs/_service`).
static BUILTIN_OBS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/OBS");

/// A loaded set of templates, addressed by relative name without `.hbs` (`deb/control`).
pub struct Templates {
    registry: Handlebars<'static>,
}

handlebars_helper!(deb_text: |text: str| deb_extended_text(text));
handlebars_helper!(xml: |text: str| xml_escape(text));

/// Escape text for XML character data and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Format free text as the extended part of a Debian `Description:` field: every line
/// indented by one space, empty lines written as ` .`, trailing blank lines dropped.
pub fn deb_extended_text(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| {
            let l = l.trim_end();
            if l.is_empty() {
                " .".to_string()
            } else {
                format!(" {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Templates {
    /// Load the built-in templates, then every `*.hbs` below `override_dir` (if any).
    pub fn load(override_dir: Option<&Path>) -> Result<Self> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(no_escape);
        registry.register_helper("deb_text", Box::new(deb_text));
        registry.register_helper("xml", Box::new(xml));
        let builtin = builtin_files(&BUILTIN)
            .into_iter()
            .map(|f| (Path::new(""), f))
            .chain(
                builtin_files(&BUILTIN_OBS)
                    .into_iter()
                    .map(|f| (Path::new("obs"), f)),
            );
        for (prefix, file) in builtin {
            let name = template_name(&prefix.join(file.path()));
            let text = file.contents_utf8().ok_or_else(|| {
                Error::spec(
                    file.path(),
                    "built-in template is not UTF-8 (rebuild korgpkg)",
                )
            })?;
            register(
                &mut registry,
                &name,
                text,
                &Path::new(if prefix.as_os_str().is_empty() {
                    "templates"
                } else {
                    "OBS"
                })
                .join(file.path()),
            )?;
        }
        if let Some(dir) = override_dir {
            let mut files = Vec::new();
            collect_hbs(dir, dir, &mut files)?;
            for (name, path) in files {
                let text = std::fs::read_to_string(&path)
                    .ctx(|| format!("reading template {}", path.display()))?;
                register(&mut registry, &name, &text, &path)?;
            }
        }
        Ok(Templates { registry })
    }

    /// Render the template `name` (e.g. `deb/control`) with `data`.
    pub fn render(&self, name: &str, data: &impl Serialize) -> Result<String> {
        self.registry
            .render(name, data)
            .map_err(|e| Error::Template {
                name: name.to_string(),
                message: one_line(&e.to_string()),
            })
    }

    /// Render an inline template string (a spec field); `what` names it in errors.
    pub fn render_str(&self, what: &str, template: &str, data: &impl Serialize) -> Result<String> {
        self.registry
            .render_template(template, data)
            .map_err(|e| Error::Template {
                name: what.to_string(),
                message: one_line(&e.to_string()),
            })
    }

    /// Whether a template of this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.registry.has_template(name)
    }
}

fn register(reg: &mut Handlebars<'static>, name: &str, text: &str, path: &Path) -> Result<()> {
    reg.register_template_string(name, text)
        .map_err(|e| Error::spec(path, format!("bad template: {}", one_line(&e.to_string()))))
}

fn builtin_files<'a>(dir: &'a Dir<'a>) -> Vec<&'a include_dir::File<'a>> {
    let mut out = Vec::new();
    for f in dir.files() {
        if f.path().extension().is_some_and(|e| e == "hbs") {
            out.push(f);
        }
    }
    for d in dir.dirs() {
        out.extend(builtin_files(d));
    }
    out
}

fn template_name(rel: &Path) -> String {
    rel.with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn collect_hbs(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).ctx(|| format!("reading templates directory {}", dir.display()))?;
    let mut paths = Vec::new();
    for e in entries {
        paths.push(
            e.ctx(|| format!("reading templates directory {}", dir.display()))?
                .path(),
        );
    }
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect_hbs(root, &p, out)?;
        } else if p.extension().is_some_and(|e| e == "hbs") {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            out.push((template_name(rel), p.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_text_indents_and_marks_blank_lines() {
        assert_eq!(deb_extended_text("a\n\nb\n\n"), " a\n .\n b");
    }

    #[test]
    fn builtin_templates_load_and_missing_variables_fail() {
        let t = Templates::load(None).expect("built-in templates load");
        assert!(t.has("deb/control"));
        let err = t
            .render_str(
                "spec field package.name",
                "x-{{nope}}",
                &serde_json::json!({}),
            )
            .expect_err("strict mode rejects unknown variables");
        assert!(err.to_string().contains("package.name"), "{err}");
    }
}
