//! Goodput: how much of the time a training paid for went into steps it kept, and where the
//! rest went. A pure function of what the store holds (each attempt's start, end and why, the
//! steps it reported with their times, its restore and checkpoint costs), so `tap goodput`,
//! `tap runs show` and the simulator (`tap goodput simulate`) compute the same figures the
//! same way.
//!
//! The causes follow Google's ml-goodput-measurement (program start-up, checkpoint save and
//! restore, wasted progress from disruptions, infrastructure recovery), with tap's own
//! records filling in what a TPU log cannot: the restore's measured time, the checkpoint's
//! write time, and the time between two attempts split into waiting for capacity and launch.
//!
//! Every second of an attempt (from its start to its end, each measured by its own node's
//! clock) and every gap between two attempts goes to exactly one cause, so the causes and the
//! productive time add up to the total by construction; a negative gap (clock skew between two
//! nodes, or attempts that overlapped) counts as none.

use serde::{Deserialize, Serialize};

use crate::runs::{Attempt, MetricPoint, NodeIdentity, Run, RunStatus};

/// The outlier bound of the ideal step time: a step interval slower than the median by more
/// than this many scaled median absolute deviations (1.4826 × MAD estimates σ for normal
/// noise) is not a plain step; its excess is a checkpoint save or a stall.
pub const OUTLIER_MADS: f64 = 3.0;
/// 1.4826: the MAD of a normal distribution times this is its standard deviation.
pub const MAD_TO_SIGMA: f64 = 1.4826;
/// A floor on the outlier margin, as a share of the median: perfectly regular steps (MAD 0)
/// would otherwise make every millisecond of jitter an outlier.
pub const OUTLIER_FLOOR: f64 = 0.10;

/// One attempt as the goodput sees it: what ran, when, and what it spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSpan {
    pub number: u32,
    /// Nodes it ran on (a managed job's or a group's ranks; 1 for one `tap run`).
    pub nodes: u32,
    pub host: String,
    pub instance_id: Option<String>,
    /// Where rank 0 ran (None: not on EC2, or not known).
    pub node: Option<NodeIdentity>,
    /// When its time starts to count: the controller's launch of a managed job's attempt, or
    /// the `tap run` process's start.
    pub started_ms: i64,
    /// When the training command started (after the restore); None: never (or not recorded).
    pub command_started_ms: Option<i64>,
    /// How long restoring its checkpoint took.
    pub restore_ms: i64,
    /// When it ended (a live attempt: now; a lost one: its last heartbeat).
    pub ended_ms: i64,
    pub status: RunStatus,
    /// Why it ended, in words (the notice, the job controller's line); None while it runs.
    pub why: Option<String>,
    /// The final checkpoint's verdict, when a notice ended it.
    pub verdict: Option<String>,
    /// The step of the checkpoint it restored (None: it started at step 0).
    pub restored_step: Option<u64>,
    /// Checkpoints the command wrote and the time it spent writing them.
    pub checkpoints: u32,
    pub checkpoint_write_ms: i64,
    /// Each reported step with when it was reported (this attempt's clock), in report order.
    pub steps: Vec<(u64, i64)>,
}

impl AttemptSpan {
    /// A synthetic attempt (tests, examples): one node, its command started at `command_ms`,
    /// steps after `restored` up to `to` one every `step_ms`, ending `tail_ms` after the last;
    /// no checkpoint, status `succeeded`.
    pub fn steady(
        number: u32,
        started_ms: i64,
        command_ms: i64,
        restored: Option<u64>,
        to: u64,
        step_ms: i64,
        tail_ms: i64,
    ) -> AttemptSpan {
        let from = restored.unwrap_or(0);
        let at = |k: u64| command_ms + (k - from) as i64 * step_ms;
        AttemptSpan {
            number,
            nodes: 1,
            host: "h".into(),
            instance_id: None,
            node: None,
            started_ms,
            command_started_ms: Some(command_ms),
            restore_ms: 0,
            ended_ms: at(to.max(from)) + tail_ms,
            status: RunStatus::Succeeded,
            why: None,
            verdict: None,
            restored_step: restored,
            checkpoints: 0,
            checkpoint_write_ms: 0,
            steps: (from + 1..=to).map(|k| (k, at(k))).collect(),
        }
    }
}

/// Seconds and their share of the total.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Share {
    pub s: f64,
    pub pct: f64,
}

/// Infrastructure recovery: from the last step before a disruption to the next attempt's
/// command, less its restore (a cause of its own).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Recovery {
    pub total: Share,
    /// The disrupted attempt's last seconds: from its last step to its end (the notice, the
    /// final checkpoint, the process going away).
    pub stopping: Share,
    /// From one attempt's end to the next one's launch: the job waited for nodes (or nobody
    /// resumed the run).
    pub waiting_for_capacity: Share,
    /// From the launch to the command's start, less the restore: SSM delivering the
    /// command, `tap run` starting, the environment.
    pub boot_launch: Share,
}

/// Where the time that was not productive went.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Badput {
    /// The first attempt's set-up and every attempt's first step beyond the ideal step time
    /// (imports, data loaders, compilation, NCCL's rendezvous).
    pub program_startup: Share,
    /// The command's own checkpoint writes (uploads run beside training and block nothing).
    pub checkpoint_save: Share,
    pub checkpoint_restore: Share,
    /// Steps computed and then lost to a disruption: a later attempt restored an earlier step.
    pub wasted_progress: Share,
    pub infrastructure_recovery: Recovery,
    /// Slow steps beyond the outlier bound that no checkpoint explains, and the time after
    /// the last step of the last attempt.
    pub idle_other: Share,
}

