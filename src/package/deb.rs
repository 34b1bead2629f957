//! The .deb format: an `ar` archive of `debian-binary`, `control.tar.*` and `data.tar.*`
//! (deb(5)), laid out as dpkg-deb builds it, with `md5sums`, a machine-readable
//! `copyright` file and `changelog.Debian.gz` so lintian finds no errors.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use super::arread::ArReader;
use super::tarball::{self, ArWriter, DataTar};
use super::{
    BuildContext, Compressed, ControlData, DebCompression, Inspection, Packager, PayloadSink,
};
use crate::error::{Error, IoContext, Result};
use crate::model::{Format, PackageMeta};
use crate::payload::{EntryKind, Payload, COPY_BUFFER};

/// The .deb packager.
pub struct Deb;

impl Packager for Deb {
    fn format(&self) -> Format {
        Format::Deb
    }

    fn file_name(&self, meta: &PackageMeta) -> String {
        format!(
            "{}_{}_{}.deb",
            meta.name,
            meta.full_version(Format::Deb),
            meta.arch.deb
        )
    }

    fn write(
        &self,
        meta: &PackageMeta,
        payload: &Payload,
        ctx: &BuildContext<'_>,
        out: &mut File,
    ) -> Result<()> {
        let entries = super::layout(
            payload,
            generated(meta, payload, ctx)?,
            meta.build_time,
            true,
        );
        let mut sink = self.sink(meta, ctx)?;
        super::feed(sink.as_mut(), &entries, ctx.cancel)?;
        sink.finish(meta, payload, out)
    }

    fn sink<'a>(
        &self,
        meta: &PackageMeta,
        ctx: &'a BuildContext<'a>,
    ) -> Result<Box<dyn PayloadSink + 'a>> {
        let compression = ctx.options.deb_compression;
        let level = match compression {
            DebCompression::Zstd => ctx.options.zstd_level,
            DebCompression::Xz => 6,
            DebCompression::Gzip => ctx.options.gzip_level as i32,
        };
        // A template that cannot render fails now, before any compression.
        let probe = ControlData::new(meta, Format::Deb, 0);
        for name in ["deb/control", "deb/copyright", "deb/changelog"] {
            ctx.templates.render(name, &probe)?;
        }
        let tmp = tempfile::tempfile().ctx(|| "creating a temporary file for data.tar".into())?;
        let sink = BufWriter::with_capacity(COPY_BUFFER, tmp);
        Ok(Box::new(DebSink {
            ctx,
            tar: DataTar::new(compress(compression, level, sink)?, meta.build_time)?,
        }))
    }

    fn detect(&self, head: &[u8], path: &Path) -> bool {
        head.starts_with(b"!<arch>\n") && path.extension().is_some_and(|e| e == "deb")
    }

    fn inspect(&self, path: &Path) -> Result<Inspection> {
        inspect_ar(path, Format::Deb)
    }
}

/// The files a .deb adds to the payload: `changelog.Debian.gz` and `copyright` below
/// `/usr/share/doc/<name>/`.
fn generated(
    meta: &PackageMeta,
    payload: &Payload,
    ctx: &BuildContext<'_>,
) -> Result<Vec<crate::payload::Entry>> {
    let mtime = meta.build_time;
    let doc = format!("/usr/share/doc/{}", meta.name);
    let probe = ControlData::new(meta, Format::Deb, 0);
    let mut copyright = ctx.templates.render("deb/copyright", &probe)?;
    if !copyright.ends_with('\n') {
        copyright.push('\n');
    }
    let changelog = ctx.templates.render("deb/changelog", &probe)?;
    let changelog_gz = super::gzip_reproducible(changelog.as_bytes())?;
    let next_inode = payload.entries().len() as u32 + 1;
    Ok(vec![
        super::generated_file(
            format!("{doc}/changelog.Debian.gz"),
            changelog_gz,
            mtime,
            next_inode,
        ),
        super::generated_file(
            format!("{doc}/copyright"),
            copyright.into_bytes(),
            mtime,
            next_inode + 1,
        ),
    ])
}

/// A .deb's data.tar being compressed into a temporary file.
struct DebSink<'a> {
    ctx: &'a BuildContext<'a>,
    tar: DataTar<Compressed<BufWriter<File>>>,
}

