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
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tap_core::commit;
use tap_core::manifest::Manifest;
use tap_core::notice::{Registration, RuntimeDir};
use tap_core::runs::{HparamUse, MetricsLine, Run, RunStatus, new_run_id};
use tokio::sync::mpsc;

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint;
use crate::now_ms;
use crate::store::{LogStore, ParamStore, RunStore, Stream};

mod child;
mod job;
pub mod provenance;
mod readers;
mod recorder;
pub mod reserve;
mod signals;
mod snapshot;
mod supervision;
pub mod target;
mod uploads;
use child::{Registered, WorkDir, abandon, command, spawn_failure, tidy_scratch};
pub use child::{checkpoint_budget, draining, hparam_env_collisions, runtime_dir};
pub use job::JOB_WATCH;
use job::{tell_job, watch_job};
pub use readers::MAX_LINE_BYTES;
use readers::{pipe_lines, tail_metrics};
use recorder::Recorder;
pub use signals::install_signal_handlers;
use signals::{Sig, Signals};
pub(crate) use supervision::ShardOf;
use supervision::{Readers, Setting, Supervision};
pub use target::{JobRank, Joining, Membership, Resume, Target};
use uploads::Committed;

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
    /// The job this run is a rank of (managed, or `--group`), and `--restore`.
    pub membership: Membership,
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

enum Event {
    Line(Stream, String),
    /// A metrics line and the offset in TAP_METRICS_FILE just past it.
    Metrics(MetricsLine, u64),
    BadMetricsLine(String),
    /// Upload `id` (of the checkpoint at a step) ended: the new checkpoint (None: the
    /// directory was unchanged), or why not.
    Uploaded(String, u64, Box<Result<Option<Committed>, checkpoint::CheckpointError>>),
    /// This rank's managed job moved on (its attempt was ended by the fleet's controller, or
    /// a newer one started): stop the command as on SIGTERM, so no rank hangs on a lost peer.
    /// Its second field: the stop is `tap jobs cancel` (the rank ends `cancelled`).
    JobStop(String, bool),
}

/// Log lines of attempt N are numbered from (N-1)·2^40: the lines of all attempts form the
/// run's log, and no attempt's line replaces another's (a store keeps one line per number).
const LOG_SEQ_ATTEMPT_SHIFT: u32 = 40;

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

/// What `tap run` prepares before the command starts (and may be cancelled during).
struct Prepared {
    target: Target,
    hparams: BTreeMap<String, HparamUse>,
    flat: BTreeMap<String, String>,
    /// A sharded job's rank: when its restore finished (files not changed since are the
    /// store's).
    restored_at: Option<std::time::SystemTime>,
    /// How long the restore took (0: nothing restored).
    restore_ms: i64,
}

/// Decides the training ([`target::decide`]), its hyperparameters, and restores its
/// checkpoint into `dirs.checkpoint`.
async fn prepare<R: RunStore, P: ParamStore, O: ObjectStore>(
    store: &R,
    params: &P,
    objects: &O,
    opts: &RunOptions,
    dirs: &WorkDir,
) -> anyhow::Result<Prepared> {
    let target =
        target::decide(store, objects, &opts.experiment, &opts.resume, opts.name.as_deref(), &opts.membership).await?;
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
    let restore_began = now_ms();
    if let Target::Shard { member, step, all, .. } = &target {
        let mut restored_at = None;
        match step {
            Some(c) => {
                restore_shards(objects, member, c, *all, &dirs.checkpoint).await?;
                restored_at = Some(std::time::SystemTime::now());
            }
            None if opts.resume != Resume::No => {
                crate::say!("tap: job {} has no committed step yet; rank {} starts fresh", member.group, member.rank);
            }
            None => {}
        }
        let restore_ms = if restored_at.is_some() { now_ms() - restore_began } else { 0 };
        return Ok(Prepared { target, hparams, flat, restored_at, restore_ms });
    }
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
    let restore_ms = if target.checkpoint().is_some() { now_ms() - restore_began } else { 0 };
    Ok(Prepared { target, hparams, flat, restored_at: None, restore_ms })
}

