//! `train bench`: the training step's speed on synthetic data already on the device, after
//! warm-up, in the PyTorch peer's terms (`torch_peer.py speed`): ms/step, images/s, peak
//! memory. The timed loop queues its steps without reading anything back (the loss goes into a
//! device-side meter, read once after the clock stops) and ends with a device
//! synchronisation, so GPU time is all counted. (The `bench` command checks the sizes and
//! opens the device first.)

use anyhow::{ensure, Context, Result};
use model::step::{train_step_into, CapturedStep};
use model::{ResNet, ResNetConfig, Sgd};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tensor::{Device, Labels, LossMeter, Tensor};

const MIB: f64 = (1u64 << 20) as f64;

/// What to time, and how to report it.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub batch_size: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    pub precision: tensor::Precision,
    /// Capture the step as a CUDA graph after warm-up and time its replays (GPU only).
    pub cuda_graph: bool,
    /// Also print the result as one JSON line (the PyTorch peer's format).
    pub json: bool,
    /// After the timed steps, time each op of as many steps again (CPU only).
    pub profile: bool,
    /// Classes of the synthetic labels.
    pub classes: usize,
}

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

/// Device memory in use now (`total − free`, bytes), `None` on the CPU.
fn gpu_used(device: &Device) -> Result<Option<usize>> {
    match device.gpu() {
        None => Ok(None),
        Some(gpu) => {
            let (free, total) = gpu.mem_info()?;
            Ok(Some(total - free))
        }
    }
}

/// Times `spec.steps` training steps of `config` on `device` (after `spec.warmup` untimed
/// ones) and prints ms/step, images/s and peak memory (and, as asked, a JSON line and the
/// per-op profile).
pub fn bench(spec: &BenchSpec, config: &ResNetConfig, device: &Device) -> Result<()> {
    ensure!(
        !spec.cuda_graph || device.is_cuda(),
        "--cuda-graph needs a GPU, but the bench runs on {device}"
    );
    ensure!(
        !spec.profile || !device.is_cuda(),
        "--profile times ops on the host, which only means something on the CPU (use \
         --device cpu)"
    );
    // Device memory in use before the model exists (context, loaded kernels).
    let used_before = gpu_used(device)?;
    let mut model = ResNet::new(config, 0);
    model.set_precision(spec.precision);
    let params = model.num_params();
    model
        .to_device(device)
        .context("moving the model to the device")?;
    // Four batches of N(0,1)-like images and random labels, cycled, as the peer does.
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let n = spec.batch_size;
    let mut batches = Vec::new();
    for _ in 0..4 {
        let x: Vec<f32> = (0..n * 3072).map(|_| r.gen_range(-1.7f32..1.7)).collect();
        let y: Vec<usize> = (0..n).map(|_| r.gen_range(0..spec.classes)).collect();
        batches.push((
            Tensor::from_vec(&[n, 3, 32, 32], x)
                .to_device(device)
                .context("copying the synthetic batches to the device")?,
            Labels::host(y).to_device(device)?,
        ));
    }
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        decay_weights_only: false,
    };
    let mut meter = LossMeter::new(device)?;
    for i in 0..spec.warmup {
        let (x, y) = &batches[i % 4];
        train_step_into(&mut model, &sgd, x, y, 0.1, &mut meter);
    }
    // With --cuda-graph the timed steps replay one captured step (the warm-up built the SGD
    // table it needs); each replay first copies its batch into the graph's inputs, as a
    // training replay does.
    let mut captured = if spec.cuda_graph {
        ensure!(
            spec.warmup > 0,
            "--cuda-graph needs at least one --warmup step before the capture"
        );
        let (x, y) = &batches[0];
        Some(
            CapturedStep::capture(&mut model, &sgd, x, y, &mut meter)
                .context("capturing the training step as a CUDA graph")?,
        )
    } else {
        None
    };
    device.synchronize()?;
    meter.reset()?;
    if let Some(gpu) = device.gpu() {
        gpu.reset_pool_peak()?;
    }
    // No read-back inside the loop: the steps queue back to back, as in training.
    let (started, cpu_started) = (Instant::now(), tensor::profile::process_cpu_time());
    for i in 0..spec.steps {
        let (x, y) = &batches[i % 4];
        match &mut captured {
            Some(step) => step.run(&mut model, x, y, 0.1, &mut meter)?,
            None => train_step_into(&mut model, &sgd, x, y, 0.1, &mut meter),
        }
    }
    // Before the synchronisation (the fallback below wants the working set still in use).
    let used_after = gpu_used(device)?;
    // A replayed graph allocates nothing from the pool: its working set was mapped once, in
    // the driver's graph memory, before the timed loop. What is in use now (pool + graph
    // memory) is then the peak of the step.
    let graph_in_use = match (device.gpu(), &captured) {
        (Some(gpu), Some(_)) => gpu
            .pool_used_bytes()?
            .map(|p| p + gpu.graph_mem_used_bytes().unwrap_or(0)),
        _ => None,
    };
    device.synchronize()?;
    let ms = started.elapsed().as_secs_f64() * 1e3 / spec.steps as f64;
    // The process's CPU time per step (all threads): steadier than wall time on a busy machine.
    let cpu_ms = tensor::profile::process_cpu_time()
        .zip(cpu_started)
        .map(|(end, start)| (end - start).as_secs_f64() * 1e3 / spec.steps as f64);
    let img_s = n as f64 / ms * 1e3;
    let loss = meter.read()?.loss;
    // Peak memory. CPU: this process's resident high-water mark. GPU: cudarc allocates from
    // the device's stream-ordered pool (cuMemAllocAsync) where the device has one (every
    // recent GPU), and the pool's high-water mark of live buffers since the reset above is the
    // figure the peer reports (torch.cuda.max_memory_allocated after reset_peak_memory_stats):
    // weights, gradients, momentum, the four batches and the step's largest working set. The
    // plain `total − free` difference is no substitute: it counts what the pool keeps cached
    // (`Gpu` lets it keep everything, like PyTorch's caching allocator). Without a pool
    // (cuMemAlloc, nothing cached) that difference, taken before the final sync, is all there
    // is: a lower bound, said so. With --cuda-graph: see `graph_in_use` above.
    let (peak, peak_what) = match device.gpu() {
        None => (peak_host_mib(), "host resident"),
        Some(_) if graph_in_use.is_some() => (
            graph_in_use.map(|b| b as f64 / MIB),
            "GPU pool + graph memory in use during replays",
        ),
        Some(gpu) => match gpu.pool_peak_bytes()? {
            Some(bytes) => (Some(bytes as f64 / MIB), "GPU pool high-water"),
            None => (
                used_after
                    .zip(used_before)
                    .map(|(a, b)| a.saturating_sub(b) as f64 / MIB),
                "GPU in use after the steps, a lower bound",
            ),
        },
    };
    let peak_text = peak.map_or("n/a".to_string(), |m| format!("{m:.0} MiB ({peak_what})"));
    let cpu_text = match (device, cpu_ms) {
        (Device::Cpu, Some(c)) => format!(" (CPU time {c:.2} ms/step)"),
        _ => String::new(),
    };
    // On the CPU, which kernels ran, and for the convolutions which per pass
    // (RESNET_CPU_KERNELS=reference|avx2|avx512|avx512bf16|amx caps them).
    let where_ = match device {
        Device::Cpu => format!(
            "cpu ({} kernels; conv {})",
            tensor::cpu::kernels(),
            tensor::conv::fast::kernels_used(model.precision())
        ),
        _ => device.to_string(),
    };
    println!(
        "{} ({params} parameters) on {where_}, batch {n}: {ms:.2} ms/step{cpu_text}, {img_s:.0} images/s, peak memory {peak_text}, mean loss {loss:.4} ({} timed steps after {} warm-up)",
        peer_name(config),
        spec.steps,
        spec.warmup
    );
    let mode = format!(
        "{}{}",
        model.precision(),
        if spec.cuda_graph { "+graph" } else { "" }
    );
    if spec.profile {
        profile_steps(spec, &mut model, &sgd, &batches, &mut meter, ms);
    }
    if spec.json {
        let record = serde_json::json!({
            "peer": "ours", "what": "speed", "model": peer_name(config), "mode": mode,
            "device": where_, "batch": n, "ms_per_step": (ms * 1000.0).round() / 1000.0,
            "img_per_s": img_s.round(), "params": params,
            "cpu_ms_per_step": cpu_ms.map(|c| (c * 1000.0).round() / 1000.0), "peak_mem_mb": peak.map(|m| m.round()),
            "build": resnet_cifar::BUILD_INFO,
        });
        println!("{record}");
    }
    Ok(())
}

