//! The agent's wiring for `tap-agent run`: logging, the GPU reader, the publisher and its
//! spool, the Prometheus endpoint, the spot watcher, GPU health, the idle rule and the job
//! controller, each built from the configuration and handed to the daemon's loop
//! ([`crate::daemon`]), which owns none of this setup.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tap_core::agent_config::AgentConfig;

use crate::cli::RunArgs;
use crate::gpu::{self, GpuReader, GpuReading, ReaderKind};

/// Without a driver, the agent looks for one again this often (the boot may install it).
const DRIVER_RETRY: Duration = Duration::from_secs(60);
use crate::{
    cloudwatch, controller, daemon, health, identity, idle, metrics, node_fleet, prometheus, publish, spool, spot,
};

/// A reader for a machine without a usable driver: no GPUs (the agent still publishes its
/// heartbeat and `GPUsVisible = 0`), and every minute it tries the hardware again, since
/// user_data may install the driver after the agent started.
struct NoGpus {
    last_try: Instant,
    found: Option<Box<dyn GpuReader>>,
}

impl GpuReader for NoGpus {
    fn kind(&self) -> ReaderKind {
        self.found.as_ref().map_or(ReaderKind::None, |r| r.kind())
    }

    fn read(&mut self) -> Result<Vec<GpuReading>, gpu::ReadError> {
        if self.found.is_none() && self.last_try.elapsed() >= DRIVER_RETRY {
            self.last_try = Instant::now();
            match gpu::open_hardware() {
                Ok(r) => {
                    tracing::info!(reader = %r.kind(), "NVIDIA driver found");
                    self.found = Some(r);
                }
                Err(e) => tracing::debug!(error = %e, "still no NVIDIA driver"),
            }
        }
        match &mut self.found {
            Some(r) => r.read(),
            None => Ok(Vec::new()),
        }
    }
}

pub(crate) fn open_reader(a: &RunArgs) -> anyhow::Result<Box<dyn GpuReader>> {
    if let Some(n) = a.simulate {
        return Ok(Box::new(gpu::sim::SimReader::new(usize::from(n), vec![])));
    }
    match gpu::open_hardware() {
        Ok(r) => Ok(r),
        Err(e) if a.once => Err(e.into()),
        Err(e) => {
            tracing::warn!("{e}; publishing host health only (heartbeat, 0 GPUs visible), retrying every minute");
            Ok(Box::new(NoGpus { last_try: Instant::now(), found: None }))
        }
    }
}

pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAP_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

/// How long the daemon may take, after SIGTERM, to publish (or spool) its last window.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// After SIGTERM, a moment for the job controller to hand its lease over (one request).
const LEASE_HANDOVER: Duration = Duration::from_millis(300);

pub(crate) async fn run_daemon(config_path: &Path, a: &RunArgs) -> anyhow::Result<()> {
    init_logging();
    let origin = config_path.display().to_string();
    let config = AgentConfig::load(config_path)?;
    let id = identity::resolve(&config, &origin).await?;
    let reader = open_reader(a)?;
    let spool = spool::Spool::open(&config.spool.dir, config.spool.max_bytes)?;
    if !spool.is_empty() {
        tracing::info!(batches = spool.len(), datums = spool.datums(), "replaying the spool left by the last run");
    }
    let sink = cloudwatch::CloudWatchSink {
        client: cloudwatch::client(&id.region).await,
        namespace: config.metrics.namespace.clone(),
    };
    let publisher = publish::Publisher::new(sink, spool, publish::RetryPolicy::default());
    let snapshot = serve_prometheus(&config, &id).await?;
    let opts = daemon_options(&config, &id, snapshot).await;
    let mut node = node(&config, &id, reader.kind(), a.simulate.is_some()).await?;
    // Set when the node goes away (a spot notice, SIGTERM): the job controller hands its
    // lease over, and the search for the node's fleet stops.
    let (leaving_tx, leaving) = tokio::sync::watch::channel(false);
    if let Some(rx) = node.spot.take() {
        node.spot = Some(tee_spot(rx, leaving_tx.clone()));
    }
    // The node's fleet, found once for the idle rule and the job controller alike.
    if config.idle.scale_to_zero || config.jobs.controller {
        let sdk = cloudwatch::sdk_config(&id.region).await;
        let fleet =
            node_fleet::find(sdk.clone(), id.instance_id.clone(), config.node.fleet_id.clone(), leaving.clone());
        if config.idle.scale_to_zero {
            start_idle_rule(&config, &id, &sdk, fleet.clone());
        }
        if config.jobs.controller {
            start_controller(&config, &id, &sdk, fleet, leaving)?;
        }
    }
    let shutdown = async move {
        shutdown_signal().await;
        let _ = leaving_tx.send(true);
        tokio::time::sleep(LEASE_HANDOVER).await;
    };
    let stats = daemon::run(reader, publisher, opts, node, shutdown).await?;
    tracing::info!(
        requests = stats.requests,
        datums_sent = stats.datums_sent,
        batches_spooled = stats.batches_spooled,
        datums_rejected = stats.datums_rejected,
        "tap-agent stopped"
    );
    Ok(())
}

