//! The training step and input pipeline: sgd.cu (the SGD step, single- and multi-tensor, and
//! `zero_tensors`), augment.cu, and the peak.cu ceiling probes behind the roofline column.

use kernels::peak::{PEAK_CHAINS, PEAK_THREADS};
use kernels_emu::*;
use rand::Rng;
use tensor::sgd::cuda::SgdSegments;

use crate::common::*;

// ---- sgd.cu --------------------------------------------------------------------------------------

/// (length, weight decay) of the SGD tests' parameter tensors: uneven, including 1-element
/// ones, across two blocks.
const SGD_SEGMENTS: [(usize, f32); 5] = [(7, 5e-4), (1, 0.0), (300, 1e-3), (3, 0.0), (1, 5e-4)];

/// Exact: the same f32 expression in the same order (no contraction under the emulator).
#[test]
fn sgd_step_matches_cpu_exactly() {
    let mut r = rng(7);
    let segs = SGD_SEGMENTS;
    let table = SgdSegments::new(&segs).unwrap();
    let total = table.total();
    let (g, b) = cfg_1d(total);
    for nesterov in [false, true] {
        let mut p = rand_vec(&mut r, total);
        let mut buf = DevVec::filled(0.0f32, total);
        let (mut tp, mut tbuf) = (p.to_vec(), buf.to_vec());
        let (offsets, weight_decay) = (dev(&table.offsets), dev(&table.weight_decay));
        for step in 0..3 {
            let grad = rand_vec(&mut r, total);
            let (lr, momentum) = (0.1f32, 0.9f32);
            unsafe {
                emu_sgd_step(
                    g,
                    b,
                    p.as_mut_ptr(),
                    grad.as_ptr(),
                    buf.as_mut_ptr(),
                    offsets.as_ptr(),
                    weight_decay.as_ptr(),
                    segs.len() as i32,
                    total as i32,
                    lr,
                    momentum,
                    i32::from(nesterov),
                )
            };
            let mut at = 0;
            for &(len, wd) in &segs {
                let cfg = tensor::sgd::SgdConfig {
                    lr,
                    momentum,
                    weight_decay: wd,
                    nesterov,
                };
                let sl = at..at + len;
                tensor::sgd::sgd_update(&mut tp[sl.clone()], &grad[sl.clone()], &mut tbuf[sl], cfg);
                at += len;
            }
            assert_bitwise(
                &format!("sgd params nesterov={nesterov} step {step}"),
                &p,
                &tp,
            );
            assert_bitwise(
                &format!("sgd bufs nesterov={nesterov} step {step}"),
                &buf,
                &tbuf,
            );
        }
    }
}

/// The multi-tensor step: separate parameter/gradient/momentum buffers per tensor, reached
/// through the address table, with lr read from memory. Same arithmetic as the CPU update per
/// tensor, so bit-exact; three steps so the momentum buffers carry over.
#[test]
fn sgd_step_tensors_matches_cpu_exactly() {
    let mut r = rng(8);
    let segs = SGD_SEGMENTS;
    let table = SgdSegments::new(&segs).unwrap();
    let total = table.total();
    let (g, b) = cfg_1d(total);
    for nesterov in [false, true] {
        let mut params: Vec<DevVec<f32>> = segs.iter().map(|&(n, _)| rand_vec(&mut r, n)).collect();
        let mut bufs: Vec<DevVec<f32>> =
            segs.iter().map(|&(n, _)| DevVec::filled(0.0, n)).collect();
        let mut tp: Vec<Vec<f32>> = params.iter().map(|p| p.to_vec()).collect();
        let mut tbuf: Vec<Vec<f32>> = bufs.iter().map(|b| b.to_vec()).collect();
        let (offsets, weight_decay) = (dev(&table.offsets), dev(&table.weight_decay));
        for step in 0..3 {
            let grads: Vec<DevVec<f32>> = segs.iter().map(|&(n, _)| rand_vec(&mut r, n)).collect();
            let ptrs: DevVec<u64> = (0..segs.len())
                .flat_map(|s| {
                    [
                        params[s].as_mut_ptr() as u64,
                        grads[s].as_ptr() as u64,
                        bufs[s].as_mut_ptr() as u64,
                    ]
                })
                .collect();
            let (lr, momentum) = (0.1f32 / (step + 1) as f32, 0.9f32);
            let lr_dev = dev(&[lr]);
            unsafe {
                emu_sgd_step_tensors(
                    g,
                    b,
                    ptrs.as_ptr(),
                    offsets.as_ptr(),
                    weight_decay.as_ptr(),
                    segs.len() as i32,
                    total as i32,
                    lr_dev.as_ptr(),
                    momentum,
                    i32::from(nesterov),
                )
            };
            for (s, &(_, wd)) in segs.iter().enumerate() {
                let cfg = tensor::sgd::SgdConfig {
                    lr,
                    momentum,
                    weight_decay: wd,
                    nesterov,
                };
                tensor::sgd::sgd_update(&mut tp[s], &grads[s], &mut tbuf[s], cfg);
                let what = format!("tensor {s} nesterov={nesterov} step {step}");
                assert_bitwise(&format!("sgd params, {what}"), &params[s], &tp[s]);
                assert_bitwise(&format!("sgd bufs, {what}"), &bufs[s], &tbuf[s]);
            }
        }
    }
}

