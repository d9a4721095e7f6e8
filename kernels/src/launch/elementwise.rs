//! Elementwise launchers (`elementwise.cu`): relu, add, add+relu, accumulate.

use cudarc::driver::{CudaView, CudaViewMut};

use super::{f32_in, f32_out, grid_1d, i32_val, to_int};
use crate::error::{KernelError, Result};
use crate::Gpu;

fn n_of(kernel: &'static str, lens: &[(&str, usize)]) -> Result<i32> {
    let (first, n) = lens[0];
    for &(what, len) in &lens[1..] {
        if len != n {
            return Err(KernelError::invalid(
                kernel,
                format!("{what} has {len} elements but {first} has {n}"),
            ));
        }
    }
    to_int(kernel, "n", n)
}

/// y = max(x, 0). CPU twin: tensor's relu forward.
pub fn relu_forward(gpu: &Gpu, x: &CudaView<'_, f32>, y: &mut CudaViewMut<'_, f32>) -> Result<()> {
    let n = n_of("relu_forward", &[("x", x.len()), ("y", y.len())])?;
    launch!(gpu, "relu_forward", grid_1d(x.len()), [f32_in x, f32_out y, i32 n])
}

/// dx = dy * (y > 0), y the forward output. CPU twin: tensor's relu backward.
pub fn relu_backward(
    gpu: &Gpu,
    dy: &CudaView<'_, f32>,
    y: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let n = n_of(
        "relu_backward",
        &[("dy", dy.len()), ("y", y.len()), ("dx", dx.len())],
    )?;
    launch!(gpu, "relu_backward", grid_1d(dy.len()), [f32_in dy, f32_in y, f32_out dx, i32 n])
}

/// out = a + b. CPU twin: tensor's elementwise add (residual).
pub fn add_forward(
    gpu: &Gpu,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let n = n_of(
        "add_forward",
        &[("a", a.len()), ("b", b.len()), ("out", out.len())],
    )?;
    launch!(gpu, "add_forward", grid_1d(a.len()), [f32_in a, f32_in b, f32_out out, i32 n])
}

/// out = max(a + b, 0). CPU twin: tensor's add followed by relu.
pub fn add_relu_forward(
    gpu: &Gpu,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let n = n_of(
        "add_relu_forward",
        &[("a", a.len()), ("b", b.len()), ("out", out.len())],
    )?;
    launch!(gpu, "add_relu_forward", grid_1d(a.len()), [f32_in a, f32_in b, f32_out out, i32 n])
}

/// acc += x. CPU twin: tensor's in-place add (gradient accumulation).
pub fn accumulate(gpu: &Gpu, acc: &mut CudaViewMut<'_, f32>, x: &CudaView<'_, f32>) -> Result<()> {
    let n = n_of("accumulate", &[("acc", acc.len()), ("x", x.len())])?;
    launch!(gpu, "accumulate", grid_1d(x.len()), [f32_out acc, f32_in x, i32 n])
}
