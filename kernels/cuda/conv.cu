// conv.cu — 2-D convolution (bias-free, NCHW, square kernel, zero padding) as implicit GEMM.
//
// Semantics (PyTorch / the CPU twin in crates/tensor):
//   y[n,co,oy,ox] = sum_{ci,ky,kx} w[co,ci,ky,kx] * x[n,ci,oy*s+ky-p, ox*s+kx-p]   (zero outside)
//   OH = (H + 2p - k) / s + 1, p = (k - 1) / 2, k in {1, 3}, s in {1, 2}.
//
// All three passes are the same 64x64x16 shared-memory tiled SGEMM; only the way the A and B
// operands are gathered from memory differs ("implicit" GEMM: the im2col matrix is never
// materialised). Each pass is a small functor with a(), b() and store() (conv_ops.cuh) so the
// tiling code exists once. This is the exact fp32 version, `--precision fp32`, the reference;
// conv_bf16.cu runs the same functors through bf16 tensor-core tiles.
//
// Determinism: every output element is produced by exactly one thread with a fixed summation
// order; backward-weight uses a deterministic split-K (partials to a workspace, then a fixed-order
// reduction), never float atomics.

#include "conv_ops.cuh"

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define THREADS 256  // 16 x 16 threads, each owns a 4 x 4 micro-tile of C

// C[M, Ncols] = A[M, K] * B[K, Ncols] over the k range [k_begin, k_end) for the tile at
// (blockIdx.y, blockIdx.x). Out-of-range rows/cols/ks load as zero and are never stored.
template <typename Op>
__device__ __forceinline__ void gemm_tile(const Op& op, int M, int Ncols, int k_begin, int k_end)
{
    // Row stride TILE_M + 2 (66 = 2 mod 32): As is written k-fastest, 16 k values by each half
    // warp at rows m and m + 1, so banks (2k + m) mod 32 are all distinct (a stride of 65 would
    // put (k, m+1) on the bank of (k+1, m)). Reads are broadcasts either way.
    __shared__ float As[TILE_K][TILE_M + 2];
    __shared__ float Bs[TILE_K][TILE_N];
    __shared__ typename Op::KInfo kinfo[TILE_K];  // the tile's reduction indices, decoded once

    const int tid = threadIdx.x;
    const int tx = tid % 16;  // column group
    const int ty = tid / 16;  // row group
    const int m0 = blockIdx.y * TILE_M;
    const int n0 = blockIdx.x * TILE_N;
    // Every B element this thread loads is in column tid % TILE_N (THREADS is a multiple of
    // TILE_N), so the column is decoded once for the whole K loop.
    const int bn = n0 + tid % TILE_N;
    const typename Op::Col bcol = op.col(bn < Ncols ? bn : 0);

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        if (tid < TILE_K && k0 + tid < k_end) kinfo[tid] = op.kinfo(k0 + tid);
        __syncthreads();
        // A tile: 64 x 16 = 1024 values, 4 per thread, k fastest (weights are k-contiguous).
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int idx = tid + r * THREADS;
            const int mm = idx / TILE_K;
            const int kk = idx % TILE_K;
            const int m = m0 + mm;
            const int k = k0 + kk;
            As[kk][mm] = (m < M && k < k_end) ? op.a(m, kinfo[kk], k) : 0.0f;
        }
        // B tile: 16 x 64 = 1024 values, 4 per thread, column fastest (pixels are contiguous).
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int idx = tid + r * THREADS;
            const int kk = idx / TILE_N;
            const int k = k0 + kk;
            Bs[kk][idx % TILE_N] = (bn < Ncols && k < k_end) ? op.b(kinfo[kk], bcol) : 0.0f;
        }
        __syncthreads();

#pragma unroll
        for (int kk = 0; kk < TILE_K; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    // Thread (ty, tx) owns rows ty + 16 i and columns tx + 16 j: consecutive threads write
    // consecutive columns, which are consecutive pixels for forward/backward-data (coalesced).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n < Ncols) op.store(m, n, acc[i][j]);
        }
    }
}

// y = conv(x, w) + beta * y.  grid = (ceil(N*OH*OW/64), ceil(CO/64)), block = 256.
extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_forward(const float* __restrict__ x, const float* __restrict__ w, float* y,
               int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
               float beta)
{
    FwdOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.x = x; op.w = w; op.y = y; op.beta = beta;
    gemm_tile(op, CO, N * OH * OW, 0, C * KS * KS);
}

// dx = conv_transpose(dy, w) + beta * dx.  grid = (ceil(N*H*W/64), ceil(C/64)), block = 256.
// beta = 1 lets the residual block add the conv branch's dx onto the shortcut's dx in place.
extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_data(const float* __restrict__ dy, const float* __restrict__ w, float* dx,
                     int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
                     float beta)
{
    BwdDataOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.w = w; op.dx = dx; op.beta = beta;
    gemm_tile(op, C, N * H * W, 0, CO * KS * KS);
}

// Partial dw sums. grid = (ceil(C*KS*KS/64), ceil(CO/64), splits), block = 256.
// Split z covers reduction indices [z*k_chunk, min((z+1)*k_chunk, N*OH*OW)); k_chunk is a
// multiple of 16 chosen by the host. part has splits * CO*C*KS*KS floats.
extern "C" __global__ void __launch_bounds__(THREADS)
conv2d_backward_weight_partial(const float* __restrict__ dy, const float* __restrict__ x,
                               float* __restrict__ part,
                               int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S,
                               int P, int k_chunk)
{
    BwdWeightOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.x = x;
    const int wlen = CO * C * KS * KS;
    op.part = part + (size_t)blockIdx.z * (size_t)wlen;
    const int K = N * OH * OW;
    const int kb = blockIdx.z * k_chunk;
    const int ke = min(K, kb + k_chunk);
    // A split with an empty range still stores zeros, so the reduction never reads garbage.
    gemm_tile(op, CO, C * KS * KS, kb, ke);
}

// dw[i] = beta * dw[i] + sum_{z=0}^{splits-1} part[z, i], summed in increasing z (deterministic).
// grid-stride over wlen elements.
extern "C" __global__ void conv2d_backward_weight_reduce(const float* __restrict__ part,
                                                         float* dw, int wlen, int splits,
                                                         float beta)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < wlen; i += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += part[(size_t)z * wlen + i];
        dw[i] = (beta == 0.0f) ? s : fmaf(beta, dw[i], s);
    }
}
