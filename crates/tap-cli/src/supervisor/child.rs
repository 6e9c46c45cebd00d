//! The command as a process: its scratch directory, its environment, its process group, its
//! registration with tap-agent, and the notice it is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tap_core::command_env as env;
use tap_core::notice::{NoticeKind, RuntimeDir};
use tap_core::runs::Interruption;
use tokio::process::Command;
use tokio::time::Instant;

use crate::now_ms;

use super::{GROUP_TERM_GRACE, RunOptions};

/// A cancelled start-up waits this long for the copies it started before it removes the
/// scratch directory.
const ABANDON_SETTLE: Duration = Duration::from_secs(10);

/// How often a command's process group is looked at while it empties by itself (ten times),
/// and after SIGTERM (until [`GROUP_TERM_GRACE`]).
const GROUP_POLL: Duration = Duration::from_millis(10);
const GROUP_TERM_POLL: Duration = Duration::from_millis(50);

/// After a notice, the final upload gets at least this long (or a third of what is left).
const MIN_UPLOAD_TIME: Duration = Duration::from_secs(20);

/// Names that share one `TAP_HP_` variable (`a.b`, `a_b` and `A_B` are all `TAP_HP_A_B`):
/// each group with more than one name, sorted, so the last is the one whose value the
/// command's environment gets (they are set in that order).
pub fn hparam_env_collisions<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(String, Vec<&'a str>)> {
    let mut by_env: BTreeMap<String, Vec<&'a str>> = BTreeMap::new();
    for n in names {
        by_env.entry(env::hparam_variable(n)).or_default().push(n);
    }
    by_env
        .into_iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(env, mut names)| {
            names.sort_unstable();
            (env, names)
        })
        .collect()
}

/// Why the command could not start, in one line. The kernel refuses arguments and environment
/// together (E2BIG, "Argument list too long"); when the hyperparameters' variables are a large
/// part of it, they are named as the cause rather than the command.
pub(super) fn spawn_failure(program: &str, e: &std::io::Error, flat: &BTreeMap<String, String>) -> String {
    if e.raw_os_error() == Some(nix::libc::E2BIG) {
        let hp_bytes: usize = flat.iter().map(|(k, v)| env::hparam_variable(k).len() + v.len() + 2).sum();
        let (big, len) = flat.iter().map(|(k, v)| (k.as_str(), v.len())).max_by_key(|(_, n)| *n).unwrap_or(("", 0));
        if hp_bytes > 0 {
            return format!(
                "cannot start {program}: its arguments and environment are too long for the kernel; the hyperparameters' TAP_HP_ variables add {} (the largest, {big}, is {}): pass large values in a file (TAP_HPARAMS_FILE has every value) or shorten them",
                tap_core::commit::bytes(hp_bytes as u64),
                tap_core::commit::bytes(len as u64)
            );
        }
    }
    format!("cannot start {program}: {e}")
}

/// How long the child gets for its final checkpoint: the configured deadline, but when the
/// notice says how long the node has, no more than that less a reserve for the upload (a
/// third of what is left, at least 20 s). EC2's two minutes leave the child about 80 s.
pub fn checkpoint_budget(configured: Duration, remaining: Option<Duration>) -> Duration {
    match remaining {
        None => configured,
        Some(r) => configured.min(r.saturating_sub((r / 3).max(MIN_UPLOAD_TIME))),
    }
}

/// The node's runtime directory: the one given (flag or TAP_RUNTIME_DIR), else
/// [`tap_core::notice::DEFAULT_RUNTIME_DIR`] where tap-agent created it (on a node).
pub fn runtime_dir(given: Option<&Path>) -> Option<RuntimeDir> {
    match given {
        Some(d) => Some(RuntimeDir::new(d)),
        None => {
            let d = Path::new(tap_core::notice::DEFAULT_RUNTIME_DIR);
            d.is_dir().then(|| RuntimeDir::new(d))
        }
    }
}

/// Why the node takes no new work, when `tap run` should not start here.
pub fn draining(opts: &RunOptions) -> Option<String> {
    opts.runtime.as_ref().and_then(RuntimeDir::draining)
}

