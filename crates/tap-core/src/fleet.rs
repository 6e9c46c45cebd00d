//! The fleet's nodes as tap sees them (EC2's view plus what each node's agent last said):
//! shared by `tap fleet`, `tap launch` and the job controller in tap-agent. Pure data.

use serde::{Deserialize, Serialize};

/// A node as `tap fleet status` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub instance_id: String,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    /// EC2's state of the instance.
    pub state: InstanceState,
    pub launch_time_ms: Option<i64>,
    /// Seconds since the agent's last heartbeat (None: none seen).
    pub heartbeat_age_s: Option<i64>,
    /// The agent's GPUUnhealthy: Some(true) when a fatal finding stands.
    pub unhealthy: Option<bool>,
    /// The agent published a spot interruption notice (SpotInterruptionNotice) in the last
    /// 15 minutes: EC2 takes the node within two minutes of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupting: Option<bool>,
}

/// An EC2 instance's state (EC2's `InstanceStateName`), spelt as EC2 spells it in text and
/// JSON (`running`, `shutting-down`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
    /// A state this version of tap does not know (EC2 may add one).
    #[serde(other)]
    Unknown,
}

impl InstanceState {
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Unknown => "unknown",
        }
    }
}

impl From<&str> for InstanceState {
    /// EC2's name of the state.
    fn from(name: &str) -> InstanceState {
        match name {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            _ => InstanceState::Unknown,
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Availability Zone tap names when neither EC2 nor instance metadata says one: the
/// agent publishes its network series under it, the controller queries them under it, and
/// placement never groups such a node with a known AZ's.
pub const UNKNOWN_AZ: &str = "unknown";

/// Heartbeats older than this mean the agent (or the node) is gone.
pub const HEARTBEAT_STALE_S: i64 = 300;

/// Why a node cannot take a job: the one fitness rule, used by placement, launch, the fleet's
/// listing and the controller (which also asks [`Unfit::loses_its_rank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    NotRunning(InstanceState),
    NoPrivateIp,
    GpuFatal,
    Interrupting,
    NoHeartbeat,
    /// The last heartbeat is this many seconds old (over [`HEARTBEAT_STALE_S`]).
    StaleHeartbeat(i64),
}

impl Unfit {
    /// Whether a node unfit for this reason has also lost the rank it runs. A node under a
    /// spot notice still runs its rank until the rank checkpoints and ends (the rank's own
    /// record says so); a new node has no heartbeat yet and no private IP may be a moment's.
    pub fn loses_its_rank(self) -> bool {
        matches!(self, Unfit::NotRunning(_) | Unfit::GpuFatal | Unfit::StaleHeartbeat(_))
    }
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::NotRunning(state) => write!(f, "state {state}"),
            Unfit::NoPrivateIp => f.write_str("no private IP"),
            Unfit::GpuFatal => f.write_str("a fatal GPU finding stands"),
            Unfit::Interrupting => f.write_str("a spot interruption notice stands"),
            Unfit::NoHeartbeat => f.write_str("no tap-agent heartbeat"),
            Unfit::StaleHeartbeat(age) => write!(f, "last tap-agent heartbeat {age} s ago"),
        }
    }
}

impl NodeInfo {
    /// Why this node cannot take a job, if it cannot. The reasons that also lose a rank
    /// ([`Unfit::loses_its_rank`]) are asked first, so a node that has one says it.
    pub fn unfit(&self) -> Option<Unfit> {
        if self.state != InstanceState::Running {
            return Some(Unfit::NotRunning(self.state));
        }
        if self.unhealthy == Some(true) {
            return Some(Unfit::GpuFatal);
        }
        match self.heartbeat_age_s {
            Some(a) if a > HEARTBEAT_STALE_S => return Some(Unfit::StaleHeartbeat(a)),
            _ => {}
        }
        if self.private_ip.is_none() {
            return Some(Unfit::NoPrivateIp);
        }
        if self.interrupting == Some(true) {
            return Some(Unfit::Interrupting);
        }
        self.heartbeat_age_s.is_none().then_some(Unfit::NoHeartbeat)
    }
}

impl NodeInfo {
    /// Its Availability Zone, [`UNKNOWN_AZ`] when EC2 did not say.
    pub fn zone(&self) -> &str {
        self.availability_zone.as_deref().unwrap_or(UNKNOWN_AZ)
    }

    /// The order every node agrees on: oldest launch first, then instance id.
    pub fn seniority(&self) -> (Option<i64>, &str) {
        (self.launch_time_ms, &self.instance_id)
    }
}

