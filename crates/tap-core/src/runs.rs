//! Experiments and runs: the records every store backend keeps, and the line formats a
//! training process uses to talk to `tap run`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Stopped by a spot interruption notice (or a sick GPU) after a final checkpoint:
    /// `tap run --resume` continues it.
    Interrupted,
    /// Recorded as running, but its supervisor is gone (`kill -9`, a node that lost power):
    /// never stored, only derived by readers ([`observed_status`]).
    Lost,
    /// Stopped by its user: SIGINT or SIGTERM to `tap run`, or `tap jobs cancel`.
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Lost,
        RunStatus::Cancelled,
    ];

    /// The status [`RunStatus::as_str`] names.
    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Lost => "lost",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Interrupted | RunStatus::Lost | RunStatus::Cancelled
        )
    }

    /// Whether `tap run --resume` (without a run) takes a run that ended so: interrupted,
    /// failed and lost trainings are unfinished; a succeeded or cancelled one is not.
    pub fn is_unfinished(self) -> bool {
        matches!(self, RunStatus::Interrupted | RunStatus::Failed | RunStatus::Lost)
    }
}

/// The version of the run record this release writes (`format` in the record). 1: one
/// record per `tap run` process (no `format` field); 2: one record per training, with its
/// attempts. A record of a newer format is not read (a newer tap wrote it).
pub const RUN_FORMAT: u32 = 2;

fn format_v1() -> u32 {
    1
}

/// Where a hyperparameter's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamSource {
    /// The stored default (`tap params set`), at the recorded version.
    #[default]
    Default,
    /// `tap run --param` or `--params-file` for this run.
    Override,
}

/// One earlier attempt of a run: a `tap run` process that worked on it and ended. The
/// latest attempt is the run record's own fields ([`Run::attempt`] and the rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1, 2, … in order.
    pub number: u32,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// How it ended (`lost` when its supervisor vanished).
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<Interruption>,
    /// The checkpoint it restored (from the restore itself), None: it started fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_step: Option<u64>,
    /// Steps it computed again: earlier attempts had got past its restored step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recomputed_steps: u64,
    /// Where it ran and what it spent beside its steps (for the goodput).
    #[serde(default, skip_serializing_if = "Spent::is_empty")]
    pub spent: Spent,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// What an attempt spent beside its steps, and where it ran: `tap goodput` reads it
/// ([`crate::goodput`]). Records written before it read as empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Spent {
    /// When the training command started (after the restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_started_ms: Option<i64>,
    /// How long restoring its checkpoint took (download and verify).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub restore_ms: i64,
    /// Periodic checkpoints the command wrote, and the time it spent writing them (the
    /// child's write time; the uploads run beside training).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub checkpoints: u32,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub checkpoint_write_ms: i64,
    /// The EC2 node it ran on (None: not on EC2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeIdentity>,
}

impl Spent {
    pub fn is_empty(&self) -> bool {
        *self == Spent::default()
    }
}

/// One hyperparameter as a run used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HparamUse {
    pub value: String,
    /// Version of the parameter in its store (SSM parameter version, or the local one);
    /// 0 for an override.
    pub version: u64,
    #[serde(default, skip_serializing_if = "is_default_source")]
    pub source: ParamSource,
}

fn is_default_source(s: &ParamSource) -> bool {
    *s == ParamSource::Default
}

/// A run record. Step metrics live apart from it (they grow without bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// [`RUN_FORMAT`] of the release that wrote it (1 when absent).
    #[serde(default = "format_v1")]
    pub format: u32,
    pub experiment_id: String,
    pub run_id: String,
    /// `--name`: unique in its experiment, usable wherever the id is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `--tag KEY=VALUE` and `tap runs tag`: labels to find runs by (`tap runs list --tag`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `tap runs note`: free text about the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What ran: the code, tap, the Python environment and the node, as the latest attempt
    /// found them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The latest attempt's status (a run's status is its latest attempt's).
    pub status: RunStatus,
    pub command: Vec<String>,
    /// The latest attempt's host and instance.
    pub host: String,
    pub instance_id: Option<String>,
    /// When the run (its first attempt) started.
    pub started_ms: i64,
    /// When the latest attempt ended.
    pub ended_ms: Option<i64>,
    /// The hyperparameters the first attempt recorded; every attempt gets these.
    pub hparams: BTreeMap<String, HparamUse>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Id of the latest checkpoint uploaded for this run.
    pub checkpoint: Option<String>,
    /// The run whose checkpoint this run started from: a fork (`--resume-from`). Format 1
    /// records set it on every `--resume` (then the record is an attempt of that training).
    pub resumed_from: Option<String>,
    /// The checkpoint a fork started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_checkpoint: Option<String>,
    /// Earlier attempts, oldest first; the latest one is this record's own fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// When the latest attempt started (None: it is the first, at `started_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_ms: Option<i64>,
    /// The checkpoint the latest attempt restored, from the restore itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_step: Option<u64>,
    /// Steps the latest attempt computes again (see [`Attempt::recomputed_steps`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recomputed_steps: u64,
    /// Readers only, never stored: the records of a format-1 `--resume` chain that
    /// [`fold_legacy_chains`] shows as this one run, oldest first (their metrics are its).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_records: Vec<String>,
    /// The last value of every metric.
    pub final_metrics: BTreeMap<String, f64>,
    /// Number of metric points recorded.
    pub metric_points: u64,
    /// Entries of the checkpoint directory its checkpoints left out (a link leaving it, a
    /// FIFO), each once, with why: the rest was stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_left_out: Vec<crate::manifest::SkippedEntry>,
    /// Why and when the run was told to stop early (spot notice, GPU fault, operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<Interruption>,
    /// The multi-node job this run is one node of (`TAP_RUN_GROUP`, set by `tap launch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// This node's rank in that job (`NODE_RANK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_rank: Option<u32>,
    /// Which attempt of that job this run belongs to (`TAP_JOB_ATTEMPT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_attempt: Option<u32>,
    /// Set on a multi-node job's own record (its run id is the group id of its node runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// When the supervising `tap run` last said it is alive (epoch ms; every
    /// [`HEARTBEAT_INTERVAL_MS`] at least).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<i64>,
    /// The supervising process, so a reader on the same machine can tell at once that it died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<Supervisor>,
    /// The deadline planner's forecast for a final checkpoint (from the second periodic one on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::commit::Forecast>,
    /// A rank of a sharded job: its newest stored shard (for the job's final checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_shard: Option<crate::shards::ShardStored>,
    /// What the latest attempt spent beside its steps, and where it ran.
    #[serde(default, skip_serializing_if = "Spent::is_empty")]
    pub spent: Spent,
}

/// How often `tap run` refreshes its run record's heartbeat when nothing else changed it. One
/// conditional write per 30 s is ~2 900 writes a day per run: cents a month on DynamoDB.
pub const HEARTBEAT_INTERVAL_MS: i64 = 30_000;

/// A running run whose heartbeat is older than this is `lost`: three missed heartbeats, so a
/// slow store or a paused laptop does not make a live run look dead.
pub const LOST_AFTER_MS: i64 = 3 * HEARTBEAT_INTERVAL_MS;

