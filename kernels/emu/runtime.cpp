// runtime.cpp — the emulator's scheduler and memory checks. Not instrumented (only the kernels
// in launch_emu.cpp are): this is what the instrumentation calls.
//
//  * Fibers: each CUDA thread of a block is a user-level context with its own stack. The
//    scheduler runs the ready fibers in thread order; a fiber runs until it waits at a barrier
//    or returns. A context switch is a few instructions (x86-64: callee-saved registers + stack
//    pointer; elsewhere ucontext), so a block of 256 threads costs microseconds, not the
//    milliseconds that one OS thread per CUDA thread cost.
//  * Barriers: `__syncthreads` and the warp collectives count arrivals among the live threads;
//    a thread that returned no longer holds anyone up (as on the GPU). If no fiber can run and
//    some have not returned, the block is deadlocked: reported as a fault, not a hang.
//  * Memory checks: the -fsanitize=kernel-address callbacks below. Inside the device arena an
//    access must be aligned to its size (up to 4 bytes; see check()) and lie in a mapped range.
//  * Faults: the faulting fiber records the report and switches straight back to the scheduler;
//    it and the other fibers of the launch are abandoned (their stacks are reused), so nothing
//    unwinds through the kernels.
#include "cuda_emu.h"
#include "emu_abi.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {
namespace {

// ---- context switching ------------------------------------------------------------------------
#if defined(__x86_64__)
// emu_ctx_switch(save, next): pushes the callee-saved registers and the SSE/x87 control words,
// stores the stack pointer in *save, loads `next` and pops the same frame from there.
// A new fiber's stack is prepared so that the pop "returns" into emu_ctx_trampoline with the
// fiber pointer in %rbx.
extern "C" void emu_ctx_switch(void** save, void* next);
extern "C" void emu_ctx_trampoline();
asm(R"(
    .pushsection .text
    .p2align 4
    .type emu_ctx_switch,@function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch

    .p2align 4
    .type emu_ctx_trampoline,@function
emu_ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq %rbx, %rdi
    andq $-16, %rsp
    call emu_fiber_entry
    ud2
    .cfi_endproc
    .size emu_ctx_trampoline, .-emu_ctx_trampoline
    .popsection
)");
#endif

constexpr size_t STACK_BYTES = 256 * 1024;  // kernels are shallow; printf-style reports are not
constexpr int MAX_THREADS = 1024;

// One fiber stack with a PROT_NONE guard page below it: an overflow faults loudly.
struct Stack {
    char* base = nullptr;  // the guard page
    size_t bytes = 0;
    char* top() const { return base + bytes; }
};

enum State { READY, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
    void* sp = nullptr;
    State state = DONE;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
};

// Everything about the launch running on this OS thread.
struct Run {
    const char* kernel = nullptr;
    dim3 grid, block;
    int n = 0, nwarps = 0;
    std::vector<Fiber> fibers;
    std::vector<Stack> stacks;  // one per fiber
    int cur = -1;
    void* sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    int block_live = 0, block_arrived = 0;
    std::vector<int> warp_live, warp_arrived;
    std::vector<std::uint64_t> xchg;
    std::vector<std::array<unsigned, 6>> mma;
    void (*body)(void*) = nullptr;
    void* ctx = nullptr;
    EmuFault* fault = nullptr;
    bool faulted = false;
};

thread_local Run* g_run = nullptr;
std::mutex g_launch_mutex;  // one launch at a time, process-wide
// Fiber stacks not in use, shared by every OS thread that runs blocks (kept, not unmapped: a
// launch takes its stacks from here and gives them back).
std::mutex g_stack_mutex;
std::vector<Stack> g_free_stacks;

Stack new_stack()
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void* p = mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        std::fprintf(stderr, "cuda_emu: cannot map a fiber stack\n");
        std::abort();
    }
    if (mprotect(p, page, PROT_NONE) != 0) {
        std::fprintf(stderr, "cuda_emu: cannot protect a fiber stack's guard page\n");
        std::abort();
    }
    return Stack{(char*)p, STACK_BYTES + page};
}

// `n` stacks for one worker's run, from the free list (new ones when it runs short).
std::vector<Stack> take_stacks(int n)
{
    std::vector<Stack> out;
    {
        std::lock_guard<std::mutex> lock(g_stack_mutex);
        while ((int)out.size() < n && !g_free_stacks.empty()) {
            out.push_back(g_free_stacks.back());
            g_free_stacks.pop_back();
        }
    }
    while ((int)out.size() < n) out.push_back(new_stack());
    return out;
}

