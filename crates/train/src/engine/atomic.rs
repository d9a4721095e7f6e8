//! Crash-safe file writes.
//!
//! Training runs for hours and rewrites its checkpoint, metrics CSV and plot every epoch.
//! If the process is killed (Ctrl-C, OOM killer, power loss) in the middle of such a write,
//! a plain `fs::write` leaves a truncated file where a good one used to be, and resuming
//! from a truncated checkpoint loses the whole run. So every output file is written to a
//! temporary file in the same directory, flushed to disk, and then renamed over the target:
//! a rename within one filesystem is atomic, so readers see either the old complete file or
//! the new complete file, never a mix.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

/// Atomically replace `path` with `bytes` (creating parent directories as needed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Atomically replace `path` with whatever `fill` writes.
///
/// `fill` writes into a buffered temporary file; if it fails, the temporary file is removed
/// and the existing `path` is left untouched. Useful for streaming large outputs without first
/// collecting them in memory.
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let file_name = path
        .file_name()
        .with_context(|| format!("cannot write {}: path has no file name", path.display()))?;
    if path.is_dir() {
        bail!("cannot write {}: it is a directory", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create directory {} for {}",
            dir.display(),
            path.display()
        )
    })?;

    let tmp = dir.join(temp_name(file_name));
    let result = write_and_sync(&tmp, fill)
        .with_context(|| {
            format!(
                "cannot write {} (via temporary {})",
                path.display(),
                tmp.display()
            )
        })
        .and_then(|()| {
            fs::rename(&tmp, path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        });
    if result.is_err() {
        // Best effort: never leave temporary files behind. The original error is what matters.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable. Directories cannot be opened for sync on every platform,
    // and the data is already safe in the file, so a failure here is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A temporary name that is unique per process and per call, and hidden (leading dot) so it
/// does not clutter `ls` or get picked up by globbing tools while it exists.
fn temp_name(file_name: &std::ffi::OsStr) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        ".{}.tmp.{}.{}",
        file_name.to_string_lossy(),
        std::process::id(),
        n
    )
}

fn write_and_sync<F>(tmp: &Path, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let file = File::create(tmp)?;
    let mut w = BufWriter::new(file);
    fill(&mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_parents_and_overwrites_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.txt");
        write_atomic(&path, b"first version, fairly long").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first version, fairly long");
        // A shorter second write must fully replace the first, not overlay it.
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(&dir.path().join("a/b")), vec!["out.txt"]);
    }

    #[test]
    fn failing_writer_keeps_old_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.bin");
        write_atomic(&path, b"good").unwrap();
        let err = write_atomic_with(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("simulated crash"))
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("ckpt.bin"), "{err:#}");
        assert_eq!(fs::read(&path).unwrap(), b"good");
        assert_eq!(entries(dir.path()), vec!["ckpt.bin"]);
    }

    #[test]
    fn path_is_a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let err = write_atomic(&sub, b"x").unwrap_err();
        assert!(format!("{err:#}").contains("directory"), "{err:#}");
        assert!(sub.is_dir());
        assert_eq!(entries(dir.path()), vec!["sub"]);
    }

    #[test]
    fn parent_is_a_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = write_atomic(&file.join("out.csv"), b"y").unwrap_err();
        assert!(format!("{err:#}").contains("out.csv"), "{err:#}");
    }

    #[cfg(unix)]
    #[test]
    fn unwritable_directory_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permission bits; the test is meaningless there, so probe first.
        let writable = File::create(ro.join("probe")).is_ok();
        if !writable {
            let err = write_atomic(&ro.join("out.txt"), b"y").unwrap_err();
            assert!(format!("{err:#}").contains("out.txt"), "{err:#}");
            assert!(entries(&ro).is_empty());
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn temp_names_are_hidden_and_unique() {
        assert!(temp_name(std::ffi::OsStr::new("x.csv")).starts_with(".x.csv.tmp."));
        assert_ne!(
            temp_name(std::ffi::OsStr::new("x")),
            temp_name(std::ffi::OsStr::new("x"))
        );
    }
}
