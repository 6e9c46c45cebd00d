//! The supervisor's loop as a state machine. [`Supervision`] holds what `tap run` knows of its
//! command while it runs — its [`Phase`], the checkpoint uploads, the run's record — and has
//! one handler per event: the command's exit, a line of output, a metrics line, a finished
//! upload, a job stop, a notice, a stop signal, a deadline. The loop
//! ([`Supervision::drive`]) only waits for the next event and hands it over, so it is always
//! free to read the command's output and react to a notice; nothing in a handler waits.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tap_core::commit;
use tap_core::manifest::Manifest;
use tap_core::runs::{MetricPoint, MetricsLine, Run, RunStatus};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use super::child::{WorkDir, notice, reap_group, signal_group};
use super::recorder::Recorder;
use super::signals::{NEVER, Sig, Signals};
use super::snapshot::{Ack, Snapshot};
use super::uploads::{Committed, Upload, Uploads, commit_checkpoint, commit_shard};
use super::{
    EXIT_INTERRUPTED, Event, FINAL_UPLOAD_AFTER_TERM, OUTPUT_DRAIN_AFTER_EXIT, Outcome, RunOptions, TERM_GRACE,
};
use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint::CheckpointTarget;
use crate::now_ms;
use crate::store::LogLine;

/// A cancelled final upload waits this long for its copies to stop.
const CANCELLED_UPLOAD_SETTLE: Duration = Duration::from_secs(5);

/// While the command's output is drained after its exit, the loop wakes this often to see
/// whether the drain is overdue ([`OUTPUT_DRAIN_AFTER_EXIT`]).
const DRAIN_TICK: Duration = Duration::from_millis(200);

/// Where the command is, as the supervisor drives it. The states that end in a signal carry
/// their deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// It runs; no notice, no stop asked.
    Running,
    /// A notice reached it; it has `until` for its final checkpoint, then gets SIGTERM.
    Checkpointing { until: Instant },
    /// SIGTERM or SIGINT sent; SIGKILL (to its group) at `until`.
    Terminating { until: Instant },
    /// SIGKILL sent.
    Killed,
    /// It exited with `status`. Its output is read until its pipes close, or, if a process it
    /// left behind holds them open, until `drain_until` (None once that process group ended).
    Exited { status: ExitStatus, drain_until: Option<Instant> },
}

impl Phase {
    /// When the loop must act if nothing else happens first.
    fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Checkpointing { until } | Phase::Terminating { until } => Some(until),
            Phase::Running | Phase::Killed | Phase::Exited { .. } => None,
        }
    }

    fn exited(self) -> Option<ExitStatus> {
        match self {
            Phase::Exited { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The phase's deadline passed at `now`: SIGTERM after a notice's, SIGKILL to the
    /// group after SIGTERM's.
    fn after_deadline(self, now: Instant) -> Option<(Phase, Act)> {
        match self {
            Phase::Checkpointing { .. } => {
                Some((Phase::Terminating { until: now + TERM_GRACE }, Act::Send(Signal::SIGTERM)))
            }
            Phase::Terminating { .. } => Some((Phase::Killed, Act::KillGroup)),
            Phase::Running | Phase::Killed | Phase::Exited { .. } => None,
        }
    }

    /// The `nth` stop (SIGINT or SIGTERM to tap, forwarded as `sig`) at `now`: forwarded once,
    /// with [`TERM_GRACE`] to exit; a second kills the group. Nothing once it exited.
    fn after_stop(self, nth: u32, sig: Signal, now: Instant) -> Option<(Phase, Act)> {
        match (self, nth) {
            (Phase::Exited { .. }, _) => None,
            (_, 1) => Some((Phase::Terminating { until: now + TERM_GRACE }, Act::Send(sig))),
            _ => Some((Phase::Killed, Act::KillGroup)),
        }
    }
}

/// What a change of [`Phase`] does to the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// This signal to the command.
    Send(Signal),
    /// SIGKILL to its process group.
    KillGroup,
}

/// The tasks that read the command's output and metrics file, and the channels that tell
/// the readers (and the job watch) the command exited.
pub(super) struct Readers {
    pub stdout: JoinHandle<()>,
    pub stderr: JoinHandle<()>,
    pub metrics: JoinHandle<()>,
    /// Tells the metrics tail to read what is left and stop.
    pub stop_metrics: watch::Sender<bool>,
    /// Tells the job watch to stop.
    pub job_done: watch::Sender<bool>,
}

impl Readers {
    fn pipes_closed(&self) -> bool {
        self.stdout.is_finished() && self.stderr.is_finished()
    }
}

/// A periodic upload in flight.
struct InFlight {
    id: String,
    task: JoinHandle<()>,
    started: Instant,
    moved_before: u64,
    /// Bytes it has to send (known once hashed).
    to_send: Arc<AtomicU64>,
}

impl Upload for InFlight {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A sharded job's rank, as its uploads need it: each checkpoint is its shard of a step of
/// attempt `attempt` of job `job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardOf {
    pub job: String,
    pub attempt: u32,
    pub rank: u32,
    pub world_size: u32,
}

impl ShardOf {
    fn target(&self, experiment: &str, step: u64) -> crate::artifacts::shards::ShardTarget {
        crate::artifacts::shards::ShardTarget {
            experiment: experiment.to_owned(),
            job: self.job.clone(),
            attempt: self.attempt,
            step,
            rank: self.rank,
            world_size: self.world_size,
        }
    }
}

/// After its command exited, a rank whose last shard waits for other ranks' retries the
/// step's commit this often (it commits the step itself if the rank that stored the last
/// shard did not get to), for at most [`SHARD_COMMIT_WAIT`] (or until the notice's deadline).
const SHARD_COMMIT_RETRY: Duration = Duration::from_millis(500);
pub(super) const SHARD_COMMIT_WAIT: Duration = Duration::from_secs(30);

/// What an upload of this run is made from: where its files go and where it reports.
struct UploadSource<'a, O> {
    objects: &'a O,
    experiment: String,
    /// The run whose checkpoints these are (a managed job's rank 0: the job's).
    owner: String,
    /// A sharded job's rank: its checkpoints are shards.
    shard: Option<ShardOf>,
    /// The live checkpoint directory (a snapshot falls back to copying from it).
    live: PathBuf,
    snapshot_warned: Arc<AtomicBool>,
    tx: mpsc::Sender<Event>,
}

