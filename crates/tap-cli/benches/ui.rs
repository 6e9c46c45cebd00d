//! `tap ui` benchmark: the three stores, served by the real router on loopback and
//! asked over HTTP the way the pages ask (the page, then its charts' series six at a time, as
//! a browser's connections do), cold (the first request after start) and warm (medians of
//! later ones). Each figure is printed against its budget and against the naive path of the
//! previous release's readers (every point of the run read, then downsampled) measured in the
//! same run. `scripts/bench-ui.sh` runs it; the store is built once under TAP_BENCH_DIR.
//!
//! - runs page: 10,000 runs, 50 hyperparameters and 50 final metrics each (budget 200 ms);
//! - run page: 10 metrics × 1,000,000 points (budget 300 ms);
//! - compare: 100 runs × 3 metrics × 100,000 points (budget 500 ms).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tap_cli::store::RunStore;
use tap_cli::store::sqlite::SqliteStore;
use tap_core::runs::{HparamUse, MetricPoint, Run, RunStatus};

const RUNS: usize = 10_000;
const HPARAMS: usize = 50;
const FINALS: usize = 50;
const BIG_METRICS: usize = 10;
const BIG_POINTS: u64 = 1_000_000;
const COMPARED: usize = 100;
const COMPARED_METRICS: usize = 3;
const COMPARED_POINTS: u64 = 100_000;
/// Warm requests per figure (the median is printed).
const REPEATS: usize = 5;
/// A browser's connections per host.
const CONNECTIONS: usize = 6;

fn main() -> anyhow::Result<()> {
    let dir =
        std::env::var_os("TAP_BENCH_DIR").map_or_else(|| std::env::temp_dir().join("tap-bench-ui"), PathBuf::from);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(bench(&dir))
}

async fn bench(dir: &Path) -> anyhow::Result<()> {
    let db = dir.join("tap.db");
    let t = Instant::now();
    let store = SqliteStore::open(&db)?;
    // A store of an earlier release gets its chart tiles here, once.
    println!("opened {} in {:.1} s", db.display(), t.elapsed().as_secs_f64());
    if store.list_runs(Some("bench-ready")).await?.runs.is_empty() {
        std::fs::create_dir_all(dir)?;
        let t = Instant::now();
        prepare(&store).await?;
        store.create_run(&Run::new("bench-ready", "done", vec![], "bench", 0)).await?;
        println!("prepared {} in {:.0} s", db.display(), t.elapsed().as_secs_f64());
    }
    let settings = tap_cli::ui::Settings {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        open: false,
        show_secrets: false,
        token: None,
    };
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    let addr = listener.local_addr()?;
    let ui = Arc::new(tap_cli::ui::Ui::new(store.clone(), store.clone(), settings, addr.port())?);
    // As `tap ui` starts: the listing read beside the first requests.
    let warm = ui.clone();
    tokio::spawn(async move { warm.reload().await });
    tokio::spawn(async move { axum::serve(listener, tap_cli::ui::router(ui)).await });

    println!("{:<44} {:>10} {:>10} {:>8} {:>8} {:>10}", "figure", "cold ms", "warm ms", "budget", "ratio", "naive ms");
    // Runs page: the default table and a sorted, filtered one with 10 chosen columns.
    let page = "/?sort=-metric.m07&where=param.p03%3E0.2&col=metric.m01&col=metric.m02&col=metric.m03&col=metric.m04\
                &col=metric.m05&col=param.p01&col=param.p02&col=param.p03&col=param.p04&col=param.p05";
    let (cold, warm) = timed(addr, &[page.to_owned()]).await?;
    let naive = naive_list(&store).await?;
    row("runs page, 10,000 runs x 100 fields", cold, warm, 200.0, naive);

    let big = "bench-big/big";
    let mut wanted = vec![format!("/runs/{big}")];
    wanted.extend((0..BIG_METRICS).map(|m| format!("/api/runs/{big}/series?metric=loss{m:02}&points=1000")));
    let (cold, warm) = timed(addr, &wanted).await?;
    let naive = naive_series(&store, "bench-big", "big", BIG_METRICS).await?;
    row("run page, 10 metrics x 1,000,000 points", cold, warm, 300.0, naive);

    let runs: String = (0..COMPARED).map(|i| format!("run=bench-cmp/r{i:03}&")).collect();
    let compare: Vec<String> =
        (0..COMPARED_METRICS).map(|m| format!("/api/compare?{runs}metric=loss{m:02}&points=1000")).collect();
    let mut wanted = vec![format!("/compare?{}", runs.trim_end_matches('&'))];
    wanted.extend(compare);
    let (cold, warm) = timed(addr, &wanted).await?;
    let mut naive = 0.0;
    for i in 0..COMPARED {
        naive += naive_series(&store, "bench-cmp", &format!("r{i:03}"), COMPARED_METRICS).await?;
    }
    row("compare, 100 runs x 3 metrics x 100,000 points", cold, warm, 500.0, naive);
    Ok(())
}

