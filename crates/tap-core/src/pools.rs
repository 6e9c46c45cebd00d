//! Spot pools as tap's runs saw them: per instance type and Availability Zone, the node-hours
//! runs held there and the spot interruptions they got, so `tap fleet pools` can say which
//! pools to prefer and `tap goodput` can put a mean time between interruptions into the
//! checkpoint interval. Pure functions of run records.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::notice::NoticeKind;
use crate::runs::{Attempt, Lifecycle, Run, RunStatus};

/// Where an attempt ran: an EC2 pool (instance type and AZ) or a machine off EC2.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pool {
    Ec2 {
        instance_type: String,
        availability_zone: String,
    },
    /// Not on EC2 (a laptop, a workstation): its host name.
    Host {
        host: String,
    },
}

impl Pool {
    /// The pool of an attempt.
    pub fn of(a: &Attempt) -> Pool {
        match &a.spent.node {
            Some(n) => {
                Pool::Ec2 { instance_type: n.instance_type.clone(), availability_zone: n.availability_zone.clone() }
            }
            None => Pool::Host { host: a.host.clone() },
        }
    }

    pub fn label(&self) -> String {
        match self {
            Pool::Ec2 { instance_type, availability_zone } => format!("{instance_type} {availability_zone}"),
            Pool::Host { host } => format!("host {host}"),
        }
    }
}

/// One pool's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolStats {
    pub pool: Pool,
    /// Spot, on-demand, or both (attempts that did not say count as neither).
    pub lifecycles: Vec<Lifecycle>,
    pub attempts: u32,
    pub node_hours: f64,
    /// Spot interruption notices its attempts got.
    pub interruptions: u32,
    pub interruptions_per_100_node_hours: f64,
    /// node-hours / spot interruptions; None: none seen (then it is above `node_hours`).
    pub mtbi_hours: Option<f64>,
    /// Attempts that ended by any notice (spot, a GPU fault, a SIGUSR1) or lost their node:
    /// each cost a restart.
    pub disruptions: u32,
    /// Disruptions that lost work: a lost node, or a notice whose final checkpoint missed or
    /// was late (one committed in time loses nothing but its recovery).
    pub losses: u32,
    /// node-hours / losses: the checkpoint interval's M (None: no loss on record).
    pub hours_between_losses: Option<f64>,
}

/// Every pool's history over the attempts that ran in `[since_ms, now_ms]` (time before
/// `since_ms` is not counted), from `runs`: each training's attempts, and each node run of a
/// job (a job's own record holds no node of its own and is left out).
pub fn pool_stats(runs: &[Run], since_ms: i64, now_ms: i64) -> Vec<PoolStats> {
    let mut by_pool: BTreeMap<Pool, PoolStats> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.job.is_none()) {
        for a in r.all_attempts(r.status) {
            let end = a.ended_ms.or(if a.number == r.attempt() { r.heartbeat_ms } else { None }).unwrap_or(now_ms);
            let (from, to) = (a.started_ms.max(since_ms), end.min(now_ms));
            let spot = a
                .interruption
                .as_ref()
                .filter(|i| i.kind == NoticeKind::SpotInterruption && (since_ms..=now_ms).contains(&i.noticed_ms));
            let disrupted = a.status == RunStatus::Lost
                || a.interruption.as_ref().is_some_and(|i| (since_ms..=now_ms).contains(&i.noticed_ms));
            if to <= from && !disrupted {
                continue;
            }
            let pool = Pool::of(&a);
            let s = by_pool.entry(pool.clone()).or_insert_with(|| PoolStats {
                pool,
                lifecycles: Vec::new(),
                attempts: 0,
                node_hours: 0.0,
                interruptions: 0,
                interruptions_per_100_node_hours: 0.0,
                mtbi_hours: None,
                disruptions: 0,
                losses: 0,
                hours_between_losses: None,
            });
            s.attempts += 1;
            s.node_hours += (to - from).max(0) as f64 / 3_600_000.0;
            s.interruptions += u32::from(spot.is_some());
            s.disruptions += u32::from(disrupted);
            let kept = a
                .interruption
                .as_ref()
                .and_then(|i| i.verdict.as_ref())
                .is_some_and(|v| matches!(v, crate::commit::Verdict::Committed { .. }));
            s.losses += u32::from(disrupted && !kept);
            if let Some(l) = a.spent.node.as_ref().and_then(|n| n.lifecycle)
                && !s.lifecycles.contains(&l)
            {
                s.lifecycles.push(l);
            }
        }
    }
    let mut out: Vec<PoolStats> = by_pool.into_values().collect();
    for s in &mut out {
        if s.node_hours > 0.0 {
            s.interruptions_per_100_node_hours = 100.0 * f64::from(s.interruptions) / s.node_hours;
        }
        s.mtbi_hours = (s.interruptions > 0).then(|| s.node_hours / f64::from(s.interruptions));
        s.hours_between_losses = (s.losses > 0).then(|| s.node_hours / f64::from(s.losses));
    }
    out
}

