//! The run's recorder: the one task that writes a running run to the store (output lines,
//! metric points, the run record and its heartbeat), so the supervisor's loop never waits on
//! the store. When the store fails (disk full, network, throttling) the recorder says so
//! once, buffers what comes (bounded), retries with backoff, and says when the store is back
//! and what it recorded late; the command goes on under supervision throughout.

use std::time::Duration;

use std::sync::Arc;
use tap_core::runs::{HEARTBEAT_INTERVAL_MS, MetricPoint, Run};

use super::reserve::Reserve;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::now_ms;
use crate::store::{LogLine, LogStore, RunStore, StoreError};

/// Output lines kept while the store is unreachable; older ones are dropped (and counted)
/// beyond this. ~100 bytes a line: ~20 MB.
pub const MAX_BUFFERED_LINES: usize = 200_000;
/// Metric points kept while the store is unreachable (older ones dropped beyond this).
pub const MAX_BUFFERED_POINTS: usize = 200_000;
/// How often buffered lines and points are written (and so how late `tap logs --follow` is).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Retries after a store failure wait 1 s, 2 s, 4 s … up to this.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// How long one write to the store may take before it counts as failed.
pub const STORE_CALL_LIMIT: Duration = Duration::from_secs(15);
/// How long the end of a run is retried against a failing store before tap gives up on it
/// (the run then shows as `lost`, which is the truth the store can tell).
pub const FINAL_RECORD_LIMIT: Duration = Duration::from_secs(20);

enum Msg {
    Line(LogLine),
    Point(MetricPoint),
    /// The supervisor's view of the record; the recorder writes the fields the supervisor owns.
    Record(Box<Run>),
    Finish(oneshot::Sender<Finished>),
}

/// The supervisor's handle: sending never blocks and never fails.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Msg>,
}

/// The recorder's side: a future to run beside the supervisor's loop (`tokio::join!`); it
/// only awaits, so it never holds the loop up.
pub struct Task {
    state: State,
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl Task {
    pub async fn run<R: RunStore, L: LogStore>(self, store: &R, logs: &L) {
        self.state.run(store, logs, self.rx).await;
    }
}

impl Recorder {
    /// A recorder for a run that the store already holds as `record`.
    pub fn new(record: &Run, reserve: Option<Arc<Reserve>>) -> (Recorder, Task) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = State::new(record.clone());
        state.reserve = reserve;
        (Recorder { tx }, Task { state, rx })
    }

    pub fn line(&self, line: LogLine) {
        let _ = self.tx.send(Msg::Line(line));
    }

    pub fn point(&self, p: MetricPoint) {
        let _ = self.tx.send(Msg::Point(p));
    }

    pub fn record(&self, r: &Run) {
        let _ = self.tx.send(Msg::Record(Box::new(r.clone())));
    }

    /// Writes everything left and the final record (retried up to [`FINAL_RECORD_LIMIT`]):
    /// the record as stored, or what could not be recorded.
    pub async fn finish(self, last: &Run) -> Finished {
        self.record(last);
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Finish(tx));
        rx.await.unwrap_or(Finished { stored: None, lost: Lost::default() })
    }
}

/// How the recorder's last write went.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The final record as stored; None when the store did not take it.
    pub stored: Option<Run>,
    /// What the store does not hold.
    pub lost: Lost,
}

/// Output lines and metric points the store does not hold: dropped from a full buffer while
/// the store failed, or still pending when it failed at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    pub lines: u64,
    pub points: u64,
}

impl Lost {
    pub fn is_empty(self) -> bool {
        self.lines == 0 && self.points == 0
    }
}

