//! Publishing: the only layer that retries (the SDK's own retries are off), with exponential
//! backoff and full jitter; whatever CloudWatch does not accept goes to the on-disk spool and
//! is replayed, oldest first, before anything newer is sent.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::metrics::{Datum, MAX_DATUMS_PER_REQUEST, pack};
use crate::spool::{Spool, SpoolError};

/// Why a request failed; the cause (the SDK's error in production) is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later (network, timeout, throttling, 5xx, credentials not ready).
    #[error("worth retrying")]
    Retriable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// CloudWatch refused the data itself (4xx validation): retrying cannot help.
    #[error("refused")]
    Rejected(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl SinkError {
    /// The cause, with its own causes, on one line (what the logs show).
    pub fn why(&self) -> String {
        let (SinkError::Retriable(e) | SinkError::Rejected(e)) = self;
        tap_core::text::chain(e.as_ref()).to_string()
    }
}

/// Where datums go (CloudWatch in production; an in-memory sink in unit tests).
pub trait Sink {
    fn put(&self, batch: &[Datum]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 3, base: Duration::from_millis(200), cap: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    /// "Full jitter": uniform in [0, min(cap, base · 2^attempt)); `unit` is uniform in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << attempt.min(16)).min(self.cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Counters for logs and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    pub requests: u64,
    pub datums_sent: u64,
    pub datums_rejected: u64,
    pub batches_spooled: u64,
}

pub struct Publisher<S> {
    sink: S,
    /// Spool I/O (reads, fsyncs, deletes) runs on the blocking pool, never on the async
    /// workers that sample GPUs and watch for notices; the lock is only ever taken there or
    /// for a moment to read counters.
    spool: Arc<Mutex<Spool>>,
    retry: RetryPolicy,
    pub stats: PublishStats,
    /// Since when CloudWatch has been unreachable, and the datums replayed since it came back.
    outage: Option<std::time::Instant>,
}

impl<S: Sink> Publisher<S> {
    pub fn new(sink: S, spool: Spool, retry: RetryPolicy) -> Publisher<S> {
        Publisher { sink, spool: Arc::new(Mutex::new(spool)), retry, stats: PublishStats::default(), outage: None }
    }

    /// The spool, for its counters (no I/O).
    pub fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a spool operation on the blocking pool.
    async fn spooled<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Spool) -> T + Send + 'static,
    {
        let spool = self.spool.clone();
        let job = tokio::task::spawn_blocking(move || f(&mut spool.lock().unwrap_or_else(PoisonError::into_inner)));
        match job.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    async fn send(&mut self, batch: &[Datum]) -> Result<(), SinkError> {
        let mut attempt = 0;
        loop {
            self.stats.requests += 1;
            match self.sink.put(batch).await {
                Ok(()) => {
                    self.stats.datums_sent += batch.len() as u64;
                    return Ok(());
                }
                Err(e @ SinkError::Retriable(_)) if attempt + 1 < self.retry.attempts => {
                    let delay = self.retry.delay(attempt, fastrand::f64());
                    tracing::debug!(attempt, ?delay, why = %e.why(), "PutMetricData failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn rejected(&mut self, n: usize, why: &str) {
        self.stats.datums_rejected += n as u64;
        tracing::error!(datums = n, reason = why, "CloudWatch rejected datums; they are dropped");
    }

    /// Sends the spooled backlog, oldest first, then `datums`. What cannot be sent now is
    /// spooled. Returns whether CloudWatch was reachable.
    pub async fn publish(&mut self, datums: Vec<Datum>, now_ms: i64) -> Result<bool, SpoolError> {
        let mut reachable = true;
        let (mut replayed, replay_started) = (0u64, std::time::Instant::now());
        while reachable {
            let Some((backlog, batches)) = self.spooled(move |s| s.peek(now_ms, MAX_DATUMS_PER_REQUEST)).await? else {
                break;
            };
            match self.send(&backlog).await {
                Ok(()) => {
                    self.spooled(move |s| s.pop(batches)).await?;
                    replayed += backlog.len() as u64;
                }
                Err(e @ SinkError::Rejected(_)) => {
                    self.rejected(backlog.len(), &e.why());
                    self.spooled(move |s| s.pop(batches)).await?;
                }
                Err(e @ SinkError::Retriable(_)) => {
                    tracing::warn!(reason = %e.why(), spooled = self.spool().datums(), "CloudWatch unreachable; keeping the backlog");
                    reachable = false;
                }
            }
        }
        if reachable && let Some(since) = self.outage.take() {
            tracing::info!(
                replayed_datums = replayed,
                replay_seconds = replay_started.elapsed().as_secs_f64(),
                outage_seconds = since.elapsed().as_secs_f64(),
                "CloudWatch reachable again; the spool is replayed"
            );
        }
        for batch in pack(datums) {
            if reachable {
                match self.send(&batch).await {
                    Ok(()) => continue,
                    Err(e @ SinkError::Rejected(_)) => {
                        self.rejected(batch.len(), &e.why());
                        continue;
                    }
                    Err(e @ SinkError::Retriable(_)) => {
                        tracing::warn!(reason = %e.why(), "CloudWatch unreachable; spooling");
                        reachable = false;
                    }
                }
            }
            self.spooled(move |s| s.push(&batch)).await?;
            self.stats.batches_spooled += 1;
        }
        if !reachable && self.outage.is_none() {
            self.outage = Some(std::time::Instant::now());
        }
        Ok(reachable)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::metrics::Stats;
    use std::sync::Mutex;

    /// An in-memory sink whose answers are scripted per request.
    #[derive(Default)]
    pub struct ScriptedSink {
        pub answers: Mutex<Vec<Result<(), SinkError>>>,
        pub received: Mutex<Vec<Vec<Datum>>>,
    }

    impl Sink for &ScriptedSink {
        async fn put(&self, batch: &[Datum]) -> Result<(), SinkError> {
            let answer = {
                let mut a = self.answers.lock().expect("lock");
                if a.is_empty() { Ok(()) } else { a.remove(0) }
            };
            if answer.is_ok() {
                self.received.lock().expect("lock").push(batch.to_vec());
            }
            answer
        }
    }

    fn datums(t: i64, n: usize) -> Vec<Datum> {
        (0..n)
            .map(|i| Datum {
                metric: "GPUUtilization".into(),
                unit: "Percent".into(),
                dimensions: vec![("Environment".into(), "dev".into())],
                timestamp_ms: t,
                stats: Stats::one(i as f64),
                high_resolution: false,
            })
            .collect()
    }

    const NOW: i64 = 1_800_000_000_000;
    const FAST: RetryPolicy =
        RetryPolicy { attempts: 2, base: Duration::from_millis(1), cap: Duration::from_millis(2) };
    fn down() -> Result<(), SinkError> {
        Err(SinkError::Retriable("connection refused".into()))
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let p = RetryPolicy { attempts: 5, base: Duration::from_millis(100), cap: Duration::from_secs(1) };
        assert_eq!(p.delay(0, 0.999_999).as_millis(), 99);
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(10, 0.5), Duration::from_millis(500), "capped");
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(1), "no overflow");
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
    }

    #[tokio::test]
    async fn outage_spools_then_replays_in_order_without_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = ScriptedSink::default();
        let mut p = Publisher::new(&sink, Spool::open(dir.path(), 1 << 20).expect("spool"), FAST);
        assert!(p.publish(datums(NOW, 2), NOW).await.expect("publish"));
        // Outage: both attempts of the next two windows fail.
        sink.answers.lock().expect("lock").extend([down(), down()]);
        assert!(!p.publish(datums(NOW + 60_000, 3), NOW).await.expect("publish"));
        assert_eq!(p.spool().datums(), 3);
        sink.answers.lock().expect("lock").extend([down(), down()]);
        assert!(!p.publish(datums(NOW + 120_000, 4), NOW).await.expect("publish"));
        assert_eq!(p.spool().datums(), 7, "the second window queued behind the first");
        // Back: the backlog goes first, merged into one request, then the new window.
        assert!(p.publish(datums(NOW + 180_000, 1), NOW).await.expect("publish"));
        let got = sink.received.lock().expect("lock").clone();
        let stamps: Vec<i64> = got.iter().flatten().map(|d| d.timestamp_ms).collect();
        let expected: Vec<i64> =
            [(0, 2), (60_000, 3), (120_000, 4), (180_000, 1)].iter().flat_map(|&(t, n)| vec![NOW + t; n]).collect();
        assert_eq!(stamps, expected, "every datum arrived once, in order");
        assert_eq!(got.len(), 3, "backlog replayed in one request");
        assert!(p.spool().is_empty());
    }

    #[tokio::test]
    async fn rejected_data_is_dropped_not_retried_forever() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = ScriptedSink::default();
        sink.answers.lock().expect("lock").push(Err(SinkError::Rejected("InvalidParameterValue".into())));
        let mut p = Publisher::new(&sink, Spool::open(dir.path(), 1 << 20).expect("spool"), FAST);
        assert!(p.publish(datums(NOW, 2), NOW).await.expect("publish"));
        assert_eq!(p.stats.datums_rejected, 2);
        assert_eq!(p.stats.requests, 1, "a rejection is not retried");
        assert!(p.spool().is_empty());
    }

    #[tokio::test]
    async fn one_retry_recovers_a_blip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = ScriptedSink::default();
        sink.answers.lock().expect("lock").push(down());
        let mut p = Publisher::new(&sink, Spool::open(dir.path(), 1 << 20).expect("spool"), FAST);
        assert!(p.publish(datums(NOW, 2), NOW).await.expect("publish"));
        assert_eq!((p.stats.requests, p.stats.datums_sent), (2, 2));
        assert!(p.spool().is_empty());
    }
}
