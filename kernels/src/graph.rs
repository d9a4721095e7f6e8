//! CUDA graphs: record the launches of a whole training step once, replay them with one call.
//!
//! A ResNet step is a few hundred small kernels. Launching each from the host costs a few µs,
//! more than many of the kernels take on the GPU, so an eager step is bound by the host.
//! Captured into a graph, the step costs one driver call to replay.
//!
//! Allowed while capturing (everything the training step does on the device): kernel launches,
//! stream-ordered allocations and frees (cudarc uses cuMemAllocAsync / cuMemFreeAsync),
//! memsets and device-to-device copies on the [`Gpu`]'s stream. Not allowed: anything that
//! waits for the GPU (downloads, stream synchronisation) or copies from pageable host memory;
//! the driver then invalidates the capture, and [`Gpu::capture`] returns its error. Values
//! that change between replays (the learning rate, the batch) must therefore live in device
//! buffers that are written before each replay, outside the graph.

use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaModule, CudaStream};

use crate::device::check_deferred;
use crate::error::{KernelError, Result};
use crate::Gpu;

/// A captured, instantiated sequence of work on one [`Gpu`]'s stream. Owns the driver's graph
/// and executable graph (raw handles: the stream must leave capture mode even when recording
/// failed, which cudarc's own wrapper cannot guarantee after an error it recorded earlier).
pub struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    // The kernels in the graph's nodes live in these modules: keep them loaded.
    _modules: Vec<Arc<CudaModule>>,
}

// SAFETY: the handles move with the value; the driver allows using an executable graph from any
// thread of its context. Not `Sync`: graph objects are not internally synchronised and one
// executable graph may not be launched concurrently with itself (CUDA driver API, "Graph
// object thread safety"), so `launch` needs exclusive use in practice — one owner.
unsafe impl Send for Graph {}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Graph")
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both handles are valid and owned; errors on destruction have nowhere to go.
        unsafe {
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}

/// Ends the stream's capture if `record` unwinds, so the stream is usable afterwards; the
/// partial graph is destroyed, never instantiated.
struct EndCaptureOnUnwind<'a> {
    stream: &'a Arc<CudaStream>,
    armed: bool,
}

impl Drop for EndCaptureOnUnwind<'_> {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: the stream is valid and was put in capture mode by `Gpu::capture`. An
            // invalidated capture still ends (with an error and no graph).
            unsafe {
                if let Ok(graph) = result::stream::end_capture(self.stream.cu_stream()) {
                    if !graph.is_null() {
                        let _ = result::graph::destroy(graph);
                    }
                }
            }
        }
    }
}

impl Gpu {
    /// Whether this GPU's stream is being captured right now (work is recorded, not run).
    pub fn is_capturing(&self) -> Result<bool> {
        let status = self
            .stream()
            .capture_status()
            .map_err(|e| KernelError::driver("querying the stream's capture status", e))?;
        Ok(status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
    }

    /// Runs `record` with the stream in capture mode and returns the instantiated graph of
    /// everything it queued, with `record`'s own result. Nothing runs on the GPU until
    /// [`Graph::launch`]. Capture mode is thread-local: only this thread's unsafe calls (a
    /// synchronisation, ...) invalidate the capture. But any work any thread queues on this
    /// stream meanwhile is recorded too: keep other threads off the stream while capturing.
    /// Needs the stream-ordered allocator (every GPU this project targets): without it cudarc
    /// allocates with `cuMemAlloc` and frees after a synchronisation, neither capturable.
    pub fn capture<R>(&self, record: impl FnOnce() -> R) -> Result<(Graph, R)> {
        if !self.context().has_async_alloc() {
            return Err(KernelError::invalid(
                "graph capture",
                "this device has no stream-ordered allocator (cuMemAllocAsync), so a step \
                 cannot be captured",
            ));
        }
        let stream = self.stream();
        // An error a destructor left before the capture is not the capture's.
        check_deferred(self.context(), "before beginning a graph capture")?;
        self.context()
            .bind_to_thread()
            .map_err(|e| KernelError::driver("binding the context before a capture", e))?;
        // SAFETY: a valid stream of this context.
        unsafe {
            result::stream::begin_capture(
                stream.cu_stream(),
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(|e| KernelError::driver("beginning a graph capture", e))?;
        let mut guard = EndCaptureOnUnwind {
            stream,
            armed: true,
        };
        let out = record();
        guard.armed = false;
        // SAFETY: the stream is capturing (begun above, on this thread).
        let ended = unsafe { result::stream::end_capture(stream.cu_stream()) };
        // Buffers dropped inside `record` were freed with cuMemFreeAsync, recorded into the
        // graph; cudarc keeps a failure of that for the next call. Checked now (after the
        // capture has ended either way), it is reported as the capture's, and it comes first:
        // it is usually also why ending the capture failed.
        if let Err(deferred) = check_deferred(self.context(), "during the graph capture") {
            if let Ok(graph) = ended {
                if !graph.is_null() {
                    // SAFETY: a valid graph, owned here and never instantiated.
                    unsafe {
                        let _ = result::graph::destroy(graph);
                    }
                }
            }
            return Err(deferred);
        }
        let graph = ended.map_err(|e| {
            KernelError::driver(
                "ending the graph capture (an operation in it was not capturable: a \
                 synchronisation, a download, or a copy from pageable host memory)",
                e,
            )
        })?;
        if graph.is_null() {
            return Err(KernelError::invalid(
                "graph capture",
                "nothing was captured",
            ));
        }
        // SAFETY: a valid graph, just captured.
        let exec =
            match unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) } {
                Ok(exec) => exec,
                Err(e) => {
                    // SAFETY: the graph is valid and owned here.
                    unsafe {
                        let _ = result::graph::destroy(graph);
                    }
                    return Err(KernelError::driver("instantiating the captured graph", e));
                }
            };
        let graph = Graph {
            graph,
            exec,
            stream: Arc::clone(stream),
            ctx: Arc::clone(self.context()),
            _modules: self.modules().to_vec(),
        };
        Ok((graph, out))
    }
}

impl Graph {
    /// Queues one replay of the whole graph on the stream it was captured from.
    pub fn launch(&self) -> Result<()> {
        // Buffers dropped between replays leave their errors here; they are not the replay's.
        check_deferred(&self.ctx, "before launching a CUDA graph")?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| KernelError::driver("binding the context to launch a CUDA graph", e))?;
        // SAFETY: valid executable graph and stream (kept alive by `self`).
        unsafe { result::graph::launch(self.exec, self.stream.cu_stream()) }
            .map_err(|e| KernelError::driver("launching a CUDA graph", e))?;
        crate::fault::queued(crate::fault::Suspect::GraphReplay);
        Ok(())
    }

    /// Uploads the graph's resources ahead of the first launch (optional; saves that launch
    /// its set-up time).
    pub fn upload(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| KernelError::driver("binding the context to upload a CUDA graph", e))?;
        // SAFETY: as in `launch`.
        unsafe { result::graph::upload(self.exec, self.stream.cu_stream()) }
            .map_err(|e| KernelError::driver("uploading a CUDA graph", e))
    }
}