/// One launch zeroes every listed tensor, all of each and nothing else (the guard values
/// around each buffer stay).
#[test]
fn zero_tensors_zeroes_exactly_the_listed_tensors() {
    let mut r = rng(9);
    let lens = [7usize, 1, 300, 3];
    // Each tensor sits inside a larger buffer with 2 guard values on both sides.
    let mut bufs: Vec<DevVec<f32>> = lens.iter().map(|&n| rand_vec(&mut r, n + 4)).collect();
    let before: Vec<Vec<f32>> = bufs.iter().map(|b| b.to_vec()).collect();
    let ptrs: DevVec<u64> = bufs
        .iter_mut()
        .map(|b| b[2..].as_mut_ptr() as u64)
        .collect();
    let table = SgdSegments::new(&lens.map(|n| (n, 0.0))).unwrap();
    let offsets = dev(&table.offsets);
    let (g, b) = cfg_1d(table.total());
    unsafe {
        emu_zero_tensors(
            g,
            b,
            ptrs.as_ptr(),
            offsets.as_ptr(),
            lens.len() as i32,
            table.total() as i32,
        )
    };
    for (s, (buf, old)) in bufs.iter().zip(&before).enumerate() {
        let n = lens[s];
        assert!(
            buf[2..2 + n].iter().all(|&v| v == 0.0),
            "tensor {s} not zeroed"
        );
        assert_eq!(&buf[..2], &old[..2], "guard before tensor {s}");
        assert_eq!(&buf[2 + n..], &old[2 + n..], "guard after tensor {s}");
    }
}

// ---- peak.cu -------------------------------------------------------------------------------------

