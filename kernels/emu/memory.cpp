// memory.cpp — device and shared memory as the kernels see them, and the check behind every
// load and store of a kernel (launch_emu.cpp is compiled with -fsanitize=thread
// instrumentation, whose __tsan_{read,write}N callbacks are defined at the end of this file).
//
//  * Device memory: inside the registered arena an access must lie in a live allocation and be
//    aligned to its width (1, 2, 4, 8 or 16 bytes, as the GPU requires); anything else stops
//    the launch with a compute-sanitizer-style report. Outside the arena is host memory (fiber
//    stacks, the emulator's state): unchecked.
//  * Shared memory: the runtime owns it. Each worker (OS thread running blocks) has a window of
//    SHARED_WINDOW bytes in one region reserved at start-up; build.rs's copies of the sources
//    turn every `__shared__` declaration into emu::shared_var(), which lays the variables out
//    in the window on first use, with gaps between them, and the window is filled with 0xff
//    bytes (NaN floats) at each block's start. So every shared access is checked against its
//    variable, a read of never-written shared memory shows, and racecheck sees exact words.
//  * In the checking modes the same check feeds racecheck (racecheck.cpp), logs the old value
//    of each written device word (the schedule comparison puts them back between runs), and
//    under the random schedule switches threads at random accesses.
#include "runtime.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

