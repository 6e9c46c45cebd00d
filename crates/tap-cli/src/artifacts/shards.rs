//! A sharded job's checkpoints in the object store (layout and decisions: tap_core::shards):
//! a rank stores its shard, the rank that completes a step commits it once, a rank gets its
//! shard (or every shard) of the newest commit back. `tap run` in a sharded job uses them.

use std::path::Path;

use tap_core::shards::{
    self, CommitDecision, ShardManifest, ShardRef, ShardSeen, StepCommit, commit_key, newest_commit, shard_key,
    step_prefix,
};

use super::checkpoint::{self, CheckpointError, CheckpointTarget, Result, Space};
use super::{ObjectStore, sha256_bytes};

/// Which shard of which job step a rank stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTarget {
    pub experiment: String,
    pub job: String,
    pub attempt: u32,
    pub step: u64,
    pub rank: u32,
    pub world_size: u32,
}

impl ShardTarget {
    fn key(&self) -> String {
        shard_key(Space::Checkpoints.root(), &self.experiment, &self.job, self.attempt, self.step, self.rank)
    }
}

/// Stores `dir` as the rank's shard: its objects first (content-addressed, so files already
/// stored by any checkpoint of the experiment are not sent again), its shard manifest last.
pub async fn upload_shard<S: ObjectStore>(store: &S, t: &ShardTarget, dir: &Path) -> Result<ShardRef> {
    let hashed = checkpoint::hash_files(dir).await?;
    Ok(upload_hashed_shard(store, t, dir, hashed).await?.0)
}

/// [`upload_shard`] of files already hashed; the shard as a commit names it, and its manifest.
/// The shard manifest is written once: a second upload of the same rank's shard of the same
/// step keeps the first (the same files: a retry, fine; other files: two processes claim
/// the rank, refused).
pub async fn upload_hashed_shard<S: ObjectStore>(
    store: &S,
    t: &ShardTarget,
    dir: &Path,
    hashed: checkpoint::Hashed,
) -> Result<(ShardRef, tap_core::manifest::Manifest)> {
    let id = format!("{}-r{}", shards::commit_id(&t.job, t.attempt, t.step), t.rank);
    let target = CheckpointTarget::checkpoint(&t.experiment, &t.job, &id, Some(t.step));
    let manifest = checkpoint::store_files(store, &target, dir, hashed).await?;
    let shard = ShardManifest { rank: t.rank, world_size: t.world_size, attempt: t.attempt, manifest };
    let json = serde_json::to_vec_pretty(&shard)
        .map_err(|e| CheckpointError::Refused(format!("shard {} of {}: {e}", t.rank, t.job)))?;
    let key = t.key();
    let json = if store.put_bytes_once(&key, &json).await? {
        json
    } else {
        let stored = store.get_bytes(&key).await?.ok_or_else(|| CheckpointError::Refused(format!("{key}: gone")))?;
        let theirs = ShardManifest::parse(&stored).map_err(|e| CheckpointError::Refused(format!("{key}: {e}")))?;
        if theirs.manifest.files != shard.manifest.files || theirs.world_size != t.world_size {
            return Err(CheckpointError::Refused(format!(
                "rank {}'s shard of step {} of job {} is already stored with other files: two processes claim rank {} (start each rank with its own --rank)",
                t.rank, t.step, t.job, t.rank
            )));
        }
        stored
    };
    let bytes = shard.manifest.total_bytes();
    let r = ShardRef { rank: t.rank, manifest: key, manifest_sha256: sha256_bytes(&json), bytes };
    Ok((r, shard.manifest))
}

/// Marks attempt `attempt` of `job` begun: from now on shards of older attempts never commit
/// (written once; every rank of the attempt writes it as it starts).
pub async fn mark_attempt<S: ObjectStore>(store: &S, experiment: &str, job: &str, attempt: u32) -> Result<()> {
    let key = shards::attempt_mark_key(Space::Checkpoints.root(), experiment, job, attempt);
    store.put_bytes_once(&key, format!("{{\"attempt\": {attempt}}}\n").as_bytes()).await?;
    Ok(())
}

