//! `--device`: which engine runs the step. `cuda` opens GPU 0 (and exits with status 2 and
//! the reason when it cannot); `auto` takes the GPU when one is usable and otherwise the CPU,
//! with a one-line notice either way. Opening the GPU probes for the driver first, so a
//! machine without CUDA gets a message, never a panic.

use crate::cli::DeviceArg;
use tensor::Device;

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
pub fn select(arg: DeviceArg) -> Result<Device, ExitWith> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => Device::cuda(0).map_err(|e| ExitWith {
            code: 2,
            message: format!("--device cuda is not usable: {e}; use --device cpu (or auto)"),
        }),
        DeviceArg::Auto => match Device::cuda(0) {
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
