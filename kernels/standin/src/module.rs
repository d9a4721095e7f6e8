//! `cuModuleLoadData`: what a module image says about its kernels, read the way the driver
//! reads it. A cubin (ELF, `EM_CUDA`) gives each entry's parameter layout (`EIATTR_KPARAM_INFO`),
//! launch bounds (`EIATTR_MAX_THREADS`), registers (`EIATTR_REGCOUNT`) and static shared memory
//! (`.nv.shared.<name>`); PTX text gives the `.entry` parameter lists, `.maxntid` and `.shared`
//! declarations. Each kernel is then bound to the emulator's kernel of the same name, and the
//! two parameter layouts must agree: the image comes from nvrtc, the emulator from the host
//! compiler, both from the same source.

use std::collections::HashMap;
use std::sync::Arc;

use crate::status::*;

/// A refusal: the code `cuModuleLoadData` returns and why.
type Refusal = (CUresult, String);

/// One kernel of a loaded module.
#[derive(Debug)]
pub struct KernelMeta {
    pub name: String,
    /// The emulator's kernel of that name.
    pub emu: kernels_emu::Kernel,
    /// Bytes of the parameter buffer, from the image.
    pub param_bytes: usize,
    /// `(offset, size)` of each parameter, from the image.
    pub params: Vec<(usize, usize)>,
    /// Static shared memory the kernel declares (bytes).
    pub static_shared: u32,
    /// `__launch_bounds__` / `.maxntid`: most threads per block, if declared.
    pub max_threads: Option<u32>,
    /// Registers per thread (cubins only).
    pub registers: Option<u32>,
}

/// A loaded module: its kernels by name.
#[derive(Debug)]
pub struct Module {
    pub kernels: HashMap<String, Arc<KernelMeta>>,
}

/// What an image describes for one kernel, before binding to the emulator.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ImageKernel {
    params: Vec<(usize, usize)>,
    param_bytes: Option<usize>,
    static_shared: u32,
    max_threads: Option<u32>,
    registers: Option<u32>,
}

/// Loads an image for a device of compute capability `sm` (e.g. 90). The image pointer has no
/// length in the API: a cubin's own headers say how far it extends; PTX is NUL-terminated.
///
/// # Safety
/// `image` must point to a complete cubin or NUL-terminated PTX, as for `cuModuleLoadData`.
pub unsafe fn load(image: *const u8, sm: u32) -> Result<Module, Refusal> {
    if image.is_null() {
        return Err((CUDA_ERROR_INVALID_VALUE, "null image".into()));
    }
    let head = std::slice::from_raw_parts(image, 4);
    let kernels = if head == b"\x7fELF" {
        let size = elf_size(std::slice::from_raw_parts(image, 64))?;
        parse_cubin(std::slice::from_raw_parts(image, size), sm)?
    } else {
        let text = std::ffi::CStr::from_ptr(image.cast()).to_string_lossy();
        parse_ptx(&text, sm)?
    };
    let mut out = HashMap::new();
    for (name, k) in kernels {
        let emu = kernels_emu::kernel(&name).ok_or_else(|| {
            (
                CUDA_ERROR_INVALID_IMAGE,
                format!("kernel `{name}` is in the image but not in the emulator's kernel table"),
            )
        })?;
        let emu_params: Vec<(usize, usize)> = emu.params().map(|p| (p.offset, p.size)).collect();
        let param_bytes = k.param_bytes.unwrap_or(emu.param_bytes);
        if emu_params != k.params || param_bytes != emu.param_bytes {
            return Err((
                CUDA_ERROR_INVALID_IMAGE,
                format!(
                    "kernel `{name}`: the image's parameters {:?} ({param_bytes} bytes) differ \
                     from the emulator's {emu_params:?} ({} bytes): built from other sources?",
                    k.params, emu.param_bytes
                ),
            ));
        }
        out.insert(
            name.clone(),
            Arc::new(KernelMeta {
                name,
                emu,
                param_bytes,
                params: k.params,
                static_shared: k.static_shared,
                max_threads: k.max_threads,
                registers: k.registers,
            }),
        );
    }
    Ok(Module { kernels: out })
}

