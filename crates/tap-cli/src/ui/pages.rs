//! The pages of `tap ui`, rendered on the server: the runs table (filtered, sorted and paged
//! here, with the columns the user picked), a run, runs compared. Charts are `div`s whose
//! `data-src` names the `/api/` series `app.js` draws; every text from the store is escaped.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tap_core::runs::{Run, RunStatus};

use super::html::{Section, enc, esc, number, page};
use super::query::{RunsQuery, RunsView, view};
use super::{Ui, guard};
use crate::store::{LogStore, RunStore};

/// Log lines a run page shows (the last ones; `tap logs` has them all).
pub const LOG_TAIL: usize = 200;
/// Runs one comparison draws (MLflow slows past 100: mlflow #21841).
pub const MAX_COMPARED: usize = 100;
/// Metrics one comparison charts (the first, by name).
pub const MAX_COMPARED_METRICS: usize = 30;
/// Shown instead of a secret hyperparameter's value (`--show-secrets` shows it).
pub const MASK: &str = "••••••";

/// An error as a page: one line, escaped.
pub fn error_page(status: StatusCode, xsrf: &str, message: &str) -> Response {
    let body = format!("<p class=\"error\">{}</p>", esc(message));
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page("error", Section::Runs, xsrf, &body))
        .into_response()
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn store_error(xsrf: &str, e: &anyhow::Error) -> Response {
    error_page(StatusCode::BAD_GATEWAY, xsrf, &format!("tap ui: the store: {e:#}"))
}

/// `GET /`: the runs table.
pub async fn runs<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match RunsQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &ui.xsrf, &format!("tap ui: {e}")),
    };
    let all = match ui.trainings().await {
        Ok(a) => a,
        Err(e) => return store_error(&ui.xsrf, &e),
    };
    let now = crate::now_ms();
    let v = view(&all, &q, now);
    html(page("runs", Section::Runs, &ui.xsrf, &runs_body(&v, &q, now)))
}