/// What a rank's attempt to commit a step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// This call wrote the step's commit.
    Now(StepCommit),
    /// Another rank had written it (the same step, the same shards).
    Already(StepCommit),
    /// Shards of these ranks are missing: a later rank commits.
    Waiting(Vec<u32>),
    /// The step never commits, and why.
    Refused(String),
}

/// Commits `step` of attempt `attempt` of `job` if every rank's shard of it is stored:
/// reads every shard manifest of the step (each one pinned by its digest), decides
/// (tap_core::shards::decide_commit), and writes the commit once. The job's attempt now is the
/// highest marked begun or committed ([`mark_attempt`]): an older attempt's shards are fenced
/// out.
pub async fn try_commit<S: ObjectStore>(
    store: &S,
    experiment: &str,
    job: &str,
    (attempt, step): (u32, u64),
) -> Result<Committed> {
    let root = Space::Checkpoints.root();
    let prefix = shards::commits_prefix(root, experiment, job);
    let names = store.list(&prefix).await?;
    let current_attempt =
        shards::current_attempt(job, names.iter().map(|o| &o.key[prefix.len()..])).unwrap_or(attempt).max(attempt);
    let mut present = Vec::new();
    for o in store.list(&step_prefix(root, experiment, job, attempt, step)).await? {
        // A shard gone since the listing is missing, as one not yet written is.
        let Some(bytes) = store.get_bytes(&o.key).await? else { continue };
        let shard = ShardManifest::parse(&bytes).map_err(|e| CheckpointError::Refused(format!("{}: {e}", o.key)))?;
        let bytes_total = shard.manifest.total_bytes();
        present.push(ShardSeen {
            rank: shard.rank,
            world_size: shard.world_size,
            attempt: shard.attempt,
            shard: ShardRef {
                rank: shard.rank,
                manifest: o.key,
                manifest_sha256: sha256_bytes(&bytes),
                bytes: bytes_total,
            },
        });
    }
    match shards::decide_commit(experiment, job, attempt, step, current_attempt, &present, crate::now_ms()) {
        CommitDecision::Wait { missing } => Ok(Committed::Waiting(missing)),
        CommitDecision::Refuse(why) => Ok(Committed::Refused(why)),
        CommitDecision::Commit(commit) => {
            let key = commit_key(root, experiment, job, &commit.id);
            let json = serde_json::to_vec_pretty(&commit)
                .map_err(|e| CheckpointError::Refused(format!("commit {}: {e}", commit.id)))?;
            if store.put_bytes_once(&key, &json).await? {
                // A failed cleanup is said, not fatal: the step is committed either way, and
                // the next commit tries again.
                if let Err(e) = remove_orphans(store, experiment, job).await {
                    crate::say!("tap: shards of job {job} that never committed were not removed: {e}");
                }
                return Ok(Committed::Now(commit));
            }
            let stored = read_commit(store, &key).await?;
            Ok(Committed::Already(stored))
        }
    }
}

/// Removes the shard manifests of the job's steps that never committed and are older than its
/// newest commit (tap_core::shards::orphaned): nobody restores them. Steps newer than it may
/// still be uploading and stay. Their objects are left to `tap gc`.
pub async fn remove_orphans<S: ObjectStore>(store: &S, experiment: &str, job: &str) -> Result<usize> {
    let committed: Vec<(u32, u64)> =
        committed_steps(store, experiment, job).await?.into_iter().map(|(a, s, _)| (a, s)).collect();
    let newest = committed.iter().max().copied();
    let prefix = shards::shards_prefix(Space::Checkpoints.root(), experiment, job);
    let listed = store.list(&prefix).await?;
    let step_of = |key: &str| shards::shard_step(&key[prefix.len()..]);
    let present: Vec<(u32, u64)> = listed.iter().filter_map(|o| step_of(&o.key)).collect();
    let dead = shards::orphaned(newest, &committed, &present);
    let keys: Vec<String> =
        listed.into_iter().map(|o| o.key).filter(|k| step_of(k).is_some_and(|s| dead.contains(&s))).collect();
    store.delete(&keys).await?;
    Ok(keys.len())
}