/// The ceiling probes compute what they claim (so the FLOP counts behind the roofline column
/// are real work): small-integer operands make every partial sum exact, so the twin below —
/// the matrices spelled out from the PTX fragment tables — predicts each output bit for bit.
#[test]
fn peak_probes_compute_what_they_count() {
    let threads = PEAK_THREADS as usize;
    let (g, b) = (
        Dim3 { x: 1, y: 1, z: 1 },
        Dim3 {
            x: threads as u32,
            y: 1,
            z: 1,
        },
    );
    let iters = 3;

    // A[row][col] and B[k][n] of peak_mma_bf16, from its per-lane registers.
    let a = |row: usize, col: usize| {
        let (lane, reg) = ((row % 8) * 4 + (col % 8) / 2, (row / 8) + 2 * (col / 8));
        (if col % 2 == 1 {
            (lane + 2 * reg) % 2
        } else {
            (lane + reg) % 3
        }) as f32
    };
    let bm = |k: usize, n: usize| {
        let (lane, reg) = (n * 4 + (k % 8) / 2, k / 8);
        (if k % 2 == 1 {
            (lane * 3 + reg) % 3
        } else {
            (lane + reg) % 2
        }) as f32
    };
    let d = |row: usize, col: usize| {
        iters as f32 * (0..16).map(|k| a(row, k) * bm(k, col)).sum::<f32>()
    };
    let mut out = nan_vec(threads);
    unsafe { emu_peak_mma_bf16(g, b, out.as_mut_ptr(), iters, 1.0) };
    for (t, &got) in out.iter().enumerate() {
        let (gr, tg) = ((t % 32) / 4, t % 4);
        let mine: f32 = [
            (gr, 2 * tg),
            (gr, 2 * tg + 1),
            (gr + 8, 2 * tg),
            (gr + 8, 2 * tg + 1),
        ]
        .iter()
        .map(|&(r, c)| d(r, c))
        .sum();
        // Chain j starts at j in each of its 4 accumulators: 4 * (0 + 1 + ... + 7) on top.
        let seeds = 4.0 * (0..PEAK_CHAINS).sum::<u64>() as f32;
        assert_eq!(
            got,
            PEAK_CHAINS as f32 * mine + seeds,
            "peak_mma_bf16 thread {t}"
        );
    }

    let mut out = nan_vec(threads);
    unsafe { emu_peak_fma_f32(g, b, out.as_mut_ptr(), iters, 1.0) };
    for (t, &got) in out.iter().enumerate() {
        let want: f32 = (0..8)
            .map(|j| ((t + j) % 4) as f32 + iters as f32 * (j + 1) as f32)
            .sum();
        assert_eq!(got, want, "peak_fma_f32 thread {t}");
    }
}

// ---- augment.cu ----------------------------------------------------------------------------------

/// Exact: augment.cu documents bit-for-bit agreement with `data::write_sample` (same scale/pad
/// formula, __fmul_rn against contraction).
#[test]
fn augment_batch_matches_write_sample_exactly() {
    let mut r = rng(8);
    let (side, plane) = (data::IMAGE_SIDE, 3 * data::IMAGE_SIDE * data::IMAGE_SIDE);
    let ndata = 4;
    let images: DevVec<u8> = (0..ndata * plane).map(|_| r.gen()).collect();
    let labels: DevVec<u8> = (0..ndata).map(|_| r.gen_range(0..100)).collect();
    let norm = data::Normalization {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.247, 0.2435, 0.2616],
    };
    // (idx, ox, oy, flip): extreme shifts both ways with and without flip, identity, random.
    let mut params = vec![[1, 4, -4, 1], [3, -4, 4, 0], [0, 0, 0, 0]];
    params.push([
        r.gen_range(0..ndata as i32),
        r.gen_range(-4..=4),
        r.gen_range(-4..=4),
        r.gen_range(0..2),
    ]);
    let batch = params.len();
    let flat: DevVec<i32> = params.iter().flatten().copied().collect();
    let mut out = nan_vec(batch * plane);
    let mut out_labels = DevVec::filled(-1i32, batch);
    let (g, b) = cfg_1d(batch * plane);
    unsafe {
        emu_augment_batch(
            g,
            b,
            images.as_ptr(),
            labels.as_ptr(),
            flat.as_ptr(),
            out.as_mut_ptr(),
            out_labels.as_mut_ptr(),
            batch as i32,
            side as i32,
            side as i32,
            norm.mean[0],
            norm.mean[1],
            norm.mean[2],
            norm.std[0],
            norm.std[1],
            norm.std[2],
        )
    };
    for (s, &[idx, ox, oy, flip]) in params.iter().enumerate() {
        let mut want = vec![0.0f32; plane];
        let aug = data::SampleAug {
            dx: ox,
            dy: oy,
            flip: flip != 0,
        };
        let idx = idx as usize;
        data::write_sample(
            &images[idx * plane..(idx + 1) * plane],
            aug,
            &norm,
            &mut want,
        );
        assert_bitwise(
            &format!("augment sample {s} {aug:?}"),
            &out[s * plane..(s + 1) * plane],
            &want,
        );
        assert_eq!(out_labels[s], labels[idx] as i32, "augment label {s}");
    }
}
