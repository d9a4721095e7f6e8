//! Seeded randomness for an epoch: the visiting order and each sample's augmentation.
//!
//! Every draw is a pure function of `(seed, epoch, ...)`: nothing depends on thread count,
//! batch size or iteration order, so runs are reproducible and a resumed run sees the
//! same data as an uninterrupted one.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::augment::{SampleAug, MAX_SHIFT};

// Domain tags keep the shuffle and augmentation streams unrelated for the same seed.
const SHUFFLE_TAG: u64 = 0x5348_5546_464c_4521; // "SHUFFLE!"
const AUG_TAG: u64 = 0x4155_474d_454e_5421; // "AUGMENT!"

/// SplitMix64 finaliser: a bijective, well-mixing map on u64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(tag: u64, seed: u64, epoch: usize, position: Option<usize>) -> ChaCha8Rng {
    let mut h = mix(tag ^ mix(seed));
    h = mix(h ^ epoch as u64);
    if let Some(p) = position {
        h = mix(h ^ mix(p as u64));
    }
    ChaCha8Rng::seed_from_u64(h)
}

/// The order in which dataset indices are visited in `epoch`: `0..n` in order when
/// `shuffle` is false, otherwise a uniformly random permutation that depends only on
/// `(seed, epoch)`.
pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut rng_for(SHUFFLE_TAG, seed, epoch, None));
    }
    order
}

/// The augmentation of the sample at `position` (0-based place in the epoch's order,
/// not the dataset index) of `epoch`: crop offsets uniform in `-4..=4` and a fair-coin
/// horizontal flip, i.e. `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`.
pub fn sample_aug(seed: u64, epoch: usize, position: usize) -> SampleAug {
    let mut rng = rng_for(AUG_TAG, seed, epoch, Some(position));
    SampleAug {
        dx: rng.gen_range(-MAX_SHIFT..=MAX_SHIFT),
        dy: rng.gen_range(-MAX_SHIFT..=MAX_SHIFT),
        flip: rng.gen_bool(0.5),
    }
}
