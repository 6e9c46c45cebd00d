//! Where runs, metrics, logs and hyperparameters live: the traits at the I/O boundary, and
//! the stack's experiment table in DynamoDB (runs and metrics, managed jobs, the job
//! controller's lease). Shared by `tap` (which adds its SQLite, CloudWatch Logs and SSM
//! backends) and tap-agent (whose job controller reads and writes the same table).

pub mod dynamo;
pub mod jobs;

use std::future::Future;

use serde::Serialize;
use tap_core::runs::{MetricPoint, Run};

/// A cause kept under a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write lost against another writer too many times, or an id is reused
    /// for a different record.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A job controller's write after it lost its lease (another node controls the jobs now).
    #[error("fenced: {0}")]
    Fenced(String),
    /// An AWS call failed (the SDK's error is its source).
    #[error(transparent)]
    Aws(#[from] tap_aws::AwsError),
    /// A stored record that does not decode.
    #[error("{what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Any other failure of the backend: what failed, and why when there is a cause.
    #[error("{what}")]
    Backend {
        what: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// A backend failure with its cause.
    pub fn backend(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Backend { what: what.into(), source: Some(source.into()) }
    }

    /// A backend failure that has no cause but its words.
    pub fn message(what: impl Into<String>) -> StoreError {
        StoreError::Backend { what: what.into(), source: None }
    }

    /// A record that does not decode, and the decoder's error.
    pub fn corrupt(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Corrupt { what: what.into(), source: Some(source.into()) }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Conditional writes that lose this many times in a row give up with a conflict.
pub const MAX_UPDATE_ATTEMPTS: usize = 20;

/// Waits after the `attempt`-th lost conditional write (from 0): a random time up to
/// 5 ms·2^attempt, at most 500 ms (full jitter), so writers that collided — the nodes of a
/// job updating its record at once — do not collide again in step. 20 losses wait ~7 s at most.
pub async fn after_lost_write(attempt: usize) {
    let cap = (5u64 << attempt.min(7)).min(500);
    tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=cap))).await;
}

/// One line of a run's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub seq: u64,
    pub ts_ms: i64,
    pub stream: Stream,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name, as the log stores record it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A listing of runs: every record that decodes, and the ones that do not, each named, so
/// that one corrupt record cannot hide the rest (regression: one corrupt row made every
/// listing fail without naming it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runs {
    /// Newest first.
    pub runs: Vec<Run>,
    pub skipped: Vec<Skipped>,
}

/// A record a listing left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The record's id as stored (`?` when even that is missing).
    pub id: String,
    pub why: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run record {} is unreadable ({}); left out", self.id, self.why)
    }
}

/// A chart's overview of a metric range ([`RunStore::metric_overview`]): candidate points as
/// (step, value) in step order, and how many stored points they stand for.
pub type Overview = (Vec<(u64, f64)>, u64);

pub trait RunStore: Send + Sync {
    /// Creates the run. Idempotent: creating the same record again returns it; a different
    /// record under the same ids is a conflict.
    fn create_run(&self, run: &Run) -> impl Future<Output = Result<Run>> + Send;
    fn get_run(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<Option<Run>>> + Send;
    /// Read-modify-write with a conditional write: concurrent updates are re-applied on the
    /// newer record, never lost.
    fn update_run<F>(&self, experiment: &str, run_id: &str, f: F) -> impl Future<Output = Result<Run>> + Send
    where
        F: Fn(&mut Run) + Send + Sync;
    /// Runs, newest first; all experiments when `experiment` is None. Records that do not
    /// decode are left out and named in [`Runs::skipped`].
    fn list_runs(&self, experiment: Option<&str>) -> impl Future<Output = Result<Runs>> + Send;
    fn append_metrics(
        &self,
        experiment: &str,
        run_id: &str,
        points: &[MetricPoint],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Every metric point of a run, in step order (points of one step in recording order).
    fn metrics(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<Vec<MetricPoint>>> + Send;
    /// One metric of a run between two steps (inclusive) as (step, value), sorted by step; a
    /// step recorded again keeps its later value. What a chart reads: a backend with an index
    /// on the metric's name reads only those points; by default, every point of the run is.
    fn metric_series(
        &self,
        experiment: &str,
        run_id: &str,
        name: &str,
        steps: std::ops::RangeInclusive<u64>,
    ) -> impl Future<Output = Result<Vec<(u64, f64)>>> + Send {
        async move {
            let points = self.metrics(experiment, run_id).await?;
            Ok(tap_core::downsample::last_per_step(
                points.into_iter().filter(|p| p.name == name && steps.contains(&p.step)).map(|p| (p.step, p.value)),
            ))
        }
    }
    /// An overview of one metric between two steps for a chart of `buckets` buckets: candidate
    /// points (each small step range's lowest, highest and last point, and the range's first
    /// and last point) and how many points they stand for; None where the backend keeps no
    /// such summary or the range is narrow enough to read its points ([`Self::metric_series`]).
    fn metric_overview(
        &self,
        experiment: &str,
        run_id: &str,
        name: &str,
        steps: std::ops::RangeInclusive<u64>,
        buckets: usize,
    ) -> impl Future<Output = Result<Option<Overview>>> + Send {
        let _ = (experiment, run_id, name, steps, buckets);
        async { Ok(None) }
    }
    /// Removes the run's metric points, then its record (so a failure part-way leaves the
    /// record, and the delete can be said again). Whether there was a record.
    fn delete_run(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// A run's output lines (SQLite locally; CloudWatch Logs on a stack).
pub trait LogStore: Send + Sync {
    /// Appends lines; re-sending a line with the same `seq` is harmless.
    fn append_logs(&self, experiment: &str, run_id: &str, lines: &[LogLine])
    -> impl Future<Output = Result<()>> + Send;
    fn logs(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<Vec<LogLine>>> + Send;
    /// Removes every line of the run (none: nothing to do).
    fn delete_logs(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<()>> + Send;
}

/// A hyperparameter version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    pub name: String,
    pub value: String,
    pub version: u64,
    pub modified_ms: i64,
}

pub trait ParamStore: Send + Sync {
    /// Latest version of every parameter, by name.
    fn list_params(&self) -> impl Future<Output = Result<Vec<Param>>> + Send;
    fn get_param(&self, name: &str) -> impl Future<Output = Result<Option<Param>>> + Send;
    /// Stores a new version and returns it.
    fn set_param(&self, name: &str, value: &str) -> impl Future<Output = Result<Param>> + Send;
    /// Every version, oldest first.
    fn param_history(&self, name: &str) -> impl Future<Output = Result<Vec<Param>>> + Send;
    /// Removes the parameter with its history; whether it existed. Runs keep the values
    /// they recorded.
    fn unset_param(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;
}
