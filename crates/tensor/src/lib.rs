//! A minimal f32 tensor and every op a ResNet needs, each with a forward and a hand-written
//! backward pass. The CPU engine is plain, threaded where it matters, and the oracle that the
//! CUDA kernels (crate `kernels`) are proven against.
//!
//! A [`Tensor`] knows where it lives ([`Device`]): host memory or one CUDA device. Every op
//! dispatches on its inputs' device — the CPU body and the CUDA launch sit side by side in the
//! op's module — and returns its result on the same device, so the same model code runs on
//! either. Inputs of one op must share a device (mixing is a programming error: a panic that
//! names both). Moving data is explicit and fallible: [`Tensor::to_device`], [`Tensor::to_host`],
//! [`Tensor::to_vec`]. Ops keep their infallible signatures; a GPU failure inside one (a failed
//! launch) panics with the op's name and the driver's message, except running out of memory,
//! which panics with a typed [`OutOfMemory`] payload that [`oom::catch`] turns into a value.
//!
//! GPU status: the CUDA branches are compiled, not yet run on a GPU (see
//! `tests/gpu/` at the workspace root for the checks that will prove them).
//!
//! Layout is NCHW, contiguous, row-major, as in PyTorch, so results compare one to one.
//! Every CPU op is deterministic: parallel reductions split work into a fixed number of chunks
//! that does not depend on the thread count, and sum the partial results in order.

pub mod augment;
pub mod batchnorm;
pub mod bf16;
pub mod conv;
pub mod cpu;
pub mod device;
pub mod elementwise;
mod gemm;
pub mod linear;
pub mod loss;
pub mod oom;
pub mod pool;
pub mod profile;
pub mod scalar;
pub mod sgd;
pub mod shortcut;
#[cfg(test)]
mod testutil;

use std::fmt;
use std::sync::Arc;

/// The convolutions' arithmetic: exact fp32, or bf16 operands with fp32 accumulation.
pub use conv::Precision;
pub use device::{Device, Error, Result};
/// A captured CUDA graph ([`Device::capture`]).
pub use kernels::Graph;
use kernels::{CudaSlice, Gpu};
pub use loss::{Labels, LossMeter, MeterReading};
pub use oom::{Caught, GpuFailure, OutOfMemory};

/// Where a tensor's values are.
enum Storage {
    /// Shared between clones, like the GPU buffer below: saving an activation for backward
    /// costs no copy; the first write through a shared one copies it (see `data_mut`).
    Host(Arc<Vec<f32>>),
    /// Shared between clones (a layer keeping its input for backward costs no copy); the
    /// first write through a shared one copies it first (copy on write, see `cu_mut`).
    Cuda {
        gpu: Arc<Gpu>,
        buf: Arc<CudaSlice<f32>>,
    },
}

/// A dense f32 tensor, in host memory or on a CUDA device.
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

/// Panics with the op's name when a GPU call inside an infallible op fails; out of memory
/// panics with an [`OutOfMemory`] payload instead (see [`oom`]).
#[track_caller]
pub(crate) fn check<T>(op: &str, r: kernels::Result<T>) -> T {
    r.unwrap_or_else(|e| gpu_failed(op, &e))
}

#[track_caller]
fn gpu_failed(op: &str, e: &kernels::KernelError) -> ! {
    match OutOfMemory::from_kernel_error(op, e) {
        Some(oom) => oom.raise(),
        None => oom::GpuFailure {
            op: op.to_string(),
            message: e.to_string(),
        }
        .raise(),
    }
}

/// Unwraps the result of a fallible device call made inside an infallible function (e.g.
/// `model::step::train_step`), the way the ops do: a failure panics naming `op`, with an
/// [`OutOfMemory`] payload when the GPU ran out of memory.
#[track_caller]
pub fn expect_device<T>(op: &str, r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(Error::Cuda(e)) => gpu_failed(op, &e),
        Err(e) => panic!("{op} failed: {e}"),
    }
}

