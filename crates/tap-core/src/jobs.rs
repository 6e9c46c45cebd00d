//! Managed jobs: what `tap launch` submits and the fleet's job controller (in tap-agent) runs,
//! watches and heals. Pure: the records, their validation, and every decision the controller
//! takes, as functions over what it observed. The loop that feeds them lives in tap-agent
//! (`controller`); the DynamoDB items in tap-store (`jobs`).
//!
//! A job's life: `queued` → (nodes found) `starting` (attempt k claimed, commands being sent)
//! → `running` → `succeeded`; or, when a node is reclaimed, fails its GPU health or
//! disappears, the other ranks are cancelled at once and the job is `recovering` until the
//! fleet has enough healthy nodes again, then attempt k+1 resumes every rank from the
//! latest committed checkpoint. A rank's own error fails the job unless `retry_on_error`
//! allows another attempt. Restarts for reclaims and retries for errors are counted apart.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::fleet::NodeInfo;
use crate::notice::NoticeKind;
use crate::runs::{RunStatus, valid_id};

/// The most nodes a job may ask for: the stack's `target_capacity` validation
/// (`infra/tap-stack.tf`, 0 to 500) bounds the fleet, so a bigger job could never run.
pub const MAX_JOB_NODES: u32 = 500;
/// Relaunches after reclaims, lost nodes and GPU faults, unless `--restarts` says otherwise.
pub const DEFAULT_RESTARTS: u32 = 3;
/// SSM Run Command's `executionTimeout` bounds: 1 s … 48 h (AWS-RunShellScript's parameter).
pub const MAX_TIMEOUT_S: u32 = 172_800;
/// A command's own shortest timeout that tap accepts: less cannot even restore a checkpoint.
pub const MIN_TIMEOUT_S: u32 = 60;
/// How long an attempt may stay `starting` (claimed, commands not all recorded as sent)
/// before the controller treats its launch as interrupted (a controller that died midway).
pub const STARTING_LIMIT_MS: i64 = 120_000;
/// A rank whose SSM command ended while its run record still says running gets this long
/// for the record to catch up (the run's last write races the command's end).
pub const RECORD_GRACE_MS: i64 = 30_000;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub experiment: String,
    /// The training command; `$NNODES`, `$NODE_RANK`, `$MASTER_ADDR`, `$MASTER_PORT` and
    /// `$RDZV_ID` are expanded on each node.
    pub command: Vec<String>,
    pub nodes: u32,
    /// The OS user the command runs as on the nodes.
    pub user: String,
    /// Extra environment for the command on every node.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Rank 0's rendezvous port.
    pub master_port: u16,
    /// Relaunches allowed after reclaims, lost nodes and GPU faults.
    pub restarts: u32,
    /// Relaunches allowed after the command's own error exit.
    pub retry_on_error: u32,
    /// Each attempt's commands end after this long (SSM executionTimeout).
    pub timeout_s: u32,
    /// The first attempt resumes from the experiment's latest checkpoint too.
    #[serde(default)]
    pub resume: bool,
    /// How long a relaunch waits for enough healthy nodes before the job fails (a queued
    /// job waits for its turn however long it takes).
    #[serde(default = "default_wait_s")]
    pub wait_s: u32,
    /// `--allow-cross-az`: the ranks may span Availability Zones when no one AZ has enough
    /// nodes (every byte of the collective that crosses is billed, [`CROSS_AZ_USD_PER_GB`]).
    /// Without it a multi-node job waits for one AZ that can hold it.
    #[serde(default)]
    pub allow_cross_az: bool,
    /// `--tag KEY=VALUE`: on the job's record and every rank's run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// A relaunch waits for replacements this long unless `--wait` says otherwise: EC2 usually
/// replaces a reclaimed spot node within minutes; an hour without capacity is an outage.
pub const DEFAULT_WAIT_S: u32 = 3600;

fn default_wait_s() -> u32 {
    DEFAULT_WAIT_S
}

impl JobSpec {
    /// Why the spec can never run, in one line (None: it can).
    pub fn problem(&self) -> Option<String> {
        if !self.experiment.is_empty() && self.experiment.chars().all(|c| c == '.') {
            return Some(format!("experiment {:?} is not a name", self.experiment));
        }
        if !valid_id(&self.experiment) {
            return Some(format!(
                "experiment {:?}: use {}",
                crate::text::clip(&self.experiment, 60),
                crate::runs::ID_RULE
            ));
        }
        if crate::runs::reserved_partition(&self.experiment) {
            return Some(format!("experiment {:?} is reserved for the stack's own records", self.experiment));
        }
        if self.nodes == 0 {
            return Some("--nodes must be at least 1".into());
        }
        if self.nodes > MAX_JOB_NODES {
            return Some(format!(
                "--nodes {}: the fleet holds at most {MAX_JOB_NODES} nodes (the stack's target_capacity limit)",
                self.nodes
            ));
        }
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            return Some("no command given: tap launch --nodes N -- <command...>".into());
        }
        if let Some(a) = self.command.iter().find(|a| a.contains('\0')) {
            return Some(format!("the command argument {:?} holds a NUL byte", crate::text::clip(a, 60)));
        }
        if !valid_user(&self.user) {
            return Some(format!("--user {:?} is not a user name", crate::text::clip(&self.user, 60)));
        }
        if !(MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&self.timeout_s) {
            return Some(format!(
                "--timeout {} s: SSM runs a command for {MIN_TIMEOUT_S} s to {MAX_TIMEOUT_S} s (48 h)",
                self.timeout_s
            ));
        }
        if self.master_port == 0 {
            return Some("--port must be 1-65535".into());
        }
        for k in self.env.keys() {
            if !is_env_name(k) {
                return Some(format!("--env {:?}: not an environment variable name", crate::text::clip(k, 60)));
            }
        }
        None
    }
}

/// A POSIX user name as `useradd` accepts it.
fn valid_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its first attempt (nodes, or its turn).
    Queued,
    /// An attempt is claimed and its commands are being sent.
    Starting,
    Running,
    /// An attempt ended badly; the next one waits for nodes.
    Recovering,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Recovering => "recovering",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }

    /// Waiting for nodes: the queue.
    pub fn needs_nodes(self) -> bool {
        matches!(self, JobState::Queued | JobState::Recovering)
    }

    /// Holding nodes.
    pub fn holds_nodes(self) -> bool {
        matches!(self, JobState::Starting | JobState::Running)
    }
}

/// One node of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptNode {
    pub rank: u32,
    pub instance_id: String,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    /// The SSM command that started this rank, once sent.
    pub command_id: Option<String>,
}

impl AttemptNode {
    /// Its Availability Zone, [`crate::fleet::UNKNOWN_AZ`] when EC2 did not say.
    pub fn zone(&self) -> &str {
        self.availability_zone.as_deref().unwrap_or(crate::fleet::UNKNOWN_AZ)
    }
}

/// Why an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum AttemptEnd {
    Succeeded,
    /// A spot interruption notice on this node.
    SpotReclaim {
        rank: u32,
        instance_id: String,
    },
    /// tap-agent found a fatal GPU fault (e.g. "XID 79 … on GPU-…").
    GpuFault {
        rank: u32,
        instance_id: String,
        detail: String,
    },
    /// The node, its agent or its `tap run` went away without saying why.
    NodeLost {
        rank: u32,
        instance_id: String,
        detail: String,
    },
    /// The training command's own error.
    ErrorExit {
        rank: u32,
        instance_id: String,
        code: Option<i32>,
        detail: String,
    },
    /// The attempt ran past the job's `--timeout`.
    TimedOut {
        rank: u32,
        instance_id: String,
    },
    /// The controller that started it died before every command was sent.
    LaunchInterrupted {
        detail: String,
    },
    Cancelled,
}

