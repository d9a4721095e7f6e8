//! The layer kernels other than conv and BatchNorm: elementwise.cu, shortcut.cu, pool_fc.cu
//! (average pool and linear) and loss.cu (softmax cross-entropy).

use kernels_emu::*;
use rand::Rng;
use tensor::linear::LinearShape;
use tensor::loss::cuda::XENT_THREADS;
use tensor::shortcut::ShortcutShape;
use tensor::Tensor;

use crate::common::*;

// ---- elementwise.cu ------------------------------------------------------------------------------

/// Exact: one f32 compare or add per element on both sides.
#[test]
fn elementwise_kernels_match_cpu_exactly() {
    let mut r = rng(1);
    // 1 element, < 1 block, several blocks with a ragged last one.
    for shape in [[1usize, 1, 1, 1], [1, 3, 5, 7], [3, 7, 4, 4], [3, 5, 9, 9]] {
        let n: usize = shape.iter().product();
        let (g, b) = cfg_1d(n);
        let ni = n as i32;
        let (x, x2, dy) = (
            rand_vec(&mut r, n),
            rand_vec(&mut r, n),
            rand_vec(&mut r, n),
        );
        let (tx, tx2, tdy) = (
            Tensor::from_vec(&shape, x.to_vec()),
            Tensor::from_vec(&shape, x2.to_vec()),
            Tensor::from_vec(&shape, dy.to_vec()),
        );

        let mut y = nan_vec(n);
        unsafe { emu_relu_forward(g, b, x.as_ptr(), y.as_mut_ptr(), ni) };
        let ty = tensor::elementwise::relu_forward(&tx);
        assert_bitwise("relu_forward", &y, ty.data());

        // In place (y aliases x), which elementwise.cu documents as allowed.
        let mut inplace = x.clone();
        let p = inplace.as_mut_ptr();
        unsafe { emu_relu_forward(g, b, p, p, ni) };
        assert_bitwise("relu_forward in place", &inplace, ty.data());

        let mut dx = nan_vec(n);
        unsafe { emu_relu_backward(g, b, dy.as_ptr(), y.as_ptr(), dx.as_mut_ptr(), ni) };
        let tdx = tensor::elementwise::relu_backward(&tdy, &ty);
        assert_bitwise("relu_backward", &dx, tdx.data());

        let mut s = nan_vec(n);
        unsafe { emu_add_forward(g, b, x.as_ptr(), x2.as_ptr(), s.as_mut_ptr(), ni) };
        let ts = tensor::elementwise::add(&tx, &tx2);
        assert_bitwise("add_forward", &s, ts.data());

        let mut sr = nan_vec(n);
        unsafe { emu_add_relu_forward(g, b, x.as_ptr(), x2.as_ptr(), sr.as_mut_ptr(), ni) };
        let tsr = tensor::elementwise::relu_forward(&ts);
        assert_bitwise("add_relu_forward", &sr, tsr.data());

        let mut acc = x.clone();
        unsafe { emu_accumulate(g, b, acc.as_mut_ptr(), x2.as_ptr(), ni) };
        let mut tacc = tx.clone();
        tensor::elementwise::add_assign(&mut tacc, &tx2);
        assert_bitwise("accumulate", &acc, tacc.data());
    }
}

// ---- shortcut.cu ---------------------------------------------------------------------------------

/// Exact: pure gathers; beta = 1 is fmaf(1, old, v) = old + v rounded once, as the CPU add.
#[test]
fn shortcut_kernels_match_cpu_exactly() {
    let mut r = rng(2);
    // (n, cin, h, w, cout, stride): odd sizes with stride 2, equal channels, 1x1 map.
    for (n, cin, h, w, cout, s) in [
        (1, 3, 4, 4, 5, 2),
        (3, 5, 7, 7, 7, 2),
        (3, 3, 5, 3, 3, 1),
        (1, 7, 1, 1, 9, 2),
    ] {
        let shape = ShortcutShape {
            n,
            c_in: cin,
            h,
            w,
            c_out: cout,
            stride: s,
        };
        let (oh, ow) = (shape.oh(), shape.ow());
        let x = rand_vec(&mut r, shape.x_len());
        let tx = Tensor::from_vec(&[n, cin, h, w], x.to_vec());
        let ints = [n, cin, h, w, cout, oh, ow, s].map(|v| v as i32);

        let (g, b) = cfg_1d(shape.y_len());
        let mut y = nan_vec(shape.y_len());
        unsafe {
            emu_shortcut_forward(
                g,
                b,
                x.as_ptr(),
                y.as_mut_ptr(),
                ints[0],
                ints[1],
                ints[2],
                ints[3],
                ints[4],
                ints[5],
                ints[6],
                ints[7],
            )
        };
        let ty = tensor::shortcut::pad_shortcut_forward(&tx, cout, s);
        assert_eq!(ty.shape(), [n, cout, oh, ow]);
        assert_bitwise("shortcut_forward", &y, ty.data());

        let dy = rand_vec(&mut r, shape.y_len());
        let tdy = Tensor::from_vec(&[n, cout, oh, ow], dy.to_vec());
        let tdx = tensor::shortcut::pad_shortcut_backward(&tdy, &[n, cin, h, w], s);
        let (g, b) = cfg_1d(shape.x_len());
        for beta in [0.0f32, 1.0] {
            let old = if beta == 0.0 {
                nan_vec(shape.x_len())
            } else {
                rand_vec(&mut r, shape.x_len())
            };
            let mut dx = old.clone();
            unsafe {
                emu_shortcut_backward(
                    g,
                    b,
                    dy.as_ptr(),
                    dx.as_mut_ptr(),
                    ints[0],
                    ints[1],
                    ints[2],
                    ints[3],
                    ints[4],
                    ints[5],
                    ints[6],
                    ints[7],
                    beta,
                )
            };
            let want = if beta == 0.0 {
                tdx.data().to_vec()
            } else {
                add_vec(&old, tdx.data())
            };
            assert_bitwise(&format!("shortcut_backward beta={beta}"), &dx, &want);
        }
    }
}

