//! CloudWatch glue: client construction (the only place that knows about the SDK's retry and
//! timeout settings) and the conversion of [`Datum`]s into `PutMetricData` requests.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::SdkError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};

use crate::metrics::Datum;
use crate::publish::{Sink, SinkError};

/// Builds a CloudWatch client (see [`sdk_config`]).
pub async fn client(region: &str) -> Client {
    Client::new(&sdk_config(region).await)
}

/// The agent's AWS settings. Endpoint, credentials and profile come from the standard chain
/// (`AWS_ENDPOINT_URL[_CLOUDWATCH]`, instance profile, …). Retries are off: the publisher is
/// the one retry layer, and the idle rule simply checks again later.
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

pub struct CloudWatchSink {
    pub client: Client,
    pub namespace: String,
}

pub fn to_sdk(d: &Datum) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(&d.metric)
        .set_dimensions(Some(d.dimensions.iter().map(|(k, v)| Dimension::builder().name(k).value(v).build()).collect()))
        .timestamp(DateTime::from_millis(d.timestamp_ms))
        .statistic_values(
            StatisticSet::builder()
                .minimum(d.stats.min)
                .maximum(d.stats.max)
                .sum(d.stats.sum)
                .sample_count(d.stats.count)
                .build(),
        )
        .unit(StandardUnit::from(d.unit.as_str()))
        .storage_resolution(if d.high_resolution { 1 } else { 60 })
        .build()
}

/// Throttling, server-side failures, no answer and credentials not ready are worth retrying
/// ([`tap_aws::AwsError::is_retriable`]); other service errors (validation) are not.
fn classify<E, R>(e: SdkError<E, R>) -> SinkError
where
    E: std::error::Error + aws_sdk_cloudwatch::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let e = tap_aws::sdk_error("CloudWatch PutMetricData", e);
    if e.is_retriable() { SinkError::Retriable(Box::new(e)) } else { SinkError::Rejected(Box::new(e)) }
}

impl Sink for CloudWatchSink {
    async fn put(&self, batch: &[Datum]) -> Result<(), SinkError> {
        self.client
            .put_metric_data()
            .namespace(&self.namespace)
            .set_metric_data(Some(batch.iter().map(to_sdk).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Stats;

    #[test]
    fn datum_conversion_keeps_every_field() {
        let d = Datum {
            metric: "GPUUtilization".into(),
            unit: "Percent".into(),
            dimensions: vec![("Environment".into(), "dev".into()), ("InstanceId".into(), "i-1".into())],
            timestamp_ms: 1_800_000_000_123,
            stats: Stats { min: 1.0, max: 9.0, sum: 20.0, count: 4.0 },
            high_resolution: true,
        };
        let m = to_sdk(&d);
        assert_eq!(m.metric_name(), Some("GPUUtilization"));
        assert_eq!(m.unit(), Some(&StandardUnit::Percent));
        assert_eq!(m.storage_resolution(), Some(1));
        assert_eq!(m.dimensions().len(), 2);
        assert_eq!(m.timestamp().map(|t| t.to_millis().expect("ms")), Some(1_800_000_000_123));
        let s = m.statistic_values().expect("statistic set");
        assert_eq!(
            (s.minimum(), s.maximum(), s.sum(), s.sample_count()),
            (Some(1.0), Some(9.0), Some(20.0), Some(4.0))
        );
    }

    #[test]
    fn contract_units_are_cloudwatch_units() {
        for m in tap_core::contract::Metric::ALL {
            let unit = m.spec().unit.as_str();
            assert!(StandardUnit::values().contains(&unit), "{:?}", m.spec());
        }
    }
}
