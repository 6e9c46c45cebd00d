//! Which training a `tap run` works on, decided before the command starts: a new run, a new
//! attempt of an unfinished run (`--resume [RUN]`), a new run started from another run's
//! checkpoint (`--resume-from`), or a rank of a managed job (whose relaunch restores the
//! job's own checkpoint). The checkpoint restored is always the chosen run's own.

use std::collections::BTreeMap;

use anyhow::Context;
use tap_core::manifest::Manifest;
use tap_core::runs::{self, HparamUse, ParamSource, Run};

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint;
use crate::store::{ParamStore, RunStore};

/// What `--resume` and `--resume-from` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Resume {
    /// A new run, started fresh.
    #[default]
    No,
    /// `--resume`: the experiment's one resumable run (a managed job's rank: the job's run).
    Latest,
    /// `--resume RUN`: that run (id, unique id prefix or name).
    Run(String),
    /// `--resume-from CHECKPOINT|RUN`: a new run from that checkpoint (or run's latest).
    From(String),
}

/// The managed job this process is a rank of (`TAP_RUN_GROUP`, `TAP_JOB_ATTEMPT`,
/// `NODE_RANK`, set by the fleet's job controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRank {
    pub group: String,
    pub attempt: u32,
    pub rank: u32,
}

impl JobRank {
    pub fn from_env() -> Option<JobRank> {
        let group = std::env::var(tap_core::command_env::RUN_GROUP).ok().filter(|g| runs::valid_id(g))?;
        let attempt = std::env::var(tap_core::command_env::JOB_ATTEMPT).ok()?.parse().ok()?;
        let rank = std::env::var(tap_core::command_env::NODE_RANK).ok().and_then(|r| r.parse().ok()).unwrap_or(0);
        Some(JobRank { group, attempt, rank })
    }
}

/// The decided training.
#[derive(Debug)]
pub enum Target {
    /// A new run; `parent` for a fork: the run and the checkpoint it starts from.
    New { parent: Option<Manifest> },
    /// A new attempt of `run` (its status as observed: how its latest attempt ended), from
    /// its own latest checkpoint when it has one.
    Continue { run: Box<Run>, checkpoint: Option<Manifest>, last_step: Option<u64> },
    /// A rank of a managed job; a relaunch restores the job's own latest checkpoint and
    /// gets the hyperparameters the job's first attempt recorded (`first`: that rank run).
    Rank { job: JobRank, checkpoint: Option<Manifest>, first: Option<Box<Run>> },
}

impl Target {
    /// The checkpoint to restore before the command starts.
    pub fn checkpoint(&self) -> Option<&Manifest> {
        match self {
            Target::New { parent } => parent.as_ref(),
            Target::Continue { checkpoint, .. } | Target::Rank { checkpoint, .. } => checkpoint.as_ref(),
        }
    }
}

/// One experiment's runs as readers see them (statuses observed: lost where the
/// supervisor is gone).
async fn observed_runs<R: RunStore>(store: &R, experiment: &str) -> anyhow::Result<Vec<Run>> {
    let mut list = store.list_runs(Some(experiment)).await?.runs;
    crate::liveness::observe(&mut list);
    Ok(list)
}

