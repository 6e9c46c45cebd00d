//! The final checkpoint against EC2's deadline: the verdict a run's final checkpoint gets,
//! and the deadline planner that, from the periodic checkpoints, forecasts whether a final
//! one would fit in the spot window at all. Pure functions; the supervisor feeds them.

use serde::{Deserialize, Serialize};

/// EC2 announces a spot reclaim two minutes before it takes the instance
/// (docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html).
pub const EC2_NOTICE_WINDOW_MS: i64 = 120_000;

/// tap-agent's default IMDS poll (`[spot] poll_seconds`, tap_core::agent_config): a notice
/// may be up this long before the agent sees it.
pub const DEFAULT_AGENT_POLL_S: f64 = 5.0;

/// How the final checkpoint of an interrupted run fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Committed (LATEST points at it) before EC2's deadline, this many seconds to spare.
    Committed { checkpoint: String, spare_s: f64 },
    /// Committed after the deadline: on EC2 the node would have been gone, and with it this
    /// checkpoint.
    Late { checkpoint: String, late_s: f64 },
    /// No checkpoint was committed after the notice: a resume starts from `previous` (none:
    /// from scratch), `steps_older` steps behind where the run stopped.
    Missed { previous: Option<String>, steps_older: Option<u64> },
}

/// A checkpoint as committed: its id, when LATEST moved to it, and its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: String,
    pub committed_ms: i64,
    pub step: Option<u64>,
}

/// The deadline a notice sets: the one it carries (tap-agent's notice file), else EC2's two
/// minutes from when the run heard of it (a SIGUSR1 from someone else).
pub fn deadline_ms(noticed_ms: i64, carried: Option<i64>) -> i64 {
    carried.unwrap_or_else(|| noticed_ms.saturating_add(EC2_NOTICE_WINDOW_MS))
}

/// The verdict for a run noticed at `noticed_ms`: `last` is its newest committed checkpoint
/// (of this run or the one it resumed), `step` the last step the run reported.
pub fn verdict(noticed_ms: i64, deadline_ms: i64, last: Option<&Commit>, step: u64) -> Verdict {
    match last {
        Some(c) if c.committed_ms >= noticed_ms => {
            let s = (deadline_ms - c.committed_ms) as f64 / 1000.0;
            if s >= 0.0 {
                Verdict::Committed { checkpoint: c.id.clone(), spare_s: s }
            } else {
                Verdict::Late { checkpoint: c.id.clone(), late_s: -s }
            }
        }
        previous => Verdict::Missed {
            previous: previous.map(|c| c.id.clone()),
            steps_older: previous.and_then(|c| c.step).map(|s| step.saturating_sub(s)),
        },
    }
}

impl Verdict {
    /// One line for `tap runs show`.
    pub fn line(&self) -> String {
        match self {
            Verdict::Committed { checkpoint, spare_s } => {
                format!("committed: {checkpoint}, {spare_s:.1} s before EC2's deadline")
            }
            Verdict::Late { checkpoint, late_s } => format!(
                "late: {checkpoint} was committed {late_s:.1} s after EC2's deadline (on EC2 it would have been lost)"
            ),
            Verdict::Missed { previous: Some(p), steps_older } => format!(
                "missed: no checkpoint after the notice; a resume starts from {p}{}",
                steps_older.map(|n| format!(", {n} steps older")).unwrap_or_default()
            ),
            Verdict::Missed { previous: None, .. } => {
                "missed: no checkpoint after the notice and none before; a resume starts from scratch".to_owned()
            }
        }
    }
}

/// What one periodic checkpoint cost: measured by the supervisor while committing it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Bytes in the checkpoint directory (all hashed).
    pub total_bytes: u64,
    /// Bytes actually sent (files the store did not have yet).
    pub sent_bytes: u64,
    pub hash_s: f64,
    pub send_s: f64,
    /// The rest: noticing the checkpoint line, the manifest, LATEST, requests that send
    /// nothing.
    pub other_s: f64,
    /// How long the training process took to write it (newest file change − oldest file
    /// creation among the files it changed); 0 when the filesystem does not say.
    pub child_write_s: f64,
}

impl Sample {
    pub fn commit_s(&self) -> f64 {
        self.hash_s + self.send_s + self.other_s
    }
}

