// conv_bf16.cu — the three convolution GEMMs of conv.cu on the tensor cores: operands rounded
// to bf16 as they enter shared memory, products summed in fp32 by mma.sync (sm_80+). The CPU
// twin and the launcher: crates/tensor/src/conv/ (`Precision::Bf16`).
//
// Same semantics, same index maps (conv_ops.cuh: FwdOp, BwdDataOp, BwdWeightOp), same
// outputs in fp32 memory, same deterministic split-K (its reduction is conv.cu's
// conv2d_split_reduce). Only the tile differs. 128 threads = 4 warps, each
// owning MT x NT mma tiles of 16 x 8 (4 fp32 accumulators each), in one of three shapes chosen
// by the GEMM's row count M — the channel count, which is small in the first stages:
//
//   (no suffix)  M > 32:   block 64 x 64 x 32, warps 2 x 2, each 32 x 32 (MT 2, NT 4)
//   _m32         M <= 32:  block 32 x 128 x 32, warps 1 x 4, each 32 x 32 (MT 2, NT 4)
//   _m16         M <= 16:  block 16 x 128 x 32, warps 1 x 4, each 16 x 32 (MT 1, NT 4)
//
// A 64-row tile at M = 16 (ResNet-20's first stage) would spend 3/4 of its MMAs on padding.
//
// Shared memory holds bf16 *pairs* along k (one 32-bit word = A[m][2j..2j+1] or
// B[2j..2j+1][n]), which is exactly the register format mma wants, so a fragment is one
// 32-bit shared load per register. Rows are padded to 20 words: the 32 lanes of a fragment
// load (8 rows g x 4 words t) then hit 32 different banks (g*20 + t mod 32 are distinct); B's
// words are also swizzled (b_word) so that the tile stores are conflict-free too.
//
// What the CPU twin checks: with x, w, dy pre-rounded to bf16 (`tensor::bf16`), this kernel and
// the fp32 CPU conv add the same exact products, in a different order.
//
// Not yet tuned (speed work, by measurement on the device): scalar gathers (pipelined through
// registers, with the index decoding hoisted: see conv_ops.cuh), no ldmatrix, stores straight
// from the accumulator fragments.

#include "conv_ops.cuh"
#include "mma_bf16.cuh"

#define BF_TILE_K 32
#define BF_THREADS 128
#define BF_WORDS (BF_TILE_K / 2)  // bf16x2 words per tile row
#define BF_STRIDE (BF_WORDS + 4)  // padded row: conflict-free fragment loads

// Where word j of B column n sits in its shared row: j with its low two bits XORed by bits 3-4
// of n. A warp stores 32 consecutive columns at one j; rows 20 words apart alone would put
// columns n and n + 8 on the same bank (4-way conflicts), the XOR moves them to 4 different
// ones. Fragment reads (8 columns n..n+7 sharing bits 3-4, words ks+t) stay conflict-free: the
// XOR only permutes t within its aligned group of 4, i.e. k pairs within one half k16 step.
__device__ __forceinline__ int b_word(int n, int j) { return j ^ ((n >> 3) & 3); }

