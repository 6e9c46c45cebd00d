//! Parallel, resumable S3 transfers.
//!
//! Uploads: a multipart upload whose parts go `concurrency` at a time (memory: at most
//! `part_size × concurrency` of buffers), each with its CRC32C. Progress is kept in a state
//! file, so an interrupted upload resumes with the parts S3 already has (each re-checked
//! against the local file). After completion a sidecar object `<key>.tapsum` records the size,
//! part size and every part's CRC32C.
//!
//! Downloads: ranged GETs, `concurrency` at a time, written in place into a temporary file;
//! each range is checked against the sidecar's CRC32C when the object has one; the file is
//! renamed into place only when complete.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use tap_aws::sdk_error;

use super::{ObjectError, io};

pub type Result<T> = std::result::Result<T, ObjectError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOptions {
    pub part_size: u64,
    pub concurrency: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        // 16 MiB × 8 measured best against a local server (README, "Transfers"); see there for
        // the sizes that fill 10 and 400 Gbps.
        TransferOptions { part_size: 16 * 1024 * 1024, concurrency: 8 }
    }
}

/// What an upload did (for tests, the progress line and the benchmark).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadReport {
    pub parts: u32,
    pub parts_sent: u32,
    pub parts_resumed: u32,
}

/// The sidecar of an object tap uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    pub size: u64,
    pub part_size: u64,
    pub crc32c: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DonePart {
    etag: String,
    crc32c: u32,
}

/// Persisted progress of one multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UploadState {
    bucket: String,
    key: String,
    size: u64,
    part_size: u64,
    upload_id: String,
    done: BTreeMap<i32, DonePart>,
}

/// S3's checksum header value: the big-endian CRC in base64.
pub fn crc_b64(crc: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

pub fn sidecar_key(key: &str) -> String {
    format!("{key}.tapsum")
}

fn parts_of(size: u64, part_size: u64) -> u64 {
    size.div_ceil(part_size).max(1)
}

/// Parts in one multipart upload, at most (Amazon S3 multipart upload limits).
pub const S3_MAX_PARTS: u64 = 10_000;
/// Size of every part but the last, at least (Amazon S3 multipart upload limits: 5 MiB).
pub const S3_MIN_PART_SIZE: u64 = 5 << 20;
/// Size of one part, at most (Amazon S3 multipart upload limits: 5 GiB).
pub const S3_MAX_PART_SIZE: u64 = 5 << 30;

/// S3 allows 10 000 parts of at most 5 GiB: the requested part size, raised (to a whole MiB)
/// as far as a file needs to fit in 10 000 parts — a 200 GB checkpoint at the default 16 MiB
/// goes up in 20 MiB parts instead of failing.
pub fn part_size_for(size: u64, requested: u64) -> u64 {
    requested.max(size.div_ceil(S3_MAX_PARTS).div_ceil(MIB) * MIB)
}

const MIB: u64 = 1 << 20;

/// The SDK's read buffer when it streams a part from the file.
const PART_READ_BUFFER: usize = 256 * 1024;

/// Downloads write to their file in batches of this much, on the blocking pool.
const WRITE_BATCH: usize = 1 << 20;

/// An object of a bucket.
#[derive(Debug, Clone, Copy)]
pub struct S3Object<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

/// CRC32C of a part, read in 1 MiB slices (and fed to `sha` when one is kept).
fn part_crc(file: &std::fs::File, offset: u64, len: u64, sha: Option<&mut Sha256>) -> std::io::Result<u32> {
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let (mut crc, mut done) = (0u32, 0u64);
    let mut sha = sha;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        if let Some(h) = sha.as_deref_mut() {
            h.update(&buf[..n]);
        }
        done += n as u64;
    }
    Ok(crc)
}

/// The state file of an upload: keyed by destination and by the source's identity (path,
/// size, modification time), so a changed file never resumes an old upload.
fn state_path(state_dir: &Path, bucket: &str, key: &str, src: &Path, meta: &std::fs::Metadata) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let id = format!("{bucket}\0{key}\0{}\0{}\0{}.{}", src.display(), meta.len(), meta.mtime(), meta.mtime_nsec());
    state_dir.join(format!("upload-{}.json", &super::sha256_bytes(id.as_bytes())[..32]))
}