/// The planner's forecast for a final checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Predicted time from the child's checkpoint line to LATEST.
    pub commit_s: f64,
    /// What the spot window leaves for it: 120 s − the agent's poll − the child's own
    /// checkpoint time.
    pub window_s: f64,
    pub child_write_s: f64,
    pub total_bytes: u64,
    /// Bytes a checkpoint changes (and so sends), from the periodic ones after the first.
    pub changed_bytes: u64,
    /// Bytes per second hashed and sent.
    pub hash_rate: f64,
    pub send_rate: f64,
}

impl Forecast {
    pub fn fits(&self) -> bool {
        self.commit_s <= self.window_s
    }

    /// The one-line warning when it does not fit, with the numbers and what to do.
    pub fn warning(&self) -> Option<String> {
        (!self.fits()).then(|| {
            format!(
                "a final checkpoint would take ~{:.0} s to commit (hash {} at {}/s, send {} at {}/s), but the spot \
                 window leaves {:.0} s (120 s - {:.0} s agent poll - {:.0} s to write it): checkpoint less state \
                 (or shard it so less changes), use a faster link, or lower --checkpoint-deadline",
                self.commit_s,
                bytes(self.total_bytes),
                bytes(self.hash_rate as u64),
                bytes(self.changed_bytes),
                bytes(self.send_rate as u64),
                self.window_s.max(0.0),
                DEFAULT_AGENT_POLL_S,
                self.child_write_s,
            )
        })
    }

    /// One line for `tap runs show`.
    pub fn line(&self) -> String {
        format!(
            "a final checkpoint would take ~{:.2} s of a {:.1} s window ({})",
            self.commit_s,
            self.window_s.max(0.0),
            if self.fits() { "fits" } else { "does NOT fit" }
        )
    }
}

/// Forecasts a final checkpoint's commit from the periodic ones (`None` before the second:
/// the first sends everything and says nothing about what a checkpoint changes). Sizes and
/// rates are the newest checkpoint's (the disk's and the network's state now: page cache and
/// writeback make later commits slower than early ones); the changed bytes are the most any
/// checkpoint after the first sent.
pub fn forecast(samples: &[Sample], agent_poll_s: f64) -> Option<Forecast> {
    let (last, later) = (samples.last()?, samples.get(1..).filter(|l| !l.is_empty())?);
    let rate = |bytes: u64, secs: f64| if secs > 0.0 { bytes as f64 / secs } else { f64::INFINITY };
    let hash_rate = rate(last.total_bytes, last.hash_s);
    let send_rate =
        samples.iter().rev().find(|s| s.sent_bytes > 0).map_or(f64::INFINITY, |s| rate(s.sent_bytes, s.send_s));
    let changed_bytes = later.iter().map(|s| s.sent_bytes).max().unwrap_or(0);
    let other_s = last.other_s;
    let child_write_s = later.iter().map(|s| s.child_write_s).fold(0.0, f64::max);
    let time = |bytes: u64, rate: f64| if bytes == 0 || rate.is_infinite() { 0.0 } else { bytes as f64 / rate };
    let commit_s = time(last.total_bytes, hash_rate) + time(changed_bytes, send_rate) + other_s;
    let window_s = EC2_NOTICE_WINDOW_MS as f64 / 1000.0 - agent_poll_s - child_write_s;
    let finite = |r: f64| if r.is_finite() { r } else { 0.0 };
    Some(Forecast {
        commit_s,
        window_s,
        child_write_s,
        total_bytes: last.total_bytes,
        changed_bytes,
        hash_rate: finite(hash_rate),
        send_rate: finite(send_rate),
    })
}

/// Whether an upload in flight when a notice arrives should go on: yes when it is expected
/// to land before the deadline (from its progress, `moved` of `total` bytes in `elapsed_s`);
/// otherwise it is cancelled so the final checkpoint gets the bandwidth (LATEST stays on the
/// previous complete checkpoint). An upload with no progress yet is expected to take
/// `forecast_s` (the planner's), or is cancelled when there is none.
pub fn keep_upload(moved: u64, total: u64, elapsed_s: f64, forecast_s: Option<f64>, left_s: f64) -> bool {
    let remaining_s = if moved > 0 && elapsed_s > 0.0 {
        total.saturating_sub(moved) as f64 / (moved as f64 / elapsed_s)
    } else {
        match forecast_s {
            Some(f) => (f - elapsed_s).max(0.0),
            None => return false,
        }
    };
    remaining_s <= left_s
}