/// The goodput of one training over its attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goodput {
    /// Wall time its attempts ran plus the gaps between them.
    pub total_s: f64,
    pub productive_s: f64,
    /// productive / total, 0 to 100 (0 for a run with no time yet).
    pub goodput_pct: f64,
    pub badput: Badput,
    /// Node-hours its attempts held nodes (what the dollars are of).
    pub node_hours: f64,
    /// The ideal step time (seconds per step): the median over every step interval.
    pub ideal_step_s: Option<f64>,
    /// Steps computed by all attempts, and of those the ones the training kept.
    pub steps_computed: u64,
    pub steps_kept: u64,
    /// Steps computed again after a restart (computed − kept).
    pub wasted_steps: u64,
    /// Periodic checkpoints the command wrote.
    pub checkpoints: u32,
    pub attempts: Vec<AttemptGoodput>,
}

/// One attempt's part of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptGoodput {
    pub number: u32,
    pub nodes: u32,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeIdentity>,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_step: Option<u64>,
    pub productive_s: f64,
    pub wasted_steps: u64,
    /// The intervals of its timeline by cause, for the plot (epoch ms on its own clock).
    pub intervals: Vec<Interval>,
    /// Its step reports (step, epoch ms), for the plot's step curve; and the step after which
    /// its progress was lost (a later attempt restored it; None: kept).
    #[serde(skip)]
    pub reports: Vec<(u64, i64)>,
    #[serde(skip)]
    pub kept_until: Option<u64>,
}

/// What a stretch of time went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Productive,
    ProgramStartup,
    CheckpointSave,
    CheckpointRestore,
    WastedProgress,
    Stopping,
    WaitingForCapacity,
    BootLaunch,
    IdleOther,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Productive => "productive",
            Cause::ProgramStartup => "program start-up",
            Cause::CheckpointSave => "checkpoint save",
            Cause::CheckpointRestore => "checkpoint restore",
            Cause::WastedProgress => "wasted progress",
            Cause::Stopping => "recovery: stopping",
            Cause::WaitingForCapacity => "recovery: waiting for capacity",
            Cause::BootLaunch => "recovery: boot and launch",
            Cause::IdleOther => "idle and other",
        }
    }
}

/// A stretch of an attempt's timeline (or the gap before it) and its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Interval {
    pub cause: Cause,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Milliseconds by cause, summed exactly (integers: the identity holds to the millisecond).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    productive: i64,
    startup: i64,
    save: i64,
    restore: i64,
    wasted: i64,
    stopping: i64,
    waiting: i64,
    launch: i64,
    other: i64,
}

impl Tally {
    fn add(&mut self, cause: Cause, ms: i64) {
        let slot = match cause {
            Cause::Productive => &mut self.productive,
            Cause::ProgramStartup => &mut self.startup,
            Cause::CheckpointSave => &mut self.save,
            Cause::CheckpointRestore => &mut self.restore,
            Cause::WastedProgress => &mut self.wasted,
            Cause::Stopping => &mut self.stopping,
            Cause::WaitingForCapacity => &mut self.waiting,
            Cause::BootLaunch => &mut self.launch,
            Cause::IdleOther => &mut self.other,
        };
        *slot += ms.max(0);
    }

    fn total(&self) -> i64 {
        self.productive
            + self.startup
            + self.save
            + self.restore
            + self.wasted
            + self.stopping
            + self.waiting
            + self.launch
            + self.other
    }
}

/// The ideal step time in ms per step and the outlier bound, from every step interval after
/// each attempt's first (the first carries the start-up): median, and median + max(3 × 1.4826
/// × MAD, 10 % of the median).
pub fn ideal_step(per_step_ms: &[f64]) -> Option<(f64, f64)> {
    let median = median(per_step_ms)?;
    let deviations: Vec<f64> = per_step_ms.iter().map(|x| (x - median).abs()).collect();
    let mad = median_of(deviations).unwrap_or(0.0);
    let margin = (OUTLIER_MADS * MAD_TO_SIGMA * mad).max(OUTLIER_FLOOR * median);
    Some((median, median + margin))
}

fn median(xs: &[f64]) -> Option<f64> {
    median_of(xs.to_vec())
}

fn median_of(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 })
}

/// The steps an attempt reported as intervals: (steps in it, from, to), on its own clock
/// clamped into its span; a step not past the one before (a re-reported or older step) is
/// not a new interval.
fn intervals_of(a: &AttemptSpan) -> Vec<(u64, u64, i64, i64)> {
    let end = a.ended_ms.max(a.started_ms);
    let mut t = a.command_started_ms.unwrap_or(a.started_ms).clamp(a.started_ms, end);
    let mut s = a.restored_step.unwrap_or(0);
    let mut out = Vec::new();
    for &(step, ts) in &a.steps {
        if step <= s {
            continue;
        }
        let to = ts.clamp(t, end);
        out.push((s, step, t, to));
        (s, t) = (step, to);
    }
    out
}

/// The step after which each attempt's progress was lost: the smallest step a later attempt
/// restored (0: one started fresh); None: nothing later went back.
fn kept_until(spans: &[AttemptSpan]) -> Vec<Option<u64>> {
    (0..spans.len()).map(|i| spans[i + 1..].iter().map(|b| b.restored_step.unwrap_or(0)).min()).collect()
}

