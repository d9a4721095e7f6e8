//! How much memory a model needs, worked out from its configuration alone: nothing is
//! allocated, so a command line can refuse a model that cannot fit (`--width 1000000`) with
//! a clear message instead of dying in the allocator.
//!
//! Figures are in floats (f32) and kept as `f64`, so absurd sizes count without overflowing.
//! The parameter count is exact (tested against [`crate::ResNet::num_params`]); activations are
//! an estimate of what a training step keeps for backward, from the layers' code:
//!
//! - every `Conv2d` keeps its input, every `BatchNorm2d` its input (the conv's output), a
//!   BN+ReLU its output, a block its output, the classifier its pooled input;
//! - on the CPU each kept tensor is a copy (`Tensor::clone` copies host memory); on a GPU
//!   clones share one buffer, so a conv's kept input is the previous layer's kept output;
//! - on top of that, while backward runs, a few gradients of the largest activation's size are
//!   alive at once ([`TRANSIENT_ACTIVATIONS`]), and the CPU convolution has per-thread im2col
//!   buffers and per-chunk weight-gradient partials ([`Footprint::cpu_workspace`]).

use crate::config::{BlockKind, ResNetConfig, ShortcutKind};

/// Activations of the largest size alive beside the kept ones during backward: the incoming
/// gradient, the outgoing one, and the op's output being written.
pub const TRANSIENT_ACTIVATIONS: f64 = 3.0;

/// The CPU weight-gradient GEMM keeps one partial weight gradient per reduction chunk
/// (`tensor::REDUCE_CHUNKS`).
const WEIGHT_GRAD_PARTIALS: f64 = 16.0;

/// Memory of a model, in floats.
#[derive(Clone, Debug, PartialEq)]
pub struct Footprint {
    /// Trainable parameters (also the size of the gradients and of the momentum buffers).
    pub params: f64,
    /// BatchNorm running statistics (two floats per channel).
    pub buffers: f64,
    /// The classifier's parameters (part of `params`): large with many classes.
    pub classifier: f64,
    /// Floats a training step keeps for backward per image, when clones copy (the CPU).
    pub kept_per_image_copied: f64,
    /// The same when clones share their buffer (a GPU).
    pub kept_per_image_shared: f64,
    /// The largest single activation of one image.
    pub largest_per_image: f64,
    /// The largest im2col buffer of one image (a 3x3 conv's `cin·9 × out pixels`).
    pub largest_im2col: f64,
    /// The largest convolution weight.
    pub largest_conv_weight: f64,
}

/// One layer's shape while walking the network: channels and side of its output.
struct Walk {
    f: Footprint,
}

impl Walk {
    fn conv(&mut self, cin: f64, cout: f64, k: f64, side_in: f64, side_out: f64) {
        self.f.params += cin * cout * k * k;
        self.f.largest_conv_weight = self.f.largest_conv_weight.max(cin * cout * k * k);
        if k > 1.0 {
            self.f.largest_im2col = self.f.largest_im2col.max(cin * k * k * side_out * side_out);
        }
        // The conv keeps its input: a copy on the CPU, shared on a GPU (it is the previous
        // layer's kept output there).
        self.f.kept_per_image_copied += cin * side_in * side_in;
        self.note(cout * side_out * side_out);
    }

    /// BN (+ ReLU) after a conv with `c` channels at `side`: keeps its input (the conv's
    /// output) and, with ReLU, its output.
    fn bn(&mut self, c: f64, side: f64, relu: bool) {
        self.f.params += 2.0 * c;
        self.f.buffers += 2.0 * c;
        let a = c * side * side;
        let kept = if relu { 2.0 * a } else { a };
        self.f.kept_per_image_copied += kept;
        self.f.kept_per_image_shared += kept;
    }

    fn note(&mut self, activation: f64) {
        self.f.largest_per_image = self.f.largest_per_image.max(activation);
    }
}

impl Footprint {
    /// Walks `config` for a 32x32 input.
    pub fn of(config: &ResNetConfig) -> Footprint {
        let mut w = Walk {
            f: Footprint {
                params: 0.0,
                buffers: 0.0,
                classifier: 0.0,
                kept_per_image_copied: 0.0,
                kept_per_image_shared: 0.0,
                largest_per_image: 3.0 * 32.0 * 32.0,
                largest_im2col: 0.0,
                largest_conv_weight: 0.0,
            },
        };
        let mut side = 32.0;
        let w0 = config.widths[0] as f64;
        w.conv(3.0, w0, 3.0, side, side);
        w.bn(w0, side, true);
        let mut cin = w0;
        for (stage, (&n, &width)) in config.blocks.iter().zip(&config.widths).enumerate() {
            let width = width as f64;
            for j in 0..n {
                let stride = if j == 0 && stage > 0 { 2.0 } else { 1.0 };
                let out_side = (side / stride).ceil();
                let cout = match config.block {
                    BlockKind::Basic => {
                        w.conv(cin, width, 3.0, side, out_side);
                        w.bn(width, out_side, true);
                        w.conv(width, width, 3.0, out_side, out_side);
                        w.bn(width, out_side, false);
                        width
                    }
                    BlockKind::Bottleneck => {
                        w.conv(cin, width, 1.0, side, side);
                        w.bn(width, side, true);
                        w.conv(width, width, 3.0, side, out_side);
                        w.bn(width, out_side, true);
                        w.conv(width, 4.0 * width, 1.0, out_side, out_side);
                        w.bn(4.0 * width, out_side, false);
                        4.0 * width
                    }
                };
                let reshaped = cin != cout || stride != 1.0;
                if reshaped && config.shortcut == ShortcutKind::Conv {
                    w.conv(cin, cout, 1.0, side, out_side);
                    w.bn(cout, out_side, false);
                }
                // The block's output (kept for its ReLU's backward; on a GPU also the next
                // conv's kept input).
                let out = cout * out_side * out_side;
                w.f.kept_per_image_copied += out;
                w.f.kept_per_image_shared += out;
                w.note(out);
                cin = cout;
                side = out_side;
            }
        }
        // Global average pool, then the classifier keeps its input (tiny).
        let classes = config.num_classes as f64;
        w.f.classifier = cin * classes + classes;
        w.f.params += w.f.classifier;
        w.f.kept_per_image_copied += cin;
        w.f.kept_per_image_shared += cin;
        w.f
    }

