//! The engine: what a training run is, with no command line in it (no clap type below here).
//! A run is a [`spec::RunSpec`] on a model configuration, resolved from a
//! [`request::RunRequest`] (fresh, or continuing a checkpoint) or built directly, and driven by
//! [`run::train`]; whichever command built it.
//!
//! - `spec`: the settings that define a run; `request`: what a command asks, resolved into one;
//! - `run`: a run from its spec to the epoch loop (data, memory, model, resume, the run's
//!   lock: `lock`); `epochs`: the loop itself; `interrupt`: SIGTERM/SIGINT stop it after a
//!   step, saved within the epoch (`partial`);
//! - `snapshot`: the checkpoint a run saves every epoch and resumes from, on `checkpoint`
//!   (safetensors files), `state` (a model and its tensors) and `atomic` (whole-or-nothing
//!   writes);
//! - `schedule`, `warmup`: the learning rate;
//! - `metrics`, `report`, `plot`: what a run records and shows;
//! - `batches`, `evaluate`, `images`: the data going in;
//! - `device`, `memory`, `oom`: where it runs, and what does not fit;
//! - `bench`: the training step, timed.

pub mod atomic;
pub mod batches;
pub mod bench;
pub mod checkpoint;
pub mod device;
pub mod epochs;
pub mod evaluate;
pub mod images;
pub mod interrupt;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod oom;
pub mod partial;
pub mod plot;
pub mod report;
pub mod request;
pub mod run;
pub mod schedule;
pub mod snapshot;
pub mod spec;
pub mod state;
pub mod warmup;
