//! The metric contract between `tap-agent` and the stack.
//!
//! A CloudWatch metric is identified by namespace, name and its *exact* set of dimensions: an
//! alarm on `{Environment}` never sees datapoints published with `{Environment, InstanceId}`.
//! This module is the one definition of what the agent publishes. `infra/tap-stack.tf` mirrors
//! it in `local.metric_contract` for its alarms and dashboard, and the test at the bottom of
//! this file fails when the two drift apart.

use serde::Serialize;

/// CloudWatch namespace of every GPU metric (`Tap/...` since `AWS/` is reserved).
pub const NAMESPACE: &str = "Tap/GPU";

/// A dimension name the agent attaches to datapoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Dimension {
    /// `var.environment` of the stack: the fleet-wide view.
    Environment,
    /// EC2 instance id, from IMDSv2.
    InstanceId,
    /// NVML UUID of the GPU (`GPU-…`): stable across reboots and index reordering.
    GpuUuid,
    /// The node's Availability Zone (`us-east-1a`), from IMDSv2: traffic between AZs is billed.
    AvailabilityZone,
}

impl Dimension {
    pub const fn name(self) -> &'static str {
        match self {
            Dimension::Environment => "Environment",
            Dimension::InstanceId => "InstanceId",
            Dimension::GpuUuid => "GpuUuid",
            Dimension::AvailabilityZone => "AvailabilityZone",
        }
    }
}

/// The dimension sets the agent publishes with. Each is a separate CloudWatch metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DimensionSet {
    /// One series per GPU.
    Gpu,
    /// One series per instance (aggregated over its GPUs).
    Instance,
    /// One series per environment: every instance publishes its datapoints here too, so
    /// CloudWatch's statistics span the fleet. The stack's alarms watch this set.
    Fleet,
    /// One series per instance with its Availability Zone: the network's bytes, which cost
    /// money when they cross an AZ (a dashboard sums them per AZ with SEARCH).
    Zone,
}

impl DimensionSet {
    pub const ALL: [DimensionSet; 4] =
        [DimensionSet::Gpu, DimensionSet::Instance, DimensionSet::Fleet, DimensionSet::Zone];

    /// The key of this set in the stack's `local.metric_contract.dimension_sets`.
    pub const fn key(self) -> &'static str {
        match self {
            DimensionSet::Gpu => "gpu",
            DimensionSet::Instance => "instance",
            DimensionSet::Fleet => "fleet",
            DimensionSet::Zone => "zone",
        }
    }

    /// Dimension names, in publishing order.
    pub const fn dimensions(self) -> &'static [Dimension] {
        match self {
            DimensionSet::Gpu => &[Dimension::Environment, Dimension::InstanceId, Dimension::GpuUuid],
            DimensionSet::Instance => &[Dimension::Environment, Dimension::InstanceId],
            DimensionSet::Fleet => &[Dimension::Environment],
            DimensionSet::Zone => &[Dimension::Environment, Dimension::AvailabilityZone, Dimension::InstanceId],
        }
    }
}

/// CloudWatch `StandardUnit` of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Percent,
    Megabytes,
    Bytes,
    Count,
    /// CloudWatch has no unit for °C, W or MHz; the metric name says which it is.
    None,
}

impl Unit {
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Percent => "Percent",
            Unit::Megabytes => "Megabytes",
            Unit::Bytes => "Bytes",
            Unit::Count => "Count",
            Unit::None => "None",
        }
    }
}

/// Every metric of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    GpuUtilization,
    MemoryUtilization,
    MemoryUsed,
    Temperature,
    PowerDraw,
    SmClock,
    EccUncorrected,
    EccCorrected,
    Throttled,
    RetiredPages,
    Unhealthy,
    Heartbeat,
    GpusVisible,
    SpoolDroppedDatapoints,
    SpotInterruptionNotice,
    RebalanceRecommendation,
    FleetScaledToZero,
    NetworkBytesIn,
    NetworkBytesOut,
}

/// What the contract says about one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricSpec {
    /// Key in the stack's `local.metric_contract.metrics`.
    pub key: &'static str,
    /// CloudWatch metric name.
    pub name: &'static str,
    pub unit: Unit,
    /// Dimension sets this metric is published with.
    pub sets: &'static [DimensionSet],
    /// What it measures, for `--help`, the README and the dashboard.
    pub description: &'static str,
}

use DimensionSet::{Fleet, Gpu, Instance, Zone};

