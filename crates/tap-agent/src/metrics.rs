//! From GPU samples to CloudWatch datums: aggregation over a publish window into statistic
//! sets, one per (metric, dimension set) of the contract, and packing into requests.
//!
//! Pure logic, no I/O: the CloudWatch glue (`cloudwatch.rs`) only converts [`Datum`]s to SDK
//! types.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tap_core::contract::{Dimension, DimensionSet, Metric};

use crate::gpu::{GpuReading, GpuSample};

/// PutMetricData accepts at most 1000 datums per request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1000;
/// PutMetricData accepts at most 1 MB per request (we stay under it before compression).
pub const MAX_REQUEST_BYTES: usize = 1_000_000;
/// CloudWatch rejects datapoints older than two weeks.
pub const MAX_DATUM_AGE_MS: i64 = 14 * 24 * 3600 * 1000;

/// A statistic set: what CloudWatch needs to compute Average, Minimum, Maximum, Sum and
/// SampleCount over many samples in one datum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: f64,
}

impl Stats {
    pub fn one(v: f64) -> Stats {
        Stats { min: v, max: v, sum: v, count: 1.0 }
    }

    pub fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1.0;
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count
    }
}

/// One CloudWatch datum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datum {
    pub metric: String,
    pub unit: String,
    pub dimensions: Vec<(String, String)>,
    pub timestamp_ms: i64,
    pub stats: Stats,
    /// 1-second storage resolution.
    pub high_resolution: bool,
}

impl Datum {
    /// A generous estimate of this datum's size in an awsQuery request (URL-encoded keys such
    /// as `MetricData.member.1000.Dimensions.member.3.Value=` are long).
    pub fn encoded_size(&self) -> usize {
        let dims: usize = self.dimensions.iter().map(|(k, v)| 3 * (k.len() + v.len()) + 120).sum();
        3 * (self.metric.len() + self.unit.len()) + dims + 400
    }
}

/// Values of the dimensions for this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub environment: String,
    pub instance_id: String,
    /// The node's Availability Zone (`unknown` when instance metadata could not say).
    pub availability_zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SeriesKey {
    metric: Metric,
    set: DimensionSet,
    gpu: Option<String>,
}

/// The value one sample contributes to a sampled (gauge) metric; `None` for metrics that are
/// counters or not read from samples.
pub fn sampled_value(metric: Metric, s: &GpuSample) -> Option<f64> {
    match metric {
        Metric::GpuUtilization => s.utilization_pct,
        Metric::MemoryUtilization => s.memory_utilization_pct(),
        Metric::MemoryUsed => s.memory_used_mib,
        Metric::Temperature => s.temperature_c,
        Metric::PowerDraw => s.power_draw_w,
        Metric::SmClock => s.sm_clock_mhz,
        Metric::Throttled => s.throttled().map(|t| if t { 100.0 } else { 0.0 }),
        Metric::RetiredPages => s.retired_pages.map(|p| p as f64),
        Metric::EccUncorrected
        | Metric::EccCorrected
        | Metric::Unhealthy
        | Metric::Heartbeat
        | Metric::GpusVisible
        | Metric::SpoolDroppedDatapoints
        | Metric::SpotInterruptionNotice
        | Metric::RebalanceRecommendation
        | Metric::FleetScaledToZero
        | Metric::NetworkBytesIn
        | Metric::NetworkBytesOut => None,
    }
}

