//! One process per run: an advisory lock (`flock(2)`, through `File::try_lock`) on
//! `<checkpoint>.lock` beside the run's checkpoint, held while the run trains. The kernel
//! releases it when the process ends, however it ends (SIGKILL included), so a lock is never
//! stale; the file stays (removing it would race with a process opening it). The holder writes
//! who it is into the file (pid, host) for the others' messages; a process that finds the run
//! locked only reads that, and never writes to the run's files.
//!
//! Whoever rewrites a reproduction's table and figure holds [`ReportLock`] while it reads the
//! checkpoints and writes, so the last table written was read after every run that had
//! finished by then.
//!
//! Across machines the lock is as good as the shared file system's `flock`: NFS on Linux
//! emulates it with POSIX locks (held across clients); Lustre needs its `flock` mount option.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `<checkpoint>.lock`.
pub fn lock_path(checkpoint: &Path) -> PathBuf {
    let mut name = checkpoint.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    checkpoint.with_file_name(name)
}

/// The run's lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// What trying to take a run's lock found.
#[derive(Debug)]
pub enum Claim {
    Held(RunLock),
    /// Another process holds it: who, as it wrote ("pid 1234 on node7"), or "another process".
    Busy(String),
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

fn holder_of(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.read_to_string(&mut s);
    match s.trim() {
        "" => "another process".to_string(),
        who => who.to_string(),
    }
}

/// `pid 1234 on node7`.
fn me() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" => format!("pid {}", std::process::id()),
        h => format!("pid {} on {h}", std::process::id()),
    }
}

impl RunLock {
    /// Takes the lock of the run whose checkpoint is `checkpoint`, or says who holds it. A
    /// lock that stays busy for half a second is another run's (`--list` holds it for
    /// microseconds).
    pub fn try_claim(checkpoint: &Path) -> Result<Claim> {
        let path = lock_path(checkpoint);
        let mut file = open(&path)?;
        for attempt in 0..10 {
            match file.try_lock() {
                Ok(()) => {
                    let note = me();
                    file.set_len(0)
                        .and_then(|()| file.rewind())
                        .and_then(|()| file.write_all(note.as_bytes()))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(Claim::Held(RunLock { _file: file, path }));
                }
                Err(TryLockError::WouldBlock) if attempt < 9 => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(TryLockError::WouldBlock) => break,
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
        }
        Ok(Claim::Busy(holder_of(&mut file)))
    }

    /// Who holds the run's lock now, or `None` (nothing written: a run that was never
    /// started has no lock file, and gets none from this).
    pub fn holder(checkpoint: &Path) -> Result<Option<String>> {
        let path = lock_path(checkpoint);
        let Ok(mut file) = File::open(&path) else {
            return Ok(None);
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(holder_of(&mut file))),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot test the lock {}", path.display()))
            }
        }
    }
}

/// The lock of a reproduction's report (`table.md.lock` in its folder), held while dropped.
pub struct ReportLock {
    _file: File,
}

impl ReportLock {
    /// Waits for the lock of `table` (another process may be writing the report).
    pub fn wait(table: &Path) -> Result<ReportLock> {
        let path = lock_path(table);
        let file = open(&path)?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(ReportLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_busy_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("sub/r.safetensors");
        assert_eq!(lock_path(&ck), dir.path().join("sub/r.safetensors.lock"));
        assert_eq!(RunLock::holder(&ck).unwrap(), None);
        let Claim::Held(first) = RunLock::try_claim(&ck).unwrap() else {
            panic!("a fresh run's lock is free");
        };
        // flock locks belong to the open file: a second open, even in this process, is refused.
        let me = format!("pid {}", std::process::id());
        match RunLock::try_claim(&ck).unwrap() {
            Claim::Busy(who) => assert!(who.starts_with(&me), "{who}"),
            Claim::Held(_) => panic!("two holders of one run"),
        }
        assert!(RunLock::holder(&ck).unwrap().unwrap().starts_with(&me));
        assert!(!ck.exists(), "the lock never writes the checkpoint");
        drop(first);
        assert_eq!(RunLock::holder(&ck).unwrap(), None);
        assert!(matches!(RunLock::try_claim(&ck).unwrap(), Claim::Held(_)));
    }
}
