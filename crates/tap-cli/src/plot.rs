//! `tap runs plot`: metric curves as a PNG. One panel per metric, one line per run, step on the
//! x axis. Drawn with plotters' bitmap backend; text uses DejaVu Sans compiled into the binary,
//! so a headless training node without any fonts draws the same picture as a laptop.

use std::collections::BTreeMap;
use std::sync::Once;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use tap_core::runs::MetricPoint;

/// The metric curves of one run, as recorded.
pub struct RunMetrics {
    pub run_id: String,
    pub points: Vec<MetricPoint>,
}

/// One line of a panel: a run's (step, value) points, sorted by step, finite values only.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(u64, f64)>,
}

/// One panel: a metric and its lines (one per run that has it).
#[derive(Debug, PartialEq)]
pub struct Panel {
    pub metric: String,
    pub lines: Vec<Line>,
}

/// Groups the runs' points into panels, one per metric (alphabetical), keeping `only` when it is
/// not empty. Non-finite values are dropped (a NaN loss is a fact for `runs show`, not a point
/// a line can be drawn through). Errors name the problem: no metrics at all, or an unknown metric
/// with the ones that exist.
pub fn panels(runs: &[RunMetrics], only: &[String]) -> Result<Vec<Panel>> {
    let mut by_metric: BTreeMap<&str, Vec<Line>> = BTreeMap::new();
    for run in runs {
        let mut series: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
        for p in &run.points {
            let s = series.entry(&p.name).or_default();
            if p.value.is_finite() {
                s.push((p.step, p.value));
            }
        }
        for (name, mut points) in series {
            points.sort_by_key(|&(step, _)| step);
            by_metric.entry(name).or_default().push(Line { label: run.run_id.clone(), points });
        }
    }
    if by_metric.is_empty() {
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        bail!(
            "no metrics to plot: {} recorded none (the command writes them as JSON lines to TAP_METRICS_FILE)",
            ids.join(", ")
        );
    }
    for m in only {
        if !by_metric.contains_key(m.as_str()) {
            let known: Vec<&str> = by_metric.keys().copied().collect();
            bail!("no metric {m} in these runs; they have: {}", known.join(", "));
        }
    }
    Ok(by_metric
        .into_iter()
        .filter(|(name, _)| only.is_empty() || only.iter().any(|m| m == name))
        .map(|(metric, lines)| Panel { metric: metric.to_owned(), lines })
        .collect())
}

/// Takes log10 of every value for a logarithmic y axis (a loss spanning decades reads better);
/// values ≤ 0 have no logarithm and are dropped.
pub fn log_y(panels: &[Panel]) -> Vec<Panel> {
    let log = |l: &Line| Line {
        label: l.label.clone(),
        points: l.points.iter().filter(|&&(_, v)| v > 0.0).map(|&(s, v)| (s, v.log10())).collect(),
    };
    panels.iter().map(|p| Panel { metric: p.metric.clone(), lines: p.lines.iter().map(log).collect() }).collect()
}

/// The x and y ranges a panel is drawn on: every point inside, y padded by 5 %, a flat or
/// single-point series still gets a non-empty range.
pub fn ranges(panel: &Panel) -> ((u64, u64), (f64, f64)) {
    let pts = || panel.lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1) = pts().fold((u64::MAX, 0), |(lo, hi), &(x, _)| (lo.min(x), hi.max(x)));
    let (mut y0, mut y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| (lo.min(y), hi.max(y)));
    if x0 > x1 {
        (x0, x1, y0, y1) = (0, 1, 0.0, 1.0);
    }
    if x0 == x1 {
        x1 = x0 + 1;
    }
    let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { y0.abs().max(1.0) * 0.05 };
    ((x0, x1), (y0 - pad, y1 + pad))
}

/// Grid of `n` panels: (rows, columns), two columns from two panels on.
pub fn grid(n: usize) -> (usize, usize) {
    let cols = if n > 1 { 2 } else { 1 };
    (n.div_ceil(cols), cols)
}

pub const MIN_SIZE: u32 = 200;
pub const MAX_SIZE: u32 = 8000;

const FONT: &str = "sans-serif";

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| anyhow::anyhow!("the embedded DejaVu Sans font does not load"));
    });
    result
}