// ---- pool_fc.cu ----------------------------------------------------------------------------------

/// avgpool: the kernel sums in f32, the twin in f64 (≤ HW·ε ≈ 3e-6 here); backward divides by
/// HW where the twin multiplies by 1/HW (≤ 1 ulp). Linear: serial fmaf chains vs the twin's
/// blocked GEMM (different order).
#[test]
fn pool_and_linear_kernels_match_cpu() {
    let mut r = rng(3);
    for (n, c, h, w) in [(1, 3, 4, 4), (3, 5, 7, 7), (3, 7, 1, 1), (3, 64, 8, 8)] {
        let (nc, hw) = (n * c, h * w);
        let x = rand_vec(&mut r, nc * hw);
        let tx = Tensor::from_vec(&[n, c, h, w], x.to_vec());
        let (g, b) = cfg_1d(nc);
        let mut y = nan_vec(nc);
        unsafe { emu_avgpool_forward(g, b, x.as_ptr(), y.as_mut_ptr(), nc as i32, hw as i32) };
        let ty = tensor::pool::global_avg_pool_forward(&tx);
        assert_close("avgpool_forward", &y, ty.data(), TOL);

        let dy = rand_vec(&mut r, nc);
        let tdx = tensor::pool::global_avg_pool_backward(
            &Tensor::from_vec(&[n, c], dy.to_vec()),
            &[n, c, h, w],
        );
        let (g, b) = cfg_1d(nc * hw);
        let mut dx = nan_vec(nc * hw);
        unsafe { emu_avgpool_backward(g, b, dy.as_ptr(), dx.as_mut_ptr(), nc as i32, hw as i32) };
        assert_close("avgpool_backward", &dx, tdx.data(), TOL);
    }

    // (n, in, out): 1 row, odd sizes, the real head (64 -> 10 / 100) at batch 3.
    for (n, fin, fout) in [(1, 3, 5), (3, 7, 10), (3, 64, 10), (1, 64, 100)] {
        let shape = LinearShape {
            n,
            in_features: fin,
            out_features: fout,
        };
        let [ni, fi, fo] = [n, fin, fout].map(|v| v as i32);
        let x = rand_vec(&mut r, n * fin);
        let w = rand_vec(&mut r, fout * fin);
        let bias = rand_vec(&mut r, fout);
        let dy = rand_vec(&mut r, n * fout);
        let (tx, tw, tb, tdy) = (
            Tensor::from_vec(&[n, fin], x.to_vec()),
            Tensor::from_vec(&[fout, fin], w.to_vec()),
            Tensor::from_vec(&[fout], bias.to_vec()),
            Tensor::from_vec(&[n, fout], dy.to_vec()),
        );

        let (g, b) = cfg_1d(shape.n * shape.out_features);
        let mut y = nan_vec(n * fout);
        unsafe {
            emu_linear_forward(
                g,
                b,
                x.as_ptr(),
                w.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                ni,
                fi,
                fo,
            )
        };
        let ty = tensor::linear::linear_forward(&tx, &tw, &tb);
        assert_close("linear_forward", &y, ty.data(), TOL);

        for beta in [0.0f32, 1.0] {
            let (dw0, db0) = if beta == 0.0 {
                (DevVec::filled(0.0, fout * fin), DevVec::filled(0.0, fout))
            } else {
                (rand_vec(&mut r, fout * fin), rand_vec(&mut r, fout))
            };
            // The twin accumulates (dW += ...): start it from dw0 (0 stands for "overwrite").
            let mut tdw = Tensor::from_vec(&[fout, fin], dw0.to_vec());
            let mut tdb = Tensor::from_vec(&[fout], db0.to_vec());
            let tdx = tensor::linear::linear_backward(&tdy, &tx, &tw, &mut tdw, &mut tdb);

            let (g, b) = cfg_1d(shape.n * shape.in_features);
            let mut dx = nan_vec(n * fin);
            unsafe {
                emu_linear_backward_data(g, b, dy.as_ptr(), w.as_ptr(), dx.as_mut_ptr(), ni, fi, fo)
            };
            assert_close("linear_backward_data", &dx, tdx.data(), TOL);

            let (mut dw, mut db) = if beta == 0.0 {
                (nan_vec(fout * fin), nan_vec(fout))
            } else {
                (dw0.clone(), db0.clone())
            };
            let (g, b) = cfg_1d(shape.out_features * (shape.in_features + 1));
            unsafe {
                emu_linear_backward_weight(
                    g,
                    b,
                    dy.as_ptr(),
                    x.as_ptr(),
                    dw.as_mut_ptr(),
                    db.as_mut_ptr(),
                    ni,
                    fi,
                    fo,
                    beta,
                )
            };
            assert_close(&format!("linear dW beta={beta}"), &dw, tdw.data(), TOL);
            assert_close(&format!("linear db beta={beta}"), &db, tdb.data(), TOL);
        }
    }
}

