//! `tap stack import|forget`: which stack tap talks to (the Terraform outputs, kept in tap's
//! config file), or none (the local store).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tap_core::stack_config::StackConfig;

use crate::config::{self, TapConfig};

/// `tap stack import FILE|-`: the stack's `terraform output -json`.
pub fn import(file: &Path, config_path: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
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
        stack.stack, stack.region, stack.table_name, stack.artifacts_bucket, stack.hparam_prefix, stack.log_group
    );
    config::save(config_path, &TapConfig { stack: Some(stack) })?;
    writeln!(out, "{summary}\nwritten to {}", config_path.display())?;
    Ok(ExitCode::SUCCESS)
}

/// `tap stack forget`: back to the local store.
pub fn forget(config_path: &Path, home: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    config::save(config_path, &TapConfig::default())?;
    writeln!(out, "no stack: tap uses the local store in {}", home.display())?;
    Ok(ExitCode::SUCCESS)
}
