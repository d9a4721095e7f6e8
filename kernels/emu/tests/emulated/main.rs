//! Every CUDA kernel, executed on the CPU by the emulator (`cuda_emu.h`) with the grid/block the
//! real launcher in `kernels/src/launch` computes, against its Rust CPU twin.
//!
//! Shapes are small and awkward on purpose (batch 1 and 3, odd channel counts, stride 2, 1x1 and
//! 4x4 maps, more than one 64-wide conv tile, more rows than threads): the emulator runs one OS
//! thread per CUDA thread, so big shapes would only cost time without covering more index paths.
//!
//! Error measure: `‖emu − cpu‖₂ / ‖cpu‖₂` over the whole output. Where the kernel and the twin
//! do the same f32 operations in the same order it must be exactly 0 (bitwise-equal outputs);
//! where they sum in a different order or precision (GEMM tiling, f64 statistics on the CPU) the
//! bound is 1e-5: f32 rounding over the reduction lengths used here (≤ 603 terms) gives ~1e-7 ..
//! 1e-6, so 1e-5 leaves margin while an index bug (a wrong, missing or doubled term) gives
//! errors of order 1e-2 .. 1.
//!
//! `beta = 0` outputs are pre-filled with NaN: a kernel that reads them leaks NaN into the result
//! and fails. `beta = 1` outputs start from random values and must equal `old + twin`.
//!
//! Every buffer is a `DevVec` in the emulator's device arena, with unmapped gaps around it: a
//! kernel that reads or writes out of bounds at one of these shapes stops with a report.
//!
//! Layout: `common` (seeded RNG, random/NaN device buffers, `dev`, `cfg_1d`, the error measure
//! and the `assert_*` helpers, `TOL`), then one module per group of kernels: `layers`
//! (elementwise.cu, shortcut.cu, pool_fc.cu, loss.cu), `conv` (conv.cu, conv_bf16.cu, FastDiv),
//! `batchnorm` (batchnorm.cu), `training` (sgd.cu, augment.cu, and the peak.cu ceiling probes);
//! and the emulator's own checks on planted faults (selftest.cu): `emulator` (bounds,
//! alignment, deadlocks), `racecheck`, `schedules`.
//!
//! CI also runs this whole suite under `CUDA_EMU_SCHEDULE=ascending,descending,random:1` (each
//! launch under the three schedules, outputs compared bit for bit) and under
//! `CUDA_EMU_RACECHECK=1` (every kernel at these shapes must be race-free).

mod common;

mod batchnorm;
mod conv;
mod emulator;
mod layers;
mod nan;
mod racecheck;
mod schedules;
mod training;
