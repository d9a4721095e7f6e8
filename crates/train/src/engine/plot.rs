//! Training curves as a PNG: accuracy and loss per epoch, train and test.
//!
//! The plot is what a user actually looks at to judge a run (is it still improving, is it
//! overfitting, did the learning-rate drop help), so it is rewritten after every epoch.
//!
//! Rendering is pure Rust: `plotters` draws into an in-memory RGB buffer, text is rasterised
//! with `ab_glyph` from the DejaVu Sans font embedded in the binary (the `dejavu` crate; the
//! same font matplotlib uses by default), and the `png` crate encodes the image. Nothing is
//! looked up on the system (no fontconfig, no X), so plotting works on a bare CI machine or a
//! headless GPU box. The encoded bytes are written with [`crate::engine::atomic::write_atomic`].

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::engine::atomic::write_atomic;
use crate::engine::metrics::EpochRecord;

/// Width of the PNG in pixels.
pub const WIDTH: u32 = 1400;
/// Height of the PNG in pixels.
pub const HEIGHT: u32 = 560;

/// The family name under which the embedded font is registered with plotters.
pub(crate) const FONT: &str = "sans-serif";

/// matplotlib's default colour cycle, so the curves look familiar: blue for train, orange for
/// test.
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const TEST_COLOR: RGBColor = RGBColor(255, 127, 14);
/// Validation (with `--val-split`): matplotlib's green.
const VAL_COLOR: RGBColor = RGBColor(44, 160, 44);
const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);

/// Render `records` and atomically write the PNG to `path`.
///
/// Works for any number of records: a single epoch is drawn as a pair of markers, and
/// non-finite values (a diverged loss) are left out instead of breaking the axes.
pub fn write_plot(path: &Path, records: &[EpochRecord], title: &str) -> Result<()> {
    let png = render_png(records, title)
        .with_context(|| format!("cannot render plot {}", path.display()))?;
    write_atomic(path, &png).with_context(|| format!("cannot write plot {}", path.display()))
}

/// Render the plot to PNG bytes, `WIDTH` x `HEIGHT`, 8-bit RGB.
pub fn render_png(records: &[EpochRecord], title: &str) -> Result<Vec<u8>> {
    ensure_font()?;
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, records, title).map_err(|e| anyhow!("drawing failed: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing failed: {e}"))?;
    }
    encode_png(&rgb, WIDTH, HEIGHT)
}

/// Register the embedded font once per process. plotters keeps a global font table, and
/// registering is cheap but not free (it parses the font), so do it only the first time.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVu Sans font could not be parsed"))
    }
}

pub(crate) fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().context("PNG encoding failed")?;
    writer
        .write_image_data(rgb)
        .context("PNG encoding failed")?;
    writer.finish().context("PNG encoding failed")?;
    Ok(out)
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error + 'static>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    records: &[EpochRecord],
    title: &str,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    // `titled` puts the text flush with the top edge; leave some air above it.
    let body = root
        .margin(12, 0, 0, 0)
        .titled(title, (FONT, 26).into_font().color(&BLACK))?;
    let panels = body.split_evenly((1, 2));

    let epochs: Vec<f64> = records.iter().map(|r| r.epoch as f64).collect();
    let pct = |f: fn(&EpochRecord) -> f64| records.iter().map(|r| 100.0 * f(r)).collect();
    let raw = |f: fn(&EpochRecord) -> f64| records.iter().map(f).collect();

    let acc_caption = crate::engine::report::accuracy_caption(records);
    let loss_caption = match records.last() {
        Some(r) if r.test_loss.is_finite() => format!("Loss (last test {:.4})", r.test_loss),
        _ => "Loss".to_string(),
    };

    panel(
        &panels[0],
        &acc_caption,
        "accuracy (%)",
        &epochs,
        &with_val(
            vec![
                ("train", TRAIN_COLOR, pct(|r| r.train_acc)),
                ("test", TEST_COLOR, pct(|r| r.test_acc)),
            ],
            records,
            |v| 100.0 * v.acc,
        ),
        Some((0.0, 100.0)),
        SeriesLabelPosition::LowerRight,
    )?;
    panel(
        &panels[1],
        &loss_caption,
        "cross-entropy loss",
        &epochs,
        &with_val(
            vec![
                ("train", TRAIN_COLOR, raw(|r| r.train_loss)),
                ("test", TEST_COLOR, raw(|r| r.test_loss)),
            ],
            records,
            |v| v.loss,
        ),
        Some((0.0, f64::INFINITY)),
        SeriesLabelPosition::UpperRight,
    )?;
    Ok(())
}

