//! The fully connected layer's CUDA launcher (`pool_fc.cu`), and [`LinearShape`], the op's one
//! shape.

use kernels::launch::{arg::*, check_len, check_positive, grid_1d, to_int, Kernel};
use kernels::{launch, CudaView, CudaViewMut, Gpu, Result};

const FORWARD: Kernel = Kernel::new(
    "linear_forward",
    &[F32_IN, F32_IN, F32_IN, F32_OUT, I32, I32, I32],
);
const BACKWARD_DATA: Kernel = Kernel::new(
    "linear_backward_data",
    &[F32_IN, F32_IN, F32_OUT, I32, I32, I32],
);
const BACKWARD_WEIGHT: Kernel = Kernel::new(
    "linear_backward_weight",
    &[F32_IN, F32_IN, F32_OUT, F32_OUT, I32, I32, I32, F32],
);

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 3] = [FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT];

/// Shape of a linear layer: x [N, In], W [Out, In], b [Out], y [N, Out].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    /// Batch size.
    pub n: usize,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
}

impl LinearShape {
    /// The layer of input `x_shape` (`[n, in]`) and weight `w_shape` (`[out, in]`). Panics
    /// when they do not fit (a programming error).
    pub fn new(x_shape: &[usize], w_shape: &[usize]) -> Self {
        let (&[n, fin], &[fout, win]) = (x_shape, w_shape) else {
            panic!("linear: x {x_shape:?} and W {w_shape:?} must be 2-d")
        };
        assert_eq!(fin, win, "linear: x {x_shape:?} does not fit W {w_shape:?}");
        LinearShape {
            n,
            in_features: fin,
            out_features: fout,
        }
    }

    fn ints(&self, k: &'static str) -> Result<(i32, i32, i32)> {
        check_positive(
            k,
            &[
                ("n", self.n),
                ("in", self.in_features),
                ("out", self.out_features),
            ],
        )?;
        to_int(k, "N*In", self.n * self.in_features)?;
        to_int(k, "N*Out", self.n * self.out_features)?;
        to_int(k, "Out*(In+1)", self.out_features * (self.in_features + 1))?;
        Ok((
            to_int(k, "n", self.n)?,
            to_int(k, "in", self.in_features)?,
            to_int(k, "out", self.out_features)?,
        ))
    }
}

/// y = x W^T + b. CPU twin: [`super::linear_forward`].
pub fn linear_forward(
    gpu: &Gpu,
    shape: &LinearShape,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = FORWARD.name;
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.n * shape.in_features)?;
    check_len(K, "w", w.len(), shape.out_features * shape.in_features)?;
    check_len(K, "b", b.len(), shape.out_features)?;
    check_len(K, "y", y.len(), shape.n * shape.out_features)?;
    let cfg = grid_1d(shape.n * shape.out_features);
    launch!(FORWARD, gpu, cfg; x, w, b, y, n, fin, fout)
}

/// dx = dy W (overwritten). CPU twin: [`super::linear_backward`] (input
/// gradient).
pub fn linear_backward_data(
    gpu: &Gpu,
    shape: &LinearShape,
    dy: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = BACKWARD_DATA.name;
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.n * shape.out_features)?;
    check_len(K, "w", w.len(), shape.out_features * shape.in_features)?;
    check_len(K, "dx", dx.len(), shape.n * shape.in_features)?;
    let cfg = grid_1d(shape.n * shape.in_features);
    launch!(BACKWARD_DATA, gpu, cfg; dy, w, dx, n, fin, fout)
}

/// dW = beta*dW + dy^T x, db = beta*db + sum_n dy. CPU twin: [`super::linear_backward`]
/// (weight and bias gradients).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_weight(
    gpu: &Gpu,
    shape: &LinearShape,
    dy: &CudaView<'_, f32>,
    x: &CudaView<'_, f32>,
    dw: &mut CudaViewMut<'_, f32>,
    db: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    const K: &str = BACKWARD_WEIGHT.name;
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.n * shape.out_features)?;
    check_len(K, "x", x.len(), shape.n * shape.in_features)?;
    check_len(K, "dw", dw.len(), shape.out_features * shape.in_features)?;
    check_len(K, "db", db.len(), shape.out_features)?;
    let cfg = grid_1d(shape.out_features * (shape.in_features + 1));
    launch!(BACKWARD_WEIGHT, gpu, cfg; dy, x, dw, db, n, fin, fout, beta)
}
