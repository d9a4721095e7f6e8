//! The launch machinery every launcher is built on (the launchers themselves live with their
//! ops, in the `tensor` crate):
//!
//! * a kernel is named by data: a [`Kernel`] (its name and the kinds of its C parameters), or a
//!   [`KernelTable`] of variants that share one C signature, each selected by a tag (the conv
//!   kernels by precision and tile), so that a launch site is one call whatever the variant;
//! * [`Kernel::launch`] packs the arguments into the kernel's parameter buffer ([`Launch`]),
//!   refusing any whose Rust type is not the kind the kernel's entry says, and queues it on
//!   [`Gpu::stream`](crate::Gpu::stream); nothing synchronises;
//! * the entries themselves are held to the `.cu` sources by [`crate::signature::check`], so every
//!   variant is checked against its C signature, GPU or not;
//! * the checks every launcher makes before it queues anything: lengths ([`check_len`]),
//!   non-zero dimensions ([`check_positive`]) and the kernels' 32-bit index range ([`to_int`],
//!   [`MAX_LEN`]). An out-of-bounds GPU write is silent corruption, so a wrong length is an
//!   `Err`, never a launch.
//!
//! Launcher conventions: inputs are `&CudaView<T>`, outputs `&mut CudaViewMut<T>` (call
//! `.as_view()` / `.as_view_mut()` on a `CudaSlice`, or slice a flat parameter buffer). `beta`
//! arguments: `0.0` overwrites the output (which is then never read, so it may be
//! uninitialised), `1.0` accumulates into it.

use std::fmt::Debug;

use cudarc::driver::{sys, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

/// A launch's grid, block and shared memory (cudarc's).
pub use cudarc::driver::LaunchConfig;
pub use kernel_abi::{Elem, Param, ParamBuffer};

use crate::error::{KernelError, Result};
use crate::Gpu;

/// Threads per block for the 1-D grid-stride kernels.
pub const BLOCK_1D: u32 = 256;
/// Grid cap for 1-D grid-stride kernels (they loop, so any grid size is correct).
pub const MAX_GRID_1D: u32 = 65_535;

/// Launch configuration for a 1-D grid-stride kernel over `n` elements.
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK_1D as usize).clamp(1, MAX_GRID_1D as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK_1D, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The most any count a kernel indexes with `int` may be: 2^31 − 2^24 = 2,130,706,432. Every
/// launcher checks every length and dimension it passes against it ([`to_int`]), and it leaves
/// the margin the kernels' own index arithmetic needs below `INT_MAX`: a grid-stride loop
/// `for (int i = ..; i < n; i += gridDim.x * blockDim.x)` computes indices up to n − 1 + its
/// stride, at most [`MAX_GRID_1D`] × [`BLOCK_1D`] < 2^24 (with n = `INT_MAX`, as the launchers
/// used to allow, the last step wrapped to a negative index); the conv tiles step up to one
/// tile (≤ 256 columns, 32 k) past their GEMM's edge, and BatchNorm's chunks up to 4095 values
/// past a channel's end.
///
/// Refusing, rather than indexing in 64 bits, for speed: the kernels decode indices with
/// integer division and modulo (shortcut, augment, BN eval, pooling; the conv tiles' pixel
/// decode divides by multiply-high on 32-bit operands, `conv_ops.cuh`'s `FastDiv`), and a
/// 64-bit division is a software routine several times the cost of a 32-bit one on NVIDIA
/// GPUs, while 64-bit indices take two registers each in kernels kept free of spills. The
/// project's tensors are far below the limit (the largest, a ResNet-34 width-64 activation at
/// batch 128, has 8.4M elements), and one rule checked in one place is clearer than widened
/// arithmetic in every kernel.
pub const MAX_LEN: usize = (1 << 31) - (1 << 24);
const _: () = assert!(MAX_GRID_1D as usize * BLOCK_1D as usize <= (1 << 31) - MAX_LEN);

/// `v` as the kernels' `int`, refused past [`MAX_LEN`] (not merely past `i32::MAX`).
pub fn to_int(kernel: &'static str, what: &str, v: usize) -> Result<i32> {
    if v > MAX_LEN {
        return Err(KernelError::invalid(
            kernel,
            format!(
                "{what} = {v} is past the kernels' 32-bit index range (at most {MAX_LEN} = \
                 2^31 - 2^24, so that no index a kernel computes passes INT_MAX)"
            ),
        ));
    }
    Ok(v as i32)
}

/// `Err` naming `what` unless it has exactly `want` elements.
pub fn check_len(kernel: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(KernelError::invalid(
            kernel,
            format!("{what} has {got} elements, expected {want}"),
        ))
    }
}

