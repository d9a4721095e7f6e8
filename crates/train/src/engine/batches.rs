//! Where each training batch is made. On the CPU, `data::Loader` converts the uint8 images.
//! On the GPU the whole training set stays resident as uint8 (150 MB for CIFAR) and the
//! augment kernel (`kernels/cuda/augment.cu`, CPU twin `data::write_sample`) builds each
//! batch there: per step only the batch's plan — (index, dx, dy, flip) per sample, 2 KB —
//! crosses to the device, and the kernel gathers the batch's labels there too, so the step
//! needs nothing from the host. Both follow `Loader::plan`, so they see the same crops and
//! flips.

use anyhow::{Context, Result};
use data::{Loader, Normalization, Split};
use kernels::{CudaSlice, Gpu};
use std::sync::Arc;
use tensor::augment::{augment_batch, Normalize};
use tensor::{Device, Labels, Tensor};

/// The training set, where the batches are made.
pub enum TrainBatches<'a> {
    Host(Loader<'a>),
    Resident(ResidentSet<'a>),
}

/// The uint8 images and labels on the GPU, and the loader whose plan says what to take.
pub struct ResidentSet<'a> {
    loader: Loader<'a>,
    gpu: Arc<Gpu>,
    images: CudaSlice<u8>,
    labels: CudaSlice<u8>,
}

impl<'a> TrainBatches<'a> {
    /// `loader` defines order, augmentation and normalisation; on a CUDA device the split is
    /// uploaded once, here.
    pub fn new(loader: Loader<'a>, split: &'a Split, device: &Device) -> Result<Self> {
        let Some(gpu) = device.gpu() else {
            return Ok(TrainBatches::Host(loader));
        };
        let images = gpu
            .upload(&split.images)
            .context("uploading the training images to the GPU")?;
        let labels = gpu
            .upload(&split.labels)
            .context("uploading the training labels to the GPU")?;
        Ok(TrainBatches::Resident(ResidentSet {
            loader,
            gpu: Arc::clone(gpu),
            images,
            labels,
        }))
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.loader().batches_per_epoch()
    }

    fn loader(&self) -> &Loader<'a> {
        match self {
            TrainBatches::Host(l) => l,
            TrainBatches::Resident(r) => &r.loader,
        }
    }

    /// The fingerprint of `epoch`'s plan (order, crops, flips): `crate::engine::partial`.
    pub fn plan_fingerprint(&self, epoch: usize) -> u64 {
        let plan: Vec<_> = self.loader().plan(epoch).collect();
        crate::engine::partial::plan_fingerprint(plan.iter().flatten())
    }

    /// The batches of `epoch` from batch `first` on (0 for the whole epoch): images
    /// `[n, 3, 32, 32]` and labels, both on the training device.
    pub fn epoch(
        &self,
        epoch: usize,
        first: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Labels)>> + '_> {
        match self {
            TrainBatches::Host(l) => Box::new(l.epoch_from(epoch, first).map(|b| {
                let n = b.len();
                Ok((
                    Tensor::from_vec(&[n, 3, 32, 32], b.images),
                    Labels::host(b.labels),
                ))
            })),
            TrainBatches::Resident(r) => Box::new(
                r.loader
                    .plan(epoch)
                    .skip(first)
                    .map(move |plan| r.make(&plan)),
            ),
        }
    }
}

impl ResidentSet<'_> {
    fn make(&self, plan: &[(usize, data::SampleAug)]) -> Result<(Tensor, Labels)> {
        let n = plan.len();
        let params: Vec<i32> = plan
            .iter()
            .flat_map(|&(i, a)| [i as i32, a.dx, a.dy, i32::from(a.flip)])
            .collect();
        let g = &self.gpu;
        let d_params = g.upload(&params)?;
        // Every pixel is written by the kernel (emulator-checked with NaN-filled outputs).
        let mut out = g.uninit_f32(n * 3 * 32 * 32)?;
        // The kernel also gathers the labels (int32) on the device, for the loss kernel.
        let mut out_labels = g.zeros::<i32>(n)?;
        let Normalization { mean, std } = self.loader.normalization();
        augment_batch(
            g,
            &self.images.as_view(),
            &self.labels.as_view(),
            &d_params.as_view(),
            &mut out.as_view_mut(),
            &mut out_labels.as_view_mut(),
            (n, 32, 32),
            &Normalize { mean, std },
        )
        .context("the augment kernel failed")?;
        Ok((
            Tensor::from_cuda(&[n, 3, 32, 32], g, out),
            Labels::from_cuda(g, out_labels),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The resident batches (the augment kernel fed by `make`'s (index, dx, dy, flip) plan)
    /// equal the host loader's, batch for batch over two shuffled, augmented epochs with a
    /// partial last batch: same shapes and labels, pixels within 1 ulp (the kernel repeats
    /// `write_sample`'s arithmetic, so bit-exact is expected). Fails, never skips, without a
    /// GPU: `cargo test -p train --lib -- --include-ignored` on the GPU machine.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn resident_batches_match_the_host_loader() {
        let dev = Device::cuda(0).unwrap_or_else(|e| panic!("this test needs a CUDA GPU: {e}"));
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 20;
        let split = Split {
            images: (0..n * data::IMAGE_BYTES).map(|_| r.gen()).collect(),
            labels: (0..n).map(|_| r.gen_range(0..10)).collect(),
            coarse_labels: None,
        };
        let norm = Normalization::from_split(&split);
        let loader = || Loader::new(&split, 7, true, true, norm, 11);
        let host = TrainBatches::new(loader(), &split, &Device::Cpu).unwrap();
        let gpu = TrainBatches::new(loader(), &split, &dev).unwrap();
        assert!(matches!(host, TrainBatches::Host(_)));
        assert!(matches!(gpu, TrainBatches::Resident(_)));
        assert_eq!(gpu.batches_per_epoch(), 3);
        for epoch in 0..2 {
            let hs: Vec<_> = host.epoch(epoch, 0).map(|b| b.unwrap()).collect();
            let gs: Vec<_> = gpu.epoch(epoch, 0).map(|b| b.unwrap()).collect();
            assert_eq!(hs.len(), gs.len(), "batches in epoch {epoch}");
            for (b, ((hx, hl), (gx, gl))) in hs.iter().zip(&gs).enumerate() {
                assert!(gx.is_cuda(), "epoch {epoch} batch {b} is not on the GPU");
                assert!(
                    gl.is_cuda(),
                    "epoch {epoch} batch {b}: labels not on the GPU"
                );
                assert_eq!(
                    gl.to_vec().unwrap(),
                    hl.to_vec().unwrap(),
                    "labels, epoch {epoch} batch {b}"
                );
                assert_eq!(gx.shape(), hx.shape(), "shape, epoch {epoch} batch {b}");
                let g = gx.to_vec().unwrap();
                for (i, (&a, &c)) in g.iter().zip(hx.data()).enumerate() {
                    let ulps = (a.to_bits() as i64 - c.to_bits() as i64).abs();
                    assert!(
                        ulps <= 1,
                        "epoch {epoch} batch {b} element {i}: gpu {a} vs cpu {c} ({ulps} ulp)"
                    );
                }
            }
        }
    }
}