impl AttemptEnd {
    /// One line for `tap jobs show`.
    pub fn describe(&self) -> String {
        match self {
            AttemptEnd::Succeeded => "succeeded".into(),
            AttemptEnd::SpotReclaim { rank, instance_id } => {
                format!("spot reclaim of rank {rank}'s node {instance_id}")
            }
            AttemptEnd::GpuFault { rank, instance_id, detail } => {
                format!("GPU fault on rank {rank}'s node {instance_id}: {detail}")
            }
            AttemptEnd::NodeLost { rank, instance_id, detail } => {
                format!("rank {rank}'s node {instance_id} lost: {detail}")
            }
            AttemptEnd::ErrorExit { rank, instance_id, code, detail } => match code {
                Some(c) => format!("rank {rank} on {instance_id} exited with error {c}"),
                None => format!("rank {rank} on {instance_id} failed: {detail}"),
            },
            AttemptEnd::TimedOut { rank, instance_id } => {
                format!("rank {rank} on {instance_id} ran past the job's timeout")
            }
            AttemptEnd::LaunchInterrupted { detail } => format!("launch interrupted: {detail}"),
            AttemptEnd::Cancelled => "cancelled".into(),
        }
    }

    /// Which budget a relaunch after this end spends.
    pub fn budget(&self) -> Budget {
        match self {
            AttemptEnd::SpotReclaim { .. } | AttemptEnd::GpuFault { .. } | AttemptEnd::NodeLost { .. } => {
                Budget::Restarts
            }
            AttemptEnd::ErrorExit { .. } => Budget::ErrorRetries,
            AttemptEnd::LaunchInterrupted { .. } => Budget::Free,
            AttemptEnd::Succeeded | AttemptEnd::TimedOut { .. } | AttemptEnd::Cancelled => Budget::None,
        }
    }
}

/// What relaunching after an attempt's end costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// `--restarts` (reclaims, lost nodes, GPU faults).
    Restarts,
    /// `--retry-on-error`.
    ErrorRetries,
    /// Nothing: tap's own fault (a controller died mid-launch).
    Free,
    /// No relaunch at all.
    None,
}

/// One launch of the job on a set of nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1, 2, … (`TAP_JOB_ATTEMPT` on the nodes).
    pub number: u32,
    pub nodes: Vec<AttemptNode>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub end: Option<AttemptEnd>,
    /// The checkpoint every rank resumed from (None: started fresh).
    pub resumed_from: Option<String>,
    /// The controller (instance id and lease epoch) that launched it.
    pub launched_by: String,
    /// Its ranks span more than one Availability Zone (only with `--allow-cross-az`).
    #[serde(default)]
    pub cross_az: bool,
    /// The network bytes its ranks' nodes sent and received while it ran, from tap-agent's
    /// interface counters (the `NetworkBytesIn`/`NetworkBytesOut` metrics); None until the
    /// controller first read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<RankTraffic>>,
}

/// One rank's node's network bytes during an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankTraffic {
    pub rank: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What AWS bills for data that crosses Availability Zones in one region: $0.01 per GB out
/// of one AZ and $0.01 per GB into the other (EC2 pricing, "Data Transfer within the same AWS
/// Region"), so each gigabyte that crosses costs twice this.
pub const CROSS_AZ_USD_PER_GB_EACH_WAY: f64 = 0.01;
/// Each gigabyte (10^9 bytes, as AWS bills) that crosses an AZ boundary: out and in.
pub const CROSS_AZ_USD_PER_GB: f64 = 2.0 * CROSS_AZ_USD_PER_GB_EACH_WAY;
/// Bytes in a billed gigabyte.
pub const GB: f64 = 1e9;

impl Attempt {
    /// The Availability Zones its ranks ran in, in rank order without repeats (a node whose
    /// AZ EC2 did not say counts as [`crate::fleet::UNKNOWN_AZ`]).
    pub fn zones(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for n in &self.nodes {
            let z = n.zone();
            if !out.contains(&z) {
                out.push(z);
            }
        }
        out
    }

    /// The bytes of its collective traffic that crossed an AZ, estimated from each node's
    /// interface counters: the ring all-reduce that NCCL and Gloo run over the nodes in rank
    /// order sends each rank's bytes to the next rank, so a rank's bytes out cross when the
    /// next rank (rank 0 after the last) is in another AZ. Zero when placed in one AZ; None
    /// before any traffic was read.
    pub fn cross_az_bytes(&self) -> Option<u64> {
        let traffic = self.traffic.as_ref()?;
        let zone =
            |rank: u32| self.nodes.iter().find(|n| n.rank == rank).map_or(crate::fleet::UNKNOWN_AZ, AttemptNode::zone);
        let n = self.nodes.len() as u32;
        if n < 2 {
            return Some(0);
        }
        Some(traffic.iter().filter(|t| zone(t.rank) != zone((t.rank + 1) % n)).map(|t| t.bytes_out).sum())
    }
}

/// A job's network over its attempts (`tap jobs show`; the goodput's dollars include it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Network {
    /// Attempts whose traffic was read (the others count nothing).
    pub measured_attempts: u32,
    /// What its ranks' nodes received and sent (interface counters, every peer included).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// What crossed an AZ ([`Attempt::cross_az_bytes`]): 0 for a job placed in one AZ.
    pub cross_az_bytes: u64,
    pub cross_az_usd: f64,
    /// Some attempt spanned AZs (`--allow-cross-az`).
    pub crossed: bool,
}

/// The dollars `bytes` that crossed an AZ cost.
pub fn cross_az_usd(bytes: u64) -> f64 {
    bytes as f64 / GB * CROSS_AZ_USD_PER_GB
}

/// How many of a ring's hops cross an AZ when `nodes` ranks span `zones` AZs with each AZ's
/// ranks next to each other (as [`place`] orders them): one hop into each AZ.
pub fn crossing_hops(nodes: u32, zones: u32) -> u32 {
    let k = zones.min(nodes);
    if k < 2 { 0 } else { k }
}

/// What crossing AZs costs a job an hour: `bytes_per_rank_per_hour` each rank sends (a ring
/// all-reduce sends 2·(N−1)/N × the gradient bytes per step), of which the crossing hops'
/// share crosses.
pub fn cross_az_usd_per_hour(nodes: u32, zones: u32, bytes_per_rank_per_hour: f64) -> f64 {
    f64::from(crossing_hops(nodes, zones)) * bytes_per_rank_per_hour / GB * CROSS_AZ_USD_PER_GB
}

/// Each attempt's checkpoint as its rank 0 restored it, from the rank's own run record
/// (written by the restore itself): the controller's `resumed_from` is what it planned, and a
/// rank 0 that died hard left the job's record behind. An attempt whose rank 0 has no record
/// keeps the plan.
pub fn restored_by_ranks(job: &mut JobRecord, runs: &[crate::runs::Run]) {
    for a in &mut job.attempts {
        let rank0 = runs.iter().find(|r| {
            r.group.as_deref() == Some(job.id.as_str()) && r.job_attempt == Some(a.number) && r.node_rank == Some(0)
        });
        if let Some(r) = rank0 {
            a.resumed_from.clone_from(&r.restored);
        }
    }
}

/// A managed job as the table keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Also the run group of every node run and the run id of the job's run record.
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub submitted_ms: i64,
    /// Who submitted it (user@host).
    pub submitted_by: String,
    pub updated_ms: i64,
    pub attempts: Vec<Attempt>,
    /// Relaunches spent on reclaims, lost nodes and GPU faults.
    pub restarts_used: u32,
    /// Relaunches spent on the command's own errors.
    pub error_retries_used: u32,
    /// Why it waits, in one line ("needs 4 healthy nodes, fleet has 2 (1 booting)").
    pub waiting: Option<String>,
    /// `tap jobs cancel` asked for it (epoch ms); the controller carries it out.
    pub cancel_requested_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// Why it ended, in one line.
    pub outcome: Option<String>,
}

impl JobRecord {
    pub fn new(id: &str, spec: JobSpec, submitted_by: &str, now_ms: i64) -> JobRecord {
        JobRecord {
            id: id.to_owned(),
            spec,
            state: JobState::Queued,
            submitted_ms: now_ms,
            submitted_by: submitted_by.to_owned(),
            updated_ms: now_ms,
            attempts: Vec::new(),
            restarts_used: 0,
            error_retries_used: 0,
            waiting: None,
            cancel_requested_ms: None,
            ended_ms: None,
            outcome: None,
        }
    }

    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    fn current_mut(&mut self) -> Option<&mut Attempt> {
        self.attempts.last_mut()
    }

