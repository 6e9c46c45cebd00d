//! `tap run`: the supervisor around the training command (crate::supervisor does the work).

use std::path::Path;
use std::process::ExitCode;

use crate::artifacts::ObjectStore;
use crate::cli::RunArgs;
use crate::commands::Backends;
use crate::store::{LogStore, ParamStore, RunStore};
use crate::supervisor::{self, RunOptions};

/// The settings step: clap's arguments and what this node is (its runtime directory, host
/// name and instance id) as the supervisor's options.
async fn settings(a: &RunArgs, home: &Path) -> RunOptions {
    RunOptions {
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
    }
}

pub async fn run<R, P, L, O>(a: &RunArgs, home: &Path, b: &Backends<'_, R, P, L, O>) -> anyhow::Result<ExitCode>
where
    R: RunStore,
    P: ParamStore,
    L: LogStore,
    O: ObjectStore + Clone + 'static,
{
    let opts = settings(a, home).await;
    if let Some(reason) = supervisor::draining(&opts) {
        eprintln!("tap: this node takes no new work ({reason}); start the run on another node");
        return Ok(ExitCode::from(supervisor::EXIT_INTERRUPTED));
    }
    let outcome = supervisor::run(b.runs, b.params, b.logs, b.objects, &opts).await?;
    Ok(ExitCode::from(outcome.exit_code))
}