void give_back_stacks(std::vector<Stack>& stacks)
{
    std::lock_guard<std::mutex> lock(g_stack_mutex);
    g_free_stacks.insert(g_free_stacks.end(), stacks.begin(), stacks.end());
    stacks.clear();
}

void switch_to_scheduler(Run& r, Fiber& f)
{
#if defined(__x86_64__)
    emu_ctx_switch(&f.sp, r.sched_sp);
#else
    swapcontext(&f.uc, &r.sched_uc);
#endif
}

void resume(Run& r, int t)
{
    r.cur = t;
    const int bx = r.block.x, bxy = r.block.x * r.block.y;
    threadIdx = uint3(t % bx, (t / bx) % r.block.y, t / bxy);
#if defined(__x86_64__)
    emu_ctx_switch(&r.sched_sp, r.fibers[t].sp);
#else
    swapcontext(&r.sched_uc, &r.fibers[t].uc);
#endif
}

void release_block(Run& r)
{
    r.block_arrived = 0;
    for (auto& f : r.fibers)
        if (f.state == WAIT_BLOCK) f.state = READY;
}

void release_warp(Run& r, int w)
{
    r.warp_arrived[w] = 0;
    const int end = std::min(r.n, (w + 1) * 32);
    for (int t = w * 32; t < end; ++t)
        if (r.fibers[t].state == WAIT_WARP) r.fibers[t].state = READY;
}

// The calling fiber has returned from the kernel: it leaves every barrier it could hold up.
void thread_exit(Run& r)
{
    const int w = r.cur / 32;
    r.fibers[r.cur].state = DONE;
    --r.block_live;
    --r.warp_live[w];
    if (r.block_arrived > 0 && r.block_arrived == r.block_live) release_block(r);
    if (r.warp_arrived[w] > 0 && r.warp_arrived[w] == r.warp_live[w]) release_warp(r, w);
}

void position(const Run& r, char* out, size_t n)
{
    std::snprintf(out, n, "%s by thread (%u,%u,%u) in block (%u,%u,%u)", r.kernel, threadIdx.x,
                  threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z);
}

// Records the launch's first fault and abandons the calling fiber: the scheduler sees
// `faulted` and stops the launch.
[[noreturn]] void fault_here(Run& r, int kind, std::uint64_t address, unsigned size, bool write,
                             const char* text)
{
    if (!r.faulted) {
        r.faulted = true;
        EmuFault& f = *r.fault;
        f.kind = kind;
        f.block[0] = blockIdx.x, f.block[1] = blockIdx.y, f.block[2] = blockIdx.z;
        f.thread[0] = threadIdx.x, f.thread[1] = threadIdx.y, f.thread[2] = threadIdx.z;
        f.address = address;
        f.size = size;
        f.is_write = write ? 1 : 0;
        std::snprintf(f.message, sizeof f.message, "%s", text);
    }
    Fiber& me = r.fibers[r.cur];
    me.state = DONE;
    switch_to_scheduler(r, me);
    __builtin_unreachable();
}

// ---- device memory map --------------------------------------------------------------------------
struct Range {
    std::uint64_t start, end, id;
};
std::uint64_t g_lo = 0, g_span = 0;
std::vector<Range> g_mapped;   // sorted by start, disjoint
// The last ranges accesses hit (a GEMM reads two, writes one), as indices into g_mapped, which
// does not change while a kernel runs (the emu_mem_* calls take the launch lock and reset
// these). Shared by the workers: plain atomics, no thread-locals (which cost a
// __tls_get_addr call each in a shared library).
constexpr unsigned NO_HIT = ~0u;
std::atomic<unsigned> g_hit[4] = {NO_HIT, NO_HIT, NO_HIT, NO_HIT};
std::atomic<unsigned> g_hit_next{0};

void forget_hits()
{
    for (auto& h : g_hit) h.store(NO_HIT, std::memory_order_relaxed);
}
std::vector<Range> g_freed;    // the most recent frees, for reports (a ring)
size_t g_freed_next = 0;
constexpr size_t FREED_KEPT = 4096;

const Range* find_mapped(std::uint64_t a)
{
    auto it = std::upper_bound(g_mapped.begin(), g_mapped.end(), a,
                               [](std::uint64_t v, const Range& r) { return v < r.start; });
    if (it == g_mapped.begin()) return nullptr;
    --it;
    return a < it->end ? &*it : nullptr;
}

