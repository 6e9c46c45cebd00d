//! The spot interruption watcher: polls IMDSv2 (the SDK's client: session token fetched and
//! refreshed for us) for `spot/instance-action` and the rebalance recommendation. On a notice
//! it tells the runs on the node (`notify::notify_runs`: notice file, then SIGUSR1),
//! marks the node as taking no new work, and reports it to the daemon for the metric.
//!
//! The IMDS paths answer 404 until there is something to say. Malformed JSON at the
//! instance-action path still means a notice (there is nothing else it could mean): the
//! deadline is then two minutes from when we saw it, as with a skewed clock.

use std::time::Duration;

use aws_config::imds;
use tap_core::notice::{self, Notice, NoticeKind, RuntimeDir};
use tokio::sync::mpsc;

use crate::notify::notify_runs;

pub use tap_aws::imds::{REBALANCE, SPOT_INSTANCE_ACTION as INSTANCE_ACTION};

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpotEvent {
    Interruption(Notice),
    Rebalance { notice_time_ms: Option<i64> },
}

/// What is wrong with a `spot/instance-action` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceActionError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no \"action\"")]
    NoAction,
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("no \"time\"")]
    NoTime,
    #[error("unreadable time {0:?}")]
    UnreadableTime(String),
}

/// `{"action": "terminate", "time": "2026-11-27T03:14:00Z"}` → (action, time); `Err` says
/// what is wrong with it.
pub fn parse_instance_action(body: &str) -> Result<(String, Option<i64>), InstanceActionError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| InstanceActionError::NotJson(e.to_string()))?;
    let action = v.get("action").and_then(|a| a.as_str()).ok_or(InstanceActionError::NoAction)?;
    if !matches!(action, "terminate" | "stop" | "hibernate") {
        return Err(InstanceActionError::UnknownAction(action.to_owned()));
    }
    let time = v.get("time").and_then(|t| t.as_str()).ok_or(InstanceActionError::NoTime)?;
    let at = tap_core::time::parse_rfc3339(time).ok_or_else(|| InstanceActionError::UnreadableTime(time.to_owned()))?;
    Ok((action.to_owned(), Some(at)))
}

/// `{"noticeTime": "2026-11-27T03:10:00Z"}` → its time, when readable.
pub fn parse_rebalance(body: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    tap_core::time::parse_rfc3339(v.get("noticeTime")?.as_str()?)
}

use tap_aws::imds::get;

pub struct Watcher {
    pub client: imds::Client,
    pub poll: Duration,
    pub runtime: RuntimeDir,
    pub instance_id: String,
}

impl Watcher {
    /// Builds the notice for an instance-action body seen at `now_ms`.
    pub fn notice(&self, body: &str, now_ms: i64) -> Notice {
        let poll_ms = self.poll.as_millis() as i64;
        let (action, time, problem) = match parse_instance_action(body) {
            Ok((a, t)) => (a, t, None),
            Err(e) => ("terminate".to_owned(), None, Some(format!("malformed instance-action ({e})"))),
        };
        let (deadline_ms, skew) = notice::spot_deadline(time, now_ms, poll_ms);
        if let Some(why) = problem.as_ref().or(skew.as_ref()) {
            tracing::warn!(body, why = %why, deadline = %tap_core::time::rfc3339(deadline_ms), "spot notice time not trusted");
        }
        Notice {
            kind: NoticeKind::SpotInterruption,
            action: action.clone(),
            reason: format!("EC2 spot interruption: {action} at {}", tap_core::time::rfc3339(deadline_ms)),
            detected_ms: now_ms,
            deadline_ms,
            instance_id: Some(self.instance_id.clone()),
        }
    }

