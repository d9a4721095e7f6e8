//! Per-epoch training metrics as a CSV file.
//!
//! The CSV is the run's durable history: it is rewritten (atomically) after every epoch so a
//! user can watch it or plot it while training runs, and it is read back when a run resumes
//! from a checkpoint so the history and the plot continue where they left off. Plain CSV with
//! a fixed header keeps it loadable by anything (`pandas.read_csv`, a spreadsheet, `column`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::engine::atomic::write_atomic;

/// The CSV header, in column order.
pub const CSV_HEADER: &str = "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds";

/// The header of a run with a validation split (`--val-split`): two more columns before
/// `seconds`. A run without one keeps [`CSV_HEADER`], so older files and tools read as before.
pub const CSV_HEADER_WITH_VAL: &str =
    "epoch,lr,train_loss,train_acc,test_loss,test_acc,val_loss,val_acc,seconds";

/// Loss and accuracy on the held-out validation images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValScore {
    pub loss: f64,
    pub acc: f64,
}

/// Metrics of one finished epoch. Accuracies are fractions in `[0, 1]`, not percentages.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Learning rate used during the epoch (the value at its start for per-step schedules).
    pub lr: f64,
    /// Mean cross-entropy over the epoch's training batches.
    pub train_loss: f64,
    /// Fraction of training images classified correctly during the epoch.
    pub train_acc: f64,
    /// Mean cross-entropy over the test set after the epoch.
    pub test_loss: f64,
    /// Fraction of test images classified correctly after the epoch.
    pub test_acc: f64,
    /// The same on the validation images, in a run with `--val-split`.
    pub val: Option<ValScore>,
    /// Wall-clock seconds the epoch took (training plus evaluation).
    pub seconds: f64,
}

/// Render records as CSV text (header plus one row per record).
///
/// Floats use Rust's shortest round-trip formatting, so `read_csv(write_csv(x)) == x` exactly.
pub fn to_csv_string(records: &[EpochRecord]) -> String {
    let with_val = records.iter().any(|r| r.val.is_some());
    let mut s = String::with_capacity(64 * (records.len() + 1));
    s.push_str(if with_val {
        CSV_HEADER_WITH_VAL
    } else {
        CSV_HEADER
    });
    s.push('\n');
    for r in records {
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{},{},{},{},{},{},",
            r.epoch, r.lr, r.train_loss, r.train_acc, r.test_loss, r.test_acc
        );
        if with_val {
            let (loss, acc) = r.val.map_or((f64::NAN, f64::NAN), |v| (v.loss, v.acc));
            let _ = write!(s, "{loss},{acc},");
        }
        let _ = writeln!(s, "{}", r.seconds);
    }
    s
}

/// Atomically (re)write the metrics CSV at `path` with all `records`.
pub fn write_csv(path: &Path, records: &[EpochRecord]) -> Result<()> {
    write_atomic(path, to_csv_string(records).as_bytes())
        .with_context(|| format!("cannot write metrics CSV {}", path.display()))
}

/// Read a metrics CSV written by [`write_csv`], e.g. to continue the history on resume.
///
/// Blank lines are skipped; a wrong header or a malformed row is an error that names the file,
/// the line number and the offending column.
pub fn read_csv(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read metrics CSV {}", path.display()))?;
    parse_csv(&text).with_context(|| format!("malformed metrics CSV {}", path.display()))
}

/// Parse CSV text in the format of [`to_csv_string`].
pub fn parse_csv(text: &str) -> Result<Vec<EpochRecord>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = match lines.next() {
        Some((_, h)) if h.trim() == CSV_HEADER => CSV_HEADER,
        Some((_, h)) if h.trim() == CSV_HEADER_WITH_VAL => CSV_HEADER_WITH_VAL,
        Some((_, header)) => bail!("line 1: expected header `{CSV_HEADER}`, found `{header}`"),
        None => bail!("file is empty (expected header `{CSV_HEADER}`)"),
    };
    lines
        .map(|(i, line)| {
            parse_row(line, header).with_context(|| format!("line {}: `{line}`", i + 1))
        })
        .collect()
}

