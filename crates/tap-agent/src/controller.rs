//! The fleet's job controller: on exactly one node (the holder of the lease in the experiment
//! table), it starts the queued jobs on healthy nodes, watches them and heals them after a
//! reclaim — with no laptop and no controller VM. `tap launch` only submits.
//!
//! Where it runs: a task of tap-agent on every node, not a process of its own. Every node
//! contends for the lease (`tap_core::lease`: the lock client's design, with a fencing epoch
//! and a succession), and only the holder acts. A task costs no memory beyond its state,
//! shares the agent's SDK settings and hears the node's spot notice directly (the holder hands
//! the lease over at once); it is supervised apart from the telemetry loop: every error is
//! logged and retried, a panic restarts it after [`RESTART_AFTER`], and every AWS call has
//! the SDK's own timeouts, so a broken controller never stops metrics, health or spot
//! handling on its node.
//!
//! Each round is thin: read (the lease, the active jobs, the fleet, each rank's run record and
//! command), decide with the pure functions of `tap_core::jobs`, act, and record every
//! change with a fenced write (a transaction that checks this node still holds the lease at
//! the epoch it took).

use std::collections::HashMap;
use std::time::Duration;
use tap_core::text::chain;

use tap_core::jobs::{self, AttemptEnd, JobRecord, JobState, RankRun, RankView, Step, Watch};
use tap_core::lease::{self, Contend, LeaseItem, Sighting};
use tap_core::runs::{Job, JobNode, Liveness, Run, RunStatus};
use tap_fleet::aws::{Fleet, FleetStatus};
use tap_fleet::launch::{LaunchSpec, NodeInfo};
use tap_store::RunStore;
use tap_store::StoreError;
use tap_store::dynamo::DynamoStore;
use tap_store::jobs::{Fence, JobEntry, JobStore, Renewal};
use tokio::sync::watch;

/// How often the holder looks at a running job (its run records, commands and nodes).
pub const JOB_TICK_MS: i64 = 10_000;
/// How often an idle holder refreshes its view of the fleet (for the succession it writes):
/// EC2's three Describe calls and one GetMetricData.
pub const FLEET_VIEW_MS: i64 = 300_000;
/// After an error, the holder's or a contender's next try.
pub const RETRY_MS: i64 = 5_000;
/// A round that moved a job is followed by another this soon (an ended attempt's relaunch).
pub const FOLLOW_UP_MS: i64 = 1_000;
/// A controller task that panicked starts again after this.
pub const RESTART_AFTER: Duration = Duration::from_secs(30);
/// How often the holder reads a running attempt's network bytes into the job's record (and
/// once when the attempt ends): one GetMetricData of two metrics per rank.
pub const TRAFFIC_EVERY_MS: i64 = 300_000;
/// The SSM command's own timeout beyond the job's, for the restore and the final upload.
pub const COMMAND_SLACK_S: u32 = 600;

pub struct Controller {
    pub me: String,
    pub jobs: JobStore,
    pub runs: DynamoStore,
    pub fleet: Fleet,
    /// Set when this node is going away (spot notice, shutdown): hand the lease over and
    /// stop contending.
    pub leaving: watch::Receiver<bool>,
}

/// Monotonic milliseconds since the controller started (never compared across nodes).
fn mono(start: tokio::time::Instant) -> i64 {
    start.elapsed().as_millis() as i64
}

enum Contended {
    Took(Box<Holding>),
    /// Read again in this many ms.
    Wait(i64),
}

enum Role {
    Contender { sighting: Option<Sighting> },
    Holder(Box<Holding>),
}

struct Holding {
    lease: LeaseItem,
    fence: Fence,
    /// When the last successful renewal was sent (monotonic ms).
    renew_sent: i64,
    next_renew: i64,
    /// The queue_seq acted on last.
    seen_seq: Option<u64>,
    next_tick: i64,
    next_view: i64,
    /// The succession to write with the next renewal (when it changed).
    succession: Option<Vec<String>>,
    /// When each (job, attempt, rank)'s command was first seen final (epoch ms).
    final_since: HashMap<(String, u32, u32), i64>,
    /// When each (job, attempt)'s network bytes were last read (epoch ms).
    traffic_read: HashMap<(String, u32), i64>,
}