/// Below this many node-hours a pool's rate says little: the advice puts it after the pools
/// that have a history, in its own order.
pub const MIN_NODE_HOURS: f64 = 1.0;

/// The advice: the EC2 instance types, and the AZs, from the fewest interruptions per
/// node-hour to the most (pools with under [`MIN_NODE_HOURS`] last; ties by more
/// node-hours, then name). Advice only: the stack's `instance_types` and
/// `availability_zones` are the platform team's.
pub fn advice(stats: &[PoolStats]) -> (Vec<String>, Vec<String>) {
    let rank = |key: &dyn Fn(&Pool) -> Option<String>| {
        let mut by: BTreeMap<String, (f64, u32)> = BTreeMap::new();
        for s in stats {
            if let Some(k) = key(&s.pool) {
                let e = by.entry(k).or_insert((0.0, 0));
                e.0 += s.node_hours;
                e.1 += s.interruptions;
            }
        }
        let mut v: Vec<(String, f64, u32)> = by.into_iter().map(|(k, (h, i))| (k, h, i)).collect();
        let rate = |h: f64, i: u32| if h > 0.0 { f64::from(i) / h } else { f64::INFINITY };
        v.sort_by(|a, b| {
            (a.1 < MIN_NODE_HOURS)
                .cmp(&(b.1 < MIN_NODE_HOURS))
                .then(rate(a.1, a.2).total_cmp(&rate(b.1, b.2)))
                .then(b.1.total_cmp(&a.1))
                .then(a.0.cmp(&b.0))
        });
        v.into_iter().map(|(k, _, _)| k).collect::<Vec<_>>()
    };
    let types = rank(&|p| match p {
        Pool::Ec2 { instance_type, .. } => Some(instance_type.clone()),
        Pool::Host { .. } => None,
    });
    let zones = rank(&|p| match p {
        Pool::Ec2 { availability_zone, .. } => Some(availability_zone.clone()),
        Pool::Host { .. } => None,
    });
    (types, zones)
}