/// The GPU shared by all of `ts`, or `None` when all are on the host. Panics when they are on
/// different devices (a programming error).
#[track_caller]
pub(crate) fn cuda_of(op: &str, ts: &[&Tensor]) -> Option<Arc<Gpu>> {
    let first = match &ts[0].storage {
        Storage::Host(_) => None,
        Storage::Cuda { gpu, .. } => Some(gpu),
    };
    for t in &ts[1..] {
        let same = match (&t.storage, first) {
            (Storage::Host(_), None) => true,
            (Storage::Cuda { gpu, .. }, Some(f)) => Arc::ptr_eq(gpu, f),
            _ => false,
        };
        assert!(
            same,
            "{op}: inputs on different devices ({} and {}); move them with to_device first",
            ts[0].device(),
            t.device()
        );
    }
    first.cloned()
}

impl Tensor {
    /// Zeros in host memory. More than the allocator gives raises [`OutOfMemory`] (see
    /// [`oom::host_zeros`]), as a GPU allocation does, instead of aborting the process.
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Host(Arc::new(oom::host_zeros(
                "allocating a tensor",
                elements(shape),
            ))),
        }
    }

    /// `value` everywhere, in host memory (fallible like [`Tensor::zeros`]).
    #[track_caller]
    pub fn full(shape: &[usize], value: f32) -> Self {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Host(Arc::new(oom::host_vec(
                "allocating a tensor",
                elements(shape),
                value,
            ))),
        }
    }

    /// Panics if `data.len()` does not match the shape: that is a programming error, not input.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            data.len(),
            "shape {shape:?} needs {n} values, got {}",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Host(Arc::new(data)),
        }
    }

    /// A host tensor whose values `fill` writes into its fresh, uninitialised buffer: an op
    /// output without a zero-fill pass first.
    ///
    /// # Safety
    /// `fill` must write every element (the buffer is then taken as initialised).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) unsafe fn host_filled(
        shape: &[usize],
        fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
    ) -> Self {
        let n = shape.iter().product();
        let mut v: Vec<f32> = Vec::with_capacity(n);
        fill(&mut v.spare_capacity_mut()[..n]);
        // SAFETY: the caller's promise: all n elements were written.
        unsafe { v.set_len(n) };
        Tensor::from_vec(shape, v)
    }

    /// Zeros on `device` (`Err` when the GPU allocation fails, e.g. out of memory).
    pub fn zeros_on(shape: &[usize], device: &Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Tensor::zeros(shape)),
            Device::Cuda(gpu) => Ok(Tensor {
                shape: shape.to_vec(),
                storage: Storage::Cuda {
                    gpu: Arc::clone(gpu),
                    buf: Arc::new(gpu.zeros(shape.iter().product())?),
                },
            }),
        }
    }

    /// Adopt a device buffer filled by a kernel outside this crate (the GPU batch maker).
    /// Panics if the buffer does not hold exactly `shape`'s elements (a programming error).
    pub fn from_cuda(shape: &[usize], gpu: &Arc<Gpu>, buf: CudaSlice<f32>) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            buf.len(),
            "shape {shape:?} needs {n} values, the buffer has {}",
            buf.len()
        );
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cuda {
                gpu: Arc::clone(gpu),
                buf: Arc::new(buf),
            },
        }
    }

    /// An op's output on `gpu`, not zero-filled: the op's kernel writes every element (see
    /// `kernels::Gpu::uninit_f32`). Panics (naming `op`) when the allocation fails.
    #[track_caller]
    pub(crate) fn cuda_output(op: &str, gpu: &Arc<Gpu>, shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cuda {
                gpu: Arc::clone(gpu),
                buf: Arc::new(check(op, gpu.uninit_f32(shape.iter().product()))),
            },
        }
    }

    /// The device buffer of a tensor known to be on the GPU (internal: ops call this only
    /// after [`cuda_of`] said so).
    #[track_caller]
    pub(crate) fn cu(&self) -> &CudaSlice<f32> {
        match &self.storage {
            Storage::Cuda { buf, .. } => buf,
            Storage::Host(_) => panic!("internal: expected a CUDA tensor"),
        }
    }

    /// The device buffer, for writing: a buffer still shared with a clone is copied first
    /// (on the device), so a write never shows through another tensor.
    #[track_caller]
    pub(crate) fn cu_mut(&mut self) -> &mut CudaSlice<f32> {
        match &mut self.storage {
            Storage::Cuda { gpu, buf } => {
                if Arc::get_mut(buf).is_none() {
                    *buf = Arc::new(check("copy on write", gpu.clone_buffer(buf)));
                }
                Arc::get_mut(buf).expect("a fresh copy is unshared")
            }
            Storage::Host(_) => panic!("internal: expected a CUDA tensor"),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Host(v) => v.len(),
            Storage::Cuda { buf, .. } => buf.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the values are.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Host(_) => Device::Cpu,
            Storage::Cuda { gpu, .. } => Device::Cuda(Arc::clone(gpu)),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self.storage, Storage::Cuda { .. })
    }

    /// The values of a host tensor; `None` on a GPU.
    pub fn host_data(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::Host(v) => Some(v),
            Storage::Cuda { .. } => None,
        }
    }

    #[track_caller]
    fn on_gpu_panic(&self, what: &str) -> ! {
        panic!(
            "Tensor::{what} on a tensor of shape {:?} on {}: its values are in GPU memory; \
             use to_host() / to_vec() to copy them out",
            self.shape,
            self.device()
        )
    }

    /// The values of a host tensor. Panics on a GPU tensor (a programming error: copy it out
    /// with [`Tensor::to_host`] or [`Tensor::to_vec`]).
    #[track_caller]
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Host(v) => v,
            Storage::Cuda { .. } => self.on_gpu_panic("data()"),
        }
    }

    /// Mutable values of a host tensor (copied first if a clone shares them). Panics on a GPU
    /// tensor, like [`Tensor::data`].
    #[track_caller]
    pub fn data_mut(&mut self) -> &mut [f32] {
        if self.is_cuda() {
            self.on_gpu_panic("data_mut()")
        }
        match &mut self.storage {
            Storage::Host(v) => {
                let _span =
                    (Arc::strong_count(v) > 1).then(|| profile::span(|| "copy on write".into()));
                Arc::make_mut(v).as_mut_slice()
            }
            Storage::Cuda { .. } => unreachable!(),
        }
    }

    /// The values of a host tensor. Panics on a GPU tensor, like [`Tensor::data`].
    #[track_caller]
    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Host(v) => Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone()),
            Storage::Cuda { .. } => self.on_gpu_panic("into_vec()"),
        }
    }

    /// A copy of the values on the host, from either device (waits for queued GPU work).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Host(v) => Ok(v.to_vec()),
            Storage::Cuda { gpu, buf } => Ok(gpu.download(&buf.as_view())?),
        }
    }

    /// A copy on `device` (a plain clone when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        let storage = match (&self.storage, device) {
            (Storage::Host(v), Device::Cpu) => Storage::Host(Arc::clone(v)),
            (Storage::Cuda { .. }, Device::Cpu) => Storage::Host(Arc::new(self.to_vec()?)),
            (Storage::Host(v), Device::Cuda(gpu)) => Storage::Cuda {
                gpu: Arc::clone(gpu),
                buf: Arc::new(gpu.upload(v)?),
            },
            (Storage::Cuda { gpu: from, buf }, Device::Cuda(gpu)) => {
                if Arc::ptr_eq(from, gpu) {
                    // Same device: share the buffer, as clone does.
                    Storage::Cuda {
                        gpu: Arc::clone(gpu),
                        buf: Arc::clone(buf),
                    }
                } else {
                    // Different opened devices: go through the host (simple and rare).
                    Storage::Cuda {
                        gpu: Arc::clone(gpu),
                        buf: Arc::new(gpu.upload(&self.to_vec()?)?),
                    }
                }
            }
        };
        Ok(Tensor {
            shape: self.shape.clone(),
            storage,
        })
    }

    /// A copy in host memory.
    pub fn to_host(&self) -> Result<Tensor> {
        self.to_device(&Device::Cpu)
    }

    /// Moves the tensor to `device` in place; free when it is already there.
    pub fn move_to(&mut self, device: &Device) -> Result<()> {
        if self.device() != *device {
            *self = self.to_device(device)?;
        }
        Ok(())
    }

    /// The four dimensions of an NCHW tensor.
    pub fn dims4(&self) -> (usize, usize, usize, usize) {
        match self.shape[..] {
            [n, c, h, w] => (n, c, h, w),
            _ => panic!("expected an NCHW tensor, got shape {:?}", self.shape),
        }
    }

    /// The two dimensions of a matrix-shaped tensor.
    pub fn dims2(&self) -> (usize, usize) {
        match self.shape[..] {
            [r, c] => (r, c),
            _ => panic!("expected a 2-d tensor, got shape {:?}", self.shape),
        }
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "reshape {:?} -> {shape:?}",
            self.shape
        );
        self.shape = shape.to_vec();
        self
    }

    /// Sets every value (on the GPU: a memset for 0, else a copy from the host; a driver
    /// failure panics).
    pub fn fill(&mut self, value: f32) {
        match &mut self.storage {
            Storage::Host(v) => match Arc::get_mut(v) {
                Some(v) => v.fill(value),
                // Shared with a clone: the old values are not needed, only a buffer of our own.
                None => *v = Arc::new(vec![value; v.len()]),
            },
            Storage::Cuda { gpu, buf } => {
                if Arc::get_mut(buf).is_none() {
                    // Shared with a clone: the old values are not needed, only a buffer of our own.
                    *buf = Arc::new(check("fill", gpu.uninit_f32(buf.len())));
                }
                let buf = Arc::get_mut(buf).expect("a fresh buffer is unshared");
                let r = if value.to_bits() == 0 {
                    gpu.memset_zeros(buf)
                } else {
                    gpu.copy_to_device(&vec![value; buf.len()], buf)
                };
                check("fill", r)
            }
        }
    }

    /// The device address of a GPU tensor's buffer (`None` on the host): an identity, for
    /// checking that a captured CUDA graph still points at this tensor; never for writing.
    pub fn device_address(&self) -> Option<u64> {
        match &self.storage {
            Storage::Host(_) => None,
            Storage::Cuda { gpu, buf } => Some(gpu.address_of(buf)),
        }
    }

    /// Whether this tensor's buffer is shared with a clone (copy-on-write pending).
    pub fn is_shared(&self) -> bool {
        match &self.storage {
            Storage::Host(v) => Arc::strong_count(v) > 1,
            Storage::Cuda { buf, .. } => Arc::strong_count(buf) > 1,
        }
    }

    /// Gives this tensor a buffer of its own if it shares one with a clone (a no-op
    /// otherwise), so later in-place writes need no copy-on-write allocation — which on a GPU
    /// must not happen inside a CUDA-graph capture for a tensor that outlives it.
    pub fn unshare(&mut self) {
        if self.is_cuda() {
            self.cu_mut();
        } else {
            self.data_mut();
        }
    }

    /// Overwrites the values with `src`'s (same shape, same device): a device-to-device copy
    /// queued on the GPU, or a host copy.
    pub fn copy_from(&mut self, src: &Tensor) -> Result<()> {
        assert_eq!(self.shape, src.shape, "copy_from: shapes differ");
        match cuda_of("copy_from", &[&*self, src]) {
            None => match &mut self.storage {
                Storage::Host(v) => match Arc::get_mut(v) {
                    Some(v) => v.copy_from_slice(src.data()),
                    // Shared: the old values are not needed, so no copy of them first.
                    None => *v = Arc::new(src.data().to_vec()),
                },
                Storage::Cuda { .. } => unreachable!(),
            },
            Some(gpu) => {
                if self.is_shared() {
                    // The old values are not needed: a buffer of our own, not a copy of them.
                    let fresh = gpu.uninit_f32(self.len())?;
                    if let Storage::Cuda { buf, .. } = &mut self.storage {
                        *buf = Arc::new(fresh);
                    }
                }
                gpu.copy_buffer(src.cu(), self.cu_mut())?
            }
        }
        Ok(())
    }

    /// Sum of squares, accumulated in f64 (for norms in tests and diagnostics). A GPU tensor
    /// is copied to the host first (a driver failure panics).
    pub fn sum_sq(&self) -> f64 {
        match &self.storage {
            Storage::Host(v) => v.iter().map(|&v| v as f64 * v as f64).sum(),
            Storage::Cuda { .. } => check("sum_sq", self.to_vec().map_err(unwrap_cuda))
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum(),
        }
    }
}

