//! Library side of the `train` command line: everything that touches files on disk
//! (checkpoints, metrics, plots) lives here so it can be unit-tested without running training.

pub mod atomic;
pub mod checkpoint;
pub mod metrics;
pub mod plot;
