//! The official CIFAR binary record layout and its parser. Kept apart from file-system
//! access so that it can be fuzzed on arbitrary bytes.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::DataError;

/// Bytes of pixel data per image: 3 channels x 32 x 32, channel-major (CHW).
pub const IMAGE_BYTES: usize = 3072;
/// Width and height of every image.
pub const IMAGE_SIDE: usize = 32;
/// Number of CIFAR-100 coarse (super-)classes.
pub const CIFAR100_COARSE_CLASSES: usize = 20;

/// Which CIFAR variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset {
    Cifar10,
    Cifar100,
}

impl Dataset {
    /// Number of classes we train on (fine labels for CIFAR-100).
    pub fn num_classes(self) -> usize {
        match self {
            Dataset::Cifar10 => 10,
            Dataset::Cifar100 => 100,
        }
    }

    /// Label bytes before the pixels of each record: 1 (label) or 2 (coarse, fine).
    pub fn label_bytes(self) -> usize {
        match self {
            Dataset::Cifar10 => 1,
            Dataset::Cifar100 => 2,
        }
    }

    /// Bytes per record: label bytes + [`IMAGE_BYTES`].
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    /// The directory the official tarball extracts to, under the data directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar-10-batches-bin",
            Dataset::Cifar100 => "cifar-100-binary",
        }
    }

    /// Training files, in the order their records are concatenated.
    pub fn train_files(self) -> &'static [&'static str] {
        match self {
            Dataset::Cifar10 => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            Dataset::Cifar100 => &["train.bin"],
        }
    }

    /// The test file.
    pub fn test_file(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "test_batch.bin",
            Dataset::Cifar100 => "test.bin",
        }
    }
}

impl FromStr for Dataset {
    type Err = DataError;

    /// Accepts `cifar10` / `cifar100` (case-insensitive, `cifar-10` / `cifar-100` too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(Dataset::Cifar10),
            "cifar100" | "cifar-100" => Ok(Dataset::Cifar100),
            _ => Err(DataError::UnknownDataset(s.to_string())),
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
        })
    }
}

/// One split (train or test) held in memory as raw bytes: 50,000 CIFAR images are only
/// 150 MiB as `u8`, and converting to `f32` per batch keeps augmentation exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// `len() * IMAGE_BYTES` bytes; each image is CHW (1024 R, 1024 G, 1024 B, rows top
    /// to bottom), exactly as in the file.
    pub images: Vec<u8>,
    /// The training label of each image (fine label for CIFAR-100).
    pub labels: Vec<u8>,
    /// CIFAR-100 coarse labels; `None` for CIFAR-10.
    pub coarse_labels: Option<Vec<u8>>,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps only the first `n` images (no-op when `n >= len()`): for quick runs.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.images.truncate(n * IMAGE_BYTES);
        self.labels.truncate(n);
        if let Some(c) = &mut self.coarse_labels {
            c.truncate(n);
        }
    }

    /// Moves images `at..` into a split of their own and keeps `..at` (like
    /// `Vec::split_off`): the held-out validation images of `--val-split`.
    ///
    /// # Panics
    /// If `at > len()`.
    pub fn split_off(&mut self, at: usize) -> Split {
        assert!(
            at <= self.len(),
            "split_off at {at} of {} images",
            self.len()
        );
        Split {
            images: self.images.split_off(at * IMAGE_BYTES),
            labels: self.labels.split_off(at),
            coarse_labels: self.coarse_labels.as_mut().map(|c| c.split_off(at)),
        }
    }

    /// The CHW bytes of image `i`. Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// Appends all images of `other` (used to concatenate the CIFAR-10 batch files).
    pub fn extend(&mut self, other: Split) {
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
        match (&mut self.coarse_labels, other.coarse_labels) {
            (Some(a), Some(b)) => a.extend_from_slice(&b),
            (None, None) => {}
            // Mixing formats cannot happen through `load`; keep the invariant anyway.
            (a, _) => *a = None,
        }
    }
}

/// Parses the whole content of one official binary file. `file` is only used in error
/// messages. Validates the size (a whole number of records) and every label, so that
/// nothing downstream can index out of range.
pub fn parse_records(bytes: &[u8], dataset: Dataset, file: &Path) -> Result<Split, DataError> {
    let record_bytes = dataset.record_bytes();
    // `is_multiple_of` needs Rust 1.87; the workspace MSRV is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    if bytes.len() % record_bytes != 0 {
        return Err(DataError::BadSize {
            path: file.to_path_buf(),
            size: bytes.len(),
            record_bytes,
            dataset: dataset.to_string(),
        });
    }
    let n = bytes.len() / record_bytes;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    let mut coarse = match dataset {
        Dataset::Cifar10 => None,
        Dataset::Cifar100 => Some(Vec::with_capacity(n)),
    };
    let bad =
        |record: usize, kind: &'static str, label: u8, num_classes: usize| DataError::BadLabel {
            path: file.to_path_buf(),
            record,
            kind,
            label,
            num_classes,
        };
    for (i, rec) in bytes.chunks_exact(record_bytes).enumerate() {
        let (head, pixels) = rec.split_at(dataset.label_bytes());
        let fine = match dataset {
            Dataset::Cifar10 => head[0],
            Dataset::Cifar100 => {
                let c = head[0];
                if c as usize >= CIFAR100_COARSE_CLASSES {
                    return Err(bad(i, "coarse", c, CIFAR100_COARSE_CLASSES));
                }
                if let Some(v) = &mut coarse {
                    v.push(c);
                }
                head[1]
            }
        };
        let kind = match dataset {
            Dataset::Cifar10 => "class",
            Dataset::Cifar100 => "fine",
        };
        if fine as usize >= dataset.num_classes() {
            return Err(bad(i, kind, fine, dataset.num_classes()));
        }
        labels.push(fine);
        images.extend_from_slice(pixels);
    }
    Ok(Split {
        images,
        labels,
        coarse_labels: coarse,
    })
}
