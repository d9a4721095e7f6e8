//! ReLU, the residual add and their fusion, element by element: the reference's arithmetic
//! (bit for bit), compiled for AVX-512 where the CPU has it, in one pass with outputs written
//! without a zero-fill first (`add_relu` was an add, a copy and a ReLU).
//!
//! Each function returns `None` (or `false`) without AVX-512 or AVX2, and the caller runs the
//! reference.

// Off x86-64 the fast bodies compile out, leaving their helpers unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use crate::cpu::{kernels, Kernels};
use crate::scalar::{relu, relu_grad};
use crate::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

fn fast() -> bool {
    kernels() >= Kernels::Avx2
}

/// The loop bodies, compiled for AVX-512 and for AVX2 (`f` inlined into each).
#[inline(always)]
fn map2_body(a: &[f32], b: &[f32], out: &mut [MaybeUninit<f32>], f: &impl Fn(f32, f32) -> f32) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        o.write(f(a, b));
    }
}

#[inline(always)]
fn assign_body(a: &mut [f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    for (a, &b) in a.iter_mut().zip(b) {
        *a = f(*a, b);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn map2_avx512(
    a: &[f32],
    b: &[f32],
    o: &mut [MaybeUninit<f32>],
    f: &impl Fn(f32, f32) -> f32,
) {
    map2_body(a, b, o, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn map2_avx2(
    a: &[f32],
    b: &[f32],
    o: &mut [MaybeUninit<f32>],
    f: &impl Fn(f32, f32) -> f32,
) {
    map2_body(a, b, o, f)
}

#[cfg(target_arch = "x86_64")]
unsafe fn map2_chunk(
    wide: bool,
    a: &[f32],
    b: &[f32],
    out: &mut [MaybeUninit<f32>],
    f: &(impl Fn(f32, f32) -> f32 + Sync),
) {
    if wide {
        map2_avx512(a, b, out, f)
    } else {
        map2_avx2(a, b, out, f)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn assign_avx512(a: &mut [f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    assign_body(a, b, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn assign_avx2(a: &mut [f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    assign_body(a, b, f)
}

#[cfg(target_arch = "x86_64")]
unsafe fn assign_chunk(
    wide: bool,
    a: &mut [f32],
    b: &[f32],
    f: &(impl Fn(f32, f32) -> f32 + Sync),
) {
    if wide {
        assign_avx512(a, b, f)
    } else {
        assign_avx2(a, b, f)
    }
}

/// `f(a, b)` element by element into a fresh tensor; `None` without AVX-512 or AVX2.
fn map2(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Option<Tensor> {
    assert_eq!(a.shape(), b.shape(), "elementwise shapes differ");
    #[cfg(target_arch = "x86_64")]
    if fast() {
        let wide = kernels() >= Kernels::Avx512;
        let fill = |out: &mut [MaybeUninit<f32>]| {
            out.par_chunks_mut(CHUNK)
                .zip(a.data().par_chunks(CHUNK).zip(b.data().par_chunks(CHUNK)))
                // SAFETY: AVX-512F or AVX2 was detected (the chunk functions pick).
                .for_each(|(o, (a, b))| unsafe { map2_chunk(wide, a, b, o, &f) })
        };
        // SAFETY: the chunks cover every element, each written once.
        return Some(unsafe { Tensor::host_filled(a.shape(), fill) });
    }
    let _ = f;
    None
}

/// `relu(a + b)`: the end of a residual block.
pub(crate) fn add_relu(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    map2(a, b, |a, b| relu(a + b))
}

/// `a + b`.
pub(crate) fn add(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    map2(a, b, |a, b| a + b)
}

/// `relu(x)`.
pub(crate) fn relu_forward(x: &Tensor) -> Option<Tensor> {
    map2(x, x, |x, _| relu(x))
}

/// `y <= 0 ? 0 : dy`.
pub(crate) fn relu_backward(dy: &Tensor, y: &Tensor) -> Option<Tensor> {
    map2(dy, y, relu_grad)
}

/// `a += b`; `false` (nothing done) without AVX-512 or AVX2.
pub(crate) fn add_assign(a: &mut Tensor, b: &Tensor) -> bool {
    assert_eq!(a.shape(), b.shape(), "elementwise shapes differ");
    #[cfg(target_arch = "x86_64")]
    if fast() {
        let wide = kernels() >= Kernels::Avx512;
        let f = |a: f32, b: f32| a + b;
        a.data_mut()
            .par_chunks_mut(CHUNK)
            .zip(b.data().par_chunks(CHUNK))
            // SAFETY: AVX-512F or AVX2 was detected (the chunk functions pick).
            .for_each(|(a, b)| unsafe { assign_chunk(wide, a, b, &f) });
        return true;
    }
    false
}
