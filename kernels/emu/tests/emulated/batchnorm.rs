//! batchnorm.cu: training and eval forward and backward against the f64 twin, with the
//! launcher's chunked configuration and with more chunks than threads.

use kernels_emu::*;
use rand_chacha::ChaCha8Rng;
use tensor::batchnorm::cuda as kl;
use tensor::Tensor;

use crate::common::*;

/// One BatchNorm case through the emulator against the twin: training forward (both launches),
/// eval forward (when `eval`), backward (both launches). `grid` / `block` are the chunked kernels' launch
/// configuration and `workspace` its length; every output and the workspace start as NaN
/// (a value that is read before it is written, or a chunk that is never written, shows up).
/// dgamma / dbeta accumulate onto random old values.
fn bn_case(
    r: &mut ChaCha8Rng,
    (n, c, h, w): (usize, usize, usize, usize),
    relu: bool,
    (grid, block): (Dim3, Dim3),
    workspace: usize,
    eval: bool,
) {
    let (momentum, eps) = (tensor::batchnorm::BN_MOMENTUM, 1e-5f32);
    let shape = kl::BnShape { n, c, hw: h * w };
    let tag = format!("{shape:?} relu={relu} grid={grid:?} block={}", block.x);
    let len = shape.len();
    let [ni, ci, hwi, ri] = [n, c, h * w, usize::from(relu)].map(|v| v as i32);
    let relu_t = |t: Tensor| {
        if relu {
            tensor::elementwise::relu_forward(&t)
        } else {
            t
        }
    };
    let x: DevVec<f32> = rand_vec(r, len).iter().map(|v| 2.0 * v + 1.5).collect();
    let gamma = rand_vec(r, c);
    let beta = rand_vec(r, c);
    let rm0 = rand_vec(r, c);
    let rv0: DevVec<f32> = rand_vec(r, c).iter().map(|v| v.abs()).collect();
    let dy = rand_vec(r, len);
    let tx = Tensor::from_vec(&[n, c, h, w], x.to_vec());

    let (mut trm, mut trv) = (rm0.clone(), rv0.clone());
    let (ty, saved) = tensor::batchnorm::batchnorm_train_forward(
        &tx, &gamma, &beta, &mut trm, &mut trv, momentum, eps,
    );
    let ty = relu_t(ty);
    let (mut y, mut rm, mut rv, mut sm, mut si) = (
        nan_vec(len),
        rm0.clone(),
        rv0.clone(),
        nan_vec(c),
        nan_vec(c),
    );
    let mut part = nan_vec(workspace);
    unsafe {
        emu_batchnorm_forward_train_partial(
            grid,
            block,
            x.as_ptr(),
            part.as_mut_ptr(),
            ni,
            ci,
            hwi,
        );
        emu_batchnorm_forward_train_apply(
            grid,
            block,
            x.as_ptr(),
            part.as_ptr(),
            y.as_mut_ptr(),
            gamma.as_ptr(),
            beta.as_ptr(),
            rm.as_mut_ptr(),
            rv.as_mut_ptr(),
            sm.as_mut_ptr(),
            si.as_mut_ptr(),
            ni,
            ci,
            hwi,
            momentum,
            eps,
            ri,
        )
    };
    assert_close(&format!("bn train y {tag}"), &y, ty.data(), TOL);
    assert_close(&format!("bn save_mean {tag}"), &sm, &saved.mean, TOL);
    assert_close(&format!("bn save_invstd {tag}"), &si, &saved.invstd, TOL);
    assert_close(&format!("bn running_mean {tag}"), &rm, &trm, TOL);
    assert_close(&format!("bn running_var {tag}"), &rv, &trv, TOL);
    if relu {
        assert!(
            y.iter().all(|&v| v >= 0.0),
            "bn+relu output has negatives {tag}"
        );
    }

    if eval {
        let tye = relu_t(tensor::batchnorm::batchnorm_eval_forward(
            &tx, &gamma, &beta, &rm0, &rv0, eps,
        ));
        let (g, b) = cfg_1d(len);
        let mut ye = nan_vec(len);
        unsafe {
            emu_batchnorm_forward_eval(
                g,
                b,
                x.as_ptr(),
                ye.as_mut_ptr(),
                gamma.as_ptr(),
                beta.as_ptr(),
                rm0.as_ptr(),
                rv0.as_ptr(),
                ni,
                ci,
                hwi,
                eps,
                ri,
            )
        };
        assert_close(&format!("bn eval y {tag}"), &ye, tye.data(), TOL);
    }

    // Backward from the twin's saved statistics and output, so both sides see identical
    // inputs.
    let dg0 = rand_vec(r, c);
    let db0 = rand_vec(r, c);
    let (mut tdg, mut tdb) = (dg0.clone(), db0.clone());
    let tdy = Tensor::from_vec(&[n, c, h, w], dy.to_vec());
    let tdy = if relu {
        tensor::elementwise::relu_backward(&tdy, &ty)
    } else {
        tdy
    };
    let tdx = tensor::batchnorm::batchnorm_backward(&tx, &tdy, &gamma, &saved, &mut tdg, &mut tdb);
    let (mut dx, mut dg, mut db) = (nan_vec(len), dg0.clone(), db0.clone());
    // Without ReLU the kernels must not read relu_out: hand them NaNs.
    let relu_out = if relu { dev(ty.data()) } else { nan_vec(len) };
    let (save_mean, save_invstd) = (dev(&saved.mean), dev(&saved.invstd));
    let mut part = nan_vec(workspace);
    unsafe {
        emu_batchnorm_backward_partial(
            grid,
            block,
            dy.as_ptr(),
            x.as_ptr(),
            save_mean.as_ptr(),
            save_invstd.as_ptr(),
            relu_out.as_ptr(),
            part.as_mut_ptr(),
            ni,
            ci,
            hwi,
            ri,
        );
        emu_batchnorm_backward_apply(
            grid,
            block,
            dy.as_ptr(),
            x.as_ptr(),
            gamma.as_ptr(),
            save_mean.as_ptr(),
            save_invstd.as_ptr(),
            relu_out.as_ptr(),
            part.as_ptr(),
            dx.as_mut_ptr(),
            dg.as_mut_ptr(),
            db.as_mut_ptr(),
            ni,
            ci,
            hwi,
            ri,
        )
    };
    assert_close(&format!("bn dx {tag}"), &dx, tdx.data(), TOL);
    assert_close(&format!("bn dgamma {tag}"), &dg, &tdg, TOL);
    assert_close(&format!("bn dbeta {tag}"), &db, &tdb, TOL);
}

