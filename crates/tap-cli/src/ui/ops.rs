//! `tap ui`'s Jobs and Fleet pages. Managed jobs and the fleet live on a stack: there the
//! pages read the job queue (DynamoDB) and the fleet (EC2, and the agents' GPU utilization from
//! CloudWatch) as `tap jobs` and `tap fleet status` do; Cancel is the dashboard's one write
//! (POST with the page's XSRF token, `guard`). The pool advice of `tap fleet pools` comes from
//! the runs, so it shows on every store.

// A tap built without the fleet (`--no-default-features`) answers every page here with why.
#![cfg_attr(not(feature = "fleet"), allow(unused_imports, unused_variables))]

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::html::{Section, enc, esc, page};
use super::{Ui, api, pages};
use crate::store::{LogStore, RunStore};

/// Minutes of GPU utilization the Fleet page charts.
pub const UTILIZATION_MINUTES: i64 = 180;

/// What only a stack has (None on the local store; nothing in a tap built without the fleet).
#[cfg(feature = "fleet")]
pub type Side = Option<StackSide>;
#[cfg(not(feature = "fleet"))]
pub type Side = NoStack;

/// What a tap without the fleet has of a stack: nothing.
#[cfg(not(feature = "fleet"))]
#[derive(Debug, Default)]
pub struct NoStack;

/// A stack's job queue and fleet.
#[cfg(feature = "fleet")]
pub struct StackSide {
    pub jobs: tap_store::jobs::JobStore,
    pub runs: crate::store::dynamo::DynamoStore,
    pub fleet: tap_fleet::aws::Fleet,
}

#[cfg(feature = "fleet")]
impl StackSide {
    pub async fn connect(stack: &tap_core::stack_config::StackConfig) -> StackSide {
        let sdk = crate::commands::sdk_for(stack).await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        StackSide {
            jobs: tap_store::jobs::JobStore::new(dynamo.clone(), &stack.table_name),
            runs: crate::store::dynamo::DynamoStore::new(dynamo, &stack.table_name),
            fleet: tap_fleet::aws::Fleet::new(&sdk, stack),
        }
    }
}

/// Why a page of the stack cannot be shown here.
fn no_stack() -> &'static str {
    if cfg!(feature = "fleet") {
        "Managed jobs and the fleet live on a stack: this tap ui serves the local store (`tap stack import`, then `tap ui`)."
    } else {
        "This tap was built without the fleet commands (--no-default-features): no managed jobs, no fleet."
    }
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// `GET /jobs`: the queue, each job's state, attempts and why it waits; Cancel on the live ones.
pub async fn jobs<R: RunStore + 'static, L: LogStore + 'static>(State(ui): State<Arc<Ui<R, L>>>) -> Response {
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        return match crate::commands::jobs::listed(&side.jobs, false).await {
            Ok(jobs) => html(page("jobs", Section::Jobs, &ui.xsrf, &jobs_body(&jobs))),
            Err(e) => pages::error_page(StatusCode::BAD_GATEWAY, &ui.xsrf, &format!("tap ui: the job queue: {e:#}")),
        };
    }
    let body = format!("<h1>Jobs</h1><p id=\"no-stack\">{}</p>", esc(no_stack()));
    html(page("jobs", Section::Jobs, &ui.xsrf, &body))
}

