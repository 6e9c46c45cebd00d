//! The object store on the stack's artifacts bucket.
//!
//! Files up to [`SINGLE_PUT_MAX`] go in one PutObject; larger ones (checkpoints past S3's
//! 5 GB single-PUT limit included) in multipart uploads. Every file is hashed while it is
//! read for sending and refused if its SHA-256 is not the expected one; downloads are hashed
//! while written and only renamed into place when they match. The SDK's own CRC32 checksums
//! protect each request on the wire.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};
use tap_aws::sdk_error;

use super::transfer::{self, TransferOptions};
use super::{ObjectError, ObjectInfo, ObjectStore, Result, hex, io, valid_key};

/// Above this size a file goes up in parts.
pub const SINGLE_PUT_MAX: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Key prefix inside the bucket.
    prefix: String,
    single_put_max: u64,
    transfer: TransferOptions,
    state_dir: PathBuf,
    /// Bytes moved by this store, for progress bars.
    pub progress: Arc<AtomicU64>,
}

impl S3Store {
    pub fn new(client: Client, bucket: &str, prefix: &str) -> S3Store {
        S3Store {
            client,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            single_put_max: SINGLE_PUT_MAX,
            transfer: TransferOptions::default(),
            state_dir: std::env::temp_dir().join("tap-transfers"),
            progress: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Multipart threshold, part size and concurrency (S3 needs parts of at least 5 MiB but
    /// the last), and where resumable upload state is kept.
    pub fn with_transfer(mut self, single_put_max: u64, transfer: TransferOptions, state_dir: &Path) -> S3Store {
        self.single_put_max = single_put_max.max(transfer::S3_MIN_PART_SIZE);
        self.transfer = TransferOptions { part_size: transfer.part_size.max(transfer::S3_MIN_PART_SIZE), ..transfer };
        self.state_dir = state_dir.to_owned();
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn key(&self, key: &str) -> Result<String> {
        if !valid_key(key) {
            return Err(ObjectError::BadKey(key.to_owned()));
        }
        Ok(if self.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.prefix) })
    }
}

/// Keys one DeleteObjects request takes (S3's limit).
const S3_DELETE_BATCH: usize = 1000;

impl ObjectStore for S3Store {
    async fn put_file(&self, key: &str, src: &Path, sha256: &str) -> Result<()> {
        let key = self.key(key)?;
        let size = std::fs::metadata(src).map_err(io(src))?.len();
        if size > self.single_put_max {
            let (c, b, p) = (&self.client, &self.bucket, self.progress.clone());
            let to = transfer::S3Object { bucket: b, key: &key };
            transfer::upload(c, to, src, Some(sha256), self.transfer, &self.state_dir, p).await?;
            return Ok(());
        }
        let file = src.to_owned();
        let (body, actual) = crate::blocking::run(move |_| {
            let body = std::fs::read(&file).map_err(io(&file))?;
            let actual = hex(&Sha256::digest(&body));
            Ok::<_, ObjectError>((body, actual))
        })
        .await?;
        if actual != sha256 {
            return Err(ObjectError::Checksum { key, expected: sha256.to_owned(), actual });
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .metadata("sha256", sha256)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_error(format!("S3 PutObject {key}"), e))?;
        self.progress.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    async fn get_file(&self, key: &str, dest: &Path, sha256: &str) -> Result<()> {
        let key = self.key(key)?;
        // One GET, no HEAD first (many small files cost one request each); a big object's
        // body is left unread and it comes down in parallel ranges instead.
        let out = match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(ObjectError::NotFound(key));
            }
            Err(e) => return Err(sdk_error(format!("S3 GetObject {key}"), e).into()),
        };
        if out.content_length().unwrap_or(0).max(0) as u64 > self.single_put_max {
            drop(out);
            let (c, b, p) = (&self.client, &self.bucket, self.progress.clone());
            return transfer::download(
                c,
                transfer::S3Object { bucket: b, key: &key },
                dest,
                Some(sha256),
                self.transfer,
                p,
            )
            .await;
        }
        let tmp = super::temp_beside(dest, "tmp")?;
        let result = async {
            let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            let mut h = Sha256::new();
            let mut body = out.body;
            while let Some(chunk) =
                body.try_next().await.map_err(|e| ObjectError::caused(format!("S3 GetObject {key}"), e))?
            {
                h.update(&chunk);
                self.progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                file.write_all(&chunk).map_err(io(&tmp))?;
            }
            let actual = hex(&h.finalize());
            if actual != sha256 {
                return Err(ObjectError::Checksum { key: key.clone(), expected: sha256.to_owned(), actual });
            }
            // No fsync per file: a set of many small files is flushed once at the end
            // (checkpoint::restore_in), not 2000 times.
            std::fs::rename(&tmp, dest).map_err(io(dest))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error(format!("S3 PutObject {key}"), e))?;
        Ok(())
    }

    async fn put_bytes_once(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let key = self.key(key)?;
        // S3's conditional write: If-None-Match: * fails with 412 when the key exists.
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
            Err(e) => Err(sdk_error(format!("S3 PutObject {key} (if absent)"), e).into()),
        }
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(o) => {
                let data = o.body.collect().await.map_err(|e| ObjectError::caused(format!("S3 GetObject {key}"), e))?;
                Ok(Some(data.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(sdk_error(format!("S3 GetObject {key}"), e).into()),
        }
    }

    fn bytes_moved(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// DeleteObjects, 1,000 keys a request (S3's limit). In the stack's versioned buckets this
    /// leaves delete markers; the bucket's lifecycle expires the old versions.
    async fn delete(&self, keys: &[String]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for chunk in keys.chunks(S3_DELETE_BATCH) {
            let ids = chunk
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.key(k)?)
                        .build()
                        .map_err(|e| ObjectError::caused("S3 DeleteObjects", e))
                })
                .collect::<Result<Vec<_>>>()?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| ObjectError::caused("S3 DeleteObjects", e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| sdk_error(format!("S3 DeleteObjects {}", self.bucket), e))?;
            if let Some(e) = out.errors().first() {
                return Err(ObjectError::message(format!(
                    "S3 DeleteObjects {}: {} of {} keys not deleted, first {}: {}",
                    self.bucket,
                    out.errors().len(),
                    chunk.len(),
                    e.key().unwrap_or("?"),
                    e.message().unwrap_or("no reason given")
                )));
            }
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let key = self.key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(sdk_error(format!("S3 HeadObject {key}"), e).into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = if self.prefix.is_empty() { prefix.to_owned() } else { format!("{}/{prefix}", self.prefix) };
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(format!("S3 ListObjectsV2 {full}"), e))?;
            for o in page.contents() {
                let key = o
                    .key()
                    .ok_or_else(|| ObjectError::message(format!("S3 ListObjectsV2 {full}: an object without a key")))?;
                out.push(ObjectInfo {
                    key: key.strip_prefix(&strip).unwrap_or(key).to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified_ms: o.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }
}
