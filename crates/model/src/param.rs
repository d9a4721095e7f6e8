//! A trainable tensor with its gradient and SGD momentum buffer.

use tensor::{Device, Tensor};

#[derive(Clone, Debug)]
pub struct Param {
    /// The name in PyTorch's `state_dict` of the equivalent model, e.g. `layers.3.c1.weight`.
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
    pub momentum: Tensor,
    /// Conv and fc weights are decayed; BN's γ, β and biases may be exempt (see `Sgd`).
    pub is_weight: bool,
}

impl Param {
    pub fn new(name: String, value: Tensor, is_weight: bool) -> Self {
        let grad = Tensor::zeros(value.shape());
        let momentum = Tensor::zeros(value.shape());
        Param {
            name,
            value,
            grad,
            momentum,
            is_weight,
        }
    }

    /// Moves value, gradient and momentum to `device` (free for those already there).
    pub fn to_device(&mut self, device: &Device) -> tensor::Result<()> {
        self.value.move_to(device)?;
        self.grad.move_to(device)?;
        self.momentum.move_to(device)
    }
}
