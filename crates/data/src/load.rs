//! Finding and reading the extracted official tarballs under a data directory.

use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::format::{parse_records, Dataset, Split};

/// The standard CIFAR-10 class names, in label order. Used when `batches.meta.txt` is
/// absent: these names are fixed by the dataset's definition, so the file is optional.
pub const CIFAR10_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// A whole dataset in memory.
#[derive(Clone, Debug)]
pub struct Cifar {
    pub dataset: Dataset,
    pub train: Split,
    pub test: Split,
    /// One name per class, in label order (fine classes for CIFAR-100).
    pub class_names: Vec<String>,
}

impl Cifar {
    /// Number of classes trained on.
    pub fn num_classes(&self) -> usize {
        self.dataset.num_classes()
    }
}

/// Loads train and test splits from `<data_dir>/cifar-10-batches-bin/` or
/// `<data_dir>/cifar-100-binary/`, as extracted from the official binary tarballs.
///
/// Class names: CIFAR-10 reads `batches.meta.txt` if present and otherwise falls back to
/// [`CIFAR10_CLASS_NAMES`]; CIFAR-100 requires `fine_label_names.txt` (100 names are not
/// worth hard-coding, and its absence means the extraction is incomplete).
pub fn load(data_dir: &Path, dataset: Dataset) -> Result<Cifar, DataError> {
    let dir = data_dir.join(dataset.dir_name());
    // Check every file before reading any, so a missing file is reported at once
    // rather than after reading 150 MB.
    let mut needed: Vec<PathBuf> = dataset
        .train_files()
        .iter()
        .chain(std::iter::once(&dataset.test_file()))
        .map(|f| dir.join(f))
        .collect();
    if dataset == Dataset::Cifar100 {
        needed.push(dir.join("fine_label_names.txt"));
    }
    for path in &needed {
        if !path.is_file() {
            return Err(missing(path, dataset));
        }
    }

    let mut train = Split::default();
    for (i, f) in dataset.train_files().iter().enumerate() {
        let part = read_split(&dir.join(f), dataset)?;
        if i == 0 {
            train = part;
        } else {
            train.extend(part);
        }
    }
    let test = read_split(&dir.join(dataset.test_file()), dataset)?;

    let class_names = match dataset {
        Dataset::Cifar10 => {
            let meta = dir.join("batches.meta.txt");
            if meta.is_file() {
                read_names(&meta, 10)?
            } else {
                CIFAR10_CLASS_NAMES.iter().map(|s| s.to_string()).collect()
            }
        }
        Dataset::Cifar100 => read_names(&dir.join("fine_label_names.txt"), 100)?,
    };

    Ok(Cifar {
        dataset,
        train,
        test,
        class_names,
    })
}

fn missing(path: &Path, dataset: Dataset) -> DataError {
    DataError::MissingFile {
        path: path.to_path_buf(),
        dataset: dataset.to_string(),
        subdir: dataset.dir_name().to_string(),
    }
}

fn read(path: &Path, dataset: Dataset) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            missing(path, dataset)
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn read_split(path: &Path, dataset: Dataset) -> Result<Split, DataError> {
    let bytes = read(path, dataset)?;
    let split = parse_records(&bytes, dataset, path)?;
    if split.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(split)
}

/// One name per non-blank line, trimmed; the count must match the class count.
fn read_names(path: &Path, expected: usize) -> Result<Vec<String>, DataError> {
    let text = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != expected {
        return Err(DataError::BadClassNames {
            path: path.to_path_buf(),
            expected,
            found: names.len(),
        });
    }
    Ok(names)
}
