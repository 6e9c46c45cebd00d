//! Wall-clock time as tap records it.

/// Milliseconds since the Unix epoch (0 before it: a clock that far off is not worth a panic).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
