//! Temporary files and directories that korgpkg creates in directories it shares with
//! the user (`--out`), and what becomes of them when a build fails, is interrupted or
//! is killed.
//!
//! - Every staging directory ([`TempDir`], `.korgpkg-staging-*`) and package temp file
//!   ([`temp_file_in`], `.korgpkg-*.part`) is **registered** while it exists. SIGINT,
//!   SIGTERM and SIGHUP are handled on one thread ([`install_signal_handlers`]): it
//!   removes every registered path, prints one line and exits with 128 + the signal
//!   number. Registration happens under the registry lock together with the creation,
//!   and the handler holds that lock while it removes, so no path is created unseen.
//! - Each of them is also **`flock`ed** for as long as it exists. A process killed with
//!   SIGKILL (or a machine that lost power) leaves them behind, but holds no lock any
//!   more: [`sweep_stale`], run by every build on its output directory, removes exactly
//!   the unlocked ones and never touches those of a build that is still running.
//! - [`Cancel`] is a flag that parallel stages poll: when one packager fails, the others
//!   stop at their next read instead of finishing their work.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Prefix of every temporary name korgpkg uses in a shared directory.
pub const TEMP_PREFIX: &str = ".korgpkg-";
/// Prefix of staging directories.
pub const STAGING_PREFIX: &str = ".korgpkg-staging-";
/// Suffix of package temp files.
pub const PART_SUFFIX: &str = ".part";

/// Paths to remove if the process is interrupted, by registration number.
struct Registry {
    next: u64,
    paths: BTreeMap<u64, PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    paths: BTreeMap::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while the lock was held leaves the map intact; keep using it.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered path; dropping it unregisters the path (it does not remove it).
#[derive(Debug)]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        registry().paths.remove(&self.0);
    }
}

/// Create something with `create` and register `path_of` it, both under the registry
/// lock, so an interrupt either comes before the creation or sees the path.
fn register_with<T>(
    create: impl FnOnce() -> io::Result<T>,
    path_of: impl FnOnce(&T) -> PathBuf,
) -> io::Result<(T, Registration)> {
    let mut reg = registry();
    let made = create()?;
    let id = reg.next;
    reg.next += 1;
    reg.paths.insert(id, path_of(&made));
    Ok((made, Registration(id)))
}

/// Run `f` while no interrupt can remove registered paths (an interrupt waits until `f`
/// returns). For short sections that must complete as a whole, such as renaming every
/// finished package into place. `f` must not create or drop a [`Registration`].
pub fn uninterrupted<T>(f: impl FnOnce() -> T) -> T {
    let _held = registry();
    f()
}

