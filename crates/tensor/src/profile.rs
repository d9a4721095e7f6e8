//! Where a CPU step's time goes: wall time per op, collected only while enabled (`train bench
//! --profile`). Off, a span costs one relaxed atomic load. Ops time themselves with [`span`];
//! the caller reads and clears the table with [`take`]. Host wall time: meaningful on the CPU
//! engine only (GPU launches return before their kernels run).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<OpTime>> = Mutex::new(Vec::new());

/// Total wall time and calls of one op name.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    pub name: String,
    pub time: Duration,
    pub calls: usize,
}

/// CPU time used so far by this process, all threads (`None` where the OS cannot say). On a
/// machine shared with other work it moves far less than wall time: the benches report it.
pub fn process_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a valid out-pointer.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0;
        if ok {
            return Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32));
        }
    }
    None
}

/// Starts (`true`) or stops collecting.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The table collected so far, in first-seen order; clears it.
pub fn take() -> Vec<OpTime> {
    std::mem::take(&mut *TABLE.lock().unwrap_or_else(|p| p.into_inner()))
}

thread_local! {
    /// Spans open on this thread: an op called inside another op counts as part of it.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Times until dropped, under the name `name()` builds (only called while enabled). Ops run one
/// at a time from the caller's thread (their inner parallelism is inside the span); an op that
/// calls another is timed as a whole, the inner one is not recorded separately.
pub struct Span {
    name: String,
    start: Instant,
}

pub fn span(name: impl FnOnce() -> String) -> Option<Span> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let outermost = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    Some(Span {
        name: if outermost { name() } else { String::new() },
        start: Instant::now(),
    })
}

impl Drop for Span {
    fn drop(&mut self) {
        let time = self.start.elapsed();
        DEPTH.with(|d| d.set(d.get() - 1));
        if self.name.is_empty() {
            return;
        }
        let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
        match table.iter_mut().find(|t| t.name == self.name) {
            Some(t) => {
                t.time += time;
                t.calls += 1;
            }
            None => table.push(OpTime {
                name: std::mem::take(&mut self.name),
                time,
                calls: 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans record only while enabled, an op inside another counts as part of it, and `take`
    /// empties the table. (Other tests' ops may run on other threads meanwhile: only this
    /// test's names are looked at.)
    #[test]
    fn spans_record_outermost_ops_while_enabled() {
        drop(span(|| "profile test: off".into()));
        enable(true);
        for _ in 0..2 {
            let _outer = span(|| "profile test: outer".into());
            drop(span(|| "profile test: inner".into()));
        }
        enable(false);
        let ours = |t: Vec<OpTime>| -> Vec<(String, usize)> {
            t.into_iter()
                .filter(|op| op.name.starts_with("profile test"))
                .map(|op| (op.name, op.calls))
                .collect()
        };
        assert_eq!(ours(take()), [("profile test: outer".to_string(), 2)]);
        assert!(ours(take()).is_empty());
    }
}
