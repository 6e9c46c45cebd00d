//! `tap goodput RUN|-e EXP`: what each training's paid time went to (tap_core::goodput),
//! with the checkpoint cadence its measured costs imply.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use serde::Serialize;
use tap_core::goodput::{self, Cadence, Goodput};
use tap_core::pools::{Pool, PoolStats};
use tap_core::runs::{MetricPoint, Run};

use crate::cli::{GoodputArgs, Output};
use crate::commands::{find_in, json, trainings};
use crate::store::RunStore;

/// What the report is of.
enum What {
    Run(String),
    Experiment(String),
}

fn settings(a: &GoodputArgs) -> anyhow::Result<What> {
    match (&a.run, &a.experiment) {
        (Some(r), None) => Ok(What::Run(r.clone())),
        (None, Some(e)) => Ok(What::Experiment(e.clone())),
        _ => bail!("give a run (or a job) or -e EXPERIMENT, not both"),
    }
}

/// One training's goodput as `tap goodput` shows it.
#[derive(Debug, Serialize)]
pub struct RunGoodput {
    pub experiment: String,
    pub run_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub status: tap_core::runs::RunStatus,
    /// A managed job or a group of ranks (its attempts are the job's).
    pub job: bool,
    /// The pool of its latest attempt, whose history gives the cadence's M.
    pub pool: Pool,
    #[serde(flatten)]
    pub goodput: Goodput,
    pub cadence: Cadence,
    /// What it cost against on demand (None: no price known for its attempts).
    pub dollars: Option<tap_core::prices::Dollars>,
}

pub async fn run<R: RunStore, S: SpotPrices>(
    runs: &R,
    spot: &S,
    args: &GoodputArgs,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let what = settings(args)?;
    let now = crate::now_ms();
    let prices = prices(&args.prices).await?;
    // One listing of the store serves the run's lookup and the pools' history.
    let everywhere = trainings(runs, None).await?;
    let (experiment, chosen) = match &what {
        What::Run(wanted) => {
            let run = find_in(&everywhere, wanted)?;
            (run.experiment_id.clone(), Some(run))
        }
        What::Experiment(e) => (e.clone(), None),
    };
    let seen = Seen::of(everywhere, &experiment, now);
    let wanted: Vec<&Run> = match &chosen {
        Some(r) => vec![r],
        // The trainings: a job's node runs are part of the job's report.
        None => seen.experiment.iter().filter(|r| !(r.group.is_some() && r.job.is_none())).collect(),
    };
    if wanted.is_empty() {
        bail!("experiment {experiment} has no runs (see `tap runs list`)");
    }
    let mut reports = Vec::new();
    for r in wanted {
        let mut g = report(runs, r, &seen, now).await?;
        let paid = spot_paid(spot, &g.goodput).await;
        g.dollars = tap_core::prices::dollars(&g.goodput, &prices, args.prices.instance_type.as_deref(), &paid);
        reports.push(g);
    }
    if let Some(file) = &args.plot {
        plot(&reports, &experiment, file, args.size).await?;
    }
    match (output, &what) {
        (Output::Json, What::Run(_)) => json(out, &reports[0])?,
        (Output::Json, What::Experiment(e)) => {
            json(out, &serde_json::json!({ "experiment": e, "sum": sum(&reports), "runs": reports }))?
        }
        (Output::Text, What::Run(_)) => out.write_all(crate::render::goodput(&reports[0]).as_bytes())?,
        (Output::Text, What::Experiment(e)) => {
            out.write_all(crate::render::goodput_experiment(e, &reports, &sum(&reports)).as_bytes())?
        }
    }
    Ok(())
}

/// Where the spot price an attempt paid comes from: EC2's price history on a stack (kept in its
/// table once worked out), none on the local store (a `--prices` file gives them there).
pub(crate) trait SpotPrices {
    /// The mean spot price of `instance_type` in `az` over `[from_ms, to_ms]`; `done`: the span
    /// is over (its price can be kept).
    async fn mean(&self, instance_type: &str, az: &str, from_ms: i64, to_ms: i64, done: bool) -> Option<f64>;
}

/// The local store's: no price history.
pub(crate) struct NoSpotPrices;

impl SpotPrices for NoSpotPrices {
    async fn mean(&self, _: &str, _: &str, _: i64, _: i64, _: bool) -> Option<f64> {
        None
    }
}