/// The process supervising a run: which kernel boot and PID namespace, which pid, and the
/// process's start time (clock ticks since boot, `/proc/<pid>/stat` field 22) so a reused pid
/// is not mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervisor {
    pub boot_id: String,
    pub pid_ns: String,
    pub pid: u32,
    pub start_ticks: u64,
}

/// What a reader on this machine can tell about a supervisor directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Another machine, boot or PID namespace: only the heartbeat can tell.
    Unknown,
}

/// A run's status as a reader should show it. `lost` is derived here, never stored: a
/// stored status is what the supervisor last wrote, and a run whose supervisor comes back
/// (a healed network partition) shows as running again, which is then true. A running run is
/// lost when this machine sees its supervisor process gone, or when its heartbeat is older
/// than [`LOST_AFTER_MS`]. Records from before heartbeats (none) are taken at their word.
pub fn observed_status(run: &Run, now_ms: i64, probe: impl Fn(&Supervisor) -> Liveness) -> RunStatus {
    if run.status != RunStatus::Running {
        return run.status;
    }
    match run.supervisor.as_ref().map(probe) {
        Some(Liveness::Dead) => return RunStatus::Lost,
        Some(Liveness::Alive) => return RunStatus::Running,
        Some(Liveness::Unknown) | None => {}
    }
    match run.heartbeat_ms {
        Some(h) if now_ms.saturating_sub(h) > LOST_AFTER_MS => RunStatus::Lost,
        _ => RunStatus::Running,
    }
}

/// Runs as readers should see them: each node run's observed status, and each job record's
/// node slots (and so the job's status) from its node runs found in `runs`.
pub fn observe_all(runs: &mut [Run], now_ms: i64, probe: impl Fn(&Supervisor) -> Liveness) {
    for r in runs.iter_mut() {
        r.status = observed_status(r, now_ms, &probe);
    }
    let lost: std::collections::BTreeSet<(String, String)> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Lost)
        .map(|r| (r.experiment_id.clone(), r.run_id.clone()))
        .collect();
    for r in runs.iter_mut() {
        let exp = r.experiment_id.clone();
        mark_lost_nodes(r, |id| lost.contains(&(exp.clone(), id.to_owned())));
    }
}

/// A job record's slots whose node run is lost become `lost`, and the job's status follows.
pub fn mark_lost_nodes(job_run: &mut Run, is_lost: impl Fn(&str) -> bool) {
    let Some(job) = job_run.job.as_mut() else { return };
    let mut changed = false;
    for n in &mut job.nodes {
        if n.status == RunStatus::Running && n.run_id.as_deref().is_some_and(&is_lost) {
            n.status = RunStatus::Lost;
            changed = true;
        }
    }
    if changed {
        job_run.status = job.status();
    }
}

/// A multi-node job as `tap launch` records it, beside its node runs: where its current
/// attempt runs and how each node's run is doing. The launcher writes the attempt; each
/// node's `tap run` writes its own slot (conditional writes: nobody loses an update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub fleet_id: String,
    /// 1 for the first launch; every relaunch from the latest checkpoint adds one.
    pub attempt: u32,
    /// One per rank, rank order.
    pub nodes: Vec<JobNode>,
    /// Set by the fleet's job controller when it ended this attempt (the reason): its ranks
    /// still running stop (`tap run` reads it every few seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

/// The stop reason the job controller records when `tap jobs cancel` ends a job: its ranks
/// end `cancelled`, not failed.
pub const STOP_CANCELLED: &str = "cancelled (tap jobs cancel)";

/// Whether the job's stop of attempt `attempt` is a cancel ([`STOP_CANCELLED`]).
pub fn cancelled_by_job(job_run: &Run, attempt: u32) -> bool {
    job_run.job.as_ref().is_some_and(|j| j.attempt == attempt && j.stop.as_deref() == Some(STOP_CANCELLED))
}

