//! `tap launch` (submit a managed job) and `tap jobs list|show|cancel|logs`. The job lives
//! in the stack's experiment table; the fleet's job controller (tap-agent) runs it. Nothing
//! here drives a job: every command reads or writes the table and returns.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tap_core::jobs::{JobRecord, JobSpec, JobState};
use tap_core::stack_config::StackConfig;
use tap_fleet::aws::Fleet;
use tap_store::jobs::{JobEntry, JobStore};

use crate::cli::{JobsCommand, LaunchArgs, Output};
use crate::commands::json;
use crate::now_ms;
use crate::store::cwlogs::CloudWatchLogs;
use crate::store::dynamo::DynamoStore;
use crate::store::{LogStore, RunStore};

/// How often `--follow` reads the job.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);
/// `--follow` gives up after a week (a bounded loop; the job goes on).
const FOLLOW_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The validated settings of `tap launch`, from its raw arguments.
pub fn settings(a: &LaunchArgs) -> anyhow::Result<JobSpec> {
    let spec = JobSpec {
        experiment: a.experiment.clone(),
        command: a.command.clone(),
        nodes: a.nodes,
        user: a.user.clone(),
        env: a.env.iter().cloned().collect(),
        master_port: a.port,
        restarts: a.restarts,
        retry_on_error: a.retry_on_error,
        timeout_s: u32::try_from(a.timeout.as_secs()).unwrap_or(u32::MAX),
        resume: a.resume,
        wait_s: u32::try_from(a.wait.as_secs()).unwrap_or(u32::MAX),
        allow_cross_az: a.allow_cross_az,
        tags: a.tags.iter().cloned().collect(),
    };
    if a.step_time.is_some_and(|t| t.is_zero()) {
        bail!("--step-time must be more than 0");
    }
    if let Some(problem) = spec.problem() {
        bail!("{problem}");
    }
    Ok(spec)
}

struct Stack {
    jobs: JobStore,
    runs: DynamoStore,
    logs: CloudWatchLogs,
    sdk: aws_config::SdkConfig,
}

async fn connect(stack: &StackConfig) -> Stack {
    let sdk = crate::commands::sdk_for(stack).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    Stack {
        jobs: JobStore::new(dynamo.clone(), &stack.table_name),
        runs: DynamoStore::new(dynamo, &stack.table_name),
        logs: CloudWatchLogs::new(aws_sdk_cloudwatchlogs::Client::new(&sdk), &stack.log_group),
        sdk,
    }
}

