//! Loads a dataset and prints what it holds: a quick manual check of a data directory.
//!
//! `cargo run -p data --release --example summary -- <data_dir> [cifar10|cifar100]`

use data::{load, Dataset, Loader, Normalization};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "data".into());
    let dataset: Dataset = args.next().as_deref().unwrap_or("cifar10").parse()?;
    let cifar = load(dir.as_ref(), dataset)?;
    println!(
        "{dataset}: {} train, {} test, {} classes",
        cifar.train.len(),
        cifar.test.len(),
        cifar.num_classes()
    );
    let mut counts = vec![0usize; cifar.num_classes()];
    for &l in &cifar.train.labels {
        counts[l as usize] += 1;
    }
    for (name, n) in cifar.class_names.iter().zip(&counts).take(10) {
        println!("  {name:>12}: {n}");
    }
    let norm = Normalization::from_split(&cifar.train);
    println!("train mean {:?} std {:?}", norm.mean, norm.std);
    let loader = Loader::new(&cifar.train, 128, true, true, norm, 0);
    let t = std::time::Instant::now();
    let (mut n, mut sum, mut sq) = (0usize, 0f64, 0f64);
    for b in loader.epoch(0) {
        n += b.images.len();
        for &v in &b.images {
            sum += v as f64;
            sq += (v as f64) * (v as f64);
        }
    }
    let mean = sum / n as f64;
    println!(
        "epoch 0: {} batches in {:.2?}; augmented inputs mean {mean:.3}, std {:.3}",
        loader.batches_per_epoch(),
        t.elapsed(),
        (sq / n as f64 - mean * mean).sqrt()
    );
    Ok(())
}
