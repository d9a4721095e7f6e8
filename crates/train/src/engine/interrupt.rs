//! Stopping a run cleanly on SIGTERM or SIGINT: Slurm's requeue, preemption and time-limit
//! signal, `kill`, Ctrl-C. The signal only sets a flag; the epoch loop checks it after each
//! step, saves the run where it is (within the epoch: `crate::engine::partial`) and ends with
//! [`Stopped`], whose exit status [`EXIT_STOPPED`] (75, EX_TEMPFAIL: "not done, try again")
//! tells a requeued Slurm task, or `reproduce --jobs`, that the run continues from its
//! checkpoint. A second Ctrl-C ends the process at once (status 130) for a user who will not
//! wait for the step; repeated SIGTERMs (Slurm may send several) only ask again.
//!
//! Test hook: `RESNET_TEST_SIGTERM_AFTER_STEP=N` makes the process send itself a real SIGTERM
//! once the N-th step of the run (counted over the run, from 1) is done, so that a test can
//! stop a run at an exact step.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// The exit status of a run stopped by a signal after saving itself: run the same command
/// again to continue it.
pub const EXIT_STOPPED: u8 = 75;

static TERM: AtomicBool = AtomicBool::new(false);
static INT: AtomicBool = AtomicBool::new(false);

/// Which signal asked the run to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Int,
}

impl StopSignal {
    /// The status a process killed by this signal would have had (128 + its number).
    pub fn killed_status(self) -> u8 {
        128 + match self {
            StopSignal::Term => SIGTERM,
            StopSignal::Int => SIGINT,
        } as u8
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        })
    }
}

/// Catches SIGTERM and SIGINT from now on (once per process; later calls return the first
/// call's outcome).
pub fn install() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = INSTALLED.get_or_init(|| {
        // The shutdown must be registered first: it is armed by the flag a first SIGINT sets.
        flag::register_conditional_shutdown(SIGINT, 130, &INT)
            .and_then(|_| flag::register(SIGINT, &INT))
            .and_then(|_| flag::register(SIGTERM, &TERM))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    outcome
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot catch SIGTERM/SIGINT: {e}"))
}

/// The signal that asked to stop, if one has (SIGTERM first when both have).
pub fn requested() -> Option<StopSignal> {
    if TERM.load(Ordering::SeqCst) {
        Some(StopSignal::Term)
    } else if INT.load(Ordering::SeqCst) {
        Some(StopSignal::Int)
    } else {
        None
    }
}

/// The test hook: call after the `n`-th step of the run (from 1).
pub fn after_step(n: usize) {
    static AT: OnceLock<Option<usize>> = OnceLock::new();
    static SENT: Mutex<bool> = Mutex::new(false);
    let at = AT.get_or_init(|| {
        std::env::var("RESNET_TEST_SIGTERM_AFTER_STEP")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(n) {
        let mut sent = SENT.lock().unwrap_or_else(|e| e.into_inner());
        if !*sent {
            *sent = true;
            // A real signal through the real handler: what `kill -TERM` does.
            let _ = signal_hook::low_level::raise(SIGTERM);
        }
    }
}

/// Asks process `pid` to stop (SIGTERM): `reproduce --jobs` forwarding a stop to its children.
pub fn terminate(pid: u32) {
    // SAFETY: kill(2) takes plain integers and has no memory effects in this process.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// A run (or a set of runs) that stopped on a signal; `main` exits with `code` and adds
/// nothing: what happened was said where it happened.
#[derive(Debug)]
pub struct Stopped {
    pub code: u8,
    pub message: String,
}

impl Stopped {
    /// Says (on stdout) that a run stopped by `signal` at `at` (`after step 5 of 13 of epoch
    /// 2`) and whether it is saved there (in `saved`); the error that ends it, whose status says
    /// "run me again" when it is saved, else what the signal would have made it.
    pub fn say(signal: StopSignal, at: &str, saved: Option<&std::path::Path>) -> Stopped {
        let (message, code) = match saved {
            Some(path) => (
                format!(
                    "stopped by {signal} {at}: the run is saved there in {}, and continues from it",
                    path.display()
                ),
                EXIT_STOPPED,
            ),
            None => (
                format!(
                    "stopped by {signal} {at}: nothing saved (no checkpoint file was asked for)"
                ),
                signal.killed_status(),
            ),
        };
        println!("{message}");
        Stopped { code, message }
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Stopped {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_name_the_signal() {
        assert_eq!(StopSignal::Term.killed_status(), 143);
        assert_eq!(StopSignal::Int.killed_status(), 130);
        assert_eq!(StopSignal::Term.to_string(), "SIGTERM");
    }
}
