//! `tap runs list|show|compare|plot`: the recorded runs, their metrics and curves.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::cli::{Output, RunsCommand};
use crate::commands::{find_run, json, series, trainings};
use crate::store::RunStore;
use crate::{plot, render};

pub async fn run<R: RunStore>(runs: &R, cmd: &RunsCommand, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        RunsCommand::List { experiment, group } => {
            let mut list = trainings(runs, experiment.as_deref()).await?;
            if let Some(g) = group {
                // The job's own record and its node runs.
                list.retain(|r| r.group.as_ref() == Some(g) || (r.job.is_some() && &r.run_id == g));
            }
            match output {
                Output::Json => json(out, &list)?,
                Output::Text => out.write_all(render::runs_table(&list).as_bytes())?,
            }
        }
        RunsCommand::Show { run_id } => {
            let run = find_run(runs, run_id).await?;
            let points = series(runs, &run).await?;
            match output {
                Output::Json => json(
                    out,
                    &serde_json::json!({ "run": run, "attempts": run.all_attempts(run.status), "metrics": points }),
                )?,
                Output::Text => out.write_all(render::run_details(&run, &points).as_bytes())?,
            }
        }
        RunsCommand::Compare { run_ids } => {
            let mut list = Vec::new();
            for id in run_ids {
                list.push(find_run(runs, id).await?);
            }
            match output {
                Output::Json => json(out, &list)?,
                Output::Text => out.write_all(render::compare(&list).as_bytes())?,
            }
        }
        RunsCommand::Plot { run_ids, metric, out: file, size, log_y } => {
            let settings = PlotSettings { run_ids, metrics: metric, file: file.clone(), size: *size, log_y: *log_y };
            plot(runs, &settings, output, out).await?;
        }
    }
    Ok(())
}

/// What `tap runs plot` draws (clap has checked the size and the metric names).
struct PlotSettings<'a> {
    run_ids: &'a [String],
    /// Only these metrics; empty: every metric the runs recorded.
    metrics: &'a [String],
    /// Where the PNG goes (None: `./<first run id>.png`).
    file: Option<PathBuf>,
    size: (u32, u32),
    log_y: bool,
}

async fn plot<R: RunStore>(runs: &R, s: &PlotSettings<'_>, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut data = Vec::new();
    for id in s.run_ids {
        let run = find_run(runs, id).await?;
        let points = series(runs, &run).await?;
        data.push(plot::RunMetrics { run_id: run.label().to_owned(), points });
    }
    let panels = plot::panels(&data, s.metrics)?;
    let title = format!("tap runs: {}", s.run_ids.join(", "));
    let drawn = if s.log_y { plot::log_y(&panels) } else { Vec::new() };
    let png = plot::render_png(&title, if s.log_y { &drawn } else { &panels }, s.size, s.log_y)?;
    let file = s.file.clone().unwrap_or_else(|| PathBuf::from(format!("{}.png", data[0].run_id)));
    tap_core::fsutil::write_atomic(&file, &png).with_context(|| format!("writing {}", file.display()))?;
    let names: Vec<&str> = panels.iter().map(|p| p.metric.as_str()).collect();
    match output {
        Output::Json => json(out, &serde_json::json!({ "file": file, "metrics": names, "runs": s.run_ids }))?,
        Output::Text => {
            for p in &panels {
                for l in &p.lines {
                    let values: Vec<f64> = l.points.iter().map(|&(_, v)| v).collect();
                    writeln!(out, "{:<24} {:<26} {}", p.metric, l.label, render::sparkline(&values, 40))?;
                }
            }
            writeln!(
                out,
                "wrote {} ({}x{}, {} metrics, {} runs)",
                file.display(),
                s.size.0,
                s.size.1,
                names.len(),
                data.len()
            )?;
        }
    }
    Ok(())
}
