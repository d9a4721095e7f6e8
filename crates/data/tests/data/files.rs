//! Parsing and loading generated files in both official layouts, and every error case.

use std::fs;
use std::path::Path;

use data::{load, parse_records, DataError, Dataset, IMAGE_BYTES};
use proptest::prelude::*;

/// A record whose pixels encode (record index, byte offset) so that mix-ups show.
fn record(dataset: Dataset, i: usize, fine: u8, coarse: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(dataset.record_bytes());
    if dataset == Dataset::Cifar100 {
        r.push(coarse);
    }
    r.push(fine);
    r.extend((0..IMAGE_BYTES).map(|k| ((i * 7 + k) % 251) as u8));
    r
}

fn file(dataset: Dataset, first: usize, n: usize) -> Vec<u8> {
    (first..first + n)
        .flat_map(|i| {
            record(
                dataset,
                i,
                (i % dataset.num_classes()) as u8,
                (i % 20) as u8,
            )
        })
        .collect()
}

fn write_cifar10(root: &Path, per_batch: usize, meta: bool) {
    let dir = root.join("cifar-10-batches-bin");
    fs::create_dir_all(&dir).unwrap();
    for b in 0..5 {
        let name = format!("data_batch_{}.bin", b + 1);
        fs::write(
            dir.join(name),
            file(Dataset::Cifar10, b * per_batch, per_batch),
        )
        .unwrap();
    }
    fs::write(dir.join("test_batch.bin"), file(Dataset::Cifar10, 1000, 3)).unwrap();
    if meta {
        let names: String = (0..10).map(|i| format!("class{i}\n")).collect();
        fs::write(dir.join("batches.meta.txt"), names + "\n\n").unwrap();
    }
}

fn write_cifar100(root: &Path) {
    let dir = root.join("cifar-100-binary");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("train.bin"), file(Dataset::Cifar100, 0, 7)).unwrap();
    fs::write(dir.join("test.bin"), file(Dataset::Cifar100, 100, 2)).unwrap();
    let fine: String = (0..100).map(|i| format!("fine{i}\n")).collect();
    fs::write(dir.join("fine_label_names.txt"), fine).unwrap();
    let coarse: String = (0..20).map(|i| format!("coarse{i}\n")).collect();
    fs::write(dir.join("coarse_label_names.txt"), coarse).unwrap();
}

#[test]
fn loads_cifar10_layout() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path(), 4, true);
    let c = load(tmp.path(), Dataset::Cifar10).unwrap();
    assert_eq!(c.num_classes(), 10);
    assert_eq!(c.train.len(), 20);
    assert_eq!(c.test.len(), 3);
    assert_eq!(c.train.images.len(), 20 * IMAGE_BYTES);
    assert!(c.train.coarse_labels.is_none());
    // Batches are concatenated in order 1..5.
    for i in 0..20 {
        assert_eq!(c.train.labels[i] as usize, i % 10);
        assert_eq!(c.train.image(i), &record(Dataset::Cifar10, i, 0, 0)[1..]);
    }
    assert_eq!(c.test.image(2), &record(Dataset::Cifar10, 1002, 0, 0)[1..]);
    assert_eq!(c.class_names[0], "class0");
    assert_eq!(c.class_names.len(), 10);
}

#[test]
fn cifar10_names_fall_back_to_standard() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path(), 1, false);
    let c = load(tmp.path(), Dataset::Cifar10).unwrap();
    assert_eq!(c.class_names[0], "airplane");
    assert_eq!(c.class_names[9], "truck");
}

#[test]
fn loads_cifar100_layout_with_fine_and_coarse_labels() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar100(tmp.path());
    let mut c = load(tmp.path(), Dataset::Cifar100).unwrap();
    assert_eq!(c.num_classes(), 100);
    assert_eq!((c.train.len(), c.test.len()), (7, 2));
    assert_eq!(c.train.labels, (0..7).collect::<Vec<u8>>());
    assert_eq!(
        c.train.coarse_labels.as_deref(),
        Some(&[0u8, 1, 2, 3, 4, 5, 6][..])
    );
    assert_eq!(c.test.labels, vec![100 % 100, 101 % 100]);
    assert_eq!(c.train.image(5), &record(Dataset::Cifar100, 5, 0, 0)[2..]);
    assert_eq!(c.class_names[99], "fine99");
    // The last two images held out (`--val-split 2`): the rest stays, in order.
    let mut rest = c.train.clone();
    let val = rest.split_off(5);
    assert_eq!((rest.len(), val.len()), (5, 2));
    assert_eq!(val.labels, vec![5, 6]);
    assert_eq!(val.coarse_labels.as_deref(), Some(&[5u8, 6][..]));
    assert_eq!(val.image(1), c.train.image(6));
    assert_eq!(rest.image(4), c.train.image(4));
    assert_eq!(rest.images.len(), 5 * IMAGE_BYTES);
    c.train.truncate(3);
    assert_eq!(c.train.len(), 3);
    assert_eq!(c.train.images.len(), 3 * IMAGE_BYTES);
    assert_eq!(c.train.coarse_labels.as_ref().unwrap().len(), 3);
    c.train.truncate(10);
    assert_eq!(c.train.len(), 3);
}

