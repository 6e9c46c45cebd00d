//! `tap ui`'s JSON under `/api/`: the shapes of `--output json` (`tap runs list`, `tap runs
//! show`, `tap logs`, `tap goodput`), and the chart series the pages draw — downsampled here
//! ([`tap_core::downsample`]), step-aligned across compared runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tap_core::downsample::{self, DEFAULT_BUCKETS, MAX_BUCKETS};

use super::Ui;
use super::query::{RunsQuery, view};
use crate::store::{LogStore, RunStore};

/// An error as JSON: `{"error": "..."}`, one line.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn store_error(e: &anyhow::Error) -> Response {
    error(StatusCode::BAD_GATEWAY, format!("the store: {e:#}"))
}

fn no_run(exp: &str, id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no run {exp}/{id}"))
}

/// `GET /api/runs`: `tap runs list --output json` of one page of the table (the runs page's
/// parameters); the count over all pages in `X-Total-Count`.
pub async fn runs<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match RunsQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let all = match ui.trainings().await {
        Ok(a) => a,
        Err(e) => return store_error(&e),
    };
    let v = view(&all, &q, crate::now_ms());
    let mut r = Json(&v.rows).into_response();
    r.headers_mut().insert("x-total-count", HeaderValue::from(v.total));
    r
}

/// `GET /api/runs/EXP/RUN`: `tap runs show RUN --output json`.
pub async fn run<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
) -> Response {
    let all = match ui.trainings().await {
        Ok(a) => a,
        Err(e) => return store_error(&e),
    };
    let Some(run) = find(&all, &exp, &id) else { return no_run(&exp, &id) };
    match crate::commands::runs::details(&ui.runs, all.to_vec(), &run, crate::now_ms()).await {
        Ok(d) => Json(crate::commands::runs::details_json(&run, &d)).into_response(),
        Err(e) => store_error(&e),
    }
}

fn find(all: &[tap_core::runs::Run], exp: &str, id: &str) -> Option<tap_core::runs::Run> {
    super::find_run(all, exp, id).cloned()
}

/// What a chart asks for: a metric, a step range, a number of buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    pub metric: String,
    pub from: u64,
    pub to: u64,
    pub buckets: usize,
    /// `run=EXP/ID`, repeated (compare only).
    pub runs: Vec<(String, String)>,
}

impl SeriesQuery {
    /// `metric` (required), `from`, `to` (steps, inclusive), `points` (buckets; each keeps
    /// its min and max), `run` (compare).
    pub fn parse(raw: Option<&str>) -> Result<SeriesQuery, String> {
        let mut q =
            SeriesQuery { metric: String::new(), from: 0, to: u64::MAX, buckets: DEFAULT_BUCKETS, runs: vec![] };
        let step = |k: &str, v: &str| -> Result<u64, String> {
            // A zoomed chart's edges are fractional steps: the steps inside them.
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| if k == "from" { f.ceil().max(0.0) as u64 } else { f.floor().max(0.0) as u64 })
                .ok_or_else(|| format!("{k}: {v:?} is not a step"))
        };
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "metric" => q.metric = v.into_owned(),
                "from" => q.from = step("from", &v)?,
                "to" => q.to = step("to", &v)?,
                "points" => {
                    q.buckets = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_BUCKETS).contains(n))
                        .ok_or_else(|| format!("points: {v:?} is not 1 to {MAX_BUCKETS}"))?;
                }
                "run" => {
                    let (e, id) = v.split_once('/').ok_or_else(|| format!("run: {v:?} is not EXPERIMENT/RUN"))?;
                    q.runs.push((e.to_owned(), id.to_owned()));
                }
                _ => {}
            }
        }
        if q.metric.is_empty() {
            return Err("metric: which metric? (metric=NAME)".into());
        }
        if q.from > q.to {
            return Err(format!("from {} is after to {}", q.from, q.to));
        }
        Ok(q)
    }
}

