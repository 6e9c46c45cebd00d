//! The commands: one module each, generic over the backends — the local store (SQLite + a
//! directory) by default, the stack's DynamoDB / SSM / CloudWatch Logs / S3 once imported.
//! This module reads the configuration, chooses the backends and routes; each command's
//! module turns its clap arguments into checked settings, acts, and hands what it shows to
//! `render` (tables) or [`json`].

mod artifacts;
pub(crate) mod checkpoints;
pub(crate) mod contract;
#[cfg(feature = "fleet")]
pub(crate) mod fleet;
mod gc;
pub(crate) mod goodput;
#[cfg(feature = "fleet")]
pub(crate) mod jobs;
mod logs;
mod manual;
mod params;
#[cfg(feature = "fleet")]
pub(crate) mod pools;
mod run;
pub(crate) mod runs;
mod show_config;
pub(crate) mod simulate;
mod stack;

#[cfg(feature = "fleet")]
use logs::print_logs;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tap_core::runs::Run;
use tap_core::stack_config::StackConfig;

use crate::artifacts::ObjectStore;
use crate::artifacts::local::LocalStore;
use crate::artifacts::s3::S3Store;
use crate::artifacts::transfer::TransferOptions;
use crate::cli::{
    ArtifactsCommand, CheckpointsCommand, Cli, Command, ConfigCommand, Output, ParamsCommand, RunArgs, RunsCommand,
    StackCommand,
};
#[cfg(feature = "fleet")]
use crate::cli::{FleetCommand, JobsCommand, LaunchArgs};
use crate::config::{self, TapConfig};
use crate::store::cwlogs::CloudWatchLogs;
use crate::store::dynamo::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::ssm::SsmParams;
use crate::store::{LogStore, ParamStore, RunStore};

