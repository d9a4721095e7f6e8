//! The model crate's integration tests, built as one test binary (fewer executables to build
//! and to carry to the GPU machine); each file is one concern.

mod device;
mod family;
mod learning;
mod precision;
