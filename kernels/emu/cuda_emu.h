// cuda_emu.h — run the CUDA C++ kernels in kernels/cuda/*.cu, unmodified, on the CPU.
//
// Model: one OS thread per CUDA thread of a block; the blocks of a grid run one after another
// (so at most one block is alive at a time and `__shared__` can be plain static storage);
// `__syncthreads()` is a barrier over the block's live threads; warp shuffles go through a
// per-warp exchange buffer between two per-warp barriers. That is enough to execute every index
// map, bounds check, grid-stride loop, shared-memory tile and block/warp reduction exactly as
// written, with real concurrency between the threads of a block (a missing __syncthreads shows
// up as a wrong result or a race, not as a silently sequential "pass").
//
// Tensor cores: `mma.sync.m16n8k16` (bf16 in, fp32 out) is implemented from the PTX ISA's
// fragment tables as a warp-collective exchange (mma_bf16_16x8x16 below); the sources call it
// through mma_bf16.cuh, whose only `#ifdef CUDA_EMU` swaps the inline PTX for this function.
//
// What it cannot model (a GPU run is still needed for these):
//  * the memory model: every barrier here is a mutex + condition variable, i.e. a full fence,
//    and ordinary loads/stores between threads are x86-TSO, stronger than CUDA's; a kernel that
//    relies on ordering without __syncthreads/__threadfence may pass here and fail on a GPU.
//  * real warp scheduling: threads of a warp are not in lock-step; only the shuffles synchronise
//    the warp. Code relying on implicit warp-synchronous execution (pre-Volta style) is not
//    modelled — it would be a bug on Volta+ too. Blocks never run concurrently, so inter-block
//    races (e.g. two blocks writing one element) are not detected.
//  * floating point details: nvrtc contracts a*b+c into fma by default (--fmad=true); g++ is
//    run with -ffp-contract=off, so only explicit fmaf() is fused here. expf/logf/sqrtf are
//    glibc's (correctly rounded or ≤1 ulp) while CUDA's are ≤2 ulp (expf, logf) / IEEE (sqrtf).
//  * uninitialised shared memory: static storage keeps the previous block's values instead of
//    garbage, so a read-before-write of shared memory is not caught.
//  * timing, occupancy, register/shared-memory limits (__launch_bounds__ is ignored).
#pragma once

// Lets a source swap an inline-PTX instruction for its emulation (only mma_bf16.cuh does).
#define CUDA_EMU 1

#include <math.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <array>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

// ---- CUDA keywords ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a GNU keyword already: g++ accepts it as is.
#define __launch_bounds__(...)
// One block alive at a time, process-wide (emu::launch serialises launches), so per-block shared
// memory can be function-local static storage: all threads of the block see the same object,
// exactly like __shared__.
#define __shared__ static

