// conv_ops.cuh — the index maps of the three convolution GEMMs, shared by conv.cu (fp32 FMA
// tiles) and conv_bf16.cu (bf16 tensor-core tiles). Inlined into each .cu by kernels/build.rs.
//
// Each pass is a functor with a(m, k), b(k, n) and store(m, n, v): the GEMM tile code calls
// them and never needs to know which pass it computes. See conv.cu for the semantics.
#ifndef CONV_OPS_CUH
#define CONV_OPS_CUH

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

#endif  // CONV_OPS_CUH