    /// Floats of activations a training step needs at `batch` images: the kept tensors, a
    /// few of the largest alive at once during backward, and the input batch.
    pub fn training_activations(&self, batch: f64, clones_copy: bool) -> f64 {
        let kept = if clones_copy {
            self.kept_per_image_copied
        } else {
            self.kept_per_image_shared
        };
        batch * (kept + TRANSIENT_ACTIVATIONS * self.largest_per_image + 3.0 * 32.0 * 32.0)
    }

    /// Floats of activations an evaluation pass needs at `batch` images (nothing is kept:
    /// a layer's input and output, and the input batch).
    pub fn eval_activations(&self, batch: f64) -> f64 {
        batch * (2.0 * self.largest_per_image + 3.0 * 32.0 * 32.0)
    }

    /// Floats of the CPU convolution's scratch: an im2col buffer per thread and the weight
    /// gradient's per-chunk partials.
    pub fn cpu_workspace(&self, threads: f64) -> f64 {
        threads * self.largest_im2col + WEIGHT_GRAD_PARTIALS * self.largest_conv_weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEPTHS;
    use crate::ResNet;

    #[test]
    fn the_parameter_count_is_exact_for_every_depth_and_shortcut() {
        for depth in DEPTHS {
            for (width, shortcut, classes) in [
                (None, None, 10),
                (Some(3), Some(ShortcutKind::Conv), 100),
                (Some(5), Some(ShortcutKind::Pad), 7),
            ] {
                if depth == 1202 && width.is_none() {
                    continue; // 19M parameters: the same walk as 110, only slower to build
                }
                let c = ResNetConfig::from_depth(depth, width, shortcut, classes).unwrap();
                let f = Footprint::of(&c);
                let mut m = ResNet::new(&c, 0);
                assert_eq!(f.params, m.num_params() as f64, "{}", c.name());
                let buffers: usize = m.bns_mut().iter().map(|b| 2 * b.running_mean.len()).sum();
                assert_eq!(f.buffers, buffers as f64, "{}", c.name());
            }
        }
        // The reference table's large ones, without building them.
        let count = |d| Footprint::of(&ResNetConfig::from_depth(d, None, None, 10).unwrap()).params;
        assert_eq!(count(1202), 19_421_274.0);
        assert_eq!(count(152), 58_156_618.0);
    }

    #[test]
    fn absurd_sizes_count_without_overflow() {
        let c = ResNetConfig::from_depth(20, Some(1_000_000), None, 10).unwrap();
        let f = Footprint::of(&c);
        // 3x3 convs of w·w·9 floats: six per stage at widths 1e6, 2e6, 4e6, each stage's
        // first taking half as many channels in: 9e12·(6 + 4·5.5 + 16·5.5) ≈ 1.04e15.
        assert!(f.params > 1.03e15 && f.params < 1.05e15, "{}", f.params);
        assert!(f.training_activations(1e12, true).is_finite());
    }

    #[test]
    fn resnet20_activations_match_a_hand_count() {
        // ResNet-20 per image, CPU: the stem keeps its input (3·1024), BN input and output
        // (2·16·1024); a stride-1 block at w·s² = A keeps c1's input, BN1's input and output,
        // c2's input, BN2's input, the block output: 6A; a downsampling block keeps its input
        // X (at the previous stage's size) and 5A. The classifier keeps 64 floats.
        let c = ResNetConfig::from_depth(20, None, None, 10).unwrap();
        let f = Footprint::of(&c);
        let a = [16.0 * 1024.0, 32.0 * 256.0, 64.0 * 64.0];
        let stem = 3.0 * 1024.0 + 2.0 * a[0];
        let stage1 = 3.0 * 6.0 * a[0];
        let stage = |i: usize| a[i - 1] + 5.0 * a[i] + 2.0 * 6.0 * a[i];
        assert_eq!(
            f.kept_per_image_copied,
            stem + stage1 + stage(1) + stage(2) + 64.0
        );
        // Shared: per block conv1's output, BN1+ReLU's, conv2's, the block's: 4A.
        let shared = 2.0 * a[0] + 9.0 * 4.0 * (a[0] + a[1] + a[2]) / 3.0 + 64.0;
        assert_eq!(f.kept_per_image_shared, shared);
        assert_eq!(f.largest_per_image, a[0]);
        assert_eq!(f.largest_im2col, 16.0 * 9.0 * 1024.0);
        assert_eq!(f.largest_conv_weight, 64.0 * 64.0 * 9.0);
    }
}