/// `spec.steps` more steps with every op timed: one line per op (ms per step, share of the
/// step), the ops' sum, and the rest of the step (model glue, allocation).
fn profile_steps(
    spec: &BenchSpec,
    model: &mut ResNet,
    sgd: &Sgd,
    batches: &[(Tensor, Labels)],
    meter: &mut LossMeter,
    timed_ms: f64,
) {
    tensor::profile::take();
    tensor::profile::enable(true);
    let started = Instant::now();
    for i in 0..spec.steps {
        let (x, y) = &batches[i % 4];
        train_step_into(model, sgd, x, y, 0.1, meter);
    }
    let step_ms = started.elapsed().as_secs_f64() * 1e3 / spec.steps as f64;
    tensor::profile::enable(false);
    let mut ops = tensor::profile::take();
    ops.sort_by_key(|op| std::cmp::Reverse(op.time));
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / spec.steps as f64;
    println!(
        "profile: {} steps, {step_ms:.1} ms/step while profiling ({timed_ms:.1} timed above)",
        spec.steps
    );
    println!("{:>9} {:>6} {:>6}  op", "ms/step", "share", "calls");
    let mut sum = 0.0;
    for op in &ops {
        let ms = per_step(op.time);
        sum += ms;
        let calls = op.calls / spec.steps;
        println!(
            "{ms:>9.2} {:>5.1}% {calls:>6}  {}",
            100.0 * ms / step_ms,
            op.name
        );
    }
    println!("{sum:>9.2} {:>5.1}%         all ops", 100.0 * sum / step_ms);
    let rest = step_ms - sum;
    println!(
        "{rest:>9.2} {:>5.1}%         the rest (glue, allocation)",
        100.0 * rest / step_ms
    );
}