/// The goodput of a training from its attempts (oldest first).
pub fn goodput(spans: &[AttemptSpan]) -> Goodput {
    let per_step: Vec<f64> = spans
        .iter()
        .flat_map(|a| {
            intervals_of(a).into_iter().skip(1).map(|(from, to, t0, t1)| (t1 - t0) as f64 / (to - from) as f64)
        })
        .collect();
    let ideal = ideal_step(&per_step);
    let kept = kept_until(spans);
    let mut tally = Tally::default();
    let mut attempts = Vec::new();
    let (mut computed, mut kept_steps) = (0u64, 0u64);
    for (i, a) in spans.iter().enumerate() {
        let mut timeline = Timeline::default();
        if i > 0 {
            let prev_end = spans[i - 1].ended_ms;
            timeline.push(Cause::WaitingForCapacity, prev_end, a.started_ms);
        }
        let part = attempt_part(a, i == 0, i + 1 == spans.len(), kept[i], ideal, &mut timeline);
        computed += part.computed;
        kept_steps += part.kept;
        for iv in &timeline.0 {
            tally.add(iv.cause, iv.to_ms - iv.from_ms);
        }
        let productive: i64 =
            timeline.0.iter().filter(|iv| iv.cause == Cause::Productive).map(|iv| iv.to_ms - iv.from_ms).sum();
        attempts.push(AttemptGoodput {
            number: a.number,
            nodes: a.nodes,
            host: a.host.clone(),
            instance_id: a.instance_id.clone(),
            node: a.node.clone(),
            started_ms: a.started_ms,
            ended_ms: a.ended_ms.max(a.started_ms),
            status: a.status,
            why: a.why.clone(),
            verdict: a.verdict.clone(),
            restored_step: a.restored_step,
            first_step: part.first_step,
            last_step: part.last_step,
            productive_s: secs(productive),
            wasted_steps: part.computed - part.kept,
            intervals: timeline.0,
            reports: a.steps.clone(),
            kept_until: kept[i],
        });
    }
    let total = tally.total();
    let share = |ms: i64| Share { s: secs(ms), pct: if total > 0 { 100.0 * ms as f64 / total as f64 } else { 0.0 } };
    let node_hours =
        spans.iter().map(|a| f64::from(a.nodes) * (a.ended_ms - a.started_ms).max(0) as f64).sum::<f64>() / 3_600_000.0;
    Goodput {
        total_s: secs(total),
        productive_s: secs(tally.productive),
        goodput_pct: share(tally.productive).pct,
        badput: Badput {
            program_startup: share(tally.startup),
            checkpoint_save: share(tally.save),
            checkpoint_restore: share(tally.restore),
            wasted_progress: share(tally.wasted),
            infrastructure_recovery: Recovery {
                total: share(tally.stopping + tally.waiting + tally.launch),
                stopping: share(tally.stopping),
                waiting_for_capacity: share(tally.waiting),
                boot_launch: share(tally.launch),
            },
            idle_other: share(tally.other),
        },
        node_hours,
        ideal_step_s: ideal.map(|(m, _)| m / 1000.0),
        steps_computed: computed,
        steps_kept: kept_steps,
        wasted_steps: computed - kept_steps,
        checkpoints: spans.iter().map(|a| a.checkpoints).sum(),
        attempts,
    }
}