/// Writes the upload's state (flushed to disk) on the blocking pool.
async fn save_state(path: &Path, state: &UploadState) -> Result<()> {
    let bytes =
        serde_json::to_vec(state).map_err(|e| ObjectError::caused(format!("{}: upload state", path.display()), e))?;
    let path = path.to_owned();
    crate::blocking::run(move |_| tap_core::fsutil::write_atomic(&path, &bytes).map_err(io(&path))).await
}

/// A previous attempt's state, if one was saved (and reads).
async fn load_state(path: &Path) -> Option<UploadState> {
    let path = path.to_owned();
    crate::blocking::run(move |_| std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok())).await
}

/// Uploads `src` in parts. Parts are read (and SHA-256-hashed) in order and sent
/// `concurrency` at a time; with `expected_sha256`, a file whose bytes do not hash to it is
/// not completed (the upload is aborted). Finished parts are recorded in a state file as they
/// come, so a later call for the same file resumes after a crash or a failed part.
pub async fn upload(
    client: &Client,
    to: S3Object<'_>,
    src: &Path,
    expected_sha256: Option<&str>,
    opts: TransferOptions,
    state_dir: &Path,
    progress: Arc<AtomicU64>,
) -> Result<UploadReport> {
    let meta = std::fs::metadata(src).map_err(io(src))?;
    let size = meta.len();
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let state_file = state_path(state_dir, to.bucket, to.key, src, &meta);
    let opts = TransferOptions { part_size: part_size_for(size, opts.part_size), ..opts };
    let n_parts = parts_of(size, opts.part_size);
    if n_parts > S3_MAX_PARTS || opts.part_size > S3_MAX_PART_SIZE {
        return Err(ObjectError::message(format!(
            "{}: {size} bytes is more than S3's largest object (10 000 parts of 5 GiB)",
            src.display()
        )));
    }
    let u = Upload { client, to, src, size, opts, state_file: &state_file };
    let mut state = u.resume_or_begin().await?;
    save_state(&state_file, &state).await?;
    let mut report = UploadReport { parts: n_parts as u32, ..UploadReport::default() };
    let sha = u.send_parts(expected_sha256.is_some(), &mut state, &mut report, progress).await?;
    if let (Some(expected), Some(h)) = (expected_sha256, sha) {
        let actual = super::hex(&h.finalize());
        if actual != expected {
            let (bucket, key) = (to.bucket, to.key);
            let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&state.upload_id).send().await;
            let _ = std::fs::remove_file(&state_file);
            return Err(ObjectError::Checksum { key: key.to_owned(), expected: expected.to_owned(), actual });
        }
    }
    u.complete(&state).await?;
    let _ = std::fs::remove_file(&state_file);
    Ok(report)
}

/// One multipart upload's fixed facts, for its phases.
struct Upload<'a> {
    client: &'a Client,
    to: S3Object<'a>,
    src: &'a Path,
    size: u64,
    opts: TransferOptions,
    state_file: &'a Path,
}

