//! The `train` binary end to end, as a user runs it, for what issue 13 asked: sizes that
//! cannot fit, resumed runs that keep their settings, the paper's warm-up, the validation
//! split, `train reproduce` and `train predict`; and for issue 18: checkpoints holding NaN or
//! infinity refused by every command, damaged images named by `predict`; and for issue 17:
//! runs stopped by a signal and resumed bit-identical, a reproduction's runs spread over
//! processes (locks, `--list`, `--run`, `--jobs`, the Slurm scripts). Everything runs on
//! the CPU on small generated CIFAR files.

mod common;
mod doctor;
mod gpu;
mod memory;
mod non_finite;
mod prebuilt;
mod predict;
mod reproduce;
mod resume;
mod spread;
mod stop;
mod validation;
mod warmup;
