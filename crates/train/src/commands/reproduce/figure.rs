//! The reproduction's figure, like the paper's Figure 6: error (%) against epoch, one colour
//! per depth, test error bold and training error dashed. With several seeds a curve is the
//! mean over the seeds that reached that epoch.

use crate::commands::reproduce::table::RunResult;
use crate::engine::plot::{
    encode_png, ensure_font, finite_runs, format_epoch, tick_decimals, x_range, y_range, FONT,
};
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;

pub const WIDTH: u32 = 1100;
pub const HEIGHT: u32 = 700;

/// One colour per depth, in the order given (matplotlib's cycle).
pub const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Per epoch, the mean over `runs` of `error(record)` (in %) among the runs that have it.
fn mean_curve(
    runs: &[&RunResult],
    error: fn(&crate::engine::metrics::EpochRecord) -> f64,
) -> Vec<(f64, f64)> {
    let longest = runs.iter().map(|r| r.records.len()).max().unwrap_or(0);
    (0..longest)
        .filter_map(|e| {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.records.get(e))
                .map(|r| 100.0 * error(r))
                .collect();
            (!v.is_empty()).then(|| ((e + 1) as f64, v.iter().sum::<f64>() / v.len() as f64))
        })
        .collect()
}

/// Renders the figure to PNG bytes.
pub fn render(depths: &[usize], runs: &[RunResult], title: &str) -> Result<Vec<u8>> {
    ensure_font()?;
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, depths, runs, title).map_err(|e| anyhow!("drawing failed: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing failed: {e}"))?;
    }
    encode_png(&rgb, WIDTH, HEIGHT)
}

/// Renders and writes the figure atomically.
pub fn write(path: &Path, depths: &[usize], runs: &[RunResult], title: &str) -> Result<()> {
    let png =
        render(depths, runs, title).with_context(|| format!("cannot render {}", path.display()))?;
    crate::engine::atomic::write_atomic(path, &png)
        .with_context(|| format!("cannot write {}", path.display()))
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error + 'static>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    depths: &[usize],
    runs: &[RunResult],
    title: &str,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    // Per depth: its colour, mean test error and mean training error per epoch.
    type Curves = (usize, RGBColor, Vec<(f64, f64)>, Vec<(f64, f64)>);
    let curves: Vec<Curves> = depths
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let mine: Vec<&RunResult> = runs.iter().filter(|r| r.depth == d).collect();
            (
                d,
                COLORS[i % COLORS.len()],
                mean_curve(&mine, |r| 1.0 - r.test_acc),
                mean_curve(&mine, |r| 1.0 - r.train_acc),
            )
        })
        .collect();
    let xs: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.2.iter().map(|p| p.0))
        .collect();
    let x = x_range(&xs);
    let y = y_range(
        curves
            .iter()
            .flat_map(|c| c.2.iter().chain(&c.3).map(|p| p.1)),
        Some((0.0, 100.0)),
    );
    let decimals = tick_decimals(y.end - y.start);
    let mut chart = ChartBuilder::on(&root.margin(12, 12, 12, 12))
        .caption(title, (FONT, 24))
        .margin(8)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x.clone(), y)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(RGBColor(225, 225, 225))
        .x_desc("epoch")
        .y_desc("error (%): test bold, training dashed")
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 14))
        .x_labels(((x.end - x.start).round() as usize + 1).clamp(3, 11))
        .x_label_formatter(&|v| format_epoch(*v))
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .draw()?;
    let markers = xs.iter().fold(0.0f64, |m, &v| m.max(v)) <= 40.0;
    for (depth, color, test, train) in &curves {
        let (tx, ty): (Vec<f64>, Vec<f64>) = train.iter().copied().unzip();
        for run in finite_runs(&tx, &ty) {
            chart.draw_series(DashedLineSeries::new(run, 6, 5, color.stroke_width(1)))?;
        }
        let (ex, ey): (Vec<f64>, Vec<f64>) = test.iter().copied().unzip();
        let mut first = true;
        for run in finite_runs(&ex, &ey) {
            let anno =
                chart.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(3)))?;
            if first {
                let c = *color;
                anno.label(format!("ResNet-{depth}")).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                });
                first = false;
            }
            if markers {
                chart.draw_series(run.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .margin(12)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::metrics::EpochRecord;

    fn run(depth: usize, seed: u64, n: usize, offset: f64) -> RunResult {
        RunResult {
            depth,
            seed,
            params: 1,
            epochs: n,
            records: (1..=n)
                .map(|e| EpochRecord {
                    epoch: e,
                    lr: 0.1,
                    train_loss: 1.0,
                    train_acc: 0.9 - 0.5 / e as f64,
                    test_loss: 1.0,
                    test_acc: 0.85 - 0.5 / e as f64 - offset,
                    val: None,
                    seconds: 1.0,
                })
                .collect(),
            devices: vec![],
        }
    }

    #[test]
    fn mean_curves_average_the_seeds_that_reached_each_epoch() {
        let a = run(20, 0, 3, 0.0);
        let b = run(20, 1, 2, 0.1);
        let c = mean_curve(&[&a, &b], |r| 1.0 - r.test_acc);
        assert_eq!(c.len(), 3);
        assert!((c[0].1 - 100.0 * (0.65 + 0.75) / 2.0).abs() < 1e-9, "{c:?}");
        assert!((c[2].1 - 100.0 * (1.0 - (0.85 - 0.5 / 3.0))).abs() < 1e-9);
    }

    #[test]
    fn every_depth_gets_its_colour() {
        let runs = [
            run(20, 0, 30, 0.0),
            run(56, 0, 30, 0.05),
            run(110, 0, 12, 0.02),
        ];
        let png = render(&[20, 56, 110], &runs, "CIFAR-10").unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(&png));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        for c in &COLORS[..3] {
            let n = buf
                .chunks_exact(3)
                .filter(|p| p == &[c.0, c.1, c.2])
                .count();
            assert!(n > 100, "colour {c:?}: {n} pixels");
        }
        // No runs yet still renders (an empty frame).
        render(&[20], &[], "nothing yet").unwrap();
    }
}
