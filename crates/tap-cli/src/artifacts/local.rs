//! The object store on a local directory (`$TAP_HOME/artifacts`), the default without a stack.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ObjectError, ObjectInfo, ObjectStore, Result, hex, io, valid_key};
use crate::blocking::{self, Cancel};

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    moved: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LocalStore {
    pub fn new(root: &Path) -> LocalStore {
        LocalStore { root: root.to_owned(), moved: Default::default() }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if !valid_key(key) {
            return Err(ObjectError::BadKey(key.to_owned()));
        }
        Ok(self.root.join(key))
    }
}

/// When a copy is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before the rename: the store's own objects.
    Now,
    /// No fsync per file: a pull flushes its whole file system once when every file is in
    /// place (checkpoint::restore_in), instead of once per file (regression: a pull of many
    /// files paid one fsync each although the code promised one flush).
    Deferred,
}

/// Copies `src` to a temporary file beside `dest` while hashing, checks the digest, syncs
/// (with [`Durability::Now`]), then renames into place: `dest` is either absent, the old file, or the complete new one.
/// Blocking: call it inside [`crate::blocking::run`]; it stops (removing its temporary file)
/// at the next chunk once `cancel` is set. Each chunk copied is added to `moved` as it lands,
/// so a progress bar moves with the copy (regression: it sat at 0 B until the end).
pub fn copy_verified(
    key: &str,
    src: &Path,
    dest: &Path,
    sha256: &str,
    cancel: &Cancel,
    moved: &std::sync::atomic::AtomicU64,
    durability: Durability,
) -> Result<()> {
    cancel.check().map_err(io(dest))?;
    let tmp = super::temp_beside(dest, "tmp")?;
    let result = (|| {
        let mut input = fs::File::open(src).map_err(io(src))?;
        let mut out = fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            cancel.check().map_err(io(dest))?;
            let n = input.read(&mut buf).map_err(io(src))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&tmp))?;
            moved.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let actual = hex(&h.finalize());
        if actual != sha256 {
            return Err(ObjectError::Checksum { key: key.to_owned(), expected: sha256.to_owned(), actual });
        }
        if durability == Durability::Now {
            out.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, dest).map_err(io(dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Every operation is file I/O, so each runs on the blocking pool (crate::blocking).
/// `bytes` written and flushed to a temporary file beside `path` (its directory made first):
/// the file, for the caller to move into place. Nothing is left behind when it fails.
fn written_beside(path: &Path, root: &Path, bytes: &[u8]) -> Result<std::path::PathBuf> {
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension(format!("tmp-{}", fastrand::u64(..)));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(&tmp));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| tmp)
}

impl ObjectStore for LocalStore {
    async fn put_file(&self, key: &str, src: &Path, sha256: &str) -> Result<()> {
        let (key, src, dest, sha256) = (key.to_owned(), src.to_owned(), self.path(key)?, sha256.to_owned());
        let me = self.clone();
        blocking::run(move |cancel| copy_verified(&key, &src, &dest, &sha256, cancel, &me.moved, Durability::Now)).await
    }

    async fn get_file(&self, key: &str, dest: &Path, sha256: &str) -> Result<()> {
        let (key, path, dest, sha256) = (key.to_owned(), self.path(key)?, dest.to_owned(), sha256.to_owned());
        let me = self.clone();
        blocking::run(move |cancel| {
            if !path.exists() {
                return Err(ObjectError::NotFound(key));
            }
            copy_verified(&key, &path, &dest, &sha256, cancel, &me.moved, Durability::Deferred)
        })
        .await
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let (root, bytes) = (self.root.clone(), bytes.to_vec());
        blocking::run(move |_| {
            let tmp = written_beside(&path, &root, &bytes)?;
            fs::rename(&tmp, &path).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io(&path)(e)
            })
        })
        .await
    }

    async fn put_bytes_once(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(key)?;
        let (root, bytes) = (self.root.clone(), bytes.to_vec());
        blocking::run(move |_| {
            let tmp = written_beside(&path, &root, &bytes)?;
            // A hard link appears whole and fails when the name exists: create-if-absent.
            let linked = match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io(&path)(e)),
            };
            let _ = fs::remove_file(&tmp);
            linked
        })
        .await
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        blocking::run(move |_| match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        })
        .await
    }

    fn bytes_moved(&self) -> u64 {
        self.moved.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        let paths: Vec<std::path::PathBuf> = keys.iter().map(|k| self.path(k)).collect::<Result<_>>()?;
        blocking::run(move |_| {
            for p in &paths {
                match fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(p)(e)),
                }
            }
            Ok(())
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.path(key)?.is_file())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        blocking::run(move |_| list_under(&root, &prefix)).await
    }
}

fn list_under(root: &Path, prefix: &str) -> Result<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io(&path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                let key = rel.to_string_lossy().replace('\\', "/");
                let temporary = key.rsplit('/').next().is_some_and(|n| n.starts_with('.') || n.contains(".tmp-"));
                if key.starts_with(prefix) && !temporary {
                    let modified_ms = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64);
                    out.push(ObjectInfo { key, size: meta.len(), modified_ms });
                }
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_record_written_once_is_written_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::artifacts::write_once_conformance(&LocalStore::new(dir.path())).await;
    }

    /// Regression (issue 23): `tap artifacts push` of 300 MiB showed `0 B/300.00 MiB` for the
    /// whole transfer, because the local store counted a file's bytes only once it was in
    /// place. They count as each chunk lands.
    #[tokio::test(flavor = "multi_thread")]
    async fn progress_sat_at_zero_until_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("big.bin");
        let total: u64 = 48 << 20;
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut f = fs::File::create(&src).expect("create");
        for _ in 0..(total >> 20) {
            f.write_all(&chunk).expect("write");
        }
        drop(f);
        let (sha, size) = super::super::sha256_file(&src).expect("hash");
        assert_eq!(size, total);
        let store = LocalStore::new(&dir.path().join("store"));
        let put = {
            let (store, src) = (store.clone(), src.clone());
            tokio::spawn(async move { store.put_file("a/big.bin", &src, &sha).await })
        };
        let mut between = Vec::new();
        while !put.is_finished() {
            let m = store.bytes_moved();
            if m > 0 && m < total {
                between.push(m);
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        put.await.expect("joined").expect("stored");
        assert_eq!(store.bytes_moved(), total);
        assert!(!between.is_empty(), "no sample between 0 and {total} bytes: the count jumped at the end");
    }
}
