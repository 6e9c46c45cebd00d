//! Where tap may block, and how.
//!
//! The rule: no async task blocks. `tap run`'s supervisor loop must always be free to read
//! the command's output (or its pipe fills and training stalls), to handle signals and to
//! poll the notice file, whatever the store is doing. Everything that blocks a thread —
//! hashing, file copies and reads, SQLite, fsync — goes through [`run`], which puts it on
//! tokio's blocking pool ([`MAX_BLOCKING_THREADS`] threads at most; more wait their turn).
//!
//! Blocking is allowed only (a) inside [`run`]'s closure and (b) for small metadata calls
//! (`stat`, `mkdir`, a rename) that take microseconds and cannot be made async cheaply.
//!
//! Work handed to the pool cannot be aborted, so each closure gets a [`Cancel`]: when the
//! future that awaits it is dropped (a notice cancels a restore or an upload), the flag is
//! set and the copy loops stop at their next chunk, removing what they wrote.
//! [`settle`] waits until no such work is left, so a caller can then clean up its directory
//! knowing nobody writes into it any more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Threads for blocking work (tokio's default is 512): copies and hashes of a checkpoint
/// run [`crate::artifacts::checkpoint::FILES_IN_FLIGHT`] at a time, plus SQLite.
pub const MAX_BLOCKING_THREADS: usize = 48;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Set when nobody waits for the work any more.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// An error (kind `Interrupted`) once cancelled: `cancel.check()?` between chunks.
    pub fn check(&self) -> std::io::Result<()> {
        if self.is_cancelled() {
            Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"))
        } else {
            Ok(())
        }
    }
}

struct CancelOnDrop(Option<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.0.store(true, Ordering::Relaxed);
        }
    }
}

struct Leaving;

impl Drop for Leaving {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs blocking `f` on the blocking pool and waits for it without blocking the caller's
/// thread. A panic in `f` is a panic here.
pub async fn run<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&Cancel) -> T + Send + 'static,
{
    let cancel = Cancel::default();
    let mut guard = CancelOnDrop(Some(cancel.clone()));
    IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
    let handle = tokio::task::spawn_blocking(move || {
        let _leaving = Leaving;
        f(&cancel)
    });
    let result = handle.await;
    guard.0 = None;
    match result {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Waits (at most `limit`) until no blocking work is left; false if some still is.
pub async fn settle(limit: Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while IN_FLIGHT.load(Ordering::Acquire) > 0 {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_future_cancels_the_work() {
        let (tx, rx) = std::sync::mpsc::channel();
        let fut = run(move |cancel| {
            for _ in 0..2_000 {
                if cancel.is_cancelled() {
                    let _ = tx.send("cancelled");
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send("ran to the end");
        });
        let _ = tokio::time::timeout(Duration::from_millis(50), fut).await;
        assert!(settle(Duration::from_secs(5)).await, "the work stopped");
        assert_eq!(rx.recv().expect("said"), "cancelled");
    }

    #[tokio::test]
    async fn results_come_back() {
        assert_eq!(run(|c| c.check().map(|()| 7)).await.expect("not cancelled"), 7);
    }
}
