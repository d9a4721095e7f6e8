//! How a launch reaches the driver: one packed parameter buffer (`CU_LAUNCH_PARAM_BUFFER_POINTER`
//! with its size) rather than an array of pointers to each value. The buffer's size says how
//! many bytes we pass, so a launch whose arguments do not match the kernel's C signature can be
//! refused instead of read past: the stand-in driver checks it against the cubin's parameter
//! table (and `signature::check` holds every launcher's entry to the sources, GPU or not).

use cudarc::driver::{sys, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig};

use super::ParamBuffer;
use crate::error::{KernelError, Result};
use crate::Gpu;

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
