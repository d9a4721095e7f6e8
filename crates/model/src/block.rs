//! Residual blocks. Forward: `y = relu(F(x) + shortcut(x))`. Backward splits `dy` after the
//! final ReLU between the residual branch `F` and the shortcut, and sums the two `dx`.

use crate::config::{BlockKind, ShortcutKind};
use crate::layers::{BatchNorm2d, Conv2d};
use crate::{Mode, Param};
use rand::Rng;
use tensor::elementwise::{add_assign, relu_backward};
use tensor::shortcut::{pad_shortcut_backward, pad_shortcut_forward};
use tensor::{Device, Tensor};

/// Conv + BN + (optionally) ReLU: the unit every block is made of.
#[derive(Clone, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
    relu: bool,
    out: Option<Tensor>,
}

impl ConvBn {
    /// `conv_name`/`bn_name` follow the peer's module names (`c1`/`b1`, `stem.0`/`stem.1`, ...).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conv_name: &str,
        bn_name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        relu: bool,
        rng: &mut impl Rng,
    ) -> Self {
        ConvBn {
            conv: Conv2d::new(conv_name, cin, cout, k, stride, rng),
            bn: BatchNorm2d::new(bn_name, cout),
            relu,
            out: None,
        }
    }

    /// conv, then BN and (if `relu`) ReLU in one fused pass.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        let y = self
            .bn
            .forward_relu(&self.conv.forward(x, mode), mode, self.relu);
        if self.relu && mode == Mode::Train {
            self.out = Some(y.clone()); // ReLU's backward needs its output
        }
        y
    }

    /// conv, then `relu(BN(·) + residual)` in one pass: the last unit of a block (one without
    /// its own ReLU; its backward is [`ConvBn::backward`] given `dy` through the block's ReLU).
    pub fn forward_add_relu(&mut self, x: &Tensor, residual: &Tensor, mode: Mode) -> Tensor {
        assert!(!self.relu, "forward_add_relu on a unit with its own ReLU");
        let y = self.conv.forward(x, mode);
        self.bn.forward_add_relu(&y, residual, mode)
    }

    pub fn backward(&mut self, dy: &Tensor, need_dx: bool) -> Option<Tensor> {
        let out = if self.relu {
            let out = self
                .out
                .take()
                .expect("ConvBn::backward without a training forward pass");
            Some(out)
        } else {
            None
        };
        let d = self.bn.backward_relu(dy, out.as_ref());
        self.conv.backward(&d, need_dx)
    }

    /// Moves the conv and BN state to `device`; drops what was saved for backward.
    pub fn to_device(&mut self, device: &Device) -> tensor::Result<()> {
        self.out = None;
        self.conv.to_device(device)?;
        self.bn.to_device(device)
    }

    pub fn params_mut(&mut self) -> [&mut Param; 3] {
        [&mut self.conv.weight, &mut self.bn.gamma, &mut self.bn.beta]
    }
}

/// The path a block's input takes to its output.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per block; boxing would change the public type
pub enum Shortcut {
    Identity,
    /// Option A (zero-padded channels, subsampled): `x_shape` kept for backward.
    Pad {
        cout: usize,
        stride: usize,
        x_shape: Vec<usize>,
    },
    /// Option B: 1x1 conv + BN (`sc.0`, `sc.1`).
    Conv(ConvBn),
}

impl Shortcut {
    fn new(
        prefix: &str,
        kind: ShortcutKind,
        cin: usize,
        cout: usize,
        stride: usize,
        rng: &mut impl Rng,
    ) -> Self {
        match kind {
            _ if cin == cout && stride == 1 => Shortcut::Identity,
            ShortcutKind::Pad => Shortcut::Pad {
                cout,
                stride,
                x_shape: vec![],
            },
            ShortcutKind::Conv => Shortcut::Conv(ConvBn::new(
                &format!("{prefix}.sc.0"),
                &format!("{prefix}.sc.1"),
                cin,
                cout,
                1,
                stride,
                false,
                rng,
            )),
        }
    }

    fn move_to(&mut self, device: &Device) -> tensor::Result<()> {
        match self {
            Shortcut::Conv(cb) => cb.to_device(device),
            Shortcut::Identity | Shortcut::Pad { .. } => Ok(()),
        }
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        match self {
            Shortcut::Identity => x.clone(),
            Shortcut::Pad {
                cout,
                stride,
                x_shape,
            } => {
                *x_shape = x.shape().to_vec();
                pad_shortcut_forward(x, *cout, *stride)
            }
            Shortcut::Conv(cb) => cb.forward(x, mode),
        }
    }

