//! Helpers shared by the GPU test modules. Error measure: `‖gpu − cpu‖₂ / ‖cpu‖₂` over the
//! whole tensor, in f64; each check states its bound.

use std::ops::Deref;
use std::sync::{Mutex, MutexGuard};

use model::step::train_step;
use model::{ResNet, ResNetConfig, Sgd};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::{Device, Precision, Tensor};

/// Convolution cases (x shape, w shape, stride): batch 1, odd channel counts and sizes,
/// stride 2, 1x1 convolutions, the 4x4 maps of a four-stage network's last stage, one real
/// CIFAR shape (long reductions), and every tile shape of the kernels: 16 rows and fewer, 17 to
/// 32 (`[2, 16, 8, 8]` -> 32), more than 64 (two 64-row tiles).
pub const CONV_CASES: [([usize; 4], [usize; 4], usize); 10] = [
    ([1, 3, 5, 7], [4, 3, 3, 3], 1),
    ([3, 2, 7, 5], [5, 2, 3, 3], 2),
    ([3, 5, 6, 6], [3, 5, 3, 3], 2),
    ([1, 4, 5, 5], [6, 4, 1, 1], 1),
    ([3, 3, 7, 6], [5, 3, 1, 1], 2),
    ([2, 16, 8, 8], [32, 16, 3, 3], 2),
    ([2, 16, 8, 8], [72, 16, 3, 3], 2),
    ([1, 7, 4, 4], [7, 7, 3, 3], 1),
    ([2, 64, 4, 4], [64, 64, 3, 3], 1),
    ([8, 16, 32, 32], [16, 16, 3, 3], 1),
];

/// The GPU, held by one test at a time. Tests run on parallel threads, and the device state
/// they share is per GPU, not per thread: one stream (a CUDA-graph capture on it would record
/// another test's launches, and a download from another thread breaks the capture), and the
/// optimizer's device address tables that a captured step reads. So each test takes the GPU for
/// its whole body; a panicking test releases it (the lock's poison is ignored).
pub struct Gpu {
    dev: Device,
    _serial: MutexGuard<'static, ()>,
}

impl Deref for Gpu {
    type Target = Device;
    fn deref(&self) -> &Device {
        &self.dev
    }
}

/// The GPU, or a failing test: these checks must never pass by skipping.
pub fn gpu() -> Gpu {
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dev = Device::cuda(0).unwrap_or_else(|e| panic!("this test needs a CUDA GPU: {e}"));
    Gpu {
        dev,
        _serial: serial,
    }
}

/// Width and batch for the whole-model tests: ResNet-20's own width (16) and `batch` on a GPU.
/// On the stand-in driver (`kernels/standin`), where every kernel runs emulated on the CPU,
/// width 8 and a quarter of the batch (at least 2): the same layers, kernels, code paths and
/// assertions at a cost CI can afford. (Width 8 uses the 16- and 32-row conv tiles; the 64-row
/// tile is covered by the conv tests' cases.)
pub fn model_size(batch: usize) -> (Option<usize>, usize) {
    let standin = kernels::probe::driver().is_ok_and(|d| d.standin.is_some());
    if standin {
        (Some(8), (batch / 4).max(2))
    } else {
        (None, batch)
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Random values with |v| in [0.1, 1] and random sign: non-zero everywhere.
pub fn rand_t(r: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            let m: f32 = r.gen_range(0.1..=1.0);
            if r.gen_bool(0.5) {
                m
            } else {
                -m
            }
        })
        .collect();
    Tensor::from_vec(shape, v)
}

pub fn up(t: &Tensor, dev: &Device) -> Tensor {
    let g = t.to_device(dev).expect("upload");
    assert!(g.is_cuda());
    g
}

/// Back to the host; also checks that the op kept its result on the GPU.
pub fn down(t: &Tensor) -> Tensor {
    assert!(t.is_cuda(), "a GPU op returned a tensor on {}", t.device());
    t.to_host().expect("download")
}

pub fn rel_err(gpu: &Tensor, cpu: &Tensor) -> f64 {
    let g = down(gpu);
    assert_eq!(g.shape(), cpu.shape(), "shapes differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in g.data().iter().zip(cpu.data()) {
        assert!(a.is_finite(), "non-finite GPU value {a}");
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    assert!(den > 0.0, "the CPU reference is all zeros: a useless check");
    (num / den).sqrt()
}

#[track_caller]
pub fn assert_rel(what: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) {
    let e = rel_err(gpu, cpu);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.2e}");
}

/// Bit-identical values (or both zero), the GPU tensor against a host one.
#[track_caller]
pub fn assert_exact(what: &str, gpu: &Tensor, cpu: &Tensor) {
    let g = down(gpu);
    assert_eq!(g.shape(), cpu.shape(), "{what}: shapes differ");
    for (i, (&a, &b)) in g.data().iter().zip(cpu.data()).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0),
            "{what}: element {i}: gpu {a} vs cpu {b}"
        );
    }
}

/// Bit-identical values, two tensors on any device.
#[track_caller]
pub fn assert_same_bits(what: &str, a: &Tensor, b: &Tensor) {
    let (a, b) = (a.to_vec().expect("download"), b.to_vec().expect("download"));
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Two identical ResNet-20 runs of two GPU training steps in `precision` give bit-identical
/// losses and weights (no atomics, fixed reduction orders).
pub fn assert_two_runs_identical(precision: Precision, nesterov: bool, seed: u64) {
    let dev = gpu();
    let (width, batch) = model_size(16);
    let config = ResNetConfig::from_depth(20, width, None, 10).unwrap();
    let make = || {
        let mut m = ResNet::new(&config, 3);
        m.set_precision(precision);
        m.to_device(&dev).unwrap();
        m
    };
    let (mut a, mut b) = (make(), make());
    let mut r = rng(seed);
    let x = up(&rand_t(&mut r, &[batch, 3, 32, 32]), &dev);
    let labels: Vec<usize> = (0..batch).map(|_| r.gen_range(0..10)).collect();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov,
        decay_weights_only: false,
    };
    for _ in 0..2 {
        let ra = train_step(&mut a, &sgd, &x, &labels, 0.1);
        let rb = train_step(&mut b, &sgd, &x, &labels, 0.1);
        assert_eq!(
            ra.loss.to_bits(),
            rb.loss.to_bits(),
            "{precision} loss bits"
        );
    }
    for (pa, pb) in a.params_mut().into_iter().zip(b.params_mut()) {
        assert_same_bits(
            &format!("{precision} {} after two identical runs", pa.name),
            &pa.value,
            &pb.value,
        );
    }
}