/// `tap launch`: validates, makes sure the fleet can run a controller and the job, queues the
/// job and returns its id (or follows it with `--follow`).
pub async fn launch(
    stack: &StackConfig,
    a: &LaunchArgs,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let spec = settings(a)?;
    let s = connect(stack).await;
    let fleet = Fleet::new(&s.sdk, stack);
    let status = fleet.describe().await?;
    let target = status.target_capacity.unwrap_or(0);
    let needed = i32::try_from(spec.nodes).context("--nodes")?;
    if target < needed {
        let q = format!(
            "fleet {} is at target capacity {target}; the job needs {needed} node(s). Raise the target to {needed} (spot GPUs are billed from boot)?",
            status.fleet_id
        );
        if a.yes || super::fleet::confirm(&q) {
            fleet.scale(needed).await?;
            eprintln!("tap: fleet {}: target capacity {target} -> {needed}", status.fleet_id);
        } else if target == 0 {
            bail!(
                "not submitted: fleet {} is at target capacity 0, so no node can run the job or its controller; confirm on a terminal, pass --yes, or `tap fleet scale {needed}`",
                status.fleet_id
            );
        } else {
            eprintln!(
                "tap: the job waits until the fleet has {needed} healthy nodes (its target is {target}; `tap fleet scale {needed}` raises it)"
            );
        }
    }
    if spec.allow_cross_az && spec.nodes > 1 {
        eprintln!("tap: {}", crossing_estimate(&s.jobs, &spec, a).await?);
    }
    let now = now_ms();
    let id = a.group.clone().unwrap_or_else(|| tap_core::runs::new_run_id(now, fastrand::u32(..)));
    let by =
        format!("{}@{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()), crate::supervisor::hostname());
    let job = JobRecord::new(&id, spec, &by, now);
    s.jobs.submit(&job).await.map_err(|e| match e {
        tap_store::StoreError::Conflict(_) => anyhow::anyhow!("job {id} exists already: pick another --group"),
        e => e.into(),
    })?;
    match output {
        Output::Json => json(
            out,
            &serde_json::json!({ "job": id, "state": "queued", "nodes": job.spec.nodes, "experiment": job.spec.experiment }),
        )?,
        Output::Text => writeln!(
            out,
            "job {id} queued: {} node(s), experiment {}\n  the fleet's job controller starts it once {} node(s) are healthy, and heals it after a reclaim; nothing here needs to keep running\n  tap jobs show {id}   tap jobs logs {id} --follow   tap jobs cancel {id}",
            job.spec.nodes, job.spec.experiment, job.spec.nodes
        )?,
    }
    out.flush()?;
    if a.follow {
        return follow(&s, &id, out).await;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_jobs(
    stack: &StackConfig,
    cmd: &JobsCommand,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let s = connect(stack).await;
    match cmd {
        JobsCommand::List { active } => {
            let jobs = listed(&s.jobs, *active).await?;
            match output {
                Output::Json => json(out, &jobs)?,
                Output::Text => out.write_all(crate::render::jobs_table(&jobs).as_bytes())?,
            }
        }
        JobsCommand::Show { job_id } => {
            let shown = shown(&s.jobs, &s.runs, job_id).await?;
            match output {
                Output::Json => json(out, &shown_json(&shown))?,
                Output::Text => out.write_all(shown_text(&shown).as_bytes())?,
            }
        }
        JobsCommand::Cancel { job_id } => {
            let (job, said) = cancel(&s.jobs, job_id).await?;
            match output {
                Output::Json => json(out, &cancel_json(&job))?,
                Output::Text => writeln!(out, "{said}")?,
            }
        }
        JobsCommand::Logs { job_id, follow } => {
            get(&s.jobs, job_id).await?;
            return super::print_logs(&s.runs, &s.logs, job_id, *follow, output, out).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tap jobs list`: the queue, newest first; a corrupt job is one warning.
pub(crate) async fn listed(jobs: &JobStore, active: bool) -> anyhow::Result<Vec<JobRecord>> {
    let mut out = Vec::new();
    for e in jobs.list(active).await? {
        match e {
            JobEntry::Job { job, .. } => out.push(*job),
            JobEntry::Corrupt { id, problem, .. } => {
                crate::say!("tap: warning: job {id} is corrupt ({problem}); skipped");
            }
        }
    }
    out.reverse(); // newest first
    Ok(out)
}

/// What `tap jobs show` tells of a job.
pub(crate) struct Shown {
    pub job: JobRecord,
    pub ranks: Vec<tap_core::runs::Run>,
    pub goodput: Option<crate::commands::goodput::RunGoodput>,
}

pub(crate) async fn shown(jobs: &JobStore, runs: &DynamoStore, id: &str) -> anyhow::Result<Shown> {
    let mut job = get(jobs, id).await?;
    let ranks = runs.list_runs(Some(&job.spec.experiment)).await?.runs;
    tap_core::jobs::restored_by_ranks(&mut job, &ranks);
    let goodput = job_goodput(runs, &job).await?;
    Ok(Shown { job, ranks, goodput })
}

/// `tap jobs show JOB --output json`.
pub(crate) fn shown_json(s: &Shown) -> serde_json::Value {
    serde_json::json!({
        "job": s.job,
        "downtimes_ms": s.job.downtimes_ms(),
        "network": s.job.network(),
        "goodput": s.goodput.as_ref().map(crate::commands::goodput::brief),
    })
}

/// `tap jobs show JOB`.
pub(crate) fn shown_text(s: &Shown) -> String {
    let mut t = crate::render::job_story(&s.job, now_ms());
    if let Some(g) = &s.goodput {
        t.push_str(&crate::render::goodput_brief(g));
    }
    t.push_str(&crate::render::sharded_job(&s.job.id, &s.ranks));
    t
}

/// `tap jobs cancel JOB`: the job as stored after the request, and what to say of it.
pub(crate) async fn cancel(jobs: &JobStore, job_id: &str) -> anyhow::Result<(JobRecord, String)> {
    let job = jobs.request_cancel(job_id, now_ms()).await.map_err(|e| match e {
        tap_store::StoreError::NotFound(_) => anyhow::anyhow!("no job {job_id} (tap jobs list)"),
        e => e.into(),
    })?;
    let said = if job.state.is_final() {
        format!("job {job_id} has ended already ({})", job.state.as_str())
    } else {
        format!(
            "job {job_id}: cancel requested; the fleet's job controller stops its ranks within ~{} s (tap jobs show {job_id})",
            tap_core::lease::RENEW_EVERY_MS / 1000 + 10
        )
    };
    Ok((job, said))
}

/// `tap jobs cancel JOB --output json`.
pub(crate) fn cancel_json(job: &JobRecord) -> serde_json::Value {
    serde_json::json!({ "job": job.id, "state": job.state, "cancel_requested_ms": job.cancel_requested_ms })
}

/// AZs a region has at least (the stack's three private subnets).
const STACK_AZS: u32 = 3;

/// What crossing AZs would cost the job an hour at worst (its ranks over the stack's three
/// AZs), from `--traffic-per-step` and `--step-time`, or from the traffic measured on the
/// experiment's latest job that has any.
async fn crossing_estimate(jobs: &JobStore, spec: &JobSpec, a: &LaunchArgs) -> anyhow::Result<String> {
    let zones = STACK_AZS.min(spec.nodes);
    let hops = tap_core::jobs::crossing_hops(spec.nodes, zones);
    let head = format!(
        "--allow-cross-az: if its {} ranks span {zones} AZs, {hops} of the ring's {} hops cross an AZ",
        spec.nodes, spec.nodes
    );
    let per_rank_hour = match (a.traffic_per_step, a.step_time) {
        (Some(bytes), Some(step)) => Some((
            bytes * 3600.0 / step.as_secs_f64(),
            format!("{:.2} GB per rank per step, a step every {:.2} s", bytes / tap_core::jobs::GB, step.as_secs_f64()),
        )),
        _ => measured_rate(jobs, &spec.experiment).await?,
    };
    Ok(match per_rank_hour {
        Some((rate, from)) => format!(
            "{head}: ≈ ${:.2}/hour at ${}/GB each way ({from}); it runs in one AZ whenever one AZ has {} healthy nodes",
            tap_core::jobs::cross_az_usd_per_hour(spec.nodes, zones, rate),
            tap_core::jobs::CROSS_AZ_USD_PER_GB_EACH_WAY,
            spec.nodes
        ),
        None => format!(
            "{head}, at ${}/GB each way; its cost per hour is unknown until you pass --traffic-per-step and --step-time, or a job of experiment {} has run",
            tap_core::jobs::CROSS_AZ_USD_PER_GB_EACH_WAY,
            spec.experiment
        ),
    })
}

/// Bytes per rank per hour that the experiment's latest job with measured traffic sent, and
/// where that figure comes from.
async fn measured_rate(jobs: &JobStore, experiment: &str) -> anyhow::Result<Option<(f64, String)>> {
    let mut latest: Option<JobRecord> = None;
    for e in jobs.list(false).await? {
        if let JobEntry::Job { job, .. } = e
            && job.spec.experiment == experiment
            && job.network().measured_attempts > 0
            && latest.as_ref().is_none_or(|l| l.submitted_ms < job.submitted_ms)
        {
            latest = Some(*job);
        }
    }
    let Some(job) = latest else { return Ok(None) };
    let (mut bytes, mut rank_ms) = (0u64, 0i64);
    for at in job.attempts.iter().filter(|at| at.traffic.is_some()) {
        let ran = at.ended_ms.unwrap_or(job.updated_ms) - at.started_ms;
        bytes += at.traffic.iter().flatten().map(|t| t.bytes_out).sum::<u64>();
        rank_ms += ran.max(0) * at.nodes.len() as i64;
    }
    if rank_ms < 60_000 {
        return Ok(None);
    }
    let rate = bytes as f64 * 3_600_000.0 / rank_ms as f64;
    Ok(Some((rate, format!("{:.2} GB per rank per hour measured on job {}", rate / tap_core::jobs::GB, job.id))))
}

/// The job's goodput so far, from its run record (None before the controller wrote one).
async fn job_goodput(
    runs: &DynamoStore,
    job: &JobRecord,
) -> anyhow::Result<Option<crate::commands::goodput::RunGoodput>> {
    let now = now_ms();
    let seen =
        crate::commands::goodput::Seen::of(crate::commands::trainings(runs, None).await?, &job.spec.experiment, now);
    let Some(run) = seen.run(&job.id) else { return Ok(None) };
    Ok(Some(crate::commands::goodput::report(runs, &run, &seen, now).await?))
}

async fn get(jobs: &JobStore, id: &str) -> anyhow::Result<JobRecord> {
    match jobs.get(id).await? {
        Some(JobEntry::Job { job, .. }) => Ok(*job),
        Some(JobEntry::Corrupt { problem, state, .. }) => {
            let marked = if state.as_deref() == Some("failed") { "; the controller marked it failed" } else { "" };
            bail!("job {id} is corrupt: {problem}{marked}")
        }
        None => bail!("no job {id} (tap jobs list)"),
    }
}

/// `--follow`: prints the job's state changes, each attempt and how it ended, and rank 0's
/// output, until the job ends (exit 0 when it succeeded, 1 otherwise). Ctrl-C stops
/// watching (exit 130); the job goes on.
async fn follow(s: &Stack, id: &str, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut said = String::new();
    let mut reported_attempts = 0usize;
    let mut ended_attempts = 0usize;
    let mut printed: (u32, usize) = (0, 0);
    let started = std::time::Instant::now();
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    while started.elapsed() < FOLLOW_LIMIT {
        let job = get(&s.jobs, id).await?;
        let line = match (&job.waiting, job.state) {
            (Some(w), JobState::Queued | JobState::Recovering) => format!("{}: {w}", job.state.as_str()),
            (_, st) => st.as_str().to_owned(),
        };
        if line != said {
            writeln!(out, "job {id}: {line}")?;
            said = line;
        }
        for a in job.attempts.iter().skip(reported_attempts) {
            let nodes: Vec<String> = a.nodes.iter().map(|n| format!("rank {} {}", n.rank, n.instance_id)).collect();
            let from = a.resumed_from.as_deref().map(|c| format!(", resuming from {c}")).unwrap_or_default();
            writeln!(out, "attempt {} on {}{from}", a.number, nodes.join(", "))?;
            reported_attempts += 1;
        }
        // Rank 0's output of the current attempt.
        if let Some(a) = job.current() {
            if printed.0 != a.number {
                printed = (a.number, 0);
            }
            let record = s.runs.get_run(&job.spec.experiment, id).await?;
            let rank0 = record
                .and_then(|r| r.job)
                .filter(|j| j.attempt == a.number)
                .and_then(|j| j.nodes.into_iter().find(|n| n.rank == 0))
                .and_then(|n| n.run_id);
            if let Some(run) = rank0 {
                let lines = s.logs.logs(&job.spec.experiment, &run).await?;
                for l in lines.iter().skip(printed.1) {
                    writeln!(out, "  {}", l.text)?;
                }
                printed.1 = printed.1.max(lines.len());
            }
        }
        for a in job.attempts.iter().skip(ended_attempts) {
            let Some(end) = &a.end else { break };
            writeln!(out, "attempt {} ended: {}", a.number, end.describe())?;
            ended_attempts += 1;
        }
        out.flush()?;
        if job.state.is_final() {
            writeln!(out, "job {id} {}: {}", job.state.as_str(), job.outcome.as_deref().unwrap_or("-"))?;
            return Ok(if job.state == JobState::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = &mut interrupt => {
                eprintln!("tap: stopped watching; job {id} goes on (tap jobs show {id})");
                return Ok(ExitCode::from(130));
            }
        }
    }
    eprintln!("tap: stopped watching after a week; job {id} goes on");
    Ok(ExitCode::SUCCESS)
}
