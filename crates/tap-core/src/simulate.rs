//! `tap goodput simulate`: a preemption trace replayed against the job controller's own
//! decisions ([`crate::jobs`]: `schedule`, `step`, `begin_attempt`, `watch`, `end_attempt`),
//! driven in virtual time, with a training of known costs on top; the attempts it produces go
//! through [`crate::goodput::goodput`], the report `tap goodput` prints for a real run.
//!
//! The trace is the Bamboo/Parcae format: one event a line, `ms since start,add|remove,node`.
//! An `add` is a node joining the fleet (healthy `boot` later); a `remove` is its spot reclaim,
//! announced by EC2's two-minute notice: with the notice honoured the attempt checkpoints at
//! the notice and nothing is lost; otherwise the work since the last periodic checkpoint is.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::commit::EC2_NOTICE_WINDOW_MS;
use crate::fleet::{InstanceState, NodeInfo};
use crate::goodput::{AttemptSpan, Goodput};
use crate::jobs::{self, JobRecord, JobSpec, Placement, RankRun, RankView, Step, Watch};
use crate::notice::NoticeKind;
use crate::runs::RunStatus;

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub at_ms: i64,
    pub add: bool,
    pub node: String,
}

/// Most lines a trace may have (a 1,000-node, 7-day trace has tens of thousands).
pub const MAX_TRACE_LINES: usize = 10_000_000;

/// A trace from its text: events in time order (lines of one time keep their order). A line
/// that is not `ms,add|remove,node` is refused with its number; blank lines and `#` comments
/// are skipped.
pub fn parse_trace(text: &str) -> Result<Vec<TraceEvent>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if out.len() >= MAX_TRACE_LINES {
            return Err(format!("more than {MAX_TRACE_LINES} events"));
        }
        let bad =
            |why: &str| format!("line {}: {why} (want `ms,add|remove,node`): {}", i + 1, crate::text::clip(line, 80));
        let mut parts = line.split(',').map(str::trim);
        let (Some(ms), Some(what), Some(node), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not three fields"));
        };
        let at_ms: i64 = ms.parse().map_err(|_| bad("the time is not a whole number of milliseconds"))?;
        if at_ms < 0 {
            return Err(bad("a negative time"));
        }
        let add = match what {
            "add" => true,
            "remove" => false,
            _ => return Err(bad("the event is neither add nor remove")),
        };
        if node.is_empty() {
            return Err(bad("no node name"));
        }
        out.push(TraceEvent { at_ms, add, node: node.to_owned() });
    }
    if out.is_empty() {
        return Err("no events".into());
    }
    out.sort_by_key(|e| e.at_ms);
    Ok(out)
}

/// The training and the fleet the trace is replayed with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// The job's nodes (every attempt needs this many healthy nodes in one AZ).
    pub nodes: u32,
    pub step_ms: i64,
    /// δ: one periodic checkpoint's pause of training.
    pub checkpoint_ms: i64,
    pub restore_ms: i64,
    /// From a node's `add` to its agent reporting healthy.
    pub boot_ms: i64,
    /// From an attempt's launch to its command's start, before the restore (SSM delivering
    /// the command, `tap run` starting).
    pub launch_ms: i64,
    /// The command's own start-up before its first step (imports, data, compilation).
    pub startup_ms: i64,
    /// A finished training's end after its last step (its final save, the exit).
    pub shutdown_ms: i64,
    /// From an honoured notice to its attempt's end: the final checkpoint and the exit (None:
    /// the checkpoint cost).
    pub stop_ms: Option<i64>,
    /// Share of reclaims whose notice is honoured (the final checkpoint commits), 0 to 1.
    pub notice_honoured: f64,
    /// Training time between periodic checkpoints.
    pub interval_ms: i64,
    /// Stop once the training has this many steps (None: at the trace's last event).
    pub total_steps: Option<u64>,
}

/// What replaying a trace gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub interval_s: f64,
    pub goodput: Goodput,
    /// When the training finished (ms since the trace's start), if it did.
    pub finished_ms: Option<i64>,
    /// From the trace's start to the first attempt's launch: no node paid for the job yet.
    pub queued_s: f64,
    pub reclaims_hit: u32,
}

