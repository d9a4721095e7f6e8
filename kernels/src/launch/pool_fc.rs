//! Global average pool and linear launchers (`pool_fc.cu`).

use cudarc::driver::{CudaView, CudaViewMut};

use super::{check_len, check_positive, f32_in, f32_out, f32_val, grid_1d, i32_val, to_int};
use crate::error::Result;
use crate::Gpu;

/// y[n,c] = mean over H*W of x[n,c]. `nc` = N*C rows of `hw` values. CPU twin: tensor's global
/// average pool forward.
pub fn avgpool_forward(
    gpu: &Gpu,
    nc: usize,
    hw: usize,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "avgpool_forward";
    check_positive(K, &[("nc", nc), ("hw", hw)])?;
    check_len(K, "x", x.len(), nc * hw)?;
    check_len(K, "y", y.len(), nc)?;
    to_int(K, "N*C*HW", nc * hw)?;
    let (nc_i, hw_i) = (to_int(K, "nc", nc)?, to_int(K, "hw", hw)?);
    launch!(gpu, "avgpool_forward", grid_1d(nc), [f32_in x, f32_out y, i32 nc_i, i32 hw_i])
}

/// dx[n,c,:,:] = dy[n,c] / HW. CPU twin: tensor's global average pool backward.
pub fn avgpool_backward(
    gpu: &Gpu,
    nc: usize,
    hw: usize,
    dy: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "avgpool_backward";
    check_positive(K, &[("nc", nc), ("hw", hw)])?;
    check_len(K, "dy", dy.len(), nc)?;
    check_len(K, "dx", dx.len(), nc * hw)?;
    to_int(K, "N*C*HW", nc * hw)?;
    let (nc_i, hw_i) = (to_int(K, "nc", nc)?, to_int(K, "hw", hw)?);
    launch!(gpu, "avgpool_backward", grid_1d(nc * hw), [f32_in dy, f32_out dx, i32 nc_i, i32 hw_i])
}

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

/// y = x W^T + b. CPU twin: tensor's linear forward.
pub fn linear_forward(
    gpu: &Gpu,
    shape: &LinearShape,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "linear_forward";
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.n * shape.in_features)?;
    check_len(K, "w", w.len(), shape.out_features * shape.in_features)?;
    check_len(K, "b", b.len(), shape.out_features)?;
    check_len(K, "y", y.len(), shape.n * shape.out_features)?;
    launch!(gpu, "linear_forward", grid_1d(shape.n * shape.out_features),
        [f32_in x, f32_in w, f32_in b, f32_out y, i32 n, i32 fin, i32 fout])
}

/// dx = dy W (overwritten). CPU twin: tensor's linear backward (input grad).
pub fn linear_backward_data(
    gpu: &Gpu,
    shape: &LinearShape,
    dy: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "linear_backward_data";
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.n * shape.out_features)?;
    check_len(K, "w", w.len(), shape.out_features * shape.in_features)?;
    check_len(K, "dx", dx.len(), shape.n * shape.in_features)?;
    launch!(gpu, "linear_backward_data", grid_1d(shape.n * shape.in_features),
        [f32_in dy, f32_in w, f32_out dx, i32 n, i32 fin, i32 fout])
}

/// dW = beta*dW + dy^T x, db = beta*db + sum_n dy. CPU twin: tensor's linear backward
/// (weight and bias grads).
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
    const K: &str = "linear_backward_weight";
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.n * shape.out_features)?;
    check_len(K, "x", x.len(), shape.n * shape.in_features)?;
    check_len(K, "dw", dw.len(), shape.out_features * shape.in_features)?;
    check_len(K, "db", db.len(), shape.out_features)?;
    launch!(gpu, "linear_backward_weight",
        grid_1d(shape.out_features * (shape.in_features + 1)),
        [f32_in dy, f32_in x, f32_out dw, f32_out db, i32 n, i32 fin, i32 fout, f32 beta])
}
