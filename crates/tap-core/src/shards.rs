//! Sharded checkpoints: a job's checkpoint of a step is one shard per
//! rank, and the step is restorable only when every rank's shard is stored and verified. This
//! module holds the layout and the pure decisions; the store and `tap run` act on them.
//!
//! Layout, beside a run's (`checkpoints/<exp>/objects|manifests|LATEST|runs/<run>/LATEST`):
//!
//! ```text
//! checkpoints/<exp>/objects/<sha256>                          file contents, shared as today
//! checkpoints/<exp>/shards/<job>/a<attempt>/s<step>/r<rank>.json
//!                                                             rank's shard manifest (a Manifest)
//! checkpoints/<exp>/commits/<job>/<commit id>.json            the step's commit ([`StepCommit`]):
//!                                                             written once, only when complete
//! checkpoints/<exp>/commits/<job>/a<attempt>.begun            the attempt began (its ranks write
//!                                                             it as they start): the fence
//! ```
//!
//! Every rank uploads its own shard in parallel with the others (its objects first, its shard
//! manifest last). Whichever rank's upload completes the step writes the commit, once
//! (create-if-absent), naming every shard manifest with its digest. The job's latest
//! checkpoint is its newest commit ([`newest_commit`] over the commit ids): only committed
//! steps are ever latest, and no pointer can be left behind or raced. A step with missing shards is never restorable and is cleaned up once a later
//! step commits ([`orphaned`]). A shard of an attempt other than the job's current one is
//! fenced out: it never commits and never moves `LATEST` ([`decide_commit`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The commit record's format.
pub const STEP_COMMIT_VERSION: u32 = 1;

/// The most ranks a job may have (placement and the commit record stay small).
pub const MAX_WORLD_SIZE: u32 = 1024;

/// The prefix of every shard of job `job`.
pub fn shards_prefix(root: &str, experiment: &str, job: &str) -> String {
    format!("{root}/{experiment}/shards/{job}/")
}

/// The prefix of every shard of one step of one attempt.
pub fn step_prefix(root: &str, experiment: &str, job: &str, attempt: u32, step: u64) -> String {
    format!("{}a{attempt}/s{step}/", shards_prefix(root, experiment, job))
}

/// Where rank `rank`'s shard manifest of `step` of attempt `attempt` of job `job` lives.
pub fn shard_key(root: &str, experiment: &str, job: &str, attempt: u32, step: u64, rank: u32) -> String {
    format!("{}r{rank}.json", step_prefix(root, experiment, job, attempt, step))
}

/// The (attempt, step) of a shard key, given the part after [`shards_prefix`]
/// (`a<attempt>/s<step>/r<rank>.json`).
pub fn shard_step(rest: &str) -> Option<(u32, u64)> {
    let mut parts = rest.split('/');
    let attempt = parts.next()?.strip_prefix('a')?.parse().ok()?;
    let step = parts.next()?.strip_prefix('s')?.parse().ok()?;
    Some((attempt, step))
}

/// The prefix of every commit of job `job`.
pub fn commits_prefix(root: &str, experiment: &str, job: &str) -> String {
    format!("{root}/{experiment}/commits/{job}/")
}

/// Where a step's commit record lives.
pub fn commit_key(root: &str, experiment: &str, job: &str, id: &str) -> String {
    format!("{}{id}.json", commits_prefix(root, experiment, job))
}

/// The mark that attempt `attempt` of job `job` began: from then on, shards of older attempts
/// never commit.
pub fn attempt_mark_key(root: &str, experiment: &str, job: &str, attempt: u32) -> String {
    format!("{}a{attempt}.begun", commits_prefix(root, experiment, job))
}

/// The job's attempt as the names under [`commits_prefix`] say (the part after it): the
/// highest attempt marked begun or committed.
pub fn current_attempt<'a>(job: &str, names: impl IntoIterator<Item = &'a str>) -> Option<u32> {
    names
        .into_iter()
        .filter_map(|n| {
            n.strip_suffix(".begun")
                .and_then(|a| a.strip_prefix('a')?.parse().ok())
                .or_else(|| parse_commit_id(job, n.strip_suffix(".json")?).map(|(a, _)| a))
        })
        .max()
}

