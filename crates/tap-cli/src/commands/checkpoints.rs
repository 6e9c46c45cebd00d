//! `tap checkpoints latest|list|pull`: an experiment's newest checkpoint, a run's own
//! checkpoints, and fetching one (verified) without recording a run.

use std::path::Path;

use anyhow::Context;
use tap_core::commit::Verdict;
use tap_core::manifest::Manifest;
use tap_core::runs::Run;

use crate::store::RunStore;

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint;
use std::io::Write;

use crate::cli::Output;
use crate::commands::json;

pub async fn latest<O: ObjectStore>(
    objects: &O,
    experiment: &str,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let m = checkpoint::latest(objects, experiment).await?;
    match (output, m) {
        (Output::Json, m) => json(out, &m)?,
        (Output::Text, None) => writeln!(out, "experiment {experiment} has no checkpoint yet")?,
        (Output::Text, Some(m)) => {
            let step = m.step.map_or("-".into(), |s| s.to_string());
            writeln!(out, "checkpoint {} of run {} (step {step})", m.checkpoint_id, m.run_id)?;
            for f in &m.files {
                writeln!(out, "  {:>12}  {}  {}", f.size, &f.sha256[..12], f.path)?;
            }
        }
    }
    Ok(())
}

/// The verdict on `id` when it was an attempt's final checkpoint after a notice.
fn verdict_of<'a>(run: &'a Run, id: &str) -> Option<&'a Verdict> {
    std::iter::once(run.interruption.as_ref())
        .chain(run.attempts.iter().map(|a| a.interruption.as_ref()))
        .flatten()
        .filter_map(|i| i.verdict.as_ref())
        .find(|v| matches!(v, Verdict::Committed { checkpoint, .. } | Verdict::Late { checkpoint, .. } if checkpoint == id))
}

/// A run's committed checkpoints, in order (a folded format-1 chain: every record's).
pub(crate) async fn of_run<O: ObjectStore>(objects: &O, run: &Run) -> anyhow::Result<Vec<Manifest>> {
    let mut all = Vec::new();
    for id in run.records() {
        all.extend(checkpoint::list_of_run(objects, &run.experiment_id, id).await?);
    }
    Ok(all)
}

/// `tap checkpoints list RUN --output json`.
pub(crate) fn rows(run: &Run, all: &[Manifest]) -> Vec<serde_json::Value> {
    all.iter()
        .map(|m| {
            serde_json::json!({
                "checkpoint_id": m.checkpoint_id,
                "run_id": m.run_id,
                "step": m.step,
                "bytes": m.total_bytes(),
                "files": m.files.len(),
                "created_ms": m.created_ms,
                "verdict": verdict_of(run, &m.checkpoint_id),
            })
        })
        .collect()
}

/// `tap checkpoints list RUN`.
pub async fn list<O: ObjectStore>(objects: &O, run: &Run, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let all = of_run(objects, run).await?;
    match output {
        Output::Json => json(out, &rows(run, &all))?,
        Output::Text if all.is_empty() => writeln!(out, "run {} has no committed checkpoint", run.run_id)?,
        Output::Text => {
            writeln!(out, "{:<40} {:>8} {:>10} {:<22} VERDICT", "CHECKPOINT", "STEP", "SIZE", "CREATED")?;
            for m in &all {
                writeln!(
                    out,
                    "{:<40} {:>8} {:>10} {:<22} {}",
                    m.checkpoint_id,
                    m.step.map_or("-".into(), |s| s.to_string()),
                    tap_core::commit::bytes(m.total_bytes()),
                    tap_core::time::rfc3339(m.created_ms),
                    verdict_of(run, &m.checkpoint_id).map_or_else(|| "-".to_owned(), Verdict::line)
                )?;
            }
        }
    }
    Ok(())
}

/// `tap checkpoints pull RUN|CHECKPOINT DIR`: a run's latest checkpoint, or a checkpoint by
/// id (in any experiment), restored into DIR (which must be empty or new).
pub async fn pull<R: RunStore, O: ObjectStore>(
    runs: &R,
    objects: &O,
    what: &str,
    dir: &Path,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let m = find_checkpoint(runs, objects, what).await?;
    crate::commands::pull_destination(dir, true)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let label = format!("pull {}", m.checkpoint_id);
    crate::commands::artifacts::with_progress(objects, m.total_bytes(), &label, checkpoint::restore(objects, &m, dir))
        .await?;
    match output {
        Output::Json => json(out, &m)?,
        Output::Text => writeln!(
            out,
            "pulled checkpoint {} of run {} ({} files, {}, every file verified) into {}",
            m.checkpoint_id,
            m.run_id,
            m.files.len(),
            tap_core::commit::bytes(m.total_bytes()),
            dir.display()
        )?,
    }
    Ok(())
}

/// A checkpoint by run (its latest) or by id: runs first, then checkpoint ids in each
/// experiment that has runs.
async fn find_checkpoint<R: RunStore, O: ObjectStore>(runs: &R, objects: &O, what: &str) -> anyhow::Result<Manifest> {
    match crate::commands::find_run(runs, what).await {
        // A folded format-1 chain's latest checkpoint is its last record's.
        Ok(run) => checkpoint::of_run(
            objects,
            &run.experiment_id,
            run.records().last().copied().unwrap_or(&run.run_id),
            run.checkpoint.as_deref(),
        )
        .await?
        .with_context(|| format!("run {} has no committed checkpoint", run.run_id)),
        Err(not_a_run) => {
            let listing = runs.list_runs(None).await?;
            let experiments: std::collections::BTreeSet<&str> =
                listing.runs.iter().map(|r| r.experiment_id.as_str()).collect();
            for e in experiments {
                if let Ok(m) = checkpoint::manifest(objects, e, what).await {
                    return Ok(m);
                }
            }
            Err(not_a_run.context(format!("{what:?} is neither a run nor a checkpoint id")))
        }
    }
}
