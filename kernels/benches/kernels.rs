//! Every CUDA kernel at the real shapes of ResNet-20 (widths 16/32/64, maps 32/16/8) and
//! ResNet-34 width 64 (widths 64/128/256/512, maps 32/16/8/4), batch 128.
//! `cargo bench -p kernels` (see kernels/README.md, "Benchmarks"): each op's
//! launcher, as the training step calls it.
//!
//! IDs are `<kernel>/<model>_<what>_<C>x<H>x<W>` with the kernel's *input* shape, e.g.
//! `conv3x3_fwd/r20_s1_16x32x32`: `stem` = 3 -> width, `s1` = C -> C, `s2` = C -> 2C with
//! stride 2 (the first conv of a stage, and the 1x1 option-B projection); `conv*_bf16` groups are
//! the tensor-core kernels (`--precision bf16`) on the same shapes. Times are device
//! times from CUDA events around a batch of launches; see `harness` for the throughput columns.

mod harness;

use criterion::Criterion;
use harness::{Bench, Fill, Work};
use kernels::{peak, Gpu};
use tensor::batchnorm::cuda::{self as bn, BnParams, BnShape};
use tensor::conv::cuda::{conv2d, ConvPass};
use tensor::conv::ConvShape;
use tensor::elementwise::cuda::{self as elementwise, Binary};
use tensor::linear::cuda::{self as linear, LinearShape};
use tensor::shortcut::cuda::{self as shortcut, ShortcutShape};
use tensor::{loss, pool, sgd, Precision};

const BATCH: usize = 128;
const CLASSES: usize = 10;
const F: u64 = 4; // bytes per f32

/// A CIFAR ResNet of basic blocks: 3x3 stem to `widths[0]` at 32x32, stage i at width
/// `widths[i]` and map 32 >> i, stride 2 at the first block of every stage after the first.
struct Model {
    tag: &'static str,
    widths: &'static [usize],
    blocks: &'static [usize],
    params: usize,
}

const MODELS: [Model; 2] = [
    Model {
        tag: "r20",
        widths: &[16, 32, 64],
        blocks: &[3, 3, 3],
        params: 269_722,
    },
    Model {
        tag: "r34",
        widths: &[64, 128, 256, 512],
        blocks: &[3, 4, 6, 3],
        params: 21_108_298,
    },
];

impl Model {
    fn map(&self, stage: usize) -> usize {
        32 >> stage
    }
    /// (label, conv shape) of every distinct conv: stem, then per stage the s1 conv and (after
    /// the first stage) the stride-2 conv entering it.
    fn convs(&self, k: usize) -> Vec<(String, ConvShape)> {
        let conv = |c_in, h, c_out, stride| {
            ConvShape::new(&[BATCH, c_in, h, h], &[c_out, c_in, k, k], stride)
        };
        let mut v = Vec::new();
        if k == 3 {
            v.push(("stem".to_string(), conv(3, 32, self.widths[0], 1)));
        }
        for (i, &c) in self.widths.iter().enumerate() {
            if i > 0 {
                let prev = self.widths[i - 1];
                v.push(("s2".into(), conv(prev, self.map(i - 1), c, 2)));
            }
            if k == 3 {
                v.push(("s1".into(), conv(c, self.map(i), c, 1)));
            }
        }
        v
    }
    /// Activation shapes (one per stage) for BN and the elementwise kernels.
    fn activations(&self) -> Vec<BnShape> {
        (self.widths.iter().enumerate())
            .map(|(i, &c)| BnShape {
                n: BATCH,
                c,
                hw: self.map(i) * self.map(i),
            })
            .collect()
    }
    /// (len, weight decay) of every parameter tensor, in the model's order.
    fn param_segments(&self) -> Vec<(usize, f32)> {
        const WD: f32 = 5e-4;
        let mut s = vec![(9 * 3 * self.widths[0], WD)];
        let bn = |s: &mut Vec<(usize, f32)>, c| s.extend([(c, 0.0), (c, 0.0)]);
        bn(&mut s, self.widths[0]);
        let mut c_in = self.widths[0];
        for (&c, &blocks) in self.widths.iter().zip(self.blocks) {
            for _ in 0..blocks {
                s.push((9 * c_in * c, WD));
                bn(&mut s, c);
                s.push((9 * c * c, WD));
                bn(&mut s, c);
                c_in = c;
            }
        }
        s.extend([(CLASSES * c_in, WD), (CLASSES, 0.0)]);
        s
    }
    fn last(&self) -> (usize, usize) {
        let i = self.widths.len() - 1;
        (self.widths[i], self.map(i) * self.map(i))
    }
}

