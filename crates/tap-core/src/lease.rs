//! The job controller's lease: which one node of the fleet runs the controller. Pure: the
//! item's fields and every decision over them; the DynamoDB calls are in tap-store
//! (`lease`), the loop in tap-agent (`controller`).
//!
//! The design is that of awslabs' amazon-dynamodb-lock-client, not a port of it (Java) nor
//! the `dynamodb-lease` crate (which times leases by the holder's wall clock and has no
//! fencing token or succession). What we keep from the lock client:
//! - the item carries a record version number (`rvn`), a fresh random value on every write;
//! - the holder renews (a conditional write "holder = me and rvn = the one I wrote") well
//!   inside the lease time;
//! - a contender never compares clocks: it remembers the `rvn` it saw and when, by its own
//!   monotonic clock, and only once that same `rvn` has stood for the whole lease time does
//!   it take the lease, with a conditional write "rvn is still the one I saw". Clock skew
//!   between nodes cannot make two holders; two contenders at once get one winner.
//!
//! What we add:
//! - an `epoch` (fencing token), one more on every take-over: every write the controller
//!   makes to a job is a transaction that checks "holder = me and epoch = mine", so a
//!   paused, partitioned or skewed ex-holder cannot act on a job after another node took
//!   over, even before it notices;
//! - a succession: the holder writes the other nodes in the order every node agrees on
//!   (oldest launch first, as the idle rule's leader), so only the next in line polls often
//!   and the fleet's request rate does not grow with its size (see [`poll_every_ms`]);
//! - a release on a spot notice: the node that goes away hands the lease over at once.
//! - `queue_seq`, bumped by `tap launch` and `tap jobs cancel`, which the holder reads back on
//!   every renewal: an idle controller learns of new work without reading the queue.

use serde::{Deserialize, Serialize};

/// How long a lease stands without a renewal: a dead holder is replaced within this plus one
/// poll of the next in line (80 s at most). A reclaimed holder hands over at its notice.
pub const LEASE_MS: i64 = 60_000;
/// The holder renews every third of the lease (the lock client's heartbeat = lease / 3), so
/// two renewals may fail before the lease is in doubt.
pub const RENEW_EVERY_MS: i64 = LEASE_MS / 3;
/// The holder stops acting this long before its lease could be taken: renewals that time out
/// leave a margin for a request in flight and for clock rate drift.
pub const SAFETY_MS: i64 = 10_000;
/// How often the next in line reads the lease. Position p (0: next in line) reads every
/// `STANDBY_POLL_MS · (p + 1)²`: the sum over any number of nodes stays below
/// `1.65 / STANDBY_POLL_MS`.
pub const STANDBY_POLL_MS: i64 = 20_000;

/// The lease item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseItem {
    /// The instance that holds it (None: released, or never taken).
    pub holder: Option<String>,
    /// Record version number: new on every write of the holder.
    pub rvn: Option<String>,
    /// The fencing token: one more on every take-over.
    pub epoch: u64,
    /// The lease time the holder promised to renew within.
    pub lease_ms: i64,
    /// The holder's wall clock at its last renewal (for people only; never compared).
    pub renewed_ms: i64,
    /// The other fit nodes, next in line first.
    pub succession: Vec<String>,
    /// Bumped by every submit and cancel.
    pub queue_seq: u64,
}

/// What a contender last saw of the item, by its own monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The rvn seen (None: no item, or a released one).
    pub rvn: Option<String>,
    pub holder: Option<String>,
    /// When this rvn was first seen (monotonic ms).
    pub since_ms: i64,
}

impl Sighting {
    /// Updates the sighting with a fresh read: the clock restarts when anything changed.
    pub fn observe(previous: Option<Sighting>, item: Option<&LeaseItem>, now_mono_ms: i64) -> Sighting {
        let (rvn, holder) = match item {
            Some(i) if i.holder.is_some() => (i.rvn.clone(), i.holder.clone()),
            _ => (None, None),
        };
        match previous {
            Some(p) if p.rvn == rvn && p.holder == holder => p,
            _ => Sighting { rvn, holder, since_ms: now_mono_ms },
        }
    }
}