namespace emu {
namespace {

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


// ---- shared memory ------------------------------------------------------------------------------
constexpr unsigned SHARED_GAP = 64;  // unmapped bytes before each variable
constexpr int SHARED_WINDOWS = 32;   // workers at once (the pool has at most 16)
unsigned char* g_shared = nullptr;
std::uint64_t g_shared_lo = 0, g_shared_span = 0;
// The worker using each window (read by the access check: no thread-local lookup).
Run* g_window_run[SHARED_WINDOWS];
std::mutex g_window_mutex;

[[noreturn]] void memory_fault(std::uint64_t a, unsigned size, bool write, bool misaligned)
{
    Run* r = g_run;
    char where[256], what[320], text[1024];
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

[[noreturn]] void shared_fault(Run& r, unsigned off, unsigned size, bool write, bool misaligned)
{
    char where[256], what[384], text[1024];
    position(r, where, sizeof where);
    // The nearest variable: the one the access ran out of (or before).
    const SharedVar* near = nullptr;
    long dist = 0;
    for (const SharedVar& v : r.shared_vars) {
        const long end = (long)v.offset + v.decl->bytes;
        const long d = (long)off >= end ? (long)off - end : (long)v.offset - (long)off;
        if (!near || std::labs(d) < std::labs(dist)) near = &v, dist = d;
    }
    if (misaligned || !near) {
        std::snprintf(what, sizeof what, "shared window offset %u", off);
    } else {
        const SharedDecl& d = *near->decl;
        const char* file = std::strrchr(d.file, '/') ? std::strrchr(d.file, '/') + 1 : d.file;
        const long end = (long)near->offset + d.bytes;
        if ((long)off >= near->offset && (long)off < end)
            std::snprintf(what, sizeof what,
                          "Offset %u is inside `%s` (%u bytes, %s:%d), but the access runs %ld "
                          "bytes past its end",
                          off - near->offset, d.name, d.bytes, file, d.line,
                          (long)off + size - end);
        else if ((long)off >= end)
            std::snprintf(what, sizeof what, "%ld bytes after the end of `%s` (%u bytes, %s:%d)",
                          (long)off - end, d.name, d.bytes, file, d.line);
        else
            std::snprintf(what, sizeof what, "%ld bytes before `%s` (%u bytes, %s:%d)",
                          (long)near->offset - (long)off, d.name, d.bytes, file, d.line);
    }
    if (misaligned)
        std::snprintf(text, sizeof text,
                      "Invalid __shared__ %s of size %u bytes (misaligned: %s)\n    at %s",
                      write ? "write" : "read", size, what, where);
    else
        std::snprintf(text, sizeof text, "Invalid __shared__ %s of size %u bytes\n    at %s\n    %s",
                      write ? "write" : "read", size, where, what);
    fault_here(r, misaligned ? EMU_FAULT_MISALIGNED : EMU_FAULT_ADDRESS,
               (std::uint64_t)(uintptr_t)(r.shared_base + off), size, write, text);
}

// ---- the write log (schedule comparison) ---------------------------------------------------------
std::unordered_map<std::uint64_t, std::uint32_t> g_logged;  // word -> value before the launch
std::vector<LoggedWord> g_log;                               // in first-write order

void log_write(std::uint64_t a, size_t size)
{
    for (std::uint64_t w = a & ~(std::uint64_t)3; w < a + size; w += 4) {
        std::uint32_t v;
        std::memcpy(&v, (const void*)(uintptr_t)w, 4);
        if (g_logged.emplace(w, v).second) g_log.push_back({w, v});
    }
}

// A write outside the device arena and shared memory, under the schedule comparison: fine on
// the thread's own stack, otherwise it could not be put back between runs.
void host_write(std::uint64_t a, size_t size)
{
    Run* r = g_run;
    if (!r) return;
    const Stack& s = r->stacks[(size_t)r->cur];
    if (a >= (std::uint64_t)(uintptr_t)s.base && a + size <= (std::uint64_t)(uintptr_t)s.top())
        return;
    char where[256], text[1024];
    position(*r, where, sizeof where);
    std::snprintf(text, sizeof text,
                  "%zu-byte write to host memory at 0x%llx, outside the device arena: the "
                  "schedule comparison cannot put it back between runs (allocate every buffer a "
                  "kernel writes in the arena)\n    at %s",
                  size, (unsigned long long)a, where);
    fault_here(*r, EMU_FAULT_TRAP, a, (unsigned)size, true, text);
}

// ---- the access check -----------------------------------------------------------------------------
// The slow part of a shared access: which variable, and the checking modes.
void check_shared(std::uint64_t off64, size_t size, bool write, unsigned align, uintptr_t pc)
{
    Run* r = g_window_run[off64 / SHARED_WINDOW];
    if (!r) return;  // not a window in use: nothing a kernel could have been given
    const unsigned off = (unsigned)(off64 % SHARED_WINDOW);
    if (align > 1 && (off & (align - 1)) != 0) shared_fault(*r, off, (unsigned)size, write, true);
    const SharedVar* v = shared_var_at(*r, off);
    if (!v || off + size > v->offset + v->decl->bytes)
        shared_fault(*r, off, (unsigned)size, write, false);
    if (g_modes.racecheck) race_shared(*r, off, (unsigned)size, write, pc);
    if (g_modes.yields) maybe_yield(*r);
}

// `align`: the alignment the access must have (its width for a scalar or vector access).
inline void check(const void* p, size_t size, bool write, unsigned align, uintptr_t pc)
{
    const std::uint64_t a = (std::uint64_t)(uintptr_t)p;
    if (a - g_lo >= g_span) {
        const std::uint64_t off = a - g_shared_lo;
        if (off < g_shared_span)
            check_shared(off, size, write, align, pc);
        else if (write && g_modes.log_writes)
            host_write(a, size);
        return;
    }
    if (align > 1 && (a & (align - 1)) != 0) memory_fault(a, (unsigned)size, write, true);
    bool known = false;
    for (const auto& h : g_hit) {
        const unsigned i = h.load(std::memory_order_relaxed);
        if (i != NO_HIT && a >= g_mapped[i].start && a + size <= g_mapped[i].end) {
            known = true;
            break;
        }
    }
    if (!known) {
        const Range* r = find_mapped(a);
        if (!r || a + size > r->end) memory_fault(a, (unsigned)size, write, false);
        g_hit[g_hit_next.fetch_add(1, std::memory_order_relaxed) % 4].store(
            (unsigned)(r - g_mapped.data()), std::memory_order_relaxed);
    }
    if (g_modes.any) {
        Run& r = *g_run;
        if (g_modes.racecheck) race_global(r, a, (unsigned)size, write, pc);
        if (write && g_modes.log_writes) log_write(a, size);
        if (g_modes.yields) maybe_yield(r);
    }
}

// The alignment an access of `size` bytes whose type is less aligned than its size (an
// aggregate copy) must still have: the largest power of two dividing the size, up to 4 (its
// scalar members). 16-byte aggregates of 8-byte alignment come as 16-byte accesses (x86),
// which the check requires to be 16-aligned, as a float4 must be.
constexpr unsigned range_align(size_t size)
{
    return size % 4 == 0 ? 4 : size % 2 == 0 ? 2 : 1;
}

}  // namespace

// ---- shared memory: the runtime's side ---------------------------------------------------------------
void shared_attach(Run& r)
{
    std::lock_guard<std::mutex> lock(g_window_mutex);
    if (!g_shared) {
        const size_t bytes = (size_t)SHARED_WINDOWS * SHARED_WINDOW;
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "cuda_emu: cannot map shared memory\n");
            std::abort();
        }
        g_shared = (unsigned char*)p;
        g_shared_lo = (std::uint64_t)(uintptr_t)p;
        g_shared_span = bytes;
    }
    for (int i = 0; i < SHARED_WINDOWS; ++i)
        if (!g_window_run[i]) {
            g_window_run[i] = &r;
            r.shared_slot = i;
            r.shared_base = g_shared + (size_t)i * SHARED_WINDOW;
            r.shared_vars.clear();
            r.shared_end = 0;
            r.shared_bytes = 0;
            return;
        }
    std::fprintf(stderr, "cuda_emu: more than %d workers at once\n", SHARED_WINDOWS);
    std::abort();
}