impl Controller {
    /// Runs until the node leaves; never returns an error (each one is logged and retried).
    pub async fn run(mut self) {
        let start = tokio::time::Instant::now();
        let mut role = Role::Contender { sighting: None };
        let mut view: Vec<String> = Vec::new();
        let mut view_at: Option<i64> = None;
        let mut last_error = String::new();
        loop {
            if *self.leaving.borrow() {
                if let Role::Holder(h) = &role {
                    self.release(h).await;
                }
                tracing::info!("job controller: this node is leaving; no longer contending for the lease");
                return;
            }
            let now = mono(start);
            let wait_ms = match &mut role {
                Role::Contender { sighting } => match self.contend(sighting, &mut view, &mut view_at, now).await {
                    Ok(Contended::Took(h)) => {
                        tracing::info!(
                            epoch = h.fence.epoch,
                            "job controller: took the lease; this node runs the fleet's jobs"
                        );
                        last_error.clear();
                        role = Role::Holder(h);
                        0
                    }
                    Ok(Contended::Wait(ms)) => {
                        last_error.clear();
                        ms
                    }
                    Err(e) => {
                        report(&mut last_error, &format!("job controller: {e}"));
                        RETRY_MS
                    }
                },
                Role::Holder(h) => match self.hold(h, start).await {
                    Ok(true) => {
                        last_error.clear();
                        let now = mono(start);
                        (h.next_renew.min(h.next_tick).min(h.next_view) - now).max(0)
                    }
                    Ok(false) => {
                        tracing::warn!(
                            epoch = h.fence.epoch,
                            "job controller: lost the lease; another node runs the jobs now"
                        );
                        role = Role::Contender { sighting: None };
                        RETRY_MS
                    }
                    Err(e) => {
                        report(&mut last_error, &format!("job controller: {e}"));
                        RETRY_MS
                    }
                },
            };
            let sleep = tokio::time::sleep(Duration::from_millis(wait_ms.clamp(0, 600_000) as u64));
            tokio::select! {
                () = sleep => {}
                _ = self.leaving.changed() => {}
            }
        }
    }

    /// One contender's round: read the lease, take it when [`lease::contend`] says so.
    async fn contend(
        &self,
        sighting: &mut Option<Sighting>,
        view: &mut Vec<String>,
        view_at: &mut Option<i64>,
        now: i64,
    ) -> Result<Contended, String> {
        let item = self.jobs.read_lease().await.map_err(|e| format!("lease not read: {}", chain(&e)))?;
        let listed = item.as_ref().is_some_and(|i| !i.succession.is_empty());
        // Without the holder's word on the order, this node's own view of the fleet decides
        // (refreshed at most every FLEET_VIEW_MS).
        if !listed && view_at.is_none_or(|t| now - t >= FLEET_VIEW_MS) {
            match self.fleet.describe().await {
                Ok(s) => {
                    *view = seniority(&s.nodes);
                    *view_at = Some(now);
                }
                Err(e) => return Err(format!("fleet not described: {}", chain(&e))),
            }
        }
        let s = Sighting::observe(sighting.take(), item.as_ref(), now);
        let position = lease::position(&self.me, item.as_ref(), view);
        let decision = lease::contend(item.as_ref(), &s, position, now);
        let due = lease::take_due_ms(item.as_ref(), &s, position, now);
        tracing::debug!(position, due_ms = due, holder = ?item.as_ref().and_then(|i| i.holder.as_deref()),
            succession = ?item.as_ref().map(|i| &i.succession), decision = ?decision, "job controller: lease read");
        *sighting = Some(s);
        let Contend::Take { expect_rvn } = decision else {
            // The next read: this position's poll, or the moment the lease may be taken. A
            // free lease (the fleet's first minute, or a holder that left) is a state that
            // ends within a poll: read it at the next in line's rate meanwhile, so a node that
            // became next in line meanwhile learns it.
            let free = item.as_ref().is_none_or(|i| i.holder.is_none());
            let poll = if free { lease::STANDBY_POLL_MS } else { lease::poll_every_ms(position) };
            return Ok(Contended::Wait(poll.min(due.max(1))));
        };
        let sent = now;
        let order: Vec<String> = if view.is_empty() {
            item.as_ref().map(|i| i.succession.clone()).unwrap_or_default()
        } else {
            view.clone()
        };
        let order: Vec<String> = order.into_iter().filter(|n| *n != self.me).collect();
        match self.jobs.take_lease(&self.me, expect_rvn.as_deref(), &order, tap_core::time::now_ms()).await {
            Ok(Some(lease)) => Ok(Contended::Took(Box::new(Holding {
                fence: Fence { holder: self.me.clone(), epoch: lease.epoch },
                lease,
                renew_sent: sent,
                next_renew: sent + lease::RENEW_EVERY_MS,
                seen_seq: None,
                next_tick: sent,
                next_view: sent,
                succession: None,
                final_since: HashMap::new(),
                traffic_read: HashMap::new(),
            }))),
            Ok(None) => Ok(Contended::Wait(lease::poll_every_ms(position))),
            Err(e) => Err(format!("lease not taken: {}", chain(&e))),
        }
    }