/// The kernels reduce in f32 (per-chunk two-pass from registers, fixed block trees, Chan's
/// combine across chunks), the twin in f64; outputs agree to ~1e-6. x has a non-zero mean (1.5)
/// so the mean/running-mean vectors are not cancellation noise. Launched exactly as
/// `BnShape::chunked_config` launches them, with `stats_workspace_len` floats of workspace.
#[test]
fn batchnorm_kernels_match_cpu() {
    let mut r = rng(5);
    // (n, c, h, w): batch 1 and 3, odd channels, 1x1 and 4x4 maps, a channel of 512 > 256
    // values: one chunk each. Then channels of several chunks (BN_CHUNK = 4096 values) with a
    // ragged last chunk and chunk boundaries inside an image: 130 x 8x8 = 8320 = 2 chunks + 128
    // (ResNet's last stage, 64 values an image), 5 x 43x43 = 9245 = 2 chunks + 1053.
    // Each without and with the fused ReLU (twin: BN, then relu / relu backward, then BN
    // backward). The eval kernel (elementwise, grid_1d) runs on the one-chunk shapes only: on
    // the big ones it would only add emulated blocks, no new index path.
    let mut multi = 0;
    for (dims, relu) in [
        (1, 3, 4, 4),
        (3, 5, 4, 4),
        (3, 7, 1, 1),
        (3, 7, 7, 7),
        (2, 3, 16, 16),
        (130, 2, 8, 8),
        (5, 2, 43, 43),
    ]
    .into_iter()
    .flat_map(|s| [(s, false), (s, true)])
    {
        let (n, c, h, w) = dims;
        let shape = kl::BnShape { n, c, hw: h * w };
        let cfg = shape.chunked_config();
        let one_chunk = shape.chunks() == 1;
        if !one_chunk {
            assert!(shape.chunks() > 2, "{shape:?}");
            assert_ne!(shape.per_channel() % kl::BN_CHUNK, 0, "ragged {shape:?}");
            multi += 1;
        }
        let cfg = (cfg.grid_dim.into(), cfg.block_dim.into());
        bn_case(
            &mut r,
            dims,
            relu,
            cfg,
            shape.stats_workspace_len(),
            one_chunk,
        );
    }
    assert_eq!(multi, 4, "multi-chunk cases");
}

/// The kernels take their chunk length from blockDim (BN_PER_THREAD values a thread) and work
/// for any blockDim that is a multiple of 32. With 32 threads (chunks of 512) a channel of
/// 2 x 97x97 = 18818 values has 37 chunks, more than the block has threads: this covers the
/// strided cross-chunk combine (a thread takes chunks t and t + 32) that the launcher's 256
/// threads only reach from about a million values per channel on. With ReLU only (the plain
/// path is the same code with the mask off, covered above).
#[test]
fn batchnorm_kernels_combine_more_chunks_than_threads() {
    let mut r = rng(15);
    let (n, c, h, w) = (2usize, 1usize, 97usize, 97usize);
    let threads = 32u32;
    let chunks = (n * h * w).div_ceil(kl::BN_PER_THREAD * threads as usize);
    assert_eq!(chunks, 37);
    let grid = Dim3 {
        x: chunks as u32,
        y: c as u32,
        z: 1,
    };
    let block = Dim3 {
        x: threads,
        y: 1,
        z: 1,
    };
    bn_case(
        &mut r,
        (n, c, h, w),
        true,
        (grid, block),
        2 * c * chunks,
        false,
    );
}
