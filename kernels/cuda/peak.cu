// peak.cu — ceiling probes for the roofline column of the kernel benchmark: how fast this
// card multiplies when nothing else gets in the way. Not part of training.
//
// Both keep every operand in registers (no memory traffic until one store per thread at the
// end) and run 8 independent chains per thread or warp, enough to hide the pipelines' latency.
// The operands are small integers derived from the lane, and the multiplier `m` is a run-time
// argument (1 in the benches), so the compiler can neither fold the arithmetic away nor turn
// an fma into an add; with small `iters` every partial result is an exact integer, which is
// what lets the CPU twin (kernels/emu/tests) predict the output bit for bit.

#include "mma_bf16.cuh"

#define PEAK_CHAINS 8

// Each warp: iters x 8 mma.m16n8k16 (bf16 in, fp32 accumulate) on fixed fragments. This is the
// ceiling of mma.sync, which is what conv_bf16.cu uses: on Hopper the full tensor-core rate
// needs wgmma, so this figure is below the datasheet's.
// FLOP = 2*16*8*16 * 8 * iters per warp. out[thread] = the sum of its 8 x 4 accumulators.
extern "C" __global__ void peak_mma_bf16(float* out, int iters, float m)
{
    const unsigned lane = threadIdx.x % 32;
    unsigned a[4], b[2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
        a[i] = pack_bf16x2(m * (float)((lane + i) % 3), m * (float)((lane + 2 * i) % 2));
#pragma unroll
    for (int i = 0; i < 2; ++i)
        b[i] = pack_bf16x2(m * (float)((lane + i) % 2), m * (float)((lane * 3 + i) % 3));
    float acc[PEAK_CHAINS][4];
#pragma unroll
    for (int j = 0; j < PEAK_CHAINS; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = (float)j;  // distinct chains: none can be merged
    for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int j = 0; j < PEAK_CHAINS; ++j) mma_bf16_16x8x16(acc[j], a, b);
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PEAK_CHAINS; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s += acc[j][e];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

// Each thread: iters x 8 independent fmaf, x = x * m + c. FLOP = 2 * 8 * iters per thread.
// out[thread] = the sum of its 8 chains.
extern "C" __global__ void peak_fma_f32(float* out, int iters, float m)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    float x[PEAK_CHAINS];
#pragma unroll
    for (int j = 0; j < PEAK_CHAINS; ++j) x[j] = (float)((t + j) % 4);
#pragma unroll 4
    for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int j = 0; j < PEAK_CHAINS; ++j) x[j] = fmaf(x[j], m, (float)(j + 1));
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PEAK_CHAINS; ++j) s += x[j];
    out[t] = s;
}
