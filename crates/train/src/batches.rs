//! Where each training batch is made. On the CPU, `data::Loader` converts the uint8 images.
//! On the GPU the whole training set stays resident as uint8 (150 MB for CIFAR) and the
//! augment kernel (`kernels/cuda/augment.cu`, CPU twin `data::write_sample`) builds each
//! batch there: per step only the batch's plan — (index, dx, dy, flip) per sample, 2 KB —
//! crosses to the device. Both follow `Loader::plan`, so they see the same crops and flips.

use anyhow::{Context, Result};
use data::{Loader, Normalization, Split};
use kernels::launch::{augment_batch, Normalize};
use kernels::{CudaSlice, Gpu};
use std::sync::Arc;
use tensor::{Device, Tensor};

/// The training set, where the batches are made.
pub enum TrainBatches<'a> {
    Host(Loader<'a>),
    Resident(ResidentSet<'a>),
}

/// The uint8 images and labels on the GPU, and the loader whose plan says what to take.
pub struct ResidentSet<'a> {
    loader: Loader<'a>,
    split: &'a Split,
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
            split,
            gpu: Arc::clone(gpu),
            images,
            labels,
        }))
    }

    pub fn batches_per_epoch(&self) -> usize {
        match self {
            TrainBatches::Host(l) => l.batches_per_epoch(),
            TrainBatches::Resident(r) => r.loader.batches_per_epoch(),
        }
    }

    /// The batches of `epoch`: images `[n, 3, 32, 32]` on the training device, host labels.
    pub fn epoch(
        &self,
        epoch: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Vec<usize>)>> + '_> {
        match self {
            TrainBatches::Host(l) => Box::new(l.epoch(epoch).map(|b| {
                let n = b.len();
                Ok((Tensor::from_vec(&[n, 3, 32, 32], b.images), b.labels))
            })),
            TrainBatches::Resident(r) => {
                Box::new(r.loader.plan(epoch).map(move |plan| r.make(&plan)))
            }
        }
    }
}

impl ResidentSet<'_> {
    fn make(&self, plan: &[(usize, data::SampleAug)]) -> Result<(Tensor, Vec<usize>)> {
        let n = plan.len();
        let params: Vec<i32> = plan
            .iter()
            .flat_map(|&(i, a)| [i as i32, a.dx, a.dy, i32::from(a.flip)])
            .collect();
        let g = &self.gpu;
        let d_params = g.upload(&params)?;
        let mut out = g.zeros::<f32>(n * 3 * 32 * 32)?;
        // The kernel also gathers the labels on the device; the step takes host labels for now.
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
        let labels = plan
            .iter()
            .map(|&(i, _)| self.split.labels[i] as usize)
            .collect();
        Ok((Tensor::from_cuda(&[n, 3, 32, 32], g, out), labels))
    }
}
