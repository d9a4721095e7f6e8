//! CIFAR-10/100 data: parsing and validating the official binary files, per-channel
//! normalisation, deterministic shuffling and augmentation, and parallel mini-batching.
//!
//! Module map: [`error`] (the error type), [`format`] (record layout, parser),
//! [`load`] (files on disk), [`normalize`] (mean/std), [`augment`] (crop + flip +
//! normalise one image), [`sampling`] (seeded order and augmentation draws),
//! [`loader`] (batches).

pub mod augment;
pub mod error;
pub mod format;
pub mod load;
pub mod loader;
pub mod normalize;
pub mod sampling;

pub use augment::{write_sample, SampleAug, MAX_SHIFT, SAMPLE_LEN};
pub use error::DataError;
pub use format::{parse_records, Dataset, Split, CIFAR100_COARSE_CLASSES, IMAGE_BYTES, IMAGE_SIDE};
pub use load::{load, Cifar, CIFAR10_CLASS_NAMES};
pub use loader::{Batch, Loader};
pub use normalize::Normalization;
pub use sampling::{epoch_order, sample_aug};
