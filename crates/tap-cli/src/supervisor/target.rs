//! Which training a `tap run` works on, decided before the command starts: a new run, a new
//! attempt of an unfinished run (`--resume [RUN]`), a new run started from another run's
//! checkpoint (`--resume-from`), a rank of a managed job of one node (whose relaunch restores
//! the job's own checkpoint), or a rank of a sharded job — a managed job of several nodes, or
//! a group run by hand (`--group G --rank R --world-size N`) — whose restore gets its own
//! shard of the job's newest committed step. The checkpoint restored is always the chosen
//! training's own.

use std::collections::BTreeMap;

use anyhow::Context;
use tap_core::group::{self, Member};
use tap_core::manifest::Manifest;
use tap_core::runs::{self, HparamUse, ParamSource, Run};
use tap_core::shards::StepCommit;

use crate::artifacts::ObjectStore;
use crate::artifacts::{checkpoint, shards};
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
/// `NODE_RANK`, `NNODES`, set by the fleet's job controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRank {
    pub group: String,
    pub attempt: u32,
    pub rank: u32,
    pub world_size: u32,
}

impl JobRank {
    pub fn from_env() -> Option<JobRank> {
        use tap_core::command_env as env;
        let group = std::env::var(env::RUN_GROUP).ok().filter(|g| runs::valid_id(g))?;
        let attempt = std::env::var(env::JOB_ATTEMPT).ok()?.parse().ok()?;
        let number = |name| std::env::var(name).ok().and_then(|r| r.parse().ok());
        let rank = number(env::NODE_RANK).unwrap_or(0);
        let world_size = number(env::NNODES).unwrap_or(1).max(rank + 1);
        Some(JobRank { group, attempt, rank, world_size })
    }
}

/// Which job this `tap run` is a rank of, as its flags and environment say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Set by the fleet's job controller on a managed job's node.
    pub managed: Option<JobRank>,
    /// `--group`.
    pub group: Option<String>,
    /// `--rank` and `--world-size` (or their variables), when given.
    pub rank: Option<u32>,
    pub world_size: Option<u32>,
    /// `--restore all`: every rank gets every shard.
    pub restore_all: bool,
    /// `--restore-step`: this committed step, not the newest.
    pub restore_step: Option<u64>,
}

impl Membership {
    /// Rank and world size of group `group`, checked; both must be known.
    fn member(&self, group: &str) -> anyhow::Result<Member> {
        let (Some(rank), Some(world)) = (self.rank, self.world_size) else {
            anyhow::bail!(
                "group {group}: tap needs this rank's --rank and the job's --world-size (or RANK and WORLD_SIZE)"
            );
        };
        Member::new(group, rank, world).map_err(anyhow::Error::msg)
    }
}

/// A rank of a sharded job: how it joins its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joining {
    /// A managed job's node: the fleet's controller decided the attempt.
    Managed { attempt: u32 },
    /// A group run by hand: the attempt is decided when the rank joins the group's record.
    ByHand { resume: bool },
}

/// The decided training.
#[derive(Debug)]
pub enum Target {
    /// A new run; `parent` for a fork: the run and the checkpoint it starts from.
    New { parent: Option<Manifest> },
    /// A new attempt of `run` (its status as observed: how its latest attempt ended), from
    /// its own latest checkpoint when it has one.
    Continue { run: Box<Run>, checkpoint: Option<Manifest>, last_step: Option<u64> },
    /// A rank of a managed job of one node; a relaunch restores the job's own latest
    /// checkpoint and gets the hyperparameters the job's first attempt recorded (`first`: that
    /// rank run).
    Rank { job: JobRank, checkpoint: Option<Manifest>, first: Option<Box<Run>> },
    /// A rank of a sharded job: `step` is the job's newest committed step it restores its
    /// shard of (every shard with `all`); `first`: the run whose hyperparameters it keeps.
    Shard { member: Member, joining: Joining, step: Option<StepCommit>, all: bool, first: Option<Box<Run>> },
}

/// What a restore brings back, for the run's record and the command's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The checkpoint's id (a sharded job's: its step commit's).
    pub id: String,
    pub step: Option<u64>,
    /// The run (or job) whose checkpoint it is.
    pub run: String,
}

impl Target {
    /// The checkpoint to restore before the command starts.
    pub fn checkpoint(&self) -> Option<&Manifest> {
        match self {
            Target::New { parent } => parent.as_ref(),
            Target::Continue { checkpoint, .. } | Target::Rank { checkpoint, .. } => checkpoint.as_ref(),
            Target::Shard { .. } => None,
        }
    }

