//! [`Gpu`]: a CUDA context + stream with every kernel module compiled and loaded.
//!
//! **Compiled, not yet proven on a GPU.** This code type-checks and its host-side pieces are
//! unit-tested, but it has not been run against a real device yet (see `kernels/README.md`).

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{
    result, sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView,
    DeviceRepr, ValidAsZeroBits,
};

use crate::error::{guard, human_bytes, KernelError, Result};
use crate::nvrtc::{arch_for_capability, CompiledModule};
use crate::supply::Origin;
use crate::KERNELS;

/// Returns the driver error that cudarc set aside for `ctx`, if any, as found `when` (e.g.
/// "before synchronising the stream"). cudarc cannot return errors from destructors (a
/// buffer's `cuMemFreeAsync`, a stream's or event's destruction), so it stores them in the
/// context and hands the last one to the next call that binds the context, whatever that call
/// is. Checking where the step's work meets the host (synchronisation, a graph capture's end,
/// a replay) names the error for what it was instead of blaming that unrelated call.
pub(crate) fn check_deferred(ctx: &CudaContext, when: &str) -> Result<()> {
    ctx.check_err().map_err(|e| {
        KernelError::driver(
            format!(
                "releasing device memory or another driver object in a destructor (an error \
                 cudarc deferred, found {when})"
            ),
            e,
        )
    })
}

/// One device: context, one stream, and every kernel of [`KERNELS`] loaded and looked up.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    standin: bool,
    capability: (i32, i32),
    arch: String,
    origin: Origin,
    functions: HashMap<&'static str, CudaFunction>,
    // Keeps the modules alive for as long as the functions are (CudaFunction also holds an Arc).
    _modules: Vec<Arc<CudaModule>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field("capability", &self.capability)
            .field("arch", &self.arch)
            .field("kernels", &self.functions.len())
            .field("origin", &self.origin)
            .finish()
    }
}

