//! Memory entry points: allocation (synchronous, stream-ordered, in a capture), copies, memsets,
//! page-locked host memory, the pool and graph-memory queries.

use std::ffi::c_void;

use crate::config::FailPoint;
use crate::driver::{self, Driver, POOL};
use crate::ffi::{entry, out};
use crate::memory::Owner;
use crate::ops::Op;
use crate::status::*;

impl Driver {
    fn alloc_async(&mut self, bytes: u64, stream: u64) -> Result<u64, CUresult> {
        let key = self.stream_key(stream)?;
        self.legacy_stream_use(key, "cuMemAllocAsync")?;
        if bytes == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if let Some(cap) = self.capturing(key)? {
            let graph = cap.id;
            let addr = self.mem.reserve(bytes, Owner::Graph(graph))?;
            let cap = self.capturing(key)?.expect("capturing");
            cap.allocs.push(addr);
            cap.ops.push(Op::Alloc { addr });
            return Ok(addr);
        }
        self.counters.allocs += 1;
        if self.injected(FailPoint::Alloc) {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        self.mem.alloc(bytes, Owner::Pool)
    }

    fn free_async(&mut self, addr: u64, stream: u64) -> Result<(), CUresult> {
        let key = self.stream_key(stream)?;
        self.legacy_stream_use(key, "cuMemFreeAsync")?;
        if let Some(cap) = self.capturing(key)? {
            // In a capture only the capture's own allocations can be freed (a free node).
            let ok = cap.allocs.contains(&addr)
                && !cap
                    .ops
                    .iter()
                    .any(|o| matches!(o, Op::Free { addr: a } if *a == addr));
            if ok {
                cap.ops.push(Op::Free { addr });
                return Ok(());
            }
            let s = key.expect("capturing");
            eprintln!(
                "cuda-standin: cuMemFreeAsync({addr:#x}) during capture: not an allocation made \
                 in this capture (or freed twice in it); {}",
                self.where_is(addr)
            );
            self.invalidate(
                s,
                CUDA_ERROR_INVALID_VALUE,
                "cuMemFreeAsync of memory the graph did not allocate",
            );
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.free_now(addr, "cuMemFreeAsync")
    }

    fn free_now(&mut self, addr: u64, what: &str) -> Result<(), CUresult> {
        self.mem.free(addr).map(|_| ()).inspect_err(|_| {
            eprintln!(
                "cuda-standin: {what}({addr:#x}): not a live allocation (a double free?): {}",
                self.where_is(addr)
            )
        })
    }
}

entry! {
    fn cuMemAlloc_v2(dptr: *mut u64, bytes: usize) {
        driver::with_ctx(|d| {
            d.unsafe_call("cuMemAlloc")?;
            d.counters.allocs += 1;
            if d.injected(FailPoint::Alloc) {
                return Err(CUDA_ERROR_OUT_OF_MEMORY);
            }
            let a = d.mem.alloc(bytes as u64, Owner::Sync)?;
            out(dptr, a)
        })
    }
    fn cuMemFree_v2(dptr: u64) {
        driver::with_ctx(|d| {
            d.unsafe_call("cuMemFree")?;
            d.free_now(dptr, "cuMemFree")
        })
    }
    fn cuMemAllocAsync(dptr: *mut u64, bytes: usize, stream: u64) {
        driver::with_ctx(|d| {
            let a = d.alloc_async(bytes as u64, stream)?;
            out(dptr, a)
        })
    }
    fn cuMemFreeAsync(dptr: u64, stream: u64) {
        driver::with_ctx(|d| d.free_async(dptr, stream))
    }
    fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) {
        driver::with_ctx(|d| {
            out(free, (d.mem.limit - d.mem.in_use()) as usize)?;
            out(total, d.mem.limit as usize)
        })
    }
    fn cuMemcpyHtoDAsync_v2(dst: u64, src: *const c_void, bytes: usize, stream: u64) {
        driver::with_ctx(|d| d.enqueue(stream, Op::HtoD { dst, src: src as u64, bytes: bytes as u64 }, "cuMemcpyHtoDAsync"))
    }
    fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: u64, bytes: usize, stream: u64) {
        driver::with_ctx(|d| d.enqueue(stream, Op::DtoH { dst: dst as u64, src, bytes: bytes as u64 }, "cuMemcpyDtoHAsync"))
    }
    fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, bytes: usize, stream: u64) {
        driver::with_ctx(|d| d.enqueue(stream, Op::DtoD { dst, src, bytes: bytes as u64 }, "cuMemcpyDtoDAsync"))
    }
    // The synchronous copies return once the copy is done, after the legacy stream's earlier
    // work (and so the blocking streams'): what they cover lands.
    fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, bytes: usize) {
        driver::with_ctx(|d| {
            d.unsafe_call("cuMemcpyHtoD")?;
            d.enqueue(0, Op::HtoD { dst, src: src as u64, bytes: bytes as u64 }, "cuMemcpyHtoD")?;
            d.land_stream(None)
        })
    }
    fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, bytes: usize) {
        driver::with_ctx(|d| {
            d.unsafe_call("cuMemcpyDtoH")?;
            d.enqueue(0, Op::DtoH { dst: dst as u64, src, bytes: bytes as u64 }, "cuMemcpyDtoH")?;
            d.land_stream(None)
        })
    }
    fn cuMemcpyDtoD_v2(dst: u64, src: u64, bytes: usize) {
        driver::with_ctx(|d| {
            d.unsafe_call("cuMemcpyDtoD")?;
            d.enqueue(0, Op::DtoD { dst, src, bytes: bytes as u64 }, "cuMemcpyDtoD")
        })
    }
    fn cuMemsetD8Async(dst: u64, value: u8, count: usize, stream: u64) {
        driver::with_ctx(|d| d.enqueue(stream, Op::Memset { dst, value: value.into(), elem: 1, count: count as u64 }, "cuMemsetD8Async"))
    }
    fn cuMemsetD32Async(dst: u64, value: u32, count: usize, stream: u64) {
        driver::with_ctx(|d| d.enqueue(stream, Op::Memset { dst, value, elem: 4, count: count as u64 }, "cuMemsetD32Async"))
    }
    fn cuMemsetD8_v2(dst: u64, value: u8, count: usize) {
        driver::with_ctx(|d| {
            d.unsafe_call("cuMemsetD8")?;
            d.enqueue(0, Op::Memset { dst, value: value.into(), elem: 1, count: count as u64 }, "cuMemsetD8")
        })
    }
    fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, _flags: u32) {
        driver::with_ctx(|d| {
            let p = d.mem.host_alloc(bytes)?;
            out(pp, p.cast())
        })
    }
    fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) {
        driver::with_ctx(|d| {
            let p = d.mem.host_alloc(bytes)?;
            out(pp, p.cast())
        })
    }
    fn cuMemFreeHost(p: *mut c_void) {
        // Synchronises the device first, as the driver does: no copy lands in freed memory.
        driver::with_ctx(|d| {
            let landed = d.land_all();
            d.mem.host_free(p.cast())?;
            landed
        })
    }
    fn cuDeviceGetMemPool(pool: *mut u64, dev: i32) {
        driver::with(|_| if dev == 0 { out(pool, POOL) } else { Err(CUDA_ERROR_INVALID_DEVICE) })
    }
    fn cuDeviceGetDefaultMemPool(pool: *mut u64, dev: i32) {
        driver::with(|_| if dev == 0 { out(pool, POOL) } else { Err(CUDA_ERROR_INVALID_DEVICE) })
    }
    fn cuMemPoolGetAttribute(pool: u64, attr: i32, value: *mut c_void) {
        driver::with(|d| {
            if pool != POOL {
                return Err(CUDA_ERROR_INVALID_HANDLE);
            }
            match attr {
                1..=3 => out(value.cast::<i32>(), 1),
                4 => out(value.cast::<u64>(), d.pool_release_threshold),
                5 => out(value.cast::<u64>(), d.mem.pool_reserved.current),
                6 => out(value.cast::<u64>(), d.mem.pool_reserved.high),
                7 => out(value.cast::<u64>(), d.mem.pool.current),
                8 => out(value.cast::<u64>(), d.mem.pool.high),
                _ => Err(CUDA_ERROR_INVALID_VALUE),
            }
        })
    }
    fn cuMemPoolSetAttribute(pool: u64, attr: i32, value: *mut c_void) {
        driver::with(|d| {
            if pool != POOL || value.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            // SAFETY: the caller passes the attribute's type.
            match attr {
                1..=3 => Ok(()),
                4 => {
                    d.pool_release_threshold = unsafe { *value.cast::<u64>() };
                    Ok(())
                }
                // The high-water marks can only be reset, to zero.
                6 if unsafe { *value.cast::<u64>() } == 0 => {
                    d.mem.pool_reserved.high = d.mem.pool_reserved.current;
                    Ok(())
                }
                8 if unsafe { *value.cast::<u64>() } == 0 => {
                    d.mem.pool.high = d.mem.pool.current;
                    Ok(())
                }
                _ => Err(CUDA_ERROR_INVALID_VALUE),
            }
        })
    }
    fn cuMemPoolTrimTo(pool: u64, keep: usize) {
        driver::with(|d| {
            if pool != POOL {
                return Err(CUDA_ERROR_INVALID_HANDLE);
            }
            d.mem.trim_pool(keep as u64);
            Ok(())
        })
    }
    fn cuDeviceGetGraphMemAttribute(dev: i32, attr: i32, value: *mut c_void) {
        driver::with(|d| {
            if dev != 0 {
                return Err(CUDA_ERROR_INVALID_DEVICE);
            }
            match attr {
                0 | 2 => out(value.cast::<u64>(), d.mem.graph.current),
                1 | 3 => out(value.cast::<u64>(), d.mem.graph.high),
                _ => Err(CUDA_ERROR_INVALID_VALUE),
            }
        })
    }
    fn cuDeviceGraphMemTrim(dev: i32) {
        driver::with(|d| {
            if dev != 0 {
                return Err(CUDA_ERROR_INVALID_DEVICE);
            }
            // Memory of graphs that are not running (none is, between calls) and hold no live
            // allocation goes back to the device.
            for g in d.mem.graphs_with_memory() {
                if !d.mem.graph_busy(g) {
                    d.mem.release_graph(g);
                }
            }
            Ok(())
        })
    }
}
