//! How a launch runs: the schedule(s) and racecheck (`emu_abi.h`'s `EmuOptions`), explicit
//! ([`crate::launch_with`]) or from the environment ([`crate::launch`]):
//!
//! * `CUDA_EMU_SCHEDULE=ascending|descending|random:SEED` — the order in which a block's ready
//!   threads run (and, in the checking modes, the grid's blocks); `random` also switches
//!   threads at random shared and device memory accesses. A comma-separated list runs every
//!   launch once per schedule from the same memory and fails it if any word it writes ends
//!   different (the kernels are deterministic, so a difference is a race).
//! * `CUDA_EMU_RACECHECK=1` — shadow state for every shared and device word: unordered
//!   conflicting accesses are reported (see `racecheck.cpp`).

use std::ffi::c_int;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The order in which the emulator runs a block's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Thread 0 first, each running until it waits at a barrier (the default).
    #[default]
    Ascending,
    /// The highest thread index first.
    Descending,
    /// A fresh random permutation each round, and switches at random memory accesses; the
    /// seed makes it reproducible.
    Random(u64),
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "ascending" => Ok(Schedule::Ascending),
            "descending" => Ok(Schedule::Descending),
            other => other
                .strip_prefix("random:")
                .and_then(|seed| seed.parse().ok())
                .map(Schedule::Random)
                .ok_or_else(|| {
                    format!("schedule {other:?}: expected ascending, descending or random:SEED")
                }),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Ascending => f.write_str("ascending"),
            Schedule::Descending => f.write_str("descending"),
            Schedule::Random(seed) => write!(f, "random:{seed}"),
        }
    }
}

/// The emulator's `EMU_MAX_SCHEDULES`.
pub const MAX_SCHEDULES: usize = 8;

/// How one launch runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOptions {
    /// One schedule, or several (1 to [`MAX_SCHEDULES`]) to run and compare.
    pub schedules: Vec<Schedule>,
    /// Report races (shared memory within a block, device memory between blocks).
    pub racecheck: bool,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            schedules: vec![Schedule::Ascending],
            racecheck: false,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawSchedule {
    kind: c_int,
    seed: u64,
}

#[repr(C)]
pub(crate) struct RawOptions {
    nschedules: u32,
    schedules: [RawSchedule; MAX_SCHEDULES],
    racecheck: c_int,
}

impl LaunchOptions {
    /// One schedule, no racecheck.
    pub fn schedule(s: Schedule) -> Self {
        LaunchOptions {
            schedules: vec![s],
            racecheck: false,
        }
    }

    /// From `CUDA_EMU_SCHEDULE` and `CUDA_EMU_RACECHECK` (read once per process); an error
    /// names the bad value.
    pub fn from_env() -> Result<&'static LaunchOptions, String> {
        static FROM_ENV: OnceLock<Result<LaunchOptions, String>> = OnceLock::new();
        FROM_ENV
            .get_or_init(|| {
                Self::parse(
                    std::env::var("CUDA_EMU_SCHEDULE").ok().as_deref(),
                    std::env::var("CUDA_EMU_RACECHECK").ok().as_deref(),
                )
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The options the two variables' values give (`None`: unset).
    pub fn parse(schedule: Option<&str>, racecheck: Option<&str>) -> Result<Self, String> {
        let schedules = match schedule.map(str::trim) {
            None | Some("") => vec![Schedule::Ascending],
            Some(list) => list
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("CUDA_EMU_SCHEDULE={list}: {e}"))?,
        };
        if schedules.len() > MAX_SCHEDULES {
            return Err(format!(
                "CUDA_EMU_SCHEDULE: {} schedules, at most {MAX_SCHEDULES}",
                schedules.len()
            ));
        }
        let racecheck = match racecheck.map(str::trim) {
            None | Some("") | Some("0") => false,
            Some("1") => true,
            Some(other) => return Err(format!("CUDA_EMU_RACECHECK={other}: expected 0 or 1")),
        };
        Ok(LaunchOptions {
            schedules,
            racecheck,
        })
    }

    pub(crate) fn raw(&self) -> RawOptions {
        assert!(
            (1..=MAX_SCHEDULES).contains(&self.schedules.len()),
            "1 to {MAX_SCHEDULES} schedules, not {}",
            self.schedules.len()
        );
        let mut raw = RawOptions {
            nschedules: self.schedules.len() as u32,
            schedules: [RawSchedule { kind: 0, seed: 0 }; MAX_SCHEDULES],
            racecheck: c_int::from(self.racecheck),
        };
        for (r, s) in raw.schedules.iter_mut().zip(&self.schedules) {
            *r = match *s {
                Schedule::Ascending => RawSchedule { kind: 0, seed: 0 },
                Schedule::Descending => RawSchedule { kind: 1, seed: 0 },
                Schedule::Random(seed) => RawSchedule { kind: 2, seed },
            };
        }
        raw
    }
}