    /// One holder's round: renew when due, then act on the jobs when there is news, a job to
    /// watch, or the fleet view is due. `Ok(false)`: the lease is lost.
    async fn hold(&self, h: &mut Holding, start: tokio::time::Instant) -> Result<bool, String> {
        let now = mono(start);
        if now >= h.next_renew {
            let rvn = h.lease.rvn.clone().unwrap_or_default();
            match self.jobs.renew_lease(&self.me, &rvn, h.succession.as_deref(), tap_core::time::now_ms()).await {
                Ok(Renewal::Renewed(l)) => {
                    h.lease = l;
                    h.renew_sent = now;
                    h.next_renew = now + lease::RENEW_EVERY_MS;
                    h.succession = None;
                }
                Ok(Renewal::Lost) => return Ok(false),
                Err(e) => {
                    h.next_renew = now + RETRY_MS;
                    if !lease::holder_may_act(h.renew_sent, h.lease.lease_ms, now) {
                        return Err(format!("lease not renewed ({}); not acting until it is", chain(&e)));
                    }
                    tracing::warn!(error = %chain(&e), "job controller: lease renewal failed; retrying");
                }
            }
        }
        if !lease::holder_may_act(h.renew_sent, h.lease.lease_ms, mono(start)) {
            return Ok(true);
        }
        let news = h.seen_seq != Some(h.lease.queue_seq);
        let now = mono(start);
        if news || now >= h.next_tick || now >= h.next_view {
            let seq = h.lease.queue_seq;
            match self.round(h).await {
                Ok(Progress { active, changed }) => {
                    h.seen_seq = Some(seq);
                    // A job that moved (an attempt ended, a job queued behind another) is
                    // looked at again at once: a relaunch does not wait a whole tick.
                    h.next_tick = match (active, changed) {
                        (true, true) => now + FOLLOW_UP_MS,
                        (true, false) => now + JOB_TICK_MS,
                        (false, _) => i64::MAX / 4,
                    };
                }
                Err(e @ RoundError::Fenced(_)) => {
                    tracing::warn!(error = %chain(&e), "job controller: fenced out");
                    return Ok(false);
                }
                Err(e) => {
                    h.next_tick = now + RETRY_MS;
                    return Err(chain(&e).to_string());
                }
            }
            if now >= h.next_view {
                h.next_view = now + FLEET_VIEW_MS;
            }
        }
        Ok(true)
    }