/// A step's commit id: `<job>-a<attempt>-s<step>` (sortable within an attempt by step).
pub fn commit_id(job: &str, attempt: u32, step: u64) -> String {
    format!("{job}-a{attempt}-s{step:010}")
}

/// What a rank stores at its shard key: the manifest of its files, and whose shard it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardManifest {
    pub rank: u32,
    pub world_size: u32,
    pub attempt: u32,
    pub manifest: crate::manifest::Manifest,
}

impl ShardManifest {
    pub fn parse(bytes: &[u8]) -> Result<ShardManifest, String> {
        let s: ShardManifest = serde_json::from_slice(bytes).map_err(|e| format!("not a shard manifest: {e}"))?;
        s.manifest.validate().map_err(|e| e.0)?;
        if s.rank >= s.world_size || s.world_size > MAX_WORLD_SIZE {
            return Err(format!("rank {} of a world of {}", s.rank, s.world_size));
        }
        Ok(s)
    }
}

/// The (attempt, step) of a commit id of `job`, if it is one.
pub fn parse_commit_id(job: &str, id: &str) -> Option<(u32, u64)> {
    let rest = id.strip_prefix(job)?.strip_prefix("-a")?;
    let (attempt, step) = rest.split_once("-s")?;
    Some((attempt.parse().ok()?, step.parse().ok()?))
}

/// The newest of a job's commit ids (by attempt, then step).
pub fn newest_commit<'a>(job: &str, ids: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    ids.into_iter().filter_map(|id| parse_commit_id(job, id).map(|k| (k, id))).max().map(|(_, id)| id)
}

/// One rank's shard as a commit names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRef {
    pub rank: u32,
    /// The shard manifest's key.
    pub manifest: String,
    /// SHA-256 of the shard manifest's bytes: the commit pins exactly what was verified.
    pub manifest_sha256: String,
    /// The shard's bytes (its files' sizes).
    pub bytes: u64,
}

/// A shard as the committing rank sees it in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSeen {
    pub rank: u32,
    /// The world size the rank's `tap run` was started with.
    pub world_size: u32,
    /// The job attempt the rank belongs to.
    pub attempt: u32,
    pub shard: ShardRef,
}

/// "Step `step` of attempt `attempt` of `job` is complete": the one record that makes it
/// restorable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepCommit {
    pub version: u32,
    pub id: String,
    pub experiment: String,
    pub job: String,
    pub attempt: u32,
    pub step: u64,
    pub world_size: u32,
    /// Exactly one per rank, in rank order.
    pub shards: Vec<ShardRef>,
    pub committed_ms: i64,
}

impl StepCommit {
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// Parses a stored commit and checks that it names one shard per rank.
    pub fn parse(bytes: &[u8]) -> Result<StepCommit, String> {
        let c: StepCommit = serde_json::from_slice(bytes).map_err(|e| format!("not a step commit: {e}"))?;
        if c.version != STEP_COMMIT_VERSION {
            return Err(format!("step commit version {} (this tap reads {STEP_COMMIT_VERSION})", c.version));
        }
        let ranks: Vec<u32> = c.shards.iter().map(|s| s.rank).collect();
        if ranks != (0..c.world_size).collect::<Vec<_>>() {
            return Err(format!("step commit {} names ranks {ranks:?} for a world of {}", c.id, c.world_size));
        }
        Ok(c)
    }
}

/// What the rank that finished its shard does about the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitDecision {
    /// Every shard is there: write this commit (once), then move LATEST to it.
    Commit(StepCommit),
    /// Shards of these ranks are not there yet: a later rank commits.
    Wait { missing: Vec<u32> },
    /// The step can never commit, and why (a stale attempt, two ranks claiming one number, a
    /// world size the ranks disagree on).
    Refuse(String),
}

