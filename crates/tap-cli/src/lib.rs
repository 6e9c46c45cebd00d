//! tap: the ML engineer's command line.

pub mod artifacts;
pub mod blocking;
pub mod cli;
mod commands;
pub mod config;
pub mod liveness;
pub mod plot;
pub mod render;
pub mod store;
pub mod supervisor;
pub mod tapml;
pub mod term;
pub mod ui;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cli::{Cli, Command};

/// At exit, blocking work nobody waits for any more gets this long to see its cancel.
const BLOCKING_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `tap` for parsed arguments; errors are printed once, as one line, and a closed pipe
/// (`tap ... | head`) ends quietly.
pub fn main_with(cli: Cli) -> ExitCode {
    let mut out = std::io::stdout();
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
    let command = match commands::route(&cli.command) {
        commands::Route::Plain(plain) => return commands::plain(plain, cli.global.output, out),
        commands::Route::Stored(command) => command,
    };
    let home = home(cli.global.home.clone())?;
    // Regression: a TAP_HOME that is a file said only "File exists", from deep in the store.
    if home.exists() && !home.is_dir() {
        anyhow::bail!(
            "{} is not a directory: tap keeps its local store there (set TAP_HOME or --home to a directory)",
            home.display()
        );
    }
    // Multi-threaded: `tap run`'s loop (on this thread) never waits for a task that hashes,
    // uploads or writes the store (on the workers and the bounded blocking pool).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(blocking::MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        if let Command::Run(_) = cli.command {
            supervisor::install_signal_handlers().context("installing signal handlers")?;
        }
        commands::dispatch(cli, command, &home, out).await
    });
    // Blocking work nobody waits for any more (a cancelled copy) is told to stop; tap does not
    // wait for it longer than this.
    runtime.shutdown_timeout(BLOCKING_SHUTDOWN);
    result
}

/// Async worker threads: output readers, uploads and store writes are I/O-bound; two keep
/// one free whatever the other does, more buy nothing on a CLI.
const WORKER_THREADS: usize = 2;

/// `--home`, else `$TAP_HOME` (clap reads both), else `$XDG_DATA_HOME/tap`, else
/// `~/.local/share/tap`.
fn home(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(h) = flag {
        return Ok(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("tap"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context("neither TAP_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/tap"))
}

/// A write to a closed pipe, however wrapped: JSON output fails inside serde_json, whose
/// error hides the `io::Error` (regression: `tap runs show ID -o json | head -c1` said
/// `tap: error: Broken pipe`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let pipe = Some(std::io::ErrorKind::BrokenPipe);
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == pipe
            || c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind) == pipe
    })
}

pub use tap_core::time::now_ms;
