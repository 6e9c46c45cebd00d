//! The opt-in rule "scale the fleet to zero once every GPU has idled for a while" (tap-agent's
//! `[idle]` section), as pure code: what the fleet looks like in, a verdict out.
//!
//! The rule is deliberately hard to satisfy, because its mistake is expensive (a job killed)
//! while the opposite mistake costs one more check interval of spot time:
//! - every running node must have reported GPU utilization for most of the window
//!   ([`COVERAGE`]): a node that just came up, or whose agent went quiet, is not known to idle;
//! - every reported minute of every node must be below the threshold (not the average: an
//!   evaluation burst every half hour is work);
//! - a pending node means the fleet is growing: someone wants it;
//! - only one node acts, the oldest running one (the same on every node, so the fleet does
//!   not send N ModifyFleet calls, and only that node reads metrics). If its agent is dead,
//!   its utilization is missing and the verdict is "unknown": the safe way to fail.

use std::collections::HashMap;

use serde::Serialize;

use crate::aws::FleetStatus;
use crate::launch::NodeInfo;

/// When the whole fleet counts as idle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleRule {
    /// How long every GPU must have idled.
    pub minutes: i64,
    /// A minute's average GPU utilization below this is idle.
    pub below_percent: f64,
}

impl IdleRule {
    /// Minutes of data a node needs in the window ([`COVERAGE`] of it).
    pub fn minutes_needed(&self) -> usize {
        ((self.minutes as f64) * COVERAGE).ceil() as usize
    }
}

/// One node over the window, as `tap fleet idle` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeIdleness {
    pub instance_id: String,
    /// Distinct minutes with a utilization datapoint.
    pub minutes_reported: usize,
    /// The busiest minute's average utilization (None: no data).
    pub peak_percent: Option<f64>,
    /// Reported enough minutes, every one below the threshold.
    pub idle: bool,
}

/// How idle one node was, from its per-minute averages.
pub fn node_idleness(
    utilization: &HashMap<String, Vec<(i64, f64)>>,
    instance_id: &str,
    rule: &IdleRule,
) -> NodeIdleness {
    let points = utilization.get(instance_id).map_or(&[][..], Vec::as_slice);
    let mut minutes: Vec<i64> = points.iter().map(|&(t, _)| t.div_euclid(60_000)).collect();
    minutes.sort_unstable();
    minutes.dedup();
    let peak = points.iter().map(|&(_, v)| v).reduce(f64::max);
    NodeIdleness {
        instance_id: instance_id.to_owned(),
        minutes_reported: minutes.len(),
        peak_percent: peak,
        idle: minutes.len() >= rule.minutes_needed() && peak.is_some_and(|p| p < rule.below_percent),
    }
}

/// Share of the window's minutes a node must have reported for its idleness to count.
pub const COVERAGE: f64 = 0.8;

/// What the rule says about the fleet now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Every running node idled for the whole window: scale the fleet to zero.
    Idle { nodes: usize, peak_percent: f64 },
    /// A node worked in the window.
    Busy { instance_id: String, peak_percent: f64 },
    /// Not known to idle (a node too new or silent, a pending node, no running node).
    Unknown { reason: String },
    /// Another node is the one that decides.
    NotLeader { leader: String },
    /// The fleet's target capacity is already zero.
    AlreadyZero,
    /// Idle GPUs, but a managed job is queued or running: the fleet stays up for it.
    JobsWaiting { job: String, state: String, jobs: usize },
}

/// An idle verdict yields to the managed jobs: while one is queued or running (`active`:
/// id and state, oldest first) the fleet is never scaled to zero.
pub fn hold_for_jobs(verdict: Verdict, active: &[(String, tap_core::jobs::JobState)]) -> Verdict {
    match (verdict, active.first()) {
        (Verdict::Idle { .. }, Some((job, state))) => {
            Verdict::JobsWaiting { job: job.clone(), state: state.as_str().to_owned(), jobs: active.len() }
        }
        (v, _) => v,
    }
}

impl Verdict {
    /// One line for the log and the terminal.
    pub fn describe(&self, rule: &IdleRule) -> String {
        match self {
            Verdict::Idle { nodes, peak_percent } => format!(
                "every GPU of the fleet's {nodes} node(s) idled for {} min (peak minute {peak_percent:.1}% < {}%)",
                rule.minutes, rule.below_percent
            ),
            Verdict::Busy { instance_id, peak_percent } => format!(
                "{instance_id} worked in the last {} min (peak minute {peak_percent:.1}% >= {}%)",
                rule.minutes, rule.below_percent
            ),
            Verdict::Unknown { reason } => format!("not known to idle: {reason}"),
            Verdict::NotLeader { leader } => format!("{leader} decides for the fleet"),
            Verdict::AlreadyZero => "the fleet's target capacity is already 0".into(),
            Verdict::JobsWaiting { job, state, jobs } => {
                format!("GPUs idle, but job {job} is {state} ({jobs} managed job(s) active): the fleet stays up")
            }
        }
    }
}