// C[M, Ncols] += A[M, K] * B[K, Ncols] over [k_begin, k_end) for the tile at (blockIdx.y,
// blockIdx.x), with WARPS_M x (4 / WARPS_M) warps of MT x NT mma tiles each.
//
// Software-pipelined over K: each thread gathers the *next* K tile from global memory into
// registers (as fp32 pairs, rounded only when stored) right before the MMAs of the current tile,
// so the gathers' latency overlaps the tensor-core work instead of stalling in front of it. The
// reduction indices are decoded into a double-buffered kinfo, which with the single shared tile
// leaves two barriers per K step. Which values meet in which mma is unchanged, so the results
// are bit-identical to the unpipelined loop.
template <int WARPS_M, int MT, int NT, typename Op>
__device__ __forceinline__ void gemm_tile_bf16(const Op& op, int M, int Ncols, int k_begin,
                                               int k_end)
{
    const int WARPS_N = 4 / WARPS_M;
    const int BM = WARPS_M * MT * 16;
    const int BN = WARPS_N * NT * 8;
    const int A_WORDS = BM * BF_WORDS / BF_THREADS;  // A words gathered per thread per K tile
    const int B_WORDS = BN * BF_WORDS / BF_THREADS;  // B words
    static_assert(WARPS_M * (4 / WARPS_M) == 4, "4 warps");
    static_assert(BF_THREADS % (4 / WARPS_M * NT * 8) == 0, "one B column per thread");
    static_assert((WARPS_M * MT * 16 * BF_WORDS) % BF_THREADS == 0, "whole A words per thread");
    __shared__ unsigned As[WARPS_M * MT * 16][BF_STRIDE];        // As[m][j] = A[m0+m][k0+2j .. +1]
    __shared__ unsigned Bs[(4 / WARPS_M) * NT * 8][BF_STRIDE];   // Bs[n][j] = B[k0+2j .. +1][n0+n]
    __shared__ typename Op::KInfo kinfo[2][BF_TILE_K];  // a K tile's indices, decoded once

    const int tid = threadIdx.x;
    const int lane = tid % 32;
    const int warp = tid / 32;
    const int g = lane / 4;  // fragment row group
    const int t = lane % 4;  // thread in group
    const int wm = (warp / WARPS_N) * MT * 16;
    const int wn = (warp % WARPS_N) * NT * 8;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    // Every B pair this thread loads is in column tid % BN (BF_THREADS is a multiple of BN),
    // so the column is decoded once for the whole K loop.
    const int bn = n0 + tid % BN;
    const typename Op::Col bcol = bn < Ncols ? op.col(bn) : typename Op::Col();  // zeros past Ncols

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // The reduction indices of the K tile at k0, into kinfo[buf].
    auto decode = [&](int k0, int buf) {
        if (tid < BF_TILE_K)  // past k_end: value-initialised, so B gathers zeros there
            kinfo[buf][tid] = k0 + tid < k_end ? op.kinfo(k0 + tid) : typename Op::KInfo();
    };
    // This thread's share of the K tile at k0 (decoded in kinfo[buf]), into registers: word r of
    // A is pair j of row mm, word r of B pair j of column tid % BN (pair/column index fastest:
    // A rows are k-contiguous for forward, backward-weight's dy rows pixel-contiguous, and B
    // columns are contiguous pixels, so a warp reads consecutive addresses).
    float a_lo[A_WORDS], a_hi[A_WORDS], b_lo[B_WORDS], b_hi[B_WORDS];
    auto gather = [&](int k0, int buf) {
        const typename Op::KInfo* ki = kinfo[buf];
#pragma unroll
        for (int r = 0; r < A_WORDS; ++r) {
            const int idx = tid + r * BF_THREADS;
            const int m = m0 + idx / BF_WORDS;
            const int j = idx % BF_WORDS;
            const int k = k0 + 2 * j;
            a_lo[r] = (m < M && k < k_end) ? op.a(m, ki[2 * j], k) : 0.0f;
            a_hi[r] = (m < M && k + 1 < k_end) ? op.a(m, ki[2 * j + 1], k + 1) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < B_WORDS; ++r) {
            const int j = (tid + r * BF_THREADS) / BN;
            b_lo[r] = op.b(ki[2 * j], bcol);  // in range by construction (conv_ops.cuh)
            b_hi[r] = op.b(ki[2 * j + 1], bcol);
        }
    };
    // The gathered registers, rounded to bf16 pairs, into the shared tile.
    auto store_tile = [&]() {
#pragma unroll
        for (int r = 0; r < A_WORDS; ++r) {
            const int idx = tid + r * BF_THREADS;
            As[idx / BF_WORDS][idx % BF_WORDS] = pack_bf16x2(a_lo[r], a_hi[r]);
        }
#pragma unroll
        for (int r = 0; r < B_WORDS; ++r) {
            const int idx = tid + r * BF_THREADS;
            Bs[idx % BN][b_word(idx % BN, idx / BN)] = pack_bf16x2(b_lo[r], b_hi[r]);
        }
    };

    decode(k_begin, 0);
    __syncthreads();
    gather(k_begin, 0);
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += BF_TILE_K, buf ^= 1) {
        const bool more = k0 + BF_TILE_K < k_end;
        store_tile();
        // kinfo[buf ^ 1] was last read by the gather two tiles back, before the previous
        // step's closing barrier.
        if (more) decode(k0 + BF_TILE_K, buf ^ 1);
        __syncthreads();  // the tile and the next kinfo are visible
        if (more) gather(k0 + BF_TILE_K, buf ^ 1);

        // Two k16 steps per tile; a k16 step spans 8 words, its upper half (k+8..) 4 words on.
#pragma unroll
        for (int ks = 0; ks < BF_WORDS; ks += 8) {
            unsigned a[MT][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int row = wm + 16 * i + g;
                a[i][0] = As[row][ks + t];
                a[i][1] = As[row + 8][ks + t];
                a[i][2] = As[row][ks + t + 4];
                a[i][3] = As[row + 8][ks + t + 4];
            }
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const int col = wn + 8 * j + g;
                b[j][0] = Bs[col][b_word(col, ks + t)];
                b[j][1] = Bs[col][b_word(col, ks + t + 4)];
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) mma_bf16_16x8x16(acc[i][j], a[i], b[j]);
        }
        __syncthreads();  // every warp is done with the tile before the next store_tile
    }

    // acc[i][j][2h + e] is C[wm + 16i + g + 8h][wn + 8j + 2t + e].
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
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

