// runtime.cpp — the emulator's scheduler: fibers, barriers, the blocks of a launch over a few OS
// threads, the schedules and the checking modes. Not instrumented (only the kernels in
// launch_emu.cpp are); memory.cpp holds the access check the instrumentation calls,
// racecheck.cpp the shadow state.
//
//  * Fibers: each CUDA thread of a block is a user-level context with its own stack. The
//    scheduler runs the ready fibers in rounds, in the schedule's order (ascending thread index,
//    descending, or a fresh random permutation each round); a fiber runs until it waits at a
//    barrier or returns, or (random schedule) until a memory access where it is told to yield.
//    A context switch is a few instructions (x86-64: callee-saved registers + stack pointer;
//    elsewhere ucontext), so a block of 256 threads costs microseconds, not the milliseconds
//    that one OS thread per CUDA thread cost.
//  * Barriers: `__syncthreads` and the warp collectives count arrivals among the live threads;
//    a thread that returned no longer holds anyone up (as on the GPU). If no fiber can run and
//    some have not returned, the block is deadlocked: reported as a fault, not a hang. A
//    released `__syncthreads` starts a new barrier interval (racecheck's unit of ordering).
//  * Faults: the faulting fiber records the report and switches straight back to the scheduler;
//    it and the other fibers of the launch are abandoned (their stacks are reused), so nothing
//    unwinds through the kernels.
//  * Checking modes (EmuOptions): racecheck, and the schedule comparison (the launch once per
//    schedule from the same memory, results compared word for word) run the blocks one at a
//    time on the calling thread, in the schedule's block order.
#include "runtime.h"

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
#include <unordered_map>

namespace emu {

Modes g_modes;
thread_local Run* g_run = nullptr;
std::mutex g_launch_mutex;

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
    threadIdx = thread_index(r, (unsigned)t);
#if defined(__x86_64__)
    emu_ctx_switch(&r.sched_sp, r.fibers[t].sp);
#else
    swapcontext(&r.sched_uc, &r.fibers[t].uc);
#endif
}

void release_block(Run& r)
{
    r.block_arrived = 0;
    ++r.gen;
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

}  // namespace

uint3 thread_index(const Run& r, unsigned t)
{
    const unsigned bx = r.block.x, bxy = r.block.x * r.block.y;
    return uint3(t % bx, (t / bx) % r.block.y, t / bxy);
}

uint3 block_index(const Run& r, std::uint32_t b)
{
    return uint3(b % r.grid.x, b / r.grid.x % r.grid.y, b / (r.grid.x * r.grid.y));
}

void position(const Run& r, char* out, size_t n)
{
    std::snprintf(out, n, "%s by thread (%u,%u,%u) in block (%u,%u,%u)", r.kernel, threadIdx.x,
                  threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z);
}