fn bad(what: impl Into<String>) -> Refusal {
    (CUDA_ERROR_INVALID_IMAGE, what.into())
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, Refusal> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| bad("truncated ELF"))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, Refusal> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| bad("truncated ELF"))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, Refusal> {
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| bad("truncated ELF"))
}

/// The image's extent: the section header table is last in a cubin.
fn elf_size(header: &[u8]) -> Result<usize, Refusal> {
    if header[4] != 2 || header[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF"));
    }
    let shoff = u64_at(header, 0x28)? as usize;
    let shentsize = u16_at(header, 0x3a)? as usize;
    let shnum = u16_at(header, 0x3c)? as usize;
    Ok(shoff + shentsize * shnum)
}

struct Section<'a> {
    name: &'a str,
    data: &'a [u8],
    size: u64,
}

const EM_CUDA: u16 = 190;
const STT_FUNC: u8 = 2;
const STO_CUDA_ENTRY: u8 = 0x10;
const EIATTR_MAX_THREADS: u8 = 0x05;
const EIATTR_KPARAM_INFO: u8 = 0x17;
const EIATTR_CBANK_PARAM_SIZE: u8 = 0x19;
const EIATTR_REGCOUNT: u8 = 0x2f;

fn parse_cubin(b: &[u8], sm: u32) -> Result<Vec<(String, ImageKernel)>, Refusal> {
    if u16_at(b, 0x12)? != EM_CUDA {
        return Err(bad(
            "an ELF image, but not for a CUDA GPU (e_machine != EM_CUDA)",
        ));
    }
    // e_flags: the SM is bits 8..16 from ELF ABI version 8 (CUDA 12.8+), bits 0..8 before.
    let flags = u32_at(b, 0x30)?;
    let arch = if b[8] >= 8 {
        (flags >> 8) & 0xff
    } else {
        flags & 0xff
    };
    if arch != sm {
        return Err((
            CUDA_ERROR_NO_BINARY_FOR_GPU,
            format!("a cubin for sm_{arch} cannot run on this sm_{sm} device"),
        ));
    }
    let shoff = u64_at(b, 0x28)? as usize;
    let shnum = u16_at(b, 0x3c)? as usize;
    let shstrndx = u16_at(b, 0x3e)? as usize;
    let header = |i: usize| shoff + i * 64;
    let strtab_of = |i: usize| -> Result<&[u8], Refusal> {
        let off = u64_at(b, header(i) + 0x18)? as usize;
        let size = u64_at(b, header(i) + 0x20)? as usize;
        b.get(off..off + size)
            .ok_or_else(|| bad("section past the image"))
    };
    let cstr = |tab: &'_ [u8], at: usize| -> String {
        let s = tab.get(at..).unwrap_or(&[]);
        String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())])
            .into_owned()
    };
    let shstr = strtab_of(shstrndx)?;
    let mut sections = Vec::with_capacity(shnum);
    let mut names = Vec::with_capacity(shnum);
    for i in 0..shnum {
        names.push(cstr(shstr, u32_at(b, header(i))? as usize));
    }
    for (i, name) in names.iter().enumerate() {
        let ty = u32_at(b, header(i) + 4)?;
        let off = u64_at(b, header(i) + 0x18)? as usize;
        let size = u64_at(b, header(i) + 0x20)?;
        // NOBITS (8) sections (.nv.shared.*) have a size but no bytes in the file.
        let data = if ty == 8 {
            &[][..]
        } else {
            b.get(off..off + size as usize)
                .ok_or_else(|| bad("section past the image"))?
        };
        sections.push(Section { name, data, size });
    }
    let find = |n: &str| sections.iter().position(|s| s.name == n);
    let symtab = find(".symtab").ok_or_else(|| bad("no .symtab"))?;
    let strtab = find(".strtab").ok_or_else(|| bad("no .strtab"))?;
    let syms = sections[symtab].data;
    let mut entries = Vec::new();
    let mut by_symbol = HashMap::new();
    for (index, s) in syms.chunks_exact(24).enumerate() {
        let (info, other) = (s[4], s[5]);
        if info & 0xf == STT_FUNC && other & STO_CUDA_ENTRY != 0 {
            let name = cstr(sections[strtab].data, u32_at(s, 0)? as usize);
            by_symbol.insert(index as u32, entries.len());
            entries.push((name, ImageKernel::default()));
        }
    }
    // Registers are in the module-wide .nv.info, keyed by symbol index.
    if let Some(i) = find(".nv.info") {
        for (attr, v) in nv_info(sections[i].data)? {
            if attr == EIATTR_REGCOUNT && v.len() >= 8 {
                if let Some(&k) = by_symbol.get(&u32_at(v, 0)?) {
                    entries[k].1.registers = Some(u32_at(v, 4)?);
                }
            }
        }
    }
    for (name, k) in &mut entries {
        if let Some(i) = find(&format!(".nv.info.{name}")) {
            for (attr, v) in nv_info(sections[i].data)? {
                match attr {
                    EIATTR_KPARAM_INFO if v.len() >= 12 => {
                        let ordinal = u16_at(v, 4)? as usize;
                        let offset = u16_at(v, 6)? as usize;
                        let size = ((u32_at(v, 8)? >> 18) & 0x3fff) as usize;
                        if k.params.len() <= ordinal {
                            k.params.resize(ordinal + 1, (0, 0));
                        }
                        k.params[ordinal] = (offset, size);
                    }
                    EIATTR_CBANK_PARAM_SIZE if v.len() >= 2 => {
                        k.param_bytes = Some(u16_at(v, 0)? as usize)
                    }
                    EIATTR_MAX_THREADS if v.len() >= 12 => {
                        k.max_threads = Some(u32_at(v, 0)? * u32_at(v, 4)? * u32_at(v, 8)?)
                    }
                    _ => {}
                }
            }
        }
        if let Some(i) = find(&format!(".nv.shared.{name}")) {
            // sm_80+ cubins reserve 1 KiB of every block's shared memory for the system (the
            // `.nv.reservedSmem` symbols); it is not the kernel's to use or to count.
            let reserved = if find(".nv.shared.reserved.0").is_some() {
                1024
            } else {
                0
            };
            k.static_shared = sections[i].size.saturating_sub(reserved) as u32;
        }
    }
    Ok(entries)
}

