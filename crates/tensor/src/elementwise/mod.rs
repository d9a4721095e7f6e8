//! ReLU and the residual add: element by element, in parallel chunks (CPU: the same arithmetic
//! compiled for AVX-512 in [`fast`] where the CPU has it, fused where the op
//! is), or one grid-stride kernel launch (CUDA, `elementwise.cu`, launched by [`cuda`]).

pub mod cuda;
pub(crate) mod fast;

use crate::scalar::{relu, relu_grad};
use crate::{check, cuda_of, Tensor};
use cuda::Binary;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

fn zip_map(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Tensor {
    assert_eq!(a.shape(), b.shape(), "elementwise shapes differ");
    let mut out = Tensor::zeros(a.shape());
    out.data_mut()
        .par_chunks_mut(CHUNK)
        .zip(a.data().par_chunks(CHUNK).zip(b.data().par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            o.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (&a, &b))| *o = f(a, b))
        });
    out
}

/// `op(a, b)` on the GPU, into a new tensor of their shape; `None` when they are on the host.
fn binary_on_gpu(op: &'static str, kernel: Binary, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let gpu = cuda_of(op, &[a, b])?;
    assert_eq!(a.shape(), b.shape(), "elementwise shapes differ");
    let mut out = Tensor::cuda_output(op, &gpu, a.shape());
    let (a, b) = (a.cu().as_view(), b.cu().as_view());
    let r = cuda::binary(&gpu, kernel, &a, &b, &mut out.cu_mut().as_view_mut());
    check(op, r);
    Some(out)
}

/// `max(x, 0)`, with NaN passing through as in PyTorch ([`relu`]).
pub fn relu_forward(x: &Tensor) -> Tensor {
    let _span = crate::profile::span(|| "relu fwd".into());
    if let Some(gpu) = cuda_of("relu_forward", &[x]) {
        let mut y = Tensor::cuda_output("relu_forward", &gpu, x.shape());
        let r = cuda::relu_forward(&gpu, &x.cu().as_view(), &mut y.cu_mut().as_view_mut());
        check("relu_forward", r);
        return y;
    }
    if let Some(y) = fast::relu_forward(x) {
        return y;
    }
    let mut y = x.clone();
    y.data_mut()
        .par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = relu(*v)));
    y
}

/// `dx = y <= 0 ? 0 : dy`, from the forward *output* (the same mask as `x > 0`, NaN aside).
/// At exactly 0 the gradient is 0, and where `y` is NaN it passes, as in PyTorch
/// ([`relu_grad`]).
pub fn relu_backward(dy: &Tensor, y: &Tensor) -> Tensor {
    let _span = crate::profile::span(|| "relu bwd".into());
    binary_on_gpu("relu_backward", Binary::ReluBackward, dy, y)
        .or_else(|| fast::relu_backward(dy, y))
        .unwrap_or_else(|| zip_map(dy, y, relu_grad))
}

/// `a + b` (the residual connection; its backward passes `dy` to both inputs).
pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    let _span = crate::profile::span(|| "add".into());
    binary_on_gpu("add", Binary::Add, a, b)
        .or_else(|| fast::add(a, b))
        .unwrap_or_else(|| zip_map(a, b, |a, b| a + b))
}

/// `relu(a + b)`: the end of a residual block, in one pass (the `add_relu_forward` kernel on a
/// GPU; on the CPU exactly [`add`] then [`relu_forward`]).
pub fn add_relu(a: &Tensor, b: &Tensor) -> Tensor {
    let _span = crate::profile::span(|| "add+relu".into());
    binary_on_gpu("add_relu", Binary::AddRelu, a, b)
        .or_else(|| fast::add_relu(a, b))
        .unwrap_or_else(|| relu_forward(&add(a, b)))
}

