//! The CUDA kernels of `kernels/cuda/*.cu`, compiled unmodified with the host C++ compiler
//! against a small emulation header (`cuda_emu.h`: a block's threads are fibers, the blocks of a
//! grid are shared out among a few OS threads, `__syncthreads` and warp collectives are
//! cooperative barriers) and reached through one table, generated from the sources by
//! `build.rs`:
//!
//! * [`kernel`] / [`launch`]: a kernel by name, run with a CUDA-style parameter buffer (what the
//!   stand-in CUDA driver, `kernels/standin`, does for `cuLaunchKernel`);
//! * `emu_<kernel>(grid, block, args...)`: typed wrappers generated from the same table, for the
//!   parity tests in `tests/emulated/`.
//!
//! Memory checks: the kernels are compiled with `-fsanitize=thread` instrumentation (no
//! sanitizer runtime: the callbacks are the emulator's), so once a device arena is registered
//! ([`mem_set_arena`], [`mem_map`]; [`DevVec`] does both for tests) every access inside it must
//! fall in a mapped range and be aligned to its width, or the launch stops with a [`Fault`] that
//! names kernel, block, thread and address. Every `__shared__` access is checked against its
//! variable. Accesses to other host memory are not checked.
//!
//! Schedules and racecheck ([`LaunchOptions`], or `CUDA_EMU_SCHEDULE` / `CUDA_EMU_RACECHECK` for
//! [`launch`]): the order in which a block's threads run (ascending, descending, random with
//! switches at memory accesses), the same launch under several schedules with its results
//! compared word for word, and shadow state that reports shared- and device-memory races as
//! compute-sanitizer's racecheck would ([`Hazard`]).
//!
//! The grid and block should be the `LaunchConfig` the op's real launcher builds (its `cuda.rs`
//! in the `tensor` crate); `tests/emulated/` takes them from there and checks every kernel
//! against its Rust CPU twin. See `kernels/README.md`, "Emulated on the CPU".

use std::ffi::{c_char, c_int, c_uint, CStr};

mod arena;
mod options;
pub use arena::DevVec;
pub use options::{LaunchOptions, Schedule, MAX_SCHEDULES};

/// A grid or block size, `#[repr(C)]` like the emulator's `EmuDim3`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Dim3 { x, y, z }
    }
}

const MAX_PARAMS: usize = 24;

#[repr(C)]
struct RawKernel {
    name: *const c_char,
    nparams: c_uint,
    param_bytes: c_uint,
    sizes: [c_uint; MAX_PARAMS],
    offsets: [c_uint; MAX_PARAMS],
    is_pointer: [c_uint; MAX_PARAMS],
    pointee: [c_uint; MAX_PARAMS],
    invoke: *const std::ffi::c_void,
}

#[repr(C)]
struct RawFault {
    kind: c_int,
    block: [c_uint; 3],
    thread: [c_uint; 3],
    address: u64,
    size: c_uint,
    is_write: c_int,
    hazard: c_int,
    shared: c_int,
    other_block: [c_uint; 3],
    other_thread: [c_uint; 3],
    message: [c_char; 1024],
}

extern "C" {
    fn emu_kernel_count() -> c_int;
    fn emu_kernel_at(index: c_int) -> *const RawKernel;
    fn emu_launch_with(
        index: c_int,
        grid: Dim3,
        block: Dim3,
        params: *const u8,
        options: *const options::RawOptions,
        fault: *mut RawFault,
    ) -> c_int;
    fn emu_mem_set_arena(lo: u64, span: u64);
    fn emu_mem_map(start: u64, size: u64, id: u64);
    fn emu_mem_unmap(start: u64) -> c_int;
    fn emu_mem_find(addr: u64, start: *mut u64, size: *mut u64, id: *mut u64) -> c_int;
    fn emu_fast_div(n: i32, d: i32) -> i32;
}

/// One kernel of the table: its name and its parameter buffer's layout.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    index: c_int,
    /// The `extern "C"` name.
    pub name: &'static str,
    /// Bytes of the parameter buffer (each parameter at its natural alignment, in order).
    pub param_bytes: usize,
    sizes: &'static [c_uint],
    offsets: &'static [c_uint],
    is_pointer: &'static [c_uint],
    pointee: &'static [c_uint],
}

impl Kernel {
    /// Each parameter in order: where it sits in the buffer and what it is.
    pub fn params(&self) -> impl Iterator<Item = ParamSlot> + '_ {
        (0..self.sizes.len()).map(|i| ParamSlot {
            offset: self.offsets[i] as usize,
            size: self.sizes[i] as usize,
            is_pointer: self.is_pointer[i] != 0,
            pointee: self.pointee[i] as usize,
        })
    }
}