/// Why a rank of attempt `attempt` must stop, from its job's record: the attempt was ended,
/// or a newer one started.
pub fn stop_for(job_run: &Run, attempt: u32) -> Option<String> {
    let job = job_run.job.as_ref()?;
    if job.attempt > attempt {
        return Some(format!(
            "job {} started attempt {} (this rank is of attempt {attempt})",
            job_run.run_id, job.attempt
        ));
    }
    match &job.stop {
        Some(why) if job.attempt == attempt => Some(format!("job {} ended attempt {attempt}: {why}", job_run.run_id)),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobNode {
    pub rank: u32,
    pub instance_id: String,
    /// The SSM Run Command that started it.
    pub command_id: String,
    /// The node's own run, once its `tap run` has started.
    pub run_id: Option<String>,
    /// `queued` until the node's run starts.
    pub status: RunStatus,
}

impl Job {
    /// The job's status from its nodes': failed if one failed, lost if one's supervisor is
    /// gone, interrupted if one was
    /// (and none failed), succeeded once all did, running once one runs, else queued.
    pub fn status(&self) -> RunStatus {
        let any = |s: RunStatus| self.nodes.iter().any(|n| n.status == s);
        if any(RunStatus::Failed) {
            RunStatus::Failed
        } else if any(RunStatus::Lost) {
            RunStatus::Lost
        } else if any(RunStatus::Interrupted) {
            RunStatus::Interrupted
        } else if !self.nodes.is_empty() && self.nodes.iter().all(|n| n.status == RunStatus::Succeeded) {
            RunStatus::Succeeded
        } else if any(RunStatus::Running) || any(RunStatus::Succeeded) {
            RunStatus::Running
        } else {
            RunStatus::Queued
        }
    }
}

/// Records a node run in its job's record (inside a conditional update): the node's slot of
/// the job's current attempt; rank 0's checkpoint and metrics become the job's. A run of an
/// older attempt, or of a rank the job does not have, changes nothing (returns false).
pub fn record_node_run(job_run: &mut Run, attempt: u32, node: &Run) -> bool {
    let Some(job) = job_run.job.as_mut() else { return false };
    let Some(rank) = node.node_rank else { return false };
    if job.attempt != attempt {
        return false;
    }
    let Some(slot) = job.nodes.iter_mut().find(|n| n.rank == rank) else { return false };
    slot.run_id = Some(node.run_id.clone());
    slot.status = node.status;
    let status = job.status();
    if rank == 0 {
        job_run.restored.clone_from(&node.restored);
        job_run.restored_step = node.restored_step;
        job_run.checkpoint.clone_from(&node.checkpoint);
        job_run.final_metrics.clone_from(&node.final_metrics);
        job_run.metric_points = node.metric_points;
    }
    job_run.status = status;
    job_run.ended_ms = if status.is_final() { node.ended_ms.or(job_run.ended_ms) } else { None };
    true
}

impl Run {
    /// A run that starts at `started_ms`: `running`, nothing recorded yet.
    pub fn new(experiment_id: &str, run_id: &str, command: Vec<String>, host: &str, started_ms: i64) -> Run {
        Run {
            format: RUN_FORMAT,
            experiment_id: experiment_id.to_owned(),
            run_id: run_id.to_owned(),
            name: None,
            status: RunStatus::Running,
            command,
            host: host.to_owned(),
            instance_id: None,
            started_ms,
            ended_ms: None,
            hparams: BTreeMap::new(),
            exit_code: None,
            signal: None,
            checkpoint: None,
            resumed_from: None,
            parent_checkpoint: None,
            attempts: Vec::new(),
            attempt_started_ms: None,
            restored: None,
            restored_step: None,
            recomputed_steps: 0,
            legacy_records: Vec::new(),
            final_metrics: BTreeMap::new(),
            metric_points: 0,
            checkpoint_left_out: Vec::new(),
            tags: BTreeMap::new(),
            note: None,
            provenance: None,
            interruption: None,
            group: None,
            node_rank: None,
            job_attempt: None,
            job: None,
            heartbeat_ms: Some(started_ms),
            supervisor: None,
            forecast: None,
            last_shard: None,
            spent: Spent::default(),
        }
    }
}

impl Run {
    /// The latest attempt's number (1 for a run never resumed).
    pub fn attempt(&self) -> u32 {
        self.attempts.len() as u32 + 1
    }

    /// The latest attempt, as [`Attempt`] (with `status` as given: the observed one).
    pub fn latest_attempt(&self, status: RunStatus) -> Attempt {
        Attempt {
            number: self.attempt(),
            host: self.host.clone(),
            instance_id: self.instance_id.clone(),
            started_ms: self.attempt_started_ms.unwrap_or(self.started_ms),
            ended_ms: self.ended_ms,
            status,
            exit_code: self.exit_code,
            signal: self.signal,
            interruption: self.interruption.clone(),
            restored: self.restored.clone(),
            restored_step: self.restored_step,
            recomputed_steps: self.recomputed_steps,
            spent: self.spent.clone(),
        }
    }

    /// Every attempt, oldest first; the latest with `status` (the observed one).
    pub fn all_attempts(&self, status: RunStatus) -> Vec<Attempt> {
        let mut all = self.attempts.clone();
        all.push(self.latest_attempt(status));
        all
    }

    /// The stored records the run reads from, oldest first: its own, or the records of a
    /// folded format-1 chain ([`fold_legacy_chains`]). The last is the one that holds its
    /// latest attempt.
    pub fn records(&self) -> Vec<&str> {
        if self.legacy_records.is_empty() {
            vec![self.run_id.as_str()]
        } else {
            self.legacy_records.iter().map(String::as_str).collect()
        }
    }

    /// The name shown for the run: its name, else its id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.run_id)
    }

    /// Starts attempt `attempt() + 1`: the latest attempt (which ended as `ended_as`, the
    /// observed status: `lost` when its supervisor vanished) joins [`Run::attempts`], and the
    /// record's own fields describe the new one. Hyperparameters, metrics and checkpoints
    /// stay the run's.
    pub fn begin_attempt(&mut self, ended_as: RunStatus, start: AttemptStart) {
        let previous = self.latest_attempt(ended_as);
        self.attempts.push(previous);
        self.format = RUN_FORMAT;
        self.status = RunStatus::Running;
        self.host = start.host;
        self.instance_id = start.instance_id;
        self.attempt_started_ms = Some(start.started_ms);
        self.ended_ms = None;
        self.exit_code = None;
        self.signal = None;
        self.interruption = None;
        self.restored = None;
        self.restored_step = None;
        self.recomputed_steps = 0;
        self.spent = Spent::default();
        self.forecast = None;
        self.heartbeat_ms = Some(start.started_ms);
        self.supervisor = start.supervisor;
        self.node_rank = start.node_rank;
        self.job_attempt = start.job_attempt;
    }

    /// Whether `tap run --resume` without a run takes this one (its status as observed): a
    /// training of its own (not a job's record or one of its ranks), unfinished, with a
    /// committed checkpoint.
    pub fn resumable(&self) -> bool {
        self.job.is_none() && self.group.is_none() && self.status.is_unfinished() && self.checkpoint.is_some()
    }
}

/// Why a stored run record is not read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupt run record")]
    Json(#[source] serde_json::Error),
    #[error("run record of format {0}, written by a newer tap (this one reads formats 1 to {RUN_FORMAT}); upgrade tap")]
    Newer(u32),
}

/// A run record from its stored JSON: format 1 (one record per `tap run` process) reads as a
/// one-attempt run; a format newer than [`RUN_FORMAT`] is refused, never half-read.
pub fn decode_run(body: &str) -> Result<Run, DecodeError> {
    let run: Run = serde_json::from_str(body).map_err(DecodeError::Json)?;
    if run.format > RUN_FORMAT {
        return Err(DecodeError::Newer(run.format));
    }
    Ok(run)
}

/// Who starts a new attempt of a run, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptStart {
    pub host: String,
    pub instance_id: Option<String>,
    pub started_ms: i64,
    pub supervisor: Option<Supervisor>,
    pub node_rank: Option<u32>,
    pub job_attempt: Option<u32>,
}

/// The record that continued `r` by a format-1 `tap run --resume` (which made a new record
/// naming the one it resumed; a fork names a checkpoint too, and is a run of its own).
pub fn legacy_continuation<'a>(runs: &'a [Run], r: &Run) -> Option<&'a Run> {
    runs.iter()
        .filter(|o| {
            o.experiment_id == r.experiment_id
                && o.resumed_from.as_deref() == Some(r.run_id.as_str())
                && o.parent_checkpoint.is_none()
                && o.group.is_none()
        })
        .min_by_key(|o| (o.started_ms, o.run_id.clone()))
}

/// The format-1 chain that starts at `head`: it, then each record that continued the one
/// before (bounded by the number of records, so a cycle in corrupt data ends).
pub fn legacy_chain<'a>(runs: &'a [Run], head: &'a Run) -> Vec<&'a Run> {
    let mut chain = vec![head];
    while let Some(next) = chain.last().and_then(|r| legacy_continuation(runs, r)) {
        if chain.len() > runs.len() || chain.iter().any(|c| std::ptr::eq(*c, next)) {
            break;
        }
        chain.push(next);
    }
    chain
}

/// Runs as one training each: a format-1 `--resume` chain (records A ← B ← C) reads as run A
/// with the chain's records as its attempts, in order; its latest attempt, status,
/// checkpoint and metrics summary are the chain's last record's. Other runs are as they are.
/// Order (newest first) follows the chain's start.
pub fn fold_legacy_chains(runs: Vec<Run>) -> Vec<Run> {
    // A managed job's rank runs are the job's attempts already (an earlier release's
    // relaunched ranks name rank 0's run): never folded.
    let continued: std::collections::BTreeSet<(String, String)> = runs
        .iter()
        .filter(|r| r.parent_checkpoint.is_none() && r.group.is_none())
        .filter_map(|r| r.resumed_from.as_ref().map(|p| (r.experiment_id.clone(), p.clone())))
        .filter(|(e, p)| runs.iter().any(|h| &h.experiment_id == e && &h.run_id == p))
        .collect();
    let is_member = |r: &Run| {
        r.parent_checkpoint.is_none()
            && r.group.is_none()
            && r.resumed_from
                .as_ref()
                .is_some_and(|p| runs.iter().any(|h| h.experiment_id == r.experiment_id && &h.run_id == p))
    };
    let mut out = Vec::new();
    for r in &runs {
        if is_member(r) {
            continue;
        }
        if !continued.contains(&(r.experiment_id.clone(), r.run_id.clone())) {
            out.push(r.clone());
            continue;
        }
        let chain = legacy_chain(&runs, r);
        let Some((last, earlier)) = chain.split_last() else { continue };
        let mut attempts = Vec::new();
        for (i, e) in earlier.iter().enumerate() {
            attempts.extend(e.attempts.iter().cloned());
            let mut a = e.latest_attempt(e.status);
            // A format-1 resume restored the checkpoint of the record it names.
            if i > 0 && a.restored.is_none() {
                a.restored.clone_from(&earlier[i - 1].checkpoint);
            }
            attempts.push(a);
        }
        attempts.extend(last.attempts.iter().cloned());
        for (i, a) in attempts.iter_mut().enumerate() {
            a.number = i as u32 + 1;
        }
        let mut f = (*last).clone();
        if f.restored.is_none() && f.attempts.is_empty() {
            f.restored = earlier.last().and_then(|e| e.checkpoint.clone());
        }
        f.attempts = attempts;
        f.attempt_started_ms = Some(last.attempt_started_ms.unwrap_or(last.started_ms));
        f.run_id.clone_from(&r.run_id);
        f.name.clone_from(&r.name);
        f.started_ms = r.started_ms;
        f.hparams.clone_from(&r.hparams);
        f.resumed_from.clone_from(&r.resumed_from);
        f.parent_checkpoint.clone_from(&r.parent_checkpoint);
        f.metric_points = chain.iter().map(|c| c.metric_points).sum();
        f.legacy_records = chain.iter().map(|c| c.run_id.clone()).collect();
        out.push(f);
    }
    out
}

