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
/// Size of one part, at most (Amazon S3 multipart upload limits: 5 GiB).
pub const S3_MAX_PART_SIZE: u64 = 5 << 30;

/// S3 allows 10 000 parts of at most 5 GiB: the requested part size, raised (to a whole MiB)
/// as far as a file needs to fit in 10 000 parts — a 200 GB checkpoint at the default 16 MiB
/// goes up in 20 MiB parts instead of failing.
pub fn part_size_for(size: u64, requested: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    requested.max(size.div_ceil(S3_MAX_PARTS).div_ceil(MIB) * MIB)
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

fn save_state(path: &Path, state: &UploadState) -> Result<()> {
    let bytes =
        serde_json::to_vec(state).map_err(|e| ObjectError::caused(format!("{}: upload state", path.display()), e))?;
    tap_core::fsutil::write_atomic(path, &bytes).map_err(io(path))
}

/// Uploads `src` in parts. Parts are read (and SHA-256-hashed) in order and sent
/// `concurrency` at a time; with `expected_sha256`, a file whose bytes do not hash to it is
/// not completed (the upload is aborted). Finished parts are recorded in a state file as they
/// come, so a later call for the same file resumes after a crash or a failed part.
#[allow(clippy::too_many_arguments)]
pub async fn upload(
    client: &Client,
    bucket: &str,
    key: &str,
    src: &Path,
    expected_sha256: Option<&str>,
    opts: TransferOptions,
    state_dir: &Path,
    progress: Arc<AtomicU64>,
) -> Result<UploadReport> {
    let meta = std::fs::metadata(src).map_err(io(src))?;
    let size = meta.len();
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let state_file = state_path(state_dir, bucket, key, src, &meta);
    let file = Arc::new(std::fs::File::open(src).map_err(io(src))?);
    let opts = TransferOptions { part_size: part_size_for(size, opts.part_size), ..opts };
    let n_parts = parts_of(size, opts.part_size);
    if n_parts > S3_MAX_PARTS || opts.part_size > S3_MAX_PART_SIZE {
        return Err(ObjectError::message(format!(
            "{}: {size} bytes is more than S3's largest object (10 000 parts of 5 GiB)",
            src.display()
        )));
    }

    // Resume a previous attempt if S3 still has it (parts are re-checked below).
    let mut state: Option<UploadState> = std::fs::read(&state_file).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(s) = &state {
        // Only S3's own "no such upload" (aborted, expired by the lifecycle rule) means the
        // upload is gone; anything else is left to the part uploads to report.
        let gone = match client.list_parts().bucket(bucket).key(key).upload_id(&s.upload_id).max_parts(1).send().await {
            Ok(_) => false,
            Err(e) => e.as_service_error().is_some_and(|se| {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                se.code() == Some("NoSuchUpload")
            }),
        };
        let alive = !gone;
        if !alive || s.part_size != opts.part_size || s.size != size {
            state = None;
        }
    }
    let mut report = UploadReport { parts: n_parts as u32, ..UploadReport::default() };
    let mut state = match state {
        Some(s) => s,
        None => {
            let r = client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .send()
                .await
                .map_err(|e| sdk_error(format!("S3 CreateMultipartUpload {key}"), e))?;
            UploadState {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size,
                part_size: opts.part_size,
                // Regression: a missing id was taken as "", and every part then failed.
                upload_id: r
                    .upload_id()
                    .ok_or_else(|| {
                        ObjectError::message(format!("S3 CreateMultipartUpload {key}: the answer has no upload id"))
                    })?
                    .to_owned(),
                done: BTreeMap::new(),
            }
        }
    };
    save_state(&state_file, &state)?;

    // The whole-file SHA-256 only when the caller wants it checked (checkpoints do; raw
    // transfers rely on the per-part CRC32C).
    let mut sha = expected_sha256.map(|_| Sha256::new());
    let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks: JoinSet<Result<(i32, DonePart)>> = JoinSet::new();
    for n in 1..=n_parts as i32 {
        let offset = (n as u64 - 1) * opts.part_size;
        let len = opts.part_size.min(size - offset) as usize;
        let permit = limit.clone().acquire_owned().await.map_err(|e| ObjectError::caused("upload task", e))?;
        let f = file.clone();
        // The checksums come from a first read in small slices; the part itself is streamed
        // from the file by the SDK, so no part-sized buffer ever exists (S3 rejects the part
        // if its bytes changed in between).
        let (crc, sha_back) = tokio::task::spawn_blocking(move || {
            let crc = part_crc(&f, offset, len as u64, sha.as_mut())?;
            Ok::<_, std::io::Error>((crc, sha))
        })
        .await
        .map_err(|e| ObjectError::caused("upload task", e))?
        .map_err(|source| ObjectError::Io { what: format!("{}: reading part {n}", src.display()), source })?;
        sha = sha_back;
        if state.done.get(&n).is_some_and(|p| p.crc32c == crc) {
            report.parts_resumed += 1;
            progress.fetch_add(len as u64, Ordering::Relaxed);
            continue;
        }
        let (client, progress) = (client.clone(), progress.clone());
        let (bucket, key, upload_id) = (bucket.to_owned(), key.to_owned(), state.upload_id.clone());
        let path = src.to_owned();
        tasks.spawn(async move {
            let _permit = permit;
            let body = ByteStream::read_from()
                .path(&path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(len as u64))
                .buffer_size(256 * 1024)
                .build()
                .await
                .map_err(|e| ObjectError::caused(format!("{}: part {n}", path.display()), e))?;
            // S3 checks the part against our CRC32C, so the SDK need not hash it again, nor
            // sign its payload (TLS protects it on real S3).
            let r = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(n)
                .checksum_crc32_c(crc_b64(crc))
                .body(body)
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| sdk_error(format!("S3 UploadPart {key}"), e))?;
            progress.fetch_add(len as u64, Ordering::Relaxed);
            let etag = r
                .e_tag()
                .ok_or_else(|| ObjectError::message(format!("S3 UploadPart {key}: part {n}'s answer has no ETag")))?;
            Ok((n, DonePart { etag: etag.to_owned(), crc32c: crc }))
        });
        // Record finished parts as they come, so a crash loses at most the parts in flight.
        while let Some(done) = tasks.try_join_next() {
            record(&mut state, &state_file, &mut report, done)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(&mut state, &state_file, &mut report, done)?;
    }
    if let (Some(expected), Some(h)) = (expected_sha256, sha) {
        let actual = super::hex(&h.finalize());
        if actual != expected {
            let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&state.upload_id).send().await;
            let _ = std::fs::remove_file(&state_file);
            return Err(ObjectError::Checksum { key: key.to_owned(), expected: expected.to_owned(), actual });
        }
    }

    let parts: Vec<CompletedPart> = state
        .done
        .iter()
        .map(|(n, p)| {
            CompletedPart::builder().part_number(*n).e_tag(&p.etag).checksum_crc32_c(crc_b64(p.crc32c)).build()
        })
        .collect();
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&state.upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| sdk_error(format!("S3 CompleteMultipartUpload {key}"), e))?;
    let sidecar = Sidecar { size, part_size: opts.part_size, crc32c: state.done.values().map(|p| p.crc32c).collect() };
    let sidecar =
        serde_json::to_vec(&sidecar).map_err(|e| ObjectError::caused(format!("{key}: checksum sidecar"), e))?;
    client
        .put_object()
        .bucket(bucket)
        .key(sidecar_key(key))
        .body(ByteStream::from(sidecar))
        .send()
        .await
        .map_err(|e| sdk_error(format!("S3 PutObject {}", sidecar_key(key)), e))?;
    let _ = std::fs::remove_file(&state_file);
    Ok(report)
}