fn runs_body(v: &RunsView<'_>, q: &RunsQuery, now: i64) -> String {
    let mut s = String::with_capacity(64 * 1024);
    s.push_str(&filter_form(v, q));
    s.push_str(&column_picker(v, q));
    let first = q.page * q.per + 1;
    let last = (q.page * q.per + v.rows.len()).max(first - 1);
    let _ = write!(s, "<p class=\"count\" id=\"count\">runs {first}–{last} of {}</p>", v.total);
    s.push_str("<form action=\"/compare\" method=\"get\" id=\"compare-form\">");
    s.push_str("<table id=\"runs\" class=\"runs\"><thead><tr><th></th>");
    let fixed = ["id", "experiment", "status", "started", "duration"];
    for f in fixed.iter().map(|f| f.to_string()).chain(["node".into()]).chain(v.columns.iter().cloned()) {
        let sortable = f != "node";
        let current = q.sort.as_deref().map(|s| s.trim_start_matches('-'));
        let arrow = match (current == Some(f.as_str()), q.sort.as_deref().is_some_and(|s| s.starts_with('-'))) {
            (true, true) => " ▼",
            (true, false) => " ▲",
            _ => "",
        };
        if sortable {
            let next = if current == Some(f.as_str()) && !q.sort.as_deref().is_some_and(|s| s.starts_with('-')) {
                format!("-{f}")
            } else {
                f.clone()
            };
            let href = q.href(|q| {
                q.sort = Some(next);
                q.page = 0;
            });
            let _ = write!(
                s,
                "<th data-field=\"{}\"><a class=\"sort\" href=\"{}\">{}{arrow}</a></th>",
                esc(&f),
                esc(&href),
                esc(&f)
            );
        } else {
            let _ = write!(s, "<th>{}</th>", esc(&f));
        }
    }
    s.push_str("</tr></thead><tbody>");
    let fields: Vec<Option<tap_core::query::Field>> =
        v.columns.iter().map(|c| tap_core::query::Field::parse(c).ok()).collect();
    for r in &v.rows {
        let key = format!("{}/{}", r.experiment_id, r.run_id);
        let _ = write!(
            s,
            "<tr data-run=\"{k}\"><td><input type=\"checkbox\" name=\"run\" value=\"{k}\" aria-label=\"select {k}\"></td>\
             <td><a class=\"run-link\" href=\"{href}\">{label}</a>{id}</td><td>{exp}</td>\
             <td><span class=\"status {st}\">{st}</span></td><td>{started}</td><td>{dur}</td><td>{node}</td>",
            k = esc(&key),
            href = esc(&run_href(r)),
            label = esc(r.label()),
            id = if r.name.is_some() { format!(" <small>{}</small>", esc(&r.run_id)) } else { String::new() },
            exp = esc(&r.experiment_id),
            st = r.status.as_str(),
            started = esc(&tap_core::time::rfc3339(r.started_ms)),
            dur = esc(&crate::render::duration(r)),
            node = esc(&node_of(r)),
        );
        for f in &fields {
            let cell = match f.as_ref().and_then(|f| f.value(r, now)) {
                Some(tap_core::query::Value::Number(n)) => number(n),
                Some(v) => v.to_string(),
                None => "–".into(),
            };
            let _ = write!(s, "<td>{}</td>", esc(&cell));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s.push_str("<p><button type=\"submit\" id=\"compare\">Compare selected</button></p></form>");
    s.push_str(&pager(v, q));
    s
}

/// The filter: experiment, status, text, tag, conditions; the sort and columns ride along.
fn filter_form(v: &RunsView<'_>, q: &RunsQuery) -> String {
    let mut s = String::from("<form class=\"filter\" method=\"get\" action=\"/\" id=\"filter\">");
    s.push_str("<label>experiment <select name=\"exp\"><option value=\"\">all</option>");
    for e in &v.experiments {
        let sel = if q.experiment.as_deref() == Some(e.as_str()) { " selected" } else { "" };
        let _ = write!(s, "<option value=\"{0}\"{sel}>{0}</option>", esc(e));
    }
    s.push_str("</select></label> <fieldset class=\"statuses\"><legend>status</legend>");
    for st in RunStatus::ALL {
        let checked = if q.statuses.contains(&st) { " checked" } else { "" };
        let _ = write!(
            s,
            "<label><input type=\"checkbox\" name=\"status\" value=\"{0}\"{checked}>{0}</label>",
            st.as_str()
        );
    }
    let tag = q.tags.first().map(|(k, v)| format!("{k}={v}")).unwrap_or_default();
    let _ = write!(
        s,
        "</fieldset> <label>search <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"id, name, tag\"></label> \
         <label>tag <input name=\"tag\" value=\"{}\" placeholder=\"team=nlp\"></label> \
         <label>where <input name=\"where\" id=\"where\" value=\"{}\" placeholder=\"loss&lt;0.1, lr&gt;=0.001\"></label>",
        esc(q.text.as_deref().unwrap_or_default()),
        esc(&tag),
        esc(q.conditions_text.as_deref().unwrap_or_default()),
    );
    if let Some(sort) = &q.sort {
        let _ = write!(s, "<input type=\"hidden\" name=\"sort\" value=\"{}\">", esc(sort));
    }
    for c in &q.columns {
        let _ = write!(s, "<input type=\"hidden\" name=\"col\" value=\"{}\">", esc(c));
    }
    s.push_str(" <button type=\"submit\">Filter</button> <a href=\"/\">clear</a></form>");
    s
}

/// The column picker: every candidate as a checkbox (a text box narrows the list), the
/// filter riding along.
fn column_picker(v: &RunsView<'_>, q: &RunsQuery) -> String {
    let mut s = String::from(
        "<details class=\"columns\" id=\"columns\"><summary>Columns</summary><form method=\"get\" action=\"/\">\
         <input type=\"search\" id=\"column-filter\" placeholder=\"narrow the list\" aria-label=\"narrow the columns\">\
         <div class=\"candidates\">",
    );
    for c in &v.candidates {
        let checked = if v.columns.contains(c) { " checked" } else { "" };
        let _ = write!(s, "<label><input type=\"checkbox\" name=\"col\" value=\"{0}\"{checked}>{0}</label>", esc(c));
    }
    s.push_str("</div>");
    let keep = q.href(|q| {
        q.columns.clear();
        q.page = 0;
    });
    for (k, val) in form_urlencoded::parse(keep.trim_start_matches(['/', '?']).as_bytes()) {
        let _ = write!(s, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(&k), esc(&val));
    }
    s.push_str("<button type=\"submit\" id=\"apply-columns\">Show these columns</button></form></details>");
    s
}

fn pager(v: &RunsView<'_>, q: &RunsQuery) -> String {
    let pages = v.total.div_ceil(q.per).max(1);
    let mut s = format!("<nav class=\"pager\">page {} of {pages}", q.page + 1);
    if q.page > 0 {
        let _ = write!(s, " <a rel=\"prev\" href=\"{}\">previous</a>", esc(&q.href(|q| q.page -= 1)));
    }
    if q.page + 1 < pages {
        let _ = write!(s, " <a rel=\"next\" href=\"{}\">next</a>", esc(&q.href(|q| q.page += 1)));
    }
    s.push_str("</nav>");
    s
}

pub fn run_href(r: &Run) -> String {
    format!("/runs/{}/{}", enc(&r.experiment_id), enc(&r.run_id))
}

fn node_of(r: &Run) -> String {
    match (&r.instance_id, &r.provenance) {
        (Some(i), _) => i.clone(),
        _ => r.host.clone(),
    }
}

/// Whether a hyperparameter's name says it is a secret.
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let parts: Vec<&str> = n.split(['_', '-', '.', '/']).collect();
    parts
        .iter()
        .any(|p| ["token", "secret", "password", "passwd", "credential", "credentials", "apikey", "pat"].contains(p))
        || parts.last() == Some(&"key")
}

/// `GET /runs/EXP/RUN`: one run.
pub async fn run<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
) -> Response {
    let run = match ui.run(&exp, &id).await {
        Ok(Some(r)) => r,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &ui.xsrf, &format!("tap ui: no run {exp}/{id}")),
        Err(e) => return store_error(&ui.xsrf, &e),
    };
    let lines = match ui.logs_of(&run).await {
        Ok(l) => l,
        Err(e) => return store_error(&ui.xsrf, &e.into()),
    };
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
    let body = run_body(&run, tail, ui.settings.show_secrets, super::ops::has_system(&ui, &run));
    html(page(run.label(), Section::Runs, &ui.xsrf, &body))
}