#[cfg(feature = "fleet")]
fn jobs_body(jobs: &[tap_core::jobs::JobRecord]) -> String {
    let mut s = String::from(
        "<h1>Jobs</h1><p id=\"cancel-said\" class=\"note\" role=\"status\"></p><table id=\"jobs\" class=\"runs\"><thead><tr>\
         <th>job</th><th>experiment</th><th>state</th><th>nodes</th><th>attempts</th><th>restarts</th><th>submitted</th>\
         <th>why it waits / how it ended</th><th></th></tr></thead><tbody>",
    );
    for j in jobs {
        let why = j.waiting.clone().or_else(|| j.outcome.clone()).unwrap_or_default();
        let cancel = if j.state.is_final() || j.cancel_requested_ms.is_some() {
            String::new()
        } else {
            format!("<button type=\"button\" class=\"cancel\" data-job=\"{}\">Cancel</button>", esc(&j.id))
        };
        let _ = write!(
            s,
            "<tr data-job=\"{id}\"><td><a href=\"/jobs/{idq}\">{id}</a></td><td>{exp}</td><td><span class=\"status {st}\">{st}</span>{asked}</td>\
             <td>{nodes}</td><td>{attempts}</td><td>{restarts}</td><td>{submitted}</td><td>{why}</td><td>{cancel}</td></tr>",
            id = esc(&j.id),
            idq = enc(&j.id),
            exp = esc(&j.spec.experiment),
            st = j.state.as_str(),
            asked = if j.cancel_requested_ms.is_some() && !j.state.is_final() { " (cancel asked)" } else { "" },
            nodes = j.spec.nodes,
            attempts = j.attempts.len(),
            restarts = j.restarts_used,
            submitted = esc(&tap_core::time::rfc3339(j.submitted_ms)),
            why = esc(&why),
        );
    }
    if jobs.is_empty() {
        s.push_str("<tr><td colspan=\"9\">No jobs: <code>tap launch</code> queues one.</td></tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// `GET /jobs/JOB`: `tap jobs show JOB`.
pub async fn job<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path(id): Path<String>,
) -> Response {
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        return match crate::commands::jobs::shown(&side.jobs, &side.runs, &id).await {
            Ok(shown) => {
                let body = format!(
                    "<h1>Job {}</h1><pre class=\"story\" id=\"story\">{}</pre><p><a href=\"/runs/{}/{}\">its run record</a></p>",
                    esc(&id),
                    esc(&crate::commands::jobs::shown_text(&shown)),
                    enc(&shown.job.spec.experiment),
                    enc(&shown.job.id),
                );
                html(page(&id, Section::Jobs, &ui.xsrf, &body))
            }
            Err(e) => pages::error_page(StatusCode::NOT_FOUND, &ui.xsrf, &format!("tap ui: {e:#}")),
        };
    }
    let _ = id;
    pages::error_page(StatusCode::NOT_FOUND, &ui.xsrf, no_stack())
}

/// `GET /api/jobs`: `tap jobs list --output json`.
pub async fn api_jobs<R: RunStore + 'static, L: LogStore + 'static>(State(ui): State<Arc<Ui<R, L>>>) -> Response {
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        return match crate::commands::jobs::listed(&side.jobs, false).await {
            Ok(jobs) => Json(jobs).into_response(),
            Err(e) => api::error(StatusCode::BAD_GATEWAY, format!("the job queue: {e:#}")),
        };
    }
    api::error(StatusCode::NOT_FOUND, no_stack().into())
}

/// `GET /api/jobs/JOB`: `tap jobs show JOB --output json`.
pub async fn api_job<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path(id): Path<String>,
) -> Response {
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        return match crate::commands::jobs::shown(&side.jobs, &side.runs, &id).await {
            Ok(shown) => Json(crate::commands::jobs::shown_json(&shown)).into_response(),
            Err(e) => api::error(StatusCode::NOT_FOUND, format!("{e:#}")),
        };
    }
    let _ = id;
    api::error(StatusCode::NOT_FOUND, no_stack().into())
}

/// `POST /jobs/JOB/cancel` (the guard has checked the XSRF token): `tap jobs cancel JOB
/// --output json`, with what `tap jobs cancel` says as `said`.
pub async fn cancel<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path(id): Path<String>,
) -> Response {
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        return match crate::commands::jobs::cancel(&side.jobs, &id).await {
            Ok((job, said)) => {
                let mut v = crate::commands::jobs::cancel_json(&job);
                v["said"] = serde_json::Value::String(said);
                Json(v).into_response()
            }
            Err(e) => api::error(StatusCode::NOT_FOUND, format!("{e:#}")),
        };
    }
    let _ = id;
    api::error(StatusCode::NOT_FOUND, no_stack().into())
}