/// Several trainings' goodput summed (an experiment's): seconds and steps add up, the
/// shares are of the summed total; no attempts and no ideal step of its own.
pub fn summed(all: &[&Goodput]) -> Goodput {
    let total_s: f64 = all.iter().map(|g| g.total_s).sum();
    let share = |f: &dyn Fn(&Goodput) -> f64| {
        let s: f64 = all.iter().map(|g| f(g)).sum();
        Share { s, pct: if total_s > 0.0 { 100.0 * s / total_s } else { 0.0 } }
    };
    let productive = share(&|g| g.productive_s);
    Goodput {
        total_s,
        productive_s: productive.s,
        goodput_pct: productive.pct,
        badput: Badput {
            program_startup: share(&|g| g.badput.program_startup.s),
            checkpoint_save: share(&|g| g.badput.checkpoint_save.s),
            checkpoint_restore: share(&|g| g.badput.checkpoint_restore.s),
            wasted_progress: share(&|g| g.badput.wasted_progress.s),
            infrastructure_recovery: Recovery {
                total: share(&|g| g.badput.infrastructure_recovery.total.s),
                stopping: share(&|g| g.badput.infrastructure_recovery.stopping.s),
                waiting_for_capacity: share(&|g| g.badput.infrastructure_recovery.waiting_for_capacity.s),
                boot_launch: share(&|g| g.badput.infrastructure_recovery.boot_launch.s),
            },
            idle_other: share(&|g| g.badput.idle_other.s),
        },
        node_hours: all.iter().map(|g| g.node_hours).sum(),
        ideal_step_s: None,
        steps_computed: all.iter().map(|g| g.steps_computed).sum(),
        steps_kept: all.iter().map(|g| g.steps_kept).sum(),
        wasted_steps: all.iter().map(|g| g.wasted_steps).sum(),
        checkpoints: all.iter().map(|g| g.checkpoints).sum(),
        attempts: Vec::new(),
    }
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// An attempt's intervals, in time order; empty and backwards stretches are dropped.
#[derive(Default)]
struct Timeline(Vec<Interval>);

impl Timeline {
    fn push(&mut self, cause: Cause, from_ms: i64, to_ms: i64) {
        if to_ms > from_ms {
            self.0.push(Interval { cause, from_ms, to_ms });
        }
    }

    /// Gives up to `ms` of the `from` stretches, newest first, to `to` (a stretch given in
    /// part is split: its earlier part keeps its cause).
    fn take_back(&mut self, from: Cause, to: Cause, mut ms: i64) {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for mut iv in self.0.drain(..).rev() {
            if ms > 0 && iv.cause == from {
                let take = ms.min(iv.to_ms - iv.from_ms);
                ms -= take;
                let split = iv.to_ms - take;
                out.push(Interval { cause: to, from_ms: split, to_ms: iv.to_ms });
                iv.to_ms = split;
                if iv.to_ms > iv.from_ms {
                    out.push(iv);
                }
            } else {
                out.push(iv);
            }
        }
        out.reverse();
        self.0 = out;
    }
}

struct Part {
    computed: u64,
    kept: u64,
    first_step: Option<u64>,
    last_step: Option<u64>,
}

/// Splits one attempt's span into causes.
fn attempt_part(
    a: &AttemptSpan,
    first: bool,
    last: bool,
    kept_until: Option<u64>,
    ideal: Option<(f64, f64)>,
    timeline: &mut Timeline,
) -> Part {
    let end = a.ended_ms.max(a.started_ms);
    let command = a.command_started_ms.unwrap_or(a.started_ms).clamp(a.started_ms, end);
    let restore_end = (a.started_ms + a.restore_ms.max(0)).min(command);
    // The launch comes first, the restore right before the command starts.
    let launch_end = command - (restore_end - a.started_ms);
    timeline.push(if first { Cause::ProgramStartup } else { Cause::BootLaunch }, a.started_ms, launch_end);
    timeline.push(Cause::CheckpointRestore, launch_end, command);
    let intervals = intervals_of(a);
    // Each stretch's plain step time and its excess over it.
    let split: Vec<(i64, i64)> = intervals
        .iter()
        .enumerate()
        .map(|(k, &(from, to, t0, t1))| {
            let (n, d) = (to - from, t1 - t0);
            let step_ms = match ideal {
                Some((median, bound)) if k == 0 || (d as f64 / n as f64) > bound => {
                    ((median * n as f64).round() as i64).min(d)
                }
                _ => d,
            };
            (step_ms, d - step_ms)
        })
        .collect();
    // The checkpoint writes come out of the slow stretches after the first (the first one's
    // excess is the start-up), then out of the first, then out of the steps.
    let mut save_left = a.checkpoint_write_ms.max(0);
    let mut saved = vec![0i64; split.len()];
    for k in (1..split.len()).chain(0..split.len().min(1)) {
        saved[k] = save_left.min(split[k].1);
        save_left -= saved[k];
    }
    let (mut computed, mut kept) = (0u64, 0u64);
    let mut t = command;
    for (k, &(from, to, t0, t1)) in intervals.iter().enumerate() {
        let n = to - from;
        let (step_ms, excess) = split[k];
        let excess_cause = if k == 0 { Cause::ProgramStartup } else { Cause::IdleOther };
        // Stretch: [excess not saved][save][steps], in that order.
        let mut at = t0;
        timeline.push(excess_cause, at, at + excess - saved[k]);
        at += excess - saved[k];
        timeline.push(Cause::CheckpointSave, at, at + saved[k]);
        let n_kept = kept_until.map_or(n, |k| k.saturating_sub(from).min(n));
        let kept_ms = if n == 0 { 0 } else { step_ms * n_kept as i64 / n as i64 };
        timeline.push(Cause::WastedProgress, t1 - step_ms, t1 - kept_ms);
        timeline.push(Cause::Productive, t1 - kept_ms, t1);
        computed += n;
        kept += n_kept;
        t = t1;
    }
    // A save the slow stretches did not hold was spent inside ordinary steps: it comes out of
    // the productive time, from the newest step back.
    timeline.take_back(Cause::Productive, Cause::CheckpointSave, save_left);
    timeline.push(if last { Cause::IdleOther } else { Cause::Stopping }, t, end);
    Part { computed, kept, first_step: intervals.first().map(|iv| iv.1), last_step: intervals.last().map(|iv| iv.1) }
}

/// A run's attempts as spans: a plain run's own attempts, its steps split among them by
/// when they were reported (`points`: every point of the run's records). A run that is a job
/// (a managed job, or a group run by hand) is read by [`job_spans`].
pub fn run_spans(run: &Run, points: &[MetricPoint], now_ms: i64) -> Vec<AttemptSpan> {
    let attempts = run.all_attempts(run.status);
    let starts: Vec<i64> = attempts.iter().map(|a| a.started_ms).collect();
    let mut steps: Vec<Vec<(u64, i64)>> = vec![Vec::new(); attempts.len()];
    for p in points {
        // The newest attempt that had started when the point was reported.
        let i = starts.iter().rposition(|&s| s <= p.ts_ms).unwrap_or(0);
        steps[i].push((p.step, p.ts_ms));
    }
    attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let next = starts.get(i + 1).copied();
            let last = i + 1 == attempts.len();
            let end = attempt_end(a.ended_ms, a.status, last.then_some(run.heartbeat_ms).flatten(), next, now_ms);
            span_of(a, 1, first_reports(std::mem::take(&mut steps[i])), end)
        })
        .collect()
}