fn run_body(r: &Run, tail: &[crate::store::LogLine], show_secrets: bool, system: bool) -> String {
    let mut s = String::with_capacity(32 * 1024);
    let base = run_href(r);
    let _ = write!(
        s,
        "<h1 id=\"run-title\">{label} <span class=\"status {st}\">{st}</span></h1>\
         <dl class=\"facts\"><dt>run</dt><dd>{id}</dd><dt>experiment</dt><dd><a href=\"/?exp={expq}\">{exp}</a></dd>\
         <dt>command</dt><dd><code>{cmd}</code></dd><dt>node</dt><dd>{node}</dd>\
         <dt>started</dt><dd>{started}</dd><dt>duration</dt><dd>{dur}</dd>",
        label = esc(r.label()),
        st = r.status.as_str(),
        id = esc(&r.run_id),
        expq = enc(&r.experiment_id),
        exp = esc(&r.experiment_id),
        cmd = esc(&r.command.join(" ")),
        node = esc(&node_of(r)),
        started = esc(&tap_core::time::rfc3339(r.started_ms)),
        dur = esc(&crate::render::duration(r)),
    );
    if !r.tags.is_empty() {
        let tags: Vec<String> =
            r.tags.iter().map(|(k, v)| format!("<span class=\"tag\">{}={}</span>", esc(k), esc(v))).collect();
        let _ = write!(s, "<dt>tags</dt><dd>{}</dd>", tags.join(" "));
    }
    if let Some(n) = &r.note {
        let _ = write!(s, "<dt>note</dt><dd>{}</dd>", esc(n));
    }
    if let Some(c) = &r.checkpoint {
        let _ = write!(s, "<dt>latest checkpoint</dt><dd>{}</dd>", esc(c));
    }
    if let Some(from) = &r.resumed_from {
        let _ = write!(s, "<dt>forked from</dt><dd>{}</dd>", esc(from));
    }
    s.push_str("</dl>");
    // Charts: one per metric, drawn by app.js from the downsampled series.
    s.push_str(
        "<section><h2>Metrics</h2><div class=\"chart-tools\"><label><input type=\"checkbox\" id=\"log-y\"> log scale</label> \
         <label>smoothing <input type=\"range\" id=\"smoothing\" min=\"0\" max=\"0.99\" step=\"0.01\" value=\"0\"></label> \
         <output id=\"smoothing-value\">0</output> <small>drag to zoom (full resolution), double-click to reset</small></div>\
         <div class=\"charts\">",
    );
    for name in r.final_metrics.keys() {
        let _ = write!(
            s,
            "<figure class=\"chart\" data-metric=\"{m}\" data-src=\"/api{base}/series?metric={q}\"><figcaption>{m}</figcaption></figure>",
            m = esc(name),
            base = esc(&base),
            q = enc(name),
        );
    }
    if r.final_metrics.is_empty() {
        s.push_str("<p>No metrics recorded.</p>");
    }
    s.push_str("</div></section>");
    if system {
        let _ = write!(
            s,
            "<section><h2>System</h2><div class=\"charts\"><figure class=\"chart\" data-time=\"1\" \
             data-metric=\"GPU utilization %\" data-src=\"/api{}/system\"><figcaption>GPU utilization (%) of its nodes \
             (tap-agent, CloudWatch)</figcaption></figure></div></section>",
            esc(&base)
        );
    }
    s.push_str(&hparams_table(r, show_secrets));
    s.push_str(&attempts_table(r));
    let _ = write!(
        s,
        "<section><h2>Checkpoints</h2><div id=\"checkpoints\" data-src=\"/api{}/checkpoints\">loading…</div></section>",
        esc(&base)
    );
    let _ = write!(
        s,
        "<section><h2>Goodput</h2><div id=\"goodput\" data-src=\"/api{b}/goodput\">loading…</div>\
         <img class=\"timeline\" id=\"timeline\" alt=\"attempts timeline\" data-src=\"{b}/goodput.png\"></section>",
        b = esc(&base)
    );
    s.push_str("<section><h2>Log</h2><pre class=\"log\" id=\"log\">");
    for l in tail {
        let class = if l.stream == crate::store::Stream::Stderr { "err" } else { "out" };
        let _ = writeln!(s, "<span class=\"{class}\">{}</span>", esc(&l.text));
    }
    let _ = write!(
        s,
        "</pre><p><small>the last {} lines; all of them: <code>tap logs {}</code></small></p></section>",
        tail.len(),
        esc(&r.run_id)
    );
    s
}

