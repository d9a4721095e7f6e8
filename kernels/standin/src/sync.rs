//! What a synchronisation completes, as far as the host can see: the device-to-host copies in
//! flight (`inflight.rs`) that it covers land in host memory.
//!
//! Which copies a synchronisation covers follows the driver's ordering rules: those queued on
//! the synchronised stream; for the legacy default stream (handle 0, 1 or 2 here) also those on
//! blocking streams, and for a blocking stream those on the legacy stream (the two wait for each
//! other); for an event, those before it on its stream in that sense; for the context, all.
//! Non-blocking streams (all of cudarc's) are covered only by their own synchronisation, an
//! event recorded on them, or the context's.
//!
//! A copy whose destination the host wrote or freed before the synchronisation is not delivered
//! (a GPU would write into whatever lives there now); the synchronisation says so on stderr and
//! fails with `CUDA_ERROR_ILLEGAL_STATE`, where a real driver would corrupt memory silently.

use std::collections::HashSet;

use crate::driver::{Driver, STREAM_NON_BLOCKING};
use crate::status::*;

impl Driver {
    /// The blocking streams (those the legacy default stream orders itself with).
    fn blocking_streams(&self) -> HashSet<u64> {
        self.streams
            .iter()
            .filter(|(_, s)| s.flags & STREAM_NON_BLOCKING == 0)
            .map(|(&h, _)| h)
            .collect()
    }

    /// Lands the copies in flight that a synchronisation of `stream` (`None`: the legacy
    /// stream) covers, queued before place `before`.
    fn land_on(&mut self, stream: Option<u64>, before: u64) -> Result<(), CUresult> {
        let blocking = self.blocking_streams();
        let ordered = move |work: Option<u64>| match (work, stream) {
            _ if work == stream => true,
            (Some(s), None) | (None, Some(s)) => blocking.contains(&s),
            _ => false,
        };
        // SAFETY: each destination is host memory of an asynchronous copy (checked mapped).
        let reports = unsafe { self.in_flight.land(|c| c.seq < before && ordered(c.stream)) };
        refuse_if(reports)
    }

    /// `stream` has been synchronised (`cuStreamSynchronize`, a synchronous call on the legacy
    /// stream, the stream's destruction, which lets its work finish).
    pub fn land_stream(&mut self, stream: Option<u64>) -> Result<(), CUresult> {
        self.land_on(stream, u64::MAX)
    }

    /// The work before an event recorded at `covers` (its stream and place) has completed.
    pub fn land_event(&mut self, covers: Option<(Option<u64>, u64)>) -> Result<(), CUresult> {
        match covers {
            Some((stream, before)) => self.land_on(stream, before),
            None => Ok(()), // never recorded: it is complete and covers nothing
        }
    }

    /// Everything has completed (`cuCtxSynchronize`, `cuMemFreeHost`).
    pub fn land_all(&mut self) -> Result<(), CUresult> {
        // SAFETY: as in `land_on`.
        refuse_if(unsafe { self.in_flight.land(|_| true) })
    }
}

fn refuse_if(reports: Vec<String>) -> Result<(), CUresult> {
    if reports.is_empty() {
        return Ok(());
    }
    for r in &reports {
        eprintln!("cuda-standin: {r}");
    }
    Err(CUDA_ERROR_ILLEGAL_STATE)
}