/// The running attempt: when it computes from, on which nodes, from which step.
struct Running {
    nodes: Vec<String>,
    launched_ms: i64,
    /// When the command started (after the launch and the restore).
    command_ms: i64,
    compute_from_ms: i64,
    base: u64,
    restore_ms: i64,
}

/// Steps of one cycle (a checkpoint every `k` steps) and the cycle's length.
fn cycle(p: &Params) -> (u64, i64) {
    let k = (p.interval_ms / p.step_ms.max(1)).max(1) as u64;
    (k, k as i64 * p.step_ms + p.checkpoint_ms)
}

/// Steps an attempt that computes from `from` has finished by `t`, and the step its newest
/// periodic checkpoint (committed at the end of its pause) holds.
fn progress(p: &Params, from: i64, t: i64) -> (u64, u64) {
    if t <= from {
        return (0, 0);
    }
    let (k, len) = cycle(p);
    let el = t - from;
    let full = (el / len) as u64;
    let rem = el % len;
    let steps = full * k + ((rem / p.step_ms.max(1)) as u64).min(k);
    (steps, full * k)
}

/// When step `j` (1-based, of this attempt) finished.
fn step_time(p: &Params, from: i64, j: u64) -> i64 {
    let (k, len) = cycle(p);
    let m = (j - 1) / k;
    from + m as i64 * len + ((j - 1) % k + 1) as i64 * p.step_ms
}

/// Reports kept per attempt at most: steps are reported in strides beyond it (the checkpoint
/// steps always).
const MAX_REPORTS: u64 = 20_000;

fn reports(p: &Params, from: i64, base: u64, steps: u64) -> Vec<(u64, i64)> {
    let (k, _) = cycle(p);
    let stride = (steps / MAX_REPORTS).max(1);
    let mut out = Vec::new();
    let mut j = 1;
    while j <= steps {
        out.push((base + j, step_time(p, from, j)));
        // The next stride, but never past a checkpoint boundary and the step after it.
        let next_ckpt = (j / k + 1) * k;
        j = if j % k == 0 { j + 1 } else { (j + stride).min(next_ckpt) };
    }
    if out.last().is_some_and(|l| l.0 != base + steps) && steps > 0 {
        out.push((base + steps, step_time(p, from, steps)));
    }
    out
}

/// The fleet as the controller sees it, kept up to date in place (a 1,000-node fleet is not
/// rebuilt at every decision): each node's `NodeInfo`, and where it is in the list.
#[derive(Default)]
struct Fleet {
    nodes: Vec<NodeInfo>,
    at: BTreeMap<String, usize>,
}

impl Fleet {
    fn add(&mut self, id: &str, t: i64) {
        if self.at.contains_key(id) {
            return;
        }
        self.at.insert(id.to_owned(), self.nodes.len());
        self.nodes.push(NodeInfo {
            instance_id: id.to_owned(),
            instance_type: None,
            availability_zone: Some("sim-az".into()),
            private_ip: Some("10.0.0.1".into()),
            state: InstanceState::Pending,
            launch_time_ms: Some(t),
            heartbeat_age_s: None,
            unhealthy: Some(false),
            interrupting: Some(false),
        });
    }

    fn remove(&mut self, id: &str) {
        let Some(i) = self.at.remove(id) else { return };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.at.insert(moved.instance_id.clone(), i);
        }
    }

    fn notice(&mut self, id: &str) {
        if let Some(&i) = self.at.get(id) {
            self.nodes[i].interrupting = Some(true);
        }
    }

    /// The nodes at `t`: those added `boot_ms` ago or more are running and reporting.
    fn at_time(&mut self, boot_ms: i64, t: i64) -> &[NodeInfo] {
        for n in &mut self.nodes {
            if n.state == InstanceState::Pending && n.launch_time_ms.is_some_and(|a| t >= a + boot_ms) {
                n.state = InstanceState::Running;
                n.heartbeat_age_s = Some(0);
            }
        }
        &self.nodes
    }
}

fn spec(p: &Params) -> JobSpec {
    JobSpec {
        experiment: "simulate".into(),
        command: vec!["train".into()],
        nodes: p.nodes,
        user: "sim".into(),
        env: BTreeMap::new(),
        master_port: 29500,
        restarts: u32::MAX,
        retry_on_error: 0,
        timeout_s: u32::MAX,
        resume: false,
        wait_s: u32::MAX,
        allow_cross_az: false,
        tags: BTreeMap::new(),
    }
}

