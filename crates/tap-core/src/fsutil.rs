//! File writes that never leave half a file behind.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file beside it (same filesystem, named for
/// this process so two writers never share one), flushed to disk, then renamed over `path`.
/// A reader — or a restart after a crash — sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, true)
}

/// [`write_atomic`] without the flush to disk: for a small file that only a live process
/// reads now (tap run's notice deadline and checkpoint acknowledgement for its command),
/// where a reader must see the old content or the new but a crash may lose both.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        write_atomic(&p, b"old").expect("write");
        write_atomic(&p, b"new content").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"new content");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn failure_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x");
        write_atomic(&p, b"old").expect("write");
        // Renaming a file over a non-empty directory fails: the old content must stay.
        let d = dir.path().join("d");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("f"), b"").expect("f");
        assert!(write_atomic(&d, b"new").is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2, "no temporary left");
    }
}
