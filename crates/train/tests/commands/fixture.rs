//! Generated CIFAR-10 files: what the tests train on, and (through `examples/fake_cifar.rs`)
//! what `ci/slurm/check.sh` trains on. Only `rand`, so an example can include it too.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Records whose class shows as a brightness in one colour plane, over noise: enough signal
/// for even a deep, narrow net to learn in a few dozen steps.
pub fn records(r: &mut ChaCha8Rng, n: usize, label_bytes: usize, classes: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        let label = r.gen_range(0..classes);
        if label_bytes == 2 {
            out.push(label / 5); // coarse label
        }
        out.push(label);
        let plane = (label % 3) as usize;
        let lift = 12 * (label % 10) as u32;
        out.extend((0..3072).map(|i| {
            let noise = r.gen_range(0..120u32);
            (noise + if i / 1024 == plane { lift } else { 0 }) as u8
        }));
    }
    out
}

/// CIFAR-10 files under `root`: `per_file` images in each of the five training batches, 40
/// test images; `names` (if any) as `batches.meta.txt`. `seed` varies the pixels.
pub fn cifar10(root: &Path, per_file: usize, seed: u64, names: Option<&[&str]>) -> PathBuf {
    let d = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    for i in 1..=5 {
        std::fs::write(
            d.join(format!("data_batch_{i}.bin")),
            records(&mut r, per_file, 1, 10),
        )
        .unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), records(&mut r, 40, 1, 10)).unwrap();
    if let Some(names) = names {
        std::fs::write(d.join("batches.meta.txt"), names.join("\n") + "\n").unwrap();
    }
    root.to_path_buf()
}
