//! Which engine runs the step. The CUDA engine's kernels exist (crate `kernels`) but are not
//! yet wired into training: `--device cuda` says so and exits with status 2, and `auto`
//! uses the CPU with a one-line notice saying why.

use crate::cli::DeviceArg;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Cpu,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Cpu => "cpu",
        })
    }
}

/// Resolve `--device`. Never panics: the CUDA probe reports a missing driver as an error.
pub fn select(arg: DeviceArg) -> Result<Engine, ExitWith> {
    let why_not_cuda = || match kernels::probe::driver() {
        Ok(info) => format!(
            "found {} CUDA device(s) (driver {}), but the CUDA training engine is not wired in yet",
            info.device_count, info.version
        ),
        Err(e) => e.to_string(),
    };
    match arg {
        DeviceArg::Cpu => Ok(Engine::Cpu),
        DeviceArg::Auto => {
            // The probe's full message lists every library name it tried: keep the notice short.
            let why = why_not_cuda();
            let short = why.split(": none of").next().unwrap_or(&why);
            eprintln!("note: using the CPU ({short}; --device cuda says more)");
            Ok(Engine::Cpu)
        }
        DeviceArg::Cuda => Err(ExitWith {
            code: 2,
            message: format!(
                "--device cuda is not usable: {}; use --device cpu (or auto)",
                why_not_cuda()
            ),
        }),
    }
}