/// The commit of `step` of attempt `attempt`, from the shards present. `current_attempt`: the
/// job's attempt now (a rank of an older attempt that finishes after the relaunch began is
/// fenced out).
pub fn decide_commit(
    experiment: &str,
    job: &str,
    attempt: u32,
    step: u64,
    current_attempt: u32,
    present: &[ShardSeen],
    now_ms: i64,
) -> CommitDecision {
    if attempt != current_attempt {
        return CommitDecision::Refuse(format!(
            "attempt {attempt} of job {job} is over (the job is on attempt {current_attempt}): its shards never commit"
        ));
    }
    let mine: Vec<&ShardSeen> = present.iter().filter(|s| s.attempt == attempt).collect();
    let Some(world) = mine.first().map(|s| s.world_size) else {
        return CommitDecision::Wait { missing: Vec::new() };
    };
    if let Some(other) = mine.iter().find(|s| s.world_size != world) {
        return CommitDecision::Refuse(format!(
            "the ranks of step {step} disagree on the world size ({world} and {}): the step never commits",
            other.world_size
        ));
    }
    if world == 0 || world > MAX_WORLD_SIZE {
        return CommitDecision::Refuse(format!("world size {world} is not in 1..={MAX_WORLD_SIZE}"));
    }
    let mut by_rank: BTreeMap<u32, &ShardRef> = BTreeMap::new();
    for s in &mine {
        if s.rank >= world || s.shard.rank != s.rank {
            return CommitDecision::Refuse(format!("rank {} is not a rank of a world of {world}", s.rank));
        }
        if let Some(first) = by_rank.insert(s.rank, &s.shard)
            && first.manifest_sha256 != s.shard.manifest_sha256
        {
            return CommitDecision::Refuse(format!(
                "two ranks claim rank {} of step {step}: start each rank with its own --rank",
                s.rank
            ));
        }
    }
    let missing: Vec<u32> = (0..world).filter(|r| !by_rank.contains_key(r)).collect();
    if !missing.is_empty() {
        return CommitDecision::Wait { missing };
    }
    CommitDecision::Commit(StepCommit {
        version: STEP_COMMIT_VERSION,
        id: commit_id(job, attempt, step),
        experiment: experiment.to_owned(),
        job: job.to_owned(),
        attempt,
        step,
        world_size: world,
        shards: by_rank.into_values().cloned().collect(),
        committed_ms: now_ms,
    })
}

/// Which shards rank `rank` of a job of `world_size` ranks gets back from `commit`: its own,
/// or with `all` every shard (what DCP needs to reshard to another world size). Another
/// world size than the commit's, without `all`, is refused in one line with both sizes and the
/// fix.
pub fn shards_to_restore(commit: &StepCommit, rank: u32, world_size: u32, all: bool) -> Result<Vec<&ShardRef>, String> {
    if all {
        return Ok(commit.shards.iter().collect());
    }
    if world_size != commit.world_size {
        return Err(format!(
            "step {} of job {} was committed by {} ranks and this job has {world_size}: pass --restore all (every rank gets every shard, for DCP to reshard), or run {} ranks",
            commit.step, commit.job, commit.world_size, commit.world_size
        ));
    }
    commit
        .shards
        .iter()
        .find(|s| s.rank == rank)
        .map(|s| vec![s])
        .ok_or_else(|| format!("step {} of job {} has no shard of rank {rank}", commit.step, commit.job))
}

/// The steps whose shards can go: every step of an attempt that never committed and is older
/// than the newest commit (a later step committed, so nobody will restore it), as (attempt,
/// step). Steps newer than the newest commit may still be uploading and stay.
pub fn orphaned(newest: Option<(u32, u64)>, committed: &[(u32, u64)], present: &[(u32, u64)]) -> Vec<(u32, u64)> {
    let Some(newest) = newest else { return Vec::new() };
    let mut out: Vec<(u32, u64)> = present.iter().copied().filter(|s| *s < newest && !committed.contains(s)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A rank's newest stored shard, as its node run records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStored {
    pub step: u64,
    /// When its shard manifest was written (epoch ms).
    pub stored_ms: i64,
}

/// One rank of an attempt of a sharded job, as its node run recorded it.
#[derive(Debug, Clone, Copy)]
pub struct RankEnd<'a> {
    pub rank: u32,
    pub interruption: Option<&'a crate::runs::Interruption>,
    pub last_shard: Option<ShardStored>,
    pub forecast: Option<&'a crate::commit::Forecast>,
}