/// Accumulates samples of one publish window; carries counter baselines across windows.
#[derive(Debug, Default)]
pub struct Aggregator {
    window_start_ms: Option<i64>,
    series: BTreeMap<SeriesKey, Stats>,
    /// Last ECC counters seen per GPU (corrected, uncorrected), for per-window deltas.
    ecc_last: HashMap<String, (Option<u64>, Option<u64>)>,
    /// ECC counters at the start of the window.
    ecc_base: HashMap<String, (Option<u64>, Option<u64>)>,
    /// The interface counters at the start of the window and last seen.
    net_base: Option<crate::net::Counters>,
    net_last: Option<crate::net::Counters>,
    samples: u64,
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator::default()
    }

    /// Samples taken in the current window.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    fn add(&mut self, metric: Metric, set: DimensionSet, gpu: Option<&str>, v: f64) {
        let key = SeriesKey { metric, set, gpu: gpu.map(str::to_owned) };
        self.series.entry(key).and_modify(|s| s.add(v)).or_insert_with(|| Stats::one(v));
    }

    /// Adds one sample of every GPU (an empty slice: no GPU was readable).
    pub fn add_sample(&mut self, at_ms: i64, readings: &[GpuReading]) {
        self.window_start_ms.get_or_insert(at_ms);
        self.samples += 1;
        self.add(Metric::GpusVisible, DimensionSet::Instance, None, readings.len() as f64);
        self.add(Metric::GpusVisible, DimensionSet::Fleet, None, readings.len() as f64);
        for r in readings {
            for metric in Metric::ALL {
                let Some(v) = sampled_value(metric, &r.sample) else {
                    continue;
                };
                for &set in metric.spec().sets {
                    let gpu = (set == DimensionSet::Gpu).then_some(r.gpu.uuid.as_str());
                    self.add(metric, set, gpu, v);
                }
            }
            let now = (r.sample.ecc_corrected, r.sample.ecc_uncorrected);
            self.ecc_base.entry(r.gpu.uuid.clone()).or_insert_with(|| {
                // First sight of this GPU: its baseline is the previous window's last value,
                // or this sample (no delta is invented for errors before the agent started).
                self.ecc_last.get(&r.gpu.uuid).copied().unwrap_or(now)
            });
            self.ecc_last.insert(r.gpu.uuid.clone(), now);
        }
    }

    /// Adds one reading of the node's interface counters: the window publishes how far they
    /// moved (none for bytes before the agent's first reading).
    pub fn add_network(&mut self, c: crate::net::Counters) {
        self.net_base.get_or_insert(c);
        self.net_last = Some(c);
    }

    /// Adds one sample of GPU health: GPUUnhealthy per GPU, and for the node and the fleet.
    pub fn add_health(&mut self, per_gpu: &[(String, f64)], node: f64) {
        for (uuid, v) in per_gpu {
            self.add(Metric::Unhealthy, DimensionSet::Gpu, Some(uuid), *v);
        }
        self.add(Metric::Unhealthy, DimensionSet::Instance, None, node);
        self.add(Metric::Unhealthy, DimensionSet::Fleet, None, node);
    }

    /// Says, once when the agent starts, that this node is up, so its fleet is not meant to
    /// be empty (FleetScaledToZero = 0 re-arms the stack's fleet-not-reporting alarm after a
    /// scale-up that did not go through `tap fleet scale`, e.g. `terraform apply`).
    pub fn add_node_started(&mut self) {
        self.add(Metric::FleetScaledToZero, DimensionSet::Fleet, None, 0.0);
    }

    /// Counts a node event (spot notice, rebalance recommendation) in this window.
    pub fn add_event(&mut self, metric: Metric) {
        for &set in metric.spec().sets {
            self.add(metric, set, None, 1.0);
        }
    }

    /// Ends the window: the datums to publish (heartbeat always, even with no samples), and
    /// a fresh window. `dropped` is the number of datums the spool dropped since the last call.
    pub fn finish(&mut self, now_ms: i64, labels: &Labels, dropped: u64, high_resolution: bool) -> Vec<Datum> {
        let ts = self.window_start_ms.take().unwrap_or(now_ms);
        self.add(Metric::Heartbeat, DimensionSet::Instance, None, 1.0);
        self.add(Metric::Heartbeat, DimensionSet::Fleet, None, 1.0);
        if dropped > 0 {
            self.add(Metric::SpoolDroppedDatapoints, DimensionSet::Instance, None, dropped as f64);
        }
        for (uuid, base) in std::mem::take(&mut self.ecc_base) {
            let last = self.ecc_last.get(&uuid).copied().unwrap_or(base);
            for (metric, b, l) in [(Metric::EccCorrected, base.0, last.0), (Metric::EccUncorrected, base.1, last.1)] {
                let (Some(b), Some(l)) = (b, l) else { continue };
                let delta = counter_delta(b, l) as f64;
                for &set in metric.spec().sets {
                    let gpu = (set == DimensionSet::Gpu).then_some(uuid.as_str());
                    self.add(metric, set, gpu, delta);
                }
            }
        }
        if let (Some(base), Some(last)) = (self.net_base, self.net_last) {
            let d = crate::net::delta(base, last);
            self.add(Metric::NetworkBytesIn, DimensionSet::Zone, None, d.bytes_in as f64);
            self.add(Metric::NetworkBytesOut, DimensionSet::Zone, None, d.bytes_out as f64);
            self.net_base = Some(last);
        }
        self.samples = 0;
        std::mem::take(&mut self.series)
            .into_iter()
            .map(|(key, stats)| {
                let spec = key.metric.spec();
                let dimensions = key
                    .set
                    .dimensions()
                    .iter()
                    .map(|d| {
                        let v = match d {
                            Dimension::Environment => labels.environment.clone(),
                            Dimension::InstanceId => labels.instance_id.clone(),
                            Dimension::GpuUuid => key.gpu.clone().unwrap_or_default(),
                            Dimension::AvailabilityZone => labels.availability_zone.clone(),
                        };
                        (d.name().to_owned(), v)
                    })
                    .collect();
                Datum {
                    metric: spec.name.to_owned(),
                    unit: spec.unit.as_str().to_owned(),
                    dimensions,
                    timestamp_ms: ts,
                    stats,
                    high_resolution,
                }
            })
            .collect()
    }
}