impl PayloadSink for DebSink<'_> {
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
        let DebSink { ctx, mut tar } = *self;
        let mtime = meta.build_time;
        let extra = generated(meta, payload, ctx)?;
        for e in &extra {
            if let (false, EntryKind::File(d)) = (tar.contains(&e.path), &e.kind) {
                tar.entry(e, &mut d.open()?)?;
            }
        }
        let entries = super::layout(payload, extra, mtime, true);

        let data = ControlData::new(meta, Format::Deb, super::installed_size_kib(&entries));
        let mut control = ctx.templates.render("deb/control", &data)?;
        if !control.ends_with('\n') {
            control.push('\n');
        }
        let mut md5sums = String::new();
        for e in &entries {
            let file = match &e.kind {
                EntryKind::File(d) | EntryKind::HardLink { data: d, .. } => d,
                _ => continue,
            };
            md5sums.push_str(&hex::encode(file.md5));
            md5sums.push_str("  ");
            md5sums.push_str(e.path.trim_start_matches('/'));
            md5sums.push('\n');
        }
        let mut members = vec![
            ("control", 0o644, control.as_bytes()),
            ("md5sums", 0o644, md5sums.as_bytes()),
        ];
        for (name, script) in meta.scripts.deb.members() {
            members.push((name, 0o755, script.as_bytes()));
        }
        let control_tar = tarball::control_tar(&members, mtime)?;
        let (ext, level) = match ctx.options.deb_compression {
            DebCompression::Zstd => ("zst", ctx.options.zstd_level),
            DebCompression::Xz => ("xz", 6),
            DebCompression::Gzip => ("gz", ctx.options.gzip_level as i32),
        };
        let mut control_member = compress(ctx.options.deb_compression, level, Vec::new())?;
        control_member
            .write_all(&control_tar)
            .ctx(|| "compressing control.tar".into())?;
        let control_member = control_member.finish()?;
        let mut data_file = finish_temp(tar.finish()?.finish()?, "data.tar")?;

        let mut ar = ArWriter::new(out, mtime)?;
        ar.append("debian-binary", b"2.0\n")?;
        ar.append(&format!("control.tar.{ext}"), &control_member)?;
        ar.append_streamed(&format!("data.tar.{ext}"), |f| {
            io::copy(&mut ctx.cancel.reader(&mut data_file), f)
                .ctx(|| "writing data.tar to the package".into())?;
            Ok(())
        })?;
        Ok(())
    }
}

/// Flush a compressed member's temporary file and rewind it for copying.
pub(super) fn finish_temp(w: BufWriter<File>, what: &str) -> Result<File> {
    let ctx = || format!("writing {what} to a temporary file");
    let mut f = w.into_inner().map_err(|e| e.into_error()).ctx(ctx)?;
    f.seek(io::SeekFrom::Start(0)).ctx(ctx)?;
    Ok(f)
}

/// A compressing writer for a .deb member.
fn compress<W: Write>(compression: DebCompression, level: i32, w: W) -> Result<Compressed<W>> {
    Ok(match compression {
        DebCompression::Zstd => Compressed::zstd(w, level)?,
        DebCompression::Xz => Compressed::xz(w),
        DebCompression::Gzip => Compressed::gzip(w, level.unsigned_abs()),
    })
}

/// Read an `ar`-form .deb or .ipk: `debian-binary` first, then the control and data
/// archives, read as bounded streams (see [`super::arread`]).
pub fn inspect_ar(path: &Path, format: Format) -> Result<Inspection> {
    let file = tarball::open(path)?;
    let len = file
        .metadata()
        .ctx(|| format!("reading {}", path.display()))?
        .len();
    let mut ar = ArReader::new(path, BufReader::with_capacity(COPY_BUFFER, file), len)?;
    let mut control = None;
    let mut files = None;
    let mut first = true;
    while let Some((name, mut member)) = ar.next_member()? {
        if first {
            if name != "debian-binary" {
                return Err(Error::input(
                    path,
                    format!("not a valid package: the first member is {name:?}, not debian-binary"),
                ));
            }
            first = false;
        } else if name.starts_with("control.tar") && control.is_none() {
            let archive = tarball::decompressed(path, &name, &mut member)?;
            control = Some(tarball::read_control(path, archive)?);
        } else if name.starts_with("data.tar") && files.is_none() && control.is_some() {
            let archive = tarball::decompressed(path, &name, &mut member)?;
            files = Some(tarball::list_data(path, archive)?);
        }
        io::copy(&mut member, &mut io::sink()).ctx(|| format!("reading {}", path.display()))?;
    }
    match (control, files) {
        (Some(c), Some(f)) => inspection(path, format, &c, f),
        (None, _) => Err(Error::input(
            path,
            "not a valid package: no control archive",
        )),
        (_, None) => Err(Error::input(path, "not a valid package: no data archive")),
    }
}

/// An [`Inspection`] of the package `path` from its control file's text (parsed
/// strictly, see [`super::control`]) and the data listing.
pub fn inspection(
    path: &Path,
    format: Format,
    control_text: &str,
    files: Vec<super::InspectedFile>,
) -> Result<Inspection> {
    let fields = super::control::parse(path, control_text)?;
    let (other, relations) = tarball::split_control(&fields, tarball::DEB_RELATION_FIELDS);
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    Ok(Inspection {
        format,
        name: get("Package"),
        version: get("Version"),
        arch: get("Architecture"),
        fields: other,
        relations,
        files,
    })
}