/// The fields of the run record that `tap run` owns (the rest belong to others: a job's
/// launcher, a reader). `metric_points` counts the points the store has.
fn apply(stored: &mut Run, mine: &Run, points: u64, heartbeat_ms: i64) {
    stored.status = mine.status;
    stored.ended_ms = mine.ended_ms;
    stored.exit_code = mine.exit_code;
    stored.signal = mine.signal;
    stored.checkpoint.clone_from(&mine.checkpoint);
    stored.checkpoint_left_out.clone_from(&mine.checkpoint_left_out);
    stored.final_metrics.clone_from(&mine.final_metrics);
    stored.interruption.clone_from(&mine.interruption);
    stored.forecast.clone_from(&mine.forecast);
    stored.last_shard = mine.last_shard;
    stored.spent.clone_from(&mine.spent);
    stored.metric_points = points;
    stored.heartbeat_ms = Some(heartbeat_ms);
}

struct State {
    mine: Run,
    lines: std::collections::VecDeque<LogLine>,
    points: std::collections::VecDeque<MetricPoint>,
    dropped_lines: u64,
    dropped_points: u64,
    /// Over the whole run (the two above count since the store last came back).
    total_dropped_lines: u64,
    total_dropped_points: u64,
    recorded_points: u64,
    dirty: bool,
    last_write_ms: i64,
    /// Since when the store fails, and how many tries in a row.
    failing: Option<(Instant, u32)>,
    late_lines: u64,
    late_points: u64,
    next_try: Instant,
    stored: Option<Run>,
    /// Given back the first time the store says the disk is full.
    reserve: Option<Arc<Reserve>>,
}

impl State {
    fn new(mine: Run) -> State {
        State {
            recorded_points: mine.metric_points,
            last_write_ms: now_ms(),
            mine,
            lines: Default::default(),
            points: Default::default(),
            dropped_lines: 0,
            dropped_points: 0,
            total_dropped_lines: 0,
            total_dropped_points: 0,
            dirty: false,
            failing: None,
            late_lines: 0,
            late_points: 0,
            next_try: Instant::now(),
            stored: None,
            reserve: None,
        }
    }

    fn take(&mut self, msg: Msg) -> Option<oneshot::Sender<Finished>> {
        match msg {
            Msg::Line(l) => {
                if self.lines.len() >= MAX_BUFFERED_LINES {
                    self.lines.pop_front();
                    self.dropped_lines += 1;
                    self.total_dropped_lines += 1;
                }
                self.lines.push_back(l);
            }
            Msg::Point(p) => {
                if self.points.len() >= MAX_BUFFERED_POINTS {
                    self.points.pop_front();
                    self.dropped_points += 1;
                    self.total_dropped_points += 1;
                }
                self.points.push_back(p);
            }
            Msg::Record(r) => {
                self.mine = *r;
                self.dirty = true;
            }
            Msg::Finish(done) => return Some(done),
        }
        None
    }

