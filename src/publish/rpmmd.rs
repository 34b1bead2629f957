//! dnf/yum repositories (rpm-md): signed RPMs in `rpm/Packages/`, and
//! `repodata/{repomd.xml,repomd.xml.asc,repomd.xml.key,<sha256>-{primary,filelists,other}.xml.zst}`
//! (gzip with `compression = "gzip"` for old yum), plus `RPM-GPG-KEY-<name>` and a
//! `<name>.repo` file with `gpgcheck=1` and `repo_gpgcheck=1`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::{
    rpmsign, sha256_hex, write_file, xml_escape, Context, FileSums, Imported, IndexData, Listed,
    MetadataCompression, Repository,
};
use crate::error::{Error, IoContext, Result};
use crate::model::Format;
use crate::package;

/// The rpm-md repository format.
pub struct RpmMd;

const SENSE_LESS: u32 = 0x02;
const SENSE_GREATER: u32 = 0x04;
const SENSE_EQUAL: u32 = 0x08;

/// `(epoch, version, release)` of an `[epoch:]version[-release]` string.
fn evr(s: &str) -> (String, String, String) {
    let (epoch, rest) = match s.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.to_string(), r),
        _ => ("0".to_string(), s),
    };
    match rest.rsplit_once('-') {
        Some((v, r)) => (epoch, v.to_string(), r.to_string()),
        None => (epoch, rest.to_string(), String::new()),
    }
}

fn dep_entries(tag: &str, deps: &[rpm::Dependency]) -> String {
    let deps: Vec<&rpm::Dependency> = deps
        .iter()
        .filter(|d| !d.name.starts_with("rpmlib(") && !d.name.starts_with('/'))
        .collect();
    if deps.is_empty() {
        return String::new();
    }
    let mut s = format!("    <rpm:{tag}>\n");
    for d in deps {
        let bits = d.flags.bits() & (SENSE_LESS | SENSE_GREATER | SENSE_EQUAL);
        let flags = match bits {
            f if f == SENSE_EQUAL => "EQ",
            f if f == SENSE_LESS => "LT",
            f if f == SENSE_LESS | SENSE_EQUAL => "LE",
            f if f == SENSE_GREATER => "GT",
            f if f == SENSE_GREATER | SENSE_EQUAL => "GE",
            _ => "",
        };
        if flags.is_empty() || d.version.is_empty() {
            let _ = writeln!(s, "      <rpm:entry name=\"{}\"/>", xml_escape(&d.name));
        } else {
            let (e, v, r) = evr(&d.version);
            let rel = if r.is_empty() {
                String::new()
            } else {
                format!(" rel=\"{}\"", xml_escape(&r))
            };
            let _ = writeln!(
                s,
                "      <rpm:entry name=\"{}\" flags=\"{flags}\" epoch=\"{e}\" ver=\"{}\"{rel}/>",
                xml_escape(&d.name),
                xml_escape(&v)
            );
        }
    }
    let _ = writeln!(s, "    </rpm:{tag}>");
    s
}