fn hparams_table(r: &Run, show_secrets: bool) -> String {
    let mut s = String::from("<section><h2>Hyperparameters</h2>");
    if r.hparams.is_empty() {
        s.push_str("<p>None recorded.</p></section>");
        return s;
    }
    s.push_str("<table class=\"hparams\"><thead><tr><th>name</th><th>value</th><th>version</th><th>from</th></tr></thead><tbody>");
    for (k, h) in &r.hparams {
        let value = if !show_secrets && secret_name(k) { MASK.to_owned() } else { h.value.clone() };
        let from = match h.source {
            tap_core::runs::ParamSource::Default => "stored",
            tap_core::runs::ParamSource::Override => "override",
        };
        let _ = write!(s, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{from}</td></tr>", esc(k), esc(&value), h.version);
    }
    s.push_str("</tbody></table></section>");
    s
}

fn attempts_table(r: &Run) -> String {
    let mut s = String::from(
        "<section><h2>Attempts</h2><table class=\"attempts\"><thead><tr><th>#</th><th>started</th><th>ended</th>\
         <th>status</th><th>node</th><th>interruption</th></tr></thead><tbody>",
    );
    for a in r.all_attempts(r.status) {
        let why = a
            .interruption
            .as_ref()
            .map(|i| match &i.verdict {
                Some(v) => format!("{}; {}", i.reason, v.line()),
                None => i.reason.clone(),
            })
            .unwrap_or_default();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.number,
            esc(&tap_core::time::rfc3339(a.started_ms)),
            esc(&a.ended_ms.map(tap_core::time::rfc3339).unwrap_or_default()),
            a.status.as_str(),
            esc(a.instance_id.as_deref().unwrap_or(&a.host)),
            esc(&why),
        );
    }
    s.push_str("</tbody></table></section>");
    s
}