/// Draws `panels` into a `width` x `height` PNG and returns its bytes.
/// With `log` the values are log10s (see [`log_y`]) and the y labels show the values themselves.
pub fn render_png(title: &str, panels: &[Panel], (width, height): (u32, u32), log: bool) -> Result<Vec<u8>> {
    check_size(width, height)?;
    register_font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    draw(&mut rgb, title, panels, (width, height), log).map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    encode(&rgb, width, height)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The colour of the `i`-th run's line, the same in every panel.
pub fn colour(i: usize) -> RGBColor {
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn draw(rgb: &mut [u8], title: &str, panels: &[Panel], size: (u32, u32), log: bool) -> DrawResult {
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let (rows, cols) = grid(panels.len());
    // Every run keeps its colour across panels: index by label over all panels.
    let mut labels: Vec<&str> = Vec::new();
    for l in panels.iter().flat_map(|p| &p.lines) {
        if !labels.contains(&l.label.as_str()) {
            labels.push(&l.label);
        }
    }
    for (area, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let ((x0, x1), (y0, y1)) = ranges(panel);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.metric, (FONT, 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 12))
            .y_label_formatter(&|&v| if log { format!("{:.3e}", 10f64.powf(v)) } else { format!("{v:.4}") })
            .draw()?;
        for line in &panel.lines {
            let i = labels.iter().position(|l| *l == line.label).unwrap_or(0);
            let c = colour(i);
            let s = chart.draw_series(LineSeries::new(line.points.iter().copied(), c.stroke_width(2)))?;
            if labels.len() > 1 {
                s.label(line.label.as_str())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
            }
        }
        if labels.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 12))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// What `tap goodput --plot` draws for one run: its attempts as bars coloured by node, the
/// badput intervals shaded by cause, and the step curve with re-run steps marked. Seconds are
/// since the run's first attempt started.
#[derive(Debug, PartialEq)]
pub struct Timeline {
    pub label: String,
    /// (from s, to s, node label), one per attempt.
    pub attempts: Vec<(f64, f64, String)>,
    /// (from s, to s, cause): every interval that was not productive.
    pub shades: Vec<(f64, f64, tap_core::goodput::Cause)>,
    /// (s, step) kept, one line per attempt, and (s, step) computed and later lost.
    pub kept: Vec<Vec<(f64, u64)>>,
    pub rerun: Vec<(f64, u64)>,
}

/// The timeline of one run's goodput.
pub fn timeline(label: &str, g: &tap_core::goodput::Goodput) -> Timeline {
    let t0 = g.attempts.iter().map(|a| a.started_ms).min().unwrap_or(0);
    let s = |ms: i64| (ms - t0) as f64 / 1000.0;
    let mut out = Timeline { label: label.to_owned(), attempts: vec![], shades: vec![], kept: vec![], rerun: vec![] };
    for a in &g.attempts {
        let node = match &a.node {
            Some(n) => format!("{} {}", n.instance_id, n.instance_type),
            None => a.instance_id.clone().unwrap_or_else(|| a.host.clone()),
        };
        out.attempts.push((s(a.started_ms), s(a.ended_ms), node));
        for iv in a.intervals.iter().filter(|iv| iv.cause != tap_core::goodput::Cause::Productive) {
            out.shades.push((s(iv.from_ms), s(iv.to_ms), iv.cause));
        }
        let mut line = Vec::new();
        for &(step, at) in &a.reports {
            let lost = a.kept_until.is_some_and(|k| step > k);
            if lost { &mut out.rerun } else { &mut line }.push((s(at), step));
        }
        out.kept.push(line);
    }
    out
}

/// The shade of a badput cause (light, so the curve stays readable over it).
pub fn cause_colour(c: tap_core::goodput::Cause) -> RGBColor {
    use tap_core::goodput::Cause;
    match c {
        Cause::Productive => RGBColor(255, 255, 255),
        Cause::ProgramStartup => RGBColor(255, 204, 153),
        Cause::CheckpointSave => RGBColor(153, 204, 255),
        Cause::CheckpointRestore => RGBColor(153, 230, 230),
        Cause::WastedProgress => RGBColor(255, 153, 153),
        Cause::Stopping => RGBColor(204, 179, 230),
        Cause::WaitingForCapacity => RGBColor(200, 200, 200),
        Cause::BootLaunch => RGBColor(214, 186, 153),
        Cause::IdleOther => RGBColor(245, 235, 160),
    }
}

/// The re-run steps' marker colour.
pub const RERUN: RGBColor = RGBColor(200, 0, 0);

/// Draws one panel per run's timeline into a PNG.
pub fn render_timelines(title: &str, runs: &[Timeline], (width, height): (u32, u32)) -> Result<Vec<u8>> {
    check_size(width, height)?;
    if runs.is_empty() {
        bail!("no run to plot");
    }
    register_font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    draw_timelines(&mut rgb, title, runs, (width, height)).map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    encode(&rgb, width, height)
}

fn draw_timelines(rgb: &mut [u8], title: &str, runs: &[Timeline], size: (u32, u32)) -> DrawResult {
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let mut nodes: Vec<&str> = Vec::new();
    for t in runs {
        for (_, _, n) in &t.attempts {
            if !nodes.contains(&n.as_str()) {
                nodes.push(n);
            }
        }
    }
    for (area, t) in root.split_evenly((runs.len(), 1)).iter().zip(runs) {
        let x1 = t.attempts.iter().map(|a| a.1).fold(1.0f64, f64::max) * 1.02;
        let top = t.kept.iter().flatten().chain(&t.rerun).map(|p| p.1).max().unwrap_or(1).max(1) as f64 * 1.05;
        let band = top * 0.06;
        let mut chart = ChartBuilder::on(area)
            .caption(&t.label, (FONT, 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x1, -2.0 * band..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first attempt started")
            .y_desc("step")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 12))
            .draw()?;
        // Badput shaded by cause (each cause once in the legend).
        let mut said: Vec<tap_core::goodput::Cause> = Vec::new();
        for &(a, b, cause) in &t.shades {
            let c = cause_colour(cause);
            let s = chart.draw_series(std::iter::once(Rectangle::new([(a, 0.0), (b, top)], c.filled())))?;
            if !said.contains(&cause) {
                said.push(cause);
                s.label(cause.as_str()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
            }
        }
        // Attempts: a bar each under the curve, coloured by node.
        for (a, b, node) in &t.attempts {
            let c = colour(nodes.iter().position(|n| n == node).unwrap_or(0));
            chart.draw_series(std::iter::once(Rectangle::new([(*a, -1.8 * band), (*b, -0.4 * band)], c.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                node.clone(),
                (*a + x1 * 0.005, -0.6 * band),
                (FONT, 11).into_font().color(&WHITE),
            )))?;
        }
        for line in &t.kept {
            chart.draw_series(LineSeries::new(line.iter().map(|&(x, y)| (x, y as f64)), BLACK.stroke_width(2)))?;
        }
        if !t.rerun.is_empty() {
            chart
                .draw_series(t.rerun.iter().map(|&(x, y)| Cross::new((x, y as f64), 3, RERUN.stroke_width(1))))?
                .label("steps re-run later")
                .legend(|(x, y)| Cross::new((x + 7, y), 4, RERUN.stroke_width(1)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 11))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// A picture of [`MIN_SIZE`]..[`MAX_SIZE`] pixels a side, or the one line saying it is not.
fn check_size(width: u32, height: u32) -> Result<()> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&width) || !(MIN_SIZE..=MAX_SIZE).contains(&height) {
        bail!("plot size {width}x{height} is outside {MIN_SIZE}..{MAX_SIZE} pixels a side");
    }
    Ok(())
}

fn encode(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Plots are flat colour: per-row adaptive filters + best deflate make them ~10x smaller.
    enc.set_compression(png::Compression::Best);
    enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut w = enc.write_header().context("encoding the PNG")?;
    w.write_image_data(rgb).context("encoding the PNG")?;
    w.finish().context("encoding the PNG")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, pts: &[(u64, &str, f64)]) -> RunMetrics {
        RunMetrics {
            run_id: id.into(),
            points: pts
                .iter()
                .map(|&(step, name, value)| MetricPoint { step, name: name.into(), value, ts_ms: 0 })
                .collect(),
        }
    }

    #[test]
    fn panels_group_by_metric_then_run_and_drop_non_finite() {
        let a = run("a", &[(2, "loss", 0.5), (1, "loss", 1.0), (3, "loss", f64::NAN), (1, "acc", 0.1)]);
        let b = run("b", &[(1, "loss", 2.0)]);
        let p = panels(&[a, b], &[]).expect("panels");
        assert_eq!(p.iter().map(|p| p.metric.as_str()).collect::<Vec<_>>(), ["acc", "loss"]);
        assert_eq!(p[1].lines[0], Line { label: "a".into(), points: vec![(1, 1.0), (2, 0.5)] });
        assert_eq!(p[1].lines[1].label, "b");
    }

    #[test]
    fn panels_errors_name_the_problem() {
        let e = panels(&[run("r1", &[])], &[]).expect_err("empty");
        assert!(e.to_string().contains("r1 recorded none"), "{e}");
        let e = panels(&[run("r1", &[(1, "loss", 1.0)])], &["acc".into()]).expect_err("unknown");
        assert_eq!(e.to_string(), "no metric acc in these runs; they have: loss");
        let only = panels(&[run("r", &[(1, "loss", 1.0), (1, "acc", 0.0)])], &["loss".into()]).expect("only");
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn ranges_hold_every_point_and_are_never_empty() {
        let p =
            |pts: Vec<(u64, f64)>| Panel { metric: "m".into(), lines: vec![Line { label: "r".into(), points: pts }] };
        let ((x0, x1), (y0, y1)) = ranges(&p(vec![(5, 3.0), (9, -1.0)]));
        assert!(x0 <= 5 && x1 >= 9 && y0 < -1.0 && y1 > 3.0);
        let ((x0, x1), (y0, y1)) = ranges(&p(vec![(7, 2.0)]));
        assert!(x0 < x1 && y0 < 2.0 && y1 > 2.0);
        let ((x0, x1), (y0, y1)) = ranges(&p(vec![]));
        assert!(x0 < x1 && y0 < y1);
    }

    #[test]
    fn log_y_drops_what_has_no_logarithm() {
        let p = panels(&[run("a", &[(1, "loss", 100.0), (2, "loss", 0.0), (3, "loss", 0.001)])], &[]).expect("panels");
        assert_eq!(log_y(&p)[0].lines[0].points, vec![(1, 2.0), (3, -3.0)]);
    }

    #[test]
    fn grid_shapes() {
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(2), (1, 2));
        assert_eq!(grid(3), (2, 2));
        assert_eq!(grid(5), (3, 2));
    }

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().expect("PNG header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("PNG data");
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    fn has_colour(rgb: &[u8], c: RGBColor) -> bool {
        rgb.chunks_exact(3).any(|px| px == [c.0, c.1, c.2])
    }

    #[test]
    fn renders_a_png_with_each_runs_colour_and_text() {
        let a = run("a", &(1..=50).map(|s| (s, "loss", 1.0 / s as f64)).collect::<Vec<_>>());
        let b = run("b", &(1..=50).map(|s| (s, "loss", 2.0 / s as f64)).collect::<Vec<_>>());
        let p = panels(&[a, b], &[]).expect("panels");
        let bytes = render_png("runs a, b", &p, (640, 400), false).expect("render");
        let (info, rgb) = decode(&bytes);
        assert_eq!((info.width, info.height), (640, 400));
        assert!(has_colour(&rgb, colour(0)) && has_colour(&rgb, colour(1)), "both runs' lines are drawn");
        // Text (title, captions, tick labels) is anti-aliased: grey pixels exist.
        assert!(rgb.chunks_exact(3).any(|px| px[0] == px[1] && px[1] == px[2] && (60..200).contains(&px[0])));
    }

    #[test]
    fn a_goodput_timeline_shades_badput_and_marks_rerun_steps() {
        use tap_core::goodput::{AttemptSpan, Cause, goodput};
        use tap_core::runs::RunStatus;
        let span = |n: u32, start: i64, restored: Option<u64>, to: u64, host: &str| {
            let mut a = AttemptSpan::steady(n, start, start + 2000, restored, to, 1000, 500);
            a.host = host.into();
            a.restore_ms = if restored.is_some() { 1000 } else { 0 };
            a.status = RunStatus::Interrupted;
            a
        };
        let g = goodput(&[span(1, 0, None, 30, "a"), span(2, 40_000, Some(20), 60, "b")]);
        let t = timeline("run r", &g);
        assert_eq!(t.attempts.len(), 2);
        assert_eq!(t.attempts[1].0, 40.0);
        assert_eq!(t.rerun.len(), 10, "steps 21-30 of attempt 1 were run again");
        assert!(t.rerun.iter().all(|&(_, s)| (21..=30).contains(&s)));
        assert!(
            t.shades.iter().any(|s| s.2 == Cause::WastedProgress)
                && t.shades.iter().any(|s| s.2 == Cause::WaitingForCapacity)
        );
        let bytes = render_timelines("goodput", &[t], (800, 400)).expect("render");
        let (info, rgb) = decode(&bytes);
        assert_eq!((info.width, info.height), (800, 400));
        assert!(has_colour(&rgb, cause_colour(Cause::WastedProgress)), "wasted progress shaded");
        assert!(has_colour(&rgb, colour(0)) && has_colour(&rgb, colour(1)), "each node's attempt bar");
        assert!(has_colour(&rgb, RERUN), "re-run steps marked");
        assert!(render_timelines("none", &[], (800, 400)).is_err());
    }

    #[test]
    fn render_rejects_silly_sizes() {
        let p = panels(&[run("a", &[(1, "loss", 1.0)])], &[]).expect("panels");
        let e = render_png("t", &p, (10, 400), false).expect_err("too small");
        assert!(e.to_string().contains("outside 200..8000"), "{e}");
        assert!(render_png("t", &log_y(&p), (300, 200), true).is_ok());
    }
}
