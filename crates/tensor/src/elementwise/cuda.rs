//! ReLU, the residual add and their fusion on the GPU (`elementwise.cu`): one grid-stride launch
//! over `n` elements each, `(inputs..., output, n)`.

use kernels::launch::{arg::*, grid_1d, to_int, Kernel};
use kernels::{launch, CudaView, CudaViewMut, Gpu, KernelError, Result};

const RELU_FORWARD: Kernel = Kernel::new("relu_forward", &[F32_IN, F32_OUT, I32]);
const RELU_BACKWARD: Kernel = Kernel::new("relu_backward", &[F32_IN, F32_IN, F32_OUT, I32]);
const ADD: Kernel = Kernel::new("add_forward", &[F32_IN, F32_IN, F32_OUT, I32]);
const ADD_RELU: Kernel = Kernel::new("add_relu_forward", &[F32_IN, F32_IN, F32_OUT, I32]);
const ACCUMULATE: Kernel = Kernel::new("accumulate", &[F32_OUT, F32_IN, I32]);

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 5] = [RELU_FORWARD, RELU_BACKWARD, ADD, ADD_RELU, ACCUMULATE];

/// The common length of `(name, length)` pairs as the kernels' `n`; `Err` naming the first
/// that differs.
fn same_len(kernel: &'static str, lens: &[(&str, usize)]) -> Result<i32> {
    let (first, n) = lens[0];
    match lens[1..].iter().find(|&&(_, len)| len != n) {
        Some((what, len)) => Err(KernelError::invalid(
            kernel,
            format!("{what} has {len} elements but {first} has {n}"),
        )),
        None => to_int(kernel, "n", n),
    }
}

/// The two-input kernels, `out = f(a, b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `dx = dy` where the forward output `y > 0` (or is NaN), else 0; a = dy, b = y. CPU twin:
    /// [`super::relu_backward`].
    ReluBackward,
    /// `out = a + b`. CPU twin: [`super::add`] (the residual).
    Add,
    /// `out = max(a + b, 0)`, NaN passing. CPU twin: [`super::add_relu`].
    AddRelu,
}

impl Binary {
    /// The kernel, and the names its errors give a, b and out.
    fn kernel(self) -> (Kernel, [&'static str; 3]) {
        match self {
            Binary::ReluBackward => (RELU_BACKWARD, ["dy", "y", "dx"]),
            Binary::Add => (ADD, ["a", "b", "out"]),
            Binary::AddRelu => (ADD_RELU, ["a", "b", "out"]),
        }
    }
}

/// `out = op(a, b)`, all three of one length.
pub fn binary(
    gpu: &Gpu,
    op: Binary,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let (kernel, [a_is, b_is, out_is]) = op.kernel();
    let lens = [(a_is, a.len()), (b_is, b.len()), (out_is, out.len())];
    let n = same_len(kernel.name, &lens)?;
    launch!(kernel, gpu, grid_1d(a.len()); a, b, out, n)
}

/// `y = max(x, 0)`, NaN passing. CPU twin: [`super::relu_forward`].
pub fn relu_forward(gpu: &Gpu, x: &CudaView<'_, f32>, y: &mut CudaViewMut<'_, f32>) -> Result<()> {
    let n = same_len(RELU_FORWARD.name, &[("x", x.len()), ("y", y.len())])?;
    launch!(RELU_FORWARD, gpu, grid_1d(x.len()); x, y, n)
}

/// `acc += x`. CPU twin: [`super::add_assign`] (gradients meeting at a fork).
pub fn accumulate(gpu: &Gpu, acc: &mut CudaViewMut<'_, f32>, x: &CudaView<'_, f32>) -> Result<()> {
    let n = same_len(ACCUMULATE.name, &[("acc", acc.len()), ("x", x.len())])?;
    launch!(ACCUMULATE, gpu, grid_1d(x.len()); acc, x, n)
}
