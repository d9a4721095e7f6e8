//! The CPU engine's forward pass on an input of your choosing, for `scripts/pytorch_parity.py`
//! to hold against PyTorch where the data pipeline cannot reach (a NaN inside the input):
//!
//!     forward_probe CHECKPOINT INPUT OUTPUT
//!
//! INPUT is a safetensors file with one f32 tensor `x` of shape [N, 3, 32, 32] (already
//! normalised). OUTPUT gets `eval_logits` (evaluation mode), then `train_logits` (one
//! training-mode forward: batch statistics, no update) and the model's tensors after it (the
//! running statistics that forward moved), named as the checkpoint names them.

use anyhow::{ensure, Context, Result};
use model::{Mode, ResNet};
use std::collections::BTreeMap;
use std::path::Path;
use tensor::Tensor;
use train::engine::checkpoint::{self, NamedTensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ensure!(
        args.len() == 3,
        "usage: forward_probe CHECKPOINT INPUT OUTPUT"
    );
    let (tensors, meta) = checkpoint::load(Path::new(&args[0]))?;
    let config = train::engine::state::config_from_metadata(&meta)?;
    let mut model = ResNet::new(&config, 0);
    train::engine::state::load_model_tensors(&mut model, &tensors, false)?;

    // The input may hold NaN on purpose: read it without the checkpoint's finiteness check.
    let bytes = std::fs::read(&args[1]).with_context(|| format!("reading {}", args[1]))?;
    let (input, _) = checkpoint::from_bytes(&bytes)?;
    let x = input
        .iter()
        .find(|t| t.name == "x")
        .context("the input has no tensor `x`")?;
    let data = x.as_f32().context("`x` is not f32")?.to_vec();
    let x = Tensor::from_vec(&x.shape, data);

    let logits = |t: Tensor, name: &str| -> Result<NamedTensor> {
        Ok(NamedTensor::f32(name, t.shape().to_vec(), t.to_vec()?))
    };
    let mut out = vec![logits(model.forward(&x, Mode::Eval), "eval_logits")?];
    out.push(logits(model.forward(&x, Mode::Train), "train_logits")?);
    out.extend(train::engine::state::model_tensors(&mut model, false)?);
    checkpoint::save(Path::new(&args[2]), &out, &BTreeMap::new())
}
