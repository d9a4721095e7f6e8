// runtime.h — what the emulator's runtime files share: runtime.cpp (fibers, the scheduler, the
// blocks of a launch, the checking modes), memory.cpp (device and shared memory, the access
// check behind every instrumented load and store) and racecheck.cpp (shadow state, hazard
// reports). The kernels never include it; none of these files is instrumented.
#pragma once

#include "cuda_emu.h"
#include "emu_abi.h"

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {

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

// A `__shared__` variable placed in the block's shared memory.
struct SharedVar {
    const SharedDecl* decl;
    unsigned offset;  // in the block's shared window
};

// One access as racecheck remembers it.
struct Access {
    static constexpr std::uint16_t NONE = 0xffff;
    std::uint32_t block = 0;   // linear block index
    std::uint32_t gen = 0;     // the block's barrier interval (__syncthreads passed so far)
    std::uint16_t tid = NONE;  // linear thread index in the block
    std::int32_t pc = 0;       // where, relative to pc_base() (0: unknown)
};

// Shadow state of one 4-byte word for racecheck. Blocks run one at a time in that mode, so
// "earlier" is well defined and a few accesses say whether any earlier one conflicts:
struct WordShadow {
    Access write;        // the last write
    Access read;         // the last read
    Access read_block;   // the last read by a block other than `read`'s
    Access read_interval;  // a read in `read`'s block and interval by another thread
    bool written = false;  // shared memory: written since the block started
};

// Everything about the launch running on this OS thread (one per worker).
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

    // The schedule: the thread order of one round (rebuilt each round when random), and the
    // random state (reseeded per block from the seed, the kernel and the block).
    EmuSchedule schedule{};
    std::vector<int> order;
    std::uint64_t rng = 0;

    // The running block.
    std::uint32_t block_linear = 0;
    std::uint32_t gen = 0;  // its barrier interval: bumped when a __syncthreads releases

    // Shared memory: a window of SHARED_WINDOW bytes in the runtime's shared region.
    int shared_slot = -1;
    unsigned char* shared_base = nullptr;
    std::vector<SharedVar> shared_vars;  // the layout, made as declarations are first reached
    unsigned shared_end = 0;             // end of the layout (variables and gaps)
    unsigned shared_bytes = 0;           // bytes declared (CUDA's 48 KiB limit is on these)
    std::vector<WordShadow> shared_shadow;  // racecheck: one per word of the window
};

// The modes of the launch now running (one launch runs at a time; set by run_grid before its
// blocks start, read by every worker).
struct Modes {
    bool any = false;         // one of the below: the access check takes its slow path
    bool racecheck = false;   // shadow state, hazards are faults
    bool log_writes = false;  // schedule comparison: remember each written word's old value
    bool yields = false;      // random schedule: switch threads at random accesses
};
extern Modes g_modes;

extern thread_local Run* g_run;
// One launch at a time, process-wide; the device memory map changes only under it.
extern std::mutex g_launch_mutex;

// runtime.cpp
// Records the launch's first fault and abandons the calling fiber. Never returns.
[[noreturn]] void fault_here(Run& r, int kind, std::uint64_t address, unsigned size, bool write,
                             const char* text);
// "kernel by thread (x,y,z) in block (x,y,z)" for the running thread.
void position(const Run& r, char* out, size_t n);
// The random schedule's switch at a memory access: now and then, back to the scheduler.
void maybe_yield(Run& r);
std::uint64_t next_random(std::uint64_t& state);
// threadIdx / blockIdx of linear indices.
uint3 thread_index(const Run& r, unsigned tid);
uint3 block_index(const Run& r, std::uint32_t block);

// memory.cpp
constexpr unsigned SHARED_WINDOW = 64 * 1024;  // a block's shared memory: variables and gaps
constexpr unsigned SHARED_LIMIT = 48 * 1024;   // CUDA's limit on static shared memory
// Gives the worker `r` a shared window for this launch (and takes it back).
void shared_attach(Run& r);
void shared_detach(Run& r);
// A new block: the layout stays, the contents are poisoned (0xff bytes).
void shared_begin_block(Run& r);
// The variable that contains window offset `off`, if any.
const SharedVar* shared_var_at(const Run& r, unsigned off);
// The write log of the schedule comparison: each word's value before the launch wrote it.
struct LoggedWord {
    std::uint64_t address;
    std::uint32_t before;
};
void write_log_start();
const std::vector<LoggedWord>& write_log();
// Puts every logged word back to its value before the launch.
void write_log_undo();
// The live allocation containing `address`: its id and start, else false.
bool allocation_of(std::uint64_t address, std::uint64_t* id, std::uint64_t* start,
                   std::uint64_t* size);

// racecheck.cpp
void race_begin_launch();
void race_begin_block(Run& r);
void race_shared(Run& r, unsigned off, unsigned size, bool write, std::uintptr_t pc);
void race_global(Run& r, std::uint64_t address, unsigned size, bool write, std::uintptr_t pc);
// The final report of an EMU_FAULT_RACE found by racecheck (source lines looked up now, after
// the launch, on the launching thread).
void race_report(EmuFault& fault);

}  // namespace emu