/// A job's (or a group's) attempts as spans: each attempt's time from the job's record (a
/// managed attempt starts when the controller launched it), its steps, restore and checkpoint
/// costs from its rank 0's run (`node_runs`: the experiment's runs; `points_of`: a node run's
/// points by run id).
pub fn job_spans(
    job: &Run,
    node_runs: &[Run],
    points_of: &dyn Fn(&str) -> Vec<MetricPoint>,
    now_ms: i64,
) -> Vec<AttemptSpan> {
    let attempts = job.all_attempts(job.status);
    attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ranks: Vec<&Run> = node_runs
                .iter()
                .filter(|r| r.group.as_deref() == Some(job.run_id.as_str()) && r.job_attempt == Some(a.number))
                .collect();
            let rank0 = ranks.iter().find(|r| r.node_rank == Some(0));
            let nodes = match (&job.job, i + 1 == attempts.len()) {
                (Some(j), true) => j.nodes.len() as u32,
                _ => ranks.len() as u32,
            }
            .max(1);
            let next = attempts.get(i + 1).map(|b| b.started_ms);
            let heartbeat = rank0.and_then(|r| r.heartbeat_ms);
            let ended = a.ended_ms.or_else(|| rank0.and_then(|r| r.ended_ms));
            let end = attempt_end(ended, a.status, heartbeat, next, now_ms);
            let mut span = match rank0 {
                Some(r) => {
                    let own = r.latest_attempt(r.status);
                    let mut s = span_of(&own, nodes, first_reports(steps_of(&points_of(&r.run_id))), end);
                    // The job's attempt began at the launch, before the rank's process.
                    s.started_ms = a.started_ms.min(s.started_ms);
                    s
                }
                None => span_of(a, nodes, Vec::new(), end),
            };
            // How the attempt ended is the job's: the rank a notice reached says why.
            span.number = a.number;
            span.status = a.status;
            if let Some(i) = ranks.iter().filter_map(|r| r.interruption.as_ref()).next() {
                span.why = Some(format!("{}: {}", i.kind, i.reason));
                span.verdict = i.verdict.as_ref().map(crate::commit::Verdict::line);
            }
            span
        })
        .collect()
}

fn steps_of(points: &[MetricPoint]) -> Vec<(u64, i64)> {
    points.iter().map(|p| (p.step, p.ts_ms)).collect()
}

/// Each step once, at its first report, in time order (a line's several metrics are one
/// report). Steps reported at the same millisecond (lines tap read in one go, without a
/// `_timestamp`) are one report of the newest of them: their time is not known apart.
fn first_reports(mut steps: Vec<(u64, i64)>) -> Vec<(u64, i64)> {
    steps.sort_by_key(|&(s, t)| (s, t));
    steps.dedup_by_key(|&mut (s, _)| s);
    steps.sort_by_key(|&(s, t)| (t, s));
    let mut out: Vec<(u64, i64)> = Vec::with_capacity(steps.len());
    for (s, t) in steps {
        match out.last_mut() {
            Some(last) if last.1 == t => last.0 = last.0.max(s),
            _ => out.push((s, t)),
        }
    }
    out
}

/// When an attempt ended: as recorded; a lost one at its last heartbeat; an older one that
/// recorded no end when the next began; a running one now.
fn attempt_end(ended: Option<i64>, status: RunStatus, heartbeat: Option<i64>, next: Option<i64>, now_ms: i64) -> i64 {
    match ended {
        Some(e) => e,
        None if status == RunStatus::Lost => heartbeat.or(next).unwrap_or(now_ms),
        None => next.unwrap_or(now_ms),
    }
}

fn span_of(a: &Attempt, nodes: u32, steps: Vec<(u64, i64)>, ended_ms: i64) -> AttemptSpan {
    AttemptSpan {
        number: a.number,
        nodes,
        host: a.host.clone(),
        instance_id: a.instance_id.clone(),
        node: a.spent.node.clone(),
        started_ms: a.started_ms,
        command_started_ms: a.spent.command_started_ms,
        restore_ms: a.spent.restore_ms,
        ended_ms,
        status: a.status,
        why: a.interruption.as_ref().map(|i| format!("{}: {}", i.kind, i.reason)),
        verdict: a.interruption.as_ref().and_then(|i| i.verdict.as_ref()).map(crate::commit::Verdict::line),
        restored_step: a.restored_step,
        checkpoints: a.spent.checkpoints,
        checkpoint_write_ms: a.spent.checkpoint_write_ms,
        steps,
    }
}

/// Until a pool has a disruption on record, its mean time between interruptions is taken to
/// be this: 2 hours, the short end of what spot GPU pools show (the Bamboo/Parcae traces of
/// p3 spot capacity lose a node every hour or two per few dozen nodes): a checkpoint too
/// often costs δ, one too rare costs the work since it.
pub const ASSUMED_MTBI_S: f64 = 2.0 * 3600.0;
/// Before a checkpoint of the run was measured (δ unknown), the first is due after this.
pub const FIRST_CHECKPOINT_S: f64 = 300.0;

/// The checkpoint cadence a run's measured costs imply (Young/Daly with the restart cost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cadence {
    /// δ: what one periodic checkpoint cost the training (the command's write time; the
    /// upload runs beside training).
    pub checkpoint_s: Option<f64>,
    /// R: what one disruption cost, from the disrupted attempt's end to the next attempt's
    /// command (waiting, launch, restore), averaged; None: no disruption yet (0 is used).
    pub restart_s: Option<f64>,
    /// M: the mean time between disruptions that lose work, of the pool per node over the
    /// training's nodes ([`ASSUMED_MTBI_S`] until the pool has one).
    pub mtbi_s: f64,
    /// M is [`ASSUMED_MTBI_S`]: no loss in this pool on record yet.
    pub mtbi_assumed: bool,
    /// T = δ + sqrt(2(M + R)δ + δ²), and never shorter than a commit takes (the upload must
    /// finish before the next checkpoint); None until δ is measured.
    pub interval_s: Option<f64>,
}

impl Cadence {
    /// The interval `tap run` hands its command: T, or [`FIRST_CHECKPOINT_S`] before δ is
    /// measured.
    pub fn handed_s(&self) -> f64 {
        self.interval_s.unwrap_or(FIRST_CHECKPOINT_S)
    }
}

/// The cadence from δ, R and M as measured (None: not yet), and the time a commit takes.
pub fn cadence_of(
    checkpoint_s: Option<f64>,
    restart_s: Option<f64>,
    mtbi_s: Option<f64>,
    commit_s: Option<f64>,
) -> Cadence {
    let mtbi_assumed = mtbi_s.is_none();
    let m = mtbi_s.unwrap_or(ASSUMED_MTBI_S);
    let interval_s = checkpoint_s
        .and_then(|d| checkpoint_interval_s(d, m, restart_s.unwrap_or(0.0)))
        .map(|t| t.max(commit_s.filter(|c| c.is_finite()).unwrap_or(0.0)));
    Cadence { checkpoint_s, restart_s, mtbi_s: m, mtbi_assumed, interval_s }
}

