// elementwise.cu — ReLU, residual add, fused add+ReLU, and their backward passes.
//
// Semantics (PyTorch / the CPU twin and the launcher in crates/tensor/src/elementwise/):
//   relu:          y = (x < 0) ? 0 : x      (torch.relu: NaN and -0.0 pass; fmaxf would drop NaN)
//   relu backward: dx = (y <= 0) ? 0 : dy   (torch's threshold_backward, from the forward *output*:
//                                            dy passes where y > 0 or y is NaN)
//   add:           out = a + b               (residual connection)
//   add_relu:      out = relu(a + b)         (end of a residual block, one pass instead of two)
//   accumulate:    acc = acc + x             (summing gradient contributions)
//
// All kernels are 1-D grid-stride loops over n elements, so any grid size is correct; the host
// caps the grid and uses 256-thread blocks. In-place use (out aliasing an input) is allowed
// because every element is read and written by the same thread, so no __restrict__ on outputs.
// n is int: tensors here stay well below 2^31 elements (checked on the host).

extern "C" __global__ void relu_forward(const float* x, float* y, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;  // written so NaN propagates, as torch.relu does
    }
}

extern "C" __global__ void relu_backward(const float* dy, const float* y, float* dx, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        dx[i] = y[i] <= 0.0f ? 0.0f : dy[i];  // torch's threshold_backward form
    }
}

extern "C" __global__ void add_forward(const float* a, const float* b, float* out, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = a[i] + b[i];
    }
}

extern "C" __global__ void add_relu_forward(const float* a, const float* b, float* out, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float v = a[i] + b[i];
        out[i] = v < 0.0f ? 0.0f : v;
    }
}

// acc += x. Used where two branches' gradients meet (e.g. residual dx) when the producer could
// not accumulate in place itself.
extern "C" __global__ void accumulate(float* acc, const float* x, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        acc[i] += x[i];
    }
}
