//! `train bench`: the training step's speed on synthetic data already on the device, after
//! warm-up, in the PyTorch peer's terms (`torch_peer.py speed`): ms/step, images/s, peak
//! memory. The timed loop ends with a device synchronisation, so GPU time is all counted.

use crate::cli::{BenchArgs, ShortcutArg};
use anyhow::{ensure, Result};
use model::step::train_step;
use model::{ResNet, ResNetConfig, Sgd, ShortcutKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tensor::{Device, Tensor};

/// The peer's name for a configuration (`resnet20`, `resnet34-w64-pad`, ...).
pub fn peer_name(c: &ResNetConfig) -> String {
    let six_n_plus_2 = c.blocks.len() == 3 && c.widths[0] == 16;
    if six_n_plus_2 {
        format!("resnet{}", c.depth)
    } else {
        format!("resnet{}-w{}-{}", c.depth, c.widths[0], c.shortcut)
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_host_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run_bench(args: &BenchArgs) -> Result<()> {
    ensure!(
        args.batch_size > 0 && args.steps > 0,
        "--batch-size and --steps must be at least 1"
    );
    let shortcut = args.shortcut.map(|s| match s {
        ShortcutArg::Pad => ShortcutKind::Pad,
        ShortcutArg::Conv => ShortcutKind::Conv,
    });
    let config = ResNetConfig::from_depth(args.depth, args.width, shortcut, args.classes)?;
    let device = crate::device::select(args.device)?;
    let mut model = ResNet::new(&config, 0);
    let params = model.num_params();
    model.to_device(&device)?;
    // Four batches of N(0,1)-like images and random labels, cycled, as the peer does.
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let n = args.batch_size;
    let mut batches = Vec::new();
    for _ in 0..4 {
        let x: Vec<f32> = (0..n * 3072).map(|_| r.gen_range(-1.7f32..1.7)).collect();
        let y: Vec<usize> = (0..n).map(|_| r.gen_range(0..args.classes)).collect();
        batches.push((Tensor::from_vec(&[n, 3, 32, 32], x).to_device(&device)?, y));
    }
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        decay_weights_only: false,
    };
    for i in 0..args.warmup {
        let (x, y) = &batches[i % 4];
        train_step(&mut model, &sgd, x, y, 0.1);
    }
    device.synchronize()?;
    let started = Instant::now();
    for i in 0..args.steps {
        let (x, y) = &batches[i % 4];
        train_step(&mut model, &sgd, x, y, 0.1);
    }
    device.synchronize()?;
    let ms = started.elapsed().as_secs_f64() * 1e3 / args.steps as f64;
    let img_s = n as f64 / ms * 1e3;
    // GPU memory is not tracked yet (ops allocate per call); the host figure is this process's peak.
    let peak = match device {
        Device::Cpu => peak_host_mib(),
        Device::Cuda(_) => None,
    };
    let peak_text = peak.map_or("n/a".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "{} ({params} parameters) on {device}, batch {n}: {ms:.2} ms/step, {img_s:.0} images/s, peak memory {peak_text} ({} timed steps after {} warm-up)",
        peer_name(&config),
        args.steps,
        args.warmup
    );
    if args.json {
        let record = serde_json::json!({
            "peer": "ours", "what": "speed", "model": peer_name(&config), "mode": "fp32",
            "device": device.to_string(), "batch": n, "ms_per_step": (ms * 1000.0).round() / 1000.0,
            "img_per_s": img_s.round(), "params": params, "peak_mem_mb": peak.map(|m| m.round()),
            "build": resnet_cifar::BUILD_INFO,
        });
        println!("{record}");
    }
    Ok(())
}