/// `GET /runs/EXP/RUN/goodput.png`: the attempts' timeline `tap goodput --plot` draws.
pub async fn goodput_png<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    Path((exp, id)): Path<(String, String)>,
) -> Response {
    let report = match super::api::goodput_of(&ui, &exp, &id).await {
        Ok(Some(g)) => g,
        Ok(None) => return guard::text(StatusCode::NOT_FOUND, format!("tap ui: no run {exp}/{id}")),
        Err(e) => return guard::text(StatusCode::BAD_GATEWAY, format!("tap ui: {e:#}")),
    };
    let drawn = crate::blocking::run(move |_| {
        let t = crate::plot::timeline(&report.run_id, &report.goodput);
        crate::plot::render_timelines(&format!("goodput {:.1}%", report.goodput.goodput_pct), &[t], (900, 220))
    })
    .await;
    match drawn {
        Ok(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        Err(e) => guard::text(StatusCode::INTERNAL_SERVER_ERROR, format!("tap ui: drawing the timeline: {e:#}")),
    }
}

/// `GET /compare?run=EXP/RUN&run=...`: the runs' curves overlaid, what differs in their
/// hyperparameters, and hyperparameters against a chosen final metric.
pub async fn compare<R: RunStore + 'static, L: LogStore + 'static>(
    State(ui): State<Arc<Ui<R, L>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let all = match ui.trainings().await {
        Ok(a) => a,
        Err(e) => return store_error(&ui.xsrf, &e),
    };
    let (chosen, target) = match compared(&all, raw.as_deref()) {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &ui.xsrf, &format!("tap ui: {e}")),
    };
    html(page(
        "compare",
        Section::Compare,
        &ui.xsrf,
        &compare_body(&chosen, target.as_deref(), ui.settings.show_secrets),
    ))
}

/// The runs a compare URL names (`run=EXP/ID`, repeated), and its `target` metric.
pub fn compared<'a>(all: &'a [Run], raw: Option<&str>) -> Result<(Vec<&'a Run>, Option<String>), String> {
    let mut chosen: Vec<&Run> = Vec::new();
    let mut target = None;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "run" => {
                let (e, id) = v.split_once('/').ok_or_else(|| format!("run: {v:?} is not EXPERIMENT/RUN"))?;
                let r = super::find_run(all, e, id).ok_or_else(|| format!("run: no run {v}"))?;
                if !chosen.iter().any(|c| std::ptr::eq(*c, r)) {
                    chosen.push(r);
                }
            }
            "target" if !v.is_empty() => target = Some(v.into_owned()),
            _ => {}
        }
    }
    if chosen.len() > MAX_COMPARED {
        return Err(format!("{} runs chosen; a comparison draws {MAX_COMPARED} at most", chosen.len()));
    }
    Ok((chosen, target))
}

fn compare_body(runs: &[&Run], target: Option<&str>, show_secrets: bool) -> String {
    let mut s = String::from("<h1>Compare</h1>");
    if runs.is_empty() {
        s.push_str("<p>Select runs in the <a href=\"/\">runs table</a> and press <em>Compare selected</em>.</p>");
        return s;
    }
    let query: String = runs
        .iter()
        .map(|r| format!("run={}", enc(&format!("{}/{}", r.experiment_id, r.run_id))))
        .collect::<Vec<_>>()
        .join("&");
    s.push_str("<ol class=\"legend\" id=\"legend\">");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(
            s,
            "<li class=\"c{}\"><a href=\"{}\">{}</a> <small>{}</small></li>",
            i % 10,
            esc(&run_href(r)),
            esc(r.label()),
            esc(&r.experiment_id)
        );
    }
    s.push_str("</ol>");
    let metrics: BTreeSet<&str> = runs.iter().flat_map(|r| r.final_metrics.keys().map(String::as_str)).collect();
    s.push_str(
        "<section><h2>Metrics</h2><div class=\"chart-tools\"><label><input type=\"checkbox\" id=\"log-y\"> log scale</label> \
         <label>smoothing <input type=\"range\" id=\"smoothing\" min=\"0\" max=\"0.99\" step=\"0.01\" value=\"0\"></label> \
         <output id=\"smoothing-value\">0</output></div><div class=\"charts\">",
    );
    for m in metrics.iter().take(MAX_COMPARED_METRICS) {
        let _ = write!(
            s,
            "<figure class=\"chart\" data-metric=\"{me}\" data-src=\"/api/compare?{q}&amp;metric={mq}\"><figcaption>{me}</figcaption></figure>",
            me = esc(m),
            q = esc(&query),
            mq = enc(m),
        );
    }
    s.push_str("</div></section>");
    s.push_str(&hparam_diff(runs, show_secrets));
    s.push_str(&parallel(runs, target, &metrics, &query, show_secrets));
    s
}