/// The `(attribute, value bytes)` records of an `.nv.info` section: 4-byte aligned records of
/// format (1 byte), attribute (1 byte) and either a 2-byte value or a 2-byte length + payload.
fn nv_info(d: &[u8]) -> Result<Vec<(u8, &[u8])>, Refusal> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= d.len() {
        let (format, attr) = (d[i], d[i + 1]);
        match format {
            0x04 => {
                let len = u16_at(d, i + 2)? as usize;
                let v = d
                    .get(i + 4..i + 4 + len)
                    .ok_or_else(|| bad("truncated .nv.info"))?;
                out.push((attr, v));
                i += 4 + len;
            }
            0x01..=0x03 => {
                out.push((attr, &d[i + 2..i + 4]));
                i += 4;
            }
            _ => return Err(bad(format!("unknown .nv.info record format {format:#x}"))),
        }
    }
    Ok(out)
}

/// `.entry` kernels of PTX text, for a device of compute capability `sm`.
fn parse_ptx(text: &str, sm: u32) -> Result<Vec<(String, ImageKernel)>, Refusal> {
    let target = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(".target sm_"))
        .and_then(|t| {
            t.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .ok()
        })
        .ok_or((
            CUDA_ERROR_INVALID_PTX,
            "PTX without a `.target sm_XX`".to_string(),
        ))?;
    if target > sm {
        return Err((
            CUDA_ERROR_INVALID_PTX,
            format!("PTX for sm_{target} cannot be compiled for this sm_{sm} device"),
        ));
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".entry ") {
        rest = &rest[at + ".entry ".len()..];
        let open = rest
            .find('(')
            .ok_or((CUDA_ERROR_INVALID_PTX, "`.entry` without `(`".into()))?;
        let name = rest[..open].trim().to_string();
        let close = rest
            .find(')')
            .ok_or((CUDA_ERROR_INVALID_PTX, "unclosed `.entry`".into()))?;
        let mut k = ImageKernel::default();
        let mut off = 0usize;
        for p in rest[open + 1..close]
            .split(',')
            .filter(|p| p.contains(".param"))
        {
            let toks: Vec<&str> = p.split_whitespace().collect();
            let ty = toks.iter().find(|t| {
                t.starts_with(".u")
                    || t.starts_with(".s")
                    || t.starts_with(".f")
                    || t.starts_with(".b")
            });
            let bits: usize = ty
                .and_then(|t| t[2..].parse().ok())
                .ok_or((CUDA_ERROR_INVALID_PTX, format!("{name}: parameter `{p}`")))?;
            let size = bits / 8;
            off = off.next_multiple_of(size);
            k.params.push((off, size));
            off += size;
        }
        // The body: up to the entry's closing brace at column 0.
        let body_end = rest[close..].find("\n}").map_or(rest.len(), |e| close + e);
        let body = &rest[close..body_end];
        for line in body.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix(".maxntid") {
                let n: Vec<u32> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                k.max_threads = Some(n.iter().product());
            } else if line.starts_with(".shared") {
                if let Some(b) = line.rsplit_once('[').and_then(|(_, b)| b.split(']').next()) {
                    k.static_shared += b.parse::<u32>().unwrap_or(0);
                }
            }
        }
        out.push((name, k));
        rest = &rest[body_end..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_entries_params_bounds_and_shared() {
        let ptx = "//\n.version 9.0\n.target sm_90\n.address_size 64\n\n\
            .visible .entry emu_selftest_write_past_end(\n\t.param .u64 p0,\n\t.param .u32 p1\n)\n\
            .maxntid 256, 1, 1\n{\n\t.shared .align 4 .b8 tile[1200];\n\tret;\n}\n";
        let ks = parse_ptx(ptx, 90).unwrap();
        assert_eq!(ks.len(), 1);
        let (name, k) = &ks[0];
        assert_eq!(name, "emu_selftest_write_past_end");
        assert_eq!(k.params, vec![(0, 8), (8, 4)]);
        assert_eq!(k.max_threads, Some(256));
        assert_eq!(k.static_shared, 1200);
        assert!(parse_ptx(&ptx.replace("sm_90", "sm_100"), 90).is_err());
        assert!(parse_ptx(&ptx.replace("sm_90", "sm_80"), 90).is_ok());
    }

    #[test]
    fn nv_info_records_decode() {
        // KPARAM_INFO of a 4-byte parameter #3 at offset 20, then CBANK_PARAM_SIZE = 24.
        let d = [
            0x04, 0x17, 0x0c, 0x00, 0, 0, 0, 0, 3, 0, 20, 0, 0x00, 0xf0, 0x11, 0x00, 0x03, 0x19,
            24, 0,
        ];
        let recs = nv_info(&d).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].0, EIATTR_KPARAM_INFO);
        assert_eq!((u32_at(recs[0].1, 8).unwrap() >> 18) & 0x3fff, 4);
        assert_eq!(
            (recs[1].0, u16_at(recs[1].1, 0).unwrap()),
            (EIATTR_CBANK_PARAM_SIZE, 24)
        );
    }
}
