//! The prebuilt kernels file (`resnet-kernels.bin`): every kernel compiled ahead of time by
//! `cargo xtask cubins`, so that a machine with a CUDA driver but no nvrtc can still run the
//! GPU path. [`crate::supply`] decides when it is used and where it is looked for.
//!
//! It holds, for each source of [`crate::SOURCES`], a cubin for each real architecture of
//! [`ARCHS`] and PTX for its virtual one. A device takes the cubin of its own architecture,
//! else the newest cubin of its major version that it can run (an sm_80 cubin runs on sm_86
//! and sm_87 cards), else the newest PTX not above it, which the driver compiles for it when
//! the module is loaded (cards newer than the file: sm_100, sm_120).
//!
//! Format (little-endian): magic `RKPREBLT`, format version (u32), [`crate::SOURCES_HASH`] of
//! the build that wrote it (u64), nvrtc's version (2 x u32), the compile options (u32 length +
//! text), the number of images (u32), then per image: module name and arch (u16 length + text
//! each), its source's hash (u64), its length (u64), its FNV-1a checksum (u64) and its bytes.
//! The header is checked first, so a file from other sources is refused as *stale* (with the
//! command that rebuilds it) before anything else is read; a truncated or corrupted one is
//! refused as *damaged*.

use std::path::{Path, PathBuf};

use crate::error::{KernelError, Result};
use crate::nvrtc::{checksum, CompiledModule, ModuleKind, BASE_OPTIONS};
use crate::{KernelSource, SOURCES, SOURCES_HASH};

/// The file's name, as `cargo xtask cubins` writes it and as it is looked for.
pub const FILE_NAME: &str = "resnet-kernels.bin";

/// What `cargo xtask cubins` compiles for: cubins for the A100 (sm_80), the RTX 30 series,
/// A10 and A40 (sm_86), the L4, L40 and RTX 40 series (sm_89), the H100 and H200 (sm_90); and
/// PTX (compute_90) that the driver compiles for any newer card.
pub const ARCHS: &[&str] = &["sm_80", "sm_86", "sm_89", "sm_90", "compute_90"];

const MAGIC: &[u8; 8] = b"RKPREBLT";
/// Bumped whenever the layout changes.
const FORMAT: u32 = 1;
/// Offset of the sources hash in the file (after the magic and the format version).
pub const SOURCES_HASH_OFFSET: usize = 12;

/// One compiled image in the file.
#[derive(Debug, Clone)]
struct Image {
    source: &'static KernelSource,
    arch: String,
    bytes: Vec<u8>,
}

/// A prebuilt kernels file, read and checked ([`Prebuilt::read`]) or about to be written
/// ([`Prebuilt::from_modules`]).
#[derive(Debug, Clone)]
pub struct Prebuilt {
    /// Where it was read from (`None` for one made in memory).
    pub path: Option<PathBuf>,
    /// The nvrtc version that compiled the images.
    pub nvrtc_version: (i32, i32),
    images: Vec<Image>,
}

/// The compile options, as stored (one per line).
fn options_text() -> String {
    BASE_OPTIONS.join("\n")
}

/// What to do about a file that cannot be used.
fn rebuild_hint() -> &'static str {
    "rebuild it with `cargo xtask cubins` (on a machine with nvrtc) from the same sources as \
     this program"
}