impl Metric {
    pub const ALL: [Metric; 19] = [
        Metric::GpuUtilization,
        Metric::MemoryUtilization,
        Metric::MemoryUsed,
        Metric::Temperature,
        Metric::PowerDraw,
        Metric::SmClock,
        Metric::EccUncorrected,
        Metric::EccCorrected,
        Metric::Throttled,
        Metric::RetiredPages,
        Metric::Unhealthy,
        Metric::Heartbeat,
        Metric::GpusVisible,
        Metric::SpoolDroppedDatapoints,
        Metric::SpotInterruptionNotice,
        Metric::RebalanceRecommendation,
        Metric::FleetScaledToZero,
        Metric::NetworkBytesIn,
        Metric::NetworkBytesOut,
    ];

    pub const fn spec(self) -> MetricSpec {
        const fn m(
            key: &'static str,
            name: &'static str,
            unit: Unit,
            sets: &'static [DimensionSet],
            description: &'static str,
        ) -> MetricSpec {
            MetricSpec { key, name, unit, sets, description }
        }
        match self {
            Metric::GpuUtilization => m(
                "gpu_utilization",
                "GPUUtilization",
                Unit::Percent,
                &[Gpu, Instance, Fleet],
                "share of time a kernel ran on the GPU",
            ),
            Metric::MemoryUtilization => m(
                "memory_utilization",
                "GPUMemoryUtilization",
                Unit::Percent,
                &[Gpu, Instance, Fleet],
                "GPU memory used / total",
            ),
            Metric::MemoryUsed => m("memory_used", "GPUMemoryUsed", Unit::Megabytes, &[Gpu], "GPU memory used"),
            Metric::Temperature => {
                m("temperature", "GPUTemperature", Unit::None, &[Gpu, Fleet], "GPU core temperature, °C")
            }
            Metric::PowerDraw => m("power_draw", "GPUPowerDraw", Unit::None, &[Gpu, Instance], "board power draw, W"),
            Metric::SmClock => m("sm_clock", "GPUSMClock", Unit::None, &[Gpu], "streaming-multiprocessor clock, MHz"),
            Metric::EccUncorrected => m(
                "ecc_uncorrected",
                "GPUECCUncorrectedErrors",
                Unit::Count,
                &[Gpu, Fleet],
                "uncorrected ECC errors since the last publish",
            ),
            Metric::EccCorrected => m(
                "ecc_corrected",
                "GPUECCCorrectedErrors",
                Unit::Count,
                &[Gpu],
                "corrected ECC errors since the last publish",
            ),
            Metric::Throttled => m(
                "throttled",
                "GPUThrottled",
                Unit::Percent,
                &[Gpu, Instance],
                "share of samples with a costly clock slowdown (power cap, thermal, HW)",
            ),
            Metric::RetiredPages => m(
                "retired_pages",
                "GPURetiredPages",
                Unit::Count,
                &[Gpu],
                "memory pages retired for ECC errors (V100: retirement, no row remapping)",
            ),
            Metric::Unhealthy => m(
                "unhealthy",
                "GPUUnhealthy",
                Unit::Count,
                &[Gpu, Instance, Fleet],
                "1 while a fatal health finding (XID, ECC, lost GPU) stands, else 0",
            ),
            Metric::Heartbeat => m(
                "heartbeat",
                "AgentHeartbeat",
                Unit::Count,
                &[Instance, Fleet],
                "1 per publish, even when no GPU is readable",
            ),
            Metric::GpusVisible => {
                m("gpus_visible", "GPUsVisible", Unit::Count, &[Instance, Fleet], "GPUs the agent can read")
            }
            Metric::SpoolDroppedDatapoints => m(
                "spool_dropped_datapoints",
                "SpoolDroppedDatapoints",
                Unit::Count,
                &[Instance],
                "datapoints dropped because the offline spool was full",
            ),
            Metric::SpotInterruptionNotice => m(
                "spot_interruption_notice",
                "SpotInterruptionNotice",
                Unit::Count,
                &[Instance, Fleet],
                "1 in the window EC2's spot interruption notice was seen (instance-action)",
            ),
            Metric::RebalanceRecommendation => m(
                "rebalance_recommendation",
                "RebalanceRecommendation",
                Unit::Count,
                &[Instance, Fleet],
                "1 in the window EC2's rebalance recommendation was seen",
            ),
            // The fleet's intent, for the stack's fleet-not-reporting alarm: published by
            // whoever sets the capacity (tap_fleet::Fleet::scale: 1 before emptying the
            // fleet, 0 after scaling it up) and as 0 by every agent when it starts.
            Metric::FleetScaledToZero => m(
                "fleet_scaled_to_zero",
                "FleetScaledToZero",
                Unit::Count,
                &[Fleet],
                "1 when the fleet was scaled to zero on purpose, 0 when capacity is wanted again",
            ),
            Metric::NetworkBytesIn => m(
                "network_bytes_in",
                "NetworkBytesIn",
                Unit::Bytes,
                &[Zone],
                "bytes the node's network interfaces received in the window (kernel counters, loopback and virtual interfaces left out)",
            ),
            Metric::NetworkBytesOut => m(
                "network_bytes_out",
                "NetworkBytesOut",
                Unit::Bytes,
                &[Zone],
                "bytes the node's network interfaces sent in the window: a job's collective traffic, billed when it crosses an AZ",
            ),
        }
    }
}