/// `GET /fleet`: on a stack, the fleet's nodes and their GPU utilization over the last
/// [`UTILIZATION_MINUTES`]; on every store, the pools' record and advice.
pub async fn fleet<R: RunStore + 'static, L: LogStore + 'static>(State(ui): State<Arc<Ui<R, L>>>) -> Response {
    let mut body = String::from("<h1>Fleet</h1>");
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        match side.fleet.status(crate::now_ms()).await {
            Ok(status) => {
                let _ = write!(
                    body,
                    "<section><h2>Nodes</h2><pre id=\"fleet-status\">{}</pre>\
                     <figure class=\"chart\" data-time=\"1\" data-metric=\"GPU utilization %\" data-src=\"/api/fleet/utilization\">\
                     <figcaption>GPU utilization (%), each node, last {UTILIZATION_MINUTES} minutes</figcaption></figure></section>",
                    esc(&tap_fleet::render::status(&status, crate::now_ms()))
                );
            }
            Err(e) => {
                let _ = write!(body, "<p class=\"error\">tap ui: the fleet: {}</p>", esc(&format!("{e:#}")));
            }
        }
    }
    if !cfg!(feature = "fleet") || !has_stack(&ui) {
        let _ = write!(body, "<p id=\"no-stack\">{}</p>", esc(no_stack()));
    }
    #[cfg(feature = "fleet")]
    match ui.trainings().await {
        Ok(all) => {
            let view = crate::commands::pools::view(&all, POOL_DAYS, crate::now_ms());
            let _ = write!(
                body,
                "<section><h2>Pools, last {POOL_DAYS} days</h2><pre id=\"pools\">{}</pre></section>",
                esc(&crate::render::pools(&view))
            );
        }
        Err(e) => {
            let _ = write!(body, "<p class=\"error\">tap ui: the store: {}</p>", esc(&format!("{e:#}")));
        }
    }
    html(page("fleet", Section::Fleet, &ui.xsrf, &body))
}

/// Days of runs the pools' advice reads (`tap fleet pools`'s default).
#[cfg(feature = "fleet")]
const POOL_DAYS: u32 = 30;

fn has_stack<R, L>(ui: &Ui<R, L>) -> bool {
    #[cfg(feature = "fleet")]
    {
        ui.stack.is_some()
    }
    #[cfg(not(feature = "fleet"))]
    {
        let _ = ui;
        false
    }
}

/// `GET /api/fleet`: `tap fleet status --output json`.
pub async fn api_fleet<R: RunStore + 'static, L: LogStore + 'static>(State(ui): State<Arc<Ui<R, L>>>) -> Response {
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        return match side.fleet.status(crate::now_ms()).await {
            Ok(s) => Json(s).into_response(),
            Err(e) => api::error(StatusCode::BAD_GATEWAY, format!("the fleet: {e:#}")),
        };
    }
    api::error(StatusCode::NOT_FOUND, no_stack().into())
}

/// `GET /api/fleet/utilization`: each running node's per-minute GPU utilization, as a chart
/// of compared runs has it (`steps`: epoch seconds; a series per node).
pub async fn api_utilization<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
) -> Response {
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        let now = crate::now_ms();
        let read = async {
            let status = side.fleet.status(now).await?;
            side.fleet.utilization(&status, now, UTILIZATION_MINUTES).await
        };
        return match read.await {
            Ok(by_node) => Json(utilization_json(&by_node.into_iter().collect())).into_response(),
            Err(e) => api::error(StatusCode::BAD_GATEWAY, format!("the fleet: {e:#}")),
        };
    }
    api::error(StatusCode::NOT_FOUND, no_stack().into())
}