/// The hyperparameters whose values are not the same in every run (a missing one differs).
pub fn differing(runs: &[&Run]) -> Vec<String> {
    let names: BTreeSet<&str> = runs.iter().flat_map(|r| r.hparams.keys().map(String::as_str)).collect();
    names
        .into_iter()
        .filter(|n| {
            let values: BTreeSet<Option<&str>> =
                runs.iter().map(|r| r.hparams.get(*n).map(|h| h.value.as_str())).collect();
            values.len() > 1
        })
        .map(str::to_owned)
        .collect()
}

fn hparam_diff(runs: &[&Run], show_secrets: bool) -> String {
    let names = differing(runs);
    let mut s = String::from("<section><h2>Hyperparameters that differ</h2>");
    if names.is_empty() {
        s.push_str("<p id=\"no-diff\">The runs share every hyperparameter.</p></section>");
        return s;
    }
    s.push_str("<table class=\"diff\" id=\"diff\"><thead><tr><th>name</th>");
    for r in runs {
        let _ = write!(s, "<th>{}</th>", esc(r.label()));
    }
    s.push_str("</tr></thead><tbody>");
    for n in &names {
        let _ = write!(s, "<tr><td>{}</td>", esc(n));
        for r in runs {
            let v = match r.hparams.get(n) {
                Some(_) if !show_secrets && secret_name(n) => MASK.to_owned(),
                Some(h) => h.value.clone(),
                None => "–".into(),
            };
            let _ = write!(s, "<td>{}</td>", esc(&v));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></section>");
    s
}

/// An axis of the parallel coordinates whose largest value is this many times its smallest is
/// drawn in log scale.
const LOG_AXIS_RATIO: f64 = 100.0;
/// Width and height of the parallel-coordinates drawing (SVG user units).
const PARALLEL_SIZE: (f64, f64) = (900.0, 320.0);

/// Parallel coordinates: one axis per differing hyperparameter and one for the target metric,
/// a line per run coloured by that metric (SVG drawn here: no script needed).
fn parallel(runs: &[&Run], target: Option<&str>, metrics: &BTreeSet<&str>, query: &str, show_secrets: bool) -> String {
    let mut s = String::from("<section><h2>Hyperparameters → metric</h2>");
    let Some(target) = target.or_else(|| metrics.iter().next().copied()) else {
        s.push_str("<p>No metric to plot against.</p></section>");
        return s;
    };
    let _ = write!(s, "<form method=\"get\" action=\"/compare\" id=\"target-form\">");
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("run=") {
            let decoded: String =
                form_urlencoded::parse(format!("v={v}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
            let _ = write!(s, "<input type=\"hidden\" name=\"run\" value=\"{}\">", esc(&decoded));
        }
    }
    s.push_str("<label>colour by <select name=\"target\" id=\"target\">");
    for m in metrics {
        let sel = if *m == target { " selected" } else { "" };
        let _ = write!(s, "<option value=\"{0}\"{sel}>{0}</option>", esc(m));
    }
    s.push_str("</select></label> <button type=\"submit\">Draw</button></form>");
    let mut axes: Vec<String> = differing(runs).into_iter().filter(|n| show_secrets || !secret_name(n)).collect();
    axes.push(format!("metric.{target}"));
    // Each axis: numbers scale between their min and max; text values are spread as categories.
    let column = |axis: &str| -> Vec<Option<String>> {
        runs.iter()
            .map(|r| match axis.strip_prefix("metric.") {
                Some(m) => r.final_metrics.get(m).map(|v| v.to_string()),
                None => r.hparams.get(axis).map(|h| h.value.clone()),
            })
            .collect()
    };
    let (w, h) = PARALLEL_SIZE;
    let (top, bottom, side) = (24.0, 24.0, 60.0);
    let x_of = |i: usize| side + (w - 2.0 * side) * i as f64 / (axes.len().max(2) - 1) as f64;
    let mut positions: Vec<Vec<Option<f64>>> = Vec::new();
    let mut labels: Vec<(String, String)> = Vec::new();
    for axis in &axes {
        let col = column(axis);
        let numbers: Vec<Option<f64>> = col.iter().map(|v| v.as_deref().and_then(|v| v.parse::<f64>().ok())).collect();
        let all_numeric = col.iter().zip(&numbers).all(|(v, n)| v.is_none() || n.is_some());
        let pos: Vec<Option<f64>> = if all_numeric {
            let present: Vec<f64> = numbers.iter().flatten().copied().collect();
            let (lo, hi) = present.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            labels.push((number(lo), number(hi)));
            // Values over two orders of magnitude and more (learning rates): a log axis.
            let log = lo > 0.0 && hi / lo >= LOG_AXIS_RATIO;
            let at = |v: f64| if log { v.ln() } else { v };
            let (a, b) = (at(lo), at(hi));
            numbers.iter().map(|n| n.map(|v| if b > a { (at(v) - a) / (b - a) } else { 0.5 })).collect()
        } else {
            let cats: Vec<&str> =
                col.iter().flatten().map(String::as_str).collect::<BTreeSet<_>>().into_iter().collect();
            labels.push((
                cats.first().copied().unwrap_or_default().to_owned(),
                cats.last().copied().unwrap_or_default().to_owned(),
            ));
            col.iter()
                .map(|v| {
                    let i = cats.iter().position(|c| Some(*c) == v.as_deref())?;
                    Some(if cats.len() > 1 { i as f64 / (cats.len() - 1) as f64 } else { 0.5 })
                })
                .collect()
        };
        positions.push(pos);
    }
    let _ = write!(
        s,
        "<svg class=\"parallel\" id=\"parallel\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"hyperparameters against {}\">",
        esc(target)
    );
    let y_of = |p: f64| top + (h - top - bottom) * (1.0 - p);
    let colour_axis = positions.last().cloned().unwrap_or_default();
    for (ri, r) in runs.iter().enumerate() {
        let points: Vec<String> = positions
            .iter()
            .enumerate()
            .filter_map(|(ai, p)| p[ri].map(|v| format!("{:.1},{:.1}", x_of(ai), y_of(v))))
            .collect();
        // Low values blue, high values red (the target's own scale).
        let t = colour_axis.get(ri).copied().flatten().unwrap_or(0.5);
        let colour = format!("rgb({},{},{})", (40.0 + 200.0 * t) as u8, 80, (240.0 - 200.0 * t) as u8);
        let _ = write!(
            s,
            "<polyline class=\"run-line\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            esc(r.label())
        );
    }
    for (ai, axis) in axes.iter().enumerate() {
        let x = x_of(ai);
        let (lo, hi) = &labels[ai];
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
             <text x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\" class=\"axis\">{}</text>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"tick\">{}</text>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
            h - bottom,
            esc(&tap_core::text::clip(axis, 24)),
            top - 2.0 + 12.0,
            esc(&tap_core::text::clip(hi, 16)),
            h - 6.0,
            esc(&tap_core::text::clip(lo, 16)),
        );
    }
    s.push_str("</svg></section>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_told_apart() {
        for s in ["api_token", "WANDB_API_KEY", "hf_key", "db-password", "aws_secret_access_key", "credentials"] {
            assert!(secret_name(s), "{s}");
        }
        for s in ["lr", "key_dim", "monkey", "tokenizer_name_len", "batch_size", "pattern"] {
            assert!(!secret_name(s), "{s}");
        }
    }
}