/// Bytes for people: `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(id: &str, at: i64, step: u64) -> Commit {
        Commit { id: id.into(), committed_ms: at, step: Some(step) }
    }

    #[test]
    fn verdicts() {
        let (noticed, deadline) = (10_000, deadline_ms(10_000, None));
        assert_eq!(deadline, 130_000, "EC2's two minutes from the notice");
        assert_eq!(deadline_ms(10_000, Some(50_000)), 50_000, "the notice's own deadline");
        assert_eq!(
            verdict(noticed, deadline, Some(&commit("c2", 100_000, 40)), 40),
            Verdict::Committed { checkpoint: "c2".into(), spare_s: 30.0 }
        );
        assert_eq!(
            verdict(noticed, deadline, Some(&commit("c2", 142_500, 40)), 40),
            Verdict::Late { checkpoint: "c2".into(), late_s: 12.5 }
        );
        assert_eq!(
            verdict(noticed, deadline, Some(&commit("c1", 9_000, 30)), 42),
            Verdict::Missed { previous: Some("c1".into()), steps_older: Some(12) },
            "the newest commit is from before the notice"
        );
        assert_eq!(verdict(noticed, deadline, None, 42), Verdict::Missed { previous: None, steps_older: None });
        assert!(verdict(noticed, deadline, None, 42).line().contains("from scratch"));
        assert!(verdict(noticed, deadline, Some(&commit("c1", 9_000, 30)), 42).line().contains("12 steps older"));
    }

    #[test]
    fn verdicts_serialise_with_a_tag() {
        let v = Verdict::Late { checkpoint: "c".into(), late_s: 1.5 };
        let text = serde_json::to_string(&v).expect("json");
        assert_eq!(text, r#"{"verdict":"late","checkpoint":"c","late_s":1.5}"#);
        assert_eq!(serde_json::from_str::<Verdict>(&text).expect("back"), v);
    }

    fn sample(total: u64, sent: u64, hash_s: f64, send_s: f64) -> Sample {
        Sample { total_bytes: total, sent_bytes: sent, hash_s, send_s, other_s: 0.5, child_write_s: 10.0 }
    }

    #[test]
    fn the_planner_needs_two_checkpoints_and_uses_what_later_ones_change() {
        const G: u64 = 1 << 30;
        assert_eq!(forecast(&[], 5.0), None);
        assert_eq!(forecast(&[sample(4 * G, 4 * G, 4.0, 40.0)], 5.0), None, "the first sends everything");
        // 4 GiB hashed at 1 GiB/s; the first sent 4 GiB in 40 s, the second 1 GiB in 10 s.
        let f = forecast(&[sample(4 * G, 4 * G, 4.0, 40.0), sample(4 * G, G, 4.0, 10.0)], 5.0).expect("forecast");
        assert!((f.hash_rate - G as f64).abs() < 1.0 && (f.send_rate - G as f64 / 10.0).abs() < 1.0, "{f:?}");
        assert!((f.commit_s - (4.0 + 10.0 + 0.5)).abs() < 1e-9, "{f:?}");
        assert_eq!(f.changed_bytes, G);
        assert!((f.window_s - 105.0).abs() < 1e-9, "120 - 5 poll - 10 write");
        assert!(f.fits() && f.warning().is_none());
        // Ten times the changed state does not fit.
        let big = forecast(&[sample(40 * G, 40 * G, 40.0, 400.0), sample(40 * G, 10 * G, 40.0, 100.0)], 5.0)
            .expect("forecast");
        assert!(!big.fits());
        let w = big.warning().expect("warns");
        assert!(w.contains("~140 s") && w.contains("leaves 105 s") && w.contains("10.0 GiB"), "{w}");
    }

    #[test]
    fn unchanged_checkpoints_cost_only_the_hash() {
        let f = forecast(&[sample(1000, 1000, 1.0, 1.0), sample(1000, 0, 1.0, 0.0)], 5.0).expect("forecast");
        assert!((f.commit_s - 1.5).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn an_upload_in_flight_is_kept_only_if_it_lands_in_time() {
        assert!(keep_upload(50, 100, 5.0, None, 6.0), "5 s more, 6 s left");
        assert!(!keep_upload(50, 100, 5.0, None, 4.0), "5 s more, 4 s left");
        assert!(keep_upload(0, 100, 1.0, Some(3.0), 2.5), "no progress yet: the forecast says 2 s more");
        assert!(!keep_upload(0, 100, 1.0, None, 100.0), "nothing known: the final checkpoint goes first");
        assert!(keep_upload(100, 100, 5.0, None, 0.0), "already sent");
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
