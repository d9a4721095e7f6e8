//! The GPU against the CPU engine, built as one test binary. Every test is
//! `#[ignore = "needs a CUDA GPU"]` and FAILS (never skips) without one:
//! `cargo test -p resnet-cifar --test gpu -- --include-ignored` on the GPU machine.
//!
//! * `parity`: every op forward and backward, the loss, SGD, augmentation, whole steps.
//! * `fast_paths`: the speed work's paths — bf16 tensor-core convolutions, fused BN+ReLU, the
//!   one-launch SGD and zeroing, copy-on-write clones, the CUDA-graph step.

mod common;
mod fast_paths;
mod parity;
