//! The CPU engine's ops one at a time, each path side by side: the reference, the fast fp32
//! path, the fast bf16 path. Times are the process's CPU time per call (the best of `--reps`),
//! which a busy shared machine disturbs far less than wall time; by default on one thread, so
//! they compare kernels, not thread scheduling. ResNet-20's shapes (and ResNet-34 width 16's
//! last stage) at batch 128, then batch norm.
//!
//!   cargo bench -p tensor --bench cpu_ops [-- --threads N --reps R --batch B --filter TEXT
//!                                             --paths reference,fp32,bf16]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::conv::{self, reference};
use tensor::{Precision, Tensor};

fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Best CPU time of `reps` calls of `f`, in ms.
fn best_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up (allocations, caches)
    (0..reps)
        .map(|_| {
            let t = cpu_seconds();
            f();
            (cpu_seconds() - t) * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn rand_tensor(r: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect())
}

struct Args {
    threads: usize,
    reps: usize,
    batch: usize,
    filter: String,
    /// Which of `reference`, `fp32`, `bf16` to run (all by default).
    paths: String,
}

fn args() -> Args {
    let mut a = Args {
        threads: 1,
        reps: 3,
        batch: 128,
        filter: String::new(),
        paths: "reference,fp32,bf16".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--threads" => a.threads = value().parse().expect("--threads N"),
            "--reps" => a.reps = value().parse().expect("--reps N"),
            "--batch" => a.batch = value().parse().expect("--batch N"),
            "--filter" => a.filter = value(),
            "--paths" => a.paths = value(),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn main() {
    let a = args();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()
        .expect("one global pool");
    println!(
        "CPU kernels: {}; {} thread(s), batch {}, best of {} (CPU ms per call; GFLOP/s)",
        tensor::cpu::kernels(),
        a.threads,
        a.batch,
        a.reps
    );
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let n = a.batch;
    // (cin, cout, side, k, stride): ResNet-20's convolutions, then the fourth stage of
    // ResNet-34 width 16.
    let shapes = [
        (3, 16, 32, 3, 1),
        (16, 16, 32, 3, 1),
        (16, 32, 32, 3, 2),
        (32, 32, 16, 3, 1),
        (32, 64, 16, 3, 2),
        (64, 64, 8, 3, 1),
        (64, 128, 8, 3, 2),
        (128, 128, 4, 3, 1),
    ];
    println!(
        "{:<28} {:>18} {:>18} {:>18}",
        "conv pass", "reference", "fast fp32", "fast bf16"
    );
    for (cin, cout, side, k, stride) in shapes {
        let x = rand_tensor(&mut r, &[n, cin, side, side]);
        let w = rand_tensor(&mut r, &[cout, cin, k, k]);
        let g = conv::ConvShape::new(x.shape(), w.shape(), stride);
        let dy = rand_tensor(&mut r, &[n, cout, g.oh, g.ow]);
        let gflop = 2.0 * g.macs() as f64 * 1e-9;
        let name = format!("{cin}->{cout} {side}x{side} {k}x{k}/{stride}");
        let cell = |ms: Option<f64>| match ms {
            Some(ms) => format!("{ms:8.2} {:7.1}", gflop / ms * 1e3),
            None => format!("{:>16}", "n/a"),
        };
        for pass in ["fwd", "bwd data", "bwd weight"] {
            let label = format!("{name} {pass}");
            if !label.contains(&a.filter) {
                continue;
            }
            let run = |path: Option<Precision>| -> Option<f64> {
                let wanted = match path {
                    None => "reference",
                    Some(Precision::Fp32) => "fp32",
                    Some(Precision::Bf16) => "bf16",
                };
                if !a.paths.split(',').any(|p| p == wanted) {
                    return None;
                }
                if let Some(p) = path {
                    if !conv::cpu_fast_path(p) {
                        return None;
                    }
                }
                let mut dw = Tensor::zeros(w.shape());
                Some(best_ms(a.reps, || match (pass, path) {
                    ("fwd", None) => drop(reference::forward(&x, &w, stride)),
                    ("fwd", Some(p)) => drop(conv::conv2d_forward_with(&x, &w, stride, p)),
                    ("bwd data", None) => {
                        drop(reference::backward_data(&dy, &w, x.shape(), stride))
                    }
                    ("bwd data", Some(p)) => drop(conv::conv2d_backward_data_with(
                        &dy,
                        &w,
                        x.shape(),
                        stride,
                        p,
                    )),
                    (_, None) => reference::backward_weight(&x, &dy, stride, &mut dw),
                    (_, Some(p)) => conv::conv2d_backward_weight_with(&x, &dy, stride, &mut dw, p),
                }))
            };
            println!(
                "{label:<28} {:>18} {:>18} {:>18}",
                cell(run(None)),
                cell(run(Some(Precision::Fp32))),
                cell(run(Some(Precision::Bf16)))
            );
        }
    }
    batch_norm(&a, &mut r);
}

/// BN's training forward and backward (no ReLU), the reference slice functions against the
/// tensor functions (the fast path when the CPU has AVX-512), at ResNet-20's three stages.
/// GB/s counts the activations read and written once per pass as the fast path does.
fn batch_norm(a: &Args, r: &mut ChaCha8Rng) {
    use tensor::batchnorm;
    let n = a.batch;
    println!();
    println!(
        "{:<28} {:>18} {:>18}",
        "batch norm", "reference ms", "fast ms  GB/s"
    );
    for (c, side) in [(16, 32), (32, 16), (64, 8)] {
        let shape = [n, c, side, side];
        let x = rand_tensor(r, &shape);
        let dy = rand_tensor(r, &shape);
        let (gamma, beta) = (Tensor::full(&[c], 1.5), Tensor::full(&[c], 0.25));
        let mb = (n * c * side * side * 4) as f64 / 1e6;
        for pass in ["train fwd", "bwd"] {
            let label = format!("bn {pass} {c}x{side}x{side}");
            if !label.contains(&a.filter) {
                continue;
            }
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            let (_, saved) = batchnorm::batchnorm_train_forward(
                &x,
                gamma.data(),
                beta.data(),
                &mut rm,
                &mut rv,
                0.1,
                1e-5,
            );
            let reference = best_ms(a.reps, || {
                let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
                if pass == "bwd" {
                    drop(batchnorm::batchnorm_backward(
                        &x,
                        &dy,
                        gamma.data(),
                        &saved,
                        &mut dg,
                        &mut db,
                    ));
                } else {
                    drop(batchnorm::batchnorm_train_forward(
                        &x,
                        gamma.data(),
                        beta.data(),
                        &mut rm,
                        &mut rv,
                        0.1,
                        1e-5,
                    ));
                }
            });
            let (mut trm, mut trv) = (Tensor::zeros(&[c]), Tensor::full(&[c], 1.0));
            let (_, stats) =
                batchnorm::train_forward(&x, &gamma, &beta, &mut trm, &mut trv, 0.1, 1e-5);
            let fast = best_ms(a.reps, || {
                let (mut dg, mut db) = (Tensor::zeros(&[c]), Tensor::zeros(&[c]));
                if pass == "bwd" {
                    drop(batchnorm::backward(
                        &x, &dy, &gamma, &stats, &mut dg, &mut db,
                    ));
                } else {
                    drop(batchnorm::train_forward(
                        &x, &gamma, &beta, &mut trm, &mut trv, 0.1, 1e-5,
                    ));
                }
            });
            // Forward: read x twice (statistics, map), write y; backward: read x, dy twice, write dx.
            let traffic = if pass == "bwd" { 5.0 } else { 3.0 } * mb;
            println!(
                "{label:<28} {reference:>18.2} {fast:>9.2} {:>8.1}",
                traffic / fast
            );
        }
    }
}
