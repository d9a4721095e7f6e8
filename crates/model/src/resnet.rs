//! The network: a 3x3 stem (conv-BN-ReLU), stages of residual blocks, global average pool,
//! and a fully connected classifier. Names mirror the PyTorch peer's `state_dict`.

use crate::block::{Block, ConvBn, Shortcut};
use crate::config::{BlockKind, ResNetConfig};
use crate::layers::{BatchNorm2d, Linear};
use crate::{Mode, Param};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor::pool::{global_avg_pool_backward, global_avg_pool_forward};
use tensor::{Device, Precision, Tensor};

#[derive(Clone, Debug)]
pub struct ResNet {
    pub config: ResNetConfig,
    pub stem: ConvBn,
    pub blocks: Vec<Block>,
    pub fc: Linear,
    pooled_from: Vec<usize>,
}

/// One line of the model summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub name: String,
    pub what: String,
    /// Output shape of one sample `[c, h, w]` (or `[classes]`) for a 32x32 input.
    pub out_shape: Vec<usize>,
    pub params: usize,
}

impl ResNet {
    /// Builds and initialises the network; the same seed gives the same weights.
    pub fn new(config: &ResNetConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w0 = config.widths[0];
        let stem = ConvBn::new("stem.0", "stem.1", 3, w0, 3, 1, true, &mut rng);
        let mut blocks = Vec::new();
        let mut cin = w0;
        for (stage, (&n, &width)) in config.blocks.iter().zip(&config.widths).enumerate() {
            for j in 0..n {
                let stride = if j == 0 && stage > 0 { 2 } else { 1 };
                let name = format!("layers.{}", blocks.len());
                let b = Block::new(
                    &name,
                    config.block,
                    config.shortcut,
                    cin,
                    width,
                    stride,
                    &mut rng,
                );
                cin = b.out_channels;
                blocks.push(b);
            }
        }
        let fc = Linear::new("fc", cin, config.num_classes, &mut rng);
        ResNet {
            config: config.clone(),
            stem,
            blocks,
            fc,
            pooled_from: vec![],
        }
    }

    /// Moves every parameter (value, gradient, momentum) and BN running statistic to
    /// `device`, and drops activations saved for backward (so call it between steps).
    /// `forward` then expects its input on that device and returns logits there. `Err` when a
    /// copy or allocation fails (e.g. out of GPU memory); the model may then be split across
    /// devices, so move it again (e.g. back to `Device::Cpu`) before using it.
    pub fn to_device(&mut self, device: &Device) -> tensor::Result<()> {
        self.stem.to_device(device)?;
        for b in &mut self.blocks {
            b.to_device(device)?;
        }
        self.fc.to_device(device)
    }

    /// Sets the arithmetic of every convolution: [`Precision::Bf16`] for bf16 operands on the
    /// tensor cores (and their CPU twin), [`Precision::Fp32`] (the default) for the reference.
    /// Weights, BN, the classifier and the optimizer stay f32 either way.
    pub fn set_precision(&mut self, precision: Precision) {
        self.stem.conv.precision = precision;
        for b in &mut self.blocks {
            for c in b.convs_mut() {
                c.precision = precision;
            }
        }
    }

    /// The arithmetic of the convolutions (see [`ResNet::set_precision`]).
    pub fn precision(&self) -> Precision {
        self.stem.conv.precision
    }

    /// Where the parameters are (those of the stem's convolution; `to_device` moves all).
    pub fn device(&self) -> Device {
        self.stem.conv.weight.value.device()
    }

