//! Chart series for `tap ui`: a few thousand points out of millions, chosen so that what the
//! eye needs stays. The step range is cut into buckets of equal width; each bucket keeps its
//! lowest and its highest point (a loss spike of one step never vanishes, W&B's way), and the
//! series keeps its last point (the final value is what people read). Buckets are cut on the
//! step axis, not on the point count, so the same range and bucket count give the same edges
//! for every run of a comparison: their points line up (MLflow's step-aligned sampling).
//! Zooming asks again for the narrower range, which at some width is the full resolution.
//!
//! Pure functions over sorted points; the stores read, the server serves.

/// Buckets a chart asks for when it does not say: about one per pixel of a wide chart,
/// doubled by min and max (uPlot draws 166 k points in 25 ms, so a few thousand is cheap).
pub const DEFAULT_BUCKETS: usize = 1_000;
/// The most a request may ask for.
pub const MAX_BUCKETS: usize = 10_000;

/// A point of a series: (step, value).
pub type Point = (u64, f64);

/// What a series of `points` (sorted by step) shows between `from` and `to` (inclusive) in at
/// most `2 * buckets + 1` points: every point when that many or fewer fall in the range, else
/// each bucket's lowest and highest point in step order, and the last point in the range.
/// Non-finite values are kept by the first rule and skipped as extremes by the second.
pub fn downsample(points: &[Point], from: u64, to: u64, buckets: usize) -> Vec<Point> {
    let buckets = buckets.clamp(1, MAX_BUCKETS);
    let start = points.partition_point(|p| p.0 < from);
    let end = points.partition_point(|p| p.0 <= to);
    let within = points.get(start..end).unwrap_or_default();
    if within.len() <= 2 * buckets + 1 {
        return within.to_vec();
    }
    let (lo, hi) = (within[0].0, within[within.len() - 1].0);
    // Bucket i holds the steps [lo + i*width, lo + (i+1)*width); u128 keeps wide ranges exact.
    let span = u128::from(hi - lo) + 1;
    let bucket_of = |step: u64| (u128::from(step - lo) * buckets as u128 / span) as usize;
    let mut out = Vec::with_capacity(2 * buckets + 1);
    let mut i = 0;
    while i < within.len() {
        let (j, min, max) = bucket_extremes(within, i, &bucket_of);
        match (min, max) {
            (Some(a), Some(b)) if a == b => out.push(within[a]),
            (Some(a), Some(b)) => {
                out.push(within[a.min(b)]);
                out.push(within[a.max(b)]);
            }
            // A bucket of NaNs only: its first point, so the gap shows.
            _ => out.push(within[i]),
        }
        i = j;
    }
    let last = within[within.len() - 1];
    if out.last().map(|p| p.0) != Some(last.0) {
        out.push(last);
    }
    out
}

/// The bucket that starts at `within[i]`: where the next one starts, and the indices of its
/// lowest and highest finite points (None: only NaN there).
fn bucket_extremes(
    within: &[Point],
    i: usize,
    bucket_of: &dyn Fn(u64) -> usize,
) -> (usize, Option<usize>, Option<usize>) {
    let b = bucket_of(within[i].0);
    let (mut j, mut min, mut max) = (i, None::<usize>, None::<usize>);
    while j < within.len() && bucket_of(within[j].0) == b {
        let v = within[j].1;
        if v.is_finite() {
            if min.is_none_or(|m| v < within[m].1) {
                min = Some(j);
            }
            if max.is_none_or(|m| v > within[m].1) {
                max = Some(j);
            }
        }
        j += 1;
    }
    (j, min, max)
}

/// Several runs' series of one metric on one step axis, for a chart that draws them together:
/// the union of their steps, and each run's value at each (None where it has no point).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Aligned {
    pub steps: Vec<u64>,
    pub values: Vec<Vec<Option<f64>>>,
}

/// Joins series (each sorted by step, one point per step) on their steps.
pub fn align(series: &[Vec<Point>]) -> Aligned {
    let mut steps: Vec<u64> = series.iter().flat_map(|s| s.iter().map(|p| p.0)).collect();
    steps.sort_unstable();
    steps.dedup();
    let values = series
        .iter()
        .map(|s| {
            let mut column = vec![None; steps.len()];
            let mut k = 0;
            for &(step, v) in s {
                while steps[k] < step {
                    k += 1;
                }
                column[k] = Some(v);
            }
            column
        })
        .collect();
    Aligned { steps, values }
}

