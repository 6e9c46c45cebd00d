//! Where runs, metrics, logs and hyperparameters live: traits at the I/O boundary, an
//! embedded SQLite backend (the local default), and a conformance suite every backend passes.

#[cfg(test)]
pub mod conformance;
pub mod sqlite;

use std::future::Future;

use serde::Serialize;
use tap_core::runs::{MetricPoint, Run};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write lost against another writer too many times, or an id is reused
    /// for a different record.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

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
    /// Runs, newest first; all experiments when `experiment` is None.
    fn list_runs(&self, experiment: Option<&str>) -> impl Future<Output = Result<Vec<Run>>> + Send;
    fn append_metrics(
        &self,
        experiment: &str,
        run_id: &str,
        points: &[MetricPoint],
    ) -> impl Future<Output = Result<()>> + Send;
    fn metrics(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<Vec<MetricPoint>>> + Send;
    fn append_logs(&self, experiment: &str, run_id: &str, lines: &[LogLine])
    -> impl Future<Output = Result<()>> + Send;
    fn logs(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<Vec<LogLine>>> + Send;
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
}
