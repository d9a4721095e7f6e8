// mma_bf16.cuh — bf16 rounding and the one tensor-core instruction the bf16 GEMMs use.
// Inlined into each .cu that includes it by kernels/build.rs.
//
// bf16 is the top half of an fp32: 8 exponent bits (fp32's range) and 8 significant bits (7
// stored), so rounding to it errs by at most 2^-8 ≈ 4e-3 relative. A product of two bf16
// values is exact in fp32, so an mma with fp32 accumulation differs from "round the operands
// to bf16, then run the fp32 GEMM" only in the order of its additions. That is how the CPU twin models it
// (`tensor::bf16::round`, then the fp32 conv) and why the parity tests can be tight.
#ifndef MMA_BF16_CUH
#define MMA_BF16_CUH

// fp32 -> bf16 bits, round to nearest, ties to even (what cvt.rn.bf16.f32 does). NaN stays a
// quiet NaN; values past the largest bf16 round to ±inf, as they should.
__device__ __forceinline__ unsigned bf16_bits(float f)
{
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;  // NaN: keep it quiet
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// Two values as one .bf16x2 register: `lo` (the lower k index) in bits 0-15, as mma expects.
// On the GPU one cvt instruction rounds and packs both (sm_80+; the bit arithmetic above costs
// ~12 instructions per pair, in the gather loops that bound the bf16 convs). Same rounding,
// round to nearest even; only a NaN's payload may differ (it stays a NaN).
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi)
{
#if !defined(CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned packed;
    // cvt.rn.bf16x2.f32 d, a, b puts a in the upper half, b in the lower.
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
#else
    return bf16_bits(lo) | (bf16_bits(hi) << 16);
#endif
}

// d += A * B for one warp: A 16x16 (row-major fragments a[4]), B 16x8 (column-major
// fragments b[2]), d 16x8 fp32. Fragment ownership (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), with g = lane / 4 and t = lane % 4:
//   a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]  a[2] = A[g][2t+8..]  a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//   d[0..1] = D[g][2t..2t+1] d[2..3] = D[g+8][2t..2t+1]
// All 32 lanes of the warp must execute it together (.sync.aligned). The CPU emulator
// (kernels/emu/cuda_emu.h) implements the instruction from the same table.
__device__ __forceinline__ void mma_bf16_16x8x16(float d[4], const unsigned a[4], const unsigned b[2])
{
#if defined(CUDA_EMU)
    emu::mma_bf16_16x8x16(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    // No bf16 mma before Ampere: the module still compiles for older cards (so the fp32
    // kernels load), but a bf16 conv launched there stops with an error instead of lying.
    __trap();
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

#endif  // MMA_BF16_CUH
