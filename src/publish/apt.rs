//! apt repositories: `pool/<component>/<k>/<name>/<file>.deb`, and per suite
//! `dists/<suite>/{Release,InRelease,Release.gpg}` with
//! `<component>/binary-<arch>/Packages{,.gz,.xz}` and `by-hash/SHA256|SHA512` copies of
//! this and the previous generation's indexes (`Acquire-By-Hash: yes`).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use super::{sha256_hex, sha512_hex, write_file, xzchunks, Context, IndexData, Listed, Repository};
use crate::error::{IoContext, Result};
use crate::model::Format;
use crate::package;

/// The apt repository format.
pub struct Apt;

/// Base name of the exported keyrings (`apt/<name>-archive-keyring.{gpg,asc}`).
pub fn keyring_name(ctx: &Context<'_>) -> String {
    format!("{}-archive-keyring", ctx.config.name)
}

/// Debian's pool prefix for a source name: `libfoo` → `libf`, else the first letter.
fn pool_prefix(name: &str) -> String {
    if name.starts_with("lib") && name.len() > 3 {
        name.chars().take(4).collect()
    } else {
        name.chars().next().map(String::from).unwrap_or_default()
    }
}

impl Repository for Apt {
    fn format(&self) -> Format {
        Format::Deb
    }

    fn pool_path(
        &self,
        file: &Path,
        info: &package::Inspection,
        _feed: Option<&str>,
    ) -> Result<String> {
        let version = info
            .version
            .split_once(':')
            .map_or(info.version.as_str(), |(_, v)| v);
        super::pool_path(
            file,
            &["apt", "pool", "main", &pool_prefix(&info.name), &info.name],
            &format!("{}_{}_{}.deb", info.name, version, info.arch),
        )
    }

    fn write_indexes(
        &self,
        ctx: &Context<'_>,
        packages: &[Listed<'_>],
        gen: &Path,
        prev: Option<&Path>,
    ) -> Result<()> {
        let cfg = &ctx.config.apt;
        let cache = xzchunks::cache_dir(ctx.root);
        let mut used_chunks = Vec::new();
        for suite in &cfg.suites {
            let dist = gen.join("apt/dists").join(suite);
            let mut sums: Vec<(String, String, usize, String)> = Vec::new();
            for component in &cfg.components {
                for arch in &cfg.architectures {
                    let rel_dir = format!("{component}/binary-{arch}");
                    let dir = dist.join(&rel_dir);
                    let mut text = String::new();
                    let mut ends = Vec::new();
                    // Only "main" holds packages; other components are listed empty.
                    for (p, index) in packages.iter().filter(|(p, _)| {
                        component == "main"
                            && p.suite.as_deref() == Some(suite.as_str())
                            && (p.arch == *arch || p.arch == "all")
                    }) {
                        let IndexData::Control { stanza } = *index else {
                            continue;
                        };
                        text.push_str(stanza);
                        let _ = write!(
                            text,
                            "Filename: {}\nSize: {}\nMD5sum: {}\nSHA256: {}\n\n",
                            p.path.trim_start_matches("apt/"),
                            p.size,
                            p.md5,
                            p.sha256
                        );
                        ends.push(text.len());
                    }
                    // gzip on this thread while the xz blocks compress on the others.
                    let (gz, xz) = std::thread::scope(|s| {
                        let xz =
                            s.spawn(|| xzchunks::compress(&text, &ends, &cache, &mut used_chunks));
                        let gz = package::gzip_reproducible(text.as_bytes());
                        (
                            gz,
                            xz.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                        )
                    });
                    let files = [
                        ("Packages", text.into_bytes()),
                        ("Packages.gz", gz?),
                        ("Packages.xz", xz?),
                    ];
                    for (name, bytes) in &files {
                        let path = dir.join(name);
                        write_file(&path, bytes)?;
                        let s256 = sha256_hex(bytes);
                        let s512 = sha512_hex(bytes);
                        // by-hash copies are hard links: generation files never change.
                        link_or_write(&path, &dir.join("by-hash/SHA256").join(&s256), bytes)?;
                        link_or_write(&path, &dir.join("by-hash/SHA512").join(&s512), bytes)?;
                        sums.push((s256, s512, bytes.len(), format!("{rel_dir}/{name}")));
                    }
                    // Keep the previous generation's indexes reachable by hash.
                    if let Some(prev) = prev {
                        let old = prev.join("apt/dists").join(suite).join(&rel_dir);
                        for name in ["Packages", "Packages.gz", "Packages.xz"] {
                            if let Ok(bytes) = fs::read(old.join(name)) {
                                for (alg, h) in [
                                    ("SHA256", sha256_hex(&bytes)),
                                    ("SHA512", sha512_hex(&bytes)),
                                ] {
                                    let p = dir.join("by-hash").join(alg).join(h);
                                    if !p.exists() {
                                        link_or_write(&old.join(name), &p, &bytes)?;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let mut release = format!(
                "Origin: {origin}\nLabel: {origin}\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n",
                origin = ctx.config.origin,
                date = release_date(ctx.time),
            );
            if cfg.valid_until_days > 0 {
                let _ = writeln!(
                    release,
                    "Valid-Until: {}",
                    release_date(ctx.time + cfg.valid_until_days * 86_400)
                );
            }
            let _ = write!(
                release,
                "Acquire-By-Hash: yes\nArchitectures: {}\nComponents: {}\nDescription: {} packages from kernel.org toolchains\nSHA256:\n",
                cfg.architectures.join(" "),
                cfg.components.join(" "),
                ctx.config.origin
            );
            for (s256, _, size, name) in &sums {
                let _ = writeln!(release, " {s256} {size:>16} {name}");
            }
            release.push_str("SHA512:\n");
            for (_, s512, size, name) in &sums {
                let _ = writeln!(release, " {s512} {size:>16} {name}");
            }
            write_file(&dist.join("Release"), release.as_bytes())?;
            write_file(
                &dist.join("Release.gpg"),
                &ctx.signer.detached(release.as_bytes(), true)?,
            )?;
            write_file(
                &dist.join("InRelease"),
                ctx.signer.clearsign(&release)?.as_bytes(),
            )?;
        }
        xzchunks::prune(&cache, &used_chunks);
        Ok(())
    }

    fn index_link(&self) -> (&'static str, &'static str) {
        ("apt/dists", "apt/dists")
    }

    fn static_files(&self, ctx: &Context<'_>) -> Result<Vec<(String, Vec<u8>)>> {
        let name = keyring_name(ctx);
        Ok(vec![
            (format!("apt/{name}.gpg"), ctx.signer.public_binary()?),
            (
                format!("apt/{name}.asc"),
                ctx.signer.public_armored()?.into_bytes(),
            ),
        ])
    }
}

/// Hard-link `existing` (a finished generation file holding `bytes`) at `path`, or
/// write `bytes` there if the file system cannot link.
fn link_or_write(existing: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    if fs::hard_link(existing, path).is_ok() {
        return Ok(());
    }
    write_file(path, bytes)
}

/// `Date:` as apt wants it (`Sat, 01 Jan 2022 00:00:00 UTC`).
fn release_date(secs: u64) -> String {
    package::rfc2822(secs).replace("+0000", "UTC")
}
