//! `tap runs list --status/--tag/--where/--sort/--limit`: which runs, in which order. Pure
//! functions over run records; the stores fetch, this decides.
//!
//! A field is a final metric, a hyperparameter, a tag or one of the run's own fields:
//! - `loss`: the final metric `loss` when the run has one, else the hyperparameter `loss`;
//! - `metric.NAME`, `param.NAME` (or `hp.NAME`), `tag.KEY`: that one only;
//! - `id`, `name`, `experiment`, `status`, `started`, `duration`, `attempts`, `note`.
//!
//! `--where` compares a field with a value: `loss<0.1`, `lr=0.1`, `tag.team=nlp`,
//! `epochs>=10`, `status!=failed`. `<`, `<=`, `>`, `>=` compare numbers; `=` and `!=` compare
//! numbers when both sides are numbers (`lr=0.1` matches `0.10`), else text. A run without
//! the field does not match (`!=` included: a run with no `tag.team` is not "not nlp"; it is
//! unknown). Several `--where` must all hold.

use std::cmp::Ordering;
use std::fmt;

use crate::runs::{Run, RunStatus};

/// What a field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A final metric, or (when the run has no such metric) a hyperparameter.
    Bare(String),
    Metric(String),
    Param(String),
    Tag(String),
    Id,
    Name,
    Experiment,
    Status,
    /// Start time (epoch ms).
    Started,
    /// Seconds from start to end (or to now while it runs: the caller's `now_ms`).
    Duration,
    Attempts,
    Note,
}

/// A field's value in one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
}

