//! `train predict --checkpoint C IMAGE...`: the classes a trained model sees in PNG or JPEG
//! images of any size.
//!
//! Each image is decoded (`crate::engine::images`: PNG and JPEG only, whole files only),
//! converted to RGB, and resized to 32x32 whole, as CIFAR's images were made from larger
//! pictures (no crop; a triangle filter, which averages the pixels each output pixel covers
//! when shrinking). Then it is normalised with the checkpoint's training statistics and
//! classified with the running BN statistics. The class names are the ones stored with the
//! checkpoint's dataset.

use crate::commands::args::DeviceArg;
use crate::engine::images::decode;
use crate::engine::{checkpoint, device, memory, oom, snapshot, state};
use anyhow::{bail, Context, Result};
use clap::Args;
use data::{write_sample, Normalization, SampleAug, SAMPLE_LEN};
use model::{Mode, ResNet, ResNetConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tensor::Tensor;

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// A checkpoint written by `train --save`
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// PNG or JPEG files of any size (each is resized to 32x32 whole, as CIFAR was made)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// How many classes to list per image
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top: usize,
    /// Where to run (a few images need no GPU)
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// The names of a checkpoint's classes: stored with it, or CIFAR-10's fixed names for a
/// CIFAR-10 checkpoint written before they were stored.
pub fn class_names(meta: &BTreeMap<String, String>, file: &Path) -> Result<Vec<String>> {
    if let Some(json) = meta.get("class_names") {
        return serde_json::from_str(json)
            .with_context(|| format!("bad `class_names` in checkpoint {}", file.display()));
    }
    match snapshot::dataset_of(meta)? {
        data::Dataset::Cifar10 => Ok(data::CIFAR10_CLASS_NAMES.map(String::from).to_vec()),
        d => bail!(
            "checkpoint {} (trained on {d}) was written before checkpoints stored their class \
             names; save it again with a current `train` to classify images with it",
            file.display()
        ),
    }
}

/// The `k` most probable classes of each row of `logits`: (class, probability), descending.
pub fn top_k(logits: &[f32], classes: usize, k: usize) -> Vec<Vec<(usize, f64)>> {
    logits
        .chunks(classes)
        .map(|row| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            let mut p: Vec<(usize, f64)> = exp.iter().map(|e| e / sum).enumerate().collect();
            // Descending probability; the lower class first on ties (a stable order).
            p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            p.truncate(k);
            p
        })
        .collect()
}

/// `train predict --checkpoint C IMAGE...`.
pub fn run(args: &PredictArgs) -> Result<()> {
    anyhow::ensure!(args.top > 0, "--top must be at least 1");
    let (tensors, meta) = checkpoint::load(&args.checkpoint)?;
    let file = args.checkpoint.display();
    let config: ResNetConfig =
        state::config_from_metadata(&meta).with_context(|| format!("reading {file}"))?;
    let norm: Normalization = snapshot::norm_from_string(
        meta.get("normalization")
            .with_context(|| format!("checkpoint {file} lacks `normalization`"))?,
    )?;
    let names = class_names(&meta, &args.checkpoint)?;
    anyhow::ensure!(
        names.len() == config.num_classes,
        "checkpoint {file} has {} classes but {} class names",
        config.num_classes,
        names.len()
    );
    // Decode every file first: a bad one is reported by name, the others still classified.
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for path in &args.images {
        match decode(path) {
            Ok(d) => good.push((path, d)),
            Err(e) => {
                eprintln!("error: {e:#}");
                bad.push(path.display().to_string());
            }
        }
    }
    if !good.is_empty() {
        let device = device::select(args.device.into())?;
        let work = memory::Work::Eval { batch: good.len() };
        memory::ensure_fits(&config, work, &device, 0)?;
        let job = oom::Job {
            what: "classifying with",
            model: config.name(),
            params: model::Footprint::of(&config).params as usize,
            batch_size: good.len(),
        };
        let logits = oom::guard(&job, &device, || {
            let mut model = ResNet::new(&config, 0);
            state::load_model_tensors(&mut model, &tensors, false)
                .with_context(|| format!("loading {file}"))?;
            model
                .to_device(&device)
                .context("moving the model to the device")?;
            let mut x = vec![0f32; good.len() * SAMPLE_LEN];
            for ((_, d), out) in good.iter().zip(x.chunks_mut(SAMPLE_LEN)) {
                write_sample(&d.chw, SampleAug::IDENTITY, &norm, out);
            }
            let x = Tensor::from_vec(&[good.len(), 3, 32, 32], x)
                .to_device(&device)
                .context("copying the images to the device")?;
            Ok(model.forward(&x, Mode::Eval).to_vec()?)
        })?;
        let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
        for ((path, d), top) in good
            .iter()
            .zip(top_k(&logits, config.num_classes, args.top))
        {
            println!("{} ({}x{}):", path.display(), d.width, d.height);
            for (rank, (class, p)) in top.iter().enumerate() {
                println!(
                    "  {}. {:<width$} {:6.2}%",
                    rank + 1,
                    names[*class],
                    100.0 * p
                );
            }
        }
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} images could not be read: {}",
            bad.len(),
            args.images.len(),
            bad.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_the_softmax_in_descending_order() {
        let logits = [0.0f32, 2.0, 1.0, 2.0, /* row 2 */ 5.0, 0.0, 0.0, 0.0];
        let t = top_k(&logits, 4, 3);
        assert_eq!(t.len(), 2);
        let z = 1.0 + 2.0 * 2f64.exp() + 1f64.exp();
        assert_eq!(t[0].iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!((t[0][0].1 - 2f64.exp() / z).abs() < 1e-12);
        assert_eq!(t[1][0].0, 0);
        let all: f64 = top_k(&logits, 4, 10)[1].iter().map(|p| p.1).sum();
        assert!((all - 1.0).abs() < 1e-12);
    }
}