// ---- loss.cu -------------------------------------------------------------------------------------

/// The kernel sums exp in f32, the twin in f64: loss and dlogits within 1e-5 relative; the
/// correct count is exact (same strict-greater argmax, ties to the lowest index).
#[test]
fn softmax_xent_kernels_match_cpu() {
    let mut r = rng(6);
    let (grid, block) = (
        Dim3 { x: 1, y: 1, z: 1 }, // launch/loss.rs xent_config(): one block of XENT_THREADS
        Dim3 {
            x: XENT_THREADS,
            y: 1,
            z: 1,
        },
    );
    // (n, classes, offset): 1 row, 3 classes, CIFAR-100 width, more rows (300) than threads,
    // and logits around 1000 (the max shift must keep it finite).
    for (n, k, offset) in [
        (1, 10, 0.0f32),
        (3, 3, 0.0),
        (5, 100, 0.0),
        (300, 10, 0.0),
        (7, 10, 1000.0),
    ] {
        let mut z: DevVec<f32> = rand_vec(&mut r, n * k)
            .iter()
            .map(|v| 4.0 * v + offset)
            .collect();
        let labels: Vec<usize> = (0..n).map(|_| r.gen_range(0..k)).collect();
        // Row 0: an exact tie between the label and the class before it (argmax -> lower index).
        if labels[0] > 0 {
            z[labels[0]] = offset + 5.0;
            z[labels[0] - 1] = offset + 5.0;
        }
        let lab_i32: DevVec<i32> = labels.iter().map(|&l| l as i32).collect();
        let twin =
            tensor::loss::softmax_cross_entropy(&Tensor::from_vec(&[n, k], z.to_vec()), &labels);
        let want_sum = twin.loss as f64 * n as f64;

        // Accumulators start non-zero: the kernel must add, not overwrite.
        let (mut loss_acc, mut correct_acc) = (dev(&[0.25f64]), dev(&[3i32]));
        let mut dz = nan_vec(n * k);
        unsafe {
            emu_softmax_xent_forward_backward(
                grid,
                block,
                z.as_ptr(),
                lab_i32.as_ptr(),
                dz.as_mut_ptr(),
                loss_acc.as_mut_ptr(),
                correct_acc.as_mut_ptr(),
                n as i32,
                k as i32,
            )
        };
        let tag = format!("n={n} k={k} offset={offset}");
        let e = ((loss_acc[0] - 0.25) - want_sum).abs() / want_sum.abs();
        assert!(
            e <= TOL,
            "xent loss {tag}: {} vs {want_sum}, rel {e:.3e}",
            loss_acc[0] - 0.25
        );
        assert_eq!(
            correct_acc[0] - 3,
            twin.correct as i32,
            "xent correct {tag}"
        );
        assert_close(
            &format!("xent dlogits {tag}"),
            &dz,
            twin.dlogits.data(),
            TOL,
        );

        let (mut loss_acc, mut correct_acc) = (dev(&[0.25f64]), dev(&[3i32]));
        unsafe {
            emu_softmax_xent_forward(
                grid,
                block,
                z.as_ptr(),
                lab_i32.as_ptr(),
                loss_acc.as_mut_ptr(),
                correct_acc.as_mut_ptr(),
                n as i32,
                k as i32,
            )
        };
        let e = ((loss_acc[0] - 0.25) - want_sum).abs() / want_sum.abs();
        assert!(e <= TOL, "xent eval loss {tag}: rel {e:.3e}");
        assert_eq!(
            correct_acc[0] - 3,
            twin.correct as i32,
            "xent eval correct {tag}"
        );
    }
}
