//! The terminal view of the fleet (pure, unit-tested).

use std::fmt::Write as _;

use crate::aws::FleetStatus;
use crate::launch::NodeInfo;

fn age(ms: Option<i64>, now_ms: i64) -> String {
    match ms {
        None => "-".into(),
        Some(t) => {
            let s = ((now_ms - t) / 1000).max(0);
            if s < 3600 {
                format!("{}m", s / 60)
            } else if s < 86_400 {
                format!("{}h", s / 3600)
            } else {
                format!("{}d", s / 86_400)
            }
        }
    }
}

/// One character per node: `●` ready, `◐` up but not ready (no heartbeat yet, pending), `✖`
/// a fatal GPU finding, `○` a slot the fleet has not filled.
pub fn capacity_bar(s: &FleetStatus) -> String {
    let mut bar: String = s
        .nodes
        .iter()
        .map(|n| match (n.unhealthy, n.unfit()) {
            (Some(true), _) => '✖',
            (_, None) => '●',
            _ => '◐',
        })
        .collect();
    let target = s.target_capacity.unwrap_or(0).max(0) as usize;
    for _ in s.nodes.len()..target {
        bar.push('○');
    }
    bar
}

pub fn status(s: &FleetStatus, now_ms: i64) -> String {
    let ready = s.nodes.iter().filter(|n| n.unfit().is_none()).count();
    let mut out = format!(
        "fleet {} ({}): target {}, fulfilled {}, {} ready   {}\n",
        s.fleet_id,
        s.state,
        s.target_capacity.map_or("-".into(), |t| t.to_string()),
        s.fulfilled_capacity.map_or("-".into(), |f| format!("{f:.0}")),
        ready,
        capacity_bar(s)
    );
    let _ = writeln!(out, "spot interruptions in the last 24 h: {:.0}", s.interruptions_24h);
    if s.nodes.is_empty() {
        out.push_str("no instances\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:<11} {:<15} {:<9} {:>5} {:>9} {:<9} NOTE",
        "INSTANCE", "TYPE", "AZ", "PRIVATE IP", "STATE", "AGE", "HEARTBEAT", "GPU"
    );
    for n in &s.nodes {
        let _ = writeln!(out, "{}", row(n, now_ms));
    }
    out
}

fn row(n: &NodeInfo, now_ms: i64) -> String {
    let gpu = match n.unhealthy {
        Some(true) => "UNHEALTHY",
        Some(false) => "ok",
        None => "-",
    };
    format!(
        "{:<20} {:<12} {:<11} {:<15} {:<9} {:>5} {:>9} {:<9} {}",
        n.instance_id,
        n.instance_type.as_deref().unwrap_or("-"),
        n.availability_zone.as_deref().unwrap_or("-"),
        n.private_ip.as_deref().unwrap_or("-"),
        n.state,
        age(n.launch_time_ms, now_ms),
        n.heartbeat_age_s.map_or("-".into(), |a| format!("{a}s ago")),
        gpu,
        n.unfit().map(|u| u.to_string()).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, heartbeat: Option<i64>, unhealthy: Option<bool>) -> NodeInfo {
        NodeInfo {
            instance_id: id.into(),
            instance_type: Some("p3.2xlarge".into()),
            availability_zone: Some("us-east-1b".into()),
            private_ip: Some("10.0.1.5".into()),
            state: "running".into(),
            launch_time_ms: Some(0),
            heartbeat_age_s: heartbeat,
            unhealthy,
            interrupting: None,
        }
    }

    #[test]
    fn bar_and_table() {
        let s = FleetStatus {
            fleet_id: "fleet-1".into(),
            state: "active".into(),
            target_capacity: Some(6),
            fulfilled_capacity: Some(3.0),
            nodes: vec![node("i-a", Some(20), Some(false)), node("i-b", None, None), node("i-c", Some(10), Some(true))],
            interruptions_24h: 2.0,
        };
        assert_eq!(capacity_bar(&s), "●◐✖○○○");
        let t = status(&s, 7_200_000);
        assert!(t.starts_with("fleet fleet-1 (active): target 6, fulfilled 3, 1 ready   ●◐✖○○○\n"), "{t}");
        assert!(t.contains("spot interruptions in the last 24 h: 2"));
        assert!(t.contains("i-b") && t.contains("no tap-agent heartbeat"), "{t}");
        assert!(t.contains("UNHEALTHY") && t.contains("2h"), "{t}");
    }
}