void shared_detach(Run& r)
{
    std::lock_guard<std::mutex> lock(g_window_mutex);
    g_window_run[r.shared_slot] = nullptr;
    r.shared_slot = -1;
    r.shared_base = nullptr;
}

void shared_begin_block(Run& r)
{
    if (r.shared_end) std::memset(r.shared_base, 0xff, r.shared_end);
}

const SharedVar* shared_var_at(const Run& r, unsigned off)
{
    for (const SharedVar& v : r.shared_vars)
        if (off >= v.offset && off < v.offset + v.decl->bytes) return &v;
    return nullptr;
}

void* shared_var(const SharedDecl* d)
{
    Run& r = *g_run;
    for (const SharedVar& v : r.shared_vars)
        if (v.decl == d) return r.shared_base + v.offset;
    const unsigned align = std::max(16u, d->align);
    const unsigned off = (r.shared_end + SHARED_GAP + align - 1) / align * align;
    if (r.shared_bytes + d->bytes > SHARED_LIMIT || off + d->bytes > SHARED_WINDOW)
        trap("__shared__ `%s` (%s:%d) takes the block's static shared memory to %u bytes; CUDA "
             "allows %u",
             d->name, d->file, d->line, r.shared_bytes + d->bytes, SHARED_LIMIT);
    r.shared_vars.push_back({d, off});
    r.shared_end = off + d->bytes;
    r.shared_bytes += d->bytes;
    std::memset(r.shared_base + off, 0xff, d->bytes);
    return r.shared_base + off;
}

// ---- the write log --------------------------------------------------------------------------------
void write_log_start()
{
    g_logged.clear();
    g_log.clear();
}

const std::vector<LoggedWord>& write_log() { return g_log; }

void write_log_undo()
{
    for (const LoggedWord& w : g_log) std::memcpy((void*)(uintptr_t)w.address, &w.before, 4);
}

bool allocation_of(std::uint64_t a, std::uint64_t* id, std::uint64_t* start, std::uint64_t* size)
{
    const Range* r = find_mapped(a);
    if (!r) return false;
    *id = r->id, *start = r->start, *size = r->end - r->start;
    return true;
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

extern "C" int emu_mem_find(std::uint64_t addr, std::uint64_t* start, std::uint64_t* size,
                            std::uint64_t* id)
{
    std::lock_guard<std::mutex> lock(emu::g_launch_mutex);
    using emu::Range;
    // The last range starting at or before addr; a pointer one past its end counts too.
    auto it = std::upper_bound(emu::g_mapped.begin(), emu::g_mapped.end(), addr,
                               [](std::uint64_t v, const Range& x) { return v < x.start; });
    if (it == emu::g_mapped.begin()) return 0;
    --it;
    if (addr > it->end) return 0;
    *start = it->start, *size = it->end - it->start, *id = it->id;
    return 1;
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

// ---- the -fsanitize=thread callbacks ---------------------------------------------------------------
// A fixed-width access (its type as aligned as it is wide: scalars, CUDA vector types), one whose
// type is less aligned than its size, and an aggregate copy. The caller's address is where the
// access is, for racecheck's source lines.
#define EMU_PC ((uintptr_t)__builtin_return_address(0))
#define EMU_TSAN_FN(n)                                                                         \
    extern "C" void __tsan_read##n(void* p) { emu::check(p, n, false, n, EMU_PC); }            \
    extern "C" void __tsan_write##n(void* p) { emu::check(p, n, true, n, EMU_PC); }            \
    extern "C" void __tsan_unaligned_read##n(void* p) { emu::check(p, n, false, 1, EMU_PC); }  \
    extern "C" void __tsan_unaligned_write##n(void* p) { emu::check(p, n, true, 1, EMU_PC); }
EMU_TSAN_FN(1)
EMU_TSAN_FN(2)
EMU_TSAN_FN(4)
EMU_TSAN_FN(8)
EMU_TSAN_FN(16)
extern "C" void __tsan_read_range(void* p, size_t n)
{
    emu::check(p, n, false, emu::range_align(n), EMU_PC);
}
extern "C" void __tsan_write_range(void* p, size_t n)
{
    emu::check(p, n, true, emu::range_align(n), EMU_PC);
}
// The rest of the instrumentation's interface: nothing to do (function entry/exit is not
// instrumented; the kernels have no atomics and no virtual calls).
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}
