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

    /// Lands every copy `covered` selects, in the order they were queued; returns how many.
    ///
    /// # Safety
    /// As for [`InFlight::defer`]: each destination is still the caller's buffer.
    pub unsafe fn land(&mut self, covered: impl Fn(&Deferred) -> bool) -> usize {
        let (now, later): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.copies)
            .into_iter()
            .partition(&covered);
        for c in &now {
            // SAFETY: the destination of an asynchronous copy, alive until its synchronisation.
            unsafe {
                std::ptr::copy_nonoverlapping(c.data.as_ptr(), c.dst as *mut u8, c.data.len())
            };
        }
        self.copies = later;
        self.landed += now.len() as u64;
        now.len()
    }
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
        assert_eq!(unsafe { f.land(|c| c.stream == Some(7)) }, 1);
        assert_eq!(host, [2.0; 4]);
        // SAFETY: as above.
        assert_eq!(unsafe { f.land(|c| c.seq < 2) }, 1);
        assert_eq!(host, [2.0, 3.0, 2.0, 2.0]);
        assert_eq!((f.pending(), f.deferred, f.landed), (0, 2, 2));
    }
}
