//! A run stopped within an epoch (`crate::engine::interrupt`): what its checkpoint holds beside
//! the model so that the resumed run continues at the next step and ends bit-identical on the
//! CPU to a run that never stopped.
//!
//! - The data order and the RNG state: epoch `e`'s order and every sample's crop and flip are
//!   ChaCha8 streams seeded by `(seed, e)` (and the sample's position), so the state of the
//!   generators at a step is the epoch, the run's seed and the position of the next sample. The
//!   checkpoint records those, and a fingerprint of the epoch's whole plan (every sample's
//!   index, crop and flip, in order): a resumed run that would draw another order (other data,
//!   another build's sampling) is refused instead of silently training on it.
//! - The step: how many of the epoch's steps are done.
//! - The epoch's training loss and hits so far ([`Tally`], the loss sum as exact bits), the
//!   warm-up's current window, and the seconds the epoch has taken.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tensor::MeterReading;

/// The epoch's training loss and hits so far, kept beside the loss meter. On the CPU the loop
/// folds the meter into it after every step (a fresh meter's sum is the batch's loss exactly),
/// so the sum is added in the same order whether or not the run stopped in between.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    pub loss_sum: f64,
    pub correct: usize,
    pub count: usize,
}

impl Tally {
    /// This tally plus what the meter read, as one reading.
    pub fn plus(&self, m: &MeterReading) -> MeterReading {
        let (loss_sum, count) = (self.loss_sum + m.loss_sum, self.count + m.count);
        MeterReading {
            loss_sum,
            loss: loss_sum / count as f64,
            correct: self.correct + m.correct,
            count,
        }
    }

    pub fn of(m: &MeterReading) -> Tally {
        Tally {
            loss_sum: m.loss_sum,
            correct: m.correct,
            count: m.count,
        }
    }
}

/// Where in an epoch a run stopped (checkpoint metadata `partial_epoch`).
#[derive(Clone, Debug, PartialEq)]
pub struct PartialEpoch {
    /// The epoch in progress, counted from 1.
    pub epoch: usize,
    /// Steps of it done.
    pub steps_done: usize,
    pub steps_per_epoch: usize,
    pub batch_size: usize,
    /// FNV-1a 64 of the epoch's plan ([`plan_fingerprint`]).
    pub plan_fingerprint: u64,
    pub tally: Tally,
    /// The warm-up's window start (correct, seen) in the epoch's counts.
    pub warmup_window: (usize, usize),
    /// Wall time of the epoch so far.
    pub seconds: f64,
    /// What stopped it, for the record (`SIGTERM`).
    pub stopped_by: String,
}

