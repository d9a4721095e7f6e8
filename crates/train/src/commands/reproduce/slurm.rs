//! `train reproduce --slurm [--submit] [-- SBATCH OPTIONS]`: a Slurm job array, one task per
//! unfinished run. Task I runs `train reproduce --run I` with the reproduction's flags, so a task
//! that Slurm requeues (preemption, `scontrol requeue`, a node failure) continues its run from
//! the checkpoint. Before its time limit a task gets SIGTERM (`--signal=B:TERM@120`); the run
//! finishes its step, saves itself within the epoch and exits 75, on which the script requeues
//! the task. A last job (`--dependency=afterany`) writes the report when every task has ended.
//! The scripts are written to `<out>/<dataset>/slurm/` and printed; `--submit` runs `sbatch`.

use super::runs::{self, RunId};
use super::ReproduceArgs;
use crate::engine::atomic::write_atomic;
use crate::engine::interrupt::EXIT_STOPPED;
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Seconds before its time limit a task is told to stop (ample for a step and a save).
pub const SIGNAL_BEFORE_END: u32 = 120;

/// Options the report job takes from the user's: where and on whose account it runs.
const WHERE: [&str; 9] = [
    "-p",
    "--partition",
    "-A",
    "--account",
    "-q",
    "--qos",
    "--reservation",
    "-M",
    "--clusters",
];

/// `'it'\''s'`: one word for the shell, whatever it holds.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The sbatch options after `--`, one per `#SBATCH` line: an option with its value, given as
/// `--time=1:00:00`, `--time 1:00:00` or `-t 1:00:00`.
pub fn option_lines(given: &[String]) -> Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    for word in given {
        ensure!(!word.contains('\n'), "sbatch option {word:?} spans lines");
        match lines.last_mut() {
            _ if word.starts_with('-') => lines.push(word.clone()),
            Some(line) => {
                line.push(' ');
                line.push_str(word);
            }
            None => bail!("`{word}` after `--` is not an sbatch option (they start with -)"),
        }
    }
    Ok(lines)
}

/// The option a line sets: `--time` of `--time=1:00:00`, `-t` of `-t 1:00:00` or `-t1:00:00`.
fn option_name(line: &str) -> &str {
    let word = line.split([' ', '=']).next().unwrap_or(line);
    if word.starts_with("--") || word.len() <= 2 {
        word
    } else {
        &word[..2]
    }
}

fn sets(lines: &[String], names: &[&str]) -> bool {
    lines.iter().any(|l| names.contains(&option_name(l)))
}

/// The array job's script.
pub fn array_script(
    folder: &Path,
    todo: &[RunId],
    train: &Path,
    flags: &[String],
    options: &[String],
    dataset: &str,
) -> Result<String> {
    ensure!(
        !sets(options, &["-a", "--array"]),
        "--slurm sets --array itself: one task per unfinished run"
    );
    let numbers: Vec<usize> = todo.iter().map(|r| r.number).collect();
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line("#!/bin/bash");
    line(&format!(
        "# Written by `train reproduce --slurm`: one array task per unfinished run of\n\
         # {}; task I trains run I (`train reproduce ... --list` shows them).\n\
         # A run stopped by a signal (preemption, a requeue, the time limit) saves itself within\n\
         # its epoch and exits {EXIT_STOPPED}; the task is requeued and continues it from its checkpoint.",
        folder.display()
    ));
    if !sets(options, &["-J", "--job-name"]) {
        line(&format!("#SBATCH --job-name=resnet-{dataset}"));
    }
    line(&format!("#SBATCH --array={}", runs::ranges(&numbers)));
    line("#SBATCH --requeue");
    if !sets(options, &["--open-mode"]) {
        // A requeued task's log keeps its earlier attempts.
        line("#SBATCH --open-mode=append");
    }
    if !sets(options, &["-o", "--output"]) {
        let log = folder.join("logs").join("run-%a.log");
        line(&format!(
            "#SBATCH --output={}",
            quote(&log.to_string_lossy())
        ));
    }
    if !sets(options, &["--signal"]) {
        line(&format!("#SBATCH --signal=B:TERM@{SIGNAL_BEFORE_END}"));
    }
    for o in options {
        line(&format!("#SBATCH {o}"));
    }
    let command: Vec<String> = std::iter::once(train.to_string_lossy().into_owned())
        .chain(std::iter::once("reproduce".to_string()))
        .chain(flags.iter().cloned())
        .map(|w| quote(&w))
        .collect();
    write!(
        s,
        r#"set -u
echo "== $(date '+%F %T') run $SLURM_ARRAY_TASK_ID on $(hostname), attempt $((${{SLURM_RESTART_COUNT:-0}} + 1))"
# Without cgroups a task sees every core: use the ones it asked for.
if [ -n "${{SLURM_CPUS_PER_TASK:-}}" ]; then export RAYON_NUM_THREADS="$SLURM_CPUS_PER_TASK"; fi
{} --run "$SLURM_ARRAY_TASK_ID" &
run=$!
# The time-limit signal comes to this script only (B:): pass it on.
trap 'kill -TERM "$run" 2>/dev/null' TERM INT
# A trapped signal interrupts `wait`: wait until the run has ended, then take its status.
while kill -0 "$run" 2>/dev/null; do wait "$run"; done
wait "$run"
status=$?
if [ "$status" -eq {EXIT_STOPPED} ]; then
  echo "== run $SLURM_ARRAY_TASK_ID saved where it stopped: requeueing it to continue"
  if ! said=$(scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_$SLURM_ARRAY_TASK_ID" 2>&1); then
    echo "== scontrol requeue: $said (a task Slurm stopped to requeue is requeued already)"
  fi
fi
exit "$status"
"#,
        command.join(" ")
    )
    .expect("writing to a String");
    Ok(s)
}

/// The report job's script (submitted with `--dependency=afterany:<array job>`).
pub fn report_script(
    folder: &Path,
    train: &Path,
    flags: &[String],
    options: &[String],
    dataset: &str,
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s += "# Written by `train reproduce --slurm`: the report, once every run's task has ended.\n";
    s += &format!("#SBATCH --job-name=resnet-{dataset}-report\n");
    let log = folder.join("logs").join("report.log");
    s += &format!("#SBATCH --output={}\n", quote(&log.to_string_lossy()));
    s += "#SBATCH --open-mode=append\n";
    for o in options.iter().filter(|o| WHERE.contains(&option_name(o))) {
        s += &format!("#SBATCH {o}\n");
    }
    let command: Vec<String> = std::iter::once(train.to_string_lossy().into_owned())
        .chain(std::iter::once("reproduce".to_string()))
        .chain(flags.iter().cloned())
        .chain(std::iter::once("--report".to_string()))
        .map(|w| quote(&w))
        .collect();
    s += &format!("exec {}\n", command.join(" "));
    s
}

/// `sbatch --parsable ARGS`: the job's id.
fn sbatch(args: &[&str]) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .context("cannot run sbatch (is this a Slurm login node?)")?;
    ensure!(
        out.status.success(),
        "sbatch {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `id` or `id;cluster`.
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    ensure!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()),
        "sbatch printed {text:?}, not a job id"
    );
    Ok(id)
}