/// Whether the `n`-th reclaim (1-based) that hits the job has its notice honoured: spread
/// evenly, so a share F honours ⌊nF⌋ of the first n.
fn honoured(n: u32, share: f64) -> bool {
    let f = share.clamp(0.0, 1.0);
    (f64::from(n) * f).floor() > (f64::from(n - 1) * f).floor()
}

/// Replays `trace` with `p`.
pub fn replay(trace: &[TraceEvent], p: &Params) -> Replay {
    let mut sim = Sim::new(trace, p);
    while let Some(t) = sim.times.pop_first() {
        if sim.finished(t) {
            break;
        }
        sim.notices(t);
        sim.events(t);
        if sim.job.state.is_final() || !sim.controller(t) {
            break;
        }
    }
    sim.into_replay()
}

/// The replay's state: the job as the controller records it, the fleet, the training.
struct Sim<'a> {
    p: &'a Params,
    trace: &'a [TraceEvent],
    /// Removes by time, for the notices two minutes ahead of them.
    removes: BTreeSet<(i64, &'a str)>,
    next_event: usize,
    /// Times to decide at: every event, every node's ready time, each notice (two minutes
    /// before its remove), and each attempt's end (added as they come).
    times: BTreeSet<i64>,
    job: JobRecord,
    fleet: Fleet,
    /// Nodes EC2 has given notice to (unfit for a launch), and those among them whose notice
    /// the training does not honour (it loses the work since its checkpoint at the removal).
    noticed: BTreeSet<String>,
    doomed: BTreeSet<String>,
    /// The step the newest committed checkpoint holds.
    committed: u64,
    running: Option<Running>,
    spans: Vec<AttemptSpan>,
    hits: u32,
    finished_ms: Option<i64>,
    first_launch: Option<i64>,
    /// No relaunch before the last attempt's end.
    not_before: i64,
}