/// Several runs' series of one metric for one chart, each cut into the same `buckets` buckets
/// of `[lo, hi]` (step-aligned: the runs' points of a bucket share its x positions). A bucket
/// keeps, per run, its lowest and highest point in step order and the run's last point if it
/// falls there, at three fixed steps of the bucket (its start, a third and two thirds in); a
/// point moves by less than a bucket's width, so the union of x values is at most three per
/// bucket whatever the runs, not every run's own steps. Buckets narrower than three steps
/// need no downsampling: the series are joined on their own steps ([`align`]).
pub fn align_buckets(series: &[Vec<Point>], lo: u64, hi: u64, buckets: usize) -> Aligned {
    let buckets = buckets.clamp(1, MAX_BUCKETS);
    let span = u128::from(hi.saturating_sub(lo)) + 1;
    if span < 3 * buckets as u128 {
        let within: Vec<Vec<Point>> =
            series.iter().map(|s| s.iter().copied().filter(|p| (lo..=hi).contains(&p.0)).collect()).collect();
        return align(&within);
    }
    let bucket_of = |step: u64| (u128::from(step - lo) * buckets as u128 / span) as usize;
    let start = |b: usize| lo + (b as u128 * span / buckets as u128) as u64;
    let slot_x = |b: usize, slot: usize| {
        let (a, z) = (start(b), if b + 1 < buckets { start(b + 1) } else { hi + 1 });
        a + (z - a) * slot as u64 / 3
    };
    // Per run: bucket -> the three slots' values.
    let mut columns: Vec<std::collections::BTreeMap<u64, f64>> = Vec::with_capacity(series.len());
    let mut xs = std::collections::BTreeSet::new();
    for s in series {
        let within: Vec<Point> = s.iter().copied().filter(|p| (lo..=hi).contains(&p.0)).collect();
        let mut column = std::collections::BTreeMap::new();
        let mut i = 0;
        while i < within.len() {
            let b = bucket_of(within[i].0);
            let (j, min, max) = bucket_extremes(&within, i, &bucket_of);
            let mut kept: Vec<usize> = [min, max].into_iter().flatten().collect();
            kept.sort_unstable();
            kept.dedup();
            for (slot, k) in kept.into_iter().enumerate() {
                column.insert(slot_x(b, slot), within[k].1);
            }
            if j == within.len() {
                // The run's last point: the third slot of its bucket.
                column.insert(slot_x(b, 2), within[j - 1].1);
            }
            i = j;
        }
        xs.extend(column.keys().copied());
        columns.push(column);
    }
    let steps: Vec<u64> = xs.into_iter().collect();
    let values = columns.iter().map(|c| steps.iter().map(|x| c.get(x).copied()).collect()).collect();
    Aligned { steps, values }
}