/// `Err` naming the first of `dims` that is zero.
pub fn check_positive(kernel: &'static str, dims: &[(&str, usize)]) -> Result<()> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((what, _)) => Err(KernelError::invalid(kernel, format!("{what} must be > 0"))),
        None => Ok(()),
    }
}

// Kernels named by data, and the one way to launch them.
//
// A launcher declares what it launches as a [`Kernel`] (a name and the kinds of its C
// parameters) or a [`KernelTable`] (variants of one C signature, each with the tag that selects
// it), and launches through [`Kernel::launch`]: each argument's kind comes from its Rust type
// ([`KernelArg`]) and must be the entry's, in order and in number, or the launch is refused.
// `signature::check` holds every entry to its kernel's C signature, so what is pushed is what
// the kernel reads, for every variant.
//
// The launch reaches the driver as one packed parameter buffer (`CU_LAUNCH_PARAM_BUFFER_POINTER`
// with its size) rather than an array of pointers to each value: the size says how many bytes
// we pass, so a launch whose arguments do not match the kernel's C signature can be refused
// instead of read past (the stand-in driver checks it against the cubin's parameter table).

/// The parameter kinds under the names the launchers' entries use (`In` = `const T*`, `Out` =
/// `T*`), e.g. `&[F32_IN, F32_OUT, I32]` for `(const float* x, float* y, int n)`.
pub mod arg {
    use super::{Elem, Param};

    pub const F32_IN: Param = Param::In(Elem::F32);
    pub const F32_OUT: Param = Param::Out(Elem::F32);
    pub const F64_OUT: Param = Param::Out(Elem::F64);
    pub const I32_IN: Param = Param::In(Elem::I32);
    pub const I32_OUT: Param = Param::Out(Elem::I32);
    pub const U8_IN: Param = Param::In(Elem::U8);
    pub const U64_IN: Param = Param::In(Elem::U64);
    pub const I32: Param = Param::I32;
    pub const F32: Param = Param::F32;
}

/// One kernel: its name in the sources and the kinds of its parameters, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    pub name: &'static str,
    pub params: &'static [Param],
}

impl Kernel {
    /// The kernel `name`, taking `params`: one entry of an op's kernel table.
    pub const fn new(name: &'static str, params: &'static [Param]) -> Self {
        Kernel { name, params }
    }
}

/// Variants of one kernel that share its C signature, each selected by a tag (e.g. precision
/// and tile): the launch site looks the name up instead of matching on the tag, so one call
/// launches any variant.
#[derive(Debug)]
pub struct KernelTable<T: 'static> {
    /// The parameters every variant takes.
    pub params: &'static [Param],
    /// (tag, kernel name) per variant.
    pub variants: &'static [(T, &'static str)],
}

impl<T: Copy + PartialEq + Debug> KernelTable<T> {
    /// The variant tagged `tag`; `Err` when the table has none (a gap in the table).
    pub fn get(&self, tag: T) -> Result<Kernel> {
        match self.variants.iter().find(|(t, _)| *t == tag) {
            Some(&(_, name)) => Ok(Kernel {
                name,
                params: self.params,
            }),
            None => Err(KernelError::invalid(
                self.variants.first().map_or("?", |v| v.1),
                format!("no variant tagged {tag:?} in its table"),
            )),
        }
    }

    /// Every variant, for the signature check.
    pub fn kernels(&self) -> impl Iterator<Item = Kernel> + '_ {
        self.variants.iter().map(|&(_, name)| Kernel {
            name,
            params: self.params,
        })
    }
}

