//! The runs table's URL: which runs (experiment, status, text, tag, conditions), in which
//! order, which columns, which page — parsed and checked once ([`RunsQuery::parse`]), written
//! back into links ([`RunsQuery::href`]), and applied to a listing ([`view`]): pure.

use std::collections::BTreeSet;

use tap_core::query::{Condition, Field, Query, Sort};
use tap_core::runs::{Run, RunStatus};

/// Rows a page shows unless `per` says otherwise.
pub const DEFAULT_PER_PAGE: usize = 50;
/// The most rows one page shows.
pub const MAX_PER_PAGE: usize = 500;
/// The most columns one table shows (thousands of columns froze MLflow's and Aim's tables:
/// mlflow #11927, aim #2753).
pub const MAX_COLUMNS: usize = 40;
/// Columns a table shows before the user picks: this many final metrics, then this many
/// hyperparameters.
pub const DEFAULT_COLUMNS_EACH: usize = 3;
/// The most candidates the column picker lists (filtered by name in the page).
pub const MAX_CANDIDATES: usize = 2_000;

/// The runs table's parameters, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunsQuery {
    pub experiment: Option<String>,
    pub statuses: Vec<RunStatus>,
    /// Part of the id, name, experiment or a tag value.
    pub text: Option<String>,
    pub tags: Vec<(String, String)>,
    /// As typed (`loss<0.1, lr>=0.01`), and parsed.
    pub conditions_text: Option<String>,
    pub conditions: Vec<Condition>,
    /// `[-]FIELD`, as typed.
    pub sort: Option<String>,
    /// Fields (`metric.loss`, `param.lr`, `tag.team`, `duration`); empty: the defaults.
    pub columns: Vec<String>,
    /// From 0.
    pub page: usize,
    pub per: usize,
}

impl RunsQuery {
    /// From a URL's query: `exp`, `status` (repeated), `q`, `tag` (`KEY=VALUE`, repeated),
    /// `where` (conditions, comma-separated or repeated), `sort`, `col` (repeated), `page`,
    /// `per`. A bad value is refused, named.
    pub fn parse(query: Option<&str>) -> Result<RunsQuery, String> {
        let mut q = RunsQuery { per: DEFAULT_PER_PAGE, ..RunsQuery::default() };
        let mut conditions = Vec::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "exp" => q.experiment = Some(v.to_owned()),
                "status" => q.statuses.push(RunStatus::parse(v).ok_or_else(|| format!("status: no status {v:?}"))?),
                "q" => q.text = Some(v.to_owned()),
                "tag" => q.tags.push(tap_core::query::parse_tag(v).map_err(|e| format!("tag: {e}"))?),
                "where" => conditions.extend(v.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned)),
                "sort" => {
                    Sort::parse(v).map_err(|e| format!("sort: {e}"))?;
                    q.sort = Some(v.to_owned());
                }
                "col" => {
                    for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                        Field::parse(c).map_err(|e| format!("col: {e}"))?;
                        if !q.columns.iter().any(|x| x == c) {
                            q.columns.push(c.to_owned());
                        }
                    }
                }
                "page" => q.page = v.parse().map_err(|_| format!("page: {v:?} is not a page number"))?,
                "per" => {
                    q.per = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PER_PAGE).contains(n))
                        .ok_or_else(|| format!("per: {v:?} is not 1 to {MAX_PER_PAGE} rows"))?;
                }
                // The token (handled before), the compare form's and unknown ones: ignored,
                // as a web page's links may carry more than the table needs.
                _ => {}
            }
        }
        if q.columns.len() > MAX_COLUMNS {
            return Err(format!("col: {} columns; a table shows {MAX_COLUMNS} at most", q.columns.len()));
        }
        for c in &conditions {
            q.conditions.push(Condition::parse(c).map_err(|e| format!("where: {e}"))?);
        }
        if !conditions.is_empty() {
            q.conditions_text = Some(conditions.join(", "));
        }
        Ok(q)
    }

    /// This table's URL with `change` applied (a sort, a page).
    pub fn href(&self, change: impl FnOnce(&mut RunsQuery)) -> String {
        let mut q = self.clone();
        change(&mut q);
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(e) = &q.experiment {
            s.append_pair("exp", e);
        }
        for st in &q.statuses {
            s.append_pair("status", st.as_str());
        }
        if let Some(t) = &q.text {
            s.append_pair("q", t);
        }
        for (k, v) in &q.tags {
            s.append_pair("tag", &format!("{k}={v}"));
        }
        if let Some(w) = &q.conditions_text {
            s.append_pair("where", w);
        }
        if let Some(o) = &q.sort {
            s.append_pair("sort", o);
        }
        for c in &q.columns {
            s.append_pair("col", c);
        }
        if q.page > 0 {
            s.append_pair("page", &q.page.to_string());
        }
        if q.per != DEFAULT_PER_PAGE {
            s.append_pair("per", &q.per.to_string());
        }
        let s = s.finish();
        if s.is_empty() { "/".into() } else { format!("/?{s}") }
    }

    fn query(&self) -> Query {
        Query {
            status: self.statuses.clone(),
            tags: self.tags.clone(),
            conditions: self.conditions.clone(),
            sort: self.sort.as_deref().and_then(|s| Sort::parse(s).ok()),
            limit: None,
        }
    }
}