/// The ids of the job's commits, from one listing.
async fn commit_ids<S: ObjectStore>(store: &S, experiment: &str, job: &str) -> Result<Vec<String>> {
    let prefix = shards::commits_prefix(Space::Checkpoints.root(), experiment, job);
    let listed = store.list(&prefix).await?;
    Ok(listed.iter().filter_map(|o| o.key[prefix.len()..].strip_suffix(".json")).map(str::to_owned).collect())
}

async fn read_commit<S: ObjectStore>(store: &S, key: &str) -> Result<StepCommit> {
    let bytes = store.get_bytes(key).await?.ok_or_else(|| CheckpointError::Refused(format!("{key}: gone")))?;
    StepCommit::parse(&bytes).map_err(|e| CheckpointError::Refused(format!("{key}: {e}")))
}

/// The job's newest committed step, if any.
pub async fn latest_commit<S: ObjectStore>(store: &S, experiment: &str, job: &str) -> Result<Option<StepCommit>> {
    let ids = commit_ids(store, experiment, job).await?;
    match newest_commit(job, ids.iter().map(String::as_str)) {
        Some(id) => Ok(Some(read_commit(store, &commit_key(Space::Checkpoints.root(), experiment, job, id)).await?)),
        None => Ok(None),
    }
}

/// The job's committed steps as (attempt, step, commit id), oldest first.
pub async fn committed_steps<S: ObjectStore>(
    store: &S,
    experiment: &str,
    job: &str,
) -> Result<Vec<(u32, u64, String)>> {
    let mut out: Vec<(u32, u64, String)> = commit_ids(store, experiment, job)
        .await?
        .into_iter()
        .filter_map(|id| shards::parse_commit_id(job, &id).map(|(a, s)| (a, s, id)))
        .collect();
    out.sort();
    Ok(out)
}

/// The job's commit of step `step` (of the newest attempt that committed it).
pub async fn commit_of_step<S: ObjectStore>(
    store: &S,
    experiment: &str,
    job: &str,
    step: u64,
) -> Result<Option<StepCommit>> {
    let found = committed_steps(store, experiment, job).await?.into_iter().rev().find(|(_, s, _)| *s == step);
    match found {
        Some((_, _, id)) => {
            Ok(Some(read_commit(store, &commit_key(Space::Checkpoints.root(), experiment, job, &id)).await?))
        }
        None => Ok(None),
    }
}