/// The functions and modules of `modules` loaded into `ctx`: every kernel of [`KERNELS`],
/// looked up by name.
type Loaded = (HashMap<&'static str, CudaFunction>, Vec<Arc<CudaModule>>);

fn load_modules(
    ctx: &Arc<CudaContext>,
    modules: &[CompiledModule],
    origin: &Origin,
) -> Result<Loaded> {
    let mut functions = HashMap::new();
    let mut loaded = Vec::with_capacity(modules.len());
    for m in modules {
        let module = ctx.load_module(m.to_ptx()).map_err(|e| {
            KernelError::driver(
                format!(
                    "loading module {} ({origin}); a cubin or PTX from nvrtc 13.x needs a CUDA 13 \
                     driver (>= 580)",
                    m.file
                ),
                e,
            )
        })?;
        let names = KERNELS
            .iter()
            .find(|(module, _)| *module == m.name)
            .map(|(_, names)| *names)
            .unwrap_or(&[]);
        for &name in names {
            let f = module.load_function(name).map_err(|e| {
                KernelError::driver(format!("looking up kernel {name} in {}", m.file), e)
            })?;
            functions.insert(name, f);
        }
        loaded.push(module);
    }
    Ok((functions, loaded))
}

impl Gpu {
    /// Opens device `ordinal`: probes the driver (clean `Err` when absent, never a panic),
    /// creates the context and a stream, gets every module for the device (see
    /// [`crate::supply`]: compiled by nvrtc to a cubin for its exact architecture `sm_XY`, once
    /// per process, or read from the prebuilt kernels file where nvrtc is missing) and loads
    /// them. Cubins, not PTX, where there is one: they skip the driver's JIT, and load on any
    /// 13.x driver whichever nvrtc 13.x made them.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        let info = crate::probe::driver()?;
        if ordinal >= info.device_count as usize {
            return Err(KernelError::NoDriver(format!(
                "device ordinal {ordinal} requested but only {} CUDA device(s) present",
                info.device_count
            )));
        }
        guard("opening the CUDA device", || Self::open(ordinal))
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            KernelError::driver(format!("creating a context on device {ordinal}"), e)
        })?;
        let capability = ctx
            .compute_capability()
            .map_err(|e| KernelError::driver("querying the compute capability", e))?;
        let name = ctx
            .name()
            .map_err(|e| KernelError::driver("querying the device name", e))?;
        let standin = crate::probe::driver()?.standin.is_some();
        let arch = arch_for_capability(capability.0, capability.1);
        // Every buffer is used on the one stream below only, so work is already ordered.
        // cudarc's event tracking (on once a second stream exists) exists to order work across
        // streams: two events per allocation, and a wait plus a record per buffer argument of
        // every launch — driver calls that would only add host time to each of the step's
        // hundreds of launches. SAFETY: no buffer is ever used on another stream, and a drop's
        // free is stream-ordered (cuMemFreeAsync on the same stream) after its last use.
        unsafe { ctx.disable_event_tracking() };
        // A non-default stream: required for CUDA-graph capture later, and avoids the legacy
        // default stream's implicit synchronisation.
        let stream = ctx
            .new_stream()
            .map_err(|e| KernelError::driver("creating a stream", e))?;

        let supply = crate::supply::for_capability(capability)?;
        let (functions, modules) = load_modules(&ctx, &supply.modules, &supply.origin)?;
        let gpu = Gpu {
            ctx,
            stream,
            name,
            standin,
            capability,
            arch,
            origin: supply.origin,
            functions,
            _modules: modules,
        };
        gpu.keep_pool_memory()?;
        Ok(gpu)
    }

    /// Lets the stream-ordered pool keep the memory it has grown to. By default (release
    /// threshold 0) it hands every free block back to the driver at each synchronisation, and
    /// the next step's allocations must map it again; a training step allocates and frees the
    /// same few hundred buffers every time, so after the first step every allocation is then a
    /// reuse — what PyTorch's caching allocator does. No-op without a pool.
    fn keep_pool_memory(&self) -> Result<()> {
        let Some(pool) = self.current_pool()? else {
            return Ok(());
        };
        let mut keep_all: u64 = u64::MAX;
        // SAFETY: a valid pool; RELEASE_THRESHOLD is a cuuint64_t.
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep_all as *mut u64).cast(),
            )
        }
        .map_err(|e| KernelError::driver("setting the memory pool's release threshold", e))
    }

    /// Where this device's kernels came from (nvrtc or the prebuilt file).
    pub fn kernel_origin(&self) -> &Origin {
        &self.origin
    }

    /// Loads `modules` (from `origin`) into this device's context as well and looks up every
    /// kernel of [`KERNELS`] in them: whether they would serve this device, without replacing
    /// the ones it runs. Returns how many kernels were found. For `train doctor`.
    pub fn check_modules(&self, modules: &[CompiledModule], origin: &Origin) -> Result<usize> {
        guard("loading modules", || {
            load_modules(&self.ctx, modules, origin).map(|(functions, _)| functions.len())
        })
    }

    /// The loaded kernel modules (a captured graph keeps them alive).
    pub(crate) fn modules(&self) -> &[Arc<CudaModule>] {
        &self._modules
    }

    /// Bytes in use from the stream-ordered pool right now (`None` without a pool).
    pub fn pool_used_bytes(&self) -> Result<Option<u64>> {
        let Some(pool) = self.current_pool()? else {
            return Ok(None);
        };
        let mut used: u64 = 0;
        // SAFETY: a valid pool; USED_MEM_CURRENT is a cuuint64_t.
        unsafe {
            result::mem_pool::get_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
                (&mut used as *mut u64).cast(),
            )
        }
        .map_err(|e| KernelError::driver("reading the memory pool's use", e))?;
        Ok(Some(used))
    }

    /// Bytes of device memory associated with CUDA graphs right now (their working sets).
    pub fn graph_mem_used_bytes(&self) -> Result<u64> {
        let mut used: u64 = 0;
        // SAFETY: a valid device; USED_MEM_CURRENT is a cuuint64_t.
        unsafe {
            sys::cuDeviceGetGraphMemAttribute(
                self.ctx.cu_device(),
                sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT,
                (&mut used as *mut u64).cast(),
            )
        }
        .result()
        .map_err(|e| KernelError::driver("reading the graph memory in use", e))?;
        Ok(used)
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launcher in [`crate::launch`] enqueues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's name, as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this "GPU" is the stand-in driver (`kernels/standin`): the kernels run on the CPU
    /// under the emulator. Tests pick smaller shapes there; timings mean nothing.
    pub fn is_standin(&self) -> bool {
        self.standin
    }

    /// `(major, minor)` compute capability.
    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }

    /// The device's architecture, e.g. `sm_90`: what nvrtc compiles for (the prebuilt file may
    /// serve another image, see [`Gpu::kernel_origin`]).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// A loaded kernel by its `extern "C"` name.
    pub fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| KernelError::UnknownKernel(name.to_string()))
    }

    /// Blocks until all work queued on the stream has finished (surfaces asynchronous errors,
    /// and first any error a destructor left behind, see [`check_deferred`]).
    pub fn synchronize(&self) -> Result<()> {
        check_deferred(&self.ctx, "before synchronising the stream")?;
        self.stream
            .synchronize()
            .map_err(|e| KernelError::driver("synchronising the stream", e))?;
        crate::fault::synchronised();
        Ok(())
    }

    /// `(free, total)` bytes of device memory, as the driver sees it (`cuMemGetInfo`: cheap,
    /// no synchronisation). Memory that cudarc's stream-ordered pool holds after a free counts
    /// as used until the pool releases it (at the next synchronisation, see
    /// [`Gpu::pool_peak_bytes`]).
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(|e| KernelError::driver("querying free device memory", e))
    }

    /// The memory pool that cudarc's allocations come from (`cuMemAllocAsync` uses the
    /// device's current pool), or `None` where the device has no stream-ordered allocator
    /// (cudarc then uses plain `cuMemAlloc`).
    fn current_pool(&self) -> Result<Option<sys::CUmemoryPool>> {
        if !self.ctx.has_async_alloc() {
            return Ok(None);
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| KernelError::driver("binding the context", e))?;
        // SAFETY: the device handle comes from a live context.
        let pool = unsafe { result::device::get_mem_pool(self.ctx.cu_device()) }
            .map_err(|e| KernelError::driver("looking up the device's memory pool", e))?;
        Ok(Some(pool))
    }

    /// The high-water mark of live allocations from the memory pool since
    /// [`Gpu::reset_pool_peak`] (or since the context was created), in bytes: what PyTorch's
    /// `max_memory_allocated` reports. Stream-ordered, so it needs no synchronisation and is
    /// exact however far the host runs ahead. `None` without a stream-ordered allocator.
    pub fn pool_peak_bytes(&self) -> Result<Option<u64>> {
        let Some(pool) = self.current_pool()? else {
            return Ok(None);
        };
        let mut high: u64 = 0;
        // SAFETY: a valid pool; USED_MEM_HIGH is a cuuint64_t.
        unsafe {
            result::mem_pool::get_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut high as *mut u64).cast(),
            )
        }
        .map_err(|e| KernelError::driver("reading the memory pool's high-water mark", e))?;
        Ok(Some(high))
    }

    /// Sets [`Gpu::pool_peak_bytes`] back to zero (the driver allows no other value); the
    /// mark grows again from the next allocation on, to the memory in use then. No-op without
    /// a stream-ordered allocator.
    pub fn reset_pool_peak(&self) -> Result<()> {
        let Some(pool) = self.current_pool()? else {
            return Ok(());
        };
        let mut zero: u64 = 0;
        // SAFETY: a valid pool; USED_MEM_HIGH can only be reset to zero, as a cuuint64_t.
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut zero as *mut u64).cast(),
            )
        }
        .map_err(|e| KernelError::driver("resetting the memory pool's high-water mark", e))
    }

    /// Hands the pool's unused blocks back to the driver (after the work that freed them has
    /// run: synchronise first). Before a CUDA graph reserves its own memory, so that an eager
    /// step's cached working set and the graph's do not both stay resident; and before
    /// reporting free memory. No-op without a pool.
    pub fn trim_pool(&self) -> Result<()> {
        let Some(pool) = self.current_pool()? else {
            return Ok(());
        };
        // SAFETY: a valid pool.
        unsafe { sys::cuMemPoolTrimTo(pool, 0) }
            .result()
            .map_err(|e| KernelError::driver("trimming the memory pool", e))
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(host)
            .map_err(|e| {
                KernelError::driver(
                    format!(
                        "copying {} from host to device",
                        human_bytes(std::mem::size_of_val(host) as u64)
                    ),
                    e,
                )
            })
            .inspect(|_| {
                crate::fault::queued(crate::fault::Suspect::Transfer("a host-to-device copy"))
            })
    }

    /// A new zero-filled device buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(len).map_err(|e| {
            let bytes = len.saturating_mul(std::mem::size_of::<T>()) as u64;
            KernelError::driver(
                format!("allocating {} of device memory", human_bytes(bytes)),
                e,
            )
        })
    }

    /// A new device buffer of `len` f32 whose contents are whatever the allocator hands out:
    /// for op outputs that the op's kernel then writes in full, which saves the zero-fill
    /// (one memset launch per op output). No NaN or stale value can leak: every kernel's full
    /// coverage of its outputs is what the emulated parity tests check, by pre-filling every
    /// output with NaN. Plain `f32`, so any bit pattern is a valid value (no UB), only a
    /// meaningless one until written.
    pub fn uninit_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: every bit pattern is a valid f32; the memory is device memory that Rust never
        // reads before a kernel (or copy) writes it.
        unsafe { self.stream.alloc::<f32>(len) }.map_err(|e| {
            let bytes = len.saturating_mul(std::mem::size_of::<f32>()) as u64;
            KernelError::driver(
                format!("allocating {} of device memory", human_bytes(bytes)),
                e,
            )
        })
    }

    /// The device address of `buf`, for tables of buffers that one kernel walks (the
    /// multi-tensor SGD step). The address stays valid as long as `buf` is alive.
    pub fn address_of<T>(&self, buf: &CudaSlice<T>) -> u64 {
        use cudarc::driver::DevicePtr;
        // Event tracking is off (see `open`), so the returned guard records nothing.
        let (address, _guard) = buf.device_ptr(&self.stream);
        address
    }

    /// A new device buffer with the same contents as `src` (device-to-device copy, queued on
    /// the stream).
    pub fn clone_buffer<T: DeviceRepr>(&self, src: &CudaSlice<T>) -> Result<CudaSlice<T>> {
        self.stream
            .clone_dtod(src)
            .map_err(|e| {
                KernelError::driver(format!("copying {} elements on the device", src.len()), e)
            })
            .inspect(|_| {
                crate::fault::queued(crate::fault::Suspect::Transfer("a device-to-device copy"))
            })
    }

    /// Copies `src` into the existing buffer `dst` of the same length (device to device, queued
    /// on the stream; capturable in a CUDA graph).
    pub fn copy_buffer<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        if src.len() != dst.len() {
            return Err(KernelError::invalid(
                "copy_buffer",
                format!(
                    "source has {} elements, destination {}",
                    src.len(),
                    dst.len()
                ),
            ));
        }
        self.stream
            .memcpy_dtod(src, dst)
            .map_err(|e| KernelError::driver("copying on the device", e))
            .inspect(|_| {
                crate::fault::queued(crate::fault::Suspect::Transfer("a device-to-device copy"))
            })
    }

    /// Sets every element of `dst` to zero bits (queued on the stream).
    pub fn memset_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.stream
            .memset_zeros(dst)
            .map_err(|e| KernelError::driver("zero-filling a device buffer", e))
            .inspect(|_| crate::fault::queued(crate::fault::Suspect::Transfer("a memset")))
    }

    /// Copies `src` into the existing device buffer `dst` (same length).
    pub fn copy_to_device<T: DeviceRepr>(&self, src: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        if src.len() != dst.len() {
            return Err(KernelError::invalid(
                "copy_to_device",
                format!(
                    "host has {} elements, device buffer {}",
                    src.len(),
                    dst.len()
                ),
            ));
        }
        self.stream
            .memcpy_htod(src, dst)
            .map_err(|e| KernelError::driver("copying host to device", e))
            .inspect(|_| {
                crate::fault::queued(crate::fault::Suspect::Transfer("a host-to-device copy"))
            })
    }

    /// Copies a device buffer or view back to the host and waits for it. cudarc's `clone_dtoh`
    /// only queues the copy (`cuMemcpyDtoHAsync` into a new `Vec`, which the driver may fill
    /// later), so the stream is synchronised before the `Vec` is handed out; reports deferred
    /// errors first, as [`Gpu::synchronize`] does.
    pub fn download<T: DeviceRepr>(&self, dev: &CudaView<'_, T>) -> Result<Vec<T>> {
        check_deferred(&self.ctx, "before copying device to host")?;
        let host = self
            .stream
            .clone_dtoh(dev)
            .map_err(|e| KernelError::driver("copying device to host", e))?;
        // On failure `host` is dropped with the copy not complete: the error (a fault) means
        // the context is lost and the copy will never run.
        self.stream
            .synchronize()
            .map_err(|e| KernelError::driver("waiting for a device-to-host copy", e))?;
        crate::fault::synchronised();
        Ok(host)
    }
}