void fault_here(Run& r, int kind, std::uint64_t address, unsigned size, bool write,
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

// splitmix64: small, fast, and every seed gives a good stream.
std::uint64_t next_random(std::uint64_t& state)
{
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void maybe_yield(Run& r)
{
    // One access in 8: a thread runs a few accesses on, then another (random) one goes on.
    if ((next_random(r.rng) & 7) != 0) return;
    Fiber& me = r.fibers[r.cur];
    switch_to_scheduler(r, me);  // still READY: it runs again in a later round
}

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
void publish_shuffle(std::uint64_t bits) { g_run->xchg[g_run->cur] = bits; }
const std::uint64_t* shuffle_slots() { return g_run->xchg.data(); }
void publish_mma(const unsigned a[4], const unsigned b[2])
{
    g_run->mma[g_run->cur] = {a[0], a[1], a[2], a[3], b[0], b[1]};
}
const std::array<unsigned, 6>* mma_slots() { return g_run->mma.data(); }

void trap(const char* fmt, ...)
{
    char msg[512], where[256], text[1024];
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

// A 64-bit hash of a string (FNV-1a): the kernel's part of a random schedule's seed.
std::uint64_t hash_name(const char* s)
{
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; ++s) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

// Runs one block to completion (or to its first fault / a deadlock).
void run_block(Run& r)
{
    r.block_live = r.n;
    r.block_arrived = 0;
    r.gen = 0;
    for (int w = 0; w < r.nwarps; ++w) {
        r.warp_live[w] = std::min(32, r.n - w * 32);
        r.warp_arrived[w] = 0;
    }
    for (int t = 0; t < r.n; ++t) start_fiber(r, t);
    shared_begin_block(r);
    if (g_modes.racecheck) race_begin_block(r);
    const bool random = r.schedule.kind == EMU_SCHEDULE_RANDOM;
    if (random) {
        std::uint64_t seed = r.schedule.seed ^ hash_name(r.kernel);
        seed ^= next_random(seed) + r.block_linear;
        r.rng = next_random(seed);
    }
    int done = 0;
    for (;;) {
        if (random)  // a fresh permutation each round (Fisher-Yates)
            for (int i = r.n - 1; i > 0; --i)
                std::swap(r.order[i], r.order[next_random(r.rng) % (std::uint64_t)(i + 1)]);
        bool ran = false;
        for (const int t : r.order) {
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

// The blocks of a grid, shared out among the workers: each takes the next block index (through
// `order` when the schedule permutes the blocks).
struct Grid {
    const char* kernel;
    dim3 grid, block;
    int n;
    void (*body)(void*);
    void* ctx;
    long blocks;
    EmuSchedule schedule{};
    std::vector<std::uint32_t> order;  // empty: ascending
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
    r.schedule = g.schedule;
    r.order.resize((size_t)r.n);
    for (int t = 0; t < r.n; ++t)
        r.order[t] = g.schedule.kind == EMU_SCHEDULE_DESCENDING ? r.n - 1 - t : t;
    EmuFault mine{};
    r.fault = &mine;
    Run* outer = g_run;
    g_run = &r;
    shared_attach(r);
    const uint3 saved_t = threadIdx, saved_b = blockIdx;
    const dim3 saved_bd = blockDim, saved_gd = gridDim;
    gridDim = r.grid;
    blockDim = r.block;
    for (;;) {
        const long i = g.next.fetch_add(1);
        if (i >= g.blocks || g.stop.load(std::memory_order_relaxed)) break;
        const std::uint32_t b = g.order.empty() ? (std::uint32_t)i : g.order[(size_t)i];
        r.block_linear = b;
        blockIdx = block_index(r, b);
        run_block(r);
        if (r.faulted) {
            std::lock_guard<std::mutex> lock(g.fault_mutex);
            if (g.fault_block < 0 || (long)b < g.fault_block) {
                g.fault_block = b;
                g.fault = mine;
            }
            g.stop.store(true);
            break;
        }
    }
    threadIdx = saved_t, blockIdx = saved_b, blockDim = saved_bd, gridDim = saved_gd;
    shared_detach(r);
    g_run = outer;
    give_back_stacks(r.stacks);
}

// Helper threads that run blocks beside the launching thread. Blocks are independent (no
// kernel here shares data between blocks), so the result does not depend on their order;
// racecheck reports a kernel that did share.
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

void schedule_name(const EmuSchedule& s, char* out, size_t n)
{
    if (s.kind == EMU_SCHEDULE_RANDOM)
        std::snprintf(out, n, "random:%llu", (unsigned long long)s.seed);
    else
        std::snprintf(out, n, "%s", s.kind == EMU_SCHEDULE_DESCENDING ? "descending" : "ascending");
}

// Runs `g` once under `schedule`, in the launch's modes; returns its first fault (kind 0: none).
EmuFault run_once(Grid& g, const EmuSchedule& schedule, bool racecheck, bool log_writes)
{
    g.schedule = schedule;
    g.next = 0;
    g.stop = false;
    g.fault_block = -1;
    g.fault = EmuFault{};
    g.order.clear();
    if (schedule.kind != EMU_SCHEDULE_ASCENDING) {
        g.order.resize((size_t)g.blocks);
        for (long b = 0; b < g.blocks; ++b) g.order[(size_t)b] = (std::uint32_t)b;
        if (schedule.kind == EMU_SCHEDULE_DESCENDING)
            std::reverse(g.order.begin(), g.order.end());
        else {
            std::uint64_t s = schedule.seed ^ hash_name(g.kernel) ^ 0x6a09e667f3bcc908ull;
            for (long i = g.blocks - 1; i > 0; --i)
                std::swap(g.order[(size_t)i], g.order[next_random(s) % (std::uint64_t)(i + 1)]);
        }
    }
    g_modes.racecheck = racecheck;
    g_modes.log_writes = log_writes;
    g_modes.yields = schedule.kind == EMU_SCHEDULE_RANDOM;
    g_modes.any = g_modes.racecheck || g_modes.log_writes || g_modes.yields;
    if (racecheck) race_begin_launch();
    if (log_writes) write_log_start();
    // The checking modes run the blocks one at a time, on this thread, in the schedule's
    // order. Otherwise small grids are not worth waking the helpers for.
    Pool& pool = Pool::get();
    if (!racecheck && !log_writes && g.blocks >= 2 && (long)g.n * g.blocks >= 4096 &&
        pool.helpers() > 0)
        pool.run(g);
    else
        work(g);
    g_modes = Modes{};
    if (g.fault.kind == EMU_FAULT_RACE) race_report(g.fault);
    return g.fault;
}

// What one run of the schedule comparison wrote: each logged word's final value.
std::unordered_map<std::uint64_t, std::uint32_t> written_values()
{
    std::unordered_map<std::uint64_t, std::uint32_t> out;
    for (const LoggedWord& w : write_log()) out[w.address] = *(const std::uint32_t*)w.address;
    return out;
}

// The first word (lowest address) whose final value differs between two runs, where a word
// one run did not write keeps its value from before the launch. Returns false if none.
bool first_difference(const std::unordered_map<std::uint64_t, std::uint32_t>& a,
                      const std::unordered_map<std::uint64_t, std::uint32_t>& b,
                      const std::unordered_map<std::uint64_t, std::uint32_t>& before,
                      std::uint64_t* word, std::uint32_t* va, std::uint32_t* vb, long* count)
{
    auto value = [&](const std::unordered_map<std::uint64_t, std::uint32_t>& run,
                     std::uint64_t w) {
        auto it = run.find(w);
        return it != run.end() ? it->second : before.at(w);
    };
    std::vector<std::uint64_t> words;
    for (const auto& kv : a) words.push_back(kv.first);
    for (const auto& kv : b)
        if (!a.count(kv.first)) words.push_back(kv.first);
    std::sort(words.begin(), words.end());
    *count = 0;
    for (const std::uint64_t w : words) {
        const std::uint32_t x = value(a, w), y = value(b, w);
        if (x == y) continue;
        if (++*count == 1) *word = w, *va = x, *vb = y;
    }
    return *count > 0;
}

float bits_float(std::uint32_t u)
{
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

}  // namespace

int run_grid(const char* kernel, EmuDim3 grid, EmuDim3 block, void (*body)(void*), void* ctx,
             const EmuOptions& options, EmuFault* fault)
{
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    *fault = EmuFault{};
    const long n = (long)block.x * block.y * block.z;
    if (n <= 0 || n > MAX_THREADS || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        options.nschedules < 1 || options.nschedules > EMU_MAX_SCHEDULES) {
        fault->kind = EMU_FAULT_TRAP;
        std::snprintf(fault->message, sizeof fault->message,
                      "invalid launch of %s: grid (%u,%u,%u), block (%u,%u,%u), %u schedule(s)",
                      kernel, grid.x, grid.y, grid.z, block.x, block.y, block.z,
                      options.nschedules);
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
    const bool racecheck = options.racecheck != 0;
    const unsigned runs = options.nschedules;
    if (runs == 1) {
        *fault = run_once(g, options.schedules[0], racecheck, false);
        return fault->kind;
    }
    // The schedule comparison: every run from the same memory, the last one's results stay.
    std::unordered_map<std::uint64_t, std::uint32_t> before, first;
    for (unsigned i = 0; i < runs; ++i) {
        *fault = run_once(g, options.schedules[i], racecheck, true);
        if (fault->kind != EMU_OK) return fault->kind;
        for (const LoggedWord& w : write_log()) before.emplace(w.address, w.before);
        auto now = written_values();
        if (i == 0) {
            first = std::move(now);
        } else {
            std::uint64_t word = 0;
            std::uint32_t a = 0, b = 0;
            long count = 0;
            if (first_difference(first, now, before, &word, &a, &b, &count)) {
                char s0[64], s1[64], alloc[160] = "";
                schedule_name(options.schedules[0], s0, sizeof s0);
                schedule_name(options.schedules[i], s1, sizeof s1);
                std::uint64_t id = 0, start = 0, size = 0;
                if (allocation_of(word, &id, &start, &size))
                    std::snprintf(alloc, sizeof alloc, " (allocation #%llu of %llu bytes, byte %llu)",
                                  (unsigned long long)id, (unsigned long long)size,
                                  (unsigned long long)(word - start));
                fault->kind = EMU_FAULT_RACE;
                fault->hazard = EMU_HAZARD_SCHEDULE_DEPENDENT;
                fault->address = word;
                fault->size = 4;
                fault->is_write = 1;
                std::snprintf(fault->message, sizeof fault->message,
                              "Results of %s depend on the schedule (a race): word 0x%llx%s is "
                              "0x%08x (%g) under %s but 0x%08x (%g) under %s; %ld word(s) "
                              "differ",
                              kernel, (unsigned long long)word, alloc, a, (double)bits_float(a),
                              s0, b, (double)bits_float(b), s1, count);
                return fault->kind;
            }
        }
        if (i + 1 < runs) write_log_undo();
    }
    return EMU_OK;
}

}  // namespace emu
