//! SGD over all of a model's parameters (the update itself is `tensor::sgd`).

use crate::Param;
use tensor::sgd::{self, SgdConfig};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// Exempt BN's γ/β and biases from weight decay (the PyTorch peer's recipe); the paper
    /// and `torch.optim.SGD`'s default decay everything.
    pub decay_weights_only: bool,
}

impl Sgd {
    /// One update with learning rate `lr` from the accumulated gradients.
    pub fn step<'a>(&self, params: impl IntoIterator<Item = &'a mut Param>, lr: f32) {
        for p in params {
            let weight_decay = if self.decay_weights_only && !p.is_weight {
                0.0
            } else {
                self.weight_decay
            };
            let cfg = SgdConfig {
                lr,
                momentum: self.momentum,
                weight_decay,
                nesterov: self.nesterov,
            };
            // On the parameters' device (the CPU path is `sgd_update` on the host slices).
            sgd::update(&mut p.value, &p.grad, &mut p.momentum, cfg);
        }
    }
}
