// conv_bf16.cu — the three convolution GEMMs of conv.cu on the tensor cores: operands rounded
// to bf16 as they enter shared memory, products summed in fp32 by mma.sync (sm_80+).
//
// Same semantics, same index maps (conv_ops.cuh: FwdOp, BwdDataOp, BwdWeightOp), same
// outputs in fp32 memory, same deterministic split-K for the weight gradient (its reduction is
// conv.cu's conv2d_backward_weight_reduce). Only the tile differs:
//
//   block tile 64 (M) x 64 (N) x 32 (K), 128 threads = 4 warps in a 2 x 2 grid;
//   each warp owns a 32 x 32 piece of C: 2 x 4 mma tiles of 16 x 8, 32 fp32 accumulators.
//
// Shared memory holds bf16 *pairs* along k (one 32-bit word = A[m][2j..2j+1] or
// B[2j..2j+1][n]), which is exactly the register format mma wants, so a fragment is one
// 32-bit shared load per register. Rows are padded to 20 words: the 32 lanes of a fragment
// load (8 rows g x 4 words t) then hit 32 different banks (g*20 + t mod 32 are distinct).
//
// What the CPU twin checks: with x, w, dy pre-rounded to bf16 (`tensor::bf16`), this kernel and
// the fp32 CPU conv add the same exact products, in a different order.
//
// Not yet tuned (speed work, by measurement on the device): no cp.async double buffering,
// scalar gathers (the index decoding is hoisted: see conv_ops.cuh), stores straight from the
// accumulator fragments, a 64-row tile even where M (the channel count) is 16 or 32.

#include "conv_ops.cuh"
#include "mma_bf16.cuh"

#define BF_TILE_M 64
#define BF_TILE_N 64
#define BF_TILE_K 32
#define BF_THREADS 128
#define BF_WORDS (BF_TILE_K / 2)  // bf16x2 words per tile row
#define BF_STRIDE (BF_WORDS + 4)  // padded row: conflict-free fragment loads

template <typename Op>
__device__ __forceinline__ void gemm_tile_bf16(const Op& op, int M, int Ncols, int k_begin,
                                               int k_end)
{
    __shared__ unsigned As[BF_TILE_M][BF_STRIDE];  // As[m][j] = A[m0+m][k0+2j .. +1]
    __shared__ unsigned Bs[BF_TILE_N][BF_STRIDE];  // Bs[n][j] = B[k0+2j .. +1][n0+n]
    __shared__ typename Op::KInfo kinfo[BF_TILE_K];  // the tile's reduction indices, decoded once

    const int tid = threadIdx.x;
    const int lane = tid % 32;
    const int warp = tid / 32;
    const int g = lane / 4;  // fragment row group
    const int t = lane % 4;  // thread in group
    const int wm = (warp / 2) * 32;
    const int wn = (warp % 2) * 32;
    const int m0 = blockIdx.y * BF_TILE_M;
    const int n0 = blockIdx.x * BF_TILE_N;
    // Every B pair this thread loads is in column tid % BF_TILE_N (BF_THREADS is a multiple of
    // BF_TILE_N), so the column is decoded once for the whole K loop.
    const int bn = n0 + tid % BF_TILE_N;
    const typename Op::Col bcol = op.col(bn < Ncols ? bn : 0);

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += BF_TILE_K) {
        if (tid < BF_TILE_K && k0 + tid < k_end) kinfo[tid] = op.kinfo(k0 + tid);
        __syncthreads();
        // A: 64 rows x 16 pairs, 8 per thread, pair index fastest (A rows are k-contiguous for
        // forward and backward-weight's dy rows are pixel-contiguous: both read consecutively).
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            const int idx = tid + r * BF_THREADS;
            const int mm = idx / BF_WORDS;
            const int j = idx % BF_WORDS;
            const int m = m0 + mm;
            const int k = k0 + 2 * j;
            const float lo = (m < M && k < k_end) ? op.a(m, kinfo[2 * j], k) : 0.0f;
            const float hi = (m < M && k + 1 < k_end) ? op.a(m, kinfo[2 * j + 1], k + 1) : 0.0f;
            As[mm][j] = pack_bf16x2(lo, hi);
        }
        // B: 16 pairs x 64 columns, 8 per thread, column fastest (pixels are contiguous).
#pragma unroll
        for (int r = 0; r < 8; ++r) {
            const int idx = tid + r * BF_THREADS;
            const int j = idx / BF_TILE_N;
            const int k = k0 + 2 * j;
            const float lo = (bn < Ncols && k < k_end) ? op.b(kinfo[2 * j], bcol) : 0.0f;
            const float hi = (bn < Ncols && k + 1 < k_end) ? op.b(kinfo[2 * j + 1], bcol) : 0.0f;
            Bs[idx % BF_TILE_N][j] = pack_bf16x2(lo, hi);
        }
        __syncthreads();

        // Two k16 steps per tile; a k16 step spans 8 words, its upper half (k+8..) 4 words on.
#pragma unroll
        for (int ks = 0; ks < BF_WORDS; ks += 8) {
            unsigned a[2][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int row = wm + 16 * i + g;
                a[i][0] = As[row][ks + t];
                a[i][1] = As[row + 8][ks + t];
                a[i][2] = As[row][ks + t + 4];
                a[i][3] = As[row + 8][ks + t + 4];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int col = wn + 8 * j + g;
                b[j][0] = Bs[col][ks + t];
                b[j][1] = Bs[col][ks + t + 4];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_bf16_16x8x16(acc[i][j], a[i], b[j]);
        }
        __syncthreads();
    }

    // acc[i][j][2h + e] is C[wm + 16i + g + 8h][wn + 8j + 2t + e].
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int m = m0 + wm + 16 * i + g + 8 * h;
                if (m >= M) continue;
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int n = n0 + wn + 8 * j + 2 * t + e;
                    if (n < Ncols) op.store(m, n, acc[i][j][2 * h + e]);
                }
            }
}

// y = conv(x, w) + beta * y.  grid = (ceil(N*OH*OW/64), ceil(CO/64)), block = 128.
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_forward_bf16(const float* __restrict__ x, const float* __restrict__ w, float* y,
                    int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
                    float beta)
{
    FwdOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.x = x; op.w = w; op.y = y; op.beta = beta;
    gemm_tile_bf16(op, CO, N * OH * OW, 0, C * KS * KS);
}

// dx = conv_transpose(dy, w) + beta * dx.  grid = (ceil(N*H*W/64), ceil(C/64)), block = 128.
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_data_bf16(const float* __restrict__ dy, const float* __restrict__ w, float* dx,
                          int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S,
                          int P, float beta)
{
    BwdDataOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.w = w; op.dx = dx; op.beta = beta;
    gemm_tile_bf16(op, C, N * H * W, 0, CO * KS * KS);
}

// Partial dw sums, as conv2d_backward_weight_partial (then conv2d_backward_weight_reduce).
// grid = (ceil(C*KS*KS/64), ceil(CO/64), splits), block = 128.
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_weight_partial_bf16(const float* __restrict__ dy, const float* __restrict__ x,
                                    float* __restrict__ part, int N, int C, int H, int W, int CO,
                                    int OH, int OW, int KS, int S, int P, int k_chunk)
{
    BwdWeightOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.x = x;
    const int wlen = CO * C * KS * KS;
    op.part = part + (size_t)blockIdx.z * (size_t)wlen;
    const int K = N * OH * OW;
    const int kb = blockIdx.z * k_chunk;
    const int ke = min(K, kb + k_chunk);
    gemm_tile_bf16(op, CO, C * KS * KS, kb, ke);
}