impl Prebuilt {
    /// The file for modules compiled by nvrtc `nvrtc_version` (each source for each arch).
    /// Every module must be one of this build's [`SOURCES`], as compiled from its text.
    pub fn from_modules(modules: &[CompiledModule], nvrtc_version: (i32, i32)) -> Result<Self> {
        let images = modules
            .iter()
            .map(|m| {
                let source = crate::source(m.name).ok_or_else(|| {
                    KernelError::Prebuilt(format!("{} is not one of this build's sources", m.file))
                })?;
                Ok(Image {
                    source,
                    arch: m.arch.clone(),
                    bytes: m.image.clone(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Prebuilt {
            path: None,
            nvrtc_version,
            images,
        })
    }

    /// The file's bytes, with this build's [`SOURCES_HASH`] and options.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&SOURCES_HASH.to_le_bytes());
        out.extend_from_slice(&(self.nvrtc_version.0 as u32).to_le_bytes());
        out.extend_from_slice(&(self.nvrtc_version.1 as u32).to_le_bytes());
        let options = options_text();
        out.extend_from_slice(&(options.len() as u32).to_le_bytes());
        out.extend_from_slice(options.as_bytes());
        out.extend_from_slice(&(self.images.len() as u32).to_le_bytes());
        for image in &self.images {
            for text in [image.source.name, image.arch.as_str()] {
                out.extend_from_slice(&(text.len() as u16).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            out.extend_from_slice(&image.source.hash.to_le_bytes());
            out.extend_from_slice(&(image.bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&checksum(&image.bytes).to_le_bytes());
            out.extend_from_slice(&image.bytes);
        }
        out
    }

    /// Reads and checks the file at `path`: `Err` ([`KernelError::Prebuilt`], naming the path
    /// and what to do) when it cannot be read, is not such a file, is stale or is damaged.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            KernelError::Prebuilt(format!("{} cannot be read: {e}", path.display()))
        })?;
        let mut file = Self::from_bytes(&bytes)
            .map_err(|why| KernelError::Prebuilt(format!("{} {why}", path.display())))?;
        file.path = Some(path.to_path_buf());
        Ok(file)
    }

    /// How to name the file in a message: its path, or "(in memory)".
    fn shown(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(in memory)".into(), |p| p.display().to_string())
    }

    /// [`Prebuilt::read`] on bytes; the error completes a sentence that starts with the path.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        let damaged = |what: &str| format!("is damaged ({what}); {}", rebuild_hint());
        if r.take(8) != Some(MAGIC.as_slice()) {
            return Err(format!(
                "is not a prebuilt kernels file (no `RKPREBLT` header); {}",
                rebuild_hint()
            ));
        }
        let format = r.u32().ok_or_else(|| damaged("truncated header"))?;
        if format != FORMAT {
            return Err(format!(
                "has format version {format}, this program reads version {FORMAT}; {}",
                rebuild_hint()
            ));
        }
        let hash = r.u64().ok_or_else(|| damaged("truncated header"))?;
        if hash != SOURCES_HASH {
            return Err(format!(
                "is stale: it was built from other kernel sources (their hash {hash:016x}, this \
                 program's {SOURCES_HASH:016x}); {}",
                rebuild_hint()
            ));
        }
        let header = (|| {
            let nvrtc = (r.u32()? as i32, r.u32()? as i32);
            let len = r.u32()? as usize;
            let options = String::from_utf8_lossy(r.take(len)?).into_owned();
            Some((nvrtc, options, r.u32()?))
        })();
        let (nvrtc_version, options, count) = header.ok_or_else(|| damaged("truncated header"))?;
        if options != options_text() {
            return Err(format!(
                "is stale: it was compiled with other nvrtc options ({:?}, this program uses \
                 {:?}); {}",
                options.replace('\n', " "),
                BASE_OPTIONS.join(" "),
                rebuild_hint()
            ));
        }
        let mut images = Vec::new();
        for i in 0..count {
            let image = r
                .image()
                .ok_or_else(|| damaged(&format!("image {} of {count} is cut short", i + 1)))?;
            let (name, arch, hash, sum, image_bytes) = image;
            let source = SOURCES.iter().find(|s| s.name == name && s.hash == hash);
            let source = source.ok_or_else(|| {
                format!(
                    "is stale: its module `{name}` is not this program's (no source of that \
                     name and hash); {}",
                    rebuild_hint()
                )
            })?;
            if checksum(image_bytes) != sum {
                return Err(damaged(&format!(
                    "the {arch} image of {name} fails its checksum"
                )));
            }
            let plausible = match ModuleKind::for_arch(&arch) {
                ModuleKind::Cubin => image_bytes.starts_with(b"\x7fELF"),
                ModuleKind::Ptx => !image_bytes.is_empty() && !image_bytes.contains(&0),
            };
            if !plausible {
                return Err(damaged(&format!(
                    "the {arch} image of {name} is not a {arch} image"
                )));
            }
            images.push(Image {
                source,
                arch,
                bytes: image_bytes.to_vec(),
            });
        }
        if r.at != bytes.len() {
            return Err(damaged("bytes after the last image"));
        }
        Ok(Prebuilt {
            path: None,
            nvrtc_version,
            images,
        })
    }

    /// The architectures the file holds images for, in the file's order, each once.
    pub fn archs(&self) -> Vec<&str> {
        let mut archs: Vec<&str> = Vec::new();
        for image in &self.images {
            if !archs.contains(&image.arch.as_str()) {
                archs.push(&image.arch);
            }
        }
        archs
    }

    /// Keeps only the images whose arch `keep` accepts (for making files that hold less, as
    /// a test of what a device does with them).
    pub fn retain_archs(&mut self, keep: impl Fn(&str) -> bool) {
        self.images.retain(|image| keep(&image.arch));
    }

    /// The arch whose images a device of compute capability `capability` loads: see the
    /// module's documentation. `None` when the file holds nothing the device can run.
    pub fn arch_for(&self, capability: (i32, i32)) -> Option<&str> {
        pick_arch(&self.archs(), capability)
    }

    /// One module per source of [`SOURCES`], in that order, for a device of compute capability
    /// `capability` (the images of [`Prebuilt::arch_for`]).
    pub fn modules_for(&self, capability: (i32, i32)) -> Result<Vec<CompiledModule>> {
        let device = format!("sm_{}{}", capability.0, capability.1);
        let arch = self.arch_for(capability).ok_or_else(|| {
            KernelError::Prebuilt(format!(
                "{} holds no image that a {device} device can run (it has {}); build one with \
                 `cargo xtask cubins --arch {device}`",
                self.shown(),
                self.archs().join(", ")
            ))
        })?;
        SOURCES
            .iter()
            .map(|src| {
                let image = self
                    .images
                    .iter()
                    .find(|i| i.source.name == src.name && i.arch == arch)
                    .ok_or_else(|| {
                        KernelError::Prebuilt(format!(
                            "{} has no {arch} image of {}; {}",
                            self.shown(),
                            src.file,
                            rebuild_hint()
                        ))
                    })?;
                Ok(CompiledModule {
                    name: src.name,
                    file: src.file,
                    arch: arch.to_string(),
                    kind: ModuleKind::for_arch(arch),
                    image: image.bytes.clone(),
                    from_cache: false,
                })
            })
            .collect()
    }

    /// Total bytes of the images.
    pub fn image_bytes(&self) -> usize {
        self.images.iter().map(|i| i.bytes.len()).sum()
    }
}

/// `(major, minor)` of an architecture name: `sm_86` is (8, 6), `compute_90` (9, 0), `sm_120`
/// (12, 0). `None` for anything else (including the `a`/`f` variants, which run only on
/// their own card and are not put in the file).
pub fn arch_capability(arch: &str) -> Option<(i32, i32)> {
    let digits = arch
        .strip_prefix("sm_")
        .or_else(|| arch.strip_prefix("compute_"))?;
    if !(2..=3).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = digits.parse().ok()?;
    Some((n / 10, n % 10))
}

/// Which of `archs` a device of compute capability `capability` should load: the cubin of
/// the same major version with the highest minor version not above the device's (cubins run on
/// later minor versions of their major one only); failing that, the PTX of the highest
/// capability not above the device's (the driver compiles PTX for any later card).
pub fn pick_arch<'a>(archs: &[&'a str], capability: (i32, i32)) -> Option<&'a str> {
    let best = |kind: ModuleKind, fits: &dyn Fn((i32, i32)) -> bool| {
        archs
            .iter()
            .filter(|a| ModuleKind::for_arch(a) == kind)
            .filter_map(|a| Some((arch_capability(a)?, *a)))
            .filter(|(cap, _)| fits(*cap))
            .max()
            .map(|(_, a)| a)
    };
    best(ModuleKind::Cubin, &|cap| {
        cap.0 == capability.0 && cap.1 <= capability.1
    })
    .or_else(|| best(ModuleKind::Ptx, &|cap| cap <= capability))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one: a