impl<O: ObjectStore + Clone + 'static> UploadSource<'_, O> {
    /// Uploads checkpoint `id` (at `step`) from its snapshot on a task of its own, which
    /// reports back with [`Event::Uploaded`]; `previous`: the last committed manifest.
    fn start(&self, id: String, step: u64, snap: Snapshot, previous: Option<Manifest>) -> InFlight {
        let moved_before = self.objects.bytes_moved();
        let objects = self.objects.clone();
        let target = CheckpointTarget::checkpoint(&self.experiment, &self.owner, &id, Some(step));
        let shard = self.shard.as_ref().map(|s| s.target(&self.experiment, step));
        let (live, warned, tx) = (self.live.clone(), self.snapshot_warned.clone(), self.tx.clone());
        let to_send = Arc::new(AtomicU64::new(0));
        let sending = to_send.clone();
        let task = tokio::spawn(async move {
            let (dir, _guard, left_out) = snap.ready(&live, &warned).await;
            let result = match &shard {
                Some(t) => commit_shard(&objects, t, &dir, left_out, &sending).await,
                None => commit_checkpoint(&objects, &target, &dir, left_out, previous.as_ref(), &sending).await,
            };
            let _ = tx.send(Event::Uploaded(target.id, step, Box::new(result))).await;
        });
        InFlight { id, task, started: Instant::now(), moved_before, to_send }
    }

    /// What [`Uploads`] calls to start an upload, on top of `previous` (the last committed
    /// manifest).
    fn starter<'s>(&'s self, previous: &'s Option<Manifest>) -> impl FnOnce(String, u64, Snapshot) -> InFlight + 's {
        move |id, step, snap| self.start(id, step, snap, previous.clone())
    }
}

/// `rank 1`, `ranks 1, 3`: ranks as a line names them.
fn ranks(list: &[u32]) -> String {
    let names: Vec<String> = list.iter().map(u32::to_string).collect();
    match names.len() {
        1 => format!("rank {}", names[0]),
        _ => format!("ranks {}", names.join(", ")),
    }
}

/// At most this many distinct skipped metric names are reported (a command that writes a new
/// bad name every step would otherwise fill the terminal).
const MAX_SKIPPED_NAMES_SAID: usize = 100;

