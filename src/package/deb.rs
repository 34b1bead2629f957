//! The .deb format (stub, being written).

use std::fs::File;
use std::path::Path;

use super::{BuildContext, Format, Inspection, PackageMeta, Packager};
use crate::error::{Error, Result};
use crate::payload::Payload;

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
        _meta: &PackageMeta,
        _payload: &Payload,
        _ctx: &BuildContext<'_>,
        _out: &mut File,
    ) -> Result<()> {
        Err(Error::Usage("deb not implemented yet".into()))
    }

    fn detect(&self, _head: &[u8], path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "deb")
    }

    fn inspect(&self, path: &Path) -> Result<Inspection> {
        Err(Error::input(path, "deb inspect not implemented yet"))
    }
}
