//! `tap run`: runs a training command as a tracked, spot-safe run.
//!
//! The child gets its hyperparameters (`TAP_HP_<NAME>` and a JSON file), a checkpoint
//! directory (restored from the experiment's latest checkpoint on `--resume`) and a metrics
//! file it appends JSON lines to. tap streams the child's output to the terminal and the
//! store, records its metrics, uploads each checkpoint it announces
//! (`{"checkpoint": true}`), forwards SIGINT/SIGTERM, and records the final status.
//!
//! Spot safety: on an interruption notice (SIGUSR1 to tap, or the notice file appearing —
//! tap-agent writes it when EC2 announces the reclaim), tap sends the child the configured
//! signal, waits for its final checkpoint until a deadline that leaves time to upload,
//! uploads it, and marks the run `interrupted`; `tap run --resume` on any node continues it.
//!
//! On a node, tap run speaks tap-agent's notice protocol (`tap_core::notice`): it registers
//! under the runtime directory's `runs/`, refuses to start while the node drains, and takes
//! `notice.json` (with its deadline) as the notice; the agent also sends it SIGUSR1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tap_core::command_env as env;
use tap_core::commit;
use tap_core::manifest::Manifest;
use tap_core::notice::{NoticeKind, Registration, RuntimeDir};
use tap_core::runs::{HparamUse, Interruption, MetricsLine, Run, RunStatus, new_run_id, parse_metrics_line};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint;
use crate::now_ms;
use crate::store::{LogStore, ParamStore, RunStore, Stream};

pub mod provenance;
mod recorder;
pub mod reserve;
mod snapshot;
mod supervision;
pub mod target;
use recorder::Recorder;
use supervision::{Readers, Setting, Supervision};
pub use target::{JobRank, Resume, Target};

/// Exit status of `tap run` for an interrupted run (EX_TEMPFAIL: try again, with --resume).
pub const EXIT_INTERRUPTED: u8 = 75;

/// How long output is still read after the command exited. A process it left in the
/// background may hold its stdout/stderr open for as long as it lives; tap does not wait for
/// it (regression: `tap run -- sh -c 'sleep 40 & exit 0'` took 40 s, and SIGTERM to tap did
/// not end it). Two seconds let what the command itself wrote arrive.
const OUTPUT_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub experiment: String,
    /// `--resume [RUN]` or `--resume-from`.
    pub resume: Resume,
    /// `--name`: unique in the experiment.
    pub name: Option<String>,
    /// `--tag KEY=VALUE`: added to the run's tags (a new attempt adds to what it has).
    pub tags: Vec<(String, String)>,
    /// `--disk-reserve`: bytes set aside for the run's end ([`reserve::Reserve`]).
    pub disk_reserve: u64,
    /// `--param` and `--params-file`: this run's own values over the stored defaults.
    pub overrides: BTreeMap<String, String>,
    pub command: Vec<String>,
    /// Signal the child gets on an interruption notice.
    pub interrupt_signal: Signal,
    /// How long the child may take for its final checkpoint after a notice (EC2 gives 120 s;
    /// the rest is for the upload).
    pub checkpoint_deadline: Duration,
    /// A file whose appearance means "interruption notice".
    pub notice_file: Option<PathBuf>,
    /// tap-agent's runtime directory (registration, drain, notice.json); None: not on a node.
    pub runtime: Option<RuntimeDir>,
    /// Per-run scratch directories are created below this.
    pub runs_dir: PathBuf,
    pub host: String,
    pub instance_id: Option<String>,
    /// This node on EC2 (instance, type, AZ, AMI), for the run's provenance.
    pub node: Option<tap_core::runs::NodeIdentity>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The run as recorded (as it ended here when `recorded` is false); None when tap stopped
    /// before the command started.
    pub run: Option<Run>,
    pub exit_code: u8,
    /// The store holds the run's end.
    pub recorded: bool,
    /// What the store does not hold.
    pub lost: recorder::Lost,
}

/// tap's exit status when the store could not record a run's end (sysexits' EX_IOERR): the
/// command's own status would say something the store does not.
pub const EXIT_UNRECORDED: u8 = 74;

/// `TAP_HP_LEARNING_RATE` for `learning_rate` (the shared definition: `tap_core::command_env`).
pub use tap_core::command_env::hparam_variable as hparam_env_name;