/// One value per step, the later one where a step was recorded again (a resumed attempt
/// computes steps again): points sorted by step, ties in recording order.
pub fn last_per_step(points: impl IntoIterator<Item = Point>) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ramp(n: u64) -> Vec<Point> {
        (0..n).map(|s| (s, s as f64)).collect()
    }

    #[test]
    fn a_short_series_comes_back_whole() {
        let p = ramp(100);
        assert_eq!(downsample(&p, 0, u64::MAX, 50), p);
        assert_eq!(downsample(&p, 10, 19, 5), p[10..20].to_vec());
        assert_eq!(downsample(&p, 10, 19, 2), [(10, 10.0), (14, 14.0), (15, 15.0), (19, 19.0)]);
        assert!(downsample(&p, 200, 300, 10).is_empty());
    }

    #[test]
    fn a_spike_of_one_step_survives_a_million_points() {
        let mut p: Vec<Point> = (0..1_000_000u64).map(|s| (s, 1.0 + (s % 7) as f64 * 0.01)).collect();
        p[777_777].1 = 50.0;
        p[123_456].1 = -3.0;
        let d = downsample(&p, 0, u64::MAX, 1_000);
        assert!(d.len() <= 2_001, "{}", d.len());
        assert!(d.contains(&(777_777, 50.0)) && d.contains(&(123_456, -3.0)));
        assert_eq!(d.last(), Some(&(999_999, 1.0 + (999_999 % 7) as f64 * 0.01)), "the final value");
    }

    #[test]
    fn buckets_cut_the_same_steps_for_every_run() {
        // Two runs that logged at different rates: their kept steps fall in the same buckets.
        let dense: Vec<Point> = (0..100_000u64).map(|s| (s, (s as f64).sin())).collect();
        let sparse: Vec<Point> = (0..100_000u64).step_by(10).map(|s| (s, (s as f64).cos())).collect();
        let (a, b) = (downsample(&dense, 0, 99_999, 100), downsample(&sparse, 0, 99_999, 100));
        let bucket = |s: u64| s / 1_000;
        let ba: std::collections::BTreeSet<u64> = a.iter().map(|p| bucket(p.0)).collect();
        let bb: std::collections::BTreeSet<u64> = b.iter().map(|p| bucket(p.0)).collect();
        assert_eq!(ba, bb);
        assert_eq!(ba.len(), 100);
    }

    #[test]
    fn a_nan_bucket_keeps_a_point_and_extremes_skip_nan() {
        let mut p = ramp(1_000);
        for v in &mut p[0..100] {
            v.1 = f64::NAN;
        }
        let d = downsample(&p, 0, 999, 10);
        assert!(d[0].1.is_nan() && d[0].0 == 0);
        assert!(d[1..].iter().all(|p| p.1.is_finite()));
    }

    #[test]
    fn align_joins_on_the_union_of_steps() {
        let a = vec![(0, 1.0), (2, 2.0)];
        let b = vec![(1, 5.0), (2, 6.0), (9, 7.0)];
        let j = align(&[a, b]);
        assert_eq!(j.steps, [0, 1, 2, 9]);
        assert_eq!(j.values[0], [Some(1.0), None, Some(2.0), None]);
        assert_eq!(j.values[1], [None, Some(5.0), Some(6.0), Some(7.0)]);
    }

    #[test]
    fn compared_runs_share_three_x_values_a_bucket_and_keep_spikes_and_last_values() {
        let runs: Vec<Vec<Point>> = (0..50u64)
            .map(|r| {
                let mut s: Vec<Point> = (r..100_000 - r).map(|x| (x, (x as f64 * 0.01 + r as f64).sin())).collect();
                s[5_000 + r as usize].1 = 99.0 + r as f64;
                s
            })
            .collect();
        let a = align_buckets(&runs, 0, 99_999, 500);
        assert!(a.steps.len() <= 3 * 500, "{}", a.steps.len());
        for (r, column) in a.values.iter().enumerate() {
            assert_eq!(column.len(), a.steps.len());
            assert!(column.iter().flatten().any(|v| *v == 99.0 + r as f64), "run {r}'s spike");
            let last = runs[r].last().expect("points").1;
            assert_eq!(column.iter().rev().flatten().next(), Some(&last), "run {r}'s final value");
        }
        // Narrow: every step, as align does.
        let narrow = align_buckets(&runs[..2], 10, 19, 500);
        assert_eq!(narrow.steps, (10..=19).collect::<Vec<u64>>());
    }

    #[test]
    fn a_step_recorded_again_keeps_its_later_value() {
        assert_eq!(last_per_step([(1, 1.0), (2, 2.0), (2, 3.0), (3, 4.0)]), [(1, 1.0), (2, 3.0), (3, 4.0)]);
    }

    proptest! {
        #[test]
        fn downsampling_keeps_extremes_and_the_last_point(
            values in proptest::collection::vec(-1e6f64..1e6, 1..5_000),
            gaps in proptest::collection::vec(1u64..1_000, 1..5_000),
            buckets in 1usize..200,
        ) {
            let mut step = 0u64;
            let p: Vec<Point> = values.iter().zip(gaps.iter().cycle()).map(|(&v, &g)| { step += g; (step, v) }).collect();
            let d = downsample(&p, 0, u64::MAX, buckets);
            prop_assert!(d.len() <= 2 * buckets + 1);
            prop_assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "in step order, no step twice");
            prop_assert!(d.iter().all(|q| p.contains(q)), "only points of the series");
            prop_assert_eq!(d.last(), p.last());
            let min = p.iter().map(|q| q.1).fold(f64::INFINITY, f64::min);
            let max = p.iter().map(|q| q.1).fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(d.iter().any(|q| q.1 == min) && d.iter().any(|q| q.1 == max));
        }
    }
}
