//! [`ConvShape`]: the one description of a convolution's geometry, shared by the reference, the
//! CPU fast path and the CUDA launcher (which passes its fields to the kernels as `int`s).

use kernels::launch::{check_positive, to_int};
use kernels::{KernelError, Result};

/// The geometry of one bias-free 2-d convolution, NCHW: input `[n, c_in, h, w]`, weight
/// `[c_out, c_in, k, k]` with `k` odd, padding `k / 2` ("same" size at stride 1, as every
/// ResNet convolution), output `[n, c_out, oh, ow]`. Build it with [`ConvShape::new`], which
/// derives `pad`, `oh` and `ow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size (odd; the GPU takes 1 or 3).
    pub k: usize,
    /// Stride (the GPU takes 1 or 2).
    pub stride: usize,
    /// Zero padding on each side: `k / 2`.
    pub pad: usize,
    /// Output height: `(h + 2·pad − k) / stride + 1`.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvShape {
    /// The convolution of an input of shape `x_shape` (`[n, c_in, h, w]`) with a weight of
    /// shape `w_shape` (`[c_out, c_in, k, k]`, `k` odd). Panics when they do not fit (a
    /// programming error, like any op's mismatched shapes).
    pub fn new(x_shape: &[usize], w_shape: &[usize], stride: usize) -> Self {
        let [n, c_in, h, w] = x_shape[..] else {
            panic!("conv input must be NCHW, got {x_shape:?}")
        };
        let [c_out, wc_in, k, k2] = w_shape[..] else {
            panic!("conv weight must be 4-d, got {w_shape:?}")
        };
        assert!(
            c_in == wc_in && k == k2 && k % 2 == 1,
            "conv weight {w_shape:?} does not fit input {x_shape:?}"
        );
        assert!(stride >= 1, "conv stride must be at least 1");
        let pad = k / 2;
        ConvShape {
            n,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        }
    }

    /// Elements of x: N·C_in·H·W.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements of w: C_out·C_in·k·k.
    pub fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.k * self.k
    }
    /// Elements of y: N·C_out·OH·OW.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh * self.ow
    }

    /// Rows of the im2col matrix (the forward GEMM's inner dimension).
    pub fn col_rows(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Output pixels per channel (the forward GEMM's column count per image).
    pub fn out_pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// Multiply-accumulates of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> usize {
        self.n * self.c_out * self.col_rows() * self.out_pixels()
    }

    /// A 1x1 stride-1 convolution needs no im2col: the image already is the column matrix.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }

    /// Floats of per-image im2col scratch (none for a pointwise convolution).
    pub(crate) fn scratch_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.col_rows() * self.out_pixels()
        }
    }

    /// For kernel offset `k_off`, the output columns `lo..hi` whose input column
    /// `ox·s + k_off − pad` lies inside the image; the rest read zero padding.
    pub(crate) fn valid_cols(&self, k_off: usize) -> (usize, usize) {
        let first = (self.pad.saturating_sub(k_off)).div_ceil(self.stride);
        let last = (self.w + self.pad)
            .checked_sub(k_off + 1)
            .map_or(0, |v| v / self.stride + 1);
        (first.min(self.ow), last.clamp(first.min(self.ow), self.ow))
    }

    /// The input row read by output row `oy` at kernel row `ky`, if inside the image.
    pub(crate) fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad)
            .filter(|&iy| iy < self.h)
    }

    /// Checks that the GPU kernels take this shape (k in {1, 3}, stride in {1, 2}, no zero
    /// dimension) and that every count fits their `int`s ([`kernels::launch::MAX_LEN`]).
    pub fn validate(&self, kernel: &'static str) -> Result<()> {
        if !(self.k == 1 || self.k == 3) {
            return Err(KernelError::invalid(
                kernel,
                format!("k = {} (need 1 or 3)", self.k),
            ));
        }
        if !(self.stride == 1 || self.stride == 2) {
            return Err(KernelError::invalid(
                kernel,
                format!("stride = {}", self.stride),
            ));
        }
        check_positive(
            kernel,
            &[
                ("n", self.n),
                ("c_in", self.c_in),
                ("h", self.h),
                ("w", self.w),
                ("c_out", self.c_out),
            ],
        )?;
        to_int(kernel, "x length", self.x_len())?;
        to_int(kernel, "y length", self.y_len())?;
        to_int(kernel, "w length", self.w_len())?;
        Ok(())
    }

    /// The kernels' ten shape arguments, `(n, c_in, h, w, c_out, oh, ow, k, stride, pad)`, after
    /// [`ConvShape::validate`].
    pub(crate) fn kernel_ints(&self, kernel: &'static str) -> Result<[i32; 10]> {
        self.validate(kernel)?;
        let mut ints = [0; 10];
        for (i, (what, v)) in [
            ("n", self.n),
            ("c_in", self.c_in),
            ("h", self.h),
            ("w", self.w),
            ("c_out", self.c_out),
            ("oh", self.oh),
            ("ow", self.ow),
            ("k", self.k),
            ("stride", self.stride),
            ("pad", self.pad),
        ]
        .into_iter()
        .enumerate()
        {
            ints[i] = to_int(kernel, what, v)?;
        }
        Ok(ints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(n: usize, c_in: usize, hw: usize, c_out: usize, k: usize, stride: usize) -> ConvShape {
        ConvShape::new(&[n, c_in, hw, hw], &[c_out, c_in, k, k], stride)
    }

    #[test]
    fn conv_output_sizes_match_pytorch() {
        assert_eq!(
            (conv(2, 3, 32, 16, 3, 1).oh, conv(2, 3, 32, 16, 3, 1).ow),
            (32, 32)
        );
        assert_eq!(conv(2, 16, 32, 32, 3, 2).oh, 16);
        assert_eq!(conv(2, 16, 7, 32, 3, 2).oh, 4); // (7 + 2 - 3)/2 + 1
        assert_eq!(conv(2, 16, 32, 32, 1, 2).oh, 16); // (32 - 1)/2 + 1
        assert_eq!(conv(2, 16, 7, 32, 1, 2).oh, 4);
        let s = conv(4, 16, 8, 32, 3, 2);
        assert_eq!(s.x_len(), 4 * 16 * 8 * 8);
        assert_eq!(s.w_len(), 32 * 16 * 9);
        assert_eq!(s.y_len(), 4 * 32 * 4 * 4);
        assert_eq!(
            s.kernel_ints("t").unwrap(),
            [4, 16, 8, 8, 32, 4, 4, 3, 2, 1]
        );
    }

    #[test]
    fn conv_shape_validation() {
        assert!(conv(1, 1, 4, 1, 5, 1).validate("t").is_err());
        assert!(conv(1, 1, 4, 1, 3, 3).validate("t").is_err());
        assert!(conv(0, 1, 4, 1, 3, 1).validate("t").is_err());
        assert!(conv(1 << 16, 64, 64, 64, 3, 1).validate("t").is_err()); // > i32
        conv(128, 64, 8, 64, 3, 1).validate("t").unwrap();
    }

    #[test]
    fn conv_counts_are_refused_past_the_kernels_index_range() {
        use kernels::launch::MAX_LEN;
        // w = [1, C, 3, 3]: K = C*9 is the GEMM's reduction, which the tile steps 16 past.
        let c = MAX_LEN / 9;
        conv(1, c, 1, 1, 3, 1).validate("t").unwrap();
        let err = conv(1, c + 1, 1, 1, 3, 1).validate("t").unwrap_err();
        assert!(err.to_string().contains("w length"), "{err}");
        assert!(
            c * 9 + 9 < i32::MAX as usize,
            "refused although it fits i32: the margin"
        );
        // x and y = [N, 1, 8, 8].
        conv(MAX_LEN / 64, 1, 8, 1, 1, 1).validate("t").unwrap();
        let err = conv(MAX_LEN / 64 + 1, 1, 8, 1, 1, 1)
            .validate("t")
            .unwrap_err();
        assert!(err.to_string().contains("x length"), "{err}");
    }
}
