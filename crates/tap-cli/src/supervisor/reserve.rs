//! The disk reserve of `tap run --disk-reserve`: a file preallocated at the run's start beside
//! the local store, removed when the store reports a full disk so that the run's end and what
//! is buffered can still be written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// `--disk-reserve`'s default: room for the end of a run and a few hundred thousand buffered
/// points and lines in SQLite (about 100 bytes a row, with its index).
pub const DEFAULT_DISK_RESERVE: u64 = 64 << 20;

/// A preallocated file that is given back once.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
    released: AtomicBool,
}

impl Reserve {
    /// Preallocates `bytes` in a file in `dir` (blocks on the filesystem: call it on the
    /// blocking pool). Real blocks, not a sparse file: `fallocate` where the filesystem has it,
    /// else written zeros.
    pub fn create(dir: &Path, bytes: u64) -> std::io::Result<Reserve> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(".tap-reserve-{}", std::process::id()));
        let f = std::fs::File::create(&path)?;
        let made = nix::fcntl::posix_fallocate(&f, 0, bytes as i64).map_err(std::io::Error::from).or_else(|_| {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(&f);
            let zeros = vec![0u8; 1 << 20];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                w.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            w.flush()
        });
        if let Err(e) = made.and_then(|()| f.sync_all()) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Reserve { path, bytes, released: AtomicBool::new(false) })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives the room back; true the first time.
    pub fn release(&self) -> bool {
        if self.released.swap(true, Ordering::SeqCst) {
            return false;
        }
        let _ = std::fs::remove_file(&self.path);
        true
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether an error says the disk (or the database) is full: SQLite's SQLITE_FULL, ENOSPC,
/// EDQUOT.
pub fn is_disk_full(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("disk is full") || m.contains("no space left") || m.contains("quota exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_takes_real_blocks_and_gives_them_back_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Reserve::create(dir.path(), 1 << 20).expect("reserve");
        let file = std::fs::read_dir(dir.path()).expect("dir").flatten().next().expect("a file").path();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&file).expect("meta");
        assert!(meta.blocks() * 512 >= 1 << 20, "allocated, not sparse: {} blocks", meta.blocks());
        assert!(r.release());
        assert!(!r.release(), "once");
        assert!(!file.exists());
        assert!(is_disk_full("database or disk is full") && is_disk_full("No space left on device (os error 28)"));
        assert!(!is_disk_full("connection refused"));
    }
}