/// One page of the table, and what the page needs around it.
#[derive(Debug)]
pub struct RunsView<'a> {
    /// Runs that match, over all pages.
    pub total: usize,
    pub rows: Vec<&'a Run>,
    pub columns: Vec<String>,
    /// What the column picker offers: every final metric, hyperparameter and tag of the
    /// matching runs (at most [`MAX_CANDIDATES`]).
    pub candidates: Vec<String>,
    pub experiments: Vec<String>,
}

pub fn view<'a>(all: &'a [Run], q: &RunsQuery, now_ms: i64) -> RunsView<'a> {
    let experiments: Vec<String> =
        all.iter().map(|r| r.experiment_id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let text = q.text.as_deref().map(str::to_lowercase);
    let matching: Vec<&Run> = q
        .query()
        .select(all, now_ms)
        .into_iter()
        .filter(|r| q.experiment.as_deref().is_none_or(|e| r.experiment_id == e))
        .filter(|r| text.as_deref().is_none_or(|t| mentions(r, t)))
        .collect();
    let (mut metrics, mut params, mut tags) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for r in &matching {
        metrics.extend(r.final_metrics.keys().map(String::as_str));
        params.extend(r.hparams.keys().map(String::as_str));
        tags.extend(r.tags.keys().map(String::as_str));
    }
    let columns = if q.columns.is_empty() {
        let m = metrics.iter().take(DEFAULT_COLUMNS_EACH).map(|n| format!("metric.{n}"));
        m.chain(params.iter().take(DEFAULT_COLUMNS_EACH).map(|n| format!("param.{n}"))).collect()
    } else {
        q.columns.clone()
    };
    let candidates = ["duration", "attempts", "note"]
        .into_iter()
        .map(str::to_owned)
        .chain(metrics.iter().map(|n| format!("metric.{n}")))
        .chain(params.iter().map(|n| format!("param.{n}")))
        .chain(tags.iter().map(|n| format!("tag.{n}")))
        .take(MAX_CANDIDATES)
        .collect();
    let total = matching.len();
    let rows = matching.into_iter().skip(q.page.saturating_mul(q.per)).take(q.per).collect();
    RunsView { total, rows, columns, candidates, experiments }
}

/// Whether the run's id, name, experiment or a tag value holds `lowercase`.
fn mentions(r: &Run, lowercase: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(lowercase);
    has(&r.run_id) || r.name.as_deref().is_some_and(has) || has(&r.experiment_id) || r.tags.values().any(|v| has(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, loss: f64, lr: &str) -> Run {
        let mut r = Run::new("sweep", id, vec!["python".into()], "host", 1_000 + loss as i64);
        r.final_metrics.insert("loss".into(), loss);
        r.hparams.insert(
            "lr".into(),
            tap_core::runs::HparamUse { value: lr.into(), version: 0, source: Default::default() },
        );
        r.status = RunStatus::Succeeded;
        r
    }

    #[test]
    fn filters_sort_and_pages_come_from_the_url() {
        let all: Vec<Run> = (0..120).map(|i| run(&format!("r{i:03}"), f64::from(i), &format!("0.{i}"))).collect();
        let q = RunsQuery::parse(Some("where=loss%3E%3D10%2C+loss%3C100&sort=-loss&per=25&page=1&col=metric.loss"))
            .expect("parses");
        let v = view(&all, &q, 0);
        assert_eq!(v.total, 90);
        assert_eq!(v.rows.len(), 25);
        assert_eq!(v.rows[0].run_id, "r074", "page 2 of loss descending");
        assert_eq!(v.columns, ["metric.loss"]);
        assert!(v.candidates.contains(&"param.lr".to_owned()));
        let back = RunsQuery::parse(q.href(|_| {}).strip_prefix("/?")).expect("round trip");
        assert_eq!(back, q);
    }

    #[test]
    fn bad_values_are_named() {
        for (bad, says) in [
            ("status=done", "status"),
            ("sort=-no%20such", "sort"),
            ("per=0", "per"),
            ("page=x", "page"),
            ("where=loss%3F%3F1", "where"),
            ("tag=novalue", "tag"),
        ] {
            let e = RunsQuery::parse(Some(bad)).expect_err(bad);
            assert!(e.starts_with(says), "{bad}: {e}");
        }
        let many: String = (0..=MAX_COLUMNS).map(|i| format!("col=metric.m{i}&")).collect();
        assert!(RunsQuery::parse(Some(&many)).expect_err("too many").contains("at most"));
    }

    #[test]
    fn default_columns_are_a_few_metrics_and_hyperparameters() {
        let all = vec![run("a", 1.0, "0.1")];
        let v = view(&all, &RunsQuery::parse(None).expect("empty"), 0);
        assert_eq!(v.columns, ["metric.loss", "param.lr"]);
    }
}