fn act_id(m: &Model, s: &BnShape) -> String {
    let h = (s.hw as f64).sqrt() as usize;
    format!("{}_{}x{h}x{h}", m.tag, s.c)
}

fn act_shape(s: &BnShape) -> String {
    let h = (s.hw as f64).sqrt() as usize;
    format!("{}x{}x{h}x{h}", s.n, s.c)
}

type Res<T> = kernels::Result<T>;

fn bench_convs(b: &mut Bench, m: &Model, fill: &mut Fill) -> Res<()> {
    let gpu = b.gpu;
    for k in [3, 1] {
        for (what, s) in m.convs(k) {
            let id = format!("{}_{what}_{}x{}x{}", m.tag, s.c_in, s.h, s.w);
            let shape = format!(
                "{}x{}x{}x{} -> {}x{}x{}",
                s.n, s.c_in, s.h, s.w, s.c_out, s.oh, s.ow
            );
            let flops = Work::Flops((2 * s.n * s.c_out * s.c_in * k * k * s.oh * s.ow) as u64);
            let x = gpu.upload(&fill.f32s(s.x_len()))?;
            let w = gpu.upload(&fill.f32s(s.w_len()))?;
            let dy = gpu.upload(&fill.f32s(s.y_len()))?;
            let mut y = gpu.zeros::<f32>(s.y_len())?;
            let mut dx = gpu.zeros::<f32>(s.x_len())?;
            let mut dw = gpu.zeros::<f32>(s.w_len())?;
            let mut ws = gpu.zeros::<f32>(s.weight_grad_workspace_len())?;
            for p in [Precision::Fp32, Precision::Bf16] {
                // fp32 keeps its historical group names; bf16 gets a suffix and is measured
                // against the tensor-core ceiling.
                let (suffix, flops) = match (p, flops) {
                    (Precision::Bf16, Work::Flops(f)) => ("_bf16", Work::TensorFlops(f)),
                    _ => ("", flops),
                };
                let g = |dir: &str| format!("conv{k}x{k}_{dir}{suffix}");
                // Split-K partials where the grid alone is too small (both launches timed).
                let mut fws = gpu.zeros::<f32>(s.forward_workspace_len(p).max(1))?;
                let mut dws = gpu.zeros::<f32>(s.backward_data_workspace_len(p).max(1))?;
                b.run(&g("fwd"), &id, &shape, flops, || {
                    let (x, w) = (x.as_view(), w.as_view());
                    let (mut y, mut fws) = (y.as_view_mut(), fws.as_view_mut());
                    conv2d(
                        gpu,
                        ConvPass::Forward,
                        p,
                        &s,
                        &x,
                        &w,
                        &mut y,
                        Some(&mut fws),
                        0.0,
                    )
                });
                if what != "stem" {
                    // The image's gradient is never needed.
                    b.run(&g("bwd_data"), &id, &shape, flops, || {
                        let (dy, w) = (dy.as_view(), w.as_view());
                        let (mut dx, mut dws) = (dx.as_view_mut(), dws.as_view_mut());
                        let pass = ConvPass::BackwardData;
                        conv2d(gpu, pass, p, &s, &dy, &w, &mut dx, Some(&mut dws), 0.0)
                    });
                }
                // beta = 1 like the training step (dW accumulates).
                b.run(&g("bwd_weight"), &id, &shape, flops, || {
                    let (dy, x) = (dy.as_view(), x.as_view());
                    let (mut dw, mut ws) = (dw.as_view_mut(), ws.as_view_mut());
                    let pass = ConvPass::BackwardWeight;
                    conv2d(gpu, pass, p, &s, &dy, &x, &mut dw, Some(&mut ws), 1.0)
                });
            }
        }
    }
    Ok(())
}

