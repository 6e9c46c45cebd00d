//! The managed job this rank belongs to: watched until it moves on, and told of this run.

use std::time::Duration;

use tap_core::runs::Run;
use tokio::sync::mpsc;

use crate::store::RunStore;

use super::{Event, recorder};

/// How often a rank of a managed job reads its job's record for a stop (one GetItem): the
/// fleet's controller cancels the SSM commands too, but SSM does not promise to stop the
/// processes under them, and a survivor must not wait on its dead peer for NCCL's timeout.
pub const JOB_WATCH: Duration = Duration::from_secs(5);

/// Watches the job this rank belongs to (`TAP_RUN_GROUP`, `TAP_JOB_ATTEMPT`) until `done`:
/// tells the loop once the job stopped this attempt. Store errors are retried at the next
/// read (the SSM cancel is the other path).
pub(super) async fn watch_job<R: RunStore>(
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

/// Tells the multi-node job this run is a node of (its record, which `tap launch` or the
/// group's first rank writes; the run's `job_attempt` says which attempt this node belongs
/// to) how the run is doing. A job without a record is fine; a store error is reported, never
/// fatal to the run.
pub(super) async fn tell_job<R: RunStore>(store: &R, run: &Run) {
    let (Some(group), Some(attempt)) = (&run.group, run.job_attempt) else { return };
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
