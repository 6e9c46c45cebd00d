//! Dollars: what a training's node-hours cost at the price it paid, against the same
//! node-hours on demand — the naive saving (price only, what SageMaker prints) and the
//! effective one, which charges spot with the work a reclaim cost (steps run again, the
//! recovery, the restore). Pure: prices come from a table.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::goodput::Goodput;
use crate::runs::Lifecycle;

/// When [`ON_DEMAND_US_EAST_1`] was read.
pub const ON_DEMAND_AS_OF: &str = "2026-06";

/// EC2 On-Demand, Linux, us-east-1, USD per instance-hour, as AWS's EC2 On-Demand pricing page
/// lists them ([`ON_DEMAND_AS_OF`]; aws.amazon.com/ec2/pricing/on-demand). Other regions and
/// newer prices: a `--prices` file overrides any of them.
pub const ON_DEMAND_US_EAST_1: &[(&str, f64)] = &[
    ("g4dn.xlarge", 0.526),
    ("g4dn.2xlarge", 0.752),
    ("g4dn.4xlarge", 1.204),
    ("g4dn.8xlarge", 2.176),
    ("g4dn.12xlarge", 3.912),
    ("g4dn.16xlarge", 4.352),
    ("g5.xlarge", 1.006),
    ("g5.2xlarge", 1.212),
    ("g5.4xlarge", 1.624),
    ("g5.8xlarge", 2.448),
    ("g5.12xlarge", 5.672),
    ("g5.16xlarge", 4.096),
    ("g5.24xlarge", 8.144),
    ("g5.48xlarge", 16.288),
    ("p3.2xlarge", 3.06),
    ("p3.8xlarge", 12.24),
    ("p3.16xlarge", 24.48),
    ("p4d.24xlarge", 32.7726),
];

/// Prices by instance type: on demand, and spot (per AZ, or for every AZ).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    on_demand: BTreeMap<String, f64>,
    /// (type, AZ) → USD/h; the AZ `*` is every AZ without one of its own.
    spot: BTreeMap<(String, String), f64>,
}

/// The AZ of a spot price that holds in every AZ.
const ANY_AZ: &str = "*";

impl Prices {
    /// The built-in on-demand table; no spot price (those come from the store's history or a
    /// `--prices` file).
    pub fn builtin() -> Prices {
        Prices {
            on_demand: ON_DEMAND_US_EAST_1.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect(),
            spot: BTreeMap::new(),
        }
    }

    /// A `--prices` file: `on-demand,TYPE,USD_PER_HOUR` or `spot,TYPE,USD_PER_HOUR[,AZ]` a
    /// line (`#` comments and blank lines skipped); a bad line is refused with its number.
    pub fn parse(text: &str) -> Result<Prices, String> {
        let mut p = Prices::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| {
                format!(
                    "line {}: {why} (want `on-demand|spot,TYPE,USD_PER_HOUR[,AZ]`): {}",
                    i + 1,
                    crate::text::clip(line, 80)
                )
            };
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() < 3 || f.len() > 4 {
                return Err(bad("not 3 or 4 fields"));
            }
            let usd: f64 = f[2].parse().map_err(|_| bad("the price is not a number"))?;
            if !(usd.is_finite() && usd >= 0.0) {
                return Err(bad("the price is not a number of dollars"));
            }
            if f[1].is_empty() {
                return Err(bad("no instance type"));
            }
            match (f[0], f.get(3)) {
                ("on-demand", None) => {
                    p.on_demand.insert(f[1].to_owned(), usd);
                }
                ("on-demand", Some(_)) => return Err(bad("an on-demand price has no AZ")),
                ("spot", az) => {
                    p.spot.insert((f[1].to_owned(), az.copied().unwrap_or(ANY_AZ).to_owned()), usd);
                }
                _ => return Err(bad("the kind is neither on-demand nor spot")),
            }
        }
        Ok(p)
    }

    /// These prices over `base`'s (a file over the built-in table).
    pub fn over(self, mut base: Prices) -> Prices {
        base.on_demand.extend(self.on_demand);
        base.spot.extend(self.spot);
        base
    }

    pub fn set_spot(&mut self, instance_type: &str, az: Option<&str>, usd: f64) {
        self.spot.insert((instance_type.to_owned(), az.unwrap_or(ANY_AZ).to_owned()), usd);
    }

    pub fn on_demand(&self, instance_type: &str) -> Option<f64> {
        self.on_demand.get(instance_type).copied()
    }

    pub fn spot(&self, instance_type: &str, az: Option<&str>) -> Option<f64> {
        let key = |z: &str| (instance_type.to_owned(), z.to_owned());
        az.and_then(|z| self.spot.get(&key(z))).or_else(|| self.spot.get(&key(ANY_AZ))).copied()
    }
}