fn bench_activations(b: &mut Bench, m: &Model, fill: &mut Fill) -> Res<()> {
    let gpu = b.gpu;
    for s in m.activations() {
        let (id, shape, n, c) = (act_id(m, &s), act_shape(&s), s.len() as u64, s.c as u64);
        let x = gpu.upload(&fill.f32s(s.len()))?;
        let x2 = gpu.upload(&fill.f32s(s.len()))?;
        let mut y = gpu.zeros::<f32>(s.len())?;
        let gamma = gpu.upload(&fill.f32s(s.c))?;
        let beta = gpu.upload(&fill.f32s(s.c))?;
        let mut rmean = gpu.zeros::<f32>(s.c)?;
        let mut rvar = gpu.upload(&vec![1.0f32; s.c])?;
        let mut smean = gpu.zeros::<f32>(s.c)?;
        let mut sinv = gpu.upload(&vec![1.0f32; s.c])?;
        let mut dgamma = gpu.zeros::<f32>(s.c)?;
        let mut dbeta = gpu.zeros::<f32>(s.c)?;
        // Per-chunk partials of the two-launch training forward / backward (shared: each
        // benchmark's first launch rewrites it).
        let mut ws = gpu.zeros::<f32>(s.stats_workspace_len())?;
        let (gv, bv) = (gamma.as_view(), beta.as_view());
        let p = BnParams {
            gamma: &gv,
            beta: &bv,
        };
        // x read, y written; per channel: gamma, beta, running stats read+written, saved stats.
        // One closure = both launches (partial statistics, then combine + normalise); the
        // workspace traffic is not counted.
        b.run(
            "bn_train_fwd",
            &id,
            &shape,
            Work::Bytes(F * (2 * n + 8 * c)),
            || {
                bn::batchnorm_forward_train(
                    gpu,
                    &s,
                    &x.as_view(),
                    &mut y.as_view_mut(),
                    &p,
                    &mut rmean.as_view_mut(),
                    &mut rvar.as_view_mut(),
                    &mut smean.as_view_mut(),
                    &mut sinv.as_view_mut(),
                    &mut ws.as_view_mut(),
                    0.1,
                    1e-5,
                    true, // fused ReLU, as every conv-BN-ReLU of the step runs it
                )
            },
        );
        b.run(
            "bn_bwd",
            &id,
            &shape,
            Work::Bytes(F * (4 * n + 5 * c)),
            || {
                // Both launches (partial sums, then combine + dx), with the fused ReLU's
                // backward (x stands in for the forward's output).
                let relu_out = x.as_view();
                bn::batchnorm_backward(
                    gpu,
                    &s,
                    &x2.as_view(),
                    &x.as_view(),
                    &gv,
                    &smean.as_view(),
                    &sinv.as_view(),
                    Some(&relu_out),
                    &mut y.as_view_mut(),
                    &mut dgamma.as_view_mut(),
                    &mut dbeta.as_view_mut(),
                    &mut ws.as_view_mut(),
                )
            },
        );
        b.run(
            "bn_eval_fwd",
            &id,
            &shape,
            Work::Bytes(F * (2 * n + 4 * c)),
            || {
                let (rm, rv) = (rmean.as_view(), rvar.as_view());
                bn::batchnorm_forward_eval(
                    gpu,
                    &s,
                    &x.as_view(),
                    &mut y.as_view_mut(),
                    &p,
                    &rm,
                    &rv,
                    1e-5,
                    true,
                )
            },
        );
        b.run("relu_fwd", &id, &shape, Work::Bytes(F * 2 * n), || {
            elementwise::relu_forward(gpu, &x.as_view(), &mut y.as_view_mut())
        });
        b.run("relu_bwd", &id, &shape, Work::Bytes(F * 3 * n), || {
            let (dy, y0) = (x2.as_view(), x.as_view());
            elementwise::binary(gpu, Binary::ReluBackward, &dy, &y0, &mut y.as_view_mut())
        });
        b.run("add_relu", &id, &shape, Work::Bytes(F * 3 * n), || {
            let (a, b) = (x.as_view(), x2.as_view());
            elementwise::binary(gpu, Binary::AddRelu, &a, &b, &mut y.as_view_mut())
        });
    }
    Ok(())
}

