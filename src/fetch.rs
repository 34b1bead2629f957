//! STUB (replaced by the fetch branch): API only.
#![allow(unused_variables, missing_docs)]
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone)]
pub struct Cache(PathBuf);
impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Cache(dir)
    }
    pub fn default_dir() -> PathBuf {
        PathBuf::from(".korgpkg-cache")
    }
    pub fn dir(&self) -> &Path {
        &self.0
    }
    pub fn lookup(&self, sha256: &str) -> Result<Option<PathBuf>> {
        Ok(None)
    }
}
pub struct FetchOptions {
    pub retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub progress: bool,
    pub max_small: u64,
}
impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 4,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(60),
            progress: false,
            max_small: 16 << 20,
        }
    }
}
pub struct Fetcher(Cache);
impl Fetcher {
    pub fn new(cache: Cache, options: FetchOptions) -> Result<Self> {
        Ok(Fetcher(cache))
    }
    pub fn cache(&self) -> &Cache {
        &self.0
    }
    pub fn fetch_small(&self, url: &str) -> Result<Vec<u8>> {
        Err(Error::network(url, "stub"))
    }
    pub fn fetch_small_index(&self, url: &str) -> Result<Vec<u8>> {
        Err(Error::network(url, "stub"))
    }
    pub fn fetch_verified(&self, url: &str, sha256: &str) -> Result<PathBuf> {
        Err(Error::network(url, "stub"))
    }
    pub fn fetch_many(&self, items: &[(String, String)]) -> Vec<Result<PathBuf>> {
        items
            .iter()
            .map(|(u, s)| self.fetch_verified(u, s))
            .collect()
    }
}