/// FNV-1a 64 over every sample of an epoch's plan: its index in the split, crop offsets and
/// flip, in order.
pub fn plan_fingerprint<'a>(samples: impl Iterator<Item = &'a (usize, data::SampleAug)>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &(index, aug) in samples {
        let fields = [
            index as u64,
            aug.dx as u64,
            aug.dy as u64,
            u64::from(aug.flip),
        ];
        for byte in fields.iter().flat_map(|f| f.to_le_bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl PartialEpoch {
    pub fn to_json(&self) -> String {
        json!({
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.batch_size,
            "next_sample": self.steps_done * self.batch_size,
            "rng": "order, crops and flips of epoch e: ChaCha8 streams seeded by (seed, e) and \
                    the sample's position; the run continues at next_sample",
            "plan_fnv1a64": format!("{:016x}", self.plan_fingerprint),
            "train_loss_sum": self.tally.loss_sum,
            "train_loss_sum_bits": format!("{:016x}", self.tally.loss_sum.to_bits()),
            "train_correct": self.tally.correct,
            "train_seen": self.tally.count,
            "warmup_window": [self.warmup_window.0, self.warmup_window.1],
            "seconds": self.seconds,
            "stopped_by": self.stopped_by,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> Result<PartialEpoch> {
        let v: Value = serde_json::from_str(text).context("`partial_epoch` is not JSON")?;
        let uint = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .with_context(|| format!("`partial_epoch.{k}` is missing or not a whole number"))
        };
        let hex = |k: &str| -> Result<u64> {
            v.get(k)
                .and_then(Value::as_str)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .with_context(|| format!("`partial_epoch.{k}` is missing or not hexadecimal"))
        };
        let window = v
            .get("warmup_window")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
            .context("`partial_epoch.warmup_window` is not two whole numbers")?;
        let partial = PartialEpoch {
            epoch: uint("epoch")?,
            steps_done: uint("steps_done")?,
            steps_per_epoch: uint("steps_per_epoch")?,
            batch_size: uint("batch_size")?,
            plan_fingerprint: hex("plan_fnv1a64")?,
            tally: Tally {
                // The exact bits, not the decimal text (JSON parsers may round it).
                loss_sum: f64::from_bits(hex("train_loss_sum_bits")?),
                correct: uint("train_correct")?,
                count: uint("train_seen")?,
            },
            warmup_window: window,
            seconds: v.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
            stopped_by: v
                .get("stopped_by")
                .and_then(Value::as_str)
                .unwrap_or("a signal")
                .to_string(),
        };
        ensure!(
            partial.epoch >= 1 && partial.steps_done < partial.steps_per_epoch,
            "`partial_epoch` says step {} of {} in epoch {}",
            partial.steps_done,
            partial.steps_per_epoch,
            partial.epoch
        );
        Ok(partial)
    }

    /// A resumed run continues within the epoch where it stopped only if that is the epoch
    /// after its last full one (`next_epoch`, from 0), at the same steps per epoch and batch
    /// size, and on the same data order (the plan's `fingerprint`): anything else would train
    /// on other batches than the run's.
    pub fn ensure_continues(
        &self,
        next_epoch: usize,
        steps_per_epoch: usize,
        batch_size: usize,
        fingerprint: impl FnOnce() -> u64,
    ) -> Result<()> {
        ensure!(
            self.epoch == next_epoch + 1,
            "the checkpoint stopped within epoch {} but holds {next_epoch} full epochs",
            self.epoch
        );
        ensure!(
            self.steps_per_epoch == steps_per_epoch && self.batch_size == batch_size,
            "the checkpoint stopped at {} (steps of {} images), but this run's epochs have \
             {steps_per_epoch} steps of {batch_size}: use the data (--data-dir) the run was \
             started on",
            self.describe(),
            self.batch_size
        );
        let now = fingerprint();
        ensure!(
            self.plan_fingerprint == now,
            "the checkpoint stopped at {}, but this run would draw another order of images for \
             that epoch (plan fingerprint {now:016x}, the checkpoint's {:016x}): other training \
             data, or a build that samples differently",
            self.describe(),
            self.plan_fingerprint
        );
        Ok(())
    }

    /// `epoch 2, step 5 of 13`.
    pub fn describe(&self) -> String {
        format!(
            "epoch {}, step {} of {}",
            self.epoch, self.steps_done, self.steps_per_epoch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use data::SampleAug;

    #[test]
    fn the_record_reads_back_exactly() {
        let p = PartialEpoch {
            epoch: 3,
            steps_done: 5,
            steps_per_epoch: 13,
            batch_size: 128,
            plan_fingerprint: 0xfedc_ba98_7654_3210,
            tally: Tally {
                // Not a short decimal: the bits must come back, not a rounding of them.
                loss_sum: 1_234.567_890_123_456_7_f64.next_up(),
                correct: 77,
                count: 640,
            },
            warmup_window: (70, 600),
            seconds: 12.5,
            stopped_by: "SIGTERM".into(),
        };
        let back = PartialEpoch::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.tally.loss_sum.to_bits(), p.tally.loss_sum.to_bits());
        assert!(p.to_json().contains("\"next_sample\":640"));
        let bad = p.to_json().replace("\"steps_done\":5", "\"steps_done\":13");
        let e = PartialEpoch::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("step 13 of 13 in epoch 3"), "{e}");
    }

    #[test]
    fn a_run_continues_only_at_its_place_on_its_own_data_order() {
        let p = PartialEpoch {
            epoch: 2,
            steps_done: 5,
            steps_per_epoch: 13,
            batch_size: 128,
            plan_fingerprint: 7,
            tally: Tally::default(),
            warmup_window: (0, 0),
            seconds: 0.0,
            stopped_by: "SIGTERM".into(),
        };
        p.ensure_continues(1, 13, 128, || 7).unwrap();
        let e = p
            .ensure_continues(2, 13, 128, || 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("within epoch 2 but holds 2 full epochs"), "{e}");
        let e = p
            .ensure_continues(1, 12, 128, || 7)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("epoch 2, step 5 of 13") && e.contains("12 steps of 128"),
            "{e}"
        );
        let e = p
            .ensure_continues(1, 13, 128, || 8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("another order of images") && e.contains("0000000000000008"),
            "{e}"
        );
    }

    #[test]
    fn the_fingerprint_sees_order_crops_and_flips() {
        let a = SampleAug {
            dx: 1,
            dy: -2,
            flip: true,
        };
        let b = SampleAug { flip: false, ..a };
        let base = [(0, a), (1, b)];
        let f = plan_fingerprint(base.iter());
        assert_eq!(f, plan_fingerprint(base.iter()));
        assert_ne!(f, plan_fingerprint([(1, b), (0, a)].iter()));
        assert_ne!(f, plan_fingerprint([(0, b), (1, b)].iter()));
        assert_ne!(
            f,
            plan_fingerprint([(0, SampleAug { dx: 2, ..a }), (1, b)].iter())
        );
    }

    #[test]
    fn a_tally_adds_a_reading() {
        let t = Tally {
            loss_sum: 3.0,
            correct: 2,
            count: 4,
        };
        let m = MeterReading {
            loss_sum: 1.0,
            loss: 0.5,
            correct: 1,
            count: 2,
        };
        let r = t.plus(&m);
        assert_eq!((r.loss_sum, r.correct, r.count), (4.0, 3, 6));
        assert!((r.loss - 4.0 / 6.0).abs() < 1e-15);
        assert_eq!(Tally::of(&r).plus(&m).count, 8);
    }
}