    /// One poll of both paths; events not reported before.
    pub async fn poll_once(&self, seen_notice: &mut bool, seen_rebalance: &mut bool) -> Vec<SpotEvent> {
        let mut out = Vec::new();
        let now = crate::daemon::now_ms();
        if !*seen_notice {
            match get(&self.client, INSTANCE_ACTION).await {
                Ok(Some(body)) => {
                    *seen_notice = true;
                    let n = self.notice(&body, now);
                    if let Err(e) = self.runtime.set_drain(&n.reason) {
                        tracing::error!(error = %e, "cannot mark the node as draining");
                    }
                    match notify_runs(&self.runtime, &n) {
                        Ok(pids) => {
                            tracing::warn!(action = %n.action, deadline = %tap_core::time::rfc3339(n.deadline_ms),
                            signalled = ?pids, "spot interruption notice: runs asked to checkpoint")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, dir = %self.runtime.root().display(), "cannot write the notice file")
                        }
                    }
                    out.push(SpotEvent::Interruption(n));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %tap_core::text::chain(&e), "instance metadata: spot/instance-action")
                }
            }
        }
        if !*seen_rebalance {
            match get(&self.client, REBALANCE).await {
                Ok(Some(body)) => {
                    *seen_rebalance = true;
                    let t = parse_rebalance(&body);
                    tracing::warn!(body, "EC2 rebalance recommendation: interruption risk is elevated");
                    if let Err(e) = self.runtime.write_rebalance(t.unwrap_or(now), now) {
                        tracing::error!(error = %e, "cannot write rebalance.json");
                    }
                    out.push(SpotEvent::Rebalance { notice_time_ms: t });
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %tap_core::text::chain(&e), "instance metadata: rebalance"),
            }
        }
        out
    }

    /// Polls until both events were seen or the receiver is gone.
    pub async fn run(self, tx: mpsc::Sender<SpotEvent>) {
        let (mut seen_notice, mut seen_rebalance) = (false, false);
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !(seen_notice && seen_rebalance) {
            tick.tick().await;
            for ev in self.poll_once(&mut seen_notice, &mut seen_rebalance).await {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn instance_action_bodies() {
        assert_eq!(
            parse_instance_action(r#"{"action": "terminate", "time": "2017-09-18T08:22:00Z"}"#),
            Ok(("terminate".into(), Some(1_505_722_920_000)))
        );
        assert_eq!(
            parse_instance_action(r#"{"action":"stop","time":"2017-09-18T08:22:00Z"}"#).map(|a| a.0),
            Ok("stop".into())
        );
        for (body, why) in [
            ("", "not JSON"),
            ("{\"action\": \"terminate\"", "not JSON"),
            ("{\"time\": \"2017-09-18T08:22:00Z\"}", "no \"action\""),
            ("{\"action\": \"explode\", \"time\": \"2017-09-18T08:22:00Z\"}", "unknown action"),
            ("{\"action\": \"terminate\", \"time\": \"soon\"}", "unreadable time"),
            ("[1,2,3]", "no \"action\""),
        ] {
            let e = parse_instance_action(body).expect_err(body).to_string();
            assert!(e.contains(why), "{body}: {e}");
        }
        assert_eq!(parse_rebalance(r#"{"noticeTime": "2017-09-18T08:22:00Z"}"#), Some(1_505_722_920_000));
        assert_eq!(parse_rebalance("{}"), None);
    }

    fn watcher(imds: &tap_test_support::FakeImds, runtime: &std::path::Path) -> Watcher {
        Watcher {
            client: crate::identity::imds_client(Some(&imds.endpoint())).expect("client"),
            poll: Duration::from_secs(5),
            runtime: RuntimeDir::new(runtime),
            instance_id: "i-0spot".into(),
        }
    }

    #[tokio::test]
    async fn notice_and_rebalance_are_reported_once() {
        let imds = tap_test_support::FakeImds::start("i-0spot", "p3.2xlarge");
        let dir = tempfile::tempdir().expect("tempdir");
        let w = watcher(&imds, dir.path());
        let (mut n, mut r) = (false, false);
        assert!(w.poll_once(&mut n, &mut r).await.is_empty(), "404s: nothing to say");
        imds.set_rebalance(Some(r#"{"noticeTime": "2026-11-27T03:10:00Z"}"#));
        let at = crate::daemon::now_ms() + 100_000;
        imds.set_instance_action(Some(&format!(
            r#"{{"action": "terminate", "time": "{}"}}"#,
            tap_core::time::rfc3339(at)
        )));
        let events = w.poll_once(&mut n, &mut r).await;
        assert_eq!(events.len(), 2, "{events:?}");
        let SpotEvent::Interruption(notice) = &events[0] else { panic!("{events:?}") };
        assert_eq!(notice.deadline_ms, at / 1000 * 1000, "a sane time is trusted (to the second)");
        assert_eq!(w.runtime.read_notice().expect("readable"), Some(notice.clone()), "the notice file is written");
        assert!(w.runtime.draining().is_some(), "the node takes no new work");
        assert!(w.runtime.rebalance_path().exists());
        assert!(w.poll_once(&mut n, &mut r).await.is_empty(), "reported once");
        assert!(imds.requests_for("/latest/api/token").len() <= 2, "the session token is reused");
    }

    #[tokio::test]
    async fn hostile_notices_still_stop_the_node_in_time() {
        let imds = tap_test_support::FakeImds::start("i-0spot", "p3.2xlarge");
        for body in [
            "{not json",
            r#"{"action": "terminate", "time": "1999-01-01T00:00:00Z"}"#,
            r#"{"action": "terminate", "time": "2099-01-01T00:00:00Z"}"#,
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let w = watcher(&imds, dir.path());
            imds.set_instance_action(Some(body));
            let before = crate::daemon::now_ms();
            let events = w.poll_once(&mut false, &mut true).await;
            let SpotEvent::Interruption(notice) = &events[0] else { panic!("{body}: {events:?}") };
            let left = notice.deadline_ms - before;
            assert!((110_000..=120_000).contains(&left), "{body}: two minutes less a poll from now, got {left} ms");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(body in "\\PC{0,120}") {
            let _ = parse_instance_action(&body);
            let _ = parse_rebalance(&body);
        }
    }
}