    /// The instances the job holds now (its current attempt's, while starting or running).
    pub fn held_nodes(&self) -> impl Iterator<Item = &str> {
        self.current()
            .filter(|_| self.state.holds_nodes())
            .into_iter()
            .flat_map(|a| a.nodes.iter().map(|n| n.instance_id.as_str()))
    }

    /// The network its attempts used, summed over the attempts whose traffic was read.
    pub fn network(&self) -> Network {
        let mut n = Network::default();
        for a in &self.attempts {
            let Some(t) = &a.traffic else { continue };
            n.measured_attempts += 1;
            n.bytes_in += t.iter().map(|r| r.bytes_in).sum::<u64>();
            n.bytes_out += t.iter().map(|r| r.bytes_out).sum::<u64>();
            n.cross_az_bytes += a.cross_az_bytes().unwrap_or(0);
        }
        n.cross_az_usd = cross_az_usd(n.cross_az_bytes);
        n.crossed = self.attempts.iter().any(|a| a.cross_az);
        n
    }

    /// The downtime before each attempt after the first: from the previous attempt's end to
    /// this one's start.
    pub fn downtimes_ms(&self) -> Vec<i64> {
        self.attempts.windows(2).map(|w| w[1].started_ms - w[0].ended_ms.unwrap_or(w[1].started_ms)).collect()
    }
}

/// How a job's nodes look to the controller, one line when they cannot take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// These nodes, in rank order: within an AZ oldest first, so rank 0 is the most proven
    /// node; across AZs (only `--allow-cross-az`) each AZ's ranks next to each other.
    Nodes(Vec<NodeInfo>),
    Wait(String),
}

/// What a placement must respect beyond the node count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Constraints<'a> {
    /// The job may span AZs when no one AZ holds it (`--allow-cross-az`).
    pub allow_cross_az: bool,
    /// The AZ of the job's previous attempt: a relaunch goes back there when it can, where
    /// its data (and its previous nodes' caches) are.
    pub previous_zone: Option<&'a str>,
}

impl<'a> Constraints<'a> {
    pub fn of(job: &'a JobRecord) -> Constraints<'a> {
        let previous_zone = job.current().and_then(|a| match a.zones().as_slice() {
            [one] => Some(*one),
            _ => None,
        });
        Constraints { allow_cross_az: job.spec.allow_cross_az, previous_zone }
    }
}

/// Picks `needed` fit nodes not held by another job, all in one Availability Zone, or says in
/// one line why the job waits.
///
/// Which AZ, when several can hold the job: the previous attempt's (a relaunch stays where
/// its data is); else the best fit, the AZ with the fewest free fit nodes that still holds it,
/// so the AZ with the most nodes stays free for a bigger job; ties go to the AZ whose oldest
/// free node is oldest, then by name. Within the AZ, oldest nodes first.
///
/// When no AZ can: with `allow_cross_az` the fewest AZs that hold it (most free nodes first,
/// each AZ's ranks together, so the ring crosses an AZ as few times as it can); without,
/// "needs 4 healthy nodes in one AZ: us-east-1a has 2, us-east-1b 1, us-east-1c 1". A fleet
/// with too few fit nodes in all says what the others are doing: "needs 4 healthy nodes,
/// fleet has 2 (1 booting, 1 busy)".
pub fn place(needed: u32, nodes: &[NodeInfo], busy: &BTreeSet<String>, c: Constraints<'_>) -> Placement {
    let mut fit: Vec<&NodeInfo> =
        nodes.iter().filter(|n| n.unfit().is_none() && !busy.contains(n.instance_id.as_str())).collect();
    fit.sort_by(|a, b| a.seniority().cmp(&b.seniority()));
    let need = needed as usize;
    if fit.len() < need {
        return Placement::Wait(short_of_nodes(needed, fit.len(), nodes, busy));
    }
    // Free fit nodes by AZ (each AZ's nodes oldest first).
    let mut by_zone: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
    for n in &fit {
        by_zone.entry(n.zone()).or_default().push(n);
    }
    let take = |v: &[&NodeInfo], k: usize| v[..k].iter().map(|&n| n.clone()).collect::<Vec<_>>();
    if need <= 1 {
        return Placement::Nodes(take(&fit, need));
    }
    if let Some(prev) = c.previous_zone
        && let Some(v) = by_zone.get(prev).filter(|v| v.len() >= need)
    {
        return Placement::Nodes(take(v, need));
    }
    let best = by_zone
        .iter()
        .filter(|(_, v)| v.len() >= need)
        .min_by(|(za, a), (zb, b)| (a.len(), a[0].seniority(), *za).cmp(&(b.len(), b[0].seniority(), *zb)));
    if let Some((_, v)) = best {
        return Placement::Nodes(take(v, need));
    }
    if c.allow_cross_az {
        let mut zones: Vec<(&str, &Vec<&NodeInfo>)> = by_zone.iter().map(|(z, v)| (*z, v)).collect();
        // The previous AZ first, then the AZs with the most free nodes (the fewest AZs).
        zones.sort_by(|(za, a), (zb, b)| {
            (Some(*za) != c.previous_zone, std::cmp::Reverse(a.len()), a[0].seniority()).cmp(&(
                Some(*zb) != c.previous_zone,
                std::cmp::Reverse(b.len()),
                b[0].seniority(),
            ))
        });
        let chosen: Vec<NodeInfo> = zones.iter().flat_map(|(_, v)| v.iter()).take(need).map(|&n| n.clone()).collect();
        return Placement::Nodes(chosen);
    }
    let counts: Vec<String> = by_zone
        .iter()
        .enumerate()
        .map(|(i, (z, v))| if i == 0 { format!("{z} has {}", v.len()) } else { format!("{z} {}", v.len()) })
        .collect();
    Placement::Wait(format!("needs {needed} healthy nodes in one AZ: {}", counts.join(", ")))
}

/// The line of a job that waits because the fleet has fewer than `needed` fit free nodes.
fn short_of_nodes(needed: u32, fit: usize, nodes: &[NodeInfo], busy: &BTreeSet<String>) -> String {
    let count = |f: &dyn Fn(&NodeInfo) -> bool| nodes.iter().filter(|n| f(n)).count();
    let booting = count(&|n| {
        n.state == crate::fleet::InstanceState::Pending
            || (n.state == crate::fleet::InstanceState::Running && n.heartbeat_age_s.is_none())
    });
    let held = count(&|n| busy.contains(n.instance_id.as_str()) && n.unfit().is_none());
    let sick = count(&|n| n.state == crate::fleet::InstanceState::Running && n.unhealthy == Some(true));
    let silent = count(&|n| {
        n.state == crate::fleet::InstanceState::Running
            && n.unhealthy != Some(true)
            && n.heartbeat_age_s.is_some()
            && n.unfit().is_some()
    });
    let mut parts = Vec::new();
    for (k, what) in [(booting, "booting"), (held, "busy"), (sick, "GPU-unhealthy"), (silent, "not reporting")] {
        if k > 0 {
            parts.push(format!("{k} {what}"));
        }
    }
    let s = |k: usize| if k == 1 { "" } else { "s" };
    format!(
        "needs {needed} healthy node{}, fleet has {fit}{}",
        s(needed as usize),
        if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
    )
}

/// The queue's verdict for each job that needs nodes, in FIFO order (submission time, then
/// id). Strict FIFO: once a job waits, the jobs behind it wait too (no backfill), so a big
/// job is never starved by small ones.
pub fn schedule<'a>(jobs: &'a [JobRecord], nodes: &[NodeInfo]) -> Vec<(&'a JobRecord, Placement)> {
    let mut busy: BTreeSet<String> = jobs.iter().flat_map(JobRecord::held_nodes).map(str::to_owned).collect();
    let mut queue: Vec<&JobRecord> =
        jobs.iter().filter(|j| j.state.needs_nodes() && j.cancel_requested_ms.is_none()).collect();
    queue.sort_by(|a, b| (a.submitted_ms, &a.id).cmp(&(b.submitted_ms, &b.id)));
    let mut out = Vec::new();
    let mut blocked: Option<&str> = None;
    for j in queue {
        if let Some(first) = blocked {
            out.push((j, Placement::Wait(format!("waits behind job {first} (first in, first out)"))));
            continue;
        }
        let p = place(j.spec.nodes, nodes, &busy, Constraints::of(j));
        match &p {
            Placement::Nodes(chosen) => busy.extend(chosen.iter().map(|n| n.instance_id.clone())),
            Placement::Wait(_) => blocked = Some(&j.id),
        }
        out.push((j, p));
    }
    out
}