pub(crate) fn json(out: &mut dyn Write, v: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Object keys of the stack's artifacts bucket live under this prefix.
pub const BUCKET_PREFIX: &str = "tap";

/// What a command needs before it can run; [`route`] is the one place that knows, and each
/// later step matches only the commands that reach it.
pub enum Route<'a> {
    /// Nothing but its arguments: no home, no config, no runtime.
    Plain(Plain<'a>),
    /// The config file, a stack, or a store.
    Stored(Stored<'a>),
}

pub enum Plain<'a> {
    Contract,
    /// `tap goodput simulate`: a trace and numbers, no store.
    Simulate(&'a crate::cli::SimulateArgs),
    Completions(clap_complete::Shell),
    Man(Option<std::path::PathBuf>),
}

pub enum Stored<'a> {
    Stack(&'a StackCommand),
    Config(&'a ConfigCommand),
    #[cfg(feature = "fleet")]
    Fleet(&'a FleetCommand),
    #[cfg(feature = "fleet")]
    Launch(&'a LaunchArgs),
    #[cfg(feature = "fleet")]
    Jobs(&'a JobsCommand),
    /// A command on the runs, parameters, logs and objects of one store (local or the stack's).
    Store(StoreCommand<'a>),
}

pub enum StoreCommand<'a> {
    Run(&'a RunArgs),
    Runs(&'a RunsCommand),
    Params(&'a ParamsCommand),
    Artifacts(&'a ArtifactsCommand),
    Checkpoints(&'a CheckpointsCommand),
    Logs {
        run_id: &'a str,
        follow: bool,
    },
    Goodput(&'a crate::cli::GoodputArgs),
    /// `tap ui`: serves the store's runs until stopped.
    Ui(&'a crate::cli::UiArgs),
    /// `tap fleet pools`: the store's runs, not the fleet.
    #[cfg(feature = "fleet")]
    Pools {
        days: u32,
    },
    Gc {
        keep_checkpoints: Option<usize>,
        keep_artifact_versions: Option<usize>,
        dry_run: bool,
    },
}

pub fn route(command: &Command) -> Route<'_> {
    let store = |c| Route::Stored(Stored::Store(c));
    match command {
        Command::Contract => Route::Plain(Plain::Contract),
        Command::Completions { shell } => Route::Plain(Plain::Completions(*shell)),
        Command::Man { dir } => Route::Plain(Plain::Man(dir.clone())),
        Command::Stack(c) => Route::Stored(Stored::Stack(c)),
        Command::Config(c) => Route::Stored(Stored::Config(c)),
        #[cfg(feature = "fleet")]
        Command::Fleet(FleetCommand::Pools { days }) => store(StoreCommand::Pools { days: *days }),
        #[cfg(feature = "fleet")]
        Command::Fleet(c) => Route::Stored(Stored::Fleet(c)),
        #[cfg(feature = "fleet")]
        Command::Launch(a) => Route::Stored(Stored::Launch(a)),
        #[cfg(feature = "fleet")]
        Command::Jobs(c) => Route::Stored(Stored::Jobs(c)),
        Command::Run(a) => store(StoreCommand::Run(a)),
        Command::Runs(c) => store(StoreCommand::Runs(c)),
        Command::Params(c) => store(StoreCommand::Params(c)),
        Command::Artifacts(c) => store(StoreCommand::Artifacts(c)),
        Command::Checkpoints(c) => store(StoreCommand::Checkpoints(c)),
        Command::Logs { run_id, follow } => store(StoreCommand::Logs { run_id, follow: *follow }),
        Command::Goodput(crate::cli::GoodputArgs {
            command: Some(crate::cli::GoodputCommand::Simulate(s)), ..
        }) => Route::Plain(Plain::Simulate(s)),
        Command::Goodput(a) => store(StoreCommand::Goodput(a)),
        Command::Ui(a) => store(StoreCommand::Ui(a)),
        Command::Gc { keep_checkpoints, keep_artifact_versions, dry_run } => store(StoreCommand::Gc {
            keep_checkpoints: *keep_checkpoints,
            keep_artifact_versions: *keep_artifact_versions,
            dry_run: *dry_run,
        }),
    }
}

/// The commands that need nothing but their arguments.
pub fn plain(command: Plain<'_>, output: Output, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        Plain::Simulate(a) => simulate::run(a, output, out)?,
        Plain::Contract => contract::run(output, out)?,
        Plain::Completions(shell) => manual::completions(shell, out)?,
        Plain::Man(dir) => manual::man(dir.as_deref(), out)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dispatch(cli: &Cli, command: Stored<'_>, home: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let config_path = config::path(cli.global.config.clone())?;
    // Regression: a broken config file blocked the two ways out of it too. `stack import` and
    // `stack forget` replace the file whatever it holds, and `--local` does not read it.
    let reads_config = match &command {
        Stored::Stack(_) => false,
        Stored::Store(_) => !cli.global.local,
        _ => true,
    };
    let config = if reads_config {
        config::load(&config_path).map_err(|e| {
            anyhow::anyhow!("{e:#} (fix the file, or `tap stack forget` to drop it; `--local` ignores it)")
        })?
    } else {
        TapConfig::default()
    };
    let command = match command {
        Stored::Stack(StackCommand::Import { file }) => return stack::import(file, &config_path, out),
        Stored::Stack(StackCommand::Forget) => return stack::forget(&config_path, home, out),
        Stored::Config(ConfigCommand::Show) => {
            show_config::run(&config, &config_path, home, cli.global.local, cli.global.output, out)?;
            return Ok(ExitCode::SUCCESS);
        }
        #[cfg(feature = "fleet")]
        Stored::Fleet(f) => {
            let stack = need_stack(config.stack.as_ref(), "tap fleet")?;
            return fleet::run_fleet(stack, f, cli.global.output, out).await;
        }
        #[cfg(feature = "fleet")]
        Stored::Launch(a) => {
            let stack = need_stack(config.stack.as_ref(), "tap launch")?;
            return jobs::launch(stack, a, cli.global.output, out).await;
        }
        #[cfg(feature = "fleet")]
        Stored::Jobs(j) => {
            let stack = need_stack(config.stack.as_ref(), "tap jobs")?;
            return jobs::run_jobs(stack, j, cli.global.output, out).await;
        }
        Stored::Store(command) => command,
    };
    match config.stack.filter(|_| !cli.global.local) {
        Some(stack) => {
            let sdk = sdk_for(&stack).await;
            let s3 = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk).force_path_style(tap_aws::s3_path_style()).build(),
            );
            let runs = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &stack.table_name);
            let params = SsmParams::new(aws_sdk_ssm::Client::new(&sdk), &stack.hparam_prefix, None);
            let logs = CloudWatchLogs::new(aws_sdk_cloudwatchlogs::Client::new(&sdk), &stack.log_group);
            let transfer = match command {
                StoreCommand::Artifacts(
                    ArtifactsCommand::Push { transfer, .. } | ArtifactsCommand::Pull { transfer, .. },
                ) => TransferOptions { part_size: transfer.part_size, concurrency: usize::from(transfer.concurrency) },
                _ => TransferOptions::default(),
            };
            let objects = S3Store::new(s3, &stack.artifacts_bucket, BUCKET_PREFIX).with_transfer(
                crate::artifacts::s3::SINGLE_PUT_MAX.min(transfer.part_size),
                transfer,
                &home.join("transfers"),
            );
            // The server keeps its stores for as long as it runs.
            if let StoreCommand::Ui(a) = command {
                #[cfg(feature = "fleet")]
                let side = Some(crate::ui::ops::StackSide::connect(&stack).await);
                #[cfg(not(feature = "fleet"))]
                let side = crate::ui::ops::Side::default();
                crate::ui::serve(runs, logs, objects, side, crate::ui::Settings::from_args(a)?, out).await?;
                return Ok(ExitCode::SUCCESS);
            }
            // The dollars of a run on the stack: the spot price EC2 published for it.
            #[cfg(feature = "fleet")]
            if let StoreCommand::Goodput(a) = command {
                let spot = goodput::StackSpotPrices {
                    fleet: tap_fleet::aws::Fleet::new(&sdk, &stack),
                    cache: &runs,
                    said: Default::default(),
                };
                goodput::run(&runs, &spot, a, cli.global.output, out).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let b = Backends { runs: &runs, params: &params, logs: &logs, objects: &objects };
            execute(command, cli.global.output, home, &b, out).await
        }
        None => {
            let store = SqliteStore::open(&home.join("tap.db"))?;
            // `tap run` writes its scratch directory before its record: on a read-only store
            // it is refused first, with the store's one line, not the file system's.
            if let (StoreCommand::Run(_), Some(why)) = (&command, store.read_only()) {
                bail!("{why}");
            }
            let objects = LocalStore::new(&home.join("artifacts"));
            if let StoreCommand::Ui(a) = command {
                let settings = crate::ui::Settings::from_args(a)?;
                crate::ui::serve(store.clone(), store, objects, Default::default(), settings, out).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let b = Backends { runs: &store, params: &store, logs: &store, objects: &objects };
            execute(command, cli.global.output, home, &b, out).await
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

/// The runs of a listing, after one warning per record it left out.
pub(crate) fn listed(listing: crate::store::Runs) -> Vec<Run> {
    for s in &listing.skipped {
        crate::say!("tap: warning: {s}");
    }
    listing.runs
}

/// Runs as readers show them: one per training (a format-1 `--resume` chain folded into
/// one run), each with its observed status.
pub(crate) async fn trainings<R: RunStore>(runs: &R, experiment: Option<&str>) -> anyhow::Result<Vec<Run>> {
    let mut all = listed(runs.list_runs(experiment).await?);
    crate::liveness::observe(&mut all);
    Ok(tap_core::runs::fold_legacy_chains(all))
}

/// A run's one metric series: every record's points (a folded format-1 chain has several),
/// a step computed again keeping its later value.
pub(crate) async fn series<R: RunStore>(runs: &R, run: &Run) -> anyhow::Result<Vec<tap_core::runs::MetricPoint>> {
    let mut points = Vec::new();
    for id in run.records() {
        points.extend(runs.metrics(&run.experiment_id, id).await?);
    }
    Ok(tap_core::runs::series(points))
}

/// A run by id, name or unique id prefix, in any experiment (the first of those that fits).
pub(crate) async fn find_run<R: RunStore>(runs: &R, wanted: &str) -> anyhow::Result<Run> {
    find_in(&trainings(runs, None).await?, wanted)
}

/// [`find_run`] in trainings already read.
pub(crate) fn find_in(all: &[Run], wanted: &str) -> anyhow::Result<Run> {
    let fits: [&dyn Fn(&Run) -> bool; 3] = [
        &|r| r.run_id == wanted || r.legacy_records.iter().any(|id| id == wanted),
        &|r| r.name.as_deref() == Some(wanted),
        &|r| !wanted.is_empty() && r.run_id.starts_with(wanted),
    ];
    for fit in fits {
        let mut matches: Vec<Run> = all.iter().filter(|r| fit(r)).cloned().collect();
        match matches.len() {
            0 => continue,
            1 => return matches.pop().context("run"),
            n => {
                let which: Vec<String> = matches.iter().map(|r| format!("{}/{}", r.experiment_id, r.run_id)).collect();
                bail!("{wanted:?} fits {n} runs: {}; give a longer id", which.join(", "))
            }
        }
    }
    bail!("no run {wanted:?} (an id, a unique id prefix or a name; see `tap runs list`)")
}

/// The stores a command works on: the stack's, or the local ones.
pub(crate) struct Backends<'a, R, P, L, O> {
    pub runs: &'a R,
    pub params: &'a P,
    pub logs: &'a L,
    pub objects: &'a O,
}

async fn execute<R, P, L, O>(
    command: StoreCommand<'_>,
    output: Output,
    home: &Path,
    b: &Backends<'_, R, P, L, O>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode>
where
    R: RunStore,
    P: ParamStore,
    L: LogStore,
    O: ObjectStore + Clone + 'static,
{
    let Backends { runs, params: params_store, logs, objects } = *b;
    match command {
        StoreCommand::Logs { run_id, follow } => {
            return logs::print_logs(runs, logs, run_id, follow, output, out).await;
        }
        StoreCommand::Run(a) => return run::run(a, home, b).await,
        StoreCommand::Gc { keep_checkpoints, keep_artifact_versions, dry_run } => {
            gc::gc(runs, objects, keep_checkpoints, keep_artifact_versions, dry_run, output, out).await?;
        }
        StoreCommand::Runs(cmd) => runs::run(b, cmd, output, out).await?,
        StoreCommand::Goodput(a) => goodput::run(runs, &goodput::NoSpotPrices, a, output, out).await?,
        // Served by `dispatch`, which hands it the stores to keep.
        StoreCommand::Ui(_) => bail!("tap ui is served before the other commands"),
        #[cfg(feature = "fleet")]
        StoreCommand::Pools { days } => pools::run(runs, days, output, out).await?,
        StoreCommand::Params(p) => params::run(params_store, p, output, out).await?,
        StoreCommand::Artifacts(a) => artifacts::run(objects, a, output, out).await?,
        StoreCommand::Checkpoints(CheckpointsCommand::Latest { experiment }) => {
            checkpoints::latest(objects, experiment, output, out).await?;
        }
        StoreCommand::Checkpoints(CheckpointsCommand::List { run }) => {
            let run = find_run(runs, run).await?;
            checkpoints::list(objects, &run, output, out).await?;
        }
        StoreCommand::Checkpoints(CheckpointsCommand::Pull { what, dir }) => {
            checkpoints::pull(runs, objects, what, dir, output, out).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks a pull's destination directory before anything is fetched: an existing file (or
/// anything that is not a directory) is refused in one line naming it, instead of the
/// "File exists (os error 17)" of the first write into it; with `must_be_empty`, so is a
/// directory that holds anything.
pub fn pull_destination(dest: &std::path::Path, must_be_empty: bool) -> anyhow::Result<()> {
    // Regression: a destination under a file (`f/sub`) said "Not a directory (os error 20)".
    if let Some(file) = dest.ancestors().skip(1).find(|a| std::fs::symlink_metadata(a).is_ok()).filter(|a| !a.is_dir())
    {
        anyhow::bail!(
            "{} is a file, so {} cannot be made under it: pull into a new or empty directory",
            file.display(),
            dest.display()
        );
    }
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", dest.display())),
        Ok(m) if m.is_file() => {
            anyhow::bail!("{} is a file, not a directory: pull into a new or empty directory", dest.display())
        }
        Ok(m) if !m.is_dir() && !dest.is_dir() => anyhow::bail!(
            "{} is not a directory (a link, FIFO, socket or device): pull into a new or empty directory",
            dest.display()
        ),
        Ok(_) if must_be_empty && std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) => {
            anyhow::bail!("{} is not empty; pull into a new or empty directory", dest.display())
        }
        Ok(_) => Ok(()),
    }
}
