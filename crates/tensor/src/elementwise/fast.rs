//! ReLU, the residual add and their fusion, element by element: the reference's arithmetic
//! (bit for bit), compiled for AVX-512 where the CPU has it, in one pass with outputs written
//! without a zero-fill first (`add_relu` was an add, a copy and a ReLU).
//!
//! Each function returns `None` (or `false`) without AVX-512, and the caller runs the reference.

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
    kernels() >= Kernels::Avx512
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn map2_chunk(
    a: &[f32],
    b: &[f32],
    out: &mut [MaybeUninit<f32>],
    f: &(impl Fn(f32, f32) -> f32 + Sync),
) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        o.write(f(a, b));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn assign_chunk(a: &mut [f32], b: &[f32], f: &(impl Fn(f32, f32) -> f32 + Sync)) {
    for (a, &b) in a.iter_mut().zip(b) {
        *a = f(*a, b);
    }
}

/// `f(a, b)` element by element into a fresh tensor; `None` without AVX-512.
fn map2(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Option<Tensor> {
    assert_eq!(a.shape(), b.shape(), "elementwise shapes differ");
    #[cfg(target_arch = "x86_64")]
    if fast() {
        let fill = |out: &mut [MaybeUninit<f32>]| {
            out.par_chunks_mut(CHUNK)
                .zip(a.data().par_chunks(CHUNK).zip(b.data().par_chunks(CHUNK)))
                // SAFETY: AVX-512F was detected.
                .for_each(|(o, (a, b))| unsafe { map2_chunk(a, b, o, &f) })
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

/// `a += b`; `false` (nothing done) without AVX-512.
pub(crate) fn add_assign(a: &mut Tensor, b: &Tensor) -> bool {
    assert_eq!(a.shape(), b.shape(), "elementwise shapes differ");
    #[cfg(target_arch = "x86_64")]
    if fast() {
        let f = |a: f32, b: f32| a + b;
        a.data_mut()
            .par_chunks_mut(CHUNK)
            .zip(b.data().par_chunks(CHUNK))
            // SAFETY: AVX-512F was detected.
            .for_each(|(a, b)| unsafe { assign_chunk(a, b, &f) });
        return true;
    }
    false
}
