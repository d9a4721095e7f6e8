//! The `train` command line, in three layers, each importing only the ones below it:
//!
//! - [`engine`]: what a training run is — its settings ([`engine::spec::RunSpec`]), the epoch
//!   loop, checkpoints, metrics, the lr schedule and warm-up, the memory estimate, evaluation,
//!   the timed step of `bench`. No command-line type anywhere in it: any command (or a later
//!   scheduler) drives a run by building a `RunSpec` and calling [`engine::run::train`].
//! - [`commands`]: `train`, `eval`, `predict`, `bench`, `reproduce`, each turning its arguments
//!   (the clap structs defined beside it) into engine calls.
//! - the command line: [`cli`] (the clap parser over the commands' arguments) and `main.rs`
//!   (dispatch, error printing, exit status).
//!
//! Everything that touches files on disk (checkpoints, metrics, plots) is in the library, so it
//! can be unit-tested without running training.

pub mod cli;
pub mod commands;
pub mod engine;