impl Value {
    fn parse(text: &str) -> Value {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::Number(f),
            _ => Value::Text(text.to_owned()),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Value::Number(f) => Some(*f),
            Value::Text(t) => t.parse::<f64>().ok().filter(|f| f.is_finite()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

impl Field {
    /// Parses a field name (`loss`, `metric.loss`, `tag.team`, `started`).
    pub fn parse(s: &str) -> Result<Field, String> {
        let named = |prefix: &str, make: fn(String) -> Field| -> Option<Result<Field, String>> {
            s.strip_prefix(prefix).map(|n| crate::names::checked("field name", n).map(|n| make(n.to_owned())))
        };
        if let Some(f) = named("metric.", Field::Metric)
            .or_else(|| named("param.", Field::Param))
            .or_else(|| named("hp.", Field::Param))
            .or_else(|| named("tag.", Field::Tag))
        {
            return f;
        }
        Ok(match s {
            "id" | "run" => Field::Id,
            "name" => Field::Name,
            "experiment" => Field::Experiment,
            "status" => Field::Status,
            "started" => Field::Started,
            "duration" => Field::Duration,
            "attempts" => Field::Attempts,
            "note" => Field::Note,
            other => Field::Bare(crate::names::checked("field name", other)?.to_owned()),
        })
    }

    /// This field's value in `run` (None: the run has none).
    pub fn value(&self, run: &Run, now_ms: i64) -> Option<Value> {
        let param = |n: &str| run.hparams.get(n).map(|h| Value::parse(&h.value));
        match self {
            Field::Bare(n) => run.final_metrics.get(n).map(|v| Value::Number(*v)).or_else(|| param(n)),
            Field::Metric(n) => run.final_metrics.get(n).map(|v| Value::Number(*v)),
            Field::Param(n) => param(n),
            Field::Tag(k) => run.tags.get(k).map(|v| Value::parse(v)),
            Field::Id => Some(Value::Text(run.run_id.clone())),
            Field::Name => run.name.clone().map(Value::Text),
            Field::Experiment => Some(Value::Text(run.experiment_id.clone())),
            Field::Status => Some(Value::Text(run.status.as_str().to_owned())),
            Field::Started => Some(Value::Number(run.started_ms as f64)),
            Field::Duration => {
                let end = run.ended_ms.unwrap_or(now_ms);
                Some(Value::Number(end.saturating_sub(run.started_ms).max(0) as f64 / 1000.0))
            }
            Field::Attempts => Some(Value::Number(f64::from(run.attempt()))),
            Field::Note => run.note.clone().map(Value::Text),
        }
    }
}

/// A comparison of `--where`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// One `--where` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
    pub value: Value,
}

/// The operators, longest first (so `<=` is not read as `<` then `=`).
const OPS: [(&str, Op); 7] =
    [("<=", Op::Le), (">=", Op::Ge), ("!=", Op::Ne), ("==", Op::Eq), ("<", Op::Lt), (">", Op::Gt), ("=", Op::Eq)];

impl Condition {
    /// Parses `FIELD OP VALUE` (`loss<0.1`, `tag.team = nlp`).
    pub fn parse(s: &str) -> Result<Condition, String> {
        let (at, text, op) = OPS
            .iter()
            .filter_map(|(t, op)| s.find(t).map(|i| (i, *t, *op)))
            .min_by_key(|(i, t, _)| (*i, std::cmp::Reverse(t.len())))
            .ok_or_else(|| format!("{s:?} is not FIELD<VALUE, FIELD=VALUE, ... (operators: < <= > >= = !=)"))?;
        let (field, value) = (s[..at].trim(), s[at + text.len()..].trim());
        if field.is_empty() || value.is_empty() {
            return Err(format!("{s:?}: a field and a value are needed on both sides of {text}"));
        }
        let field = Field::parse(field)?;
        let value = Value::parse(value);
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && value.number().is_none() {
            return Err(format!("{s:?}: {text} compares numbers, and {value} is not one"));
        }
        Ok(Condition { field, op, value })
    }

    pub fn holds(&self, run: &Run, now_ms: i64) -> bool {
        let Some(have) = self.field.value(run, now_ms) else { return false };
        let ord = match (have.number(), self.value.number()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ if matches!(self.op, Op::Eq | Op::Ne) => Some(have.to_string().cmp(&self.value.to_string())),
            _ => None,
        };
        let Some(ord) = ord else { return false };
        match self.op {
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
        }
    }
}

/// `--sort [-]FIELD`: ascending, or descending with `-`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    pub field: Field,
    pub descending: bool,
}

impl Sort {
    pub fn parse(s: &str) -> Result<Sort, String> {
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        Ok(Sort { field: Field::parse(name)?, descending })
    }
}

/// A `KEY=VALUE` tag, as `--tag` takes it: the key follows [`crate::names`], the value is 1 to
/// [`MAX_TAG_VALUE_LEN`] characters with no control characters.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{:?} is not KEY=VALUE", crate::text::clip(s, 80)))?;
    crate::names::checked("tag key", k)?;
    check_tag_value(k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

/// The longest tag value, in bytes (W&B's and MLflow's limits are larger, but a tag is a label,
/// and every run record carries its tags).
pub const MAX_TAG_VALUE_LEN: usize = 256;

/// The longest note, in bytes (a run record is one DynamoDB item, 400 KB at most).
pub const MAX_NOTE_LEN: usize = 4096;

/// The most tags one run carries.
pub const MAX_TAGS: usize = 64;

fn check_tag_value(k: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("tag {k}: the value is empty (`tap runs untag` removes a tag)"));
    }
    if v.len() > MAX_TAG_VALUE_LEN {
        return Err(format!("tag {k}: the value is {} bytes long, more than {MAX_TAG_VALUE_LEN}", v.len()));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("tag {k}: the value holds a control character"));
    }
    Ok(())
}

/// Which runs `tap runs list` shows, and in which order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Any of these (empty: any status).
    pub status: Vec<RunStatus>,
    /// Every one of these tags, with this value.
    pub tags: Vec<(String, String)>,
    pub conditions: Vec<Condition>,
    /// None: newest first.
    pub sort: Option<Sort>,
    pub limit: Option<usize>,
}

impl Query {
    pub fn matches(&self, run: &Run, now_ms: i64) -> bool {
        (self.status.is_empty() || self.status.contains(&run.status))
            && self.tags.iter().all(|(k, v)| run.tags.get(k) == Some(v))
            && self.conditions.iter().all(|c| c.holds(run, now_ms))
    }

