//! Device-to-host copies in flight: queued, not yet landed in host memory.
//!
//! On a GPU `cuMemcpyDtoHAsync` returns before the data arrives (into pageable memory it *may*
//! wait, the driver promises nothing), so host code must synchronise before it reads the
//! destination. Here the copy's data is taken from the device when the copy runs (its place in
//! the stream: everything queued before it has run, nothing after), the destination is filled
//! with [`POISON`] at once, and the data lands only when a synchronisation covers the copy
//! (`crate::sync`). Code that reads before synchronising reads NaN (f32, f64) or -1 (i32),
//! not the result, deterministically.

/// What a destination holds until its copy lands: all bits set, a NaN in every f32 and f64.
pub const POISON: u8 = 0xFF;

/// One copy in flight.
pub struct Deferred {
    /// The stream it was queued on (`None`: the legacy default stream).
    pub stream: Option<u64>,
    /// Its place among all deferred copies (an event covers those before its own place).
    pub seq: u64,
    dst: u64,
    data: Vec<u8>,
}

#[derive(Default)]
pub struct InFlight {
    copies: Vec<Deferred>,
    next_seq: u64,
    /// Copies deferred and landed so far (`CUDA_STANDIN_STATS`).
    pub deferred: u64,
    pub landed: u64,
}

impl InFlight {
    /// The place the next deferred copy gets: an event recorded now covers every copy before it.
    pub fn now(&self) -> u64 {
        self.next_seq
    }

    /// Copies not landed yet.
    pub fn pending(&self) -> usize {
        self.copies.len()
    }

    /// Defers a copy of `data` to host address `dst` and poisons the destination.
    ///
    /// # Safety
    /// `dst` must be writable for `data.len()` bytes now and until the copy lands (the caller's
    /// contract for an asynchronous copy: the buffer stays alive until it synchronises).
    pub unsafe fn defer(&mut self, stream: Option<u64>, dst: u64, data: Vec<u8>) {
        // SAFETY: the caller's buffer, as above.
        unsafe { std::ptr::write_bytes(dst as *mut u8, POISON, data.len()) };
        self.copies.push(Deferred {
            stream,
            seq: self.next_seq,
            dst,
            data,
        });
        self.next_seq += 1;
        self.deferred += 1;
    }

    /// Lands every copy `covered` selects, in the order they were queued. A copy whose
    /// destination no longer holds the poison (the host wrote it, or freed it: the allocator's
    /// bookkeeping, or an unmapped page) is not written, on a GPU that is a write into whatever
    /// lives there now: its report is returned instead.
    ///
    /// # Safety
    /// Each destination is mapped host memory or unmapped (checked); a mapped one may be written.
    pub unsafe fn land(&mut self, covered: impl Fn(&Deferred) -> bool) -> Vec<String> {
        let (now, later): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.copies)
            .into_iter()
            .partition(&covered);
        self.copies = later;
        let mut reports = Vec::new();
        for (i, c) in now.iter().enumerate() {
            // SAFETY: checked mapped before it is read or written.
            if unsafe { poisoned(c.dst, c.data.len()) } {
                // SAFETY: mapped and still the copy's destination.
                unsafe {
                    std::ptr::copy_nonoverlapping(c.data.as_ptr(), c.dst as *mut u8, c.data.len())
                };
                self.landed += 1;
            } else {
                reports.push(format!(
                    "the destination of a device-to-host copy ({} bytes at {:#x}) was written \
                     or freed by the host before a synchronisation covered the copy: it was \
                     not delivered (on a GPU the copy writes into whatever lives there now)",
                    c.data.len(),
                    c.dst
                ));
            }
            // A later copy to an overlapping destination still owns those bytes: poisoned again.
            for other in now[i + 1..].iter().chain(&self.copies) {
                let lo = other.dst.max(c.dst);
                let hi = (other.dst + other.data.len() as u64).min(c.dst + c.data.len() as u64);
                if lo < hi {
                    // SAFETY: inside `c`'s destination, just written.
                    unsafe { std::ptr::write_bytes(lo as *mut u8, POISON, (hi - lo) as usize) };
                }
            }
        }
        reports
    }
}

/// Whether `[addr, addr + len)` is mapped and still all [`POISON`].
///
/// # Safety
/// Mapped memory in that range must be readable (host heap and stack memory is).
unsafe fn poisoned(addr: u64, len: usize) -> bool {
    const PAGE: u64 = 4096;
    let start = addr & !(PAGE - 1);
    let pages = (addr + len as u64 - start).div_ceil(PAGE) as usize;
    let mut residency = vec![0u8; pages];
    // SAFETY: mincore only inspects the mapping; ENOMEM means part of the range is unmapped.
    let mapped = unsafe {
        libc::mincore(
            start as *mut libc::c_void,
            pages * PAGE as usize,
            residency.as_mut_ptr(),
        )
    } == 0;
    // SAFETY: mapped, and readable per the caller.
    mapped
        && unsafe { std::slice::from_raw_parts(addr as *const u8, len) }
            .iter()
            .all(|&b| b == POISON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_poisons_its_destination_until_it_lands_in_queue_order() {
        let mut host = [1.5f32; 4];
        let mut f = InFlight::default();
        let dst = host.as_mut_ptr() as u64;
        // SAFETY: `host` outlives the copies.
        unsafe {
            f.defer(Some(7), dst, 2.0f32.to_ne_bytes().repeat(4));
            f.defer(Some(9), dst + 4, 3.0f32.to_ne_bytes().to_vec());
        }
        assert!(host.iter().all(|v| v.is_nan()), "{host:?}");
        assert_eq!((f.pending(), f.now()), (2, 2));
        // SAFETY: as above.
        assert!(unsafe { f.land(|c| c.stream == Some(7)) }.is_empty());
        // The pending copy still owns its element: poisoned again, not the first copy's value.
        assert_eq!(host[0], 2.0);
        assert!(host[1].is_nan());
        // SAFETY: as above.
        assert!(unsafe { f.land(|c| c.seq < 2) }.is_empty());
        assert_eq!(host, [2.0, 3.0, 2.0, 2.0]);
        assert_eq!((f.pending(), f.deferred, f.landed), (0, 2, 2));
    }

    #[test]
    fn a_destination_written_before_the_synchronisation_is_reported_not_overwritten() {
        let mut host = [0u8; 64];
        let mut f = InFlight::default();
        // SAFETY: `host` outlives the copy.
        unsafe { f.defer(None, host.as_mut_ptr() as u64, vec![7; 64]) };
        host[10] = 1; // the host uses the buffer before synchronising
                      // SAFETY: as above.
        let reports = unsafe { f.land(|_| true) };
        assert_eq!(reports.len(), 1);
        assert!(reports[0].contains("written or freed"), "{}", reports[0]);
        assert_eq!(host[10], 1);
        assert_eq!((f.landed, f.pending()), (0, 0));
    }

    #[test]
    fn an_unmapped_destination_is_reported_not_written() {
        // SAFETY: a fresh private mapping, unmapped again before the copy lands.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let mut f = InFlight::default();
            f.defer(Some(1), p as u64 + 100, vec![1; 5000]);
            libc::munmap(p, 8192);
            assert_eq!(f.land(|_| true).len(), 1);
        }
    }
}
