//! The data crate's integration tests, built as one test binary; each file is one concern.

mod files;
mod pipeline;