    fn backward(&mut self, dy: &Tensor) -> Tensor {
        match self {
            Shortcut::Identity => dy.clone(),
            Shortcut::Pad {
                stride, x_shape, ..
            } => pad_shortcut_backward(dy, x_shape, *stride),
            Shortcut::Conv(cb) => cb.backward(dy, true).expect("dx requested"),
        }
    }
}

/// A `BasicBlock` (c1-b1-relu-c2-b2) or a `Bottleneck` (c1-b1-relu-c2-b2-relu-c3-b3), plus
/// the shortcut. The stride sits on the 3x3 convolution in both.
#[derive(Clone, Debug)]
pub struct Block {
    pub kind: BlockKind,
    pub units: Vec<ConvBn>,
    pub shortcut: Shortcut,
    pub stride: usize,
    pub out_channels: usize,
    out: Option<Tensor>,
}

impl Block {
    /// `prefix` is the block's name (`layers.{i}`); `width` the stage width.
    pub fn new(
        prefix: &str,
        kind: BlockKind,
        shortcut: ShortcutKind,
        cin: usize,
        width: usize,
        stride: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let n = |i: usize| (format!("{prefix}.c{i}"), format!("{prefix}.b{i}"));
        let (units, cout) = match kind {
            BlockKind::Basic => {
                let ((c1, b1), (c2, b2)) = (n(1), n(2));
                let u = vec![
                    ConvBn::new(&c1, &b1, cin, width, 3, stride, true, rng),
                    ConvBn::new(&c2, &b2, width, width, 3, 1, false, rng),
                ];
                (u, width)
            }
            BlockKind::Bottleneck => {
                let ((c1, b1), (c2, b2), (c3, b3)) = (n(1), n(2), n(3));
                let u = vec![
                    ConvBn::new(&c1, &b1, cin, width, 1, 1, true, rng),
                    ConvBn::new(&c2, &b2, width, width, 3, stride, true, rng),
                    ConvBn::new(&c3, &b3, width, 4 * width, 1, 1, false, rng),
                ];
                (u, 4 * width)
            }
        };
        let shortcut = Shortcut::new(prefix, shortcut, cin, cout, stride, rng);
        Block {
            kind,
            units,
            shortcut,
            stride,
            out_channels: cout,
            out: None,
        }
    }

    /// Moves every unit and the shortcut to `device`; drops what was saved for backward.
    pub fn to_device(&mut self, device: &Device) -> tensor::Result<()> {
        self.out = None;
        for u in &mut self.units {
            u.to_device(device)?;
        }
        self.shortcut.move_to(device)
    }

    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Tensor {
        let (last, first) = self.units.split_last_mut().expect("a block has units");
        let mut h = x.clone();
        for u in first {
            h = u.forward(&h, mode);
        }
        // The last unit's BN, the residual add and the ReLU in one pass.
        let residual = self.shortcut.forward(x, mode);
        let y = last.forward_add_relu(&h, &residual, mode);
        self.out = (mode == Mode::Train).then(|| y.clone());
        y
    }

    pub fn backward(&mut self, dy: &Tensor) -> Tensor {
        let out = self
            .out
            .take()
            .expect("Block::backward without a training forward pass");
        let d = relu_backward(dy, &out);
        let mut dx = self.units.iter_mut().rev().fold(d.clone(), |g, u| {
            u.backward(&g, true).expect("dx requested")
        });
        add_assign(&mut dx, &self.shortcut.backward(&d));
        dx
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut ps: Vec<&mut Param> = self.units.iter_mut().flat_map(|u| u.params_mut()).collect();
        if let Shortcut::Conv(cb) = &mut self.shortcut {
            ps.extend(cb.params_mut());
        }
        ps
    }

    /// Every convolution of the block (units, then the shortcut's).
    pub fn convs_mut(&mut self) -> Vec<&mut Conv2d> {
        let mut convs: Vec<&mut Conv2d> = self.units.iter_mut().map(|u| &mut u.conv).collect();
        if let Shortcut::Conv(cb) = &mut self.shortcut {
            convs.push(&mut cb.conv);
        }
        convs
    }

    pub fn bns_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        let mut bns: Vec<&mut BatchNorm2d> = self.units.iter_mut().map(|u| &mut u.bn).collect();
        if let Shortcut::Conv(cb) = &mut self.shortcut {
            bns.push(&mut cb.bn);
        }
        bns
    }
}
