//! Checkpoint uploads of one run: which one runs, which one waits, and the commit of one
//! checkpoint (hash, upload, LATEST) with what it cost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tap_core::commit;
use tap_core::manifest::Manifest;
use tokio::time::Instant;

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint;

use super::readers::METRICS_POLL;

/// What [`Uploads`] needs of an upload in flight.
pub(super) trait Upload {
    fn id(&self) -> &str;
}

/// A run's periodic checkpoint uploads: one at a time; a checkpoint announced meanwhile
/// waits, only the newest (the directory holds only the newest checkpoint anyway). The state
/// cannot be inconsistent: an upload is in flight or none is, and a waiting checkpoint is its
/// step and its snapshot together (`S`), so neither can be without the other.
#[derive(Debug)]
pub(super) struct Uploads<F, S> {
    /// Checkpoint ids are `<prefix>-0001`, … (the owner's id, and `-a<N>` from attempt 2).
    prefix: String,
    count: u32,
    state: State<F, S>,
}

#[derive(Debug)]
enum State<F, S> {
    Idle,
    Busy { in_flight: F, waiting: Option<(u64, S)> },
}

impl<F: Upload, S> Uploads<F, S> {
    pub(super) fn new(prefix: &str) -> Uploads<F, S> {
        Uploads { prefix: prefix.to_owned(), count: 0, state: State::Idle }
    }

    /// The id of the next checkpoint of this run.
    pub(super) fn next_id(&mut self) -> String {
        self.count += 1;
        format!("{}-{:04}", self.prefix, self.count)
    }

    pub(super) fn in_flight(&self) -> Option<&F> {
        match &self.state {
            State::Idle => None,
            State::Busy { in_flight, .. } => Some(in_flight),
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.in_flight().is_some()
    }

    /// A checkpoint at `step` was announced, its snapshot taken: it is uploaded now (`start`
    /// makes the upload of an id, a step and a snapshot), or waits for the one in flight. The
    /// snapshot it replaces as the waiting one, if any, is returned for discarding.
    pub(super) fn announce(&mut self, step: u64, snapshot: S, start: impl FnOnce(String, u64, S) -> F) -> Option<S> {
        match &mut self.state {
            State::Busy { waiting, .. } => waiting.replace((step, snapshot)).map(|(_, older)| older),
            State::Idle => {
                let id = self.next_id();
                self.state = State::Busy { in_flight: start(id, step, snapshot), waiting: None };
                None
            }
        }
    }

    /// Upload `id` ended. When it was the one in flight, the waiting checkpoint starts; whether
    /// it was.
    pub(super) fn finished(&mut self, id: &str, start: impl FnOnce(String, u64, S) -> F) -> bool {
        if self.in_flight().is_none_or(|f| f.id() != id) {
            return false;
        }
        self.next(start);
        true
    }

    /// Gives up the upload in flight (returned, for its task to be stopped); the waiting
    /// checkpoint starts.
    pub(super) fn cancel(&mut self, start: impl FnOnce(String, u64, S) -> F) -> Option<F> {
        self.next(start)
    }

    /// Ends the upload in flight (returned) and starts the waiting one, if any.
    fn next(&mut self, start: impl FnOnce(String, u64, S) -> F) -> Option<F> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => None,
            State::Busy { in_flight, waiting } => {
                if let Some((step, snapshot)) = waiting {
                    let id = self.next_id();
                    self.state = State::Busy { in_flight: start(id, step, snapshot), waiting: None };
                }
                Some(in_flight)
            }
        }
    }
}

/// A committed checkpoint (a sharded job's rank: its stored shard) and what committing it cost.
pub(super) struct Committed {
    pub(super) manifest: Manifest,
    pub(super) sample: commit::Sample,
    /// A sharded job's rank: what came of the step's commit after its shard was stored.
    pub(super) step: Option<crate::artifacts::shards::Committed>,
}

/// `dir` hashed (with `left_out`, what the snapshot it was taken from left out) and the seconds
/// it took.
async fn hash_timed(
    dir: &Path,
    left_out: Vec<tap_core::manifest::SkippedEntry>,
) -> Result<(checkpoint::Hashed, f64), checkpoint::CheckpointError> {
    let t0 = Instant::now();
    let mut hashed = checkpoint::hash_files(dir).await?;
    hashed.skipped.extend(left_out);
    Ok((hashed, t0.elapsed().as_secs_f64()))
}

