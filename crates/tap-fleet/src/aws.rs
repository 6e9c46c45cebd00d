//! The fleet through AWS's own APIs: EC2 (DescribeFleets, DescribeFleetInstances,
//! DescribeInstances, ModifyFleet), the agent's CloudWatch metrics (heartbeat, GPUUnhealthy,
//! utilization, spot notices) and SSM Run Command (SendCommand, GetCommandInvocation).

use std::collections::HashMap;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_smithy_types::DateTime;
use tap_aws::sdk_error;
use tap_core::contract::{Metric as ContractMetric, NAMESPACE};
use tap_core::jobs::CommandState;
use tap_core::stack_config::StackConfig;

use crate::idle::{self, IdleRule, Verdict};
use crate::launch::{NodeCommand, NodeInfo};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An EC2, SSM or CloudWatch call failed (the SDK's error is its source).
    #[error(transparent)]
    Aws(#[from] tap_aws::AwsError),
    /// What tap found wrong with the fleet or an answer about it.
    #[error("{0}")]
    Message(String),
    /// A step that failed after an earlier one succeeded: what is true now, and the cause.
    #[error("{what}")]
    Partly {
        what: String,
        #[source]
        source: Box<FleetError>,
    },
}

type Result<T> = std::result::Result<T, FleetError>;

/// Pages of DescribeFleets read when looking for a node's fleet (tap's bound: an account
/// with more than 20 pages of fleets is not one tap's stack made).
const MAX_FLEET_PAGES: usize = 20;
/// Pages of DescribeFleetInstances read for one fleet (tap's bound on a loop over a remote
/// answer; a page holds up to 1 000 instances).
const MAX_FLEET_INSTANCE_PAGES: usize = 100;
/// Instance ids per DescribeInstances request (tap's batch).
const INSTANCES_PER_DESCRIBE: usize = 100;
/// Queries per GetMetricData request, at most (CloudWatch's limit: 500 MetricDataQuery).
const QUERIES_PER_GET_METRIC_DATA: usize = 500;
/// Characters of a SendCommand comment, at most (SSM's limit on `Comment`: 100).
const SSM_COMMENT_CHARS: usize = 100;

/// What a capacity change says about the fleet's intent (the FleetScaledToZero metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleIntent {
    /// Emptied on purpose: missing heartbeats are expected.
    Empty,
    /// Capacity wanted: missing heartbeats (after the boot grace) page.
    Run,
}

impl ScaleIntent {
    pub fn of(target: i32) -> ScaleIntent {
        if target <= 0 { ScaleIntent::Empty } else { ScaleIntent::Run }
    }

    pub fn value(self) -> f64 {
        match self {
            ScaleIntent::Empty => 1.0,
            ScaleIntent::Run => 0.0,
        }
    }
}

/// What `tap fleet status` shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FleetStatus {
    pub fleet_id: String,
    pub state: String,
    pub target_capacity: Option<i32>,
    pub fulfilled_capacity: Option<f64>,
    pub nodes: Vec<NodeInfo>,
    /// Spot interruption notices the agents published in the last 24 hours.
    pub interruptions_24h: f64,
}

/// What the idle rule saw and said.
pub struct IdleView {
    pub status: FleetStatus,
    /// Per-minute average GPU utilization of each running node (empty where not needed).
    pub utilization: HashMap<String, Vec<(i64, f64)>>,
    pub verdict: Verdict,
}

pub struct Fleet {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub fleet_id: String,
    pub environment: String,
    pub log_group: String,
}

impl Fleet {
    /// The stack's fleet, as `tap` on a workstation sees it.
    pub fn new(sdk: &aws_types::SdkConfig, stack: &StackConfig) -> Fleet {
        Fleet::connect(sdk, &stack.fleet_id, &stack.environment, &stack.log_group)
    }

    /// A fleet by id; `environment` is the agents' `Environment` metric dimension.
    pub fn connect(sdk: &aws_types::SdkConfig, fleet_id: &str, environment: &str, log_group: &str) -> Fleet {
        Fleet {
            ec2: aws_sdk_ec2::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            fleet_id: fleet_id.to_owned(),
            environment: environment.to_owned(),
            log_group: log_group.to_owned(),
        }
    }

