//! Getting a dataset into place without ever leaving a half-written file that passes for
//! valid data: downloads go to `<name>.part` and are renamed only once verified; archives
//! are extracted into a temp dir inside `--dir` (same file system) and the dataset
//! directory is renamed into place only once every expected file is there.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;

use anyhow::{anyhow, Context};
use flate2::read::GzDecoder;

use crate::download::download;
use crate::spec::ArchiveSpec;
use crate::verify::{check_extracted, verify_archive};

/// What `fetch` / `install_from_archive` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The extracted files were already present and valid; nothing was touched.
    AlreadyInstalled,
    /// The dataset was (re-)extracted.
    Installed,
}

/// `cargo xtask fetch-cifar` for one dataset: nothing if already installed; else from
/// `archive` if given; else from a previously downloaded tarball in `dir` if it verifies;
/// else downloads it from `spec.url`.
pub fn fetch(dir: &Path, spec: &ArchiveSpec, archive: Option<&Path>) -> anyhow::Result<Outcome> {
    if let Some(a) = archive {
        return install_from_archive(a, dir, spec);
    }
    if already_installed(dir, spec) {
        return Ok(Outcome::AlreadyInstalled);
    }
    create_dir(dir)?;
    let cached = dir.join(&spec.file_name);
    if cached.is_file() {
        println!("verifying {}", cached.display());
        match verify_archive(&cached, spec) {
            Ok(()) => {
                extract_archive(&cached, dir, spec)?;
                return Ok(Outcome::Installed);
            }
            Err(e) => {
                println!("discarding {}: {e:#}", cached.display());
                fs::remove_file(&cached)
                    .with_context(|| format!("cannot remove {}", cached.display()))?;
            }
        }
    }
    let part = dir.join(format!("{}.part", spec.file_name));
    println!("downloading {} from {}", spec.label, spec.url);
    let result = download(&spec.url, &part, spec.size).and_then(|()| {
        println!("verifying size and MD5");
        verify_archive(&part, spec)
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, &cached).with_context(|| format!("cannot rename {}", part.display()))?;
    extract_archive(&cached, dir, spec)?;
    Ok(Outcome::Installed)
}

/// Installs from a tarball already on disk (`--archive`), verified against `spec`.
pub fn install_from_archive(
    archive: &Path,
    dir: &Path,
    spec: &ArchiveSpec,
) -> anyhow::Result<Outcome> {
    if already_installed(dir, spec) {
        return Ok(Outcome::AlreadyInstalled);
    }
    create_dir(dir)?;
    println!("verifying {}", archive.display());
    verify_archive(archive, spec)?;
    extract_archive(archive, dir, spec)?;
    Ok(Outcome::Installed)
}

/// Extracts a `.tar.gz` into a temp dir inside `dir`, checks the expected files, then
/// renames `<tmp>/<dir_name>` to `<dir>/<dir_name>`, replacing an incomplete one.
/// The temp dir (and anything replaced) is removed on every path out.
pub fn extract_archive(archive: &Path, dir: &Path, spec: &ArchiveSpec) -> anyhow::Result<()> {
    println!("extracting {} into {}", archive.display(), dir.display());
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-cifar-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temp dir in {}", dir.display()))?;
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let corrupt = || format!("cannot extract {}: corrupt or truncated", archive.display());
    tar.unpack(tmp.path()).with_context(corrupt)?;
    // tar stops at its end marker; read the rest so gzip checks its CRC and length.
    io::copy(&mut tar.into_inner(), &mut io::sink()).with_context(corrupt)?;
    check_extracted(tmp.path(), spec).map_err(|e| {
        anyhow!(
            "{} does not hold the expected {} files: {e}",
            archive.display(),
            spec.label
        )
    })?;
    let target = dir.join(&spec.dir_name);
    if target.exists() {
        println!("replacing incomplete {}", target.display());
        fs::rename(&target, tmp.path().join(".replaced"))
            .with_context(|| format!("cannot move {} aside", target.display()))?;
    }
    fs::rename(tmp.path().join(&spec.dir_name), &target)
        .with_context(|| format!("cannot move extracted files to {}", target.display()))?;
    println!("{} ready in {}", spec.label, target.display());
    Ok(())
}

fn already_installed(dir: &Path, spec: &ArchiveSpec) -> bool {
    let ok = check_extracted(dir, spec).is_ok();
    if ok {
        println!(
            "{} already present in {}: nothing to do",
            spec.label,
            dir.join(&spec.dir_name).display()
        );
    }
    ok
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
