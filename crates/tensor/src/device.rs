//! Where a tensor lives: host memory or one CUDA device.
//!
//! `Device::cuda(ordinal)` opens the GPU once per process (context, stream, every kernel module
//! compiled by nvrtc) and hands out the same `Arc<Gpu>` on every later call, so tensors created
//! from two calls can meet in one op. On a machine without a driver, nvrtc or device it returns
//! a clean [`Error`], never a panic.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use kernels::{Gpu, Graph, KernelError};

/// What can fail when choosing a device or moving data to or from it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CUDA side failed: no driver / nvrtc / device, out of memory, a failed copy or launch.
    #[error(transparent)]
    Cuda(#[from] KernelError),
    /// A captured CUDA graph was asked to run on state it was not captured with.
    #[error("a captured CUDA graph cannot run: {0}")]
    Graph(String),
    /// A device name that [`Device::parse`] does not know.
    #[error("unknown device `{0}`: expected `cpu`, `cuda` or `cuda:N`")]
    UnknownDevice(String),
}

impl Error {
    /// Whether the GPU ran out of memory (the driver's `CUDA_ERROR_OUT_OF_MEMORY`).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::Cuda(e) if e.is_out_of_memory())
    }
}

/// Result alias of this crate's fallible (device) operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A place for tensors: the host, or one CUDA device (with its stream and compiled kernels).
#[derive(Clone, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(Arc<Gpu>),
}

fn gpus() -> &'static Mutex<HashMap<usize, Arc<Gpu>>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    GPUS.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Device {
    /// CUDA device `ordinal`, opened on first use and shared afterwards. `Err` (never a panic)
    /// when there is no usable driver, no kernels (neither nvrtc nor the prebuilt kernels file),
    /// or no device with that ordinal, or when the kernels do not load (e.g. a driver older
    /// than nvrtc 13).
    pub fn cuda(ordinal: usize) -> Result<Device> {
        // A poisoned lock only means another thread panicked while opening; the map is valid.
        let mut map = gpus().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gpu) = map.get(&ordinal) {
            return Ok(Device::Cuda(Arc::clone(gpu)));
        }
        let gpu = Arc::new(Gpu::new(ordinal)?);
        map.insert(ordinal, Arc::clone(&gpu));
        Ok(Device::Cuda(gpu))
    }

    /// `"cpu"`, `"cuda"` (= `cuda:0`) or `"cuda:N"` (case-insensitive), for a `--device` flag.
    /// Opening the GPU can fail as [`Device::cuda`] does.
    pub fn parse(name: &str) -> Result<Device> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Device::cuda(0),
            _ => match lower.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Device::cuda(ordinal),
                _ => Err(Error::UnknownDevice(name.to_string())),
            },
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// The GPU, for calling `kernels::launch` directly (e.g. the augmentation kernel).
    pub fn gpu(&self) -> Option<&Arc<Gpu>> {
        match self {
            Device::Cpu => None,
            Device::Cuda(gpu) => Some(gpu),
        }
    }

    /// Records everything `record` queues on this GPU into a CUDA graph instead of running it,
    /// and returns the graph (replay it with [`Graph::launch`]) with `record`'s result. Only
    /// work that never waits for the GPU can be captured (see `kernels::graph`): a failure
    /// inside `record` (a panic, e.g. an op that was refused) ends the capture and comes back
    /// as `Err`, except out of memory, which unwinds on as [`crate::OutOfMemory`].
    /// `Err` on the CPU.
    pub fn capture<R>(&self, record: impl FnOnce() -> R) -> Result<(Graph, R)> {
        let gpu = self.gpu().ok_or_else(|| {
            KernelError::invalid("graph capture", "CUDA graphs need a GPU, not the CPU")
        })?;
        // A panic inside `record` is caught here, inside the capture, so the capture is ended
        // normally; its payload is kept to report (or, for out of memory, to unwind on).
        let mut failed: Option<Box<dyn std::any::Any + Send>> = None;
        let captured =
            gpu.capture(
                || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(record)) {
                    Ok(r) => Some(r),
                    Err(payload) => {
                        failed = Some(payload);
                        None
                    }
                },
            );
        if let Some(payload) = failed {
            if payload.is::<crate::OutOfMemory>() {
                std::panic::resume_unwind(payload);
            }
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            let ended = match captured {
                Ok(_) => String::new(),
                Err(e) => format!(" (and ending the capture failed: {})", e.brief()),
            };
            return Err(KernelError::invalid("graph capture", format!("{why}{ended}")).into());
        }
        match captured? {
            (graph, Some(r)) => Ok((graph, r)),
            (_, None) => unreachable!("no panic, so `record` returned"),
        }
    }

    /// Waits for all queued GPU work; surfaces asynchronous kernel errors. No-op on the CPU.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(gpu) => Ok(gpu.synchronize()?),
        }
    }
}

impl PartialEq for Device {
    /// Two CUDA devices are equal when they are the same opened `Gpu` (same stream).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(gpu) => write!(f, "cuda:{} ({})", gpu.context().ordinal(), gpu.name()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "Cpu"),
            Device::Cuda(gpu) => write!(f, "Cuda({gpu:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::parse(" CPU ").unwrap().to_string(), "cpu");
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = Device::parse(bad).unwrap_err();
            assert!(matches!(e, Error::UnknownDevice(_)), "{bad}: {e}");
            assert!(e.to_string().contains("cuda:N"), "{e}");
        }
    }

    /// On a machine without a driver (this project's CI) asking for the GPU is a clean `Err`;
    /// on a GPU machine ordinal 0 opens. An absurd ordinal is an `Err` everywhere. Never a panic.
    #[test]
    fn requesting_cuda_never_panics() {
        let r = std::panic::catch_unwind(|| Device::cuda(0).map(|d| d.to_string()));
        let r = r.expect("Device::cuda(0) panicked");
        match kernels::probe::driver() {
            Err(_) => {
                let e = r.expect_err("no driver, yet Device::cuda(0) succeeded");
                assert!(e.to_string().contains("CUDA"), "unclear error: {e}");
            }
            Ok(info) if info.device_count == 0 => assert!(r.is_err()),
            Ok(_) => {}
        }
        let far = std::panic::catch_unwind(|| Device::cuda(4096).is_err());
        assert!(far.expect("Device::cuda(4096) panicked"));
        let parsed = std::panic::catch_unwind(|| Device::parse("cuda:4096").is_err());
        assert!(parsed.expect("Device::parse panicked"));
    }
}
