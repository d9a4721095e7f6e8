//! `cuLaunchKernel`: everything a real driver refuses, refused the same way (and explained on
//! stderr, which a real driver does not do), then the parameter buffer assembled as the kernel's
//! C signature lays it out.

use std::ffi::c_void;

use crate::driver::{Driver, Function};
use crate::ops::Launch;
use crate::props;
use crate::status::*;

/// `CU_LAUNCH_PARAM_END`, `CU_LAUNCH_PARAM_BUFFER_POINTER`, `CU_LAUNCH_PARAM_BUFFER_SIZE`.
const PARAM_END: usize = 0;
const PARAM_BUFFER_POINTER: usize = 1;
const PARAM_BUFFER_SIZE: usize = 2;

fn refuse<T>(code: CUresult, why: String) -> Result<T, CUresult> {
    eprintln!("cuda-standin: launch refused ({}): {why}", name(code));
    Err(code)
}

/// Registers per warp are allocated in units of 256, per thread in multiples of 8.
fn registers_per_block(regs: u32, threads: u32) -> u32 {
    let per_warp = (regs.div_ceil(8) * 8 * 32).div_ceil(256) * 256;
    per_warp * threads.div_ceil(32)
}

impl Driver {
    /// Validates a launch of function `f` and copies its parameters.
    ///
    /// # Safety
    /// `kernel_params` / `extra` as for `cuLaunchKernel`.
    pub unsafe fn prepare_launch(
        &self,
        f: u64,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        kernel_params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> Result<Launch, CUresult> {
        let func = self.function(f)?;
        let k = &func.kernel;
        let name = &k.name;
        if grid.contains(&0) || block.contains(&0) {
            return refuse(
                CUDA_ERROR_INVALID_VALUE,
                format!("{name}: a zero grid {grid:?} or block {block:?} dimension"),
            );
        }
        if (0..3).any(|i| grid[i] > props::MAX_GRID[i]) {
            return refuse(
                CUDA_ERROR_INVALID_VALUE,
                format!("{name}: grid {grid:?} exceeds {:?}", props::MAX_GRID),
            );
        }
        let threads = block.iter().map(|&b| u64::from(b)).product::<u64>();
        if (0..3).any(|i| block[i] > props::MAX_BLOCK[i])
            || threads > u64::from(props::MAX_THREADS_PER_BLOCK)
        {
            return refuse(
                CUDA_ERROR_INVALID_VALUE,
                format!(
                    "{name}: block {block:?} ({threads} threads) exceeds 1024 threads or {:?}",
                    props::MAX_BLOCK
                ),
            );
        }
        let threads = threads as u32;
        if let Some(max) = k.max_threads.filter(|&m| threads > m) {
            return refuse(
                CUDA_ERROR_INVALID_VALUE,
                format!("{name}: {threads} threads per block, but the kernel was compiled for at most {max} (__launch_bounds__)"),
            );
        }
        if let Some(regs) = k.registers {
            let need = registers_per_block(regs, threads);
            if need > props::REGISTERS_PER_SM {
                return refuse(
                    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                    format!(
                        "{name}: {threads} threads x {regs} registers need {need} of the SM's {}",
                        props::REGISTERS_PER_SM
                    ),
                );
            }
        }
        check_shared(func, shared)?;
        let params = collect_params(func, kernel_params, extra)?;
        Ok(Launch {
            kernel: k.clone(),
            grid,
            block,
            params,
        })
    }
}

fn check_shared(func: &Function, dynamic: u32) -> Result<(), CUresult> {
    let k = &func.kernel;
    let total = u64::from(k.static_shared) + u64::from(dynamic);
    if u64::from(k.static_shared) > u64::from(props::SHARED_PER_BLOCK) {
        return refuse(
            CUDA_ERROR_INVALID_VALUE,
            format!(
                "{}: {} bytes of static shared memory, over the 48 KiB limit",
                k.name, k.static_shared
            ),
        );
    }
    let allowed = u64::from(props::SHARED_PER_BLOCK)
        .max(u64::from(k.static_shared) + u64::from(func.max_dynamic_shared));
    if total > allowed || total > u64::from(props::SHARED_PER_BLOCK_OPTIN) {
        return refuse(
            CUDA_ERROR_INVALID_VALUE,
            format!(
                "{}: {} bytes of shared memory ({} static + {dynamic} dynamic) exceed the {allowed} allowed \
                 (more than 48 KiB needs CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                k.name, total, k.static_shared
            ),
        );
    }
    Ok(())
}

/// The parameter buffer, from either `kernelParams` (an array of pointers to each value, as
/// many as the signature has: the driver cannot check the count) or `extra` (one packed buffer
/// and its size, which must be exactly the signature's).
unsafe fn collect_params(
    func: &Function,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<Vec<u8>, CUresult> {
    let k = &func.kernel;
    match (kernel_params.is_null(), extra.is_null()) {
        (false, false) => refuse(
            CUDA_ERROR_INVALID_VALUE,
            format!("{}: both kernelParams and extra given", k.name),
        ),
        (true, true) if k.param_bytes > 0 => refuse(
            CUDA_ERROR_INVALID_VALUE,
            format!(
                "{}: no parameters given, the kernel takes {} bytes",
                k.name, k.param_bytes
            ),
        ),
        (true, true) => Ok(Vec::new()),
        (false, true) => {
            let mut buf = vec![0u8; k.param_bytes];
            for (i, &(offset, size)) in k.params.iter().enumerate() {
                let p = *kernel_params.add(i);
                if p.is_null() {
                    return refuse(
                        CUDA_ERROR_INVALID_VALUE,
                        format!("{}: kernelParams[{i}] is null", k.name),
                    );
                }
                std::ptr::copy_nonoverlapping(p as *const u8, buf.as_mut_ptr().add(offset), size);
            }
            Ok(buf)
        }
        (true, false) => {
            let (mut data, mut size) = (std::ptr::null::<u8>(), None::<usize>);
            let mut i = 0;
            loop {
                match *extra.add(i) as usize {
                    PARAM_END => break,
                    PARAM_BUFFER_POINTER => data = *extra.add(i + 1) as *const u8,
                    PARAM_BUFFER_SIZE => size = Some(*(*extra.add(i + 1) as *const usize)),
                    other => {
                        return refuse(
                            CUDA_ERROR_INVALID_VALUE,
                            format!("{}: unknown `extra` key {other}", k.name),
                        )
                    }
                }
                i += 2;
            }
            let (Some(size), false) = (size, data.is_null()) else {
                return refuse(
                    CUDA_ERROR_INVALID_VALUE,
                    format!("{}: `extra` lacks the buffer pointer or its size", k.name),
                );
            };
            if size != k.param_bytes {
                let sizes: Vec<usize> = k.params.iter().map(|p| p.1).collect();
                return refuse(
                    CUDA_ERROR_INVALID_VALUE,
                    format!(
                        "{}: a parameter buffer of {size} bytes, but its C signature takes {} bytes ({} parameters of sizes {sizes:?})",
                        k.name,
                        k.param_bytes,
                        k.params.len()
                    ),
                );
            }
            Ok(std::slice::from_raw_parts(data, size).to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_allocation_granularity() {
        // 10 registers -> 16 per thread -> 512 per warp; 8 warps.
        assert_eq!(registers_per_block(10, 256), 4096);
        // 167 registers x 128 threads: 168 * 32 = 5376 per warp, 4 warps.
        assert_eq!(registers_per_block(167, 128), 21504);
        // 255 registers x 1024 threads does not fit in 64K.
        assert!(registers_per_block(255, 1024) > props::REGISTERS_PER_SM);
    }
}
