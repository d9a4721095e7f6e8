//! The paper's warm-up for its deepest CIFAR nets (He et al. 2016, §4.2): "we use 0.01 to
//! warm up the training until the training error is below 80% (about 400 iterations), and
//! then go back to 0.1".
//!
//! The training error is measured on the images of the last [`CHECK_EVERY`] steps (1,280 at
//! batch 128: at chance, 90% error, 20% accuracy on so many images is ~12 standard deviations
//! away, so noise does not end the warm-up early), and checked at fixed steps of the epoch,
//! so the switch falls on the same iteration on any device and in a resumed run. A GPU run
//! reads its loss meter at those steps while the warm-up lasts (one wait per 10 steps, for a
//! few hundred steps).

use crate::engine::schedule::LrSchedule;
use crate::engine::spec::Warmup;
use tensor::MeterReading;

/// Steps between two checks of the training error.
pub const CHECK_EVERY: usize = 10;

/// The warm-up ends once the training error is below this.
pub const ERROR_BELOW: f64 = 0.8;

/// Where the warm-up stands in a run.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupState {
    pub rule: Warmup,
    /// The iteration (counted over the run) from which lr is back at its scheduled value,
    /// once the paper's rule has switched.
    pub done_at: Option<usize>,
    /// Correct and seen images at the start of the current window (meter counts of the epoch).
    window: (usize, usize),
}

/// The training error that ended the warm-up, and where.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Switch {
    pub error: f64,
    pub iteration: usize,
}

impl WarmupState {
    /// `done_at` from the checkpoint of a resumed run.
    pub fn new(rule: Warmup, done_at: Option<usize>) -> Self {
        WarmupState {
            rule,
            done_at,
            window: (0, 0),
        }
    }

    /// Whether the paper's rule is still deciding (its checks need meter reads).
    pub fn watching(&self) -> bool {
        self.rule == Warmup::UntilTrainErrorBelow80 && self.done_at.is_none()
    }

    /// The learning rate of iteration `step` (counted over the run). A fixed warm-up
    /// (`--warmup-iters`) is part of `schedule` already.
    pub fn lr(&self, schedule: &LrSchedule, step: usize) -> f32 {
        if self.watching() {
            schedule.base_lr * 0.1
        } else {
            schedule.lr(step)
        }
    }

    /// A new epoch: its meter starts from zero.
    pub fn start_epoch(&mut self) {
        self.window = (0, 0);
    }

    /// The current window's start (correct, seen in the epoch's counts): saved when a run
    /// stops within an epoch.
    pub fn window(&self) -> (usize, usize) {
        self.window
    }

    /// A run resumed within an epoch: the window it had when it stopped (after
    /// [`WarmupState::start_epoch`]).
    pub fn resume_window(&mut self, window: (usize, usize)) {
        self.window = window;
    }

    /// Whether the rule checks after `steps` steps of the epoch (`last`: the epoch's end).
    pub fn check_due(&self, steps: usize, last: bool) -> bool {
        self.watching() && (steps.is_multiple_of(CHECK_EVERY) || last)
    }

    /// The rule's check on the epoch's meter after iteration `iteration - 1`: the error of
    /// the images since the last check; below 80% ends the warm-up from `iteration` on.
    pub fn check(&mut self, m: &MeterReading, iteration: usize) -> Option<Switch> {
        let (correct, seen) = (m.correct - self.window.0, m.count - self.window.1);
        self.window = (m.correct, m.count);
        if !self.watching() || seen == 0 {
            return None;
        }
        let error = 1.0 - correct as f64 / seen as f64;
        (error < ERROR_BELOW).then(|| {
            self.done_at = Some(iteration);
            Switch { error, iteration }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedule::Schedule;

    fn reading(correct: usize, count: usize) -> MeterReading {
        MeterReading {
            loss_sum: 0.0,
            loss: 0.0,
            correct,
            count,
        }
    }

    fn schedule() -> LrSchedule {
        LrSchedule {
            base_lr: 0.1,
            schedule: Schedule::Step {
                milestones: vec![1000],
            },
            epochs: 10,
            steps_per_epoch: 200,
            warmup_iters: 0,
        }
    }

    #[test]
    fn the_rule_holds_lr_at_a_tenth_until_a_window_is_below_80_percent_error() {
        let s = schedule();
        let mut w = WarmupState::new(Warmup::UntilTrainErrorBelow80, None);
        assert!(w.watching() && w.lr(&s, 0) == 0.1 * 0.1);
        assert!(w.check_due(10, false) && !w.check_due(11, false) && w.check_due(13, true));
        // 1,280 images at 15% accuracy: still warming up.
        assert_eq!(w.check(&reading(192, 1280), 10), None);
        // The next window: 300 right of 1,280 (23.4%, error 76.6%) although the epoch's
        // cumulative accuracy is only 19%: the window decides.
        let sw = w.check(&reading(492, 2560), 20).expect("switched");
        assert_eq!(sw.iteration, 20);
        assert!((sw.error - (1.0 - 300.0 / 1280.0)).abs() < 1e-12);
        assert_eq!(w.done_at, Some(20));
        assert!(!w.watching() && w.lr(&s, 20) == 0.1 && w.lr(&s, 1000) == 0.1 * 0.1);
        assert_eq!(w.check(&reading(2000, 3840), 30), None, "decided once");
    }

    #[test]
    fn other_warmups_never_watch() {
        let s = schedule();
        for rule in [Warmup::None, Warmup::Iters(5)] {
            let mut w = WarmupState::new(rule, None);
            assert!(!w.watching() && !w.check_due(10, true));
            assert_eq!(w.check(&reading(1280, 1280), 10), None);
            assert_eq!(w.lr(&s, 0), s.lr(0));
        }
        // A resumed run whose warm-up had ended.
        let w = WarmupState::new(Warmup::UntilTrainErrorBelow80, Some(412));
        assert!(!w.watching() && w.lr(&s, 413) == 0.1);
        // An epoch restarts the window.
        let mut w = WarmupState::new(Warmup::UntilTrainErrorBelow80, None);
        w.check(&reading(10, 100), 1);
        w.start_epoch();
        assert!(w.check(&reading(50, 100), 2).is_some());
        // A run stopped within an epoch takes its window along: the same decision follows.
        let mut a = WarmupState::new(Warmup::UntilTrainErrorBelow80, None);
        a.check(&reading(100, 1280), 10);
        let mut b = WarmupState::new(Warmup::UntilTrainErrorBelow80, None);
        b.start_epoch();
        b.resume_window(a.window());
        assert_eq!(a.window(), (100, 1280));
        assert_eq!(
            a.check(&reading(400, 2560), 20),
            b.check(&reading(400, 2560), 20)
        );
        assert_eq!(a, b);
    }
}
