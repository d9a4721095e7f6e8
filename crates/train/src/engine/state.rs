//! A model (and optimizer state) to and from checkpoint tensors, named as PyTorch's
//! `state_dict` of the equivalent model (`stem.0.weight`, `layers.3.b1.running_mean`,
//! `fc.bias`, ...), so PyTorch users can load our weights. SGD momentum buffers are stored
//! as `optimizer.momentum.<param>`. The model's configuration lives in the metadata, and a
//! checkpoint that does not match the requested model is an error that says how.

use crate::engine::checkpoint::NamedTensor;
use anyhow::{bail, ensure, Context, Result};
use model::{BlockKind, ResNet, ResNetConfig, ShortcutKind};
use std::collections::BTreeMap;
use tensor::Tensor;

const MOMENTUM_PREFIX: &str = "optimizer.momentum.";

/// Every parameter, BN buffer and (optionally) momentum buffer of `model` (copied to the host
/// if the model lives on the GPU).
pub fn model_tensors(model: &mut ResNet, with_optimizer: bool) -> Result<Vec<NamedTensor>> {
    let t = |name: String, v: &Tensor| -> Result<NamedTensor> {
        Ok(NamedTensor::f32(name, v.shape().to_vec(), v.to_vec()?))
    };
    let mut out = Vec::new();
    for p in model.params_mut() {
        out.push(t(p.name.clone(), &p.value)?);
        if with_optimizer {
            out.push(t(format!("{MOMENTUM_PREFIX}{}", p.name), &p.momentum)?);
        }
    }
    for bn in model.bns_mut() {
        for (name, v) in bn.buffers() {
            out.push(t(name, v)?);
        }
        out.push(NamedTensor::i64(
            format!("{}.num_batches_tracked", bn.name),
            vec![],
            vec![bn.num_batches_tracked],
        ));
    }
    Ok(out)
}

/// Copy checkpoint tensors into `model`, which must be on the CPU (load, then move it). Every
/// model tensor must be present with its exact shape; momentum buffers are loaded when
/// `with_optimizer`.
pub fn load_model_tensors(
    model: &mut ResNet,
    tensors: &[NamedTensor],
    with_optimizer: bool,
) -> Result<()> {
    ensure!(
        model.device().is_cpu(),
        "load a checkpoint into a CPU model, then move it to the GPU"
    );
    let by_name: BTreeMap<&str, &NamedTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let fetch = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = by_name
            .get(name)
            .with_context(|| format!("the checkpoint has no tensor `{name}`"))?;
        if t.shape != shape {
            bail!(
                "tensor `{name}` has shape {:?} in the checkpoint, the model needs {shape:?}",
                t.shape
            );
        }
        Ok(t.as_f32()
            .with_context(|| format!("tensor `{name}` is not f32"))?
            .to_vec())
    };
    for p in model.params_mut() {
        p.value = Tensor::from_vec(p.value.shape(), fetch(&p.name, p.value.shape())?);
        if with_optimizer {
            let name = format!("{MOMENTUM_PREFIX}{}", p.name);
            p.momentum = Tensor::from_vec(p.momentum.shape(), fetch(&name, p.momentum.shape())?);
        }
    }
    for bn in model.bns_mut() {
        for (name, v) in bn.buffers_mut() {
            *v = Tensor::from_vec(v.shape(), fetch(&name, v.shape())?);
        }
        let name = format!("{}.num_batches_tracked", bn.name);
        if let Some(n) = by_name
            .get(name.as_str())
            .and_then(|t| t.as_i64())
            .and_then(|d| d.first())
        {
            bn.num_batches_tracked = *n;
        }
    }
    Ok(())
}

/// The configuration as checkpoint metadata.
pub fn config_metadata(config: &ResNetConfig) -> BTreeMap<String, String> {
    let list = |v: &[usize]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    BTreeMap::from([
        ("model".to_string(), config.name()),
        ("depth".to_string(), config.depth.to_string()),
        ("blocks".to_string(), list(&config.blocks)),
        ("widths".to_string(), list(&config.widths)),
        (
            "block".to_string(),
            format!("{:?}", config.block).to_lowercase(),
        ),
        ("shortcut".to_string(), config.shortcut.to_string()),
        ("num_classes".to_string(), config.num_classes.to_string()),
    ])
}