type Series = (&'static str, RGBColor, Vec<f64>);

/// `series` plus the validation curve when the run has a split.
fn with_val(
    mut series: Vec<Series>,
    records: &[EpochRecord],
    value: fn(crate::engine::metrics::ValScore) -> f64,
) -> Vec<Series> {
    if records.iter().any(|r| r.val.is_some()) {
        let v = records
            .iter()
            .map(|r| r.val.map_or(f64::NAN, value))
            .collect();
        series.push(("validation", VAL_COLOR, v));
    }
    series
}

/// One chart: a line (plus markers when sparse) per series against epoch.
#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_label: &str,
    epochs: &[f64],
    series: &[(&str, RGBColor, Vec<f64>)],
    clamp: Option<(f64, f64)>,
    legend_pos: SeriesLabelPosition,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let x_range = x_range(epochs);
    let y_range = y_range(series.iter().flat_map(|s| s.2.iter().copied()), clamp);
    // Ask for one label per epoch on short runs (so a single epoch gets its own tick), and
    // about ten on long ones; decimals on the value axis follow its span.
    let x_labels = ((x_range.end - x_range.start).round() as usize + 1).clamp(3, 11);
    let decimals = tick_decimals(y_range.end - y_range.start);

    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, y_range)?;

    chart
        .configure_mesh()
        .light_line_style(GRID_COLOR.mix(0.0))
        .bold_line_style(GRID_COLOR)
        .x_desc("epoch")
        .y_desc(y_label)
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 14))
        .x_labels(x_labels)
        .y_labels(8)
        .x_label_formatter(&|x| format_epoch(*x))
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .draw()?;

    // Markers make single epochs and short runs readable; on long runs they would smear the
    // line into a thick band, so only lines are drawn there.
    let markers = epochs.len() <= 40;
    for (name, color, values) in series {
        let style = ShapeStyle::from(color).stroke_width(2);
        let mut first = true;
        for run in finite_runs(epochs, values) {
            let anno = chart.draw_series(LineSeries::new(run.iter().copied(), style))?;
            if first {
                let c = *color;
                anno.label(*name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                });
                first = false;
            }
            if markers {
                chart.draw_series(
                    run.iter()
                        .map(|&p| Circle::new(p, 4, ShapeStyle::from(color).filled())),
                )?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(legend_pos)
        .margin(12)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()?;
    Ok(())
}

/// Split a series into runs of consecutive finite points, so a NaN breaks the line instead
/// of poisoning it.
pub(crate) fn finite_runs(xs: &[f64], ys: &[f64]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![];
    let mut cur = vec![];
    for (&x, &y) in xs.iter().zip(ys) {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y));
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// Epoch axis: from the first to the last epoch with a small margin; a single epoch (or none)
/// still gets a sensible, non-empty range.
pub(crate) fn x_range(epochs: &[f64]) -> Range<f64> {
    let lo = epochs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = epochs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || hi - lo < 1.0 {
        let c = if lo.is_finite() { lo } else { 1.0 };
        return (c - 1.0)..(c + 1.0);
    }
    let pad = (hi - lo) * 0.02;
    (lo - pad)..(hi + pad)
}

/// Value axis: the data's span plus 5% headroom, never beyond `clamp` (accuracy stays within
/// 0..100, loss stays >= 0), and never empty.
pub(crate) fn y_range(values: impl Iterator<Item = f64>, clamp: Option<(f64, f64)>) -> Range<f64> {
    let (lo_clamp, hi_clamp) = clamp.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        // No data at all: show the clamp range if it is finite, else 0..1.
        let lo = if lo_clamp.is_finite() { lo_clamp } else { 0.0 };
        let hi = if hi_clamp.is_finite() {
            hi_clamp
        } else {
            lo + 1.0
        };
        return lo..hi;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else {
        (hi.abs() * 0.1).max(0.5)
    };
    let lo = (lo - pad).max(lo_clamp);
    let hi = (hi + pad).min(hi_clamp);
    if hi > lo {
        lo..hi
    } else {
        lo..lo + 1.0
    }
}

pub(crate) fn format_epoch(x: f64) -> String {
    if (x - x.round()).abs() < 1e-6 && x >= 0.0 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

/// Enough decimals to tell ticks apart on an axis spanning `span`, and no
/// more: `80`, not `80.0`; `0.25`, not `0.250000`. plotters picks 5-10 ticks per axis.
pub(crate) fn tick_decimals(span: f64) -> usize {
    if span.is_nan() || span <= 0.0 {
        return 2;
    }
    let step = span / 5.0;
    (-step.log10().floor()).clamp(0.0, 6.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize) -> Vec<EpochRecord> {
        (1..=n)
            .map(|e| {
                let t = e as f64;
                let drop = if e > n * 2 / 3 { 0.5 } else { 1.0 };
                EpochRecord {
                    epoch: e,
                    lr: 0.1 * drop,
                    train_loss: 2.3 * (-t / 10.0).exp() * drop + 0.05,
                    train_acc: 1.0 - 0.9 * (-t / 8.0).exp() * drop,
                    test_loss: 2.3 * (-t / 12.0).exp() * drop + 0.3,
                    test_acc: 0.92 - 0.82 * (-t / 9.0).exp() * drop,
                    val: None,
                    seconds: 30.0,
                }
            })
            .collect()
    }

    /// Decode with the `png` crate and return (width, height, rgb pixels).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn count_color(rgb: &[u8], c: RGBColor) -> usize {
        rgb.chunks_exact(3)
            .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
            .count()
    }

    fn check_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h, rgb) = decode(&bytes);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        // Both curves are drawn in their exact colours, and there is dark text/axes.
        assert!(count_color(&rgb, TRAIN_COLOR) > 20, "no train curve");
        assert!(count_color(&rgb, TEST_COLOR) > 20, "no test curve");
        let dark = rgb
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&v| v < 60))
            .count();
        assert!(dark > 2000, "too little text/axes: {dark} dark pixels");
        let white = count_color(&rgb, WHITE);
        assert!(
            white > rgb.len() / 3 / 2,
            "background should be mostly white"
        );
    }

    #[test]
    fn single_epoch_plot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plots/curves.png");
        write_plot(&path, &run(1), "resnet20 on CIFAR-10").unwrap();
        check_png(&path);
    }

    #[test]
    fn many_epochs_plot_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        write_plot(&path, &run(3), "short").unwrap();
        write_plot(&path, &run(50), "resnet56 on CIFAR-100").unwrap();
        check_png(&path);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        if let Ok(dir) = std::env::var("TRAIN_PLOT_SAMPLE_DIR") {
            // Manual inspection hook: `TRAIN_PLOT_SAMPLE_DIR=/tmp cargo test -p train plot`.
            write_plot(
                &Path::new(&dir).join("plot-50.png"),
                &run(50),
                "resnet56 on CIFAR-100",
            )
            .unwrap();
            write_plot(
                &Path::new(&dir).join("plot-1.png"),
                &run(1),
                "resnet20 on CIFAR-10",
            )
            .unwrap();
        }
    }

    #[test]
    fn a_validation_split_adds_its_curve() {
        let mut recs = run(8);
        for r in &mut recs {
            r.val = Some(crate::engine::metrics::ValScore {
                loss: r.test_loss * 0.9,
                acc: r.test_acc * 0.98,
            });
        }
        let (_, _, rgb) = decode(&render_png(&recs, "with validation").unwrap());
        assert!(count_color(&rgb, VAL_COLOR) > 20, "no validation curve");
        let (_, _, rgb) = decode(&render_png(&run(8), "without").unwrap());
        assert_eq!(count_color(&rgb, VAL_COLOR), 0);
    }

    #[test]
    fn empty_and_non_finite_records_still_render() {
        let mut recs = run(10);
        recs[4].train_loss = f64::NAN;
        recs[5].test_loss = f64::INFINITY;
        let png = render_png(&recs, "diverged").unwrap();
        assert_eq!(decode(&png).0, WIDTH);
        let png = render_png(&[], "no epochs yet").unwrap();
        assert_eq!(decode(&png).1, HEIGHT);
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(x_range(&[5.0]), 4.0..6.0);
        assert_eq!(x_range(&[]), 0.0..2.0);
        let r = y_range([50.0].into_iter(), Some((0.0, 100.0)));
        assert!(r.start < 50.0 && r.end > 50.0);
        let r = y_range([100.0, 100.0].into_iter(), Some((0.0, 100.0)));
        assert!(r.start < 100.0 && r.end == 100.0);
        let r = y_range([0.0].into_iter(), Some((0.0, f64::INFINITY)));
        assert!(r.start == 0.0 && r.end > 0.0);
        assert_eq!(
            y_range([f64::NAN].into_iter(), Some((0.0, 100.0))),
            0.0..100.0
        );
    }

    #[test]
    fn tick_decimals_follow_the_span() {
        assert_eq!(tick_decimals(80.0), 0);
        assert_eq!(tick_decimals(2.4), 1);
        assert_eq!(tick_decimals(0.3), 2);
        assert_eq!(tick_decimals(0.0), 2);
    }

    #[test]
    fn nan_splits_runs() {
        let runs = finite_runs(&[1.0, 2.0, 3.0, 4.0], &[1.0, f64::NAN, 3.0, 4.0]);
        assert_eq!(runs, vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]);
    }
}