/// `a += b`, for summing gradients that meet at a fork.
pub fn add_assign(a: &mut Tensor, b: &Tensor) {
    let _span = crate::profile::span(|| "add_assign".into());
    assert_eq!(a.shape(), b.shape(), "elementwise shapes differ");
    if let Some(gpu) = cuda_of("add_assign", &[&*a, b]) {
        let r = cuda::accumulate(&gpu, &mut a.cu_mut().as_view_mut(), &b.cu().as_view());
        check("add_assign", r);
        return;
    }
    if fast::add_assign(a, b) {
        return;
    }
    a.data_mut()
        .par_chunks_mut(CHUNK)
        .zip(b.data().par_chunks(CHUNK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, dot, rand_tensor, rng};

    #[test]
    fn relu_values_and_gradient() {
        let x = Tensor::from_vec(&[1, 1, 1, 4], vec![-2.0, 0.0, 0.5, 3.0]);
        let y = relu_forward(&x);
        assert_eq!(y.data(), &[0.0, 0.0, 0.5, 3.0]);
        let dy = Tensor::from_vec(&[1, 1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(relu_backward(&dy, &y).data(), &[0.0, 0.0, 3.0, 4.0]);
        // Finite differences away from the kink (rand_tensor keeps |x| ≥ 0.1 > h).
        let mut r = rng(7);
        let x = rand_tensor(&mut r, &[3, 2, 5, 7]);
        let probe = rand_tensor(&mut r, &[3, 2, 5, 7]);
        let dx = relu_backward(&probe, &relu_forward(&x));
        check_grad("relu dx", &x, &dx, |x| dot(&relu_forward(x), &probe));
    }

    #[test]
    fn add_and_accumulate() {
        let a = Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let b = Tensor::from_vec(&[2, 2], vec![0.5, -2.0, 1.0, 0.0]);
        assert_eq!(add(&a, &b).data(), &[1.5, 0.0, 4.0, 4.0]);
        let mut c = a.clone();
        add_assign(&mut c, &b);
        assert_eq!(c, add(&a, &b));
    }

    /// NaN reaches the output of every ReLU, as in PyTorch, instead of becoming 0; `-0.0`
    /// stays; where the output is NaN the gradient passes (`threshold_backward`).
    #[test]
    fn nan_propagates_through_relu_and_add_relu() {
        let x = Tensor::from_vec(&[1, 1, 1, 5], vec![f32::NAN, -0.0, -1.0, 2.0, f32::NAN]);
        let zero = Tensor::from_vec(&[1, 1, 1, 5], vec![0.0, -0.0, 0.5, 0.0, -3.0]);
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let want = [f32::NAN, -0.0, 0.0, 2.0, f32::NAN].map(f32::to_bits);
        assert_eq!(bits(&relu_forward(&x)), want);
        assert_eq!(bits(&add_relu(&x, &zero)), want);
        let dy = Tensor::from_vec(&[1, 1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let dx = relu_backward(&dy, &relu_forward(&x));
        assert_eq!(dx.data(), &[1.0, 0.0, 0.0, 4.0, 5.0]);
    }

    /// Every path this CPU has (AVX-512, AVX2, each run in turn), every op equals its scalar
    /// definition bit for bit, over several parallel chunks and a ragged end, with zeros,
    /// negative zeros and a NaN among the values.
    #[test]
    fn ops_equal_their_definitions_bit_for_bit() {
        for k in crate::cpu::simd_bodies() {
            crate::cpu::with_kernels(k, ops_equal_their_definitions);
        }
    }

    fn ops_equal_their_definitions() {
        let mut r = rng(13);
        let n = 3 * CHUNK + 37;
        let mut a = rand_tensor(&mut r, &[n]);
        let b = rand_tensor(&mut r, &[n]);
        a.data_mut()[..4].copy_from_slice(&[0.0, -0.0, f32::NAN, 1.5]);
        let same = |t: &Tensor, f: &dyn Fn(usize) -> f32| {
            assert!(t
                .data()
                .iter()
                .enumerate()
                .all(|(i, v)| v.to_bits() == f(i).to_bits()));
        };
        let (ad, bd) = (a.data(), b.data());
        same(&add_relu(&a, &b), &|i| relu(ad[i] + bd[i]));
        same(&add(&a, &b), &|i| ad[i] + bd[i]);
        same(&relu_forward(&a), &|i| relu(ad[i]));
        same(&relu_backward(&b, &a), &|i| relu_grad(bd[i], ad[i]));
        let mut c = a.clone();
        add_assign(&mut c, &b);
        same(&c, &|i| ad[i] + bd[i]);
    }
}