fn bench_shortcuts(b: &mut Bench, m: &Model, fill: &mut Fill) -> Res<()> {
    let gpu = b.gpu;
    for i in 1..m.widths.len() {
        let h = m.map(i - 1);
        let s = ShortcutShape {
            n: BATCH,
            c_in: m.widths[i - 1],
            h,
            w: h,
            c_out: m.widths[i],
            stride: 2,
        };
        let id = format!("{}_{}x{h}x{h}", m.tag, s.c_in);
        let shape = format!(
            "{}x{}x{h}x{h} -> {}x{}x{}",
            s.n,
            s.c_in,
            s.c_out,
            s.oh(),
            s.ow()
        );
        // Only the subsampled input elements are read (forward) / written non-zero (backward).
        let touched = (s.n * s.c_in * s.oh() * s.ow()) as u64;
        let (x_len, y_len) = (s.x_len() as u64, s.y_len() as u64);
        let x = gpu.upload(&fill.f32s(s.x_len()))?;
        let dy = gpu.upload(&fill.f32s(s.y_len()))?;
        let mut y = gpu.zeros::<f32>(s.y_len())?;
        let mut dx = gpu.zeros::<f32>(s.x_len())?;
        b.run(
            "shortcut_fwd",
            &id,
            &shape,
            Work::Bytes(F * (touched + y_len)),
            || shortcut::shortcut_forward(gpu, &s, &x.as_view(), &mut y.as_view_mut()),
        );
        b.run(
            "shortcut_bwd",
            &id,
            &shape,
            Work::Bytes(F * (touched + x_len)),
            || shortcut::shortcut_backward(gpu, &s, &dy.as_view(), &mut dx.as_view_mut(), 0.0),
        );
    }
    Ok(())
}

fn bench_head(b: &mut Bench, m: &Model, fill: &mut Fill) -> Res<()> {
    let gpu = b.gpu;
    let (c, hw) = m.last();
    let h = (hw as f64).sqrt() as usize;
    let (nc, nch) = (BATCH * c, BATCH * c * hw);
    let x = gpu.upload(&fill.f32s(nch))?;
    let mut dx = gpu.zeros::<f32>(nch)?;
    let mut pooled = gpu.zeros::<f32>(nc)?;
    let id = format!("{}_{c}x{h}x{h}", m.tag);
    let shape = format!("{BATCH}x{c}x{h}x{h} -> {BATCH}x{c}");
    let bytes = Work::Bytes(F * (nch + nc) as u64);
    b.run("avgpool_fwd", &id, &shape, bytes, || {
        pool::cuda::avgpool_forward(gpu, nc, hw, &x.as_view(), &mut pooled.as_view_mut())
    });
    b.run("avgpool_bwd", &id, &shape, bytes, || {
        pool::cuda::avgpool_backward(gpu, nc, hw, &pooled.as_view(), &mut dx.as_view_mut())
    });

    let s = LinearShape {
        n: BATCH,
        in_features: c,
        out_features: CLASSES,
    };
    let (xin, wl, yl) = (
        (BATCH * c) as u64,
        (CLASSES * c) as u64,
        (BATCH * CLASSES) as u64,
    );
    let feats = gpu.upload(&fill.f32s(BATCH * c))?;
    let w = gpu.upload(&fill.f32s(CLASSES * c))?;
    let bias = gpu.upload(&fill.f32s(CLASSES))?;
    let dy = gpu.upload(&fill.f32s(BATCH * CLASSES))?;
    let mut y = gpu.zeros::<f32>(BATCH * CLASSES)?;
    let mut dfeats = gpu.zeros::<f32>(BATCH * c)?;
    let mut dw = gpu.zeros::<f32>(CLASSES * c)?;
    let mut db = gpu.zeros::<f32>(CLASSES)?;
    let id = format!("{}_{c}to{CLASSES}", m.tag);
    let shape = format!("{BATCH}x{c} -> {BATCH}x{CLASSES}");
    let work = Work::Bytes(F * (xin + wl + CLASSES as u64 + yl));
    b.run("linear_fwd", &id, &shape, work, || {
        let (f, w, bb) = (feats.as_view(), w.as_view(), bias.as_view());
        linear::linear_forward(gpu, &s, &f, &w, &bb, &mut y.as_view_mut())
    });
    b.run(
        "linear_bwd_data",
        &id,
        &shape,
        Work::Bytes(F * (yl + wl + xin)),
        || {
            linear::linear_backward_data(
                gpu,
                &s,
                &dy.as_view(),
                &w.as_view(),
                &mut dfeats.as_view_mut(),
            )
        },
    );
    // beta = 1 (accumulate): dW and db are read and written.
    let work = Work::Bytes(F * (yl + xin + 2 * (wl + CLASSES as u64)));
    b.run("linear_bwd_weight", &id, &shape, work, || {
        let (dy, f) = (dy.as_view(), feats.as_view());
        linear::linear_backward_weight(
            gpu,
            &s,
            &dy,
            &f,
            &mut dw.as_view_mut(),
            &mut db.as_view_mut(),
            1.0,
        )
    });
    Ok(())
}

