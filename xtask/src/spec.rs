//! What each official tarball is (URL, size, MD5) and what it must extract to.
//!
//! Specs are plain values rather than constants so that tests can run the real install
//! path on small tarballs with their own size and MD5.

use data::Dataset;

/// A file that must exist after extraction, with its exact size when that is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedFile {
    pub name: String,
    pub size: Option<u64>,
}

/// One downloadable tarball and its extracted content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSpec {
    /// Human name for messages, e.g. "CIFAR-10".
    pub label: String,
    pub url: String,
    /// File name the tarball is stored under in the data directory.
    pub file_name: String,
    /// Lower-case hex MD5 of the whole tarball.
    pub md5: String,
    /// Exact tarball size in bytes.
    pub size: u64,
    /// The top-level directory inside the tarball (and, once installed, inside `--dir`).
    pub dir_name: String,
    /// Files that must be in `dir_name` for the installation to count as valid.
    pub files: Vec<ExpectedFile>,
}

/// Records per official file: 10,000 per CIFAR-10 batch, 50,000 / 10,000 for CIFAR-100.
fn expected_files(dataset: Dataset, train_records: u64, names: &[&str]) -> Vec<ExpectedFile> {
    let rec = dataset.record_bytes() as u64;
    let mut files: Vec<ExpectedFile> = dataset
        .train_files()
        .iter()
        .map(|f| ExpectedFile {
            name: f.to_string(),
            size: Some(train_records * rec),
        })
        .collect();
    files.push(ExpectedFile {
        name: dataset.test_file().to_string(),
        size: Some(10_000 * rec),
    });
    files.extend(names.iter().map(|n| ExpectedFile {
        name: n.to_string(),
        size: None,
    }));
    files
}

/// The official CIFAR-10 binary tarball. Size and MD5 from
/// <https://www.cs.toronto.edu/~kriz/cifar.html>.
pub fn cifar10() -> ArchiveSpec {
    let ds = Dataset::Cifar10;
    ArchiveSpec {
        label: "CIFAR-10".into(),
        url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into(),
        file_name: "cifar-10-binary.tar.gz".into(),
        md5: "c32a1d4ab5d03f1284b67883e8d87530".into(),
        size: 170_052_171,
        dir_name: ds.dir_name().into(),
        files: expected_files(ds, 10_000, &["batches.meta.txt"]),
    }
}

/// The official CIFAR-100 binary tarball. MD5 as listed in the table on
/// <https://www.cs.toronto.edu/~kriz/cifar.html> ("CIFAR-100 binary version", 161 MB),
/// cross-checked against the MD5E-s168513733--03b5dce0... annex key of the Mila datalad
/// mirror (github.com/datasets-mila/datasets--cifar100), which also gives the exact size.
/// torchvision lists only the *python* tarball's MD5 (eb9058c3...), not this one.
pub fn cifar100() -> ArchiveSpec {
    let ds = Dataset::Cifar100;
    ArchiveSpec {
        label: "CIFAR-100".into(),
        url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz".into(),
        file_name: "cifar-100-binary.tar.gz".into(),
        md5: "03b5dce01913d631647c71ecec9e9cb8".into(),
        size: 168_513_733,
        dir_name: ds.dir_name().into(),
        files: expected_files(
            ds,
            50_000,
            &["fine_label_names.txt", "coarse_label_names.txt"],
        ),
    }
}
