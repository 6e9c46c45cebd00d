//! The stack's resources on moto, as `infra/tap-stack.tf` creates them, for tests against moto
//! on loopback: SDK settings, the experiment table, the spot fleet and the agent's metrics.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateSpecificationRequest, FleetType,
    RequestLaunchTemplateData, SpotOptionsRequest, TargetCapacitySpecificationRequest,
};

/// SDK settings for moto on a loopback endpoint (us-east-1, static test credentials).
pub fn sdk_config(endpoint: &str) -> aws_types::SdkConfig {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
    aws_types::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "static")))
        .build()
}

/// The experiment table: `experiment_id` / `run_id`, on demand, with the sparse
/// `runs_by_start` index (`experiment_id` / `started_ms`), as infra/tap-stack.tf makes it.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    create_table_with(client, name, true).await;
}

/// The experiment table of a stack from before the `runs_by_start` index.
pub async fn create_table_without_index(client: &aws_sdk_dynamodb::Client, name: &str) {
    create_table_with(client, name, false).await;
}

async fn create_table_with(client: &aws_sdk_dynamodb::Client, name: &str, index: bool) {
    let attr = |n: &str, t| AttributeDefinition::builder().attribute_name(n).attribute_type(t).build().expect("attr");
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().expect("key");
    let mut create = client
        .create_table()
        .table_name(name)
        .attribute_definitions(attr("experiment_id", ScalarAttributeType::S))
        .attribute_definitions(attr("run_id", ScalarAttributeType::S))
        .key_schema(key("experiment_id", KeyType::Hash))
        .key_schema(key("run_id", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest);
    if index {
        create = create.attribute_definitions(attr("started_ms", ScalarAttributeType::N)).global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("runs_by_start")
                .key_schema(key("experiment_id", KeyType::Hash))
                .key_schema(key("started_ms", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .expect("index"),
        );
    }
    create.send().await.expect("CreateTable");
}

/// The stack's storage as `tap-dev` creates it: the experiment table `table`, the bucket
/// `ml-model-artifacts-dev` and the log group `/tap/dev/training`.
pub async fn create_stack(sdk: &aws_types::SdkConfig, table: &str) {
    create_table(&aws_sdk_dynamodb::Client::new(sdk), table).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build());
    s3.create_bucket().bucket("ml-model-artifacts-dev").send().await.expect("CreateBucket");
    aws_sdk_cloudwatchlogs::Client::new(sdk)
        .create_log_group()
        .log_group_name("/tap/dev/training")
        .send()
        .await
        .expect("CreateLogGroup");
}

/// A launch template and a spot fleet of type maintain with `n` nodes, as the stack makes.
pub async fn make_fleet(sdk: &aws_types::SdkConfig, n: i32) -> String {
    make_fleet_in(sdk, n, &[]).await
}

/// A maintain fleet of `n` instances with one override per named AZ (moto's default subnet
/// there) and the `diversified` strategy, which moto fills round robin: the first instance in
/// the first AZ, the second in the next, …; a later scale-up starts again at the first AZ.
/// No AZ: moto's default placement, as [`make_fleet`].
pub async fn make_fleet_in(sdk: &aws_types::SdkConfig, n: i32, zones: &[&str]) -> String {
    use aws_sdk_ec2::types::{Filter, FleetLaunchTemplateOverridesRequest, SpotAllocationStrategy};
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let lt = ec2
        .create_launch_template()
        .launch_template_name(format!("tap-test-node-{}", zones.join("-")))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::P32xlarge)
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    let lt_id = lt.launch_template().and_then(|t| t.launch_template_id()).expect("id").to_owned();
    let mut overrides = Vec::new();
    for zone in zones {
        let subnets = ec2
            .describe_subnets()
            .filters(Filter::builder().name("availability-zone").values(*zone).build())
            .filters(Filter::builder().name("default-for-az").values("true").build())
            .send()
            .await
            .expect("DescribeSubnets");
        let subnet = subnets.subnets().first().and_then(|s| s.subnet_id()).expect("moto's default subnet");
        overrides.push(FleetLaunchTemplateOverridesRequest::builder().subnet_id(subnet).build());
    }
    let mut spot = SpotOptionsRequest::builder();
    if !zones.is_empty() {
        spot = spot.allocation_strategy(SpotAllocationStrategy::Diversified);
    }
    let fleet = ec2
        .create_fleet()
        .r#type(FleetType::Maintain)
        .spot_options(spot.build())
        .target_capacity_specification(
            TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(n)
                .spot_target_capacity(n)
                .default_target_capacity_type(DefaultTargetCapacityType::Spot)
                .build(),
        )
        .launch_template_configs(
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_id(lt_id)
                        .version("$Latest")
                        .build(),
                )
                .set_overrides((!overrides.is_empty()).then_some(overrides))
                .build(),
        )
        .send()
        .await
        .expect("CreateFleet");
    fleet.fleet_id().expect("fleet id").to_owned()
}

/// One datapoint of an agent metric of a node (`Environment`, `InstanceId`), as tap-agent
/// publishes its node series.
pub async fn put_node_metric(
    sdk: &aws_types::SdkConfig,
    environment: &str,
    instance: &str,
    metric: tap_core::contract::Metric,
    value: f64,
    ts_ms: i64,
) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let dims = [("Environment", environment), ("InstanceId", instance)];
    aws_sdk_cloudwatch::Client::new(sdk)
        .put_metric_data()
        .namespace(tap_core::contract::NAMESPACE)
        .metric_data(
            MetricDatum::builder()
                .metric_name(metric.spec().name)
                .set_dimensions(Some(
                    dims.iter().map(|(k, v)| Dimension::builder().name(*k).value(*v).build()).collect(),
                ))
                .timestamp(aws_smithy_types::DateTime::from_millis(ts_ms))
                .value(value)
                .build(),
        )
        .send()
        .await
        .expect("PutMetricData");
}

/// A node whose agent reported 30 s before `now_ms`: a heartbeat, and no fatal GPU finding.
pub async fn reporting_node(sdk: &aws_types::SdkConfig, environment: &str, instance: &str, now_ms: i64) {
    use tap_core::contract::Metric;
    put_node_metric(sdk, environment, instance, Metric::Heartbeat, 1.0, now_ms - 30_000).await;
    put_node_metric(sdk, environment, instance, Metric::Unhealthy, 0.0, now_ms - 30_000).await;
}

/// A node whose agent reports and whose GPUs idled (`percent`) for the last `minutes`.
pub async fn idle_node(sdk: &aws_types::SdkConfig, environment: &str, instance: &str, minutes: i64, percent: f64) {
    use tap_core::contract::Metric;
    let now = tap_core::time::now_ms();
    reporting_node(sdk, environment, instance, now).await;
    for m in 0..minutes {
        put_node_metric(sdk, environment, instance, Metric::GpuUtilization, percent, now - 30_000 - m * 60_000).await;
    }
}