/// What `tap run` knows of its command while it runs; see the module's doc.
pub(super) struct Supervision<'a, O> {
    /// The run's settings, as one value: fixed while it runs.
    run: Setting<'a, O>,
    recorder: Recorder,
    record: Run,
    echo: crate::term::Echo,
    phase: Phase,
    /// SIGINTs and SIGTERMs to tap so far (and a job stop, as one).
    stop_asked: u32,
    /// The user stopped the run (SIGINT or SIGTERM to tap, or `tap jobs cancel` of its job):
    /// it ends `cancelled`.
    user_stop: bool,
    /// The next log line's number.
    seq: u64,
    /// The command's step, as its metrics say.
    step: u64,
    uploads: Uploads<InFlight, Snapshot>,
    upload_source: UploadSource<'a, O>,
    snapshot_seq: u32,
    /// Metric names already reported as skipped: each is said once per run.
    skipped_said: std::collections::BTreeSet<String>,
    ack: Ack,
    last_manifest: Option<Manifest>,
    last_commit: Option<commit::Commit>,
    /// What each periodic commit cost, for the forecast.
    samples: Vec<commit::Sample>,
    warned_forecast: bool,
    /// A sharded job's rank: the step whose shard it stored last, while that step waits for
    /// other ranks' shards.
    waiting_step: Option<u64>,
}

/// What a [`Supervision`] is given about the run it supervises.
pub(super) struct Setting<'a, O> {
    pub opts: &'a RunOptions,
    pub objects: &'a O,
    /// The run whose checkpoints these are (a managed job's rank 0: the job's).
    pub ckpt_owner: &'a str,
    /// Checkpoint ids start with it (see [`Uploads`]).
    pub ckpt_prefix: &'a str,
    /// The number of this attempt's first log line.
    pub first_log_seq: u64,
    pub dirs: &'a WorkDir,
    pub notice_file: Option<&'a Path>,
    pub pid: Pid,
    /// A sharded job's rank.
    pub shard: Option<ShardOf>,
    /// When its restore finished, if it restored a shard.
    pub restored_at: Option<std::time::SystemTime>,
    /// R and M for the checkpoint interval (TAP_CADENCE_FILE), refreshed at each checkpoint.
    pub cadence: super::CadenceInputs,
}

