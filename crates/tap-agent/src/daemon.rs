//! The agent's main loop: sample every `sample_interval`, close a statistic-set window every
//! [`window_length`] (at most a minute, CloudWatch's standard resolution), hand the windows
//! to the publisher every `publish_interval`, and on shutdown publish (or spool) the rest.
//!
//! A publish interval longer than a minute keeps 1-minute datapoints but sends them in fewer
//! requests (e.g. 600 s: ten windows in one request), at the price of alarm latency.
//!
//! Sampling and publishing run in separate tasks, so a slow or unreachable CloudWatch never
//! delays a sample.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use std::path::PathBuf;

use tap_core::contract::Metric;

use crate::gpu::GpuReader;
use crate::health::policy::Policy;
use crate::health::{Finding, Health, Severity, XidEvent};
use crate::metrics::{Aggregator, Datum, Labels};
use crate::publish::{PublishStats, Publisher, Sink};
use crate::spot::SpotEvent;

/// CloudWatch aggregates by the minute: a statistic set covers at most one.
const MAX_WINDOW: Duration = Duration::from_secs(60);

/// While a node drains for a fatal finding, the registered runs are looked at this often.
const DRAIN_POLL: Duration = Duration::from_secs(1);

pub use tap_core::time::now_ms;

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub sample_interval: Duration,
    pub publish_interval: Duration,
    /// Statistic-set window, normally [`window_length`]`(publish_interval)`.
    pub window: Duration,
    pub high_resolution: bool,
    pub labels: Labels,
    /// How long the last publish may take after a shutdown signal (it spools what it cannot send).
    pub shutdown_grace: Duration,
    /// Where the latest sample goes for the Prometheus endpoint, when it is on.
    pub snapshot: Option<crate::prometheus::Shared>,
    /// The kernel's interface counters (`/proc/net/dev`), read with every sample for the
    /// network series (None: not published).
    pub net_counters: Option<PathBuf>,
}

/// The statistic-set window: the publish interval, but at most one minute.
pub fn window_length(publish_interval: Duration) -> Duration {
    publish_interval.min(MAX_WINDOW)
}

/// Adds one sample to the window as the daemon does: the health rule judges it first (its
/// GPUUnhealthy series are published with the readings' own), then the readings — none when
/// the GPUs could not be read, so the heartbeat still goes out. Returns the health rule's new
/// findings. The benchmark counts series through this same function.
pub fn record_sample(
    agg: &mut Aggregator,
    health: Option<&mut Health>,
    at_ms: i64,
    result: &Result<Vec<crate::gpu::GpuReading>, crate::gpu::ReadError>,
) -> Vec<Finding> {
    let new = match health {
        Some(h) => {
            let new = h.observe_sample(at_ms, result);
            let (per_gpu, any) = h.unhealthy();
            agg.add_health(&per_gpu, any);
            new
        }
        None => Vec::new(),
    };
    agg.add_sample(at_ms, result.as_deref().unwrap_or(&[]));
    new
}

/// What the daemon watches besides metrics: GPU health and the node's events.
#[derive(Default)]
pub struct Node {
    /// GPU health judged on every sample and XID (None: health checks off).
    pub health: Option<Health>,
    /// Where the findings are written when they change.
    pub state_file: Option<PathBuf>,
    /// What to do on the first fatal finding.
    pub policy: Option<Policy>,
    /// XIDs from NVML events and the kernel log.
    pub xids: Option<mpsc::Receiver<XidEvent>>,
    /// Spot notices and rebalance recommendations (the watcher already told the runs).
    pub spot: Option<mpsc::Receiver<SpotEvent>>,
    /// Writes the state file on its own thread (started on the first write).
    pub state_writer: Option<StateWriter>,
}

/// Writes the health state file off the async loop: a write is an fsync and a rename, which
/// can take long on a busy disk; the loop must keep sampling and watching for notices. Writes
/// land in order; when several queue up, only the newest is written.
pub struct StateWriter {
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    thread: std::thread::JoinHandle<()>,
}

impl StateWriter {
    fn start(path: PathBuf) -> std::io::Result<StateWriter> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new().name("tap-agent-state".into()).spawn(move || {
            while let Ok(mut text) = rx.recv() {
                while let Ok(newer) = rx.try_recv() {
                    text = newer;
                }
                let done = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| tap_core::fsutil::write_atomic(&path, &text));
                if let Err(e) = done {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the health state file");
                }
            }
        })?;
        Ok(StateWriter { tx, thread })
    }

    /// Waits (off the async workers) until every queued write landed.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