/// SSM Run Command's invocation states (GetCommandInvocation's `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandState {
    Pending,
    InProgress,
    Delayed,
    Success,
    Cancelled,
    Cancelling,
    TimedOut,
    Failed,
    Undeliverable,
    Terminated,
    /// Anything else SSM may add.
    Unknown,
}

impl CommandState {
    pub fn parse(s: &str) -> CommandState {
        match s {
            "Pending" => CommandState::Pending,
            "InProgress" => CommandState::InProgress,
            "Delayed" => CommandState::Delayed,
            "Success" => CommandState::Success,
            "Cancelled" => CommandState::Cancelled,
            "Cancelling" => CommandState::Cancelling,
            "TimedOut" => CommandState::TimedOut,
            "Failed" => CommandState::Failed,
            "Undeliverable" => CommandState::Undeliverable,
            "Terminated" => CommandState::Terminated,
            _ => CommandState::Unknown,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandState::Success
                | CommandState::Cancelled
                | CommandState::TimedOut
                | CommandState::Failed
                | CommandState::Undeliverable
                | CommandState::Terminated
        )
    }
}

/// A rank's `tap run`, as its run record says (status already observed: `lost` derived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankRun {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The interruption's kind (`spot-interruption`, `gpu-fatal`, `signal`) and reason.
    pub interruption: Option<(NoticeKind, String)>,
}

/// Everything the controller observed about one rank of the running attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankView {
    pub rank: u32,
    pub instance_id: String,
    /// Its run record, once `tap run` started on the node.
    pub run: Option<RankRun>,
    /// Its SSM command (None: not known, e.g. the read failed).
    pub command: Option<CommandState>,
    /// When the command was seen final first (epoch ms), for [`RECORD_GRACE_MS`].
    pub command_final_since_ms: Option<i64>,
    /// The node: None while it is running and fit; else why not ("instance is terminated",
    /// "last tap-agent heartbeat 400 s ago", "a fatal GPU finding stands").
    pub node_gone: Option<String>,
}

/// What watching a running attempt decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    Wait,
    /// Every rank's run succeeded.
    Succeeded,
    /// The attempt is over: cancel the ranks still running, and end it for this reason.
    Ended {
        end: AttemptEnd,
        cancel: Vec<u32>,
    },
}

/// Why one rank ended badly, if it did.
fn rank_end(r: &RankView, now_ms: i64) -> Option<AttemptEnd> {
    let (rank, instance_id) = (r.rank, r.instance_id.clone());
    let run_final = r.run.as_ref().filter(|run| run.status.is_final());
    if let Some(run) = run_final {
        return match run.status {
            RunStatus::Succeeded => None,
            RunStatus::Interrupted => Some(match &run.interruption {
                Some((NoticeKind::SpotInterruption, _)) => AttemptEnd::SpotReclaim { rank, instance_id },
                Some((NoticeKind::GpuFatal, reason)) => {
                    AttemptEnd::GpuFault { rank, instance_id, detail: reason.clone() }
                }
                Some((kind, reason)) => {
                    AttemptEnd::NodeLost { rank, instance_id, detail: format!("interrupted ({kind}: {reason})") }
                }
                None => AttemptEnd::NodeLost { rank, instance_id, detail: "interrupted".into() },
            }),
            RunStatus::Lost => {
                let detail = r.node_gone.clone().unwrap_or_else(|| "its tap run stopped reporting".into());
                Some(AttemptEnd::NodeLost { rank, instance_id, detail })
            }
            // Not the controller's stop (that ends the attempt first): the node stopped its
            // tap run (a shutdown's SIGTERM), which the job survives like a lost node.
            RunStatus::Cancelled => Some(AttemptEnd::NodeLost {
                rank,
                instance_id,
                detail: "its tap run was stopped on the node (SIGINT or SIGTERM)".into(),
            }),
            _ => Some(AttemptEnd::ErrorExit {
                rank,
                instance_id,
                code: run.exit_code,
                detail: match run.signal {
                    Some(s) => format!("killed by signal {s}"),
                    None => "failed".into(),
                },
            }),
        };
    }
    // The run has not ended (or not started): the node and the command may tell more.
    if let Some(why) = &r.node_gone {
        return Some(AttemptEnd::NodeLost { rank, instance_id, detail: why.clone() });
    }
    let command = r.command?;
    if !command.is_final() {
        return None;
    }
    let waited = r.command_final_since_ms.is_some_and(|t| now_ms - t >= RECORD_GRACE_MS);
    match command {
        CommandState::TimedOut => Some(AttemptEnd::TimedOut { rank, instance_id }),
        CommandState::Undeliverable | CommandState::Terminated => {
            Some(AttemptEnd::NodeLost { rank, instance_id, detail: format!("its SSM command is {command:?}") })
        }
        // The run may still write its end: give it RECORD_GRACE_MS.
        _ if !waited => None,
        _ if r.run.is_none() => Some(AttemptEnd::ErrorExit {
            rank,
            instance_id,
            code: None,
            detail: format!(
                "its SSM command ended {command:?} before tap run recorded a run (is tap installed on the node?)"
            ),
        }),
        _ => Some(AttemptEnd::NodeLost {
            rank,
            instance_id,
            detail: format!("its SSM command ended {command:?} while its run still said running"),
        }),
    }
}

/// Decides from one round of observations of the running attempt. One bad rank ends the
/// attempt for all (torch ranks cannot go on without a peer). When several ranks ended
/// badly, the infrastructure's cause wins over the errors it provokes in the other ranks
/// (a reclaimed peer makes NCCL fail on the survivors): reclaim, then GPU fault, lost node,
/// timeout, and the command's own error last.
pub fn watch(ranks: &[RankView], now_ms: i64) -> Watch {
    let ends: Vec<AttemptEnd> = ranks.iter().filter_map(|r| rank_end(r, now_ms)).collect();
    let weight = |e: &AttemptEnd| match e {
        AttemptEnd::SpotReclaim { .. } => 0,
        AttemptEnd::GpuFault { .. } => 1,
        AttemptEnd::NodeLost { .. } => 2,
        AttemptEnd::TimedOut { .. } => 3,
        _ => 4,
    };
    if let Some(end) = ends.into_iter().min_by_key(weight) {
        let cancel = ranks
            .iter()
            .filter(|r| {
                let ended = r.run.as_ref().is_some_and(|run| run.status.is_final());
                let command_ended = r.command.is_some_and(CommandState::is_final);
                !ended && !command_ended && r.node_gone.is_none()
            })
            .map(|r| r.rank)
            .collect();
        return Watch::Ended { end, cancel };
    }
    let all_done =
        !ranks.is_empty() && ranks.iter().all(|r| r.run.as_ref().is_some_and(|run| run.status == RunStatus::Succeeded));
    if all_done { Watch::Succeeded } else { Watch::Wait }
}

/// What the controller does with a job now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    /// Record why it waits (when the line changed).
    Wait(String),
    /// Start attempt `number` on these nodes.
    Launch { number: u32, nodes: Vec<NodeInfo> },
    /// Watch its running attempt.
    Watch,
    /// Cancel what runs and end it as cancelled.
    Cancel,
    /// A `starting` attempt whose launch never finished: cancel its commands, then relaunch.
    Abandon,
    /// End the job as failed, for this reason (a relaunch found no capacity in time).
    Fail(String),
}