#[test]
fn missing_file_says_how_to_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    for ds in [Dataset::Cifar10, Dataset::Cifar100] {
        let err = load(tmp.path(), ds).unwrap_err();
        assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("cargo xtask fetch-cifar"), "{msg}");
        assert!(msg.contains("--data-dir"), "{msg}");
        assert!(msg.contains(ds.dir_name()), "{msg}");
    }
    // One batch file missing among present ones: names that file.
    write_cifar10(tmp.path(), 1, false);
    let gone = tmp.path().join("cifar-10-batches-bin/data_batch_3.bin");
    fs::remove_file(&gone).unwrap();
    let msg = load(tmp.path(), Dataset::Cifar10).unwrap_err().to_string();
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
}

#[test]
fn cifar100_requires_fine_names() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar100(tmp.path());
    fs::remove_file(tmp.path().join("cifar-100-binary/fine_label_names.txt")).unwrap();
    let msg = load(tmp.path(), Dataset::Cifar100).unwrap_err().to_string();
    assert!(msg.contains("fine_label_names.txt"), "{msg}");
}

#[test]
fn wrong_class_name_count_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path(), 1, false);
    fs::write(
        tmp.path().join("cifar-10-batches-bin/batches.meta.txt"),
        "a\nb\n",
    )
    .unwrap();
    let err = load(tmp.path(), Dataset::Cifar10).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadClassNames {
                expected: 10,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_size_names_file_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path(), 2, false);
    let f = tmp.path().join("cifar-10-batches-bin/data_batch_2.bin");
    let mut bytes = fs::read(&f).unwrap();
    bytes.truncate(bytes.len() - 100); // 2*3073 - 100 = 6046
    fs::write(&f, bytes).unwrap();
    let err = load(tmp.path(), Dataset::Cifar10).unwrap_err();
    assert!(
        matches!(err, DataError::BadSize { size: 6046, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("data_batch_2.bin") && msg.contains("6046"),
        "{msg}"
    );
}

#[test]
fn empty_file_is_an_error_in_load() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path(), 1, false);
    fs::write(tmp.path().join("cifar-10-batches-bin/test_batch.bin"), b"").unwrap();
    let msg = load(tmp.path(), Dataset::Cifar10).unwrap_err().to_string();
    assert!(msg.contains("test_batch.bin"), "{msg}");
}

#[test]
fn bad_label_names_file_and_record() {
    let p = Path::new("some/dir/test_batch.bin");
    let mut bytes = file(Dataset::Cifar10, 0, 5);
    bytes[3 * 3073] = 10;
    let err = parse_records(&bytes, Dataset::Cifar10, p).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadLabel {
                record: 3,
                label: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("test_batch.bin") && msg.contains("record 3"),
        "{msg}"
    );

    // CIFAR-100: fine label 100 and coarse label 20 are both out of range.
    let p = Path::new("train.bin");
    let mut bytes = file(Dataset::Cifar100, 0, 4);
    bytes[2 * 3074 + 1] = 100;
    let msg = parse_records(&bytes, Dataset::Cifar100, p)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train.bin") && msg.contains("record 2") && msg.contains("fine"),
        "{msg}"
    );
    let mut bytes = file(Dataset::Cifar100, 0, 4);
    bytes[3074] = 20;
    let msg = parse_records(&bytes, Dataset::Cifar100, p)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("record 1") && msg.contains("coarse"), "{msg}");

    // Through load as well: the file on disk is named.
    let tmp = tempfile::tempdir().unwrap();
    write_cifar100(tmp.path());
    let f = tmp.path().join("cifar-100-binary/test.bin");
    let mut bytes = fs::read(&f).unwrap();
    bytes[3074 + 1] = 200;
    fs::write(&f, bytes).unwrap();
    let msg = load(tmp.path(), Dataset::Cifar100).unwrap_err().to_string();
    assert!(
        msg.contains("test.bin") && msg.contains("record 1"),
        "{msg}"
    );
}

#[test]
fn dataset_names_round_trip() {
    for ds in [Dataset::Cifar10, Dataset::Cifar100] {
        assert_eq!(ds.to_string().parse::<Dataset>().unwrap(), ds);
    }
    assert_eq!("CIFAR-100".parse::<Dataset>().unwrap(), Dataset::Cifar100);
    assert_eq!(Dataset::Cifar100.num_classes(), 100);
    let msg = "mnist".parse::<Dataset>().unwrap_err().to_string();
    assert!(msg.contains("mnist") && msg.contains("cifar10"), "{msg}");
}

/// Byte strings near record boundaries are the interesting ones: valid-size files with
/// random labels, and truncated/extended versions of them.
fn near_records() -> impl Strategy<Value = Vec<u8>> {
    (0usize..4, -3i64..=3, any::<u64>()).prop_map(|(n, delta, seed)| {
        let len = (n as i64 * 3073 + delta).max(0) as usize;
        let mut x = seed | 1;
        (0..len)
            .map(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Labels mostly in range so that Ok results are reachable.
                if k % 3073 < 2 {
                    (x % 12) as u8
                } else {
                    x as u8
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn parse_never_panics(
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..8000), near_records()],
        cifar100 in any::<bool>(),
    ) {
        let ds = if cifar100 { Dataset::Cifar100 } else { Dataset::Cifar10 };
        match parse_records(&bytes, ds, Path::new("fuzz.bin")) {
            Ok(split) => {
                prop_assert_eq!(bytes.len() % ds.record_bytes(), 0);
                prop_assert_eq!(split.len(), bytes.len() / ds.record_bytes());
                prop_assert_eq!(split.images.len(), split.len() * IMAGE_BYTES);
                prop_assert!(split.labels.iter().all(|&l| (l as usize) < ds.num_classes()));
            }
            Err(e) => {
                prop_assert!(e.to_string().contains("fuzz.bin"));
            }
        }
    }
}
