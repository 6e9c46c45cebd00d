//! `tap run`: the supervisor around the training command (crate::supervisor does the work).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::artifacts::ObjectStore;
use crate::cli::RunArgs;
use crate::commands::Backends;
use crate::store::{LogStore, ParamStore, RunStore};
use crate::supervisor::{self, Membership, Resume, RunOptions};

/// `--params-file`: a JSON object (strings, numbers and booleans as their text) or NAME=VALUE
/// lines (blank lines and `#` comments skipped). Every name is checked; an empty value is
/// refused.
pub fn parse_params_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: String| -> Result<(), String> {
        tap_core::names::checked("parameter name", k)?;
        if v.is_empty() {
            return Err(format!("parameter {k:?} has an empty value"));
        }
        out.insert(k.to_owned(), v);
        Ok(())
    };
    if text.trim_start().starts_with('{') {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object of parameters: {e}"))?;
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => return Err(format!("parameter {k:?}: {other} is not a string, number or boolean")),
            };
            put(&k, v)?;
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| format!("line {}: {line:?} is not NAME=VALUE", i + 1))?;
            put(k.trim(), v.trim().to_owned()).map_err(|e| format!("line {}: {e}", i + 1))?;
        }
    }
    Ok(out)
}

/// The settings step: clap's arguments and what this node is (its runtime directory, host
/// name and instance id) as the supervisor's options.
async fn settings(a: &RunArgs, home: &Path) -> anyhow::Result<RunOptions> {
    let resume = match (&a.resume, &a.resume_from) {
        (Some(r), _) if r.is_empty() => Resume::Latest,
        (Some(r), _) => Resume::Run(r.clone()),
        (None, Some(from)) => Resume::From(from.clone()),
        (None, None) => Resume::No,
    };
    let mut overrides = BTreeMap::new();
    if let Some(f) = &a.params_file {
        let text = std::fs::read(f).with_context(|| format!("--params-file {}", f.display()))?;
        let text =
            String::from_utf8(text).map_err(|_| anyhow::anyhow!("--params-file {}: not UTF-8 text", f.display()))?;
        overrides = parse_params_file(&text).map_err(|e| anyhow::anyhow!("--params-file {}: {e}", f.display()))?;
    }
    overrides.extend(a.params.iter().cloned());
    let node = supervisor::provenance::node_identity().await;
    let membership = membership(a)?;
    Ok(RunOptions {
        experiment: a.experiment.clone(),
        resume,
        name: a.name.clone(),
        tags: a.tags.clone(),
        disk_reserve: a.disk_reserve,
        overrides,
        command: a.command.clone(),
        interrupt_signal: a.interrupt_signal,
        checkpoint_deadline: a.checkpoint_deadline,
        notice_file: a.notice_file.clone(),
        runtime: supervisor::runtime_dir(a.runtime_dir.as_deref()),
        runs_dir: supervisor::default_runs_dir(home),
        host: supervisor::hostname(),
        instance_id: node.as_ref().map(|n| n.instance_id.clone()),
        node,
        membership,
    })
}

/// Which job this `tap run` is a rank of: the managed job its node's variables name, else
/// `--group` with `--rank` and `--world-size` (or the variables torchrun and MPI launchers
/// set: RANK and WORLD_SIZE, else NODE_RANK and NNODES).
fn membership(a: &RunArgs) -> anyhow::Result<Membership> {
    use tap_core::command_env as env;
    let managed = supervisor::JobRank::from_env().filter(|j| a.group.as_ref().is_none_or(|g| *g == j.group));
    let number = |flag: Option<u32>, names: [&str; 2]| -> anyhow::Result<Option<u32>> {
        if flag.is_some() {
            return Ok(flag);
        }
        for name in names {
            if let Ok(v) = std::env::var(name) {
                let n = v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number"))?;
                return Ok(Some(n));
            }
        }
        Ok(None)
    };
    let (rank, world_size) = if managed.is_some() {
        (None, None)
    } else {
        (number(a.rank, ["RANK", env::NODE_RANK])?, number(a.world_size, ["WORLD_SIZE", env::NNODES])?)
    };
    let resumes_a_run = a.resume.as_deref().is_some_and(|r| !r.is_empty());
    if a.restore_step.is_some() && a.resume.is_none() {
        anyhow::bail!("--restore-step picks the committed step a group resumes from: add --resume GROUP");
    }
    if a.group.is_none() && managed.is_none() && !resumes_a_run && (a.rank.is_some() || a.world_size.is_some()) {
        anyhow::bail!("--rank and --world-size name a rank of a group: add --group GROUP (or --resume GROUP)");
    }
    Ok(Membership {
        group: if managed.is_some() { None } else { a.group.clone() },
        managed,
        rank,
        world_size,
        restore_all: a.restore == crate::cli::RestoreShards::All,
        restore_step: a.restore_step,
    })
}

pub async fn run<R, P, L, O>(a: &RunArgs, home: &Path, b: &Backends<'_, R, P, L, O>) -> anyhow::Result<ExitCode>
where
    R: RunStore,
    P: ParamStore,
    L: LogStore,
    O: ObjectStore + Clone + 'static,
{
    let opts = settings(a, home).await?;
    if let Some(reason) = supervisor::draining(&opts) {
        eprintln!("tap: this node takes no new work ({reason}); start the run on another node");
        return Ok(ExitCode::from(supervisor::EXIT_INTERRUPTED));
    }
    let outcome = supervisor::run(b.runs, b.params, b.logs, b.objects, &opts).await?;
    Ok(ExitCode::from(outcome.exit_code))
}