    /// The EC2 Fleet an instance belongs to: its `aws:ec2:fleet-id` tag where EC2 set one,
    /// else the active fleets whose instances include it (bounded: 20 pages of fleets).
    pub async fn fleet_of(sdk: &aws_types::SdkConfig, instance_id: &str) -> Result<Option<String>> {
        let ec2 = &aws_sdk_ec2::Client::new(sdk);
        let out = ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| sdk_error("EC2 DescribeInstances", e))?;
        let tag = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.tags())
            .find(|t| t.key() == Some("aws:ec2:fleet-id"))
            .and_then(|t| t.value());
        if let Some(id) = tag {
            return Ok(Some(id.to_owned()));
        }
        let mut token = None;
        for _ in 0..MAX_FLEET_PAGES {
            let page = ec2
                .describe_fleets()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sdk_error("EC2 DescribeFleets", e))?;
            for f in page.fleets() {
                let live = f.fleet_state().is_some_and(|s| matches!(s.as_str(), "active" | "modifying" | "submitted"));
                let Some(id) = f.fleet_id().filter(|_| live) else { continue };
                if Fleet::instance_ids(ec2, id).await?.iter().any(|i| i == instance_id) {
                    return Ok(Some(id.to_owned()));
                }
            }
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// The active instances of a fleet (DescribeFleetInstances, every page, bounded).
    async fn instance_ids(ec2: &aws_sdk_ec2::Client, fleet_id: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut token = None;
        for _ in 0..MAX_FLEET_INSTANCE_PAGES {
            let page = ec2
                .describe_fleet_instances()
                .fleet_id(fleet_id)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sdk_error("EC2 DescribeFleetInstances", e))?;
            ids.extend(page.active_instances().iter().filter_map(|i| i.instance_id().map(str::to_owned)));
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(ids)
    }

    /// The fleet, its instances and what their agents last said.
    pub async fn status(&self, now_ms: i64) -> Result<FleetStatus> {
        let mut status = self.nodes(now_ms).await?;
        status.interruptions_24h = self.fleet_sum(ContractMetric::SpotInterruptionNotice, now_ms, 24 * 60).await?;
        Ok(status)
    }

    /// The fleet and its instances with each agent's last heartbeat and GPU health (the job
    /// controller's view: EC2's three Describe calls and one GetMetricData).
    pub async fn nodes(&self, now_ms: i64) -> Result<FleetStatus> {
        let mut status = self.describe().await?;
        let ids: Vec<String> = status.nodes.iter().map(|n| n.instance_id.clone()).collect();
        // Heartbeat, GPUUnhealthy and spot notices of every node in one request (up to 166 nodes;
        // more take one request per 500 queries).
        let series = [
            (ContractMetric::Heartbeat, "SampleCount"),
            (ContractMetric::Unhealthy, "Maximum"),
            (ContractMetric::SpotInterruptionNotice, "Maximum"),
        ];
        let points = self.per_instance(&series, &ids, now_ms, 15).await?;
        let latest = |m: usize, id: &str| {
            points.get(&(m, id.to_owned())).and_then(|v| v.iter().copied().max_by_key(|&(t, _)| t))
        };
        for n in &mut status.nodes {
            n.heartbeat_age_s = latest(0, &n.instance_id).map(|(t, _)| ((now_ms - t) / 1000).max(0));
            n.unhealthy = latest(1, &n.instance_id).map(|(_, v)| v >= 1.0);
            n.interrupting = points.get(&(2, n.instance_id.clone())).map(|v| v.iter().any(|&(_, x)| x >= 1.0));
        }
        Ok(status)
    }

    /// The fleet and its instances from EC2 alone (Describe calls: no charge, no metrics),
    /// oldest instance first.
    pub async fn describe(&self) -> Result<FleetStatus> {
        let fleets = self
            .ec2
            .describe_fleets()
            .fleet_ids(&self.fleet_id)
            .send()
            .await
            .map_err(|e| sdk_error("EC2 DescribeFleets", e))?;
        let f = fleets.fleets().iter().find(|f| f.fleet_id() == Some(self.fleet_id.as_str())).ok_or_else(|| {
            FleetError::Message(format!(
                "no fleet {} (was the stack destroyed? re-run `tap stack import`)",
                self.fleet_id
            ))
        })?;
        let state = f.fleet_state().map_or("unknown", |s| s.as_str()).to_owned();
        let target = f.target_capacity_specification().and_then(|t| t.total_target_capacity());
        let fulfilled = f.fulfilled_capacity();

        let ids = Fleet::instance_ids(&self.ec2, &self.fleet_id).await?;
        let mut nodes = Vec::new();
        for chunk in ids.chunks(INSTANCES_PER_DESCRIBE) {
            let out = self
                .ec2
                .describe_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("EC2 DescribeInstances", e))?;
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                nodes.push(NodeInfo {
                    instance_id: i
                        .instance_id()
                        .ok_or_else(|| FleetError::Message("EC2 DescribeInstances: an instance without an id".into()))?
                        .to_owned(),
                    instance_type: i.instance_type().map(|t| t.as_str().to_owned()),
                    availability_zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_owned),
                    private_ip: i.private_ip_address().map(str::to_owned),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map_or(tap_core::fleet::InstanceState::Unknown, |s| s.as_str().into()),
                    launch_time_ms: i.launch_time().and_then(|t| t.to_millis().ok()),
                    heartbeat_age_s: None,
                    unhealthy: None,
                    interrupting: None,
                });
            }
        }
        nodes.sort_by(|a, b| a.seniority().cmp(&b.seniority()));
        Ok(FleetStatus {
            fleet_id: self.fleet_id.clone(),
            state,
            target_capacity: target,
            fulfilled_capacity: fulfilled,
            nodes,
            interruptions_24h: 0.0,
        })
    }

    /// The datapoints (time, value) of each query (metric, its dimensions, statistic) from
    /// `start_ms` to `end_ms`, in the queries' order (None: CloudWatch returned no result for
    /// it), fetched in as few GetMetricData requests
    /// as its limit of 500 queries allows.
    async fn datapoints(
        &self,
        queries: &[SeriesQuery<'_>],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Option<Vec<(i64, f64)>>>> {
        let mut out = vec![None; queries.len()];
        for (c, chunk) in queries.chunks(QUERIES_PER_GET_METRIC_DATA).enumerate() {
            let built: Vec<MetricDataQuery> = chunk
                .iter()
                .enumerate()
                .map(|(q, (metric, dims, stat))| query(&format!("q{q}"), *metric, dims, stat))
                .collect();
            let res = self
                .cloudwatch
                .get_metric_data()
                .set_metric_data_queries(Some(built))
                .start_time(DateTime::from_millis(start_ms))
                .end_time(DateTime::from_millis(end_ms))
                .send()
                .await
                .map_err(|e| sdk_error("CloudWatch GetMetricData", e))?;
            for r in res.metric_data_results() {
                let Some(q) =
                    r.id().and_then(|q| q.strip_prefix('q')?.parse::<usize>().ok()).filter(|q| *q < chunk.len())
                else {
                    continue;
                };
                let points =
                    r.timestamps().iter().zip(r.values()).filter_map(|(t, v)| t.to_millis().ok().map(|t| (t, *v)));
                out[c * QUERIES_PER_GET_METRIC_DATA + q].get_or_insert_with(Vec::new).extend(points);
            }
        }
        Ok(out)
    }

    /// The datapoints (time, value) of each (metric, statistic) for each instance over the
    /// last `minutes`. Keyed by (index into `series`, instance id).
    pub async fn per_instance(
        &self,
        series: &[(ContractMetric, &str)],
        instances: &[String],
        now_ms: i64,
        minutes: i64,
    ) -> Result<HashMap<(usize, String), Vec<(i64, f64)>>> {
        let keys: Vec<(usize, &String)> =
            (0..series.len()).flat_map(|m| instances.iter().map(move |id| (m, id))).collect();
        let queries: Vec<_> = keys
            .iter()
            .map(|&(m, id)| {
                (
                    series[m].0,
                    vec![("Environment", self.environment.as_str()), ("InstanceId", id.as_str())],
                    series[m].1,
                )
            })
            .collect();
        let points = self.datapoints(&queries, now_ms - minutes * 60_000, now_ms + 60_000).await?;
        Ok(keys.into_iter().zip(points).filter_map(|((m, id), p)| Some(((m, id.clone()), p?))).collect())
    }

    /// The bytes each node's interfaces received and sent from `start_ms` to `end_ms`
    /// (tap-agent's `NetworkBytesIn`/`NetworkBytesOut`, published with the node's AZ), keyed
    /// by instance id; a node with no datapoints is absent. `nodes`: (instance id, AZ).
    pub async fn traffic(
        &self,
        nodes: &[(String, String)],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<HashMap<String, (u64, u64)>> {
        let metrics = [ContractMetric::NetworkBytesIn, ContractMetric::NetworkBytesOut];
        let keys: Vec<(usize, &(String, String))> =
            (0..metrics.len()).flat_map(|m| nodes.iter().map(move |n| (m, n))).collect();
        let queries: Vec<_> = keys
            .iter()
            .map(|&(m, (id, az))| {
                let dims = vec![
                    ("Environment", self.environment.as_str()),
                    ("AvailabilityZone", az.as_str()),
                    ("InstanceId", id.as_str()),
                ];
                (metrics[m], dims, "Sum")
            })
            .collect();
        // CloudWatch's periods start on the minute: from the minute the attempt started in.
        let start = start_ms - start_ms.rem_euclid(60_000);
        let points = self.datapoints(&queries, start, end_ms.max(start + 60_000)).await?;
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        for ((m, (id, _)), p) in keys.into_iter().zip(points) {
            let Some(p) = p.filter(|p| !p.is_empty()) else { continue };
            let bytes = p.iter().map(|(_, v)| v).sum::<f64>().max(0.0) as u64;
            let e = out.entry(id.clone()).or_default();
            if m == 0 {
                e.0 += bytes;
            } else {
                e.1 += bytes;
            }
        }
        Ok(out)
    }

    /// The fleet-wide sum of `metric` over the last `minutes`.
    pub async fn fleet_sum(&self, metric: ContractMetric, now_ms: i64, minutes: i64) -> Result<f64> {
        let res = self
            .cloudwatch
            .get_metric_data()
            .metric_data_queries(query("s", metric, &[("Environment", &self.environment)], "Sum"))
            .start_time(DateTime::from_millis(now_ms - minutes * 60_000))
            .end_time(DateTime::from_millis(now_ms + 60_000))
            .send()
            .await
            .map_err(|e| sdk_error("CloudWatch GetMetricData", e))?;
        Ok(res.metric_data_results().iter().flat_map(|r| r.values()).sum())
    }

    /// Each running node's per-minute average GPU utilization over the last `minutes`.
    pub async fn utilization(
        &self,
        status: &FleetStatus,
        now_ms: i64,
        minutes: i64,
    ) -> Result<HashMap<String, Vec<(i64, f64)>>> {
        let ids: Vec<String> = status
            .nodes
            .iter()
            .filter(|n| n.state == tap_core::fleet::InstanceState::Running)
            .map(|n| n.instance_id.clone())
            .collect();
        let points = self.per_instance(&[(ContractMetric::GpuUtilization, "Average")], &ids, now_ms, minutes).await?;
        Ok(points.into_iter().map(|((_, id), v)| (id, v)).collect())
    }

    /// The idle rule's verdict for the fleet as node `me` sees it (None: judge without
    /// electing), with what it was judged on. EC2's Describe calls only, unless this node is
    /// the one that decides: then one GetMetricData for every node's utilization.
    pub async fn idle_verdict(&self, me: Option<&str>, now_ms: i64, rule: &IdleRule) -> Result<IdleView> {
        let status = self.describe().await?;
        let decides = me.is_none_or(|me| idle::leader(&status).is_some_and(|l| l.instance_id == me));
        let utilization = if decides && status.target_capacity.is_some_and(|t| t > 0) {
            self.utilization(&status, now_ms, rule.minutes).await?
        } else {
            HashMap::new()
        };
        let verdict = idle::judge(&status, &utilization, me, rule);
        Ok(IdleView { status, utilization, verdict })
    }

    /// Sets the fleet's target capacity (ModifyFleet; scaling down terminates the excess) and
    /// publishes the intent the stack's fleet-not-reporting alarm reads (FleetScaledToZero):
    /// 1 *before* emptying the fleet, so its heartbeats stop only after the alarm knows; 0
    /// after a successful scale-up. ModifyFleet sets only the total, as Terraform does, so the
    /// next plan is an in-place update of total_target_capacity, never a replacement.
    pub async fn scale(&self, target: i32) -> Result<()> {
        use aws_sdk_ec2::types::FleetExcessCapacityTerminationPolicy;
        let intent = ScaleIntent::of(target);
        if intent == ScaleIntent::Empty {
            self.publish_intent(intent).await?;
        }
        self.modify_target(target, FleetExcessCapacityTerminationPolicy::Termination).await?;
        if intent == ScaleIntent::Run {
            self.publish_intent(intent).await.map_err(|e| FleetError::Partly {
                what: format!(
                    "the fleet's target is now {target}, but the fleet-not-reporting alarm was not told (it stays quiet until a node's agent starts)"
                ),
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    /// A partial scale-down that terminates these nodes (tap_core::fleet::scale_down_victims)
    /// instead of EC2's pick: ModifyFleet to `target` keeping every instance
    /// (`no-termination`), then TerminateInstances on `victims` — the maintain fleet, now at
    /// its target, does not replace them. No victims: [`Fleet::scale`].
    pub async fn scale_down_to(&self, target: i32, victims: &[String]) -> Result<()> {
        use aws_sdk_ec2::types::FleetExcessCapacityTerminationPolicy;
        if victims.is_empty() || target <= 0 {
            return self.scale(target).await;
        }
        self.modify_target(target, FleetExcessCapacityTerminationPolicy::NoTermination).await?;
        self.ec2.terminate_instances().set_instance_ids(Some(victims.to_vec())).send().await.map_err(|e| {
            FleetError::Partly {
                what: format!(
                    "the fleet's target is now {target}, but {} were not terminated: they run (and bill) until `tap fleet scale {target}` again or EC2 terminates them",
                    victims.join(", ")
                ),
                source: Box::new(FleetError::from(sdk_error("EC2 TerminateInstances", e))),
            }
        })?;
        Ok(())
    }

    /// ModifyFleet of the total target capacity only (as Terraform sets it), with what EC2
    /// does with instances above the new target.
    async fn modify_target(
        &self,
        target: i32,
        excess: aws_sdk_ec2::types::FleetExcessCapacityTerminationPolicy,
    ) -> Result<()> {
        let spec =
            aws_sdk_ec2::types::TargetCapacitySpecificationRequest::builder().total_target_capacity(target).build();
        self.ec2
            .modify_fleet()
            .fleet_id(&self.fleet_id)
            .target_capacity_specification(spec)
            .excess_capacity_termination_policy(excess)
            .send()
            .await
            .map_err(|e| sdk_error("EC2 ModifyFleet", e))?;
        Ok(())
    }

    async fn publish_intent(&self, intent: ScaleIntent) -> Result<()> {
        use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};
        let spec = ContractMetric::FleetScaledToZero.spec();
        let datum = MetricDatum::builder()
            .metric_name(spec.name)
            .set_dimensions(Some(dimensions(&[("Environment", &self.environment)])))
            .value(intent.value())
            .unit(StandardUnit::from(spec.unit.as_str()))
            .build();
        self.cloudwatch
            .put_metric_data()
            .namespace(NAMESPACE)
            .metric_data(datum)
            .send()
            .await
            .map_err(|e| sdk_error("CloudWatch PutMetricData (FleetScaledToZero)", e))?;
        Ok(())
    }

    /// Sends each node its script (one SendCommand per node, AWS-RunShellScript, output to
    /// the training log group); returns (instance, command id) pairs.
    pub async fn send(&self, cmds: &[NodeCommand], comment: &str, timeout_s: i32) -> Result<Vec<(String, String)>> {
        use aws_sdk_ssm::types::CloudWatchOutputConfig;
        let mut sent = Vec::new();
        for c in cmds {
            let out = self
                .ssm
                .send_command()
                .document_name("AWS-RunShellScript")
                .instance_ids(&c.instance_id)
                .parameters("commands", vec![c.script.clone()])
                .parameters("executionTimeout", vec![timeout_s.to_string()])
                .comment(comment.chars().take(SSM_COMMENT_CHARS).collect::<String>())
                .cloud_watch_output_config(
                    CloudWatchOutputConfig::builder()
                        .cloud_watch_output_enabled(true)
                        .cloud_watch_log_group_name(&self.log_group)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error(format_args!("SSM SendCommand to {}", c.instance_id), e))?;
            let id = out.command().and_then(|c| c.command_id()).filter(|id| !id.is_empty()).ok_or_else(|| {
                FleetError::Message(format!("SendCommand to {}: the answer names no command id", c.instance_id))
            })?;
            sent.push((c.instance_id.clone(), id.to_owned()));
        }
        Ok(sent)
    }

    /// Cancels a command (the job's other nodes after one failed).
    pub async fn cancel(&self, command_id: &str) -> Result<()> {
        self.ssm.cancel_command().command_id(command_id).send().await.map_err(|e| sdk_error("SSM CancelCommand", e))?;
        Ok(())
    }

    /// The status of one node's command (`Pending`, `InProgress`, `Success`, `Failed`, …).
    pub async fn invocation_status(&self, command_id: &str, instance_id: &str) -> Result<CommandState> {
        let out = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| sdk_error("SSM GetCommandInvocation", e))?;
        Ok(out.status().map_or(CommandState::Unknown, |s| CommandState::parse(s.as_str())))
    }
}

/// CloudWatch dimensions from (name, value) pairs, e.g. the fleet set `[("Environment", env)]`.
fn dimensions(dims: &[(&str, &str)]) -> Vec<Dimension> {
    dims.iter().map(|(k, v)| Dimension::builder().name(*k).value(*v).build()).collect()
}

/// One series GetMetricData reads: the metric, its dimensions (name, value) and statistic.
type SeriesQuery<'a> = (ContractMetric, Vec<(&'a str, &'a str)>, &'a str);

fn query(id: &str, metric: ContractMetric, dims: &[(&str, &str)], stat: &str) -> MetricDataQuery {
    let m = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(metric.spec().name)
        .set_dimensions(Some(dimensions(dims)))
        .build();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(MetricStat::builder().metric(m).period(60).stat(stat).build())
        .return_data(true)
        .build()
}

/// Pages of DescribeSpotPriceHistory read for one pool and span (tap's bound: a page holds up
/// to 1 000 prices, and EC2 changes a pool's price a few times a day at most).
const MAX_SPOT_PRICE_PAGES: usize = 20;
/// How far before an attempt's start the history is asked from, so the price in effect at
/// its start is in the answer.
const SPOT_PRICE_LOOKBACK_MS: i64 = 7 * 86_400_000;

/// EC2's spot price history (DescribeSpotPriceHistory) of Linux instances of one type in one
/// AZ, as (epoch ms, USD per hour), from a week before `from_ms` to `to_ms`; every page,
/// bounded.
pub async fn spot_price_history(
    ec2: &aws_sdk_ec2::Client,
    instance_type: &str,
    availability_zone: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, f64)>> {
    let itype = aws_sdk_ec2::types::InstanceType::from(instance_type);
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_SPOT_PRICE_PAGES {
        let page = ec2
            .describe_spot_price_history()
            .instance_types(itype.clone())
            .availability_zone(availability_zone)
            .product_descriptions("Linux/UNIX")
            .product_descriptions("Linux/UNIX (Amazon VPC)")
            .start_time(DateTime::from_millis(from_ms - SPOT_PRICE_LOOKBACK_MS))
            .end_time(DateTime::from_millis(to_ms))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| sdk_error("EC2 DescribeSpotPriceHistory", e))?;
        for p in page.spot_price_history() {
            let at = p.timestamp().and_then(|t| t.to_millis().ok());
            let usd = p.spot_price().and_then(|s| s.parse::<f64>().ok());
            if let (Some(at), Some(usd)) = (at, usd) {
                out.push((at, usd));
            }
        }
        token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}
