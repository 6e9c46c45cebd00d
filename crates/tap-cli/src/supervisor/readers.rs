//! The command's output and metrics as events: its stdout and stderr read as bytes, line by
//! line, and TAP_METRICS_FILE tailed as it grows.

use std::path::PathBuf;
use std::time::Duration;

use tap_core::runs::parse_metrics_line;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use crate::store::Stream;

use super::Event;

/// One line as read, without its `\n` or `\r\n`.
pub(super) fn line_bytes(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// One line as read, without its end, decoded; an error when it is not UTF-8.
pub(super) fn decode_line(raw: &[u8]) -> Result<&str, std::str::Utf8Error> {
    std::str::from_utf8(line_bytes(raw))
}

/// The longest line kept whole. A longer output line is split; a longer metrics line is
/// reported and skipped: a command that never writes a newline cannot grow tap without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A line as a message quotes it: at most 120 characters.
pub(super) fn shown(line: &str) -> String {
    tap_core::text::clip(line, 120)
}

/// How often the metrics file is read: a checkpoint line is seen this late at most (it is an
/// open, a stat and a read of nothing most of the time).
pub(super) const METRICS_POLL: Duration = Duration::from_millis(50);

/// Bytes of the metrics file read per poll (the rest waits for the next one).
pub(super) const METRICS_READ_PER_POLL: u64 = 16 << 20;

/// Tails the metrics file: new complete lines as they are written. Read as bytes: a line that
/// is not UTF-8 or not a metrics line is reported with its number and skipped, and reading goes
/// on (regression: one such line used to end metric reading, and with it every later
/// checkpoint upload, silently). A file truncated or replaced is read again from its start.
pub(super) async fn tail_metrics(path: PathBuf, tx: mpsc::Sender<Event>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut offset = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    let mut number = 0u64;
    let mut skipping = false;
    loop {
        let finished = *stop.borrow();
        if let Ok(mut f) = tokio::fs::File::open(&path).await {
            if f.metadata().await.is_ok_and(|m| m.len() < offset) {
                let _ = tx
                    .send(Event::BadMetricsLine(
                        "TAP_METRICS_FILE: it shrank (truncated or replaced); reading it again from its start".into(),
                    ))
                    .await;
                (offset, number, skipping) = (0, 0, false);
                partial.clear();
            }
            let mut more = true;
            while more && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                let Ok(n) = (&mut f).take(METRICS_READ_PER_POLL).read_to_end(&mut partial).await else { break };
                offset += n as u64;
                more = n as u64 == METRICS_READ_PER_POLL;
                while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = partial.drain(..=i).collect();
                    let end = offset - partial.len() as u64;
                    number += 1;
                    if std::mem::take(&mut skipping) {
                        continue;
                    }
                    let ev = match decode_line(&raw).map(str::trim) {
                        Ok("") => continue,
                        Ok(_) if raw.len() > MAX_LINE_BYTES => Event::BadMetricsLine(format!(
                            "line {number} of TAP_METRICS_FILE: longer than {MAX_LINE_BYTES} bytes"
                        )),
                        Ok(line) => match parse_metrics_line(line) {
                            Ok(m) => Event::Metrics(m, end),
                            Err(e) => Event::BadMetricsLine(format!(
                                "line {number} of TAP_METRICS_FILE: {}: {e}",
                                shown(line)
                            )),
                        },
                        Err(e) => Event::BadMetricsLine(format!("line {number} of TAP_METRICS_FILE: not UTF-8 ({e})")),
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                if partial.len() > MAX_LINE_BYTES {
                    let line = number + 1;
                    let msg = format!("line {line} of TAP_METRICS_FILE: longer than {MAX_LINE_BYTES} bytes");
                    if !skipping && tx.send(Event::BadMetricsLine(msg)).await.is_err() {
                        return;
                    }
                    skipping = true;
                    partial.clear();
                }
            }
        }
        if finished {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(METRICS_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Forwards the child's output line by line, read as bytes: bytes that are not UTF-8 are
/// shown and recorded as U+FFFD (the line is kept), said once per stream with the first such
/// line's number, and reading goes on until the pipe closes (regression: tap stopped reading
/// at such a byte, and the command died of SIGPIPE).
pub(super) async fn pipe_lines<R: tokio::io::AsyncRead + Unpin>(reader: R, stream: Stream, tx: mpsc::Sender<Event>) {
    let mut reader = BufReader::new(reader);
    let mut raw = Vec::new();
    let mut number = 0u64;
    let mut warned = false;
    loop {
        raw.clear();
        // At most MAX_LINE_BYTES: a longer line comes in pieces, each a line.
        match (&mut reader).take(MAX_LINE_BYTES as u64).read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => return,
            Ok(_) => number += 1,
        }
        let line = match decode_line(&raw) {
            Ok(text) => text.to_owned(),
            Err(_) => {
                if !warned {
                    warned = true;
                    crate::say!(
                        "tap: line {number} of the command's {} is not UTF-8; such bytes are kept as U+FFFD",
                        stream.as_str()
                    );
                }
                String::from_utf8_lossy(line_bytes(&raw)).into_owned()
            }
        };
        if tx.send(Event::Line(stream, line)).await.is_err() {
            return;
        }
    }
}