fn flock(file: &File, how: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a file descriptor owned by `file`; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` still names the file or directory open as `file` (a sweeper may have
/// removed it between its creation and our lock).
fn still_there(path: &Path, file: &File) -> io::Result<bool> {
    let (on_disk, open) = match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(on_disk.dev() == open.dev() && on_disk.ino() == open.ino())
}

/// A registered, locked temporary directory, removed with its contents on drop.
pub struct TempDir {
    // Field order is drop order: remove the directory, then unlock and unregister it.
    dir: tempfile::TempDir,
    _lock: File,
    _registration: Registration,
}

impl TempDir {
    /// A new directory `<parent>/<prefix><random>`.
    pub fn new_in(parent: &Path, prefix: &str) -> io::Result<TempDir> {
        loop {
            let (dir, registration) = register_with(
                || tempfile::Builder::new().prefix(prefix).tempdir_in(parent),
                |d| d.path().to_path_buf(),
            )?;
            let lock = File::open(dir.path())?;
            flock(&lock, libc::LOCK_EX)?;
            if still_there(dir.path(), &lock)? {
                return Ok(TempDir {
                    dir,
                    _lock: lock,
                    _registration: registration,
                });
            }
        }
    }

    /// A new staging directory (`.korgpkg-staging-*`) in `parent`.
    pub fn staging_in(parent: &Path) -> io::Result<TempDir> {
        TempDir::new_in(parent, STAGING_PREFIX)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A registered temp file `<dir>/.korgpkg-<random>.part`, locked while its handle is
/// open (until it is persisted or dropped, which removes it).
pub fn temp_file_in(dir: &Path) -> io::Result<(tempfile::NamedTempFile, Registration)> {
    loop {
        let (tmp, registration) = register_with(
            || {
                tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .suffix(PART_SUFFIX)
                    .tempfile_in(dir)
            },
            |t| t.path().to_path_buf(),
        )?;
        flock(tmp.as_file(), libc::LOCK_EX)?;
        if still_there(tmp.path(), tmp.as_file())? {
            return Ok((tmp, registration));
        }
    }
}

/// Remove the staging directories and `.part` files that interrupted or killed korgpkg
/// processes left in `dir`: those no living process holds a lock on. Best effort (a
/// leftover that cannot be removed stays); returns how many were removed.
pub fn sweep_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(kind) = e.file_type() else { continue };
        let is_dir = if kind.is_dir() && name.starts_with(STAGING_PREFIX) {
            true
        } else if kind.is_file() && name.starts_with(TEMP_PREFIX) && name.ends_with(PART_SUFFIX) {
            false
        } else {
            continue;
        };
        let path = e.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            // A running process owns it.
            continue;
        }
        let gone = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Remove `path` (a file or a whole directory), retrying a few times while other
/// threads may still be creating files in it.
fn remove_now(path: &Path) {
    for _ in 0..20 {
        let done = match std::fs::symlink_metadata(path) {
            Err(_) => return,
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
        };
        if done.is_ok() {
            return;
        }
    }
}

fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Handle SIGINT, SIGTERM and SIGHUP for the rest of the process: remove every
/// registered temporary path, print one line and exit with 128 + the signal number.
///
/// Call it first thing in `main`, before any thread is started: the signals are blocked
/// in the calling thread (and so in every thread started after it) and taken by one
/// thread with `sigwait`, so no other thread is ever interrupted in a system call.
/// Child processes start with an empty signal mask (the standard library resets it).
pub fn install_signal_handlers() {
    // SAFETY: sigset_t is plain data that sigemptyset initializes; the calls only read
    // and write it and the thread's signal mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialized sigset_t and `sig` a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                interrupted(sig);
            }
        });
    if spawned.is_err() {
        // No thread to take them: let the signals act as before.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

fn interrupted(sig: libc::c_int) -> ! {
    // Held until the process ends: nothing new is registered (and so created) after
    // this point, and an uninterrupted section in progress completes first.
    let reg = registry();
    for path in reg.paths.values() {
        remove_now(path);
    }
    eprintln!(
        "korgpkg: interrupted by {}; temporary files removed",
        signal_name(sig)
    );
    // SAFETY: _exit ends the process at once, without running other threads' code or
    // destructors, which would touch the files just removed.
    unsafe { libc::_exit(128 + sig) }
}

/// A flag that parallel work polls to stop early (see the module documentation).
#[derive(Debug, Default)]
pub struct Cancel {
    flag: AtomicBool,
}

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everyone polling this flag to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// An error if the flag is set.
    pub fn check(&self) -> io::Result<()> {
        if self.is_cancelled() {
            Err(io::Error::other(
                "stopped because another part of the build failed",
            ))
        } else {
            Ok(())
        }
    }

    /// `inner`, failing its next read once the flag is set.
    pub fn reader<R: Read>(&self, inner: R) -> CancelRead<'_, R> {
        CancelRead {
            cancel: self,
            inner,
        }
    }
}

/// A reader that stops when its [`Cancel`] flag is set.
pub struct CancelRead<'a, R> {
    cancel: &'a Cancel,
    inner: R,
}

impl<R: Read> Read for CancelRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cancel.check()?;
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_unlocked_leftovers() {
        let out = tempfile::tempdir().expect("tmp");
        let live_dir = TempDir::staging_in(out.path()).expect("staging");
        let (live_file, _reg) = temp_file_in(out.path()).expect("part");
        // Leftovers of a killed process: same names, nobody holds a lock.
        let dead_dir = out.path().join(".korgpkg-staging-dead");
        std::fs::create_dir(&dead_dir).expect("dir");
        std::fs::write(dead_dir.join("1"), b"x").expect("file");
        let dead_file = out.path().join(".korgpkg-dead.part");
        std::fs::write(&dead_file, b"x").expect("file");
        let other = out.path().join("keep.deb");
        std::fs::write(&other, b"x").expect("file");

        assert_eq!(sweep_stale(out.path()), 2);
        assert!(!dead_dir.exists() && !dead_file.exists());
        assert!(live_dir.path().is_dir() && live_file.path().is_file() && other.exists());
        let live = live_dir.path().to_path_buf();
        drop(live_dir);
        assert!(!live.exists(), "a staging directory is removed on drop");
    }

    #[test]
    fn registrations_end_with_their_paths() {
        let out = tempfile::tempdir().expect("tmp");
        let dir = TempDir::staging_in(out.path()).expect("staging");
        let (file, reg) = temp_file_in(out.path()).expect("part");
        let paths = [dir.path().to_path_buf(), file.path().to_path_buf()];
        let registered = || {
            let reg = registry();
            paths
                .iter()
                .filter(|p| reg.paths.values().any(|r| r == *p))
                .count()
        };
        assert_eq!(registered(), 2);
        drop((dir, file, reg));
        assert_eq!(registered(), 0);
    }

    #[test]
    fn a_cancelled_reader_stops() {
        let c = Cancel::new();
        let mut r = c.reader(&b"abcdef"[..]);
        let mut buf = [0u8; 3];
        assert_eq!(r.read(&mut buf).expect("read"), 3);
        c.cancel();
        assert!(r.read(&mut buf).is_err());
    }
}
