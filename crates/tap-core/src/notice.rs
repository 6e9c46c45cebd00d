//! The node-local protocol between `tap-agent` and the `tap run` processes on the same node:
//! "this node is going away, checkpoint now" (a spot interruption notice or a fatal GPU
//! finding) and "accept no new work".
//!
//! Everything lives in one runtime directory (default `/run/tap`, `TAP_RUNTIME_DIR` overrides):
//!
//! ```text
//! notice.json      the notice: why, what EC2 will do, the deadline (epoch ms). Written once,
//!                  atomically, by tap-agent; never edited in place.
//! rebalance.json   an EC2 rebalance recommendation (interruption risk is high; informational).
//! drain            exists while the node accepts no new work (its text says why).
//! runs/<pid>.json  one per running `tap run`: it registers at start, removes it at exit.
//! ```
//!
//! Race-free by ordering: the agent writes `notice.json` first and then sends SIGUSR1 to every
//! pid registered under `runs/`; `tap run` registers first and then looks for `notice.json`
//! (and keeps polling it, in case a signal is lost). A notice written before a run registered
//! is found by its look; one written after reaches it by signal. Handling is idempotent.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

pub const DEFAULT_RUNTIME_DIR: &str = "/run/tap";

/// EC2 gives a spot instance two minutes between the notice and the interruption.
pub const SPOT_NOTICE_MS: i64 = 120_000;

/// Why a run is told to stop: the kind of a notice tap-agent writes, and in a run's record
/// ([`crate::runs::Interruption::kind`]) also how the notice reached `tap run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// EC2 reclaims the spot instance (`spot/instance-action`).
    SpotInterruption,
    /// tap-agent found a fatal GPU fault and takes the node out of service.
    GpuFatal,
    /// A run's record only: SIGUSR1 reached `tap run` and there was no notice file to read.
    Signal,
    /// A run's record only: the notice file was there but could not be read.
    NoticeFile,
    /// A run's record only: a kind this version of tap does not know (a newer one wrote it).
    #[serde(other)]
    Other,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::SpotInterruption => "spot-interruption",
            NoticeKind::GpuFatal => "gpu-fatal",
            NoticeKind::Signal => "signal",
            NoticeKind::NoticeFile => "notice-file",
            NoticeKind::Other => "other",
        }
    }

    /// Whether tap-agent writes notices of this kind (the others only describe a run).
    pub fn is_written_by_the_agent(self) -> bool {
        matches!(self, NoticeKind::SpotInterruption | NoticeKind::GpuFatal)
    }
}

impl std::fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with a notice.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("not a tap notice")]
    Malformed(#[source] serde_json::Error),
    #[error("its kind, {0}, is not one tap-agent writes")]
    Kind(NoticeKind),
    #[error("deadline {deadline_ms} is before detection {detected_ms}")]
    DeadlineBeforeDetection { deadline_ms: i64, detected_ms: i64 },
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
}

/// A notice file that is there but is not a notice, with its path.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct NoticeFileError {
    pub path: PathBuf,
    #[source]
    pub problem: NoticeError,
}

/// "This node is going away": what `tap run` needs to checkpoint in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    pub kind: NoticeKind,
    /// What happens to the node: EC2's `terminate`/`stop`/`hibernate`, or `power-off`.
    pub action: String,
    /// One line for people and logs.
    pub reason: String,
    /// When the agent saw it (epoch ms, the node's clock).
    pub detected_ms: i64,
    /// When the node will be gone (epoch ms, the node's clock, skew already accounted for).
    pub deadline_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

impl Notice {
    /// Parses a notice file; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Notice, NoticeError> {
        let n: Notice = serde_json::from_slice(bytes).map_err(NoticeError::Malformed)?;
        if !n.kind.is_written_by_the_agent() {
            return Err(NoticeError::Kind(n.kind));
        }
        if n.deadline_ms < n.detected_ms {
            return Err(NoticeError::DeadlineBeforeDetection {
                deadline_ms: n.deadline_ms,
                detected_ms: n.detected_ms,
            });
        }
        Ok(n)
    }

    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        Ok(serde_json::to_vec_pretty(self)?)
    }
}

/// A running `tap run`, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub pid: u32,
    pub run_id: String,
    pub experiment: String,
    pub started_ms: i64,
    /// The process's start time (`/proc/<pid>/stat`, clock ticks since boot): a pid reused by
    /// another process after a crash has another, and is never signalled.
    #[serde(default)]
    pub start_ticks: Option<u64>,
}