    /// `x` `[n, 3, h, w]` -> logits `[n, classes]`.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        let mut h = self.stem.forward(x, mode);
        for b in &mut self.blocks {
            h = b.forward(&h, mode);
        }
        self.pooled_from = h.shape().to_vec();
        self.fc.forward(&global_avg_pool_forward(&h), mode)
    }

    /// Back-propagates `dlogits` through the last training forward pass, accumulating every
    /// parameter's gradient. (The input image needs no gradient, so none is computed.)
    pub fn backward(&mut self, dlogits: &Tensor) {
        let dpool = self.fc.backward(dlogits);
        let mut d = global_avg_pool_backward(&dpool, &self.pooled_from);
        for b in self.blocks.iter_mut().rev() {
            d = b.backward(&d);
        }
        self.stem.backward(&d, false);
    }

    /// Every trainable parameter, in a fixed order (stem, blocks, fc).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut ps: Vec<&mut Param> = self.stem.params_mut().into_iter().collect();
        for b in &mut self.blocks {
            ps.extend(b.params_mut());
        }
        ps.push(&mut self.fc.weight);
        ps.push(&mut self.fc.bias);
        ps
    }

    pub fn bns_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        let mut bns = vec![&mut self.stem.bn];
        for b in &mut self.blocks {
            bns.extend(b.bns_mut());
        }
        bns
    }

    /// Sets every parameter's gradient to zero (one launch on a GPU).
    pub fn zero_grad(&mut self) {
        let mut grads: Vec<&mut Tensor> =
            self.params_mut().into_iter().map(|p| &mut p.grad).collect();
        tensor::sgd::zero_all(&mut grads);
    }

    /// Trainable parameters (BN's running statistics are buffers, not counted).
    pub fn num_params(&mut self) -> usize {
        self.params_mut().iter().map(|p| p.value.len()).sum()
    }

    /// Layers, per-sample output shapes for a 32x32 input, and parameter counts.
    pub fn summary(&mut self) -> Vec<SummaryRow> {
        let count = |ps: Vec<&mut Param>| ps.iter().map(|p| p.value.len()).sum::<usize>();
        let mut side = 32;
        let w0 = self.config.widths[0];
        let mut rows = vec![SummaryRow {
            name: "stem".into(),
            what: format!("conv3x3(3→{w0}) BN ReLU"),
            out_shape: vec![w0, side, side],
            params: count(self.stem.params_mut().into_iter().collect()),
        }];
        let mut cin = w0;
        for (i, b) in self.blocks.iter_mut().enumerate() {
            side = side.div_ceil(b.stride);
            let kind = match b.kind {
                BlockKind::Basic => "BasicBlock",
                BlockKind::Bottleneck => "Bottleneck",
            };
            let sc = match &b.shortcut {
                Shortcut::Identity => "identity",
                Shortcut::Pad { .. } => "pad (A)",
                Shortcut::Conv(_) => "conv1x1+BN (B)",
            };
            rows.push(SummaryRow {
                name: format!("layers.{i}"),
                what: format!(
                    "{kind}({cin}→{}, stride {}), shortcut {sc}",
                    b.out_channels, b.stride
                ),
                out_shape: vec![b.out_channels, side, side],
                params: count(b.params_mut()),
            });
            cin = b.out_channels;
        }
        rows.push(SummaryRow {
            name: "pool".into(),
            what: "global average pool".into(),
            out_shape: vec![cin],
            params: 0,
        });
        let classes = self.config.num_classes;
        rows.push(SummaryRow {
            name: "fc".into(),
            what: format!("linear({cin}→{classes})"),
            out_shape: vec![classes],
            params: self.fc.weight.value.len() + self.fc.bias.value.len(),
        });
        rows
    }

    /// The summary as text, ending with the line `parameters: N`.
    pub fn summary_text(&mut self) -> String {
        let rows = self.summary();
        let mut s = format!(
            "{} ({} classes)\n",
            self.config.name(),
            self.config.num_classes
        );
        s += &format!(
            "{:<11} {:<58} {:>14} {:>12}\n",
            "layer", "what", "output", "params"
        );
        for r in &rows {
            let shape = r
                .out_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            s += &format!(
                "{:<11} {:<58} {:>14} {:>12}\n",
                r.name, r.what, shape, r.params
            );
        }
        s += &format!(
            "parameters: {}\n",
            rows.iter().map(|r| r.params).sum::<usize>()
        );
        s
    }
}