/// A contender's place in line: its index in the succession the (last) holder wrote (after
/// the listed ones when it is not listed), or, with no succession, its index in its own view
/// of the fleet's seniority order (`view`: running nodes, oldest first).
pub fn position(me: &str, item: Option<&LeaseItem>, view: &[String]) -> usize {
    // A released lease keeps the succession its last holder wrote: the next in line takes it
    // at once (the releaser left it, and is not in it).
    if let Some(i) = item.filter(|i| !i.succession.is_empty()) {
        return i.succession.iter().position(|n| n == me).unwrap_or(i.succession.len());
    }
    view.iter()
        .filter(|n| *n != item.and_then(|i| i.holder.as_deref()).unwrap_or(""))
        .position(|n| n == me)
        .unwrap_or(view.len())
}

/// How often a contender at `position` reads the lease.
pub fn poll_every_ms(position: usize) -> i64 {
    let p = position.min(1000) as i64 + 1;
    STANDBY_POLL_MS * p * p
}

/// What a contender does after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contend {
    /// Take the lease with a write conditioned on the rvn seen (None: "no holder").
    Take {
        expect_rvn: Option<String>,
    },
    Wait,
}

/// Takes the lease when it is free and this node is next in line (later ones give the
/// earlier ones `position` lease times first), or when the same holder's rvn has stood for
/// the whole lease time plus that much. Never by comparing clocks.
pub fn contend(item: Option<&LeaseItem>, sighting: &Sighting, position: usize, now_mono_ms: i64) -> Contend {
    let patience = position as i64 * LEASE_MS;
    let stood = now_mono_ms - sighting.since_ms;
    match item {
        Some(i) if i.holder.is_some() => {
            let lease = i.lease_ms.clamp(1, 10 * LEASE_MS);
            if sighting.rvn == i.rvn && stood >= lease + patience {
                Contend::Take { expect_rvn: i.rvn.clone() }
            } else {
                Contend::Wait
            }
        }
        _ if stood >= patience => Contend::Take { expect_rvn: None },
        _ => Contend::Wait,
    }
}

/// In how many ms [`contend`] would say take, if nothing changes (0: now).
pub fn take_due_ms(item: Option<&LeaseItem>, sighting: &Sighting, position: usize, now_mono_ms: i64) -> i64 {
    let patience = position as i64 * LEASE_MS;
    let lease = match item {
        Some(i) if i.holder.is_some() => i.lease_ms.clamp(1, 10 * LEASE_MS),
        _ => 0,
    };
    (sighting.since_ms + lease + patience - now_mono_ms).max(0)
}

