//! `tap params list|get|set|unset|history`: the hyperparameters (SSM Parameter Store on a stack,
//! SQLite locally), each version kept.

use anyhow::{Context, bail};

use crate::cli::ParamsCommand;
use crate::store::ParamStore;
use std::io::Write;

use crate::cli::Output;
use crate::commands::json;

pub async fn run<P: ParamStore>(
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
        ParamsCommand::Unset { name } => {
            if !store.unset_param(name).await? {
                bail!("no hyperparameter {name} (see `tap params list`)");
            }
            match output {
                Output::Json => json(out, &serde_json::json!({ "unset": name }))?,
                Output::Text => writeln!(out, "unset {name}; runs keep the values they recorded")?,
            }
            return Ok(());
        }
        ParamsCommand::Set { name, value, allow_empty } => {
            if value.is_empty() && !allow_empty {
                bail!(
                    "tap params set {name} \"\": the value is empty (an unset shell variable?); --allow-empty stores it"
                );
            }
            // Regression: `a.b` and `a_b` were both accepted and shadowed each other as
            // TAP_HP_A_B in the command's environment.
            let existing = store.list_params().await?;
            let env = tap_core::command_env::hparam_variable(name);
            if let Some(other) =
                existing.iter().find(|p| p.name != *name && tap_core::command_env::hparam_variable(&p.name) == env)
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