/// The step for one active job, given the queue's verdict for it (from [`schedule`]).
pub fn step(job: &JobRecord, placement: Option<&Placement>, now_ms: i64) -> Step {
    if job.state.is_final() {
        return Step::Idle;
    }
    if job.cancel_requested_ms.is_some() {
        return Step::Cancel;
    }
    match job.state {
        JobState::Queued | JobState::Recovering => match placement {
            Some(Placement::Nodes(n)) => {
                Step::Launch { number: job.attempts.last().map_or(1, |a| a.number + 1), nodes: n.clone() }
            }
            Some(Placement::Wait(why))
                if job.state == JobState::Recovering
                    && job
                        .current()
                        .and_then(|a| a.ended_ms)
                        .is_some_and(|end| now_ms - end > i64::from(job.spec.wait_s) * 1000) =>
            {
                Step::Fail(format!("no capacity to relaunch within {} s (--wait): {why}", job.spec.wait_s))
            }
            Some(Placement::Wait(why)) if job.waiting.as_deref() != Some(why) => Step::Wait(why.clone()),
            _ => Step::Idle,
        },
        JobState::Starting => {
            let started = job.current().map_or(job.updated_ms, |a| a.started_ms);
            if now_ms - started > STARTING_LIMIT_MS { Step::Abandon } else { Step::Idle }
        }
        JobState::Running => Step::Watch,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => Step::Idle,
    }
}

/// Records a new attempt on `nodes` (state `starting`).
pub fn begin_attempt(job: &mut JobRecord, nodes: &[NodeInfo], resumed_from: Option<String>, by: &str, now_ms: i64) {
    let number = job.attempts.last().map_or(1, |a| a.number + 1);
    job.attempts.push(Attempt {
        number,
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(rank, n)| AttemptNode {
                rank: rank as u32,
                instance_id: n.instance_id.clone(),
                instance_type: n.instance_type.clone(),
                availability_zone: n.availability_zone.clone(),
                private_ip: n.private_ip.clone(),
                command_id: None,
            })
            .collect(),
        started_ms: now_ms,
        ended_ms: None,
        end: None,
        resumed_from,
        launched_by: by.to_owned(),
        cross_az: false,
        traffic: None,
    });
    if let Some(a) = job.attempts.last_mut() {
        a.cross_az = a.zones().len() > 1;
    }
    job.state = JobState::Starting;
    job.waiting = None;
    job.updated_ms = now_ms;
}

/// Records the commands sent (instance → command id): the attempt runs.
pub fn commands_sent(job: &mut JobRecord, sent: &[(String, String)], now_ms: i64) {
    if let Some(a) = job.current_mut() {
        for n in &mut a.nodes {
            if let Some((_, c)) = sent.iter().find(|(i, _)| *i == n.instance_id) {
                n.command_id = Some(c.clone());
            }
        }
    }
    job.state = JobState::Running;
    job.updated_ms = now_ms;
}

/// Ends the current attempt and moves the job on: succeeded, recovering (a relaunch is in the
/// budget; spent here), or failed with the reason and the budget that ran out.
pub fn end_attempt(job: &mut JobRecord, end: AttemptEnd, now_ms: i64) {
    let line = end.describe();
    if let Some(a) = job.current_mut() {
        a.ended_ms = Some(now_ms);
        a.end = Some(end.clone());
    }
    job.updated_ms = now_ms;
    let (state, outcome) = match end.budget() {
        _ if end == AttemptEnd::Succeeded => (JobState::Succeeded, "succeeded".to_owned()),
        _ if end == AttemptEnd::Cancelled => (JobState::Cancelled, "cancelled".to_owned()),
        Budget::Restarts if job.restarts_used < job.spec.restarts => {
            job.restarts_used += 1;
            (JobState::Recovering, String::new())
        }
        Budget::Restarts => (
            JobState::Failed,
            format!("{line}; no restarts left ({} of --restarts {} used)", job.restarts_used, job.spec.restarts),
        ),
        Budget::ErrorRetries if job.error_retries_used < job.spec.retry_on_error => {
            job.error_retries_used += 1;
            (JobState::Recovering, String::new())
        }
        Budget::ErrorRetries => (
            JobState::Failed,
            if job.spec.retry_on_error == 0 {
                format!("{line} (--retry-on-error N relaunches after the command's own errors)")
            } else {
                format!(
                    "{line}; no retries left ({} of --retry-on-error {} used)",
                    job.error_retries_used, job.spec.retry_on_error
                )
            },
        ),
        Budget::Free => (JobState::Recovering, String::new()),
        Budget::None => (JobState::Failed, line.clone()),
    };
    job.state = state;
    if state.is_final() {
        job.ended_ms = Some(now_ms);
        job.outcome = Some(outcome);
    } else {
        job.waiting = Some(format!("relaunching after: {line}"));
    }
}

/// Ends the job as cancelled (its current attempt too, if one runs).
pub fn cancel(job: &mut JobRecord, now_ms: i64) {
    if job.state.holds_nodes() {
        end_attempt(job, AttemptEnd::Cancelled, now_ms);
    } else {
        job.state = JobState::Cancelled;
        job.ended_ms = Some(now_ms);
        job.updated_ms = now_ms;
        job.outcome = Some("cancelled".into());
    }
    job.waiting = None;
}

/// Ends the job as failed for `reason` (its attempt, if any, has ended already).
pub fn fail(job: &mut JobRecord, reason: &str, now_ms: i64) {
    job.state = JobState::Failed;
    job.ended_ms = Some(now_ms);
    job.updated_ms = now_ms;
    job.outcome = Some(reason.to_owned());
    job.waiting = None;
}