impl Node {
    /// Logs new findings, rewrites the state file when the standing set changed, and starts
    /// the policy on the first fatal finding.
    fn on_findings(&mut self, new: Vec<Finding>, written: &mut Option<Vec<String>>, acted: &mut bool) {
        let Some(health) = &self.health else { return };
        for f in &new {
            let gpu = f.gpu.as_deref().unwrap_or("node");
            match f.severity {
                Severity::Fatal => {
                    tracing::error!(gpu, source = f.source, finding = %f.message, "fatal GPU health finding")
                }
                Severity::Warning => tracing::warn!(gpu, source = f.source, finding = %f.message, "GPU health warning"),
            }
        }
        let signature: Vec<String> =
            health.findings().map(|f| format!("{:?}{:?}{:?}", f.check, f.gpu, f.severity)).collect();
        if written.as_ref() != Some(&signature) {
            if let Some(path) = &self.state_file {
                let text = serde_json::to_vec_pretty(&health.state(now_ms())).unwrap_or_default();
                if self.state_writer.is_none() {
                    match StateWriter::start(path.clone()) {
                        Ok(w) => self.state_writer = Some(w),
                        Err(e) => tracing::warn!(error = %e, "cannot start the state file writer"),
                    }
                }
                if let Some(w) = &self.state_writer {
                    let _ = w.tx.send(text);
                }
            }
            *written = Some(signature);
        }
        if !*acted && health.verdict() == Some(Severity::Fatal) {
            *acted = true;
            let reason: Vec<String> = health
                .findings()
                .filter(|f| f.severity == Severity::Fatal)
                .map(|f| format!("{}: {}", f.gpu.as_deref().unwrap_or("node"), f.message))
                .collect();
            if let Some(policy) = self.policy.clone() {
                let reason = reason.join("; ");
                tokio::spawn(async move {
                    if let Err(e) = policy.take_out_of_service(&reason, now_ms(), DRAIN_POLL).await {
                        tracing::error!(error = %e, "the fatal-finding policy failed");
                    }
                });
            }
        }
    }
}

async fn next<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs until `shutdown` resolves; returns the publisher's counters.
pub async fn run<S>(
    mut reader: Box<dyn GpuReader>,
    publisher: Publisher<S>,
    opts: DaemonOptions,
    mut node: Node,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<PublishStats>
where
    S: Sink + Send + Sync + 'static,
{
    let dropped = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<Vec<Datum>>(64);
    let publishing = tokio::spawn(publish_loop(publisher, rx, dropped.clone()));

    let mut agg = Aggregator::new();
    agg.add_node_started();
    let mut sample_tick = tokio::time::interval(opts.sample_interval);
    sample_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let window = opts.window;
    let windows_per_publish = (opts.publish_interval.as_millis() / window.as_millis()).max(1);
    let mut window_tick = tokio::time::interval_at(Instant::now() + window, window);
    window_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending: Vec<Datum> = Vec::new();
    let mut windows = 0;
    tokio::pin!(shutdown);
    let mut reading = true;
    let (mut written, mut acted) = (None, false);
    node.on_findings(Vec::new(), &mut written, &mut acted);
    tracing::info!(reader = %reader.kind(), instance = %opts.labels.instance_id, environment = %opts.labels.environment,
        sample_s = opts.sample_interval.as_secs_f64(), publish_s = opts.publish_interval.as_secs_f64(), "tap-agent started");
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            xid = next(&mut node.xids) => match xid {
                None => node.xids = None,
                Some(x) => {
                    let new = node.health.as_mut().and_then(|h| h.observe_xid(now_ms(), &x));
                    node.on_findings(new.into_iter().collect(), &mut written, &mut acted);
                }
            },
            ev = next(&mut node.spot) => match ev {
                None => node.spot = None,
                Some(SpotEvent::Interruption(_)) => agg.add_event(Metric::SpotInterruptionNotice),
                Some(SpotEvent::Rebalance { .. }) => agg.add_event(Metric::RebalanceRecommendation),
            },
            _ = window_tick.tick() => {
                pending.extend(agg.finish(now_ms(), &opts.labels, dropped.swap(0, Ordering::Relaxed), opts.high_resolution));
                windows += 1;
                if windows >= windows_per_publish {
                    windows = 0;
                    if tx.send(std::mem::take(&mut pending)).await.is_err() {
                        anyhow::bail!("the publisher stopped");
                    }
                }
            }
            _ = sample_tick.tick() => reading = sample(&mut *reader, &opts, &mut agg, &mut node, reading, &mut written, &mut acted),
        }
    }
    tracing::info!(samples = agg.samples(), "shutting down: publishing the last window");
    pending.extend(agg.finish(now_ms(), &opts.labels, dropped.swap(0, Ordering::Relaxed), opts.high_resolution));
    finish(tx, pending, node, publishing, opts.shutdown_grace).await
}

