//! Streaming mini-batches over a split: the order and augmentations come from
//! [`crate::sampling`], pixel conversion runs in parallel per batch, and only one batch
//! of `f32` is materialised at a time.

use rayon::prelude::*;

use crate::augment::{write_sample, SampleAug, SAMPLE_LEN};
use crate::format::Split;
use crate::normalize::Normalization;
use crate::sampling::{epoch_order, sample_aug};

/// One mini-batch, ready for the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `len() * 3 * 32 * 32` floats, NCHW, normalised (and augmented if enabled).
    pub images: Vec<f32>,
    /// Class label of each sample.
    pub labels: Vec<usize>,
    /// Index of each sample in the split (for debugging and per-sample metrics).
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a batch without samples (never yielded by [`Loader`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Batches over a borrowed [`Split`]. Cheap to create; holds no per-epoch state, so
/// `epoch(e)` can be called for any `e` in any order with the same result.
#[derive(Clone, Debug)]
pub struct Loader<'a> {
    split: &'a Split,
    batch_size: usize,
    shuffle: bool,
    augment: bool,
    norm: Normalization,
    seed: u64,
}

impl<'a> Loader<'a> {
    /// `shuffle` draws a new order per epoch; `augment` applies random crop + flip
    /// (use both for training, neither for evaluation).
    ///
    /// # Panics
    /// If `batch_size == 0`.
    pub fn new(
        split: &'a Split,
        batch_size: usize,
        shuffle: bool,
        augment: bool,
        norm: Normalization,
        seed: u64,
    ) -> Self {
        assert!(batch_size > 0, "batch_size must be positive");
        Loader {
            split,
            batch_size,
            shuffle,
            augment,
            norm,
            seed,
        }
    }

    /// Batches per epoch, counting the last partial batch.
    pub fn batches_per_epoch(&self) -> usize {
        self.split.len().div_ceil(self.batch_size)
    }

    /// Number of samples per epoch.
    pub fn len(&self) -> usize {
        self.split.len()
    }

    /// True when the split is empty (an epoch then yields no batch).
    pub fn is_empty(&self) -> bool {
        self.split.is_empty()
    }

    /// The batches of `epoch`, built lazily one at a time; the last may be smaller.
    pub fn epoch(&self, epoch: usize) -> impl Iterator<Item = Batch> + '_ {
        self.plan(epoch).map(move |plan| self.make_batch(&plan))
    }

    /// The batches of `epoch` from batch `first` on (0-based): the rest of an epoch whose
    /// first `first` steps a stopped run already took. The plans of the skipped batches are
    /// drawn (cheap) but their pixels are not made.
    pub fn epoch_from(&self, epoch: usize, first: usize) -> impl Iterator<Item = Batch> + '_ {
        self.plan(epoch)
            .skip(first)
            .map(move |plan| self.make_batch(&plan))
    }

    /// What each batch of `epoch` holds: every sample's index in the split and its crop/flip.
    /// Both engines build their batches from this plan: the CPU in [`Loader::epoch`], the GPU
    /// with its augment kernel on the resident uint8 images, so both see the same pixels.
    pub fn plan(&self, epoch: usize) -> impl Iterator<Item = Vec<(usize, SampleAug)>> + '_ {
        let order = epoch_order(self.split.len(), self.shuffle, self.seed, epoch);
        let bs = self.batch_size;
        (0..self.batches_per_epoch()).map(move |b| {
            let start = b * bs;
            let end = (start + bs).min(order.len());
            (start..end)
                .map(|pos| {
                    let aug = if self.augment {
                        sample_aug(self.seed, epoch, pos)
                    } else {
                        SampleAug::IDENTITY
                    };
                    (order[pos], aug)
                })
                .collect()
        })
    }

    /// The normalisation applied to every sample.
    pub fn normalization(&self) -> Normalization {
        self.norm
    }

    fn make_batch(&self, plan: &[(usize, SampleAug)]) -> Batch {
        let mut images = vec![0f32; plan.len() * SAMPLE_LEN];
        images
            .par_chunks_mut(SAMPLE_LEN)
            .zip(plan.par_iter())
            .for_each(|(out, &(idx, aug))| {
                write_sample(self.split.image(idx), aug, &self.norm, out)
            });
        Batch {
            images,
            labels: plan
                .iter()
                .map(|&(i, _)| self.split.labels[i] as usize)
                .collect(),
            indices: plan.iter().map(|&(i, _)| i).collect(),
        }
    }
}
