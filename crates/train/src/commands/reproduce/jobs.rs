//! `train reproduce --jobs K [--gpus 0,1,...]`: K runs at once, each a child process of this
//! same executable (`train reproduce --run I` with the reproduction's flags). A small ResNet
//! cannot fill a big GPU, so several runs share one: children are spread over the listed GPUs
//! through `CUDA_VISIBLE_DEVICES`, the least busy GPU first. On the CPU the children split the
//! cores (`RAYON_NUM_THREADS`). Each child's output goes to `logs/run-<I>.log`; on a terminal
//! each running run has one line (its latest), else every line is printed with the run's
//! name. Ctrl-C (or SIGTERM) stops them all: each child finishes its step, saves its run within
//! the epoch and exits 75 (`crate::engine::interrupt`), and so does this process.

use super::runs::RunId;
use super::ReproduceArgs;
use crate::engine::interrupt::{self, Stopped, EXIT_STOPPED};
use anyhow::{bail, ensure, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A run being trained by a child.
struct Running {
    id: RunId,
    child: Child,
    gpu: Option<usize>,
    log: File,
    bar: ProgressBar,
    last: String,
}

/// How a child ended.
enum Ended {
    Done,
    Stopped,
    Failed(String),
}

/// Cores per child: the machine's, split K ways (at least one each).
pub fn threads_per_child(cores: usize, k: usize) -> usize {
    (cores / k.max(1)).max(1)
}

/// The GPU (index into the list) with the fewest children on it, the first of those on a tie.
pub fn least_busy(children_per_gpu: &[usize]) -> Option<usize> {
    (0..children_per_gpu.len()).min_by_key(|&g| children_per_gpu[g])
}

/// Sends each line of `from` to `to`, tagged with the run's number.
fn forward(
    from: impl std::io::Read + Send + 'static,
    number: usize,
    to: mpsc::Sender<(usize, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if to.send((number, line)).is_err() {
                break;
            }
        }
    });
}

