//! SGD on the GPU (`sgd.cu`): the step over a flat buffer or over every tensor of a model at
//! once, the zeroing of many tensors in one launch, and the device tables they read.

use kernels::launch::{arg::*, check_len, grid_1d, to_int, Kernel};
use kernels::{launch, CudaSlice, CudaView, CudaViewMut, Gpu, KernelError, Result};

const STEP: Kernel = Kernel::new(
    "sgd_step",
    &[
        F32_OUT, F32_IN, F32_OUT, I32_IN, F32_IN, I32, I32, F32, F32, I32,
    ],
);
const STEP_TENSORS: Kernel = Kernel::new(
    "sgd_step_tensors",
    &[U64_IN, I32_IN, F32_IN, I32, I32, F32_IN, F32, I32],
);
const ZERO_TENSORS: Kernel = Kernel::new("zero_tensors", &[U64_IN, I32_IN, I32, I32]);

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 3] = [STEP, STEP_TENSORS, ZERO_TENSORS];

/// Host description of the flat parameter buffer: consecutive segments (one per tensor) with
/// their weight decay. Validated on construction; [`SgdTable`] is its device copy.
#[derive(Debug, Clone, PartialEq)]
pub struct SgdSegments {
    /// `offsets[s]..offsets[s+1]` is segment s; offsets[0] = 0, last = total.
    pub offsets: Vec<i32>,
    /// Weight decay per segment (0 for BN parameters and biases).
    pub weight_decay: Vec<f32>,
}

impl SgdSegments {
    /// Builds the table from `(len, weight_decay)` per tensor, in buffer order.
    pub fn new(segments: &[(usize, f32)]) -> Result<Self> {
        const K: &str = "sgd_step";
        if segments.is_empty() {
            return Err(KernelError::invalid(K, "no parameter segments"));
        }
        let mut offsets = Vec::with_capacity(segments.len() + 1);
        let mut total = 0usize;
        offsets.push(0);
        for (i, &(len, wd)) in segments.iter().enumerate() {
            if len == 0 {
                return Err(KernelError::invalid(K, format!("segment {i} is empty")));
            }
            if !wd.is_finite() || wd < 0.0 {
                return Err(KernelError::invalid(
                    K,
                    format!("segment {i} weight decay {wd}"),
                ));
            }
            total += len;
            offsets.push(to_int(K, "total parameters", total)?);
        }
        Ok(SgdSegments {
            offsets,
            weight_decay: segments.iter().map(|&(_, wd)| wd).collect(),
        })
    }

    /// Total number of parameters.
    pub fn total(&self) -> usize {
        *self.offsets.last().unwrap_or(&0) as usize
    }
}

/// The segment table on the device, uploaded once and reused every step.
pub struct SgdTable {
    offsets: CudaSlice<i32>,
    weight_decay: CudaSlice<f32>,
    total: usize,
}

impl SgdTable {
    /// Uploads a validated segment table.
    pub fn new(gpu: &Gpu, segments: &SgdSegments) -> Result<Self> {
        Ok(SgdTable {
            offsets: gpu.upload(&segments.offsets)?,
            weight_decay: gpu.upload(&segments.weight_decay)?,
            total: segments.total(),
        })
    }

    /// Total number of parameters the table covers.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// One SGD step over the whole flat parameter buffer (torch.optim.SGD semantics, see sgd.cu).
/// CPU twin: [`super::sgd_update`].
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    gpu: &Gpu,
    table: &SgdTable,
    params: &mut CudaViewMut<'_, f32>,
    grads: &CudaView<'_, f32>,
    bufs: &mut CudaViewMut<'_, f32>,
    lr: f32,
    momentum: f32,
    nesterov: bool,
) -> Result<()> {
    const K: &str = "sgd_step";
    check_len(K, "params", params.len(), table.total)?;
    check_len(K, "grads", grads.len(), table.total)?;
    check_len(K, "bufs", bufs.len(), table.total)?;
    let total = to_int(K, "total", table.total)?;
    let num_segs = to_int(K, "segments", table.weight_decay.len())?;
    let nesterov = i32::from(nesterov);
    let (offsets, wd) = (table.offsets.as_view(), table.weight_decay.as_view());
    launch!(STEP, gpu, grid_1d(table.total); params, grads, bufs, &offsets, &wd, num_segs, total,
        lr, momentum, nesterov)
}

/// The model's parameter tensors for [`sgd_step_tensors`]: each tensor's parameter, gradient
/// and momentum addresses, the segment table (lengths, weight decay) and the learning rate,
/// all in device memory. Built once and reused while the tensors stay where they are.
pub struct SgdTensorTable {
    addresses: Vec<u64>,
    segments: SgdSegments,
    d_addresses: CudaSlice<u64>,
    table: SgdTable,
    lr: CudaSlice<f32>,
}