impl<'a, O: ObjectStore + Clone + 'static> Supervision<'a, O> {
    /// `tx`: where uploads report back.
    pub(super) fn new(
        s: Setting<'a, O>,
        tx: mpsc::Sender<Event>,
        recorder: Recorder,
        record: Run,
        resumed: Option<Manifest>,
    ) -> Self {
        let last_commit = resumed.as_ref().map(|m| commit::Commit {
            id: m.checkpoint_id.clone(),
            committed_ms: m.created_ms,
            step: m.step,
        });
        Supervision {
            recorder,
            record,
            echo: crate::term::Echo::default(),
            phase: Phase::Running,
            stop_asked: 0,
            user_stop: false,
            seq: s.first_log_seq,
            step: 0,
            uploads: Uploads::new(s.ckpt_prefix),
            upload_source: UploadSource {
                objects: s.objects,
                experiment: s.opts.experiment.clone(),
                owner: s.ckpt_owner.to_owned(),
                shard: s.shard.clone(),
                live: s.dirs.checkpoint.clone(),
                snapshot_warned: Arc::new(AtomicBool::new(false)),
                tx,
            },
            snapshot_seq: 0,
            skipped_said: Default::default(),
            ack: Ack::new(s.dirs.ack.clone()),
            last_manifest: resumed,
            last_commit,
            samples: Vec::new(),
            warned_forecast: false,
            waiting_step: None,
            run: s,
        }
    }

    /// The loop: waits for the next event and hands it to its handler, until the command
    /// exited, its output is read and no upload runs.
    pub(super) async fn drive(
        &mut self,
        child: &mut Child,
        rx: &mut mpsc::Receiver<Event>,
        signals: &mut Signals,
        readers: &Readers,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::sleep(NEVER);
        tokio::pin!(deadline);
        let mut armed = None;
        loop {
            let until = self.phase.deadline();
            if until != armed {
                deadline.as_mut().reset(until.unwrap_or_else(|| Instant::now() + NEVER));
                armed = until;
            }
            let draining = matches!(self.phase, Phase::Exited { drain_until: Some(_), .. });
            tokio::select! {
                status = child.wait(), if self.phase.exited().is_none() => {
                    self.on_exit(status.context("waiting for the child")?, readers);
                }
                Some(event) = rx.recv() => self.on_event(event)?,
                sig = signals.next(self.record.interruption.is_none()) => match sig {
                    Sig::Notice => self.on_notice()?,
                    Sig::Int | Sig::Term => self.on_stop(sig),
                },
                () = &mut deadline, if until.is_some() => self.on_deadline(),
                () = tokio::time::sleep(DRAIN_TICK), if draining => {}
            }
            if let Phase::Exited { status, drain_until: Some(t) } = self.phase
                && !readers.pipes_closed()
                && rx.is_empty()
                && Instant::now() >= t
            {
                crate::say!(
                    "tap: the command exited, but a process it started still holds its output open; ending its process group"
                );
                reap_group(self.run.pid).await;
                readers.stdout.abort();
                readers.stderr.abort();
                self.phase = Phase::Exited { status, drain_until: None };
            }
            if self.phase.exited().is_some()
                && readers.pipes_closed()
                && readers.metrics.is_finished()
                && rx.is_empty()
                && !self.uploads.busy()
            {
                return Ok(());
            }
        }
    }

    fn on_exit(&mut self, status: ExitStatus, readers: &Readers) {
        self.phase = Phase::Exited { status, drain_until: Some(Instant::now() + OUTPUT_DRAIN_AFTER_EXIT) };
        let _ = readers.job_done.send(true);
        // Drain what the child wrote before it exited.
        let _ = readers.stop_metrics.send(true);
    }

    fn on_event(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Line(stream, text) => {
                self.echo.line(stream, &text);
                self.recorder.line(LogLine { seq: self.seq, ts_ms: now_ms(), stream, text });
                self.seq += 1;
            }
            Event::Metrics(line, end) => self.on_metrics(line, end),
            Event::BadMetricsLine(e) => crate::say!("tap: ignoring {e}"),
            Event::JobStop(why, cancel) => self.on_job_stop(&why, cancel),
            Event::Uploaded(id, step, result) => self.on_uploaded(id, step, *result)?,
        }
        Ok(())
    }

    /// A metrics line: recorded; a checkpoint announcement is snapshotted at once and
    /// uploaded now, or after the upload in flight.
    fn on_metrics(&mut self, line: MetricsLine, end: u64) {
        let MetricsLine { step: s, checkpoint: is_ckpt, time_ms, values, skipped } = line;
        let ts_ms = tap_core::runs::point_time(time_ms, now_ms());
        for skip in skipped {
            if self.skipped_said.len() < MAX_SKIPPED_NAMES_SAID && self.skipped_said.insert(skip.name.clone()) {
                crate::say!(
                    "tap: skipping metric {:?} (the line's other values are kept; said once per run): {}",
                    skip.name,
                    skip.why
                );
            }
        }
        self.step = s.unwrap_or(self.step + u64::from(!values.is_empty()));
        for (name, value) in values {
            self.record.final_metrics.insert(name.clone(), value);
            self.recorder.point(MetricPoint { step: self.step, name, value, ts_ms });
        }
        self.recorder.record(&self.record);
        if is_ckpt {
            self.snapshot_seq += 1;
            let dir = self.run.dirs.snapshots.join(self.snapshot_seq.to_string());
            let snap = Snapshot::take(&self.run.dirs.checkpoint, dir, self.ack.at(end));
            if let Some(older) = self.uploads.announce(self.step, snap, self.upload_source.starter(&self.last_manifest))
            {
                older.discard();
            }
        }
    }

    /// The job this rank belongs to moved on: stop the command as on SIGTERM.
    fn on_job_stop(&mut self, why: &str, cancel: bool) {
        if self.stop_asked > 0 {
            return;
        }
        self.user_stop = cancel;
        if let Some((phase, act)) = self.phase.after_stop(1, Signal::SIGTERM, Instant::now()) {
            self.stop_asked = 1;
            crate::say!("tap: {why}: stopping this rank (SIGTERM; {TERM_GRACE:?} to exit)");
            self.enter(phase, act);
        }
    }

    fn on_uploaded(
        &mut self,
        id: String,
        ckpt_step: u64,
        result: Result<Option<Committed>, crate::artifacts::checkpoint::CheckpointError>,
    ) -> anyhow::Result<()> {
        let periodic = self.record.interruption.is_none();
        match result {
            Ok(Some(c)) => {
                let s = &c.sample;
                if periodic {
                    // The command stopped training to write it (the upload runs beside it).
                    self.record.spent.checkpoints += 1;
                    self.record.spent.checkpoint_write_ms += (s.child_write_s * 1000.0).round() as i64;
                    self.samples.push(c.sample);
                    self.record.forecast = commit::forecast(&self.samples, commit::DEFAULT_AGENT_POLL_S);
                    super::child::write_cadence(&self.run.dirs.cadence, &self.run.cadence.cadence(&self.record));
                }
                let plan = self.record.forecast.as_ref().map(|f| format!("; {}", f.line())).unwrap_or_default();
                let what = match &c.step {
                    Some(crate::artifacts::shards::Committed::Waiting(missing)) => {
                        format!("shard of step {ckpt_step} stored (the step waits for {})", ranks(missing))
                    }
                    Some(_) => format!("shard of step {ckpt_step} stored"),
                    None => format!("checkpoint {id} committed"),
                };
                crate::say!(
                    "tap: {what} in {:.2} s ({} files, {} hashed in {:.2} s, {} sent in {:.2} s){plan}",
                    s.commit_s(),
                    c.manifest.files.len(),
                    commit::bytes(s.total_bytes),
                    s.hash_s,
                    commit::bytes(s.sent_bytes),
                    s.send_s + s.other_s,
                );
                if let Some(w) = self.record.forecast.as_ref().and_then(commit::Forecast::warning)
                    && !self.warned_forecast
                {
                    self.warned_forecast = true;
                    crate::say!("tap: warning: {w}");
                }
                self.note_left_out(&c.manifest);
                match c.step {
                    Some(outcome) => {
                        self.record.last_shard =
                            Some(tap_core::shards::ShardStored { step: ckpt_step, stored_ms: c.manifest.created_ms });
                        self.on_step(ckpt_step, outcome)
                    }
                    None => {
                        self.record.checkpoint = Some(id.clone());
                        self.last_commit =
                            Some(commit::Commit { id: id.clone(), committed_ms: now_ms(), step: Some(ckpt_step) });
                    }
                }
                self.last_manifest = Some(c.manifest);
                self.recorder.record(&self.record);
            }
            Ok(None) => {}
            Err(e) => crate::say!("tap: checkpoint {id} not uploaded: {}", tap_core::text::chain(&e)),
        }
        self.uploads.finished(&id, self.upload_source.starter(&self.last_manifest));
        Ok(())
    }

    /// A sharded job's rank stored its shard of `step`: what came of the step's commit.
    fn on_step(&mut self, step: u64, outcome: crate::artifacts::shards::Committed) {
        use crate::artifacts::shards::Committed as Step;
        match outcome {
            Step::Now(c) | Step::Already(c) => self.step_committed(&c),
            Step::Waiting(_) => self.waiting_step = Some(step),
            Step::Refused(why) => {
                crate::say!("tap: step {step} is never committed: {why}");
                self.waiting_step = None;
            }
        }
    }

    /// The step this rank stored a shard of is committed: said, and its latest checkpoint.
    fn step_committed(&mut self, c: &tap_core::shards::StepCommit) {
        crate::say!("tap: step {} of job {} committed: all {} shards stored ({})", c.step, c.job, c.world_size, c.id);
        self.committed(c);
    }

    /// The job committed step commit `c`: it is this rank's latest checkpoint.
    fn committed(&mut self, c: &tap_core::shards::StepCommit) {
        if self.last_commit.as_ref().is_some_and(|l| l.step > Some(c.step)) {
            return;
        }
        self.record.checkpoint = Some(c.id.clone());
        self.last_commit = Some(commit::Commit { id: c.id.clone(), committed_ms: c.committed_ms, step: Some(c.step) });
        if self.waiting_step.is_some_and(|w| w <= c.step) {
            self.waiting_step = None;
        }
    }

    /// A notice: the command gets its signal and deadline, and an upload in flight goes on
    /// only if it lands before that deadline.
    fn on_notice(&mut self) -> anyhow::Result<()> {
        let running = self.phase.exited().is_none();
        let (i, budget) =
            notice(running.then_some(self.run.pid), self.run.opts, self.run.notice_file, &self.run.dirs.notice_info);
        if running {
            self.phase = Phase::Checkpointing { until: Instant::now() + budget };
        }
        if let Some(f) = self.uploads.in_flight() {
            let end = commit::deadline_ms(i.noticed_ms, i.deadline_ms);
            let left_s = (end - now_ms()) as f64 / 1000.0;
            let moved = self.run.objects.bytes_moved().saturating_sub(f.moved_before);
            let forecast = self.record.forecast.as_ref().map(|p| p.commit_s);
            let elapsed = f.started.elapsed().as_secs_f64();
            if !commit::keep_upload(moved, f.to_send.load(Ordering::Relaxed), elapsed, forecast, left_s)
                && let Some(f) = self.uploads.cancel(self.upload_source.starter(&self.last_manifest))
            {
                f.task.abort();
                crate::say!(
                    "tap: cancelled the upload of checkpoint {} (it would not land before the deadline); \
                     the final checkpoint goes first, LATEST stays on {}",
                    f.id,
                    self.record.checkpoint.as_deref().unwrap_or("the previous one")
                );
            }
        }
        self.record.interruption = Some(i);
        self.recorder.record(&self.record);
        Ok(())
    }

    /// SIGINT or SIGTERM to tap: forwarded once; a second one kills the command's group.
    fn on_stop(&mut self, sig: Sig) {
        self.stop_asked += 1;
        self.user_stop = true;
        let forward = if sig == Sig::Int { Signal::SIGINT } else { Signal::SIGTERM };
        let Some((phase, act)) = self.phase.after_stop(self.stop_asked, forward, Instant::now()) else { return };
        match act {
            Act::Send(s) => {
                crate::say!("tap: {s} forwarded to the command; it has {TERM_GRACE:?} to exit (again to kill it now)");
            }
            Act::KillGroup => crate::say!("tap: killing the command and its process group"),
        }
        self.enter(phase, act);
    }

    /// The phase's deadline passed: SIGTERM after a notice's, SIGKILL after SIGTERM's.
    fn on_deadline(&mut self) {
        let Some((phase, act)) = self.phase.after_deadline(Instant::now()) else { return };
        match act {
            Act::Send(_) => crate::say!("tap: no exit within the checkpoint deadline of the notice; sending SIGTERM"),
            Act::KillGroup => {
                crate::say!("tap: still running {TERM_GRACE:?} after SIGTERM; sending SIGKILL to its process group");
            }
        }
        self.enter(phase, act);
    }

    fn enter(&mut self, phase: Phase, act: Act) {
        match act {
            Act::Send(s) => drop(kill(self.run.pid, s)),
            Act::KillGroup => drop(signal_group(self.run.pid, Signal::SIGKILL)),
        }
        self.phase = phase;
    }

    /// After the loop: ends what the command left in its group, then a last sync of the
    /// checkpoint directory (the command may have saved without announcing it), bounded by
    /// a stop and cancelled by a second one; removes the scratch copy once the store holds it.
    pub(super) async fn wind_up(&mut self, signals: &mut Signals) {
        reap_group(self.run.pid).await;
        self.recorder.record(&self.record);
        // Every upload ended; what their guards have not removed yet goes now.
        let leftover = self.run.dirs.snapshots.clone();
        let _ = crate::blocking::run(move |_| std::fs::remove_dir_all(leftover)).await;

        let synced = match self.run.shard.clone() {
            Some(shard) => self.shard_wind_up(&shard, signals).await,
            None => self.stop_asked < 2 && self.final_sync(signals).await,
        };
        // Regression: every run kept a full scratch copy of its checkpoint forever. Once the
        // store holds what the directory holds, it goes (with tapml's staging beside it);
        // otherwise it stays, and tap says where.
        let ckpt_dir = &self.run.dirs.checkpoint;
        let scratch = [ckpt_dir.clone(), crate::tapml::staging_dir(ckpt_dir)];
        if synced {
            let _ = crate::blocking::run(move |_| scratch.iter().for_each(|d| drop(std::fs::remove_dir_all(d)))).await;
        } else {
            crate::say!("tap: kept {} (the store may not hold all of it)", ckpt_dir.display());
        }
    }

    /// A sharded job's rank after its command exited: a step whose shard it stored waits for
    /// the other ranks' (retrying the commit, bounded by the notice's deadline or
    /// [`SHARD_COMMIT_WAIT`], and by a stop); whether the store holds the checkpoint directory
    /// as it is now (only announced checkpoints are a job's shards: a directory that changed
    /// after the last one stays on disk, and tap says so).
    async fn shard_wind_up(&mut self, shard: &ShardOf, signals: &mut Signals) -> bool {
        let mut timed_out = None;
        if let Some(step) = self.waiting_step {
            let wait = match &self.record.interruption {
                Some(i) => {
                    let left = commit::deadline_ms(i.noticed_ms, i.deadline_ms) - now_ms();
                    Duration::from_millis(u64::try_from(left).unwrap_or(0))
                }
                None => SHARD_COMMIT_WAIT,
            };
            let until = Instant::now() + wait.min(SHARD_COMMIT_WAIT);
            let objects = self.run.objects;
            let exp = self.run.opts.experiment.clone();
            loop {
                let tried = tokio::select! {
                    r = crate::artifacts::shards::try_commit(objects, &exp, &shard.job, (shard.attempt, step)) => r,
                    sig = signals.next(false) => if sig == Sig::Notice { continue } else { break },
                };
                use crate::artifacts::shards::Committed as Step;
                match tried {
                    Ok(Step::Now(c) | Step::Already(c)) => {
                        self.step_committed(&c);
                        break;
                    }
                    Ok(Step::Refused(why)) => {
                        crate::say!("tap: step {step} is never committed: {why}");
                        break;
                    }
                    Ok(Step::Waiting(missing)) if Instant::now() >= until => {
                        timed_out = Some((step, missing));
                        break;
                    }
                    Ok(Step::Waiting(_)) => {}
                    Err(e) if Instant::now() >= until => {
                        crate::say!("tap: could not commit step {step}: {}", tap_core::text::chain(&e));
                        break;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(SHARD_COMMIT_RETRY).await;
            }
        }
        // Steps this rank's shard waited on may have been committed by another rank since:
        // the record names the job's newest commit of this attempt.
        if let Ok(Some(c)) =
            crate::artifacts::shards::latest_commit(self.run.objects, &self.run.opts.experiment, &shard.job).await
            && c.attempt == shard.attempt
        {
            self.committed(&c);
        }
        if let Some((step, missing)) = timed_out {
            crate::say!(
                "tap: step {step} was not committed: {} did not store a shard of it in time (in a job every rank announces each checkpoint; tapml.checkpoint does); the job's latest checkpoint stays {}",
                ranks(&missing),
                self.record.checkpoint.as_deref().unwrap_or("none")
            );
        }
        self.recorder.record(&self.record);
        let Some(last) = &self.last_manifest else {
            return self.unchanged_since_restore().await;
        };
        let files = last.files.clone();
        match crate::artifacts::checkpoint::hash_files(&self.run.dirs.checkpoint).await {
            Ok(h) if h.files == files => true,
            _ => {
                crate::say!(
                    "tap: the checkpoint directory changed after its last announced checkpoint; in a job only announced steps are stored"
                );
                false
            }
        }
    }

    /// Whether the checkpoint directory holds only what the restore wrote (the store's), or
    /// nothing: no file in it changed after the restore.
    async fn unchanged_since_restore(&self) -> bool {
        let (dir, since) = (self.run.dirs.checkpoint.clone(), self.run.restored_at);
        crate::blocking::run(move |_| {
            let Ok(listing) = crate::artifacts::checkpoint::list_files(&dir) else { return false };
            listing.files.iter().all(|(_, path)| {
                let changed = std::fs::symlink_metadata(path).and_then(|m| m.modified());
                since.is_some_and(|t| changed.is_ok_and(|c| c <= t))
            })
        })
        .await
    }

    /// The last sync; whether the store now holds the checkpoint directory.
    async fn final_sync(&mut self, signals: &mut Signals) -> bool {
        let id = self.uploads.next_id();
        let sending = AtomicU64::new(0);
        // Boxed, so that dropping it on a cancel drops the upload (and cancels its copies).
        let target = CheckpointTarget::checkpoint(&self.run.opts.experiment, self.run.ckpt_owner, &id, Some(self.step));
        let mut sync = Box::pin(commit_checkpoint(
            self.run.objects,
            &target,
            &self.run.dirs.checkpoint,
            vec![],
            self.last_manifest.as_ref(),
            &sending,
        ));
        let limit = tokio::time::sleep(if self.stop_asked > 0 { FINAL_UPLOAD_AFTER_TERM } else { NEVER });
        tokio::pin!(limit);
        let ended = loop {
            tokio::select! {
                r = &mut sync => break Ok(r),
                sig = signals.next(false) => if sig != Sig::Notice { break Err("a signal") },
                () = &mut limit => break Err("the time after a stop"),
            }
        };
        // Dropping it cancels what is left of a cancelled upload (and its copies).
        drop(sync);
        match ended {
            Ok(Ok(Some(c))) => {
                crate::say!(
                    "tap: final checkpoint {id} committed in {:.2} s ({} files, {} sent)",
                    c.sample.commit_s(),
                    c.manifest.files.len(),
                    commit::bytes(c.sample.sent_bytes)
                );
                self.note_left_out(&c.manifest);
                self.record.checkpoint = Some(id.clone());
                self.last_commit = Some(commit::Commit { id, committed_ms: now_ms(), step: Some(self.step) });
                true
            }
            Ok(Ok(None)) => true,
            Ok(Err(e)) => {
                crate::say!("tap: final checkpoint not uploaded: {e}");
                false
            }
            Err(why) => {
                crate::say!(
                    "tap: final checkpoint upload cancelled by {why}; LATEST stays on {}",
                    self.record.checkpoint.as_deref().unwrap_or("the previous checkpoint")
                );
                crate::blocking::settle(CANCELLED_UPLOAD_SETTLE).await;
                false
            }
        }
    }

    /// Entries a committed checkpoint left out: each said once per run, naming it, and kept in
    /// the record (bounded as a manifest's list is).
    fn note_left_out(&mut self, m: &tap_core::manifest::Manifest) {
        for e in &m.skipped {
            if !self.record.checkpoint_left_out.contains(e)
                && self.record.checkpoint_left_out.len() < tap_core::manifest::MAX_SKIPPED_RECORDED
            {
                crate::say!(
                    "tap: warning: checkpoint {} left out {}: {} (every other file was stored; said once per run)",
                    m.checkpoint_id,
                    e.path,
                    e.why
                );
                self.record.checkpoint_left_out.push(e.clone());
            }
        }
    }

    /// The run's end: its status (interrupted, succeeded or failed), the verdict on its final
    /// checkpoint after a notice, tap's exit code; the record is written a last time.
    pub(super) async fn finish(mut self) -> anyhow::Result<Outcome> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.phase.exited().context("child status")?;
        if let Some(i) = self.record.interruption.as_mut() {
            let v = commit::verdict(
                i.noticed_ms,
                commit::deadline_ms(i.noticed_ms, i.deadline_ms),
                self.last_commit.as_ref(),
                self.step,
            );
            crate::say!("tap: final checkpoint {}", v.line());
            i.verdict = Some(v);
        }
        let record = &mut self.record;
        record.status = if record.interruption.is_some() {
            RunStatus::Interrupted
        } else if self.user_stop {
            RunStatus::Cancelled
        } else if status.success() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        let exit_code = match record.status {
            RunStatus::Interrupted => EXIT_INTERRUPTED,
            _ => status.code().map_or_else(|| 128 + status.signal().unwrap_or(0) as u8, |c| c as u8),
        };
        record.ended_ms = Some(now_ms());
        record.exit_code = status.code();
        record.signal = status.signal();
        let record = self.record;
        let finished = self.recorder.finish(&record).await;
        let recorded = finished.stored.is_some();
        Ok(Outcome { run: Some(finished.stored.unwrap_or(record)), exit_code, recorded, lost: finished.lost })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited() -> Phase {
        use std::os::unix::process::ExitStatusExt;
        Phase::Exited { status: ExitStatus::from_raw(0), drain_until: None }
    }

    #[test]
    fn a_notice_deadline_sends_sigterm_and_a_sigterm_deadline_kills_the_group() {
        let now = Instant::now();
        let checkpointing = Phase::Checkpointing { until: now };
        let (terminating, act) = checkpointing.after_deadline(now).expect("acts");
        assert_eq!((terminating, act), (Phase::Terminating { until: now + TERM_GRACE }, Act::Send(Signal::SIGTERM)));
        assert_eq!(terminating.deadline(), Some(now + TERM_GRACE));
        assert_eq!(terminating.after_deadline(now), Some((Phase::Killed, Act::KillGroup)));
        for idle in [Phase::Running, Phase::Killed, exited()] {
            assert_eq!(idle.after_deadline(now), None, "{idle:?} has no deadline");
            assert_eq!(idle.deadline(), None, "{idle:?}");
        }
    }

    #[test]
    fn the_first_stop_is_forwarded_the_second_kills_and_none_reaches_an_exited_command() {
        let now = Instant::now();
        for phase in [Phase::Running, Phase::Checkpointing { until: now }] {
            assert_eq!(
                phase.after_stop(1, Signal::SIGINT, now),
                Some((Phase::Terminating { until: now + TERM_GRACE }, Act::Send(Signal::SIGINT))),
                "{phase:?}"
            );
        }
        let terminating = Phase::Terminating { until: now + TERM_GRACE };
        assert_eq!(terminating.after_stop(2, Signal::SIGTERM, now), Some((Phase::Killed, Act::KillGroup)));
        assert_eq!(Phase::Killed.after_stop(3, Signal::SIGTERM, now), Some((Phase::Killed, Act::KillGroup)));
        assert_eq!(exited().after_stop(1, Signal::SIGTERM, now), None);
    }
}
