//! The ResNet family for CIFAR, built from layers whose backward passes are written by hand.
//!
//! - [`layers`]: `Conv2d`, `BatchNorm2d`, `Linear`, each owning its parameters and what its
//!   backward pass needs from the forward pass.
//! - [`block`]: the `BasicBlock` (the seed's `ResBlock`) and the `Bottleneck`, with the
//!   residual shortcut (identity, option-A zero padding, or option-B 1x1 conv + BN).
//! - [`resnet`]: configurations (depth, width, shortcut, classes), the network, its summary.
//! - [`footprint`]: the memory a configuration needs, counted without building it.
//! - [`optim`] and [`step`]: SGD over the parameters and one whole training step.

pub mod block;
pub mod config;
pub mod footprint;
pub mod layers;
pub mod optim;
pub mod param;
pub mod resnet;
pub mod step;

pub use config::{BlockKind, ConfigError, ResNetConfig, ShortcutKind};
pub use footprint::Footprint;
pub use optim::Sgd;
pub use param::Param;
pub use resnet::{ResNet, SummaryRow};

/// Training uses batch statistics in BatchNorm and keeps what backward needs; evaluation
/// uses the running statistics and keeps nothing. (This is all `model.train()` /
/// `model.eval()` do in PyTorch: they do not switch gradients on or off.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}
