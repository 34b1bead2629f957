//! The .ipk format of opkg: the members of a .deb (`debian-binary`, `control.tar.gz`,
//! `data.tar.gz`, always gzip, GNU tar) inside either an `ar` archive (Yocto and
//! OpenEmbedded opkg) or a gzip'd tar (OpenWrt up to 24.10). No docs are shipped.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::tarball::{self, ArWriter, DataTar};
use super::{BuildContext, Compressed, ControlData, Inspection, IpkOuter, Packager, PayloadSink};
use crate::error::{Error, IoContext, Result};
use crate::model::{Format, PackageMeta};
use crate::payload::{EntryKind, Payload, COPY_BUFFER};

/// The .ipk packager.
pub struct Ipk;

impl Packager for Ipk {
    fn format(&self) -> Format {
        Format::Ipk
    }

    fn file_name(&self, meta: &PackageMeta) -> String {
        format!(
            "{}_{}_{}.ipk",
            meta.name,
            meta.full_version(Format::Ipk),
            meta.arch.ipk
        )
    }

    fn write(
        &self,
        meta: &PackageMeta,
        payload: &Payload,
        ctx: &BuildContext<'_>,
        out: &mut File,
    ) -> Result<()> {
        let entries = super::layout(payload, Vec::new(), meta.build_time, true);
        let mut sink = self.sink(meta, ctx)?;
        super::feed(sink.as_mut(), &entries, ctx.cancel)?;
        sink.finish(meta, payload, out)
    }

    fn sink<'a>(
        &self,
        meta: &PackageMeta,
        ctx: &'a BuildContext<'a>,
    ) -> Result<Box<dyn PayloadSink + 'a>> {
        // A template that cannot render fails now, before any compression.
        ctx.templates
            .render("ipk/control", &ControlData::new(meta, Format::Ipk, 0))?;
        let tmp =
            tempfile::tempfile().ctx(|| "creating a temporary file for data.tar.gz".into())?;
        let sink = BufWriter::with_capacity(COPY_BUFFER, tmp);
        Ok(Box::new(IpkSink {
            ctx,
            tar: DataTar::new(
                Compressed::gzip(sink, ctx.options.gzip_level),
                meta.build_time,
            )?,
        }))
    }

    fn detect(&self, _head: &[u8], path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "ipk")
    }

    fn inspect(&self, path: &Path) -> Result<Inspection> {
        let mut head = [0u8; 2];
        let mut f = tarball::open(path)?;
        let n = f
            .read(&mut head)
            .ctx(|| format!("reading {}", path.display()))?;
        if n == 2 && head == [0x1f, 0x8b] {
            inspect_tar_outer(path)
        } else {
            super::deb::inspect_ar(path, Format::Ipk)
        }
    }
}

/// An .ipk's data.tar.gz being compressed into a temporary file.
struct IpkSink<'a> {
    ctx: &'a BuildContext<'a>,
    tar: DataTar<Compressed<BufWriter<File>>>,
}

