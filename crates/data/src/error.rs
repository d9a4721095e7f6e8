//! The one error type of the crate. Every bad input (missing file, truncated file, bad
//! label) is reported as a value that names the file, so the CLI can print it and exit
//! instead of panicking deep inside a training run.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or validating CIFAR data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An expected file is not there: usually the data was never downloaded, or
    /// `--data-dir` points at the wrong place.
    #[error(
        "missing {dataset} file {path}: run `cargo xtask fetch-cifar --dataset {dataset}` \
         (or pass `--archive PATH` to it when offline), or pass `--data-dir` pointing at the \
         directory that contains `{subdir}/`"
    )]
    MissingFile {
        path: PathBuf,
        dataset: String,
        subdir: String,
    },

    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file size is not a whole number of records: truncated or not a CIFAR file.
    #[error(
        "{path}: size {size} bytes is not a whole number of {record_bytes}-byte {dataset} records \
         (truncated or wrong file?)"
    )]
    BadSize {
        path: PathBuf,
        size: usize,
        record_bytes: usize,
        dataset: String,
    },

    /// A record carries a label outside the class range: corrupt or wrong-format file.
    #[error(
        "{path}: record {record} has {kind} label {label}, but there are only {num_classes} \
         {kind} classes (corrupt file, or CIFAR-10 and CIFAR-100 mixed up?)"
    )]
    BadLabel {
        path: PathBuf,
        record: usize,
        kind: &'static str,
        label: u8,
        num_classes: usize,
    },

    /// A data file holds no records at all.
    #[error("{path}: file holds no records")]
    EmptyFile { path: PathBuf },

    /// A class-name file does not list exactly one name per class.
    #[error("{path}: expected {expected} class names (one per non-blank line), found {found}")]
    BadClassNames {
        path: PathBuf,
        expected: usize,
        found: usize,
    },

    /// `Dataset::from_str` got a name it does not know.
    #[error("unknown dataset {0:?}: expected \"cifar10\" or \"cifar100\"")]
    UnknownDataset(String),
}