/// A stack's: EC2's DescribeSpotPriceHistory, each span's mean kept in the stack's table. A
/// history that cannot be read is said once; the dollars then need `--prices`.
#[cfg(feature = "fleet")]
pub(crate) struct StackSpotPrices<'a> {
    pub fleet: tap_fleet::aws::Fleet,
    pub cache: &'a crate::store::dynamo::DynamoStore,
    pub said: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "fleet")]
impl SpotPrices for StackSpotPrices<'_> {
    async fn mean(&self, instance_type: &str, az: &str, from_ms: i64, to_ms: i64, done: bool) -> Option<f64> {
        use std::sync::atomic::Ordering;
        let key = tap_store::dynamo::spot_price_key(instance_type, az, from_ms, to_ms);
        if done && let Ok(Some(usd)) = self.cache.cached_spot_price(&key).await {
            return Some(usd);
        }
        match tap_fleet::aws::spot_price_history(&self.fleet.ec2, instance_type, az, from_ms, to_ms).await {
            Ok(history) => {
                let usd = tap_core::prices::mean_price(&history, from_ms, to_ms)?;
                if done
                    && let Err(e) = self.cache.cache_spot_price(&key, usd).await
                    && !self.said.swap(true, Ordering::Relaxed)
                {
                    crate::say!(
                        "tap: warning: the spot price was not kept in the stack's table: {}",
                        tap_core::text::chain(&e)
                    );
                }
                Some(usd)
            }
            Err(e) => {
                if !self.said.swap(true, Ordering::Relaxed) {
                    crate::say!(
                        "tap: warning: EC2's spot price history could not be read ({}); dollars need --prices",
                        tap_core::text::chain(&e)
                    );
                }
                None
            }
        }
    }
}

/// The spot price each spot attempt paid, by attempt number, where the source knows it.
async fn spot_paid<S: SpotPrices>(spot: &S, g: &Goodput) -> BTreeMap<u32, f64> {
    let mut paid = BTreeMap::new();
    for a in &g.attempts {
        let Some(n) = &a.node else { continue };
        if n.lifecycle == Some(tap_core::runs::Lifecycle::OnDemand) {
            continue;
        }
        let done = a.status.is_final();
        if let Some(usd) = spot.mean(&n.instance_type, &n.availability_zone, a.started_ms, a.ended_ms, done).await {
            paid.insert(a.number, usd);
        }
    }
    paid
}

/// Runs a plot draws at most (one panel each).
const MAX_PLOTTED_RUNS: usize = 12;

/// `--plot FILE.png`: one timeline panel per run (the newest [`MAX_PLOTTED_RUNS`]).
async fn plot(
    reports: &[RunGoodput],
    experiment: &str,
    file: &std::path::Path,
    size: (u32, u32),
) -> anyhow::Result<()> {
    let timelines: Vec<crate::plot::Timeline> = reports
        .iter()
        .take(MAX_PLOTTED_RUNS)
        .map(|r| {
            let label = format!(
                "{} ({}): goodput {:.1}%, {} attempts, {} steps re-run",
                r.name.as_deref().unwrap_or(&r.run_id),
                r.status.as_str(),
                r.goodput.goodput_pct,
                r.goodput.attempts.len(),
                r.goodput.wasted_steps
            );
            crate::plot::timeline(&label, &r.goodput)
        })
        .collect();
    let png = crate::plot::render_timelines(&format!("tap goodput: {experiment}"), &timelines, size)?;
    let path = file.to_owned();
    crate::blocking::run(move |_| tap_core::fsutil::write_atomic(&path, &png))
        .await
        .with_context(|| format!("writing {}", file.display()))?;
    let left = reports.len().saturating_sub(MAX_PLOTTED_RUNS);
    crate::say!(
        "tap: wrote {} ({}x{}, {} runs{})",
        file.display(),
        size.0,
        size.1,
        timelines.len(),
        if left > 0 { format!("; {left} older runs left out") } else { String::new() }
    );
    Ok(())
}

/// What a goodput report reads beside the run: its experiment's runs (a job's node runs are
/// there) and every pool's history (M is the pool's, over all experiments).
pub(crate) struct Seen {
    experiment: Vec<Run>,
    pools: Vec<PoolStats>,
}

impl Seen {
    /// From the store's trainings already read (every experiment's).
    pub(crate) fn of(everywhere: Vec<Run>, experiment: &str, now: i64) -> Seen {
        let pools = tap_core::pools::pool_stats(&everywhere, i64::MIN, now);
        let experiment = everywhere.into_iter().filter(|r| r.experiment_id == experiment).collect();
        Seen { experiment, pools }
    }

