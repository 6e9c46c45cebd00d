//! A run's output in the stack's CloudWatch Logs group: one stream per run
//! (`<experiment>/<run id>`), batched within PutLogEvents' limits, in order.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use tap_aws::sdk_error;

use super::{LogLine, LogStore, Result, StoreError, Stream};

/// PutLogEvents limits: 10 000 events and 1 048 576 bytes per batch, counting 26 bytes of
/// overhead per event; one event at most 256 KiB; a batch may not span more than 24 hours.
pub const MAX_EVENTS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD: usize = 26;
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
const MAX_SPAN_MS: i64 = 24 * 3600 * 1000 - 1;
/// Pages of GetLogEvents read for one run (tap's bound on a loop over a remote answer: 10 000
/// pages is far beyond any run's output).
const MAX_LOG_PAGES: usize = 10_000;
const STDERR_TAG: &str = "[stderr] ";

pub struct CloudWatchLogs {
    client: Client,
    group: String,
    /// Highest `seq` sent per stream: re-sent lines are skipped (one writer per run).
    sent: Mutex<HashMap<String, u64>>,
}

pub fn stream_name(experiment: &str, run_id: &str) -> String {
    format!("{experiment}/{run_id}")
}

/// The message of a line: stderr is tagged, and over-long lines are cut at a char boundary.
pub fn message(l: &LogLine) -> String {
    let mut m = match l.stream {
        Stream::Stdout => l.text.clone(),
        Stream::Stderr => format!("{STDERR_TAG}{}", l.text),
    };
    if m.len() > MAX_EVENT_BYTES {
        let mut cut = MAX_EVENT_BYTES;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
    if m.is_empty() { " ".to_owned() } else { m }
}

/// Splits lines (already in order) into batches within the limits. Timestamps never go
/// backwards inside a batch (CloudWatch requires chronological order).
pub fn batches(lines: &[LogLine]) -> Vec<Vec<(i64, String)>> {
    let mut out: Vec<Vec<(i64, String)>> = Vec::new();
    let (mut bytes, mut first_ts, mut last_ts) = (0usize, 0i64, i64::MIN);
    for l in lines {
        let m = message(l);
        let ts = l.ts_ms.max(last_ts);
        let size = m.len() + EVENT_OVERHEAD;
        let fits = out
            .last()
            .is_some_and(|b| b.len() < MAX_EVENTS && bytes + size <= MAX_BATCH_BYTES && ts - first_ts <= MAX_SPAN_MS);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
            first_ts = ts;
        }
        bytes += size;
        last_ts = ts;
        if let Some(b) = out.last_mut() {
            b.push((ts, m));
        }
    }
    out
}

impl CloudWatchLogs {
    pub fn new(client: Client, group: &str) -> CloudWatchLogs {
        CloudWatchLogs { client, group: group.to_owned(), sent: Mutex::new(HashMap::new()) }
    }
}

