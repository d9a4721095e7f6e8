// conv_ops.cuh — the index maps of the three convolution GEMMs, shared by conv.cu (fp32 FMA
// tiles) and conv_bf16.cu (bf16 tensor-core tiles). Inlined into each .cu by kernels/build.rs.
// See conv.cu for the semantics.
//
// Each pass is a functor the GEMM tile code calls without knowing which pass it computes:
//   KInfo kinfo(k)            what the reduction index k means (channel, tap, offsets)
//   Col   col(n)              what output column n means (image, pixel, offsets)
//   a(m, kinfo, k)            A[m][k]
//   b(kinfo, col)             B[k][n]
//   store(m, n, v)            C[m][n] = v (+ beta * old)
// The split exists for speed, not meaning: decoding k and n takes integer divisions, and a
// tile decodes each of its BK reduction indices once (into shared memory, shared by all its
// threads) and each thread decodes its B column once for the whole K loop, instead of every
// element paying ~5 divisions. Only additions and bounds checks remain per element.
#ifndef CONV_OPS_CUH
#define CONV_OPS_CUH

struct ConvGeom {
    int N, C, H, W;   // input
    int CO, OH, OW;   // output
    int KS, S, P;     // kernel size, stride, padding
};

// A receptive-field tap: a channel and a kernel position.
struct Tap {
    int off;  // input_tap: ci*H*W + ky*W + kx; backward-data: co*OH*OW
    int ky, kx;
    int w;    // backward-data: co*C*KS*KS + ky*KS + kx, the weight index without ci
};

// A pixel: its image's offset and the reference corner of its receptive field.
struct Pixel {
    int base;    // output_pixel: x offset of image n + corner; backward-data: dy offset of image n
    int iy, ix;  // output_pixel: corner (oy*S-P, ox*S-P); backward-data: (iy+P, ix+P)
    int dy;      // output_pixel: offset of dy[n, 0, oy, ox]
};

// Tap j = (ci, ky, kx) of a forward input: x offset of channel ci at row ky, column kx.
__device__ __forceinline__ Tap input_tap(const ConvGeom& g, int j)
{
    const int kk2 = g.KS * g.KS;
    const int ci = j / kk2;
    const int r = j - ci * kk2;
    Tap t;
    t.ky = r / g.KS;
    t.kx = r - t.ky * g.KS;
    t.off = ci * g.H * g.W + t.ky * g.W + t.kx;
    t.w = 0;
    return t;
}

// Output pixel q = (n, oy, ox): its image's x offset plus its receptive field's top-left corner
// (which may lie in the padding), and the offset of dy[n, 0, oy, ox].
__device__ __forceinline__ Pixel output_pixel(const ConvGeom& g, int q)
{
    const int ohw = g.OH * g.OW;
    const int n = q / ohw;
    const int rem = q - n * ohw;
    const int oy = rem / g.OW;
    const int ox = rem - oy * g.OW;
    Pixel p;
    p.iy = oy * g.S - g.P;
    p.ix = ox * g.S - g.P;
    p.base = n * g.C * g.H * g.W + p.iy * g.W + p.ix;
    p.dy = n * g.CO * ohw + rem;
    return p;
}

// x at tap t of output pixel p, or 0 in the padding (forward's B and backward-weight's B).
__device__ __forceinline__ float input_at(const ConvGeom& g, const float* x, const Tap& t,
                                          const Pixel& p)
{
    const int iy = p.iy + t.ky;
    const int ix = p.ix + t.kx;
    if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) return 0.0f;
    return x[p.base + t.off];
}

