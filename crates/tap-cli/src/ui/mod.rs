//! `tap ui`: a web dashboard over the stores tap already uses (the local SQLite store, or the
//! stack's DynamoDB and CloudWatch Logs), served by this binary: axum on the runtime tap
//! already has, pages rendered here ([`pages`]), uPlot (MIT, vendored in `assets/`) drawing
//! charts from `/api/` series that the server has downsampled ([`tap_core::downsample`]).
//! Read-only but for Cancel on a job.
//!
//! Security ([`guard`]): loopback by default; any other address needs the token printed at
//! start; the Host header is checked (DNS rebinding); a write needs POST with the page's XSRF
//! token; every response carries a Content-Security-Policy without inline script.

mod api;
mod guard;
pub mod html;
pub mod ops;
mod pages;
mod query;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use tap_core::runs::Run;

use crate::cli::UiArgs;
use crate::store::{LogStore, RunStore};

/// How long one listing of the store serves the pages before it is read again: a runs table
/// of 10,000 runs is filtered, sorted and paged from memory. An older listing is still served
/// at once while a fresh one is read beside it (the next page has it), so no page waits for
/// the store's listing but the first after start, which the server reads as it starts.
pub const LISTING_TTL: Duration = Duration::from_secs(2);

/// What `tap ui` was asked for, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub open: bool,
    pub show_secrets: bool,
    /// Required of every request (None on a loopback address).
    pub token: Option<String>,
}

impl Settings {
    pub fn from_args(a: &UiArgs) -> anyhow::Result<Settings> {
        // 127.0.0.1 and ::1 alone go without: any other address, 127.0.0.2 too, is one that
        // more than this user may reach (a container's, a shared host's).
        let token = if default_host(a.host) { None } else { Some(guard::random_token()?) };
        Ok(Settings { addr: SocketAddr::new(a.host, a.port), open: a.open, show_secrets: a.show_secrets, token })
    }
}

/// Whether `tap ui` serves there without a token: 127.0.0.1 (the default) or ::1.
pub fn default_host(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
}

/// The server's state: the stores, the settings, the page token for writes, one listing.
pub struct Ui<R, L> {
    pub runs: R,
    pub logs: L,
    pub settings: Settings,
    pub xsrf: String,
    /// The port actually bound (for the Host check).
    pub port: u16,
    listing: std::sync::Mutex<Option<(Instant, Arc<Vec<Run>>)>>,
    /// One reader of the store's listing at a time.
    reading: tokio::sync::Mutex<()>,
    refreshing: std::sync::atomic::AtomicBool,
    /// Goodput reports by run, with what they were made from (they read every point).
    goodput: std::sync::Mutex<GoodputCache>,
    /// The stack's job queue and fleet (the Jobs and Fleet pages).
    pub stack: ops::Side,
    /// A run's checkpoints as `tap checkpoints list RUN --output json` has them (None: this
    /// server was started without the object store).
    pub checkpoints: Option<CheckpointLister>,
}

/// Lists a run's checkpoints in the store the run's objects are in.
pub type CheckpointLister =
    Arc<dyn Fn(Run) -> futures_util::future::BoxFuture<'static, anyhow::Result<Vec<serde_json::Value>>> + Send + Sync>;

/// A [`CheckpointLister`] over `objects`.
pub fn checkpoint_lister<O: crate::artifacts::ObjectStore + Clone + 'static>(objects: O) -> CheckpointLister {
    Arc::new(move |run: Run| {
        let objects = objects.clone();
        Box::pin(async move {
            let all = crate::commands::checkpoints::of_run(&objects, &run).await?;
            Ok(crate::commands::checkpoints::rows(&run, &all))
        })
    })
}

/// Run → (when, the record's fingerprint, the report); at most [`GOODPUT_CACHE`] runs.
type GoodputCache =
    std::collections::BTreeMap<(String, String), (Instant, String, Arc<crate::commands::goodput::RunGoodput>)>;

/// Goodput reports kept (a report is small; making one reads every point of the run).
const GOODPUT_CACHE: usize = 64;

impl<R: RunStore + 'static, L: LogStore + 'static> Ui<R, L> {
    pub fn new(runs: R, logs: L, settings: Settings, port: u16) -> anyhow::Result<Ui<R, L>> {
        Ok(Ui {
            runs,
            logs,
            settings,
            xsrf: guard::random_token()?,
            port,
            listing: Default::default(),
            reading: Default::default(),
            refreshing: Default::default(),
            goodput: Default::default(),
            stack: Default::default(),
            checkpoints: None,
        })
    }