/// The time-weighted mean of a spot price history over `[from_ms, to_ms]`: each price holds
/// from its timestamp to the next (the newest before `from_ms` holds at `from_ms`). None when no
/// price holds at `from_ms` or later in the span (nothing known), or the span is empty.
pub fn mean_price(history: &[(i64, f64)], from_ms: i64, to_ms: i64) -> Option<f64> {
    let mut h: Vec<(i64, f64)> = history.iter().copied().filter(|(_, p)| p.is_finite() && *p >= 0.0).collect();
    h.sort_by_key(|&(t, _)| t);
    if to_ms <= from_ms {
        // An instant: the price in effect then.
        return h.iter().rev().find(|(t, _)| *t <= from_ms).map(|&(_, p)| p);
    }
    let (mut sum, mut covered) = (0.0, 0i64);
    // One price over the whole span is its mean exactly (p × t / t can be off in the last bit:
    // 1e-5 came back as 1.0000000000000003e-5).
    let mut one_price: Option<Option<f64>> = None;
    for (i, &(t, price)) in h.iter().enumerate() {
        let start = t.max(from_ms);
        let end = h.get(i + 1).map_or(to_ms, |n| n.0).min(to_ms);
        if end > start {
            sum += price * (end - start) as f64;
            covered += end - start;
            one_price = match one_price {
                None => Some(Some(price)),
                Some(Some(p)) if p == price => Some(Some(p)),
                _ => Some(None),
            };
        }
    }
    (covered > 0).then(|| one_price.flatten().unwrap_or(sum / covered as f64))
}

#[cfg(test)]
mod mean_price_tests {
    /// Regression: a constant spot price of 1e-5 over a span averaged to 1.0000000000000003e-5.
    #[test]
    fn one_price_over_the_span_is_its_mean_exactly() {
        for (from, to) in [(0, 102_948), (1_000, 103_948), (7, 1_000_007)] {
            assert_eq!(super::mean_price(&[(0, 0.00001)], from, to), Some(0.00001), "{from}..{to}");
        }
        assert_eq!(super::mean_price(&[(0, 1.0), (50, 3.0)], 0, 100), Some(2.0));
    }
}

/// One attempt's bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptBill {
    pub number: u32,
    pub instance_type: Option<String>,
    pub lifecycle: Lifecycle,
    pub node_hours: f64,
    /// USD per node-hour paid (None: no price known for it).
    pub usd_per_hour: Option<f64>,
    pub on_demand_usd_per_hour: Option<f64>,
}

/// What a training cost, against on demand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dollars {
    /// What its priced attempts paid.
    pub paid_usd: f64,
    /// The same node-hours at the on-demand price.
    pub on_demand_usd: f64,
    /// 1 − paid / on demand, in %: the price alone (what SageMaker's savings print).
    pub naive_saving_pct: f64,
    /// What the same work would have cost on demand: its node-hours less the time spot cost it
    /// (steps run again, stopping, launching, restoring), at the on-demand price.
    pub work_on_demand_usd: f64,
    /// 1 − paid / work on demand, in %: the saving once the reclaims' cost is counted (below 0:
    /// spot cost more than on demand would have).
    pub effective_saving_pct: f64,
    /// Node-hours with no price known (left out of the sums).
    pub unpriced_node_hours: f64,
    pub attempts: Vec<AttemptBill>,
}