/// A chart's series: steps and values (null for a value JSON cannot carry: NaN, infinity).
#[derive(Debug, Serialize)]
pub struct Series {
    pub experiment: String,
    pub run_id: String,
    pub metric: String,
    /// Points of the metric in the asked range, before downsampling.
    pub points: usize,
    /// Whether these are fewer than `points`.
    pub downsampled: bool,
    pub steps: Vec<u64>,
    pub values: Vec<Option<f64>>,
}

/// `GET /api/runs/EXP/RUN/series?metric=M[&from=&to=&points=]`.
pub async fn series<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match SeriesQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let run = match ui.run(&exp, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => return no_run(&exp, &id),
        Err(e) => return store_error(&e),
    };
    match read_series(&ui.runs, &run, &q).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn read_series<R: RunStore>(runs: &R, run: &tap_core::runs::Run, q: &SeriesQuery) -> anyhow::Result<Series> {
    let (candidates, total) = candidates(runs, run, q).await?;
    let (buckets, from, to) = (q.buckets, q.from, q.to);
    let kept =
        crate::blocking::run(move |_| Ok::<_, anyhow::Error>(downsample::downsample(&candidates, from, to, buckets)))
            .await?;
    Ok(series_of(run, q, kept, total))
}

/// What a chart of the run's metric is drawn from: the store's overview of a wide range of one
/// record (its tiles), else every point in the range; and how many points they stand for.
async fn candidates<R: RunStore>(
    runs: &R,
    run: &tap_core::runs::Run,
    q: &SeriesQuery,
) -> anyhow::Result<(Vec<(u64, f64)>, usize)> {
    if let [record] = run.records()[..]
        && let Some((candidates, n)) =
            runs.metric_overview(&run.experiment_id, record, &q.metric, q.from..=q.to, q.buckets).await?
    {
        return Ok((candidates, n as usize));
    }
    // A folded format-1 chain: its records' points, one axis.
    let mut points = Vec::new();
    for record in run.records() {
        points.extend(runs.metric_series(&run.experiment_id, record, &q.metric, q.from..=q.to).await?);
    }
    if run.records().len() > 1 {
        points.sort_by_key(|p| p.0);
        points = downsample::last_per_step(points);
    }
    let total = points.len();
    Ok((points, total))
}

fn series_of(run: &tap_core::runs::Run, q: &SeriesQuery, kept: Vec<(u64, f64)>, total: usize) -> Series {
    Series {
        experiment: run.experiment_id.clone(),
        run_id: run.run_id.clone(),
        metric: q.metric.clone(),
        points: total,
        downsampled: kept.len() < total,
        steps: kept.iter().map(|p| p.0).collect(),
        values: kept.iter().map(|p| Some(p.1).filter(|v| v.is_finite())).collect(),
    }
}

/// `GET /api/compare?run=EXP/ID&run=...&metric=M[&from=&to=&points=]`: the runs' series of one
/// metric on one step axis (uPlot draws aligned columns), each downsampled over the same
/// buckets.
pub async fn compare<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match SeriesQuery::parse(raw.as_deref()) {
        Ok(q) if q.runs.is_empty() => {
            return error(StatusCode::BAD_REQUEST, "run: which runs? (run=EXP/ID, repeated)".into());
        }
        Ok(q) if q.runs.len() > super::pages::MAX_COMPARED => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{} runs; a comparison draws {} at most", q.runs.len(), super::pages::MAX_COMPARED),
            );
        }
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let all = match ui.trainings().await {
        Ok(a) => a,
        Err(e) => return store_error(&e),
    };
    let mut chosen = Vec::new();
    for (e, id) in &q.runs {
        match find(&all, e, id) {
            Some(r) => chosen.push(r),
            None => return no_run(e, id),
        }
    }
    // Every run's candidates, then one set of buckets over all of them.
    let reads = chosen.iter().map(|r| candidates(&ui.runs, r, &q));
    let read = match futures_util::future::try_join_all(reads).await {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let lo = read.iter().filter_map(|(c, _)| c.first().map(|p| p.0)).min().unwrap_or(0);
    let hi = read.iter().filter_map(|(c, _)| c.last().map(|p| p.0)).max().unwrap_or(0);
    let buckets = q.buckets;
    let series: Vec<Vec<(u64, f64)>> = read.iter().map(|(c, _)| c.clone()).collect();
    let aligned = match crate::blocking::run(move |_| {
        Ok::<_, anyhow::Error>(downsample::align_buckets(&series, lo, hi, buckets))
    })
    .await
    {
        Ok(a) => a,
        Err(e) => return store_error(&e),
    };
    let runs: Vec<serde_json::Value> = chosen
        .iter()
        .zip(&read)
        .zip(aligned.values)
        .map(|((r, (_, total)), values)| {
            let kept = values.iter().flatten().count();
            let values: Vec<Option<f64>> = values.into_iter().map(|v| v.filter(|v| v.is_finite())).collect();
            serde_json::json!({
                "experiment": r.experiment_id,
                "run_id": r.run_id,
                "label": r.label(),
                "points": total,
                "downsampled": kept < *total,
                "values": values,
            })
        })
        .collect();
    Json(serde_json::json!({ "metric": q.metric, "steps": aligned.steps, "runs": runs })).into_response()
}