/// Which nodes a partial scale-down to `target` nodes terminates (EC2 would pick by pool
/// capacity, whatever the AZ), so that the nodes left stay together for multi-node jobs,
/// which run in one AZ. The AZ kept is the one with the most live (pending or running)
/// nodes — the home AZ, where the fleet's priorities gather them — ties to the AZ of the
/// oldest node. Terminated first: nodes no job holds (a held node's job would be
/// interrupted), outside the kept AZ (the smallest AZ groups first), pending before running,
/// the newest first.
pub fn scale_down_victims(nodes: &[NodeInfo], held: &std::collections::BTreeSet<String>, target: usize) -> Vec<String> {
    use std::collections::BTreeMap;
    let live: Vec<&NodeInfo> =
        nodes.iter().filter(|n| matches!(n.state, InstanceState::Pending | InstanceState::Running)).collect();
    let excess = live.len().saturating_sub(target);
    if excess == 0 {
        return Vec::new();
    }
    let zone = |n: &NodeInfo| n.zone().to_owned();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for n in &live {
        *count.entry(zone(n)).or_default() += 1;
    }
    let oldest_zone = live.iter().min_by(|a, b| a.seniority().cmp(&b.seniority())).map(|n| zone(n));
    let keep = count
        .iter()
        .max_by(|(za, a), (zb, b)| {
            (**a, Some(*za) == oldest_zone.as_ref(), std::cmp::Reverse(*za)).cmp(&(
                **b,
                Some(*zb) == oldest_zone.as_ref(),
                std::cmp::Reverse(*zb),
            ))
        })
        .map(|(z, _)| z.clone());
    let mut order = live;
    order.sort_by_key(|n| {
        let z = zone(n);
        (
            held.contains(&n.instance_id),
            Some(&z) == keep.as_ref(),
            count.get(&z).copied().unwrap_or(0),
            n.state != InstanceState::Pending,
            std::cmp::Reverse(n.launch_time_ms),
            n.instance_id.clone(),
        )
    });
    order.into_iter().take(excess).map(|n| n.instance_id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::InstanceState;

    fn node(id: &str, zone: &str, launched: i64, state: &str) -> super::NodeInfo {
        super::NodeInfo {
            instance_id: id.into(),
            instance_type: Some("p3.2xlarge".into()),
            availability_zone: Some(zone.into()),
            private_ip: Some("10.0.0.1".into()),
            state: state.into(),
            launch_time_ms: Some(launched),
            heartbeat_age_s: Some(10),
            unhealthy: Some(false),
            interrupting: None,
        }
    }

    /// Issue 22: a scale-down keeps the nodes of the biggest (home) AZ together and never
    /// takes a node a job holds while a free one can go.
    #[test]
    fn a_scale_down_terminates_outside_the_kept_az_free_and_newest_first() {
        use std::collections::BTreeSet;
        let nodes = vec![
            node("i-a1", "us-east-1a", 1, "running"),
            node("i-a2", "us-east-1a", 2, "running"),
            node("i-a3", "us-east-1a", 9, "running"),
            node("i-b1", "us-east-1b", 3, "running"),
            node("i-b2", "us-east-1b", 4, "running"),
            node("i-c1", "us-east-1c", 5, "running"),
            node("i-gone", "us-east-1c", 6, "terminated"),
        ];
        let free = BTreeSet::new();
        assert_eq!(super::scale_down_victims(&nodes, &free, 6), Vec::<String>::new());
        assert_eq!(super::scale_down_victims(&nodes, &free, 5), ["i-c1"], "the smallest AZ group first");
        assert_eq!(super::scale_down_victims(&nodes, &free, 3), ["i-c1", "i-b2", "i-b1"]);
        assert_eq!(super::scale_down_victims(&nodes, &free, 2), ["i-c1", "i-b2", "i-b1", "i-a3"], "then the newest");
        let held = BTreeSet::from(["i-b1".to_owned(), "i-b2".to_owned()]);
        assert_eq!(super::scale_down_victims(&nodes, &held, 3), ["i-c1", "i-a3", "i-a2"], "a job's nodes last");
        // A pending node goes before a running one of its group; a tie of sizes keeps the
        // oldest node's AZ.
        let tie = vec![
            node("i-b1", "us-east-1b", 1, "running"),
            node("i-a1", "us-east-1a", 2, "running"),
            node("i-a2", "us-east-1a", 3, "pending"),
            node("i-b2", "us-east-1b", 4, "running"),
        ];
        assert_eq!(super::scale_down_victims(&tie, &free, 2), ["i-a2", "i-a1"]);
    }

    #[test]
    fn instance_states_read_and_print_as_ec2_spells_them() {
        for name in ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"] {
            let state = InstanceState::from(name);
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_string(&state).expect("json"), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<InstanceState>(&format!("\"{name}\"")).expect("parse"), state);
        }
        assert_eq!(InstanceState::from("hibernating"), InstanceState::Unknown);
        assert_eq!(serde_json::from_str::<InstanceState>("\"hibernating\"").expect("parse"), InstanceState::Unknown);
    }
}
