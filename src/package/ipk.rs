//! The .ipk format (stub, being written).

use std::fs::File;
use std::path::Path;

use super::{BuildContext, Format, Inspection, PackageMeta, Packager};
use crate::error::{Error, Result};
use crate::payload::Payload;

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
        _meta: &PackageMeta,
        _payload: &Payload,
        _ctx: &BuildContext<'_>,
        _out: &mut File,
    ) -> Result<()> {
        Err(Error::Usage("ipk not implemented yet".into()))
    }

    fn detect(&self, _head: &[u8], path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "ipk")
    }

    fn inspect(&self, path: &Path) -> Result<Inspection> {
        Err(Error::input(path, "ipk inspect not implemented yet"))
    }
}