impl<'a> Sim<'a> {
    fn new(trace: &'a [TraceEvent], p: &'a Params) -> Sim<'a> {
        let mut times = BTreeSet::new();
        for e in trace {
            times.insert(e.at_ms);
            times.insert(if e.add { e.at_ms + p.boot_ms } else { (e.at_ms - EC2_NOTICE_WINDOW_MS).max(0) });
        }
        Sim {
            p,
            trace,
            removes: trace.iter().filter(|e| !e.add).map(|e| (e.at_ms, e.node.as_str())).collect(),
            next_event: 0,
            times,
            job: JobRecord::new("sim", spec(p), "tap goodput simulate", 0),
            fleet: Fleet::default(),
            noticed: BTreeSet::new(),
            doomed: BTreeSet::new(),
            committed: 0,
            running: None,
            spans: Vec::new(),
            hits: 0,
            finished_ms: None,
            first_launch: None,
            not_before: 0,
        }
    }

    /// A training that finished before `t` ends its attempt there (and the replay).
    fn finished(&mut self, t: i64) -> bool {
        let p = self.p;
        let (Some(r), Some(total)) = (&self.running, p.total_steps) else { return false };
        let need = total.saturating_sub(r.base).max(1);
        let done_at = step_time(p, r.compute_from_ms, need);
        if done_at > t {
            return false;
        }
        let Some(r) = self.running.take() else { return false };
        let end_ms = done_at + p.shutdown_ms;
        self.spans.push(span_of(p, &r, need, end_ms, RunStatus::Succeeded, None));
        jobs::end_attempt(&mut self.job, jobs::AttemptEnd::Succeeded, end_ms);
        self.finished_ms = Some(end_ms);
        true
    }

    /// EC2's notices at `t`, two minutes ahead of each remove: an honoured one ends the
    /// attempt it hits with a final checkpoint; another dooms it to lose its node at the remove.
    fn notices(&mut self, t: i64) {
        let window = (t, "")..=(t + EC2_NOTICE_WINDOW_MS, "\u{10ffff}");
        let hit: Vec<&str> = self.removes.range(window).map(|&(_, n)| n).collect();
        for node in hit {
            if !self.noticed.insert(node.to_owned()) {
                continue;
            }
            self.fleet.notice(node);
            if !self.running.as_ref().is_some_and(|r| r.nodes.iter().any(|n| n == node)) {
                continue;
            }
            self.hits += 1;
            if !honoured(self.hits, self.p.notice_honoured) {
                self.doomed.insert(node.to_owned());
                continue;
            }
            let Some(r) = self.running.take() else { continue };
            let steps = progress(self.p, r.compute_from_ms, t).0;
            self.committed = r.base + steps;
            let end_ms = t + self.p.stop_ms.unwrap_or(self.p.checkpoint_ms);
            end(&mut self.job, &mut self.spans, self.p, &r, node, true, steps, end_ms);
            self.not_before = end_ms;
            self.times.insert(end_ms);
        }
    }

    /// The trace's events at `t`; a doomed node's removal ends its attempt with the work since
    /// the periodic checkpoint lost.
    fn events(&mut self, t: i64) {
        while self.next_event < self.trace.len() && self.trace[self.next_event].at_ms <= t {
            let e = &self.trace[self.next_event];
            self.next_event += 1;
            if e.add {
                self.fleet.add(&e.node, e.at_ms);
                continue;
            }
            self.fleet.remove(&e.node);
            self.noticed.remove(&e.node);
            let was_doomed = self.doomed.remove(&e.node);
            if !self.running.as_ref().is_some_and(|r| r.nodes.contains(&e.node)) {
                continue;
            }
            if !was_doomed {
                self.hits += 1; // a remove without a notice in time (at the trace's start)
            }
            let Some(r) = self.running.take() else { continue };
            let (steps, periodic) = progress(self.p, r.compute_from_ms, t);
            self.committed = r.base + periodic;
            end(&mut self.job, &mut self.spans, self.p, &r, &e.node, false, steps, t);
            self.not_before = t;
        }
    }

    /// The controller's turn: a job that needs nodes gets them once the fleet has them.
    /// False: the job failed (the replay ends).
    fn controller(&mut self, t: i64) -> bool {
        let p = self.p;
        if !self.job.state.needs_nodes() || t < self.not_before {
            return true;
        }
        let nodes = self.fleet.at_time(p.boot_ms, t);
        let sched = jobs::schedule(std::slice::from_ref(&self.job), nodes);
        let placement: Option<&Placement> = sched.first().map(|(_, pl)| pl);
        match jobs::step(&self.job, placement, t) {
            Step::Launch { nodes: chosen, .. } => {
                let committed = self.committed;
                let resumed = (committed > 0).then(|| format!("step {committed}"));
                jobs::begin_attempt(&mut self.job, &chosen, resumed, "simulate", t);
                let sent: Vec<(String, String)> =
                    chosen.iter().map(|n| (n.instance_id.clone(), format!("cmd-{t}"))).collect();
                jobs::commands_sent(&mut self.job, &sent, t);
                // The decisions read the current attempt and the one before it: older ones
                // (256 nodes each, thousands of them) are dropped.
                let old = self.job.attempts.len().saturating_sub(2);
                self.job.attempts.drain(..old);
                let restore_ms = if committed > 0 { p.restore_ms } else { 0 };
                self.first_launch.get_or_insert(t);
                let command_ms = t + p.launch_ms + restore_ms;
                let compute_from_ms = command_ms + p.startup_ms;
                self.running = Some(Running {
                    nodes: chosen.into_iter().map(|n| n.instance_id).collect(),
                    launched_ms: t,
                    command_ms,
                    compute_from_ms,
                    base: committed,
                    restore_ms,
                });
                if let Some(total) = p.total_steps {
                    self.times.insert(step_time(p, compute_from_ms, total.saturating_sub(committed).max(1)));
                }
                true
            }
            Step::Wait(why) => {
                self.job.waiting = Some(why);
                true
            }
            Step::Fail(_) => false,
            _ => true,
        }
    }

    /// The replay: an attempt still running ends with the trace.
    fn into_replay(mut self) -> Replay {
        let p = self.p;
        let end_of_trace = self.trace.last().map_or(0, |e| e.at_ms);
        if let Some(r) = self.running.take() {
            let end = end_of_trace.max(r.launched_ms);
            let mut steps = progress(p, r.compute_from_ms, end).0;
            if let Some(total) = p.total_steps {
                steps = steps.min(total.saturating_sub(r.base));
            }
            self.spans.push(span_of(p, &r, steps, end, RunStatus::Running, None));
        }
        for (i, s) in self.spans.iter_mut().enumerate() {
            s.number = i as u32 + 1;
        }
        Replay {
            interval_s: p.interval_ms as f64 / 1000.0,
            goodput: crate::goodput::goodput(&self.spans),
            finished_ms: self.finished_ms,
            queued_s: self.first_launch.unwrap_or(end_of_trace) as f64 / 1000.0,
            reclaims_hit: self.hits,
        }
    }
}