/// Names that share one `TAP_HP_` variable (`a.b`, `a_b` and `A_B` are all `TAP_HP_A_B`):
/// each group with more than one name, sorted, so the last is the one whose value the
/// command's environment gets (they are set in that order).
pub fn hparam_env_collisions<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(String, Vec<&'a str>)> {
    let mut by_env: BTreeMap<String, Vec<&'a str>> = BTreeMap::new();
    for n in names {
        by_env.entry(hparam_env_name(n)).or_default().push(n);
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
fn spawn_failure(program: &str, e: &std::io::Error, flat: &BTreeMap<String, String>) -> String {
    if e.raw_os_error() == Some(nix::libc::E2BIG) {
        let hp_bytes: usize = flat.iter().map(|(k, v)| hparam_env_name(k).len() + v.len() + 2).sum();
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
        Some(r) => configured.min(r.saturating_sub((r / 3).max(Duration::from_secs(20)))),
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
struct Registered(Option<PathBuf>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum Event {
    Line(Stream, String),
    /// A metrics line and the offset in TAP_METRICS_FILE just past it.
    Metrics(MetricsLine, u64),
    BadMetricsLine(String),
    /// Upload `id` (of the checkpoint at a step) ended: the new checkpoint (None: the
    /// directory was unchanged), or why not.
    Uploaded(String, u64, Result<Option<Committed>, checkpoint::CheckpointError>),
    /// This rank's managed job moved on (its attempt was ended by the fleet's controller, or
    /// a newer one started): stop the command as on SIGTERM, so no rank hangs on a lost peer.
    /// Its second field: the stop is `tap jobs cancel` (the rank ends `cancelled`).
    JobStop(String, bool),
}

/// Log lines of attempt N are numbered from (N-1)·2^40: the lines of all attempts form the
/// run's log, and no attempt's line replaces another's (a store keeps one line per number).
const LOG_SEQ_ATTEMPT_SHIFT: u32 = 40;

/// How often a rank of a managed job reads its job's record for a stop (one GetItem): the
/// fleet's controller cancels the SSM commands too, but SSM does not promise to stop the
/// processes under them, and a survivor must not wait on its dead peer for NCCL's timeout.
pub const JOB_WATCH: Duration = Duration::from_secs(5);

/// Watches the job this rank belongs to (`TAP_RUN_GROUP`, `TAP_JOB_ATTEMPT`) until `done`:
/// tells the loop once the job stopped this attempt. Store errors are retried at the next
/// read (the SSM cancel is the other path).
async fn watch_job<R: RunStore>(
    store: &R,
    experiment: &str,
    job: Option<(String, u32)>,
    tx: mpsc::Sender<Event>,
    mut done: tokio::sync::watch::Receiver<bool>,
) {
    let Some((group, attempt)) = job else { return };
    loop {
        tokio::select! {
            () = tokio::time::sleep(JOB_WATCH) => {}
            _ = done.changed() => return,
        }
        if *done.borrow() {
            return;
        }
        if let Ok(Ok(Some(record))) =
            tokio::time::timeout(recorder::STORE_CALL_LIMIT, store.get_run(experiment, &group)).await
            && let Some(why) = tap_core::runs::stop_for(&record, attempt)
        {
            let cancel = tap_core::runs::cancelled_by_job(&record, attempt);
            let _ = tx.send(Event::JobStop(why, cancel)).await;
            return;
        }
    }
}

/// Checkpoint uploads run one at a time. A checkpoint announced while one uploads waits;
/// only the newest waits, since the directory holds only the newest checkpoint anyway.
#[derive(Debug)]
struct UploadQueue {
    /// Checkpoint ids are `<prefix>-0001`, … (the owner's id, and `-a<N>` from attempt 2).
    prefix: String,
    count: u32,
    busy: bool,
    pending: Option<u64>,
}

impl UploadQueue {
    fn new(prefix: &str) -> UploadQueue {
        UploadQueue { prefix: prefix.to_owned(), count: 0, busy: false, pending: None }
    }

    /// The id of the next checkpoint of this run.
    fn next_id(&mut self) -> String {
        self.count += 1;
        format!("{}-{:04}", self.prefix, self.count)
    }

    /// A checkpoint at `step` was announced: the upload to start now, if any.
    fn announce(&mut self, step: u64) -> Option<(String, u64)> {
        if self.busy {
            self.pending = Some(step);
            return None;
        }
        self.busy = true;
        Some((self.next_id(), step))
    }

    /// The running upload ended: the waiting one to start, if any.
    fn finished(&mut self) -> Option<(String, u64)> {
        self.busy = false;
        self.pending.take().and_then(|step| self.announce(step))
    }
}

/// One line as read, without its `\n` or `\r\n`.
fn line_bytes(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// One line as read, without its end, decoded; an error when it is not UTF-8.
fn decode_line(raw: &[u8]) -> Result<&str, std::str::Utf8Error> {
    std::str::from_utf8(line_bytes(raw))
}

/// The longest line kept whole. A longer output line is split; a longer metrics line is
/// reported and skipped: a command that never writes a newline cannot grow tap without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A line as a message quotes it: at most 120 characters.
fn shown(line: &str) -> String {
    tap_core::text::clip(line, 120)
}

/// How often the metrics file is read: a checkpoint line is seen this late at most (it is an
/// open, a stat and a read of nothing most of the time).
const METRICS_POLL: Duration = Duration::from_millis(50);

/// Bytes of the metrics file read per poll (the rest waits for the next one).
const METRICS_READ_PER_POLL: u64 = 16 << 20;

/// Tails the metrics file: new complete lines as they are written. Read as bytes: a line that
/// is not UTF-8 or not a metrics line is reported with its number and skipped, and reading goes
/// on (regression: one such line used to end metric reading, and with it every later
/// checkpoint upload, silently). A file truncated or replaced is read again from its start.
async fn tail_metrics(path: PathBuf, tx: mpsc::Sender<Event>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut offset = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    let mut number = 0u64;
    let mut skipping = false;
    loop {
        let finished = *stop.borrow();
        if let Ok(mut f) = tokio::fs::File::open(&path).await {
            if f.metadata().await.is_ok_and(|m| m.len() < offset) {
                let _ = tx
                    .send(Event::BadMetricsLine(
                        "TAP_METRICS_FILE: it shrank (truncated or replaced); reading it again from its start".into(),
                    ))
                    .await;
                (offset, number, skipping) = (0, 0, false);
                partial.clear();
            }
            let mut more = true;
            while more && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                let Ok(n) = (&mut f).take(METRICS_READ_PER_POLL).read_to_end(&mut partial).await else { break };
                offset += n as u64;
                more = n as u64 == METRICS_READ_PER_POLL;
                while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = partial.drain(..=i).collect();
                    let end = offset - partial.len() as u64;
                    number += 1;
                    if std::mem::take(&mut skipping) {
                        continue;
                    }
                    let ev = match decode_line(&raw).map(str::trim) {
                        Ok("") => continue,
                        Ok(_) if raw.len() > MAX_LINE_BYTES => Event::BadMetricsLine(format!(
                            "line {number} of TAP_METRICS_FILE: longer than {MAX_LINE_BYTES} bytes"
                        )),
                        Ok(line) => match parse_metrics_line(line) {
                            Ok(m) => Event::Metrics(m, end),
                            Err(e) => Event::BadMetricsLine(format!(
                                "line {number} of TAP_METRICS_FILE: {}: {e}",
                                shown(line)
                            )),
                        },
                        Err(e) => Event::BadMetricsLine(format!("line {number} of TAP_METRICS_FILE: not UTF-8 ({e})")),
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                if partial.len() > MAX_LINE_BYTES {
                    let line = number + 1;
                    let msg = format!("line {line} of TAP_METRICS_FILE: longer than {MAX_LINE_BYTES} bytes");
                    if !skipping && tx.send(Event::BadMetricsLine(msg)).await.is_err() {
                        return;
                    }
                    skipping = true;
                    partial.clear();
                }
            }
        }
        if finished {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(METRICS_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Forwards the child's output line by line, read as bytes: bytes that are not UTF-8 are
/// shown and recorded as U+FFFD (the line is kept), said once per stream with the first such
/// line's number, and reading goes on until the pipe closes (regression: tap stopped reading
/// at such a byte, and the command died of SIGPIPE).
async fn pipe_lines<R: tokio::io::AsyncRead + Unpin>(reader: R, stream: Stream, tx: mpsc::Sender<Event>) {
    let mut reader = BufReader::new(reader);
    let mut raw = Vec::new();
    let mut number = 0u64;
    let mut warned = false;
    loop {
        raw.clear();
        // At most MAX_LINE_BYTES: a longer line comes in pieces, each a line.
        match (&mut reader).take(MAX_LINE_BYTES as u64).read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => return,
            Ok(_) => number += 1,
        }
        let line = match decode_line(&raw) {
            Ok(text) => text.to_owned(),
            Err(_) => {
                if !warned {
                    warned = true;
                    crate::say!(
                        "tap: line {number} of the command's {} is not UTF-8; such bytes are kept as U+FFFD",
                        stream.as_str()
                    );
                }
                String::from_utf8_lossy(line_bytes(&raw)).into_owned()
            }
        };
        if tx.send(Event::Line(stream, line)).await.is_err() {
            return;
        }
    }
}

/// What stops `tap run` from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Int,
    Term,
    /// SIGUSR1 or the notice file: an interruption notice.
    Notice,
}

impl Sig {
    /// tap's exit status when this ends it before the command started.
    fn exit_code(self) -> u8 {
        match self {
            Sig::Int => 130,
            Sig::Term => 143,
            Sig::Notice => EXIT_INTERRUPTED,
        }
    }
}

/// tap's signal handlers, installed before anything else so that no phase (start-up,
/// restore, the command, the final upload) dies of a signal's default action.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    notice_file: Option<PathBuf>,
    poll: tokio::time::Interval,
}

/// The handlers, installed before `tap run` sets up its stores (which may take seconds: AWS
/// configuration, the instance metadata), so that no signal meets its default action
/// (SIGUSR1's kills); [`run`] takes them over.
static EARLY: std::sync::Mutex<Option<[tokio::signal::unix::Signal; 3]>> = std::sync::Mutex::new(None);

/// Installs `tap run`'s signal handlers now (inside the runtime); see [`EARLY`].
pub fn install_signal_handlers() -> std::io::Result<()> {
    *EARLY.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handlers()?);
    Ok(())
}

/// SIGINT, SIGTERM and SIGUSR1, in that order.
fn handlers() -> std::io::Result<[tokio::signal::unix::Signal; 3]> {
    Ok([signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?, signal(SignalKind::user_defined1())?])
}

impl Signals {
    fn install(notice_file: Option<PathBuf>) -> anyhow::Result<Signals> {
        let early = EARLY.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let [int, term, usr1] = match early {
            Some(h) => h,
            None => handlers()?,
        };
        Ok(Signals { int, term, usr1, notice_file, poll: tokio::time::interval(NOTICE_POLL) })
    }

    /// The next signal; a notice (SIGUSR1, or the notice file found) only when `notices`.
    async fn next(&mut self, notices: bool) -> Sig {
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
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often the notice file is looked for.
const NOTICE_POLL: Duration = Duration::from_millis(500);

/// After tap forwards SIGTERM or SIGINT (or a notice's deadline passed and tap sent SIGTERM),
/// the command has this long to exit before it and its process group get SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// What is left of the command's process group after it exited gets SIGTERM, then SIGKILL
/// after this.
pub const GROUP_TERM_GRACE: Duration = Duration::from_secs(3);

/// After SIGTERM or SIGINT to tap, the final checkpoint upload may take this long; then it is
/// cancelled (LATEST stays on the previous complete checkpoint). With [`TERM_GRACE`], the
/// output drain, [`GROUP_TERM_GRACE`] and the recorder's last write, SIGTERM ends everything
/// within a minute ([`SIGTERM_BOUND`]).
pub const FINAL_UPLOAD_AFTER_TERM: Duration = Duration::from_secs(20);

/// Documented bound from SIGTERM to tap's exit (README): 10 + 2 + 3 + 20 + 20 s, rounded up.
pub const SIGTERM_BOUND: Duration = Duration::from_secs(60);

/// A committed checkpoint and what committing it cost.
struct Committed {
    manifest: Manifest,
    sample: commit::Sample,
}

/// Hashes `dir`, and unless nothing changed since `previous`, uploads it as `target` and moves
/// LATEST to it, measuring each part for the planner. `left_out`: entries the snapshot `dir`
/// was taken from left out (recorded in the manifest with those of `dir`).
async fn commit_checkpoint<O: ObjectStore>(
    objects: &O,
    target: &checkpoint::CheckpointTarget,
    dir: &Path,
    left_out: Vec<tap_core::manifest::SkippedEntry>,
    previous: Option<&Manifest>,
    to_send: &AtomicU64,
) -> Result<Option<Committed>, checkpoint::CheckpointError> {
    let t0 = Instant::now();
    let mut hashed = checkpoint::hash_files(dir).await?;
    hashed.skipped.extend(left_out);
    let hash_s = t0.elapsed().as_secs_f64();
    let files = &hashed.files;
    if files.is_empty() || previous.is_some_and(|p| p.files == *files) {
        return Ok(None);
    }
    let known: std::collections::HashSet<&str> =
        previous.map(|p| p.files.iter().map(|f| f.sha256.as_str()).collect()).unwrap_or_default();
    let new: Vec<&tap_core::manifest::ManifestFile> =
        files.iter().filter(|f| !known.contains(f.sha256.as_str())).collect();
    to_send.store(new.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    let changed: Vec<PathBuf> = new.iter().map(|f| dir.join(&f.path)).collect();
    let child_write_s = crate::blocking::run(move |_| write_time(&changed)).await;
    let moved = objects.bytes_moved();
    let t1 = Instant::now();
    let manifest = checkpoint::upload_hashed(objects, target, dir, hashed).await?;
    let up_s = t1.elapsed().as_secs_f64();
    let sent_bytes = objects.bytes_moved().saturating_sub(moved);
    let (send_s, other_s) = if sent_bytes > 0 { (up_s, 0.0) } else { (0.0, up_s) };
    // tap sees the checkpoint line half a metrics poll after the command wrote it, on average.
    let other_s = other_s + METRICS_POLL.as_secs_f64() / 2.0;
    let sample =
        commit::Sample { total_bytes: manifest.total_bytes(), sent_bytes, hash_s, send_s, other_s, child_write_s };
    Ok(Some(Committed { manifest, sample }))
}

/// How long the training process took to write `files`: newest change − oldest creation
/// (statx birth time); 0 where the filesystem does not keep birth times.
fn write_time(files: &[PathBuf]) -> f64 {
    let (mut first, mut last) = (None::<std::time::SystemTime>, None::<std::time::SystemTime>);
    for f in files {
        let Ok(meta) = std::fs::metadata(f) else { continue };
        let (Ok(born), Ok(changed)) = (meta.created(), meta.modified()) else { return 0.0 };
        first = Some(first.map_or(born, |t| t.min(born)));
        last = Some(last.map_or(changed, |t| t.max(changed)));
    }
    match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).map_or(0.0, |d| d.as_secs_f64()),
        _ => 0.0,
    }
}

/// What `tap run` prepares before the command starts (and may be cancelled during).
struct Prepared {
    target: Target,
    hparams: BTreeMap<String, HparamUse>,
    flat: BTreeMap<String, String>,
}

/// Decides the training ([`target::decide`]), its hyperparameters, and restores its
/// checkpoint into `dirs.checkpoint`.
async fn prepare<R: RunStore, P: ParamStore, O: ObjectStore>(
    store: &R,
    params: &P,
    objects: &O,
    opts: &RunOptions,
    dirs: &WorkDir,
    job: Option<JobRank>,
) -> anyhow::Result<Prepared> {
    let target = target::decide(store, objects, &opts.experiment, &opts.resume, opts.name.as_deref(), job).await?;
    let hparams = target::hparams(params, &target, &opts.overrides).await?;
    let dir = dirs.checkpoint.clone();
    crate::blocking::run(move |_| std::fs::create_dir_all(&dir))
        .await
        .with_context(|| format!("creating {}", dirs.checkpoint.display()))?;
    let flat: BTreeMap<String, String> = hparams.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
    // Regression: names that share one variable shadowed each other, with a warning on some
    // paths and silently on others; now no path starts a command that would get one of two
    // values under one name.
    if let Some((env, names)) = hparam_env_collisions(flat.keys().map(String::as_str)).into_iter().next() {
        bail!(
            "hyperparameters {} would all be {env} in the command's environment, each shadowing the other; rename one (--param, --params-file or `tap params unset`)",
            names.join(" and ")
        );
    }
    let body = serde_json::to_vec_pretty(&flat)?;
    let file = dirs.hparams.clone();
    crate::blocking::run(move |_| std::fs::write(&file, body))
        .await
        .with_context(|| format!("writing {}", dirs.hparams.display()))?;
    match target.checkpoint() {
        Some(m) => {
            crate::say!(
                "tap: restoring checkpoint {} of run {} ({} files, {})",
                m.checkpoint_id,
                m.run_id,
                m.files.len(),
                commit::bytes(m.total_bytes())
            );
            checkpoint::restore(objects, m, &dirs.checkpoint).await?;
            crate::say!("tap: resuming from checkpoint {} of run {}", m.checkpoint_id, m.run_id);
        }
        None => match &target {
            Target::Continue { run, .. } => {
                crate::say!("tap: run {} has no committed checkpoint; its new attempt starts fresh", run.run_id);
            }
            Target::Rank { job, .. } if opts.resume != Resume::No => {
                crate::say!("tap: job {} has no checkpoint of its own yet; starting fresh", job.group);
            }
            _ => {}
        },
    }
    Ok(Prepared { target, hparams, flat })
}

/// The run record this process works on: a new record (a new run, a fork, a job's rank) or
/// the next attempt of a run; stored before the command starts.
async fn begin_record<R: RunStore>(
    store: &R,
    opts: &RunOptions,
    run_id: &str,
    started: i64,
    prepared: &Prepared,
) -> anyhow::Result<Run> {
    let restored = prepared.target.checkpoint();
    let supervisor = crate::liveness::this_process();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let provenance = Some(provenance::collect(&opts.command, &cwd, opts.node.clone()).await);
    let job = match &prepared.target {
        Target::Rank { job, .. } => Some(job),
        _ => None,
    };
    if let Target::Continue { run, last_step, .. } = &prepared.target {
        let start = tap_core::runs::AttemptStart {
            host: opts.host.clone(),
            instance_id: opts.instance_id.clone(),
            started_ms: started,
            supervisor: supervisor.clone(),
            node_rank: None,
            job_attempt: None,
        };
        let attempts_before = run.attempts.len();
        // The observed status: `lost` when its supervisor vanished.
        let (ended_as, last_step) = (run.status, *last_step);
        let restored_id = restored.map(|m| m.checkpoint_id.clone());
        let restored_step = restored.and_then(|m| m.step);
        let stored = store
            .update_run(&opts.experiment, &run.run_id, |r| {
                // Only the attempt we decided on: a second `tap run --resume` of the same run
                // that got there first has changed the record.
                if r.attempts.len() != attempts_before || r.status == RunStatus::Running && ended_as != RunStatus::Lost
                {
                    return;
                }
                r.begin_attempt(ended_as, start.clone());
                r.provenance.clone_from(&provenance);
                // Bounded by MAX_TAGS; past it the attempt keeps the tags it had.
                let _ = tap_core::query::add_tags(r, &opts.tags);
                r.restored.clone_from(&restored_id);
                r.restored_step = restored_step;
                r.recomputed_steps = tap_core::runs::recomputed_steps(restored_step, last_step);
            })
            .await?;
        if stored.attempts.len() != attempts_before + 1 || stored.supervisor != supervisor {
            bail!("run {} was resumed by another tap run at the same time; it runs there", run.run_id);
        }
        return Ok(stored);
    }
    let parent = match &prepared.target {
        Target::New { parent } => parent.as_ref(),
        _ => None,
    };
    let tags = tap_core::query::merged_tags(&BTreeMap::new(), &opts.tags).map_err(anyhow::Error::msg)?;
    let record = Run {
        instance_id: opts.instance_id.clone(),
        name: opts.name.clone(),
        tags,
        provenance,
        hparams: prepared.hparams.clone(),
        resumed_from: parent.map(|m| m.run_id.clone()),
        parent_checkpoint: parent.map(|m| m.checkpoint_id.clone()),
        restored: restored.map(|m| m.checkpoint_id.clone()),
        restored_step: restored.and_then(|m| m.step),
        group: job.map(|j| j.group.clone()),
        node_rank: job.map(|j| j.rank),
        job_attempt: job.map(|j| j.attempt),
        supervisor,
        ..Run::new(&opts.experiment, run_id, opts.command.clone(), &opts.host, started)
    };
    Ok(store.create_run(&record).await?)
}

/// Stops what the cancelled start-up left running and removes the run's scratch directory:
/// nothing half-written stays behind.
async fn abandon(work: &Path) {
    if !crate::blocking::settle(Duration::from_secs(10)).await {
        crate::say!("tap: a copy is still running after 10 s; {} may keep a partial file", work.display());
    }
    let dir = work.to_owned();
    let _ = crate::blocking::run(move |_| std::fs::remove_dir_all(dir)).await;
}

/// Sends `sig` to the command's process group (its pgid is its pid: `process_group(0)`).
fn signal_group(pid: Pid, sig: Signal) -> bool {
    nix::sys::signal::killpg(pid, sig).is_ok()
}

/// Ends what is left of the command's process group: SIGTERM, then SIGKILL after
/// [`GROUP_TERM_GRACE`]. Silent when nothing is left.
async fn reap_group(pid: Pid) {
    // Processes already dying (a SIGKILL just sent) get a moment to be gone.
    for _ in 0..10 {
        if nix::sys::signal::killpg(pid, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !signal_group(pid, Signal::SIGTERM) {
        return;
    }
    crate::say!("tap: processes the command left behind got SIGTERM");
    let until = Instant::now() + GROUP_TERM_GRACE;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if nix::sys::signal::killpg(pid, None).is_err() {
            return;
        }
    }
    crate::say!("tap: they still ran {GROUP_TERM_GRACE:?} later; sent SIGKILL");
    let _ = signal_group(pid, Signal::SIGKILL);
}

/// Where one run's files live, under `runs_dir/<run id>`; the command is told each of them.
struct WorkDir {
    root: PathBuf,
    /// TAP_CHECKPOINT_DIR: the command writes its checkpoints here.
    checkpoint: PathBuf,
    /// TAP_METRICS_FILE: JSON lines of metrics and checkpoint announcements.
    metrics: PathBuf,
    /// TAP_HPARAMS_FILE: the hyperparameters as JSON.
    hparams: PathBuf,
    /// TAP_NOTICE_INFO: written at a notice, before the signal (the deadline, tapml.time_left).
    notice_info: PathBuf,
    /// TAP_CHECKPOINT_ACK: tap says here which checkpoint it has taken.
    ack: PathBuf,
    /// Hard-link snapshots of announced checkpoints, one directory each, until uploaded.
    snapshots: PathBuf,
}

impl WorkDir {
    fn new(runs_dir: &Path, run_id: &str) -> WorkDir {
        let root = runs_dir.join(run_id);
        WorkDir {
            checkpoint: root.join("checkpoint"),
            metrics: root.join("metrics.jsonl"),
            hparams: root.join("hparams.json"),
            notice_info: root.join("notice.json"),
            ack: root.join("checkpoint-ack"),
            snapshots: root.join("snapshots"),
            root,
        }
    }
}

/// The training command as tap starts it: tap's variables, the hyperparameters, the restored
/// checkpoint, piped output, and its own process group.
fn command(
    program: &str,
    args: &[String],
    opts: &RunOptions,
    run_id: &str,
    dirs: &WorkDir,
    flat: &BTreeMap<String, String>,
    resumed: Option<&Manifest>,
) -> Command {
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the terminal's Ctrl-C reaches tap, which forwards it once,
        // and what the command leaves behind can be ended as a group.
        .process_group(0);
    for (name, value) in flat {
        cmd.env(hparam_env_name(name), value);
    }
    if let Some(m) = resumed {
        cmd.env(env::RESTORED_CHECKPOINT, &m.checkpoint_id).env(env::RESUMED_FROM, &m.run_id);
        if let Some(step) = m.step {
            cmd.env(env::RESTORED_STEP, step.to_string());
        }
    }
    cmd
}

/// `tap run`: prepares the scratch directory, resumes if asked, starts the command, supervises
/// it ([`Supervision`]) and records everything.
pub async fn run<R, P, L, O>(
    store: &R,
    params: &P,
    logs_store: &L,
    objects: &O,
    opts: &RunOptions,
) -> anyhow::Result<Outcome>
where
    R: RunStore,
    P: ParamStore,
    L: LogStore,
    O: ObjectStore + 'static + Clone,
{
    let Some((program, args)) = opts.command.split_first() else { bail!("no command given: tap run -- <command...>") };
    let notice_file = opts.notice_file.clone().or_else(|| opts.runtime.as_ref().map(RuntimeDir::notice_path));
    let mut signals = Signals::install(notice_file.clone())?;
    let started = now_ms();
    let job = JobRank::from_env();
    // The run and the attempt are known once the store is read; the scratch directory and
    // the registration need a name before that: this process's own.
    let process_id = new_run_id(started, fastrand::u32(..));
    let dirs = WorkDir::new(&opts.runs_dir, &process_id);
    let work = &dirs.root;

    // Registered from the start: tap-agent's SIGUSR1 reaches a restore too. A notice written
    // before we registered is found by the notice-file poll (it fires at once).
    let registered = Registered(opts.runtime.as_ref().and_then(|rt| {
        rt.register(&Registration::this_process(&process_id, &opts.experiment, started))
            .map_err(|e| {
                crate::say!(
                    "tap: not registered with tap-agent ({}: {e}); notices reach this run only by signal",
                    rt.root().display()
                )
            })
            .ok()
    }));

    // Start-up (the store, hyperparameters, the restore): a notice or a stop ends it cleanly.
    let prepared = tokio::select! {
        p = prepare(store, params, objects, opts, &dirs, job) => match p {
            Ok(p) => p,
            Err(e) => {
                abandon(work).await;
                return Err(e);
            }
        },
        sig = signals.next(true) => {
            abandon(work).await;
            let what = if opts.resume == Resume::No { "start-up" } else { "the checkpoint restore" };
            let why = match sig { Sig::Notice => "an interruption notice", Sig::Int => "SIGINT", Sig::Term => "SIGTERM" };
            crate::say!("tap: {why} during {what}; the command was not started and nothing was recorded (exit {})", sig.exit_code());
            return Ok(Outcome { run: None, exit_code: sig.exit_code(), recorded: true, lost: recorder::Lost::default() });
        }
    };
    let run_id = match &prepared.target {
        Target::Continue { run, .. } => run.run_id.clone(),
        _ => process_id.clone(),
    };
    // The registration (one file per pid) names the run once it is known: an attempt of an
    // earlier run has that run's id.
    if run_id != process_id
        && let (Some(rt), Some(_)) = (&opts.runtime, &registered.0)
    {
        let _ = rt.register(&Registration::this_process(&run_id, &opts.experiment, started));
    }
    let record = match begin_record(store, opts, &run_id, started, &prepared).await {
        Ok(r) => r,
        Err(e) => {
            abandon(work).await;
            return Err(e);
        }
    };
    let resumed = prepared.target.checkpoint().cloned();
    let Prepared { flat, target, .. } = prepared;
    // Whose checkpoints these are: the run's; a managed job's rank 0 commits the job's (a
    // relaunch restores them); from attempt 2 on, ids carry the attempt.
    let (owner, attempt) = match &target {
        Target::Rank { job, .. } if job.rank == 0 => (job.group.clone(), job.attempt),
        _ => (run_id.clone(), record.attempt()),
    };
    let ckpt_prefix = if attempt > 1 { format!("{owner}-a{attempt}") } else { owner.clone() };
    tell_job(store, &record).await;
    match record.attempt() {
        1 => crate::say!("tap: run {}/{run_id} started", opts.experiment),
        n => crate::say!("tap: run {}/{run_id} attempt {n} started", opts.experiment),
    }

    let mut cmd = command(program, args, opts, &run_id, &dirs, &flat, resumed.as_ref());
    // tapml, the training script's side (python/tapml), the copy that matches this tap.
    let python = work.join("python");
    match crate::blocking::run(move |_| crate::tapml::install(&python)).await {
        Ok(dir) => {
            cmd.env("PYTHONPATH", crate::tapml::python_path(&dir, std::env::var_os("PYTHONPATH").as_deref()));
        }
        Err(e) => crate::say!("tap: could not provide the tapml module ({e}); the command runs without it"),
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = spawn_failure(program, &e, &flat);
            store
                .update_run(&opts.experiment, &run_id, |r| {
                    r.status = RunStatus::Failed;
                    r.ended_ms = Some(now_ms());
                })
                .await?;
            bail!(msg);
        }
    };
    // Never 0: kill(0, ..) would signal tap's own process group.
    let pid = Pid::from_raw(child.id().context("the child exited before tap saw its pid")? as i32);

    let reserve = match opts.disk_reserve {
        0 => None,
        bytes => {
            let dir = opts.runs_dir.clone();
            match crate::blocking::run(move |_| reserve::Reserve::create(&dir, bytes)).await {
                Ok(r) => Some(std::sync::Arc::new(r)),
                Err(e) => {
                    crate::say!(
                        "tap: warning: could not set {} aside in {} ({e}); a full disk may keep the run's end from the store",
                        commit::bytes(bytes),
                        opts.runs_dir.display()
                    );
                    None
                }
            }
        }
    };
    let (recorder, recorder_task) = Recorder::new(&record, reserve);
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let (job_done, job_done_rx) = tokio::sync::watch::channel(false);
    let job = record.group.clone().zip(record.job_attempt);
    let job_watch = watch_job(store, &opts.experiment, job, tx.clone(), job_done_rx);
    let supervise = async {
        let (stop_metrics, stop_rx) = tokio::sync::watch::channel(false);
        let readers = Readers {
            stdout: tokio::spawn(pipe_lines(child.stdout.take().context("child stdout")?, Stream::Stdout, tx.clone())),
            stderr: tokio::spawn(pipe_lines(child.stderr.take().context("child stderr")?, Stream::Stderr, tx.clone())),
            metrics: tokio::spawn(tail_metrics(dirs.metrics.clone(), tx.clone(), stop_rx)),
            stop_metrics,
            job_done,
        };
        let setting = Setting {
            opts,
            objects,
            ckpt_owner: &owner,
            ckpt_prefix: &ckpt_prefix,
            first_log_seq: u64::from(record.attempt() - 1) << LOG_SEQ_ATTEMPT_SHIFT,
            dirs: &dirs,
            notice_file: notice_file.as_deref(),
            pid,
            tx,
        };
        let mut supervision = Supervision::new(setting, recorder, record, resumed);
        supervision.drive(&mut child, &mut rx, &mut signals, &readers).await?;
        supervision.wind_up(&mut signals).await;
        let mut outcome = supervision.finish().await?;
        if let Some(run) = &outcome.run {
            tell_job(store, run).await;
            let lost = if outcome.lost.is_empty() {
                String::new()
            } else {
                format!(
                    "; the store does not hold {} metric points and {} output lines",
                    outcome.lost.points, outcome.lost.lines
                )
            };
            if outcome.recorded {
                crate::say!("tap: run {}/{run_id} {}{}{lost}", opts.experiment, run.status.as_str(), left_out(run));
                tidy_scratch(work, &dirs).await;
            } else {
                // Regression: "could not record the end", then "run … succeeded" and exit 0,
                // while the store showed the run lost. The last line and the status say what
                // the store holds; the scratch directory (with TAP_METRICS_FILE) stays.
                crate::say!(
                    "tap: run {}/{run_id} {} here, but the store could not record its end: readers show it as lost{lost}; {} keeps its metrics file (exit {EXIT_UNRECORDED})",
                    opts.experiment,
                    run.status.as_str(),
                    work.display()
                );
                outcome.exit_code = EXIT_UNRECORDED;
            }
        }
        Ok(outcome)
    };
    let (outcome, (), ()) = tokio::join!(supervise, recorder_task.run(store, logs_store), job_watch);
    outcome
}

/// `; its checkpoints left out what tap cannot store: 1 entry (pw)`: the end line says what the
/// store does not hold.
fn left_out(run: &Run) -> String {
    tap_core::manifest::left_out_summary(&run.checkpoint_left_out)
        .map(|s| format!("; its checkpoints left out what tap cannot store: {s}"))
        .unwrap_or_default()
}

/// After a run whose end the store holds: its scratch directory goes (TAP_METRICS_FILE,
/// TAP_HPARAMS_FILE, tapml's copy), but for a checkpoint directory the store may not hold
/// (wind-up keeps it and says so). Regression: every run kept its raw metrics file beside the
/// store (195 MB from one long run).
async fn tidy_scratch(work: &Path, dirs: &WorkDir) {
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

/// Tells the multi-node job this run is a node of (its record, which `tap launch` writes;
/// `TAP_JOB_ATTEMPT` says which attempt this node belongs to) how the run is doing. A job
/// without a record is fine; a store error is reported, never fatal to the run.
async fn tell_job<R: RunStore>(store: &R, run: &Run) {
    let attempt = std::env::var(env::JOB_ATTEMPT).ok().and_then(|a| a.parse::<u32>().ok());
    let (Some(group), Some(attempt)) = (&run.group, attempt) else { return };
    let node = run.clone();
    match store
        .update_run(&run.experiment_id, group, |job| {
            tap_core::runs::record_node_run(job, attempt, &node);
        })
        .await
    {
        Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {}
        Err(e) => crate::say!("tap: could not record this node in job {group}: {}", tap_core::text::chain(&e)),
    }
}

/// Acts on a notice: reads the notice file when there is one (its deadline bounds the
/// checkpoint budget), tells the child its deadline (`info`, `TAP_NOTICE_INFO`), signals
/// it; returns what to record and how long it has for its checkpoint.
fn notice(pid: Option<Pid>, opts: &RunOptions, file: Option<&Path>, info: &Path) -> (Interruption, Duration) {
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

/// What the child reads at `TAP_NOTICE_INFO` after a notice: `{"deadline_ms": .., ..}`, the
/// time by which it must have checkpointed and exited. A write of a hundred bytes and a
/// rename (no fsync: only the child reads it, now), so it stays on the loop and lands
/// before the signal.
fn write_notice_info(path: &Path, i: &Interruption, deadline_ms: i64) {
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

/// The host name, for run records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

pub fn default_runs_dir(home: &Path) -> PathBuf {
    home.join("runs")
}

#[cfg(test)]
mod fault_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_instance_id_off_ec2() {
        if !std::path::Path::new("/sys/hypervisor/uuid").exists()
            && std::env::var_os("AWS_EC2_METADATA_SERVICE_ENDPOINT").is_none()
        {
            assert_eq!(provenance::node_identity().await, None);
        }
    }

    #[test]
    fn uploads_go_one_at_a_time_and_only_the_newest_waits() {
        let mut q = UploadQueue::new("r");
        assert_eq!(q.announce(10), Some(("r-0001".into(), 10)));
        assert_eq!(q.announce(20), None, "busy: waits");
        assert_eq!(q.announce(30), None, "replaces the waiting one");
        assert_eq!(q.finished(), Some(("r-0002".into(), 30)));
        assert_eq!(q.finished(), None);
        assert!(!q.busy);
        assert_eq!(q.next_id(), "r-0003", "the final sync gets the next id");
    }

    #[test]
    fn checkpoint_budget_leaves_time_to_upload() {
        let s = Duration::from_secs;
        assert_eq!(checkpoint_budget(s(90), None), s(90));
        assert_eq!(checkpoint_budget(s(90), Some(s(120))), s(80), "EC2's two minutes: 40 s kept for the upload");
        assert_eq!(checkpoint_budget(s(90), Some(s(300))), s(90), "never more than configured");
        assert_eq!(checkpoint_budget(s(90), Some(s(30))), s(10), "at least 20 s kept");
        assert_eq!(checkpoint_budget(s(90), Some(s(5))), s(0));
    }

    #[test]
    fn hparam_env_names() {
        assert_eq!(hparam_env_name("learning_rate"), "TAP_HP_LEARNING_RATE");
        assert_eq!(
            hparam_env_collisions(["a_b", "lr", "A_B", "a.b", "x"]),
            [("TAP_HP_A_B".to_owned(), vec!["A_B", "a.b", "a_b"])]
        );
        assert!(hparam_env_collisions(["lr", "momentum"]).is_empty());
        assert_eq!(hparam_env_name("model.depth-2"), "TAP_HP_MODEL_DEPTH_2");
    }
}
