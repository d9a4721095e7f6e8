//! ReLU element by element, as PyTorch defines it: the one definition that the reference loops
//! ([`crate::elementwise`], [`crate::batchnorm`]) and their AVX-512 compilations
//! (`fast.rs` of each op) share, so every CPU path computes the same bits, and the CUDA kernels
//! (`elementwise.cu`, `batchnorm.cu`) write the same expressions.
//!
//! NaN passes through, as in `torch.relu`: a NaN activation must reach the loss, where the
//! training loop's guard sees it, not turn into a 0 that trains on silently (`f32::max` would
//! return the other operand). `-0.0` stays `-0.0`, as in PyTorch. Both are what x86's
//! `maxps(0, v)` computes (it returns its second operand when either is NaN or both are zero).

/// `relu(v) = v < 0 ? 0 : v`: NaN and `-0.0` come back unchanged.
#[inline(always)]
pub fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// ReLU's backward from the forward's *output* `y`: `y <= 0 ? 0 : dy` (PyTorch's
/// `threshold_backward`): the gradient passes where `y` is positive or NaN.
#[inline(always)]
pub fn relu_grad(dy: f32, y: f32) -> f32 {
    if y <= 0.0 {
        0.0
    } else {
        dy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_signed_zero_as_in_pytorch() {
        // torch.relu(tensor([nan, -0., 0., -1., 2., -inf, inf])) and its backward with ones.
        let x = [
            f32::NAN,
            -0.0,
            0.0,
            -1.0,
            2.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
        ];
        let y: Vec<u32> = x.iter().map(|&v| relu(v).to_bits()).collect();
        let want = [f32::NAN, -0.0, 0.0, 0.0, 2.0, 0.0, f32::INFINITY];
        assert_eq!(y, want.map(f32::to_bits));
        let dx: Vec<f32> = x.iter().map(|&v| relu_grad(1.0, relu(v))).collect();
        assert_eq!(dx, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    }
}
