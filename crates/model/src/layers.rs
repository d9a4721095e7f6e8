//! The layers with parameters. Each keeps, during a training forward pass, exactly what its
//! backward pass needs, and accumulates its parameters' gradients in `backward`.

use crate::{Mode, Param};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use tensor::batchnorm::{self, BnStats};
use tensor::{conv, linear, Device, Precision, Tensor};

/// A bias-free convolution (3x3 pad 1, or 1x1), stride 1 or 2.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Param,
    pub stride: usize,
    /// The arithmetic of its three GEMMs (the weight itself stays f32).
    pub precision: Precision,
    input: Option<Tensor>,
}

impl Conv2d {
    /// Kaiming normal, fan_out, ReLU gain: `std = sqrt(2 / (cout·k·k))`, as the peer's init.
    pub fn new(
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let std = (2.0 / (cout * k * k) as f64).sqrt() as f32;
        let normal = Normal::new(0.0, std).expect("finite std");
        // Allocated fallibly (too large a model is an error, not an abort), then drawn in order.
        let len = [cin, k, k].iter().try_fold(cout, |n, &d| n.checked_mul(d));
        let what = format!("initialising {name}.weight");
        let mut data = tensor::oom::host_zeros(&what, len.unwrap_or(usize::MAX));
        data.iter_mut().for_each(|v| *v = normal.sample(rng));
        let weight = Param::new(
            format!("{name}.weight"),
            Tensor::from_vec(&[cout, cin, k, k], data),
            true,
        );
        Conv2d {
            weight,
            stride,
            precision: Precision::Fp32,
            input: None,
        }
    }

    pub fn out_channels(&self) -> usize {
        self.weight.value.shape()[0]
    }

    /// Moves the weight (value, gradient, momentum) to `device`; drops any saved input.
    pub fn to_device(&mut self, device: &Device) -> tensor::Result<()> {
        self.input = None;
        self.weight.to_device(device)
    }

    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        let y = conv::conv2d_forward_with(x, &self.weight.value, self.stride, self.precision);
        self.input = (mode == Mode::Train).then(|| x.clone());
        y
    }

    /// Accumulates the weight gradient; returns `dx` unless the caller does not need it
    /// (the stem, whose input is the image).
    pub fn backward(&mut self, dy: &Tensor, need_dx: bool) -> Option<Tensor> {
        let x = self
            .input
            .take()
            .expect("Conv2d::backward without a training forward pass");
        let (stride, p) = (self.stride, self.precision);
        conv::conv2d_backward_weight_with(&x, dy, stride, &mut self.weight.grad, p);
        need_dx
            .then(|| conv::conv2d_backward_data_with(dy, &self.weight.value, x.shape(), stride, p))
    }
}

/// `BatchNorm2d` with learnable γ (init 1) and β (init 0), running statistics (init 0 and 1),
/// momentum 0.1, eps 1e-5.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    pub gamma: Param,
    pub beta: Param,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// Training forward passes seen (PyTorch's `num_batches_tracked`).
    pub num_batches_tracked: i64,
    pub name: String,
    saved: Option<(Tensor, BnStats)>,
}

impl BatchNorm2d {
    pub fn new(name: &str, c: usize) -> Self {
        BatchNorm2d {
            gamma: Param::new(format!("{name}.weight"), Tensor::full(&[c], 1.0), false),
            beta: Param::new(format!("{name}.bias"), Tensor::zeros(&[c]), false),
            running_mean: Tensor::zeros(&[c]),
            running_var: Tensor::full(&[c], 1.0),
            num_batches_tracked: 0,
            name: name.to_string(),
            saved: None,
        }
    }