/// The whole contract as one serialisable value (`tap contract --output json`).
#[derive(Debug, Serialize)]
pub struct Contract {
    pub namespace: &'static str,
    pub dimension_sets: Vec<(DimensionSet, Vec<&'static str>)>,
    pub metrics: Vec<MetricSpec>,
}

pub fn contract() -> Contract {
    Contract {
        namespace: NAMESPACE,
        dimension_sets: DimensionSet::ALL
            .iter()
            .map(|s| (*s, s.dimensions().iter().map(|d| d.name()).collect()))
            .collect(),
        metrics: Metric::ALL.iter().map(|m| m.spec()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack_source;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn metric_names_and_keys_are_unique() {
        let names: BTreeSet<_> = Metric::ALL.iter().map(|m| m.spec().name).collect();
        let keys: BTreeSet<_> = Metric::ALL.iter().map(|m| m.spec().key).collect();
        assert_eq!(names.len(), Metric::ALL.len());
        assert_eq!(keys.len(), Metric::ALL.len());
    }

    #[test]
    fn metrics_the_stack_alarms_on_are_published_fleet_wide() {
        for m in [Metric::GpuUtilization, Metric::Heartbeat, Metric::Temperature, Metric::Unhealthy] {
            assert!(m.spec().sets.contains(&Fleet), "{m:?} must be published with the fleet set");
        }
    }

    /// The contract as `infra/tap-stack.tf` writes it in `local.metric_contract`.
    fn stack_contract() -> hcl::Value {
        let value = stack_source::local("metric_contract");
        assert!(value.is_object(), "local.metric_contract is not an object literal");
        value
    }

    fn field<'a>(v: &'a hcl::Value, key: &str) -> &'a hcl::Value {
        v.as_object().and_then(|o| o.get(key)).unwrap_or_else(|| panic!("missing key {key} in {v:?}"))
    }

    fn strings(v: &hcl::Value) -> Vec<String> {
        v.as_array().expect("list of strings").iter().map(|s| s.as_str().expect("string").to_owned()).collect()
    }

    #[test]
    fn stack_namespace_matches() {
        assert_eq!(field(&stack_contract(), "namespace").as_str(), Some(NAMESPACE));
    }

    #[test]
    fn stack_dimension_sets_match() {
        let stack = stack_contract();
        let sets = field(&stack, "dimension_sets").as_object().expect("dimension_sets object");
        let ours: BTreeMap<String, Vec<String>> = DimensionSet::ALL
            .iter()
            .map(|s| (s.key().to_owned(), s.dimensions().iter().map(|d| d.name().to_owned()).collect()))
            .collect();
        let theirs: BTreeMap<String, Vec<String>> = sets.iter().map(|(k, v)| (k.clone(), strings(v))).collect();
        assert_eq!(ours, theirs, "dimension sets differ between contract.rs and tap-stack.tf");
    }

    #[test]
    fn stack_metrics_match() {
        let stack = stack_contract();
        let metrics = field(&stack, "metrics").as_object().expect("metrics object");
        let ours: BTreeMap<String, (String, String, Vec<String>)> = Metric::ALL
            .iter()
            .map(|m| {
                let s = m.spec();
                let sets = s.sets.iter().map(|d| d.key().to_owned()).collect();
                (s.key.to_owned(), (s.name.to_owned(), s.unit.as_str().to_owned(), sets))
            })
            .collect();
        let theirs: BTreeMap<String, (String, String, Vec<String>)> = metrics
            .iter()
            .map(|(k, v)| {
                let text =
                    |f: &str| field(v, f).as_str().unwrap_or_else(|| panic!("{k}.{f} is not a string")).to_owned();
                (k.clone(), (text("name"), text("unit"), strings(field(v, "sets"))))
            })
            .collect();
        assert_eq!(ours, theirs, "metrics differ between contract.rs and tap-stack.tf");
    }
}