/// One sample: the GPUs and the network counters read (off the async worker), the Prometheus
/// snapshot updated, the readings folded in and judged. Whether the GPUs could be read (a
/// change is said once).
fn sample(
    reader: &mut dyn GpuReader,
    opts: &DaemonOptions,
    agg: &mut Aggregator,
    node: &mut Node,
    was_reading: bool,
    written: &mut Option<Vec<String>>,
    acted: &mut bool,
) -> bool {
    let at = now_ms();
    // NVML answers in microseconds; nvidia-smi may block, so leave the worker (procfs's
    // counters too: a read is a syscall).
    let (result, net) =
        tokio::task::block_in_place(|| (reader.read(), opts.net_counters.as_deref().and_then(crate::net::read)));
    if let Some(c) = net {
        agg.add_network(c);
    }
    if let Some(shared) = &opts.snapshot
        && let Ok(mut snap) = shared.lock()
    {
        snap.samples_total += 1;
        snap.reader = reader.kind().to_string();
        match &result {
            Ok(readings) => snap.readings.clone_from(readings),
            Err(_) => {
                snap.read_errors_total += 1;
                snap.readings.clear();
            }
        }
    }
    let new = record_sample(agg, node.health.as_mut(), at, &result);
    node.on_findings(new, written, acted);
    match &result {
        Ok(readings) if !was_reading => tracing::info!(gpus = readings.len(), "GPU readings are back"),
        Err(e) if was_reading => {
            tracing::warn!(error = %e, "cannot read GPUs; publishing host health (heartbeat, 0 GPUs visible) only");
        }
        _ => {}
    }
    result.is_ok()
}

/// After the loop: the last window handed to the publisher, the health state written, and
/// the publisher given `grace` to finish.
async fn finish(
    tx: mpsc::Sender<Vec<Datum>>,
    pending: Vec<Datum>,
    mut node: Node,
    publishing: tokio::task::JoinHandle<PublishStats>,
    grace: std::time::Duration,
) -> anyhow::Result<PublishStats> {
    // The channel is bounded and the publisher may be mid-retry: a full queue only delays us.
    let _ = tx.send(pending).await;
    drop(tx);
    if let Some(w) = node.state_writer.take() {
        w.finish().await;
    }
    match tokio::time::timeout(grace, publishing).await {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(e)) => Err(anyhow::anyhow!("publisher task failed: {e}")),
        Err(_) => anyhow::bail!("the last publish did not finish within {grace:?}"),
    }
}