    /// What the restore brings back, if anything.
    pub fn restored(&self) -> Option<Restored> {
        if let Target::Shard { step: Some(c), .. } = self {
            return Some(Restored { id: c.id.clone(), step: Some(c.step), run: c.job.clone() });
        }
        self.checkpoint().map(|m| Restored { id: m.checkpoint_id.clone(), step: m.step, run: m.run_id.clone() })
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
    member: &Membership,
) -> anyhow::Result<Target> {
    if let Some(t) = decide_shard(store, objects, experiment, resume, member).await? {
        return Ok(t);
    }
    if let Some(job) = member.managed.clone() {
        // A managed job's rank: a relaunch (or a first attempt asked to resume) restores the
        // job's own checkpoint, never another run's; a job with none starts fresh.
        let checkpoint = if *resume == Resume::No {
            None
        } else {
            let recorded = store.get_run(experiment, &job.group).await?.and_then(|r| r.checkpoint);
            checkpoint::of_run(objects, experiment, &job.group, recorded.as_deref()).await?
        };
        let first = if job.attempt > 1 { first_rank_run(store, experiment, &job.group).await? } else { None };
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

/// The sharded job this rank belongs to, if any: a managed job of several nodes, `--group G`,
/// or `--resume G` of a group run by hand.
async fn decide_shard<R: RunStore, O: ObjectStore>(
    store: &R,
    objects: &O,
    experiment: &str,
    resume: &Resume,
    member: &Membership,
) -> anyhow::Result<Option<Target>> {
    let restore = |group: String| async move {
        let Some(wanted) = member.restore_step else {
            return anyhow::Ok(shards::latest_commit(objects, experiment, &group).await?);
        };
        match shards::commit_of_step(objects, experiment, &group, wanted).await? {
            Some(c) => Ok(Some(c)),
            None => {
                let steps: Vec<String> = shards::committed_steps(objects, experiment, &group)
                    .await?
                    .into_iter()
                    .map(|(_, s, _)| s.to_string())
                    .collect();
                anyhow::bail!(
                    "--restore-step {wanted}: job {group} has no committed step {wanted} (committed: {})",
                    if steps.is_empty() { "none".to_owned() } else { steps.join(", ") }
                )
            }
        }
    };
    if let Some(job) = member.managed.as_ref().filter(|j| j.world_size > 1) {
        let m = Member::new(&job.group, job.rank, job.world_size).map_err(anyhow::Error::msg)?;
        let step = if *resume == Resume::No { None } else { restore(job.group.clone()).await? };
        let first = if job.attempt > 1 { first_rank_run(store, experiment, &job.group).await? } else { None };
        let joining = Joining::Managed { attempt: job.attempt };
        return Ok(Some(Target::Shard { member: m, joining, step, all: member.restore_all, first }));
    }
    if member.managed.is_some() {
        return Ok(None);
    }
    let group = match (resume, &member.group) {
        (Resume::Run(r), Some(g)) if r != g => {
            anyhow::bail!(
                "--group {g} with --resume {r}: a group continues itself (--group {g} --resume, or --resume {g})"
            )
        }
        (Resume::From(_), Some(g)) => {
            anyhow::bail!("--group {g} with --resume-from: a group continues its own checkpoints (--resume)")
        }
        (_, Some(g)) => g.clone(),
        (Resume::Run(g), None) => match store.get_run(experiment, g).await? {
            Some(r) if r.job.as_ref().is_some_and(|j| j.fleet_id == group::BY_HAND) => g.clone(),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let m = member.member(&group)?;
    let resuming = *resume != Resume::No;
    let record = store.get_run(experiment, &group).await?;
    // Refused here, before a restore, when the group's record already says no; the join
    // itself is decided again on the newest record when the rank takes its slot.
    group::join(record.as_ref(), &m, resuming).map_err(anyhow::Error::msg)?;
    let step = if resuming { restore(group.clone()).await? } else { None };
    let first = if resuming { record.map(Box::new) } else { None };
    let joining = Joining::ByHand { resume: resuming };
    Ok(Some(Target::Shard { member: m, joining, step, all: member.restore_all, first }))
}

/// The first rank run of a managed job (whose hyperparameters its relaunches keep).
async fn first_rank_run<R: RunStore>(store: &R, experiment: &str, group: &str) -> anyhow::Result<Option<Box<Run>>> {
    let listing = store.list_runs(Some(experiment)).await?;
    Ok(listing
        .runs
        .into_iter()
        .filter(|r| r.group.as_deref() == Some(group) && r.job_attempt.is_some())
        .min_by_key(|r| (r.job_attempt, r.node_rank, r.started_ms))
        .map(Box::new))
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
        Target::Rank { first: Some(run), .. } | Target::Shard { first: Some(run), .. } => Some(run),
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