/// Why a run named on the command line was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    #[error("no run {wanted:?} in experiment {experiment} (an id, a unique id prefix or a name)")]
    NotFound { experiment: String, wanted: String },
    #[error("{wanted:?} fits {} runs of experiment {experiment}: {}; give more of the id", .ids.len(), .ids.join(", "))]
    Ambiguous { experiment: String, wanted: String, ids: Vec<String> },
}

/// The run `wanted` names among `runs` (one experiment's): its id, its name, or a prefix of
/// exactly one id, in that order.
pub fn find_run<'a>(runs: &'a [Run], experiment: &str, wanted: &str) -> Result<&'a Run, FindError> {
    if let Some(r) = runs.iter().find(|r| r.run_id == wanted) {
        return Ok(r);
    }
    if let Some(r) = runs.iter().find(|r| r.name.as_deref() == Some(wanted)) {
        return Ok(r);
    }
    let fits: Vec<&Run> =
        if wanted.is_empty() { vec![] } else { runs.iter().filter(|r| r.run_id.starts_with(wanted)).collect() };
    match fits.as_slice() {
        [one] => Ok(one),
        [] => Err(FindError::NotFound { experiment: experiment.to_owned(), wanted: wanted.to_owned() }),
        many => Err(FindError::Ambiguous {
            experiment: experiment.to_owned(),
            wanted: wanted.to_owned(),
            ids: many.iter().map(|r| r.run_id.clone()).collect(),
        }),
    }
}

/// Why `tap run --resume` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Find(#[from] FindError),
    #[error(
        "experiment {experiment} has no run to resume (none is interrupted, failed or lost with a committed \
         checkpoint); start a new run without --resume, or name one: --resume RUN"
    )]
    NoCandidate { experiment: String },
    #[error(
        "experiment {experiment} has {} runs to resume: {}; name one: --resume RUN",
        .candidates.len(),
        .candidates.join(", ")
    )]
    Ambiguous { experiment: String, candidates: Vec<String> },
    #[error("run {run} is {status}: {why}")]
    NotResumable { run: String, status: &'static str, why: &'static str },
}

/// One line per candidate: `id (name) interrupted`.
fn candidate_line(r: &Run) -> String {
    let name = r.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
    format!("{}{name} {}", r.run_id, r.status.as_str())
}

/// The run `tap run --resume [wanted]` continues, from `runs` of one experiment as readers
/// see them (statuses observed: [`observe_all`]). Without `wanted`: the one resumable run
/// ([`Run::resumable`]); none or several refuse, naming the candidates. With it: that run,
/// unless it runs, succeeded or is a managed job's (whose controller resumes it).
pub fn pick_resume<'a>(runs: &'a [Run], experiment: &str, wanted: Option<&str>) -> Result<&'a Run, ResumeError> {
    // A format-1 record that a later record resumed (`resumed_from` without a fork's
    // checkpoint) was continued there: it is an earlier attempt of that training.
    let continued = |r: &Run| legacy_continuation(runs, r).is_some();
    let Some(wanted) = wanted else {
        let candidates: Vec<&Run> = runs.iter().filter(|r| r.resumable() && !continued(r)).collect();
        return match candidates.as_slice() {
            [one] => Ok(one),
            [] => Err(ResumeError::NoCandidate { experiment: experiment.to_owned() }),
            many => Err(ResumeError::Ambiguous {
                experiment: experiment.to_owned(),
                candidates: many.iter().map(|r| candidate_line(r)).collect(),
            }),
        };
    };
    let named = find_run(runs, experiment, wanted)?;
    // A format-1 chain is one training: naming any of its records continues its last.
    let run = legacy_chain(runs, named).last().copied().unwrap_or(named);
    let status = run.status;
    let refuse = |why| Err(ResumeError::NotResumable { run: run.run_id.clone(), status: status.as_str(), why });
    if run.job.is_some() || run.group.is_some() {
        return refuse("it belongs to a managed job, whose controller resumes it (tap jobs show)");
    }
    match status {
        RunStatus::Running | RunStatus::Queued => {
            refuse("its supervisor still reports in; if its node is gone it shows lost within 90 s")
        }
        RunStatus::Succeeded => refuse("nothing is left to do; --resume-from RUN starts a new run from its checkpoint"),
        RunStatus::Interrupted | RunStatus::Failed | RunStatus::Lost | RunStatus::Cancelled => Ok(run),
    }
}

/// Steps an attempt that restored a checkpoint at `restored_step` (None: started fresh, at
/// step 0) computes again: the earlier attempts got to `last_step` (None: they recorded no
/// step).
pub fn recomputed_steps(restored_step: Option<u64>, last_step: Option<u64>) -> u64 {
    match last_step {
        Some(last) => last.saturating_sub(restored_step.unwrap_or(0)),
        None => 0,
    }
}

/// A run's series from every point its attempts recorded: one value per (metric, step),
/// the latest recorded one (a step an attempt computed again keeps the later value), in
/// step order.
pub fn series(points: Vec<MetricPoint>) -> Vec<MetricPoint> {
    let mut by_key: BTreeMap<(u64, String), (usize, MetricPoint)> = BTreeMap::new();
    for (i, p) in points.into_iter().enumerate() {
        let key = (p.step, p.name.clone());
        match by_key.get(&key) {
            Some((_, old)) if old.ts_ms > p.ts_ms => {}
            _ => {
                by_key.insert(key, (i, p));
            }
        }
    }
    let mut out: Vec<(usize, MetricPoint)> = by_key.into_values().collect();
    out.sort_by_key(|(i, p)| (p.step, *i));
    out.into_iter().map(|(_, p)| p).collect()
}

/// An interruption notice as a run received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// `spot-interruption`, `gpu-fatal` (a notice tap-agent wrote), `signal` (SIGUSR1 with
    /// no notice file) or `notice-file` (one tap could not read).
    pub kind: crate::notice::NoticeKind,
    pub reason: String,
    /// When the run got it (epoch ms).
    pub noticed_ms: i64,
    /// When the node goes away, when the notice said.
    pub deadline_ms: Option<i64>,
    /// How the final checkpoint fared against EC2's deadline (set when the run ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::commit::Verdict>,
}

