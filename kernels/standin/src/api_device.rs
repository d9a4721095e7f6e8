//! Initialisation, the device and its primary context, error strings, modules, functions and
//! kernel launches.

use std::ffi::{c_char, c_void};

use crate::driver::{self, Function, CONTEXT, CURRENT};
use crate::ffi::{entry, out};
use crate::ops::Op;
use crate::status::*;
use crate::{module, props};

const KIND_MODULE: u64 = 0x40;
const KIND_FUNCTION: u64 = 0xf0;

/// The driver version the stand-in reports: CUDA 13.0 (driver 580).
pub const DRIVER_VERSION: i32 = 13000;

entry! {
    fn cuInit(flags: u32) {
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        match driver::init() {
            CUDA_SUCCESS => Ok(()),
            e => Err(e),
        }
    }
    fn cuDriverGetVersion(version: *mut i32) {
        out(version, DRIVER_VERSION)
    }
    fn cuDeviceGetCount(count: *mut i32) {
        driver::with_any(|_| out(count, 1))
    }
    fn cuDeviceGet(device: *mut i32, ordinal: i32) {
        driver::with_any(|_| if ordinal == 0 { out(device, 0) } else { Err(CUDA_ERROR_INVALID_DEVICE) })
    }
    fn cuDeviceGetAttribute(value: *mut i32, attr: i32, dev: i32) {
        driver::with_any(|_| {
            if dev != 0 {
                return Err(CUDA_ERROR_INVALID_DEVICE);
            }
            out(value, props::attribute(attr).ok_or(CUDA_ERROR_INVALID_VALUE)?)
        })
    }
    fn cuDeviceGetName(name: *mut c_char, len: i32, dev: i32) {
        driver::with_any(|_| {
            if dev != 0 {
                return Err(CUDA_ERROR_INVALID_DEVICE);
            }
            if name.is_null() || len <= 0 {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let bytes = props::NAME.as_bytes();
            let n = bytes.len().min(len as usize - 1);
            // SAFETY: the caller's buffer holds `len` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), name.cast(), n);
                *name.add(n) = 0;
            }
            Ok(())
        })
    }
    fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: i32) {
        driver::with_any(|d| if dev == 0 { out(bytes, d.mem.limit as usize) } else { Err(CUDA_ERROR_INVALID_DEVICE) })
    }
    fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: i32) {
        driver::with_any(|_| if dev == 0 { out(uuid, *b"cuda-standin-H10") } else { Err(CUDA_ERROR_INVALID_DEVICE) })
    }
    fn cuDeviceGetUuid(uuid: *mut [u8; 16], dev: i32) {
        driver::with_any(|_| if dev == 0 { out(uuid, *b"cuda-standin-H10") } else { Err(CUDA_ERROR_INVALID_DEVICE) })
    }
    fn cuDevicePrimaryCtxRetain(ctx: *mut u64, dev: i32) {
        driver::with(|d| {
            if dev != 0 {
                return Err(CUDA_ERROR_INVALID_DEVICE);
            }
            d.primary_retains += 1;
            out(ctx, CONTEXT)
        })
    }
    fn cuDevicePrimaryCtxRelease_v2(dev: i32) {
        driver::with_any(|d| {
            if dev != 0 {
                return Err(CUDA_ERROR_INVALID_DEVICE);
            }
            d.primary_retains = d.primary_retains.checked_sub(1).ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
            Ok(())
        })
    }
    fn cuCtxGetCurrent(ctx: *mut u64) {
        driver::with_any(|_| out(ctx, if CURRENT.with(|c| c.get()) { CONTEXT } else { 0 }))
    }
    fn cuCtxSetCurrent(ctx: u64) {
        driver::with_any(|d| match ctx {
            0 => {
                CURRENT.with(|c| c.set(false));
                Ok(())
            }
            CONTEXT if d.primary_retains > 0 => {
                CURRENT.with(|c| c.set(true));
                Ok(())
            }
            _ => Err(CUDA_ERROR_INVALID_CONTEXT),
        })
    }
    fn cuCtxGetDevice(dev: *mut i32) {
        driver::with_ctx(|_| out(dev, 0))
    }
    fn cuGetErrorString(code: u32, text: *mut *const c_char) {
        let (_, _, t) = TABLE.iter().find(|(c, _, _)| *c == code).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        out(text, t.as_ptr())
    }
    fn cuGetErrorName(code: u32, text: *mut *const c_char) {
        let (_, n, _) = TABLE.iter().find(|(c, _, _)| *c == code).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        out(text, n.as_ptr())
    }
    fn cuModuleLoadData(module: *mut u64, image: *const c_void) {
        driver::with_ctx(|d| {
            // SAFETY: the caller's image, as for the real call.
            let m = unsafe { module::load(image.cast(), (props::CAPABILITY.0 * 10 + props::CAPABILITY.1) as u32) }
                .map_err(|(code, why)| {
                    eprintln!("cuda-standin: cuModuleLoadData: {why}");
                    code
                })?;
            let h = d.handle(KIND_MODULE);
            d.modules.insert(h, m);
            out(module, h)
        })
    }
    fn cuModuleUnload(module: u64) {
        driver::with_ctx(|d| {
            d.modules.remove(&module).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            d.functions.retain(|_, f| f.module != module);
            Ok(())
        })
    }
    fn cuModuleGetFunction(function: *mut u64, module: u64, name: *const c_char) {
        driver::with_ctx(|d| {
            if name.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            // SAFETY: a NUL-terminated name, as for the real call.
            let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
            let m = d.modules.get(&module).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            let kernel = m.kernels.get(name.as_ref()).cloned().ok_or(CUDA_ERROR_NOT_FOUND)?;
            let h = d.handle(KIND_FUNCTION);
            d.functions.insert(h, Function { kernel, module, max_dynamic_shared: 0 });
            out(function, h)
        })
    }
    fn cuFuncGetAttribute(value: *mut i32, attr: i32, function: u64) {
        driver::with_ctx(|d| {
            let f = d.function(function)?;
            let k = &f.kernel;
            let v = match attr {
                0 => k.max_threads.unwrap_or(props::MAX_THREADS_PER_BLOCK) as i32,
                1 => k.static_shared as i32,
                2 | 3 => 0,
                4 => k.registers.unwrap_or(32) as i32,
                5 | 6 => props::CAPABILITY.0 * 10 + props::CAPABILITY.1,
                7 => 0,
                8 => f.max_dynamic_shared as i32,
                9 => -1,
                _ => return Err(CUDA_ERROR_INVALID_VALUE),
            };
            out(value, v)
        })
    }
    fn cuFuncSetAttribute(function: u64, attr: i32, value: i32) {
        driver::with_ctx(|d| {
            let f = d.functions.get_mut(&function).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            match attr {
                8 if value >= 0 && value as u32 + f.kernel.static_shared <= props::SHARED_PER_BLOCK_OPTIN => {
                    f.max_dynamic_shared = value as u32;
                    Ok(())
                }
                7 | 9 => Ok(()),
                _ => Err(CUDA_ERROR_INVALID_VALUE),
            }
        })
    }
    fn cuLaunchKernel(
        function: u64,
        gx: u32, gy: u32, gz: u32,
        bx: u32, by: u32, bz: u32,
        shared: u32,
        stream: u64,
        kernel_params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) {
        driver::with_ctx(|d| {
            // SAFETY: the arguments as the caller passed them to cuLaunchKernel.
            let launch = unsafe { d.prepare_launch(function, [gx, gy, gz], [bx, by, bz], shared, kernel_params, extra) }?;
            d.enqueue(stream, Op::Kernel(launch), "cuLaunchKernel")?;
            // CUDA_LAUNCH_BLOCKING=1: the launch waits for the kernel, and reports its fault.
            match &d.sticky {
                Some((code, _)) if d.config.launch_blocking => Err(*code),
                _ => Ok(()),
            }
        })
    }
}
