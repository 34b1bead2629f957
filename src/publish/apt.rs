//! apt repositories: `pool/<component>/<k>/<name>/<file>.deb`, and per suite
//! `dists/<suite>/{Release,InRelease,Release.gpg}` with
//! `<component>/binary-<arch>/Packages{,.gz,.xz}` and `by-hash/SHA256|SHA512` copies of
//! this and the previous generation's indexes (`Acquire-By-Hash: yes`).

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::Path;

use super::{
    control_stanza, sha256_hex, sha512_hex, write_file, Context, IndexData, PublishedPackage,
    Repository,
};
use crate::error::{IoContext, Result};
use crate::package::{self, Format};

/// The apt repository format.
pub struct Apt;

/// Base name of the exported keyrings (`apt/<name>-archive-keyring.{gpg,asc}`).
pub fn keyring_name(ctx: &Context<'_>) -> String {
    format!("{}-archive-keyring", ctx.config.name)
}

/// Debian's pool prefix for a source name: `libfoo` → `libf`, else the first letter.
fn pool_prefix(name: &str) -> String {
    if name.starts_with("lib") && name.len() > 3 {
        name[..4].to_string()
    } else {
        name.chars().next().map(String::from).unwrap_or_default()
    }
}

fn xz(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(bytes)
        .ctx(|| "compressing Packages with xz".into())?;
    enc.finish().ctx(|| "compressing Packages with xz".into())
}

impl Repository for Apt {
    fn format(&self) -> Format {
        Format::Deb
    }

    fn pool_path(&self, info: &package::Inspection) -> String {
        let version = info
            .version
            .split_once(':')
            .map_or(info.version.as_str(), |(_, v)| v);
        format!(
            "apt/pool/main/{}/{}/{}_{}_{}.deb",
            pool_prefix(&info.name),
            info.name,
            info.name,
            version,
            info.arch
        )
    }

    fn import(
        &self,
        ctx: &Context<'_>,
        file: &Path,
        info: &package::Inspection,
        pool: &str,
    ) -> Result<IndexData> {
        super::place_in_pool(ctx, file, pool)?;
        Ok(IndexData::Control {
            stanza: control_stanza(info),
        })
    }

    fn write_indexes(
        &self,
        ctx: &Context<'_>,
        packages: &[&PublishedPackage],
        gen: &Path,
        prev: Option<&Path>,
    ) -> Result<()> {
        let cfg = &ctx.config.apt;
        for suite in &cfg.suites {
            let dist = gen.join("apt/dists").join(suite);
            let mut sums: Vec<(String, String, usize, String)> = Vec::new();
            for component in &cfg.components {
                for arch in &cfg.architectures {
                    let rel_dir = format!("{component}/binary-{arch}");
                    let dir = dist.join(&rel_dir);
                    let mut text = String::new();
                    // Only "main" holds packages; other components are listed empty.
                    for p in packages.iter().filter(|p| {
                        component == "main"
                            && p.suite.as_deref() == Some(suite.as_str())
                            && (p.arch == *arch || p.arch == "all")
                    }) {
                        let Some(IndexData::Control { stanza }) = &p.index else {
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
                    }
                    let plain = text.into_bytes();
                    let files = [
                        ("Packages", plain.clone()),
                        ("Packages.gz", package::gzip_reproducible(&plain)?),
                        ("Packages.xz", xz(&plain)?),
                    ];
                    for (name, bytes) in &files {
                        write_file(&dir.join(name), bytes)?;
                        let s256 = sha256_hex(bytes);
                        let s512 = sha512_hex(bytes);
                        write_file(&dir.join("by-hash/SHA256").join(&s256), bytes)?;
                        write_file(&dir.join("by-hash/SHA512").join(&s512), bytes)?;
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
                                        write_file(&p, &bytes)?;
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

/// `Date:` as apt wants it (`Sat, 01 Jan 2022 00:00:00 UTC`).
fn release_date(secs: u64) -> String {
    package::rfc2822(secs).replace("+0000", "UTC")
}
