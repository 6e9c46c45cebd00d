//! `tap runs list|show|compare|plot|tag|untag|note`: the recorded runs, their metrics and
//! curves, and the labels that find them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use tap_core::query::Query;

use crate::artifacts::ObjectStore;
use crate::cli::{Output, RunsCommand, RunsListArgs};
use crate::commands::{Backends, find_run, json, series, trainings};
use crate::store::{LogStore, RunStore};
use crate::{plot, render};

pub async fn run<R, P, L, O>(
    b: &Backends<'_, R, P, L, O>,
    cmd: &RunsCommand,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()>
where
    R: RunStore,
    L: LogStore,
    O: ObjectStore,
{
    let runs = b.runs;
    match cmd {
        RunsCommand::List(args) => list(runs, args, output, out).await?,
        RunsCommand::Tag { run, tags } => tag(runs, run, tags, output, out).await?,
        RunsCommand::Untag { run, keys } => untag(runs, run, keys, output, out).await?,
        // Deleting a run takes its logs and stored objects with it.
        RunsCommand::Delete { runs: wanted, dry_run } => {
            crate::commands::gc::delete_runs(runs, b.logs, b.objects, wanted, *dry_run, output, out).await?;
        }
        RunsCommand::Diff { a, b } => {
            let (ra, rb) = (find_run(runs, a).await?, find_run(runs, b).await?);
            let differences = tap_core::diff::diff(&ra, &rb);
            match output {
                Output::Json => {
                    json(out, &serde_json::json!({ "a": ra.run_id, "b": rb.run_id, "differences": differences }))?
                }
                Output::Text => out.write_all(render::diff(&ra, &rb, &differences).as_bytes())?,
            }
        }
        RunsCommand::Note { run, text } => {
            tap_core::query::check_note(text).map_err(anyhow::Error::msg)?;
            let found = find_run(runs, run).await?;
            let note = Some(text.clone()).filter(|t| !t.is_empty());
            let stored = runs.update_run(&found.experiment_id, &found.run_id, |r| r.note.clone_from(&note)).await?;
            let what = if stored.note.is_some() { "noted" } else { "cleared the note of" };
            said(out, output, &stored, format!("{what} {}", stored.run_id))?;
        }
        RunsCommand::Show { run_id } => show(runs, run_id, output, out).await?,
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

/// `tap runs list`: one row per training, filtered, sorted and cut as asked.
/// `tap runs show RUN`: the run, its attempts and metrics; a job's record also says how its
/// final checkpoints fared, from its ranks' runs.
async fn show<R: RunStore>(runs: &R, run_id: &str, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    // One listing of the store serves the run's lookup and its goodput's pool history.
    let now = crate::now_ms();
    let everywhere = crate::commands::trainings(runs, None).await?;
    let run = crate::commands::find_in(&everywhere, run_id)?;
    let d = details(runs, everywhere, &run, now).await?;
    match output {
        Output::Json => json(out, &details_json(&run, &d))?,
        Output::Text => {
            out.write_all(render::run_details(&run, &d.points).as_bytes())?;
            out.write_all(render::goodput_brief(&d.goodput).as_bytes())?;
            out.write_all(render::sharded_job(&run.run_id, &d.nodes).as_bytes())?;
        }
    }
    Ok(())
}

/// What `tap runs show` (and `tap ui`'s `/api/runs/EXP/RUN`) tells of a run beyond its record.
pub(crate) struct Details {
    pub points: Vec<tap_core::runs::MetricPoint>,
    /// A job's node runs (empty for a run).
    pub nodes: Vec<tap_core::runs::Run>,
    /// The goodput so far (a running run's too).
    pub goodput: crate::commands::goodput::RunGoodput,
}

/// [`Details`] of `run`, with `everywhere` the store's trainings (for the pools' history).
pub(crate) async fn details<R: RunStore>(
    runs: &R,
    everywhere: Vec<tap_core::runs::Run>,
    run: &tap_core::runs::Run,
    now: i64,
) -> anyhow::Result<Details> {
    let points = series(runs, run).await?;
    let nodes = match &run.job {
        Some(_) => runs.list_runs(Some(&run.experiment_id)).await?.runs,
        None => Vec::new(),
    };
    let seen = crate::commands::goodput::Seen::of(everywhere, &run.experiment_id, now);
    let goodput = crate::commands::goodput::report(runs, run, &seen, now).await?;
    Ok(Details { points, nodes, goodput })
}

/// `tap runs show RUN --output json`.
pub(crate) fn details_json(run: &tap_core::runs::Run, d: &Details) -> serde_json::Value {
    let finals: Vec<serde_json::Value> = render::attempts_of(&run.run_id, &d.nodes)
        .iter()
        .filter_map(|(a, ranks)| {
            tap_core::shards::job_final(ranks).map(|j| serde_json::json!({"attempt": a, "final": j}))
        })
        .collect();
    serde_json::json!({
        "run": run,
        "attempts": run.all_attempts(run.status),
        "metrics": d.points,
        "final_checkpoints": finals,
        "goodput": crate::commands::goodput::brief(&d.goodput),
    })
}

async fn list<R: RunStore>(runs: &R, args: &RunsListArgs, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let RunsListArgs { experiment, group, status, tags, conditions, sort, limit, columns } = args;
    let mut list = trainings(runs, experiment.as_deref()).await?;
    if let Some(g) = group {
        // The job's own record and its node runs.
        list.retain(|r| r.group.as_ref() == Some(g) || (r.job.is_some() && &r.run_id == g));
    }
    let query = Query {
        status: status.clone(),
        tags: tags.clone(),
        conditions: conditions.clone(),
        sort: sort.clone(),
        limit: *limit,
    };
    let list = query.apply(list, crate::now_ms());
    match output {
        Output::Json => json(out, &list)?,
        Output::Text => out.write_all(render::runs_table(&list, columns, crate::now_ms()).as_bytes())?,
    }
    Ok(())
}

/// `tap runs tag RUN KEY=VALUE...`
async fn tag<R: RunStore>(
    runs: &R,
    run: &str,
    tags: &[(String, String)],
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let found = find_run(runs, run).await?;
    tap_core::query::merged_tags(&found.tags, tags).map_err(|e| anyhow::anyhow!("run {}: {e}", found.run_id))?;
    let stored = runs
        .update_run(&found.experiment_id, &found.run_id, |r| {
            // Tags another writer added meanwhile count too: past the bound, none is added.
            let _ = tap_core::query::add_tags(r, tags);
        })
        .await?;
    said(out, output, &stored, format!("tagged {}: {}", stored.run_id, tag_list(&stored)))?;
    Ok(())
}

/// `tap runs untag RUN KEY...`
async fn untag<R: RunStore>(
    runs: &R,
    run: &str,
    keys: &[String],
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let found = find_run(runs, run).await?;
    if let Some(k) = keys.iter().find(|k| !found.tags.contains_key(*k)) {
        bail!("run {} has no tag {k} (it has: {})", found.run_id, tag_list(&found));
    }
    let stored = runs
        .update_run(&found.experiment_id, &found.run_id, |r| {
            for k in keys {
                r.tags.remove(k);
            }
        })
        .await?;
    said(out, output, &stored, format!("untagged {}: {}", stored.run_id, tag_list(&stored)))?;
    Ok(())
}

/// `team=nlp stage=baseline`, or `none`.
fn tag_list(run: &tap_core::runs::Run) -> String {
    if run.tags.is_empty() {
        return "no tags".into();
    }
    run.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// A change to a run: the record as stored (JSON), or one line.
fn said(out: &mut dyn Write, output: Output, run: &tap_core::runs::Run, line: String) -> anyhow::Result<()> {
    match output {
        Output::Json => json(out, run)?,
        Output::Text => writeln!(out, "{line}")?,
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
