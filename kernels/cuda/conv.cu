// conv.cu — 2-D convolution (bias-free, NCHW, square kernel, zero padding) as implicit GEMM.
//
// Semantics (PyTorch / the CPU twin in crates/tensor):
//   y[n,co,oy,ox] = sum_{ci,ky,kx} w[co,ci,ky,kx] * x[n,ci,oy*s+ky-p, ox*s+kx-p]   (zero outside)
//   OH = (H + 2p - k) / s + 1, p = (k - 1) / 2, k in {1, 3}, s in {1, 2}.
//
// All three passes are the same 64x64x16 shared-memory tiled SGEMM; only the way the A and B
// operands are gathered from memory differs ("implicit" GEMM: the im2col matrix is never
// materialised). Each pass is written as a small functor with a(), b() and store() so the tiling
// code exists once. This is the plain fp32 version: later speed work (bf16, tensor cores,
// double-buffered cp.async) replaces gemm_tile() but must keep these index maps.
//
// Determinism: every output element is produced by exactly one thread with a fixed summation
// order; backward-weight uses a deterministic split-K (partials to a workspace, then a fixed-order
// reduction), never float atomics.

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define THREADS 256  // 16 x 16 threads, each owns a 4 x 4 micro-tile of C

// C[M, Ncols] = A[M, K] * B[K, Ncols] over the k range [k_begin, k_end) for the tile at
// (blockIdx.y, blockIdx.x). Out-of-range rows/cols/ks load as zero and are never stored.
template <typename Op>
__device__ __forceinline__ void gemm_tile(const Op& op, int M, int Ncols, int k_begin, int k_end)
{
    // +1 padding: As is written k-fastest by consecutive threads; the pad avoids bank conflicts.
    __shared__ float As[TILE_K][TILE_M + 1];
    __shared__ float Bs[TILE_K][TILE_N];

    const int tid = threadIdx.x;
    const int tx = tid % 16;  // column group
    const int ty = tid / 16;  // row group
    const int m0 = blockIdx.y * TILE_M;
    const int n0 = blockIdx.x * TILE_N;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        // A tile: 64 x 16 = 1024 values, 4 per thread, k fastest (weights are k-contiguous).
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int idx = tid + r * THREADS;
            const int mm = idx / TILE_K;
            const int kk = idx % TILE_K;
            const int m = m0 + mm;
            const int k = k0 + kk;
            As[kk][mm] = (m < M && k < k_end) ? op.a(m, k) : 0.0f;
        }
        // B tile: 16 x 64 = 1024 values, 4 per thread, column fastest (pixels are contiguous).
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int idx = tid + r * THREADS;
            const int kk = idx / TILE_N;
            const int nn = idx % TILE_N;
            const int n = n0 + nn;
            const int k = k0 + kk;
            Bs[kk][nn] = (n < Ncols && k < k_end) ? op.b(k, n) : 0.0f;
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

struct ConvGeom {
    int N, C, H, W;   // input
    int CO, OH, OW;   // output
    int KS, S, P;     // kernel size, stride, padding
};

// Forward: M = CO, Ncols = N*OH*OW, K = C*KS*KS.
//   A[co, k] = w[co, k]              (w is [CO, C*KS*KS] row-major already)
//   B[k, q]  = x[n, ci, oy*S+ky-P, ox*S+kx-P]   with k=(ci,ky,kx), q=(n,oy,ox)
struct FwdOp {
    ConvGeom g;
    const float* x;
    const float* w;
    float* y;
    float beta;
    __device__ float a(int co, int k) const { return w[co * (g.C * g.KS * g.KS) + k]; }
    __device__ float b(int k, int q) const
    {
        const int kk2 = g.KS * g.KS;
        const int ci = k / kk2;
        const int r = k - ci * kk2;
        const int ky = r / g.KS;
        const int kx = r - ky * g.KS;
        const int ohw = g.OH * g.OW;
        const int n = q / ohw;
        const int rem = q - n * ohw;
        const int oy = rem / g.OW;
        const int ox = rem - oy * g.OW;
        const int iy = oy * g.S + ky - g.P;
        const int ix = ox * g.S + kx - g.P;
        if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) return 0.0f;
        return x[((n * g.C + ci) * g.H + iy) * g.W + ix];
    }
    __device__ void store(int co, int q, float v) const
    {
        const int ohw = g.OH * g.OW;
        const int n = q / ohw;
        const int rem = q - n * ohw;
        float* dst = y + (n * g.CO + co) * ohw + rem;
        // beta == 0 must not read y: it may hold garbage / NaN from a fresh allocation.
        *dst = (beta == 0.0f) ? v : fmaf(beta, *dst, v);
    }
};