/// This crate's errors from GPU calls are always `Error::Cuda`; unwrap for [`check`].
fn unwrap_cuda(e: Error) -> kernels::KernelError {
    match e {
        Error::Cuda(k) => k,
        other => kernels::KernelError::invalid("tensor", other.to_string()),
    }
}

impl Clone for Tensor {
    /// A copy on the same device that shares the buffer (no copy; on a GPU no launch) until
    /// either tensor is written, which copies it then (copy on write): values behave exactly
    /// like a deep copy.
    fn clone(&self) -> Self {
        let storage = match &self.storage {
            Storage::Host(v) => Storage::Host(Arc::clone(v)),
            Storage::Cuda { gpu, buf } => Storage::Cuda {
                gpu: Arc::clone(gpu),
                buf: Arc::clone(buf),
            },
        };
        Tensor {
            shape: self.shape.clone(),
            storage,
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.storage {
            Storage::Host(v) => f
                .debug_struct("Tensor")
                .field("shape", &self.shape)
                .field("data", v)
                .finish(),
            Storage::Cuda { .. } => f
                .debug_struct("Tensor")
                .field("shape", &self.shape)
                .field("device", &self.device())
                .finish(),
        }
    }
}

impl PartialEq for Tensor {
    /// Same shape and same values, wherever they live (GPU values are copied to the host to
    /// compare; a driver failure panics).
    fn eq(&self, other: &Self) -> bool {
        if self.shape != other.shape {
            return false;
        }
        match (&self.storage, &other.storage) {
            (Storage::Host(a), Storage::Host(b)) => a == b,
            _ => {
                let get = |t: &Tensor| check("eq", t.to_vec().map_err(unwrap_cuda));
                get(self) == get(other)
            }
        }
    }
}

/// Elements of `shape`; a product past `usize` is more than any allocator gives.
#[track_caller]
fn elements(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or_else(|| OutOfMemory::host("allocating a tensor", usize::MAX).raise())
}

/// How many chunks a parallel reduction over `n` items is split into. Fixed, so the order
/// of floating-point sums (and so every result bit) does not depend on the machine.
pub(crate) const REDUCE_CHUNKS: usize = 16;

/// Split `0..n` into at most `REDUCE_CHUNKS` contiguous ranges.
pub(crate) fn chunk_ranges(n: usize) -> Vec<std::ops::Range<usize>> {
    let chunks = n.clamp(1, REDUCE_CHUNKS);
    (0..chunks)
        .map(|i| (i * n / chunks)..((i + 1) * n / chunks))
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn tensors_and_devices_are_send_and_sync() {
        assert_send_sync::<Tensor>();
        assert_send_sync::<Device>();
    }

    /// Every launcher's kernel entries (the ops' here, and the runtime's own probes) agree with
    /// the `.cu` signatures, and every kernel of the sources has one: what each launch pushes
    /// is what its kernel reads, in every variant, without a GPU.
    #[test]
    fn every_kernel_is_launched_as_its_c_signature_says() {
        let launched: Vec<_> = conv::cuda::kernels()
            .chain(batchnorm::cuda::KERNELS)
            .chain(elementwise::cuda::KERNELS)
            .chain(shortcut::cuda::KERNELS)
            .chain(pool::cuda::KERNELS)
            .chain(linear::cuda::KERNELS)
            .chain(loss::cuda::KERNELS)
            .chain(sgd::cuda::KERNELS)
            .chain(augment::KERNELS)
            .chain(kernels::peak::KERNELS)
            .collect();
        kernels::signature::check(&launched).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn host_tensors_move_between_host_copies() {
        let t = Tensor::from_vec(&[2, 2], vec![1.0, -2.0, 3.5, 0.0]);
        assert_eq!(t.device(), Device::Cpu);
        assert!(!t.is_cuda());
        assert_eq!(t.to_host().unwrap(), t);
        assert_eq!(t.to_device(&Device::Cpu).unwrap(), t);
        assert_eq!(t.to_vec().unwrap(), t.data());
        assert_eq!(t.host_data(), Some(t.data()));
        let mut u = t.clone();
        u.move_to(&Device::Cpu).unwrap();
        assert_eq!(u, t);
        assert_eq!(
            Tensor::zeros_on(&[3], &Device::Cpu).unwrap(),
            Tensor::zeros(&[3])
        );
        assert_eq!(
            format!("{t:?}"),
            "Tensor { shape: [2, 2], data: [1.0, -2.0, 3.5, 0.0] }"
        );
    }
}