/// One parameter of a kernel's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSlot {
    /// Byte offset in the buffer.
    pub offset: usize,
    /// Bytes.
    pub size: usize,
    /// A device address (else a scalar).
    pub is_pointer: bool,
    /// Bytes of what it points to: the alignment the address needs (0 for a scalar).
    pub pointee: usize,
}

/// Every kernel of `kernels/cuda/*.cu`, in the table's order.
pub fn kernels() -> impl Iterator<Item = Kernel> {
    // SAFETY: plain reads of the static table.
    (0..unsafe { emu_kernel_count() }).map(|i| unsafe {
        let raw = &*emu_kernel_at(i);
        let n = raw.nparams as usize;
        Kernel {
            index: i,
            name: CStr::from_ptr(raw.name)
                .to_str()
                .expect("ASCII kernel name"),
            param_bytes: raw.param_bytes as usize,
            sizes: &raw.sizes[..n],
            offsets: &raw.offsets[..n],
            is_pointer: &raw.is_pointer[..n],
            pointee: &raw.pointee[..n],
        }
    })
}

/// The kernel named `name`, if the sources define it.
pub fn kernel(name: &str) -> Option<Kernel> {
    kernels().find(|k| k.name == name)
}

/// Why a launch stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// An access inside the device arena that no live allocation covers
    /// (`CUDA_ERROR_ILLEGAL_ADDRESS` on a GPU).
    Address,
    /// An access not aligned to its size (`CUDA_ERROR_MISALIGNED_ADDRESS`).
    Misaligned,
    /// `__trap()`, a deadlocked barrier, a warp collective with missing lanes, an impossible
    /// launch shape (`CUDA_ERROR_ILLEGAL_INSTRUCTION` / a hang on a GPU); also a race
    /// ([`Fault::hazard`]), which a GPU would not stop for.
    Trap,
}

/// What racecheck or the schedule comparison found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HazardKind {
    /// A read of a word that another thread (or block) wrote, with nothing ordering the two.
    ReadAfterWrite,
    /// A write of a word that another thread (or block) read, unordered.
    WriteAfterRead,
    /// Two unordered writes of a word by different threads (or blocks).
    WriteAfterWrite,
    /// A `__shared__` word read before any thread of the block wrote it.
    UninitialisedSharedRead,
    /// The launch wrote different values under two schedules.
    ScheduleDependent,
}

/// A race, as [`Fault::hazard`] describes it. The faulting thread ([`Fault::block`],
/// [`Fault::thread`]) made the second access; `other_*` is the thread of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hazard {
    pub kind: HazardKind,
    /// On a `__shared__` word (else device memory).
    pub shared: bool,
    pub other_block: [u32; 3],
    pub other_thread: [u32; 3],
}

/// The first fault of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What kind of fault.
    pub kind: FaultKind,
    /// `blockIdx` of the faulting thread.
    pub block: [u32; 3],
    /// `threadIdx` of the faulting thread.
    pub thread: [u32; 3],
    /// The address accessed (0 for traps).
    pub address: u64,
    /// Bytes accessed.
    pub size: u32,
    /// A store (else a load).
    pub is_write: bool,
    /// A race (the kind is then [`FaultKind::Trap`]): what, and the other thread.
    pub hazard: Option<Hazard>,
    /// The report, in compute-sanitizer's words.
    pub message: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs `kernel` over `grid` x `block` with `params`, a buffer laid out as
/// [`Kernel::params`] says, under the options of the environment ([`LaunchOptions::from_env`];
/// a bad value there is a [`FaultKind::Trap`] naming it). Launches are serialised process-wide.
///
/// # Safety
/// Every pointer in `params` must be valid for what the kernel touches, or lie inside the
/// registered device arena (where a bad access is caught and reported instead).
pub unsafe fn launch(kernel: &Kernel, grid: Dim3, block: Dim3, params: &[u8]) -> Result<(), Fault> {
    match LaunchOptions::from_env() {
        Ok(options) => launch_with(kernel, grid, block, params, options),
        Err(message) => Err(Fault {
            kind: FaultKind::Trap,
            block: [0; 3],
            thread: [0; 3],
            address: 0,
            size: 0,
            is_write: false,
            hazard: None,
            message,
        }),
    }
}