    /// The runs that match, sorted, at most `limit` of them. Runs without the sort field come
    /// last, newest first among themselves.
    pub fn apply(&self, runs: Vec<Run>, now_ms: i64) -> Vec<Run> {
        let order = self.order(&runs, now_ms);
        let mut slots: Vec<Option<Run>> = runs.into_iter().map(Some).collect();
        order.into_iter().filter_map(|i| slots[i].take()).collect()
    }

    /// [`Query::apply`] without copying: the matching runs of `runs`, in order.
    pub fn select<'a>(&self, runs: &'a [Run], now_ms: i64) -> Vec<&'a Run> {
        self.order(runs, now_ms).into_iter().map(|i| &runs[i]).collect()
    }

    /// The indices of the matching runs, in the query's order, at most `limit`.
    fn order(&self, runs: &[Run], now_ms: i64) -> Vec<usize> {
        let mut out: Vec<usize> = (0..runs.len()).filter(|&i| self.matches(&runs[i], now_ms)).collect();
        let newest_first = |a: &Run, b: &Run| b.started_ms.cmp(&a.started_ms).then_with(|| b.run_id.cmp(&a.run_id));
        match &self.sort {
            None => out.sort_by(|&a, &b| newest_first(&runs[a], &runs[b])),
            Some(s) => {
                // Each run's value once, not once per comparison.
                let values: Vec<Option<Value>> = out.iter().map(|&i| s.field.value(&runs[i], now_ms)).collect();
                let mut keyed: Vec<(usize, Option<Value>)> = out.iter().copied().zip(values).collect();
                keyed.sort_by(|(a, va), (b, vb)| {
                    let (a, b) = (&runs[*a], &runs[*b]);
                    let ord = match (va, vb) {
                        (None, None) => return newest_first(a, b),
                        (Some(_), None) => return Ordering::Less,
                        (None, Some(_)) => return Ordering::Greater,
                        (Some(x), Some(y)) => match (x.number(), y.number()) {
                            (Some(p), Some(q)) => p.total_cmp(&q),
                            _ => x.to_string().cmp(&y.to_string()),
                        },
                    };
                    (if s.descending { ord.reverse() } else { ord }).then_with(|| newest_first(a, b))
                });
                out = keyed.into_iter().map(|(i, _)| i).collect();
            }
        }
        if let Some(n) = self.limit {
            out.truncate(n);
        }
        out
    }
}

/// Adds `tags` to a run's tags (a key already there takes the new value); refused past
/// [`MAX_TAGS`].
pub fn add_tags(run: &mut Run, tags: &[(String, String)]) -> Result<(), String> {
    run.tags = merged_tags(&run.tags, tags)?;
    Ok(())
}

/// `existing` with `tags` added (a key already there takes the new value); refused past
/// [`MAX_TAGS`].
pub fn merged_tags(
    existing: &std::collections::BTreeMap<String, String>,
    tags: &[(String, String)],
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut all = existing.clone();
    all.extend(tags.iter().cloned());
    if all.len() > MAX_TAGS {
        return Err(format!("a run carries at most {MAX_TAGS} tags; this would make {}", all.len()));
    }
    Ok(all)
}

