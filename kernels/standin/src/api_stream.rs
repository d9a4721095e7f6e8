//! Streams, events, stream capture and CUDA graphs.
//!
//! Capture follows the driver's rules where the project could break them: synchronising a
//! capturing stream (or the context, under the capture's mode), querying it, copying to or from
//! pageable host memory, freeing memory the graph did not allocate, using the legacy stream
//! against a capturing blocking stream, ending a capture from the wrong thread. Each fails the
//! way the driver documents and invalidates the capture; ending it then fails too. A replay runs
//! exactly the captured operations, allocations and frees included; relaunching a graph whose
//! previous allocations were not freed is refused.

use std::sync::Arc;
use std::time::Instant;

use crate::config::FailPoint;
use crate::driver::{
    self, Capture, Driver, Event, Exec, Graph, Stream, CAPTURE_RELAXED, THREAD_MODE,
};
use crate::ffi::{entry, out};
use crate::memory::Owner;
use crate::ops::Op;
use crate::status::*;

const KIND_STREAM: u64 = 0x51;
const KIND_EVENT: u64 = 0xe7;
const KIND_GRAPH: u64 = 0x6a;
const KIND_EXEC: u64 = 0x6e;

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 2;
/// `CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH`.
const AUTO_FREE_ON_LAUNCH: u64 = 1;

impl Driver {
    fn sync_stream(&mut self, stream: u64) -> Result<(), CUresult> {
        let key = self.stream_key(stream)?;
        match key {
            Some(s) if self.streams[&s].capture.is_some() => {
                self.invalidate(
                    s,
                    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                    "synchronising the capturing stream",
                );
                return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
            }
            Some(_) => {}
            None => self.legacy_stream_use(None, "synchronising")?,
        }
        self.land_stream(key)?;
        self.synchronised();
        Ok(())
    }

    /// After a synchronisation the pool hands back what it keeps beyond its release threshold.
    pub fn synchronised(&mut self) {
        self.mem.trim_pool(self.pool_release_threshold);
    }

    /// Associates the graph's peak working set with it (at its first upload or launch), before
    /// any of its nodes runs: on a GPU a replay's memory is in place before it starts.
    fn graph_memory_for(&mut self, graph: u64, ops: &[Op]) -> Result<(), CUresult> {
        let (mut live, mut peak) = (0u64, 0u64);
        for op in ops {
            match op {
                Op::Alloc { addr } => live += self.mem.range(*addr).map_or(0, |r| r.size),
                Op::Free { addr } => live -= self.mem.range(*addr).map_or(0, |r| r.size),
                _ => {}
            }
            peak = peak.max(live);
        }
        self.mem.reserve_graph(graph, peak)
    }

