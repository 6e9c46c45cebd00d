//! `tap fleet status|scale|idle`: the stack's spot fleet through EC2 and the agents' metrics
//! (crate tap-fleet). They need an imported stack. `tap launch` is `jobs`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tap_core::stack_config::StackConfig;
use tap_fleet::aws::Fleet;
use tap_fleet::idle::{self, IdleRule};

use crate::cli::{FleetCommand, Output};
use crate::commands::json;
use crate::now_ms;

async fn fleet(stack: &StackConfig) -> Fleet {
    Fleet::new(&crate::commands::sdk_for(stack).await, stack)
}

/// The instances the stack's active jobs hold now (a scale-down takes them last).
async fn held_nodes(stack: &StackConfig) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let sdk = crate::commands::sdk_for(stack).await;
    let jobs = tap_store::jobs::JobStore::new(aws_sdk_dynamodb::Client::new(&sdk), &stack.table_name);
    let mut held = std::collections::BTreeSet::new();
    for e in jobs.list(true).await? {
        if let tap_store::jobs::JobEntry::Job { job, .. } = e {
            held.extend(job.held_nodes().map(str::to_owned));
        }
    }
    Ok(held)
}

/// Asks on the terminal; `false` when stdin is not a terminal (scripts pass --yes).
pub(super) fn confirm(question: &str) -> bool {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
}

pub async fn run_fleet(
    stack: &StackConfig,
    cmd: &FleetCommand,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let f = fleet(stack).await;
    match cmd {
        FleetCommand::Status => {
            let s = f.status(now_ms()).await?;
            match output {
                Output::Json => json(out, &s)?,
                Output::Text => out.write_all(tap_fleet::render::status(&s, now_ms()).as_bytes())?,
            }
        }
        FleetCommand::Scale { target, yes } => scale(stack, &f, *target, *yes, output, out).await?,
        FleetCommand::Idle { minutes, below_percent } => idle_view(&f, *minutes, *below_percent, output, out).await?,
        // Routed to the store (commands::route): it reads runs, not the fleet.
        FleetCommand::Pools { .. } => anyhow::bail!("tap fleet pools reads the run store"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tap fleet scale N`: a partial scale-down picks its nodes (EC2 would pick by pool
/// capacity, whatever the AZ): free nodes outside the AZ where the fleet's nodes gather go
/// first; terminating nodes is confirmed unless `yes`.
async fn scale(
    stack: &StackConfig,
    f: &tap_fleet::aws::Fleet,
    target: u32,
    yes: bool,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let s = f.describe().await?; // EC2 alone: the target and the running nodes
    let current = s.target_capacity.unwrap_or(0);
    let target = i32::try_from(target).context("target capacity")?;
    // A partial scale-down picks its nodes (EC2 would pick by pool capacity, whatever
    // the AZ): free nodes outside the AZ where the fleet's nodes gather go first.
    let victims = if target > 0 && target < current {
        let held = held_nodes(stack).await?;
        tap_core::fleet::scale_down_victims(&s.nodes, &held, target as usize)
    } else {
        Vec::new()
    };
    let named = |ids: &[String]| -> String {
        ids.iter()
            .map(|id| {
                let az = s.nodes.iter().find(|n| n.instance_id == *id).and_then(|n| n.availability_zone.clone());
                format!("{id} ({})", az.as_deref().unwrap_or("AZ unknown"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if target < current && !yes {
        let running = s.nodes.iter().filter(|n| n.state == tap_core::fleet::InstanceState::Running).count();
        let which = if victims.is_empty() { String::new() } else { format!(" ({})", named(&victims)) };
        let q = format!(
            "scale fleet {} from {current} to {target}: up to {} running node(s) will be terminated{which} (their runs are interrupted). Go on?",
            s.fleet_id,
            running.saturating_sub(target as usize)
        );
        if !confirm(&q) {
            bail!("not scaled down: confirm on a terminal, or pass --yes");
        }
    }
    f.scale_down_to(target, &victims).await?;
    let msg = if target == 0 { " (no GPU nodes, no spot charges)" } else { "" };
    match output {
        Output::Json => json(
            out,
            &serde_json::json!({ "fleet": s.fleet_id, "from": current, "to": target, "terminated": victims }),
        )?,
        Output::Text => {
            writeln!(out, "fleet {}: target capacity {current} -> {target}{msg}", s.fleet_id)?;
            if !victims.is_empty() {
                writeln!(out, "  terminated {} (the nodes left stay together)", named(&victims))?;
            }
        }
    }
    Ok(())
}

/// `tap fleet idle`: each running node's idleness over the window, and the fleet's verdict.
async fn idle_view(
    f: &tap_fleet::aws::Fleet,
    minutes: u32,
    below_percent: f64,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let rule = IdleRule { minutes: i64::from(minutes), below_percent };
    let view = f.idle_verdict(None, now_ms(), &rule).await?;
    let verdict = view.verdict;
    let nodes: Vec<_> = view
        .status
        .nodes
        .iter()
        .filter(|n| n.state == tap_core::fleet::InstanceState::Running)
        .map(|n| idle::node_idleness(&view.utilization, &n.instance_id, &rule))
        .collect();
    match output {
        Output::Json => json(
            out,
            &serde_json::json!({ "minutes": minutes, "below_percent": below_percent, "nodes": nodes, "fleet": verdict }),
        )?,
        Output::Text => {
            let idle = nodes.iter().filter(|n| n.idle).count();
            writeln!(
                out,
                "nodes whose GPUs stayed below {below_percent}% every minute of the last {minutes} min: {idle} of {}",
                nodes.len()
            )?;
            for n in &nodes {
                let peak = n.peak_percent.map_or("no data".into(), |p| format!("peak {p:.1}%"));
                let mark = if n.idle { "idle" } else { "-" };
                writeln!(
                    out,
                    "  {:<20} {mark:<5} {peak:<12} {} of {minutes} min reported",
                    n.instance_id, n.minutes_reported
                )?;
            }
            writeln!(out, "fleet: {}", verdict.describe(&rule))?;
            if matches!(verdict, idle::Verdict::Idle { .. }) {
                writeln!(out, "`tap fleet scale 0` stops paying for it")?;
            }
        }
    }
    Ok(())
}
