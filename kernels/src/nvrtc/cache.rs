//! The on-disk cache of compiled modules ([`DiskCache`]), so that only the first process to
//! need a module runs nvrtc for it; later ones read the file (a few ms instead of seconds).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ModuleKind;
use crate::KernelSource;

/// The environment variable that sets the cache directory, or turns the cache off.
pub const CACHE_ENV: &str = "RESNET_KERNEL_CACHE";

/// Bumped whenever the file layout or the key's inputs change.
const MAGIC: &[u8; 8] = b"RKCACHE1";
/// MAGIC, key, payload length, payload checksum.
const HEADER_LEN: usize = 8 + 8 + 8 + 8;

/// Where compiled modules are kept between processes, or nowhere (`off`).
///
/// Every problem with the cache (a directory that cannot be created or written, a file that
/// is missing, short, corrupt or from another key) only means "compile with nvrtc": the
/// cache never turns a working compile into an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCache {
    dir: Option<PathBuf>,
}

impl DiskCache {
    /// The cache the environment asks for: `$RESNET_KERNEL_CACHE` (`off` disables it),
    /// else `$XDG_CACHE_HOME/resnet-cifar/kernels`, else `~/.cache/resnet-cifar/kernels`,
    /// else `resnet-cifar-kernels` in the system's temporary directory.
    pub fn from_env() -> DiskCache {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// No cache: every compile runs nvrtc.
    pub fn off() -> DiskCache {
        DiskCache { dir: None }
    }

    /// A cache in `dir` (created on the first write).
    pub fn at(dir: impl Into<PathBuf>) -> DiskCache {
        DiskCache {
            dir: Some(dir.into()),
        }
    }

    /// The directory, or `None` when the cache is off.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// [`DiskCache::from_env`] with the environment passed in (testable without changing
    /// the process's environment, which other test threads read concurrently).
    pub(super) fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> DiskCache {
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        if let Some(v) = set(CACHE_ENV) {
            if v.eq_ignore_ascii_case("off") {
                return DiskCache::off();
            }
            return DiskCache::at(v);
        }
        // The XDG spec says to ignore a relative XDG_CACHE_HOME.
        let base = set("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".cache")));
        match base {
            Some(base) => DiskCache::at(base.join("resnet-cifar").join("kernels")),
            None => DiskCache::at(std::env::temp_dir().join("resnet-cifar-kernels")),
        }
    }

    /// The cached image for `key`, if a valid one is there.
    pub(super) fn load(&self, key: &CacheKey) -> Option<Vec<u8>> {
        let path = self.dir.as_ref()?.join(key.file_name());
        let bytes = fs::read(path).ok()?;
        decode(key, bytes)
    }

    /// Saves `image` under `key`; silently does nothing if that fails (see [`DiskCache`]).
    pub(super) fn store(&self, key: &CacheKey, image: &[u8]) {
        if let Some(dir) = &self.dir {
            let _ = write_atomically(dir, &key.file_name(), &encode(key, image));
        }
    }

    /// The cached image for `key`, else `compile()`'s, which is then stored. The flag says
    /// whether the image came from the cache.
    pub(super) fn get_or_compile<E>(
        &self,
        key: &CacheKey,
        compile: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<(Vec<u8>, bool), E> {
        if let Some(image) = self.load(key) {
            return Ok((image, true));
        }
        let image = compile()?;
        self.store(key, &image);
        Ok((image, false))
    }
}

/// What a cached module depends on, hashed, plus what names its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CacheKey {
    hash: u64,
    name: String,
    arch: String,
    kind: ModuleKind,
}

impl CacheKey {
    /// The key of `src` compiled for `arch` with `options` by nvrtc `nvrtc_version`, by
    /// this version of the crate. The file name is part of the input: nvrtc writes it into
    /// the line info.
    pub(super) fn new(
        src: &KernelSource,
        arch: &str,
        options: &[String],
        nvrtc_version: (i32, i32),
    ) -> CacheKey {
        let nvrtc = format!("{}.{}", nvrtc_version.0, nvrtc_version.1);
        let mut hash = Fnv::new();
        for part in [
            MAGIC.as_slice(),
            env!("CARGO_PKG_VERSION").as_bytes(),
            nvrtc.as_bytes(),
            arch.as_bytes(),
            options.join("\n").as_bytes(),
            src.file.as_bytes(),
            src.source.as_bytes(),
        ] {
            // Length-prefixed, so that no two different field lists hash the same bytes.
            hash.write(&(part.len() as u64).to_le_bytes());
            hash.write(part);
        }
        CacheKey {
            hash: hash.0,
            name: src.name.to_string(),
            arch: arch.to_string(),
            kind: ModuleKind::for_arch(arch),
        }
    }

    /// E.g. `conv-sm_90-0123456789abcdef.cubin`; anything but `[A-Za-z0-9_-]` in the
    /// module name or arch becomes `_`, so the name is always a plain file name.
    pub(super) fn file_name(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
                    _ => '_',
                })
                .collect()
        };
        let ext = match self.kind {
            ModuleKind::Ptx => "ptx",
            ModuleKind::Cubin => "cubin",
        };
        format!(
            "{}-{}-{:016x}.{ext}",
            clean(&self.name),
            clean(&self.arch),
            self.hash
        )
    }
}

