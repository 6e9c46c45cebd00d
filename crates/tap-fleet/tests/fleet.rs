//! tap-fleet against moto on loopback (`--features aws-integration`; TAP_MOTO_SERVER names
//! tools/moto/tap_moto_server.py's wrapper, which adds EC2 ModifyFleet to moto).
#![cfg(feature = "aws-integration")]

use aws_config::SdkConfig;
use tap_fleet::aws::Fleet;
use tap_fleet::launch::{self, LaunchSpec};
use tap_test_support::{Moto, free_port};

fn sdk(port: u16) -> SdkConfig {
    tap_test_support::aws::sdk_config(&tap_test_support::endpoint(port))
}

use tap_core::time::now_ms;

#[tokio::test(flavor = "multi_thread")]
async fn status_scale_and_launch_against_moto() {
    let moto = Moto::from_env(free_port());
    let sdk = sdk(moto.port);
    let fleet_id = tap_test_support::aws::make_fleet(&sdk, 2).await;
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
    assert!(
        s.nodes.iter().all(|n| n.state == tap_core::fleet::InstanceState::Running && n.private_ip.is_some()),
        "{s:?}"
    );
    assert!(s.nodes.iter().all(|n| n.heartbeat_age_s.is_none()), "no agent has reported yet");

    // Only one node's agent reports: a 2-node launch is refused with the reason, 1 works.
    let first = s.nodes[0].instance_id.clone();
    tap_test_support::aws::reporting_node(&sdk, "ci", &first, now_ms()).await;
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
        attempt: 1,
        env: Vec::new(),
        tags: Vec::new(),
    };
    // Placement as the controller does it (tap_core::jobs::place), then the nodes' scripts.
    use tap_core::jobs::{Constraints, Placement, place};
    let none = std::collections::BTreeSet::new();
    let Placement::Wait(e) = place(2, &s.nodes, &none, Constraints::default()) else { panic!("one healthy node") };
    assert!(e.starts_with("needs 2 healthy nodes, fleet has 1"), "{e}");
    let Placement::Nodes(chosen) = place(1, &s.nodes, &none, Constraints::default()) else { panic!("one node") };
    let plan = launch::commands(&spec(1), &chosen.iter().collect::<Vec<_>>());
    let sent = fleet.send(&plan, "tap launch g-1", 3600).await.expect("SendCommand");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, first);
    let status = fleet.invocation_status(&sent[0].1, &first).await.expect("GetCommandInvocation");
    // Regression (issue 14): this was `!status.is_empty()`, true of any answer at all.
    use tap_core::jobs::CommandState;
    assert!(
        matches!(
            status,
            CommandState::Pending | CommandState::InProgress | CommandState::Delayed | CommandState::Success
        ),
        "{status:?}"
    );
    fleet.cancel(&sent[0].1).await.expect("CancelCommand");
    assert_eq!(fleet.invocation_status(&sent[0].1, &first).await.expect("status"), CommandState::Cancelled);

    // Scale up, then to zero (ModifyFleet).
    fleet.scale(3).await.expect("scale up");
    let s = fleet.status(now_ms()).await.expect("status");
    assert_eq!((s.target_capacity, s.nodes.len()), (Some(3), 3));
    fleet.scale(0).await.expect("scale to zero");
    let s = fleet.status(now_ms()).await.expect("status");
    assert_eq!(s.target_capacity, Some(0));
    assert!(s.nodes.iter().all(|n| n.state != tap_core::fleet::InstanceState::Running), "{s:?}");

    // A fleet that does not exist is one clear error.
    let gone = Fleet { fleet_id: "fleet-00000000-0000-0000-0000-000000000000".into(), ..fleet };
    let e = gone.status(now_ms()).await.expect_err("no fleet").to_string();
    // Regression (issue 14): this also passed on any DescribeFleets failure.
    assert!(e.starts_with("no fleet fleet-00000000-0000-0000-0000-000000000000 (was the stack destroyed?"), "{e}");
}

