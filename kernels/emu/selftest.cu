// selftest.cu — kernels that break the rules on purpose, compiled into the emulator only (never
// into a module): they prove that the emulator reports what a GPU would get wrong
// (tests/emulated/emulator.rs, racecheck.rs, schedules.rs), so that a pass elsewhere means
// something.

#include "mma_bf16.cuh"

// Writes y[0..n] inclusive: one element past the end.
extern "C" __global__ void emu_selftest_write_past_end(float* y, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;
}

// A float store at a byte offset that is not a multiple of 4.
extern "C" __global__ void emu_selftest_misaligned_store(float* y, int byte_offset)
{
    if (threadIdx.x == 0) *(float*)((char*)y + byte_offset) = 1.0f;
}

// Even threads wait at __syncthreads, odd threads at a warp shuffle: nobody can proceed.
extern "C" __global__ void emu_selftest_deadlock(float* y)
{
    float v = (float)threadIdx.x;
    if (threadIdx.x % 2 == 0)
        __syncthreads();
    else
        v = __shfl_down_sync(0xffffffffu, v, 1);
    y[threadIdx.x] = v;
}

// Each thread publishes to shared memory and reads its neighbour's slot; `sync` = 0 leaves out
// the __syncthreads in between (the bug this is about).
extern "C" __global__ void emu_selftest_neighbour(const float* x, float* y, int sync)
{
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = x[t];
    if (sync) __syncthreads();
    y[t] = s[(t + 1) % blockDim.x];
}

// The upper half of a warp returns, the lower half then shuffles with a full mask: lanes the
// mask names are gone (undefined on a GPU; here a trap, whichever order the fibers ran in).
extern "C" __global__ void emu_selftest_shuffle_after_return(float* y)
{
    if (threadIdx.x >= 16) return;
    float v = (float)threadIdx.x;
    v += __shfl_down_sync(0xffffffffu, v, 16);
    y[threadIdx.x] = v;
}

// ---- bounds and alignment ------------------------------------------------------------------------

// A `width`-byte vector access (8: float2, 16: float4) at `offset` bytes into x: a load whose
// components are summed into y[0], or (`store`) a store of (1, 2, ...) there. The GPU requires
// the address to be a multiple of the width.
extern "C" __global__ void emu_selftest_vector_access(float* x, float* y, int offset, int width,
                                                      int store)
{
    char* p = (char*)x + offset;
    if (width == 8) {
        if (store)
            *(float2*)p = make_float2(1.0f, 2.0f);
        else {
            const float2 v = *(const float2*)p;
            y[0] = v.x + v.y;
        }
    } else {
        if (store)
            *(float4*)p = make_float4(1.0f, 2.0f, 3.0f, 4.0f);
        else {
            const float4 v = *(const float4*)p;
            y[0] = v.x + v.y + v.z + v.w;
        }
    }
}

// ---- races (tests/emulated/racecheck.rs, schedules.rs) -----------------------------------------------

// Every lane of the calling warp arrives before any goes on: `via` 0 a warp shuffle, 1 an
// mma.sync; neither orders memory on a GPU (racecheck must still see a race across it).
// 2: __syncthreads, which does (no race).
__device__ void emu_selftest_rendezvous(int via)
{
    if (via == 0) {
        const float v = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
        (void)v;
    } else if (via == 1) {
        const unsigned a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_bf16_16x8x16(d, a, b);
    } else {
        __syncthreads();
    }
}

// Threads `first` and `second` (of warp 0) touch s[5] in that order, kept by the rendezvous:
// kind 0: first writes, second reads (read-after-write); 1: first reads, second writes
// (write-after-read); 2: both write (write-after-write). Every word is written (and a barrier
// passed) before, so only the planted pair races. 64 threads.
extern "C" __global__ void emu_selftest_race(float* y, int kind, int first, int second, int via)
{
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = 0.0f;
    __syncthreads();
    if (t == first) {
        if (kind == 1)
            y[0] = s[5];  // selftest: first read
        else
            s[5] = 1.0f;  // selftest: first write
    }
    emu_selftest_rendezvous(via);
    if (t == second) {
        if (kind == 0)
            y[1] = s[5];  // selftest: second read
        else
            s[5] = 2.0f;  // selftest: second write
    }
}

// Thread 0 of every block writes y[0] (`writer` < 0), or thread 0 of block `writer` writes
// y[0] and thread 0 of each other block reads it into y[1 + block]: blocks of one launch are
// never ordered.
extern "C" __global__ void emu_selftest_block_race(float* y, int writer)
{
    if (threadIdx.x != 0) return;
    if (writer < 0 || (int)blockIdx.x == writer)
        y[0] = (float)blockIdx.x;  // selftest: block write
    else
        y[1 + blockIdx.x] = y[0];  // selftest: block read
}

// Every thread adds 1 to one shared counter without synchronising (a lost update whenever two
// threads interleave between their read and their write): y[0] = blockDim.x only if none did.
extern "C" __global__ void emu_selftest_shared_counter(float* y)
{
    __shared__ float count;
    if (threadIdx.x == 0) count = 0.0f;
    __syncthreads();
    count += 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) y[0] = count;
}