/// The dollars of a training's goodput, at `prices`; `assumed_type` is the instance type of
/// the attempts that recorded no node (a laptop's, a simulation's); `paid` the spot price an
/// attempt paid (by its number, from EC2's price history), over the table's. None when no
/// attempt could be priced.
pub fn dollars(
    g: &Goodput,
    prices: &Prices,
    assumed_type: Option<&str>,
    paid_by_attempt: &BTreeMap<u32, f64>,
) -> Option<Dollars> {
    let mut bills = Vec::new();
    let (mut paid, mut od, mut unpriced) = (0.0, 0.0, 0.0);
    for a in &g.attempts {
        let node_hours = f64::from(a.nodes) * (a.ended_ms - a.started_ms).max(0) as f64 / 3_600_000.0;
        let itype = a.node.as_ref().map(|n| n.instance_type.clone()).or_else(|| assumed_type.map(str::to_owned));
        let az = a.node.as_ref().map(|n| n.availability_zone.as_str());
        let lifecycle = a.node.as_ref().and_then(|n| n.lifecycle).unwrap_or(Lifecycle::Spot);
        let on_demand = itype.as_deref().and_then(|t| prices.on_demand(t));
        let rate = match lifecycle {
            Lifecycle::OnDemand => on_demand,
            Lifecycle::Spot => {
                paid_by_attempt.get(&a.number).copied().or_else(|| itype.as_deref().and_then(|t| prices.spot(t, az)))
            }
        };
        match (rate, on_demand) {
            (Some(r), Some(o)) => {
                paid += r * node_hours;
                od += o * node_hours;
            }
            _ => unpriced += node_hours,
        }
        bills.push(AttemptBill {
            number: a.number,
            instance_type: itype,
            lifecycle,
            node_hours,
            usd_per_hour: rate,
            on_demand_usd_per_hour: on_demand,
        });
    }
    if od <= 0.0 {
        return None;
    }
    // The share of the attempts' time that spot cost: the same work on demand needs none of it.
    let attempt_s: f64 = g.attempts.iter().map(|a| (a.ended_ms - a.started_ms).max(0) as f64 / 1000.0).sum();
    let r = &g.badput.infrastructure_recovery;
    let spot_s = g.badput.wasted_progress.s + r.stopping.s + r.boot_launch.s + g.badput.checkpoint_restore.s;
    let work_share = if attempt_s > 0.0 { (1.0 - spot_s / attempt_s).clamp(0.0, 1.0) } else { 1.0 };
    let work = od * work_share;
    let pct = |num: f64, den: f64| if den > 0.0 { 100.0 * (1.0 - num / den) } else { 0.0 };
    Some(Dollars {
        paid_usd: paid,
        on_demand_usd: od,
        naive_saving_pct: pct(paid, od),
        work_on_demand_usd: work,
        effective_saving_pct: pct(paid, work),
        unpriced_node_hours: unpriced,
        attempts: bills,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goodput::{AttemptSpan, goodput};
    use crate::runs::NodeIdentity;

    const H: i64 = 3_600_000;

    fn span(n: u32, start: i64, hours: i64, restored: Option<u64>, to: u64, lifecycle: Lifecycle) -> AttemptSpan {
        let per = hours * H / (to - restored.unwrap_or(0)) as i64;
        let mut a = AttemptSpan::steady(n, start, start, restored, to, per, 0);
        a.nodes = 2;
        a.node = Some(NodeIdentity {
            instance_id: "i-1".into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: "us-east-1a".into(),
            ami_id: "ami".into(),
            lifecycle: Some(lifecycle),
        });
        a
    }

    #[test]
    fn spot_against_on_demand_naive_and_effective() {
        let mut prices = Prices::builtin();
        prices.set_spot("g5.xlarge", Some("us-east-1a"), 0.40);
        // 2 nodes × (3 h + 3 h); the second attempt re-ran 1 h of the first's steps.
        let g =
            goodput(&[span(1, 0, 3, None, 300, Lifecycle::Spot), span(2, 3 * H, 3, Some(200), 500, Lifecycle::Spot)]);
        let d = dollars(&g, &prices, None, &BTreeMap::new()).expect("priced");
        assert!((d.paid_usd - 0.40 * 12.0).abs() < 1e-9, "{d:?}");
        assert!((d.on_demand_usd - 1.006 * 12.0).abs() < 1e-9);
        assert!((d.naive_saving_pct - 100.0 * (1.0 - 0.40 / 1.006)).abs() < 1e-9);
        // 1 h of 6 was re-run: the work needed 5 h on demand.
        assert!((d.work_on_demand_usd - 1.006 * 10.0).abs() < 1e-6, "{d:?}");
        assert!(d.effective_saving_pct < d.naive_saving_pct);
        assert_eq!(d.unpriced_node_hours, 0.0);
    }

    #[test]
    fn an_on_demand_attempt_pays_on_demand_and_unknown_types_are_unpriced() {
        let g = goodput(&[span(1, 0, 1, None, 100, Lifecycle::OnDemand)]);
        let d = dollars(&g, &Prices::builtin(), None, &BTreeMap::new()).expect("priced");
        assert!((d.naive_saving_pct).abs() < 1e-9 && (d.paid_usd - 2.012).abs() < 1e-9);
        // A spot attempt without a spot price is left out, and said.
        let g = goodput(&[span(1, 0, 1, None, 100, Lifecycle::Spot)]);
        assert_eq!(dollars(&g, &Prices::builtin(), None, &BTreeMap::new()), None);
    }

    #[test]
    fn the_price_paid_is_the_histories_time_weighted_mean() {
        // 0.30 from before the attempt, 0.50 from its middle on.
        let h = [(-10 * H, 0.30), (2 * H, 0.50), (5 * H, 9.0)];
        assert!((mean_price(&h, 0, 4 * H).expect("mean") - 0.40).abs() < 1e-12);
        assert_eq!(mean_price(&h, 3 * H, 3 * H), Some(0.50));
        assert_eq!(mean_price(&[(10 * H, 1.0)], 0, H), None, "no price known then");
        assert_eq!(mean_price(&[], 0, H), None);
        // A price the history gave for the attempt wins over the table's.
        let g = goodput(&[span(1, 0, 1, None, 100, Lifecycle::Spot)]);
        let paid = BTreeMap::from([(1, 0.25)]);
        let d = dollars(&g, &Prices::builtin(), None, &paid).expect("priced by the history");
        assert!((d.paid_usd - 0.25 * 2.0).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn a_prices_file_overrides_and_bad_lines_are_named() {
        let p =
            Prices::parse("# ours\nspot,g5.xlarge,0.35\nspot,g5.xlarge,0.31,us-east-1b\non-demand,g5.xlarge,1.10\n")
                .expect("prices")
                .over(Prices::builtin());
        assert_eq!(p.on_demand("g5.xlarge"), Some(1.10));
        assert_eq!(p.on_demand("p3.2xlarge"), Some(3.06));
        assert_eq!(p.spot("g5.xlarge", Some("us-east-1b")), Some(0.31));
        assert_eq!(p.spot("g5.xlarge", Some("us-east-1c")), Some(0.35));
        for (bad, why) in [
            ("spot,g5.xlarge", "not 3 or 4 fields"),
            ("spot,g5.xlarge,cheap", "not a number"),
            ("spot,g5.xlarge,-1", "not a number of dollars"),
            ("reserved,g5.xlarge,1", "neither on-demand nor spot"),
            ("on-demand,g5.xlarge,1,us-east-1a", "has no AZ"),
        ] {
            let e = Prices::parse(bad).expect_err(bad);
            assert!(e.contains(why) && e.starts_with("line 1"), "{bad}: {e}");
        }
    }
}