    /// A run's goodput report as `tap goodput` makes it, kept while its record is unchanged
    /// (a running run's for [`LISTING_TTL`]): the page's figures and its timeline share one.
    pub async fn goodput_of(self: &Arc<Self>, run: &Run) -> anyhow::Result<Arc<crate::commands::goodput::RunGoodput>> {
        let key = (run.experiment_id.clone(), run.run_id.clone());
        let fingerprint = serde_json::to_string(run).unwrap_or_default();
        if let Ok(cache) = self.goodput.lock()
            && let Some((at, f, g)) = cache.get(&key)
            && *f == fingerprint
            && (run.status.is_final() || at.elapsed() < LISTING_TTL)
        {
            return Ok(g.clone());
        }
        let all = self.trainings().await?;
        let now = crate::now_ms();
        let seen = crate::commands::goodput::Seen::of(all.to_vec(), &run.experiment_id, now);
        let mut g = crate::commands::goodput::report(&self.runs, run, &seen, now).await?;
        let prices = tap_core::prices::Prices::builtin();
        g.dollars = tap_core::prices::dollars(&g.goodput, &prices, None, &Default::default());
        let g = Arc::new(g);
        if let Ok(mut cache) = self.goodput.lock() {
            if cache.len() >= GOODPUT_CACHE
                && let Some(oldest) = cache.iter().min_by_key(|(_, (at, _, _))| *at).map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
            cache.insert(key, (Instant::now(), fingerprint, g.clone()));
        }
        Ok(g)
    }

    fn cached(&self) -> Option<(Instant, Arc<Vec<Run>>)> {
        self.listing.lock().ok()?.clone()
    }

    /// Every training of the store, as readers see them (observed status, folded chains): the
    /// listing in memory, read again beside the request once it is [`LISTING_TTL`] old.
    pub async fn trainings(self: &Arc<Self>) -> anyhow::Result<Arc<Vec<Run>>> {
        use std::sync::atomic::Ordering;
        if let Some((at, runs)) = self.cached() {
            if at.elapsed() >= LISTING_TTL && !self.refreshing.swap(true, Ordering::AcqRel) {
                let ui = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = ui.reload().await {
                        crate::say!("tap ui: warning: reading the store's runs: {e:#}");
                    }
                    ui.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(runs);
        }
        self.reload().await
    }

    /// Reads the listing now (one reader at a time; a listing another finished meanwhile
    /// serves).
    pub async fn reload(&self) -> anyhow::Result<Arc<Vec<Run>>> {
        let started = Instant::now();
        let _one = self.reading.lock().await;
        if let Some((_, runs)) = self.cached().filter(|(at, _)| *at >= started) {
            return Ok(runs);
        }
        let runs = Arc::new(crate::commands::trainings(&self.runs, None).await?);
        if let Ok(mut l) = self.listing.lock() {
            *l = Some((Instant::now(), runs.clone()));
        }
        Ok(runs)
    }

    /// A run by experiment and id (or name, or a legacy record's id).
    pub async fn run(self: &Arc<Self>, experiment: &str, id: &str) -> anyhow::Result<Option<Run>> {
        Ok(find_run(&self.trainings().await?, experiment, id).cloned())
    }

    /// Every output line of a run (a folded format-1 chain: each record's, in order).
    pub async fn logs_of(&self, run: &Run) -> crate::store::Result<Vec<crate::store::LogLine>> {
        let mut lines = Vec::new();
        for record in run.records() {
            lines.extend(self.logs.logs(&run.experiment_id, record).await?);
        }
        Ok(lines)
    }
}

/// The run of `all` that an URL's `EXP/ID` names: by id, name or a legacy record's id (every
/// page and API route looks runs up this one way).
pub fn find_run<'a>(all: &'a [Run], experiment: &str, id: &str) -> Option<&'a Run> {
    all.iter().find(|r| {
        r.experiment_id == experiment
            && (r.run_id == id || r.name.as_deref() == Some(id) || r.legacy_records.iter().any(|l| l == id))
    })
}