// The tensor-core tile shape, for the passes of conv_ops.cuh.
template <int WARPS_M, int MT, int NT>
struct Bf16Tile {
    template <typename Op>
    __device__ static void run(const Op& op, int M, int Ncols, int k_begin, int k_end)
    {
        gemm_tile_bf16<WARPS_M, MT, NT>(op, M, Ncols, k_begin, k_end);
    }
};

// ---- entry points: grid = (ceil(Ncols / BN), ceil(M / BM), splits), block = 128 -------------
// (M, Ncols) = (CO, N*OH*OW) forward, (C, N*H*W) backward-data, (CO, C*KS*KS) backward-weight.
// k_chunk: the split of K per blockIdx.z (conv_ops.cuh); >= K with one split.

// y = conv(x, w) + beta * y (or split partials), 64 x 64 tiles (M > 32).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_forward_bf16(const float* __restrict__ x, const float* __restrict__ w, float* y, int N,
                    int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P, float beta,
                    int k_chunk)
{
    conv_forward_pass<Bf16Tile<2, 2, 4>>(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk);
}

// The same, 32 x 128 tiles (M <= 32).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_forward_bf16_m32(const float* __restrict__ x, const float* __restrict__ w, float* y, int N,
                        int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
                        float beta, int k_chunk)
{
    conv_forward_pass<Bf16Tile<1, 2, 4>>(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk);
}

// The same, 16 x 128 tiles (M <= 16).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_forward_bf16_m16(const float* __restrict__ x, const float* __restrict__ w, float* y, int N,
                        int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
                        float beta, int k_chunk)
{
    conv_forward_pass<Bf16Tile<1, 1, 4>>(x, w, y, N, C, H, W, CO, OH, OW, KS, S, P, beta, k_chunk);
}

// dx = conv_transpose(dy, w) + beta * dx (or split partials), 64 x 64 tiles (M = C > 32).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_data_bf16(const float* __restrict__ dy, const float* __restrict__ w, float* dx,
                          int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S, int P,
                          float beta, int k_chunk)
{
    conv_backward_data_pass<Bf16Tile<2, 2, 4>>(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                               k_chunk);
}

// The same, 32 x 128 tiles (C <= 32).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_data_bf16_m32(const float* __restrict__ dy, const float* __restrict__ w, float* dx,
                              int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S,
                              int P, float beta, int k_chunk)
{
    conv_backward_data_pass<Bf16Tile<1, 2, 4>>(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                               k_chunk);
}

// The same, 16 x 128 tiles (C <= 16).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_data_bf16_m16(const float* __restrict__ dy, const float* __restrict__ w, float* dx,
                              int N, int C, int H, int W, int CO, int OH, int OW, int KS, int S,
                              int P, float beta, int k_chunk)
{
    conv_backward_data_pass<Bf16Tile<1, 1, 4>>(dy, w, dx, N, C, H, W, CO, OH, OW, KS, S, P, beta,
                                               k_chunk);
}

// Partial dw sums (then conv.cu's conv2d_split_reduce), 64 x 64 tiles (CO > 32).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_weight_partial_bf16(const float* __restrict__ dy, const float* __restrict__ x,
                                    float* __restrict__ part, int N, int C, int H, int W, int CO,
                                    int OH, int OW, int KS, int S, int P, int k_chunk)
{
    conv_backward_weight_partial_pass<Bf16Tile<2, 2, 4>>(dy, x, part, N, C, H, W, CO, OH, OW, KS, S,
                                                         P, k_chunk);
}

// The same, 32 x 128 tiles (CO <= 32).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_weight_partial_bf16_m32(const float* __restrict__ dy, const float* __restrict__ x,
                                        float* __restrict__ part, int N, int C, int H, int W,
                                        int CO, int OH, int OW, int KS, int S, int P, int k_chunk)
{
    conv_backward_weight_partial_pass<Bf16Tile<1, 2, 4>>(dy, x, part, N, C, H, W, CO, OH, OW, KS, S,
                                                         P, k_chunk);
}

// The same, 16 x 128 tiles (CO <= 16).
extern "C" __global__ void __launch_bounds__(BF_THREADS)
conv2d_backward_weight_partial_bf16_m16(const float* __restrict__ dy, const float* __restrict__ x,
                                        float* __restrict__ part, int N, int C, int H, int W,
                                        int CO, int OH, int OW, int KS, int S, int P, int k_chunk)
{
    conv_backward_weight_partial_pass<Bf16Tile<1, 1, 4>>(dy, x, part, N, C, H, W, CO, OH, OW, KS, S,
                                                         P, k_chunk);
}