// Forward: M = CO, Ncols = N*OH*OW, K = C*KS*KS.
//   A[co, k] = w[co, k]              (w is [CO, C*KS*KS] row-major already)
//   B[k, q]  = x[n, ci, oy*S+ky-P, ox*S+kx-P]   with k=(ci,ky,kx), q=(n,oy,ox)
struct FwdOp {
    ConvGeom g;
    const float* x;
    const float* w;
    float* y;
    float beta;
    typedef Tap KInfo;
    typedef Pixel Col;
    __device__ Tap kinfo(int k) const { return input_tap(g, k); }
    __device__ Pixel col(int q) const { return output_pixel(g, q); }
    __device__ float a(int co, const Tap&, int k) const { return w[co * (g.C * g.KS * g.KS) + k]; }
    __device__ float b(const Tap& t, const Pixel& p) const { return input_at(g, x, t, p); }
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
    typedef Tap KInfo;
    typedef Pixel Col;
    __device__ Tap kinfo(int k) const
    {
        const int kk2 = g.KS * g.KS;
        const int co = k / kk2;
        const int r = k - co * kk2;
        Tap t;
        t.ky = r / g.KS;
        t.kx = r - t.ky * g.KS;
        t.off = co * g.OH * g.OW;
        t.w = co * g.C * kk2 + r;
        return t;
    }
    __device__ Pixel col(int q) const
    {
        const int hw = g.H * g.W;
        const int n = q / hw;
        const int rem = q - n * hw;
        const int iy = rem / g.W;
        Pixel p;
        p.iy = iy + g.P;  // = oy * S + ky when tap (ky, kx) of output (oy, ox) reads this pixel
        p.ix = rem - iy * g.W + g.P;
        p.base = n * g.CO * g.OH * g.OW;
        p.dy = 0;
        return p;
    }
    __device__ float a(int ci, const Tap& t, int) const
    {
        return w[t.w + ci * g.KS * g.KS];
    }
    __device__ float b(const Tap& t, const Pixel& p) const
    {
        int ty = p.iy - t.ky;
        int tx = p.ix - t.kx;
        if (ty < 0 || tx < 0) return 0.0f;
        if (g.S == 2) {  // S is 1 or 2 (checked by the launcher)
            if ((ty | tx) & 1) return 0.0f;
            ty >>= 1;
            tx >>= 1;
        }
        if (ty >= g.OH || tx >= g.OW) return 0.0f;
        return dy[p.base + t.off + ty * g.OW + tx];
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
// Here the reduction runs over output pixels and the columns are taps: the roles of forward's
// Tap and Pixel swap. Split z writes its partial sum to part[z, co, j];
// conv2d_backward_weight_reduce adds them.
struct BwdWeightOp {
    ConvGeom g;
    const float* dy;
    const float* x;
    float* part;  // already offset to this split's slab
    typedef Pixel KInfo;
    typedef Tap Col;
    __device__ Pixel kinfo(int q) const { return output_pixel(g, q); }
    __device__ Tap col(int j) const { return input_tap(g, j); }
    __device__ float a(int co, const Pixel& p, int) const { return dy[p.dy + co * g.OH * g.OW]; }
    __device__ float b(const Pixel& p, const Tap& t) const { return input_at(g, x, t, p); }
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

// The three passes, for any GEMM tile: `Tile::run(op, M, Ncols, k_begin, k_end)` computes the
// block's tile (conv.cu's fp32 tiles, conv_bf16.cu's tensor-core tiles). Each builds its
// functor and says what M, Ncols and K are; the grid is (ceil(Ncols / BN), ceil(M / BM), z).

// y = conv(x, w) + beta * y: M = CO, Ncols = N*OH*OW, K = C*KS*KS.
template <class Tile>
__device__ __forceinline__ void conv_forward_pass(const float* x, const float* w, float* y, int N,
                                                  int C, int H, int W, int CO, int OH, int OW,
                                                  int KS, int S, int P, float beta)
{
    FwdOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.x = x; op.w = w; op.y = y; op.beta = beta;
    Tile::run(op, CO, N * OH * OW, 0, C * KS * KS);
}

// dx = conv_transpose(dy, w) + beta * dx: M = C, Ncols = N*H*W, K = CO*KS*KS. beta = 1 lets the
// residual block add the conv branch's dx onto the shortcut's dx in place.
template <class Tile>
__device__ __forceinline__ void conv_backward_data_pass(const float* dy, const float* w,
                                                        float* dx, int N, int C, int H, int W,
                                                        int CO, int OH, int OW, int KS, int S,
                                                        int P, float beta)
{
    BwdDataOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.w = w; op.dx = dx; op.beta = beta;
    Tile::run(op, C, N * H * W, 0, CO * KS * KS);
}

// Partial dw sums, M = CO, Ncols = C*KS*KS, K = N*OH*OW split over blockIdx.z: split z covers
// [z*k_chunk, min((z+1)*k_chunk, K)) (k_chunk a multiple of 32, chosen by the host) and writes
// part[z, co, j]; conv2d_backward_weight_reduce adds the splits. A split with an empty range
// still stores zeros, so the reduction never reads garbage.
template <class Tile>
__device__ __forceinline__ void conv_backward_weight_partial_pass(
    const float* dy, const float* x, float* part, int N, int C, int H, int W, int CO, int OH,
    int OW, int KS, int S, int P, int k_chunk)
{
    BwdWeightOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.x = x;
    const int wlen = CO * C * KS * KS;
    op.part = part + (size_t)blockIdx.z * (size_t)wlen;
    const int K = N * OH * OW;
    const int kb = blockIdx.z * k_chunk;
    const int ke = min(K, kb + k_chunk);
    Tile::run(op, CO, C * KS * KS, kb, ke);
}

#endif  // CONV_OPS_CUH