impl Upload<'_> {
    /// The saved state of an earlier attempt when S3 still has it (its parts are re-checked as
    /// they are read), else a new multipart upload.
    async fn resume_or_begin(&self) -> Result<UploadState> {
        let S3Object { bucket, key } = self.to;
        if let Some(s) = load_state(self.state_file).await {
            // Only S3's own "no such upload" (aborted, expired by the lifecycle rule) means
            // the upload is gone; anything else is left to the part uploads to report.
            let listed = self.client.list_parts().bucket(bucket).key(key).upload_id(&s.upload_id).max_parts(1);
            let gone = match listed.send().await {
                Ok(_) => false,
                Err(e) => e.as_service_error().is_some_and(|se| {
                    use aws_sdk_s3::error::ProvideErrorMetadata;
                    se.code() == Some("NoSuchUpload")
                }),
            };
            if !gone && s.part_size == self.opts.part_size && s.size == self.size {
                return Ok(s);
            }
        }
        let r = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(|e| sdk_error(format!("S3 CreateMultipartUpload {key}"), e))?;
        // Regression: a missing id was taken as "", and every part then failed.
        let upload_id = r
            .upload_id()
            .ok_or_else(|| {
                ObjectError::message(format!("S3 CreateMultipartUpload {key}: the answer has no upload id"))
            })?
            .to_owned();
        Ok(UploadState {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: self.size,
            part_size: self.opts.part_size,
            upload_id,
            done: BTreeMap::new(),
        })
    }

    /// Sends every part S3 does not already have, `concurrency` at a time, recording each as
    /// it lands; with `keep_sha`, the whole file's SHA-256 (read with the checksums).
    async fn send_parts(
        &self,
        keep_sha: bool,
        state: &mut UploadState,
        report: &mut UploadReport,
        progress: Arc<AtomicU64>,
    ) -> Result<Option<Sha256>> {
        let (src, size, opts) = (self.src, self.size, self.opts);
        let file = Arc::new(std::fs::File::open(src).map_err(io(src))?);
        let mut sha = keep_sha.then(Sha256::new);
        let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let mut tasks: JoinSet<Result<(i32, DonePart)>> = JoinSet::new();
        for n in 1..=parts_of(size, opts.part_size) as i32 {
            let offset = (n as u64 - 1) * opts.part_size;
            let len = opts.part_size.min(size - offset);
            let permit = limit.clone().acquire_owned().await.map_err(|e| ObjectError::caused("upload task", e))?;
            let f = file.clone();
            // The checksums come from a first read in small slices; the part itself is
            // streamed from the file by the SDK, so no part-sized buffer ever exists (S3
            // rejects the part if its bytes changed in between).
            let (crc, sha_back) = crate::blocking::run(move |_| {
                let crc = part_crc(&f, offset, len, sha.as_mut())?;
                Ok::<_, std::io::Error>((crc, sha))
            })
            .await
            .map_err(|source| ObjectError::Io { what: format!("{}: reading part {n}", src.display()), source })?;
            sha = sha_back;
            if state.done.get(&n).is_some_and(|p| p.crc32c == crc) {
                report.parts_resumed += 1;
                progress.fetch_add(len, Ordering::Relaxed);
                continue;
            }
            tasks.spawn(send_part(
                self.client.clone(),
                self.owned_part(state, n, offset, len, crc),
                permit,
                progress.clone(),
            ));
            // Record finished parts as they come, so a crash loses at most the parts in flight.
            while let Some(done) = tasks.try_join_next() {
                record(state, self.state_file, report, done).await?;
            }
        }
        while let Some(done) = tasks.join_next().await {
            record(state, self.state_file, report, done).await?;
        }
        Ok(sha)
    }

    fn owned_part(&self, state: &UploadState, n: i32, offset: u64, len: u64, crc: u32) -> Part {
        Part {
            bucket: self.to.bucket.to_owned(),
            key: self.to.key.to_owned(),
            upload_id: state.upload_id.clone(),
            path: self.src.to_owned(),
            n,
            offset,
            len,
            crc,
        }
    }

    /// Completes the upload from its recorded parts and stores the checksum sidecar.
    async fn complete(&self, state: &UploadState) -> Result<()> {
        let S3Object { bucket, key } = self.to;
        let parts: Vec<CompletedPart> = state
            .done
            .iter()
            .map(|(n, p)| {
                CompletedPart::builder().part_number(*n).e_tag(&p.etag).checksum_crc32_c(crc_b64(p.crc32c)).build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&state.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| sdk_error(format!("S3 CompleteMultipartUpload {key}"), e))?;
        let crc32c = state.done.values().map(|p| p.crc32c).collect();
        let sidecar = Sidecar { size: self.size, part_size: self.opts.part_size, crc32c };
        let sidecar =
            serde_json::to_vec(&sidecar).map_err(|e| ObjectError::caused(format!("{key}: checksum sidecar"), e))?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(sidecar_key(key))
            .body(ByteStream::from(sidecar))
            .send()
            .await
            .map_err(|e| sdk_error(format!("S3 PutObject {}", sidecar_key(key)), e))?;
        Ok(())
    }
}