// ---- built-in variables ----------------------------------------------------------------------
// uint3/dim3: unsigned members, as in CUDA, so `blockIdx.x * blockDim.x + threadIdx.x` has the
// same (unsigned) arithmetic as on the device.
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// ---- device intrinsics used by the sources -----------------------------------------------------
// min/max on int (CUDA provides them as device functions; std::min would need <algorithm>).
__device__ inline int min(int a, int b) { return a < b ? a : b; }
__device__ inline int max(int a, int b) { return a > b ? a : b; }
__device__ inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
__device__ inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
// The _rn intrinsics exist to forbid contraction; with -ffp-contract=off every * and + is
// already rounded separately, so the plain operators are exact equivalents.
__device__ inline float __fmul_rn(float a, float b) { return a * b; }
__device__ inline float __fadd_rn(float a, float b) { return a + b; }
__device__ inline float __fsub_rn(float a, float b) { return a - b; }
__device__ inline float __fdiv_rn(float a, float b) { return a / b; }
__device__ inline float __fsqrt_rn(float a) { return sqrtf(a); }
// The high 32 bits of the 64-bit product.
__device__ inline unsigned __umulhi(unsigned a, unsigned b)
{
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
// rsqrtf is ≤2 ulp on the device; 1/sqrtf is within that.
__device__ inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
// fmaf, expf, logf, sqrtf, fmaxf, fminf, fabsf: <math.h> (fmaf is a true fused multiply-add).
__device__ inline unsigned __float_as_uint(float f)
{
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
__device__ inline float __uint_as_float(unsigned u)
{
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

namespace emu {

// Barrier over a changing set of participants. `drop()` is arrive-and-leave: a thread that has
// returned from the kernel no longer holds up __syncthreads of the others (as on the GPU, where
// exited threads do not participate). A wait longer than the timeout means a __syncthreads or
// shuffle that not every live thread reaches: reported and aborted rather than hanging CI.
class Barrier {
  public:
    void reset(int n)
    {
        std::lock_guard<std::mutex> g(m_);
        expected_ = n;
        arrived_ = 0;
    }
    int expected()
    {
        std::lock_guard<std::mutex> g(m_);
        return expected_;
    }
    void sync(const char* what)
    {
        std::unique_lock<std::mutex> g(m_);
        const unsigned long gen = gen_;
        if (++arrived_ == expected_) {
            release();
            return;
        }
        if (!cv_.wait_for(g, std::chrono::seconds(60), [&] { return gen_ != gen; })) {
            std::fprintf(stderr, "cuda_emu: deadlock in %s (block %u,%u,%u thread %u): %d of %d arrived\n",
                         what, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, arrived_, expected_);
            std::abort();
        }
    }
    void drop()
    {
        std::lock_guard<std::mutex> g(m_);
        --expected_;
        if (arrived_ > 0 && arrived_ == expected_) release();
    }

  private:
    void release()
    {
        arrived_ = 0;
        ++gen_;
        cv_.notify_all();
    }
    std::mutex m_;
    std::condition_variable cv_;
    int expected_ = 0, arrived_ = 0;
    unsigned long gen_ = 0;
};

struct Block {
    int nthreads = 0;
    Barrier block;                                  // __syncthreads
    std::vector<std::unique_ptr<Barrier>> warps;    // one per warp, for the shuffles
    std::vector<std::uint64_t> xchg;                // shuffle exchange slot per thread
    std::vector<std::array<unsigned, 6>> mma_xchg;  // mma operand registers (a[4], b[2]) per thread
};
inline Block* g_block = nullptr;
// One launch at a time, process-wide (a non-template variable: a function-local static in the
// launch template would be one mutex per kernel).
inline std::mutex g_launch_mutex;

inline int linear_tid()
{
    return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}
inline int warp_size_of(int warp)
{
    const int rest = g_block->nthreads - warp * 32;
    return rest < 32 ? rest : 32;
}

// Lane `lane` publishes v; after a warp barrier it reads the value of lane src(lane), or keeps
// its own when src is outside [0, width) of its segment (CUDA's rule for down/up/idx/xor).
template <class T, class Src>
T shfl(unsigned mask, T v, int width, Src src)
{
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    const int t = linear_tid(), warp = t / 32, lane = t % 32;
    Barrier& wb = *g_block->warps[warp];
    // Every lane named in the mask must take part; the sources use full masks, so a warp with
    // exited lanes here would be undefined behaviour on the GPU.
    const int want = __builtin_popcount(mask & (warp_size_of(warp) == 32 ? 0xffffffffu
                                                : ((1u << warp_size_of(warp)) - 1)));
    if (wb.expected() != want) {
        std::fprintf(stderr, "cuda_emu: shuffle mask %#x but %d live lanes in warp %d\n", mask,
                     wb.expected(), warp);
        std::abort();
    }
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    g_block->xchg[t] = bits;
    wb.sync("warp shuffle");
    const int seg = lane - lane % width;
    const int s = src(lane - seg);
    T r = v;
    if (s >= 0 && s < width && seg + s < warp_size_of(warp)) {
        bits = g_block->xchg[warp * 32 + seg + s];
        std::memcpy(&r, &bits, sizeof(T));
    }
    wb.sync("warp shuffle");  // nobody overwrites a slot before every lane has read it
    return r;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for the calling lane: d += A * B, where
// A (16x16) and B (16x8) are spread over the warp's registers as the PTX ISA's fragment tables
// say (see mma_bf16.cuh). Every lane publishes its a[4], b[2]; after a warp barrier each lane
// rebuilds the rows and columns it needs and computes its own four d entries. bf16 x bf16
// products are exact in fp32; the sum is taken in fp32 in k order (the hardware's order and
// internal rounding are unspecified, which is why parity tests compare with a tolerance).
inline float bf16_value(unsigned bits16) { return __uint_as_float(bits16 << 16); }
inline void mma_bf16_16x8x16(float d[4], const unsigned a[4], const unsigned b[2])
{
    const int tid = linear_tid(), warp = tid / 32, lane = tid % 32;
    Barrier& wb = *g_block->warps[warp];
    if (warp_size_of(warp) != 32 || wb.expected() != 32) {
        std::fprintf(stderr, "cuda_emu: mma.sync in warp %d with %d live lanes (all 32 must execute it)\n",
                     warp, wb.expected());
        std::abort();
    }
    auto& mine = g_block->mma_xchg[tid];
    for (int i = 0; i < 4; ++i) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    wb.sync("mma.sync");
    const auto* regs = &g_block->mma_xchg[(size_t)warp * 32];
    // A[row][col]: lane (row % 8) * 4 + (col % 8) / 2, register (row >= 8) + 2 * (col >= 8),
    // low half for even col.
    auto A = [&](int row, int col) {
        const unsigned w = regs[(row % 8) * 4 + (col % 8) / 2][(row >= 8 ? 1 : 0) + (col >= 8 ? 2 : 0)];
        return bf16_value((col & 1) ? (w >> 16) : (w & 0xffffu));
    };
    // B[row][col]: lane col * 4 + (row % 8) / 2, register b[row >= 8], low half for even row.
    auto B = [&](int row, int col) {
        const unsigned w = regs[col * 4 + (row % 8) / 2][4 + (row >= 8 ? 1 : 0)];
        return bf16_value((row & 1) ? (w >> 16) : (w & 0xffffu));
    };
    const int g = lane / 4, t = lane % 4;
    float out[4];
    for (int i = 0; i < 4; ++i) {
        const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float s = d[i];
        for (int k = 0; k < 16; ++k) s += A(row, k) * B(k, col);
        out[i] = s;
    }
    wb.sync("mma.sync");  // nobody republishes before every lane has read
    for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// Runs `body` (the kernel call) over `grid` with `block` threads per block. Launches are
// serialised process-wide (tests run in parallel threads; there is one static __shared__ set).
template <class F>
void launch(dim3 grid, dim3 block, F body)
{
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    const int n = (int)(block.x * block.y * block.z);
    Block b;
    b.nthreads = n;
    b.xchg.assign((size_t)n, 0);
    b.mma_xchg.assign((size_t)n, {});
    const int nwarps = (n + 31) / 32;
    for (int w = 0; w < nwarps; ++w) b.warps.emplace_back(new Barrier());
    auto reset = [&] {
        b.block.reset(n);
        for (int w = 0; w < nwarps; ++w) b.warps[w]->reset(warp_size_of(w));
    };
    g_block = &b;
    reset();
    Barrier fence;  // end of block: everyone done before the next block starts
    fence.reset(n);
    std::vector<std::thread> threads;
    threads.reserve((size_t)n);
    for (int t = 0; t < n; ++t) {
        threads.emplace_back([&, t] {
            gridDim = grid;
            blockDim = block;
            threadIdx = uint3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        blockIdx = uint3(bx, by, bz);
                        body();
                        b.warps[t / 32]->drop();
                        b.block.drop();
                        fence.sync("end of block");
                        if (t == 0) reset();
                        fence.sync("end of block");
                    }
        });
    }
    for (auto& th : threads) th.join();
    g_block = nullptr;
}

}  // namespace emu

template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return emu::shfl(mask, v, width, [&](int l) { return l + (int)delta; });
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return emu::shfl(mask, v, width, [&](int l) { return l - (int)delta; });
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    return emu::shfl(mask, v, width, [&](int l) { return l ^ lane_mask; });
}
template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32)
{
    return emu::shfl(mask, v, width, [&](int) { return src_lane % width; });
}

#define __syncthreads() emu::g_block->block.sync("__syncthreads")
