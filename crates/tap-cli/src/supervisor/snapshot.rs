//! Checkpoint snapshots: what the command announced, held by hard links until its upload,
//! and the acknowledgement (`TAP_CHECKPOINT_ACK`) that tells the command it was taken.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tap_core::manifest::SkippedEntry;

use crate::artifacts::checkpoint;

/// The checkpoint directory as the command announced it: hard links taken when tap read the
/// announcement ([`checkpoint::link_snapshot`]), so the upload — now, or after the one in
/// flight — sends what was announced even when the command has written its next checkpoint
/// over the files (by renaming new ones into place) in the meantime.
pub(super) struct Snapshot {
    dir: PathBuf,
    taken: tokio::task::JoinHandle<std::io::Result<Vec<SkippedEntry>>>,
}

impl Snapshot {
    /// Takes it on the blocking pool, then acknowledges the announcement (`ack`).
    pub(super) fn take(live: &Path, dir: PathBuf, ack: AckAt) -> Snapshot {
        let (src, into) = (live.to_owned(), dir.clone());
        let taken = tokio::spawn(crate::blocking::run(move |_| {
            let taken = checkpoint::link_snapshot(&src, &into);
            ack.write();
            taken
        }));
        Snapshot { dir, taken }
    }

    /// The directory to upload (the snapshot, or `live` where links could not be made, said
    /// once per run), a guard that removes the snapshot when dropped, and what the snapshot
    /// left out (`live` lists its own when it is uploaded in place).
    pub(super) async fn ready(self, live: &Path, warned: &AtomicBool) -> (PathBuf, SnapshotGuard, Vec<SkippedEntry>) {
        let guard = SnapshotGuard(Some(self.dir.clone()));
        match self.taken.await {
            Ok(Ok(skipped)) => (self.dir, guard, skipped),
            Ok(Err(e)) => {
                if !warned.swap(true, Ordering::Relaxed) {
                    crate::say!(
                        "tap: could not snapshot the checkpoint directory by hard links ({e}); uploading it in place \
                         (a file the command replaces during the upload fails that upload)"
                    );
                }
                (live.to_owned(), guard, vec![])
            }
            Err(_) => (live.to_owned(), guard, vec![]),
        }
    }

    /// A snapshot no upload will use (a newer announcement replaced it).
    pub(super) fn discard(self) {
        let guard = SnapshotGuard(Some(self.dir));
        let taken = self.taken;
        tokio::spawn(async move {
            let _ = taken.await;
            drop(guard);
        });
    }
}

/// `TAP_CHECKPOINT_ACK`: the offset in TAP_METRICS_FILE up to which every checkpoint line
/// has been snapshotted. A writer that replaces the checkpoint directory right after
/// announcing one (tapml does, for a save on a notice one step after a periodic one) waits
/// for it to pass its line first, so no snapshot holds part of the next checkpoint.
#[derive(Clone)]
pub(super) struct Ack {
    path: PathBuf,
    written: Arc<std::sync::Mutex<u64>>,
}

impl Ack {
    pub(super) fn new(path: PathBuf) -> Ack {
        Ack { path, written: Arc::default() }
    }

    pub(super) fn at(&self, offset: u64) -> AckAt {
        AckAt { ack: self.clone(), offset }
    }
}

pub(super) struct AckAt {
    ack: Ack,
    offset: u64,
}

impl AckAt {
    /// Blocking (a tiny write and a rename): on the pool, after the snapshot.
    fn write(self) {
        let Ok(mut written) = self.ack.written.lock() else { return };
        if *written >= self.offset {
            return;
        }
        if tap_core::fsutil::replace(&self.ack.path, self.offset.to_string().as_bytes()).is_ok() {
            *written = self.offset;
        }
    }
}

/// Removes a snapshot directory when dropped: after its upload, or when the upload is
/// aborted (a notice cancels it).
pub(super) struct SnapshotGuard(Option<PathBuf>);

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            // Unlinking thousands of files is blocking work; nobody waits for it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                drop(rt.spawn(crate::blocking::run(move |_| std::fs::remove_dir_all(dir))));
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