/// What a run ran ([`Run::provenance`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// The version of the `tap` that supervised it.
    pub tap_version: String,
    /// The working directory's git repository, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitState>,
    /// The command's Python, when the command is Python (`python3 …`, `torchrun …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonEnv>,
    /// The EC2 node, on EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitState {
    pub commit: String,
    /// None: a detached HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tracked files differ from the commit.
    pub dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonEnv {
    /// `3.11.7`.
    pub version: String,
    /// The interpreter the command runs.
    pub executable: String,
    /// SHA-256 of the sorted `name==version` list of installed distributions: equal hashes,
    /// equal packages.
    pub packages_sha256: String,
    pub packages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub instance_id: String,
    pub instance_type: String,
    pub availability_zone: String,
    pub ami_id: String,
    /// Spot or on-demand (IMDS `instance-life-cycle`); None: not said (older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// How an instance is bought (IMDS `instance-life-cycle`: `spot`, `on-demand`, `scheduled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Spot,
    OnDemand,
}

impl Lifecycle {
    /// IMDS's word; `scheduled` (Scheduled Reserved Instances, retired) bills as on-demand.
    pub fn parse(s: &str) -> Option<Lifecycle> {
        match s.trim() {
            "spot" => Some(Lifecycle::Spot),
            "on-demand" | "scheduled" => Some(Lifecycle::OnDemand),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Spot => "spot",
            Lifecycle::OnDemand => "on-demand",
        }
    }
}

/// One metric value at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub step: u64,
    pub name: String,
    pub value: f64,
    pub ts_ms: i64,
}

/// Experiment ids and names of parameters and metrics: safe in S3 keys, DynamoDB keys,
/// environment variable names, SSM paths and file paths (`.` and `..` are not names: an
/// experiment `..` was accepted and then failed at every checkpoint).
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !s.chars().all(|c| c == '.')
}

/// The experiment table's partition of the managed-job queue and its lease.
pub const JOBS_PARTITION: &str = "#jobs";
/// The experiment table's partition of what the nodes' boot counts (driver failures per AMI).
pub const NODE_PARTITION: &str = "_tap-node";
/// Partitions of the experiment table that hold the stack's own records, never runs: no
/// listing shows them and no experiment may take their names.
pub const RESERVED_PARTITIONS: [&str; 2] = [JOBS_PARTITION, NODE_PARTITION];

/// Whether `experiment` names one of the [`RESERVED_PARTITIONS`].
pub fn reserved_partition(experiment: &str) -> bool {
    RESERVED_PARTITIONS.contains(&experiment)
}

/// What [`valid_id`] asks for, for messages.
pub const ID_RULE: &str = "1-128 letters, digits, '_', '.' or '-', not only dots";

/// A new run id: sortable by start time, unique across nodes (`20261127T012437Z-3f9a1c`).
pub fn new_run_id(now_ms: i64, entropy: u32) -> String {
    let secs = now_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::time::civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:06x}", rem / 3600, rem % 3600 / 60, rem % 60, entropy & 0xff_ffff)
}

/// What one line of `TAP_METRICS_FILE` says: `{"step": 10, "loss": 0.31, "train/acc": 0.9}`
/// (every other field is a metric), and with `"checkpoint": true` that a complete checkpoint
/// is in `TAP_CHECKPOINT_DIR` for tap to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsLine {
    pub step: Option<u64>,
    pub checkpoint: bool,
    /// When the command wrote it: `"_timestamp"`, seconds since the epoch (W&B's name for
    /// it); tapml sets it, as its lines reach tap up to a second late. None: not given (tap
    /// uses the time it read the line) or not a finite number of seconds.
    pub time_ms: Option<i64>,
    pub values: Vec<(String, f64)>,
    /// Fields skipped alone (a refused name, a value that is not a finite number); the
    /// line's other values are kept. The name is clipped to [`SHOWN_NAME_CHARS`].
    pub skipped: Vec<SkippedMetric>,
}

/// A field of a metrics line that was not recorded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedMetric {
    pub name: String,
    pub why: String,
}

/// How much of a skipped field's name messages show.
pub const SHOWN_NAME_CHARS: usize = 80;

/// Why a metrics line is dropped whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsLineError {
    /// serde_json's words for what is wrong (kept as text: the line is reported, not handled).
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("\"step\" must be a non-negative integer")]
    BadStep,
    #[error("\"checkpoint\" must be true or false")]
    BadCheckpoint,
}

/// Parses one line the training process wrote. An error (the line is not a JSON object, or
/// its `step` or `checkpoint` is malformed) drops the line; a bad metric drops itself only.
pub fn parse_metrics_line(line: &str) -> Result<MetricsLine, MetricsLineError> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| MetricsLineError::NotJson(e.to_string()))?;
    let obj = v.as_object().ok_or(MetricsLineError::NotAnObject)?;
    let step = match obj.get("step") {
        None | Some(serde_json::Value::Null) => None,
        Some(s) => Some(s.as_u64().ok_or(MetricsLineError::BadStep)?),
    };
    let checkpoint = match obj.get("checkpoint") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(MetricsLineError::BadCheckpoint),
    };
    let time_ms = obj
        .get(TIMESTAMP_FIELD)
        .and_then(serde_json::Value::as_f64)
        .filter(|t| t.is_finite() && *t > 0.0 && *t < 1e11)
        .map(|t| (t * 1000.0).round() as i64);
    let mut values = Vec::new();
    let mut skipped = Vec::new();
    for (k, v) in obj {
        if k == "step" || k == "checkpoint" || k == TIMESTAMP_FIELD {
            continue;
        }
        let skip = |why: String| SkippedMetric { name: crate::text::clip(k, SHOWN_NAME_CHARS), why };
        if let Err(e) = crate::names::check_name(k) {
            skipped.push(skip(format!("the name is refused: {e}")));
            continue;
        }
        match v.as_f64() {
            Some(f) if f.is_finite() => values.push((k.clone(), f)),
            Some(_) => skipped.push(skip("not a finite number".into())),
            None => skipped.push(skip(format!("{} is not a number", json_kind(v)))),
        }
    }
    Ok(MetricsLine { step, checkpoint, time_ms, values, skipped })
}

/// The metrics line's field for when it was written (seconds since the epoch): reserved, as
/// `step` and `checkpoint` are.
pub const TIMESTAMP_FIELD: &str = "_timestamp";

