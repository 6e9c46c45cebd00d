//! The signals `tap run` answers: SIGINT and SIGTERM (forwarded to the command), SIGUSR1 and
//! the notice file (an interruption notice), installed before anything else so none is lost.

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::EXIT_INTERRUPTED;

/// What stops `tap run` from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sig {
    Int,
    Term,
    /// SIGUSR1 or the notice file: an interruption notice.
    Notice,
}

impl Sig {
    /// tap's exit status when this ends it before the command started.
    pub(super) fn exit_code(self) -> u8 {
        match self {
            Sig::Int => 130,
            Sig::Term => 143,
            Sig::Notice => EXIT_INTERRUPTED,
        }
    }
}

/// tap's signal handlers, installed before anything else so that no phase (start-up,
/// restore, the command, the final upload) dies of a signal's default action.
pub(super) struct Signals {
    pub(super) int: tokio::signal::unix::Signal,
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) usr1: tokio::signal::unix::Signal,
    pub(super) notice_file: Option<PathBuf>,
    pub(super) poll: tokio::time::Interval,
}

/// The handlers, installed before `tap run` sets up its stores (which may take seconds: AWS
/// configuration, the instance metadata), so that no signal meets its default action
/// (SIGUSR1's kills); [`run`] takes them over.
pub(super) static EARLY: std::sync::Mutex<Option<[tokio::signal::unix::Signal; 3]>> = std::sync::Mutex::new(None);

/// Installs `tap run`'s signal handlers now (inside the runtime); see [`EARLY`].
pub fn install_signal_handlers() -> std::io::Result<()> {
    *EARLY.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handlers()?);
    Ok(())
}

/// SIGINT, SIGTERM and SIGUSR1, in that order.
pub(super) fn handlers() -> std::io::Result<[tokio::signal::unix::Signal; 3]> {
    Ok([signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?, signal(SignalKind::user_defined1())?])
}

impl Signals {
    pub(super) fn install(notice_file: Option<PathBuf>) -> anyhow::Result<Signals> {
        let early = EARLY.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let [int, term, usr1] = match early {
            Some(h) => h,
            None => handlers()?,
        };
        Ok(Signals { int, term, usr1, notice_file, poll: tokio::time::interval(NOTICE_POLL) })
    }

    /// The next signal; a notice (SIGUSR1, or the notice file found) only when `notices`.
    pub(super) async fn next(&mut self, notices: bool) -> Sig {
        loop {
            tokio::select! {
                _ = self.int.recv() => return Sig::Int,
                _ = self.term.recv() => return Sig::Term,
                _ = self.usr1.recv() => if notices { return Sig::Notice },
                _ = self.poll.tick(), if notices && self.notice_file.is_some() => {
                    if self.notice_file.as_ref().is_some_and(|f| f.exists()) {
                        return Sig::Notice;
                    }
                }
            }
        }
    }
}

/// A timer that is not armed yet (the notice deadline before a notice; the final sync without a stop).
pub(super) const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often the notice file is looked for.
pub(super) const NOTICE_POLL: Duration = Duration::from_millis(500);