fn parse_row(line: &str, header: &str) -> Result<EpochRecord> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let names: Vec<&str> = header.split(',').collect();
    if fields.len() != names.len() {
        bail!("expected {} fields, found {}", names.len(), fields.len());
    }
    let float = |i: usize| -> Result<f64> {
        fields[i]
            .parse::<f64>()
            .with_context(|| format!("column `{}`: `{}` is not a number", names[i], fields[i]))
    };
    let epoch = fields[0]
        .parse::<usize>()
        .with_context(|| format!("column `epoch`: `{}` is not an epoch number", fields[0]))?;
    let val = if names.len() == 9 {
        Some(ValScore {
            loss: float(6)?,
            acc: float(7)?,
        })
    } else {
        None
    };
    Ok(EpochRecord {
        epoch,
        lr: float(1)?,
        train_loss: float(2)?,
        train_acc: float(3)?,
        test_loss: float(4)?,
        test_acc: float(5)?,
        val,
        seconds: float(names.len() - 1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<EpochRecord> {
        (1..=n)
            .map(|e| EpochRecord {
                epoch: e,
                lr: 0.1 * 0.2f64.powi((e / 3) as i32),
                train_loss: 2.3 / e as f64,
                train_acc: 1.0 - 0.9 / e as f64,
                test_loss: 2.4 / e as f64 + 0.01,
                test_acc: 1.0 - 0.95 / e as f64,
                val: None,
                seconds: 12.345 + e as f64 / 7.0,
            })
            .collect()
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let recs = sample(7);
        write_csv(&path, &recs).unwrap();
        assert_eq!(read_csv(&path).unwrap(), recs);

        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert!(lines.next().unwrap().starts_with("1,0.1,2.3,"));
        assert_eq!(text.lines().count(), 8);
    }

    #[test]
    fn validation_columns_round_trip_and_only_appear_with_a_split() {
        let mut recs = sample(3);
        for (i, r) in recs.iter_mut().enumerate() {
            r.val = Some(ValScore {
                loss: 1.5 / (i + 1) as f64,
                acc: 0.25 * i as f64,
            });
        }
        let text = to_csv_string(&recs);
        assert!(text.starts_with(CSV_HEADER_WITH_VAL), "{text}");
        assert_eq!(parse_csv(&text).unwrap(), recs);
        assert!(to_csv_string(&sample(2)).starts_with(&format!("{CSV_HEADER}\n")));
    }

    #[test]
    fn rewriting_replaces_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        write_csv(&path, &sample(5)).unwrap();
        write_csv(&path, &sample(2)).unwrap();
        assert_eq!(read_csv(&path).unwrap(), sample(2));
        write_csv(&path, &[]).unwrap();
        assert_eq!(read_csv(&path).unwrap(), vec![]);
    }

    #[test]
    fn malformed_row_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        let mut text = to_csv_string(&sample(2));
        text.push_str("3,0.1,oops,0.5,1.0,0.5,3.0\n");
        std::fs::write(&path, text).unwrap();
        let err = format!("{:#}", read_csv(&path).unwrap_err());
        assert!(err.contains("bad.csv"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("train_loss"), "{err}");
    }

    #[test]
    fn wrong_field_count_and_header_are_errors() {
        let short = format!("{CSV_HEADER}\n1,0.1,2.0\n");
        let err = format!("{:#}", parse_csv(&short).unwrap_err());
        assert!(
            err.contains("line 2") && err.contains("expected 7 fields"),
            "{err}"
        );

        let err = format!("{:#}", parse_csv("a,b,c\n").unwrap_err());
        assert!(err.contains("header"), "{err}");
        assert!(parse_csv("").is_err());
        let err = format!(
            "{:#}",
            parse_csv(&format!("{CSV_HEADER}\n-1,0,0,0,0,0,0\n")).unwrap_err()
        );
        assert!(err.contains("epoch"), "{err}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = format!(
            "{:#}",
            read_csv(Path::new("/nonexistent/m.csv")).unwrap_err()
        );
        assert!(err.contains("/nonexistent/m.csv"), "{err}");
    }

    #[test]
    fn tolerates_crlf_and_blank_lines() {
        let text = to_csv_string(&sample(3)).replace('\n', "\r\n") + "\r\n\r\n";
        assert_eq!(parse_csv(&text).unwrap(), sample(3));
    }
}
