//! The tile instructions themselves, by inline assembly (stable Rust has no AMX intrinsics;
//! the assembler knows the mnemonics), and the checks that say whether this process may run
//! them. Nothing here runs unless [`super::available`] said yes.

use super::{TileConfig, TileOps};
use std::arch::asm;
use std::arch::x86_64::{__cpuid_count, _xgetbv};

/// Runs the real instructions. Zero-sized: the state is in the CPU's tile registers.
pub(crate) struct Real;

impl TileOps for Real {
    unsafe fn configure(&mut self, cfg: &TileConfig) {
        asm!("ldtilecfg [{}]", in(reg) cfg as *const TileConfig, options(nostack, readonly));
    }

    unsafe fn zero<const T: u8>(&mut self) {
        asm!("tilezero tmm{t}", t = const T, options(nostack, nomem));
    }

    unsafe fn load<const T: u8>(&mut self, base: *const u8, stride: usize) {
        asm!(
            "tileloadd tmm{t}, [{base} + {stride} * 1]",
            t = const T,
            base = in(reg) base,
            stride = in(reg) stride,
            options(nostack, readonly),
        );
    }

    unsafe fn dpbf16ps<const C: u8, const A: u8, const B: u8>(&mut self) {
        asm!(
            "tdpbf16ps tmm{c}, tmm{a}, tmm{b}",
            c = const C,
            a = const A,
            b = const B,
            options(nostack, nomem),
        );
    }

    unsafe fn store<const T: u8>(&mut self, base: *mut u8, stride: usize) {
        asm!(
            "tilestored [{base} + {stride} * 1], tmm{t}",
            t = const T,
            base = in(reg) base,
            stride = in(reg) stride,
            options(nostack),
        );
    }

    unsafe fn release(&mut self) {
        asm!("tilerelease", options(nostack, nomem));
    }
}

/// CPUID says AMX-TILE and AMX-BF16 (leaf 7: EDX bits 24 and 22), and the OS has enabled
/// their state components in XCR0 (bits 17, XTILECFG, and 18, XTILEDATA; XGETBV needs
/// OSXSAVE, leaf 1 ECX bit 27).
pub(crate) fn cpu_has_amx() -> bool {
    // SAFETY: CPUID leaves 0, 1 and 7 exist on every x86-64 CPU this runs on (leaf 7 is
    // checked against leaf 0's maximum first); XGETBV only after OSXSAVE says it may run.
    unsafe {
        if __cpuid_count(0, 0).eax < 7 {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        let (tile, bf16) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 22) != 0);
        if !(tile && bf16) || __cpuid_count(1, 0).ecx & (1 << 27) == 0 {
            return false;
        }
        xcr0() & (0b11 << 17) == 0b11 << 17
    }
}

#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    _xgetbv(0)
}

/// Asks Linux for the tile data state (once per process; every thread may then use AMX).
/// Other systems: assumed granted where XCR0 enables it. A refusal prints a notice.
pub(crate) fn request_permission() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes this process's permission.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        if r != 0 {
            eprintln!(
                "note: the CPU has AMX but Linux refused this process its tile state \
                 (arch_prctl(ARCH_REQ_XCOMP_PERM): {}); bf16 runs without AMX",
                std::io::Error::last_os_error()
            );
            return false;
        }
    }
    true
}
