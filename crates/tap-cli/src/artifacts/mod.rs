//! Artifacts and checkpoints: an object-store trait at the I/O boundary (a local directory
//! here; S3 is the stack's backend) and checkpoints built on it.

pub mod checkpoint;
pub mod gc;
pub mod local;
pub mod s3;
pub mod shards;
pub mod transfer;

use std::future::Future;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// A cause kept under an [`ObjectError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {0} not found")]
    NotFound(String),
    /// The bytes stored or read are not the bytes expected (corruption, or a file that
    /// changed while it was being uploaded).
    #[error("checksum mismatch for {key}: expected sha256 {expected}, got {actual}")]
    Checksum { key: String, expected: String, actual: String },
    #[error("invalid object key {0:?}")]
    BadKey(String),
    /// An S3 call failed (the SDK's error is its source).
    #[error(transparent)]
    Aws(#[from] tap_aws::AwsError),
    /// A local file operation failed: the file and what was done to it.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else: what failed, and its cause when there is one.
    #[error("{what}")]
    Other {
        what: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl ObjectError {
    /// A failure with its cause.
    pub fn caused(what: impl Into<String>, source: impl Into<BoxError>) -> ObjectError {
        ObjectError::Other { what: what.into(), source: Some(source.into()) }
    }

    /// A failure that has no cause but its words.
    pub fn message(what: impl Into<String>) -> ObjectError {
        ObjectError::Other { what: what.into(), source: None }
    }
}

pub type Result<T> = std::result::Result<T, ObjectError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When it was last written (epoch ms).
    pub modified_ms: i64,
}

pub trait ObjectStore: Send + Sync {
    /// Stores `src` under `key`; fails (storing nothing) unless its content hashes to `sha256`.
    fn put_file(&self, key: &str, src: &Path, sha256: &str) -> impl Future<Output = Result<()>> + Send;
    /// Writes the object to `dest`; fails (leaving `dest` untouched) unless it hashes to `sha256`.
    fn get_file(&self, key: &str, dest: &Path, sha256: &str) -> impl Future<Output = Result<()>> + Send;
    fn put_bytes(&self, key: &str, bytes: &[u8]) -> impl Future<Output = Result<()>> + Send;
    /// Writes the object only if there is none at `key` (create-if-absent, atomic against
    /// other writers): whether this call wrote it. A record that must be written once (a
    /// sharded step's commit) is written this way; the one already there is kept.
    fn put_bytes_once(&self, key: &str, bytes: &[u8]) -> impl Future<Output = Result<bool>> + Send;
    fn get_bytes(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Objects under `prefix`, by key.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectInfo>>> + Send;
    /// Removes the objects (a key that is not there is no error).
    fn delete(&self, keys: &[String]) -> impl Future<Output = Result<()>> + Send;
    /// Bytes this store has moved so far (progress bars).
    fn bytes_moved(&self) -> u64;
}

/// An I/O error naming the file.
pub(crate) fn io(what: &Path) -> impl FnOnce(std::io::Error) -> ObjectError + '_ {
    move |source| ObjectError::Io { what: what.display().to_string(), source }
}

/// A fresh temporary path beside `dest` (its directory created): `.NAME.TAG-RANDOM`, hidden so
/// checkpoint listings skip it, on the same filesystem so it can be renamed over `dest`.
pub(crate) fn temp_beside(dest: &Path, tag: &str) -> Result<std::path::PathBuf> {
    let dir = dest.parent().ok_or_else(|| ObjectError::message(format!("{}: no parent directory", dest.display())))?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    Ok(dir.join(format!(".{name}.{tag}-{}", fastrand::u64(..))))
}

/// Keys are `/`-separated relative paths of safe names.
pub fn valid_key(key: &str) -> bool {
    tap_core::manifest::safe_relative_path(key)
}

/// Streams a file through SHA-256: (hex digest, size).
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    sha256_file_counting(path, &std::sync::atomic::AtomicU64::new(0))
}

/// [`sha256_file`], adding each chunk's bytes to `hashed` as it is read (a progress bar of
/// the hashing before an upload moves with it).
pub fn sha256_file_counting(path: &Path, hashed: &std::sync::atomic::AtomicU64) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
        hashed.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok((hex(&h.finalize()), size))
}

pub fn sha256_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What every object store must do with a write-once record, whatever its backend.
#[cfg(test)]
pub(crate) async fn write_once_conformance<S: ObjectStore>(store: &S) {
    let key = "checkpoints/e/commits/job/c1.json";
    assert!(store.put_bytes_once(key, b"first").await.expect("first write"), "the first writer writes");
    assert!(!store.put_bytes_once(key, b"second").await.expect("second write"), "a second writer does not");
    assert_eq!(store.get_bytes(key).await.expect("read").as_deref(), Some(&b"first"[..]), "the first one stays");
    // Writers racing: exactly one wins, and what is stored is the winner's, whole.
    let key = "checkpoints/e/commits/job/c2.json";
    let (a, b) = tokio::join!(store.put_bytes_once(key, b"from rank 0"), store.put_bytes_once(key, b"from rank 1"));
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert!(a != b, "exactly one of two racing writers wins: {a} {b}");
    let stored = store.get_bytes(key).await.expect("read").expect("stored");
    assert_eq!(stored, if a { &b"from rank 0"[..] } else { &b"from rank 1"[..] });
    let names: Vec<String> =
        store.list("checkpoints/e/commits/").await.expect("list").into_iter().map(|o| o.key).collect();
    assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
}
