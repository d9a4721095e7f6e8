//! A minimal f32 tensor and every op a ResNet needs, each with a forward and a hand-written
//! backward pass. This is the CPU engine: plain, threaded where it matters, and the oracle
//! that the CUDA kernels (crate `kernels`) are proven against.
//!
//! Layout is NCHW, contiguous, row-major, as in PyTorch, so results compare one to one.
//! Every op is deterministic: parallel reductions split work into a fixed number of chunks
//! that does not depend on the thread count, and sum the partial results in order.

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
mod gemm;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod sgd;
pub mod shortcut;
#[cfg(test)]
mod testutil;

/// A dense f32 tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    pub fn full(shape: &[usize], value: f32) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
        }
    }

    /// Panics if `data.len()` does not match the shape: that is a programming error, not input.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            data.len(),
            "shape {shape:?} needs {n} values, got {}",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The four dimensions of an NCHW tensor.
    pub fn dims4(&self) -> (usize, usize, usize, usize) {
        match self.shape[..] {
            [n, c, h, w] => (n, c, h, w),
            _ => panic!("expected an NCHW tensor, got shape {:?}", self.shape),
        }
    }

    /// The two dimensions of a matrix-shaped tensor.
    pub fn dims2(&self) -> (usize, usize) {
        match self.shape[..] {
            [r, c] => (r, c),
            _ => panic!("expected a 2-d tensor, got shape {:?}", self.shape),
        }
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.data.len(),
            "reshape {:?} -> {shape:?}",
            self.shape
        );
        self.shape = shape.to_vec();
        self
    }

    pub fn fill(&mut self, value: f32) {
        self.data.fill(value);
    }

    /// Sum of squares, accumulated in f64 (for norms in tests and diagnostics).
    pub fn sum_sq(&self) -> f64 {
        self.data.iter().map(|&v| v as f64 * v as f64).sum()
    }
}

/// How many chunks a parallel reduction over `n` items is split into. Fixed, so the order
/// of floating-point sums (and so every result bit) does not depend on the machine.
pub(crate) const REDUCE_CHUNKS: usize = 16;

/// Split `0..n` into at most `REDUCE_CHUNKS` contiguous ranges.
pub(crate) fn chunk_ranges(n: usize) -> Vec<std::ops::Range<usize>> {
    let chunks = n.clamp(1, REDUCE_CHUNKS);
    (0..chunks)
        .map(|i| (i * n / chunks)..((i + 1) * n / chunks))
        .filter(|r| !r.is_empty())
        .collect()
}