/// temporary file beside it, then a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| FILE_NAME.into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The places the file is looked for when [`crate::supply::FILE_ENV`] does not name one:
/// beside the running executable, then in the directory above it (`target/` for
/// `target/release/train`; `.gpu/` for a bundle's `.gpu/bin/train`).
pub fn default_places() -> Vec<PathBuf> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    let mut places = vec![dir.join(FILE_NAME)];
    if let Some(up) = dir.parent() {
        places.push(up.join(FILE_NAME));
    }
    places
}

/// A cursor over the file's bytes; `None` once it would run past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<String> {
        let len = self.u16()? as usize;
        Some(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// (name, arch, source hash, checksum, bytes) of the next image.
    fn image(&mut self) -> Option<(String, String, u64, u64, &'a [u8])> {
        let name = self.text()?;
        let arch = self.text()?;
        let hash = self.u64()?;
        let len = usize::try_from(self.u64()?).ok()?;
        let sum = self.u64()?;
        Some((name, arch, hash, sum, self.take(len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a fake image of every source for each of `archs` (cubins start like ELF,
    /// PTX is text): enough for everything but loading.
    fn fake(archs: &[&str]) -> Prebuilt {
        let modules: Vec<CompiledModule> = archs
            .iter()
            .flat_map(|arch| {
                SOURCES.iter().map(move |src| {
                    let kind = ModuleKind::for_arch(arch);
                    let image = match kind {
                        ModuleKind::Cubin => format!("\x7fELF {} {arch}", src.name).into_bytes(),
                        ModuleKind::Ptx => format!(".target {arch} // {}", src.name).into_bytes(),
                    };
                    CompiledModule {
                        name: src.name,
                        file: src.file,
                        arch: arch.to_string(),
                        kind,
                        image,
                        from_cache: false,
                    }
                })
            })
            .collect();
        Prebuilt::from_modules(&modules, (13, 0)).unwrap()
    }

    #[test]
    fn a_file_reads_back_as_written_and_serves_each_card_its_best_image() {
        let bytes = fake(ARCHS).to_bytes();
        let file = Prebuilt::from_bytes(&bytes).unwrap();
        assert_eq!(file.nvrtc_version, (13, 0));
        assert_eq!(file.archs(), ARCHS);
        for (capability, want) in [
            ((8, 0), Some("sm_80")),
            ((8, 6), Some("sm_86")),
            // sm_87 (Jetson Orin): the newest cubin of major 8 not above it.
            ((8, 7), Some("sm_86")),
            ((8, 9), Some("sm_89")),
            ((9, 0), Some("sm_90")),
            // Blackwell and later: the PTX, compiled by the driver.
            ((10, 0), Some("compute_90")),
            ((12, 0), Some("compute_90")),
            // Older than every image: nothing.
            ((7, 5), None),
        ] {
            assert_eq!(file.arch_for(capability), want, "{capability:?}");
        }
        let modules = file.modules_for((8, 9)).unwrap();
        assert_eq!(modules.len(), SOURCES.len());
        for (m, src) in modules.iter().zip(SOURCES) {
            assert_eq!(
                (m.name, m.file, m.arch.as_str()),
                (src.name, src.file, "sm_89")
            );
            assert_eq!(m.kind, ModuleKind::Cubin);
            assert_eq!(m.image, format!("\x7fELF {} sm_89", src.name).into_bytes());
        }
        let ptx = file.modules_for((12, 0)).unwrap();
        assert!(ptx.iter().all(|m| m.kind == ModuleKind::Ptx));
        let err = file.modules_for((7, 5)).unwrap_err().to_string();
        assert!(
            err.contains("no image that a sm_75 device can run")
                && err.contains("sm_80, sm_86, sm_89, sm_90, compute_90")
                && err.contains("cargo xtask cubins --arch sm_75"),
            "{err}"
        );
    }

    #[test]
    fn a_ptx_only_or_cubin_only_file_serves_what_it_can() {
        let mut file = fake(ARCHS);
        file.retain_archs(|a| a.starts_with("compute_"));
        let file = Prebuilt::from_bytes(&file.to_bytes()).unwrap();
        assert_eq!(file.archs(), ["compute_90"]);
        assert_eq!(file.arch_for((9, 0)), Some("compute_90"));
        assert_eq!(file.arch_for((8, 6)), None, "PTX for 9.0 cannot run on 8.6");
        let mut file = fake(&["sm_80"]);
        assert_eq!(
            file.arch_for((9, 0)),
            None,
            "an sm_80 cubin does not run on sm_90"
        );
        assert_eq!(file.arch_for((8, 9)), Some("sm_80"));
        // A module missing for the chosen arch is named.
        file.images.retain(|i| i.source.name != "conv");
        let err = file.modules_for((8, 0)).unwrap_err().to_string();
        assert!(err.contains("has no sm_80 image of conv.cu"), "{err}");
    }

    #[test]
    fn stale_foreign_and_damaged_files_are_refused_with_what_to_do() {
        let good = fake(&["sm_90"]).to_bytes();
        let refused = |bytes: &[u8]| Prebuilt::from_bytes(bytes).unwrap_err();
        let mut stale = good.clone();
        stale[SOURCES_HASH_OFFSET] ^= 1;
        let mut other_format = good.clone();
        other_format[8] = 9;
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        // The options text starts after magic, format, hash and nvrtc version, and its length.
        let mut other_options = good.clone();
        other_options[SOURCES_HASH_OFFSET + 8 + 8 + 4] ^= 0x20;
        let cases: [(&str, Vec<u8>, &str); 7] = [
            (
                "stale sources",
                stale,
                "is stale: it was built from other kernel sources",
            ),
            (
                "stale options",
                other_options,
                "is stale: it was compiled with other nvrtc options",
            ),
            ("other format", other_format, "has format version 9"),
            (
                "not ours",
                b"\x7fELF something else".to_vec(),
                "is not a prebuilt kernels file",
            ),
            (
                "truncated",
                good[..good.len() - 3].to_vec(),
                "is damaged (image 10 of 10 is cut short)",
            ),
            (
                "flipped bit",
                flipped,
                "is damaged (the sm_90 image of shortcut fails its checksum)",
            ),
            (
                "trailing",
                [good.as_slice(), b"x"].concat(),
                "is damaged (bytes after the last image)",
            ),
        ];
        for (what, bytes, want) in cases {
            let err = refused(&bytes);
            assert!(err.starts_with(want), "{what}: {err}");
            if what != "not ours" {
                assert!(err.contains("cargo xtask cubins"), "{what}: {err}");
            }
        }
        assert!(refused(b"").contains("not a prebuilt kernels file"));
        assert!(refused(&good[..10]).contains("damaged (truncated header)"));
    }

    #[test]
    fn reading_names_the_file_and_writing_replaces_it_whole() {
        let dir = std::env::temp_dir().join(format!("prebuilt-test-{}", std::process::id()));
        let path = dir.join("sub").join(FILE_NAME);
        let err = Prebuilt::read(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("cannot be read"));
        write_atomically(&path, &fake(&["sm_86"]).to_bytes()).unwrap();
        write_atomically(&path, &fake(&["sm_90"]).to_bytes()).unwrap();
        assert_eq!(Prebuilt::read(&path).unwrap().archs(), ["sm_90"]);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            [std::ffi::OsString::from(FILE_NAME)],
            "no temporary left"
        );
        std::fs::write(&path, b"RKPREBLT").unwrap();
        let err = Prebuilt::read(&path).unwrap_err().to_string();
        assert!(err.starts_with("prebuilt kernels file "), "{err}");
        assert!(
            err.contains(&format!("{} is damaged", path.display())),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn arch_names_parse() {
        assert_eq!(arch_capability("sm_80"), Some((8, 0)));
        assert_eq!(arch_capability("compute_90"), Some((9, 0)));
        assert_eq!(arch_capability("sm_120"), Some((12, 0)));
        for bad in ["sm_90a", "sm_1", "compute_x0", "90", "sm_1000"] {
            assert_eq!(arch_capability(bad), None, "{bad}");
        }
        assert!(default_places()
            .iter()
            .all(|p| p.file_name() == Some(FILE_NAME.as_ref())));
    }
}