/// Hashes `dir`, and unless nothing changed since `previous`, uploads it as `target` and moves
/// LATEST to it, measuring each part for the planner. `left_out`: entries the snapshot `dir`
/// was taken from left out (recorded in the manifest with those of `dir`).
pub(super) async fn commit_checkpoint<O: ObjectStore>(
    objects: &O,
    target: &checkpoint::CheckpointTarget,
    dir: &Path,
    left_out: Vec<tap_core::manifest::SkippedEntry>,
    previous: Option<&Manifest>,
    to_send: &AtomicU64,
) -> Result<Option<Committed>, checkpoint::CheckpointError> {
    let (hashed, hash_s) = hash_timed(dir, left_out).await?;
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
    Ok(Some(Committed { manifest, sample, step: None }))
}

/// A sharded job's rank: hashes `dir`, stores it as its shard of `t`'s step (every step,
/// changed or not: a step commits only when every rank's shard is there), then tries to commit
/// the step (the rank that completes it writes the commit), measuring each part for the
/// planner. `left_out` as for [`commit_checkpoint`].
pub(super) async fn commit_shard<O: ObjectStore>(
    objects: &O,
    t: &crate::artifacts::shards::ShardTarget,
    dir: &Path,
    left_out: Vec<tap_core::manifest::SkippedEntry>,
    to_send: &AtomicU64,
) -> Result<Option<Committed>, checkpoint::CheckpointError> {
    use crate::artifacts::shards;
    let (hashed, hash_s) = hash_timed(dir, left_out).await?;
    to_send.store(hashed.files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    let changed: Vec<PathBuf> = hashed.files.iter().map(|f| dir.join(&f.path)).collect();
    let child_write_s = crate::blocking::run(move |_| write_time(&changed)).await;
    let moved = objects.bytes_moved();
    let t1 = Instant::now();
    let (_, manifest) = shards::upload_hashed_shard(objects, t, dir, hashed).await?;
    let up_s = t1.elapsed().as_secs_f64();
    let sent_bytes = objects.bytes_moved().saturating_sub(moved);
    let t2 = Instant::now();
    let step = shards::try_commit(objects, &t.experiment, &t.job, (t.attempt, t.step)).await?;
    let (send_s, other_s) = if sent_bytes > 0 { (up_s, 0.0) } else { (0.0, up_s) };
    let other_s = other_s + t2.elapsed().as_secs_f64() + METRICS_POLL.as_secs_f64() / 2.0;
    let sample =
        commit::Sample { total_bytes: manifest.total_bytes(), sent_bytes, hash_s, send_s, other_s, child_write_s };
    Ok(Some(Committed { manifest, sample, step: Some(step) }))
}

/// How long the training process took to write `files`: newest change − oldest creation
/// (statx birth time); 0 where the filesystem does not keep birth times.
pub(super) fn write_time(files: &[PathBuf]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    impl Upload for (String, u64, &'static str) {
        fn id(&self) -> &str {
            &self.0
        }
    }

    type Started = (String, u64, &'static str);

    fn start(id: String, step: u64, snap: &'static str) -> Started {
        (id, step, snap)
    }

    #[test]
    fn uploads_go_one_at_a_time_and_only_the_newest_waits() {
        let mut q: Uploads<Started, &'static str> = Uploads::new("r");
        assert_eq!(q.announce(10, "s10", start), None);
        assert_eq!(q.in_flight(), Some(&("r-0001".into(), 10, "s10")));
        assert_eq!(q.announce(20, "s20", start), None, "busy: waits");
        assert_eq!(q.announce(30, "s30", start), Some("s20"), "replaces the waiting one, whose snapshot goes");
        assert!(!q.finished("r-0009", start), "not the one in flight");
        assert!(q.finished("r-0001", start));
        assert_eq!(q.in_flight(), Some(&("r-0002".into(), 30, "s30")), "the newest, with its own snapshot");
        assert!(q.finished("r-0002", start));
        assert!(!q.busy());
        assert_eq!(q.next_id(), "r-0003", "the final sync gets the next id");
    }

    #[test]
    fn a_cancelled_upload_lets_the_waiting_one_go() {
        let mut q: Uploads<Started, &'static str> = Uploads::new("r");
        assert_eq!(q.cancel(start), None, "nothing to cancel");
        q.announce(1, "s1", start);
        q.announce(2, "s2", start);
        assert_eq!(q.cancel(start), Some(("r-0001".into(), 1, "s1")));
        assert_eq!(q.in_flight(), Some(&("r-0002".into(), 2, "s2")));
        assert_eq!(q.cancel(start).map(|f| f.0), Some("r-0002".into()));
        assert!(!q.busy());
    }
}
