// batchnorm.cu — BatchNorm2d over NCHW f32 (per-channel statistics over N, H, W).
//
// Semantics (PyTorch / the CPU twin and the launcher in crates/tensor/src/batchnorm/):
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
// Layout of the work (training forward and backward): the cnt values of a channel, in (n, hw)
// order, are cut into chunks of BN_CHUNK = BN_PER_THREAD * blockDim.x values (16 * 256 = 4096
// with the host's 256 threads; a channel's last chunk may be shorter). Chunk k of channel c is
// block (k, c) of a grid (chunks, C); thread t of it owns the chunk's values t, t + blockDim.x,
// ..., t + 15 * blockDim.x (coalesced). Each direction is two launches on that grid:
//   forward  1. batchnorm_forward_train_partial: the block loads its chunk into registers (16
//               values a thread), and from those registers computes the chunk's mean_k, then its
//               centred M2_k = sum (x - mean_k)^2: a true two-pass (no E[x^2] - E[x]^2
//               cancellation) for one read of x. Writes (mean_k, M2_k) to the workspace.
//            2. batchnorm_forward_train_apply: every block combines its channel's partials with
//               Chan's formula, mean = sum n_k mean_k / cnt, M2 = sum M2_k + n_k (mean_k - mean)^2,
//               var = M2 / cnt, and normalises its own chunk (+ ReLU). Block (0, c) alone writes
//               save_mean / save_invstd and updates the running statistics.
//   backward 1. batchnorm_backward_partial: the chunk's sum dy and sum dy * xhat (dy masked by
//               ReLU's backward when relu) into the workspace.
//            2. batchnorm_backward_apply: every block sums its channel's partials, writes dx for
//               its chunk; block (0, c) alone accumulates dgamma[c] / dbeta[c].
// Workspace (launch 1 writes all of it, launch 2 only reads it): 2 * C * chunks floats,
// part[c * chunks + k] = mean_k (backward: sum dy), part[(C + c) * chunks + k] = M2_k
// (backward: sum dy * xhat). The chunk length n_k is recomputed from the shape, not stored.
//
// Determinism: no atomics anywhere. Every sum has a fixed shape: inside a chunk, each thread adds
// its values in index order, then block_sum's fixed tree (warp shuffles, then one warp over the
// warp sums); across chunks, thread t takes chunks t, t + blockDim.x, ... in order, then the same
// tree. The order depends only on the shape and blockDim, never on timing or on which block runs
// first, so results are bit-identical run to run. All blocks of a launch 2 run the same code on
// the same partials, so every chunk of a channel is normalised with exactly the statistics that
// block (0, c) saves.
//
// Speed note: grid (chunks, C) fills the GPU (ResNet-20 at batch 128: 512 blocks for 16 x
// 131072 values, where one block per channel gave 16). x is read twice by the forward (was three
// times), dy / x / relu_out twice by the backward. A further step is fusing the statistics pass
// into the preceding convolution's epilogue.

// Values per thread of a chunk: the chunk is BN_PER_THREAD * blockDim.x values. Must equal
// BN_PER_THREAD in kernels/src/launch/batchnorm.rs (a host test checks it).
#define BN_PER_THREAD 16

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

// Chunk length: BN_PER_THREAD values per thread of the block.
__device__ __forceinline__ int bn_chunk() { return BN_PER_THREAD * (int)blockDim.x; }

// Number of values in chunk k of a channel of cnt values (the last one may be short).
__device__ __forceinline__ int bn_chunk_len(int k, int cnt)
{
    return min(bn_chunk(), cnt - k * bn_chunk());
}

// ReLU exactly as elementwise.cu's relu_forward / relu_backward compute it.
__device__ __forceinline__ float relu_if(int relu, float v)
{
    return (relu && v < 0.0f) ? 0.0f : v;
}
__device__ __forceinline__ float relu_grad_if(int relu, const float* out, int idx, float dy)
{
    return (relu && out[idx] <= 0.0f) ? 0.0f : dy;
}

// Training forward, launch 1 of 2. grid = (chunks, C), block = 256 threads (multiple of 32).
// part: 2 * C * chunks floats, written in full: (mean_k, M2_k) of every chunk.
extern "C" __global__ void batchnorm_forward_train_partial(
    const float* __restrict__ x, float* __restrict__ part, int N, int C, int HW)
{
    const int k = blockIdx.x;
    const int c = blockIdx.y;
    const int chunks = gridDim.x;
    const int cnt = N * HW;
    const int begin = k * bn_chunk();
    const int nk = bn_chunk_len(k, cnt);

    // The thread's values, in registers (constant indices after unrolling): both passes below
    // read them from here, so x is read once.
    float v[BN_PER_THREAD];
#pragma unroll
    for (int j = 0; j < BN_PER_THREAD; ++j) {
        const int i = j * (int)blockDim.x + (int)threadIdx.x;
        v[j] = (i < nk) ? x[chan_index(begin + i, c, C, HW)] : 0.0f;
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < BN_PER_THREAD; ++j) s += v[j];  // out-of-chunk values are 0
    const float mean_k = block_sum(s) / (float)nk;

    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < BN_PER_THREAD; ++j) {
        const int i = j * (int)blockDim.x + (int)threadIdx.x;
        const float d = (i < nk) ? v[j] - mean_k : 0.0f;
        ss = fmaf(d, d, ss);
    }
    const float m2_k = block_sum(ss);

    if (threadIdx.x == 0) {
        part[c * chunks + k] = mean_k;
        part[(C + c) * chunks + k] = m2_k;
    }
}