/// Whether the holder may still act: its last successful renewal was *sent* at
/// `renew_sent_mono_ms`, and a contender waits the whole lease from a sighting made after
/// that write landed, so the lease stands at least until then plus the lease time.
pub fn holder_may_act(renew_sent_mono_ms: i64, lease_ms: i64, now_mono_ms: i64) -> bool {
    now_mono_ms < renew_sent_mono_ms + lease_ms - SAFETY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(holder: &str, rvn: &str, succession: &[&str]) -> LeaseItem {
        LeaseItem {
            holder: Some(holder.into()),
            rvn: Some(rvn.into()),
            epoch: 3,
            lease_ms: LEASE_MS,
            renewed_ms: 0,
            succession: succession.iter().map(|s| s.to_string()).collect(),
            queue_seq: 0,
        }
    }

    #[test]
    fn a_renewed_lease_is_never_taken_however_the_clocks_differ() {
        let mut seen = None;
        let mut t = 0;
        // The holder renews every RENEW_EVERY_MS; the contender reads every 20 s for 10 minutes.
        for k in 0..30 {
            let item = held("i-a", &format!("r{}", t / RENEW_EVERY_MS), &["i-b"]);
            let s = Sighting::observe(seen, Some(&item), t);
            assert_eq!(contend(Some(&item), &s, 0, t), Contend::Wait, "read {k}");
            seen = Some(s);
            t += STANDBY_POLL_MS;
        }
    }

    #[test]
    fn a_dead_holder_is_replaced_after_one_lease_by_the_next_in_line_first() {
        let item = held("i-a", "r9", &["i-b", "i-c"]);
        let s = Sighting::observe(None, Some(&item), 1_000);
        assert_eq!(position("i-b", Some(&item), &[]), 0);
        assert_eq!(position("i-c", Some(&item), &[]), 1);
        assert_eq!(position("i-new", Some(&item), &[]), 2, "an unlisted node comes last");
        assert_eq!(contend(Some(&item), &s, 0, 1_000 + LEASE_MS - 1), Contend::Wait);
        assert_eq!(take_due_ms(Some(&item), &s, 0, 1_000 + LEASE_MS - 1), 1);
        assert_eq!(take_due_ms(Some(&item), &s, 1, 1_000), 2 * LEASE_MS);
        assert_eq!(contend(Some(&item), &s, 0, 1_000 + LEASE_MS), Contend::Take { expect_rvn: Some("r9".into()) });
        assert_eq!(contend(Some(&item), &s, 1, 1_000 + LEASE_MS), Contend::Wait, "i-c gives i-b a lease time");
        assert_eq!(contend(Some(&item), &s, 1, 1_000 + 2 * LEASE_MS), Contend::Take { expect_rvn: Some("r9".into()) });
    }

    #[test]
    fn a_free_lease_goes_to_the_oldest_node_at_once_and_to_the_others_later() {
        let view = ["i-a".to_owned(), "i-b".to_owned()];
        let s = Sighting::observe(None, None, 0);
        assert_eq!(position("i-a", None, &view), 0);
        assert_eq!(contend(None, &s, 0, 0), Contend::Take { expect_rvn: None });
        assert_eq!(contend(None, &s, 1, LEASE_MS - 1), Contend::Wait);
        assert_eq!(contend(None, &s, 1, LEASE_MS), Contend::Take { expect_rvn: None });
        // A released lease (holder removed on a spot notice): the next in line of the
        // releaser's succession takes it now, even if its own view still lists the releaser.
        let mut released = held("i-a", "r1", &["i-b"]);
        released.holder = None;
        let s = Sighting::observe(None, Some(&released), 5);
        assert_eq!(position("i-b", Some(&released), &view), 0, "not behind the leaving i-a");
        assert_eq!(contend(Some(&released), &s, 0, 5), Contend::Take { expect_rvn: None });
    }

    #[test]
    fn a_sighting_restarts_its_clock_on_any_change() {
        let a = Sighting::observe(None, Some(&held("i-a", "r1", &[])), 10);
        let same = Sighting::observe(Some(a.clone()), Some(&held("i-a", "r1", &[])), 50);
        assert_eq!(same.since_ms, 10);
        let renewed = Sighting::observe(Some(a), Some(&held("i-a", "r2", &[])), 60);
        assert_eq!(renewed.since_ms, 60);
    }

    #[test]
    fn the_holder_stops_acting_before_anyone_may_take_over() {
        assert!(holder_may_act(0, LEASE_MS, LEASE_MS - SAFETY_MS - 1));
        assert!(!holder_may_act(0, LEASE_MS, LEASE_MS - SAFETY_MS));
    }

    /// The idle fleet's lease reads and renewals per hour, whatever its size: the holder's
    /// renewals plus every contender's polls stay under 1 request per 5 s.
    #[test]
    fn lease_traffic_does_not_grow_with_the_fleet() {
        let per_hour = |nodes: usize| {
            let renewals = 3_600_000 / RENEW_EVERY_MS;
            let polls: i64 = (0..nodes.saturating_sub(1)).map(|p| 3_600_000 / poll_every_ms(p)).sum();
            renewals + polls
        };
        assert_eq!(per_hour(1), 180);
        assert!(per_hour(3) < 720 && per_hour(500) < 720, "{} {}", per_hour(3), per_hour(500));
    }
}
