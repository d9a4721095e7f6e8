// emu_abi.h — what the emulator exports to Rust (kernels-emu's src/lib.rs mirrors every type
// here with #[repr(C)]), and the runtime entry the kernel table uses.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// A grid or block size (dim3 has constructors, so it is not used across the FFI).
struct EmuDim3 {
    unsigned x, y, z;
};

// Up to this many parameters per kernel (the widest kernels have 16).
#define EMU_MAX_PARAMS 24

// One kernel of kernels/cuda/*.cu as the emulator sees it: its C parameter list laid out the
// way CUDA lays out a kernel's parameter buffer (each parameter at its natural alignment, in
// order), and the function that unpacks such a buffer and calls the kernel.
struct EmuKernel {
    const char* name;
    unsigned nparams;
    unsigned param_bytes;
    unsigned sizes[EMU_MAX_PARAMS];
    unsigned offsets[EMU_MAX_PARAMS];
    unsigned is_pointer[EMU_MAX_PARAMS];  // a device address (else a scalar)
    unsigned pointee[EMU_MAX_PARAMS];     // bytes of what a pointer points to (0: a scalar)
    void (*invoke)(const unsigned char* params, const unsigned* offsets);
};

// Why a kernel stopped early.
enum EmuFaultKind {
    EMU_OK = 0,
    // A load or store inside the device arena that no live allocation covers (out of bounds,
    // freed, never allocated): CUDA_ERROR_ILLEGAL_ADDRESS on a GPU.
    EMU_FAULT_ADDRESS = 1,
    // A load or store not aligned to its size: CUDA_ERROR_MISALIGNED_ADDRESS.
    EMU_FAULT_MISALIGNED = 2,
    // __trap(), a barrier that not every live thread reaches, a warp collective with missing
    // lanes: CUDA_ERROR_ILLEGAL_INSTRUCTION / a hang on a GPU.
    EMU_FAULT_TRAP = 3,
    // A hazard (EmuFault::hazard): what compute-sanitizer's racecheck reports, or results that
    // differ between schedules. No error on a GPU, just wrong results some of the time.
    EMU_FAULT_RACE = 4,
};

// What kind of hazard an EMU_FAULT_RACE is.
enum EmuHazard {
    EMU_HAZARD_NONE = 0,
    // Two threads of a block touch one word within one barrier interval (no __syncthreads
    // between them), or two blocks of a launch touch one global word, at least one writing:
    EMU_HAZARD_READ_AFTER_WRITE = 1,
    EMU_HAZARD_WRITE_AFTER_READ = 2,
    EMU_HAZARD_WRITE_AFTER_WRITE = 3,
    // A __shared__ word read before any thread of the block wrote it.
    EMU_HAZARD_UNINITIALISED_SHARED_READ = 4,
    // The launch wrote different values under two schedules (EmuOptions::schedules).
    EMU_HAZARD_SCHEDULE_DEPENDENT = 5,
};

// The order in which the scheduler runs a block's ready threads (and, in the checking modes,
// the blocks of a grid). RANDOM also switches threads at random shared and device memory
// accesses, not only at barriers; `seed` makes it reproducible.
enum EmuScheduleKind {
    EMU_SCHEDULE_ASCENDING = 0,
    EMU_SCHEDULE_DESCENDING = 1,
    EMU_SCHEDULE_RANDOM = 2,
};
struct EmuSchedule {
    int kind;  // EmuScheduleKind
    std::uint64_t seed;
};

#define EMU_MAX_SCHEDULES 8

// How to run one launch. More than one schedule: the launch runs under each, from the same
// memory (what it writes is logged and put back between runs), and any word whose final value
// differs is an EMU_HAZARD_SCHEDULE_DEPENDENT fault; the last run's results stay. `racecheck`:
// shadow state for every shared and device word, hazards reported as EMU_FAULT_RACE. Both run
// the grid's blocks one at a time on the calling thread.
struct EmuOptions {
    unsigned nschedules;  // 1 .. EMU_MAX_SCHEDULES
    EmuSchedule schedules[EMU_MAX_SCHEDULES];
    int racecheck;
};

// The first fault of a launch: where, and a report in compute-sanitizer's words.
struct EmuFault {
    int kind;  // EmuFaultKind
    unsigned block[3];
    unsigned thread[3];
    std::uint64_t address;
    unsigned size;
    int is_write;
    // EMU_FAULT_RACE: the hazard, whether on a __shared__ word (else device memory), and the
    // other access's thread (the faulting one is block/thread above).
    int hazard;  // EmuHazard
    int shared;
    unsigned other_block[3];
    unsigned other_thread[3];
    char message[1024];
};

// The kernel table (launch_emu.cpp): every extern "C" __global__ of kernels/cuda/*.cu.
int emu_kernel_count(void);
const EmuKernel* emu_kernel_at(int index);

// Runs kernel `index` over `grid` x `block` with the given parameter buffer (laid out as
// EmuKernel::offsets say). Returns EMU_OK or the fault kind, with `fault` filled in.
int emu_launch(int index, EmuDim3 grid, EmuDim3 block, const unsigned char* params,
               EmuFault* fault);
// The same with explicit options (emu_launch: ascending, no racecheck).
int emu_launch_with(int index, EmuDim3 grid, EmuDim3 block, const unsigned char* params,
                    const EmuOptions* options, EmuFault* fault);

// Device memory, for the checks of EmuFaultKind: accesses inside [lo, lo + span) must fall in
// a mapped range; everything outside it is host memory (fiber stacks, the emulator's own
// state) and unchecked, except the shared memory the runtime hands out (always checked).
// Each call waits for a running launch to finish.
void emu_mem_set_arena(std::uint64_t lo, std::uint64_t span);
void emu_mem_map(std::uint64_t start, std::uint64_t size, std::uint64_t id);
// Returns 0 if `start` is not mapped. The range is remembered as freed, for reports.
int emu_mem_unmap(std::uint64_t start);
// The live range that contains `addr` (or ends at it): 1 and its start, size and id, else 0.
int emu_mem_find(std::uint64_t addr, std::uint64_t* start, std::uint64_t* size, std::uint64_t* id);

}  // extern "C"

namespace emu {
// Runs `body(ctx)` once per CUDA thread of the grid (launch_emu.cpp's kernel invokers). Launches
// are serialised process-wide.
int run_grid(const char* kernel, EmuDim3 grid, EmuDim3 block, void (*body)(void*), void* ctx,
             const EmuOptions& options, EmuFault* fault);
}  // namespace emu