    fn end_capture(&mut self, stream: u64) -> Result<u64, CUresult> {
        let s = self.stream_key(stream)?.ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        let cap = self.streams[&s]
            .capture
            .as_ref()
            .ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        if cap.mode != CAPTURE_RELAXED && cap.thread != std::thread::current().id() {
            return Err(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
        }
        let cap = self
            .streams
            .get_mut(&s)
            .and_then(|st| st.capture.take())
            .expect("capture");
        for e in self
            .events
            .values_mut()
            .filter(|e| e.captured_in == Some(cap.id))
        {
            e.captured_in = None;
        }
        if cap.invalidated.is_some() {
            for a in cap.allocs {
                self.mem.release(a);
            }
            // An invalidated capture ends in this error and no graph, whatever invalidated it.
            return Err(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        self.graphs.insert(
            cap.id,
            Graph {
                ops: Arc::new(cap.ops),
                allocs: cap.allocs,
                execs: 0,
            },
        );
        Ok(cap.id)
    }

    fn launch_graph(&mut self, exec: u64, stream: u64) -> Result<(), CUresult> {
        let key = self.stream_key(stream)?;
        self.legacy_stream_use(key, "cuGraphLaunch")?;
        if self.capturing(key)?.is_some() {
            eprintln!("cuda-standin: launching a graph inside a capture is not supported here");
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let e = self.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let (graph, ops, auto_free) = (e.graph, Arc::clone(&e.ops), e.auto_free);
        let still_live: Vec<u64> = self
            .mem
            .owned_by(Owner::Graph(graph))
            .into_iter()
            .filter(|&a| self.mem.range(a).is_some_and(|r| r.live))
            .collect();
        if auto_free {
            // CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH: the previous launch's
            // allocations are freed first.
            for &a in &still_live {
                self.mem.decommit(a)?;
            }
        } else if !still_live.is_empty() {
            eprintln!(
                "cuda-standin: cuGraphLaunch refused: {} allocation(s) of this graph's previous \
                 launch were not freed (a graph with allocation nodes cannot be relaunched until \
                 they are)",
                still_live.len()
            );
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.graph_memory_for(graph, &ops)?;
        // Fault injection for the replay's allocations is decided before any node runs: an
        // allocation node never fails on its own on a GPU, the launch does.
        let allocs = ops.iter().filter(|o| matches!(o, Op::Alloc { .. })).count();
        for _ in 0..allocs {
            self.counters.allocs += 1;
            if self.injected(FailPoint::Alloc) {
                eprintln!("cuda-standin: injected out of memory for a graph replay's allocation");
                return Err(CUDA_ERROR_OUT_OF_MEMORY);
            }
        }
        for op in ops.iter() {
            if let Err(e) = self.run(op, key, true) {
                // Nothing of a failed replay stays allocated.
                for a in self.mem.owned_by(Owner::Graph(graph)) {
                    let _ = self.mem.decommit(a);
                }
                return Err(e);
            }
            if self.sticky.is_some() {
                break; // the GPU stops at the first fault too
            }
        }
        Ok(())
    }
}

entry! {
    fn cuStreamCreate(stream: *mut u64, flags: u32) {
        driver::with_ctx(|d| {
            let h = d.handle(KIND_STREAM);
            d.streams.insert(h, Stream { flags, capture: None });
            out(stream, h)
        })
    }
    fn cuStreamCreateWithPriority(stream: *mut u64, flags: u32, _priority: i32) {
        driver::with_ctx(|d| {
            let h = d.handle(KIND_STREAM);
            d.streams.insert(h, Stream { flags, capture: None });
            out(stream, h)
        })
    }
    fn cuStreamDestroy_v2(stream: u64) {
        driver::with_ctx(|d| {
            if !d.streams.contains_key(&stream) {
                return Err(CUDA_ERROR_INVALID_HANDLE);
            }
            // Its queued work still completes (the driver releases the stream after it).
            let landed = d.land_stream(Some(stream));
            let s = d.streams.remove(&stream).expect("checked");
            if let Some(c) = s.capture {
                for a in c.allocs {
                    d.mem.release(a);
                }
            }
            landed
        })
    }
    fn cuStreamSynchronize(stream: u64) {
        driver::with_ctx(|d| d.sync_stream(stream))
    }
    fn cuStreamQuery(stream: u64) {
        driver::with_ctx(|d| d.sync_stream(stream))
    }
    fn cuStreamGetFlags(stream: u64, flags: *mut u32) {
        driver::with_ctx(|d| match d.stream_key(stream)? {
            Some(s) => out(flags, d.streams[&s].flags),
            None => out(flags, 0),
        })
    }
    fn cuStreamWaitEvent(stream: u64, event: u64, _flags: u32) {
        driver::with_ctx(|d| {
            let key = d.stream_key(stream)?;
            let in_capture = d.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?.captured_in;
            if in_capture.is_some() && d.capturing(key)?.is_none() {
                // On a GPU this stream would join that capture (a fork); captures of several
                // streams are not emulated, so say so rather than run its work eagerly.
                eprintln!(
                    "cuda-standin: cuStreamWaitEvent would join another stream to a capture; \
                     multi-stream capture is not emulated"
                );
                return Err(CUDA_ERROR_NOT_SUPPORTED);
            }
            d.legacy_stream_use(key, "cuStreamWaitEvent")?;
            d.capturing(key).map(|_| ())
        })
    }
    fn cuCtxSynchronize() {
        driver::with_ctx(|d| {
            d.unsafe_call("cuCtxSynchronize")?;
            d.legacy_stream_use(None, "cuCtxSynchronize")?;
            d.land_all()?;
            d.synchronised();
            Ok(())
        })
    }
    fn cuEventCreate(event: *mut u64, flags: u32) {
        driver::with_ctx(|d| {
            let h = d.handle(KIND_EVENT);
            d.events.insert(h, Event { timing: flags & EVENT_DISABLE_TIMING == 0, at: None, covers: None, captured_in: None });
            out(event, h)
        })
    }
    fn cuEventDestroy_v2(event: u64) {
        driver::with_ctx(|d| d.events.remove(&event).map(|_| ()).ok_or(CUDA_ERROR_INVALID_HANDLE))
    }
    fn cuEventRecord(event: u64, stream: u64) {
        driver::with_ctx(|d| {
            let key = d.stream_key(stream)?;
            d.legacy_stream_use(key, "cuEventRecord")?;
            let capture = d.capturing(key)?.map(|c| c.id);
            let now = d.in_flight.now();
            let e = d.events.get_mut(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            match capture {
                Some(id) => e.captured_in = Some(id),
                None => {
                    e.at = Some(Instant::now());
                    e.covers = Some((key, now));
                    e.captured_in = None;
                }
            }
            Ok(())
        })
    }
    fn cuEventSynchronize(event: u64) {
        driver::with_ctx(|d| match d.events.get(&event) {
            None => Err(CUDA_ERROR_INVALID_HANDLE),
            Some(e) if e.captured_in.is_some() => Err(CUDA_ERROR_CAPTURED_EVENT),
            Some(e) => {
                d.land_event(e.covers)?;
                d.synchronised();
                Ok(())
            }
        })
    }
    fn cuEventQuery(event: u64) {
        // The work before the event is always complete here, and the host may rely on what it
        // was told: the copies it covers land.
        driver::with_ctx(|d| match d.events.get(&event) {
            None => Err(CUDA_ERROR_INVALID_HANDLE),
            Some(e) if e.captured_in.is_some() => Err(CUDA_ERROR_CAPTURED_EVENT),
            Some(e) => d.land_event(e.covers),
        })
    }
    fn cuEventElapsedTime_v2(ms: *mut f32, start: u64, end: u64) {
        driver::with_ctx(|d| {
            let (a, b) = (d.events.get(&start), d.events.get(&end));
            match (a, b) {
                (Some(a), Some(b)) if a.timing && b.timing => match (a.at, b.at) {
                    (Some(x), Some(y)) => {
                        let dt = y.saturating_duration_since(x).as_secs_f64() - x.saturating_duration_since(y).as_secs_f64();
                        out(ms, (dt * 1e3) as f32)
                    }
                    _ => Err(CUDA_ERROR_INVALID_HANDLE),
                },
                _ => Err(CUDA_ERROR_INVALID_HANDLE),
            }
        })
    }
    fn cuThreadExchangeStreamCaptureMode(mode: *mut u32) {
        driver::with(|_| {
            if mode.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            // SAFETY: checked non-null; the caller's in/out value.
            let new = unsafe { *mode };
            if new > CAPTURE_RELAXED {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            out(mode, THREAD_MODE.with(|m| m.replace(new)))
        })
    }
    fn cuStreamBeginCapture_v2(stream: u64, mode: u32) {
        driver::with_ctx(|d| {
            let s = d.stream_key(stream)?.ok_or_else(|| {
                eprintln!("cuda-standin: the legacy default stream cannot be captured");
                CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
            })?;
            if mode > CAPTURE_RELAXED {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            if d.streams[&s].capture.is_some() {
                return Err(CUDA_ERROR_ILLEGAL_STATE);
            }
            let id = d.handle(KIND_GRAPH);
            d.streams.get_mut(&s).expect("stream").capture = Some(Capture {
                id,
                mode,
                thread: std::thread::current().id(),
                ops: Vec::new(),
                allocs: Vec::new(),
                invalidated: None,
            });
            Ok(())
        })
    }
    fn cuStreamEndCapture(stream: u64, graph: *mut u64) {
        driver::with_ctx(|d| {
            if !graph.is_null() {
                out(graph, 0)?;
            }
            let g = d.end_capture(stream)?;
            out(graph, g)
        })
    }
    fn cuStreamIsCapturing(stream: u64, status: *mut u32) {
        driver::with_ctx(|d| {
            let st = match d.stream_key(stream)? {
                Some(s) => match &d.streams[&s].capture {
                    None => 0,
                    Some(c) if c.invalidated.is_some() => 2,
                    Some(_) => 1,
                },
                None => 0,
            };
            out(status, st)
        })
    }
    fn cuGraphInstantiateWithFlags(exec: *mut u64, graph: u64, flags: u64) {
        driver::with_ctx(|d| {
            let g = d.graphs.get_mut(&graph).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            if !g.allocs.is_empty() && g.execs > 0 {
                eprintln!("cuda-standin: a graph with allocation nodes can be instantiated only once at a time");
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            if flags & !AUTO_FREE_ON_LAUNCH != 0 {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            g.execs += 1;
            let e = Exec {
                graph,
                ops: Arc::clone(&g.ops),
                has_allocs: !g.allocs.is_empty(),
                auto_free: flags & AUTO_FREE_ON_LAUNCH != 0,
            };
            let h = d.handle(KIND_EXEC);
            d.execs.insert(h, e);
            out(exec, h)
        })
    }
    fn cuGraphLaunch(exec: u64, stream: u64) {
        driver::with_ctx(|d| d.launch_graph(exec, stream))
    }
    fn cuGraphUpload(exec: u64, stream: u64) {
        driver::with_ctx(|d| {
            d.stream_key(stream)?;
            let e = d.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            let (graph, ops) = (e.graph, Arc::clone(&e.ops));
            // The upload backs the graph's allocations: a graph too big for the device fails
            // here, as on a GPU.
            d.graph_memory_for(graph, &ops)
        })
    }
    fn cuGraphExecDestroy(exec: u64) {
        driver::with_ctx(|d| {
            let e = d.execs.remove(&exec).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            match d.graphs.get_mut(&e.graph) {
                Some(g) => g.execs -= 1,
                None if e.has_allocs => release_graph_addresses(d, e.graph),
                None => {}
            }
            Ok(())
        })
    }
    fn cuGraphDestroy(graph: u64) {
        driver::with_ctx(|d| {
            let g = d.graphs.remove(&graph).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            if g.execs == 0 {
                release_graph_addresses(d, graph);
            }
            Ok(())
        })
    }
}

/// A graph and all its executables are gone: its reserved addresses that are not live (freed
/// in the graph, or never launched) can be reused. Live ones stay until the user frees them.
fn release_graph_addresses(d: &mut Driver, graph: u64) {
    d.mem.release_graph(graph);
    for a in d.mem.owned_by(Owner::Graph(graph)) {
        d.mem.release(a);
    }
}