// Where `a` lies relative to the allocations, in compute-sanitizer's manner.
void describe(std::uint64_t a, unsigned size, char* out, size_t n)
{
    // A freed range counts only while no live allocation has taken its addresses over.
    auto reused = [](const Range& f) {
        for (const Range& r : g_mapped)
            if (r.start < f.end && f.start < r.end) return true;
        return false;
    };
    for (size_t i = 0; i < g_freed.size(); ++i) {
        const Range& f = g_freed[(g_freed_next + g_freed.size() - 1 - i) % g_freed.size()];
        if (a >= f.start && a < f.end && !reused(f)) {
            std::snprintf(out, n,
                          "Address 0x%llx is %llu bytes inside allocation #%llu of %llu bytes at "
                          "0x%llx, which has been freed",
                          (unsigned long long)a, (unsigned long long)(a - f.start),
                          (unsigned long long)f.id, (unsigned long long)(f.end - f.start),
                          (unsigned long long)f.start);
            return;
        }
    }
    const Range* below = nullptr;
    const Range* above = nullptr;
    for (const Range& r : g_mapped) {
        if (r.start <= a) below = &r;
        if (r.start > a) {
            above = &r;
            break;
        }
    }
    if (below && a < below->end) {  // starts inside, runs past the end
        std::snprintf(out, n,
                      "Address 0x%llx: %u-byte access runs %llu bytes past the end of "
                      "allocation #%llu of %llu bytes at 0x%llx",
                      (unsigned long long)a, size,
                      (unsigned long long)(a + size - below->end), (unsigned long long)below->id,
                      (unsigned long long)(below->end - below->start),
                      (unsigned long long)below->start);
    } else if (below && (!above || a - below->end < above->start - a)) {
        std::snprintf(out, n,
                      "Address 0x%llx is %llu bytes after the nearest allocation #%llu of %llu "
                      "bytes at 0x%llx",
                      (unsigned long long)a, (unsigned long long)(a - below->end),
                      (unsigned long long)below->id,
                      (unsigned long long)(below->end - below->start),
                      (unsigned long long)below->start);
    } else if (above) {
        std::snprintf(out, n,
                      "Address 0x%llx is %llu bytes before the nearest allocation #%llu of %llu "
                      "bytes at 0x%llx",
                      (unsigned long long)a, (unsigned long long)(above->start - a),
                      (unsigned long long)above->id,
                      (unsigned long long)(above->end - above->start),
                      (unsigned long long)above->start);
    } else {
        std::snprintf(out, n, "Address 0x%llx is not inside any allocation (none is live)",
                      (unsigned long long)a);
    }
}

[[noreturn]] void memory_fault(std::uint64_t a, unsigned size, bool write, bool misaligned)
{
    Run* r = g_run;
    char where[256], what[320], text[768];
    describe(a, size, what, sizeof what);
    if (!r) {
        std::fprintf(stderr, "cuda_emu: invalid %u-byte %s outside a launch: %s\n", size,
                     write ? "write" : "read", what);
        std::abort();
    }
    position(*r, where, sizeof where);
    if (misaligned)
        std::snprintf(text, sizeof text,
                      "Invalid __global__ %s of size %u bytes (misaligned address 0x%llx)\n"
                      "    at %s",
                      write ? "write" : "read", size, (unsigned long long)a, where);
    else
        std::snprintf(text, sizeof text, "Invalid __global__ %s of size %u bytes\n    at %s\n    %s",
                      write ? "write" : "read", size, where, what);
    fault_here(*r, misaligned ? EMU_FAULT_MISALIGNED : EMU_FAULT_ADDRESS, a, size, write, text);
}

inline void check(const void* p, size_t size, bool write)
{
    const std::uint64_t a = (std::uint64_t)(uintptr_t)p;
    if (a - g_lo >= g_span) return;  // host memory: stacks, static shared memory, the emulator
    // The GPU needs every access aligned to its size. The host compiler may merge neighbouring
    // scalar accesses into wider ones, so only the scalar granule (<= 4 bytes) is checked.
    const size_t granule = size < 4 ? size : 4;
    if (granule > 1 && (a & (granule - 1)) != 0) memory_fault(a, (unsigned)size, write, true);
    for (const auto& h : g_hit) {
        const unsigned i = h.load(std::memory_order_relaxed);
        if (i != NO_HIT && a >= g_mapped[i].start && a + size <= g_mapped[i].end) return;
    }
    const Range* r = find_mapped(a);
    if (!r || a + size > r->end) memory_fault(a, (unsigned)size, write, false);
    g_hit[g_hit_next.fetch_add(1, std::memory_order_relaxed) % 4].store(
        (unsigned)(r - g_mapped.data()), std::memory_order_relaxed);
}

}  // namespace

