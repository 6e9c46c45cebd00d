//! The spot interruption watcher: polls IMDSv2 (the SDK's client: session token fetched and
//! refreshed for us) for `spot/instance-action` and the rebalance recommendation. On a notice
//! it tells the runs on the node (`health::policy::notify_runs`: notice file, then SIGUSR1),
//! marks the node as taking no new work, and reports it to the daemon for the metric.
//!
//! The IMDS paths answer 404 until there is something to say. Malformed JSON at the
//! instance-action path still means a notice (there is nothing else it could mean): the
//! deadline is then two minutes from when we saw it, as with a skewed clock.

use std::time::Duration;

use aws_config::imds;
use tap_core::notice::{self, Notice, NoticeKind, RuntimeDir};
use tokio::sync::mpsc;

use crate::health::policy::notify_runs;

pub const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
pub const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpotEvent {
    Interruption(Notice),
    Rebalance { notice_time_ms: Option<i64> },
}

/// `{"action": "terminate", "time": "2026-11-27T03:14:00Z"}` → (action, time); `Err` says
/// what is wrong with it.
pub fn parse_instance_action(body: &str) -> Result<(String, Option<i64>), String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let action = v.get("action").and_then(|a| a.as_str()).ok_or("no \"action\"")?;
    if !matches!(action, "terminate" | "stop" | "hibernate") {
        return Err(format!("unknown action {action:?}"));
    }
    let time = v.get("time").and_then(|t| t.as_str()).ok_or("no \"time\"")?;
    let at = notice::parse_rfc3339(time).ok_or_else(|| format!("unreadable time {time:?}"))?;
    Ok((action.to_owned(), Some(at)))
}

/// `{"noticeTime": "2026-11-27T03:10:00Z"}` → its time, when readable.
pub fn parse_rebalance(body: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    notice::parse_rfc3339(v.get("noticeTime")?.as_str()?)
}

/// GET `path`: `Ok(None)` on 404 (nothing to say), the body on 200.
async fn get(client: &imds::Client, path: &str) -> Result<Option<String>, String> {
    match client.get(path).await {
        Ok(v) => Ok(Some(v.as_ref().to_owned())),
        Err(imds::client::error::ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

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
            tracing::warn!(body, why = %why, deadline = %tap_core::runs::rfc3339(deadline_ms), "spot notice time not trusted");
        }
        Notice {
            kind: NoticeKind::SpotInterruption,
            action: action.clone(),
            reason: format!("EC2 spot interruption: {action} at {}", tap_core::runs::rfc3339(deadline_ms)),
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
                            tracing::warn!(action = %n.action, deadline = %tap_core::runs::rfc3339(n.deadline_ms),
                            signalled = ?pids, "spot interruption notice: runs asked to checkpoint")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, dir = %self.runtime.root().display(), "cannot write the notice file")
                        }
                    }
                    out.push(SpotEvent::Interruption(n));
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "instance metadata: spot/instance-action"),
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
                Err(e) => tracing::debug!(error = %e, "instance metadata: rebalance"),
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
            let e = parse_instance_action(body).expect_err(body);
            assert!(e.contains(why), "{body}: {e}");
        }
        assert_eq!(parse_rebalance(r#"{"noticeTime": "2017-09-18T08:22:00Z"}"#), Some(1_505_722_920_000));
        assert_eq!(parse_rebalance("{}"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(body in "\\PC{0,120}") {
            let _ = parse_instance_action(&body);
            let _ = parse_rebalance(&body);
        }
    }
}
