//! Helpers shared by every module: seeded RNG, random and NaN-filled buffers, the 1-D launch
//! configuration, the error measure and the assertions.
//!
//! Every buffer a kernel gets is a [`DevVec`] (the emulator's device arena, exact bounds with
//! unmapped gaps around each buffer: an out-of-bounds access stops the kernel with a report);
//! the generated `emu_*` wrappers refuse any other pointer. `rand_vec` and `nan_vec` return one;
//! `dev(&slice)` copies anything else there (`dev(&[0.25f64])` for a one-value accumulator).
//! A `DevVec` derefs to a slice; where a `Vec` is needed (`Tensor::from_vec`), use `.to_vec()`.

use kernels::launch as kl;
pub use kernels_emu::DevVec;
use kernels_emu::{Dim3, Fault, LaunchOptions, ParamBuffer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The bound for outputs summed in a different order/precision than the twin (see `main.rs`).
pub const TOL: f64 = 1e-5;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in ±[0.1, 1): random sign, never zero.
pub fn rand_vec(r: &mut ChaCha8Rng, n: usize) -> DevVec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = r.gen_range(0.1..1.0);
            if r.gen::<bool>() {
                v
            } else {
                -v
            }
        })
        .collect()
}

pub fn nan_vec(n: usize) -> DevVec<f32> {
    DevVec::filled(f32::NAN, n)
}

/// A copy of `data` in the device arena.
pub fn dev<T: Copy>(data: &[T]) -> DevVec<T> {
    DevVec::from_slice(data)
}

/// Launch configuration of a 1-D grid-stride kernel, from the real launcher's `grid_1d`.
pub fn cfg_1d(n: usize) -> (Dim3, Dim3) {
    let c = kl::grid_1d(n);
    (c.grid_dim.into(), c.block_dim.into())
}

pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let (mut d, mut w) = (0.0f64, 0.0f64);
    for (&g, &r) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        d += (g as f64 - r as f64).powi(2);
        w += (r as f64).powi(2);
    }
    if w == 0.0 {
        d.sqrt()
    } else {
        (d / w).sqrt()
    }
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

pub fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: emulated {g} != cpu {w}"
        );
    }
}

pub fn add_vec(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

/// A 1-D grid or block.
pub fn dim(x: u32) -> Dim3 {
    Dim3 { x, y: 1, z: 1 }
}

/// Runs kernel `name` (a self-test's, usually) over `grid` x `block` threads with `options`, not
/// the environment's: the emulator's own tests pin their schedule and racecheck.
pub fn run_with(
    name: &str,
    grid: u32,
    block: u32,
    options: &LaunchOptions,
    params: &ParamBuffer,
) -> Result<(), Fault> {
    let k = kernels_emu::kernel(name).unwrap_or_else(|| panic!("{name} is not in the table"));
    // SAFETY: the callers pass DevVec buffers, whose bounds the emulator checks.
    unsafe { kernels_emu::launch_with(&k, dim(grid), dim(block), params.as_bytes(), options) }
}

/// [`run_with`] in the default mode (ascending, no racecheck).
pub fn run(name: &str, grid: u32, block: u32, params: &ParamBuffer) -> Result<(), Fault> {
    run_with(name, grid, block, &LaunchOptions::default(), params)
}

/// A parameter buffer of the given values, in order.
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => {{
        let mut p = kernels_emu::ParamBuffer::new();
        $(p.push($v);)*
        p
    }};
}
