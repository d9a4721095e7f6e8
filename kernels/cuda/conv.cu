// conv.cu — 2-D convolution (bias-free, NCHW, square kernel, zero padding) as implicit GEMM.
//
// Semantics (PyTorch / the CPU twin and the launcher in crates/tensor/src/conv/):
//   y[n,co,oy,ox] = sum_{ci,ky,kx} w[co,ci,ky,kx] * x[n,ci,oy*s+ky-p, ox*s+kx-p]   (zero outside)
//   OH = (H + 2p - k) / s + 1, p = (k - 1) / 2, k in {1, 3}, s in {1, 2}.
//
// All three passes are the same shared-memory tiled SGEMM (K step 16; 64x64 tiles, or 32x128 /
// 16x256 for GEMMs of at most 32 / 16 rows); only the way the A and B operands are gathered
// from memory differs ("implicit" GEMM: the im2col matrix is never materialised). The passes
// and their index functors live in conv_ops.cuh, so the tiling code exists once per precision.
// This is the exact fp32 version, `--precision fp32`, the reference; conv_bf16.cu runs the same
// passes through bf16 tensor-core tiles.
//
// Determinism: every output element is produced by exactly one thread with a fixed summation
// order; backward-weight uses a deterministic split-K (partials to a workspace, then a fixed-order
// reduction), never float atomics; forward and backward-data split K the same way when their
// grid alone is too small to fill the GPU.

#include "conv_ops.cuh"

#define TILE_K 16
#define THREADS 256  // each owns a 4 x 4 micro-tile of C: BM x BN = 256 x 16

// C[M, Ncols] = A[M, K] * B[K, Ncols] over the k range [k_begin, k_end) for the tile at
// (blockIdx.y, blockIdx.x). Out-of-range rows/cols/ks load as zero and are never stored.
// The block tile is BM x (4096 / BM): 64 x 64, or 32 x 128 / 16 x 256 when the GEMM has at
// most 32 / 16 rows (the channel count of a narrow stage), so no thread computes padding rows.
template <int BM, typename Op>
__device__ __forceinline__ void gemm_tile(const Op& op, int M, int Ncols, int k_begin, int k_end)
{
    const int BN = 16 * THREADS / BM;  // 4 x 4 per thread
    const int TX = BN / 4;             // threads across the columns
    const int TY = BM / 4;             // threads down the rows
    static_assert(THREADS % (16 * THREADS / BM) == 0, "one B column per thread");
    // Row stride BM + 2 (= 2 mod 32 for BM = 64 / 32, 18 for 16): As is written k-fastest, 16 k
    // values by each half warp at rows m and m + 1, and the banks of those 32 stores are all
    // distinct (a +1 pad would put (k, m+1) on the bank of (k+1, m)). Reads are broadcasts.
    __shared__ float As[TILE_K][BM + 2];
    __shared__ float Bs[TILE_K][16 * THREADS / BM];
    __shared__ typename Op::KInfo kinfo[TILE_K];  // the tile's reduction indices, decoded once

    const int tid = threadIdx.x;
    const int tx = tid % TX;  // column group
    const int ty = tid / TX;  // row group
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    // Every B element this thread loads is in column tid % BN (THREADS is a multiple of BN),
    // so the column is decoded once for the whole K loop.
    const int bn = n0 + tid % BN;
    const typename Op::Col bcol = bn < Ncols ? op.col(bn) : typename Op::Col();  // zeros past Ncols

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        if (tid < TILE_K)  // past k_end: value-initialised, so B gathers zeros there
            kinfo[tid] = k0 + tid < k_end ? op.kinfo(k0 + tid) : typename Op::KInfo();
        __syncthreads();
        // A tile: BM x 16 values, k fastest (weights are k-contiguous).
#pragma unroll
        for (int r = 0; r < BM * TILE_K / THREADS; ++r) {
            const int idx = tid + r * THREADS;
            const int mm = idx / TILE_K;
            const int kk = idx % TILE_K;
            const int m = m0 + mm;
            const int k = k0 + kk;
            As[kk][mm] = (m < M && k < k_end) ? op.a(m, kinfo[kk], k) : 0.0f;
        }
        // B tile: 16 x BN values, column fastest (pixels are contiguous).
#pragma unroll
        for (int r = 0; r < BN * TILE_K / THREADS; ++r) {
            const int idx = tid + r * THREADS;
            const int kk = idx / BN;
            Bs[kk][idx % BN] = op.b(kinfo[kk], bcol);  // in range by construction (conv_ops.cuh)
        }
        __syncthreads();

#pragma unroll
        for (int kk = 0; kk < TILE_K; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + TY * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + TX * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    // Thread (ty, tx) owns rows ty + TY i and columns tx + TX j: consecutive threads write
    // consecutive columns, which are consecutive pixels for forward/backward-data (coalesced).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + TY * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + TX * j;
            if (n < Ncols) op.store(m, n, acc[i][j]);
        }
    }
}

