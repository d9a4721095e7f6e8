//! Global average pooling: `[n, c, h, w] -> [n, c]` (the seed's `AvgPool2d(8)` only fits an
//! 8x8 map; this fits any).

pub mod cuda;

use crate::{check, cuda_of, Tensor};

pub fn global_avg_pool_forward(x: &Tensor) -> Tensor {
    let _span = crate::profile::span(|| "pool fwd".into());
    let (n, c, h, w) = x.dims4();
    let hw = h * w;
    if let Some(gpu) = cuda_of("global_avg_pool_forward", &[x]) {
        let mut y = Tensor::cuda_output("global_avg_pool_forward", &gpu, &[n, c]);
        let r = cuda::avgpool_forward(
            &gpu,
            n * c,
            hw,
            &x.cu().as_view(),
            &mut y.cu_mut().as_view_mut(),
        );
        check("global_avg_pool_forward", r);
        return y;
    }
    let data = x
        .data()
        .chunks(hw)
        .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
        .collect();
    Tensor::from_vec(&[n, c], data)
}

/// Every pixel of a plane gets `dy / (h·w)`.
pub fn global_avg_pool_backward(dy: &Tensor, x_shape: &[usize]) -> Tensor {
    let _span = crate::profile::span(|| "pool bwd".into());
    let [n, c, h, w] = x_shape[..] else {
        panic!("pool input must be NCHW")
    };
    assert_eq!(dy.shape(), [n, c], "pool dy shape");
    if let Some(gpu) = cuda_of("global_avg_pool_backward", &[dy]) {
        let mut dx = Tensor::cuda_output("global_avg_pool_backward", &gpu, x_shape);
        let r = cuda::avgpool_backward(
            &gpu,
            n * c,
            h * w,
            &dy.cu().as_view(),
            &mut dx.cu_mut().as_view_mut(),
        );
        check("global_avg_pool_backward", r);
        return dx;
    }
    let scale = 1.0 / (h * w) as f32;
    let data = dy
        .data()
        .iter()
        .flat_map(|&g| std::iter::repeat_n(g * scale, h * w))
        .collect();
    Tensor::from_vec(x_shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, dot, rand_tensor, rng};

    #[test]
    fn averages_each_plane_and_spreads_the_gradient() {
        let x = Tensor::from_vec(&[1, 2, 1, 3], vec![1.0, 2.0, 6.0, -3.0, 0.0, 0.0]);
        assert_eq!(global_avg_pool_forward(&x).data(), &[3.0, -1.0]);
        let mut r = rng(9);
        let x = rand_tensor(&mut r, &[3, 5, 3, 5]);
        let probe = rand_tensor(&mut r, &[3, 5]);
        let dx = global_avg_pool_backward(&probe, x.shape());
        check_grad("pool dx", &x, &dx, |x| {
            dot(&global_avg_pool_forward(x), &probe)
        });
    }
}