/// A sharded job's rank: its shard (or with `all` every shard) of the job's newest committed
/// step into `dir`.
async fn restore_shards<O: ObjectStore>(
    objects: &O,
    member: &tap_core::group::Member,
    c: &tap_core::shards::StepCommit,
    all: bool,
    dir: &Path,
) -> anyhow::Result<()> {
    // Another world size is refused as it is (nothing of the step is wrong).
    tap_core::shards::shards_to_restore(c, member.rank, member.world_size, all).map_err(anyhow::Error::msg)?;
    let what = if all { format!("all {} shards", c.world_size) } else { format!("rank {}'s shard", member.rank) };
    crate::say!(
        "tap: restoring {what} of step {} of job {} (committed by {} ranks, {} in all)",
        c.step,
        c.job,
        c.world_size,
        commit::bytes(c.total_bytes())
    );
    if let Err(e) = crate::artifacts::shards::restore(objects, c, (member.rank, member.world_size), all, dir).await {
        // The step is refused; the one before it is offered.
        let before = crate::artifacts::shards::committed_steps(objects, &c.experiment, &c.job)
            .await
            .ok()
            .and_then(|all| all.into_iter().rev().find(|(a, s, _)| (*a, *s) < (c.attempt, c.step)));
        let offer = match before {
            Some((_, s, id)) => {
                format!("; the committed step before it is {s} ({id}): resume from it with --restore-step {s}")
            }
            None => "; no committed step comes before it".to_owned(),
        };
        bail!("step {} of job {} cannot be restored: {}{offer}", c.step, c.job, tap_core::text::chain(&e));
    }
    crate::say!("tap: resuming rank {} of job {} from step {}", member.rank, c.job, c.step);
    Ok(())
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
    let restored = prepared.target.restored();
    let supervisor = crate::liveness::this_process();
    let spent =
        tap_core::runs::Spent { restore_ms: prepared.restore_ms, node: opts.node.clone(), ..Default::default() };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let provenance = Some(provenance::collect(&opts.command, &cwd, opts.node.clone()).await);
    let start = tap_core::runs::AttemptStart {
        host: opts.host.clone(),
        instance_id: opts.instance_id.clone(),
        started_ms: started,
        supervisor: supervisor.clone(),
        node_rank: None,
        job_attempt: None,
    };
    let job = job_of(store, opts, prepared, run_id, &start).await?;
    if let Target::Continue { run, last_step, .. } = &prepared.target {
        let attempts_before = run.attempts.len();
        // The observed status: `lost` when its supervisor vanished.
        let (ended_as, last_step) = (run.status, *last_step);
        let restored_id = restored.as_ref().map(|m| m.id.clone());
        let restored_step = restored.as_ref().and_then(|m| m.step);
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
                r.spent.clone_from(&spent);
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
        restored: restored.as_ref().map(|m| m.id.clone()),
        restored_step: restored.as_ref().and_then(|m| m.step),
        group: job.as_ref().map(|j| j.0.clone()),
        node_rank: job.as_ref().map(|j| j.1),
        job_attempt: job.as_ref().map(|j| j.2),
        supervisor,
        spent,
        ..Run::new(&opts.experiment, run_id, opts.command.clone(), &opts.host, started)
    };
    Ok(store.create_run(&record).await?)
}

