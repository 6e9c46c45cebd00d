//! tap-fleet against moto on loopback (`--features aws-integration`; TAP_MOTO_SERVER names
//! tools/moto/tap_moto_server.py's wrapper, which adds EC2 ModifyFleet to moto).
#![cfg(feature = "aws-integration")]

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use tap_fleet::aws::Fleet;
use tap_fleet::launch::{self, LaunchSpec};
use tap_test_support::{Moto, free_port};

fn sdk(port: u16) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
            aws_sdk_ec2::config::Credentials::new("test", "test", None, None, "static"),
        ))
        .build()
}

async fn heartbeat(sdk: &SdkConfig, instance: &str, now_ms: i64) {
    let cw = aws_sdk_cloudwatch::Client::new(sdk);
    let dims = [("Environment", "ci"), ("InstanceId", instance)];
    for (name, value) in [("AgentHeartbeat", 1.0), ("GPUUnhealthy", 0.0)] {
        cw.put_metric_data()
            .namespace("Tap/GPU")
            .metric_data(
                MetricDatum::builder()
                    .metric_name(name)
                    .set_dimensions(Some(
                        dims.iter().map(|(k, v)| Dimension::builder().name(*k).value(*v).build()).collect(),
                    ))
                    .timestamp(aws_smithy_types::DateTime::from_millis(now_ms - 30_000))
                    .value(value)
                    .unit(StandardUnit::Count)
                    .build(),
            )
            .send()
            .await
            .expect("PutMetricData");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_scale_and_launch_against_moto() {
    let moto = Moto::from_env(free_port());
    let sdk = sdk(moto.port);
    let fleet_id = tap_fleet::testkit::make_fleet(&sdk, 2).await;
    let fleet = Fleet {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        ssm: aws_sdk_ssm::Client::new(&sdk),
        cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
        fleet_id: fleet_id.clone(),
        environment: "ci".into(),
        log_group: "/tap/ci/training".into(),
    };
    let s = fleet.status(now_ms()).await.expect("status");
    assert_eq!((s.target_capacity, s.nodes.len()), (Some(2), 2), "{s:?}");
    assert!(s.nodes.iter().all(|n| n.state == "running" && n.private_ip.is_some()), "{s:?}");
    assert!(s.nodes.iter().all(|n| n.heartbeat_age_s.is_none()), "no agent has reported yet");

    // Only one node's agent reports: a 2-node launch is refused with the reason, 1 works.
    let first = s.nodes[0].instance_id.clone();
    heartbeat(&sdk, &first, now_ms()).await;
    let s = fleet.status(now_ms()).await.expect("status");
    let age = s.nodes.iter().find(|n| n.instance_id == first).and_then(|n| n.heartbeat_age_s).expect("heartbeat");
    assert!((25..=120).contains(&age), "{age}");
    let spec = |n| LaunchSpec {
        nodes: n,
        experiment: "llm".into(),
        group: "g-1".into(),
        master_port: 29500,
        resume: false,
        command: vec!["python3".into(), "train.py".into()],
        run_as: "ubuntu".into(),
    };
    let e = launch::plan(&s.nodes, &spec(2)).expect_err("one healthy node");
    assert!(e.starts_with("1 healthy node of 2 in the fleet, 2 asked; not fit: i-"), "{e}");
    let plan = launch::plan(&s.nodes, &spec(1)).expect("plan");
    let sent = fleet.send(&plan, "tap launch g-1", 3600).await.expect("SendCommand");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, first);
    let status = fleet.invocation_status(&sent[0].1, &first).await.expect("GetCommandInvocation");
    assert!(!status.is_empty());
    fleet.cancel(&sent[0].1).await.expect("CancelCommand");
    assert_eq!(fleet.invocation_status(&sent[0].1, &first).await.expect("status"), "Cancelled");

    // Scale up, then to zero (ModifyFleet).
    fleet.scale(3).await.expect("scale up");
    let s = fleet.status(now_ms()).await.expect("status");
    assert_eq!((s.target_capacity, s.nodes.len()), (Some(3), 3));
    fleet.scale(0).await.expect("scale to zero");
    let s = fleet.status(now_ms()).await.expect("status");
    assert_eq!(s.target_capacity, Some(0));
    assert!(s.nodes.iter().all(|n| n.state != "running"), "{s:?}");

    // A fleet that does not exist is one clear error.
    let gone = Fleet { fleet_id: "fleet-00000000-0000-0000-0000-000000000000".into(), ..fleet };
    let e = gone.status(now_ms()).await.expect_err("no fleet").to_string();
    assert!(e.contains("no fleet fleet-0000") || e.contains("DescribeFleets"), "{e}");
}