// ---- the kernel-facing runtime (cuda_emu.h) -------------------------------------------------------
void sync_block()
{
    Run& r = *g_run;
    if (++r.block_arrived == r.block_live) {
        release_block(r);
        return;
    }
    Fiber& me = r.fibers[r.cur];
    me.state = WAIT_BLOCK;
    switch_to_scheduler(r, me);
}

void sync_warp(const char*)
{
    Run& r = *g_run;
    const int w = r.cur / 32;
    if (++r.warp_arrived[w] == r.warp_live[w]) {
        release_warp(r, w);
        return;
    }
    Fiber& me = r.fibers[r.cur];
    me.state = WAIT_WARP;
    switch_to_scheduler(r, me);
}

int warp_live() { return g_run->warp_live[g_run->cur / 32]; }
int block_threads() { return g_run->n; }
int linear_tid() { return g_run->cur; }
std::uint64_t* shuffle_slots() { return g_run->xchg.data(); }
std::array<unsigned, 6>* mma_slots() { return g_run->mma.data(); }

void trap(const char* fmt, ...)
{
    char msg[384], where[256], text[768];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Run* r = g_run;
    if (!r) {
        std::fprintf(stderr, "cuda_emu: %s (outside a launch)\n", msg);
        std::abort();
    }
    position(*r, where, sizeof where);
    std::snprintf(text, sizeof text, "Kernel trap: %s\n    at %s", msg, where);
    fault_here(*r, EMU_FAULT_TRAP, 0, 0, false, text);
}

// ---- the scheduler ------------------------------------------------------------------------------
extern "C" __attribute__((visibility("hidden"))) void emu_fiber_entry(void*)
{
    Run& r = *g_run;
    r.body(r.ctx);
    thread_exit(r);
    switch_to_scheduler(r, r.fibers[r.cur]);
    __builtin_unreachable();
}

#if !defined(__x86_64__)
static void ucontext_entry() { emu_fiber_entry(nullptr); }
#endif

namespace {

void start_fiber(Run& r, int t)
{
    Fiber& f = r.fibers[t];
    f.state = READY;
    const Stack& s = r.stacks[t];
#if defined(__x86_64__)
    // The frame emu_ctx_switch pops: control words, r15, r14, r13, r12, rbx, rbp, return address.
    std::uint64_t* sp = (std::uint64_t*)(((uintptr_t)s.top() & ~(uintptr_t)15) - 64);
    std::uint32_t mxcsr;
    std::uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    sp[0] = (std::uint64_t)mxcsr | ((std::uint64_t)fpucw << 32);
    sp[1] = sp[2] = sp[3] = sp[4] = 0;
    sp[5] = (std::uint64_t)(uintptr_t)&f;  // rbx
    sp[6] = 0;                              // rbp
    sp[7] = (std::uint64_t)(uintptr_t)&emu_ctx_trampoline;
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = s.base;
    f.uc.uc_stack.ss_size = s.bytes;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, ucontext_entry, 0);
#endif
}

// Runs one block to completion (or to its first fault / a deadlock).
void run_block(Run& r)
{
    r.block_live = r.n;
    r.block_arrived = 0;
    for (int w = 0; w < r.nwarps; ++w) {
        r.warp_live[w] = std::min(32, r.n - w * 32);
        r.warp_arrived[w] = 0;
    }
    for (int t = 0; t < r.n; ++t) start_fiber(r, t);
    int done = 0;
    for (;;) {
        bool ran = false;
        for (int t = 0; t < r.n; ++t) {
            if (r.fibers[t].state != READY) continue;
            resume(r, t);
            ran = true;
            if (r.faulted) return;
            if (r.fibers[t].state == DONE) ++done;
        }
        if (done == r.n) return;
        if (!ran) {
            int at_block = 0, at_warp = 0;
            for (const auto& f : r.fibers) {
                at_block += f.state == WAIT_BLOCK;
                at_warp += f.state == WAIT_WARP;
            }
            char text[768];
            std::snprintf(text, sizeof text,
                          "Deadlock in %s, block (%u,%u,%u): %d thread(s) wait at "
                          "__syncthreads and %d at a warp collective, %d returned; not every "
                          "live thread reaches the same barrier",
                          r.kernel, blockIdx.x, blockIdx.y, blockIdx.z, at_block, at_warp,
                          r.n - r.block_live);
            r.faulted = true;
            EmuFault& f = *r.fault;
            f.kind = EMU_FAULT_TRAP;
            f.block[0] = blockIdx.x, f.block[1] = blockIdx.y, f.block[2] = blockIdx.z;
            std::snprintf(f.message, sizeof f.message, "%s", text);
            return;
        }
    }
}

}  // namespace