/// The cadence of a run from its goodput, its pool's mean time between disruptions and the
/// time its commits take.
pub fn cadence(g: &Goodput, mtbi_s: Option<f64>, commit_s: Option<f64>) -> Cadence {
    let checkpoint_s = (g.checkpoints > 0 && g.badput.checkpoint_save.s > 0.0)
        .then(|| g.badput.checkpoint_save.s / f64::from(g.checkpoints));
    let disruptions = g.attempts.len().saturating_sub(1);
    let r = &g.badput.infrastructure_recovery;
    let restart_s = (disruptions > 0)
        .then(|| (r.waiting_for_capacity.s + r.boot_launch.s + g.badput.checkpoint_restore.s) / disruptions as f64);
    cadence_of(checkpoint_s, restart_s, mtbi_s, commit_s)
}

/// δ from a run's attempt records: their checkpoint write time per checkpoint.
pub fn checkpoint_cost_s(attempts: &[Attempt]) -> Option<f64> {
    let n: u32 = attempts.iter().map(|a| a.spent.checkpoints).sum();
    let ms: i64 = attempts.iter().map(|a| a.spent.checkpoint_write_ms).sum();
    (n > 0 && ms > 0).then(|| ms as f64 / 1000.0 / f64::from(n))
}

/// R from a run's attempt records: each later attempt's command start (or start) less the
/// previous attempt's end, averaged (the same span [`cadence`] reads from the goodput).
pub fn restart_cost_s(attempts: &[Attempt]) -> Option<f64> {
    let gaps: Vec<f64> = attempts
        .windows(2)
        .filter_map(|w| {
            let began = w[1].spent.command_started_ms.unwrap_or(w[1].started_ms);
            w[0].ended_ms.map(|e| (began - e).max(0) as f64 / 1000.0)
        })
        .collect();
    (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64)
}

