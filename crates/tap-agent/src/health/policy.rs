//! What the agent does when the node must stop: tell the `tap run`s on it
//! ([`crate::notify::notify_runs`]), take no new work, and — on a fatal GPU finding with
//! `on_fatal = "replace"` — power the node off once the runs are done or the deadline passed,
//! so the fleet (type `maintain`, shutdown behaviour `terminate`) replaces it.

use std::time::Duration;

use tap_core::agent_config::OnFatal;
use tap_core::notice::{Notice, NoticeKind, RuntimeDir};

/// The power-off command gets this long.
const POWER_OFF_LIMIT: Duration = Duration::from_secs(60);

/// The policy on a fatal finding.
#[derive(Debug, Clone)]
pub struct Policy {
    pub on_fatal: OnFatal,
    pub runtime: RuntimeDir,
    /// How long runs get to checkpoint and exit.
    pub drain_deadline: Duration,
    pub power_off_command: Vec<String>,
    pub instance_id: String,
}

/// What the policy did (or, in dry-run, would have done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub signalled: Vec<u32>,
    /// Runs still registered when the wait ended (0: all finished in time).
    pub runs_left: usize,
    /// Whether the power-off command ran and succeeded.
    pub powered_off: bool,
}

impl Policy {
    /// Takes the node out of service because of `reason` (one line). Waits at most the drain
    /// deadline (checking every `poll`), then powers off with `replace`.
    pub async fn take_out_of_service(&self, reason: &str, now_ms: i64, poll: Duration) -> std::io::Result<Outcome> {
        let runs = self.runtime.registered();
        if self.on_fatal == OnFatal::DryRun {
            tracing::warn!(
                reason,
                runs = runs.len(),
                "dry run (health.on_fatal = \"dry-run\"): would stop taking work, ask {} run(s) to checkpoint, wait up to {} s, then run {:?}",
                runs.len(),
                self.drain_deadline.as_secs(),
                self.power_off_command
            );
            return Ok(Outcome { signalled: Vec::new(), runs_left: runs.len(), powered_off: false });
        }
        self.runtime.set_drain(reason)?;
        let notice = Notice {
            kind: NoticeKind::GpuFatal,
            action: if self.on_fatal == OnFatal::Replace { "power-off" } else { "drain" }.into(),
            reason: reason.to_owned(),
            detected_ms: now_ms,
            deadline_ms: now_ms + self.drain_deadline.as_millis() as i64,
            instance_id: Some(self.instance_id.clone()),
        };
        let signalled = crate::notify::notify_runs(&self.runtime, &notice)?;
        tracing::error!(reason, signalled = ?signalled, deadline_s = self.drain_deadline.as_secs(), action = self.on_fatal.as_str(),
            "fatal GPU finding: node takes no new work; runs asked to checkpoint and stop");
        let until = tokio::time::Instant::now() + self.drain_deadline;
        let live = || self.runtime.registered().into_iter().filter(|r| r.alive()).count();
        while live() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(poll.min(until - tokio::time::Instant::now())).await;
        }
        let runs_left = live();
        if self.on_fatal != OnFatal::Replace {
            return Ok(Outcome { signalled, runs_left, powered_off: false });
        }
        tracing::error!(runs_left, command = ?self.power_off_command, "powering the node off so the fleet replaces it");
        let powered_off = run_power_off(&self.power_off_command).await;
        Ok(Outcome { signalled, runs_left, powered_off })
    }
}

/// Runs the power-off command (bounded: [`POWER_OFF_LIMIT`]); logs and returns whether it succeeded.
async fn run_power_off(cmd: &[String]) -> bool {
    let Some((program, args)) = cmd.split_first() else { return false };
    let run = tokio::process::Command::new(program).args(args).kill_on_drop(true).status();
    match tokio::time::timeout(POWER_OFF_LIMIT, run).await {
        Ok(Ok(s)) if s.success() => true,
        Ok(Ok(s)) => {
            tracing::error!(status = %s, "the power-off command failed");
            false
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, program, "cannot run the power-off command");
            false
        }
        Err(_) => {
            tracing::error!("the power-off command did not finish within 60 s");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_core::notice::Registration;

    fn policy(dir: &std::path::Path, on_fatal: OnFatal, marker: &std::path::Path) -> Policy {
        Policy {
            on_fatal,
            runtime: RuntimeDir::new(dir),
            drain_deadline: Duration::from_secs(5),
            power_off_command: vec!["sh".into(), "-c".into(), format!("echo off > {}", marker.display())],
            instance_id: "i-0test".into(),
        }
    }

    #[tokio::test]
    async fn replace_drains_notifies_waits_and_powers_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("powered-off");
        let p = policy(&dir.path().join("run"), OnFatal::Replace, &marker);
        // A child that stands in for `tap run`: registered, exits on SIGUSR1 (its default action).
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let reg = Registration {
            start_ticks: tap_core::notice::process_start_ticks(child.id()),
            ..Registration::this_process("run-1", "exp", 0)
        };
        let reg = Registration { pid: child.id(), ..reg };
        let reg_path = p.runtime.register(&reg).expect("register");
        let reaper = std::thread::spawn(move || {
            let _ = child.wait();
            let _ = std::fs::remove_file(reg_path); // tap run unregisters at exit
        });
        let out = p.take_out_of_service("GPU-1: XID 79", 1_000, Duration::from_millis(50)).await.expect("policy");
        reaper.join().expect("reaper");
        assert_eq!(out.signalled, vec![reg.pid]);
        assert_eq!((out.runs_left, out.powered_off), (0, true));
        assert_eq!(std::fs::read_to_string(&marker).expect("power-off ran").trim(), "off");
        assert_eq!(p.runtime.draining().as_deref(), Some("GPU-1: XID 79"));
        let n = p.runtime.read_notice().expect("readable").expect("notice");
        assert_eq!((n.kind, n.action.as_str(), n.deadline_ms), (NoticeKind::GpuFatal, "power-off", 6_000));
    }

    #[tokio::test]
    async fn dry_run_touches_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("powered-off");
        let p = policy(&dir.path().join("run"), OnFatal::DryRun, &marker);
        let out = p.take_out_of_service("XID 79", 0, Duration::from_millis(10)).await.expect("policy");
        assert!(!out.powered_off && !marker.exists());
        assert!(p.runtime.draining().is_none() && p.runtime.read_notice().expect("readable").is_none());
    }

    #[tokio::test]
    async fn drain_gives_up_waiting_at_the_deadline_and_stays_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("powered-off");
        let p = Policy {
            drain_deadline: Duration::from_millis(300),
            ..policy(&dir.path().join("run"), OnFatal::Drain, &marker)
        };
        // A run that ignores the notice and never exits.
        let mut stubborn =
            std::process::Command::new("sh").args(["-c", "trap '' USR1; sleep 30 & wait"]).spawn().expect("sh");
        std::thread::sleep(Duration::from_millis(100)); // let the trap be set
        let pid = stubborn.id();
        let reg = Registration {
            pid,
            start_ticks: tap_core::notice::process_start_ticks(pid),
            ..Registration::this_process("r", "e", 0)
        };
        p.runtime.register(&reg).expect("register");
        let out = p.take_out_of_service("ECC", 0, Duration::from_millis(50)).await.expect("policy");
        let _ = stubborn.kill();
        let _ = stubborn.wait();
        assert_eq!(out.signalled, vec![pid]);
        assert_eq!((out.runs_left, out.powered_off), (1, false), "deadline passed, drain never powers off");
        assert!(!marker.exists());
    }
}