impl PayloadSink for IpkSink<'_> {
    fn entry(&mut self, entry: &crate::payload::Entry, data: &mut dyn Read) -> Result<()> {
        self.tar
            .entry_unless_cancelled(self.ctx.cancel, entry, data)
    }

    fn finish(
        self: Box<Self>,
        meta: &PackageMeta,
        payload: &Payload,
        out: &mut File,
    ) -> Result<()> {
        let IpkSink { ctx, tar } = *self;
        let mtime = meta.build_time;
        let level = ctx.options.gzip_level;
        let entries = super::layout(payload, Vec::new(), mtime, true);
        let installed: u64 = entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File(d) => d.size,
                _ => 0,
            })
            .sum();
        let data = ControlData::new(meta, Format::Ipk, installed);
        let mut control = ctx.templates.render("ipk/control", &data)?;
        if !control.ends_with('\n') {
            control.push('\n');
        }
        let mut members = vec![("control", 0o644, control.as_bytes())];
        for (name, script) in meta.scripts.ipk.members() {
            members.push((name, 0o755, script.as_bytes()));
        }
        let control_tar = tarball::control_tar(&members, mtime)?;
        let mut gz = Compressed::gzip(Vec::new(), level);
        gz.write_all(&control_tar)
            .ctx(|| "compressing control.tar.gz".into())?;
        let control_gz = gz.finish()?;
        let mut tmp = super::deb::finish_temp(tar.finish()?.finish()?, "data.tar.gz")?;

        match ctx.options.ipk_outer {
            IpkOuter::Ar => {
                let mut ar = ArWriter::new(out, mtime)?;
                ar.append("debian-binary", b"2.0\n")?;
                ar.append("control.tar.gz", &control_gz)?;
                ar.append_streamed("data.tar.gz", |f| {
                    std::io::copy(&mut ctx.cancel.reader(&mut tmp), f)
                        .ctx(|| "writing data.tar.gz".into())?;
                    Ok(())
                })?;
            }
            IpkOuter::Tar => {
                // A tar member's size precedes its bytes and the outer stream is
                // compressed, so data.tar.gz is made in a temporary file first.
                let tmp_ctx = || "writing data.tar.gz to a temporary file".to_string();
                let size = tmp.seek(SeekFrom::End(0)).ctx(tmp_ctx)?;
                tmp.seek(SeekFrom::Start(0)).ctx(tmp_ctx)?;
                let sink = BufWriter::with_capacity(COPY_BUFFER, &mut *out);
                let mut b = tar::Builder::new(Compressed::gzip(sink, level));
                tarball::write_tar_member(&mut b, "debian-binary", mtime, 4, &b"2.0\n"[..])?;
                let data_gz = ctx.cancel.reader(&mut tmp);
                tarball::write_tar_member(&mut b, "data.tar.gz", mtime, size, data_gz)?;
                tarball::write_tar_member(
                    &mut b,
                    "control.tar.gz",
                    mtime,
                    control_gz.len() as u64,
                    &control_gz[..],
                )?;
                let enc = b.into_inner().ctx(|| "finishing the ipk".into())?;
                enc.finish()?.flush().ctx(|| "writing the ipk".into())?;
            }
        }
        Ok(())
    }
}

/// Read an .ipk whose outer container is a gzip'd tar, in one streaming pass.
fn inspect_tar_outer(path: &Path) -> Result<Inspection> {
    let bad = |e: std::io::Error| crate::targuard::input_error(path, "not a valid ipk", &e);
    let gz = flate2::read::GzDecoder::new(tarball::open(path)?);
    let mut outer = tar::Archive::new(crate::targuard::TarGuard::new(gz));
    let mut control = None;
    let mut files = None;
    for entry in outer.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_string();
        if name.starts_with("control.tar") {
            if entry.size() > tarball::MAX_CONTROL {
                return Err(Error::input(
                    path,
                    format!(
                        "member {name:?} of {} bytes is over the {} MiB limit for control members",
                        entry.size(),
                        tarball::MAX_CONTROL >> 20
                    ),
                ));
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(tarball::MAX_CONTROL)
                .read_to_end(&mut bytes)
                .map_err(bad)?;
            let archive = tarball::decompressed(path, &name, &bytes[..])?;
            control = Some(tarball::read_control(path, archive)?);
        } else if name.starts_with("data.tar") {
            let archive = tarball::decompressed(path, &name, &mut entry)?;
            files = Some(tarball::list_data(path, archive)?);
        }
    }
    match (control, files) {
        (Some(c), Some(f)) => super::deb::inspection(path, Format::Ipk, &c, f),
        (None, _) => Err(Error::input(path, "ipk has no control.tar.gz")),
        (_, None) => Err(Error::input(path, "ipk has no data.tar.gz")),
    }
}
