//! SGD over all of a model's parameters (the update itself is `tensor::sgd`).

use crate::Param;
use tensor::sgd::{self, SgdParam};

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
    /// One update with learning rate `lr` from the accumulated gradients: on a GPU a single
    /// launch for all parameters, on the CPU `sgd_update` per tensor.
    pub fn step<'a>(&self, params: impl IntoIterator<Item = &'a mut Param>, lr: f32) {
        let mut all: Vec<SgdParam<'_>> = params
            .into_iter()
            .map(|p| {
                let weight_decay = if self.decay_weights_only && !p.is_weight {
                    0.0
                } else {
                    self.weight_decay
                };
                SgdParam {
                    value: &mut p.value,
                    grad: &p.grad,
                    momentum: &mut p.momentum,
                    weight_decay,
                }
            })
            .collect();
        sgd::update_all(&mut all, lr, self.momentum, self.nesterov);
    }
}
