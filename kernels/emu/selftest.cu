// selftest.cu — kernels that break the rules on purpose, compiled into the emulator only (never
// into a module): they prove that the emulator reports what a GPU would get wrong
// (tests/emulated/emulator.rs), so that a pass elsewhere means something.

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