/// A note as `tap runs note` takes it.
pub fn check_note(note: &str) -> Result<(), String> {
    if note.len() > MAX_NOTE_LEN {
        return Err(format!("the note is {} bytes long, more than {MAX_NOTE_LEN}", note.len()));
    }
    if note.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("the note holds a control character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{HparamUse, ParamSource};

    fn run(id: &str, started: i64, loss: Option<f64>, lr: &str, team: Option<&str>) -> Run {
        let mut r = Run::new("sweep", id, vec!["python3".into()], "h", started);
        r.status = RunStatus::Succeeded;
        r.ended_ms = Some(started + 10_000);
        if let Some(l) = loss {
            r.final_metrics.insert("train/loss".into(), l);
            r.final_metrics.insert("loss".into(), l);
        }
        r.hparams.insert("lr".into(), HparamUse { value: lr.into(), version: 1, source: ParamSource::Default });
        if let Some(t) = team {
            r.tags.insert("team".into(), t.into());
        }
        r
    }

    fn ids(runs: &[Run]) -> Vec<&str> {
        runs.iter().map(|r| r.run_id.as_str()).collect()
    }

    fn sweep() -> Vec<Run> {
        vec![
            run("a", 1, Some(0.5), "0.1", Some("nlp")),
            run("b", 2, Some(0.05), "0.01", Some("vision")),
            run("c", 3, None, "0.10", None),
            run("d", 4, Some(0.08), "1e-3", Some("nlp")),
        ]
    }

    fn query(conds: &[&str]) -> Query {
        Query { conditions: conds.iter().map(|c| Condition::parse(c).expect("parses")).collect(), ..Query::default() }
    }

    #[test]
    fn where_compares_metrics_params_and_tags() {
        assert_eq!(ids(&query(&["loss<0.1"]).apply(sweep(), 0)), ["d", "b"]);
        assert_eq!(ids(&query(&["train/loss <= 0.08"]).apply(sweep(), 0)), ["d", "b"]);
        assert_eq!(ids(&query(&["lr=0.1"]).apply(sweep(), 0)), ["c", "a"], "0.10 is 0.1");
        assert_eq!(ids(&query(&["lr<0.05"]).apply(sweep(), 0)), ["d", "b"], "1e-3 is a number");
        assert_eq!(ids(&query(&["tag.team=nlp"]).apply(sweep(), 0)), ["d", "a"]);
        assert_eq!(ids(&query(&["tag.team!=nlp"]).apply(sweep(), 0)), ["b"], "no tag is not a match");
        assert_eq!(ids(&query(&["tag.team=nlp", "loss<0.1"]).apply(sweep(), 0)), ["d"], "all must hold");
        assert_eq!(ids(&query(&["status=succeeded", "duration>=10"]).apply(sweep(), 0)).len(), 4);
        assert_eq!(ids(&query(&["metric.lr=0.1"]).apply(sweep(), 0)), Vec::<&str>::new(), "lr is no metric");
    }

    #[test]
    fn sort_and_limit_answer_which_run_had_the_lowest_loss() {
        let q = Query { sort: Some(Sort::parse("loss").expect("sort")), limit: Some(1), ..Query::default() };
        assert_eq!(ids(&q.apply(sweep(), 0)), ["b"]);
        let q = Query { sort: Some(Sort::parse("-loss").expect("sort")), ..Query::default() };
        assert_eq!(ids(&q.apply(sweep(), 0)), ["a", "d", "b", "c"], "a run without the field comes last");
        assert_eq!(ids(&Query::default().apply(sweep(), 0)), ["d", "c", "b", "a"], "newest first");
        let q = Query { status: vec![RunStatus::Failed], ..Query::default() };
        assert!(q.apply(sweep(), 0).is_empty());
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        for (bad, says) in [
            ("loss", "is not FIELD<VALUE"),
            ("<0.1", "a field and a value"),
            ("loss<", "a field and a value"),
            ("loss<low", "compares numbers"),
            ("a b=1", "white space"),
            ("tag.=x", "empty"),
        ] {
            let e = Condition::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(Condition::parse("loss<=0.1").expect("le").op, Op::Le);
        assert_eq!(Condition::parse("x!=1").expect("ne").op, Op::Ne);
    }

    #[test]
    fn tags_and_notes_are_bounded() {
        assert_eq!(parse_tag("team=nlp"), Ok(("team".into(), "nlp".into())));
        assert_eq!(parse_tag("data/source=s3://b/k=v"), Ok(("data/source".into(), "s3://b/k=v".into())));
        assert!(parse_tag("team=").expect_err("empty").contains("untag"));
        assert!(parse_tag("team").is_err());
        assert!(parse_tag(&format!("k={}", "v".repeat(MAX_TAG_VALUE_LEN + 1))).is_err());
        assert!(parse_tag("k=a\u{7}b").is_err());
        let mut r = run("a", 1, None, "1", None);
        let many: Vec<(String, String)> = (0..=MAX_TAGS).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(add_tags(&mut r, &many).is_err());
        assert!(check_note("first try\nwith warmup").is_ok());
        assert!(check_note(&"n".repeat(MAX_NOTE_LEN + 1)).is_err());
    }
}