/// The idle rule on a real fleet: only the oldest reporting node decides, one busy minute
/// keeps the fleet, and a node finds its fleet without being told.
#[tokio::test(flavor = "multi_thread")]
async fn idle_rule_against_moto() {
    use tap_fleet::idle::{self, IdleRule, Verdict};
    let moto = Moto::from_env(free_port());
    let sdk = sdk(moto.port);
    let fleet_id = tap_test_support::aws::make_fleet(&sdk, 2).await;
    let fleet = Fleet::connect(&sdk, &fleet_id, "ci", "/tap/ci/training");
    let s = fleet.status(now_ms()).await.expect("status");
    let rule = IdleRule { minutes: 10, below_percent: 5.0 };

    // Agents up, but no utilization yet: not known to idle.
    for n in &s.nodes {
        tap_test_support::aws::reporting_node(&sdk, "ci", &n.instance_id, now_ms()).await;
    }
    let view = fleet.idle_verdict(None, now_ms(), &rule).await.expect("verdict");
    let (s, v) = (view.status, view.verdict);
    assert!(
        matches!(v, Verdict::Unknown { ref reason } if reason.contains("reported GPU utilization for 0 of the last 10 min")),
        "{v:?}"
    );
    let leader = idle::leader(&s).expect("leader").instance_id.clone();
    let other = s.nodes.iter().find(|n| n.instance_id != leader).expect("second node").instance_id.clone();

    for n in &s.nodes {
        tap_test_support::aws::idle_node(&sdk, "ci", &n.instance_id, 10, 1.5).await;
    }
    let v = fleet.idle_verdict(Some(&other), now_ms(), &rule).await.expect("verdict").verdict;
    assert_eq!(v, Verdict::NotLeader { leader: leader.clone() });
    let v = fleet.idle_verdict(Some(&leader), now_ms(), &rule).await.expect("verdict").verdict;
    assert_eq!(v, Verdict::Idle { nodes: 2, peak_percent: 1.5 });

    // One busy minute on the other node keeps the fleet.
    let busy_at = now_ms() - 4 * 60_000;
    tap_test_support::aws::put_node_metric(
        &sdk,
        "ci",
        &other,
        tap_core::contract::Metric::GpuUtilization,
        97.0,
        busy_at,
    )
    .await;
    let v = fleet.idle_verdict(Some(&leader), now_ms(), &rule).await.expect("verdict").verdict;
    assert!(
        matches!(v, Verdict::Busy { ref instance_id, peak_percent } if *instance_id == other && peak_percent > 5.0),
        "{v:?}"
    );

    // Each node finds the fleet it is in (no aws:ec2:fleet-id tag in moto: by listing).
    assert_eq!(Fleet::fleet_of(&sdk, &other).await.expect("fleet_of"), Some(fleet_id.clone()));
}

