//! Helpers for the op tests: seeded random tensors, closeness, and the finite-difference
//! gradient check every backward pass is held to.

use crate::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in ±[0.1, 1): random, and never zero, so no term of a gradient can hide.
pub fn rand_tensor(r: &mut impl Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let v: f32 = r.gen_range(0.1..1.0);
            if r.gen::<bool>() {
                v
            } else {
                -v
            }
        })
        .collect();
    Tensor::from_vec(shape, data)
}

/// `<a, b>` in f64: a scalar loss `L = <y, probe>` whose gradient with respect to `y` is `probe`.
pub fn dot(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum()
}

/// `‖got − want‖ / ‖want‖ ≤ tol`.
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let err: f64 = got
        .data()
        .iter()
        .zip(want.data())
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let rel = (err / want.sum_sq().max(1e-30)).sqrt();
    assert!(rel <= tol, "relative error {rel:.3e} > {tol:.0e}");
}

/// Check `analytic` = dL/dx against central differences `(L(x+h) − L(x−h)) / 2h`, with
/// `h = 1e-2`, on every entry (up to 300 spread over the tensor).
///
/// Tolerance, for f32 forward passes: an entry passes when `|fd − an| ≤ 2e-2·|an| + 2e-3·g`,
/// `g` the largest |gradient| entry. The loss is summed in f64, but each y is f32, so
/// rounding puts ~1e-7·Σ|y·probe| of noise on L, which the 2h = 2e-2 divisor turns into
/// ~1e-4 of absolute error for our sizes; curvature (BN, softmax) adds O(h²) ≈ 1e-4
/// relative. The bounds leave 10x headroom over both and still catch any wrong term,
/// which would be off by O(1).
pub fn check_grad(name: &str, x: &Tensor, analytic: &Tensor, loss: impl Fn(&Tensor) -> f64) {
    assert_eq!(x.shape(), analytic.shape(), "{name}: gradient shape");
    let h = 1e-2f32;
    let g = analytic
        .data()
        .iter()
        .fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let step = (x.len() / 300).max(1);
    let mut xp = x.clone();
    for i in (0..x.len()).step_by(step) {
        let orig = xp.data()[i];
        xp.data_mut()[i] = orig + h;
        let up = loss(&xp);
        xp.data_mut()[i] = orig - h;
        let down = loss(&xp);
        xp.data_mut()[i] = orig;
        let fd = (up - down) / (2.0 * h as f64);
        let an = analytic.data()[i] as f64;
        assert!(
            (fd - an).abs() <= 2e-2 * an.abs() + 2e-3 * g,
            "{name}[{i}]: finite difference {fd:.6e} vs analytic {an:.6e} (max |grad| {g:.3e})"
        );
    }
}