/// The routes: pages, the JSON API, the static files, behind the guard.
pub fn router<R, L>(ui: Arc<Ui<R, L>>) -> Router
where
    R: RunStore + 'static,
    L: LogStore + 'static,
{
    Router::new()
        .route("/", get(pages::runs::<R, L>))
        .route("/runs/{exp}/{run}", get(pages::run::<R, L>))
        .route("/runs/{exp}/{run}/goodput.png", get(pages::goodput_png::<R, L>))
        .route("/compare", get(pages::compare::<R, L>))
        .route("/jobs", get(ops::jobs::<R, L>))
        .route("/jobs/{id}", get(ops::job::<R, L>))
        .route("/jobs/{id}/cancel", axum::routing::post(ops::cancel::<R, L>))
        .route("/fleet", get(ops::fleet::<R, L>))
        .route("/api/jobs", get(ops::api_jobs::<R, L>))
        .route("/api/jobs/{id}", get(ops::api_job::<R, L>))
        .route("/api/fleet", get(ops::api_fleet::<R, L>))
        .route("/api/fleet/utilization", get(ops::api_utilization::<R, L>))
        .route("/api/fleet/pools", get(ops::api_pools::<R, L>))
        .route("/api/runs", get(api::runs::<R, L>))
        .route("/api/runs/{exp}/{run}", get(api::run::<R, L>))
        .route("/api/runs/{exp}/{run}/series", get(api::series::<R, L>))
        .route("/api/runs/{exp}/{run}/logs", get(api::logs::<R, L>))
        .route("/api/runs/{exp}/{run}/goodput", get(api::goodput::<R, L>))
        .route("/api/runs/{exp}/{run}/checkpoints", get(api::checkpoints::<R, L>))
        .route("/api/runs/{exp}/{run}/system", get(ops::api_system::<R, L>))
        .route("/api/compare", get(api::compare::<R, L>))
        .route("/static/{file}", get(guard::asset))
        .fallback(guard::not_found)
        .layer(axum::middleware::from_fn_with_state(ui.clone(), guard::check::<R, L>))
        .with_state(ui)
}

/// `tap ui`: binds, says where, serves until Ctrl-C or SIGTERM.
pub async fn serve<R, L, O>(
    runs: R,
    logs: L,
    objects: O,
    stack: ops::Side,
    settings: Settings,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()>
where
    R: RunStore + 'static,
    L: LogStore + 'static,
    O: crate::artifacts::ObjectStore + Clone + 'static,
{
    let listener = tokio::net::TcpListener::bind(settings.addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (another server has it: tap ui --port N, or --port 0 for any free one)",
            std::io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
            _ => "",
        };
        anyhow::anyhow!("tap ui cannot listen on {}: {e}{hint}", settings.addr)
    })?;
    let port = listener.local_addr().context("the bound address")?.port();
    let url = url(settings.addr.ip(), port, settings.token.as_deref());
    let mut ui = Ui::new(runs, logs, settings, port)?;
    ui.stack = stack;
    ui.checkpoints = Some(checkpoint_lister(objects));
    let ui = Arc::new(ui);
    // The first page need not wait for the store's listing.
    let warm = ui.clone();
    tokio::spawn(async move { warm.reload().await });
    writeln!(out, "tap ui: serving {url}")?;
    if ui.settings.token.is_some() {
        writeln!(out, "tap ui: every request needs the token in that URL (it then lives in a cookie)")?;
    }
    writeln!(out, "tap ui: Ctrl-C stops it")?;
    out.flush()?;
    if ui.settings.open {
        open_browser(&url);
    }
    axum::serve(listener, router(ui)).with_graceful_shutdown(stopped()).await.context("serving tap ui")?;
    Ok(())
}

/// The URL to open: the address as a browser reaches it (an unspecified address through
/// loopback), with the token where one is needed.
fn url(ip: IpAddr, port: u16, token: Option<&str>) -> String {
    let host = match ip {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    match token {
        Some(t) => format!("http://{host}:{port}/?token={t}"),
        None => format!("http://{host}:{port}/"),
    }
}

/// `--open`: the desktop's opener, in the background; a failure is one warning.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    match std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            // Reaped in the background, so no zombie stays.
            std::thread::spawn(move || child.wait());
        }
        Err(e) => crate::say!("tap: warning: could not open a browser ({opener}: {e}); open the URL above"),
    }
}

/// Ctrl-C or SIGTERM: the server stops taking connections and ends.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