/// `GET /metrics` on `prometheus.listen` when it is enabled: what the daemon shares with it.
async fn serve_prometheus(config: &AgentConfig, id: &identity::Identity) -> anyhow::Result<Option<prometheus::Shared>> {
    if !config.prometheus.enabled {
        return Ok(None);
    }
    let listen = &config.prometheus.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("prometheus.listen: cannot listen on {listen}"))?;
    tracing::info!(address = %listen, "serving Prometheus metrics at /metrics");
    let shared = prometheus::Shared::default();
    let env = config.metrics.environment.clone();
    tokio::spawn(prometheus::serve(listener, shared.clone(), env, id.instance_id.clone()));
    Ok(Some(shared))
}

/// The daemon's loop settings from the config and the node's identity.
async fn daemon_options(
    config: &AgentConfig,
    id: &identity::Identity,
    snapshot: Option<prometheus::Shared>,
) -> daemon::DaemonOptions {
    let m = &config.metrics;
    daemon::DaemonOptions {
        sample_interval: Duration::from_secs(u64::from(m.sample_interval_seconds)),
        publish_interval: Duration::from_secs(u64::from(m.publish_interval_seconds)),
        window: daemon::window_length(Duration::from_secs(u64::from(m.publish_interval_seconds))),
        high_resolution: m.high_resolution,
        labels: metrics::Labels {
            environment: m.environment.clone(),
            instance_id: id.instance_id.clone(),
            availability_zone: identity::availability_zone(config.spot.imds_endpoint.as_deref())
                .await
                .unwrap_or_else(|| tap_core::fleet::UNKNOWN_AZ.into()),
        },
        net_counters: Some(std::path::PathBuf::from(crate::net::PROC_NET_DEV)),
        shutdown_grace: SHUTDOWN_GRACE,
        snapshot,
    }
}

/// The opt-in idle rule (`[idle] scale_to_zero`), on a task of its own.
fn start_idle_rule(
    config: &AgentConfig,
    id: &identity::Identity,
    sdk: &aws_config::SdkConfig,
    fleet: node_fleet::NodeFleet,
) {
    let i = &config.idle;
    let rule = tap_fleet::idle::IdleRule { minutes: i64::from(i.minutes), below_percent: i.below_percent };
    tracing::info!(
        minutes = i.minutes,
        below_percent = i.below_percent,
        fleet = config.node.fleet_id.as_deref(),
        "idle rule on: the fleet scales to zero once every GPU of it idled"
    );
    let every = Duration::from_secs(u64::from(i.check_seconds));
    let mut watch = idle::IdleWatch::new(sdk.clone(), &id.instance_id, &config.metrics.environment, rule, every, fleet);
    if let Some(table) = &config.jobs.table {
        watch = watch.with_jobs(tap_store::jobs::JobStore::new(aws_sdk_dynamodb::Client::new(sdk), table));
    }
    tokio::spawn(watch.run());
}

/// The fleet's job controller (`[jobs] controller`), once the node's fleet is known, under
/// supervision on a task of its own.
fn start_controller(
    config: &AgentConfig,
    id: &identity::Identity,
    sdk: &aws_config::SdkConfig,
    fleet: node_fleet::NodeFleet,
    leaving: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Its own app name in every request's User-Agent (CloudTrail; the tests count its
    // requests by it).
    let sdk =
        sdk.clone().into_builder().app_name(aws_config::AppName::new("tap-controller").context("app name")?).build();
    let j = config.jobs.clone();
    let (table, log_group) = (j.table.unwrap_or_default(), j.log_group.unwrap_or_default());
    let environment = config.metrics.environment.clone();
    let me = id.instance_id.clone();
    tracing::info!(table = %table, "job controller on: contending for the fleet's lease");
    tokio::spawn(async move {
        let Some(fleet_id) = node_fleet::known(fleet).await else { return };
        let watching = leaving.clone();
        let make = move || {
            let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
            controller::Controller {
                me: me.clone(),
                jobs: tap_store::jobs::JobStore::new(dynamo.clone(), &table),
                runs: tap_store::dynamo::DynamoStore::new(dynamo, &table),
                fleet: tap_fleet::aws::Fleet::connect(&sdk, &fleet_id, &environment, &log_group),
                leaving: leaving.clone(),
            }
        };
        controller::supervise(make, watching).await;
    });
    Ok(())
}

