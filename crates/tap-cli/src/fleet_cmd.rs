//! `tap fleet status|scale|idle` and `tap launch`: the stack's spot fleet through EC2, SSM Run
//! Command and the agents' metrics (crate tap-fleet). They need an imported stack.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tap_core::runs::{Job, JobNode, Run, RunStatus};
use tap_core::stack_config::StackConfig;
use tap_fleet::aws::Fleet;
use tap_fleet::idle::{self, IdleRule};
use tap_fleet::launch::{self, LaunchSpec};

use crate::cli::{FleetCommand, LaunchArgs, Output};
use crate::commands::json;
use crate::now_ms;
use crate::store::RunStore;
use crate::store::dynamo::DynamoStore;

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
            let s = f.describe().await?; // EC2 alone: the target and the running nodes
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
            let rule = IdleRule { minutes: i64::from(*minutes), below_percent: *below_percent };
            let view = f.idle_verdict(None, now_ms(), &rule).await?;
            let verdict = view.verdict;
            let nodes: Vec<_> = view
                .status
                .nodes
                .iter()
                .filter(|n| n.state == "running")
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
    let sdk = crate::commands::sdk_for(stack).await;
    let f = Fleet::new(&sdk, stack);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &stack.table_name);
    let started = now_ms();
    let group = a.group.clone().unwrap_or_else(|| tap_core::runs::new_run_id(now_ms(), fastrand::u32(..)));
    let mut spec = LaunchSpec {
        nodes: usize::from(a.nodes),
        experiment: a.experiment.clone(),
        group: group.clone(),
        master_port: a.port,
        resume: a.resume,
        command: a.command.clone(),
        run_as: a.user.clone(),
        attempt: 0,
        env: Vec::new(),
    };
    let timeout = i32::try_from(a.timeout.as_secs()).unwrap_or(i32::MAX).clamp(60, 172_800);
    let mut restarts_left = a.restarts;
    let mut attempt = 0u32;
    loop {
        // Enough healthy nodes? After a reclaim the fleet replaces the node: wait (bounded).
        let wait_until = std::time::Instant::now() + a.wait;
        spec.attempt = attempt + 1;
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
        // The job's record first: a node's run may start before SendCommand returns.
        record_attempt(&store, &spec, &f.fleet_id, &plan, started).await?;
        let sent = f.send(&plan, &format!("tap launch {group} #{attempt}"), timeout).await?;
        store
            .update_run(&spec.experiment, &group, |r| {
                for n in r.job.iter_mut().flat_map(|j| j.nodes.iter_mut()) {
                    if let Some((_, c)) = sent.iter().find(|(i, _)| *i == n.instance_id) {
                        n.command_id.clone_from(c);
                    }
                }
            })
            .await?;
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
                writeln!(
                    out,
                    "the job: tap runs show {group}; its output (rank 0): tap logs {group} --follow; every node's run: tap runs list --group {group}"
                )?;
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
        let end = |status: RunStatus| {
            store.update_run(&spec.experiment, &group, move |r| {
                r.status = status;
                r.ended_ms = r.ended_ms.or(Some(now_ms()));
            })
        };
        match decision {
            launch::Decision::Succeeded => {
                end(RunStatus::Succeeded).await?;
                return Ok(ExitCode::SUCCESS);
            }
            launch::Decision::Relaunch | launch::Decision::GiveUp => {
                // All or nothing: the surviving ranks cannot go on without their peer.
                for ((_, command), s) in sent.iter().zip(&last) {
                    if !launch::is_final(s) {
                        let _ = f.cancel(command).await;
                    }
                }
                if decision == launch::Decision::GiveUp {
                    end(RunStatus::Failed).await?;
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

/// Writes the job's record for a new attempt: created on the first launch (its run id is the
/// group id every node run carries), and on a relaunch the new nodes replace the old ones.
async fn record_attempt<R: RunStore>(
    store: &R,
    spec: &LaunchSpec,
    fleet_id: &str,
    plan: &[launch::NodeCommand],
    started: i64,
) -> anyhow::Result<()> {
    let job = Job {
        fleet_id: fleet_id.to_owned(),
        attempt: spec.attempt,
        nodes: plan
            .iter()
            .map(|p| JobNode {
                rank: p.rank as u32,
                instance_id: p.instance_id.clone(),
                command_id: String::new(),
                run_id: None,
                status: RunStatus::Queued,
            })
            .collect(),
    };
    if store.get_run(&spec.experiment, &spec.group).await?.is_some() {
        store
            .update_run(&spec.experiment, &spec.group, |r| {
                r.job = Some(job.clone());
                r.status = RunStatus::Queued;
                r.ended_ms = None;
            })
            .await?;
    } else {
        let record = Run {
            status: RunStatus::Queued,
            job: Some(job),
            ..Run::new(&spec.experiment, &spec.group, spec.command.clone(), &format!("fleet {fleet_id}"), started)
        };
        store.create_run(&record).await?;
    }
    Ok(())
}
