//! tap: the ML engineer's command line.

pub mod artifacts;
pub mod cli;
mod contract_cmd;
pub mod store;

use std::io::Write;
use std::process::ExitCode;

use cli::{Cli, Command};

/// Runs `tap` for parsed arguments; errors are printed once, as one line, and a closed pipe
/// (`tap ... | head`) ends quietly.
pub fn main_with(cli: Cli) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match run(&cli, &mut out) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Contract => contract_cmd::run(cli.global.output, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