/// (group, rank, attempt) of the job this run is a rank of; a rank of a group run by hand
/// joins it here ([`join_group`]).
async fn job_of<R: RunStore>(
    store: &R,
    opts: &RunOptions,
    prepared: &Prepared,
    run_id: &str,
    start: &tap_core::runs::AttemptStart,
) -> anyhow::Result<Option<(String, u32, u32)>> {
    Ok(match &prepared.target {
        Target::Rank { job, .. } => Some((job.group.clone(), job.rank, job.attempt)),
        Target::Shard { member, joining: Joining::Managed { attempt }, .. } => {
            Some((member.group.clone(), member.rank, *attempt))
        }
        Target::Shard { member, joining: Joining::ByHand { resume }, .. } => {
            let attempt = join_group(store, opts, member, *resume, run_id, start, &prepared.hparams).await?;
            Some((member.group.clone(), member.rank, attempt))
        }
        _ => None,
    })
}

/// Rank `member.rank` of a group run by hand takes its slot in the group's record (creating
/// the record, joining its newest attempt, or beginning the next one: tap_core::group), as
/// node run `node_run`; the attempt it joined. Decided on the newest record inside the
/// store's conditional update, so ranks starting at once see each other.
async fn join_group<R: RunStore>(
    store: &R,
    opts: &RunOptions,
    member: &tap_core::group::Member,
    resume: bool,
    node_run: &str,
    start: &tap_core::runs::AttemptStart,
    hparams: &BTreeMap<String, HparamUse>,
) -> anyhow::Result<u32> {
    use tap_core::group;
    let (exp, g) = (&opts.experiment, &member.group);
    let mut record = store.get_run(exp, g).await?;
    if record.is_none() {
        let tags = tap_core::query::merged_tags(&BTreeMap::new(), &opts.tags).map_err(anyhow::Error::msg)?;
        let base = Run {
            tags,
            hparams: hparams.clone(),
            supervisor: None,
            ..Run::new(exp, g, opts.command.clone(), &opts.host, start.started_ms)
        };
        let fresh = group::new_record(base, member, node_run, start);
        match store.create_run(&fresh).await {
            Ok(r) if group::holds(&r, 1, member.rank, node_run) => return Ok(1),
            // Another rank created it first: join what it created.
            Ok(r) => record = Some(r),
            Err(crate::store::StoreError::Conflict(_)) => record = store.get_run(exp, g).await?,
            Err(e) => return Err(e.into()),
        }
    }
    // Refused at once when the record read says no (the update decides again on the newest).
    group::join(record.as_ref(), member, resume).map_err(anyhow::Error::msg)?;
    let stored = store
        .update_run(exp, g, |r| {
            if let Ok(d) = group::join(Some(r), member, resume) {
                group::apply(r, d, member, node_run, start);
            }
        })
        .await?;
    if let Some(attempt) = stored.job.as_ref().map(|j| j.attempt)
        && group::holds(&stored, attempt, member.rank, node_run)
    {
        return Ok(attempt);
    }
    // The newest record says no (another rank took this slot meanwhile): its reason.
    match group::join(Some(&stored), member, resume) {
        Err(why) => bail!("{why}"),
        Ok(_) => bail!("group {g} changed while rank {} joined it; start this rank again", member.rank),
    }
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
    // The run and the attempt are known once the store is read; the scratch directory and
    // the registration need a name before that: this process's own.
    let process_id = new_run_id(started, fastrand::u32(..));
    let dirs = WorkDir::new(&opts.runs_dir, &process_id);
    // Registered from the start: tap-agent's SIGUSR1 reaches a restore too. A notice written
    // before we registered is found by the notice-file poll (it fires at once).
    let registered = register(opts, &process_id, started);
    let prepared = match start_up(store, params, objects, opts, &dirs, &mut signals).await? {
        Ok(p) => p,
        Err(stopped) => return Ok(stopped),
    };
    let begun = begin(store, opts, &process_id, started, &registered, prepared, &dirs).await?;
    child::write_cadence(&dirs.cadence, &begun.cadence.cadence(&begun.record));
    let mut child = spawn_child(store, opts, (program, args), &begun, &dirs).await?;
    // Never 0: kill(0, ..) would signal tap's own process group.
    let pid = Pid::from_raw(child.id().context("the child exited before tap saw its pid")? as i32);
    let Begun { run_id, mut record, resumed, owner, ckpt_prefix, shard, restored_at, cadence, .. } = begun;
    // Written with the record's next write (the goodput's start of the command).
    record.spent.command_started_ms = Some(now_ms());
    if let Some(s) = &shard
        && let Err(e) = crate::artifacts::shards::mark_attempt(objects, &opts.experiment, &s.job, s.attempt).await
    {
        // Said, not fatal: the fence against older attempts' late shards is then weaker.
        crate::say!("tap: could not mark attempt {} of job {} begun: {}", s.attempt, s.job, tap_core::text::chain(&e));
    }

    let (recorder, recorder_task) = Recorder::new(&record, set_aside(opts).await);
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
            shard,
            restored_at,
            cadence,
        };
        let mut supervision = Supervision::new(setting, tx, recorder, record, resumed);
        supervision.drive(&mut child, &mut rx, &mut signals, &readers).await?;
        supervision.wind_up(&mut signals).await;
        let mut outcome = supervision.finish().await?;
        if let Some(run) = &outcome.run {
            tell_job(store, run).await;
            say_ended(opts, &run_id, &dirs, &mut outcome).await;
        }
        Ok(outcome)
    };
    let (outcome, (), ()) = tokio::join!(supervise, recorder_task.run(store, logs_store), job_watch);
    outcome
}

