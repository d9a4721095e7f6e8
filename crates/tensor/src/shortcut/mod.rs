//! The option-A shortcut of He et al. (the seed's `IdentityPadding`): subsample by the
//! stride (`x[:, :, ::s, ::s]`) and zero-pad the new channels at the end. No parameters.

pub mod cuda;

pub use cuda::ShortcutShape;

use crate::{check, cuda_of, Tensor};
use rayon::prelude::*;

/// `[n, cin, h, w] -> [n, cout, ceil(h/s), ceil(w/s)]`, `cout >= cin`.
pub fn pad_shortcut_forward(x: &Tensor, cout: usize, stride: usize) -> Tensor {
    let _span = crate::profile::span(|| "shortcut fwd".into());
    let s = ShortcutShape::new(x.shape(), cout, stride);
    assert!(
        s.c_out >= s.c_in && stride >= 1,
        "pad shortcut: {} -> {cout} channels, stride {stride}",
        s.c_in
    );
    if let Some(gpu) = cuda_of("pad_shortcut_forward", &[x]) {
        let mut y = Tensor::cuda_output("pad_shortcut_forward", &gpu, &s.y_shape());
        let r = cuda::shortcut_forward(&gpu, &s, &x.cu().as_view(), &mut y.cu_mut().as_view_mut());
        check("pad_shortcut_forward", r);
        return y;
    }
    let (cin, h, w, ho, wo) = (s.c_in, s.h, s.w, s.oh(), s.ow());
    let mut y = Tensor::zeros(&s.y_shape());
    y.data_mut()
        .par_chunks_mut(ho * wo)
        .enumerate()
        .for_each(|(plane, out)| {
            let (img, c) = (plane / cout, plane % cout);
            if c < cin {
                let src = &x.data()[(img * cin + c) * h * w..][..h * w];
                for oy in 0..ho {
                    for ox in 0..wo {
                        out[oy * wo + ox] = src[oy * stride * w + ox * stride];
                    }
                }
            }
        });
    y
}

/// The adjoint: route `dy` of the kept channels back to the sampled pixels; the rest of `dx`
/// is zero.
pub fn pad_shortcut_backward(dy: &Tensor, x_shape: &[usize], stride: usize) -> Tensor {
    let _span = crate::profile::span(|| "shortcut bwd".into());
    let s = ShortcutShape::new(x_shape, dy.dims4().1, stride);
    assert_eq!(dy.shape(), s.y_shape(), "pad shortcut dy shape");
    if let Some(gpu) = cuda_of("pad_shortcut_backward", &[dy]) {
        let mut dx = Tensor::cuda_output("pad_shortcut_backward", &gpu, x_shape);
        let r = cuda::shortcut_backward(
            &gpu,
            &s,
            &dy.cu().as_view(),
            &mut dx.cu_mut().as_view_mut(),
            0.0,
        );
        check("pad_shortcut_backward", r);
        return dx;
    }
    let (cin, h, w, cout, ho, wo) = (s.c_in, s.h, s.w, s.c_out, s.oh(), s.ow());
    let mut dx = Tensor::zeros(x_shape);
    dx.data_mut()
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(plane, out)| {
            let (img, c) = (plane / cin, plane % cin);
            let src = &dy.data()[(img * cout + c) * ho * wo..][..ho * wo];
            for oy in 0..ho {
                for ox in 0..wo {
                    out[oy * stride * w + ox * stride] = src[oy * wo + ox];
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, dot, rand_tensor, rng};

    #[test]
    fn subsamples_and_pads_like_pytorch() {
        // One image, one channel, 3x3 -> stride 2 keeps (0,0), (0,2), (2,0), (2,2); channel 2 is zero.
        let x = Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
        let y = pad_shortcut_forward(&x, 2, 2);
        assert_eq!(y.shape(), &[1, 2, 2, 2]);
        assert_eq!(y.data(), &[1.0, 3.0, 7.0, 9.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut r = rng(8);
        for (shape, cout, s) in [
            ([3, 3, 5, 7], 6, 2),
            ([1, 4, 4, 4], 8, 2),
            ([3, 2, 3, 3], 2, 1),
        ] {
            let x = rand_tensor(&mut r, &shape);
            let probe = rand_tensor(&mut r, pad_shortcut_forward(&x, cout, s).shape());
            let dx = pad_shortcut_backward(&probe, &shape, s);
            check_grad("pad shortcut dx", &x, &dx, |x| {
                dot(&pad_shortcut_forward(x, cout, s), &probe)
            });
        }
    }
}