/// The index entries of the signed rpm written to `path` (`sha256` and `size` are the
/// pool file's), reachable at `href`.
fn describe(
    path: &Path,
    signed: &rpmsign::Signed,
    sha256: &str,
    size: u64,
    href: &str,
) -> Result<IndexData> {
    let md = &signed.metadata;
    let bad = |e: rpm::Error| Error::input(path, format!("not a valid rpm package: {e}"));
    let name = md.get_name().map_err(bad)?;
    let arch = md.get_arch().map_err(bad)?;
    let epoch = md.get_epoch().unwrap_or(0);
    let ver = md.get_version().map_err(bad)?;
    let rel = md.get_release().map_err(bad)?;
    let text = |r: std::result::Result<&str, rpm::Error>| xml_escape(r.unwrap_or(""));
    let build = md.get_build_time().unwrap_or(0);
    let installed = md.get_installed_size().unwrap_or(0);
    let archive = md
        .signature
        .get_entry_data_as_u32(rpm::IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE)
        .map(u64::from)
        .or_else(|_| {
            md.signature
                .get_entry_data_as_u64(rpm::IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE)
        })
        .unwrap_or(0);
    let version = format!(
        "<version epoch=\"{epoch}\" ver=\"{}\" rel=\"{}\"/>",
        xml_escape(ver),
        xml_escape(rel)
    );
    let files = md.get_file_entries().map_err(bad)?;

    let mut primary = String::new();
    let _ = write!(
        primary,
        "<package type=\"rpm\">\n  <name>{}</name>\n  <arch>{}</arch>\n  {version}\n  \
         <checksum type=\"sha256\" pkgid=\"YES\">{sha256}</checksum>\n  \
         <summary>{}</summary>\n  <description>{}</description>\n  <packager>{}</packager>\n  \
         <url>{}</url>\n  <time file=\"{build}\" build=\"{build}\"/>\n  \
         <size package=\"{size}\" installed=\"{installed}\" archive=\"{archive}\"/>\n  \
         <location href=\"{}\"/>\n  <format>\n    <rpm:license>{}</rpm:license>\n    \
         <rpm:vendor>{}</rpm:vendor>\n    <rpm:group>{}</rpm:group>\n    \
         <rpm:buildhost>{}</rpm:buildhost>\n    <rpm:sourcerpm>{}</rpm:sourcerpm>\n    \
         <rpm:header-range start=\"{}\" end=\"{}\"/>\n",
        xml_escape(name),
        xml_escape(arch),
        text(md.get_summary()),
        text(md.get_description()),
        text(md.get_packager()),
        text(md.get_url()),
        xml_escape(href),
        text(md.get_license()),
        text(md.get_vendor()),
        text(md.get_group()),
        text(md.get_build_host()),
        text(md.get_source_rpm()),
        signed.header_range.0,
        signed.header_range.1,
    );
    let lists = [
        ("provides", md.get_provides()),
        ("requires", md.get_requires()),
        ("conflicts", md.get_conflicts()),
        ("obsoletes", md.get_obsoletes()),
        ("recommends", md.get_recommends()),
        ("suggests", md.get_suggests()),
    ];
    for (tag, list) in lists {
        match list {
            Ok(l) => primary.push_str(&dep_entries(tag, &l)),
            Err(rpm::Error::TagNotFound(_)) => {}
            Err(e) => return Err(bad(e)),
        }
    }
    let mut filelists = format!(
        "<package pkgid=\"{sha256}\" name=\"{}\" arch=\"{}\">\n  {version}\n",
        xml_escape(name),
        xml_escape(arch)
    );
    for f in &files {
        let raw = f.path().to_string_lossy().into_owned();
        let p = xml_escape(&raw);
        let dir = matches!(f.mode().file_type(), rpm::FileType::Dir);
        let kind = if dir { " type=\"dir\"" } else { "" };
        let _ = writeln!(filelists, "  <file{kind}>{p}</file>");
        // Like createrepo_c: primary lists the files dependency solving needs most.
        if raw.starts_with("/etc/") || raw.contains("bin/") || raw == "/usr/lib/sendmail" {
            let _ = writeln!(primary, "    <file{kind}>{p}</file>");
        }
    }
    filelists.push_str("</package>\n");
    primary.push_str("  </format>\n</package>\n");
    let mut other = format!(
        "<package pkgid=\"{sha256}\" name=\"{}\" arch=\"{}\">\n  {version}\n",
        xml_escape(name),
        xml_escape(arch)
    );
    for c in md.get_changelog_entries().unwrap_or_default() {
        let _ = writeln!(
            other,
            "  <changelog author=\"{}\" date=\"{}\">{}</changelog>",
            xml_escape(&c.name),
            c.timestamp,
            xml_escape(&c.description)
        );
    }
    other.push_str("</package>\n");
    Ok(IndexData::Rpm {
        primary,
        filelists,
        other,
    })
}

/// A writer that computes the sums of what goes through it.
struct SumsWriter<W: Write> {
    inner: W,
    sha256: sha2::Sha256,
    md5: md5::Md5,
    size: u64,
}

impl<W: Write> SumsWriter<W> {
    fn new(inner: W) -> Self {
        use sha2::Digest;
        SumsWriter {
            inner,
            sha256: sha2::Sha256::new(),
            md5: md5::Md5::new(),
            size: 0,
        }
    }

    fn finish(mut self) -> std::io::Result<FileSums> {
        use sha2::Digest;
        self.inner.flush()?;
        Ok(FileSums {
            sha256: hex::encode(self.sha256.finalize()),
            md5: hex::encode(self.md5.finalize()),
            size: self.size,
        })
    }
}

impl<W: Write> Write for SumsWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn compress(kind: MetadataCompression, bytes: &[u8]) -> Result<(Vec<u8>, &'static str)> {
    let ctx = || "compressing rpm-md metadata".to_string();
    Ok(match kind {
        MetadataCompression::Zstd => (zstd::encode_all(bytes, 10).ctx(ctx)?, "zst"),
        // Level 6 (zlib's default, as createrepo_c), no name, mtime 0.
        MetadataCompression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(3)
                .write(Vec::new(), flate2::Compression::new(6));
            enc.write_all(bytes).ctx(ctx)?;
            (enc.finish().ctx(ctx)?, "gz")
        }
    })
}

