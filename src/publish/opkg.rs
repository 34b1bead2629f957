//! opkg feeds, one per client family ([`OpkgFlavour`]), each at `opkg/<flavour>/` with
//! its own pool `opkg-pool/<flavour>/` (linked as `opkg/<flavour>/pool`), `Packages`,
//! `Packages.gz` and an `opkg.conf` snippet with that client's key setup:
//!
//! - `openembedded` (Yocto opkg): `ar`-form ipk files, `Packages.asc` (armored
//!   OpenPGP over `Packages`), the public key `<name>.asc`, and a detached
//!   `<file>.ipk.asc` beside every package for `check_pkg_signature`.
//! - `openwrt` (OpenWrt's opkg): gzip'd-tar-form ipk files, `Packages.sig` (usign over
//!   `Packages`) and the usign public key named by its key number.
//!
//! An ipk is published into the feed of its outer form; an ipk whose feed the
//! repository does not serve is refused, so no client is handed a form it cannot read.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use super::{
    write_atomic, write_file, Context, FileSums, Imported, IndexData, Listed, OpkgFlavour,
    RepoConfig, Repository,
};
use crate::error::{Error, IoContext, Result};
use crate::model::Format;
use crate::package::{self, IpkOuter};

/// The opkg feed format.
pub struct Opkg;

/// The outer form of an ipk: a gzip'd tar (OpenWrt) or an `ar` archive (Yocto).
pub fn outer_form(file: &Path) -> Result<IpkOuter> {
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(file).ctx(|| format!("opening {}", file.display()))?;
    let mut n = 0;
    while n < head.len() {
        let got = f
            .read(&mut head[n..])
            .ctx(|| format!("reading {}", file.display()))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    if head.starts_with(b"!<arch>\n") {
        Ok(IpkOuter::Ar)
    } else if head[..n].starts_with(&[0x1f, 0x8b]) {
        Ok(IpkOuter::Tar)
    } else {
        Err(Error::input(
            file,
            "not an ipk: neither an ar archive nor a gzip'd tar",
        ))
    }
}

/// The feed an ipk goes to, or an error if the repository does not serve it.
pub fn feed_of(config: &RepoConfig, file: &Path) -> Result<OpkgFlavour> {
    let outer = outer_form(file)?;
    let flavour = OpkgFlavour::of_outer(outer);
    if config.opkg.flavours.contains(&flavour) {
        return Ok(flavour);
    }
    let (form, other) = match outer {
        IpkOuter::Ar => ("an ar-form (OpenEmbedded)", "tar"),
        IpkOuter::Tar => ("a tar-form (OpenWrt)", "ar"),
    };
    let served: Vec<&str> = config.opkg.flavours.iter().map(|f| f.as_str()).collect();
    Err(Error::input(
        file,
        format!(
            "is {form} ipk, but the repository's opkg feeds are {} only (add {} to [opkg] flavours, or build with --ipk-outer {other})",
            served.join(", "),
            flavour.as_str()
        ),
    ))
}

impl Repository for Opkg {
    fn format(&self) -> Format {
        Format::Ipk
    }

    fn pool_path(
        &self,
        file: &Path,
        info: &package::Inspection,
        feed: Option<&str>,
    ) -> Result<String> {
        super::pool_path(
            file,
            &[
                "opkg-pool",
                feed.unwrap_or(OpkgFlavour::Openembedded.as_str()),
            ],
            &format!("{}_{}_{}.ipk", info.name, info.version, info.arch),
        )
    }

    fn import(
        &self,
        ctx: &Context<'_>,
        file: &Path,
        info: &package::Inspection,
        sums: &FileSums,
        pool: &str,
    ) -> Result<Imported> {
        let imported = super::import_as_is(ctx, file, info, sums, pool)?;
        if pool.starts_with("opkg-pool/openembedded/") {
            // Yocto's check_pkg_signature fetches `<file>.ipk.asc`. Signed from the pool
            // copy, which is the checked file (its sha256 is the one inspected).
            let path = ctx.root.join(pool);
            let f = std::fs::File::open(&path).ctx(|| format!("opening {}", path.display()))?;
            let sig = ctx
                .signer
                .detached_stream(std::io::BufReader::with_capacity(256 * 1024, f), true)?;
            write_atomic(&ctx.root.join(format!("{pool}.asc")), &sig)?;
        }
        Ok(imported)
    }

    fn write_indexes(
        &self,
        ctx: &Context<'_>,
        packages: &[Listed<'_>],
        gen: &Path,
        _prev: Option<&Path>,
    ) -> Result<()> {
        for &flavour in &ctx.config.opkg.flavours {
            let feed = flavour.as_str();
            let mine: Vec<Listed<'_>> = packages
                .iter()
                .filter(|(p, _)| p.suite.as_deref() == Some(feed))
                .copied()
                .collect();
            write_feed(ctx, flavour, &mine, &gen.join("opkg").join(feed))?;
        }
        Ok(())
    }

    fn index_link(&self) -> (&'static str, &'static str) {
        ("opkg", "opkg")
    }

    fn static_files(&self, _ctx: &Context<'_>) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

/// One feed directory: indexes, signatures, keys, the client snippet and the pool link.
fn write_feed(
    ctx: &Context<'_>,
    flavour: OpkgFlavour,
    packages: &[Listed<'_>],
    dir: &Path,
) -> Result<()> {
    let feed = flavour.as_str();
    let pool_prefix = format!("opkg-pool/{feed}/");
    let mut text = String::new();
    for (p, index) in packages {
        let IndexData::Control { stanza } = *index else {
            continue;
        };
        text.push_str(stanza);
        let _ = write!(
            text,
            "Filename: {}\nSize: {}\nSHA256sum: {}\nMD5Sum: {}\n\n",
            p.path.replacen(&pool_prefix, "pool/", 1),
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
    let name = &ctx.config.name;
    let mut keynum = String::new();
    match flavour {
        OpkgFlavour::Openembedded => {
            write_file(
                &dir.join("Packages.asc"),
                &ctx.signer.detached(plain, true)?,
            )?;
            write_file(
                &dir.join(format!("{name}.asc")),
                ctx.signer.public_armored()?.as_bytes(),
            )?;
        }
        OpkgFlavour::Openwrt => {
            let usign = ctx.signer.usign().ok_or_else(|| {
                Error::Usage(format!(
                    "the openwrt opkg feed needs a usign key in {} (korgpkg key generate writes one)",
                    ctx.config.keys.display()
                ))
            })?;
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
    }
    let conf = ctx.templates.render(
        &format!("repo/opkg-{feed}.conf"),
        &serde_json::json!({
            "name": name,
            "origin": ctx.config.origin,
            "base_url": ctx.config.base_url,
            "feed_url": format!("{}/opkg/{feed}", ctx.config.base_url),
            "fingerprint": ctx.signer.fingerprint(),
            "usign_keynum": keynum,
        }),
    )?;
    write_file(&dir.join("opkg.conf"), conf.as_bytes())?;
    let pool = dir.join("pool");
    std::os::unix::fs::symlink(format!("../../../../../opkg-pool/{feed}"), &pool)
        .ctx(|| format!("creating {}", pool.display()))?;
    let pool_dir = ctx.root.join(&pool_prefix);
    std::fs::create_dir_all(&pool_dir).ctx(|| format!("creating {}", pool_dir.display()))?;
    Ok(())
}