fn record(
    state: &mut UploadState,
    state_file: &Path,
    report: &mut UploadReport,
    done: std::result::Result<Result<(i32, DonePart)>, tokio::task::JoinError>,
) -> Result<()> {
    let (n, part) = done.map_err(|e| ObjectError::caused("upload task", e))??;
    state.done.insert(n, part);
    report.parts_sent += 1;
    save_state(state_file, state)
}

/// Downloads `key` into `dest` with parallel ranged GETs, verified against the sidecar when
/// there is one. `dest` appears only when complete.
pub async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    opts: TransferOptions,
    progress: Arc<AtomicU64>,
) -> Result<()> {
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
            tasks.spawn(async move {
                let _permit = permit;
                let o = client
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| sdk_error(format!("S3 GetObject {key}"), e))?;
                // Stream the range straight to its place in the file: no part-sized buffer.
                let mut body = o.body;
                let (mut pos, mut crc) = (start, 0u32);
                while let Some(chunk) =
                    body.try_next().await.map_err(|e| ObjectError::caused(format!("S3 GetObject {key}"), e))?
                {
                    crc = crc32c::crc32c_append(crc, &chunk);
                    file.write_all_at(&chunk, pos)
                        .map_err(|source| ObjectError::Io { what: format!("writing part {}", i + 1), source })?;
                    pos += chunk.len() as u64;
                    progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                if pos != end + 1 {
                    return Err(ObjectError::message(format!("S3 GetObject {key}: short range {start}-{end}")));
                }
                if let Some(want) = expected
                    && crc != want
                {
                    return Err(ObjectError::Checksum {
                        key: format!("{key} part {}", i + 1),
                        expected: format!("crc32c {want:08x}"),
                        actual: format!("crc32c {crc:08x}"),
                    });
                }
                Ok(())
            });
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