impl Kernel {
    /// Starts a launch of this kernel on `gpu`'s stream with `cfg`: push the arguments in the
    /// C signature's order ([`Launch::arg`]), then [`Launch::run`].
    pub fn launch(self, gpu: &Gpu, cfg: LaunchConfig) -> Launch<'_> {
        Launch {
            gpu,
            cfg,
            packed: Packing::new(self),
        }
    }
}

/// A launch being assembled: the arguments packed so far, checked one by one against the
/// kernel's entry.
#[must_use = "a launch is queued only by `run`"]
pub struct Launch<'g> {
    gpu: &'g Gpu,
    cfg: LaunchConfig,
    packed: Packing,
}

impl Launch<'_> {
    /// Packs the next argument, if its kind is the next one of the kernel's entry (else
    /// [`Launch::run`] refuses the launch).
    pub fn arg<A: KernelArg>(mut self, a: A) -> Self {
        if self.packed.next_is(A::PARAM) {
            a.push(self.gpu, &mut self.packed.params);
        }
        self
    }

    /// [`Launch::arg`] for each of `ints`, in order.
    pub fn ints(self, ints: &[i32]) -> Self {
        ints.iter().fold(self, |l, &v| l.arg(v))
    }

    /// Queues the kernel with the packed arguments, unless one was of the wrong kind or their
    /// number is not the entry's.
    pub fn run(self) -> Result<()> {
        let name = self.packed.kernel.name;
        let params = self.packed.finish()?;
        self.gpu.launch_packed(name, self.cfg, &params)
    }
}

/// A kernel's parameter buffer being filled, and the check of each argument's kind.
struct Packing {
    kernel: Kernel,
    params: ParamBuffer,
    pushed: usize,
    /// The first argument whose kind is not the entry's.
    wrong: Option<String>,
}

impl Packing {
    fn new(kernel: Kernel) -> Self {
        Packing {
            kernel,
            params: ParamBuffer::new(),
            pushed: 0,
            wrong: None,
        }
    }

    /// Counts an argument of kind `got`: whether it is the entry's next (then the caller packs
    /// it).
    fn next_is(&mut self, got: Param) -> bool {
        let want = self.kernel.params.get(self.pushed).copied();
        self.pushed += 1;
        if want == Some(got) {
            return true;
        }
        if self.wrong.is_none() {
            self.wrong = Some(format!(
                "argument {} is {got:?}, the kernel's entry says {}",
                self.pushed - 1,
                want.map_or("no more".to_string(), |w| format!("{w:?}"))
            ));
        }
        false
    }

    /// The buffer, if every argument had its kind and none was missing.
    fn finish(self) -> Result<ParamBuffer> {
        let Kernel { name, params } = self.kernel;
        if let Some(wrong) = self.wrong {
            return Err(KernelError::invalid(name, wrong));
        }
        if self.pushed != params.len() {
            return Err(KernelError::invalid(
                name,
                format!("{} arguments for {} parameters", self.pushed, params.len()),
            ));
        }
        Ok(self.params)
    }
}

/// `launch!(kernel, gpu, cfg; arg, ...)`: [`Kernel::launch`], each argument pushed in order
/// ([`Launch::arg`]), then [`Launch::run`]. Only syntax: the kinds still come from the
/// arguments' Rust types and are held to the kernel's entry.
#[macro_export]
macro_rules! launch {
    ($kernel:expr, $gpu:expr, $cfg:expr; $($arg:expr),* $(,)?) => {
        $kernel.launch($gpu, $cfg)$(.arg($arg))*.run()
    };
}

/// An element type a kernel's pointer parameter can point to.
pub trait DeviceElem {
    const ELEM: Elem;
}

impl DeviceElem for f32 {
    const ELEM: Elem = Elem::F32;
}
impl DeviceElem for f64 {
    const ELEM: Elem = Elem::F64;
}
impl DeviceElem for i32 {
    const ELEM: Elem = Elem::I32;
}
impl DeviceElem for u8 {
    const ELEM: Elem = Elem::U8;
}
impl DeviceElem for u64 {
    const ELEM: Elem = Elem::U64;
}

