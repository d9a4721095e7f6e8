//! Option-A shortcut launchers (`shortcut.cu`).

use cudarc::driver::{CudaView, CudaViewMut};

use super::{check_len, check_positive, f32_in, f32_out, f32_val, grid_1d, i32_val, to_int};
use crate::error::{KernelError, Result};
use crate::Gpu;

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
    /// ceil(H / s).
    pub fn oh(&self) -> usize {
        (self.h - 1) / self.stride + 1
    }
    /// ceil(W / s).
    pub fn ow(&self) -> usize {
        (self.w - 1) / self.stride + 1
    }
    /// N*Cin*H*W.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// N*Cout*OH*OW.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh() * self.ow()
    }
    #[allow(clippy::type_complexity)]
    fn ints(&self, k: &'static str) -> Result<(i32, i32, i32, i32, i32, i32, i32, i32)> {
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
        Ok((
            to_int(k, "n", self.n)?,
            to_int(k, "c_in", self.c_in)?,
            to_int(k, "h", self.h)?,
            to_int(k, "w", self.w)?,
            to_int(k, "c_out", self.c_out)?,
            to_int(k, "oh", self.oh())?,
            to_int(k, "ow", self.ow())?,
            to_int(k, "stride", self.stride)?,
        ))
    }
}

/// out = option-A shortcut of x. CPU twin: tensor's shortcut (subsample + zero-pad channels).
pub fn shortcut_forward(
    gpu: &Gpu,
    shape: &ShortcutShape,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "shortcut_forward";
    let (n, cin, h, w, cout, oh, ow, s) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.x_len())?;
    check_len(K, "out", out.len(), shape.y_len())?;
    launch!(gpu, "shortcut_forward", grid_1d(shape.y_len()),
        [f32_in x, f32_out out, i32 n, i32 cin, i32 h, i32 w, i32 cout, i32 oh, i32 ow, i32 s])
}

/// dx = beta * dx + shortcut backward(dy). CPU twin: tensor's shortcut backward.
pub fn shortcut_backward(
    gpu: &Gpu,
    shape: &ShortcutShape,
    dy: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    const K: &str = "shortcut_backward";
    let (n, cin, h, w, cout, oh, ow, s) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.y_len())?;
    check_len(K, "dx", dx.len(), shape.x_len())?;
    launch!(gpu, "shortcut_backward", grid_1d(shape.x_len()),
        [f32_in dy, f32_out dx, i32 n, i32 cin, i32 h, i32 w, i32 cout, i32 oh, i32 ow, i32 s,
         f32 beta])
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
        let n = crate::launch::MAX_LEN / 64;
        assert!(at(n, 1).ints("t").is_ok());
        assert!(at(n + 1, 1).ints("t").is_err()); // x
        assert!(at(n, 2).ints("t").is_err()); // y, twice the channels
    }
}