/// Registers this process with tap-agent (when on a node) under `id`; a failure is said and
/// the run goes on (notices then reach it only by signal).
fn register(opts: &RunOptions, id: &str, started: i64) -> Registered {
    Registered(opts.runtime.as_ref().and_then(|rt| {
        rt.register(&Registration::this_process(id, &opts.experiment, started))
            .map_err(|e| {
                crate::say!(
                    "tap: not registered with tap-agent ({}: {e}); notices reach this run only by signal",
                    rt.root().display()
                )
            })
            .ok()
    }))
}

/// Start-up (the store, hyperparameters, the restore), which a notice or a stop ends cleanly:
/// what the run is, or (`Err`) the outcome of a start-up that was stopped.
async fn start_up<R: RunStore, P: ParamStore, O: ObjectStore>(
    store: &R,
    params: &P,
    objects: &O,
    opts: &RunOptions,
    dirs: &WorkDir,
    signals: &mut Signals,
) -> anyhow::Result<Result<Prepared, Outcome>> {
    tokio::select! {
        p = prepare(store, params, objects, opts, dirs) => match p {
            Ok(p) => Ok(Ok(p)),
            Err(e) => {
                abandon(&dirs.root).await;
                Err(e)
            }
        },
        sig = signals.next(true) => {
            abandon(&dirs.root).await;
            let what = if opts.resume == Resume::No { "start-up" } else { "the checkpoint restore" };
            let why = match sig { Sig::Notice => "an interruption notice", Sig::Int => "SIGINT", Sig::Term => "SIGTERM" };
            crate::say!("tap: {why} during {what}; the command was not started and nothing was recorded (exit {})", sig.exit_code());
            Ok(Err(Outcome { run: None, exit_code: sig.exit_code(), recorded: true, lost: recorder::Lost::default() }))
        }
    }
}

/// The run as it begins: recorded, with whose checkpoints it commits and under which ids.
struct Begun {
    run_id: String,
    record: Run,
    resumed: Option<Manifest>,
    flat: BTreeMap<String, String>,
    /// Whose checkpoints these are: the run's; a managed job's rank 0 commits the job's.
    owner: String,
    /// Checkpoint ids start with it (from attempt 2 on, they carry the attempt).
    ckpt_prefix: String,
    /// What the restore brought back.
    restored: Option<target::Restored>,
    /// A sharded job's rank: its checkpoints are shards of the job's steps.
    shard: Option<ShardOf>,
    restored_at: Option<std::time::SystemTime>,
    /// What the cadence reads beside this attempt's own checkpoints: R and M.
    cadence: CadenceInputs,
}