impl SgdTensorTable {
    /// `addresses[3s..3s+3]` are tensor s's parameter, gradient and momentum buffers
    /// (from [`Gpu::address_of`]), `segments` their lengths and weight decays.
    ///
    /// # Safety
    /// Each address must be a live f32 device buffer on `gpu` of its segment's length, and
    /// stay alive until every [`sgd_step_tensors`] launched with this table has run (stream
    /// order: dropping a buffer after the launch call returns is fine, its free is queued
    /// behind the step).
    pub unsafe fn new(gpu: &Gpu, addresses: Vec<u64>, segments: SgdSegments) -> Result<Self> {
        const K: &str = "sgd_step_tensors";
        let tensors = segments.weight_decay.len();
        if addresses.len() != 3 * tensors {
            return Err(KernelError::invalid(
                K,
                format!("{} addresses for {tensors} tensors", addresses.len()),
            ));
        }
        if addresses.contains(&0) {
            return Err(KernelError::invalid(K, "a null buffer address"));
        }
        Ok(SgdTensorTable {
            d_addresses: gpu.upload(&addresses)?,
            table: SgdTable::new(gpu, &segments)?,
            lr: gpu.zeros::<f32>(1)?,
            addresses,
            segments,
        })
    }

    /// Whether this table describes exactly these tensors (same buffers, lengths, decays).
    pub fn describes(&self, addresses: &[u64], segments: &SgdSegments) -> bool {
        self.addresses == addresses && self.segments == *segments
    }

    /// Queues the learning rate of the next step (a 4-byte copy on the stream, ordered after
    /// the steps already queued).
    pub fn set_lr(&mut self, gpu: &Gpu, lr: f32) -> Result<()> {
        gpu.copy_to_device(&[lr], &mut self.lr)
    }
}

/// One SGD step over every tensor of `table` in a single launch (`sgd_step_tensors`), with the
/// learning rate last given to [`SgdTensorTable::set_lr`].
pub fn sgd_step_tensors(
    gpu: &Gpu,
    table: &SgdTensorTable,
    momentum: f32,
    nesterov: bool,
) -> Result<()> {
    const K: &str = "sgd_step_tensors";
    let total = to_int(K, "total", table.table.total)?;
    let num_segs = to_int(K, "segments", table.table.weight_decay.len())?;
    let nesterov = i32::from(nesterov);
    let ptrs = table.d_addresses.as_view();
    let (offsets, wd) = (
        table.table.offsets.as_view(),
        table.table.weight_decay.as_view(),
    );
    launch!(STEP_TENSORS, gpu, grid_1d(table.table.total); &ptrs, &offsets, &wd, num_segs, total,
        &table.lr.as_view(), momentum, nesterov)
}

/// Tensors to zero in one [`zero_tensors`] launch: their device addresses and lengths, on the
/// device. Built once and reused while the tensors stay where they are.
pub struct ZeroTable {
    addresses: Vec<u64>,
    lens: Vec<usize>,
    d_addresses: CudaSlice<u64>,
    offsets: CudaSlice<i32>,
    total: usize,
}

impl ZeroTable {
    /// `addresses[s]` is a live f32 buffer of `lens[s]` elements (from [`Gpu::address_of`]).
    ///
    /// # Safety
    /// Each address must stay a live f32 device buffer on `gpu` of its length until every
    /// [`zero_tensors`] launched with this table has run (stream order).
    pub unsafe fn new(gpu: &Gpu, addresses: Vec<u64>, lens: Vec<usize>) -> Result<Self> {
        const K: &str = "zero_tensors";
        if addresses.len() != lens.len() || addresses.contains(&0) {
            return Err(KernelError::invalid(
                K,
                "addresses and lengths do not match",
            ));
        }
        let segments = SgdSegments::new(&lens.iter().map(|&l| (l, 0.0)).collect::<Vec<_>>())?;
        Ok(ZeroTable {
            d_addresses: gpu.upload(&addresses)?,
            offsets: gpu.upload(&segments.offsets)?,
            total: segments.total(),
            addresses,
            lens,
        })
    }

    /// Whether this table describes exactly these buffers and lengths.
    pub fn describes(&self, addresses: &[u64], lens: &[usize]) -> bool {
        self.addresses == addresses && self.lens == lens
    }
}

/// Zeroes every tensor of `table` in one launch.
pub fn zero_tensors(gpu: &Gpu, table: &ZeroTable) -> Result<()> {
    const K: &str = "zero_tensors";
    let total = to_int(K, "total", table.total)?;
    let num_segs = to_int(K, "tensors", table.lens.len())?;
    let (ptrs, offsets) = (table.d_addresses.as_view(), table.offsets.as_view());
    launch!(ZERO_TENSORS, gpu, grid_1d(table.total); &ptrs, &offsets, num_segs, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_segments_table() {
        let t =
            SgdSegments::new(&[(432, 5e-4), (16, 0.0), (16, 0.0), (640, 5e-4), (10, 0.0)]).unwrap();
        assert_eq!(t.offsets, vec![0, 432, 448, 464, 1104, 1114]);
        assert_eq!(t.total(), 1114);
        assert_eq!(t.weight_decay.len(), 5);
        assert!(SgdSegments::new(&[]).is_err());
        assert!(SgdSegments::new(&[(3, 0.0), (0, 0.0)]).is_err());
        assert!(SgdSegments::new(&[(3, f32::NAN)]).is_err());
    }

    #[test]
    fn the_total_is_refused_past_the_kernels_index_range() {
        let max = kernels::launch::MAX_LEN;
        assert_eq!(
            SgdSegments::new(&[(max - 10, 0.0), (10, 5e-4)])
                .unwrap()
                .total(),
            max
        );
        let err = SgdSegments::new(&[(max - 10, 0.0), (11, 5e-4)]).unwrap_err();
        assert!(err.to_string().contains("total parameters"), "{err}");
    }
}