/// The job's final checkpoint after a notice to one of its ranks: the job's verdict (committed
/// only if every rank's shard landed and the step committed before the deadline), which ranks
/// stored their shard of the final step after the deadline and by how much, and which stored
/// none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobFinal {
    /// The rank whose node got the (first) notice, and the notice.
    pub noticed_rank: u32,
    pub verdict: Option<crate::commit::Verdict>,
    /// The final step: the newest any rank stored a shard of.
    pub step: Option<u64>,
    /// (rank, seconds after the deadline) of the shards of the final step that landed late.
    pub late: Vec<(u32, f64)>,
    /// Ranks that stored no shard of the final step.
    pub missing: Vec<u32>,
}

/// The job's final checkpoint from its ranks' records; None when no rank got a notice.
pub fn job_final(ranks: &[RankEnd]) -> Option<JobFinal> {
    use crate::commit::Verdict;
    let (noticed_rank, notice) = ranks
        .iter()
        .filter_map(|r| r.interruption.map(|i| (r.rank, i)))
        .min_by_key(|(rank, i)| (i.noticed_ms, *rank))?;
    let deadline = crate::commit::deadline_ms(notice.noticed_ms, notice.deadline_ms);
    // Every rank reads the same commit; a rank that did not see it says missed.
    let rank_of = |v: &Verdict| match v {
        Verdict::Committed { .. } => 0,
        Verdict::Late { .. } => 1,
        Verdict::Missed { .. } => 2,
    };
    let verdict =
        ranks.iter().filter_map(|r| r.interruption.and_then(|i| i.verdict.clone())).min_by_key(|v| rank_of(v));
    let step = ranks.iter().filter_map(|r| r.last_shard.map(|s| s.step)).max();
    let mut late = Vec::new();
    let mut missing = Vec::new();
    for r in ranks {
        match (r.last_shard, step) {
            (Some(s), Some(final_step)) if s.step == final_step => {
                if s.stored_ms > deadline {
                    late.push((r.rank, (s.stored_ms - deadline) as f64 / 1000.0));
                }
            }
            _ => missing.push(r.rank),
        }
    }
    Some(JobFinal { noticed_rank, verdict, step, late, missing })
}

impl JobFinal {
    /// Lines for `tap runs show` and `tap jobs show`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(v) = &self.verdict {
            out.push(format!("the job's final checkpoint {} (notice on rank {})", v.line(), self.noticed_rank));
        }
        let step = self.step.map(|s| format!("step {s}")).unwrap_or_else(|| "a final step".into());
        for (rank, s) in &self.late {
            out.push(format!("rank {rank}'s shard of {step} landed {s:.1} s after the deadline"));
        }
        if !self.missing.is_empty() {
            let ranks: Vec<String> = self.missing.iter().map(u32::to_string).collect();
            out.push(format!("rank {} stored no shard of {step}", ranks.join(", ")));
        }
        out
    }
}