/// `GET /api/fleet/pools`: `tap fleet pools --output json`.
pub async fn api_pools<R: RunStore + 'static, L: LogStore + 'static>(State(ui): State<Arc<Ui<R, L>>>) -> Response {
    #[cfg(feature = "fleet")]
    return match ui.trainings().await {
        Ok(all) => Json(crate::commands::pools::view(&all, POOL_DAYS, crate::now_ms())).into_response(),
        Err(e) => api::error(StatusCode::BAD_GATEWAY, format!("the store: {e:#}")),
    };
    #[cfg(not(feature = "fleet"))]
    {
        let _ = ui;
        api::error(StatusCode::NOT_FOUND, no_stack().into())
    }
}

/// The longest span of a run's GPU utilization charted (CloudWatch keeps per-minute points
/// for 15 days; a longer run shows its last day).
pub const SYSTEM_MINUTES_MAX: i64 = 24 * 60;

/// The instances a run's attempts ran on, oldest first, each once.
pub fn instances_of(run: &tap_core::runs::Run) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for a in run.all_attempts(run.status) {
        if let Some(i) = a.instance_id.filter(|i| !ids.contains(i)) {
            ids.push(i);
        }
    }
    ids
}

/// Whether the run page can chart the run's nodes' GPU utilization: a stack, and a node.
pub fn has_system<R, L>(ui: &Ui<R, L>, run: &tap_core::runs::Run) -> bool {
    has_stack(ui) && !instances_of(run).is_empty()
}

/// `GET /api/runs/EXP/RUN/system`: the GPU utilization (CloudWatch, from tap-agent) of the
/// instances the run's attempts ran on, per minute over the run (its last day at most), as a
/// chart of compared runs has it (`steps`: epoch seconds; a series per instance).
pub async fn api_system<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
) -> Response {
    let run = match ui.run(&exp, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => return api::error(StatusCode::NOT_FOUND, format!("no run {exp}/{id}")),
        Err(e) => return api::error(StatusCode::BAD_GATEWAY, format!("the store: {e:#}")),
    };
    #[cfg(feature = "fleet")]
    if let Some(side) = &ui.stack {
        let end = run.ended_ms.unwrap_or_else(crate::now_ms);
        let minutes = ((end - run.started_ms) / 60_000 + 2).clamp(1, SYSTEM_MINUTES_MAX);
        let ids = instances_of(&run);
        if ids.is_empty() {
            return Json(utilization_json(&Default::default())).into_response();
        }
        let metric = [(tap_core::contract::Metric::GpuUtilization, "Average")];
        return match side.fleet.per_instance(&metric, &ids, end, minutes).await {
            Ok(points) => {
                let by_node: std::collections::BTreeMap<String, Vec<(i64, f64)>> =
                    points.into_iter().map(|((_, id), v)| (id, v)).collect();
                Json(utilization_json(&by_node)).into_response()
            }
            Err(e) => api::error(StatusCode::BAD_GATEWAY, format!("CloudWatch: {e:#}")),
        };
    }
    let _ = run;
    api::error(StatusCode::NOT_FOUND, no_stack().into())
}

/// Per-node series of epoch-ms points as the compare shape (`steps` in epoch seconds).
pub fn utilization_json(by_node: &std::collections::BTreeMap<String, Vec<(i64, f64)>>) -> serde_json::Value {
    let series: Vec<Vec<(u64, f64)>> = by_node
        .values()
        .map(|points| {
            let mut p: Vec<(u64, f64)> = points.iter().map(|&(ms, v)| ((ms / 1000).max(0) as u64, v)).collect();
            p.sort_by_key(|x| x.0);
            tap_core::downsample::last_per_step(p)
        })
        .collect();
    let aligned = tap_core::downsample::align(&series);
    let runs: Vec<serde_json::Value> = by_node
        .keys()
        .zip(aligned.values)
        .map(|(node, values)| serde_json::json!({ "label": node, "points": values.len(), "values": values }))
        .collect();
    serde_json::json!({ "metric": "gpu_utilization_percent", "steps": aligned.steps, "runs": runs })
}