/// Decides the target from the flags and the store.
pub async fn decide<R: RunStore, O: ObjectStore>(
    store: &R,
    objects: &O,
    experiment: &str,
    resume: &Resume,
    name: Option<&str>,
    job: Option<JobRank>,
) -> anyhow::Result<Target> {
    if let Some(job) = job {
        // A managed job's rank: a relaunch (or a first attempt asked to resume) restores the
        // job's own checkpoint, never another run's; a job with none starts fresh.
        let checkpoint = if *resume == Resume::No {
            None
        } else {
            let recorded = store.get_run(experiment, &job.group).await?.and_then(|r| r.checkpoint);
            checkpoint::of_run(objects, experiment, &job.group, recorded.as_deref()).await?
        };
        let first = if job.attempt > 1 {
            let listing = store.list_runs(Some(experiment)).await?;
            listing
                .runs
                .into_iter()
                .filter(|r| r.group.as_deref() == Some(job.group.as_str()) && r.job_attempt.is_some())
                .min_by_key(|r| (r.job_attempt, r.node_rank, r.started_ms))
                .map(Box::new)
        } else {
            None
        };
        return Ok(Target::Rank { job, checkpoint, first });
    }
    // The experiment's runs, read once, when a flag needs them.
    let all = match (name, resume) {
        (None, Resume::No) => Vec::new(),
        _ => observed_runs(store, experiment).await?,
    };
    if let Some(n) = name
        && all.iter().any(|r| r.name.as_deref() == Some(n))
    {
        anyhow::bail!(
            "experiment {experiment} already has a run named {n:?}; names are unique in an experiment \
             (continue it with --resume {n})"
        );
    }
    match resume {
        Resume::No => Ok(Target::New { parent: None }),
        Resume::Latest | Resume::Run(_) => {
            let wanted = match resume {
                Resume::Run(w) => Some(w.as_str()),
                _ => None,
            };
            let run = runs::pick_resume(&all, experiment, wanted)?;
            let checkpoint = checkpoint::of_run(objects, experiment, &run.run_id, run.checkpoint.as_deref()).await?;
            let last_step = store.metrics(experiment, &run.run_id).await?.iter().map(|p| p.step).max();
            Ok(Target::Continue { run: Box::new(run.clone()), checkpoint, last_step })
        }
        Resume::From(what) => {
            // A checkpoint id first, then a run (its latest checkpoint).
            if let Ok(m) = checkpoint::manifest(objects, experiment, what).await {
                return Ok(Target::New { parent: Some(m) });
            }
            let run = runs::find_run(&all, experiment, what).with_context(|| {
                format!("--resume-from {what:?}: not a checkpoint of experiment {experiment}, nor a run")
            })?;
            let m = checkpoint::of_run(objects, experiment, &run.run_id, run.checkpoint.as_deref())
                .await?
                .with_context(|| format!("--resume-from {what:?}: run {} has no committed checkpoint", run.run_id))?;
            Ok(Target::New { parent: Some(m) })
        }
    }
}

/// The hyperparameters a run gets: for a new run, the stored defaults with `overrides`
/// applied (each recorded with its source); for a continued run (and a managed job's
/// relaunch), what its first attempt recorded, whatever the defaults became since (a changed
/// default is mentioned, once, never applied; overrides are refused: a training's
/// hyperparameters are fixed for its life).
pub async fn hparams<P: ParamStore>(
    params: &P,
    target: &Target,
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, HparamUse>> {
    let defaults = params.list_params().await?;
    let continued = match target {
        Target::Continue { run, .. } => Some(run),
        Target::Rank { first: Some(run), .. } => Some(run),
        _ => None,
    };
    if let Some(run) = continued {
        if !overrides.is_empty() {
            let names: Vec<&str> = overrides.keys().map(String::as_str).collect();
            anyhow::bail!(
                "--param {} with --resume: run {} keeps the hyperparameters it started with; \
                 start a new run from its checkpoint with --resume-from {} --param ...",
                names.join(", "),
                run.run_id,
                run.run_id
            );
        }
        let changed: Vec<String> = defaults
            .iter()
            .filter_map(|p| {
                let used = run.hparams.get(&p.name)?;
                (used.source == ParamSource::Default && used.version != p.version).then(|| {
                    format!(
                        "{} (run: {:?} v{}, default now {:?} v{})",
                        p.name, used.value, used.version, p.value, p.version
                    )
                })
            })
            .collect();
        if !changed.is_empty() {
            crate::say!(
                "tap: defaults changed since run {} started: {}; the run keeps its own values",
                run.run_id,
                changed.join(", ")
            );
        }
        return Ok(run.hparams.clone());
    }
    let mut out: BTreeMap<String, HparamUse> = defaults
        .into_iter()
        .map(|p| (p.name, HparamUse { value: p.value, version: p.version, source: ParamSource::Default }))
        .collect();
    for (k, v) in overrides {
        out.insert(k.clone(), HparamUse { value: v.clone(), version: 0, source: ParamSource::Override });
    }
    Ok(out)
}
