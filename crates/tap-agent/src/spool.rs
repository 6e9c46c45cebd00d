//! A bounded on-disk spool of datum batches CloudWatch has not accepted yet.
//!
//! Each batch is one file `<sequence>-<datums>.json`, written to a temporary name, synced and
//! renamed, so a crash never leaves a half-written batch. Batches are replayed in sequence
//! order and survive an agent restart. When the spool would exceed its byte bound the oldest
//! batches are deleted, and the datums they held are counted (the agent publishes that count
//! as `SpoolDroppedDatapoints`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::metrics::{Datum, MAX_DATUM_AGE_MS};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.display().to_string(), source }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    seq: u64,
    datums: u64,
    bytes: u64,
    path: PathBuf,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: Vec<Entry>,
    next_seq: u64,
    dropped: u64,
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, datums) = stem.split_once('-')?;
    Some((seq.parse().ok()?, datums.parse().ok()?))
}

impl Spool {
    /// Opens (creating) the spool directory and indexes the batches a previous run left.
    /// Unreadable leftovers (`*.tmp` from a crash mid-write) are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = Vec::new();
        for item in fs::read_dir(dir).map_err(io(dir))? {
            let item = item.map_err(io(dir))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            match parse_name(&name) {
                Some((seq, datums)) => {
                    let bytes = item.metadata().map_err(io(&path))?.len();
                    entries.push(Entry { seq, datums, bytes, path });
                }
                None if name.ends_with(".tmp") => fs::remove_file(&path).map_err(io(&path))?,
                None => {}
            }
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.last().map_or(0, |e| e.seq + 1);
        Ok(Spool { dir: dir.to_owned(), max_bytes, entries, next_seq, dropped: 0 })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Datums waiting.
    pub fn datums(&self) -> u64 {
        self.entries.iter().map(|e| e.datums).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Datums dropped (bound reached, too old, corrupt) since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Appends a batch at the end, dropping the oldest batches if the bound requires.
    pub fn push(&mut self, batch: &[Datum]) -> Result<(), SpoolError> {
        if batch.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(batch)
            .map_err(|e| SpoolError::Io { path: self.dir.display().to_string(), source: std::io::Error::other(e) })?;
        let bytes = body.len() as u64;
        while !self.entries.is_empty() && self.bytes() + bytes > self.max_bytes {
            let oldest = self.entries.remove(0);
            fs::remove_file(&oldest.path).map_err(io(&oldest.path))?;
            self.dropped += oldest.datums;
        }
        if bytes > self.max_bytes {
            self.dropped += batch.len() as u64;
            return Ok(());
        }
        let seq = self.next_seq;
        let path = self.dir.join(format!("{seq:020}-{}.json", batch.len()));
        tap_core::fsutil::write_atomic(&path, &body).map_err(io(&path))?;
        self.next_seq += 1;
        self.entries.push(Entry { seq, datums: batch.len() as u64, bytes, path });
        Ok(())
    }

    /// The oldest batches, merged, up to `max_datums` (at least one batch), without datums
    /// CloudWatch would reject as too old (those are counted as dropped). A corrupt file is
    /// dropped and counted. Returns the datums and how many batches they came from.
    pub fn peek(&mut self, now_ms: i64, max_datums: usize) -> Result<Option<(Vec<Datum>, usize)>, SpoolError> {
        loop {
            let mut out = Vec::new();
            let mut batches = 0;
            while let Some(e) = self.entries.get(batches).cloned() {
                if batches > 0 && out.len() + e.datums as usize > max_datums {
                    break;
                }
                let bytes = fs::read(&e.path).map_err(io(&e.path))?;
                match serde_json::from_slice::<Vec<Datum>>(&bytes) {
                    Ok(mut batch) => {
                        let before = batch.len();
                        // A minute of margin: the datum must still be inside the window on arrival.
                        batch.retain(|d| now_ms - d.timestamp_ms < MAX_DATUM_AGE_MS - 60_000);
                        self.dropped += (before - batch.len()) as u64;
                        out.extend(batch);
                        batches += 1;
                    }
                    Err(_) => {
                        self.dropped += e.datums;
                        self.entries.remove(batches);
                        fs::remove_file(&e.path).map_err(io(&e.path))?;
                    }
                }
            }
            match (batches, out.is_empty()) {
                (0, _) => return Ok(None),
                (n, true) => self.pop(n)?, // everything in them was too old: look further
                (n, false) => return Ok(Some((out, n))),
            }
        }
    }

    /// Removes the `n` oldest batches (after CloudWatch accepted them).
    pub fn pop(&mut self, n: usize) -> Result<(), SpoolError> {
        for e in self.entries.drain(..n.min(self.entries.len())) {
            fs::remove_file(&e.path).map_err(io(&e.path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Stats;

    fn batch(first: i64, n: usize) -> Vec<Datum> {
        (0..n)
            .map(|i| Datum {
                metric: "GPUUtilization".into(),
                unit: "Percent".into(),
                dimensions: vec![("Environment".into(), "dev".into())],
                timestamp_ms: first + i as i64,
                stats: Stats::one(i as f64),
                high_resolution: false,
            })
            .collect()
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn replays_in_order_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
        s.push(&batch(NOW, 3)).expect("push");
        s.push(&batch(NOW + 100, 2)).expect("push");
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!((s.len(), s.datums()), (2, 5));
        assert_eq!(s.peek(NOW, 3).expect("peek"), Some((batch(NOW, 3), 1)));
        s.pop(1).expect("pop");
        s.push(&batch(NOW + 200, 1)).expect("push after reopen keeps the order");
        assert_eq!(s.peek(NOW, 1).expect("peek"), Some((batch(NOW + 100, 2), 1)), "one batch even above the limit");
        s.pop(1).expect("pop");
        assert_eq!(s.peek(NOW, 1000).expect("peek"), Some((batch(NOW + 200, 1), 1)));
        s.pop(1).expect("pop");
        assert_eq!(s.peek(NOW, 1000).expect("peek"), None);
        assert!(s.is_empty());
        assert_eq!(s.take_dropped(), 0);
    }

    #[test]
    fn bound_drops_the_oldest_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = serde_json::to_vec(&batch(NOW, 10)).expect("json").len() as u64;
        let mut s = Spool::open(dir.path(), one * 3).expect("open");
        for i in 0..5 {
            s.push(&batch(NOW + 1000 * i, 10)).expect("push");
        }
        assert_eq!(s.len(), 3);
        assert!(s.bytes() <= one * 3);
        assert_eq!(s.take_dropped(), 20);
        assert_eq!(s.take_dropped(), 0, "the count is handed out once");
        assert_eq!(s.peek(NOW, 10).expect("peek").map(|b| b.0[0].timestamp_ms), Some(NOW + 2000), "newest data kept");
    }

    #[test]
    fn replay_merges_small_batches_up_to_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..5 {
            s.push(&batch(NOW + 10 * i, 3)).expect("push");
        }
        let (datums, n) = s.peek(NOW, 10).expect("peek").expect("some");
        assert_eq!((datums.len(), n), (9, 3));
        assert!(datums.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms), "in order");
        s.pop(n).expect("pop");
        assert_eq!(s.datums(), 6);
    }

    #[test]
    fn too_old_datums_are_dropped_on_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
        let old = NOW - MAX_DATUM_AGE_MS;
        s.push(&batch(old, 4)).expect("push");
        s.push(&batch(NOW - 1000, 2)).expect("push");
        assert_eq!(s.peek(NOW, 1000).expect("peek").map(|b| (b.0.len(), b.1)), Some((2, 2)));
        assert_eq!(s.take_dropped(), 4);
    }

    #[test]
    fn corrupt_and_half_written_files_are_handled() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("00000000000000000000-7.json"), b"{not json").expect("write");
        fs::write(dir.path().join("00000000000000000001-9.tmp"), b"[").expect("write");
        fs::write(dir.path().join("README"), b"not a batch").expect("write");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
        assert!(!dir.path().join("00000000000000000001-9.tmp").exists(), "crash leftovers removed");
        s.push(&batch(NOW, 1)).expect("push");
        assert_eq!(s.peek(NOW, 1000).expect("peek"), Some((batch(NOW, 1), 1)));
        assert_eq!(s.take_dropped(), 7, "the corrupt batch is counted as dropped");
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let e = Spool::open(Path::new("/proc/tap-spool"), 1024).err().expect("fails").to_string();
        assert!(e.starts_with("spool /proc/tap-spool:"), "{e}");
    }
}