/// The job's forecast: each rank forecasts its own shard's commit; the job commits when its
/// slowest rank's shard lands. The slowest rank and its forecast.
pub fn job_forecast<'a>(ranks: &[RankEnd<'a>]) -> Option<(u32, &'a crate::commit::Forecast)> {
    ranks.iter().filter_map(|r| r.forecast.map(|f| (r.rank, f))).max_by(|a, b| a.1.commit_s.total_cmp(&b.1.commit_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jobs_final_checkpoint_names_late_and_missing_ranks_and_the_slowest_forecast() {
        use crate::commit::{Forecast, Verdict};
        use crate::runs::Interruption;
        let notice = |verdict: Verdict| Interruption {
            kind: crate::notice::NoticeKind::SpotInterruption,
            reason: "spot".into(),
            noticed_ms: 1_000,
            deadline_ms: Some(121_000),
            verdict: Some(verdict),
        };
        let committed = notice(Verdict::Committed { checkpoint: "g-a1-s0000000050".into(), spare_s: 2.0 });
        let missed = notice(Verdict::Missed { previous: None, steps_older: None });
        let f = |commit_s: f64| Forecast {
            commit_s,
            window_s: 100.0,
            child_write_s: 0.0,
            total_bytes: 1,
            changed_bytes: 1,
            hash_rate: 1.0,
            send_rate: 1.0,
        };
        let (fast, slow) = (f(3.0), f(130.0));
        let stored = |step, stored_ms| Some(ShardStored { step, stored_ms });
        let ranks = [
            RankEnd { rank: 0, interruption: Some(&missed), last_shard: stored(50, 119_000), forecast: Some(&fast) },
            RankEnd { rank: 1, interruption: Some(&committed), last_shard: stored(50, 124_500), forecast: Some(&slow) },
            RankEnd { rank: 2, interruption: None, last_shard: stored(40, 90_000), forecast: None },
        ];
        let j = job_final(&ranks).expect("a notice");
        assert_eq!(j.verdict, committed.verdict, "the job's commit, as the rank that saw it says");
        assert_eq!((j.step, j.late.clone(), j.missing.clone()), (Some(50), vec![(1, 3.5)], vec![2]));
        let lines = j.lines();
        assert!(lines[1].contains("rank 1's shard of step 50 landed 3.5 s after the deadline"), "{lines:?}");
        assert!(lines[2].contains("rank 2 stored no shard of step 50"), "{lines:?}");
        assert_eq!(job_forecast(&ranks).map(|(r, f)| (r, f.fits())), Some((1, false)), "the slowest rank decides");
        let quiet = [RankEnd { rank: 0, interruption: None, last_shard: None, forecast: None }];
        assert_eq!(job_final(&quiet), None);
    }

    fn seen(rank: u32, world: u32, attempt: u32, sha: &str) -> ShardSeen {
        ShardSeen {
            rank,
            world_size: world,
            attempt,
            shard: ShardRef {
                rank,
                manifest: shard_key("checkpoints", "llm", "job-1", attempt, 100, rank),
                manifest_sha256: sha.into(),
                bytes: 10 + u64::from(rank),
            },
        }
    }

    #[test]
    fn the_current_attempt_is_the_highest_begun_or_committed() {
        let names = ["a1.begun", "job-1-a1-s0000000100.json", "a3.begun", "junk", "a2.json"];
        assert_eq!(current_attempt("job-1", names), Some(3));
        assert_eq!(current_attempt("job-1", ["job-1-a2-s0000000001.json"]), Some(2));
        assert_eq!(current_attempt("job-1", []), None);
        assert!(attempt_mark_key("checkpoints", "e", "job-1", 4).ends_with("commits/job-1/a4.begun"));
    }

    #[test]
    fn the_newest_commit_is_the_latest() {
        let ids =
            [commit_id("job-1", 1, 900), commit_id("job-1", 2, 100), commit_id("job-1", 2, 50), "junk".to_owned()];
        assert_eq!(newest_commit("job-1", ids.iter().map(String::as_str)), Some("job-1-a2-s0000000100"));
        assert_eq!(parse_commit_id("job-1", "job-1-a10-s0000000007"), Some((10, 7)));
        assert_eq!(parse_commit_id("job-1", "job-12-a1-s1"), None, "another job's id");
        assert_eq!(newest_commit("job-1", []), None);
    }

    #[test]
    fn the_layout_sits_beside_a_runs() {
        assert_eq!(shard_key("checkpoints", "llm", "job-1", 2, 100, 3), "checkpoints/llm/shards/job-1/a2/s100/r3.json");
        assert!(shard_key("checkpoints", "llm", "job-1", 2, 100, 3).starts_with(&step_prefix(
            "checkpoints",
            "llm",
            "job-1",
            2,
            100
        )));
        assert_eq!(commit_key("checkpoints", "llm", "job-1", "x"), "checkpoints/llm/commits/job-1/x.json");
        let key = shard_key("checkpoints", "llm", "job-1", 2, 100, 3);
        assert_eq!(shard_step(&key[shards_prefix("checkpoints", "llm", "job-1").len()..]), Some((2, 100)));
        assert_eq!(shard_step("b2/s100/r3.json"), None);
        assert!(commit_id("job-1", 1, 9) < commit_id("job-1", 1, 10), "ids sort by step");
    }

    #[test]
    fn a_step_commits_only_when_every_rank_is_there() {
        let d = decide_commit("llm", "job-1", 1, 100, 1, &[seen(0, 3, 1, "a"), seen(2, 3, 1, "c")], 5);
        assert_eq!(d, CommitDecision::Wait { missing: vec![1] });
        let all = [seen(2, 3, 1, "c"), seen(0, 3, 1, "a"), seen(1, 3, 1, "b")];
        let CommitDecision::Commit(c) = decide_commit("llm", "job-1", 1, 100, 1, &all, 5) else { panic!("commits") };
        assert_eq!(c.shards.iter().map(|s| s.rank).collect::<Vec<_>>(), [0, 1, 2], "in rank order");
        assert_eq!((c.world_size, c.total_bytes(), c.id.as_str()), (3, 33, "job-1-a1-s0000000100"));
        let bytes = serde_json::to_vec(&c).expect("json");
        assert_eq!(StepCommit::parse(&bytes).expect("parses"), c);
    }

    #[test]
    fn a_stale_attempts_rank_never_commits() {
        let all = [seen(0, 2, 1, "a"), seen(1, 2, 1, "b")];
        let d = decide_commit("llm", "job-1", 1, 100, 2, &all, 5);
        assert!(
            matches!(&d, CommitDecision::Refuse(why) if why.contains("attempt 1") && why.contains("attempt 2")),
            "{d:?}"
        );
        // Shards of another attempt do not complete this one's step.
        let mixed = [seen(0, 2, 2, "a"), seen(1, 2, 1, "b")];
        assert_eq!(decide_commit("llm", "job-1", 2, 100, 2, &mixed, 5), CommitDecision::Wait { missing: vec![1] });
    }

    #[test]
    fn two_ranks_claiming_one_number_or_disagreeing_on_the_world_are_refused() {
        let twice = [seen(0, 2, 1, "a"), seen(0, 2, 1, "z"), seen(1, 2, 1, "b")];
        let d = decide_commit("llm", "job-1", 1, 100, 1, &twice, 5);
        assert!(matches!(&d, CommitDecision::Refuse(why) if why.contains("two ranks claim rank 0")), "{d:?}");
        // The same shard seen twice (a retried upload) is one shard.
        let again = [seen(0, 2, 1, "a"), seen(0, 2, 1, "a"), seen(1, 2, 1, "b")];
        assert!(matches!(decide_commit("llm", "job-1", 1, 100, 1, &again, 5), CommitDecision::Commit(_)));
        let worlds = [seen(0, 2, 1, "a"), seen(1, 3, 1, "b")];
        let d = decide_commit("llm", "job-1", 1, 100, 1, &worlds, 5);
        assert!(matches!(&d, CommitDecision::Refuse(why) if why.contains("disagree on the world size")), "{d:?}");
        let outside = [seen(0, 2, 1, "a"), seen(5, 2, 1, "b")];
        assert!(matches!(decide_commit("llm", "job-1", 1, 100, 1, &outside, 5), CommitDecision::Refuse(_)));
    }

    #[test]
    fn a_rank_gets_its_own_shard_or_every_shard() {
        let all = [seen(0, 2, 1, "a"), seen(1, 2, 1, "b")];
        let CommitDecision::Commit(c) = decide_commit("llm", "job-1", 1, 100, 1, &all, 5) else { panic!("commits") };
        assert_eq!(shards_to_restore(&c, 1, 2, false).expect("own").iter().map(|s| s.rank).collect::<Vec<_>>(), [1]);
        assert_eq!(shards_to_restore(&c, 0, 4, true).expect("all").len(), 2);
        let e = shards_to_restore(&c, 0, 4, false).expect_err("another world size");
        assert!(e.contains("committed by 2 ranks and this job has 4") && e.contains("--restore all"), "{e}");
    }

    #[test]
    fn a_commit_that_does_not_name_one_shard_per_rank_is_refused() {
        let all = [seen(0, 2, 1, "a"), seen(1, 2, 1, "b")];
        let CommitDecision::Commit(mut c) = decide_commit("llm", "job-1", 1, 100, 1, &all, 5) else { panic!() };
        c.shards.pop();
        let e = StepCommit::parse(&serde_json::to_vec(&c).expect("json")).expect_err("a shard short");
        assert!(e.contains("names ranks [0] for a world of 2"), "{e}");
        assert!(StepCommit::parse(b"{}").is_err());
    }

    #[test]
    fn uncommitted_steps_older_than_the_newest_commit_go() {
        let committed = [(1, 100), (2, 300)];
        let present = [(1, 100), (1, 200), (2, 250), (2, 300), (2, 400)];
        assert_eq!(orphaned(Some((2, 300)), &committed, &present), [(1, 200), (2, 250)], "(2, 400) may still upload");
        assert!(orphaned(None, &[], &present).is_empty(), "nothing committed: nothing is known to be dead");
    }
}