    /// Moves γ, β (values, gradients, momenta) and the running statistics to `device`;
    /// drops anything saved for backward.
    pub fn to_device(&mut self, device: &Device) -> tensor::Result<()> {
        self.saved = None;
        self.gamma.to_device(device)?;
        self.beta.to_device(device)?;
        self.running_mean.move_to(device)?;
        self.running_var.move_to(device)
    }

    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        self.forward_relu(x, mode, false)
    }

    /// BN, then ReLU when `relu`, as one pass (one kernel on a GPU). Pair it with
    /// [`BatchNorm2d::backward_relu`] given this output.
    pub fn forward_relu(&mut self, x: &Tensor, mode: Mode, relu: bool) -> Tensor {
        let (g, b) = (&self.gamma.value, &self.beta.value);
        match mode {
            Mode::Train => {
                let (y, saved) = batchnorm::train_forward_relu(
                    x,
                    g,
                    b,
                    &mut self.running_mean,
                    &mut self.running_var,
                    batchnorm::BN_MOMENTUM,
                    batchnorm::BN_EPS,
                    relu,
                );
                self.num_batches_tracked += 1;
                self.saved = Some((x.clone(), saved));
                y
            }
            Mode::Eval => batchnorm::eval_forward_relu(
                x,
                g,
                b,
                &self.running_mean,
                &self.running_var,
                batchnorm::BN_EPS,
                relu,
            ),
        }
    }

    /// `relu(BN(x) + residual)`: the end of a residual block, one pass on the CPU. Its backward
    /// is [`BatchNorm2d::backward`] given `dy` already through the block's ReLU.
    pub fn forward_add_relu(&mut self, x: &Tensor, residual: &Tensor, mode: Mode) -> Tensor {
        let (g, b) = (&self.gamma.value, &self.beta.value);
        match mode {
            Mode::Train => {
                let (y, saved) = batchnorm::train_forward_add_relu(
                    x,
                    g,
                    b,
                    &mut self.running_mean,
                    &mut self.running_var,
                    batchnorm::BN_MOMENTUM,
                    batchnorm::BN_EPS,
                    residual,
                );
                self.num_batches_tracked += 1;
                self.saved = Some((x.clone(), saved));
                y
            }
            Mode::Eval => batchnorm::eval_forward_add_relu(
                x,
                g,
                b,
                &self.running_mean,
                &self.running_var,
                batchnorm::BN_EPS,
                residual,
            ),
        }
    }

    pub fn backward(&mut self, dy: &Tensor) -> Tensor {
        self.backward_relu(dy, None)
    }

    /// Backward of [`BatchNorm2d::forward_relu`]: `relu_out` is its output when it applied
    /// ReLU (whose backward then comes first, in the same kernel on a GPU).
    pub fn backward_relu(&mut self, dy: &Tensor, relu_out: Option<&Tensor>) -> Tensor {
        let (x, saved) = self
            .saved
            .take()
            .expect("BatchNorm2d::backward without a training forward pass");
        batchnorm::backward_relu(
            &x,
            dy,
            &self.gamma.value,
            &saved,
            relu_out,
            &mut self.gamma.grad,
            &mut self.beta.grad,
        )
    }

    /// The running statistics, named as in PyTorch's `state_dict`.
    pub fn buffers(&self) -> [(String, &Tensor); 2] {
        [
            (format!("{}.running_mean", self.name), &self.running_mean),
            (format!("{}.running_var", self.name), &self.running_var),
        ]
    }

    pub fn buffers_mut(&mut self) -> [(String, &mut Tensor); 2] {
        [
            (
                format!("{}.running_mean", self.name),
                &mut self.running_mean,
            ),
            (format!("{}.running_var", self.name), &mut self.running_var),
        ]
    }
}

/// The classifier: `y = x Wᵀ + b`, PyTorch's default init `U(±1/sqrt(in))` for both.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Param,
    input: Option<Tensor>,
}

impl Linear {
    pub fn new(name: &str, fin: usize, fout: usize, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (fin as f32).sqrt();
        let uniform = Uniform::new_inclusive(-bound, bound);
        let draw = |what: &str, n: usize, rng: &mut _| {
            let mut v = tensor::oom::host_zeros(&format!("initialising {name}.{what}"), n);
            v.iter_mut().for_each(|x| *x = uniform.sample(rng));
            v
        };
        let w = draw("weight", fout.saturating_mul(fin), rng);
        let b = draw("bias", fout, rng);
        Linear {
            weight: Param::new(
                format!("{name}.weight"),
                Tensor::from_vec(&[fout, fin], w),
                true,
            ),
            bias: Param::new(format!("{name}.bias"), Tensor::from_vec(&[fout], b), false),
            input: None,
        }
    }

    /// Moves weight and bias (values, gradients, momenta) to `device`; drops any saved input.
    pub fn to_device(&mut self, device: &Device) -> tensor::Result<()> {
        self.input = None;
        self.weight.to_device(device)?;
        self.bias.to_device(device)
    }

    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        let y = linear::linear_forward(x, &self.weight.value, &self.bias.value);
        self.input = (mode == Mode::Train).then(|| x.clone());
        y
    }

    pub fn backward(&mut self, dy: &Tensor) -> Tensor {
        let x = self
            .input
            .take()
            .expect("Linear::backward without a training forward pass");
        linear::linear_backward(
            dy,
            &x,
            &self.weight.value,
            &mut self.weight.grad,
            &mut self.bias.grad,
        )
    }
}
