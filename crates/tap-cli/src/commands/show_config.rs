//! `tap config show`: which configuration file, which backend, which AWS settings.

use std::path::Path;

use crate::commands::BUCKET_PREFIX;
use crate::config::TapConfig;
use std::io::Write;

use crate::cli::Output;
use crate::commands::json;

pub fn run(
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
