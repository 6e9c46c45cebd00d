//! tap-agent: GPU telemetry, health and spot-interruption handling on a tap node.

pub mod cli;
pub mod cloudwatch;
pub mod gpu;
pub mod metrics;
pub mod publish;
pub mod spool;

use std::process::ExitCode;

use tap_core::agent_config::AgentConfig;

/// Runs the agent for parsed arguments; errors are printed once, as one line.
pub fn main_with(cli: cli::Cli) -> ExitCode {
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tap-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &cli::Cli) -> anyhow::Result<ExitCode> {
    if cli.check_config {
        let config = AgentConfig::load(&cli.config)?;
        println!("{}: ok", cli.config.display());
        println!("{}", describe(&config));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per setting, as `--check-config` prints them.
pub fn describe(config: &AgentConfig) -> String {
    let m = &config.metrics;
    let region = config
        .aws
        .region
        .as_deref()
        .unwrap_or("(from instance metadata)");
    let group = config.logs.group.as_deref().unwrap_or("(none)");
    format!(
        "region:           {region}\n\
         namespace:        {}\n\
         environment:      {}\n\
         sample interval:  {} s\n\
         publish interval: {} s\n\
         resolution:       {}\n\
         log group:        {group}",
        m.namespace,
        m.environment,
        m.sample_interval_seconds,
        m.publish_interval_seconds,
        if m.high_resolution {
            "1 s (high)"
        } else {
            "60 s (standard)"
        },
    )
}