/// Ends the running attempt `r` as the controller's watch decides from its ranks: `node`
/// reclaimed, with its notice honoured (`kept`: its run interrupted after a final checkpoint)
/// or not (the node gone with the run).
#[allow(clippy::too_many_arguments)]
fn end(
    job: &mut JobRecord,
    spans: &mut Vec<AttemptSpan>,
    p: &Params,
    r: &Running,
    node: &str,
    kept: bool,
    steps: u64,
    end_ms: i64,
) {
    let views: Vec<RankView> = r
        .nodes
        .iter()
        .enumerate()
        .map(|(rank, n)| {
            let hit = n == node;
            RankView {
                rank: rank as u32,
                instance_id: n.clone(),
                run: Some(RankRun {
                    status: if hit && kept { RunStatus::Interrupted } else { RunStatus::Running },
                    exit_code: None,
                    signal: None,
                    interruption: (hit && kept)
                        .then(|| (NoticeKind::SpotInterruption, "spot reclaim (simulated)".into())),
                }),
                command: None,
                command_final_since_ms: None,
                node_gone: (hit && !kept).then(|| "instance is terminated".into()),
            }
        })
        .collect();
    let (end, why) = match jobs::watch(&views, end_ms) {
        Watch::Ended { end, .. } => {
            let why = end.describe();
            (end, why)
        }
        // The watch always ends an attempt with a reclaimed rank; should it not, the reclaim
        // is recorded as a lost node all the same.
        _ => (
            jobs::AttemptEnd::NodeLost { rank: 0, instance_id: node.to_owned(), detail: "reclaimed".into() },
            format!("{node} reclaimed"),
        ),
    };
    let status = if kept { RunStatus::Interrupted } else { RunStatus::Lost };
    spans.push(span_of(p, r, steps, end_ms, status, Some(why)));
    jobs::end_attempt(job, end, end_ms);
}

fn span_of(p: &Params, r: &Running, steps: u64, end_ms: i64, status: RunStatus, why: Option<String>) -> AttemptSpan {
    let (k, _) = cycle(p);
    // Periodic checkpoints it finished (the pause after every k steps, but not after its last).
    let checkpoints = if steps == 0 { 0 } else { ((steps - 1) / k) as u32 };
    AttemptSpan {
        number: 0,
        nodes: p.nodes,
        host: "simulated".into(),
        instance_id: None,
        node: None,
        started_ms: r.launched_ms,
        command_started_ms: Some(r.command_ms),
        restore_ms: r.restore_ms,
        ended_ms: end_ms,
        status,
        why,
        verdict: None,
        restored_step: (r.base > 0).then_some(r.base),
        checkpoints,
        checkpoint_write_ms: i64::from(checkpoints) * p.checkpoint_ms,
        steps: reports(p, r.compute_from_ms, r.base, steps),
    }
}

/// Replays the trace at each interval (ms) of `intervals` and returns every replay, in that
/// order.
pub fn sweep(trace: &[TraceEvent], p: &Params, intervals: &[i64]) -> Vec<Replay> {
    intervals.iter().map(|&i| replay(trace, &Params { interval_ms: i, ..p.clone() })).collect()
}

/// The intervals a sweep tries: `n` steps, geometric, from one step (or δ) to 24 hours.
pub fn sweep_intervals(p: &Params, n: usize) -> Vec<i64> {
    let lo = p.step_ms.max(p.checkpoint_ms).max(1) as f64;
    let hi = 86_400_000f64.max(lo * 2.0);
    let n = n.max(2);
    let mut v: Vec<i64> = (0..n).map(|i| (lo * (hi / lo).powf(i as f64 / (n - 1) as f64)).round() as i64).collect();
    v.dedup();
    v
}