/// One part to send, owned by its task.
struct Part {
    bucket: String,
    key: String,
    upload_id: String,
    path: PathBuf,
    n: i32,
    offset: u64,
    len: u64,
    crc: u32,
}

async fn send_part(
    client: Client,
    p: Part,
    permit: tokio::sync::OwnedSemaphorePermit,
    progress: Arc<AtomicU64>,
) -> Result<(i32, DonePart)> {
    let _permit = permit;
    let body = ByteStream::read_from()
        .path(&p.path)
        .offset(p.offset)
        .length(aws_sdk_s3::primitives::Length::Exact(p.len))
        .buffer_size(PART_READ_BUFFER)
        .build()
        .await
        .map_err(|e| ObjectError::caused(format!("{}: part {}", p.path.display(), p.n), e))?;
    // S3 checks the part against our CRC32C, so the SDK need not hash it again, nor sign its
    // payload (TLS protects it on real S3).
    let r = client
        .upload_part()
        .bucket(&p.bucket)
        .key(&p.key)
        .upload_id(&p.upload_id)
        .part_number(p.n)
        .checksum_crc32_c(crc_b64(p.crc))
        .body(body)
        .customize()
        .disable_payload_signing()
        .send()
        .await
        .map_err(|e| sdk_error(format!("S3 UploadPart {}", p.key), e))?;
    progress.fetch_add(p.len, Ordering::Relaxed);
    let etag = r
        .e_tag()
        .ok_or_else(|| ObjectError::message(format!("S3 UploadPart {}: part {}'s answer has no ETag", p.key, p.n)))?;
    Ok((p.n, DonePart { etag: etag.to_owned(), crc32c: p.crc }))
}

async fn record(
    state: &mut UploadState,
    state_file: &Path,
    report: &mut UploadReport,
    done: std::result::Result<Result<(i32, DonePart)>, tokio::task::JoinError>,
) -> Result<()> {
    let (n, part) = done.map_err(|e| ObjectError::caused("upload task", e))??;
    state.done.insert(n, part);
    report.parts_sent += 1;
    save_state(state_file, state).await
}

/// Downloads `key` into `dest` with parallel ranged GETs, verified against the sidecar when
/// there is one. `dest` appears only when complete.
pub async fn download(
    client: &Client,
    from: S3Object<'_>,
    dest: &Path,
    expected_sha256: Option<&str>,
    opts: TransferOptions,
    progress: Arc<AtomicU64>,
) -> Result<()> {
    let S3Object { bucket, key } = from;
    let head = match client.head_object().bucket(bucket).key(key).send().await {
        Ok(h) => h,
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
            return Err(ObjectError::NotFound(key.to_owned()));
        }
        Err(e) => return Err(sdk_error(format!("S3 HeadObject {key}"), e).into()),
    };
    let size = head.content_length().unwrap_or(0).max(0) as u64;
    let sidecar: Option<Sidecar> = match client.get_object().bucket(bucket).key(sidecar_key(key)).send().await {
        Ok(o) => o.body.collect().await.ok().and_then(|b| serde_json::from_slice(&b.into_bytes()).ok()),
        Err(_) => None,
    };
    // Ranges follow the parts the object was uploaded with, so each can be checked.
    let part_size = sidecar.as_ref().filter(|s| s.size == size).map_or(opts.part_size, |s| s.part_size);
    let tmp = super::temp_beside(dest, "tap-partial")?;
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.set_len(size).map_err(io(&tmp))?;
    let file = Arc::new(file);
    let result = async {
        let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        let n_parts = if size == 0 { 0 } else { parts_of(size, part_size) };
        for i in 0..n_parts {
            let permit = limit.clone().acquire_owned().await.map_err(|e| ObjectError::caused("download task", e))?;
            let (client, file, progress) = (client.clone(), file.clone(), progress.clone());
            let (bucket, key) = (bucket.to_owned(), key.to_owned());
            let expected = sidecar.as_ref().filter(|s| s.size == size).and_then(|s| s.crc32c.get(i as usize).copied());
            let start = i * part_size;
            let end = (start + part_size).min(size) - 1;
            let range = Range { bucket, key, part: i + 1, start, end, expected };
            tasks.spawn(fetch_range(client, range, file, permit, progress));
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| ObjectError::caused("download task", e))??;
        }
        // No fsync here: the pull flushes its file system once at the end (restore_in). The
        // whole-file digest reads the file back on the blocking pool, not on this task.
        drop(file);
        if let Some(expected) = expected_sha256 {
            let path = tmp.clone();
            let (actual, _) = crate::blocking::run(move |_| super::sha256_file(&path)).await.map_err(io(&tmp))?;
            if actual != expected {
                return Err(ObjectError::Checksum { key: key.to_owned(), expected: expected.to_owned(), actual });
            }
        }
        std::fs::rename(&tmp, dest).map_err(io(dest))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One ranged GET of a download, owned by its task.