/// Rebuild the configuration a checkpoint was written with.
pub fn config_from_metadata(meta: &BTreeMap<String, String>) -> Result<ResNetConfig> {
    let get = |k: &str| {
        meta.get(k).with_context(|| {
            format!("checkpoint metadata lacks `{k}`: not written by `train --save`?")
        })
    };
    let list = |k: &str| -> Result<Vec<usize>> {
        get(k)?
            .split(',')
            .map(|x| {
                x.parse()
                    .with_context(|| format!("bad `{k}` in checkpoint metadata"))
            })
            .collect()
    };
    let block = match get("block")?.as_str() {
        "basic" => BlockKind::Basic,
        "bottleneck" => BlockKind::Bottleneck,
        other => bail!("unknown block kind `{other}` in checkpoint metadata"),
    };
    let shortcut: ShortcutKind = get("shortcut")?.parse().map_err(anyhow::Error::msg)?;
    Ok(ResNetConfig {
        blocks: list("blocks")?,
        widths: list("widths")?,
        block,
        shortcut,
        num_classes: get("num_classes")?
            .parse()
            .context("bad `num_classes` in checkpoint metadata")?,
        depth: get("depth")?
            .parse()
            .context("bad `depth` in checkpoint metadata")?,
    })
}

/// A clear error when the checkpoint's model is not the requested one.
pub fn ensure_same_model(
    file: &std::path::Path,
    found: &ResNetConfig,
    wanted: &ResNetConfig,
) -> Result<()> {
    if found != wanted {
        let describe = |c: &ResNetConfig| {
            format!(
                "{} (blocks {:?}, widths {:?}, shortcut {}, {} classes)",
                c.name(),
                c.blocks,
                c.widths,
                c.shortcut,
                c.num_classes
            )
        };
        bail!(
            "checkpoint {} holds {}, but the requested model is {}; pass the same --depth/--width/--shortcut/--dataset as the run that wrote it",
            file.display(),
            describe(found),
            describe(wanted)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_restores_weights_buffers_and_momentum() {
        let config = ResNetConfig::from_depth(20, None, None, 10).unwrap();
        let mut a = ResNet::new(&config, 1);
        for p in a.params_mut() {
            p.momentum.fill(0.25);
        }
        a.bns_mut()[3].running_mean.fill(0.5);
        a.bns_mut()[3].num_batches_tracked = 7;
        let tensors = model_tensors(&mut a, true).unwrap();
        assert!(tensors.iter().any(|t| t.name == "layers.0.b1.running_var"));
        assert!(tensors
            .iter()
            .any(|t| t.name == "optimizer.momentum.fc.weight"));
        let mut b = ResNet::new(&config, 2);
        load_model_tensors(&mut b, &tensors, true).unwrap();
        assert_eq!(model_tensors(&mut b, true).unwrap(), tensors);
        assert_eq!(
            config_from_metadata(&config_metadata(&config)).unwrap(),
            config
        );
    }

    #[test]
    fn mismatched_model_is_a_clear_error() {
        let c20 = ResNetConfig::from_depth(20, None, None, 10).unwrap();
        let c32 = ResNetConfig::from_depth(32, None, None, 10).unwrap();
        let tensors = model_tensors(&mut ResNet::new(&c20, 0), false).unwrap();
        let err = load_model_tensors(&mut ResNet::new(&c32, 0), &tensors, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("layers.3.c1.weight") && err.contains("[16, 16, 3, 3]"),
            "{err}"
        );
        let err = ensure_same_model(std::path::Path::new("x.safetensors"), &c20, &c32)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resnet20") && err.contains("resnet32") && err.contains("x.safetensors"),
            "{err}"
        );
    }
}
