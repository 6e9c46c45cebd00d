//! Command implementations, generic over the backends: the local store (SQLite + a
//! directory) by default, the stack's DynamoDB / SSM / CloudWatch Logs / S3 once imported.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use tap_core::runs::Run;
use tap_core::stack_config::StackConfig;

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint;
use crate::artifacts::checkpoint::Space;
use crate::artifacts::local::LocalStore;
use crate::artifacts::s3::S3Store;
use crate::artifacts::transfer::TransferOptions;
use crate::cli::{
    ArtifactsCommand, CheckpointsCommand, Cli, Command, ConfigCommand, Output, ParamsCommand, RunsCommand, StackCommand,
};
use crate::config::{self, TapConfig};
use crate::store::cwlogs::CloudWatchLogs;
use crate::store::dynamo::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::ssm::SsmParams;
use crate::store::{LogStore, ParamStore, RunStore};
use crate::supervisor::{self, RunOptions};
use crate::{plot, render};

pub(crate) fn json(out: &mut dyn Write, v: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Object keys of the stack's artifacts bucket live under this prefix.
pub const BUCKET_PREFIX: &str = "tap";

pub async fn dispatch(cli: &Cli, home: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let config_path = config::path(cli.global.config.clone())?;
    // Regression: a broken config file blocked the two ways out of it too. `stack import` and
    // `stack forget` replace the file whatever it holds, and `--local` does not read it.
    let reads_config = match &cli.command {
        Command::Stack(_) => false,
        #[cfg(feature = "fleet")]
        Command::Fleet(_) | Command::Launch(_) | Command::Jobs(_) => true,
        Command::Config(_) => true,
        _ => !cli.global.local,
    };
    let config = if reads_config {
        config::load(&config_path).map_err(|e| {
            anyhow::anyhow!("{e:#} (fix the file, or `tap stack forget` to drop it; `--local` ignores it)")
        })?
    } else {
        TapConfig::default()
    };
    match &cli.command {
        Command::Stack(StackCommand::Import { file }) => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
                s
            } else {
                std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
            };
            let stack = StackConfig::from_terraform_output(&text)?;
            let summary = format!(
                "imported stack {} ({}): table {}, bucket {}, parameters {}, logs {}",
                stack.stack,
                stack.region,
                stack.table_name,
                stack.artifacts_bucket,
                stack.hparam_prefix,
                stack.log_group
            );
            config::save(&config_path, &TapConfig { stack: Some(stack) })?;
            writeln!(out, "{summary}\nwritten to {}", config_path.display())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Stack(StackCommand::Forget) => {
            config::save(&config_path, &TapConfig::default())?;
            writeln!(out, "no stack: tap uses the local store in {}", home.display())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Config(ConfigCommand::Show) => {
            show_config(&config, &config_path, home, cli.global.local, cli.global.output, out)?;
            return Ok(ExitCode::SUCCESS);
        }
        #[cfg(feature = "fleet")]
        Command::Fleet(f) => {
            let stack = need_stack(config.stack.as_ref(), "tap fleet")?;
            return crate::fleet_cmd::run_fleet(stack, f, cli.global.output, out).await;
        }
        #[cfg(feature = "fleet")]
        Command::Launch(a) => {
            let stack = need_stack(config.stack.as_ref(), "tap launch")?;
            return crate::jobs_cmd::launch(stack, a, cli.global.output, out).await;
        }
        #[cfg(feature = "fleet")]
        Command::Jobs(j) => {
            let stack = need_stack(config.stack.as_ref(), "tap jobs")?;
            return crate::jobs_cmd::run_jobs(stack, j, cli.global.output, out).await;
        }
        _ => {}
    }
    match config.stack.filter(|_| !cli.global.local) {
        Some(stack) => {
            let sdk = sdk_for(&stack).await;
            // A local endpoint (moto, MinIO) has no per-bucket DNS names.
            let path_style = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"].iter().any(|k| std::env::var_os(k).is_some());
            let s3 = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).build(),
            );
            let runs = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &stack.table_name);
            let params = SsmParams::new(aws_sdk_ssm::Client::new(&sdk), &stack.hparam_prefix, None);
            let logs = CloudWatchLogs::new(aws_sdk_cloudwatchlogs::Client::new(&sdk), &stack.log_group);
            let transfer = match &cli.command {
                Command::Artifacts(
                    ArtifactsCommand::Push { transfer, .. } | ArtifactsCommand::Pull { transfer, .. },
                ) => TransferOptions { part_size: transfer.part_size, concurrency: usize::from(transfer.concurrency) },
                _ => TransferOptions::default(),
            };
            let objects = S3Store::new(s3, &stack.artifacts_bucket, BUCKET_PREFIX).with_transfer(
                crate::artifacts::s3::SINGLE_PUT_MAX.min(transfer.part_size),
                transfer,
                &home.join("transfers"),
            );
            execute(cli, home, &runs, &params, &logs, &objects, out).await
        }
        None => {
            let store = SqliteStore::open(&home.join("tap.db"))?;
            let objects = LocalStore::new(&home.join("artifacts"));
            execute(cli, home, &store, &store, &store, &objects, out).await
        }
    }
}