    /// The experiment's run `id`, as read.
    #[cfg(feature = "fleet")]
    pub(crate) fn run(&self, id: &str) -> Option<Run> {
        self.experiment.iter().find(|r| r.run_id == id).cloned()
    }
}

/// One training's report: its spans from the store, their goodput, the cadence.
pub(crate) async fn report<R: RunStore>(runs: &R, run: &Run, seen: &Seen, now: i64) -> anyhow::Result<RunGoodput> {
    let all = &seen.experiment;
    let spans = match &run.job {
        Some(_) => {
            let mut points: BTreeMap<String, Vec<MetricPoint>> = BTreeMap::new();
            for r in all.iter().filter(|r| r.group.as_deref() == Some(run.run_id.as_str()) && r.node_rank == Some(0)) {
                points.insert(r.run_id.clone(), runs.metrics(&r.experiment_id, &r.run_id).await?);
            }
            goodput::job_spans(run, all, &|id| points.get(id).cloned().unwrap_or_default(), now)
        }
        None => {
            let mut points = Vec::new();
            for id in run.records() {
                points.extend(runs.metrics(&run.experiment_id, id).await?);
            }
            goodput::run_spans(run, &points, now)
        }
    };
    let g = goodput::goodput(&spans);
    let pool = latest_pool(run, all);
    // M of the training: its pool's time between losses per node, over its nodes (any one
    // node's loss stops a job of N).
    let nodes = g.attempts.last().map_or(1, |a| a.nodes.max(1));
    let mtbi_s = seen
        .pools
        .iter()
        .find(|p| p.pool == pool)
        .and_then(|p| p.hours_between_losses)
        .map(|h| h * 3600.0 / f64::from(nodes));
    let cadence = goodput::cadence(&g, mtbi_s, run.forecast.as_ref().map(|f| f.commit_s));
    Ok(RunGoodput {
        experiment: run.experiment_id.clone(),
        run_id: run.run_id.clone(),
        name: run.name.clone(),
        status: run.status,
        job: run.job.is_some(),
        pool,
        goodput: g,
        cadence,
        dollars: None,
    })
}

/// The prices of `--prices FILE` over the built-in on-demand table (off the async loop).
pub(crate) async fn prices(a: &crate::cli::PriceArgs) -> anyhow::Result<tap_core::prices::Prices> {
    let file = a.prices.clone();
    crate::blocking::run(move |_| load_prices(file.as_deref())).await
}

/// [`prices`], for `tap goodput simulate` (no store, no async loop): a file that cannot be
/// read, is not UTF-8 or has a bad line is refused in one line naming it.
pub(crate) fn load_prices(file: Option<&std::path::Path>) -> anyhow::Result<tap_core::prices::Prices> {
    let builtin = tap_core::prices::Prices::builtin();
    let Some(file) = file else { return Ok(builtin) };
    let text = std::fs::read(file).with_context(|| format!("reading the prices {}", file.display()))?;
    let text =
        String::from_utf8(text).map_err(|e| anyhow::anyhow!("the prices {} are not UTF-8 ({e})", file.display()))?;
    let parsed =
        tap_core::prices::Prices::parse(&text).map_err(|e| anyhow::anyhow!("the prices {}: {e}", file.display()))?;
    Ok(parsed.over(builtin))
}

/// The pool a run's latest attempt ran in (a job's: its rank 0's).
fn latest_pool(run: &Run, all: &[Run]) -> Pool {
    let rank0 = run.job.as_ref().and_then(|j| {
        all.iter().find(|r| {
            r.group.as_deref() == Some(run.run_id.as_str())
                && r.job_attempt == Some(j.attempt)
                && r.node_rank == Some(0)
        })
    });
    let r = rank0.unwrap_or(run);
    Pool::of(&r.latest_attempt(r.status))
}

fn sum(reports: &[RunGoodput]) -> Goodput {
    goodput::summed(&reports.iter().map(|r| &r.goodput).collect::<Vec<_>>())
}

/// The goodput as `tap runs show` and `tap jobs show` carry it: the figures without the
/// attempts' timelines (`tap goodput` has those).
pub(crate) fn brief(r: &RunGoodput) -> serde_json::Value {
    let g = &r.goodput;
    serde_json::json!({
        "goodput_pct": g.goodput_pct,
        "total_s": g.total_s,
        "productive_s": g.productive_s,
        "badput": g.badput,
        "node_hours": g.node_hours,
        "steps_computed": g.steps_computed,
        "steps_kept": g.steps_kept,
        "wasted_steps": g.wasted_steps,
        "ideal_step_s": g.ideal_step_s,
        "cadence": r.cadence,
    })
}