/// A value that can be a kernel argument, and the parameter kind its type stands for: a view
/// is a `const T*`, a mutable view a `T*`, `i32` an `int`, `f32` a `float`.
pub trait KernelArg {
    const PARAM: Param;
    fn push(self, gpu: &Gpu, params: &mut ParamBuffer);
}

impl<T: DeviceElem> KernelArg for &CudaView<'_, T> {
    const PARAM: Param = Param::In(T::ELEM);
    fn push(self, gpu: &Gpu, params: &mut ParamBuffer) {
        params.push(gpu.addr_of_view(self));
    }
}

impl<T: DeviceElem> KernelArg for &mut CudaViewMut<'_, T> {
    const PARAM: Param = Param::Out(T::ELEM);
    fn push(self, gpu: &Gpu, params: &mut ParamBuffer) {
        params.push(gpu.addr_of_view_mut(self));
    }
}

impl KernelArg for i32 {
    const PARAM: Param = Param::I32;
    fn push(self, _: &Gpu, params: &mut ParamBuffer) {
        params.push(self);
    }
}

impl KernelArg for f32 {
    const PARAM: Param = Param::F32;
    fn push(self, _: &Gpu, params: &mut ParamBuffer) {
        params.push(self);
    }
}

impl Gpu {
    /// The device address of a view (a kernel's `const T*`).
    pub(crate) fn addr_of_view<T>(&self, v: &CudaView<'_, T>) -> u64 {
        // Event tracking is off (see `Gpu::open`): the guard records nothing.
        let (addr, _guard) = v.device_ptr(self.stream());
        addr
    }

    /// The device address of a mutable view (a kernel's `T*`).
    pub(crate) fn addr_of_view_mut<T>(&self, v: &mut CudaViewMut<'_, T>) -> u64 {
        let (addr, _guard) = v.device_ptr_mut(self.stream());
        addr
    }

    /// Queues kernel `name` on the stream with `params`.
    pub(crate) fn launch_packed(
        &self,
        name: &'static str,
        cfg: LaunchConfig,
        params: &ParamBuffer,
    ) -> Result<()> {
        let func = self.function(name)?.cu_function();
        self.context()
            .bind_to_thread()
            .map_err(|e| KernelError::driver(format!("binding the context to launch {name}"), e))?;
        let mut size = params.as_bytes().len();
        // The keys are small integers cast to pointers, as CUDA's header defines them.
        let key = |k: usize| std::ptr::without_provenance_mut::<std::ffi::c_void>(k);
        let mut extra = [
            key(1), // CU_LAUNCH_PARAM_BUFFER_POINTER
            params.as_bytes().as_ptr() as *mut std::ffi::c_void,
            key(2), // CU_LAUNCH_PARAM_BUFFER_SIZE
            (&mut size as *mut usize).cast(),
            key(0), // CU_LAUNCH_PARAM_END
        ];
        let (g, b) = (cfg.grid_dim, cfg.block_dim);
        // SAFETY: a function of this context; `extra` describes a buffer that lives until the
        // call returns (the driver copies it); the caller validated every buffer's length.
        unsafe {
            sys::cuLaunchKernel(
                func,
                g.0,
                g.1,
                g.2,
                b.0,
                b.1,
                b.2,
                cfg.shared_mem_bytes,
                self.stream().cu_stream(),
                std::ptr::null_mut(),
                extra.as_mut_ptr(),
            )
        }
        .result()
        .map_err(|e| {
            if crate::fault::launches_block() && crate::fault::is_kernel_fault(e.0) {
                // The launch waited for the kernel: the fault is this kernel's own.
                return KernelError::KernelFault {
                    suspect: crate::fault::Suspect::Kernel(name),
                    queued: 1,
                    code: e.0,
                    noticed: format!("launching {name} (CUDA_LAUNCH_BLOCKING=1)"),
                };
            }
            KernelError::driver(format!("launching {name}"), e)
        })?;
        crate::fault::queued(crate::fault::Suspect::Kernel(name));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
