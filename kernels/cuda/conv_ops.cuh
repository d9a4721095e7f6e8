// conv_ops.cuh — the index maps of the three convolution GEMMs, shared by conv.cu (fp32 FMA
// tiles) and conv_bf16.cu (bf16 tensor-core tiles). Inlined into each .cu by kernels/build.rs.
// See conv.cu for the semantics.
//
// Each pass is a functor the GEMM tile code calls without knowing which pass it computes:
//   KInfo kinfo(k)            what the reduction index k means (channel, tap, offsets)
//   Col   col(n)              what output column n means (image, pixel, offsets)
//   a(m, kinfo, k)            A[m][k]                  (the tile checks m < M and k < k_end)
//   b(kinfo, col)             B[k][n]                  (no checks needed: see below)
//   store(m, n, v)            C[m][n] = v (+ beta * old)
// The split exists for speed, not meaning: decoding k and n takes integer divisions, and a
// tile decodes each of its BK reduction indices once (into shared memory, shared by all its
// threads) and each thread decodes its B column once for the whole K loop, instead of every
// element paying ~5 divisions.
//
// Every B operand is x or dy read at (a pixel, a tap), and whether that pair lies inside the
// map is decided once, when the pixel is decoded: Pixel::mask has bit ky*KS+kx set iff tap
// (ky, kx) of this pixel is in range, and a Tap carries its bit. So a B element is one AND and
// one predicated load (gather()), with no bounds arithmetic, and a value-initialised KInfo or
// Col (mask or bit 0) gathers zeros: that is how the tile pads k past the end and columns past
// Ncols. (On sm_90 that, with the constant and multiply-high divisions below, took the bf16
// tiles' K step from 556-1803 instructions to 331-582: PERFLOG #16, kernel-resources.py --sass.)
#ifndef CONV_OPS_CUH
#define CONV_OPS_CUH

struct ConvGeom {
    int N, C, H, W;   // input
    int CO, OH, OW;   // output
    int KS, S, P;     // kernel size, stride, padding
};

// A receptive-field tap: a channel and a kernel position.
struct Tap {
    int off;       // added to a Pixel's base to address this tap of that pixel (may be negative)
    unsigned bit;  // 1 << (ky*KS + kx), the Pixel::mask bit that says the pair is in range
    int w;         // backward-data: co*C*KS*KS + ky*KS + kx, the weight index without ci
};

// A pixel: where its receptive field sits, and which of its taps are inside the map.
struct Pixel {
    int base;       // offset that a Tap's off completes (see output_pixel and BwdDataOp::col)
    unsigned mask;  // bit ky*KS+kx set iff tap (ky, kx) of this pixel is inside the map
    int dy;         // output_pixel: offset of dy[n, 0, oy, ox]
};

// x or dy at tap t of pixel p, or 0 where the pair is out of range (padding, a stride-2 hole, a
// tile's padding row or column).
__device__ __forceinline__ float gather(const float* src, const Tap& t, const Pixel& p)
{
    return (p.mask & t.bit) ? src[p.base + t.off] : 0.0f;
}

// Bit d (d < KS) set iff 0 <= first + d < limit: which rows (or columns) of a forward window
// starting at `first` lie inside the map. (Loops to the constant 3 with `d < KS` inside, so
// they unroll: KS is 1 or 3.)
__device__ __forceinline__ unsigned window_bits(int first, int KS, int limit)
{
    unsigned bits = 0;
#pragma unroll
    for (int d = 0; d < 3; ++d)
        bits |= (unsigned)(d < KS && first + d >= 0 && first + d < limit) << d;
    return bits;
}

// Bit d set iff t - d is a multiple of S (1 or 2) and (t - d) / S is in [0, limit): which kernel
// rows (or columns) d reach backward-data pixel t (= iy + P) from an existing output row.
__device__ __forceinline__ unsigned output_bits(int t, int KS, int S, int limit)
{
    unsigned bits = 0;
#pragma unroll
    for (int d = 0; d < 3; ++d) {
        const int o = t - d;
        bits |= (unsigned)(d < KS && o >= 0 && (o & (S - 1)) == 0 && (o >> (S - 1)) < limit) << d;
    }
    return bits;
}

// The Pixel::mask of a KS x KS window whose rows / columns in range are `rows` / `cols`.
__device__ __forceinline__ unsigned window_mask(unsigned rows, unsigned cols, int KS)
{
    unsigned mask = 0;
#pragma unroll
    for (int ky = 0; ky < 3; ++ky)
        if ((rows >> ky) & 1u) mask |= cols << (ky * KS);  // rows has no bit past KS
    return mask;
}

