//! STUB (replaced by the verify branch): API only.
#![allow(unused_variables, missing_docs)]
use crate::error::{Error, Result};
use std::path::Path;

#[derive(Clone, Default)]
pub struct Keyring;
impl Keyring {
    pub fn new() -> Self {
        Keyring
    }
    pub fn from_file(path: &Path) -> Result<Self> {
        Err(Error::input(path, "stub"))
    }
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        Err(Error::verify(origin, "stub"))
    }
    pub fn extend(&mut self, other: Keyring) {}
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn pinned(&self, fingerprint: &str) -> Result<PinnedKey> {
        Err(Error::verify(fingerprint, "stub"))
    }
}
#[derive(Clone, Debug)]
pub struct PinnedKey;
impl PinnedKey {
    pub fn fingerprint(&self) -> String {
        String::new()
    }
    pub fn user_id(&self) -> Option<String> {
        None
    }
}
pub struct SumsFile(Vec<(String, String)>);
impl SumsFile {
    pub fn get(&self, name: &str) -> Option<&str> {
        None
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
    pub fn signer(&self) -> &str {
        ""
    }
}
pub fn verify_sums(text: &[u8], key: &PinnedKey, origin: &str) -> Result<SumsFile> {
    Err(Error::verify(origin, "stub"))
}
pub struct DetachedVerifier;
impl DetachedVerifier {
    pub fn new(signature: &[u8], key: &PinnedKey, origin: &str) -> Result<Self> {
        Err(Error::verify(origin, "stub"))
    }
    pub fn finish(self) -> Result<String> {
        Ok(String::new())
    }
}
impl std::io::Write for DetachedVerifier {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