// Training forward, launch 2 of 2. grid = (chunks, C) as launch 1, block = 256 threads: combines
// the channel's partials (Chan), normalises chunk k (+ ReLU); block (0, c) saves mean / invstd
// and updates the running statistics.
extern "C" __global__ void batchnorm_forward_train_apply(
    const float* __restrict__ x, const float* __restrict__ part, float* __restrict__ y,
    const float* __restrict__ gamma, const float* __restrict__ beta,
    float* __restrict__ running_mean, float* __restrict__ running_var,
    float* __restrict__ save_mean, float* __restrict__ save_invstd,
    int N, int C, int HW, float momentum, float eps, int relu)
{
    const int k = blockIdx.x;
    const int c = blockIdx.y;
    const int chunks = gridDim.x;
    const int cnt = N * HW;
    const float* __restrict__ pmean = part + c * chunks;
    const float* __restrict__ pm2 = part + (C + c) * chunks;

    // Chan's combine, in the fixed order described in the header.
    float s = 0.0f;
    for (int q = threadIdx.x; q < chunks; q += blockDim.x) {
        s += (float)bn_chunk_len(q, cnt) * pmean[q];
    }
    const float mean = block_sum(s) / (float)cnt;
    float m2 = 0.0f;
    for (int q = threadIdx.x; q < chunks; q += blockDim.x) {
        const float d = pmean[q] - mean;
        m2 += fmaf((float)bn_chunk_len(q, cnt) * d, d, pm2[q]);
    }
    const float var = block_sum(m2) / (float)cnt;  // biased: used for normalisation
    const float invstd = 1.0f / sqrtf(var + eps);

    const int begin = k * bn_chunk();
    const int nk = bn_chunk_len(k, cnt);
    const float g = gamma[c];
    const float b = beta[c];
#pragma unroll
    for (int j = 0; j < BN_PER_THREAD; ++j) {
        const int i = j * (int)blockDim.x + (int)threadIdx.x;
        if (i < nk) {
            const int idx = chan_index(begin + i, c, C, HW);
            y[idx] = relu_if(relu, fmaf(g, (x[idx] - mean) * invstd, b));
        }
    }

    if (k == 0 && threadIdx.x == 0) {
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

// Backward, launch 1 of 2. grid = (chunks, C), block = 256 threads. part: 2 * C * chunks floats,
// written in full: (sum dy, sum dy * xhat) of every chunk, dy masked by ReLU's backward when
// relu. relu_out is the forward's output when relu = 1 (any valid pointer, unread, when 0).
extern "C" __global__ void batchnorm_backward_partial(
    const float* __restrict__ dy, const float* __restrict__ x,
    const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
    const float* __restrict__ relu_out, float* __restrict__ part,
    int N, int C, int HW, int relu)
{
    const int k = blockIdx.x;
    const int c = blockIdx.y;
    const int chunks = gridDim.x;
    const int cnt = N * HW;
    const int begin = k * bn_chunk();
    const int nk = bn_chunk_len(k, cnt);
    const float mean = save_mean[c];
    const float invstd = save_invstd[c];

    float sdy = 0.0f, sdyx = 0.0f;
#pragma unroll
    for (int j = 0; j < BN_PER_THREAD; ++j) {
        const int i = j * (int)blockDim.x + (int)threadIdx.x;
        if (i < nk) {
            const int idx = chan_index(begin + i, c, C, HW);
            const float g = relu_grad_if(relu, relu_out, idx, dy[idx]);
            sdy += g;
            sdyx = fmaf(g, (x[idx] - mean) * invstd, sdyx);
        }
    }
    const float sum_dy = block_sum(sdy);
    const float sum_dy_xhat = block_sum(sdyx);
    if (threadIdx.x == 0) {
        part[c * chunks + k] = sum_dy;
        part[(C + c) * chunks + k] = sum_dy_xhat;
    }
}

// Backward, launch 2 of 2. grid = (chunks, C) as launch 1, block = 256 threads: sums the
// channel's partials, writes dx for chunk k; block (0, c) accumulates dgamma / dbeta (+=, like
// every other parameter gradient, so no temporary and no extra add launch is needed).
extern "C" __global__ void batchnorm_backward_apply(
    const float* __restrict__ dy, const float* __restrict__ x,
    const float* __restrict__ gamma,
    const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
    const float* __restrict__ relu_out, const float* __restrict__ part,
    float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta,
    int N, int C, int HW, int relu)
{
    const int k = blockIdx.x;
    const int c = blockIdx.y;
    const int chunks = gridDim.x;
    const int cnt = N * HW;
    const float* __restrict__ pdy = part + c * chunks;
    const float* __restrict__ pdyx = part + (C + c) * chunks;

    float a = 0.0f, bsum = 0.0f;
    for (int q = threadIdx.x; q < chunks; q += blockDim.x) {
        a += pdy[q];
        bsum += pdyx[q];
    }
    const float sum_dy = block_sum(a);
    const float sum_dy_xhat = block_sum(bsum);

    const float mean = save_mean[c];
    const float invstd = save_invstd[c];
    const float mean_dy = sum_dy / (float)cnt;
    const float mean_dy_xhat = sum_dy_xhat / (float)cnt;
    const float kk = gamma[c] * invstd;
    const int begin = k * bn_chunk();
    const int nk = bn_chunk_len(k, cnt);
#pragma unroll
    for (int j = 0; j < BN_PER_THREAD; ++j) {
        const int i = j * (int)blockDim.x + (int)threadIdx.x;
        if (i < nk) {
            const int idx = chan_index(begin + i, c, C, HW);
            const float xhat = (x[idx] - mean) * invstd;
            const float g = relu_grad_if(relu, relu_out, idx, dy[idx]);
            dx[idx] = kk * (g - mean_dy - xhat * mean_dy_xhat);
        }
    }
    if (k == 0 && threadIdx.x == 0) {
        dgamma[c] += sum_dy_xhat;
        dbeta[c] += sum_dy;
    }
}
