//! Which ResNet to build: depth, width, shortcut and number of classes.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (the seed's `ResBlock`).
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand by 4.
    Bottleneck,
}

/// How a block's shortcut matches a change of shape (channels or stride).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShortcutKind {
    /// Option A: subsample and zero-pad the new channels; no parameters.
    Pad,
    /// Option B: a 1x1 convolution (with the stride) and BatchNorm.
    Conv,
}

impl FromStr for ShortcutKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pad" | "a" | "A" => Ok(ShortcutKind::Pad),
            "conv" | "b" | "B" => Ok(ShortcutKind::Conv),
            _ => Err(format!(
                "unknown shortcut `{s}`: use `pad` (option A) or `conv` (option B)"
            )),
        }
    }
}

impl fmt::Display for ShortcutKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            ShortcutKind::Pad => "pad",
            ShortcutKind::Conv => "conv",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unsupported depth {0}: use one of 20, 32, 44, 56, 110, 1202 (the paper's CIFAR family, 6n+2) or 18, 34, 50, 101, 152 (four stages)")]
    Depth(usize),
    #[error("invalid width {0}: it must be at least 1")]
    Width(usize),
    #[error("invalid number of classes {0}: it must be at least 2")]
    Classes(usize),
    #[error("width {0} is too large: the widest layer would have more channels than this machine can count")]
    WidthTooLarge(usize),
}

/// Every depth the CLI accepts.
pub const DEPTHS: [usize; 11] = [20, 32, 44, 56, 110, 1202, 18, 34, 50, 101, 152];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Blocks per stage; the first block of every stage after the first has stride 2.
    pub blocks: Vec<usize>,
    /// Each stage's width (a bottleneck's output has 4x this many channels).
    pub widths: Vec<usize>,
    pub block: BlockKind,
    pub shortcut: ShortcutKind,
    pub num_classes: usize,
    /// The nominal depth (for names and summaries; 0 for custom configurations).
    pub depth: usize,
}

impl ResNetConfig {
    /// A named depth. `width` defaults to 16 for the 6n+2 family and 64 for the four-stage
    /// nets; `shortcut` defaults to `pad` for basic blocks and `conv` for bottlenecks.
    pub fn from_depth(
        depth: usize,
        width: Option<usize>,
        shortcut: Option<ShortcutKind>,
        num_classes: usize,
    ) -> Result<Self, ConfigError> {
        let (blocks, block, default_width): (Vec<usize>, _, _) = match depth {
            20 | 32 | 44 | 56 | 110 | 1202 => (vec![(depth - 2) / 6; 3], BlockKind::Basic, 16),
            18 => (vec![2, 2, 2, 2], BlockKind::Basic, 64),
            34 => (vec![3, 4, 6, 3], BlockKind::Basic, 64),
            50 => (vec![3, 4, 6, 3], BlockKind::Bottleneck, 64),
            101 => (vec![3, 4, 23, 3], BlockKind::Bottleneck, 64),
            152 => (vec![3, 8, 36, 3], BlockKind::Bottleneck, 64),
            _ => return Err(ConfigError::Depth(depth)),
        };
        let width = width.unwrap_or(default_width);
        if width == 0 {
            return Err(ConfigError::Width(width));
        }
        if num_classes < 2 {
            return Err(ConfigError::Classes(num_classes));
        }
        let shortcut = shortcut.unwrap_or(match block {
            BlockKind::Basic => ShortcutKind::Pad,
            BlockKind::Bottleneck => ShortcutKind::Conv,
        });
        // The last stage is width·2^(stages-1) (·4 at a bottleneck's output): refuse widths
        // whose channel counts would not fit a usize rather than let them wrap.
        let expand = if block == BlockKind::Bottleneck { 4 } else { 1 };
        let widths = (0..blocks.len())
            .map(|i| {
                width
                    .checked_mul(expand << i)
                    .map(|_| width << i)
                    .ok_or(ConfigError::WidthTooLarge(width))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        Ok(ResNetConfig {
            blocks,
            widths,
            block,
            shortcut,
            num_classes,
            depth,
        })
    }

    /// A short name for logs and file names, e.g. `resnet20`, `resnet34-w16-pad`.
    pub fn name(&self) -> String {
        let default = ResNetConfig::from_depth(self.depth, None, None, self.num_classes).ok();
        let mut name = format!("resnet{}", self.depth);
        if default.as_ref().map(|d| d.widths[0]) != Some(self.widths[0]) {
            name += &format!("-w{}", self.widths[0]);
        }
        if default.as_ref().map(|d| d.shortcut) != Some(self.shortcut) {
            name += &format!("-{}", self.shortcut);
        }
        name
    }
}
