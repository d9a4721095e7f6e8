//! Library side of the `train` command line: everything that touches files on disk
//! (checkpoints, metrics, plots) lives here so it can be unit-tested without running training.

pub mod atomic;
pub mod batches;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod device;
pub mod epochs;
pub mod evaluate;
pub mod images;
pub mod memory;
pub mod metrics;
pub mod oom;
pub mod plot;
pub mod predict;
pub mod report;
pub mod reproduce;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod state;
pub mod warmup;