/// How far a counter moved from `before` to `after`. One that went down was reset (a driver
/// reload for ECC counters, an interface that came back for network bytes) and counts from
/// zero: no negative delta, and no bytes or errors invented.
pub fn counter_delta(before: u64, after: u64) -> u64 {
    if after >= before { after - before } else { after }
}

/// Splits datums, in order, into the fewest requests within CloudWatch's limits.
pub fn pack(datums: Vec<Datum>) -> Vec<Vec<Datum>> {
    let mut out: Vec<Vec<Datum>> = Vec::new();
    let mut size = 0;
    for d in datums {
        let s = d.encoded_size();
        match out.last_mut() {
            Some(batch) if batch.len() < MAX_DATUMS_PER_REQUEST && size + s <= MAX_REQUEST_BYTES => {
                size += s;
                batch.push(d);
            }
            _ => {
                size = s;
                out.push(vec![d]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuReader;
    use crate::gpu::sim::{Fault, SimReader};
    use proptest::prelude::*;

    fn labels() -> Labels {
        Labels {
            environment: "dev".into(),
            instance_id: "i-0123456789abcdef0".into(),
            availability_zone: "us-east-1a".into(),
        }
    }

    fn find<'a>(d: &'a [Datum], metric: &str, dims: usize, gpu: Option<&str>) -> Option<&'a Datum> {
        d.iter().find(|x| {
            x.metric == metric
                && x.dimensions.len() == dims
                && gpu.is_none_or(|g| x.dimensions.iter().any(|(k, v)| k == "GpuUuid" && v == g))
        })
    }

    fn window(gpus: usize, samples: u64, faults: Vec<Fault>) -> Vec<Datum> {
        let mut r = SimReader::new(gpus, faults);
        let mut a = Aggregator::new();
        for i in 0..samples {
            let readings = r.read().unwrap_or_default();
            a.add_sample(1_000 * i as i64 + 5_000, &readings);
        }
        a.finish(99_000, &labels(), 0, false)
    }

    #[test]
    fn a_starting_agent_says_its_fleet_is_not_meant_to_be_empty() {
        let mut a = Aggregator::new();
        a.add_node_started();
        let d = a.finish(1_000, &labels(), 0, false);
        let intent: Vec<_> = d.iter().filter(|x| x.metric == "FleetScaledToZero").collect();
        assert_eq!(intent.len(), 1, "{d:?}");
        assert_eq!(intent[0].dimensions.len(), 1, "fleet set only: {:?}", intent[0].dimensions);
        assert_eq!(intent[0].stats, Stats::one(0.0));
        let next = a.finish(2_000, &labels(), 0, false);
        assert!(next.iter().all(|x| x.metric != "FleetScaledToZero"), "once per start, not per window");
    }

    #[test]
    fn statistic_sets_cover_every_sample() {
        let d = window(2, 60, vec![]);
        let gpu0 = find(&d, "GPUUtilization", 3, Some("GPU-SIMULATED-0000")).expect("per-GPU series");
        assert_eq!(gpu0.stats.count, 60.0);
        let expected: f64 = (0..60).map(|n| SimReader::utilization(0, n)).sum();
        assert_eq!(gpu0.stats.sum, expected);
        assert_eq!(gpu0.stats.min, 0.0);
        assert_eq!(gpu0.stats.max, 59.0);
        assert_eq!(gpu0.timestamp_ms, 5_000, "timestamp is the window start");
        assert_eq!(gpu0.unit, "Percent");
        let inst = find(&d, "GPUUtilization", 2, None).expect("instance series");
        assert_eq!(inst.stats.count, 120.0, "instance series spans both GPUs");
        let fleet = find(&d, "GPUUtilization", 1, None).expect("fleet series");
        assert_eq!(fleet.stats, inst.stats);
        assert_eq!(fleet.dimensions, vec![("Environment".to_owned(), "dev".to_owned())]);
    }

    #[test]
    fn every_datum_uses_a_contract_dimension_set() {
        for d in window(3, 5, vec![]) {
            let names: Vec<&str> = d.dimensions.iter().map(|(k, _)| k.as_str()).collect();
            let spec = Metric::ALL.iter().map(|m| m.spec()).find(|s| s.name == d.metric).expect("contract metric");
            assert!(
                spec.sets.iter().any(|s| s.dimensions().iter().map(|d| d.name()).eq(names.iter().copied())),
                "{} published with {names:?}",
                d.metric
            );
        }
    }

    #[test]
    fn heartbeat_without_gpus_and_nothing_invented() {
        let mut a = Aggregator::new();
        a.add_sample(0, &[]);
        let d = a.finish(1_000, &labels(), 0, false);
        assert!(find(&d, "AgentHeartbeat", 1, None).is_some());
        assert!(find(&d, "AgentHeartbeat", 2, None).is_some());
        assert_eq!(find(&d, "GPUsVisible", 2, None).map(|x| x.stats.max), Some(0.0));
        assert!(find(&d, "GPUUtilization", 1, None).is_none(), "no GPU, no utilization datum");
        // No sample at all in the window (reader failing): still a heartbeat.
        let d = a.finish(2_000, &labels(), 0, false);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| x.metric == "AgentHeartbeat" && x.timestamp_ms == 2_000));
    }

    #[test]
    fn unreadable_field_gives_fewer_samples_not_zeros() {
        let d = window(2, 10, vec![Fault::TemperatureUnreadable { gpu: 1, from: 0, to: 4 }]);
        let t1 = find(&d, "GPUTemperature", 3, Some("GPU-SIMULATED-0001")).expect("series");
        assert_eq!(t1.stats.count, 6.0);
        assert!(t1.stats.min >= 45.0, "no zero was recorded");
    }

    /// Issue 22: the node's network bytes go out per window with its AZ, as deltas of the
    /// kernel's counters (none for bytes before the agent's first reading; a reset counts
    /// from zero).
    #[test]
    fn network_counters_become_per_window_bytes_with_the_nodes_az() {
        use crate::net::Counters;
        let mut agg = Aggregator::new();
        agg.add_sample(1_000, &[]);
        agg.add_network(Counters { bytes_in: 1_000, bytes_out: 5_000 });
        agg.add_network(Counters { bytes_in: 1_500, bytes_out: 9_000 });
        let d = agg.finish(2_000, &labels(), 0, false);
        let bytes_in = find(&d, "NetworkBytesIn", 3, None).expect("bytes in");
        assert_eq!((bytes_in.stats.sum, bytes_in.unit.as_str()), (500.0, "Bytes"));
        assert_eq!(find(&d, "NetworkBytesOut", 3, None).map(|x| x.stats.sum), Some(4_000.0));
        assert!(bytes_in.dimensions.contains(&("AvailabilityZone".to_owned(), "us-east-1a".to_owned())));
        assert!(bytes_in.dimensions.contains(&("InstanceId".to_owned(), "i-0123456789abcdef0".to_owned())));
        agg.add_network(Counters { bytes_in: 100, bytes_out: 9_100 });
        let d = agg.finish(3_000, &labels(), 0, false);
        assert_eq!(find(&d, "NetworkBytesIn", 3, None).map(|x| x.stats.sum), Some(100.0), "reset: from zero");
        assert_eq!(find(&d, "NetworkBytesOut", 3, None).map(|x| x.stats.sum), Some(100.0));
        let mut none = Aggregator::new();
        assert!(
            find(&none.finish(1, &labels(), 0, false), "NetworkBytesIn", 3, None).is_none(),
            "no reading, no bytes"
        );
    }

    #[test]
    fn ecc_counters_become_per_window_deltas() {
        let mut r = SimReader::new(1, vec![Fault::EccErrors { gpu: 0, per_read: 3, from: 2, to: 5 }]);
        let mut a = Aggregator::new();
        for i in 0..4 {
            a.add_sample(i, &r.read().expect("read"));
        }
        let first = a.finish(10, &labels(), 0, false);
        let ecc = |d: &[Datum], dims| find(d, "GPUECCUncorrectedErrors", dims, None).map(|x| x.stats.sum);
        // Baseline is the first sample (0); reads 2 and 3 add 3 each.
        assert_eq!(ecc(&first, 3), Some(6.0));
        assert_eq!(ecc(&first, 1), Some(6.0), "also on the fleet set the stack could alarm on");
        for i in 4..8 {
            a.add_sample(i, &r.read().expect("read"));
        }
        assert_eq!(ecc(&a.finish(20, &labels(), 0, false), 3), Some(3.0), "only read 4 adds errors");
    }

    #[test]
    fn dropped_datapoints_are_reported() {
        let mut a = Aggregator::new();
        let d = a.finish(0, &labels(), 42, true);
        let dropped = find(&d, "SpoolDroppedDatapoints", 2, None).expect("datum");
        assert_eq!(dropped.stats.sum, 42.0);
        assert!(dropped.high_resolution);
    }

    #[test]
    fn eight_gpus_fit_one_request() {
        let d = window(8, 60, vec![]);
        assert_eq!(pack(d).len(), 1);
    }

    fn datum(i: usize, dims: usize) -> Datum {
        Datum {
            metric: format!("M{i}"),
            unit: "Count".into(),
            dimensions: (0..dims).map(|k| (format!("Dim{k}"), "v".repeat(200))).collect(),
            timestamp_ms: i as i64,
            stats: Stats::one(1.0),
            high_resolution: false,
        }
    }

    proptest! {
        #[test]
        fn packing_keeps_order_and_limits(n in 0usize..3000, dims in 0usize..30) {
            let datums: Vec<Datum> = (0..n).map(|i| datum(i, dims)).collect();
            let batches = pack(datums.clone());
            for b in &batches {
                prop_assert!(!b.is_empty() && b.len() <= MAX_DATUMS_PER_REQUEST);
                prop_assert!(b.iter().map(Datum::encoded_size).sum::<usize>() <= MAX_REQUEST_BYTES);
            }
            let flat: Vec<Datum> = batches.into_iter().flatten().collect();
            prop_assert_eq!(flat, datums);
        }
    }
}