// Backward data: M = C, Ncols = N*H*W, K = CO*KS*KS.
//   A[ci, k]  = w[co, ci, ky, kx]     with k=(co,ky,kx)
//   B[k, q]   = dy[n, co, oy, ox] where iy = oy*S+ky-P (and same for x), if that (oy,ox) exists
// i.e. the transposed convolution, gathered so that each dx element has one owner (no atomics).
struct BwdDataOp {
    ConvGeom g;
    const float* dy;
    const float* w;
    float* dx;
    float beta;
    __device__ float a(int ci, int k) const
    {
        const int kk2 = g.KS * g.KS;
        const int co = k / kk2;
        const int r = k - co * kk2;
        return w[(co * g.C + ci) * kk2 + r];
    }
    __device__ float b(int k, int q) const
    {
        const int kk2 = g.KS * g.KS;
        const int co = k / kk2;
        const int r = k - co * kk2;
        const int ky = r / g.KS;
        const int kx = r - ky * g.KS;
        const int hw = g.H * g.W;
        const int n = q / hw;
        const int rem = q - n * hw;
        const int iy = rem / g.W;
        const int ix = rem - iy * g.W;
        const int ty = iy + g.P - ky;  // = oy * S when this tap was used
        const int tx = ix + g.P - kx;
        if (ty < 0 || tx < 0) return 0.0f;
        if ((ty % g.S) != 0 || (tx % g.S) != 0) return 0.0f;
        const int oy = ty / g.S;
        const int ox = tx / g.S;
        if (oy >= g.OH || ox >= g.OW) return 0.0f;
        return dy[((n * g.CO + co) * g.OH + oy) * g.OW + ox];
    }
    __device__ void store(int ci, int q, float v) const
    {
        const int hw = g.H * g.W;
        const int n = q / hw;
        const int rem = q - n * hw;
        float* dst = dx + (n * g.C + ci) * hw + rem;
        *dst = (beta == 0.0f) ? v : fmaf(beta, *dst, v);
    }
};

// Backward weight: M = CO, Ncols = C*KS*KS, K = N*OH*OW (large: split over blockIdx.z).
//   A[co, q] = dy[n, co, oy, ox]
//   B[q, j]  = x[n, ci, oy*S+ky-P, ox*S+kx-P]   with j=(ci,ky,kx)
// Split z writes its partial sum to part[z, co, j]; conv2d_backward_weight_reduce adds them.
struct BwdWeightOp {
    ConvGeom g;
    const float* dy;
    const float* x;
    float* part;  // already offset to this split's slab
    __device__ float a(int co, int q) const
    {
        const int ohw = g.OH * g.OW;
        const int n = q / ohw;
        const int rem = q - n * ohw;
        return dy[(n * g.CO + co) * ohw + rem];
    }
    __device__ float b(int q, int j) const
    {
        const int kk2 = g.KS * g.KS;
        const int ci = j / kk2;
        const int r = j - ci * kk2;
        const int ky = r / g.KS;
        const int kx = r - ky * g.KS;
        const int ohw = g.OH * g.OW;
        const int n = q / ohw;
        const int rem = q - n * ohw;
        const int oy = rem / g.OW;
        const int ox = rem - oy * g.OW;
        const int iy = oy * g.S + ky - g.P;
        const int ix = ox * g.S + kx - g.P;
        if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) return 0.0f;
        return x[((n * g.C + ci) * g.H + iy) * g.W + ix];
    }
    __device__ void store(int co, int j, float v) const { part[co * (g.C * g.KS * g.KS) + j] = v; }
};

__device__ __forceinline__ ConvGeom make_geom(int N, int C, int H, int W, int CO, int OH, int OW,
                                              int KS, int S, int P)
{
    ConvGeom g;
    g.N = N; g.C = C; g.H = H; g.W = W;
    g.CO = CO; g.OH = OH; g.OW = OW;
    g.KS = KS; g.S = S; g.P = P;
    return g;
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
