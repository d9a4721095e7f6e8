// batchnorm.cu — BatchNorm2d over NCHW f32 (per-channel statistics over N, H, W).
//
// Semantics (PyTorch / the CPU twin in crates/tensor):
//   training: mean, biased var over the cnt = N*H*W values of a channel;
//             y = gamma * (x - mean) * invstd + beta, invstd = 1 / sqrt(var + eps)
//             running_mean = (1 - m) * running_mean + m * mean
//             running_var  = (1 - m) * running_var  + m * var * cnt / (cnt - 1)
//             save_mean / save_invstd are kept for backward.
//   eval:     the same affine map with the running statistics.
//   backward: xhat = (x - mean) * invstd
//             dgamma += sum(dy * xhat), dbeta += sum(dy)   (accumulated into the gradients)
//             dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
//
// Fused ReLU (relu = 1): the forward passes write relu(y) (torch.relu: NaN propagates), and the
// backward first applies ReLU's backward, dy := (relu_out <= 0 ? 0 : dy) with relu_out the
// forward's output, as elementwise.cu's relu_backward does. One pass over the activation
// instead of two, and one launch fewer each way, for every conv-BN-ReLU of the network.
//
// Layout of the work: one thread block per channel, grid-striding over that channel's values,
// then a fixed-shape block reduction (warp shuffles, then one warp over the warp sums). The
// summation order depends only on blockDim and the shape, so results are bit-reproducible run to
// run; no atomics anywhere. Two passes (mean, then centred sum of squares) rather than E[x^2] -
// E[x]^2 so the variance does not cancel catastrophically.
//
// Speed note: with only C (16..64) blocks this under-fills a large GPU; the planned fix is a
// deterministic two-stage reduction (per-chunk partials + fixed-order combine) and fusing the
// statistics pass into the preceding convolution's epilogue.

#define BN_MAX_THREADS 1024

// Sum of v over the block; every thread gets the result. blockDim.x must be a multiple of 32
// (the host uses 256). Uses a shared array of 32 floats; callers must not rely on it afterwards.
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float warp_sums[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = (lane < nwarps) ? warp_sums[lane] : 0.0f;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
        if (lane == 0) total = s;
    }
    __syncthreads();
    const float r = total;
    __syncthreads();  // let everyone read `total` before a later call overwrites it
    return r;
}

// Index of the i-th value (0 <= i < N*HW) of channel c.
__device__ __forceinline__ int chan_index(int i, int c, int C, int HW)
{
    const int n = i / HW;
    const int hw = i - n * HW;
    return (n * C + c) * HW + hw;
}

// ReLU exactly as elementwise.cu's relu_forward / relu_backward compute it.
__device__ __forceinline__ float relu_if(int relu, float v) { return (relu && v < 0.0f) ? 0.0f : v; }
__device__ __forceinline__ float relu_grad_if(int relu, const float* out, int idx, float dy)
{
    return (relu && out[idx] <= 0.0f) ? 0.0f : dy;
}

// grid = C blocks, block = 256 threads (multiple of 32).
extern "C" __global__ void batchnorm_forward_train(
    const float* __restrict__ x, float* __restrict__ y,
    const float* __restrict__ gamma, const float* __restrict__ beta,
    float* __restrict__ running_mean, float* __restrict__ running_var,
    float* __restrict__ save_mean, float* __restrict__ save_invstd,
    int N, int C, int HW, float momentum, float eps, int relu)
{
    const int c = blockIdx.x;
    const int cnt = N * HW;

    float s = 0.0f;
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) s += x[chan_index(i, c, C, HW)];
    const float mean = block_sum(s) / (float)cnt;

    float ss = 0.0f;
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
        const float d = x[chan_index(i, c, C, HW)] - mean;
        ss = fmaf(d, d, ss);
    }
    const float var = block_sum(ss) / (float)cnt;  // biased: used for normalisation
    const float invstd = 1.0f / sqrtf(var + eps);

    const float g = gamma[c];
    const float b = beta[c];
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
        const int idx = chan_index(i, c, C, HW);
        y[idx] = relu_if(relu, fmaf(g, (x[idx] - mean) * invstd, b));
    }

    if (threadIdx.x == 0) {
        // Unbiased variance for the running estimate, as PyTorch does (cnt == 1 keeps var).
        const float unbiased = (cnt > 1) ? var * ((float)cnt / (float)(cnt - 1)) : var;
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
        save_mean[c] = mean;
        save_invstd[c] = invstd;
    }
}

// Eval mode: pure elementwise map with running statistics. Grid-stride over N*C*HW.
extern "C" __global__ void batchnorm_forward_eval(
    const float* __restrict__ x, float* __restrict__ y,
    const float* __restrict__ gamma, const float* __restrict__ beta,
    const float* __restrict__ running_mean, const float* __restrict__ running_var,
    int N, int C, int HW, float eps, int relu)
{
    const int total = N * C * HW;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int c = (i / HW) % C;
        const float invstd = 1.0f / sqrtf(running_var[c] + eps);
        y[i] = relu_if(relu, fmaf(gamma[c], (x[i] - running_mean[c]) * invstd, beta[c]));
    }
}

// grid = C blocks, block = 256 threads. dgamma / dbeta are accumulated (+=), like every other
// parameter gradient, so no temporary and no extra add launch is needed. relu_out is the
// forward's output when relu = 1 (any valid pointer, unread, when relu = 0).
extern "C" __global__ void batchnorm_backward(
    const float* __restrict__ dy, const float* __restrict__ x,
    const float* __restrict__ gamma,
    const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
    const float* __restrict__ relu_out,
    float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta,
    int N, int C, int HW, int relu)
{
    const int c = blockIdx.x;
    const int cnt = N * HW;
    const float mean = save_mean[c];
    const float invstd = save_invstd[c];

    float sdy = 0.0f, sdyx = 0.0f;
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
        const int idx = chan_index(i, c, C, HW);
        const float g = relu_grad_if(relu, relu_out, idx, dy[idx]);
        sdy += g;
        sdyx = fmaf(g, (x[idx] - mean) * invstd, sdyx);
    }
    const float sum_dy = block_sum(sdy);
    const float sum_dy_xhat = block_sum(sdyx);

    const float mean_dy = sum_dy / (float)cnt;
    const float mean_dy_xhat = sum_dy_xhat / (float)cnt;
    const float k = gamma[c] * invstd;
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
        const int idx = chan_index(i, c, C, HW);
        const float xhat = (x[idx] - mean) * invstd;
        const float g = relu_grad_if(relu, relu_out, idx, dy[idx]);
        dx[idx] = k * (g - mean_dy - xhat * mean_dy_xhat);
    }
    if (threadIdx.x == 0) {
        dgamma[c] += sum_dy_xhat;
        dbeta[c] += sum_dy;
    }
}
