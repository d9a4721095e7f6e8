//! Which engine runs the step (`--device`). `cuda` opens GPU 0 (and exits with status 2 and
//! the reason when it cannot); `auto` takes the GPU when one is usable and otherwise the CPU,
//! with a one-line notice either way. Opening the GPU probes for the driver first, so a
//! machine without CUDA gets a message, never a panic.

use crate::engine::memory;
use tensor::Device;

/// Where to run, as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The GPU when one is usable, else the CPU (with a notice).
    Auto,
    Cpu,
    Cuda,
}

/// An error that should end the process with this exit status (2: a usage problem that the
/// user can fix by changing flags or the machine).
#[derive(Debug)]
pub struct ExitWith {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitWith {}

/// Resolve `--device`.
pub fn select(choice: DeviceChoice) -> Result<Device, ExitWith> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => Device::cuda(0).map_err(|e| ExitWith {
            code: 2,
            message: format!("--device cuda is not usable: {e}; use --device cpu (or auto)"),
        }),
        DeviceChoice::Auto => match Device::cuda(0) {
            Ok(dev) => {
                eprintln!("note: using {dev} (--device cpu to use the CPU engine)");
                Ok(dev)
            }
            Err(e) => {
                // The probe's message lists every library name it tried: keep the notice short.
                let why = e.to_string();
                let short = why.split(": none of").next().unwrap_or(&why);
                eprintln!("note: using the CPU ({short}; --device cuda says more)");
                Ok(Device::Cpu)
            }
        },
    }
}

/// The device for a table or a log: `cpu (Intel ..., 16 threads)`, `cuda:0 (139.8 GiB)`.
pub fn describe(device: &Device) -> String {
    match device.gpu() {
        Some(gpu) => match gpu.mem_info() {
            Ok((_, total)) => format!("{device} ({})", memory::human(total as f64)),
            Err(_) => device.to_string(),
        },
        None => {
            // The engine's pool: `RAYON_NUM_THREADS` (`reproduce --jobs` sets it) or every core.
            let threads = rayon::current_num_threads();
            let model = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                })
                .map_or(String::new(), |m| format!("{m}, "));
            let s = if threads == 1 { "" } else { "s" };
            format!("cpu ({model}{threads} thread{s})")
        }
    }
}
