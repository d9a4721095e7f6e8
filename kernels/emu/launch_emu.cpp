// launch_emu.cpp — every kernel of kernels/cuda/*.cu, compiled unmodified for the CPU emulator
// (cuda_emu.h), in one table: name -> a call that unpacks a CUDA-style parameter buffer.
//
// The table is the only list of kernels the emulator has, and it is generated: build.rs finds
// every `extern "C" __global__` in the sources and writes one EMU_KERNEL(name) line for each
// (kernel_table.inc); the parameter layout comes from the kernel's own C++ type below. Both
// users go through it: the parity tests (kernels-emu's generated typed wrappers) and the
// stand-in CUDA driver (cuLaunchKernel's parameter buffer). This file is compiled with
// -fsanitize=thread instrumentation (no sanitizer runtime), so every load and store of a kernel
// goes past memory.cpp's check.

#include "cuda_emu.h"
#include "emu_abi.h"

#include <cstdio>
#include <type_traits>
#include <utility>

#include "kernel_sources.inc"  // #include "cuda/<file>.cu", build.rs's copies, one per source

namespace {

template <class T>
T param_at(const unsigned char* p)
{
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// Bytes of what a pointer parameter points to (its required alignment), 0 for a scalar.
template <class T>
constexpr unsigned pointee_size()
{
    if constexpr (std::is_pointer<T>::value)
        return (unsigned)sizeof(typename std::remove_pointer<T>::type);
    else
        return 0;
}

template <class Fn, Fn F>
struct Entry;

// A kernel `void f(A...)`: its parameter buffer layout and its invoker.
template <class... A, void (*F)(A...)>
struct Entry<void (*)(A...), F> {
    static_assert(sizeof...(A) <= EMU_MAX_PARAMS, "raise EMU_MAX_PARAMS");

    template <std::size_t... I>
    static void call(const unsigned char* buf, const unsigned* off, std::index_sequence<I...>)
    {
        F(param_at<A>(buf + off[I])...);
    }
    static void invoke(const unsigned char* buf, const unsigned* off)
    {
        call(buf, off, std::index_sequence_for<A...>{});
    }
    static EmuKernel make(const char* name)
    {
        EmuKernel k{};
        k.name = name;
        k.nparams = sizeof...(A);
        const unsigned sizes[] = {(unsigned)sizeof(A)..., 0};
        const unsigned aligns[] = {(unsigned)alignof(A)..., 1};
        const unsigned pointers[] = {(unsigned)std::is_pointer<A>::value..., 0};
        const unsigned pointees[] = {pointee_size<A>()..., 0};
        unsigned off = 0;
        for (unsigned i = 0; i < k.nparams; ++i) {
            off = (off + aligns[i] - 1) / aligns[i] * aligns[i];
            k.offsets[i] = off;
            k.sizes[i] = sizes[i];
            k.is_pointer[i] = pointers[i];
            k.pointee[i] = pointees[i];
            off += sizes[i];
        }
        k.param_bytes = off;
        k.invoke = &invoke;
        return k;
    }
};

#define EMU_KERNEL(f) Entry<decltype(&f), &f>::make(#f),
const EmuKernel g_kernels[] = {
#include "kernel_table.inc"
};
#undef EMU_KERNEL
constexpr int g_count = (int)(sizeof g_kernels / sizeof g_kernels[0]);

struct Call {
    const EmuKernel* kernel;
    const unsigned char* params;
};

void invoke_call(void* p)
{
    const Call* c = static_cast<const Call*>(p);
    c->kernel->invoke(c->params, c->kernel->offsets);
}

}  // namespace

extern "C" {

int emu_kernel_count(void) { return g_count; }

const EmuKernel* emu_kernel_at(int index)
{
    return index >= 0 && index < g_count ? &g_kernels[index] : nullptr;
}

int emu_launch_with(int index, EmuDim3 grid, EmuDim3 block, const unsigned char* params,
                    const EmuOptions* options, EmuFault* fault)
{
    const EmuKernel* k = emu_kernel_at(index);
    if (!k) {
        *fault = EmuFault{};
        fault->kind = EMU_FAULT_TRAP;
        std::snprintf(fault->message, sizeof fault->message, "no kernel #%d", index);
        return fault->kind;
    }
    Call call{k, params};
    return emu::run_grid(k->name, grid, block, &invoke_call, &call, *options, fault);
}

int emu_launch(int index, EmuDim3 grid, EmuDim3 block, const unsigned char* params,
               EmuFault* fault)
{
    EmuOptions plain{};
    plain.nschedules = 1;
    plain.schedules[0].kind = EMU_SCHEDULE_ASCENDING;
    return emu_launch_with(index, grid, block, params, &plain, fault);
}

// conv_ops.cuh's FastDiv, a device helper rather than a kernel: n / fast_div(d).
int emu_fast_div(int n, int d) { return n / fast_div(d); }

}  // extern "C"