/// Records the start (a new run, or an attempt of an earlier one) and says it.
async fn begin<R: RunStore>(
    store: &R,
    opts: &RunOptions,
    process_id: &str,
    started: i64,
    registered: &Registered,
    prepared: Prepared,
    dirs: &WorkDir,
) -> anyhow::Result<Begun> {
    let run_id = match &prepared.target {
        Target::Continue { run, .. } => run.run_id.clone(),
        _ => process_id.to_owned(),
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
            abandon(&dirs.root).await;
            return Err(e);
        }
    };
    let resumed = prepared.target.checkpoint().cloned();
    let restored = prepared.target.restored();
    let Prepared { flat, target, restored_at, .. } = prepared;
    // A relaunch of a managed job restores the job's checkpoints.
    let (owner, attempt) = match &target {
        Target::Rank { job, .. } if job.rank == 0 => (job.group.clone(), job.attempt),
        _ => (run_id.clone(), record.attempt()),
    };
    let shard = match &target {
        Target::Shard { member, .. } => Some(ShardOf {
            job: member.group.clone(),
            attempt: record.job_attempt.context("a rank's record names its job's attempt")?,
            rank: member.rank,
            world_size: member.world_size,
        }),
        _ => None,
    };
    let ckpt_prefix = if attempt > 1 { format!("{owner}-a{attempt}") } else { owner.clone() };
    tell_job(store, &record).await;
    match (&shard, record.attempt()) {
        (Some(s), _) => crate::say!(
            "tap: run {}/{run_id} started: rank {} of {} of job {}, attempt {}; each checkpoint is this rank's shard of its step",
            opts.experiment,
            s.rank,
            s.world_size,
            s.job,
            s.attempt
        ),
        (None, 1) => crate::say!("tap: run {}/{run_id} started", opts.experiment),
        (None, n) => crate::say!("tap: run {}/{run_id} attempt {n} started", opts.experiment),
    }
    let cadence = cadence_inputs(store, &record, shard.as_ref().map_or(1, |s| s.world_size)).await;
    Ok(Begun { run_id, record, resumed, restored, flat, owner, ckpt_prefix, shard, restored_at, cadence })
}

/// The cadence's inputs that do not change during the attempt: R from the run's earlier
/// attempts, M from the store's history of this attempt's pool.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CadenceInputs {
    pub restart_s: Option<f64>,
    pub mtbi_s: Option<f64>,
}

impl CadenceInputs {
    /// The cadence now, from the run's record (δ: its checkpoints so far).
    pub(super) fn cadence(&self, record: &Run) -> tap_core::goodput::Cadence {
        let attempts = record.all_attempts(record.status);
        tap_core::goodput::cadence_of(
            tap_core::goodput::checkpoint_cost_s(&attempts),
            self.restart_s,
            self.mtbi_s,
            record.forecast.as_ref().map(|f| f.commit_s),
        )
    }
}

/// How long the start waits for the pools' history (one listing of the store's runs); past
/// it, M is assumed and the command starts.
const POOL_HISTORY_WAIT: Duration = Duration::from_secs(2);

/// `nodes`: the job's ranks (any one's loss stops them all), 1 for a run of its own.
async fn cadence_inputs<R: RunStore>(store: &R, record: &Run, nodes: u32) -> CadenceInputs {
    let mut attempts = record.all_attempts(record.status);
    if let Some(a) = attempts.last_mut() {
        a.spent.command_started_ms = Some(now_ms());
    }
    let restart_s = tap_core::goodput::restart_cost_s(&attempts);
    let pool = tap_core::pools::Pool::of(&record.latest_attempt(record.status));
    let mtbi_s = match tokio::time::timeout(POOL_HISTORY_WAIT, store.list_runs(None)).await {
        Ok(Ok(listing)) => {
            let mut runs = listing.runs;
            crate::liveness::observe(&mut runs);
            tap_core::pools::pool_stats(&runs, i64::MIN, now_ms())
                .into_iter()
                .find(|p| p.pool == pool)
                .and_then(|p| p.hours_between_losses)
                // Any one rank's loss stops a job of N.
                .map(|h| h * 3600.0 / f64::from(nodes.max(1)))
        }
        _ => None,
    };
    CadenceInputs { restart_s, mtbi_s }
}

