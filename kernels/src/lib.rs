//! The GPU runtime of the hand-written CUDA kernels (`kernels/cuda/*.cu`): their sources,
//! compiled at run time by nvrtc (or taken from a prebuilt file), the device they run on, and
//! the machinery every launch goes through. The launchers themselves live with their ops (the
//! `tensor` crate, one folder per op, each naming its `.cu`).
//!
//! * [`SOURCES`]: every `kernels/cuda/*.cu` file, embedded at build time (see `build.rs`).
//! * [`KERNELS`]: the `extern "C" __global__` entry points each source must define.
//! * [`nvrtc`]: compile a source to PTX (`compute_XY`) or a cubin (`sm_XY`) for an
//!   architecture (needs only `libnvrtc.so.13`).
//! * [`prebuilt`]: the prebuilt kernels file (`cargo xtask cubins`): every kernel compiled
//!   ahead of time, for machines without nvrtc; [`supply`] picks nvrtc or the file for a device.
//! * [`probe`]: check that libcuda / libnvrtc can be loaded *before* cudarc touches them
//!   (cudarc panics when a library is missing; this crate returns [`KernelError`] instead).
//! * [`doctor`]: the runtime facts `train doctor` reports (devices, the file, the cache).
//! * [`Gpu`]: context + stream + every module compiled for the device, kernels by name.
//! * [`launch`]: kernels named by data (an entry, or a table of variants), the checked launch
//!   and parameter packing, the length and index-range checks every launcher makes.
//! * [`signature`]: the kernels' C signatures parsed from the sources, and the check that holds
//!   every launcher's entries to them (no GPU needed).
//! * [`graph`]: capture a sequence of launches (a training step) and replay it with one call.
//! * [`peak`]: the device's tensor-core and fp32 ceilings (for the kernel benchmark).
//!
//! `kernels/README.md` lists each kernel, its CPU twin and how each is checked.

pub mod device;
pub mod doctor;
pub mod error;
pub mod fault;
pub mod graph;
pub mod launch;
pub mod nvrtc;
pub mod peak;
pub mod prebuilt;
pub mod probe;
pub mod signature;
pub mod supply;

/// The driver's error and result code, for matching on (e.g. `CUDA_ERROR_OUT_OF_MEMORY`) and
/// for fabricating driver errors in tests.
pub use cudarc::driver::{sys::CUresult, DriverError};
/// The cudarc buffer types the launchers take, re-exported so that the launchers (the `tensor`
/// crate) need no direct cudarc dependency.
pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
pub use device::Gpu;
pub use error::{human_bytes, KernelError, Result};
pub use graph::Graph;

/// One embedded CUDA source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSource {
    /// Module name: the file name without `.cu` (e.g. `"conv"`).
    pub name: &'static str,
    /// File name inside `kernels/cuda/` (e.g. `"conv.cu"`).
    pub file: &'static str,
    /// The full CUDA C++ text.
    pub source: &'static str,
    /// 64-bit FNV-1a hash of `source` (for caches keyed on kernel content).
    pub hash: u64,
}

include!(concat!(env!("OUT_DIR"), "/sources.rs"));

/// Every kernel entry point, grouped by the module (source file) that defines it.
/// Tests check that each name is a `extern "C" __global__` in the source and in the PTX.
pub const KERNELS: &[(&str, &[&str])] = &[
    ("augment", &["augment_batch"]),
    (
        "batchnorm",
        &[
            "batchnorm_forward_train_partial",
            "batchnorm_forward_train_apply",
            "batchnorm_forward_eval",
            "batchnorm_backward_partial",
            "batchnorm_backward_apply",
        ],
    ),
    (
        "conv",
        &[
            "conv2d_forward",
            "conv2d_forward_m32",
            "conv2d_forward_m16",
            "conv2d_backward_data",
            "conv2d_backward_data_m32",
            "conv2d_backward_data_m16",
            "conv2d_backward_weight_partial",
            "conv2d_backward_weight_partial_m32",
            "conv2d_backward_weight_partial_m16",
            "conv2d_split_reduce",
        ],
    ),
    (
        "conv_bf16",
        &[
            "conv2d_forward_bf16",
            "conv2d_forward_bf16_m32",
            "conv2d_forward_bf16_m16",
            "conv2d_backward_data_bf16",
            "conv2d_backward_data_bf16_m32",
            "conv2d_backward_data_bf16_m16",
            "conv2d_backward_weight_partial_bf16",
            "conv2d_backward_weight_partial_bf16_m32",
            "conv2d_backward_weight_partial_bf16_m16",
        ],
    ),
    (
        "elementwise",
        &[
            "relu_forward",
            "relu_backward",
            "add_forward",
            "add_relu_forward",
            "accumulate",
        ],
    ),
    (
        "loss",
        &["softmax_xent_forward_backward", "softmax_xent_forward"],
    ),
    (
        "pool_fc",
        &[
            "avgpool_forward",
            "avgpool_backward",
            "linear_forward",
            "linear_backward_data",
            "linear_backward_weight",
        ],
    ),
    ("peak", &["peak_mma_bf16", "peak_fma_f32"]),
    ("sgd", &["sgd_step", "sgd_step_tensors", "zero_tensors"]),
    ("shortcut", &["shortcut_forward", "shortcut_backward"]),
];

/// The source with module name `name`, if any.
pub fn source(name: &str) -> Option<&'static KernelSource> {
    SOURCES.iter().find(|s| s.name == name)
}

/// The module (source name) that defines kernel `kernel`, if any.
pub fn module_of(kernel: &str) -> Option<&'static str> {
    KERNELS
        .iter()
        .find(|(_, names)| names.contains(&kernel))
        .map(|(module, _)| *module)
}
