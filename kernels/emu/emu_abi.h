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
};

// The first fault of a launch: where, and a report in compute-sanitizer's words.
struct EmuFault {
    int kind;  // EmuFaultKind
    unsigned block[3];
    unsigned thread[3];
    std::uint64_t address;
    unsigned size;
    int is_write;
    char message[768];
};

// The kernel table (launch_emu.cpp): every extern "C" __global__ of kernels/cuda/*.cu.
int emu_kernel_count(void);
const EmuKernel* emu_kernel_at(int index);

// Runs kernel `index` over `grid` x `block` with the given parameter buffer (laid out as
// EmuKernel::offsets say). Returns EMU_OK or the fault kind, with `fault` filled in.
int emu_launch(int index, EmuDim3 grid, EmuDim3 block, const unsigned char* params,
               EmuFault* fault);

// Device memory, for the checks of EmuFaultKind: accesses inside [lo, lo + span) must fall in
// a mapped range; everything outside it is host memory (stacks, shared memory, the
// emulator's own state) and unchecked. Never called while a kernel runs.
void emu_mem_set_arena(std::uint64_t lo, std::uint64_t span);
void emu_mem_map(std::uint64_t start, std::uint64_t size, std::uint64_t id);
// Returns 0 if `start` is not mapped. The range is remembered as freed, for reports.
int emu_mem_unmap(std::uint64_t start);

}  // extern "C"

namespace emu {
// Runs `body(ctx)` once per CUDA thread of the grid (launch_emu.cpp's kernel invokers). Launches
// are serialised process-wide.
int run_grid(const char* kernel, EmuDim3 grid, EmuDim3 block, void (*body)(void*), void* ctx,
             EmuFault* fault);
}  // namespace emu
