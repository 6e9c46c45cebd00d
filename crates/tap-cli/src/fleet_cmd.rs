//! `tap fleet status|scale|idle` and `tap launch`: the stack's spot fleet through EC2, SSM Run
//! Command and the agents' metrics (crate tap-fleet). They need an imported stack.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tap_core::contract::Metric;
use tap_core::stack_config::StackConfig;
use tap_fleet::aws::Fleet;
use tap_fleet::launch::{self, LaunchSpec};

use crate::cli::{FleetCommand, LaunchArgs, Output};
use crate::commands::json;
use crate::now_ms;

async fn fleet(stack: &StackConfig) -> Fleet {
    Fleet::new(&crate::commands::sdk_for(stack).await, stack)
}

/// Asks on the terminal; `false` when stdin is not a terminal (scripts pass --yes).
fn confirm(question: &str) -> bool {
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
        FleetCommand::Scale { target, yes } => {
            let s = f.status(now_ms()).await?;
            let current = s.target_capacity.unwrap_or(0);
            let target = i32::try_from(*target).context("target capacity")?;
            if target < current && !yes {
                let running = s.nodes.iter().filter(|n| n.state == "running").count();
                let q = format!(
                    "scale fleet {} from {current} to {target}: up to {} running node(s) will be terminated (their runs are interrupted). Go on?",
                    s.fleet_id,
                    running.saturating_sub(target as usize)
                );
                if !confirm(&q) {
                    bail!("not scaled down: confirm on a terminal, or pass --yes");
                }
            }
            f.scale(target).await?;
            let msg = if target == 0 { " (no GPU nodes, no spot charges)" } else { "" };
            writeln!(out, "fleet {}: target capacity {current} -> {target}{msg}", s.fleet_id)?;
        }
        FleetCommand::Idle { minutes, below_percent } => {
            let s = f.status(now_ms()).await?;
            let ids: Vec<String> =
                s.nodes.iter().filter(|n| n.state == "running").map(|n| n.instance_id.clone()).collect();
            let util = f.average(Metric::GpuUtilization, &ids, now_ms(), i64::from(*minutes)).await?;
            let idle: Vec<serde_json::Value> = ids
                .iter()
                .filter_map(|id| {
                    util.get(id)
                        .filter(|&&u| u < *below_percent)
                        .map(|u| serde_json::json!({ "instance_id": id, "gpu_utilization_percent": u }))
                })
                .collect();
            match output {
                Output::Json => json(out, &idle)?,
                Output::Text => {
                    writeln!(
                        out,
                        "nodes with GPU utilization below {below_percent}% over the last {minutes} min: {} of {}",
                        idle.len(),
                        ids.len()
                    )?;
                    for i in &idle {
                        writeln!(
                            out,
                            "  {}  {:.1}%",
                            i["instance_id"].as_str().unwrap_or("-"),
                            i["gpu_utilization_percent"].as_f64().unwrap_or(0.0)
                        )?;
                    }
                    if !idle.is_empty() && idle.len() == ids.len() {
                        writeln!(out, "the whole fleet is idle: `tap fleet scale 0` stops paying for it")?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tap launch`: plans, sends one command per node, follows them, and relaunches the whole
/// job with `--resume` when a node ends badly (reclaimed, GPU failure), up to `--restarts`
/// times, once the fleet has enough healthy nodes again.
pub async fn launch(
    stack: &StackConfig,
    a: &LaunchArgs,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let f = fleet(stack).await;
    let group = a.group.clone().unwrap_or_else(|| tap_core::runs::new_run_id(now_ms(), fastrand::u32(..)));
    let mut spec = LaunchSpec {
        nodes: usize::from(a.nodes),
        experiment: a.experiment.clone(),
        group: group.clone(),
        master_port: a.port,
        resume: a.resume,
        command: a.command.clone(),
        run_as: a.user.clone(),
    };
    let timeout = i32::try_from(a.timeout.as_secs()).unwrap_or(i32::MAX).clamp(60, 172_800);
    let mut restarts_left = a.restarts;
    let mut attempt = 0u32;
    loop {
        // Enough healthy nodes? After a reclaim the fleet replaces the node: wait (bounded).
        let wait_until = std::time::Instant::now() + a.wait;
        let (status, plan) = loop {
            let status = f.status(now_ms()).await?;
            match launch::plan(&status.nodes, &spec) {
                Ok(plan) => break (status, plan),
                // The first launch fails at once; a relaunch waits for replacements.
                Err(e) if attempt == 0 || std::time::Instant::now() >= wait_until => bail!("{e}"),
                Err(e) => {
                    eprintln!("tap: waiting for healthy nodes: {e}");
                    tokio::time::sleep(Duration::from_secs(15)).await;
                }
            }
        };
        attempt += 1;
        let sent = f.send(&plan, &format!("tap launch {group} #{attempt}"), timeout).await?;
        let summary = serde_json::json!({
            "group": group,
            "attempt": attempt,
            "experiment": a.experiment,
            "master": status.nodes.iter().find(|n| n.instance_id == plan[0].instance_id).and_then(|n| n.private_ip.clone()),
            "nodes": sent.iter().zip(&plan).map(|((i, c), p)| serde_json::json!({"instance_id": i, "command_id": c, "rank": p.rank})).collect::<Vec<_>>(),
        });
        match output {
            Output::Json => json(out, &summary)?,
            Output::Text => {
                writeln!(
                    out,
                    "launched {group} (attempt {attempt}) on {} node(s), experiment {}:",
                    sent.len(),
                    a.experiment
                )?;
                for ((i, c), p) in sent.iter().zip(&plan) {
                    writeln!(out, "  rank {}  {i}  command {c}", p.rank)?;
                }
                writeln!(out, "each node's run: tap runs list -e {}; its output: tap logs RUN --follow", a.experiment)?;
            }
        }
        out.flush()?;
        if a.no_follow {
            return Ok(ExitCode::SUCCESS);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(timeout as u64 + 300);
        let mut last: Vec<String> = vec![String::new(); sent.len()];
        let decision = loop {
            for (k, (instance, command)) in sent.iter().enumerate() {
                let s = f.invocation_status(command, instance).await.unwrap_or_else(|e| format!("Unknown ({e})"));
                if s != last[k] {
                    eprintln!("tap: rank {} on {instance}: {s}", plan[k].rank);
                    last[k] = s;
                }
            }
            match launch::decide(&last, restarts_left) {
                launch::Decision::Wait if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                launch::Decision::Wait => {
                    bail!("the job's commands did not end within their timeout; see `tap fleet status`")
                }
                d => break d,
            }
        };
        match decision {
            launch::Decision::Succeeded => return Ok(ExitCode::SUCCESS),
            launch::Decision::Relaunch | launch::Decision::GiveUp => {
                // All or nothing: the surviving ranks cannot go on without their peer.
                for ((_, command), s) in sent.iter().zip(&last) {
                    if !launch::is_final(s) {
                        let _ = f.cancel(command).await;
                    }
                }
                if decision == launch::Decision::GiveUp {
                    eprintln!(
                        "tap: a node of {group} ended badly and no restarts are left (--restarts {})",
                        a.restarts
                    );
                    return Ok(ExitCode::FAILURE);
                }
                restarts_left -= 1;
                spec.resume = true;
                eprintln!(
                    "tap: a node of {group} ended badly: relaunching every node from the latest checkpoint ({restarts_left} restarts left)"
                );
            }
            launch::Decision::Wait => unreachable!("handled in the loop"),
        }
    }
}