/// The node that decides: the oldest running node. Every node computes the same one from
/// the same DescribeInstances answer.
pub fn leader(status: &FleetStatus) -> Option<&NodeInfo> {
    status
        .nodes
        .iter()
        .filter(|n| n.state == tap_core::fleet::InstanceState::Running)
        .min_by(|a, b| a.seniority().cmp(&b.seniority()))
}

/// The verdict for the fleet as `me` sees it (`me`: None judges without electing, as
/// `tap fleet idle` does). `utilization`: each instance's per-minute averages over the window.
pub fn judge(
    status: &FleetStatus,
    utilization: &HashMap<String, Vec<(i64, f64)>>,
    me: Option<&str>,
    rule: &IdleRule,
) -> Verdict {
    match status.target_capacity {
        Some(0) => return Verdict::AlreadyZero,
        None => return Verdict::Unknown { reason: format!("fleet {} has no target capacity", status.fleet_id) },
        Some(_) => {}
    }
    if let Some(n) = status.nodes.iter().find(|n| n.state == tap_core::fleet::InstanceState::Pending) {
        return Verdict::Unknown { reason: format!("{} is still starting", n.instance_id) };
    }
    let running: Vec<&NodeInfo> =
        status.nodes.iter().filter(|n| n.state == tap_core::fleet::InstanceState::Running).collect();
    if running.is_empty() {
        return Verdict::Unknown { reason: "no running node".into() };
    }
    if let Some(me) = me
        && let Some(l) = leader(status).filter(|l| l.instance_id != me)
    {
        return Verdict::NotLeader { leader: l.instance_id.clone() };
    }
    let mut peak = 0.0f64;
    for n in &running {
        let node = node_idleness(utilization, &n.instance_id, rule);
        let needed = rule.minutes_needed();
        if node.minutes_reported < needed {
            return Verdict::Unknown {
                reason: format!(
                    "{} reported GPU utilization for {} of the last {} min (needs {needed})",
                    n.instance_id, node.minutes_reported, rule.minutes
                ),
            };
        }
        let node_peak = node.peak_percent.unwrap_or(0.0);
        if node_peak >= rule.below_percent {
            return Verdict::Busy { instance_id: n.instance_id.clone(), peak_percent: node_peak };
        }
        peak = peak.max(node_peak);
    }
    Verdict::Idle { nodes: running.len(), peak_percent: peak }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const RULE: IdleRule = IdleRule { minutes: 60, below_percent: 5.0 };

    fn node(id: &str, launched_min_ago: i64, state: &str, heartbeat: Option<i64>) -> NodeInfo {
        NodeInfo {
            instance_id: id.into(),
            instance_type: Some("g5.xlarge".into()),
            availability_zone: Some("us-east-1a".into()),
            private_ip: Some("10.0.0.1".into()),
            state: state.into(),
            launch_time_ms: Some(NOW - launched_min_ago * 60_000),
            heartbeat_age_s: heartbeat,
            unhealthy: Some(false),
            interrupting: None,
        }
    }

    fn fleet(nodes: Vec<NodeInfo>, target: i32) -> FleetStatus {
        FleetStatus {
            fleet_id: "fleet-1".into(),
            state: "active".into(),
            target_capacity: Some(target),
            fulfilled_capacity: Some(f64::from(target)),
            nodes,
            interruptions_24h: 0.0,
        }
    }

    /// `minutes` per-minute points ending now, all at `value`.
    fn series(minutes: i64, value: f64) -> Vec<(i64, f64)> {
        (0..minutes).map(|m| (NOW - m * 60_000, value)).collect()
    }

    fn two_idle() -> (FleetStatus, HashMap<String, Vec<(i64, f64)>>) {
        let s = fleet(vec![node("i-old", 300, "running", Some(30)), node("i-new", 200, "running", Some(10))], 2);
        let u = HashMap::from([("i-old".to_owned(), series(60, 1.0)), ("i-new".to_owned(), series(60, 2.5))]);
        (s, u)
    }

    #[test]
    fn a_fleet_idle_everywhere_for_the_window_is_scaled_by_its_oldest_node_only() {
        let (s, u) = two_idle();
        assert_eq!(judge(&s, &u, Some("i-old"), &RULE), Verdict::Idle { nodes: 2, peak_percent: 2.5 });
        assert_eq!(judge(&s, &u, Some("i-new"), &RULE), Verdict::NotLeader { leader: "i-old".into() });
        assert_eq!(judge(&s, &u, None, &RULE), Verdict::Idle { nodes: 2, peak_percent: 2.5 });
    }

    #[test]
    fn one_busy_minute_on_one_node_keeps_the_fleet() {
        let (s, mut u) = two_idle();
        u.get_mut("i-new").expect("series")[17].1 = 40.0;
        assert_eq!(
            judge(&s, &u, Some("i-old"), &RULE),
            Verdict::Busy { instance_id: "i-new".into(), peak_percent: 40.0 }
        );
        // The threshold itself is not idle.
        let (s, mut u) = two_idle();
        u.insert("i-old".into(), series(60, 5.0));
        assert!(matches!(judge(&s, &u, Some("i-old"), &RULE), Verdict::Busy { .. }));
    }

    #[test]
    fn a_node_without_enough_reported_minutes_is_not_known_to_idle() {
        let (s, mut u) = two_idle();
        u.insert("i-new".into(), series(47, 0.0)); // 47 < ceil(60 * 0.8) = 48
        let v = judge(&s, &u, Some("i-old"), &RULE);
        assert_eq!(
            v,
            Verdict::Unknown { reason: "i-new reported GPU utilization for 47 of the last 60 min (needs 48)".into() }
        );
        u.insert("i-new".into(), series(48, 0.0));
        assert!(matches!(judge(&s, &u, Some("i-old"), &RULE), Verdict::Idle { .. }));
        // Two points in one minute are one minute.
        let mut doubled = series(30, 0.0);
        doubled.extend(series(30, 0.0));
        u.insert("i-new".into(), doubled);
        assert!(matches!(judge(&s, &u, Some("i-old"), &RULE), Verdict::Unknown { .. }));
        u.remove("i-new");
        assert!(matches!(judge(&s, &u, Some("i-old"), &RULE), Verdict::Unknown { .. }));
    }

    #[test]
    fn pending_nodes_zero_targets_and_silent_agents_stop_the_rule() {
        let (mut s, u) = two_idle();
        s.nodes.push(node("i-coming", 1, "pending", None));
        assert_eq!(
            judge(&s, &u, Some("i-old"), &RULE),
            Verdict::Unknown { reason: "i-coming is still starting".into() }
        );

        let (s, u) = two_idle();
        let zero = FleetStatus { target_capacity: Some(0), ..s.clone() };
        assert_eq!(judge(&zero, &u, Some("i-old"), &RULE), Verdict::AlreadyZero);

        // The oldest node decides whatever its heartbeat (EC2 alone says who it is); if its
        // agent went quiet, its minutes are missing and nobody scales.
        let (mut s, mut u) = two_idle();
        for n in &mut s.nodes {
            n.heartbeat_age_s = None;
        }
        assert_eq!(leader(&s).map(|n| n.instance_id.as_str()), Some("i-old"));
        assert!(matches!(judge(&s, &u, Some("i-old"), &RULE), Verdict::Idle { .. }));
        u.insert("i-old".into(), series(20, 0.0));
        assert!(matches!(judge(&s, &u, Some("i-old"), &RULE), Verdict::Unknown { .. }));
        // A node that is not running does not decide.
        s.nodes[0].state = "shutting-down".into();
        assert_eq!(leader(&s).map(|n| n.instance_id.as_str()), Some("i-new"));
        let empty = fleet(vec![node("i-gone", 90, "terminated", None)], 1);
        assert_eq!(judge(&empty, &u, Some("i-old"), &RULE), Verdict::Unknown { reason: "no running node".into() });
    }

    #[test]
    fn each_node_is_listed_with_its_reported_minutes_and_peak() {
        let (_, mut u) = two_idle();
        u.get_mut("i-new").expect("series")[3].1 = 9.0;
        let old = node_idleness(&u, "i-old", &RULE);
        assert_eq!((old.minutes_reported, old.peak_percent, old.idle), (60, Some(1.0), true));
        let new = node_idleness(&u, "i-new", &RULE);
        assert_eq!((new.minutes_reported, new.peak_percent, new.idle), (60, Some(9.0), false));
        let none = node_idleness(&u, "i-silent", &RULE);
        assert_eq!((none.minutes_reported, none.peak_percent, none.idle), (0, None, false));
    }

    #[test]
    fn verdicts_read_as_one_line() {
        let v = Verdict::Idle { nodes: 2, peak_percent: 2.5 };
        assert_eq!(v.describe(&RULE), "every GPU of the fleet's 2 node(s) idled for 60 min (peak minute 2.5% < 5%)");
        let j = serde_json::to_value(&v).expect("json");
        assert_eq!(j["verdict"], "idle");
        assert_eq!(serde_json::to_value(Verdict::AlreadyZero).expect("json")["verdict"], "already-zero");
    }

    #[test]
    fn an_idle_fleet_stays_up_while_a_managed_job_is_active() {
        use tap_core::jobs::JobState;
        let idle = Verdict::Idle { nodes: 2, peak_percent: 1.0 };
        assert_eq!(hold_for_jobs(idle.clone(), &[]), idle);
        let held = hold_for_jobs(idle, &[("j1".into(), JobState::Queued), ("j2".into(), JobState::Running)]);
        assert_eq!(held, Verdict::JobsWaiting { job: "j1".into(), state: "queued".into(), jobs: 2 });
        let rule = IdleRule { minutes: 60, below_percent: 5.0 };
        assert_eq!(
            held.describe(&rule),
            "GPUs idle, but job j1 is queued (2 managed job(s) active): the fleet stays up"
        );
        let busy = Verdict::Busy { instance_id: "i-a".into(), peak_percent: 50.0 };
        assert_eq!(hold_for_jobs(busy.clone(), &[("j1".into(), JobState::Queued)]), busy);
    }
}