/// [`launch`] with explicit options.
///
/// # Safety
/// As for [`launch`]. Under more than one schedule, every buffer the kernel writes must be in
/// the device arena (its old contents are put back between runs; a write elsewhere, other than
/// to the thread's own stack, is a fault).
pub unsafe fn launch_with(
    kernel: &Kernel,
    grid: Dim3,
    block: Dim3,
    params: &[u8],
    options: &LaunchOptions,
) -> Result<(), Fault> {
    assert_eq!(
        params.len(),
        kernel.param_bytes,
        "{}: parameter buffer size",
        kernel.name
    );
    let raw_options = options.raw();
    let mut raw: RawFault = std::mem::zeroed();
    let kind = emu_launch_with(
        kernel.index,
        grid,
        block,
        params.as_ptr(),
        &raw_options,
        &mut raw,
    );
    let kind = match kind {
        0 => return Ok(()),
        1 => FaultKind::Address,
        2 => FaultKind::Misaligned,
        _ => FaultKind::Trap,
    };
    let hazard = match raw.hazard {
        1 => Some(HazardKind::ReadAfterWrite),
        2 => Some(HazardKind::WriteAfterRead),
        3 => Some(HazardKind::WriteAfterWrite),
        4 => Some(HazardKind::UninitialisedSharedRead),
        5 => Some(HazardKind::ScheduleDependent),
        _ => None,
    }
    .map(|kind| Hazard {
        kind,
        shared: raw.shared != 0,
        other_block: raw.other_block,
        other_thread: raw.other_thread,
    });
    Err(Fault {
        kind,
        block: raw.block,
        thread: raw.thread,
        address: raw.address,
        size: raw.size,
        is_write: raw.is_write != 0,
        hazard,
        message: CStr::from_ptr(raw.message.as_ptr())
            .to_string_lossy()
            .into_owned(),
    })
}

/// Declares `[lo, lo + span)` the device arena: accesses inside it are checked against the
/// mapped ranges. `span = 0` turns the checks off.
///
/// # Safety
/// No launch may be running.
pub unsafe fn mem_set_arena(lo: u64, span: u64) {
    emu_mem_set_arena(lo, span)
}

/// Marks `[start, start + size)` as a live allocation (`id` names it in reports).
///
/// # Safety
/// No launch may be running; ranges must not overlap.
pub unsafe fn mem_map(start: u64, size: u64, id: u64) {
    emu_mem_map(start, size, id)
}

/// Unmaps the allocation at `start` (remembered as freed, for reports); `false` if none.
///
/// # Safety
/// No launch may be running.
pub unsafe fn mem_unmap(start: u64) -> bool {
    emu_mem_unmap(start) != 0
}

/// The live allocation that contains `addr` (or ends exactly there): `(start, size, id)`.
pub fn mem_find(addr: u64) -> Option<(u64, u64, u64)> {
    let (mut start, mut size, mut id) = (0, 0, 0);
    // SAFETY: reads the map under the emulator's lock.
    (unsafe { emu_mem_find(addr, &mut start, &mut size, &mut id) } != 0)
        .then_some((start, size, id))
}

/// conv_ops.cuh's `n / fast_div(d)` (multiply-high division), for n in [0, 2^31), d >= 1.
pub fn fast_div(n: i32, d: i32) -> i32 {
    // SAFETY: pure arithmetic.
    unsafe { emu_fast_div(n, d) }
}

pub use kernel_abi::ParamBuffer;

/// The generated wrappers' launch (the parity tests): every pointer parameter must point into a
/// device-arena allocation ([`DevVec`]), so that what the kernel touches is checked; panics with
/// the emulator's report on a fault.
fn run_or_panic(name: &str, g: Dim3, b: Dim3, p: &ParamBuffer) {
    let k = kernel(name).unwrap_or_else(|| panic!("kernel {name} is not in the table"));
    let bytes = p.as_bytes();
    for (i, slot) in k.params().enumerate() {
        if !slot.is_pointer {
            continue;
        }
        let addr = u64::from_ne_bytes(bytes[slot.offset..slot.offset + 8].try_into().unwrap());
        assert!(
            addr == 0 || mem_find(addr).is_some(),
            "{name}: pointer parameter #{i} ({addr:#x}) is not in a device-arena allocation: \
             pass kernels_emu::DevVec buffers (tests/emulated/common.rs: rand_vec, nan_vec, dev), \
             whose bounds the emulator checks"
        );
    }
    // SAFETY: the wrapper's caller vouches for the pointers.
    if let Err(fault) = unsafe { launch(&k, g, b, bytes) } {
        panic!("emulated {name} faulted:\n{fault}");
    }
}

include!(concat!(env!("OUT_DIR"), "/wrappers.rs"));
