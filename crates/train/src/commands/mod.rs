//! The commands: each turns its arguments (the clap structs defined beside it) into engine
//! calls, and prints what the user asked for. The engine never imports from here; `crate::cli`
//! puts these arguments together into the command line.
//!
//! - `args`: the flags several commands share (data, device, precision, ...), and their
//!   conversion to the engine's types;
//! - `train`: `train [OPTIONS]`, a run from its flags (or a checkpoint's settings);
//! - `eval`, `predict`: a checkpoint on the test set, on image files;
//! - `bench`: the training step's speed;
//! - `doctor`: whether this machine can train on its GPU, line by line;
//! - `reproduce`: the paper's table, its runs built as `RunSpec`s directly (`table`, `figure`).

pub mod args;
pub mod bench;
pub mod doctor;
pub mod eval;
pub mod predict;
pub mod reproduce;
pub mod train;
