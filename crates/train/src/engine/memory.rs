//! Refusing sizes that cannot fit, before anything big is allocated.
//!
//! Any size a user can type (`--width`, `--depth`, `--batch-size`, `--classes`) goes through
//! [`ensure_fits`] first: the memory the run needs, counted from the configuration alone
//! ([`model::Footprint`]: parameters, gradients, momentum, activations at this batch size),
//! against what the machine has (`MemAvailable`, and the cgroup's limit when there is one) or
//! the GPU has free. Too much is one line naming the sizes, the figures and what to change.
//!
//! The count is an estimate. Where it is too low, host tensors are still allocated fallibly
//! (`tensor::oom::host_zeros`) and a refusal ends in `out of host memory ...`
//! (`crate::engine::oom`), never an abort. Where it is too cautious for a machine, `RESNET_MEMORY_CHECK=off` skips it.

use anyhow::{bail, Result};
use model::{Footprint, ResNetConfig};
use tensor::Device;

/// The environment variable that turns the estimate off (`off`).
pub const SKIP_ENV: &str = "RESNET_MEMORY_CHECK";

const F32: f64 = 4.0;

/// Host memory: what a new allocation can still get, and the machine's (or cgroup's) total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostMemory {
    pub available: usize,
    pub total: usize,
}

/// Linux's `MemAvailable`/`MemTotal`, capped by a cgroup v2 `memory.max`; `None` where
/// neither can be read (the check is then skipped, allocations stay fallible).
pub fn host_memory() -> Option<HostMemory> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<usize> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let mut m = HostMemory {
        available: field("MemAvailable:")?,
        total: field("MemTotal:")?,
    };
    let cgroup = |f: &str| -> Option<usize> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    if let Some(max) = cgroup("memory.max") {
        let used = cgroup("memory.current").unwrap_or(0);
        m.total = m.total.min(max);
        m.available = m.available.min(max.saturating_sub(used));
    }
    Some(m)
}

/// What a command is about to do with the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Training steps at this batch size (and evaluation at the same size).
    Train { batch: usize },
    /// Forward passes only, at this batch size.
    Eval { batch: usize },
    /// Only building the model (`--dry-run`).
    Build,
    /// Building the model to train it at this batch size: checked before the device is
    /// chosen (every model is built on the host first), so only the building counts; the
    /// message says what the activations would add.
    BuildToTrain { batch: usize },
}

/// One part of the need, for the message.
struct Part {
    what: String,
    floats: f64,
}

/// The memory `work` on `config` needs on `clones_copy` (CPU) or shared-buffer (GPU) tensors,
/// by part. Every model is built on the host first (value, gradient and momentum of every
/// parameter), so the host needs the parameters three times over whatever the device.
fn parts(config: &ResNetConfig, work: Work, on_cpu: bool) -> Vec<Part> {
    let f = Footprint::of(config);
    let mut parts = vec![
        Part {
            what: "parameters".into(),
            floats: f.params + f.buffers,
        },
        Part {
            what: "gradients".into(),
            floats: f.params,
        },
        Part {
            what: "momentum".into(),
            floats: f.params,
        },
    ];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (activations, batch) = match work {
        Work::Train { batch } => (f.training_activations(batch as f64, on_cpu), batch),
        Work::Eval { batch } => (f.eval_activations(batch as f64), batch),
        Work::Build | Work::BuildToTrain { .. } => return parts,
    };
    parts.push(Part {
        what: format!(
            "activations {} at batch size {batch}",
            human(activations * F32)
        ),
        floats: activations,
    });
    if on_cpu {
        parts.push(Part {
            what: "convolution workspace".into(),
            floats: f.cpu_workspace(threads),
        });
    }
    parts
}