namespace {

// The blocks of a grid, shared out among the workers: each takes the next block index.
struct Grid {
    const char* kernel;
    dim3 grid, block;
    int n;
    void (*body)(void*);
    void* ctx;
    long blocks;
    std::atomic<long> next{0};
    std::atomic<bool> stop{false};
    // The fault of the lowest-numbered faulting block: the report does not depend on which
    // worker got there first.
    std::mutex fault_mutex;
    long fault_block = -1;
    EmuFault fault{};
};

// Runs blocks of `g` on the calling OS thread until none is left or one faulted.
void work(Grid& g)
{
    Run r;
    r.stacks = take_stacks(g.n);
    r.kernel = g.kernel;
    r.grid = g.grid;
    r.block = g.block;
    r.n = g.n;
    r.nwarps = (r.n + 31) / 32;
    r.fibers.resize((size_t)r.n);
    r.warp_live.assign((size_t)r.nwarps, 0);
    r.warp_arrived.assign((size_t)r.nwarps, 0);
    r.xchg.assign((size_t)r.n, 0);
    r.mma.assign((size_t)r.n, {});
    r.body = g.body;
    r.ctx = g.ctx;
    EmuFault mine{};
    r.fault = &mine;
    Run* outer = g_run;
    g_run = &r;
    const uint3 saved_t = threadIdx, saved_b = blockIdx;
    const dim3 saved_bd = blockDim, saved_gd = gridDim;
    gridDim = r.grid;
    blockDim = r.block;
    for (;;) {
        const long b = g.next.fetch_add(1);
        if (b >= g.blocks || g.stop.load(std::memory_order_relaxed)) break;
        const unsigned bx = (unsigned)(b % g.grid.x);
        const unsigned by = (unsigned)(b / g.grid.x % g.grid.y);
        const unsigned bz = (unsigned)(b / ((long)g.grid.x * g.grid.y));
        blockIdx = uint3(bx, by, bz);
        run_block(r);
        if (r.faulted) {
            std::lock_guard<std::mutex> lock(g.fault_mutex);
            if (g.fault_block < 0 || b < g.fault_block) {
                g.fault_block = b;
                g.fault = mine;
            }
            g.stop.store(true);
            break;
        }
    }
    threadIdx = saved_t, blockIdx = saved_b, blockDim = saved_bd, gridDim = saved_gd;
    g_run = outer;
    give_back_stacks(r.stacks);
}

// Helper threads that run blocks beside the launching thread. Blocks are independent (no
// kernel here shares data between blocks), so the result does not depend on their order; a
// kernel that did race between blocks would now show it as a run-to-run difference.
class Pool {
  public:
    static Pool& get()
    {
        static Pool* pool = new Pool();  // never destroyed: workers outlive static destructors
        return *pool;
    }
    int helpers() const { return (int)threads_.size(); }
    // Runs `g` on the helpers and the calling thread; returns when every block is done.
    void run(Grid& g)
    {
        {
            std::lock_guard<std::mutex> lock(m_);
            job_ = &g;
            busy_ = (int)threads_.size();
            ++generation_;
        }
        cv_.notify_all();
        work(g);
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [&] { return busy_ == 0; });
        job_ = nullptr;
    }

  private:
    Pool()
    {
        int n = (int)std::thread::hardware_concurrency();
        if (const char* e = std::getenv("CUDA_EMU_THREADS")) n = std::atoi(e);
        n = std::max(1, std::min(n, 16));
        for (int i = 0; i + 1 < n; ++i) threads_.emplace_back([this] { loop(); });
        for (auto& t : threads_) t.detach();
    }
    void loop()
    {
        unsigned long seen = 0;
        for (;;) {
            Grid* g;
            {
                std::unique_lock<std::mutex> lock(m_);
                cv_.wait(lock, [&] { return generation_ != seen; });
                seen = generation_;
                g = job_;
            }
            work(*g);
            std::lock_guard<std::mutex> lock(m_);
            if (--busy_ == 0) done_.notify_all();
        }
    }
    std::vector<std::thread> threads_;
    std::mutex m_;
    std::condition_variable cv_, done_;
    Grid* job_ = nullptr;
    int busy_ = 0;
    unsigned long generation_ = 0;
};

}  // namespace