/// The checkpoint interval that maximises goodput (Young/Daly, first order, with the restart
/// cost): T = δ + sqrt(2(M + R)δ + δ²), for a checkpoint that takes δ seconds, a restart
/// that costs R and a mean time between interruptions M. None when an input is not a
/// positive finite number (no checkpoint measured, no interruption seen).
pub fn checkpoint_interval_s(delta_s: f64, mtbi_s: f64, restart_s: f64) -> Option<f64> {
    let ok = |x: f64| x.is_finite() && x > 0.0;
    if !(ok(delta_s) && ok(mtbi_s) && restart_s.is_finite() && restart_s >= 0.0) {
        return None;
    }
    Some(delta_s + (2.0 * (mtbi_s + restart_s) * delta_s + delta_s * delta_s).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_800_000_000_000;

    /// An attempt that starts at `start` s, runs its command `launch` s later, reports steps
    /// `from+1..=to` one per `step` s, and ends `tail` s after the last.
    fn span(number: u32, start: f64, launch: f64, restored: Option<u64>, to: u64, step: f64, tail: f64) -> AttemptSpan {
        let ms = |s: f64| (s * 1000.0).round() as i64;
        AttemptSpan::steady(number, T0 + ms(start), T0 + ms(start + launch), restored, to, ms(step), ms(tail))
    }

    fn assert_adds_up(g: &Goodput) {
        let b = &g.badput;
        let sum = g.productive_s
            + b.program_startup.s
            + b.checkpoint_save.s
            + b.checkpoint_restore.s
            + b.wasted_progress.s
            + b.infrastructure_recovery.total.s
            + b.idle_other.s;
        assert!((sum - g.total_s).abs() < 1e-6, "{sum} != {}", g.total_s);
        let r = &b.infrastructure_recovery;
        assert!((r.stopping.s + r.waiting_for_capacity.s + r.boot_launch.s - r.total.s).abs() < 1e-6);
        assert!((0.0..=100.0).contains(&g.goodput_pct));
        assert!(g.steps_kept <= g.steps_computed);
    }

    #[test]
    fn no_interruption_is_all_productive_but_startup_and_the_tail() {
        let g = goodput(&[span(1, 0.0, 2.0, None, 100, 1.0, 0.5)]);
        assert_adds_up(&g);
        assert_eq!(g.ideal_step_s, Some(1.0));
        assert_eq!((g.steps_computed, g.steps_kept, g.wasted_steps), (100, 100, 0));
        assert!((g.total_s - 102.5).abs() < 1e-9);
        assert!((g.productive_s - 100.0).abs() < 1e-9);
        assert!((g.badput.program_startup.s - 2.0).abs() < 1e-9);
        assert!((g.badput.idle_other.s - 0.5).abs() < 1e-9);
        assert_eq!(g.badput.wasted_progress.s, 0.0);
    }

    #[test]
    fn first_step_excess_is_startup() {
        let mut a = span(1, 0.0, 0.0, None, 10, 1.0, 0.0);
        // The first step took 6 s: 5 s over the ideal.
        for s in &mut a.steps {
            s.1 += 5000;
        }
        a.ended_ms += 5000;
        let g = goodput(&[a]);
        assert_adds_up(&g);
        assert!((g.badput.program_startup.s - 5.0).abs() < 1e-9, "{:?}", g.badput);
        assert!((g.productive_s - 10.0).abs() < 1e-9);
    }

    #[test]
    fn interruption_with_committed_checkpoint_wastes_nothing() {
        // Attempt 1 reaches step 50 and commits it on the notice; attempt 2 restores 50.
        let mut a1 = span(1, 0.0, 1.0, None, 50, 1.0, 4.0);
        a1.status = RunStatus::Interrupted;
        let mut a2 = span(2, 60.0, 1.0, Some(50), 100, 1.0, 0.0);
        a2.restore_ms = 600;
        let g = goodput(&[a1, a2]);
        assert_adds_up(&g);
        assert_eq!(g.wasted_steps, 0);
        assert_eq!(g.steps_kept, 100);
        assert!((g.badput.infrastructure_recovery.stopping.s - 4.0).abs() < 1e-9);
        // 55 s end of attempt 1 → 60 s start of attempt 2.
        assert!((g.badput.infrastructure_recovery.waiting_for_capacity.s - 5.0).abs() < 1e-9);
        assert!((g.badput.checkpoint_restore.s - 0.6).abs() < 1e-9);
        assert!((g.badput.infrastructure_recovery.boot_launch.s - 0.4).abs() < 1e-9);
        assert!((g.productive_s - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_missed_final_checkpoint_counts_the_rerun_steps() {
        // Attempt 1 reaches step 50 but the newest commit is step 40: 10 steps re-run.
        let mut a1 = span(1, 0.0, 1.0, None, 50, 1.0, 2.0);
        a1.status = RunStatus::Interrupted;
        let a2 = span(2, 60.0, 1.0, Some(40), 100, 1.0, 0.0);
        let g = goodput(&[a1, a2]);
        assert_adds_up(&g);
        assert_eq!(g.wasted_steps, 10);
        assert_eq!(g.steps_computed, 110);
        assert_eq!(g.steps_kept, 100);
        assert!((g.badput.wasted_progress.s - 10.0).abs() < 1e-9);
        assert_eq!(g.attempts[0].wasted_steps, 10);
        assert_eq!(g.attempts[1].wasted_steps, 0);
    }

    #[test]
    fn a_fresh_restart_wastes_everything_before_it() {
        let a1 = span(1, 0.0, 0.0, None, 30, 1.0, 0.0);
        let a2 = span(2, 30.0, 0.0, None, 30, 1.0, 0.0);
        let g = goodput(&[a1, a2]);
        assert_adds_up(&g);
        assert_eq!(g.wasted_steps, 30);
        assert!((g.goodput_pct - 50.0).abs() < 1e-9);
    }

    #[test]
    fn two_nodes_count_node_hours_twice() {
        let mut a = span(1, 0.0, 0.0, None, 3600, 1.0, 0.0);
        a.nodes = 2;
        let g = goodput(&[a]);
        assert!((g.node_hours - 2.0).abs() < 1e-9);
        assert!((g.goodput_pct - 100.0).abs() < 1e-9);
    }

    #[test]
    fn overlapping_attempts_and_clock_skew_never_count_negative_time() {
        // Attempt 2's node clock is 30 s behind: it "starts" before attempt 1 ended.
        let mut a1 = span(1, 0.0, 0.0, None, 50, 1.0, 1.0);
        a1.status = RunStatus::Interrupted;
        let a2 = span(2, 21.0, 0.0, Some(50), 100, 1.0, 0.0);
        let g = goodput(&[a1, a2]);
        assert_adds_up(&g);
        assert_eq!(g.badput.infrastructure_recovery.waiting_for_capacity.s, 0.0);
        assert!((g.total_s - 101.0).abs() < 1e-9);
    }

    #[test]
    fn a_lost_attempt_stops_at_its_last_heartbeat() {
        let mut a1 = span(1, 0.0, 0.0, None, 20, 1.0, 25.0);
        a1.status = RunStatus::Lost;
        let g = goodput(&[a1]);
        assert_adds_up(&g);
        assert!((g.badput.idle_other.s - 25.0).abs() < 1e-9);
        assert!((g.productive_s - 20.0).abs() < 1e-9);
    }

    #[test]
    fn checkpoint_writes_come_out_of_the_slow_steps() {
        let mut a = span(1, 0.0, 0.0, None, 20, 1.0, 0.0);
        // Step 10 took 4 s (a 3 s checkpoint write).
        for s in a.steps.iter_mut().filter(|s| s.0 >= 10) {
            s.1 += 3000;
        }
        a.ended_ms += 3000;
        a.checkpoints = 1;
        a.checkpoint_write_ms = 3000;
        let g = goodput(&[a]);
        assert_adds_up(&g);
        assert!((g.badput.checkpoint_save.s - 3.0).abs() < 1e-9, "{:?}", g.badput);
        assert_eq!(g.badput.idle_other.s, 0.0);
        assert!((g.productive_s - 20.0).abs() < 1e-9);
    }

    #[test]
    fn a_checkpoint_write_is_not_taken_for_the_start_up() {
        let mut a = span(1, 0.0, 0.0, None, 20, 1.0, 0.0);
        // The first step took 3 s (start-up) and step 10 took 2 s (a 1 s checkpoint write).
        for s in a.steps.iter_mut() {
            s.1 += if s.0 >= 10 { 3000 } else { 2000 };
        }
        a.ended_ms += 3000;
        a.checkpoint_write_ms = 1000;
        let g = goodput(&[a]);
        assert_adds_up(&g);
        assert!((g.badput.program_startup.s - 2.0).abs() < 1e-9, "{:?}", g.badput);
        assert!((g.badput.checkpoint_save.s - 1.0).abs() < 1e-9, "{:?}", g.badput);
        assert_eq!(g.badput.idle_other.s, 0.0);
    }

    #[test]
    fn a_save_inside_ordinary_steps_comes_out_of_productive_time() {
        let mut a = span(1, 0.0, 0.0, None, 20, 1.0, 0.0);
        a.checkpoint_write_ms = 500;
        let g = goodput(&[a]);
        assert_adds_up(&g);
        assert!((g.badput.checkpoint_save.s - 0.5).abs() < 1e-9);
        assert!((g.productive_s - 19.5).abs() < 1e-9);
    }

    #[test]
    fn the_ideal_step_ignores_outliers() {
        let (median, bound) = ideal_step(&[1000.0, 1010.0, 990.0, 1005.0, 60_000.0]).expect("some");
        assert_eq!(median, 1005.0);
        assert!(bound < 2000.0, "{bound}");
    }

    #[test]
    fn steps_read_in_one_go_are_one_report() {
        assert_eq!(first_reports(vec![(3, 10), (1, 5), (2, 10), (1, 5), (4, 12)]), vec![(1, 5), (3, 10), (4, 12)]);
    }

    #[test]
    fn a_runs_points_go_to_the_attempt_that_reported_them() {
        use crate::runs::{AttemptStart, MetricPoint, Run};
        let mut r = Run::new("e", "r", vec!["x".into()], "h", T0);
        r.ended_ms = Some(T0 + 10_000);
        r.status = RunStatus::Interrupted;
        r.begin_attempt(
            RunStatus::Interrupted,
            AttemptStart {
                host: "h2".into(),
                instance_id: None,
                started_ms: T0 + 20_000,
                supervisor: None,
                node_rank: None,
                job_attempt: None,
            },
        );
        r.restored_step = Some(5);
        r.status = RunStatus::Succeeded;
        r.ended_ms = Some(T0 + 30_000);
        let p = |step: u64, at: i64| MetricPoint { step, name: "loss".into(), value: 1.0, ts_ms: T0 + at };
        let points: Vec<MetricPoint> = (1..=8)
            .map(|k| p(k, k as i64 * 1000))
            .chain((6..=10).map(|k| p(k, 20_000 + (k as i64 - 5) * 1000)))
            .collect();
        let spans = run_spans(&r, &points, T0 + 40_000);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].steps.len(), 8);
        assert_eq!(spans[1].steps.first(), Some(&(6, T0 + 21_000)));
        assert_eq!(spans[1].restored_step, Some(5));
        let g = goodput(&spans);
        assert_adds_up(&g);
        assert_eq!(g.wasted_steps, 3, "steps 6-8 of attempt 1 were computed again");
        assert_eq!(g.steps_kept, 10);
    }

    #[test]
    fn young_daly_interval() {
        // δ = 30 s, M = 3600 s, R = 0: 30 + sqrt(2·3600·30 + 900) = 30 + 465.7.
        let t = checkpoint_interval_s(30.0, 3600.0, 0.0).expect("some");
        assert!((t - 495.7).abs() < 0.1, "{t}");
        assert!(checkpoint_interval_s(30.0, 3600.0, 120.0).expect("some") > t);
        assert_eq!(checkpoint_interval_s(0.0, 3600.0, 0.0), None);
        assert_eq!(checkpoint_interval_s(30.0, f64::INFINITY, 0.0), None);
    }

    #[test]
    fn the_cadence_assumes_m_until_a_pool_has_one_and_waits_for_delta() {
        let c = cadence_of(None, None, None, None);
        assert_eq!((c.interval_s, c.handed_s(), c.mtbi_assumed), (None, FIRST_CHECKPOINT_S, true));
        let c = cadence_of(Some(10.0), None, None, None);
        let t = 10.0 + (2.0 * ASSUMED_MTBI_S * 10.0 + 100.0_f64).sqrt();
        assert!((c.handed_s() - t).abs() < 1e-9);
        // Never shorter than a commit takes.
        assert_eq!(cadence_of(Some(0.001), None, Some(1.0), Some(42.0)).interval_s, Some(42.0));
        let measured = cadence_of(Some(10.0), Some(60.0), Some(3600.0), None);
        assert!(!measured.mtbi_assumed);
        assert!(measured.handed_s() < t, "a shorter M checkpoints more often");
    }

    fn arb_span() -> impl Strategy<Value = AttemptSpan> {
        (
            0i64..100_000,
            0i64..10_000,
            0i64..5_000,
            proptest::option::of(0u64..50),
            proptest::collection::vec((0u64..80, -5_000i64..200_000), 0..30),
            0i64..300_000,
            0i64..20_000,
            1u32..4,
        )
            .prop_map(|(start, launch, restore, restored, mut steps, len, save, nodes)| {
                steps.sort_by_key(|s| s.1);
                AttemptSpan {
                    number: 1,
                    nodes,
                    host: "h".into(),
                    instance_id: None,
                    node: None,
                    started_ms: T0 + start,
                    command_started_ms: Some(T0 + start + launch),
                    restore_ms: restore,
                    ended_ms: T0 + start + len,
                    status: RunStatus::Interrupted,
                    why: None,
                    verdict: None,
                    restored_step: restored,
                    checkpoints: 1,
                    checkpoint_write_ms: save,
                    steps: steps.into_iter().map(|(s, t)| (s, T0 + start + t)).collect(),
                }
            })
    }

    proptest! {
        #[test]
        fn goodput_is_bounded_and_adds_up(mut spans in proptest::collection::vec(arb_span(), 1..5)) {
            for (i, s) in spans.iter_mut().enumerate() {
                s.number = i as u32 + 1;
            }
            let g = goodput(&spans);
            assert_adds_up(&g);
            assert_adds_up(&summed(&[&g, &g]));
            for a in &g.attempts {
                for iv in &a.intervals {
                    prop_assert!(iv.to_ms > iv.from_ms);
                }
            }
        }
    }
}
