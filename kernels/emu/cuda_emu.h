// cuda_emu.h — run the CUDA C++ kernels in kernels/cuda/*.cu, unmodified, on the CPU.
//
// Model: the threads of a block are fibers (user-level contexts, runtime.cpp) run one at a time
// on one OS thread; the blocks of a grid are shared out among a few OS threads
// (CUDA_EMU_THREADS, default: the CPU count). A fiber runs until it reaches `__syncthreads()`
// or a warp collective (shuffle, mma), then the next fiber runs; a barrier releases when every
// live thread of the block (or warp) has arrived. That executes every index map, bounds check,
// grid-stride loop, shared-memory tile and block/warp reduction exactly as written.
//
// Schedules (EmuOptions, or CUDA_EMU_SCHEDULE): the ready fibers run in ascending thread order
// (the default), descending, or a fresh random order each round with switches at random shared
// and device memory accesses too. Several schedules: each launch runs under all of them from
// the same memory and must write the same bits (a race otherwise). Racecheck
// (CUDA_EMU_RACECHECK=1): shadow state for every shared and device word reports conflicting
// accesses that no `__syncthreads()` orders (warp collectives do not count), between threads
// of a block or between blocks, and shared reads before any write (racecheck.cpp).
//
// Tensor cores: `mma.sync.m16n8k16` (bf16 in, fp32 out) is implemented from the PTX ISA's
// fragment tables as a warp-collective exchange (mma_bf16_16x8x16 below); the sources call it
// through mma_bf16.cuh, whose only `#ifdef CUDA_EMU` swaps the inline PTX for this function.
//
// Memory (launch_emu.cpp is compiled with -fsanitize=thread instrumentation, whose load/store
// callbacks live in memory.cpp): an access inside the registered device arena that no live
// allocation covers, or one not aligned to its width (up to 16 bytes), stops the kernel with a
// report naming the kernel, block, thread and address (what compute-sanitizer's memcheck would
// say). `__shared__` variables live in runtime-owned memory (build.rs rewrites each
// declaration into a reference to it): every access is checked against its variable, and the
// memory is filled with 0xff bytes (NaN floats) at each block's start. So do a deadlocked
// barrier and a collective with missing lanes. Nothing aborts the process: the caller gets the
// fault (emu_launch's EmuFault) and decides.
//
// What it cannot model (a GPU run is still needed for these):
//  * the memory model and real warp scheduling: with the schedules and racecheck, an access
//    pair that no barrier orders is found whenever a launch executes it, but fences
//    (__threadfence), volatile, atomics and memory ordering between blocks are not modelled
//    (no kernel here uses them), and implicit warp lock-step is never assumed (a bug on Volta+
//    anyway). Racecheck works on 4-byte words (two threads writing different bytes of one word
//    would be reported); it runs the blocks one at a time.
//  * floating point details: nvrtc contracts a*b+c into fma by default (--fmad=true); g++ is
//    run with -ffp-contract=off, so only explicit fmaf() is fused here. expf/logf/sqrtf are
//    glibc's (correctly rounded or ≤1 ulp) while CUDA's are ≤2 ulp (expf, logf) / IEEE (sqrtf).
//  * memory outside the registered arena and shared memory (host buffers, a kernel's local
//    arrays) is not checked; an out-of-bounds access far enough to land in another live
//    allocation (past the gaps around each) is not caught. A 16-byte aggregate that is only
//    8-aligned (struct {double, double}) reaches the check as a 16-byte access and must be
//    16-aligned here.
//  * dynamic shared memory (`extern __shared__`) and file-scope `__shared__` variables: build.rs
//    refuses them (none is used).
//  * timing, occupancy, register limits (__launch_bounds__ is ignored here; the stand-in driver
//    checks a launch against the cubin's own limits instead). Static shared memory over CUDA's
//    48 KiB is a trap.
#pragma once

// Lets a source swap an inline-PTX instruction for its emulation (only mma_bf16.cuh does).
#define CUDA_EMU 1

#include <math.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- CUDA keywords ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a GNU keyword already: g++ accepts it as is.
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// build.rs compiles a copy of every source in which each `__shared__ T name[dims];` is a
// reference into the running block's shared memory, owned by the runtime (emu::shared_var
// below). A `__shared__` that reaches the compiler was not rewritten: a compile error naming it.
#define __shared__ emu_shared_declaration_not_rewritten_by_build_rs

// ---- built-in variables ----------------------------------------------------------------------
// uint3/dim3: unsigned members, as in CUDA, so `blockIdx.x * blockDim.x + threadIdx.x` has the
// same (unsigned) arithmetic as on the device. The scheduler sets them before it resumes a
// fiber.
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

// ---- vector types ------------------------------------------------------------------------------
// With CUDA's sizes and alignments (vector_types.h), so that a float4 / int2 / double2 access is
// as wide, and must be as aligned, as on the device: the access check requires each access's
// address to be a multiple of its width (8 and 16 bytes included).
#define EMU_VECTOR2(T, name, align)                                                        \
    struct __align__(align) name {                                                         \
        T x, y;                                                                            \
    };                                                                                     \
    __device__ inline name make_##name(T x, T y) { return name{x, y}; }
#define EMU_VECTOR4(T, name, align)                                                        \
    struct __align__(align) name {                                                         \
        T x, y, z, w;                                                                      \
    };                                                                                     \
    __device__ inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