impl Repository for RpmMd {
    fn format(&self) -> Format {
        Format::Rpm
    }

    fn pool_path(
        &self,
        file: &Path,
        info: &package::Inspection,
        _feed: Option<&str>,
    ) -> Result<String> {
        super::pool_path(
            file,
            &["rpm", "Packages"],
            &format!("{}-{}.{}.rpm", info.name, info.version, info.arch),
        )
    }

    fn import(
        &self,
        ctx: &Context<'_>,
        file: &Path,
        _info: &package::Inspection,
        _sums: &FileSums,
        pool: &str,
    ) -> Result<Imported> {
        let dst = super::pool_file(ctx.root, file, pool)?;
        let mut out = super::PoolFile::create(&dst, ctx.durability)?;
        let mut w = SumsWriter::new(std::io::BufWriter::new(out.file()));
        let signed = rpmsign::sign(file, ctx.signer, &mut w)?;
        let sums = w.finish().ctx(|| format!("writing {}", dst.display()))?;
        out.finish()?;
        let index = describe(
            &dst,
            &signed,
            &sums.sha256,
            sums.size,
            pool.trim_start_matches("rpm/"),
        )?;
        Ok(Imported { index, sums })
    }

    fn write_indexes(
        &self,
        ctx: &Context<'_>,
        packages: &[Listed<'_>],
        gen: &Path,
        _prev: Option<&Path>,
    ) -> Result<()> {
        let dir = gen.join("rpm/repodata");
        let n = packages.len();
        let mut primary = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{n}\">\n"
        );
        let mut filelists = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"{n}\">\n"
        );
        let mut other = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<otherdata xmlns=\"http://linux.duke.edu/metadata/other\" packages=\"{n}\">\n"
        );
        for (_, index) in packages {
            if let IndexData::Rpm {
                primary: a,
                filelists: b,
                other: c,
            } = *index
            {
                primary.push_str(a);
                filelists.push_str(b);
                other.push_str(c);
            }
        }
        primary.push_str("</metadata>\n");
        filelists.push_str("</filelists>\n");
        other.push_str("</otherdata>\n");

        let time = ctx.time;
        let mut repomd = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n  <revision>{time}</revision>\n"
        );
        let files = [
            ("primary", primary),
            ("filelists", filelists),
            ("other", other),
        ];
        // The three compress (and hash) in parallel.
        let packed = super::par_map(&files, |(_, text)| {
            compress(ctx.config.rpm.compression, text.as_bytes())
                .map(|(packed, ext)| (sha256_hex(text.as_bytes()), packed, ext))
        });
        for ((kind, text), packed) in files.iter().zip(packed) {
            let open = text.as_bytes();
            let (open_sum, packed, ext) = packed?;
            let sum = sha256_hex(&packed);
            let name = format!("{sum}-{kind}.xml.{ext}");
            write_file(&dir.join(&name), &packed)?;
            let _ = write!(
                repomd,
                "  <data type=\"{kind}\">\n    <checksum type=\"sha256\">{sum}</checksum>\n    \
                 <open-checksum type=\"sha256\">{}</open-checksum>\n    \
                 <location href=\"repodata/{name}\"/>\n    <timestamp>{time}</timestamp>\n    \
                 <size>{}</size>\n    <open-size>{}</open-size>\n  </data>\n",
                open_sum,
                packed.len(),
                open.len()
            );
        }
        repomd.push_str("</repomd>\n");
        write_file(
            &dir.join("repomd.xml.key"),
            ctx.signer.public_armored()?.as_bytes(),
        )?;
        write_file(
            &dir.join("repomd.xml.asc"),
            &ctx.signer.detached(repomd.as_bytes(), true)?,
        )?;
        write_file(&dir.join("repomd.xml"), repomd.as_bytes())?;
        Ok(())
    }

    fn index_link(&self) -> (&'static str, &'static str) {
        ("rpm/repodata", "rpm/repodata")
    }

    fn static_files(&self, ctx: &Context<'_>) -> Result<Vec<(String, Vec<u8>)>> {
        let name = &ctx.config.name;
        let repo = ctx.templates.render(
            "repo/dnf.repo",
            &serde_json::json!({
                "name": name,
                "origin": ctx.config.origin,
                "base_url": ctx.config.base_url,
            }),
        )?;
        Ok(vec![
            (
                format!("rpm/RPM-GPG-KEY-{name}"),
                ctx.signer.public_armored()?.into_bytes(),
            ),
            (format!("rpm/{name}.repo"), repo.into_bytes()),
        ])
    }
}