/// AWS settings for the stack's region (endpoint, credentials and profile from the standard chain).
pub(crate) async fn sdk_for(stack: &StackConfig) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(stack.region.clone()))
        .load()
        .await
}

#[cfg(feature = "fleet")]
fn need_stack<'a>(stack: Option<&'a StackConfig>, what: &str) -> anyhow::Result<&'a StackConfig> {
    stack.context(format!("{what} needs a deployed stack: terraform -chdir=infra output -json | tap stack import"))
}

fn show_config(
    config: &TapConfig,
    path: &Path,
    home: &Path,
    local: bool,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let profile = std::env::var("AWS_PROFILE").ok();
    let backend = match (&config.stack, local) {
        (Some(s), false) => format!("stack {} in {}", s.stack, s.region),
        _ => format!("local store in {}", home.display()),
    };
    match output {
        Output::Json => json(
            out,
            &serde_json::json!({ "config_file": path, "backend": backend, "stack": config.stack, "home": home,
                "aws_endpoint_url": endpoint, "aws_profile": profile }),
        )?,
        Output::Text => {
            writeln!(out, "config file:  {}", path.display())?;
            writeln!(out, "backend:      {backend}")?;
            if let Some(s) = &config.stack {
                writeln!(out, "table:        {}", s.table_name)?;
                writeln!(out, "parameters:   {}/*", s.hparam_prefix)?;
                writeln!(out, "checkpoints:  s3://{}/{BUCKET_PREFIX}/checkpoints/", s.artifacts_bucket)?;
                writeln!(out, "logs:         {}", s.log_group)?;
            }
            writeln!(out, "AWS endpoint: {}", endpoint.as_deref().unwrap_or("(AWS)"))?;
            writeln!(out, "AWS profile:  {}", profile.as_deref().unwrap_or("(default chain)"))?;
        }
    }
    Ok(())
}

/// The runs of a listing, after one warning per record it left out.
fn listed(listing: crate::store::Runs) -> Vec<Run> {
    for s in &listing.skipped {
        crate::say!("tap: warning: {s}");
    }
    listing.runs
}

/// A run by id, in any experiment.
async fn find_run<R: RunStore>(runs: &R, run_id: &str) -> anyhow::Result<Run> {
    let mut all = listed(runs.list_runs(None).await?);
    crate::liveness::observe(&mut all);
    let matches: Vec<Run> = all.into_iter().filter(|r| r.run_id == run_id).collect();
    match matches.len() {
        0 => bail!("no run {run_id} (see `tap runs list`)"),
        1 => Ok(matches.into_iter().next().context("run")?),
        n => bail!("run id {run_id} exists in {n} experiments"),
    }
}