EMU_VECTOR2(float, float2, 8)
EMU_VECTOR4(float, float4, 16)
EMU_VECTOR2(int, int2, 8)
EMU_VECTOR4(int, int4, 16)
EMU_VECTOR2(unsigned, uint2, 8)
EMU_VECTOR4(unsigned, uint4, 16)
EMU_VECTOR2(double, double2, 16)
#undef EMU_VECTOR2
#undef EMU_VECTOR4
static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "CUDA's float4");
static_assert(sizeof(float2) == 8 && alignof(float2) == 8, "CUDA's float2");
static_assert(sizeof(double2) == 16 && alignof(double2) == 16, "CUDA's double2");

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

// ---- the runtime's side (runtime.cpp, memory.cpp) -------------------------------------------------
// `__syncthreads()`: wait until every live thread of the block has arrived.
void sync_block();
// A warp-collective rendezvous of the calling thread's warp (`what` names it in reports).
void sync_warp(const char* what);
// Live (not yet returned) threads in the calling thread's warp, and in the block.
int warp_live();
int block_threads();
// Linear thread index within the block.
int linear_tid();
// The per-thread exchange slots of the running block: one 64-bit value (shuffles) and the six
// 32-bit mma operand registers per thread. Written through the runtime (which is not
// instrumented: the slots are the emulator's, not the kernel's memory), read directly.
void publish_shuffle(std::uint64_t bits);
const std::uint64_t* shuffle_slots();
void publish_mma(const unsigned a[4], const unsigned b[2]);
const std::array<unsigned, 6>* mma_slots();
// Stops the kernel with an error (the emulator's `__trap()`): printf-style message, reported
// with the thread's position. Never returns to the caller.
[[noreturn]] void trap(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// One `__shared__` declaration of the sources, as build.rs rewrites it: a constant object per
// declaration (per template instantiation), whose address is its identity.
struct SharedDecl {
    const char* name;
    const char* file;
    int line;
    unsigned bytes;       // sizeof the whole variable
    unsigned align;       // alignof its element type (or a larger __align__)
    unsigned elem_bytes;  // sizeof its element type
    unsigned rank;        // array dimensions (0: a scalar), up to 3 named in reports
    unsigned extent[3];
};
template <class T>
constexpr SharedDecl shared_decl(const char* name, const char* file, int line, unsigned align)
{
    using E = std::remove_all_extents_t<T>;
    return SharedDecl{name,
                      file,
                      line,
                      (unsigned)sizeof(T),
                      alignof(E) > align ? (unsigned)alignof(E) : align,
                      (unsigned)sizeof(E),
                      (unsigned)std::rank<T>::value,
                      {(unsigned)std::extent<T, 0>::value, (unsigned)std::extent<T, 1>::value,
                       (unsigned)std::extent<T, 2>::value}};
}
// The running block's storage for `d`: the same address for every thread of the block, laid
// out (with unmapped gaps between variables) on first use in a launch, filled with 0xff bytes
// (a NaN in every float) at each block's start, so a read before any write shows.
void* shared_var(const SharedDecl* d);

// Lane `lane` publishes v; after a warp barrier it reads the value of lane src(lane), or keeps
// its own when src is outside [0, width) of its segment (CUDA's rule for down/up/idx/xor).
template <class T, class Src>
T shfl(unsigned mask, T v, int width, Src src)
{
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    const int t = linear_tid(), warp = t / 32, lane = t % 32;
    const int rest = block_threads() - warp * 32, size = rest < 32 ? rest : 32;
    // Every lane named in the mask must take part; the sources use full masks, so a warp with
    // exited lanes here would be undefined behaviour on the GPU.
    const int want = __builtin_popcount(mask & (size == 32 ? 0xffffffffu : ((1u << size) - 1)));
    if (warp_live() != want)
        trap("__shfl_*_sync with mask %#x but %d live lanes in warp %d", mask, warp_live(), warp);
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    publish_shuffle(bits);
    sync_warp("warp shuffle");
    // Lanes that were still running at the check above may have returned instead of arriving
    // (fibers run in lane order): the barrier then released without them.
    if (warp_live() != want)
        trap("__shfl_*_sync with mask %#x, but lanes of warp %d returned before reaching it",
             mask, warp);
    const int seg = lane - lane % width;
    const int s = src(lane - seg);
    T r = v;
    if (s >= 0 && s < width && seg + s < size) {
        bits = shuffle_slots()[warp * 32 + seg + s];
        std::memcpy(&r, &bits, sizeof(T));
    }
    sync_warp("warp shuffle");  // nobody overwrites a slot before every lane has read it
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
    if (warp_live() != 32)
        trap("mma.sync in warp %d with %d live lanes (all 32 must execute it)", warp, warp_live());
    publish_mma(a, b);
    sync_warp("mma.sync");
    if (warp_live() != 32)
        trap("mma.sync in warp %d, but lanes returned before reaching it (all 32 must execute it)",
             warp);
    const auto* regs = &mma_slots()[(size_t)warp * 32];
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
    sync_warp("mma.sync");  // nobody republishes before every lane has read
    for (int i = 0; i < 4; ++i) d[i] = out[i];
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

#define __syncthreads() emu::sync_block()
#define __trap() emu::trap("__trap()")
