//! The facade of the workspace: one crate that re-exports the engine's crates, for the
//! cross-crate tests in `tests/` and the benchmarks in `benches/`.
//!
//! - [`tensor`]: the f32 tensor and every op, forward and hand-written backward (CPU oracle)
//! - [`model`]: layers, residual blocks, the ResNet family, SGD, one training step
//! - [`data`]: CIFAR-10/100 binaries, augmentation, batching

pub use {data, model, tensor};

/// Version and the git commit this build came from (stamped by `build.rs`).
pub const BUILD_INFO: &str = env!("RESNET_BUILD_INFO");