    async fn run<R: RunStore, L: LogStore>(mut self, store: &R, logs: &L, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let finish = loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => if let Some(done) = self.take(m) { break Some(done) },
                    None => break None,
                },
                _ = tick.tick() => {
                    if Instant::now() >= self.next_try {
                        let _ = self.write(store, logs, false).await;
                    }
                }
            }
        };
        // The end: what is still queued, then retries until the store takes it or time is up.
        while let Ok(m) = rx.try_recv() {
            let _ = self.take(m);
        }
        let until = Instant::now() + FINAL_RECORD_LIMIT;
        let mut recorded = false;
        loop {
            let e = match self.write(store, logs, true).await {
                Ok(()) => {
                    recorded = true;
                    break;
                }
                Err(e) => e,
            };
            let wait = self.next_try.min(until).saturating_duration_since(Instant::now());
            if Instant::now() + wait >= until {
                crate::say!(
                    "tap: could not record the end of run {}/{} ({}); readers will show it as lost",
                    self.mine.experiment_id,
                    self.mine.run_id,
                    tap_core::text::chain(&e)
                );
                break;
            }
            tokio::time::sleep(wait).await;
        }
        if let Some(done) = finish {
            let lost = Lost {
                lines: self.total_dropped_lines + self.lines.len() as u64,
                points: self.total_dropped_points + self.points.len() as u64,
            };
            let _ = done.send(Finished { stored: if recorded { self.stored.take() } else { None }, lost });
        }
    }

    /// When `e` says the disk is full and the reserve is still held: gives it back (the next
    /// write goes at once) and says so.
    fn release_reserve(&self, e: &StoreError) -> bool {
        let chain = tap_core::text::chain(e).to_string();
        let Some(r) = self.reserve.as_ref().filter(|_| super::reserve::is_disk_full(&chain)) else { return false };
        if !r.release() {
            return false;
        }
        crate::say!(
            "tap: the disk is full ({chain}); gave back the {} set aside at the start so the run's output, metrics and end are recorded",
            tap_core::commit::bytes(r.bytes())
        );
        true
    }

    /// One write of everything pending; `force` writes the record even when unchanged.
    async fn write<R: RunStore, L: LogStore>(&mut self, store: &R, logs: &L, force: bool) -> Result<(), StoreError> {
        // Bounded, so the queue is drained into the bounded buffers even while a store hangs.
        // A write cut short is sent again: log lines by seq harmlessly; metric points may then
        // be recorded twice.
        let result = match tokio::time::timeout(STORE_CALL_LIMIT, self.try_write(store, logs, force)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::message(format!("no answer in {STORE_CALL_LIMIT:?}"))),
        };
        match &result {
            Ok(()) => {
                if let Some((since, _)) = self.failing.take() {
                    let dropped = if self.dropped_lines + self.dropped_points > 0 {
                        format!(
                            "; {} lines and {} points were dropped (more than the buffer holds)",
                            self.dropped_lines, self.dropped_points
                        )
                    } else {
                        String::new()
                    };
                    crate::say!(
                        "tap: the store is back after {:.0?}; {} output lines and {} metric points recorded late{dropped}",
                        since.elapsed(),
                        self.late_lines,
                        self.late_points
                    );
                    (self.late_lines, self.late_points, self.dropped_lines, self.dropped_points) = (0, 0, 0, 0);
                }
            }
            Err(e) if self.release_reserve(e) => self.next_try = Instant::now(),
            Err(e) => {
                let tries = match &mut self.failing {
                    None => {
                        crate::say!(
                            "tap: the store failed ({}); the command keeps running, output and metrics are buffered \
                             (up to {MAX_BUFFERED_LINES} lines) and retried",
                            tap_core::text::chain(&e)
                        );
                        self.failing = Some((Instant::now(), 1));
                        1
                    }
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                };
                let wait = Duration::from_secs(1u64 << tries.min(5)).min(MAX_RETRY_WAIT);
                self.next_try = Instant::now() + wait;
            }
        }
        result
    }

    async fn try_write<R: RunStore, L: LogStore>(
        &mut self,
        store: &R,
        logs: &L,
        force: bool,
    ) -> Result<(), StoreError> {
        let (exp, id) = (self.mine.experiment_id.clone(), self.mine.run_id.clone());
        if !self.lines.is_empty() {
            let batch: Vec<LogLine> = self.lines.iter().cloned().collect();
            logs.append_logs(&exp, &id, &batch).await?;
            if self.failing.is_some() {
                self.late_lines += batch.len() as u64;
            }
            self.lines.drain(..batch.len());
        }
        if !self.points.is_empty() {
            let batch: Vec<MetricPoint> = self.points.iter().cloned().collect();
            store.append_metrics(&exp, &id, &batch).await?;
            if self.failing.is_some() {
                self.late_points += batch.len() as u64;
            }
            self.points.drain(..batch.len());
            self.recorded_points += batch.len() as u64;
            self.dirty = true;
        }
        let now = now_ms();
        if force || self.dirty || now - self.last_write_ms >= HEARTBEAT_INTERVAL_MS {
            let (mine, points) = (self.mine.clone(), self.recorded_points);
            let stored = store.update_run(&exp, &id, move |r| apply(r, &mine, points, now)).await?;
            self.stored = Some(stored);
            self.dirty = false;
            self.last_write_ms = now;
        }
        Ok(())
    }
}