/// Regression (the alarms paged a fleet scaled to zero on purpose): every capacity change
/// publishes the fleet's intent for the stack's fleet-not-reporting alarm — 1 before the
/// ModifyFleet that empties the fleet (its heartbeats stop only after), 0 after a scale-up.
#[tokio::test(flavor = "multi_thread")]
async fn scale_publishes_the_fleets_intent_around_modify_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.log");
    let moto = Moto::from_env_logging(free_port(), &log);
    let sdk = sdk(moto.port);
    let fleet_id = tap_test_support::aws::make_fleet(&sdk, 1).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let fleet = Fleet {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        ssm: aws_sdk_ssm::Client::new(&sdk),
        cloudwatch: cloudwatch.clone(),
        fleet_id,
        environment: "ci".into(),
        log_group: "/tap/ci/training".into(),
    };
    let order = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            // "SERVICE ACTION APP": the caller's app name does not matter here.
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .filter(|l| l == "cloudwatch PutMetricData" || l == "ec2 ModifyFleet")
            .collect()
    };
    let intent = |stat: aws_sdk_cloudwatch::types::Statistic| {
        let cloudwatch = cloudwatch.clone();
        async move {
            let now = std::time::SystemTime::now();
            let out = cloudwatch
                .get_metric_statistics()
                .namespace(tap_core::contract::NAMESPACE)
                .metric_name("FleetScaledToZero")
                .dimensions(aws_sdk_cloudwatch::types::Dimension::builder().name("Environment").value("ci").build())
                .start_time((now - std::time::Duration::from_secs(600)).into())
                .end_time((now + std::time::Duration::from_secs(60)).into())
                .period(3600)
                .statistics(stat)
                .send()
                .await
                .expect("GetMetricStatistics");
            out.datapoints().iter().map(|d| (d.minimum(), d.maximum())).collect::<Vec<_>>()
        }
    };

    fleet.scale(0).await.expect("scale to zero");
    assert_eq!(order(), ["cloudwatch PutMetricData", "ec2 ModifyFleet"], "the intent is published first");
    assert_eq!(intent(aws_sdk_cloudwatch::types::Statistic::Maximum).await, [(None, Some(1.0))]);

    fleet.scale(2).await.expect("scale up");
    assert_eq!(
        order(),
        ["cloudwatch PutMetricData", "ec2 ModifyFleet", "ec2 ModifyFleet", "cloudwatch PutMetricData"],
        "a scale-up publishes after ModifyFleet succeeded"
    );
    assert_eq!(intent(aws_sdk_cloudwatch::types::Statistic::Minimum).await, [(Some(0.0), None)]);
}

/// Issue 22: the controller reads each rank's network bytes over its attempt from the series
/// tap-agent publishes with the node's AZ; bytes outside the window or of another AZ's series
/// are not counted.
#[tokio::test(flavor = "multi_thread")]
async fn traffic_is_read_per_node_from_its_zone_series_over_the_window() {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let moto = Moto::from_env(free_port());
    let sdk = sdk(moto.port);
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let fleet = Fleet::connect(&sdk, "fleet-none", "ci", "/tap/ci/training");
    let now = now_ms();
    let start = now - 30 * 60_000;
    let put = |metric: &'static str, id: &'static str, az: &'static str, v: f64, ts: i64| {
        let cloudwatch = cloudwatch.clone();
        async move {
            let dims = [("Environment", "ci"), ("AvailabilityZone", az), ("InstanceId", id)];
            cloudwatch
                .put_metric_data()
                .namespace(tap_core::contract::NAMESPACE)
                .metric_data(
                    MetricDatum::builder()
                        .metric_name(metric)
                        .unit(StandardUnit::Bytes)
                        .value(v)
                        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_millis(ts))
                        .set_dimensions(Some(
                            dims.iter().map(|(k, v)| Dimension::builder().name(*k).value(*v).build()).collect(),
                        ))
                        .build(),
                )
                .send()
                .await
                .expect("PutMetricData");
        }
    };
    put("NetworkBytesOut", "i-a", "us-east-1a", 4e9, start + 5 * 60_000).await;
    put("NetworkBytesOut", "i-a", "us-east-1a", 1e9, start + 15 * 60_000).await;
    put("NetworkBytesIn", "i-a", "us-east-1a", 2e9, start + 15 * 60_000).await;
    put("NetworkBytesOut", "i-a", "us-east-1a", 7e9, start - 20 * 60_000).await; // before the attempt
    put("NetworkBytesOut", "i-b", "us-east-1b", 3e9, start + 10 * 60_000).await;
    put("NetworkBytesOut", "i-b", "us-east-1a", 9e9, start + 10 * 60_000).await; // not i-b's AZ
    let nodes = [
        ("i-a".to_owned(), "us-east-1a".to_owned()),
        ("i-b".to_owned(), "us-east-1b".to_owned()),
        ("i-c".to_owned(), "us-east-1c".to_owned()),
    ];
    let got = fleet.traffic(&nodes, start, now).await.expect("GetMetricData");
    assert_eq!(got.get("i-a"), Some(&(2_000_000_000, 5_000_000_000)));
    assert_eq!(got.get("i-b"), Some(&(0, 3_000_000_000)));
    assert_eq!(got.get("i-c"), None, "no datapoints: absent");
}