fn row(what: &str, cold: f64, warm: f64, budget: f64, naive: f64) {
    println!("{what:<44} {cold:>10.0} {warm:>10.0} {budget:>8.0} {:>8.2} {naive:>10.0}", warm / budget);
}

/// The first fetch of `paths` (the page, then the rest six at a time), then the median of
/// [`REPEATS`] more, in ms.
async fn timed(addr: SocketAddr, paths: &[String]) -> anyhow::Result<(f64, f64)> {
    let once = || async {
        let t = Instant::now();
        fetch(addr, paths[0].clone()).await?;
        let rest = paths[1..].to_vec();
        for chunk in rest.chunks(CONNECTIONS) {
            let gets = chunk.iter().map(|p| fetch(addr, p.clone()));
            futures_util::future::try_join_all(gets).await?;
        }
        Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
    };
    let cold = once().await?;
    // Past the listing's lifetime once, so a warm figure includes no stale shortcut.
    let mut warm = Vec::new();
    for _ in 0..REPEATS {
        warm.push(once().await?);
    }
    warm.sort_by(f64::total_cmp);
    Ok((cold, warm[REPEATS / 2]))
}

/// One GET over a fresh connection; the body's length (a non-200 fails).
async fn fetch(addr: SocketAddr, path: String) -> anyhow::Result<usize> {
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)?;
        let head = String::from_utf8_lossy(&body[..body.len().min(12)]).into_owned();
        anyhow::ensure!(
            head.starts_with("HTTP/1.1 200"),
            "{path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        Ok(body.len())
    })
    .await?
}

/// The previous readers' way to a run listing: every record read and decoded.
async fn naive_list(store: &SqliteStore) -> anyhow::Result<f64> {
    let t = Instant::now();
    let n = store.list_runs(None).await?.runs.len();
    anyhow::ensure!(n > RUNS);
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// The previous readers' way to a chart: every point of the run, then downsampled.
async fn naive_series(store: &SqliteStore, exp: &str, id: &str, metrics: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let points = store.metrics(exp, id).await?;
    for m in 0..metrics {
        let name = format!("loss{m:02}");
        let series: Vec<(u64, f64)> = points.iter().filter(|p| p.name == name).map(|p| (p.step, p.value)).collect();
        std::hint::black_box(tap_core::downsample::downsample(&series, 0, u64::MAX, 1000));
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

async fn prepare(store: &SqliteStore) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..RUNS {
        let mut r =
            Run::new("bench-sweep", &format!("r{i:05}"), vec!["python".into(), "train.py".into()], "node", i as i64);
        r.status = RunStatus::Succeeded;
        r.ended_ms = Some(i as i64 + 3_600_000);
        for p in 0..HPARAMS {
            r.hparams.insert(
                format!("p{p:02}"),
                HparamUse { value: format!("{:.4}", rng.f64()), version: 1, source: Default::default() },
            );
        }
        for m in 0..FINALS {
            r.final_metrics.insert(format!("m{m:02}"), rng.f64());
        }
        store.create_run(&r).await?;
    }
    series_run(store, "bench-big", "big", BIG_METRICS, BIG_POINTS, &mut rng).await?;
    for i in 0..COMPARED {
        series_run(store, "bench-cmp", &format!("r{i:03}"), COMPARED_METRICS, COMPARED_POINTS, &mut rng).await?;
    }
    Ok(())
}

async fn series_run(
    store: &SqliteStore,
    exp: &str,
    id: &str,
    metrics: usize,
    points: u64,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<()> {
    let mut r = Run::new(exp, id, vec!["python".into()], "node", 0);
    r.status = RunStatus::Succeeded;
    for m in 0..metrics {
        r.final_metrics.insert(format!("loss{m:02}"), 0.0);
    }
    r.metric_points = points * metrics as u64;
    store.create_run(&r).await?;
    const BATCH: u64 = 50_000;
    for from in (0..points).step_by(BATCH as usize) {
        let mut batch = Vec::with_capacity((BATCH as usize) * metrics);
        for step in from..(from + BATCH).min(points) {
            for m in 0..metrics {
                let spike = if rng.u32(0..100_000) == 0 { 10.0 } else { 0.0 };
                let value = 1.0 / (1.0 + step as f64 / 1000.0) + rng.f64() * 0.01 + spike;
                batch.push(MetricPoint { step, name: format!("loss{m:02}"), value, ts_ms: step as i64 });
            }
        }
        store.append_metrics(exp, id, &batch).await?;
    }
    Ok(())
}