/// `train reproduce --jobs K`.
pub fn run(args: &ReproduceArgs, k: usize) -> Result<()> {
    ensure!(k > 0, "--jobs must be at least 1");
    let gpus = args.gpus.clone().unwrap_or_default();
    ensure!(
        gpus.iter().all(|g| !g.trim().is_empty()),
        "--gpus needs GPU numbers (or UUIDs) separated by commas"
    );
    interrupt::install()?;
    let total = args.runs().len();
    let mut queue: VecDeque<RunId> = args.unfinished().into();
    if queue.is_empty() {
        println!("every run is done: nothing to train");
        let results = super::write_results(args)?;
        super::show_results(args, &results, 0);
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find this executable to start the runs")?;
    let flags = args.run_flags()?;
    let logs = args.folder().join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads_per_child(cores, k.min(queue.len()));
    let interactive = std::io::stderr().is_terminal();
    let bars = MultiProgress::new();
    if !interactive {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:.bold} {spinner} {wide_msg}")
        .expect("valid template");
    let where_ = if gpus.is_empty() {
        format!(
            "{threads} CPU thread{} each",
            if threads == 1 { "" } else { "s" }
        )
    } else {
        format!("on GPUs {}", gpus.join(","))
    };
    println!(
        "{} of {total} runs to train, {} at a time ({where_}); logs in {}",
        queue.len(),
        k.min(queue.len()),
        logs.display()
    );
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut running: Vec<Running> = Vec::new();
    let mut per_gpu = vec![0usize; gpus.len()];
    let (mut done, mut stopped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let mut stopping = false;
    loop {
        while !stopping && running.len() < k {
            let Some(id) = queue.pop_front() else { break };
            let gpu = least_busy(&per_gpu);
            let mut cmd = Command::new(&exe);
            cmd.arg("reproduce")
                .args(&flags)
                .args(["--run", &id.number.to_string()])
                .env("RAYON_NUM_THREADS", threads.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(g) = gpu {
                cmd.env("CUDA_VISIBLE_DEVICES", gpus[g].trim());
                per_gpu[g] += 1;
            }
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot start {} for run {}", exe.display(), id.number))?;
            forward(child.stdout.take().expect("piped"), id.number, tx.clone());
            forward(child.stderr.take().expect("piped"), id.number, tx.clone());
            let path = logs.join(format!("run-{}.log", id.number));
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let on = gpu.map_or(String::new(), |g| format!(" on GPU {}", gpus[g].trim()));
            bars.suspend(|| {
                println!(
                    "run {} ({}) started{on}: {}",
                    id.number,
                    id.name(),
                    path.display()
                )
            });
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("run {} {}{on}", id.number, id.name()));
            bar.enable_steady_tick(Duration::from_millis(250));
            running.push(Running {
                id,
                child,
                gpu,
                log,
                bar,
                last: String::new(),
            });
        }
        if running.is_empty() {
            break;
        }
        // The children's lines, until none came for a tenth of a second.
        while let Ok((number, line)) = rx.recv_timeout(Duration::from_millis(100)) {
            if let Some(r) = running.iter_mut().find(|r| r.id.number == number) {
                let _ = writeln!(r.log, "{line}");
                if interactive {
                    r.bar.set_message(line.clone());
                } else {
                    println!("[run {} {}] {line}", number, r.id.name());
                }
                r.last = line;
            }
        }
        if !stopping {
            if let Some(signal) = interrupt::requested() {
                stopping = true;
                bars.suspend(|| {
                    println!(
                        "{signal}: stopping every run after its step (each saves itself); not \
                         starting the {} others",
                        queue.len()
                    )
                });
                for r in &running {
                    interrupt::terminate(r.child.id());
                }
            }
        }
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].child.try_wait()? else {
                i += 1;
                continue;
            };
            let mut r = running.swap_remove(i);
            // What the child printed last, after it ended.
            while let Ok((number, line)) = rx.try_recv() {
                if let Some(other) = running.iter_mut().find(|o| o.id.number == number) {
                    let _ = writeln!(other.log, "{line}");
                    other.last = line;
                } else if number == r.id.number {
                    let _ = writeln!(r.log, "{line}");
                    if !interactive {
                        println!("[run {} {}] {line}", number, r.id.name());
                    }
                    r.last = line;
                }
            }
            if let Some(g) = r.gpu {
                per_gpu[g] -= 1;
            }
            let ended = match status.code() {
                Some(0) => Ended::Done,
                Some(c) if c == i32::from(EXIT_STOPPED) => Ended::Stopped,
                _ => Ended::Failed(format!("{status}: {}", r.last)),
            };
            let name = format!("run {} ({})", r.id.number, r.id.name());
            let said = match ended {
                Ended::Done => {
                    done.push(r.id.number);
                    format!("{name}: {}", r.last)
                }
                Ended::Stopped => {
                    stopped.push(r.id.number);
                    format!("{name}: stopped, saved; the same command continues it")
                }
                Ended::Failed(why) => {
                    failed.push(r.id.number);
                    format!(
                        "{name} failed ({why}); its log: logs/run-{}.log",
                        r.id.number
                    )
                }
            };
            r.bar.finish_and_clear();
            bars.remove(&r.bar);
            bars.suspend(|| println!("{said}"));
        }
    }
    let results = super::write_results(args)?;
    super::show_results(args, &results, 0);
    if !failed.is_empty() {
        bail!(
            "runs {} failed (their logs in {} say why)",
            failed
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            logs.display()
        );
    }
    if stopping || !stopped.is_empty() {
        let message = format!(
            "stopped: {} runs done, {} saved where they were, {} not started; the same command \
             continues",
            done.len(),
            stopped.len(),
            queue.len()
        );
        println!("{message}");
        return Err(Stopped {
            code: EXIT_STOPPED,
            message,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_split_the_cores_and_spread_over_the_gpus() {
        assert_eq!(threads_per_child(16, 4), 4);
        assert_eq!(threads_per_child(2, 4), 1);
        assert_eq!(threads_per_child(7, 2), 3);
        assert_eq!(least_busy(&[]), None);
        assert_eq!(least_busy(&[1, 0]), Some(1));
        assert_eq!(least_busy(&[1, 1]), Some(0));
        // Five children on two GPUs: 3 and 2.
        let mut per_gpu = vec![0; 2];
        for _ in 0..5 {
            let g = least_busy(&per_gpu).unwrap();
            per_gpu[g] += 1;
        }
        assert_eq!(per_gpu, [3, 2]);
    }
}
