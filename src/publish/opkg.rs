//! opkg feeds (OpenWrt and Yocto/OpenEmbedded): `Packages`, `Packages.gz`,
//! `Packages.sig` (usign over `Packages`, OpenWrt), `Packages.asc` (armored OpenPGP,
//! Yocto), the usign public key named by its key number, and an `opkg.conf` snippet.
//! The served feed `DIR/opkg` is a generation directory whose `pool` links to
//! `DIR/opkg-pool`.

use std::fmt::Write as _;
use std::path::Path;

use super::{write_file, Context, IndexData, Listed, Repository};
use crate::error::{IoContext, Result};
use crate::model::Format;
use crate::package;

/// The opkg feed format.
pub struct Opkg;

impl Repository for Opkg {
    fn format(&self) -> Format {
        Format::Ipk
    }

    fn pool_path(&self, info: &package::Inspection) -> String {
        format!("opkg-pool/{}_{}_{}.ipk", info.name, info.version, info.arch)
    }

    fn write_indexes(
        &self,
        ctx: &Context<'_>,
        packages: &[Listed<'_>],
        gen: &Path,
        _prev: Option<&Path>,
    ) -> Result<()> {
        let dir = gen.join("opkg");
        let mut text = String::new();
        for (p, index) in packages {
            let IndexData::Control { stanza } = *index else {
                continue;
            };
            text.push_str(stanza);
            let _ = write!(
                text,
                "Filename: {}\nSize: {}\nSHA256sum: {}\nMD5Sum: {}\n\n",
                p.path.replacen("opkg-pool/", "pool/", 1),
                p.size,
                p.sha256,
                p.md5
            );
        }
        let plain = text.as_bytes();
        write_file(&dir.join("Packages"), plain)?;
        write_file(
            &dir.join("Packages.gz"),
            &package::gzip_reproducible(plain)?,
        )?;
        write_file(
            &dir.join("Packages.asc"),
            &ctx.signer.detached(plain, true)?,
        )?;
        let name = &ctx.config.name;
        write_file(
            &dir.join(format!("{name}.asc")),
            ctx.signer.public_armored()?.as_bytes(),
        )?;
        let mut keynum = String::new();
        if let Some(usign) = ctx.signer.usign() {
            keynum = usign.keynum_hex();
            write_file(
                &dir.join(&keynum),
                usign.public_file(&format!("{name} usign")).as_bytes(),
            )?;
            write_file(
                &dir.join("Packages.sig"),
                usign
                    .sign(plain, &format!("signed by key {keynum}"))
                    .as_bytes(),
            )?;
        }
        let conf = ctx.templates.render(
            "repo/opkg.conf",
            &serde_json::json!({
                "name": name,
                "origin": ctx.config.origin,
                "base_url": ctx.config.base_url,
                "usign_keynum": keynum,
            }),
        )?;
        write_file(&dir.join("opkg.conf"), conf.as_bytes())?;
        let pool = dir.join("pool");
        std::os::unix::fs::symlink("../../../../opkg-pool", &pool)
            .ctx(|| format!("creating {}", pool.display()))?;
        std::fs::create_dir_all(ctx.root.join("opkg-pool"))
            .ctx(|| format!("creating {}", ctx.root.join("opkg-pool").display()))?;
        Ok(())
    }

    fn index_link(&self) -> (&'static str, &'static str) {
        ("opkg", "opkg")
    }

    fn static_files(&self, _ctx: &Context<'_>) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }
}