/// `GET /api/runs/EXP/RUN/logs[?tail=N]`: `tap logs RUN --output json` (its last N lines).
pub async fn logs<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let tail = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "tail")
        .map(|(_, v)| v.parse::<usize>().map_err(|_| format!("tail: {v:?} is not a number of lines")))
        .transpose();
    let tail = match tail {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let run = match ui.run(&exp, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => return no_run(&exp, &id),
        Err(e) => return store_error(&e),
    };
    let lines = match ui.logs_of(&run).await {
        Ok(l) => l,
        Err(e) => return store_error(&e.into()),
    };
    let from = tail.map_or(0, |t| lines.len().saturating_sub(t));
    Json(&lines[from..]).into_response()
}

/// `GET /api/runs/EXP/RUN/goodput`: `tap goodput RUN --output json`.
pub async fn goodput<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
) -> Response {
    match goodput_of(&ui, &exp, &id).await {
        Ok(Some(g)) => Json(&*g).into_response(),
        Ok(None) => no_run(&exp, &id),
        Err(e) => store_error(&e),
    }
}

/// `GET /api/runs/EXP/RUN/checkpoints`: `tap checkpoints list RUN --output json`.
pub async fn checkpoints<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
) -> Response {
    let run = match ui.run(&exp, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => return no_run(&exp, &id),
        Err(e) => return store_error(&e),
    };
    let Some(list) = ui.checkpoints.clone() else {
        return error(StatusCode::NOT_FOUND, "this server has no object store".into());
    };
    match list(run).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("the object store: {e:#}")),
    }
}

/// A run's goodput report (None: no such run).
pub async fn goodput_of<R: RunStore + 'static, L: LogStore + 'static>(
    ui: &Arc<Ui<R, L>>,
    exp: &str,
    id: &str,
) -> anyhow::Result<Option<Arc<crate::commands::goodput::RunGoodput>>> {
    let all = ui.trainings().await?;
    let Some(run) = find(&all, exp, id) else { return Ok(None) };
    Ok(Some(ui.goodput_of(&run).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_query_is_checked() {
        let q = SeriesQuery::parse(Some("metric=train%2Floss&from=10.4&to=99.6&points=200")).expect("parses");
        assert_eq!((q.metric.as_str(), q.from, q.to, q.buckets), ("train/loss", 11, 99, 200));
        for (bad, says) in [
            ("from=1", "metric"),
            ("metric=m&points=0", "points"),
            ("metric=m&from=x", "from"),
            ("metric=m&from=9&to=3", "from 9"),
            ("metric=m&run=nosep", "run"),
        ] {
            let e = SeriesQuery::parse(Some(bad)).expect_err(bad);
            assert!(e.starts_with(says), "{bad}: {e}");
        }
    }
}
