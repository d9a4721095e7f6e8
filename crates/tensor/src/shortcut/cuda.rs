//! The option-A shortcut's CUDA launcher (`shortcut.cu`), and [`ShortcutShape`], the op's one
//! shape.

use kernels::launch::{arg::*, check_len, check_positive, grid_1d, to_int, Kernel};
use kernels::{launch, CudaView, CudaViewMut, Gpu, KernelError, Result};

const FORWARD: Kernel = Kernel::new(
    "shortcut_forward",
    &[F32_IN, F32_OUT, I32, I32, I32, I32, I32, I32, I32, I32],
);
const BACKWARD: Kernel = Kernel::new(
    "shortcut_backward",
    &[F32_IN, F32_OUT, I32, I32, I32, I32, I32, I32, I32, I32, F32],
);

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 2] = [FORWARD, BACKWARD];

/// Shape of an option-A shortcut: input [N, Cin, H, W] -> output [N, Cout, OH, OW].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortcutShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (>= c_in; the extra ones are zero).
    pub c_out: usize,
    /// Subsampling stride.
    pub stride: usize,
}

impl ShortcutShape {
    /// The shortcut of an input of shape `x_shape` (NCHW) to `c_out` channels.
    pub fn new(x_shape: &[usize], c_out: usize, stride: usize) -> Self {
        let [n, c_in, h, w] = x_shape[..] else {
            panic!("pad shortcut input must be NCHW, got {x_shape:?}")
        };
        ShortcutShape {
            n,
            c_in,
            h,
            w,
            c_out,
            stride,
        }
    }
    /// The output's shape, `[n, c_out, oh, ow]`.
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.oh(), self.ow()]
    }
    /// ceil(H / s).
    pub fn oh(&self) -> usize {
        self.h.div_ceil(self.stride)
    }
    /// ceil(W / s).
    pub fn ow(&self) -> usize {
        self.w.div_ceil(self.stride)
    }
    /// N*Cin*H*W.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// N*Cout*OH*OW.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh() * self.ow()
    }
    /// The kernels' shape arguments `(n, c_in, h, w, c_out, oh, ow, stride)`, checked.
    fn ints(&self, k: &'static str) -> Result<[i32; 8]> {
        check_positive(
            k,
            &[
                ("n", self.n),
                ("c_in", self.c_in),
                ("h", self.h),
                ("w", self.w),
                ("stride", self.stride),
            ],
        )?;
        if self.c_out < self.c_in {
            return Err(KernelError::invalid(k, "c_out < c_in"));
        }
        to_int(k, "x length", self.x_len())?;
        to_int(k, "y length", self.y_len())?;
        Ok([
            to_int(k, "n", self.n)?,
            to_int(k, "c_in", self.c_in)?,
            to_int(k, "h", self.h)?,
            to_int(k, "w", self.w)?,
            to_int(k, "c_out", self.c_out)?,
            to_int(k, "oh", self.oh())?,
            to_int(k, "ow", self.ow())?,
            to_int(k, "stride", self.stride)?,
        ])
    }
}

/// out = option-A shortcut of x. CPU twin: [`super::pad_shortcut_forward`] (subsample +
/// zero-pad channels).
pub fn shortcut_forward(
    gpu: &Gpu,
    shape: &ShortcutShape,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let k = FORWARD.name;
    let [n, cin, h, w, cout, oh, ow, s] = shape.ints(k)?;
    check_len(k, "x", x.len(), shape.x_len())?;
    check_len(k, "out", out.len(), shape.y_len())?;
    launch!(FORWARD, gpu, grid_1d(shape.y_len()); x, out, n, cin, h, w, cout, oh, ow, s)
}

/// dx = beta * dx + shortcut backward(dy). CPU twin: [`super::pad_shortcut_backward`].
pub fn shortcut_backward(
    gpu: &Gpu,
    shape: &ShortcutShape,
    dy: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    let k = BACKWARD.name;
    let [n, cin, h, w, cout, oh, ow, s] = shape.ints(k)?;
    check_len(k, "dy", dy.len(), shape.y_len())?;
    check_len(k, "dx", dx.len(), shape.x_len())?;
    launch!(BACKWARD, gpu, grid_1d(shape.x_len()); dy, dx, n, cin, h, w, cout, oh, ow, s, beta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcut_sizes() {
        let s = ShortcutShape {
            n: 2,
            c_in: 16,
            h: 32,
            w: 32,
            c_out: 32,
            stride: 2,
        };
        assert_eq!((s.oh(), s.ow()), (16, 16));
        let odd = ShortcutShape { h: 7, w: 7, ..s };
        assert_eq!(odd.oh(), 4); // matches x[:, :, ::2, ::2]
        assert!(ShortcutShape { c_out: 8, ..s }.ints("t").is_err());
    }

    #[test]
    fn counts_are_refused_past_the_kernels_index_range() {
        let at = |n: usize, c_out: usize| ShortcutShape {
            n,
            c_in: 1,
            h: 64,
            w: 1,
            c_out,
            stride: 1,
        };
        let n = kernels::launch::MAX_LEN / 64;
        assert!(at(n, 1).ints("t").is_ok());
        assert!(at(n + 1, 1).ints("t").is_err()); // x
        assert!(at(n, 2).ints("t").is_err()); // y, twice the channels
    }
}