/// `train reproduce --slurm`.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    let options = option_lines(&args.sbatch)?;
    let todo = args.unfinished();
    let folder = std::path::absolute(args.folder()).context("cannot make --out absolute")?;
    let shown: Vec<String> = args.run_flags()?.iter().map(|w| quote(w)).collect();
    if todo.is_empty() {
        println!(
            "every run is done: nothing to submit (`train reproduce {} --report` rewrites the table)",
            shown.join(" ")
        );
        return Ok(());
    }
    let train = std::env::current_exe().context("cannot find this executable")?;
    let flags = args.run_flags()?;
    let dataset = data::Dataset::from(args.dataset).to_string();
    let array = array_script(&folder, &todo, &train, &flags, &options, &dataset)?;
    let report = report_script(&folder, &train, &flags, &options, &dataset);
    let dir = folder.join("slurm");
    let (array_path, report_path) = (dir.join("array.sbatch"), dir.join("report.sbatch"));
    std::fs::create_dir_all(folder.join("logs"))
        .with_context(|| format!("cannot create {}", folder.join("logs").display()))?;
    write_atomic(&array_path, array.as_bytes())?;
    write_atomic(&report_path, report.as_bytes())?;
    println!("# {}", array_path.display());
    print!("{array}");
    println!("# {}", report_path.display());
    print!("{report}");
    let numbers: Vec<usize> = todo.iter().map(|r| r.number).collect();
    if !args.submit {
        println!(
            "not submitted (--submit does it): sbatch {}, then sbatch --dependency=afterany:<its \
             job id> {}",
            quote(&array_path.to_string_lossy()),
            quote(&report_path.to_string_lossy())
        );
        return Ok(());
    }
    let array_id = sbatch(&[&array_path.to_string_lossy()])?;
    let report_id = sbatch(&[
        &format!("--dependency=afterany:{array_id}"),
        &report_path.to_string_lossy(),
    ])?;
    println!(
        "submitted job array {array_id} (runs {}; logs: {}/logs/run-<I>.log) and job {report_id}, \
         which writes the report when they have ended",
        runs::ranges(&numbers),
        folder.display()
    );
    println!(
        "watch them: squeue -j {array_id},{report_id}   or   train reproduce {} --list",
        shown.join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(quote("/runs/paper"), "/runs/paper");
        assert_eq!(quote("20,32"), "20,32");
        assert_eq!(quote("my runs"), "'my runs'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn sbatch_options_are_grouped_one_per_line() {
        let given: Vec<String> = [
            "--partition=gpu",
            "-t",
            "1:00:00",
            "--gpus-per-task",
            "1",
            "-Aproj",
        ]
        .map(String::from)
        .to_vec();
        let lines = option_lines(&given).unwrap();
        assert_eq!(
            lines,
            [
                "--partition=gpu",
                "-t 1:00:00",
                "--gpus-per-task 1",
                "-Aproj"
            ]
        );
        let names: Vec<&str> = lines.iter().map(|l| option_name(l)).collect();
        assert_eq!(names, ["--partition", "-t", "--gpus-per-task", "-A"]);
        let e = option_lines(&["gpu".to_string()]).unwrap_err().to_string();
        assert!(
            e.contains("`gpu`") && e.contains("not an sbatch option"),
            "{e}"
        );
    }
}
