//! SGD with momentum, weight decay and optional Nesterov: PyTorch's `torch.optim.SGD`
//! (dampening 0). With `g' = g + wd·p` and `buf = μ·buf + g'` (buf starts at 0, which equals
//! PyTorch's first-step copy), the step is `p -= lr·buf`, or `p -= lr·(g' + μ·buf)` with Nesterov.

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