// The fp32 tile of `BM` rows, for the passes of conv_ops.cuh.
template <int BM>
struct F32Tile {
    template <typename Op>
    __device__ static void run(const Op& op, int M, int Ncols, int k_begin, int k_end)
    {
        gemm_tile<BM>(op, M, Ncols, k_begin, k_end);
    }
};

// ---- entry points: grid = (ceil(Ncols / BN), ceil(M / BM), splits), block = 256 -------------
// (M, Ncols) = (CO, N*OH*OW) forward, (C, N*H*W) backward-data, (CO, C*KS*KS) backward-weight;
// no suffix: 64 x 64 tiles (M > 32), _m32: 32 x 128 (M <= 32), _m16: 16 x 256 (M <= 16).
// k_chunk: the split of K per blockIdx.z (conv_ops.cuh); >= K with one split.

// y = conv(x, w) + beta * y (or split partials).
extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_forward(const float* __restrict__ x, const float* __restrict__ w, float* y, int N, int C,
               int H, int W, int CO, int OH, int OW, int KS, int S, int P, float beta, int k_chunk)
{
    conv_forward_pass<F32Tile<64>>(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk);
}

extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_forward_m32(const float* __restrict__ x, const float* __restrict__ w, float* y, int N, int C,
                   int H, int W, int CO, int OH, int OW, int KS, int S, int P, float beta,
                   int k_chunk)
{
    conv_forward_pass<F32Tile<32>>(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk);
}

extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_forward_m16(const float* __restrict__ x, const float* __restrict__ w, float* y, int N, int C,
                   int H, int W, int CO, int OH, int OW, int KS, int S, int P, float beta,
                   int k_chunk)
{
    conv_forward_pass<F32Tile<16>>(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk);
}

// dx = conv_transpose(dy, w) + beta * dx (or split partials).
extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_data(const float* __restrict__ dy, const float* __restrict__ w, float* dx, int N,
                     int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P, float beta,
                     int k_chunk)
{
    conv_backward_data_pass<F32Tile<64>>(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                        k_chunk);
}

extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_data_m32(const float* __restrict__ dy, const float* __restrict__ w, float* dx,
                         int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
                         float beta, int k_chunk)
{
    conv_backward_data_pass<F32Tile<32>>(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                        k_chunk);
}

extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_data_m16(const float* __restrict__ dy, const float* __restrict__ w, float* dx,
                         int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
                         float beta, int k_chunk)
{
    conv_backward_data_pass<F32Tile<16>>(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                        k_chunk);
}

// Partial dw sums; conv2d_split_reduce adds them.
extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_weight_partial(const float* __restrict__ dy, const float* __restrict__ x,
                               float* __restrict__ part, int N, int C, int H, int W, int CO, int OH,
                               int OW, int KS, int S, int P, int k_chunk)
{
    conv_backward_weight_partial_pass<F32Tile<64>>(dy, x, part, N, C, H, W, CO, OH, OW, KS, S, P,
                                                   k_chunk);
}

extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_weight_partial_m32(const float* __restrict__ dy, const float* __restrict__ x,
                                   float* __restrict__ part, int N, int C, int H, int W, int CO,
                                   int OH, int OW, int KS, int S, int P, int k_chunk)
{
    conv_backward_weight_partial_pass<F32Tile<32>>(dy, x, part, N, C, H, W, CO, OH, OW, KS, S, P,
                                                   k_chunk);
}

extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_weight_partial_m16(const float* __restrict__ dy, const float* __restrict__ x,
                                   float* __restrict__ part, int N, int C, int H, int W, int CO,
                                   int OH, int OW, int KS, int S, int P, int k_chunk)
{
    conv_backward_weight_partial_pass<F32Tile<16>>(dy, x, part, N, C, H, W, CO, OH, OW, KS, S, P,
                                                   k_chunk);
}

// out[i] = beta * out[i] + sum_{z=0}^{splits-1} part[z, i], summed in increasing z
// (deterministic): the second half of every split-K pass (conv_ops.cuh). Grid-stride over len.
extern "C" __global__ void conv2d_split_reduce(const float* __restrict__ part, float* out, int len,
                                               int splits, float beta)
{
    // size_t index: len may come within a grid stride of INT_MAX.
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)len;
         i += (size_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += part[(size_t)z * len + i];
        out[i] = (beta == 0.0f) ? s : fmaf(beta, out[i], s);
    }
}
