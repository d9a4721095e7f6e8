//! What a run reports as its result. Choosing the "best" epoch on the test set and quoting its
//! test accuracy is picking on the test set: an optimistic figure. So:
//!
//! - with a validation split (`--val-split`), the epoch is chosen on validation accuracy and
//!   the result is the test accuracy of that epoch;
//! - without one, the result is the last epoch's test accuracy, and the best test accuracy is
//!   shown only labelled as such.

use crate::engine::metrics::EpochRecord;

/// The first epoch with the highest value of `key` (finite values only).
fn best_by(
    records: &[EpochRecord],
    key: impl Fn(&EpochRecord) -> Option<f64>,
) -> Option<&EpochRecord> {
    records
        .iter()
        .filter_map(|r| key(r).filter(|v| v.is_finite()).map(|v| (r, v)))
        .fold(
            None,
            |best: Option<(&EpochRecord, f64)>, (r, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((r, v)),
            },
        )
        .map(|(r, _)| r)
}

/// The epoch whose test accuracy is the run's result: chosen on validation when there is a
/// split, else the last.
pub fn result_epoch(records: &[EpochRecord]) -> Option<&EpochRecord> {
    if records.iter().any(|r| r.val.is_some()) {
        best_by(records, |r| r.val.map(|v| v.acc))
    } else {
        records.last()
    }
}

/// The closing line of a run.
pub fn result_line(records: &[EpochRecord]) -> Option<String> {
    let last = records.last()?;
    let total: f64 = records.iter().map(|r| r.seconds).sum();
    let head = format!("done: {} epochs in {total:.1}s", records.len());
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    if let Some(chosen) = best_by(records, |r| r.val.map(|v| v.acc)) {
        let val = chosen.val.expect("chosen on validation").acc;
        Some(format!(
            "{head}; result: test accuracy {} at epoch {}, the epoch of best validation accuracy ({}); last epoch: test {}",
            pct(chosen.test_acc),
            chosen.epoch,
            pct(val),
            pct(last.test_acc)
        ))
    } else {
        let best = best_by(records, |r| Some(r.test_acc)).unwrap_or(last);
        Some(format!(
            "{head}; result: test accuracy {} (last epoch); best test accuracy over epochs {} at epoch {} (picked on the test set; --val-split N picks on held-out data)",
            pct(last.test_acc),
            pct(best.test_acc),
            best.epoch
        ))
    }
}

/// The accuracy panel's caption in the plot.
pub fn accuracy_caption(records: &[EpochRecord]) -> String {
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    if let Some(c) = best_by(records, |r| r.val.map(|v| v.acc)) {
        format!(
            "Accuracy (test {} at epoch {}, best on validation)",
            pct(c.test_acc),
            c.epoch
        )
    } else {
        match (records.last(), best_by(records, |r| Some(r.test_acc))) {
            (Some(l), Some(b)) if l.test_acc.is_finite() => format!(
                "Accuracy (last test {}; best test {} at epoch {})",
                pct(l.test_acc),
                pct(b.test_acc),
                b.epoch
            ),
            _ => "Accuracy".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::metrics::ValScore;

    fn rec(epoch: usize, test_acc: f64, val: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: 0.1,
            train_loss: 1.0,
            train_acc: 0.5,
            test_loss: 1.0,
            test_acc,
            val: val.map(|acc| ValScore { loss: 1.0, acc }),
            seconds: 2.0,
        }
    }

    #[test]
    fn with_a_split_the_result_is_the_test_accuracy_of_the_best_validation_epoch() {
        let r = [
            rec(1, 0.5, Some(0.4)),
            rec(2, 0.9, Some(0.6)),
            rec(3, 0.7, Some(0.8)),
            rec(4, 0.95, Some(0.8)),
        ];
        assert_eq!(result_epoch(&r).unwrap().epoch, 3, "first of the ties");
        let line = result_line(&r).unwrap();
        assert!(
            line.contains("result: test accuracy 70.00% at epoch 3")
                && line.contains("best validation accuracy (80.00%)")
                && line.contains("last epoch: test 95.00%"),
            "{line}"
        );
        assert!(accuracy_caption(&r).contains("test 70.00% at epoch 3"));
    }

    #[test]
    fn without_a_split_the_result_is_the_last_epoch_and_best_is_labelled() {
        let r = [rec(1, 0.5, None), rec(2, 0.9, None), rec(3, 0.7, None)];
        assert_eq!(result_epoch(&r).unwrap().epoch, 3);
        let line = result_line(&r).unwrap();
        assert!(
            line.contains("result: test accuracy 70.00% (last epoch)")
                && line.contains(
                    "best test accuracy over epochs 90.00% at epoch 2 (picked on the test set"
                ),
            "{line}"
        );
        assert_eq!(result_line(&[]), None);
        assert_eq!(accuracy_caption(&[]), "Accuracy");
    }
}