/// When a metric point was recorded: the time the line carries, if it is plausible (not after
/// `read_ms`, when tap read it, and not more than a day before), else `read_ms`.
pub fn point_time(carried: Option<i64>, read_ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    carried.filter(|t| (read_ms - DAY_MS..=read_ms).contains(t)).unwrap_or(read_ms)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number out of range",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job_record(nodes: u32) -> Run {
        let mut r = Run::new("llm", "g-1", vec!["python3".into()], "fleet fleet-1", 1_000);
        r.status = RunStatus::Queued;
        r.job = Some(Job {
            fleet_id: "fleet-1".into(),
            attempt: 1,
            nodes: (0..nodes)
                .map(|rank| JobNode {
                    rank,
                    instance_id: format!("i-{rank}"),
                    command_id: format!("c-{rank}"),
                    run_id: None,
                    status: RunStatus::Queued,
                })
                .collect(),
            stop: None,
        });
        r
    }

    fn node_run(rank: u32, status: RunStatus) -> Run {
        let mut r = Run::new("llm", &format!("r-{rank}"), vec!["python3".into()], "node", 2_000);
        r.node_rank = Some(rank);
        r.group = Some("g-1".into());
        r.status = status;
        if status.is_final() {
            r.ended_ms = Some(9_000 + i64::from(rank));
        }
        r.final_metrics.insert("loss".into(), f64::from(rank) + 0.5);
        r.checkpoint = Some(format!("ckpt-{rank}"));
        r
    }

    #[test]
    fn dots_alone_are_not_names() {
        for bad in [".", "..", "...", "", "a/b", "a b"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        for good in ["a..b", ".hidden", "v1.2", "x-y_z"] {
            assert!(valid_id(good), "{good:?}");
        }
    }

    #[test]
    fn a_rank_stops_when_its_attempt_ended_or_a_newer_one_started() {
        let mut job = job_record(2);
        assert_eq!(stop_for(&job, 1), None);
        job.job.as_mut().expect("job").stop = Some("spot reclaim of rank 1's node i-1".into());
        assert_eq!(stop_for(&job, 1).as_deref(), Some("job g-1 ended attempt 1: spot reclaim of rank 1's node i-1"));
        job.job.as_mut().expect("job").attempt = 2;
        job.job.as_mut().expect("job").stop = None;
        assert_eq!(stop_for(&job, 1).as_deref(), Some("job g-1 started attempt 2 (this rank is of attempt 1)"));
        assert_eq!(stop_for(&job, 2), None);
        assert_eq!(stop_for(&Run::new("e", "r", vec![], "h", 0), 1), None, "not a job record");
        assert!(!cancelled_by_job(&job, 2), "a reclaim's stop is not a cancel");
        job.job.as_mut().expect("job").stop = Some(STOP_CANCELLED.into());
        assert!(cancelled_by_job(&job, 2) && !cancelled_by_job(&job, 1), "a cancel of attempt 2");
    }

    #[test]
    fn a_job_follows_its_nodes_runs() {
        let mut job = job_record(2);
        assert!(record_node_run(&mut job, 1, &node_run(1, RunStatus::Running)));
        assert_eq!(job.status, RunStatus::Running);
        assert!(record_node_run(&mut job, 1, &node_run(0, RunStatus::Running)));
        assert!(record_node_run(&mut job, 1, &node_run(1, RunStatus::Succeeded)));
        assert_eq!((job.status, job.ended_ms), (RunStatus::Running, None), "rank 0 still runs");
        assert!(record_node_run(&mut job, 1, &node_run(0, RunStatus::Succeeded)));
        assert_eq!((job.status, job.ended_ms), (RunStatus::Succeeded, Some(9_000)));
        assert_eq!(job.checkpoint.as_deref(), Some("ckpt-0"), "rank 0's checkpoint is the job's");
        assert_eq!(job.final_metrics["loss"], 0.5);
        let slots: Vec<Option<&str>> =
            job.job.as_ref().expect("job").nodes.iter().map(|n| n.run_id.as_deref()).collect();
        assert_eq!(slots, [Some("r-0"), Some("r-1")]);
    }

    #[test]
    fn one_bad_node_decides_and_old_attempts_change_nothing() {
        let mut job = job_record(3);
        record_node_run(&mut job, 1, &node_run(2, RunStatus::Interrupted));
        assert_eq!(job.status, RunStatus::Interrupted);
        record_node_run(&mut job, 1, &node_run(1, RunStatus::Failed));
        assert_eq!(job.status, RunStatus::Failed, "failed outranks interrupted");

        let before = job.clone();
        assert!(!record_node_run(&mut job, 2, &node_run(0, RunStatus::Succeeded)), "another attempt");
        assert!(!record_node_run(&mut job, 1, &node_run(7, RunStatus::Succeeded)), "no such rank");
        let mut plain = node_run(0, RunStatus::Succeeded);
        plain.node_rank = None;
        assert!(!record_node_run(&mut job, 1, &plain), "not a node run");
        assert_eq!(job, before);
        let mut not_a_job = Run::new("llm", "x", vec![], "h", 0);
        assert!(!record_node_run(&mut not_a_job, 1, &node_run(0, RunStatus::Succeeded)));
    }

    #[test]
    fn job_records_round_trip_and_old_records_still_read() {
        let job = job_record(2);
        let text = serde_json::to_string(&job).expect("json");
        assert_eq!(serde_json::from_str::<Run>(&text).expect("back"), job);
        let mut plain = job.clone();
        plain.job = None;
        let text = serde_json::to_string(&plain).expect("json");
        assert!(!text.contains("\"job\""), "{text}");
    }

    fn sup(pid: u32) -> Supervisor {
        Supervisor { boot_id: "b".into(), pid_ns: "pid:[1]".into(), pid, start_ticks: 7 }
    }

    #[test]
    fn lost_is_derived_from_the_supervisor_or_the_heartbeat() {
        let mut r = Run::new("e", "r", vec![], "h", 1_000);
        let unknown = |_: &Supervisor| Liveness::Unknown;
        assert_eq!(observed_status(&r, 1_000 + LOST_AFTER_MS, unknown), RunStatus::Running, "just in time");
        assert_eq!(observed_status(&r, 1_001 + LOST_AFTER_MS, unknown), RunStatus::Lost, "three heartbeats missed");
        r.supervisor = Some(sup(42));
        assert_eq!(
            observed_status(&r, 2_000, |s| if s.pid == 42 { Liveness::Dead } else { Liveness::Alive }),
            RunStatus::Lost
        );
        assert_eq!(observed_status(&r, i64::MAX, |_| Liveness::Alive), RunStatus::Running, "seen alive here");
        r.status = RunStatus::Succeeded;
        assert_eq!(observed_status(&r, i64::MAX, |_| Liveness::Dead), RunStatus::Succeeded, "ended runs are as stored");
        r.status = RunStatus::Running;
        r.heartbeat_ms = None;
        r.supervisor = None;
        assert_eq!(
            observed_status(&r, i64::MAX, unknown),
            RunStatus::Running,
            "no heartbeat recorded: taken at its word"
        );
    }

    #[test]
    fn a_job_with_a_lost_node_is_lost() {
        let mut job = job_record(2);
        record_node_run(&mut job, 1, &node_run(0, RunStatus::Running));
        record_node_run(&mut job, 1, &node_run(1, RunStatus::Running));
        let mut n0 = node_run(0, RunStatus::Running);
        n0.supervisor = Some(sup(1));
        let mut n1 = node_run(1, RunStatus::Running);
        n1.supervisor = Some(sup(2));
        let mut all = vec![job, n0, n1];
        observe_all(&mut all, 3_000, |s| if s.pid == 2 { Liveness::Dead } else { Liveness::Alive });
        assert_eq!(all[2].status, RunStatus::Lost);
        assert_eq!(all[0].status, RunStatus::Lost, "the job follows its lost node");
        let slots: Vec<RunStatus> = all[0].job.as_ref().expect("job").nodes.iter().map(|n| n.status).collect();
        assert_eq!(slots, [RunStatus::Running, RunStatus::Lost]);
    }

    #[test]
    fn run_ids_sort_by_time() {
        assert_eq!(new_run_id(1_795_743_877_000, 0x3f9a1c), "20261127T014437Z-3f9a1c");
        assert!(new_run_id(1_000, 5) < new_run_id(2_000, 1));
    }

    #[test]
    fn a_lines_timestamp_is_its_time_not_a_metric() {
        let m = parse_metrics_line(r#"{"step": 3, "loss": 0.5, "_timestamp": 1800000000.25}"#).expect("line");
        assert_eq!(m.time_ms, Some(1_800_000_000_250));
        assert_eq!(m.values, vec![("loss".to_owned(), 0.5)]);
        let odd = parse_metrics_line(r#"{"step": 3, "_timestamp": "soon"}"#).expect("line");
        assert_eq!((odd.time_ms, odd.values.len(), odd.skipped.len()), (None, 0, 0));
        // Only a plausible time is taken: not after tap read it, not a day before.
        assert_eq!(point_time(Some(1_000), 2_000), 1_000);
        assert_eq!(point_time(Some(3_000), 2_000), 2_000);
        assert_eq!(point_time(Some(1), 90_000_000), 90_000_000);
        assert_eq!(point_time(None, 2_000), 2_000);
    }

    fn line(step: Option<u64>, checkpoint: bool, values: &[(&str, f64)]) -> MetricsLine {
        MetricsLine {
            time_ms: None,
            step,
            checkpoint,
            values: values.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            skipped: vec![],
        }
    }

    #[test]
    fn metrics_lines() {
        assert_eq!(parse_metrics_line(r#"{"step": 3, "loss": 0.5}"#), Ok(line(Some(3), false, &[("loss", 0.5)])));
        assert_eq!(parse_metrics_line(r#"{"checkpoint": true, "step": 7}"#), Ok(line(Some(7), true, &[])));
        assert!(parse_metrics_line("loss=1").expect_err("rejected").to_string().starts_with("not JSON"));
        assert_eq!(parse_metrics_line(r#"{"step": -1}"#), Err(MetricsLineError::BadStep));
        assert!(parse_metrics_line(r#"{"step": -1}"#).expect_err("rejected").to_string().contains("step"));
        assert_eq!(parse_metrics_line("[1]"), Err(MetricsLineError::NotAnObject));
        assert!(parse_metrics_line("[1]").expect_err("rejected").to_string().contains("object"));
        assert_eq!(parse_metrics_line(r#"{"checkpoint": 1}"#), Err(MetricsLineError::BadCheckpoint));
        assert_eq!(
            parse_metrics_line(r#"{"step": 1, "train/loss": 0.5, "eval/acc@1": 0.9}"#),
            Ok(line(Some(1), false, &[("eval/acc@1", 0.9), ("train/loss", 0.5)]))
        );
    }

    #[test]
    fn one_refused_name_dropped_the_whole_metrics_line() {
        let long = "x".repeat(10_000);
        let text =
            serde_json::json!({"step": 4, "loss": 0.25, "acc\u{e9}": 1, "..": 2, "note": "high", &long: 3}).to_string();
        let got = parse_metrics_line(&text).expect("kept");
        assert_eq!(got.values, vec![("loss".to_owned(), 0.25)]);
        let skipped: Vec<&str> = got.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped.contains(&"acc\u{e9}") && skipped.contains(&"..") && skipped.contains(&"note"));
        assert!(got.skipped.iter().all(|s| s.name.len() <= SHOWN_NAME_CHARS + 3), "a long name is clipped");
        assert!(got.skipped.iter().any(|s| s.name == "note" && s.why.contains("string")));
    }

    #[test]
    fn run_round_trips_as_json() {
        let run = Run {
            hparams: [("lr".to_owned(), HparamUse { value: "0.1".into(), version: 2, source: ParamSource::Default })]
                .into(),
            ..Run::new("mnist", &new_run_id(0, 1), vec!["python3".into(), "train.py".into()], "h", 5)
        };
        let text = serde_json::to_string(&run).expect("json");
        assert!(text.contains("\"status\":\"running\""));
        assert_eq!(serde_json::from_str::<Run>(&text).expect("parses"), run);
    }

    fn ended(id: &str, name: Option<&str>, status: RunStatus, checkpoint: Option<&str>) -> Run {
        let mut r = Run::new("sweep", id, vec!["python3".into()], "h", 1_000);
        r.name = name.map(str::to_owned);
        r.status = status;
        r.checkpoint = checkpoint.map(str::to_owned);
        r
    }

    #[test]
    fn resume_without_a_run_takes_the_one_unfinished_run_with_a_checkpoint() {
        let runs = vec![
            ended("r-done", Some("fast"), RunStatus::Succeeded, Some("r-done-0006")),
            ended("r-cut", Some("slow"), RunStatus::Interrupted, Some("r-cut-0002")),
            ended("r-early", None, RunStatus::Failed, None),
            ended("r-stop", None, RunStatus::Cancelled, Some("r-stop-0001")),
        ];
        let picked = pick_resume(&runs, "sweep", None).expect("one candidate");
        assert_eq!(picked.run_id, "r-cut", "never the experiment's newest checkpoint (r-done's)");

        let mut two = runs.clone();
        // Stored as running, observed lost (its supervisor vanished).
        two.push(ended("r-lost", None, RunStatus::Running, Some("r-lost-0001")));
        observe_all(&mut two, i64::MAX, |_| Liveness::Unknown);
        let e = pick_resume(&two, "sweep", None).expect_err("two candidates").to_string();
        assert_eq!(
            e,
            "experiment sweep has 2 runs to resume: r-cut (slow) interrupted, r-lost lost; name one: --resume RUN"
        );
        let none = pick_resume(&runs[..1], "sweep", None).expect_err("none");
        assert!(matches!(none, ResumeError::NoCandidate { .. }), "{none}");
    }

    #[test]
    fn resume_of_a_named_run_refuses_what_cannot_continue() {
        let mut job_rank = ended("r-rank", None, RunStatus::Interrupted, Some("c"));
        job_rank.group = Some("job-1".into());
        let runs = vec![
            ended("r-done", Some("fast"), RunStatus::Succeeded, Some("c1")),
            ended("r-live", None, RunStatus::Running, None),
            ended("r-stop", Some("stopped"), RunStatus::Cancelled, None),
            job_rank,
        ];
        assert_eq!(pick_resume(&runs, "sweep", Some("stopped")).expect("named").run_id, "r-stop");
        for (wanted, why) in [("fast", "--resume-from"), ("r-live", "still reports"), ("r-rank", "managed job")] {
            let e = pick_resume(&runs, "sweep", Some(wanted)).expect_err(wanted).to_string();
            assert!(e.contains(why), "{wanted}: {e}");
        }
        let e = pick_resume(&runs, "sweep", Some("r-")).expect_err("prefix of four").to_string();
        assert!(e.contains("fits 4 runs"), "{e}");
        let e = pick_resume(&runs, "sweep", Some("nope")).expect_err("unknown").to_string();
        assert!(e.starts_with("no run \"nope\" in experiment sweep"), "{e}");
        assert_eq!(find_run(&runs, "sweep", "r-l").expect("unique prefix").run_id, "r-live");
    }

    #[test]
    fn an_earlier_releases_resume_chain_is_one_training() {
        // Format 1: `--resume` made a new record naming the one it resumed.
        let first = ended("r-1", None, RunStatus::Interrupted, Some("r-1-0003"));
        let mut second = ended("r-2", None, RunStatus::Interrupted, Some("r-2-0001"));
        second.resumed_from = Some("r-1".into());
        let runs = vec![second, first];
        let picked = pick_resume(&runs, "sweep", None).expect("the chain's end");
        assert_eq!(picked.run_id, "r-2");
    }

    #[test]
    fn an_earlier_releases_resume_chain_reads_as_one_run_with_its_records_as_attempts() {
        let mut a = ended("r-1", Some("first"), RunStatus::Interrupted, Some("r-1-0003"));
        a.metric_points = 30;
        let mut b = ended("r-2", None, RunStatus::Interrupted, Some("r-2-0002"));
        (b.resumed_from, b.started_ms, b.metric_points) = (Some("r-1".into()), 2_000, 20);
        let mut c = ended("r-3", None, RunStatus::Succeeded, Some("r-3-0001"));
        (c.resumed_from, c.started_ms, c.metric_points) = (Some("r-2".into()), 3_000, 10);
        let mut fork = ended("r-4", None, RunStatus::Succeeded, Some("r-4-0001"));
        (fork.resumed_from, fork.parent_checkpoint) = (Some("r-3".into()), Some("r-3-0001".into()));
        let lone = ended("r-5", None, RunStatus::Failed, None);
        let mut rank = ended("r-6", None, RunStatus::Succeeded, None);
        (rank.resumed_from, rank.group) = (Some("r-5".into()), Some("job-1".into()));
        let folded = fold_legacy_chains(vec![fork.clone(), c, lone.clone(), rank, b, a]);
        assert_eq!(
            folded.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["r-4", "r-5", "r-6", "r-1"],
            "a job's rank run is never folded"
        );
        assert_eq!((&folded[0], &folded[1]), (&fork, &lone), "a fork and a lone run are as stored");
        let one = &folded[3];
        assert_eq!((one.status, one.attempt(), one.metric_points), (RunStatus::Succeeded, 3, 60));
        assert_eq!(
            (one.name.as_deref(), one.started_ms, one.checkpoint.as_deref()),
            (Some("first"), 1_000, Some("r-3-0001"))
        );
        assert_eq!(one.legacy_records, ["r-1", "r-2", "r-3"]);
        let restored: Vec<Option<String>> = one.all_attempts(one.status).into_iter().map(|a| a.restored).collect();
        assert_eq!(
            restored,
            [None, Some("r-1-0003".to_owned()), Some("r-2-0002".to_owned())],
            "each resumed its predecessor's checkpoint"
        );
        // Naming any record of the chain continues its last one.
        let runs = vec![one.clone()];
        assert_eq!(legacy_chain(&runs, &runs[0]).len(), 1);
    }

    #[test]
    fn an_attempt_moves_the_latest_into_the_history() {
        let mut r = ended("r-1", None, RunStatus::Running, Some("r-1-0002"));
        r.exit_code = None;
        r.restored = None;
        r.interruption = Some(Interruption {
            kind: crate::notice::NoticeKind::SpotInterruption,
            reason: "reclaim".into(),
            noticed_ms: 5,
            deadline_ms: None,
            verdict: None,
        });
        let start = AttemptStart {
            host: "h2".into(),
            instance_id: Some("i-2".into()),
            started_ms: 9_000,
            supervisor: None,
            node_rank: None,
            job_attempt: None,
        };
        r.begin_attempt(RunStatus::Lost, start);
        assert_eq!(r.attempt(), 2);
        assert_eq!((r.status, r.host.as_str(), r.interruption.is_none()), (RunStatus::Running, "h2", true));
        assert_eq!(r.checkpoint.as_deref(), Some("r-1-0002"), "the run keeps its checkpoints");
        let all = r.all_attempts(RunStatus::Running);
        assert_eq!(
            all.iter().map(|a| (a.number, a.status)).collect::<Vec<_>>(),
            [(1, RunStatus::Lost), (2, RunStatus::Running)]
        );
        assert_eq!((all[0].started_ms, all[1].started_ms), (1_000, 9_000));
        assert_eq!(all[0].interruption.as_ref().map(|i| i.kind.as_str()), Some("spot-interruption"));
        let json = serde_json::to_value(&all[0]).expect("json");
        assert_eq!(json["interruption"]["kind"], "spot-interruption", "stored as before");
        let back: Run = decode_run(&serde_json::to_string(&r).expect("json")).expect("reads");
        assert_eq!(back, r);
    }

    #[test]
    fn records_of_the_previous_format_read_as_one_attempt_and_newer_ones_are_refused() {
        let v1 = r#"{"experiment_id":"e","run_id":"r","status":"interrupted","command":["x"],"host":"h",
            "instance_id":null,"started_ms":1,"ended_ms":2,"hparams":{"lr":{"value":"0.1","version":3}},
            "exit_code":0,"signal":null,"checkpoint":"r-0001","resumed_from":null,"final_metrics":{},
            "metric_points":4}"#;
        let r = decode_run(v1).expect("format 1 reads");
        assert_eq!((r.format, r.attempt(), r.hparams["lr"].source), (1, 1, ParamSource::Default));
        let newer = v1.replacen('{', r#"{"format":3,"#, 1);
        let e = decode_run(&newer).expect_err("newer").to_string();
        assert!(e.contains("format 3, written by a newer tap"), "{e}");
    }

    #[test]
    fn a_step_computed_again_keeps_the_later_value_and_is_counted() {
        let p = |step, value, ts_ms| MetricPoint { step, name: "loss".into(), value, ts_ms };
        let s = series(vec![p(1, 1.0, 10), p(2, 0.9, 20), p(3, 0.8, 30), p(3, 0.7, 50), p(2, 0.6, 40)]);
        assert_eq!(s.iter().map(|p| (p.step, p.value)).collect::<Vec<_>>(), [(1, 1.0), (2, 0.6), (3, 0.7)]);
        assert_eq!(recomputed_steps(Some(20), Some(24)), 4, "steps 21-24 again");
        assert_eq!(recomputed_steps(Some(20), Some(20)), 0, "the final checkpoint made it");
        assert_eq!(recomputed_steps(None, Some(9)), 9, "from scratch: steps 1-9 again");
        assert_eq!(recomputed_steps(None, None), 0);
    }

    proptest! {
        #[test]
        fn metrics_parser_never_panics(line in "\\PC{0,120}") {
            let _ = parse_metrics_line(&line);
        }

        #[test]
        fn numeric_fields_become_metrics(step in 0u64..1_000_000, v in -1e9f64..1e9, name in "[a-z][a-z0-9_]{0,20}") {
            prop_assume!(name != "step" && name != "checkpoint");
            let line = serde_json::json!({"step": step, name.clone(): v}).to_string();
            prop_assert_eq!(parse_metrics_line(&line), Ok(MetricsLine { step: Some(step), checkpoint: false, time_ms: None, values: vec![(name, v)], skipped: vec![] }));
        }

    }
}