/// The trace's mean time between the removals of a node (node-hours held per removal), M for
/// Young/Daly; None without a removal.
pub fn trace_mtbi_s(trace: &[TraceEvent]) -> Option<f64> {
    let end = trace.last()?.at_ms;
    let mut since: BTreeMap<&str, i64> = BTreeMap::new();
    let (mut held_ms, mut removals) = (0i64, 0u32);
    for e in trace {
        if e.add {
            since.insert(&e.node, e.at_ms);
        } else if let Some(s) = since.remove(e.node.as_str()) {
            held_ms += e.at_ms - s;
            removals += 1;
        }
    }
    held_ms += since.values().map(|s| end - s).sum::<i64>();
    (removals > 0).then(|| held_ms as f64 / 1000.0 / f64::from(removals))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const MIN: i64 = 60 * S;

    fn params(nodes: u32) -> Params {
        Params {
            nodes,
            step_ms: S,
            checkpoint_ms: 10 * S,
            restore_ms: 30 * S,
            boot_ms: 2 * MIN,
            launch_ms: 0,
            startup_ms: 0,
            shutdown_ms: 0,
            stop_ms: None,
            notice_honoured: 1.0,
            interval_ms: 10 * MIN,
            total_steps: None,
        }
    }

    fn ev(at_ms: i64, add: bool, node: &str) -> TraceEvent {
        TraceEvent { at_ms, add, node: node.into() }
    }

    #[test]
    fn the_trace_format_is_read_and_bad_lines_named() {
        let t = parse_trace("# c\n600,add,n2\n0,add,n1\n\n900,remove,n1\n").expect("trace");
        assert_eq!(t, vec![ev(0, true, "n1"), ev(600, true, "n2"), ev(900, false, "n1")]);
        for (bad, why) in [
            ("1,add", "line 1: not three fields"),
            ("x,add,n", "line 1: the time is not a whole number"),
            ("1,join,n", "neither add nor remove"),
            ("-5,add,n", "a negative time"),
            ("1,add,", "no node name"),
            ("", "no events"),
        ] {
            let e = parse_trace(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn no_reclaim_is_one_attempt_that_checkpoints_on_its_cadence() {
        let trace = vec![ev(0, true, "a"), ev(0, true, "b"), ev(3600 * S, true, "c")];
        let r = replay(&trace, &params(2));
        let g = &r.goodput;
        assert_eq!(g.attempts.len(), 1, "{g:?}");
        assert_eq!(r.queued_s, 120.0, "the nodes booted first");
        // 58 minutes of training: cycles of 600 steps + a 10 s checkpoint.
        assert!(g.goodput_pct > 95.0 && g.goodput_pct < 100.0, "{}", g.goodput_pct);
        assert_eq!(g.wasted_steps, 0);
        assert!(g.badput.checkpoint_save.s >= 50.0, "{:?}", g.badput);
    }

    #[test]
    fn an_honoured_notice_loses_nothing_and_a_missed_one_loses_the_work_since_the_checkpoint() {
        let trace = vec![
            ev(0, true, "a"),
            ev(0, true, "b"),
            ev(0, true, "c"),
            ev(45 * MIN, false, "a"),
            ev(4 * 3600 * S, true, "d"),
        ];
        let honoured = replay(&trace, &params(2));
        assert_eq!(honoured.reclaims_hit, 1);
        assert_eq!(honoured.goodput.attempts.len(), 2, "relaunched on b and c");
        assert_eq!(honoured.goodput.wasted_steps, 0);
        let missed = replay(&trace, &Params { notice_honoured: 0.0, ..params(2) });
        // Lost at 45 min: the last periodic checkpoint held step ~2580 of ~2660.
        let w = missed.goodput.wasted_steps;
        assert!(w > 0 && w <= 600, "{w}");
        assert!(missed.goodput.goodput_pct < honoured.goodput.goodput_pct);
        let a = &missed.goodput.attempts;
        assert_eq!(a[0].status, RunStatus::Lost);
        assert!(a[0].why.as_deref().is_some_and(|w| w.contains("lost")), "{:?}", a[0].why);
        assert_eq!(a[1].restored_step, Some(a[0].last_step.expect("steps") - w));
    }

    #[test]
    fn a_relaunch_waits_for_capacity_and_the_wait_is_badput() {
        // Two nodes, a job of two: after the reclaim it waits for d's boot.
        let trace = vec![
            ev(0, true, "a"),
            ev(0, true, "b"),
            ev(30 * MIN, false, "a"),
            ev(40 * MIN, true, "d"),
            ev(3 * 3600 * S, true, "e"),
        ];
        let r = replay(&trace, &params(2));
        let g = &r.goodput;
        assert_eq!(g.attempts.len(), 2);
        let waited = g.badput.infrastructure_recovery.waiting_for_capacity.s;
        // Attempt 1 ends at the notice + δ (28 min + 10 s); d is healthy at 42 min.
        assert!((waited - (42.0 * 60.0 - 28.0 * 60.0 - 10.0)).abs() < 1.0, "{waited}");
    }

    #[test]
    fn a_training_of_known_length_finishes_and_stops() {
        let trace = vec![ev(0, true, "a"), ev(10 * 3600 * S, true, "b")];
        let r = replay(&trace, &Params { total_steps: Some(1000), ..params(1) });
        assert_eq!(r.goodput.steps_kept, 1000);
        // 1000 steps + one checkpoint at 600 (none after the last): 1010 s after boot.
        assert_eq!(r.finished_ms, Some(2 * MIN + 1010 * S));
    }

    /// The measured g4dn trace (Bamboo, MIT; tools/bench-simulate/): read whole, and Young/Daly's
    /// interval from its own M lands where the sweep's best goodput is.
    #[test]
    fn the_measured_trace_replays_and_young_daly_is_near_the_best() {
        let trace = parse_trace(include_str!("../../../tools/bench-simulate/g4dn-trace.csv")).expect("trace");
        assert_eq!((trace.len(), trace.iter().filter(|e| !e.add).count()), (153, 74));
        let node_m = trace_mtbi_s(&trace).expect("removals");
        assert!((6000.0..7000.0).contains(&node_m), "{node_m}");
        let p = Params { notice_honoured: 0.0, checkpoint_ms: 30 * S, restore_ms: MIN, ..params(8) };
        let yd = crate::goodput::checkpoint_interval_s(30.0, node_m / 8.0, 180.0).expect("T");
        let at_yd = replay(&trace, &Params { interval_ms: (yd * 1000.0) as i64, ..p.clone() });
        let sweep = sweep(&trace, &p, &sweep_intervals(&p, 24));
        let best = sweep.iter().map(|r| r.goodput.goodput_pct).fold(0.0, f64::max);
        assert!(
            best - at_yd.goodput.goodput_pct < 1.0,
            "Young/Daly {} against the best {best}",
            at_yd.goodput.goodput_pct
        );
        assert!(at_yd.goodput.attempts.len() > 10 && at_yd.goodput.wasted_steps > 0);
    }

    #[test]
    fn the_sweep_finds_an_interval_near_young_daly() {
        // A reclaim every ~30 minutes of a 4-node job.
        let mut trace: Vec<TraceEvent> = (0..8).map(|i| ev(0, true, &format!("n{i}"))).collect();
        for k in 1..40 {
            let t = k * 30 * MIN;
            trace.push(ev(t, false, &format!("n{}", k % 8)));
            trace.push(ev(t + MIN, true, &format!("n{}", k % 8)));
        }
        let p = Params { notice_honoured: 0.0, ..params(4) };
        let intervals = sweep_intervals(&p, 16);
        let replays = sweep(&trace, &p, &intervals);
        let best = replays.iter().max_by(|a, b| a.goodput.goodput_pct.total_cmp(&b.goodput.goodput_pct)).expect("best");
        // Every replay is a goodput that adds up, and too rare a checkpoint loses.
        assert!(best.goodput.goodput_pct > replays.last().expect("last").goodput.goodput_pct);
        assert!(best.interval_s > 60.0 && best.interval_s < 3600.0, "{}", best.interval_s);
        assert!(trace_mtbi_s(&trace).is_some());
    }
}