/// The tfvars lines to paste (HCL lists), or None when no EC2 pool is known.
pub fn tfvars(types: &[String], zones: &[String]) -> Option<String> {
    if types.is_empty() {
        return None;
    }
    let list = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    Some(format!("instance_types     = [{}]\navailability_zones = [{}]\n", list(types), list(zones)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{Interruption, NodeIdentity, Spent};

    const H: i64 = 3_600_000;

    fn node(t: &str, az: &str) -> NodeIdentity {
        NodeIdentity {
            instance_id: "i-1".into(),
            instance_type: t.into(),
            availability_zone: az.into(),
            ami_id: "ami-1".into(),
            lifecycle: Some(Lifecycle::Spot),
        }
    }

    fn run(id: &str, t: &str, az: &str, hours: i64, interrupted: bool) -> Run {
        let mut r = Run::new("e", id, vec!["x".into()], "h", 0);
        r.ended_ms = Some(hours * H);
        r.status = if interrupted { RunStatus::Interrupted } else { RunStatus::Succeeded };
        r.spent = Spent { node: Some(node(t, az)), ..Spent::default() };
        if interrupted {
            r.interruption = Some(Interruption {
                kind: NoticeKind::SpotInterruption,
                reason: "spot".into(),
                noticed_ms: hours * H - 1000,
                deadline_ms: None,
                verdict: None,
            });
        }
        r
    }

    #[test]
    fn pools_count_node_hours_and_interruptions() {
        let runs = vec![
            run("a", "g5.xlarge", "us-east-1a", 10, true),
            run("b", "g5.xlarge", "us-east-1a", 10, true),
            run("c", "g4dn.xlarge", "us-east-1b", 20, true),
            run("d", "g4dn.xlarge", "us-east-1b", 20, false),
        ];
        let stats = pool_stats(&runs, 0, 100 * H);
        assert_eq!(stats.len(), 2);
        let g5 = stats.iter().find(|s| s.pool.label() == "g5.xlarge us-east-1a").expect("g5");
        assert_eq!((g5.attempts, g5.interruptions), (2, 2));
        assert!((g5.node_hours - 20.0).abs() < 1e-9);
        assert_eq!(g5.mtbi_hours, Some(10.0));
        assert!((g5.interruptions_per_100_node_hours - 10.0).abs() < 1e-9);
        let g4 = stats.iter().find(|s| s.pool.label() == "g4dn.xlarge us-east-1b").expect("g4dn");
        assert_eq!((g4.interruptions, g4.disruptions, g4.mtbi_hours), (1, 1, Some(40.0)));
        assert_eq!((g4.losses, g4.hours_between_losses), (1, Some(40.0)), "no verdict: not kept");
        let (types, zones) = advice(&stats);
        assert_eq!(types, vec!["g4dn.xlarge", "g5.xlarge"]);
        assert_eq!(zones, vec!["us-east-1b", "us-east-1a"]);
        let lines = tfvars(&types, &zones).expect("lines");
        assert!(lines.contains(r#"instance_types     = ["g4dn.xlarge", "g5.xlarge"]"#), "{lines}");
    }

    #[test]
    fn the_window_clips_attempts_and_drops_old_interruptions() {
        let runs = vec![run("a", "g5.xlarge", "us-east-1a", 10, true)];
        // Only the last 2 hours: 2 node-hours, the interruption (at 10 h) is inside.
        let s = &pool_stats(&runs, 8 * H, 100 * H)[0];
        assert!((s.node_hours - 2.0).abs() < 1e-9);
        assert_eq!(s.interruptions, 1);
        assert!(pool_stats(&runs, 11 * H, 100 * H).is_empty());
    }

    #[test]
    fn any_notice_or_lost_node_is_a_disruption_but_only_spot_an_interruption() {
        let mut by_signal = run("a", "g5.xlarge", "us-east-1a", 10, true);
        by_signal.interruption.as_mut().expect("notice").kind = NoticeKind::Signal;
        let mut lost = run("b", "g5.xlarge", "us-east-1a", 10, false);
        lost.status = RunStatus::Lost;
        let mut kept = run("c", "g5.xlarge", "us-east-1a", 10, true);
        kept.interruption.as_mut().expect("notice").verdict =
            Some(crate::commit::Verdict::Committed { checkpoint: "c-1".into(), spare_s: 60.0 });
        let s = &pool_stats(&[by_signal, lost, kept], 0, 100 * H)[0];
        assert_eq!((s.interruptions, s.disruptions, s.losses), (1, 3, 2));
        assert_eq!((s.mtbi_hours, s.hours_between_losses), (Some(30.0), Some(15.0)));
    }

    #[test]
    fn a_job_record_is_not_a_node_and_a_laptop_is_its_host() {
        let mut job = run("j", "g5.xlarge", "us-east-1a", 10, false);
        job.job = Some(crate::runs::Job { fleet_id: "f".into(), attempt: 1, nodes: vec![], stop: None });
        let mut laptop = Run::new("e", "l", vec!["x".into()], "laptop", 0);
        laptop.ended_ms = Some(H);
        laptop.status = RunStatus::Succeeded;
        let stats = pool_stats(&[job, laptop], 0, 10 * H);
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].pool, Pool::Host { host: "laptop".into() });
        assert_eq!(advice(&stats), (vec![], vec![]));
        assert_eq!(tfvars(&[], &[]), None);
    }
}