struct Range {
    bucket: String,
    key: String,
    /// 1-based, for messages.
    part: u64,
    start: u64,
    /// Inclusive.
    end: u64,
    /// The part's CRC32C from the sidecar, when there is one.
    expected: Option<u32>,
}

/// Streams one range to its place in the file in small batches, written on the blocking
/// pool (no part-sized buffer, no file write on the async task), and checks its CRC32C.
async fn fetch_range(
    client: Client,
    r: Range,
    file: Arc<std::fs::File>,
    permit: tokio::sync::OwnedSemaphorePermit,
    progress: Arc<AtomicU64>,
) -> Result<()> {
    let _permit = permit;
    let Range { bucket, key, part, start, end, expected } = r;
    let o = client
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .range(format!("bytes={start}-{end}"))
        .send()
        .await
        .map_err(|e| sdk_error(format!("S3 GetObject {key}"), e))?;
    let mut body = o.body;
    let (mut pos, mut crc) = (start, 0u32);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut batch_at = start;
    while let Some(chunk) = body.try_next().await.map_err(|e| ObjectError::caused(format!("S3 GetObject {key}"), e))? {
        crc = crc32c::crc32c_append(crc, &chunk);
        batch.extend_from_slice(&chunk);
        pos += chunk.len() as u64;
        progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if batch.len() >= WRITE_BATCH {
            write_at(&file, std::mem::take(&mut batch), batch_at, part).await?;
            batch_at = pos;
        }
    }
    write_at(&file, batch, batch_at, part).await?;
    if pos != end + 1 {
        return Err(ObjectError::message(format!("S3 GetObject {key}: short range {start}-{end}")));
    }
    if let Some(want) = expected
        && crc != want
    {
        return Err(ObjectError::Checksum {
            key: format!("{key} part {part}"),
            expected: format!("crc32c {want:08x}"),
            actual: format!("crc32c {crc:08x}"),
        });
    }
    Ok(())
}

/// Writes `bytes` at `at` on the blocking pool.
async fn write_at(file: &Arc<std::fs::File>, bytes: Vec<u8>, at: u64, part: u64) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let file = file.clone();
    crate::blocking::run(move |_| file.write_all_at(&bytes, at))
        .await
        .map_err(|source| ObjectError::Io { what: format!("writing part {part}"), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_arithmetic() {
        assert_eq!(parts_of(0, 8), 1);
        assert_eq!(parts_of(8, 8), 1);
        assert_eq!(parts_of(9, 8), 2);
        // 5 TB (S3's largest object) at 64 MiB parts needs more than 10 000 parts, so
        // part_size_for raises the part size; at 1 GiB parts it fits.
        assert!(parts_of(5_000_000_000_000, 64 << 20) > 10_000);
        assert!(parts_of(5_000_000_000_000, 1 << 30) <= 10_000);
        assert_eq!(part_size_for(1 << 30, 16 << 20), 16 << 20, "small files keep the requested size");
        assert_eq!(part_size_for(200_000_000_000, 16 << 20), 20 << 20);
        for size in [0, 1, 167_772_160_000, 167_772_160_001, 5_000_000_000_000, 48 << 40] {
            let p = part_size_for(size, 16 << 20);
            assert!(parts_of(size, p) <= 10_000 && p.is_multiple_of(1 << 20), "{size}: {p}");
        }
    }
}
