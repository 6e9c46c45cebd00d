//! Command implementations over the local backend (SQLite store + directory object store).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tap_core::runs::Run;

use crate::artifacts::checkpoint;
use crate::artifacts::local::LocalStore;
use crate::cli::{CheckpointsCommand, Cli, Command, Output, ParamsCommand, RunsCommand};
use crate::render;
use crate::store::sqlite::SqliteStore;
use crate::store::{ParamStore, RunStore};
use crate::supervisor::{self, RunOptions};

fn json(out: &mut dyn Write, v: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

/// A run by id, in any experiment.
async fn find_run(store: &SqliteStore, run_id: &str) -> anyhow::Result<Run> {
    let matches: Vec<Run> = store.list_runs(None).await?.into_iter().filter(|r| r.run_id == run_id).collect();
    match matches.len() {
        0 => bail!("no run {run_id} (see `tap runs list`)"),
        1 => Ok(matches.into_iter().next().context("run")?),
        n => bail!("run id {run_id} exists in {n} experiments"),
    }
}

pub async fn dispatch(cli: &Cli, home: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let store = SqliteStore::open(&home.join("tap.db"))?;
    let objects = LocalStore::new(&home.join("artifacts"));
    let output = cli.global.output;
    match &cli.command {
        Command::Contract => unreachable!("handled without a store"),
        Command::Run(a) => {
            let opts = RunOptions {
                experiment: a.experiment.clone(),
                resume: a.resume,
                command: a.command.clone(),
                interrupt_signal: a.interrupt_signal,
                checkpoint_deadline: a.checkpoint_deadline,
                notice_file: a.notice_file.clone(),
                runs_dir: supervisor::default_runs_dir(home),
                host: supervisor::hostname(),
                instance_id: None,
            };
            let outcome = supervisor::run(&store, &objects, &opts).await?;
            return Ok(ExitCode::from(outcome.exit_code));
        }
        Command::Runs(RunsCommand::List { experiment }) => {
            let runs = store.list_runs(experiment.as_deref()).await?;
            match output {
                Output::Json => json(out, &runs)?,
                Output::Text => out.write_all(render::runs_table(&runs).as_bytes())?,
            }
        }
        Command::Runs(RunsCommand::Show { run_id }) => {
            let run = find_run(&store, run_id).await?;
            let points = store.metrics(&run.experiment_id, &run.run_id).await?;
            match output {
                Output::Json => json(out, &serde_json::json!({ "run": run, "metrics": points }))?,
                Output::Text => out.write_all(render::run_details(&run, &points).as_bytes())?,
            }
        }
        Command::Runs(RunsCommand::Compare { run_ids }) => {
            let mut runs = Vec::new();
            for id in run_ids {
                runs.push(find_run(&store, id).await?);
            }
            match output {
                Output::Json => json(out, &runs)?,
                Output::Text => out.write_all(render::compare(&runs).as_bytes())?,
            }
        }
        Command::Params(p) => params(&store, p, output, out).await?,
        Command::Checkpoints(CheckpointsCommand::Latest { experiment }) => {
            let m = checkpoint::latest(&objects, experiment).await?;
            match (output, m) {
                (Output::Json, m) => json(out, &m)?,
                (Output::Text, None) => writeln!(out, "experiment {experiment} has no checkpoint yet")?,
                (Output::Text, Some(m)) => {
                    writeln!(
                        out,
                        "checkpoint {} of run {} (step {})",
                        m.checkpoint_id,
                        m.run_id,
                        m.step.map_or("-".into(), |s| s.to_string())
                    )?;
                    for f in &m.files {
                        writeln!(out, "  {:>12}  {}  {}", f.size, &f.sha256[..12], f.path)?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn params(store: &SqliteStore, cmd: &ParamsCommand, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
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
        ParamsCommand::Set { name, value } => vec![store.set_param(name, value).await?],
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
                    tap_core::runs::rfc3339(p.modified_ms),
                    p.value
                )?;
            }
        }
    }
    Ok(())
}
