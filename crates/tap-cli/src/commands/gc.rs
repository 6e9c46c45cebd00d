//! Cleaning up: `tap runs delete RUN…` (a run's checkpoints, logs, metrics and record) and
//! `tap gc` (checkpoints and artifact versions past what you keep, and the objects nothing
//! names). The plans are pure ([`crate::artifacts::gc`]); this module reads and deletes.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::bail;
use serde::Serialize;
use tap_core::runs::{Run, RunStatus};

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint::{self, Space, run_latest_key};
use crate::artifacts::gc;
use crate::cli::Output;
use crate::commands::{find_run, json, trainings};
use crate::store::{LogStore, RunStore};

/// What one clean-up removed (or, with `--dry-run`, would remove).
#[derive(Debug, Default, Serialize)]
pub struct Removed {
    /// What it is: `run sweep/2026…`, `checkpoints/sweep`, `artifacts/data`.
    pub what: String,
    pub checkpoints: usize,
    pub objects: usize,
    pub bytes: u64,
    /// Why something was left (a running run in the experiment, an unreadable manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

/// A run whose supervisor is alive: deleting under it would lose what it writes next.
fn running(r: &Run) -> bool {
    matches!(r.status, RunStatus::Running | RunStatus::Queued)
}

/// `tap runs delete RUN…`.
pub async fn delete_runs<R: RunStore, L: LogStore, O: ObjectStore>(
    runs: &R,
    logs: &L,
    objects: &O,
    wanted: &[String],
    dry_run: bool,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Every name is resolved, and every run checked, before anything is deleted.
    let mut targets = Vec::new();
    for w in wanted {
        let run = find_run(runs, w).await?;
        if running(&run) {
            bail!(
                "run {}/{} is {} (its tap run on {} is alive); stop it first (Ctrl-C there, or `tap jobs cancel`)",
                run.experiment_id,
                run.run_id,
                run.status.as_str(),
                run.host
            );
        }
        if !targets.iter().any(|t: &Run| t.run_id == run.run_id && t.experiment_id == run.experiment_id) {
            targets.push(run);
        }
    }
    // Read once: which runs are running, for every target's experiment.
    let all = trainings(runs, None).await?;
    let mut report = Vec::new();
    for run in &targets {
        let others_running =
            all.iter().any(|r| r.experiment_id == run.experiment_id && r.run_id != run.run_id && running(r));
        report.push(delete_one(runs, logs, objects, run, others_running, dry_run).await?);
    }
    render(&report, dry_run, output, out)
}

async fn delete_one<R: RunStore, L: LogStore, O: ObjectStore>(
    runs: &R,
    logs: &L,
    objects: &O,
    run: &Run,
    others_running: bool,
    dry_run: bool,
) -> anyhow::Result<Removed> {
    let exp = &run.experiment_id;
    let records: BTreeSet<String> = run.records().iter().map(|s| (*s).to_owned()).collect();
    let mut removed = Removed { what: format!("run {exp}/{}", run.run_id), ..Removed::default() };
    // Checkpoints first, the record last: a delete cut short leaves the record to say it again.
    if let Ok(stored) = checkpoint::stored(objects, Space::Checkpoints, exp).await? {
        // Its checkpoints, and a job's (or group's) shards of its steps.
        let mine: BTreeSet<&str> = stored
            .manifests
            .iter()
            .chain(&stored.shards)
            .filter(|(_, m)| records.contains(&m.run_id))
            .map(|(k, _)| k.as_str())
            .collect();
        // An object shared with a running run's next upload could be deleted under it: then
        // the objects wait for `tap gc`.
        let plan = if others_running { gc::Plan::default() } else { gc::without(&stored, &mine, i64::MAX) };
        if others_running {
            removed.kept = Some("another run of the experiment is running: its objects wait for `tap gc`".into());
        }
        removed.checkpoints = mine.len();
        removed.objects = plan.objects.len();
        removed.bytes = plan.bytes();
        if !dry_run {
            let ids: BTreeSet<String> = stored
                .manifests
                .iter()
                .filter(|(k, _)| mine.contains(k.as_str()))
                .map(|(_, m)| m.checkpoint_id.clone())
                .collect();
            let remaining: Vec<&tap_core::manifest::Manifest> =
                stored.manifests.iter().filter(|(k, _)| !mine.contains(k.as_str())).map(|(_, m)| m).collect();
            checkpoint::repoint_latest(objects, Space::Checkpoints, exp, &ids, &remaining).await?;
            let pointers: Vec<String> = records.iter().map(|id| run_latest_key(exp, id)).collect();
            objects.delete(&pointers).await?;
            // A job's step commits and attempt marks go before its shards: a commit is never
            // left naming shards that are gone.
            if run.job.is_some() {
                let prefix = tap_core::shards::commits_prefix(Space::Checkpoints.root(), exp, &run.run_id);
                let commits: Vec<String> = objects.list(&prefix).await?.into_iter().map(|o| o.key).collect();
                objects.delete(&commits).await?;
            }
            objects.delete(&mine.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>()).await?;
            objects.delete(&plan.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>()).await?;
        }
    } else {
        removed.kept = Some("a manifest of the experiment does not parse: checkpoints kept".into());
    }
    if !dry_run {
        for id in &records {
            logs.delete_logs(exp, id).await?;
            runs.delete_run(exp, id).await?;
        }
    }
    Ok(removed)
}

/// `tap gc`.
pub async fn gc<R: RunStore, O: ObjectStore>(
    runs: &R,
    objects: &O,
    keep_checkpoints: Option<usize>,
    keep_artifact_versions: Option<usize>,
    dry_run: bool,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let now = crate::now_ms();
    let mut report = Vec::new();
    let all = trainings(runs, None).await?;
    for (exp, stored) in checkpoint::stored_all(objects, Space::Checkpoints).await? {
        let mut removed = Removed { what: format!("checkpoints/{exp}"), ..Removed::default() };
        let in_exp: Vec<&Run> = all.iter().filter(|r| r.experiment_id == exp).collect();
        if let Some(r) = in_exp.iter().find(|r| running(r)) {
            removed.kept = Some(format!("run {} is running: nothing of the experiment is removed", r.run_id));
            report.push(removed);
            continue;
        }
        let mut stored = match stored {
            Ok(s) => s,
            Err(why) => {
                removed.kept = Some(format!("{why}: nothing of the experiment is removed"));
                report.push(removed);
                continue;
            }
        };
        // What runs name: their latest checkpoint, and what forks started from and restored.
        for r in &in_exp {
            stored.named.extend(r.checkpoint.iter().chain(&r.parent_checkpoint).chain(&r.restored).cloned());
        }
        let plan = gc::plan(&stored, keep_checkpoints, |m| m.run_id.clone(), now);
        apply(objects, &plan, dry_run, &mut removed).await?;
        report.push(removed);
    }
    for (name, stored) in checkpoint::stored_all(objects, Space::Artifacts).await? {
        let mut removed = Removed { what: format!("artifacts/{name}"), ..Removed::default() };
        let stored = match stored {
            Ok(s) => s,
            Err(why) => {
                removed.kept = Some(format!("{why}: nothing of the artifact is removed"));
                report.push(removed);
                continue;
            }
        };
        // Every version of an artifact has the same owner: its name.
        let plan = gc::plan(&stored, keep_artifact_versions, |m| m.experiment_id.clone(), now);
        apply(objects, &plan, dry_run, &mut removed).await?;
        report.push(removed);
    }
    render(&report, dry_run, output, out)
}

async fn apply<O: ObjectStore>(
    objects: &O,
    plan: &gc::Plan,
    dry_run: bool,
    removed: &mut Removed,
) -> anyhow::Result<()> {
    removed.checkpoints = plan.manifests.len();
    removed.objects = plan.objects.len();
    removed.bytes = plan.bytes();
    if !dry_run {
        // Manifests first: a checkpoint is never listed without its objects.
        objects.delete(&plan.manifests).await?;
        objects.delete(&plan.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>()).await?;
    }
    Ok(())
}

fn render(report: &[Removed], dry_run: bool, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let total: u64 = report.iter().map(|r| r.bytes).sum();
    match output {
        Output::Json => json(out, &serde_json::json!({ "dry_run": dry_run, "freed_bytes": total, "removed": report }))?,
        Output::Text => {
            let verb = if dry_run { "would remove" } else { "removed" };
            for r in report {
                if r.checkpoints + r.objects > 0 || r.what.starts_with("run ") {
                    writeln!(
                        out,
                        "{}: {verb} {} checkpoints/versions and {} objects ({})",
                        r.what,
                        r.checkpoints,
                        r.objects,
                        tap_core::commit::bytes(r.bytes)
                    )?;
                }
                if let Some(k) = &r.kept {
                    writeln!(out, "{}: kept: {k}", r.what)?;
                }
            }
            let freed = if dry_run { "would free" } else { "freed" };
            writeln!(
                out,
                "{freed} {} (in a versioned bucket, old versions go when its lifecycle expires them)",
                tap_core::commit::bytes(total)
            )?;
        }
    }
    Ok(())
}