async fn publish_loop<S: Sink>(
    mut publisher: Publisher<S>,
    mut rx: mpsc::Receiver<Vec<Datum>>,
    dropped: Arc<AtomicU64>,
) -> PublishStats {
    while let Some(datums) = rx.recv().await {
        let n = datums.len();
        match publisher.publish(datums, now_ms()).await {
            Ok(true) => tracing::debug!(datums = n, "published"),
            Ok(false) => {
                tracing::info!(spooled_datums = publisher.spool().datums(), "CloudWatch unreachable; data is spooled")
            }
            Err(e) => tracing::error!(error = %e, "spool failure: this window is lost"),
        }
        dropped.fetch_add(publisher.spool().take_dropped(), Ordering::Relaxed);
    }
    publisher.stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::sim::SimReader;
    use crate::publish::RetryPolicy;
    use crate::publish::tests::ScriptedSink;
    use crate::spool::Spool;

    fn opts() -> DaemonOptions {
        DaemonOptions {
            sample_interval: Duration::from_millis(10),
            publish_interval: Duration::from_millis(100),
            window: Duration::from_millis(100),
            high_resolution: false,
            labels: Labels {
                environment: "dev".into(),
                instance_id: "i-test".into(),
                availability_zone: "us-east-1a".into(),
            },
            net_counters: None,
            shutdown_grace: Duration::from_secs(5),
            snapshot: Some(Default::default()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_windows_go_out_in_one_publish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink: &'static ScriptedSink = Box::leak(Box::default());
        let publisher = Publisher::new(sink, Spool::open(dir.path(), 1 << 20).expect("spool"), RetryPolicy::default());
        let o =
            DaemonOptions { publish_interval: Duration::from_millis(200), window: Duration::from_millis(50), ..opts() };
        run(
            Box::new(SimReader::new(1, vec![])),
            publisher,
            o,
            Node::default(),
            tokio::time::sleep(Duration::from_millis(430)),
        )
        .await
        .expect("runs");
        let received = sink.received.lock().expect("lock").clone();
        assert_eq!(received.len(), 3, "two full publishes and the shutdown flush");
        let windows_in = |batch: &Vec<Datum>| {
            batch.iter().filter(|d| d.metric == "AgentHeartbeat" && d.dimensions.len() == 1).count()
        };
        assert_eq!(windows_in(&received[0]), 4, "four 50 ms windows per 200 ms publish, each its own datapoint");
        let stamps: std::collections::BTreeSet<i64> = received[0].iter().map(|d| d.timestamp_ms).collect();
        assert_eq!(stamps.len(), 4);
    }

    #[test]
    fn windows_are_at_most_a_minute() {
        assert_eq!(window_length(Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(window_length(Duration::from_secs(600)), Duration::from_secs(60));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn samples_publish_and_flush_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink: &'static ScriptedSink = Box::leak(Box::default());
        let publisher = Publisher::new(sink, Spool::open(dir.path(), 1 << 20).expect("spool"), RetryPolicy::default());
        let stats = run(
            Box::new(SimReader::new(2, vec![])),
            publisher,
            opts(),
            Node::default(),
            tokio::time::sleep(Duration::from_millis(350)),
        )
        .await
        .expect("runs");
        let received = sink.received.lock().expect("lock").clone();
        // Three full windows plus the flushed partial one.
        assert_eq!(received.len(), 4, "{stats:?}");
        let samples: f64 = received
            .iter()
            .flatten()
            .filter(|d| {
                d.metric == "GPUUtilization" && d.dimensions.len() == 3 && d.dimensions[2].1 == "GPU-SIMULATED-0000"
            })
            .map(|d| d.stats.count)
            .sum();
        assert!((30.0..=37.0).contains(&samples), "~35 samples at 10 ms over 350 ms, got {samples}");
        let heartbeats = received.iter().flatten().filter(|d| d.metric == "AgentHeartbeat").count();
        assert_eq!(heartbeats, 8, "instance + fleet heartbeat per window");
    }

    /// Scripted faults through the simulated reader and a fake kernel log: the verdicts,
    /// the GPUUnhealthy metric, the state file and the power-off (a marker script).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fatal_findings_publish_unhealthy_and_power_off() {
        use crate::gpu::sim::Fault;
        use crate::health::policy::Policy;
        use crate::health::{Health, HealthOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let sink: &'static ScriptedSink = Box::leak(Box::default());
        let publisher = Publisher::new(
            sink,
            Spool::open(&dir.path().join("spool"), 1 << 20).expect("spool"),
            RetryPolicy::default(),
        );
        let marker = dir.path().join("powered-off");
        let state_file = dir.path().join("health.json");
        let (xtx, xrx) = mpsc::channel(8);
        let node = Node {
            health: Some(Health::new(HealthOptions { expected_gpus: Some(2), ..HealthOptions::default() })),
            state_file: Some(state_file.clone()),
            policy: Some(Policy {
                on_fatal: tap_core::agent_config::OnFatal::Replace,
                runtime: tap_core::notice::RuntimeDir::new(dir.path().join("run")),
                drain_deadline: Duration::from_secs(5),
                power_off_command: vec!["sh".into(), "-c".into(), format!("echo off > {}", marker.display())],
                instance_id: "i-test".into(),
            }),
            xids: Some(xrx),
            spot: None,
            state_writer: None,
        };
        // GPU 1's uncorrected ECC counter rises at read 10 (of ~35); a kernel-log XID 13 on
        // GPU 0 is a warning only.
        let reader = SimReader::new(2, vec![Fault::EccErrors { gpu: 1, per_read: 1, from: 10, to: 11 }]);
        xtx.send(XidEvent {
            xid: 13,
            uuid: None,
            pci: Some("0000:10:00".into()),
            detail: "x".into(),
            source: "kernel-log",
        })
        .await
        .expect("send");
        run(Box::new(reader), publisher, opts(), node, tokio::time::sleep(Duration::from_millis(350)))
            .await
            .expect("runs");
        let received = sink.received.lock().expect("lock").clone();
        let unhealthy_max = |gpu: Option<&str>| {
            received
                .iter()
                .flatten()
                .filter(|d| d.metric == "GPUUnhealthy")
                .filter(|d| match gpu {
                    Some(g) => d.dimensions.len() == 3 && d.dimensions[2].1 == g,
                    None => d.dimensions.len() == 2,
                })
                .map(|d| d.stats.max)
                .fold(f64::NAN, f64::max)
        };
        assert_eq!(unhealthy_max(Some("GPU-SIMULATED-0000")), 0.0, "a warning XID is not unhealthy");
        assert_eq!(unhealthy_max(Some("GPU-SIMULATED-0001")), 1.0);
        assert_eq!(unhealthy_max(None), 1.0, "the node is unhealthy");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_file).expect("state file")).expect("JSON");
        assert_eq!(state["verdict"], "fatal");
        let checks: Vec<&str> =
            state["findings"].as_array().expect("findings").iter().filter_map(|f| f["check"].as_str()).collect();
        assert_eq!(checks, ["ecc-uncorrected", "xid"], "{state}");
        // No run is registered: the policy powers off at once.
        for _ in 0..50 {
            if marker.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(std::fs::read_to_string(&marker).expect("powered off").trim(), "off");
    }
}
