//! bf16 rounding on the host: the CPU twin of the bf16 convolutions (`kernels/cuda/conv_bf16.cu`,
//! `mma_bf16.cuh`). A bf16 value is the top 16 bits of an f32 (same exponent range, 8
//! significand bits). The GPU rounds each operand to bf16 as it loads it and sums the exact
//! products in f32; the CPU engine does the same by rounding the operands here and running its
//! f32 convolution, so the two differ only in the order of the additions.

use crate::Tensor;

/// `v` rounded to the nearest bf16 (ties to even), returned as the f32 with that value — the
/// same bit arithmetic as `bf16_bits` in `mma_bf16.cuh`. NaN stays NaN; values beyond the
/// largest bf16 become ±inf.
pub fn round(v: f32) -> f32 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return f32::from_bits((u | 0x0040_0000) & 0xffff_0000); // quiet NaN
    }
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1));
    f32::from_bits(rounded & 0xffff_0000)
}

/// A host tensor with every element rounded to bf16.
pub fn round_tensor(t: &Tensor) -> Tensor {
    Tensor::from_vec(t.shape(), t.data().iter().map(|&v| round(v)).collect())
}

#[cfg(test)]
mod tests {
    use super::round;

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(round(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): goes up.
        assert_eq!(round(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        // Just above halfway rounds up; just below rounds down.
        assert_eq!(
            round(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(round(1.0 + 2f32.powi(-8) - 2f32.powi(-20)), 1.0);
        // Exactly representable values (and signs, zeros) are unchanged.
        for v in [0.0f32, -0.0, 1.0, -2.5, 0.15625, 3.0e38_f32.min(f32::MAX)] {
            assert_eq!(round(round(v)).to_bits(), round(v).to_bits());
        }
        assert_eq!(round(-1.0 - 3.0 * 2f32.powi(-8)), -1.0 - 2f32.powi(-6));
    }

    #[test]
    fn relative_error_is_at_most_2_pow_minus_8() {
        let mut v = 1.0e-30f32;
        while v < 1.0e30 {
            let r = round(v);
            // 8 significant bits: half an ulp is 2^-8 of the binade's bottom.
            assert!(((r - v) / v).abs() <= 2f32.powi(-8), "{v} -> {r}");
            assert_eq!(r.to_bits() & 0xffff, 0, "{v} -> {r} is not a bf16");
            v *= 1.37;
        }
    }

    #[test]
    fn specials() {
        assert!(round(f32::NAN).is_nan());
        assert_eq!(round(f32::INFINITY), f32::INFINITY);
        assert_eq!(round(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(round(f32::MAX), f32::INFINITY); // beyond the largest bf16
    }
}
