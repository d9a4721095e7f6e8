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

use cudarc::driver::{sys, CudaGraph, CudaStream};

use crate::error::{KernelError, Result};
use crate::Gpu;

/// A captured, instantiated sequence of work on one [`Gpu`]'s stream.
pub struct Graph {
    graph: CudaGraph,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Graph")
    }
}

/// Ends a capture that `record` left by panicking, so the stream is usable afterwards.
struct EndCaptureOnUnwind<'a> {
    stream: &'a Arc<CudaStream>,
    armed: bool,
}

impl Drop for EndCaptureOnUnwind<'_> {
    fn drop(&mut self) {
        if self.armed {
            // The capture is abandoned; its (partial) graph is dropped with the result.
            let _ = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
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
    /// [`Graph::launch`]. Capture is thread-local: other threads' CUDA calls are unaffected.
    pub fn capture<R>(&self, record: impl FnOnce() -> R) -> Result<(Graph, R)> {
        let stream = self.stream();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| KernelError::driver("beginning a graph capture", e))?;
        let mut guard = EndCaptureOnUnwind {
            stream,
            armed: true,
        };
        let out = record();
        guard.armed = false;
        let graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(|e| {
                KernelError::driver(
                    "ending the graph capture (an operation in it was not capturable: a \
                     synchronisation, a download, or a copy from pageable host memory)",
                    e,
                )
            })?
            .ok_or_else(|| KernelError::invalid("graph capture", "nothing was captured"))?;
        Ok((Graph { graph }, out))
    }
}

impl Graph {
    /// Queues one replay of the whole graph on the stream it was captured from.
    pub fn launch(&self) -> Result<()> {
        self.graph
            .launch()
            .map_err(|e| KernelError::driver("launching a CUDA graph", e))
    }

    /// Uploads the graph's resources ahead of the first launch (optional; saves that launch
    /// its set-up time).
    pub fn upload(&self) -> Result<()> {
        self.graph
            .upload()
            .map_err(|e| KernelError::driver("uploading a CUDA graph", e))
    }
}
