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

/// Heartbeats older than this mean the agent (or the node) is gone.
pub const HEARTBEAT_STALE_S: i64 = 300;

impl NodeInfo {
    /// Why this node cannot take a job, if it cannot.
    pub fn unfit(&self) -> Option<String> {
        if self.state != InstanceState::Running {
            return Some(format!("state {}", self.state));
        }
        if self.private_ip.is_none() {
            return Some("no private IP".into());
        }
        if self.unhealthy == Some(true) {
            return Some("a fatal GPU finding stands".into());
        }
        if self.interrupting == Some(true) {
            return Some("a spot interruption notice stands".into());
        }
        match self.heartbeat_age_s {
            None => Some("no tap-agent heartbeat".into()),
            Some(a) if a > HEARTBEAT_STALE_S => Some(format!("last tap-agent heartbeat {a} s ago")),
            Some(_) => None,
        }
    }
}

impl NodeInfo {
    /// The order every node agrees on: oldest launch first, then instance id.
    pub fn seniority(&self) -> (Option<i64>, &str) {
        (self.launch_time_ms, &self.instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceState;

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
