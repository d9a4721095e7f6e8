//! Running out of GPU (or host) memory, as an error that says what to change (and any other
//! GPU failure inside an op, as an error that says what failed).
//!
//! GPU work (training, evaluation, the bench) runs inside [`guard`]: an op that cannot
//! allocate panics with a typed [`OutOfMemory`] payload (see `tensor::oom`), and a fallible
//! step (moving the model, uploading the data) returns an error whose cause is the driver's
//! `CUDA_ERROR_OUT_OF_MEMORY`. Both become one line naming the model and the batch size, with
//! the GPU's free and total memory; `main` installs the panic hook that keeps the panic itself
//! quiet, so the user sees `error: out of GPU memory ...` and exit status 1, never a backtrace.
//! Host tensors are allocated fallibly and raise the same payload (`host: true`): a host
//! allocation the machine refuses reads `error: out of host memory ...`, never an abort.
//! (`crate::engine::memory` refuses sizes that cannot fit before anything is allocated; this
//! is what still catches an estimate that was too low.)

use anyhow::anyhow;
use tensor::{Device, OutOfMemory};

/// What was running when memory ran out, for the message.
#[derive(Clone, Debug)]
pub struct Job {
    /// `training`, `evaluating`, `benchmarking`.
    pub what: &'static str,
    /// The model's name (`resnet110`, `resnet34-w16`, ...).
    pub model: String,
    pub params: usize,
    pub batch_size: usize,
}

/// `1727962` → `1,727,962`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The message: what ran out, where, how much the GPU has, and what to try.
/// `mem` is the GPU's `(free, total)` bytes when known.
pub fn message(job: &Job, oom: &OutOfMemory, mem: Option<(usize, usize)>) -> String {
    let (memory, holder) = if oom.host {
        ("host", "this machine")
    } else {
        ("GPU", "GPU")
    };
    let mem = mem.map_or(String::new(), |(free, total)| {
        format!(
            "; {holder} has {} free of {}",
            kernels::human_bytes(free as u64),
            kernels::human_bytes(total as u64)
        )
    });
    format!(
        "out of {memory} memory {} {} ({} parameters) at batch size {}: {oom}{mem}. \
         Try a smaller --batch-size (or --width).",
        job.what,
        job.model,
        thousands(job.params),
        job.batch_size
    )
}

/// The driver's out-of-memory anywhere in `e`'s chain of causes, as an [`OutOfMemory`] whose
/// step is `e`'s outermost context (e.g. "moving the model to the GPU").
pub fn out_of_memory_in(e: &anyhow::Error) -> Option<OutOfMemory> {
    for (depth, cause) in e.chain().enumerate() {
        if let Some(oom) = cause.downcast_ref::<OutOfMemory>() {
            return Some(oom.clone());
        }
        let kernel = match cause.downcast_ref::<tensor::Error>() {
            Some(tensor::Error::Cuda(k)) => Some(k),
            _ => cause.downcast_ref::<kernels::KernelError>(),
        };
        if let Some(k) = kernel.filter(|k| k.is_out_of_memory()) {
            // The outermost message is a context string when there is one; the driver error
            // itself is described by `brief` (its `Display` would call into libcuda).
            let op = if depth > 0 {
                e.chain().next().map_or(String::new(), |c| c.to_string())
            } else {
                "the GPU".to_string()
            };
            return OutOfMemory::from_kernel_error(&op, k);
        }
    }
    None
}

