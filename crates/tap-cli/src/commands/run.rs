//! `tap run`: the supervisor around the training command (crate::supervisor does the work).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::artifacts::ObjectStore;
use crate::cli::RunArgs;
use crate::commands::Backends;
use crate::store::{LogStore, ParamStore, RunStore};
use crate::supervisor::{self, Resume, RunOptions};

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
