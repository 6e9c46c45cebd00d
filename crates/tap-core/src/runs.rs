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
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Lost => "lost",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Interrupted | RunStatus::Lost)
    }
}

/// One hyperparameter as a run used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HparamUse {
    pub value: String,
    /// Version of the parameter in its store (SSM parameter version, or the local one).
    pub version: u64,
}

/// A run record. Step metrics live apart from it (they grow without bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub experiment_id: String,
    pub run_id: String,
    pub status: RunStatus,
    pub command: Vec<String>,
    pub host: String,
    pub instance_id: Option<String>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub hparams: BTreeMap<String, HparamUse>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Id of the latest checkpoint uploaded for this run.
    pub checkpoint: Option<String>,
    /// The run this one resumed from.
    pub resumed_from: Option<String>,
    /// The last value of every metric.
    pub final_metrics: BTreeMap<String, f64>,
    /// Number of metric points recorded.
    pub metric_points: u64,
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
            experiment_id: experiment_id.to_owned(),
            run_id: run_id.to_owned(),
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
            final_metrics: BTreeMap::new(),
            metric_points: 0,
            interruption: None,
            group: None,
            node_rank: None,
            job_attempt: None,
            job: None,
            heartbeat_ms: Some(started_ms),
            supervisor: None,
            forecast: None,
        }
    }
}

/// An interruption notice as a run received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// `spot-interruption`, `gpu-fatal`, or `signal` (SIGUSR1 from someone else).
    pub kind: String,
    pub reason: String,
    /// When the run got it (epoch ms).
    pub noticed_ms: i64,
    /// When the node goes away, when the notice said.
    pub deadline_ms: Option<i64>,
    /// How the final checkpoint fared against EC2's deadline (set when the run ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::commit::Verdict>,
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
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !s.chars().all(|c| c == '.')
}

/// What [`valid_name`] asks for, for messages.
pub const NAME_RULE: &str = "1-128 letters, digits, '_', '.' or '-', not only dots";

/// A new run id: sortable by start time, unique across nodes (`20261127T012437Z-3f9a1c`).
pub fn new_run_id(now_ms: i64, entropy: u32) -> String {
    let secs = now_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::time::civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:06x}", rem / 3600, rem % 3600 / 60, rem % 60, entropy & 0xff_ffff)
}

/// What one line of `TAP_METRICS_FILE` says.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsLine {
    /// `{"step": 10, "loss": 0.31, "accuracy": 0.9}`: every other numeric field is a metric.
    Metrics { step: Option<u64>, values: Vec<(String, f64)> },
    /// `{"checkpoint": true}` (optionally with metrics): a complete checkpoint is in
    /// `TAP_CHECKPOINT_DIR`; tap uploads it.
    Checkpoint { step: Option<u64>, values: Vec<(String, f64)> },
}

/// Parses one line the training process wrote. Errors say what is wrong with the line.
pub fn parse_metrics_line(line: &str) -> Result<MetricsLine, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let step = match obj.get("step") {
        None | Some(serde_json::Value::Null) => None,
        Some(s) => Some(s.as_u64().ok_or("\"step\" must be a non-negative integer")?),
    };
    let checkpoint = match obj.get("checkpoint") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err("\"checkpoint\" must be true or false".to_owned()),
    };
    let mut values = Vec::new();
    for (k, v) in obj {
        if k == "step" || k == "checkpoint" {
            continue;
        }
        if !valid_name(k) {
            return Err(format!("metric name {k:?} must be {NAME_RULE}"));
        }
        let f = v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| format!("metric {k:?} is not a finite number"))?;
        values.push((k.clone(), f));
    }
    Ok(if checkpoint { MetricsLine::Checkpoint { step, values } } else { MetricsLine::Metrics { step, values } })
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
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["a..b", ".hidden", "v1.2", "x-y_z"] {
            assert!(valid_name(good), "{good:?}");
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
    fn metrics_lines() {
        assert_eq!(
            parse_metrics_line(r#"{"step": 3, "loss": 0.5}"#),
            Ok(MetricsLine::Metrics { step: Some(3), values: vec![("loss".into(), 0.5)] })
        );
        assert_eq!(
            parse_metrics_line(r#"{"checkpoint": true, "step": 7}"#),
            Ok(MetricsLine::Checkpoint { step: Some(7), values: vec![] })
        );
        assert!(parse_metrics_line("loss=1").expect_err("rejected").starts_with("not JSON"));
        assert!(parse_metrics_line(r#"{"loss": "high"}"#).expect_err("rejected").contains("not a finite number"));
        assert!(parse_metrics_line(r#"{"step": -1}"#).expect_err("rejected").contains("step"));
        assert!(parse_metrics_line(r#"{"a b": 1}"#).expect_err("rejected").contains("metric name"));
        assert!(parse_metrics_line("[1]").expect_err("rejected").contains("object"));
    }

    #[test]
    fn run_round_trips_as_json() {
        let run = Run {
            hparams: [("lr".to_owned(), HparamUse { value: "0.1".into(), version: 2 })].into(),
            ..Run::new("mnist", &new_run_id(0, 1), vec!["python3".into(), "train.py".into()], "h", 5)
        };
        let text = serde_json::to_string(&run).expect("json");
        assert!(text.contains("\"status\":\"running\""));
        assert_eq!(serde_json::from_str::<Run>(&text).expect("parses"), run);
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
            prop_assert_eq!(parse_metrics_line(&line), Ok(MetricsLine::Metrics { step: Some(step), values: vec![(name, v)] }));
        }

    }
}