// n / d for 0 <= n < 2^31 and a divisor d >= 1 fixed for the whole kernel, as a multiply-high
// and a shift (Granlund & Montgomery): l = ceil(log2 d), m = floor(2^32 (2^l - d) / d) + 1,
// n / d = (umulhi(n, m) + n) >> l. Set up once per thread (one 64-bit division), it replaces a
// ~35-instruction division in the backward-weight pixel decode, which runs every K tile.
struct FastDiv {
    unsigned m;
    int l;
};
__device__ __forceinline__ FastDiv fast_div(int d)
{
    FastDiv f;
    f.l = 0;
    while ((1u << f.l) < (unsigned)d) ++f.l;
    f.m = (unsigned)(((1ull << 32) * ((1ull << f.l) - (unsigned)d)) / (unsigned)d + 1);
    return f;
}
__device__ __forceinline__ int operator/(int n, const FastDiv& f)
{
    return (int)((__umulhi((unsigned)n, f.m) + (unsigned)n) >> f.l);
}

// Index j = (c, ky, kx) of a KS x KS window over channels: c = j / (KS*KS), r = ky*KS + kx.
// KS is 1 or 3 (the launcher checks), so both divisions are by constants and compile to a
// multiply-high instead of a ~35-instruction division; they run in every K tile's decode.
struct WindowIndex {
    int c, r, ky, kx;
};
__device__ __forceinline__ WindowIndex window_index(int j, int KS)
{
    WindowIndex i;
    if (KS == 3) {
        i.c = j / 9;
        i.r = j - 9 * i.c;
        i.ky = i.r / 3;
        i.kx = i.r - 3 * i.ky;
    } else {
        i.c = j;
        i.r = i.ky = i.kx = 0;
    }
    return i;
}

// Tap j = (ci, ky, kx) of a forward input: x offset of channel ci at row ky, column kx.
__device__ __forceinline__ Tap input_tap(const ConvGeom& g, int j)
{
    const WindowIndex i = window_index(j, g.KS);
    Tap t;
    t.off = i.c * g.H * g.W + i.ky * g.W + i.kx;
    t.bit = 1u << i.r;
    t.w = 0;
    return t;
}