/// Marks a job whose item cannot be read as failed, with the reason (the controller keeps
/// serving the others).
pub fn corrupt_outcome(problem: &str) -> String {
    format!("the job's record is corrupt and was not run: {}", crate::text::clip(problem, 200))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nodes: u32) -> JobSpec {
        JobSpec {
            experiment: "llm".into(),
            command: vec!["python3".into(), "train.py".into()],
            nodes,
            user: "ubuntu".into(),
            env: BTreeMap::new(),
            master_port: 29500,
            restarts: 3,
            retry_on_error: 0,
            timeout_s: 86_400,
            resume: false,
            wait_s: DEFAULT_WAIT_S,
            allow_cross_az: false,
            tags: BTreeMap::new(),
        }
    }

    fn node(id: &str, launched: i64) -> NodeInfo {
        NodeInfo {
            instance_id: id.into(),
            instance_type: Some("p3.2xlarge".into()),
            availability_zone: Some("us-east-1a".into()),
            private_ip: Some(format!("10.0.0.{launched}")),
            state: "running".into(),
            launch_time_ms: Some(launched),
            heartbeat_age_s: Some(20),
            unhealthy: Some(false),
            interrupting: None,
        }
    }

    fn job(id: &str, nodes: u32, submitted: i64) -> JobRecord {
        JobRecord::new(id, spec(nodes), "me@laptop", submitted)
    }

    /// Regression (issue 21): rank 0's node died hard and the job's record said "fresh start"
    /// for an attempt that resumed; each attempt's checkpoint comes from its rank 0's restore.
    #[test]
    fn each_attempt_shows_what_its_rank_0_restored() {
        let nodes = vec![node("i-a", 1), node("i-b", 2)];
        let mut j = job("job-k", 2, 0);
        begin_attempt(&mut j, &nodes, None, "i-a#1", 5);
        begin_attempt(&mut j, &nodes, None, "i-a#1", 50);
        begin_attempt(&mut j, &nodes, Some("planned".into()), "i-a#1", 90);
        let rank_run = |attempt: u32, rank: u32, restored: Option<&str>| {
            let mut r = crate::runs::Run::new("llm", &format!("r-{attempt}-{rank}"), vec![], "h", 1);
            (r.group, r.job_attempt, r.node_rank) = (Some("job-k".into()), Some(attempt), Some(rank));
            r.restored = restored.map(str::to_owned);
            r
        };
        let mut other_job = rank_run(2, 0, Some("other-0009"));
        other_job.group = Some("job-z".into());
        let runs =
            vec![rank_run(1, 0, None), rank_run(2, 1, Some("rank-1s")), rank_run(2, 0, Some("job-k-0004")), other_job];
        restored_by_ranks(&mut j, &runs);
        let shown: Vec<Option<&str>> = j.attempts.iter().map(|a| a.resumed_from.as_deref()).collect();
        assert_eq!(shown, [None, Some("job-k-0004"), Some("planned")], "attempt 3 has no rank 0 run yet: the plan");
    }

    #[test]
    fn specs_that_cannot_run_are_refused_in_one_line() {
        assert_eq!(spec(2).problem(), None);
        let cases: Vec<(JobSpec, &str)> = vec![
            (spec(0), "--nodes must be at least 1"),
            (spec(501), "--nodes 501: the fleet holds at most 500 nodes (the stack's target_capacity limit)"),
            (JobSpec { command: vec![], ..spec(1) }, "no command given"),
            (JobSpec { command: vec![" ".into()], ..spec(1) }, "no command given"),
            (JobSpec { experiment: "a/b".into(), ..spec(1) }, "experiment \"a/b\": use 1-128"),
            (JobSpec { experiment: "..".into(), ..spec(1) }, "experiment \"..\" is not a name"),
            (JobSpec { user: "-r".into(), ..spec(1) }, "--user \"-r\" is not a user name"),
            (JobSpec { timeout_s: 5, ..spec(1) }, "--timeout 5 s"),
            (JobSpec { env: BTreeMap::from([("1X".into(), "v".into())]), ..spec(1) }, "--env \"1X\""),
        ];
        for (s, want) in cases {
            let got = s.problem().expect("refused");
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn placement_picks_free_fit_nodes_oldest_first_or_says_why_it_waits() {
        let mut sick = node("i-sick", 1);
        sick.unhealthy = Some(true);
        let mut booting = node("i-new", 9);
        booting.heartbeat_age_s = None;
        let mut pending = node("i-pending", 10);
        pending.state = "pending".into();
        let nodes = vec![node("i-c", 3), sick, node("i-a", 2), booting, pending, node("i-b", 4)];
        let busy = BTreeSet::from(["i-b".to_owned()]);
        match place(2, &nodes, &busy, Constraints::default()) {
            Placement::Nodes(n) => {
                assert_eq!(n.iter().map(|n| n.instance_id.as_str()).collect::<Vec<_>>(), ["i-a", "i-c"]);
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(
            place(4, &nodes, &busy, Constraints::default()),
            Placement::Wait("needs 4 healthy nodes, fleet has 2 (2 booting, 1 busy, 1 GPU-unhealthy)".into())
        );
        assert_eq!(
            place(1, &[], &BTreeSet::new(), Constraints::default()),
            Placement::Wait("needs 1 healthy node, fleet has 0".into())
        );
    }

    fn in_zone(id: &str, launched: i64, zone: &str) -> NodeInfo {
        NodeInfo { availability_zone: Some(zone.into()), ..node(id, launched) }
    }

    fn ids(p: &Placement) -> Vec<&str> {
        match p {
            Placement::Nodes(n) => n.iter().map(|n| n.instance_id.as_str()).collect(),
            Placement::Wait(w) => panic!("waits: {w}"),
        }
    }

    /// Issue 22: a 4-node job on a fleet split 2/1/1 over three AZs waits, with the line
    /// that says where the nodes are, instead of spanning AZs.
    #[test]
    fn a_split_fleet_makes_a_multi_node_job_wait_with_the_count_per_az() {
        let nodes = vec![
            in_zone("i-c1", 4, "us-east-1c"),
            in_zone("i-a1", 1, "us-east-1a"),
            in_zone("i-b1", 2, "us-east-1b"),
            in_zone("i-a2", 3, "us-east-1a"),
        ];
        assert_eq!(
            place(4, &nodes, &BTreeSet::new(), Constraints::default()),
            Placement::Wait("needs 4 healthy nodes in one AZ: us-east-1a has 2, us-east-1b 1, us-east-1c 1".into())
        );
        // Busy and unfit nodes are not counted in their AZ.
        let busy = BTreeSet::from(["i-a2".to_owned()]);
        let mut sick = in_zone("i-b2", 5, "us-east-1b");
        sick.unhealthy = Some(true);
        let mut more = nodes.clone();
        more.push(sick);
        more.push(in_zone("i-c2", 6, "us-east-1c"));
        assert_eq!(
            place(3, &more, &busy, Constraints::default()),
            Placement::Wait("needs 3 healthy nodes in one AZ: us-east-1a has 1, us-east-1b 1, us-east-1c 2".into())
        );
        assert_eq!(ids(&place(2, &more, &busy, Constraints::default())), ["i-c1", "i-c2"]);
        // Too few fit nodes in all: the fleet-wide line, as before.
        assert_eq!(
            place(6, &more, &busy, Constraints::default()),
            Placement::Wait("needs 6 healthy nodes, fleet has 4 (1 busy, 1 GPU-unhealthy)".into())
        );
    }

    #[test]
    fn the_best_fit_az_is_chosen_and_ties_go_to_the_oldest_node() {
        let nodes = vec![
            in_zone("i-a1", 1, "us-east-1a"),
            in_zone("i-a2", 2, "us-east-1a"),
            in_zone("i-a3", 3, "us-east-1a"),
            in_zone("i-b1", 5, "us-east-1b"),
            in_zone("i-b2", 4, "us-east-1b"),
            in_zone("i-c1", 7, "us-east-1c"),
            in_zone("i-c2", 6, "us-east-1c"),
        ];
        // b and c hold 2 each (the fewest that fit); b's oldest node (4) is older than c's (6).
        assert_eq!(ids(&place(2, &nodes, &BTreeSet::new(), Constraints::default())), ["i-b2", "i-b1"]);
        assert_eq!(ids(&place(3, &nodes, &BTreeSet::new(), Constraints::default())), ["i-a1", "i-a2", "i-a3"]);
        // One node: the oldest fit node anywhere (no AZ to keep together).
        assert_eq!(ids(&place(1, &nodes, &BTreeSet::new(), Constraints::default())), ["i-a1"]);
        // A node whose AZ is unknown is never placed with a known AZ's nodes.
        let unknown = vec![in_zone("i-a1", 1, "us-east-1a"), NodeInfo { availability_zone: None, ..node("i-x", 2) }];
        assert_eq!(
            place(2, &unknown, &BTreeSet::new(), Constraints::default()),
            Placement::Wait("needs 2 healthy nodes in one AZ: unknown has 1, us-east-1a 1".into())
        );
    }

    #[test]
    fn a_relaunch_goes_back_to_its_previous_az_when_it_can() {
        let nodes = vec![
            in_zone("i-a1", 1, "us-east-1a"),
            in_zone("i-a2", 2, "us-east-1a"),
            in_zone("i-c1", 3, "us-east-1c"),
            in_zone("i-c2", 4, "us-east-1c"),
            in_zone("i-c3", 5, "us-east-1c"),
        ];
        let mut j = job("j", 2, 0);
        begin_attempt(&mut j, &nodes[2..4], None, "x", 1);
        assert!(!j.current().expect("attempt").cross_az);
        end_attempt(&mut j, AttemptEnd::SpotReclaim { rank: 1, instance_id: "i-c2".into() }, 2);
        let c = Constraints::of(&j);
        assert_eq!(c.previous_zone, Some("us-east-1c"));
        // Without the previous AZ the best fit would be us-east-1a (2 nodes).
        assert_eq!(ids(&place(2, &nodes, &BTreeSet::new(), Constraints::default())), ["i-a1", "i-a2"]);
        assert_eq!(ids(&place(2, &nodes, &BTreeSet::new(), c)), ["i-c1", "i-c2"]);
        // The previous AZ lost its nodes: another AZ that holds the job.
        let busy = BTreeSet::from(["i-c2".to_owned(), "i-c3".to_owned()]);
        assert_eq!(ids(&place(2, &nodes, &busy, c)), ["i-a1", "i-a2"]);
        let jobs = vec![j];
        let verdicts = schedule(&jobs, &nodes);
        assert_eq!(ids(&verdicts[0].1), ["i-c1", "i-c2"], "the queue places with the job's own constraints");
    }

    #[test]
    fn allow_cross_az_spans_the_fewest_azs_with_each_azs_ranks_together() {
        let nodes = vec![
            in_zone("i-c1", 1, "us-east-1c"),
            in_zone("i-a1", 2, "us-east-1a"),
            in_zone("i-b1", 3, "us-east-1b"),
            in_zone("i-a2", 4, "us-east-1a"),
            in_zone("i-b2", 5, "us-east-1b"),
            in_zone("i-a3", 6, "us-east-1a"),
        ];
        let c = Constraints { allow_cross_az: true, previous_zone: None };
        // a holds 3, b 2, c 1: a first, then b.
        assert_eq!(ids(&place(5, &nodes, &BTreeSet::new(), c)), ["i-a1", "i-a2", "i-a3", "i-b1", "i-b2"]);
        // One AZ still wins when one can hold it.
        assert_eq!(ids(&place(3, &nodes, &BTreeSet::new(), c)), ["i-a1", "i-a2", "i-a3"]);
        let mut j = job("x", 5, 0);
        j.spec.allow_cross_az = true;
        let Placement::Nodes(chosen) = place(5, &nodes, &BTreeSet::new(), Constraints::of(&j)) else { panic!() };
        begin_attempt(&mut j, &chosen, None, "x", 1);
        let a = j.current().expect("attempt");
        assert!(a.cross_az, "the record says it crossed");
        assert_eq!(a.zones(), ["us-east-1a", "us-east-1b"]);
        let text = serde_json::to_string(&j).expect("json");
        assert!(text.contains("\"cross_az\":true") && text.contains("\"allow_cross_az\":true"), "{text}");
    }

    /// A job record of the previous release (no allow_cross_az, cross_az or traffic) reads.
    #[test]
    fn a_job_record_of_the_previous_release_reads() {
        let mut j = job("old", 2, 0);
        begin_attempt(&mut j, &[node("i-a", 1), node("i-b", 2)], None, "x", 1);
        let mut v = serde_json::to_value(&j).expect("json");
        v["spec"].as_object_mut().expect("spec").remove("allow_cross_az");
        v["attempts"][0].as_object_mut().expect("attempt").remove("cross_az");
        let back: JobRecord = serde_json::from_value(v).expect("reads");
        assert!(!back.spec.allow_cross_az && !back.attempts[0].cross_az && back.attempts[0].traffic.is_none());
    }

    #[test]
    fn cross_az_bytes_count_the_ring_hops_that_cross() {
        let nodes = vec![
            in_zone("i-a1", 1, "us-east-1a"),
            in_zone("i-a2", 2, "us-east-1a"),
            in_zone("i-b1", 3, "us-east-1b"),
            in_zone("i-b2", 4, "us-east-1b"),
        ];
        let mut j = job("x", 4, 0);
        begin_attempt(&mut j, &nodes, None, "x", 1);
        let a = j.attempts.last_mut().expect("attempt");
        assert_eq!(a.cross_az_bytes(), None, "not read yet");
        a.traffic = Some(
            (0..4)
                .map(|rank| RankTraffic { rank, bytes_in: 7, bytes_out: (u64::from(rank) + 1) * 1_000_000_000 })
                .collect(),
        );
        // Rank 1 (a) sends to rank 2 (b); rank 3 (b) sends to rank 0 (a).
        assert_eq!(a.cross_az_bytes(), Some(2_000_000_000 + 4_000_000_000));
        assert!((cross_az_usd(6_000_000_000) - 0.12).abs() < 1e-9);
        let mut one = job("y", 2, 0);
        begin_attempt(&mut one, &nodes[..2], None, "x", 1);
        let a = one.attempts.last_mut().expect("attempt");
        a.traffic = Some(vec![
            RankTraffic { rank: 0, bytes_in: 5, bytes_out: 9_000_000_000 },
            RankTraffic { rank: 1, bytes_in: 5, bytes_out: 9_000_000_000 },
        ]);
        assert_eq!(a.cross_az_bytes(), Some(0), "one AZ: nothing crosses");
    }

    /// The issue's arithmetic: DDP of a 1.3 B-parameter model in fp16 on 6 nodes spread 2/2/2,
    /// a step every 4 s: ≈ $230 an hour of crossing.
    #[test]
    fn crossing_costs_what_the_issue_computed() {
        let per_rank_per_step = 2.0 * 5.0 / 6.0 * 2.6e9;
        let usd = cross_az_usd_per_hour(6, 3, per_rank_per_step * 3600.0 / 4.0);
        assert!((usd - 234.0).abs() < 1.0, "{usd}");
        assert_eq!(crossing_hops(6, 3), 3);
        assert_eq!(crossing_hops(2, 3), 2);
        assert_eq!(crossing_hops(1, 3), 0);
        assert_eq!(crossing_hops(6, 1), 0);
    }

    #[test]
    fn the_queue_is_first_in_first_out_without_backfill() {
        let nodes = vec![node("i-a", 1), node("i-b", 2), node("i-c", 3)];
        let mut running = job("j0", 1, 0);
        begin_attempt(&mut running, &nodes[..1], None, "i-a#1", 5);
        commands_sent(&mut running, &[("i-a".into(), "c0".into())], 6);
        let jobs = vec![job("j3", 1, 30), job("j1", 2, 10), job("j2", 3, 20), running];
        let verdicts: Vec<(String, Placement)> =
            schedule(&jobs, &nodes).into_iter().map(|(j, p)| (j.id.clone(), p)).collect();
        assert_eq!(verdicts.len(), 3, "the running job is not in the queue");
        assert_eq!(verdicts[0].0, "j1");
        assert!(
            matches!(&verdicts[0].1, Placement::Nodes(n) if n[0].instance_id == "i-b" && n[1].instance_id == "i-c"),
            "i-a is held by j0: {:?}",
            verdicts[0].1
        );
        assert_eq!(verdicts[1], ("j2".into(), Placement::Wait("needs 3 healthy nodes, fleet has 0 (3 busy)".into())));
        assert_eq!(
            verdicts[2],
            ("j3".into(), Placement::Wait("waits behind job j2 (first in, first out)".into())),
            "a 1-node job does not jump a waiting 3-node job"
        );
    }

    fn ranks(n: u32) -> Vec<RankView> {
        (0..n)
            .map(|rank| RankView {
                rank,
                instance_id: format!("i-{rank}"),
                run: Some(RankRun { status: RunStatus::Running, exit_code: None, signal: None, interruption: None }),
                command: Some(CommandState::InProgress),
                command_final_since_ms: None,
                node_gone: None,
            })
            .collect()
    }

    fn ended(r: &mut RankView, status: RunStatus, code: Option<i32>, interruption: Option<(NoticeKind, &str)>) {
        r.run = Some(RankRun {
            status,
            exit_code: code,
            signal: None,
            interruption: interruption.map(|(k, v)| (k, v.to_owned())),
        });
        r.command = Some(if code == Some(0) { CommandState::Success } else { CommandState::Failed });
        r.command_final_since_ms = Some(0);
    }

    #[test]
    fn a_reclaimed_rank_ends_the_attempt_and_the_others_are_cancelled() {
        let mut r = ranks(3);
        assert_eq!(watch(&r, 0), Watch::Wait);
        ended(
            &mut r[1],
            RunStatus::Interrupted,
            Some(75),
            Some((NoticeKind::SpotInterruption, "EC2 terminates at 12:00")),
        );
        // The survivor that already crashed in NCCL is not the cause.
        ended(&mut r[2], RunStatus::Failed, Some(1), None);
        assert_eq!(
            watch(&r, 1000),
            Watch::Ended { end: AttemptEnd::SpotReclaim { rank: 1, instance_id: "i-1".into() }, cancel: vec![0] }
        );
    }

    #[test]
    fn gpu_faults_errors_lost_nodes_and_timeouts_are_told_apart() {
        let mut r = ranks(2);
        ended(&mut r[0], RunStatus::Interrupted, Some(75), Some((NoticeKind::GpuFatal, "XID 79 on GPU-1234")));
        assert!(
            matches!(watch(&r, 0), Watch::Ended { end: AttemptEnd::GpuFault { ref detail, .. }, .. } if detail == "XID 79 on GPU-1234")
        );

        let mut r = ranks(2);
        ended(&mut r[1], RunStatus::Failed, Some(3), None);
        let w = watch(&r, 0);
        assert_eq!(
            w,
            Watch::Ended {
                end: AttemptEnd::ErrorExit {
                    rank: 1,
                    instance_id: "i-1".into(),
                    code: Some(3),
                    detail: "failed".into()
                },
                cancel: vec![0]
            }
        );

        let mut r = ranks(2);
        r[0].node_gone = Some("instance is terminated".into());
        assert!(
            matches!(watch(&r, 0), Watch::Ended { end: AttemptEnd::NodeLost { ref detail, .. }, ref cancel } if detail == "instance is terminated" && cancel == &[1])
        );

        let mut r = ranks(2);
        r[0].run.as_mut().expect("run").status = RunStatus::Lost;
        assert!(matches!(watch(&r, 0), Watch::Ended { end: AttemptEnd::NodeLost { .. }, .. }));

        let mut r = ranks(2);
        r[1].command = Some(CommandState::TimedOut);
        assert!(matches!(watch(&r, 0), Watch::Ended { end: AttemptEnd::TimedOut { rank: 1, .. }, .. }));
    }

    #[test]
    fn a_command_that_ended_gives_its_run_record_time_to_catch_up() {
        let mut r = ranks(2);
        r[0].command = Some(CommandState::Success);
        r[0].command_final_since_ms = Some(10_000);
        assert_eq!(watch(&r, 10_000 + RECORD_GRACE_MS - 1), Watch::Wait);
        assert!(matches!(
            watch(&r, 10_000 + RECORD_GRACE_MS),
            Watch::Ended { end: AttemptEnd::NodeLost { rank: 0, .. }, .. }
        ));
        // No run at all: tap run never started (not installed, bad config): an error.
        r[0].run = None;
        r[0].command = Some(CommandState::Failed);
        assert!(matches!(
            watch(&r, 10_000 + RECORD_GRACE_MS),
            Watch::Ended { end: AttemptEnd::ErrorExit { code: None, .. }, .. }
        ));
        // Not started yet, command pending: wait.
        let mut r = ranks(1);
        r[0].run = None;
        r[0].command = Some(CommandState::Pending);
        assert_eq!(watch(&r, 0), Watch::Wait);
    }

    #[test]
    fn all_ranks_succeeded_is_success_and_one_still_running_waits() {
        let mut r = ranks(2);
        ended(&mut r[0], RunStatus::Succeeded, Some(0), None);
        assert_eq!(watch(&r, 0), Watch::Wait);
        ended(&mut r[1], RunStatus::Succeeded, Some(0), None);
        assert_eq!(watch(&r, 0), Watch::Succeeded);
        assert_eq!(watch(&[], 0), Watch::Wait);
    }

    #[test]
    fn restarts_and_error_retries_are_counted_apart_and_bounded() {
        let nodes = vec![node("i-a", 1), node("i-b", 2)];
        let mut j = job("j", 2, 0);
        j.spec.restarts = 1;
        j.spec.retry_on_error = 1;
        let reclaim = AttemptEnd::SpotReclaim { rank: 1, instance_id: "i-b".into() };
        let error =
            AttemptEnd::ErrorExit { rank: 0, instance_id: "i-a".into(), code: Some(2), detail: "failed".into() };
        for (end, state) in [
            (reclaim.clone(), JobState::Recovering),
            (error.clone(), JobState::Recovering),
            (AttemptEnd::LaunchInterrupted { detail: "controller died".into() }, JobState::Recovering),
            (reclaim, JobState::Failed),
        ] {
            begin_attempt(&mut j, &nodes, Some("ckpt".into()), "i-a#1", 10);
            assert_eq!(j.state, JobState::Starting);
            commands_sent(&mut j, &[("i-a".into(), "c1".into()), ("i-b".into(), "c2".into())], 11);
            end_attempt(&mut j, end, 20);
            assert_eq!(j.state, state);
        }
        assert_eq!((j.restarts_used, j.error_retries_used), (1, 1));
        assert_eq!(j.attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(
            j.outcome.as_deref(),
            Some("spot reclaim of rank 1's node i-b; no restarts left (1 of --restarts 1 used)")
        );
        assert_eq!(j.ended_ms, Some(20));

        let mut e = job("e", 1, 0);
        begin_attempt(&mut e, &nodes[..1], None, "x", 1);
        end_attempt(&mut e, error, 2);
        assert_eq!(e.state, JobState::Failed);
        assert_eq!(
            e.outcome.as_deref(),
            Some("rank 0 on i-a exited with error 2 (--retry-on-error N relaunches after the command's own errors)")
        );
    }

    #[test]
    fn steps_follow_the_state_and_a_cancel_wins() {
        let nodes = vec![node("i-a", 1)];
        let mut j = job("j", 1, 0);
        let wait = Placement::Wait("needs 1 healthy node, fleet has 0".into());
        assert_eq!(step(&j, Some(&wait), 0), Step::Wait("needs 1 healthy node, fleet has 0".into()));
        j.waiting = Some("needs 1 healthy node, fleet has 0".into());
        assert_eq!(step(&j, Some(&wait), 0), Step::Idle, "the same line is not written again");
        assert_eq!(
            step(&j, Some(&Placement::Nodes(nodes.clone())), 0),
            Step::Launch { number: 1, nodes: nodes.clone() }
        );
        begin_attempt(&mut j, &nodes, None, "x", 1000);
        assert_eq!(step(&j, None, 1000 + STARTING_LIMIT_MS), Step::Idle);
        assert_eq!(step(&j, None, 1001 + STARTING_LIMIT_MS), Step::Abandon);
        commands_sent(&mut j, &[("i-a".into(), "c".into())], 1001);
        assert_eq!(step(&j, None, 2000), Step::Watch);
        j.cancel_requested_ms = Some(3000);
        assert_eq!(step(&j, None, 3000), Step::Cancel);
        cancel(&mut j, 3000);
        assert_eq!(
            (j.state, j.current().and_then(|a| a.end.clone())),
            (JobState::Cancelled, Some(AttemptEnd::Cancelled))
        );
        assert_eq!(step(&j, None, 4000), Step::Idle);

        let mut q = job("q", 1, 0);
        cancel(&mut q, 5);
        assert_eq!((q.state, q.ended_ms, q.attempts.len()), (JobState::Cancelled, Some(5), 0));
    }

    #[test]
    fn a_relaunch_without_capacity_fails_after_its_wait_but_the_queue_waits_forever() {
        let nodes = vec![node("i-a", 1)];
        let wait = Placement::Wait("needs 1 healthy node, fleet has 0".into());
        let mut j = job("j", 1, 0);
        assert_eq!(step(&j, Some(&wait), 10_000_000_000), Step::Wait("needs 1 healthy node, fleet has 0".into()));
        begin_attempt(&mut j, &nodes, None, "x", 1);
        end_attempt(&mut j, AttemptEnd::SpotReclaim { rank: 0, instance_id: "i-a".into() }, 1_000);
        let limit = 1_000 + i64::from(DEFAULT_WAIT_S) * 1000;
        assert!(matches!(step(&j, Some(&wait), limit), Step::Wait(_)));
        assert_eq!(
            step(&j, Some(&wait), limit + 1),
            Step::Fail("no capacity to relaunch within 3600 s (--wait): needs 1 healthy node, fleet has 0".into())
        );
        fail(&mut j, "x", 5);
        assert_eq!((j.state, j.ended_ms), (JobState::Failed, Some(5)));
    }

    #[test]
    fn downtime_is_from_one_attempts_end_to_the_next_ones_start() {
        let nodes = vec![node("i-a", 1)];
        let mut j = job("j", 1, 0);
        begin_attempt(&mut j, &nodes, None, "x", 1_000);
        end_attempt(&mut j, AttemptEnd::SpotReclaim { rank: 0, instance_id: "i-a".into() }, 5_000);
        begin_attempt(&mut j, &nodes, Some("c1".into()), "x", 65_000);
        assert_eq!(j.downtimes_ms(), [60_000]);
        assert_eq!(j.held_nodes().collect::<Vec<_>>(), ["i-a"]);
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut j = job("j", 1, 0);
        begin_attempt(&mut j, &[node("i-a", 1)], None, "x", 1);
        end_attempt(&mut j, AttemptEnd::GpuFault { rank: 0, instance_id: "i-a".into(), detail: "XID 79".into() }, 2);
        let text = serde_json::to_string(&j).expect("json");
        assert!(text.contains("\"why\":\"gpu_fault\""), "{text}");
        assert_eq!(serde_json::from_str::<JobRecord>(&text).expect("back"), j);
    }
}
