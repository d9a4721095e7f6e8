//! Learning rate as a function of the iteration: the paper's step schedule (lr/10 at 32k and
//! 48k of 64k iterations, i.e. 50% and 75%), cosine, and the ResNet-110 warm-up.

/// Which schedule a run uses (`--schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// lr/10 at each milestone.
    Step,
    /// Cosine decay from lr to 0 over all steps.
    Cosine,
}

impl ScheduleKind {
    /// The name a run's settings record (`step`, `cosine`).
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Step => "step",
            ScheduleKind::Cosine => "cosine",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Divide by 10 at each milestone, counted in iterations.
    Step { milestones: Vec<usize> },
    /// `lr·(1 + cos(π·t/T))/2` over all iterations.
    Cosine,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f32,
    pub schedule: Schedule,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    /// Iterations at `base_lr / 10` before the schedule proper starts.
    pub warmup_iters: usize,
}

impl LrSchedule {
    /// Milestones in iterations: the given epochs, or by default 50% and 75% of all
    /// iterations (the paper's 32k and 48k of 64k; exactly epochs 82 and 123 of 164).
    pub fn milestones(
        epochs: Option<&[usize]>,
        total_epochs: usize,
        steps_per_epoch: usize,
    ) -> Vec<usize> {
        match epochs {
            Some(e) => e.iter().map(|&e| e * steps_per_epoch).collect(),
            None => {
                let total = total_epochs * steps_per_epoch;
                vec![total / 2, total * 3 / 4]
            }
        }
    }

    /// The learning rate of iteration `step` (counted from 0 over the whole run).
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup_iters {
            return self.base_lr * 0.1;
        }
        match &self.schedule {
            Schedule::Step { milestones } => {
                let drops = milestones.iter().filter(|&&m| step >= m).count();
                self.base_lr * 0.1f32.powi(drops as i32)
            }
            Schedule::Cosine => {
                let total = (self.epochs * self.steps_per_epoch).max(1) as f64;
                let t = (step as f64 / total).min(1.0);
                (self.base_lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }
}

/// A learning rate for people: `0.01`, not f32's `0.010000001`.
pub fn show_lr(lr: f32) -> String {
    let s = format!("{lr:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "0" && lr != 0.0 {
        format!("{lr:e}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rates_print_short() {
        assert_eq!(show_lr(0.1 * 0.1), "0.01");
        assert_eq!(show_lr(0.1), "0.1");
        assert_eq!(show_lr(0.001), "0.001");
        assert_eq!(show_lr(1e-9), "1e-9");
        assert_eq!(show_lr(2.0), "2");
    }

    #[test]
    fn paper_schedule_drops_at_82_and_123_of_164() {
        let s = LrSchedule {
            base_lr: 0.1,
            schedule: Schedule::Step {
                milestones: LrSchedule::milestones(None, 164, 391),
            },
            epochs: 164,
            steps_per_epoch: 391,
            warmup_iters: 400,
        };
        assert_eq!(
            LrSchedule::milestones(None, 164, 391),
            vec![82 * 391, 123 * 391]
        );
        assert_eq!(s.lr(0), 0.1 * 0.1);
        assert_eq!(s.lr(399), 0.1 * 0.1);
        assert_eq!(s.lr(400), 0.1);
        assert_eq!(s.lr(82 * 391 - 1), 0.1);
        assert!((s.lr(82 * 391) - 0.01).abs() < 1e-9);
        assert!((s.lr(123 * 391) - 0.001).abs() < 1e-9);
        // One short epoch still gets both drops, mid-epoch; explicit epochs are honoured.
        assert_eq!(LrSchedule::milestones(None, 1, 40), vec![20, 30]);
        assert_eq!(LrSchedule::milestones(Some(&[1, 2]), 3, 4), vec![4, 8]);
    }

    #[test]
    fn cosine_goes_from_lr_to_zero() {
        let s = LrSchedule {
            base_lr: 0.1,
            schedule: Schedule::Cosine,
            epochs: 10,
            steps_per_epoch: 10,
            warmup_iters: 0,
        };
        assert_eq!(s.lr(0), 0.1);
        assert!((s.lr(50) - 0.05).abs() < 1e-6);
        assert!(s.lr(100).abs() < 1e-7);
    }
}