/// Passes the spot watcher's events on to the daemon, and tells the job controller that the
/// node is leaving at the first interruption notice.
fn tee_spot(
    mut rx: tokio::sync::mpsc::Receiver<spot::SpotEvent>,
    leaving: tokio::sync::watch::Sender<bool>,
) -> tokio::sync::mpsc::Receiver<spot::SpotEvent> {
    let (tx, out) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, spot::SpotEvent::Interruption(_)) {
                let _ = leaving.send(true);
            }
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    out
}

/// GPU health (NVML events, kernel log, policy) and the spot watcher, as configured.
async fn node(
    config: &AgentConfig,
    id: &identity::Identity,
    reader: ReaderKind,
    simulated: bool,
) -> anyhow::Result<daemon::Node> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let runtime = tap_core::notice::RuntimeDir::new(&config.node.runtime_dir);
    if let Err(e) = runtime.prepare() {
        // Metrics still matter; only the node protocol is off (said once, loudly).
        tracing::warn!(dir = %runtime.root().display(), error = %e,
            "node.runtime_dir cannot be prepared: runs on this node will not hear of notices");
    }
    let mut node = daemon::Node::default();
    let imds = |endpoint: Option<&str>| -> anyhow::Result<Option<aws_config::imds::Client>> {
        // An endpoint named in the config wins over AWS_EC2_METADATA_DISABLED (tests name one).
        if endpoint.is_none() && identity::imds_disabled() {
            return Ok(None);
        }
        Ok(Some(identity::imds_client(endpoint)?))
    };
    let h = &config.health;
    if h.enabled {
        let expected = match h.expected_gpus {
            Some(n) => Some(n),
            None if simulated => None,
            None => match imds(None)? {
                Some(c) => identity::instance_type(&c).await.and_then(|t| {
                    let n = health::gpus::expected_gpus(&t);
                    if n.is_none() {
                        tracing::info!(instance_type = %t, "GPU count of this instance type unknown: not checked");
                    }
                    n
                }),
                None => None,
            },
        };
        node.health = Some(health::Health::new(health::HealthOptions {
            expected_gpus: expected,
            missing_grace: Duration::from_secs(u64::from(h.gpu_missing_seconds)),
            lost_after_failed_reads: h.lost_after_failed_reads,
            throttle_warning: Duration::from_secs(u64::from(h.throttle_warning_seconds)),
        }));
        node.state_file = Some(h.state_file.clone());
        node.policy = Some(health::policy::Policy {
            on_fatal: h.on_fatal,
            runtime: runtime.clone(),
            drain_deadline: Duration::from_secs(u64::from(h.drain_deadline_seconds)),
            power_off_command: h.power_off_command.clone(),
            instance_id: id.instance_id.clone(),
        });
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let stop = Arc::new(AtomicBool::new(false));
        if reader == ReaderKind::Nvml {
            gpu::nvml::spawn_xid_events(tx.clone(), stop.clone());
        }
        health::kernel_log::spawn(h.kernel_log.clone(), tx, stop);
        node.xids = Some(rx);
        tracing::info!(on_fatal = h.on_fatal.as_str(), expected_gpus = ?expected, kernel_log = %h.kernel_log.display(),
            state_file = %h.state_file.display(), "GPU health checks on");
    }
    if config.spot.enabled {
        match imds(config.spot.imds_endpoint.as_deref())? {
            Some(client) => {
                let (tx, rx) = tokio::sync::mpsc::channel(8);
                let poll = Duration::from_secs(u64::from(config.spot.poll_seconds));
                let watcher = spot::Watcher { client, poll, runtime, instance_id: id.instance_id.clone() };
                tokio::spawn(watcher.run(tx));
                node.spot = Some(rx);
                tracing::info!(poll_s = poll.as_secs(), "watching for spot interruption notices");
            }
            None => tracing::info!("instance metadata disabled: no spot interruption watcher"),
        }
    }
    Ok(node)
}