/// 64-bit FNV-1a (as `build.rs` uses for the sources): stable across platforms and Rust
/// versions, which `std`'s hasher does not promise.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(bytes);
    h.0
}

/// Header (magic, key, length, checksum) + image.
fn encode(key: &CacheKey, image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + image.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.hash.to_le_bytes());
    out.extend_from_slice(&(image.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(image).to_le_bytes());
    out.extend_from_slice(image);
    out
}

/// The image in `bytes` if the header matches `key` and the image is whole and plausible
/// for its kind; `None` otherwise (a torn write, another key, bit rot).
fn decode(key: &CacheKey, mut bytes: Vec<u8>) -> Option<Vec<u8>> {
    let word = |i: usize| -> Option<u64> {
        let field = bytes.get(8 + 8 * i..16 + 8 * i)?;
        Some(u64::from_le_bytes(field.try_into().ok()?))
    };
    if bytes.get(..8)? != MAGIC || word(0)? != key.hash {
        return None;
    }
    let (len, sum) = (word(1)?, word(2)?);
    if bytes.len().checked_sub(HEADER_LEN)? as u64 != len {
        return None;
    }
    let image = bytes.split_off(HEADER_LEN);
    let plausible = match key.kind {
        ModuleKind::Cubin => image.starts_with(b"\x7fELF"),
        // Loaded as a NUL-terminated string: an embedded NUL would cut it short.
        ModuleKind::Ptx => !image.is_empty() && !image.contains(&0),
    };
    (plausible && checksum(&image) == sum).then_some(image)
}