/// Starts the command with tap's variables, its hyperparameters and tapml; a command that
/// cannot start fails the run, with the reason.
async fn spawn_child<R: RunStore>(
    store: &R,
    opts: &RunOptions,
    (program, args): (&String, &[String]),
    begun: &Begun,
    dirs: &WorkDir,
) -> anyhow::Result<tokio::process::Child> {
    let mut cmd = command(program, args, opts, dirs, begun);
    // tapml, the training script's side (python/tapml), the copy that matches this tap.
    let python = dirs.root.join("python");
    match crate::blocking::run(move |_| crate::tapml::install(&python)).await {
        Ok(dir) => {
            cmd.env("PYTHONPATH", crate::tapml::python_path(&dir, std::env::var_os("PYTHONPATH").as_deref()));
        }
        Err(e) => crate::say!("tap: could not provide the tapml module ({e}); the command runs without it"),
    }
    match cmd.spawn() {
        Ok(c) => Ok(c),
        Err(e) => {
            let msg = spawn_failure(program, &e, &begun.flat);
            store
                .update_run(&opts.experiment, &begun.run_id, |r| {
                    r.status = RunStatus::Failed;
                    r.ended_ms = Some(now_ms());
                })
                .await?;
            bail!(msg);
        }
    }
}

/// The disk space set aside for the run's end (`--disk-reserve`), if it could be.
async fn set_aside(opts: &RunOptions) -> Option<std::sync::Arc<reserve::Reserve>> {
    let bytes = opts.disk_reserve;
    if bytes == 0 {
        return None;
    }
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

/// The last line: how the run ended, as the store holds it; the scratch directory goes once
/// the store holds everything.
async fn say_ended(opts: &RunOptions, run_id: &str, dirs: &WorkDir, outcome: &mut Outcome) {
    let Some(run) = &outcome.run else { return };
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
        tidy_scratch(&dirs.root, dirs).await;
    } else {
        // Regression: "could not record the end", then "run … succeeded" and exit 0, while the
        // store showed the run lost. The last line and the status say what the store holds;
        // the scratch directory (with TAP_METRICS_FILE) stays.
        crate::say!(
            "tap: run {}/{run_id} {} here, but the store could not record its end: readers show it as lost{lost}; {} keeps its metrics file (exit {EXIT_UNRECORDED})",
            opts.experiment,
            run.status.as_str(),
            dirs.root.display()
        );
        outcome.exit_code = EXIT_UNRECORDED;
    }
}

/// `; its checkpoints left out what tap cannot store: 1 entry (pw)`: the end line says what the
/// store does not hold.
fn left_out(run: &Run) -> String {
    tap_core::manifest::left_out_summary(&run.checkpoint_left_out)
        .map(|s| format!("; its checkpoints left out what tap cannot store: {s}"))
        .unwrap_or_default()
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
        assert_eq!(tap_core::command_env::hparam_variable("learning_rate"), "TAP_HP_LEARNING_RATE");
        assert_eq!(
            hparam_env_collisions(["a_b", "lr", "A_B", "a.b", "x"]),
            [("TAP_HP_A_B".to_owned(), vec!["A_B", "a.b", "a_b"])]
        );
        assert!(hparam_env_collisions(["lr", "momentum"]).is_empty());
        assert_eq!(tap_core::command_env::hparam_variable("model.depth-2"), "TAP_HP_MODEL_DEPTH_2");
    }
}
