//! The reproduction's markdown table: one row per depth, our last-epoch test error (mean ±
//! sd over seeds) beside the paper's.

use crate::engine::metrics::EpochRecord;
use std::fmt::Write as _;

/// The paper's CIFAR-10 test errors (He et al. 2016, Table 6), in %. For ResNet-110 the
/// paper gives its best of 5 runs, 6.43 (mean 6.61 ± 0.16).
pub const PAPER_CIFAR10: [(usize, &str); 6] = [
    (20, "8.75"),
    (32, "7.51"),
    (44, "7.17"),
    (56, "6.97"),
    (110, "6.43 (best of 5; mean 6.61 ± 0.16)"),
    (1202, "7.93"),
];

/// One run (a depth and a seed) as found on disk.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub depth: usize,
    pub seed: u64,
    pub params: usize,
    /// Epochs the run plans.
    pub epochs: usize,
    pub records: Vec<EpochRecord>,
    pub devices: Vec<String>,
}

impl RunResult {
    pub fn finished(&self) -> bool {
        self.records.len() >= self.epochs
    }

    /// Test error of the last epoch, in %.
    pub fn last_test_error(&self) -> Option<f64> {
        self.records.last().map(|r| 100.0 * (1.0 - r.test_acc))
    }

    pub fn seconds(&self) -> f64 {
        self.records.iter().map(|r| r.seconds).sum()
    }
}

/// Mean and sample standard deviation (n − 1; 0 for one value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `2h 05m`, `3m 12s`, `4.2s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

fn thousands(n: usize) -> String {
    crate::engine::oom::thousands(n)
}

/// The paper's figure for `depth` on `dataset`, or a dash.
pub fn paper_error(dataset: data::Dataset, depth: usize) -> &'static str {
    match dataset {
        data::Dataset::Cifar10 => PAPER_CIFAR10
            .iter()
            .find(|(d, _)| *d == depth)
            .map_or("—", |(_, e)| e),
        data::Dataset::Cifar100 => "—",
    }
}

/// `CIFAR-10`, `CIFAR-100`.
pub fn pretty(dataset: data::Dataset) -> &'static str {
    match dataset {
        data::Dataset::Cifar10 => "CIFAR-10",
        data::Dataset::Cifar100 => "CIFAR-100",
    }
}

/// The markdown document: a heading, the recipe, the table, and notes.
pub fn markdown(
    dataset: data::Dataset,
    depths: &[usize],
    seeds: usize,
    runs: &[RunResult],
    recipe: &str,
) -> String {
    let mut s = String::new();
    let name = pretty(dataset);
    let _ = writeln!(s, "# ResNets on {name}: the paper's table, reproduced\n");
    let _ = writeln!(s, "{recipe}\n");
    let _ = writeln!(
        s,
        "| depth | params | our test error, last epoch (%) | paper's test error (%) | epochs | wall time per run | device |"
    );
    let _ = writeln!(s, "| ---: | ---: | --- | --- | ---: | ---: | --- |");
    for &depth in depths {
        let mine: Vec<&RunResult> = runs.iter().filter(|r| r.depth == depth).collect();
        let done: Vec<&RunResult> = mine.iter().copied().filter(|r| r.finished()).collect();
        let params = mine.first().map_or("—".into(), |r| thousands(r.params));
        let errors: Vec<f64> = done.iter().filter_map(|r| r.last_test_error()).collect();
        let ours = match errors.len() {
            0 => match mine.iter().map(|r| r.records.len()).max() {
                Some(e) if e > 0 => format!("running: {e} of {} epochs done", mine[0].epochs),
                _ => "not run yet".into(),
            },
            1 => format!("{:.2}", errors[0]),
            n => {
                let (m, sd) = mean_sd(&errors);
                let each = errors
                    .iter()
                    .map(|e| format!("{e:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{m:.2} ± {sd:.2} ({n} seeds: {each})")
            }
        };
        let ours = if !errors.is_empty() && done.len() < seeds {
            format!("{ours}; {} of {seeds} seeds done", done.len())
        } else {
            ours
        };
        let epochs = mine.first().map_or("—".into(), |r| r.epochs.to_string());
        let time = if done.is_empty() {
            "—".into()
        } else {
            duration(done.iter().map(|r| r.seconds()).sum::<f64>() / done.len() as f64)
        };
        let mut devices: Vec<&str> = Vec::new();
        for d in mine.iter().flat_map(|r| r.devices.iter()) {
            if !devices.contains(&d.as_str()) {
                devices.push(d);
            }
        }
        let devices = if devices.is_empty() {
            "—".into()
        } else {
            devices.join(" + ")
        };
        let _ = writeln!(
            s,
            "| {depth} | {params} | {ours} | {} | {epochs} | {time} | {devices} |",
            paper_error(dataset, depth)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Test error = 100% − test accuracy after the last epoch (no epoch picked on the test set). \
         With several seeds: mean ± sample standard deviation. Wall time includes the \
         evaluation after every epoch."
    );
    if dataset == data::Dataset::Cifar100 {
        let _ = writeln!(
            s,
            "\nThe paper reports no CIFAR-100 results for these networks, so there is nothing to compare with."
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(depth: usize, seed: u64, errors: &[f64], epochs: usize) -> RunResult {
        RunResult {
            depth,
            seed,
            params: 269_722,
            epochs,
            records: errors
                .iter()
                .enumerate()
                .map(|(i, e)| EpochRecord {
                    epoch: i + 1,
                    lr: 0.1,
                    train_loss: 1.0,
                    train_acc: 0.5,
                    test_loss: 1.0,
                    test_acc: 1.0 - e / 100.0,
                    val: None,
                    seconds: 30.0,
                })
                .collect(),
            devices: vec!["cpu (2 threads)".into()],
        }
    }

    #[test]
    fn rows_show_last_epoch_errors_with_mean_and_sd_over_seeds() {
        let runs = [
            result(20, 0, &[50.0, 9.0], 2),
            result(20, 1, &[40.0, 8.0], 2),
            result(32, 0, &[30.0], 2),
        ];
        let md = markdown(data::Dataset::Cifar10, &[20, 32, 44], 2, &runs, "recipe");
        assert!(md.contains("| 20 | 269,722 | 8.50 ± 0.71 (2 seeds: 9.00, 8.00) | 8.75 | 2 | 1m 00s | cpu (2 threads) |"), "{md}");
        assert!(
            md.contains("| 32 | 269,722 | running: 1 of 2 epochs done | 7.51 |"),
            "{md}"
        );
        assert!(md.contains("| 44 | — | not run yet | 7.17 |"), "{md}");
        let md = markdown(data::Dataset::Cifar100, &[20], 1, &runs[..1], "recipe");
        assert!(
            md.contains("| 20 | 269,722 | 9.00 | — |") && md.contains("no CIFAR-100"),
            "{md}"
        );
    }

    #[test]
    fn statistics_and_durations() {
        assert_eq!(mean_sd(&[7.0]), (7.0, 0.0));
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (sd - 1.0).abs() < 1e-12);
        assert_eq!(duration(4.24), "4.2s");
        assert_eq!(duration(192.0), "3m 12s");
        assert_eq!(duration(7500.0), "2h 05m");
    }
}