/// `1.5 GiB`, `36.0 TiB`, ... (binary units), for any size, however absurd.
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} bytes")
    } else if v >= 1024.0 {
        format!("{v:.2e} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The model and sizes as asked, for the message.
fn asked(config: &ResNetConfig, work: Work) -> String {
    let batch = match work {
        Work::Train { batch } | Work::Eval { batch } => format!(", batch size {batch}"),
        Work::Build | Work::BuildToTrain { .. } => String::new(),
    };
    format!(
        "{} (depth {}, width {}, {} classes{batch})",
        config.name(),
        config.depth,
        config.widths[0],
        config.num_classes
    )
}

/// The one-line refusal: what was asked, what it needs by part, what there is.
fn refusal(config: &ResNetConfig, work: Work, parts: &[Part], memory: &str, have: &str) -> String {
    let hint = hint(config, parts);
    let need: f64 = parts.iter().map(|p| p.floats).sum::<f64>() * F32;
    let list = parts
        .iter()
        .map(|p| {
            if p.what.starts_with("activations") {
                p.what.clone()
            } else {
                format!("{} {}", p.what, human(p.floats * F32))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (verb, then) = match work {
        Work::Train { .. } => ("training", String::new()),
        Work::Eval { .. } => ("evaluating", String::new()),
        Work::Build => ("building", String::new()),
        Work::BuildToTrain { batch } => {
            let a = Footprint::of(config).training_activations(batch as f64, true);
            (
                "building",
                format!(
                    "; training would add activations of about {} at batch size {batch}",
                    human(a * F32)
                ),
            )
        }
    };
    format!(
        "{verb} {} needs about {} of {memory} ({list}{then}), but {have}; {hint}",
        asked(config, work),
        human(need)
    )
}

/// What to change: whatever takes most of the memory.
fn hint(config: &ResNetConfig, parts: &[Part]) -> &'static str {
    let f = Footprint::of(config);
    let activations: f64 = parts
        .iter()
        .filter(|p| p.what.starts_with("activations"))
        .map(|p| p.floats)
        .sum();
    if activations > 3.0 * f.params {
        "use a smaller --batch-size (or --width)"
    } else if f.classifier > 0.5 * f.params {
        "use fewer --classes"
    } else {
        "use a smaller --width (or --depth)"
    }
}

/// What training `config` at `batch` needs, on the CPU and on a GPU, for `--dry-run`.
pub fn estimate_line(config: &ResNetConfig, batch: usize) -> String {
    let work = Work::Train { batch };
    let total = |parts: &[Part]| human(parts.iter().map(|p| p.floats).sum::<f64>() * F32);
    let f = Footprint::of(config);
    format!(
        "memory to train at batch size {batch}: about {} on the CPU, {} on a GPU (parameters, \
         gradients and momentum {}; the rest activations)",
        total(&parts(config, work, true)),
        total(&parts(config, work, false)),
        human((3.0 * f.params + f.buffers) * F32)
    )
}

/// Errors when `work` on `config` cannot fit on `device` (and on the host, where every model
/// is built first). `extra_host_bytes`: what else the run holds on the host (the data set).
pub fn ensure_fits(
    config: &ResNetConfig,
    work: Work,
    device: &Device,
    extra_host_bytes: usize,
) -> Result<()> {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "off") {
        return Ok(());
    }
    let on_cpu = device.is_cpu();
    // The host: everything on the CPU; on a GPU, the model as built before it moves.
    let host_parts = if on_cpu {
        parts(config, work, true)
    } else {
        parts(config, Work::Build, true)
    };
    if let Some(host) = host_memory() {
        let need = host_parts.iter().map(|p| p.floats).sum::<f64>() * F32 + extra_host_bytes as f64;
        if need > host.available as f64 {
            let have = format!(
                "this machine has {} available ({} total)",
                human(host.available as f64),
                human(host.total as f64)
            );
            bail!(refusal(config, work, &host_parts, "host memory", &have));
        }
    }
    if let Some(gpu) = device.gpu() {
        let gpu_parts = parts(config, work, false);
        let need = gpu_parts.iter().map(|p| p.floats).sum::<f64>() * F32;
        if let Ok((free, total)) = gpu.mem_info() {
            if need > free as f64 {
                let have = format!(
                    "{device} has {} free ({} total)",
                    human(free as f64),
                    human(total as f64)
                );
                bail!(refusal(config, work, &gpu_parts, "GPU memory", &have));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512.0), "512 bytes");
        assert_eq!(human(1536.0), "1.5 KiB");
        assert_eq!(human(36.0 * (1u64 << 40) as f64), "36.0 TiB");
        assert_eq!(human(3.0 * (1u64 << 60) as f64), "3.0 EiB");
        assert_eq!(human(1e30), "8.67e11 EiB");
    }

    #[test]
    fn the_refusal_names_the_sizes_the_parts_and_what_there_is() {
        let c = ResNetConfig::from_depth(20, Some(1_000_000), None, 10).unwrap();
        let work = Work::Train { batch: 128 };
        let p = parts(&c, work, true);
        let m = refusal(
            &c,
            work,
            &p,
            "host memory",
            "this machine has 20.0 GiB available (24.0 GiB total)",
        );
        assert!(
            m.starts_with("training resnet20-w1000000 (depth 20, width 1000000, 10 classes, batch size 128) needs about "),
            "{m}"
        );
        for needle in [
            "parameters 3.7 PiB",
            "gradients 3.7 PiB",
            "momentum 3.7 PiB",
            "at batch size 128",
            "this machine has 20.0 GiB",
            "use a smaller --width",
        ] {
            assert!(m.contains(needle), "`{needle}` missing in: {m}");
        }
        assert!(!m.contains('\n'));
        // Only the parameters' three copies for a build.
        assert_eq!(parts(&c, Work::Build, true).len(), 3);
    }

    #[test]
    fn a_small_model_fits_and_an_absurd_one_does_not() {
        let small = ResNetConfig::from_depth(20, Some(4), None, 10).unwrap();
        ensure_fits(&small, Work::Train { batch: 32 }, &Device::Cpu, 1 << 20).unwrap();
        if host_memory().is_some() {
            let e = ensure_fits(&small, Work::Train { batch: 1 << 40 }, &Device::Cpu, 0)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("batch size 1099511627776") && e.contains("activations"),
                "{e}"
            );
            let huge = ResNetConfig::from_depth(20, Some(1_000_000), None, 10).unwrap();
            let e = ensure_fits(&huge, Work::Build, &Device::Cpu, 0)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("building resnet20-w1000000"), "{e}");
        }
    }
}
