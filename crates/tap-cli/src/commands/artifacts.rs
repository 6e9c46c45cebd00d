//! `tap artifacts push|pull|ls`: named, versioned files and directories in the store, with a
//! progress bar on long transfers.

use anyhow::{Context, bail};

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint::{self, CheckpointTarget, Space};
use crate::cli::ArtifactsCommand;
use std::io::Write;

use tap_core::manifest::ArtifactVersion;

use crate::cli::Output;
use crate::commands::json;

/// How often a progress bar is redrawn.
const PROGRESS_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Shows a byte progress bar (with throughput) on stderr while `work` runs; hidden when
/// stderr is not a terminal.
pub(crate) async fn with_progress<O: ObjectStore, T>(
    objects: &O,
    total: u64,
    label: &str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let start = objects.bytes_moved();
    progress_of(total, label, || objects.bytes_moved() - start, work).await
}

/// A progress bar of `total` bytes that shows `done()` every 100 ms while `work` runs, with
/// throughput and ETA.
pub(crate) async fn progress_of<T>(
    total: u64,
    label: &str,
    done: impl Fn() -> u64,
    work: impl std::future::Future<Output = T>,
) -> T {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => bar.set_position(done().min(total)),
        }
    };
    bar.finish_and_clear();
    result
}

pub async fn run<O: ObjectStore + Clone + 'static>(
    objects: &O,
    cmd: &ArtifactsCommand,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        ArtifactsCommand::Push { path, name, .. } => push(objects, path, name.as_deref(), output, out).await,
        ArtifactsCommand::Pull { name, dest, .. } => pull(objects, name, dest.as_deref(), output, out).await,
        ArtifactsCommand::List => list(objects, output, out).await,
    }
}

/// A new version of an artifact from a file or a directory.
async fn push<O: ObjectStore + Clone + 'static>(
    objects: &O,
    path: &std::path::Path,
    name: Option<&str>,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let name = match name {
        Some(n) => n.to_owned(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| tap_core::runs::valid_id(n))
            .context("give the artifact a --name (letters, digits, '_', '.' or '-')")?
            .to_owned(),
    };
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    // Regressions: a FIFO said "Not a directory"; an empty directory was pushed and
    // pulled back as nothing.
    if !path.is_dir() && !path.is_file() {
        bail!(
            "{}: not a regular file or directory (a FIFO, socket or device); tap pushes files and directories",
            path.display()
        );
    }
    let total = if path.is_dir() {
        let dir = path.to_path_buf();
        let listing = crate::blocking::run(move |_| checkpoint::list_files(&dir)).await?;
        if listing.files.is_empty() {
            bail!("{}: an empty directory (or only hidden and .tmp files): nothing to push", path.display());
        }
        // Regression: one link leaving the directory, or one FIFO, refused the whole
        // push; now it is left out, said here, and recorded in the manifest.
        for e in &listing.skipped {
            crate::say!("tap: leaving out {}/{}: {}", path.display(), e.path, e.why);
        }
        listing.files.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
    } else {
        std::fs::metadata(path).map_or(0, |m| m.len())
    };
    let version = tap_core::runs::new_run_id(crate::now_ms(), fastrand::u32(..));
    let started = std::time::Instant::now();
    // Hashing reads everything once before the upload: its own bar (regression: a push
    // showed 0 B for as long as it hashed).
    let hashed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hashed.clone();
    let (base, files) = progress_of(
        total,
        &format!("hash {name}"),
        || counter.load(std::sync::atomic::Ordering::Relaxed),
        checkpoint::hash_path(path, hashed),
    )
    .await?;
    let m = with_progress(
        objects,
        total,
        &format!("push {name}"),
        checkpoint::upload_hashed(objects, &CheckpointTarget::artifact(&name, &version), &base, files),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    match output {
        Output::Json => json(out, &ArtifactVersion::from(&m))?,
        Output::Text => {
            writeln!(out, "pushed {name} version {version}: {}{}", transfer_summary(&m, secs), left_out(&m))?
        }
    }
    Ok(())
}

/// The latest version of an artifact, every file verified.
async fn pull<O: ObjectStore + Clone + 'static>(
    objects: &O,
    name: &str,
    dest: Option<&std::path::Path>,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let m = checkpoint::latest_in(objects, Space::Artifacts, name)
        .await?
        .with_context(|| format!("no artifact {name} (see `tap artifacts list`)"))?;
    let dest = dest.map_or_else(|| std::path::PathBuf::from(name), std::path::Path::to_path_buf);
    crate::commands::pull_destination(&dest, false)?;
    let started = std::time::Instant::now();
    with_progress(
        objects,
        m.total_bytes(),
        &format!("pull {name}"),
        checkpoint::restore_in(objects, Space::Artifacts, &m, &dest),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    match output {
        Output::Json => json(out, &ArtifactVersion::from(&m))?,
        Output::Text => writeln!(
            out,
            "pulled {name} version {} into {}: {}, all verified{}",
            m.checkpoint_id,
            dest.display(),
            transfer_summary(&m, secs),
            left_out(&m)
        )?,
    }
    Ok(())
}

/// Each artifact and its latest version.
async fn list<O: ObjectStore + Clone + 'static>(
    objects: &O,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut latest = Vec::new();
    for n in checkpoint::names(objects, Space::Artifacts).await? {
        // Regression: one corrupt manifest made `artifacts ls` fail without naming it.
        match checkpoint::latest_in(objects, Space::Artifacts, &n).await {
            Ok(Some(m)) => latest.push(m),
            Ok(None) => {}
            Err(e) => crate::say!("tap: warning: artifact {n}: {}; left out", tap_core::text::chain(&e)),
        }
    }
    let versions: Vec<ArtifactVersion<'_>> = latest.iter().map(ArtifactVersion::from).collect();
    match output {
        Output::Json => json(out, &versions)?,
        Output::Text => {
            writeln!(out, "{:<28} {:<26} {:>6} {:>14}  CREATED", "NAME", "VERSION", "FILES", "BYTES")?;
            for v in versions {
                writeln!(
                    out,
                    "{:<28} {:<26} {:>6} {:>14}  {}",
                    v.name,
                    v.version,
                    v.files.len(),
                    v.bytes,
                    tap_core::time::rfc3339(v.created_ms)
                )?;
            }
        }
    }
    Ok(())
}

/// "3 files, 1048576 bytes in 0.4 s (2.6 MB/s)"
fn transfer_summary(m: &tap_core::manifest::Manifest, secs: f64) -> String {
    format!(
        "{} files, {} bytes in {secs:.1} s ({:.1} MB/s)",
        m.files.len(),
        m.total_bytes(),
        m.total_bytes() as f64 / secs / 1e6
    )
}

/// `; 2 entries (pw, pipe) left out when it was stored` for a manifest that skipped some.
pub fn left_out(m: &tap_core::manifest::Manifest) -> String {
    tap_core::manifest::left_out_summary(&m.skipped)
        .map(|s| format!("; {s} left out when it was stored"))
        .unwrap_or_default()
}