/// Removes the registration when `tap run` ends, however it ends.
pub(super) struct Registered(pub(super) Option<PathBuf>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Stops what the cancelled start-up left running and removes the run's scratch directory:
/// nothing half-written stays behind.
pub(super) async fn abandon(work: &Path) {
    if !crate::blocking::settle(ABANDON_SETTLE).await {
        crate::say!(
            "tap: a copy is still running after {ABANDON_SETTLE:?}; {} may keep a partial file",
            work.display()
        );
    }
    let dir = work.to_owned();
    let _ = crate::blocking::run(move |_| std::fs::remove_dir_all(dir)).await;
}

/// Sends `sig` to the command's process group (its pgid is its pid: `process_group(0)`).
pub(super) fn signal_group(pid: Pid, sig: Signal) -> bool {
    nix::sys::signal::killpg(pid, sig).is_ok()
}

/// Ends what is left of the command's process group: SIGTERM, then SIGKILL after
/// [`GROUP_TERM_GRACE`]. Silent when nothing is left.
pub(super) async fn reap_group(pid: Pid) {
    // Processes already dying (a SIGKILL just sent) get a moment to be gone.
    for _ in 0..10 {
        if nix::sys::signal::killpg(pid, None).is_err() {
            return;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
    if !signal_group(pid, Signal::SIGTERM) {
        return;
    }
    crate::say!("tap: processes the command left behind got SIGTERM");
    let until = Instant::now() + GROUP_TERM_GRACE;
    while Instant::now() < until {
        tokio::time::sleep(GROUP_TERM_POLL).await;
        if nix::sys::signal::killpg(pid, None).is_err() {
            return;
        }
    }
    crate::say!("tap: they still ran {GROUP_TERM_GRACE:?} later; sent SIGKILL");
    let _ = signal_group(pid, Signal::SIGKILL);
}

/// Where one run's files live, under `runs_dir/<run id>`; the command is told each of them.
pub(super) struct WorkDir {
    pub(super) root: PathBuf,
    /// TAP_CHECKPOINT_DIR: the command writes its checkpoints here.
    pub(super) checkpoint: PathBuf,
    /// TAP_METRICS_FILE: JSON lines of metrics and checkpoint announcements.
    pub(super) metrics: PathBuf,
    /// TAP_HPARAMS_FILE: the hyperparameters as JSON.
    pub(super) hparams: PathBuf,
    /// TAP_NOTICE_INFO: written at a notice, before the signal (the deadline, tapml.time_left).
    pub(super) notice_info: PathBuf,
    /// TAP_CHECKPOINT_ACK: tap says here which checkpoint it has taken.
    pub(super) ack: PathBuf,
    /// Hard-link snapshots of announced checkpoints, one directory each, until uploaded.
    pub(super) snapshots: PathBuf,
    /// TAP_CADENCE_FILE: the checkpoint interval as measured so far (tapml.checkpoint_due).
    pub(super) cadence: PathBuf,
}

impl WorkDir {
    pub(super) fn new(runs_dir: &Path, run_id: &str) -> WorkDir {
        let root = runs_dir.join(run_id);
        WorkDir {
            checkpoint: root.join("checkpoint"),
            metrics: root.join("metrics.jsonl"),
            hparams: root.join("hparams.json"),
            notice_info: root.join("notice.json"),
            ack: root.join("checkpoint-ack"),
            snapshots: root.join("snapshots"),
            cadence: root.join("cadence.json"),
            root,
        }
    }
}

/// The training command as tap starts it: tap's variables, the hyperparameters, the restored
/// checkpoint, a sharded job's rank, piped output, and its own process group.
pub(super) fn command(
    program: &str,
    args: &[String],
    opts: &RunOptions,
    dirs: &WorkDir,
    begun: &super::Begun,
) -> Command {
    let super::Begun { run_id, flat, restored, shard, cadence, record, .. } = begun;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(env::EXPERIMENT, &opts.experiment)
        .env(env::RUN_ID, run_id)
        .env(env::CHECKPOINT_DIR, &dirs.checkpoint)
        .env(env::METRICS_FILE, &dirs.metrics)
        .env(env::HPARAMS_FILE, &dirs.hparams)
        .env(env::INTERRUPT_SIGNAL, opts.interrupt_signal.as_str())
        .env(env::CHECKPOINT_DEADLINE_S, opts.checkpoint_deadline.as_secs().to_string())
        .env(env::NOTICE_INFO, &dirs.notice_info)
        .env(env::CHECKPOINT_ACK, &dirs.ack)
        .env(env::CHECKPOINT_INTERVAL_S, format!("{:.1}", cadence.cadence(record).handed_s()))
        .env(env::CADENCE_FILE, &dirs.cadence)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the terminal's Ctrl-C reaches tap, which forwards it once,
        // and what the command leaves behind can be ended as a group.
        .process_group(0);
    for (name, value) in flat {
        cmd.env(env::hparam_variable(name), value);
    }
    if let Some(m) = restored {
        cmd.env(env::RESTORED_CHECKPOINT, &m.id).env(env::RESUMED_FROM, &m.run);
        if let Some(step) = m.step {
            cmd.env(env::RESTORED_STEP, step.to_string());
        }
    }
    if let Some(s) = shard {
        cmd.env(env::SHARD_RANK, s.rank.to_string()).env(env::WORLD_SIZE, s.world_size.to_string());
    }
    cmd
}

/// After a run whose end the store holds: its scratch directory goes (TAP_METRICS_FILE,
/// TAP_HPARAMS_FILE, tapml's copy), but for a checkpoint directory the store may not hold
/// (wind-up keeps it and says so). Regression: every run kept its raw metrics file beside the
/// store (195 MB from one long run).
pub(super) async fn tidy_scratch(work: &Path, dirs: &WorkDir) {
    let keep = [dirs.checkpoint.clone(), crate::tapml::staging_dir(&dirs.checkpoint)];
    let work = work.to_owned();
    let _ = crate::blocking::run(move |_| {
        for entry in std::fs::read_dir(&work)?.flatten() {
            let path = entry.path();
            if keep.contains(&path) {
                continue;
            }
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
        std::fs::remove_dir(&work)
    })
    .await;
}

/// Acts on a notice: reads the notice file when there is one (its deadline bounds the
/// checkpoint budget), tells the child its deadline (`info`, `TAP_NOTICE_INFO`), signals
/// it; returns what to record and how long it has for its checkpoint.
pub(super) fn notice(
    pid: Option<Pid>,
    opts: &RunOptions,
    file: Option<&Path>,
    info: &Path,
) -> (Interruption, Duration) {
    let now = now_ms();
    let n = file.map(tap_core::notice::read_notice_file);
    let i = match n {
        Some(Ok(Some(n))) => Interruption {
            kind: n.kind,
            reason: n.reason,
            noticed_ms: now,
            deadline_ms: Some(n.deadline_ms),
            verdict: None,
        },
        Some(Err(e)) => {
            let e = tap_core::text::chain(&e).to_string();
            crate::say!("tap: the notice file is unreadable ({e}); acting on it anyway");
            Interruption { kind: NoticeKind::NoticeFile, reason: e, noticed_ms: now, deadline_ms: None, verdict: None }
        }
        Some(Ok(None)) | None => Interruption {
            kind: NoticeKind::Signal,
            reason: "SIGUSR1 to tap run".into(),
            noticed_ms: now,
            deadline_ms: None,
            verdict: None,
        },
    };
    let left = i.deadline_ms.map(|d| Duration::from_millis((d - now).max(0) as u64));
    let budget = checkpoint_budget(opts.checkpoint_deadline, left);
    crate::say!(
        "tap: interruption notice ({}: {}): sending {} to the training process, waiting up to {:.0?} for its checkpoint",
        i.kind,
        i.reason,
        opts.interrupt_signal,
        budget
    );
    if let Some(pid) = pid {
        write_notice_info(info, &i, now + budget.as_millis() as i64);
        let _ = kill(pid, opts.interrupt_signal);
    }
    (i, budget)
}

/// What the child reads at `TAP_CADENCE_FILE`: the checkpoint interval (`interval_s`, what
/// tapml.checkpoint_due() goes by) and what it comes from; rewritten after every periodic
/// checkpoint. Small and read only by the child, now: a replace without fsync, on the loop.
pub(super) fn write_cadence(path: &Path, c: &tap_core::goodput::Cadence) {
    let mut body = serde_json::to_value(c).unwrap_or_default();
    body["handed_s"] = serde_json::json!(c.handed_s());
    if let Err(e) = tap_core::fsutil::replace(path, body.to_string().as_bytes()) {
        crate::say!("tap: could not write {} ({e}); the command keeps the interval it had", path.display());
    }
}

/// What the child reads at `TAP_NOTICE_INFO` after a notice: `{"deadline_ms": .., ..}`, the
/// time by which it must have checkpointed and exited. A write of a hundred bytes and a
/// rename (no fsync: only the child reads it, now), so it stays on the loop and lands
/// before the signal.
pub(super) fn write_notice_info(path: &Path, i: &Interruption, deadline_ms: i64) {
    let body = serde_json::json!({
        "deadline_ms": deadline_ms,
        "noticed_ms": i.noticed_ms,
        "kind": i.kind,
        "reason": i.reason,
    });
    if let Err(e) = tap_core::fsutil::replace(path, body.to_string().as_bytes()) {
        crate::say!("tap: could not write {} ({e}); the command gets the signal without its deadline", path.display());
    }
}
