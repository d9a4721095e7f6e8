//! Global average pooling on the GPU (`pool_fc.cu`): `nc` = N·C planes of `hw` values each.

use kernels::launch::{arg::*, check_len, check_positive, grid_1d, to_int, Kernel};
use kernels::{launch, CudaView, CudaViewMut, Gpu, Result};

const FORWARD: Kernel = Kernel::new("avgpool_forward", &[F32_IN, F32_OUT, I32, I32]);
const BACKWARD: Kernel = Kernel::new("avgpool_backward", &[F32_IN, F32_OUT, I32, I32]);

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 2] = [FORWARD, BACKWARD];

/// `nc` and `hw` as the kernels' ints, checked (the planes hold `nc·hw` values).
fn ints(kernel: &'static str, nc: usize, hw: usize) -> Result<(i32, i32)> {
    check_positive(kernel, &[("nc", nc), ("hw", hw)])?;
    to_int(kernel, "N*C*HW", nc * hw)?;
    Ok((to_int(kernel, "nc", nc)?, to_int(kernel, "hw", hw)?))
}

/// `y[n,c]` = mean over H·W of `x[n,c]`. CPU twin: [`super::global_avg_pool_forward`].
pub fn avgpool_forward(
    gpu: &Gpu,
    nc: usize,
    hw: usize,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let k = FORWARD.name;
    let (nc_i, hw_i) = ints(k, nc, hw)?;
    check_len(k, "x", x.len(), nc * hw)?;
    check_len(k, "y", y.len(), nc)?;
    launch!(FORWARD, gpu, grid_1d(nc); x, y, nc_i, hw_i)
}

/// `dx[n,c,:,:] = dy[n,c] / HW`. CPU twin: [`super::global_avg_pool_backward`].
pub fn avgpool_backward(
    gpu: &Gpu,
    nc: usize,
    hw: usize,
    dy: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let k = BACKWARD.name;
    let (nc_i, hw_i) = ints(k, nc, hw)?;
    check_len(k, "dy", dy.len(), nc)?;
    check_len(k, "dx", dx.len(), nc * hw)?;
    launch!(BACKWARD, gpu, grid_1d(nc * hw); dy, dx, nc_i, hw_i)
}
