//! The fully connected layer `y = x Wᵀ + b`, with `W` `[out, in]` as in PyTorch.

pub mod cuda;

pub use cuda::LinearShape;

use crate::gemm::{gemm, Mat};
use crate::{check, cuda_of, Tensor};

pub fn linear_forward(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
    let _span = crate::profile::span(|| "fc fwd".into());
    let s = LinearShape::new(x.shape(), weight.shape());
    let (n, fin, fout) = (s.n, s.in_features, s.out_features);
    assert!(
        bias.len() == fout,
        "linear: x {:?}, W {:?}, b {:?}",
        x.shape(),
        weight.shape(),
        bias.shape()
    );
    if let Some(gpu) = cuda_of("linear_forward", &[x, weight, bias]) {
        let mut y = Tensor::cuda_output("linear_forward", &gpu, &[n, fout]);
        let r = cuda::linear_forward(
            &gpu,
            &s,
            &x.cu().as_view(),
            &weight.cu().as_view(),
            &bias.cu().as_view(),
            &mut y.cu_mut().as_view_mut(),
        );
        check("linear_forward", r);
        return y;
    }
    let mut y = Tensor::from_vec(&[n, fout], bias.data().repeat(n));
    gemm(
        1.0,
        Mat::rm(x.data(), n, fin),
        Mat::rm(weight.data(), fout, fin).t(),
        1.0,
        y.data_mut(),
    );
    y
}

/// Returns `dx = dy W`; accumulates `dW += dyᵀ x` and `db += Σ_rows dy`.
pub fn linear_backward(
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    dweight: &mut Tensor,
    dbias: &mut Tensor,
) -> Tensor {
    let _span = crate::profile::span(|| "fc bwd".into());
    let s = LinearShape::new(x.shape(), weight.shape());
    let (n, fin, fout) = (s.n, s.in_features, s.out_features);
    assert_eq!(dy.shape(), [n, fout], "linear dy shape");
    if let Some(gpu) = cuda_of("linear_backward", &[dy, x, weight, &*dweight, &*dbias]) {
        assert!(
            dweight.shape() == weight.shape() && dbias.len() == fout,
            "linear gradient shapes"
        );
        let mut dx = Tensor::cuda_output("linear_backward", &gpu, &[n, fin]);
        let (dy, x) = (dy.cu().as_view(), x.cu().as_view());
        let r = cuda::linear_backward_data(
            &gpu,
            &s,
            &dy,
            &weight.cu().as_view(),
            &mut dx.cu_mut().as_view_mut(),
        );
        check("linear_backward", r);
        // beta = 1: accumulate into dW and db, like the CPU body.
        let (dw, db) = (dweight.cu_mut(), dbias.cu_mut());
        let r = cuda::linear_backward_weight(
            &gpu,
            &s,
            &dy,
            &x,
            &mut dw.as_view_mut(),
            &mut db.as_view_mut(),
            1.0,
        );
        check("linear_backward", r);
        return dx;
    }
    let dy_m = Mat::rm(dy.data(), n, fout);
    let mut dx = Tensor::zeros(&[n, fin]);
    gemm(
        1.0,
        dy_m,
        Mat::rm(weight.data(), fout, fin),
        0.0,
        dx.data_mut(),
    );
    gemm(
        1.0,
        dy_m.t(),
        Mat::rm(x.data(), n, fin),
        1.0,
        dweight.data_mut(),
    );
    for row in dy.data().chunks(fout) {
        dbias
            .data_mut()
            .iter_mut()
            .zip(row)
            .for_each(|(b, &g)| *b += g);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, dot, rand_tensor, rng};

    #[test]
    fn forward_by_hand() {
        let x = Tensor::from_vec(&[1, 2], vec![1.0, 2.0]);
        let w = Tensor::from_vec(&[3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let b = Tensor::from_vec(&[3], vec![0.5, 0.0, -1.0]);
        assert_eq!(linear_forward(&x, &w, &b).data(), &[1.5, 2.0, 2.0]);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut r = rng(10);
        for (n, fin, fout) in [(1, 5, 3), (3, 7, 10), (4, 64, 100)] {
            let x = rand_tensor(&mut r, &[n, fin]);
            let w = rand_tensor(&mut r, &[fout, fin]);
            let b = rand_tensor(&mut r, &[fout]);
            let probe = rand_tensor(&mut r, &[n, fout]);
            let (mut dw, mut db) = (Tensor::zeros(&[fout, fin]), Tensor::zeros(&[fout]));
            let dx = linear_backward(&probe, &x, &w, &mut dw, &mut db);
            check_grad("fc dx", &x, &dx, |x| {
                dot(&linear_forward(x, &w, &b), &probe)
            });
            check_grad("fc dw", &w, &dw, |w| {
                dot(&linear_forward(&x, w, &b), &probe)
            });
            check_grad("fc db", &b, &db, |b| {
                dot(&linear_forward(&x, &w, b), &probe)
            });
        }
    }
}