/// Restores rank `rank`'s shard of `commit` into `dest` — or with `all`, every shard into
/// `dest/rank-<r>` — each shard manifest checked against the digest the commit pins and
/// every file verified. Another world size than the commit's, without `all`, is refused.
pub async fn restore<S: ObjectStore>(
    store: &S,
    commit: &StepCommit,
    (rank, world_size): (u32, u32),
    all: bool,
    dest: &Path,
) -> Result<()> {
    let wanted = shards::shards_to_restore(commit, rank, world_size, all).map_err(CheckpointError::Refused)?;
    for s in wanted {
        let bytes = store.get_bytes(&s.manifest).await?.ok_or_else(|| {
            CheckpointError::Refused(format!(
                "step {} of job {}: rank {}'s shard is gone",
                commit.step, commit.job, s.rank
            ))
        })?;
        if sha256_bytes(&bytes) != s.manifest_sha256 {
            return Err(CheckpointError::Refused(format!(
                "step {} of job {}: rank {}'s shard is not the one committed",
                commit.step, commit.job, s.rank
            )));
        }
        let shard =
            ShardManifest::parse(&bytes).map_err(|e| CheckpointError::Refused(format!("{}: {e}", s.manifest)))?;
        let into = if all { dest.join(format!("rank-{}", s.rank)) } else { dest.to_owned() };
        checkpoint::restore(store, &shard.manifest, &into).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::local::LocalStore;

    fn target(rank: u32, world: u32, attempt: u32, step: u64) -> ShardTarget {
        ShardTarget { experiment: "llm".into(), job: "job-1".into(), attempt, step, rank, world_size: world }
    }

    /// Rank `r`'s shard directory: a file of its own and one every rank shares.
    fn shard_dir(root: &Path, r: u32) -> std::path::PathBuf {
        let d = root.join(format!("src-{r}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(format!("__{r}_0.distcp")), format!("weights of rank {r}").repeat(100)).expect("write");
        std::fs::write(d.join(".metadata"), b"dcp metadata").expect("write");
        d
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn three_ranks_commit_a_step_once_and_each_gets_its_own_shard_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(&dir.path().join("store"));
        let srcs: Vec<_> = (0..3).map(|r| shard_dir(dir.path(), r)).collect();
        // The three ranks upload at once; each then tries to commit.
        let t: Vec<ShardTarget> = (0..3).map(|r| target(r, 3, 1, 10)).collect();
        let (a, b, c) = tokio::join!(
            upload_shard(&store, &t[0], &srcs[0]),
            upload_shard(&store, &t[1], &srcs[1]),
            upload_shard(&store, &t[2], &srcs[2]),
        );
        let refs = [a.expect("rank 0"), b.expect("rank 1"), c.expect("rank 2")];
        let (x, y, z) = tokio::join!(
            try_commit(&store, "llm", "job-1", (1, 10)),
            try_commit(&store, "llm", "job-1", (1, 10)),
            try_commit(&store, "llm", "job-1", (1, 10)),
        );
        let outcomes = [x.expect("x"), y.expect("y"), z.expect("z")];
        let now = outcomes.iter().filter(|o| matches!(o, Committed::Now(_))).count();
        assert_eq!(now, 1, "exactly one rank writes the commit: {outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(o, Committed::Now(_) | Committed::Already(_))), "{outcomes:?}");
        let latest = latest_commit(&store, "llm", "job-1").await.expect("read").expect("a commit");
        assert_eq!((latest.step, latest.world_size), (10, 3));
        assert_eq!(latest.shards, refs.to_vec(), "the commit pins each rank's shard");
        for r in 0..3u32 {
            let back = dir.path().join(format!("back-{r}"));
            restore(&store, &latest, (r, 3), false, &back).await.expect("restore");
            let want = std::fs::read(srcs[r as usize].join(format!("__{r}_0.distcp"))).expect("source");
            assert_eq!(std::fs::read(back.join(format!("__{r}_0.distcp"))).expect("restored"), want, "rank {r}");
            assert!(!back.join(format!("__{}_0.distcp", (r + 1) % 3)).exists(), "only its own shard");
        }
        let every = dir.path().join("every");
        restore(&store, &latest, (0, 4), true, &every).await.expect("--restore all");
        assert!((0..3).all(|r| every.join(format!("rank-{r}/__{r}_0.distcp")).is_file()));
        let e = restore(&store, &latest, (0, 4), false, &dir.path().join("no")).await.expect_err("4 ranks");
        assert!(e.to_string().contains("committed by 3 ranks and this job has 4"), "{e}");
    }

    /// A rank killed mid-upload: its files' objects are stored, its shard manifest never is.
    /// The step never commits, the newest commit stays the latest; once a later step commits,
    /// the dead step's shards go (not orphaned forever), and a step still uploading stays.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_rank_killed_mid_upload_leaves_its_step_uncommitted_and_its_shards_removed_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(&dir.path().join("store"));
        for r in 0..2 {
            upload_shard(&store, &target(r, 2, 1, 10), &shard_dir(dir.path(), r)).await.expect("upload");
        }
        assert!(matches!(try_commit(&store, "llm", "job-1", (1, 10)).await.expect("commit"), Committed::Now(_)));
        upload_shard(&store, &target(0, 2, 1, 20), &shard_dir(dir.path(), 0)).await.expect("upload");
        // Rank 1 dies after its objects, before its shard manifest.
        let src1 = shard_dir(dir.path(), 1);
        let hashed = checkpoint::hash_files(&src1).await.expect("hash");
        let t1 = target(1, 2, 1, 20);
        let as_checkpoint = CheckpointTarget::checkpoint("llm", "job-1", "job-1-a1-s20-r1", Some(20));
        checkpoint::store_files(&store, &as_checkpoint, &src1, hashed).await.expect("its objects");
        assert!(store.get_bytes(&t1.key()).await.expect("get").is_none(), "no shard manifest");
        let waiting = try_commit(&store, "llm", "job-1", (1, 20)).await.expect("try");
        assert_eq!(waiting, Committed::Waiting(vec![1]));
        assert_eq!(latest_commit(&store, "llm", "job-1").await.expect("read").map(|c| c.step), Some(10));
        // A later step commits: step 20, which never will, is cleaned up; nothing else is.
        for r in 0..2 {
            upload_shard(&store, &target(r, 2, 1, 30), &shard_dir(dir.path(), r)).await.expect("upload");
        }
        upload_shard(&store, &target(0, 2, 1, 40), &shard_dir(dir.path(), 0)).await.expect("still uploading");
        assert!(matches!(try_commit(&store, "llm", "job-1", (1, 30)).await.expect("commit"), Committed::Now(_)));
        let mut left: Vec<String> = store
            .list("checkpoints/llm/shards/job-1/")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key["checkpoints/llm/shards/job-1/".len()..].to_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a1/s10/r0.json", "a1/s10/r1.json", "a1/s30/r0.json", "a1/s30/r1.json", "a1/s40/r0.json"]);
        assert_eq!(latest_commit(&store, "llm", "job-1").await.expect("read").map(|c| c.step), Some(30));
    }

    /// Two processes started as the same rank of the same step (a mistyped --rank): the
    /// second one's shard, with other files, is refused naming the rank; the same files again
    /// (a retried upload) are fine.
    #[tokio::test(flavor = "multi_thread")]
    async fn two_processes_claiming_one_rank_of_a_step_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(&dir.path().join("store"));
        let first = upload_shard(&store, &target(1, 2, 1, 10), &shard_dir(dir.path(), 1)).await.expect("rank 1");
        let again = upload_shard(&store, &target(1, 2, 1, 10), &shard_dir(dir.path(), 1)).await.expect("a retry");
        assert_eq!(again, first, "the shard as first stored");
        let other = shard_dir(dir.path(), 0); // rank 0's files, claiming rank 1
        let e = upload_shard(&store, &target(1, 2, 1, 10), &other).await.expect_err("refused");
        assert!(e.to_string().contains("two processes claim rank 1"), "{e}");
    }

    /// A rank of an attempt the relaunch has replaced finishes its upload late: it never
    /// commits, and never becomes the latest.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stale_attempts_rank_finishing_its_upload_after_the_relaunch_never_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(&dir.path().join("store"));
        for r in 0..2 {
            upload_shard(&store, &target(r, 2, 1, 30), &shard_dir(dir.path(), r)).await.expect("upload");
        }
        mark_attempt(&store, "llm", "job-1", 2).await.expect("the relaunch began");
        let refused = try_commit(&store, "llm", "job-1", (1, 30)).await.expect("try");
        assert!(matches!(&refused, Committed::Refused(why) if why.contains("attempt 1")), "{refused:?}");
        assert_eq!(latest_commit(&store, "llm", "job-1").await.expect("read"), None);
    }

    /// A shard whose manifest changed after the commit (corrupt, or replaced) is refused at
    /// restore, naming its rank.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_corrupt_shard_found_at_restore_is_refused_naming_its_rank() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(&dir.path().join("store"));
        for r in 0..2 {
            upload_shard(&store, &target(r, 2, 1, 10), &shard_dir(dir.path(), r)).await.expect("upload");
        }
        let Committed::Now(commit) = try_commit(&store, "llm", "job-1", (1, 10)).await.expect("commit") else {
            panic!("commits")
        };
        store.put_bytes(&commit.shards[1].manifest, b"{\"rank\": 1}").await.expect("corrupt it");
        let e = restore(&store, &commit, (1, 2), false, &dir.path().join("back")).await.expect_err("refused");
        assert!(e.to_string().contains("rank 1's shard is not the one committed"), "{e}");
        restore(&store, &commit, (0, 2), false, &dir.path().join("back0")).await.expect("rank 0's is fine");
        // A shard gone from the store: refused the same way, naming its rank.
        store.delete(std::slice::from_ref(&commit.shards[0].manifest)).await.expect("lose rank 0's");
        let e = restore(&store, &commit, (0, 2), true, &dir.path().join("all")).await.expect_err("refused");
        assert!(e.to_string().contains("rank 0's shard is gone"), "{e}");
    }
}
