//! Where runs, metrics, logs and hyperparameters live: traits at the I/O boundary, an
//! embedded SQLite backend (the local default), and a conformance suite every backend passes.

#[cfg(test)]
pub mod conformance;
pub mod dynamo;
pub mod sqlite;
pub mod ssm;

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
    /// Every metric point of a run, in step order (points of one step in recording order).
    fn metrics(&self, experiment: &str, run_id: &str) -> impl Future<Output = Result<Vec<MetricPoint>>> + Send;
}

/// A run's output lines (SQLite locally; CloudWatch Logs on a stack).
pub trait LogStore: Send + Sync {
    /// Appends lines; re-sending a line with the same `seq` is harmless.
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

/// The stack backends against moto on loopback (`--features aws-integration`).
#[cfg(all(test, feature = "aws-integration"))]
mod aws_tests {
    use aws_config::{BehaviorVersion, Region, SdkConfig};
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    use tap_test_support::{Moto, free_port};

    use super::ParamStore;
    use super::conformance;
    use super::dynamo::DynamoStore;
    use super::ssm::SsmParams;

    fn sdk_config(moto: &Moto) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "static",
            )))
            .build()
    }

    /// The table as the stack creates it: experiment_id / run_id, on demand.
    async fn table(client: &aws_sdk_dynamodb::Client, name: &str) {
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attr")
        };
        let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().expect("key");
        client
            .create_table()
            .table_name(name)
            .attribute_definitions(attr("experiment_id"))
            .attribute_definitions(attr("run_id"))
            .key_schema(key("experiment_id", KeyType::Hash))
            .key_schema(key("run_id", KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .expect("CreateTable");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dynamodb_passes_the_conformance_suite() {
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_dynamodb::Client::new(&sdk_config(&moto));
        table(&client, "tap-test-experiments").await;
        let store = DynamoStore::new(client.clone(), "tap-test-experiments");
        conformance::runs(&store).await;
        conformance::metrics(&store).await;
        let other = DynamoStore::new(client, "tap-test-experiments");
        conformance::concurrent_updates(&store, &other).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dynamodb_missing_table_is_one_clear_error() {
        let moto = Moto::from_env(free_port());
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk_config(&moto)), "no-such-table");
        let e = super::RunStore::list_runs(&store, Some("e")).await.expect_err("fails").to_string();
        assert!(e.starts_with("DynamoDB Query") && e.contains("ResourceNotFoundException"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ssm_passes_the_conformance_suite_and_pages() {
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_ssm::Client::new(&sdk_config(&moto));
        let params = SsmParams::new(client.clone(), "/ml/hparams", None);
        conformance::params(&params).await;
        // More parameters than one GetParametersByPath page (10).
        let many = SsmParams::new(client, "/ml/other", None);
        for i in 0..15 {
            many.set_param(&format!("p{i:02}"), &i.to_string()).await.expect("set");
        }
        let listed = many.list_params().await.expect("list");
        assert_eq!(listed.len(), 15);
        assert_eq!(listed[0].name, "p00", "names are relative to the prefix");
    }
}
