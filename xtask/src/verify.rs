//! Integrity checks: a tarball against its published size and MD5, and an extracted
//! directory against the files it must hold.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use md5::{Digest, Md5};

use crate::spec::ArchiveSpec;

/// Lower-case hex MD5 of a file, streamed.
pub fn md5_file(path: &Path) -> anyhow::Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks the size first (cheap, catches truncated downloads), then the MD5.
pub fn verify_archive(path: &Path, spec: &ArchiveSpec) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size != spec.size {
        bail!(
            "{}: size {size} bytes, but the official {} tarball is {} bytes (truncated or wrong file)",
            path.display(),
            spec.label,
            spec.size
        );
    }
    let md5 = md5_file(path)?;
    if !md5.eq_ignore_ascii_case(&spec.md5) {
        bail!(
            "{}: MD5 {md5}, but the official {} tarball has MD5 {} (corrupt or wrong file)",
            path.display(),
            spec.label,
            spec.md5
        );
    }
    Ok(())
}

/// `Ok(())` when `<root>/<dir_name>/` holds every expected file with the expected size;
/// otherwise the first problem found, for messages.
pub fn check_extracted(root: &Path, spec: &ArchiveSpec) -> Result<(), String> {
    let dir = root.join(&spec.dir_name);
    for f in &spec.files {
        let path = dir.join(&f.name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => return Err(format!("{} is missing", path.display())),
        };
        if let Some(size) = f.size {
            if meta.len() != size {
                return Err(format!(
                    "{} has {} bytes, expected {size}",
                    path.display(),
                    meta.len()
                ));
            }
        }
    }
    Ok(())
}