fn bench_loss(b: &mut Bench, fill: &mut Fill) -> Res<()> {
    let gpu = b.gpu;
    let logits = gpu.upload(&fill.f32s(BATCH * CLASSES))?;
    let labels: Vec<i32> = (0..BATCH)
        .map(|_| fill.below(CLASSES as u64) as i32)
        .collect();
    let labels = gpu.upload(&labels)?;
    let mut dlogits = gpu.zeros::<f32>(BATCH * CLASSES)?;
    let mut loss = gpu.zeros::<f64>(1)?;
    let mut correct = gpu.zeros::<i32>(1)?;
    let id = format!("b{BATCH}_{CLASSES}classes");
    let shape = format!("{BATCH}x{CLASSES}");
    let (l, n) = ((BATCH * CLASSES) as u64, BATCH as u64);
    b.run(
        "softmax_xent_fwd_bwd",
        &id,
        &shape,
        Work::Bytes(F * (2 * l + n)),
        || {
            let (lg, lb) = (logits.as_view(), labels.as_view());
            let (mut loss, mut corr) = (loss.as_view_mut(), correct.as_view_mut());
            loss::cuda::softmax_xent(
                gpu,
                BATCH,
                CLASSES,
                &lg,
                &lb,
                Some(&mut dlogits.as_view_mut()),
                &mut loss,
                &mut corr,
            )
        },
    );
    b.run(
        "softmax_xent_fwd",
        &id,
        &shape,
        Work::Bytes(F * (l + n)),
        || {
            let (lg, lb) = (logits.as_view(), labels.as_view());
            let (mut loss, mut corr) = (loss.as_view_mut(), correct.as_view_mut());
            loss::cuda::softmax_xent(gpu, BATCH, CLASSES, &lg, &lb, None, &mut loss, &mut corr)
        },
    );
    Ok(())
}

fn bench_sgd(b: &mut Bench, m: &Model, fill: &mut Fill) -> Res<()> {
    let gpu = b.gpu;
    let segs = sgd::cuda::SgdSegments::new(&m.param_segments())?;
    let table = sgd::cuda::SgdTable::new(gpu, &segs)?;
    let p = segs.total();
    let mut params = gpu.upload(&fill.f32s(p))?;
    let grads = gpu.upload(&fill.f32s(p))?;
    let mut bufs = gpu.zeros::<f32>(p)?;
    let id = format!("{}_{p}params", m.tag);
    let shape = format!("{p} params, {} tensors", segs.weight_decay.len());
    // params and momentum read+written, grads read.
    b.run(
        "sgd_step",
        &id,
        &shape,
        Work::Bytes(F * 5 * p as u64),
        || {
            let (mut pv, mut bv) = (params.as_view_mut(), bufs.as_view_mut());
            sgd::cuda::sgd_step(
                gpu,
                &table,
                &mut pv,
                &grads.as_view(),
                &mut bv,
                1e-4,
                0.9,
                false,
            )
        },
    );
    Ok(())
}