// Output pixel q = (n, oy, ox): its image's x offset plus its receptive field's top-left corner
// (which may lie in the padding), the taps inside the map, and the offset of dy[n, 0, oy, ox].
// `Div` is int or FastDiv: ohw = OH*OW and ow = OW as divisors.
template <typename Div>
__device__ __forceinline__ Pixel output_pixel(const ConvGeom& g, int q, const Div& ohw,
                                              const Div& ow)
{
    const int n = q / ohw;
    const int rem = q - n * (g.OH * g.OW);
    const int oy = rem / ow;
    const int ox = rem - oy * g.OW;
    const int iy = oy * g.S - g.P;
    const int ix = ox * g.S - g.P;
    Pixel p;
    p.base = n * g.C * g.H * g.W + iy * g.W + ix;
    p.mask = window_mask(window_bits(iy, g.KS, g.H), window_bits(ix, g.KS, g.W), g.KS);
    p.dy = n * g.CO * g.OH * g.OW + rem;
    return p;
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
    __device__ Pixel col(int q) const { return output_pixel(g, q, g.OH * g.OW, g.OW); }
    __device__ float a(int co, const Tap&, int k) const { return w[co * (g.C * g.KS * g.KS) + k]; }
    __device__ float b(const Tap& t, const Pixel& p) const { return gather(x, t, p); }
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
// With ty = iy+P: output row oy = (ty-ky)/S exists iff ty-ky >= 0, S divides it and it is < OH
// (output_bits). For S = 2, ty and ky have the same parity when it exists, so (ty-ky)/S =
// ty/S - ky/S: the pixel's part goes in base and the tap's in off.
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
        const WindowIndex i = window_index(k, g.KS);  // i.c is co
        Tap t;
        t.off = i.c * g.OH * g.OW - (i.ky >> (g.S - 1)) * g.OW - (i.kx >> (g.S - 1));  // S: 1 or 2
        t.bit = 1u << i.r;
        t.w = (i.c * g.C) * (g.KS * g.KS) + i.r;
        return t;
    }
    __device__ Pixel col(int q) const
    {
        const int hw = g.H * g.W;
        const int n = q / hw;
        const int rem = q - n * hw;
        const int iy = rem / g.W;
        const int ty = iy + g.P;
        const int tx = rem - iy * g.W + g.P;
        Pixel p;
        p.base = n * g.CO * g.OH * g.OW + (ty >> (g.S - 1)) * g.OW + (tx >> (g.S - 1));
        p.mask = window_mask(output_bits(ty, g.KS, g.S, g.OH), output_bits(tx, g.KS, g.S, g.OW),
                             g.KS);
        p.dy = 0;
        return p;
    }
    __device__ float a(int ci, const Tap& t, int) const
    {
        return w[t.w + ci * g.KS * g.KS];
    }
    __device__ float b(const Tap& t, const Pixel& p) const { return gather(dy, t, p); }
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
// conv2d_split_reduce adds them.
struct BwdWeightOp {
    ConvGeom g;
    const float* dy;
    const float* x;
    float* part;  // already offset to this split's slab
    FastDiv ohw, ow;  // OH*OW and OW: kinfo decodes 32 pixels per K tile
    typedef Pixel KInfo;
    typedef Tap Col;
    __device__ Pixel kinfo(int q) const { return output_pixel(g, q, ohw, ow); }
    __device__ Tap col(int j) const { return input_tap(g, j); }
    __device__ float a(int co, const Pixel& p, int) const { return dy[p.dy + co * g.OH * g.OW]; }
    __device__ float b(const Pixel& p, const Tap& t) const { return gather(x, t, p); }
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
// functor and says what M, Ncols and K are; the grid is (ceil(Ncols / BN), ceil(M / BM), splits).
//
// Every pass can split K over blockIdx.z: split z covers [z*k_chunk, min((z+1)*k_chunk, K))
// (k_chunk a multiple of 32, chosen by the host) and writes its partial sums to slab z of its
// output, which then has `splits` slabs; conv2d_split_reduce adds them in increasing z
// (deterministic). A split with an empty range still stores zeros, so the reduction never reads
// garbage. The weight gradient (K = N*OH*OW) always splits; forward and backward-data split only
// when their grid alone would leave the GPU underfilled (the late stages' small maps), and with
// one split (gridDim.z = 1, k_chunk >= K) they write their output directly, with beta.

__device__ __forceinline__ void split_range(int K, int k_chunk, int* kb, int* ke)
{
    *kb = blockIdx.z * k_chunk;  // the host keeps splits * k_chunk within int
    *ke = *kb + min(k_chunk, K - *kb);  // not min(K, kb + k_chunk): that sum may pass INT_MAX
}

// y = conv(x, w) + beta * y: M = CO, Ncols = N*OH*OW, K = C*KS*KS. Split: y is the workspace,
// slab z at y + z*N*CO*OH*OW, and beta is 0.
template <class Tile>
__device__ __forceinline__ void conv_forward_pass(const float* x, const float* w, float* y, int N,
                                                  int C, int H, int W, int CO, int OH, int OW,
                                                  int KS, int S, int P, float beta, int k_chunk)
{
    FwdOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.x = x; op.w = w; op.beta = beta;
    op.y = y + (size_t)blockIdx.z * ((size_t)N * CO * OH * OW);
    int kb, ke;
    split_range(C * KS * KS, k_chunk, &kb, &ke);
    Tile::run(op, CO, N * OH * OW, kb, ke);
}

// dx = conv_transpose(dy, w) + beta * dx: M = C, Ncols = N*H*W, K = CO*KS*KS. beta = 1 lets the
// residual block add the conv branch's dx onto the shortcut's dx in place. Split: as forward.
template <class Tile>
__device__ __forceinline__ void conv_backward_data_pass(const float* dy, const float* w,
                                                        float* dx, int N, int C, int H, int W,
                                                        int CO, int OH, int OW, int KS, int S,
                                                        int P, float beta, int k_chunk)
{
    BwdDataOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.w = w; op.beta = beta;
    op.dx = dx + (size_t)blockIdx.z * ((size_t)N * C * H * W);
    int kb, ke;
    split_range(CO * KS * KS, k_chunk, &kb, &ke);
    Tile::run(op, C, N * H * W, kb, ke);
}

// Partial dw sums, M = CO, Ncols = C*KS*KS, K = N*OH*OW, always split: slab z of `part`.
template <class Tile>
__device__ __forceinline__ void conv_backward_weight_partial_pass(
    const float* dy, const float* x, float* part, int N, int C, int H, int W, int CO, int OH,
    int OW, int KS, int S, int P, int k_chunk)
{
    BwdWeightOp op;
    op.g = make_geom(N, C, H, W, CO, OH, OW, KS, S, P);
    op.dy = dy; op.x = x;
    op.ohw = fast_div(OH * OW);
    op.ow = fast_div(OW);
    op.part = part + (size_t)blockIdx.z * ((size_t)CO * C * KS * KS);
    int kb, ke;
    split_range(N * OH * OW, k_chunk, &kb, &ke);
    Tile::run(op, CO, C * KS * KS, kb, ke);
}

#endif  // CONV_OPS_CUH