    /// One round over the active jobs.
    async fn round(&self, h: &mut Holding) -> Result<Progress, RoundError> {
        let entries = self.jobs.list(true).await.map_err(RoundError::from)?;
        let mut active: Vec<(JobRecord, u64)> = Vec::new();
        for e in entries {
            match e {
                JobEntry::Job { job, version } => active.push((*job, version)),
                JobEntry::Corrupt { ref id, ref problem, .. } => {
                    let reason = jobs::corrupt_outcome(problem);
                    tracing::warn!(job = %id, reason = %reason, "job controller: a corrupt job is marked failed");
                    self.jobs.fail_corrupt(&e, &reason, &h.fence).await.map_err(RoundError::from)?;
                }
            }
        }
        let status = self.fleet.nodes(tap_core::time::now_ms()).await?;
        let succession: Vec<String> = seniority(&status.nodes).into_iter().filter(|n| *n != self.me).collect();
        if succession != h.lease.succession {
            h.succession = Some(succession);
        }
        if active.is_empty() {
            return Ok(Progress { active: false, changed: false });
        }
        let records: Vec<JobRecord> = active.iter().map(|(j, _)| j.clone()).collect();
        let placements: HashMap<String, jobs::Placement> =
            jobs::schedule(&records, &status.nodes).into_iter().map(|(j, p)| (j.id.clone(), p)).collect();
        let mut still_active = false;
        let mut changed = false;
        for (job, version) in active {
            let before = job.state;
            let step = jobs::step(&job, placements.get(&job.id), tap_core::time::now_ms());
            match self.act(h, job, version, step, &status).await {
                Ok(after) => {
                    still_active |= !after.is_final();
                    changed |= after != before;
                }
                Err(e @ RoundError::Conflict(_)) => {
                    // Changed under us (a cancel): read again next round.
                    tracing::info!(error = %chain(&e), "job controller: a job changed while acting on it");
                    still_active = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Progress { active: still_active, changed })
    }

    /// Carries out one job's step; returns the job's state after it.
    async fn act(
        &self,
        h: &mut Holding,
        mut job: JobRecord,
        version: u64,
        step: Step,
        fleet: &FleetStatus,
    ) -> Result<JobState, RoundError> {
        let now = tap_core::time::now_ms();
        match step {
            Step::Idle => {}
            Step::Wait(why) => {
                tracing::info!(job = %job.id, why = %why, "job waits");
                job.waiting = Some(why);
                job.updated_ms = now;
                self.jobs.write_fenced(&job, version, &h.fence).await?;
            }
            Step::Launch { number, nodes } => self.launch(h, &mut job, version, (number, &nodes), fleet).await?,
            Step::Watch => self.watch(h, &mut job, version, fleet, now).await?,
            Step::Cancel => {
                if job.state.holds_nodes() {
                    let all: Vec<u32> =
                        job.current().map(|a| a.nodes.iter().map(|n| n.rank).collect()).unwrap_or_default();
                    self.stop_attempt(&job, tap_core::runs::STOP_CANCELLED).await;
                    self.cancel_ranks(&job, &all).await;
                }
                jobs::cancel(&mut job, now);
                self.jobs.write_fenced(&job, version, &h.fence).await?;
                self.end_job_record(&job).await;
                tracing::info!(job = %job.id, "job cancelled");
            }
            Step::Fail(reason) => {
                tracing::warn!(job = %job.id, reason = %reason, "job failed");
                jobs::fail(&mut job, &reason, now);
                self.jobs.write_fenced(&job, version, &h.fence).await?;
                self.end_job_record(&job).await;
            }
            Step::Abandon => {
                let all: Vec<u32> = job.current().map(|a| a.nodes.iter().map(|n| n.rank).collect()).unwrap_or_default();
                self.stop_attempt(&job, "its launch was interrupted").await;
                self.cancel_ranks(&job, &all).await;
                let detail = format!(
                    "attempt {} was claimed by {} but not all its commands were recorded within {} s",
                    job.current().map_or(0, |a| a.number),
                    job.current().map_or("?", |a| a.launched_by.as_str()),
                    jobs::STARTING_LIMIT_MS / 1000
                );
                jobs::end_attempt(&mut job, AttemptEnd::LaunchInterrupted { detail }, now);
                self.jobs.write_fenced(&job, version, &h.fence).await?;
            }
        }
        Ok(job.state)
    }

    /// Launches attempt `number` on `nodes`: claims it (fenced) first, records it, sends each
    /// rank its command, records the commands.
    async fn launch(
        &self,
        h: &mut Holding,
        job: &mut JobRecord,
        mut version: u64,
        (number, nodes): (u32, &[NodeInfo]),
        fleet: &FleetStatus,
    ) -> Result<(), RoundError> {
        let now = tap_core::time::now_ms();
        let resumed_from = if number > 1 || job.spec.resume {
            self.runs.get_run(&job.spec.experiment, &job.id).await.map_err(RoundError::from)?.and_then(|r| r.checkpoint)
        } else {
            None
        };
        let by = format!("{}#{}", self.me, h.fence.epoch);
        jobs::begin_attempt(job, nodes, resumed_from, &by, now);
        // The claim first: a second controller's launch of this attempt fails here.
        version = self.jobs.write_fenced(job, version, &h.fence).await?;
        self.record_attempt(job, &fleet.fleet_id).await.map_err(RoundError::from)?;
        let spec = LaunchSpec::for_job(job, number);
        let cmds = tap_fleet::launch::commands(&spec, &nodes.iter().collect::<Vec<_>>());
        let timeout = job.spec.timeout_s.saturating_add(COMMAND_SLACK_S).min(jobs::MAX_TIMEOUT_S) as i32;
        let sent = self.fleet.send(&cmds, &format!("tap job {} #{number}", job.id), timeout).await?;
        jobs::commands_sent(job, &sent, tap_core::time::now_ms());
        self.jobs.write_fenced(job, version, &h.fence).await?;
        self.note_commands(job, &sent).await;
        tracing::info!(job = %job.id, attempt = number, nodes = ?sent, "job launched");
        Ok(())
    }

    /// Watches the running attempt: its ranks' runs and commands, its traffic now and then,
    /// and its end (success, or a rank that ended it: the others are stopped first).
    async fn watch(
        &self,
        h: &mut Holding,
        job: &mut JobRecord,
        mut version: u64,
        fleet: &FleetStatus,
        now: i64,
    ) -> Result<(), RoundError> {
        let ranks = self.observe(h, job, fleet, now).await?;
        let verdict = jobs::watch(&ranks, now);
        let key = (job.id.clone(), job.current().map_or(0, |a| a.number));
        let due = h.traffic_read.get(&key).is_none_or(|t| now - t >= TRAFFIC_EVERY_MS);
        if (due || verdict != Watch::Wait) && self.read_traffic(job, now).await {
            h.traffic_read.insert(key, now);
            if verdict == Watch::Wait {
                version = self.jobs.write_fenced(job, version, &h.fence).await?;
            }
        }
        match verdict {
            Watch::Wait => {}
            Watch::Succeeded => {
                jobs::end_attempt(job, AttemptEnd::Succeeded, now);
                self.jobs.write_fenced(job, version, &h.fence).await?;
                self.end_job_record(job).await;
                tracing::info!(job = %job.id, "job succeeded");
            }
            Watch::Ended { end, cancel } => {
                // The other ranks first: a survivor must not hang in NCCL.
                self.stop_attempt(job, &end.describe()).await;
                self.cancel_ranks(job, &cancel).await;
                tracing::warn!(job = %job.id, why = %end.describe(), cancelled = ?cancel, "attempt ended");
                jobs::end_attempt(job, end, tap_core::time::now_ms());
                self.jobs.write_fenced(job, version, &h.fence).await?;
                if job.state.is_final() {
                    self.end_job_record(job).await;
                }
                h.final_since.retain(|(id, _, _), _| *id != job.id);
                h.traffic_read.retain(|(id, _), _| *id != job.id);
            }
        }
        Ok(())
    }

    /// Reads the current attempt's network bytes into it (true when they were read). A read
    /// that fails is logged and leaves the record as it was: the job does not depend on it.
    async fn read_traffic(&self, job: &mut JobRecord, now: i64) -> bool {
        let Some(a) = job.attempts.last_mut() else { return false };
        let nodes: Vec<(String, String)> =
            a.nodes.iter().map(|n| (n.instance_id.clone(), n.zone().to_owned())).collect();
        match self.fleet.traffic(&nodes, a.started_ms, now).await {
            Ok(bytes) => {
                a.traffic = Some(
                    a.nodes
                        .iter()
                        .map(|n| {
                            let (bytes_in, bytes_out) = bytes.get(&n.instance_id).copied().unwrap_or((0, 0));
                            jobs::RankTraffic { rank: n.rank, bytes_in, bytes_out }
                        })
                        .collect(),
                );
                true
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %chain(&e), "the attempt's network bytes were not read");
                false
            }
        }
    }

    /// Every rank of the running attempt as observed now.
    async fn observe(
        &self,
        h: &mut Holding,
        job: &JobRecord,
        fleet: &FleetStatus,
        now: i64,
    ) -> Result<Vec<RankView>, RoundError> {
        let Some(attempt) = job.current() else { return Ok(Vec::new()) };
        let record = self.runs.get_run(&job.spec.experiment, &job.id).await.map_err(RoundError::from)?;
        let slots: Vec<JobNode> =
            record.and_then(|r| r.job).filter(|j| j.attempt == attempt.number).map(|j| j.nodes).unwrap_or_default();
        let mut out = Vec::new();
        for n in &attempt.nodes {
            let run_id = slots.iter().find(|s| s.rank == n.rank).and_then(|s| s.run_id.clone());
            let run = match &run_id {
                Some(id) => self.runs.get_run(&job.spec.experiment, id).await.map_err(RoundError::from)?,
                None => None,
            };
            let run = run.map(|r| RankRun {
                status: tap_core::runs::observed_status(&r, now, |_| Liveness::Unknown),
                exit_code: r.exit_code,
                signal: r.signal,
                interruption: r.interruption.as_ref().map(|i| (i.kind, i.reason.clone())),
            });
            let command = match &n.command_id {
                Some(c) => match self.fleet.invocation_status(c, &n.instance_id).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::debug!(error = %chain(&e), "command status not read");
                        None
                    }
                },
                None => None,
            };
            let key = (job.id.clone(), attempt.number, n.rank);
            let command_final_since_ms = match command {
                Some(c) if c.is_final() => Some(*h.final_since.entry(key).or_insert(now)),
                _ => None,
            };
            // The fitness rule's reasons that lose a rank (tap_core::fleet::Unfit).
            let node_gone = match fleet.nodes.iter().find(|x| x.instance_id == n.instance_id) {
                None => Some("no longer in the fleet".to_owned()),
                Some(x) => x.unfit().filter(|u| u.loses_its_rank()).map(|u| u.to_string()),
            };
            out.push(RankView {
                rank: n.rank,
                instance_id: n.instance_id.clone(),
                run,
                command,
                command_final_since_ms,
                node_gone,
            });
        }
        Ok(out)
    }

    /// Marks the current attempt stopped in the job's run record: its ranks' `tap run`s stop
    /// their commands within a few seconds (tap run's `JOB_WATCH`) even where SSM's cancel
    /// does not reach the training process.
    async fn stop_attempt(&self, job: &JobRecord, why: &str) {
        let Some(attempt) = job.current().map(|a| a.number) else { return };
        let why = why.to_owned();
        let r = self
            .runs
            .update_run(&job.spec.experiment, &job.id, |r| {
                if let Some(j) = r.job.as_mut().filter(|j| j.attempt == attempt) {
                    j.stop = Some(why.clone());
                }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(job = %job.id, error = %chain(&e), "the attempt's stop was not recorded (its SSM commands are cancelled)");
        }
    }

    async fn cancel_ranks(&self, job: &JobRecord, ranks: &[u32]) {
        let Some(a) = job.current() else { return };
        for n in a.nodes.iter().filter(|n| ranks.contains(&n.rank)) {
            if let Some(c) = &n.command_id
                && let Err(e) = self.fleet.cancel(c).await
            {
                tracing::warn!(job = %job.id, rank = n.rank, error = %chain(&e), "rank not cancelled");
            }
        }
    }

    /// The job's run record (what `tap runs show JOB` and the nodes' `tap run`s read and
    /// write) for a new attempt: created on the first, its nodes replaced on the next.
    async fn record_attempt(&self, job: &JobRecord, fleet_id: &str) -> tap_store::Result<()> {
        let Some(a) = job.current() else { return Ok(()) };
        let record = Job {
            fleet_id: fleet_id.to_owned(),
            attempt: a.number,
            nodes: a
                .nodes
                .iter()
                .map(|n| JobNode {
                    rank: n.rank,
                    instance_id: n.instance_id.clone(),
                    command_id: String::new(),
                    run_id: None,
                    status: RunStatus::Queued,
                })
                .collect(),
            stop: None,
        };
        if self.runs.get_run(&job.spec.experiment, &job.id).await?.is_some() {
            // A relaunch is the next attempt of the job's one run (recorded once, however
            // often this write is repeated).
            let start = tap_core::runs::AttemptStart {
                host: format!("fleet {fleet_id}"),
                instance_id: None,
                started_ms: a.started_ms,
                supervisor: None,
                node_rank: None,
                job_attempt: None,
            };
            let number = a.number;
            self.runs
                .update_run(&job.spec.experiment, &job.id, |r| {
                    if r.job.as_ref().is_some_and(|j| j.attempt < number) {
                        let ended_as = r.status;
                        r.begin_attempt(ended_as, start.clone());
                        // A job's record has no supervisor of its own: its ranks report.
                        r.heartbeat_ms = None;
                    }
                    r.job = Some(record.clone());
                    r.status = RunStatus::Queued;
                    r.ended_ms = None;
                })
                .await?;
        } else {
            let run = Run {
                status: RunStatus::Queued,
                job: Some(record),
                heartbeat_ms: None,
                ..Run::new(
                    &job.spec.experiment,
                    &job.id,
                    job.spec.command.clone(),
                    &format!("fleet {fleet_id}"),
                    job.submitted_ms,
                )
            };
            self.runs.create_run(&run).await?;
        }
        Ok(())
    }

    async fn note_commands(&self, job: &JobRecord, sent: &[(String, String)]) {
        let sent = sent.to_vec();
        let r = self
            .runs
            .update_run(&job.spec.experiment, &job.id, |r| {
                for n in r.job.iter_mut().flat_map(|j| j.nodes.iter_mut()) {
                    if let Some((_, c)) = sent.iter().find(|(i, _)| *i == n.instance_id) {
                        n.command_id.clone_from(c);
                    }
                }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(job = %job.id, error = %chain(&e), "the job's run record does not name its commands");
        }
    }

    /// The job's run record ends with the job.
    async fn end_job_record(&self, job: &JobRecord) {
        let status = match job.state {
            JobState::Succeeded => RunStatus::Succeeded,
            JobState::Failed => RunStatus::Failed,
            JobState::Cancelled => RunStatus::Cancelled,
            _ => return,
        };
        let ended = job.ended_ms;
        let r = self
            .runs
            .update_run(&job.spec.experiment, &job.id, |r| {
                r.status = status;
                r.ended_ms = r.ended_ms.or(ended);
            })
            .await;
        match r {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(job = %job.id, error = %chain(&e), "the job's run record does not say it ended"),
        }
    }

    async fn release(&self, h: &Holding) {
        if let Some(rvn) = &h.lease.rvn {
            match self.jobs.release_lease(&self.me, rvn).await {
                Ok(true) => tracing::info!("job controller: lease handed over"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "job controller: lease not released (the next node takes it after one lease time)")
                }
            }
        }
    }
}

