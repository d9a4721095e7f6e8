//! Queuing and running the work of [`crate::ops`]: run now on a running stream, recorded on a
//! capturing one. Every device range is checked when the work runs, as a GPU's copy engines and
//! memory system would refuse or fault on it.

use crate::config::FailPoint;
use crate::driver::Driver;
use crate::memory::Owner;
use crate::ops::{Launch, Op};
use crate::status::*;

impl Driver {
    /// Queues `op` on `stream`: runs it now, or records it if the stream is capturing (after the
    /// checks capture adds: page-locked host memory, addresses that exist).
    pub fn enqueue(&mut self, stream: u64, op: Op, what: &str) -> Result<(), CUresult> {
        let key = self.stream_key(stream)?;
        self.legacy_stream_use(key, what)?;
        if self.capturing(key)?.is_none() {
            return self.run(&op, key, false);
        }
        let s = key.expect("a capturing stream is a real stream");
        let pageable = match op {
            Op::HtoD { src, bytes, .. } => !self.mem.is_pinned(src, bytes),
            Op::DtoH { dst, bytes, .. } => !self.mem.is_pinned(dst, bytes),
            _ => false,
        };
        if pageable {
            self.invalidate(
                s,
                CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                &format!("{what} with pageable host memory"),
            );
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        let devices: Vec<(u64, u64)> = match &op {
            Op::HtoD { dst, bytes, .. } => vec![(*dst, *bytes)],
            Op::Memset {
                dst, elem, count, ..
            } => vec![(*dst, count * u64::from(*elem))],
            Op::DtoH { src, bytes, .. } => vec![(*src, *bytes)],
            Op::DtoD { dst, src, bytes } => vec![(*dst, *bytes), (*src, *bytes)],
            _ => vec![],
        };
        if let Some(&(a, _)) = devices
            .iter()
            .find(|&&(a, n)| self.mem.containing(a, n).is_none())
        {
            eprintln!(
                "cuda-standin: {what} during capture: {a:#x} is {}",
                self.where_is(a)
            );
            self.invalidate(s, CUDA_ERROR_INVALID_VALUE, what);
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.capturing(key)?.expect("capturing").ops.push(op);
        Ok(())
    }

    /// Runs one operation, queued on `stream`, now (a device-to-host copy takes its data now
    /// and lands at a synchronisation, see `inflight.rs`). A fault inside a kernel or copy
    /// becomes the sticky error (and `Ok` is returned: the call that queued the work succeeded,
    /// as on a GPU); an invalid free or a failed allocation is the call's own error.
    pub fn run(&mut self, op: &Op, stream: Option<u64>, replay: bool) -> Result<(), CUresult> {
        match op {
            Op::Kernel(l) => {
                if replay {
                    self.counters.replayed += 1;
                } else {
                    self.counters.launches += 1;
                }
                if self.injected(FailPoint::Launch) {
                    let n = self.counters.launches + self.counters.replayed;
                    self.fault(
                        CUDA_ERROR_ILLEGAL_ADDRESS,
                        format!(
                            "Injected fault (CUDA_STANDIN_FAIL=launch:{n}) in kernel {}",
                            l.kernel.name
                        ),
                    );
                    return Ok(());
                }
                if let Some((code, report)) = self.bad_pointer(l) {
                    self.fault(code, report);
                    return Ok(());
                }
                let grid = kernels_emu::Dim3 {
                    x: l.grid[0],
                    y: l.grid[1],
                    z: l.grid[2],
                };
                let block = kernels_emu::Dim3 {
                    x: l.block[0],
                    y: l.block[1],
                    z: l.block[2],
                };
                let started = self.config.stats.then(std::time::Instant::now);
                // SAFETY: every non-null pointer parameter lies in the device arena (checked just
                // above), where the memory map checks each access.
                let result = unsafe { kernels_emu::launch(&l.kernel.emu, grid, block, &l.params) };
                if let Some(t) = started {
                    let e = self
                        .counters
                        .per_kernel
                        .entry(l.kernel.name.clone())
                        .or_default();
                    e.0 += 1;
                    e.1 += t.elapsed().as_secs_f64();
                }
                if let Err(fault) = result {
                    let code = match fault.kind {
                        kernels_emu::FaultKind::Address => CUDA_ERROR_ILLEGAL_ADDRESS,
                        kernels_emu::FaultKind::Misaligned => CUDA_ERROR_MISALIGNED_ADDRESS,
                        kernels_emu::FaultKind::Trap => CUDA_ERROR_ILLEGAL_INSTRUCTION,
                    };
                    let how = if replay {
                        " (in a CUDA graph replay)"
                    } else {
                        ""
                    };
                    self.fault(
                        code,
                        format!("kernel {}{how}\n{}", l.kernel.name, fault.message),
                    );
                }
                Ok(())
            }
            Op::HtoD { dst, src, bytes } => self.copy(*dst, *src, *bytes, (true, false), replay),
            Op::DtoH { dst, src, bytes } => {
                self.copy(*dst, *src, *bytes, (false, true), replay)?;
                if self.config.deferred_copies && self.sticky.is_none() {
                    // SAFETY: the copy above checked the source and wrote the destination; it
                    // stays the caller's until a synchronisation (the API's contract).
                    let data =
                        unsafe { std::slice::from_raw_parts(*dst as *const u8, *bytes as usize) }
                            .to_vec();
                    // SAFETY: as above.
                    unsafe { self.in_flight.defer(stream, *dst, data) };
                }
                Ok(())
            }
            Op::DtoD { dst, src, bytes } => self.copy(*dst, *src, *bytes, (true, true), replay),
            Op::Memset {
                dst,
                value,
                elem,
                count,
            } => {
                let bytes = count * u64::from(*elem);
                if !self.mem.is_live(*dst, bytes) {
                    self.fault(
                        CUDA_ERROR_ILLEGAL_ADDRESS,
                        format!(
                            "memset of {bytes} bytes at {dst:#x}: {}",
                            self.where_is(*dst)
                        ),
                    );
                    return Ok(());
                }
                // SAFETY: [dst, dst + bytes) is one live device allocation.
                unsafe {
                    match elem {
                        1 => std::ptr::write_bytes(*dst as *mut u8, *value as u8, *count as usize),
                        2 => std::slice::from_raw_parts_mut(*dst as *mut u16, *count as usize)
                            .fill(*value as u16),
                        _ => std::slice::from_raw_parts_mut(*dst as *mut u32, *count as usize)
                            .fill(*value),
                    }
                }
                Ok(())
            }
            // A replay's allocations come out of the graph's memory, reserved (and counted for
            // fault injection) by `cuGraphLaunch` before any node runs.
            Op::Alloc { addr } => self.mem.commit(*addr),
            Op::Free { addr } => self.mem.free(*addr).map(|_| ()),
        }
    }

    /// A copy between host and device or within the device; `device` says which side is which.
    fn copy(
        &mut self,
        dst: u64,
        src: u64,
        bytes: u64,
        device: (bool, bool),
        replay: bool,
    ) -> Result<(), CUresult> {
        self.counters.copies += 1;
        if self.injected(FailPoint::Copy) {
            let n = self.counters.copies;
            self.fault(
                CUDA_ERROR_ILLEGAL_ADDRESS,
                format!("Injected fault (CUDA_STANDIN_FAIL=copy:{n}) in a copy of {bytes} bytes"),
            );
            return Ok(());
        }
        for (is_device, addr, role) in [(device.0, dst, "destination"), (device.1, src, "source")] {
            if is_device && !self.mem.is_live(addr, bytes) {
                let report = format!(
                    "copy of {bytes} bytes{}: the {role} {addr:#x}: {}",
                    if replay {
                        " in a CUDA graph replay"
                    } else {
                        ""
                    },
                    self.where_is(addr)
                );
                if replay {
                    self.fault(CUDA_ERROR_ILLEGAL_ADDRESS, report);
                    return Ok(());
                }
                eprintln!("cuda-standin: invalid {report}");
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
        }
        // SAFETY: device sides are live allocations of `bytes`; host sides are the caller's
        // buffers of that length (the API's contract). The ranges may not overlap (CUDA's
        // contract too); `copy` tolerates it anyway.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes as usize) };
        Ok(())
    }

    /// A pointer parameter a GPU would fault on as soon as the kernel used it: a non-null
    /// address outside device memory (a host pointer), or one not aligned to what it points to.
    fn bad_pointer(&self, l: &Launch) -> Option<(CUresult, String)> {
        for (i, slot) in l.kernel.emu.params().enumerate() {
            if !slot.is_pointer {
                continue;
            }
            let bytes = &l.params[slot.offset..slot.offset + 8];
            let addr = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            if addr == 0 {
                continue;
            }
            let name = &l.kernel.name;
            if !self.mem.in_arena(addr) {
                return Some((
                    CUDA_ERROR_ILLEGAL_ADDRESS,
                    format!("kernel {name}: pointer parameter #{i} is {addr:#x}, not a device address (host memory?)"),
                ));
            }
            if slot.pointee > 1 && addr % slot.pointee as u64 != 0 {
                return Some((
                    CUDA_ERROR_MISALIGNED_ADDRESS,
                    format!(
                        "kernel {name}: pointer parameter #{i} is {addr:#x}, not aligned to its {}-byte elements",
                        slot.pointee
                    ),
                ));
            }
        }
        None
    }

    /// Where a device address lies, for messages.
    pub fn where_is(&self, addr: u64) -> String {
        match self.mem.containing(addr, 1) {
            Some((start, r)) if r.live => format!(
                "{} bytes into allocation #{} of {} bytes (too short for this access)",
                addr - start,
                r.id,
                r.size
            ),
            Some((_, r)) if matches!(r.owner, Owner::Graph(_)) => format!(
                "inside graph allocation #{} of {} bytes, which is not allocated at this point \
                 of the graph",
                r.id, r.size
            ),
            Some((_, r)) => format!("inside allocation #{}, which has been freed", r.id),
            None if self.mem.in_arena(addr) => "not inside any live allocation".to_string(),
            None => "not a device address".to_string(),
        }
    }
}