/// Writes `contents` to `dir/name` so that readers see the old file or the whole new one,
/// never a partial one: a unique temporary file in the same directory, then a rename
/// (atomic within a file system). No fsync: a file torn by a crash fails its checksum.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(contents))
        .and_then(|()| fs::rename(&tmp, dir.join(name)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kernels-cache-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const SRC: KernelSource = KernelSource {
        name: "relu",
        file: "relu.cu",
        source: "extern \"C\" __global__ void relu() {}",
        hash: 0,
    };
    const CUBIN: &[u8] = b"\x7fELF pretend machine code";

    fn key(arch: &str) -> CacheKey {
        CacheKey::new(&SRC, arch, &["--std=c++17".into()], (13, 0))
    }

    /// `get_or_compile` with a compiler that counts its calls and returns `image`.
    fn fetch(cache: &DiskCache, key: &CacheKey, image: &[u8], calls: &Cell<u32>) -> Vec<u8> {
        let before = calls.get();
        let (got, hit) = cache
            .get_or_compile(key, || {
                calls.set(calls.get() + 1);
                Ok::<_, ()>(image.to_vec())
            })
            .unwrap();
        assert_eq!(
            hit,
            calls.get() == before,
            "hit means the compiler did not run"
        );
        got
    }

    #[test]
    fn miss_compiles_and_stores_then_hit_skips_the_compiler() {
        let tmp = TempDir::new("hit");
        let cache = DiskCache::at(tmp.0.join("nested/dir"));
        let k = key("sm_90");
        let calls = Cell::new(0);
        let (image, hit) = cache
            .get_or_compile(&k, || Ok::<_, ()>(CUBIN.to_vec()))
            .unwrap();
        assert_eq!((image.as_slice(), hit), (CUBIN, false));
        let file = tmp.0.join("nested/dir").join(k.file_name());
        assert!(file.is_file(), "stored at {}", file.display());
        let (image, hit) = cache
            .get_or_compile(&k, || {
                calls.set(calls.get() + 1);
                Ok::<_, ()>(b"\x7fELF other".to_vec())
            })
            .unwrap();
        assert_eq!((image.as_slice(), hit, calls.get()), (CUBIN, true, 0));
        // Only the final file is left: the temporary one was renamed.
        let names: Vec<_> = fs::read_dir(tmp.0.join("nested/dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from(k.file_name())]);
    }

    #[test]
    fn every_key_input_changes_the_file() {
        let base = key("sm_90");
        let mut other_src = SRC;
        other_src.source = "extern \"C\" __global__ void relu() { }";
        let mut other_file = SRC;
        other_file.file = "relu2.cu";
        let variants = [
            key("sm_80"),
            CacheKey::new(&SRC, "sm_90", &["--std=c++20".into()], (13, 0)),
            CacheKey::new(&SRC, "sm_90", &["--std=c++17".into()], (13, 2)),
            CacheKey::new(&other_src, "sm_90", &["--std=c++17".into()], (13, 0)),
            CacheKey::new(&other_file, "sm_90", &["--std=c++17".into()], (13, 0)),
        ];
        for v in &variants {
            assert_ne!(v.file_name(), base.file_name(), "{v:?}");
        }
        assert_eq!(key("sm_90"), base, "deterministic");
        assert!(base.file_name().starts_with("relu-sm_90-"));
        assert!(base.file_name().ends_with(".cubin"));
        assert!(key("compute_90").file_name().ends_with(".ptx"));
        let mut odd = SRC;
        odd.name = "../x y";
        let name = CacheKey::new(&odd, "sm_90", &[], (13, 0)).file_name();
        assert!(name.starts_with("___x_y-sm_90-"), "{name}");
    }

    #[test]
    fn corrupt_short_or_foreign_files_fall_back_to_compiling() {
        let tmp = TempDir::new("corrupt");
        let cache = DiskCache::at(&tmp.0);
        let k = key("sm_90");
        let path = tmp.0.join(k.file_name());
        let good = encode(&k, CUBIN);
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let not_elf = encode(&k, b"MZ not an ELF");
        let foreign = encode(&key("sm_80"), CUBIN);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("header only, short", good[..HEADER_LEN - 3].to_vec()),
            ("truncated image", good[..good.len() - 1].to_vec()),
            ("trailing bytes", [good.as_slice(), b"x"].concat()),
            ("flipped bit", flipped),
            ("not an ELF", not_elf),
            ("another key's file", foreign),
            (
                "garbage",
                b"garbage that is long enough to hold a header".to_vec(),
            ),
        ];
        for (what, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            let calls = Cell::new(0);
            let got = fetch(&cache, &k, CUBIN, &calls);
            assert_eq!((got.as_slice(), calls.get()), (CUBIN, 1), "{what}");
            // The fallback rewrote a valid file.
            assert_eq!(fs::read(&path).unwrap(), good, "{what}");
        }
        // A directory where the file should be: still just a compile.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let calls = Cell::new(0);
        assert_eq!(fetch(&cache, &k, CUBIN, &calls), CUBIN);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn ptx_with_a_nul_is_not_served() {
        let tmp = TempDir::new("ptx");
        let cache = DiskCache::at(&tmp.0);
        let k = key("compute_90");
        fs::write(tmp.0.join(k.file_name()), encode(&k, b".version\0 9.0")).unwrap();
        assert_eq!(cache.load(&k), None);
        cache.store(&k, b".version 9.0");
        assert_eq!(cache.load(&k).as_deref(), Some(&b".version 9.0"[..]));
    }

    #[test]
    fn unwritable_cache_and_off_switch_still_compile() {
        let tmp = TempDir::new("unwritable");
        // A regular file where the directory should be: create_dir_all fails.
        let blocker = tmp.0.join("file");
        fs::write(&blocker, b"not a directory").unwrap();
        for cache in [DiskCache::at(blocker.join("sub")), DiskCache::off()] {
            let k = key("sm_90");
            for _ in 0..2 {
                let calls = Cell::new(0);
                assert_eq!(fetch(&cache, &k, CUBIN, &calls), CUBIN);
                assert_eq!(calls.get(), 1, "{cache:?}: compiled every time");
            }
        }
        assert_eq!(fs::read(&blocker).unwrap(), b"not a directory");
        // A compile error passes through untouched, and nothing is stored.
        let cache = DiskCache::at(&tmp.0);
        let err = cache.get_or_compile(&key("sm_80"), || Err::<Vec<u8>, _>("nvrtc said no"));
        assert_eq!(err, Err("nvrtc said no"));
        assert_eq!(cache.load(&key("sm_80")), None);
    }

    #[test]
    fn location_follows_the_environment() {
        let from = |vars: &[(&str, &str)]| {
            let map: HashMap<String, OsString> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            DiskCache::from_vars(|name| map.get(name).cloned())
        };
        let all = [
            (CACHE_ENV, "/my/cache"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(from(&all), DiskCache::at("/my/cache"));
        assert_eq!(from(&[(CACHE_ENV, "off"), all[1]]), DiskCache::off());
        assert_eq!(from(&[(CACHE_ENV, "OFF")]), DiskCache::off());
        assert_eq!(from(&all[1..]), DiskCache::at("/xdg/resnet-cifar/kernels"));
        assert_eq!(
            from(&[(CACHE_ENV, ""), ("XDG_CACHE_HOME", "relative"), all[2]]),
            DiskCache::at("/home/u/.cache/resnet-cifar/kernels")
        );
        assert_eq!(
            from(&[]),
            DiskCache::at(std::env::temp_dir().join("resnet-cifar-kernels"))
        );
        assert_eq!(DiskCache::off().dir(), None);
        // The real environment, whatever it holds, gives some answer without panicking.
        let _ = DiskCache::from_env();
    }
}