fn bench_augment(b: &mut Bench, fill: &mut Fill) -> Res<()> {
    const NDATA: usize = 50_000;
    const IMG: usize = 3 * 32 * 32;
    let gpu = b.gpu;
    let images: Vec<u8> = (0..NDATA * IMG).map(|_| fill.next_u64() as u8).collect();
    let labels: Vec<u8> = (0..NDATA)
        .map(|_| fill.below(CLASSES as u64) as u8)
        .collect();
    let params: Vec<i32> = (0..BATCH)
        .flat_map(|_| {
            let idx = fill.below(NDATA as u64) as i32;
            let (ox, oy) = (fill.below(9) as i32 - 4, fill.below(9) as i32 - 4);
            [idx, ox, oy, fill.below(2) as i32]
        })
        .collect();
    let (images, labels, params) = (
        gpu.upload(&images)?,
        gpu.upload(&labels)?,
        gpu.upload(&params)?,
    );
    let mut out = gpu.zeros::<f32>(BATCH * IMG)?;
    let mut out_labels = gpu.zeros::<i32>(BATCH)?;
    let norm = tensor::augment::Normalize {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };
    // u8 pixels + labels + params read; f32 batch + i32 labels written.
    let bytes = (BATCH * (IMG + 1 + 16) + BATCH * (IMG + 1) * 4) as u64;
    let id = format!("b{BATCH}_3x32x32");
    b.run(
        "augment_batch",
        &id,
        &format!("{BATCH} of {NDATA} u8 images"),
        Work::Bytes(bytes),
        || {
            let (i, l, p) = (images.as_view(), labels.as_view(), params.as_view());
            let (mut o, mut ol) = (out.as_view_mut(), out_labels.as_view_mut());
            tensor::augment::augment_batch(gpu, &i, &l, &p, &mut o, &mut ol, (BATCH, 32, 32), &norm)
        },
    );
    Ok(())
}

/// The card's ceilings, for the "% of peak" column: bf16 tensor-core and fp32 FMA throughput
/// (`peak.cu`: operands in registers, no memory traffic) and memory bandwidth (a 512 MiB
/// device-to-device copy, read + write).
fn bench_ceilings(b: &mut Bench) -> Res<()> {
    let gpu = b.gpu;
    const THREADS: usize = 4096 * peak::PEAK_THREADS as usize;
    const ITERS: usize = 1024;
    let mut out = gpu.zeros::<f32>(THREADS)?;
    let (group, id) = harness::CEILING_BF16.split_once('/').expect("group/id");
    let flops = Work::TensorFlops(peak::peak_mma_bf16_flops(THREADS, ITERS));
    b.run(group, id, "registers only", flops, || {
        peak::peak_mma_bf16(gpu, &mut out.as_view_mut(), ITERS, 1.0)
    });
    let (group, id) = harness::CEILING_FP32.split_once('/').expect("group/id");
    let flops = Work::Flops(peak::peak_fma_f32_flops(THREADS, ITERS));
    b.run(group, id, "registers only", flops, || {
        peak::peak_fma_f32(gpu, &mut out.as_view_mut(), ITERS, 1.0)
    });
    const COPY: usize = 128 << 20; // f32 elements: 512 MiB
    let src = gpu.zeros::<f32>(COPY)?;
    let mut dst = gpu.zeros::<f32>(COPY)?;
    let (group, id) = harness::CEILING_BANDWIDTH
        .split_once('/')
        .expect("group/id");
    b.run(
        group,
        id,
        "512 MiB",
        Work::Bytes(2 * F * COPY as u64),
        || {
            gpu.stream()
                .memcpy_dtod(&src, &mut dst)
                .map_err(|e| kernels::KernelError::driver("device copy", e))
        },
    );
    Ok(())
}

fn bench_all(b: &mut Bench) -> Res<()> {
    bench_ceilings(b)?;
    let mut fill = Fill::new(2024);
    for m in &MODELS {
        bench_convs(b, m, &mut fill)?;
        bench_activations(b, m, &mut fill)?;
        bench_shortcuts(b, m, &mut fill)?;
        bench_head(b, m, &mut fill)?;
        bench_sgd(b, m, &mut fill)?;
    }
    bench_loss(b, &mut fill)?;
    bench_augment(b, &mut fill)
}

fn main() {
    // Pure host arithmetic, checked before anything else so a wrong table fails everywhere.
    for m in &MODELS {
        let total: usize = m.param_segments().iter().map(|s| s.0).sum();
        assert_eq!(total, m.params, "{} parameter count", m.tag);
    }
    let gpu = match Gpu::new(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!(
                "kernels bench: no usable CUDA GPU ({e}); nothing to benchmark. The CPU engine's \
                 step is benched by cargo bench -p resnet-cifar"
            );
            return;
        }
    };
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(200))
        .measurement_time(std::time::Duration::from_millis(800))
        .sample_size(20)
        .nresamples(10_000)
        .configure_from_args();
    let mut bench = Bench::new(&mut c, &gpu);
    if let Err(e) = bench_all(&mut bench) {
        panic!("kernels bench: setting up buffers failed: {e}");
    }
    bench.summary();
    c.final_summary();
}
