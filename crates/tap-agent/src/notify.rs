//! Telling the `tap run`s on this node that it is going away: the agent's side of the
//! notice protocol whose files `tap_core::notice` owns. Used by the spot watcher and by the
//! GPU health policy alike.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tap_core::notice::{Notice, RuntimeDir};

/// Writes the notice (the first one stays) and sends SIGUSR1 to every live registered run;
/// a registration whose process is gone is forgotten, never signalled (its pid may be
/// another process's now). Returns the pids signalled.
pub fn notify_runs(runtime: &RuntimeDir, notice: &Notice) -> std::io::Result<Vec<u32>> {
    runtime.write_notice(notice)?;
    let mut signalled = Vec::new();
    for r in runtime.registered() {
        if !r.alive() {
            if let Err(e) = runtime.forget(&r) {
                tracing::warn!(pid = r.pid, run = %r.run_id, error = %e, "cannot remove a stale registration");
            }
            continue;
        }
        match i32::try_from(r.pid).map(|p| kill(Pid::from_raw(p), Signal::SIGUSR1)) {
            Ok(Ok(())) => signalled.push(r.pid),
            Ok(Err(e)) => {
                tracing::warn!(pid = r.pid, run = %r.run_id, error = %e, "cannot signal a run; it polls the notice file")
            }
            Err(_) => {}
        }
    }
    Ok(signalled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_core::notice::{NoticeKind, Registration};

    #[test]
    fn stale_registrations_are_removed_not_signalled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = RuntimeDir::new(dir.path());
        let stale = Registration {
            pid: u32::MAX - 1,
            run_id: "gone".into(),
            experiment: "e".into(),
            started_ms: 0,
            start_ticks: Some(1),
        };
        rt.register(&stale).expect("register");
        let n = Notice {
            kind: NoticeKind::SpotInterruption,
            action: "terminate".into(),
            reason: "test".into(),
            detected_ms: 0,
            deadline_ms: 1,
            instance_id: None,
        };
        assert_eq!(notify_runs(&rt, &n).expect("notify"), Vec::<u32>::new());
        assert!(rt.registered().is_empty());
    }
}