impl LogStore for CloudWatchLogs {
    async fn delete_logs(&self, experiment: &str, run_id: &str) -> Result<()> {
        let stream = stream_name(experiment, run_id);
        match self.client.delete_log_stream().log_group_name(&self.group).log_stream_name(&stream).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(sdk_error("CloudWatch Logs DeleteLogStream", e).into()),
        }
        if let Ok(mut sent) = self.sent.lock() {
            sent.remove(&stream);
        }
        Ok(())
    }

    async fn append_logs(&self, experiment: &str, run_id: &str, lines: &[LogLine]) -> Result<()> {
        let stream = stream_name(experiment, run_id);
        let high =
            self.sent.lock().map_err(|_| StoreError::message("CloudWatch Logs: lock poisoned"))?.get(&stream).copied();
        let fresh: Vec<LogLine> = lines.iter().filter(|l| high.is_none_or(|h| l.seq > h)).cloned().collect();
        if fresh.is_empty() {
            return Ok(());
        }
        if high.is_none() {
            match self.client.create_log_stream().log_group_name(&self.group).log_stream_name(&stream).send().await {
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {}
                Err(e) => return Err(sdk_error("CloudWatch Logs CreateLogStream", e).into()),
            }
        }
        for batch in batches(&fresh) {
            let events = batch
                .into_iter()
                .map(|(ts, m)| InputLogEvent::builder().timestamp(ts).message(m).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| StoreError::backend("CloudWatch Logs event", e))?;
            let r = self
                .client
                .put_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&stream)
                .set_log_events(Some(events))
                .send()
                .await
                .map_err(|e| sdk_error("CloudWatch Logs PutLogEvents", e))?;
            // CloudWatch accepts the request but drops events outside its time window: say so.
            if let Some(info) = r.rejected_log_events_info() {
                return Err(StoreError::message(format!(
                    "CloudWatch Logs rejected events of {stream}: too new from #{:?}, too old until #{:?}, expired until #{:?}",
                    info.too_new_log_event_start_index(),
                    info.too_old_log_event_end_index(),
                    info.expired_log_event_end_index()
                )));
            }
        }
        if let Some(last) = fresh.last()
            && let Ok(mut sent) = self.sent.lock()
        {
            sent.insert(stream, last.seq);
        }
        Ok(())
    }

    async fn logs(&self, experiment: &str, run_id: &str) -> Result<Vec<LogLine>> {
        let stream = stream_name(experiment, run_id);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_LOG_PAGES {
            let page = match self
                .client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&stream)
                .start_from_head(true)
                .set_next_token(token.clone())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => return Ok(out),
                Err(e) => return Err(sdk_error("CloudWatch Logs GetLogEvents", e).into()),
            };
            for ev in page.events() {
                let m = ev.message().ok_or_else(|| {
                    StoreError::message(format!("CloudWatch Logs GetLogEvents {stream}: an event without a message"))
                })?;
                let (stream, text) = match m.strip_prefix(STDERR_TAG) {
                    Some(t) => (Stream::Stderr, t.to_owned()),
                    None => (Stream::Stdout, m.to_owned()),
                };
                out.push(LogLine { seq: out.len() as u64, ts_ms: ev.timestamp().unwrap_or(0), stream, text });
            }
            let next = page.next_forward_token().map(str::to_owned);
            if page.events().is_empty() || next == token {
                break;
            }
            token = next;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(seq: u64, ts: i64, len: usize) -> LogLine {
        LogLine { seq, ts_ms: ts, stream: Stream::Stdout, text: "x".repeat(len) }
    }

    #[test]
    fn stderr_is_tagged_and_long_lines_cut() {
        let l = LogLine { seq: 0, ts_ms: 0, stream: Stream::Stderr, text: "oops".into() };
        assert_eq!(message(&l), "[stderr] oops");
        let long = LogLine { seq: 0, ts_ms: 0, stream: Stream::Stdout, text: "é".repeat(200_000) };
        let m = message(&long);
        assert!(m.len() <= MAX_EVENT_BYTES && m.chars().all(|c| c == 'é'));
    }

    #[test]
    fn batches_respect_count_bytes_and_span() {
        let many: Vec<LogLine> = (0..25_000).map(|i| line(i, i as i64, 10)).collect();
        assert_eq!(batches(&many).iter().map(Vec::len).collect::<Vec<_>>(), [10_000, 10_000, 5_000]);
        let big: Vec<LogLine> = (0..10).map(|i| line(i, 0, 200_000)).collect();
        assert!(
            batches(&big)
                .iter()
                .all(|b| b.iter().map(|(_, m)| m.len() + EVENT_OVERHEAD).sum::<usize>() <= MAX_BATCH_BYTES)
        );
        let days = [line(0, 0, 1), line(1, MAX_SPAN_MS + 5, 1)];
        assert_eq!(batches(&days).len(), 2);
        let backwards = [line(0, 100, 1), line(1, 50, 1)];
        assert_eq!(batches(&backwards)[0].iter().map(|(t, _)| *t).collect::<Vec<_>>(), [100, 100]);
    }

    proptest! {
        #[test]
        fn batching_keeps_every_line_in_order(lens in proptest::collection::vec(0usize..300_000, 0..40), step in 0i64..10_000_000) {
            let lines: Vec<LogLine> = lens.iter().enumerate().map(|(i, &n)| line(i as u64, i as i64 * step, n)).collect();
            let b = batches(&lines);
            let flat: Vec<String> = b.iter().flatten().map(|(_, m)| m.clone()).collect();
            prop_assert_eq!(flat, lines.iter().map(message).collect::<Vec<_>>());
            for batch in &b {
                prop_assert!(batch.len() <= MAX_EVENTS);
                prop_assert!(batch.iter().map(|(_, m)| m.len() + EVENT_OVERHEAD).sum::<usize>() <= MAX_BATCH_BYTES);
                prop_assert!(batch.windows(2).all(|w| w[0].0 <= w[1].0));
                prop_assert!(batch.last().map_or(0, |l| l.0) - batch.first().map_or(0, |f| f.0) <= MAX_SPAN_MS);
            }
        }
    }
}