impl Registration {
    /// This process.
    pub fn this_process(run_id: &str, experiment: &str, started_ms: i64) -> Registration {
        let pid = std::process::id();
        Registration {
            pid,
            run_id: run_id.to_owned(),
            experiment: experiment.to_owned(),
            started_ms,
            start_ticks: process_start_ticks(pid),
        }
    }

    /// Whether the registered process still runs (same pid, same start time).
    pub fn alive(&self) -> bool {
        match (process_start_ticks(self.pid), self.start_ticks) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The runtime directory and its files.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    root: PathBuf,
}

impl RuntimeDir {
    pub fn new(root: impl Into<PathBuf>) -> RuntimeDir {
        RuntimeDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn notice_path(&self) -> PathBuf {
        self.root.join("notice.json")
    }

    pub fn rebalance_path(&self) -> PathBuf {
        self.root.join("rebalance.json")
    }

    pub fn drain_path(&self) -> PathBuf {
        self.root.join("drain")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Creates the directory as tap-agent (root) does at start: `runs/` is writable by every
    /// user and sticky like /tmp, since training may run as another user than the agent.
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.runs_dir())?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(self.runs_dir(), std::fs::Permissions::from_mode(0o1777))
    }

    fn ensure(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    /// Writes the notice (atomically); a notice already there is kept (the first one wins:
    /// its deadline is the earlier).
    pub fn write_notice(&self, n: &Notice) -> std::io::Result<bool> {
        self.ensure(&self.root)?;
        if self.notice_path().exists() {
            return Ok(false);
        }
        write_atomic(&self.notice_path(), &n.to_bytes()?)?;
        Ok(true)
    }

    /// The notice, if one was written. A file that is not a notice is an error naming it.
    pub fn read_notice(&self) -> Result<Option<Notice>, NoticeFileError> {
        read_notice_file(&self.notice_path())
    }

    pub fn write_rebalance(&self, notice_time_ms: i64, detected_ms: i64) -> std::io::Result<()> {
        self.ensure(&self.root)?;
        let v = serde_json::json!({ "notice_time_ms": notice_time_ms, "detected_ms": detected_ms });
        write_atomic(&self.rebalance_path(), v.to_string().as_bytes())
    }

    /// Marks the node as taking no new work.
    pub fn set_drain(&self, reason: &str) -> std::io::Result<()> {
        self.ensure(&self.root)?;
        write_atomic(&self.drain_path(), reason.as_bytes())
    }

    /// Why the node takes no new work, if it does not.
    pub fn draining(&self) -> Option<String> {
        std::fs::read(self.drain_path()).ok().map(|b| String::from_utf8_lossy(&b).trim().to_owned())
    }

    /// Where the run of process `pid` registers.
    fn registration_path(&self, pid: u32) -> PathBuf {
        self.runs_dir().join(format!("{pid}.json"))
    }

    /// Registers a running `tap run`; returns the file to remove at exit.
    pub fn register(&self, r: &Registration) -> std::io::Result<PathBuf> {
        self.ensure(&self.runs_dir())?;
        let path = self.registration_path(r.pid);
        write_atomic(&path, &serde_json::to_vec(r)?)?;
        Ok(path)
    }

    /// Removes the registration of a run that ended without removing it (it crashed); its pid
    /// may belong to another process now.
    pub fn forget(&self, r: &Registration) -> std::io::Result<()> {
        match std::fs::remove_file(self.registration_path(r.pid)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The registered runs (unreadable or foreign files are skipped).
    pub fn registered(&self) -> Vec<Registration> {
        let Ok(entries) = std::fs::read_dir(self.runs_dir()) else { return Vec::new() };
        let mut out: Vec<Registration> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by_key(|r| r.pid);
        out
    }
}

/// Reads a notice file: `Ok(None)` while there is none.
pub fn read_notice_file(path: &Path) -> Result<Option<Notice>, NoticeFileError> {
    let problem = match std::fs::read(path) {
        Ok(b) => match Notice::parse(&b) {
            Ok(n) => return Ok(Some(n)),
            Err(problem) => problem,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => NoticeError::Read(e),
    };
    Err(NoticeFileError { path: path.to_owned(), problem })
}

/// The deadline of a spot notice on this node's clock. EC2 says when (`time`, its clock);
/// ours may be skewed. A time within the two-minute window (plus one poll of slack) is
/// trusted; anything else — in the past, too far ahead, unreadable — means our clock and
/// EC2's disagree, and the deadline becomes two minutes after we saw it, less one poll
/// interval (the notice may have been up that long). Returns the deadline and, when the
/// time was not trusted, why.
pub fn spot_deadline(notice_time_ms: Option<i64>, now_ms: i64, poll_ms: i64) -> (i64, Option<String>) {
    let fallback = now_ms + SPOT_NOTICE_MS - poll_ms;
    match notice_time_ms {
        None => (fallback, Some("the notice has no readable time".into())),
        Some(t) if t < now_ms - poll_ms => {
            (fallback, Some(format!("the notice time is {} s in the past: clock skew", (now_ms - t) / 1000)))
        }
        Some(t) if t > now_ms + SPOT_NOTICE_MS + poll_ms => (
            fallback,
            Some(format!(
                "the notice time is {} s ahead, more than EC2's two minutes: clock skew",
                (t - now_ms) / 1000
            )),
        ),
        Some(t) => (t.max(now_ms), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn notice(deadline_ms: i64) -> Notice {
        Notice {
            kind: NoticeKind::SpotInterruption,
            action: "terminate".into(),
            reason: "EC2 spot interruption".into(),
            detected_ms: 1_000,
            deadline_ms,
            instance_id: Some("i-0abc".into()),
        }
    }

    #[test]
    fn first_notice_wins_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = RuntimeDir::new(dir.path().join("tap"));
        assert!(rt.read_notice().expect("none yet").is_none());
        assert!(rt.write_notice(&notice(121_000)).expect("write"));
        assert!(!rt.write_notice(&notice(500_000)).expect("second"), "the first notice stays");
        assert_eq!(rt.read_notice().expect("readable"), Some(notice(121_000)));
        std::fs::write(rt.notice_path(), b"{\"kind\": \"meteor\"}").expect("corrupt");
        let e = crate::text::chain(&rt.read_notice().expect_err("corrupt")).to_string();
        assert!(e.contains("notice.json: not a tap notice"), "{e}");
        // A kind that only describes a run is not a notice.
        let mut signal = serde_json::to_value(notice(1_000)).expect("json");
        signal["kind"] = "signal".into();
        std::fs::write(rt.notice_path(), signal.to_string()).expect("write");
        let e = rt.read_notice().expect_err("not the agent's kind");
        assert!(matches!(e.problem, NoticeError::Kind(NoticeKind::Signal)), "{e:?}");
    }

    #[test]
    fn registration_and_drain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = RuntimeDir::new(dir.path());
        assert!(rt.registered().is_empty() && rt.draining().is_none());
        rt.prepare().expect("prepare");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(rt.runs_dir()).expect("runs").permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
        let r = Registration { pid: 42, run_id: "r1".into(), experiment: "e".into(), started_ms: 5, start_ticks: None };
        let path = rt.register(&r).expect("register");
        assert!(path.is_file());
        std::fs::write(rt.runs_dir().join("junk.json"), b"][").expect("junk");
        assert_eq!(rt.registered(), vec![r.clone()]);
        rt.forget(&r).expect("forget");
        assert!(rt.registered().is_empty() && !path.exists());
        rt.forget(&r).expect("forgetting twice is fine");
        rt.set_drain("GPU-1 XID 79").expect("drain");
        assert_eq!(rt.draining().as_deref(), Some("GPU-1 XID 79"));
    }

    #[test]
    fn liveness_follows_pid_and_start_time() {
        let me = Registration::this_process("r", "e", 0);
        assert!(me.start_ticks.is_some() && me.alive());
        assert!(!Registration { start_ticks: me.start_ticks.map(|t| t + 1), ..me.clone() }.alive(), "pid reused");
        assert!(!Registration { pid: u32::MAX, ..me }.alive());
    }

    #[test]
    fn spot_deadline_trusts_only_a_sane_time() {
        let now = 1_000_000;
        assert_eq!(spot_deadline(Some(now + 110_000), now, 5_000), (now + 110_000, None));
        let (d, why) = spot_deadline(Some(now - 60_000), now, 5_000);
        assert_eq!(d, now + 115_000);
        assert!(why.expect("skew").contains("60 s in the past"));
        let (d, why) = spot_deadline(Some(now + 3_600_000), now, 5_000);
        assert_eq!(d, now + 115_000);
        assert!(why.expect("skew").contains("3600 s ahead"));
        assert_eq!(spot_deadline(None, now, 5_000).0, now + 115_000);
        // Within one poll of slack: trusted, but never before now.
        assert_eq!(spot_deadline(Some(now - 2_000), now, 5_000), (now, None));
    }

    proptest! {
        #[test]
        fn notice_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Notice::parse(&b);
        }
    }
}
