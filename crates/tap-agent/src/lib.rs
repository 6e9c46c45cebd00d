//! tap-agent: GPU telemetry, health and spot-interruption handling on a tap node.

mod app;
pub mod bootstrap;
pub mod cli;
pub mod cloudwatch;
pub mod controller;
pub mod daemon;
mod events;
pub mod gpu;
pub mod health;
pub mod identity;
pub mod idle;
pub mod install;
pub mod metrics;
pub mod net;
pub mod node_fleet;
pub mod notify;
pub mod prometheus;
pub mod publish;
mod report;
pub mod spool;
pub mod spot;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tap_core::agent_config::AgentConfig;

use cli::{Cli, Command};

/// Runs the agent for parsed arguments; errors are printed once, as one line.
pub fn main_with(cli: Cli) -> ExitCode {
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tap-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    if cli.check_config {
        let config = AgentConfig::load(&cli.config)?;
        println!("{}: ok", cli.config.display());
        println!("{}", report::describe(&config));
    }
    match &cli.command {
        None => {}
        Some(Command::Install(a)) => {
            let path = install::install(&install::InstallOptions {
                unit_dir: a.unit_dir.clone(),
                binary: a.binary.clone(),
                config: cli.config.clone(),
                start: !a.no_start,
            })?;
            println!("installed {}{}", path.display(), if a.no_start { "" } else { " and started tap-agent" });
        }
        Some(Command::Health) => {
            let config = AgentConfig::load(&cli.config)?;
            let path = &config.health.state_file;
            match std::fs::read_to_string(path) {
                Ok(text) => println!("{}", text.trim_end()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    anyhow::bail!("{}: no health state yet (is tap-agent running with health.enabled?)", path.display())
                }
                Err(e) => anyhow::bail!("{}: {e}", path.display()),
            }
        }
        Some(Command::Events(a)) => {
            let config = AgentConfig::load(&cli.config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let n = runtime.block_on(events::watch_events(&config.health.kernel_log, Duration::from_secs(a.seconds)));
            println!("{{\"events\": {n}, \"seconds\": {}}}", a.seconds);
        }
        Some(Command::Bootstrap(a)) => {
            let boot = bootstrap::Boot::new(bootstrap::Layout::node(), &a.settings, &a.region)?;
            return Ok(match boot.run() {
                bootstrap::Ended::Done | bootstrap::Ended::Rebooting => ExitCode::SUCCESS,
                bootstrap::Ended::Failed(_) => ExitCode::FAILURE,
            });
        }
        Some(Command::Run(a)) if a.once => print!("{}", report::once(&mut *app::open_reader(a)?)?),
        Some(Command::Run(a)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(app::run_daemon(&cli.config, a))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