/// The running nodes in the order every node agrees on (oldest first).
fn seniority(nodes: &[NodeInfo]) -> Vec<String> {
    let mut fit: Vec<&NodeInfo> = nodes.iter().filter(|n| n.state == tap_core::fleet::InstanceState::Running).collect();
    fit.sort_by(|a, b| a.seniority().cmp(&b.seniority()));
    fit.into_iter().map(|n| n.instance_id.clone()).collect()
}

/// Logs an error once until it changes.
fn report(last: &mut String, line: &str) {
    if line != last {
        tracing::warn!("{line}");
        *last = line.to_owned();
    }
}

/// What a round left behind.
struct Progress {
    /// Some job is still queued, starting, running or recovering.
    active: bool,
    /// Some job changed state.
    changed: bool,
}

/// Why a round of the controller stopped, the store's or AWS's error kept as the cause.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    /// Another node holds the lease now: this one stops acting.
    #[error("fenced out")]
    Fenced(#[source] StoreError),
    /// A record changed under this round (a cancel): read again next round.
    #[error("a record changed under this round")]
    Conflict(#[source] StoreError),
    #[error("the store failed")]
    Store(#[source] StoreError),
    /// EC2 or SSM Run Command failed (the fleet's view, sending a rank's command).
    #[error("the fleet failed")]
    Fleet(#[source] tap_fleet::aws::FleetError),
}

impl From<StoreError> for RoundError {
    fn from(e: StoreError) -> RoundError {
        match e {
            StoreError::Fenced(_) => RoundError::Fenced(e),
            StoreError::Conflict(_) => RoundError::Conflict(e),
            e => RoundError::Store(e),
        }
    }
}

impl From<tap_fleet::aws::FleetError> for RoundError {
    fn from(e: tap_fleet::aws::FleetError) -> RoundError {
        RoundError::Fleet(e)
    }
}

/// Runs the controller under supervision: a panic is logged and the controller starts
/// again after [`RESTART_AFTER`]; the rest of the agent never notices.
pub async fn supervise(make: impl Fn() -> Controller + Send + 'static, mut leaving: watch::Receiver<bool>) {
    loop {
        let task = tokio::spawn(make().run());
        match task.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                tracing::error!(
                    "job controller panicked; it starts again in {} s (telemetry goes on)",
                    RESTART_AFTER.as_secs()
                );
            }
            Err(_) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(RESTART_AFTER) => {}
            _ = leaving.changed() => return,
        }
    }
}