int run_grid(const char* kernel, EmuDim3 grid, EmuDim3 block, void (*body)(void*), void* ctx,
             EmuFault* fault)
{
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    *fault = EmuFault{};
    const long n = (long)block.x * block.y * block.z;
    if (n <= 0 || n > MAX_THREADS || grid.x == 0 || grid.y == 0 || grid.z == 0) {
        fault->kind = EMU_FAULT_TRAP;
        std::snprintf(fault->message, sizeof fault->message,
                      "invalid launch of %s: grid (%u,%u,%u), block (%u,%u,%u)", kernel, grid.x,
                      grid.y, grid.z, block.x, block.y, block.z);
        return fault->kind;
    }
    Grid g;
    g.kernel = kernel;
    g.grid = dim3(grid.x, grid.y, grid.z);
    g.block = dim3(block.x, block.y, block.z);
    g.n = (int)n;
    g.body = body;
    g.ctx = ctx;
    g.blocks = (long)grid.x * grid.y * grid.z;
    // Small grids are not worth waking the helpers for.
    Pool& pool = Pool::get();
    if (g.blocks >= 2 && (long)g.n * g.blocks >= 4096 && pool.helpers() > 0)
        pool.run(g);
    else
        work(g);
    *fault = g.fault;
    return fault->kind;
}

}  // namespace emu

// ---- device memory (emu_abi.h) -----------------------------------------------------------------
// Each takes the launch lock: the map never changes under a running kernel.
extern "C" void emu_mem_set_arena(std::uint64_t lo, std::uint64_t span)
{
    std::lock_guard<std::mutex> lock(emu::g_launch_mutex);
    emu::g_lo = lo;
    emu::g_span = span;
    // A new device: what the old one freed is not this one's history.
    emu::g_freed.clear();
    emu::g_freed_next = 0;
    emu::forget_hits();
}

extern "C" void emu_mem_map(std::uint64_t start, std::uint64_t size, std::uint64_t id)
{
    std::lock_guard<std::mutex> lock(emu::g_launch_mutex);
    using emu::Range;
    const Range r{start, start + size, id};
    auto it = std::upper_bound(emu::g_mapped.begin(), emu::g_mapped.end(), start,
                               [](std::uint64_t v, const Range& x) { return v < x.start; });
    emu::g_mapped.insert(it, r);
    emu::forget_hits();  // the indices after the insertion point moved
}

extern "C" int emu_mem_unmap(std::uint64_t start)
{
    std::lock_guard<std::mutex> lock(emu::g_launch_mutex);
    using emu::Range;
    auto it = std::lower_bound(emu::g_mapped.begin(), emu::g_mapped.end(), start,
                               [](const Range& x, std::uint64_t v) { return x.start < v; });
    if (it == emu::g_mapped.end() || it->start != start) return 0;
    if (emu::g_freed.size() < emu::FREED_KEPT)
        emu::g_freed.push_back(*it);
    else
        emu::g_freed[emu::g_freed_next] = *it;
    emu::g_freed_next = (emu::g_freed_next + 1) % emu::FREED_KEPT;
    emu::g_mapped.erase(it);
    emu::forget_hits();
    return 1;
}

// ---- the -fsanitize=kernel-address callbacks ---------------------------------------------------------
#define EMU_CHECK_FN(n)                                                                       \
    extern "C" void __asan_load##n##_noabort(void* p) { emu::check(p, n, false); }            \
    extern "C" void __asan_store##n##_noabort(void* p) { emu::check(p, n, true); }
EMU_CHECK_FN(1)
EMU_CHECK_FN(2)
EMU_CHECK_FN(4)
EMU_CHECK_FN(8)
EMU_CHECK_FN(16)
extern "C" void __asan_loadN_noabort(void* p, size_t n) { emu::check(p, n, false); }
extern "C" void __asan_storeN_noabort(void* p, size_t n) { emu::check(p, n, true); }
extern "C" void __asan_handle_no_return() {}
// Dynamic-initialisation order checking of globals (the kernel table): nothing to check here.
extern "C" void __asan_before_dynamic_init(const char*) {}
extern "C" void __asan_after_dynamic_init() {}