/// Runs `f`, the GPU work of `job` on `device`, and turns running out of GPU memory (a typed
/// panic from an op, or an error caused by it) into the error of [`message`]. Every other
/// error and panic passes through unchanged.
pub fn guard<T>(
    job: &Job,
    device: &Device,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let oom = match tensor::oom::catch(f) {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => match out_of_memory_in(&e) {
            Some(oom) => oom,
            None => return Err(e),
        },
        Err(tensor::Caught::OutOfMemory(oom)) => oom,
        // A kernel fault (the context is lost: nothing more can run on it) or another driver
        // error inside an op: one line naming the job and what the driver said.
        Err(tensor::Caught::Failed(failure)) => {
            return Err(anyhow!(
                "GPU failure while {} {} at batch size {}: {failure}",
                job.what,
                job.model,
                job.batch_size
            ))
        }
    };
    // Whatever `f` allocated was dropped while unwinding; once that has run (synchronise),
    // trimming the pool hands the blocks back to the driver, so the free figure counts them.
    let mem = if oom.host {
        crate::engine::memory::host_memory().map(|m| (m.available, m.total))
    } else {
        device.gpu().and_then(|gpu| {
            let _ = gpu.synchronize();
            let _ = gpu.trim_pool(); // the pool keeps freed blocks (Gpu's release threshold)
            gpu.mem_info().ok()
        })
    };
    Err(anyhow!(message(job, &oom, mem)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use kernels::{CUresult, DriverError, KernelError};

    fn job() -> Job {
        Job {
            what: "training",
            model: "resnet110".into(),
            params: 1_727_962,
            batch_size: 16384,
        }
    }

    fn driver_oom() -> KernelError {
        KernelError::driver(
            "allocating 1.00 GiB of device memory",
            DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
        )
    }

    #[test]
    fn the_message_names_the_model_the_batch_size_and_the_memory() {
        let oom = OutOfMemory {
            op: "conv2d_forward".into(),
            detail: "CUDA_ERROR_OUT_OF_MEMORY while allocating 1.00 GiB of device memory".into(),
            host: false,
        };
        let m = message(&job(), &oom, Some((3 << 29, 140 << 30)));
        assert_eq!(
            m,
            "out of GPU memory training resnet110 (1,727,962 parameters) at batch size 16384: \
             conv2d_forward could not allocate (CUDA_ERROR_OUT_OF_MEMORY while allocating 1.00 \
             GiB of device memory); GPU has 1.50 GiB free of 140.00 GiB. Try a smaller \
             --batch-size (or --width)."
        );
        let m = message(&job(), &oom, None);
        assert!(m.contains("1.00 GiB of device memory). Try"), "{m}");
        let host = OutOfMemory::host("allocating a tensor", 3 << 40);
        let m = message(&job(), &host, Some((1 << 30, 24 << 30)));
        assert!(
            m.starts_with("out of host memory training resnet110")
                && m.contains("the host allocator refused 3072.00 GiB")
                && m.contains("this machine has 1.00 GiB free of 24.00 GiB"),
            "{m}"
        );
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(123_456), "123,456");
        assert_eq!(thousands(58_156_618), "58,156,618");
    }

    #[test]
    fn out_of_memory_errors_are_found_in_the_chain() {
        let e = anyhow::Error::from(tensor::Error::Cuda(driver_oom()))
            .context("moving the model to the GPU");
        let oom = out_of_memory_in(&e).expect("found");
        assert_eq!(oom.op, "moving the model to the GPU");
        assert!(
            oom.detail.starts_with("CUDA_ERROR_OUT_OF_MEMORY"),
            "{oom:?}"
        );
        let bare = anyhow::Error::from(driver_oom());
        assert_eq!(out_of_memory_in(&bare).unwrap().op, "the GPU");
        let other = anyhow::Error::from(KernelError::invalid("k", "bad")).context("x");
        assert!(out_of_memory_in(&other).is_none());
        let plain: anyhow::Result<()> = Err(anyhow!("no such file")).context("reading");
        assert!(out_of_memory_in(&plain.unwrap_err()).is_none());
    }

    #[test]
    fn guard_turns_out_of_memory_into_the_error_and_passes_the_rest() {
        tensor::oom::install_quiet_panic_hook();
        let j = job();
        // A typed panic from an op (what tensor's ops raise on CUDA_ERROR_OUT_OF_MEMORY).
        let r: anyhow::Result<()> = guard(&j, &Device::Cpu, || {
            OutOfMemory::from_kernel_error("batchnorm_forward", &driver_oom())
                .unwrap()
                .raise()
        });
        let m = format!("{:#}", r.unwrap_err());
        assert!(
            m.starts_with("out of GPU memory training resnet110")
                && m.contains("at batch size 16384: batchnorm_forward could not allocate"),
            "{m}"
        );
        // An Err caused by it.
        let r: anyhow::Result<()> = guard(&j, &Device::Cpu, || {
            Err(anyhow::Error::from(driver_oom()).context("uploading the training images"))
        });
        let m = r.unwrap_err().to_string();
        assert!(
            m.contains("uploading the training images could not allocate"),
            "{m}"
        );
        // Everything else is untouched.
        assert_eq!(guard(&j, &Device::Cpu, || Ok(5)).unwrap(), 5);
        let r: anyhow::Result<()> = guard(&j, &Device::Cpu, || Err(anyhow!("disk full")));
        assert_eq!(r.unwrap_err().to_string(), "disk full");
        let p = std::panic::catch_unwind(|| {
            guard(&j, &Device::Cpu, || -> anyhow::Result<()> {
                panic!("a bug")
            })
        });
        assert!(p.is_err(), "other panics propagate");
    }
}