async fn execute<R, P, L, O>(
    cli: &Cli,
    home: &Path,
    runs: &R,
    params_store: &P,
    logs: &L,
    objects: &O,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode>
where
    R: RunStore,
    P: ParamStore,
    L: LogStore,
    O: ObjectStore + Clone + 'static,
{
    let output = cli.global.output;
    match &cli.command {
        Command::Contract | Command::Stack(_) | Command::Config(_) => {
            unreachable!("handled before a backend is chosen")
        }
        #[cfg(feature = "fleet")]
        Command::Fleet(_) | Command::Launch(_) | Command::Jobs(_) => {
            unreachable!("handled before a backend is chosen")
        }
        Command::Logs { run_id, follow } => {
            return print_logs(runs, logs, run_id, *follow, output, out).await;
        }
        Command::Run(a) => {
            let opts = RunOptions {
                experiment: a.experiment.clone(),
                resume: a.resume,
                command: a.command.clone(),
                interrupt_signal: a.interrupt_signal,
                checkpoint_deadline: a.checkpoint_deadline,
                notice_file: a.notice_file.clone(),
                runtime: supervisor::runtime_dir(a.runtime_dir.as_deref()),
                runs_dir: supervisor::default_runs_dir(home),
                host: supervisor::hostname(),
                instance_id: supervisor::instance_id().await,
            };
            if let Some(reason) = supervisor::draining(&opts) {
                eprintln!("tap: this node takes no new work ({reason}); start the run on another node");
                return Ok(ExitCode::from(supervisor::EXIT_INTERRUPTED));
            }
            let outcome = supervisor::run(runs, params_store, logs, objects, &opts).await?;
            return Ok(ExitCode::from(outcome.exit_code));
        }
        Command::Runs(RunsCommand::List { experiment, group }) => {
            let mut list = listed(runs.list_runs(experiment.as_deref()).await?);
            crate::liveness::observe(&mut list);
            if let Some(g) = group {
                // The job's own record and its node runs.
                list.retain(|r| r.group.as_ref() == Some(g) || (r.job.is_some() && &r.run_id == g));
            }
            match output {
                Output::Json => json(out, &list)?,
                Output::Text => out.write_all(render::runs_table(&list).as_bytes())?,
            }
        }
        Command::Runs(RunsCommand::Show { run_id }) => {
            let run = find_run(runs, run_id).await?;
            let points = runs.metrics(&run.experiment_id, &run.run_id).await?;
            match output {
                Output::Json => json(out, &serde_json::json!({ "run": run, "metrics": points }))?,
                Output::Text => out.write_all(render::run_details(&run, &points).as_bytes())?,
            }
        }
        Command::Runs(RunsCommand::Compare { run_ids }) => {
            let mut list = Vec::new();
            for id in run_ids {
                list.push(find_run(runs, id).await?);
            }
            match output {
                Output::Json => json(out, &list)?,
                Output::Text => out.write_all(render::compare(&list).as_bytes())?,
            }
        }
        Command::Runs(RunsCommand::Plot { run_ids, metric, out: file, size, log_y }) => {
            let mut data = Vec::new();
            for id in run_ids {
                let run = find_run(runs, id).await?;
                let points = runs.metrics(&run.experiment_id, &run.run_id).await?;
                data.push(plot::RunMetrics { run_id: run.run_id, points });
            }
            let panels = plot::panels(&data, metric)?;
            let title = format!("tap runs: {}", run_ids.join(", "));
            let drawn = if *log_y { plot::log_y(&panels) } else { Vec::new() };
            let png = plot::render_png(&title, if *log_y { &drawn } else { &panels }, *size, *log_y)?;
            let file = file.clone().unwrap_or_else(|| PathBuf::from(format!("{}.png", data[0].run_id)));
            tap_core::fsutil::write_atomic(&file, &png).with_context(|| format!("writing {}", file.display()))?;
            let names: Vec<&str> = panels.iter().map(|p| p.metric.as_str()).collect();
            match output {
                Output::Json => json(out, &serde_json::json!({ "file": file, "metrics": names, "runs": run_ids }))?,
                Output::Text => {
                    for p in &panels {
                        for l in &p.lines {
                            let values: Vec<f64> = l.points.iter().map(|&(_, v)| v).collect();
                            writeln!(out, "{:<24} {:<26} {}", p.metric, l.label, render::sparkline(&values, 40))?;
                        }
                    }
                    writeln!(
                        out,
                        "wrote {} ({}x{}, {} metrics, {} runs)",
                        file.display(),
                        size.0,
                        size.1,
                        names.len(),
                        data.len()
                    )?;
                }
            }
        }
        Command::Params(p) => params(params_store, p, output, out).await?,
        Command::Artifacts(a) => artifacts(objects, a, output, out).await?,
        Command::Checkpoints(CheckpointsCommand::Latest { experiment }) => {
            let m = checkpoint::latest(objects, experiment).await?;
            match (output, m) {
                (Output::Json, m) => json(out, &m)?,
                (Output::Text, None) => writeln!(out, "experiment {experiment} has no checkpoint yet")?,
                (Output::Text, Some(m)) => {
                    let step = m.step.map_or("-".into(), |s| s.to_string());
                    writeln!(out, "checkpoint {} of run {} (step {step})", m.checkpoint_id, m.run_id)?;
                    for f in &m.files {
                        writeln!(out, "  {:>12}  {}  {}", f.size, &f.sha256[..12], f.path)?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn params<P: ParamStore>(
    store: &P,
    cmd: &ParamsCommand,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let rows = match cmd {
        ParamsCommand::List => store.list_params().await?,
        ParamsCommand::Get { name } => {
            vec![
                store
                    .get_param(name)
                    .await?
                    .with_context(|| format!("no hyperparameter {name} (see `tap params list`)"))?,
            ]
        }
        ParamsCommand::Set { name, value } => {
            // Regression: `a.b` and `a_b` were both accepted and shadowed each other as
            // TAP_HP_A_B in the command's environment.
            let existing = store.list_params().await?;
            let env = crate::supervisor::hparam_env_name(name);
            if let Some(other) =
                existing.iter().find(|p| p.name != *name && crate::supervisor::hparam_env_name(&p.name) == env)
            {
                bail!(
                    "hyperparameter {name} would share {env} with {} in the command's environment; use another name (or `tap params set {} ...`)",
                    other.name,
                    other.name
                );
            }
            vec![store.set_param(name, value).await?]
        }
        ParamsCommand::History { name } => {
            let h = store.param_history(name).await?;
            if h.is_empty() {
                bail!("no hyperparameter {name} (see `tap params list`)");
            }
            h
        }
    };
    match (output, cmd) {
        (Output::Json, _) => json(out, &rows)?,
        (Output::Text, ParamsCommand::Get { .. }) => writeln!(out, "{}", rows[0].value)?,
        (Output::Text, _) => {
            writeln!(out, "{:<28} {:>7}  {:<22} VALUE", "NAME", "VERSION", "MODIFIED")?;
            for p in rows {
                writeln!(
                    out,
                    "{:<28} {:>7}  {:<22} {}",
                    p.name,
                    p.version,
                    tap_core::time::rfc3339(p.modified_ms),
                    p.value
                )?;
            }
        }
    }
    Ok(())
}

/// Shows a byte progress bar (with throughput) on stderr while `work` runs; hidden when
/// stderr is not a terminal.
async fn with_progress<O: ObjectStore, T>(
    objects: &O,
    total: u64,
    label: &str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    let start = objects.bytes_moved();
    tokio::pin!(work);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => bar.set_position((objects.bytes_moved() - start).min(total)),
        }
    };
    bar.finish_and_clear();
    result
}

async fn artifacts<O: ObjectStore + Clone + 'static>(
    objects: &O,
    cmd: &ArtifactsCommand,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        ArtifactsCommand::Push { path, name, .. } => {
            let name = match name {
                Some(n) => n.clone(),
                None => path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .filter(|n| tap_core::runs::valid_name(n))
                    .context("give the artifact a --name (letters, digits, '_', '.' or '-')")?
                    .to_owned(),
            };
            if !path.exists() {
                bail!("{}: no such file or directory", path.display());
            }
            // Regressions: a FIFO said "Not a directory"; an empty directory was pushed and
            // pulled back as nothing.
            if !path.is_dir() && !path.is_file() {
                bail!(
                    "{}: not a regular file or directory (a FIFO, socket or device); tap pushes files and directories",
                    path.display()
                );
            }
            let total = if path.is_dir() {
                let files = checkpoint::list_files(path)?;
                if files.is_empty() {
                    bail!("{}: an empty directory (or only hidden and .tmp files): nothing to push", path.display());
                }
                files.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
            } else {
                std::fs::metadata(path).map_or(0, |m| m.len())
            };
            let version = tap_core::runs::new_run_id(crate::now_ms(), fastrand::u32(..));
            let started = std::time::Instant::now();
            let m = with_progress(
                objects,
                total,
                &format!("push {name}"),
                checkpoint::save_in(objects, Space::Artifacts, &name, "push", &version, None, path),
            )
            .await?;
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            match output {
                Output::Json => json(out, &m)?,
                Output::Text => writeln!(out, "pushed {name} version {version}: {}", transfer_summary(&m, secs))?,
            }
        }
        ArtifactsCommand::Pull { name, dest, .. } => {
            let m = checkpoint::latest_in(objects, Space::Artifacts, name)
                .await?
                .with_context(|| format!("no artifact {name} (see `tap artifacts ls`)"))?;
            let dest = dest.clone().unwrap_or_else(|| std::path::PathBuf::from(name));
            let started = std::time::Instant::now();
            with_progress(
                objects,
                m.total_bytes(),
                &format!("pull {name}"),
                checkpoint::restore_in(objects, Space::Artifacts, &m, &dest),
            )
            .await?;
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            match output {
                Output::Json => json(out, &m)?,
                Output::Text => writeln!(
                    out,
                    "pulled {name} version {} into {}: {}, all verified",
                    m.checkpoint_id,
                    dest.display(),
                    transfer_summary(&m, secs)
                )?,
            }
        }
        ArtifactsCommand::Ls => {
            let mut names: Vec<String> = objects
                .list("artifacts/")
                .await?
                .into_iter()
                .filter_map(|o| o.key.strip_prefix("artifacts/").and_then(|k| k.split('/').next()).map(str::to_owned))
                .collect();
            names.dedup();
            let mut latest = Vec::new();
            for n in names {
                // Regression: one corrupt manifest made `artifacts ls` fail without naming it.
                match checkpoint::latest_in(objects, Space::Artifacts, &n).await {
                    Ok(Some(m)) => latest.push(m),
                    Ok(None) => {}
                    Err(e) => crate::say!("tap: warning: artifact {n}: {}; left out", tap_core::text::chain(&e)),
                }
            }
            match output {
                Output::Json => json(out, &latest)?,
                Output::Text => {
                    writeln!(out, "{:<28} {:<26} {:>6} {:>14}  CREATED", "NAME", "VERSION", "FILES", "BYTES")?;
                    for m in latest {
                        writeln!(
                            out,
                            "{:<28} {:<26} {:>6} {:>14}  {}",
                            m.experiment_id,
                            m.checkpoint_id,
                            m.files.len(),
                            m.total_bytes(),
                            tap_core::time::rfc3339(m.created_ms)
                        )?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// "3 files, 1048576 bytes in 0.4 s (2.6 MB/s)"
fn transfer_summary(m: &tap_core::manifest::Manifest, secs: f64) -> String {
    format!(
        "{} files, {} bytes in {secs:.1} s ({:.1} MB/s)",
        m.files.len(),
        m.total_bytes(),
        m.total_bytes() as f64 / secs / 1e6
    )
}

/// `tap logs RUN` (and `tap jobs logs JOB`): a run's output, or a multi-node job's rank 0's;
/// `follow` prints new lines until the run ends.
pub(crate) async fn print_logs<R: RunStore, L: LogStore>(
    runs: &R,
    logs: &L,
    run_id: &str,
    follow: bool,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut run = find_run(runs, run_id).await?;
    // A multi-node job's output is its rank 0's (each node's: tap logs <its run>).
    if let Some(job) = &run.job {
        let rank0 = job.nodes.iter().find(|n| n.rank == 0).and_then(|n| n.run_id.clone()).with_context(|| {
            format!("job {run_id}: rank 0 has not started its run yet (see `tap runs show {run_id}`)")
        })?;
        run =
            crate::liveness::observed(runs.get_run(&run.experiment_id, &rank0).await?.context("the job's rank 0 run")?);
    }
    let mut printed = 0;
    // Bounded: a followed run that never ends is given up on after a week.
    for _ in 0..(7 * 24 * 3600 / 2) {
        let now = runs.get_run(&run.experiment_id, &run.run_id).await?.map(crate::liveness::observed);
        let lost = now.as_ref().is_some_and(|r| r.status == tap_core::runs::RunStatus::Lost);
        let done = !follow
            || now.is_none_or(|r| {
                !matches!(r.status, tap_core::runs::RunStatus::Running | tap_core::runs::RunStatus::Queued)
            });
        let lines = logs.logs(&run.experiment_id, &run.run_id).await?;
        match output {
            Output::Json => json(out, &lines.iter().skip(printed).collect::<Vec<_>>())?,
            Output::Text => {
                for l in lines.iter().skip(printed) {
                    let tag = if l.stream == crate::store::Stream::Stderr { "[stderr] " } else { "" };
                    writeln!(out, "{tag}{}", l.text)?;
                }
            }
        }
        printed = printed.max(lines.len());
        if done && follow && lost {
            match output {
                Output::Json => json(out, &serde_json::json!({ "run": run.run_id, "status": "lost" }))?,
                Output::Text => writeln!(
                    out,
                    "tap: run {} is lost: its tap run stopped without recording an end (killed, or its node \
                         went away); `tap run --resume -e {}` continues from its last checkpoint",
                    run.run_id, run.experiment_id
                )?,
            }
        }
        out.flush()?;
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    Ok(ExitCode::SUCCESS)
}
