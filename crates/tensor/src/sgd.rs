//! SGD with momentum, weight decay and optional Nesterov: PyTorch's `torch.optim.SGD`
//! (dampening 0). With `g' = g + wd·p` and `buf = μ·buf + g'` (buf starts at 0, which equals
//! PyTorch's first-step copy), the step is `p -= lr·buf`, or `p -= lr·(g' + μ·buf)` with Nesterov.

//!
//! [`sgd_update`] works on host slices (the CPU reference); [`update`] takes tensors and
//! dispatches on their device. On a GPU it launches `sgd.cu`'s `sgd_step` once per parameter
//! tensor, with a one-segment table (cached per length and weight decay, so nothing is
//! uploaded in steady state). The fused all-parameter launch needs the parameters in one flat
//! device buffer, which is the plan-once work's job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::{check, cuda_of, Tensor};
use kernels::launch::{self as kl, SgdSegments, SgdTable};
use kernels::Gpu;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    /// 0 for the tensors exempt from decay (BN parameters and biases, when so configured).
    pub weight_decay: f32,
    pub nesterov: bool,
}

pub fn sgd_update(param: &mut [f32], grad: &[f32], momentum_buf: &mut [f32], cfg: SgdConfig) {
    assert!(
        param.len() == grad.len() && param.len() == momentum_buf.len(),
        "sgd: lengths differ"
    );
    for ((p, &g), b) in param.iter_mut().zip(grad).zip(momentum_buf.iter_mut()) {
        let g = g + cfg.weight_decay * *p;
        *b = cfg.momentum * *b + g;
        let step = if cfg.nesterov {
            g + cfg.momentum * *b
        } else {
            *b
        };
        *p -= cfg.lr * step;
    }
}

/// Segment tables `[0, len]` with one weight decay, per (GPU, len, decay bits). Each entry
/// holds its `Arc<Gpu>`, so a cached pointer can never be reused by another device.
type TableCache = HashMap<(usize, usize, u32), (Arc<Gpu>, Arc<SgdTable>)>;

fn one_segment_table(op: &str, gpu: &Arc<Gpu>, len: usize, weight_decay: f32) -> Arc<SgdTable> {
    static CACHE: OnceLock<Mutex<TableCache>> = OnceLock::new();
    let key = (Arc::as_ptr(gpu) as usize, len, weight_decay.to_bits());
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((_, t)) = cache.get(&key) {
        return Arc::clone(t);
    }
    let segments = check(op, SgdSegments::new(&[(len, weight_decay)]));
    let table = Arc::new(check(op, SgdTable::new(gpu, &segments)));
    cache.insert(key, (Arc::clone(gpu), Arc::clone(&table)));
    table
}

/// [`sgd_update`] on tensors of one device: `param`, `grad` and `momentum_buf` alike.
pub fn update(param: &mut Tensor, grad: &Tensor, momentum_buf: &mut Tensor, cfg: SgdConfig) {
    const OP: &str = "sgd update";
    let Some(gpu) = cuda_of(OP, &[&*param, grad, &*momentum_buf]) else {
        return sgd_update(param.data_mut(), grad.data(), momentum_buf.data_mut(), cfg);
    };
    assert!(
        param.len() == grad.len() && param.len() == momentum_buf.len(),
        "sgd: lengths differ"
    );
    if param.is_empty() {
        return;
    }
    let table = one_segment_table(OP, &gpu, param.len(), cfg.weight_decay);
    let r = kl::sgd_step(
        &gpu,
        &table,
        &mut param.cu_mut().as_view_mut(),
        &grad.cu().as_view(),
        &mut momentum_buf.cu_mut().as_view_mut(),
        cfg.lr,
        cfg.momentum,
        cfg.nesterov,
    );
    check(OP, r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_by_hand() {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: false,
        };
        let (mut p, mut buf) = (vec![1.0f32], vec![0.0f32]);
        sgd_update(&mut p, &[0.5], &mut buf, cfg);
        // g' = 0.5 + 0.01 = 0.51; buf = 0.51; p = 1 - 0.051 = 0.949
        assert!((buf[0] - 0.51).abs() < 1e-7 && (p[0] - 0.949).abs() < 1e-7);
        sgd_update(&mut p, &[0.5], &mut buf, cfg);
        // g' = 0.5 + 0.00949 = 0.50949; buf = 0.459 + 0.50949 = 0.96849; p = 0.949 - 0.096849
        assert!((buf[0] - 0.96849).abs() < 1e-6 && (p[0] - 0.852151).abs() < 1e-6);
    }

    #[test]
    fn nesterov_by_hand() {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: true,
        };
        let (mut p, mut buf) = (vec![1.0f32], vec![1.0f32]);
        sgd_update(&mut p, &[0.5], &mut buf, cfg);
        // buf = 0.9 + 0.5 = 1.4; step = 0.5 + 0.9·1.4 = 1.76; p = 1 - 0.176
        assert!((buf[0] - 1.4).abs() < 1e-6 && (p[0] - 0.824).abs() < 1e-6);
    }
}
