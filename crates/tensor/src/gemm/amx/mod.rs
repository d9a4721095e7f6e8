//! AMX for the bf16 convolutions: `tdpbf16ps` on 16 x 32 bf16 tiles into 16 x 16 fp32 tiles.
//!
//! The tile logic ([`tile`]: which tiles to configure, what to load from where, in what order
//! to accumulate, how the edges are cut) is written once against the few instructions it
//! needs ([`TileOps`]: `ldtilecfg`, `tilezero`, `tileloadd`, `tdpbf16ps`, `tilestored`,
//! `tilerelease`), which have two implementations:
//! - [`model::Model`]: each instruction in plain Rust, as the Intel SDM defines it — so every
//!   test runs the AMX path on any CPU;
//! - [`real::Real`]: the instructions themselves (inline assembly), on CPUs that have AMX and
//!   once Linux has granted this process the tile state ([`available`]).
//!
//! The two agree bit for bit where both run (the test `model_and_real_agree_bit_for_bit`,
//! which says so and skips where the CPU has no AMX).
//!
//! The arithmetic (SDM, TDPBF16PS "Operation"): per output row and instruction, two f32
//! partial sums per output column start at zero — one over the even elements of the bf16
//! pairs, one over the odd — each a chain of FMAs over the tile's K pairs in order; then
//! `dst + (even + odd)`. Every FMA and add rounds to nearest even with denormal inputs read as
//! zero and denormal results flushed to zero (DAZ, FTZ; MXCSR is not consulted). The products
//! of bf16 values are exact in f32, so this is the engine's bf16 arithmetic (operands rounded
//! to bf16, f32 accumulation) in another order of the sums, with denormals (below 1.2e-38)
//! flushed: the documented variant the twin is compared to at 1e-5.

pub(crate) mod model;
#[cfg(target_arch = "x86_64")]
pub(crate) mod real;
pub(crate) mod tile;

/// Tiles of this palette: 16 rows of 64 bytes.
pub(crate) const ROWS: usize = 16;
pub(crate) const ROW_BYTES: usize = 64;

/// `LDTILECFG`'s 64-byte operand (palette 1): each tile's rows and bytes per row.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TileConfig {
    pub palette: u8,
    pub start_row: u8,
    reserved: [u8; 14],
    pub colsb: [u16; 16],
    pub rows: [u8; 16],
}

impl TileConfig {
    /// Palette 1 with every tile unused (0 x 0).
    pub fn new() -> Self {
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        }
    }

    /// Tile `t` as `rows` rows of `colsb` bytes.
    pub fn tile(mut self, t: usize, rows: usize, colsb: usize) -> Self {
        assert!(t < 8 && rows <= ROWS && colsb <= ROW_BYTES && colsb.is_multiple_of(4));
        self.rows[t] = rows as u8;
        self.colsb[t] = colsb as u16;
        self
    }
}

/// The tile instructions the kernels use, one method each. Tile numbers are constants, as in
/// the instructions' encodings.
///
/// # Safety (every method)
/// As the instruction: a configuration must be loaded before any other; loads and stores
/// touch `rows` rows of `colsb` bytes at `base + r·stride`; `tdpbf16ps` needs
/// `A.rows == C.rows`, `B.colsb == C.colsb`, `A.colsb == 4·B.rows` (else the CPU faults, the
/// model panics).
pub(crate) trait TileOps {
    unsafe fn configure(&mut self, cfg: &TileConfig);
    unsafe fn zero<const T: u8>(&mut self);
    unsafe fn load<const T: u8>(&mut self, base: *const u8, stride: usize);
    unsafe fn dpbf16ps<const C: u8, const A: u8, const B: u8>(&mut self);
    unsafe fn store<const T: u8>(&mut self, base: *mut u8, stride: usize);
    unsafe fn release(&mut self);
}

/// Whether this process may run AMX: the CPU has AMX-TILE and AMX-BF16, the OS enables their
/// state (XCR0 bits 17 and 18), and — on Linux — the kernel granted this process the tile
/// data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, needed before the first
/// tile instruction). A refusal prints a notice once and the engine runs without AMX. Decided
/// once per process.
pub(crate) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            real::cpu_has_amx() && real::request_permission()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}
