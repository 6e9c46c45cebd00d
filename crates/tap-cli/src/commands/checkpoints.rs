//! `tap checkpoints latest EXPERIMENT`: the checkpoint a `--resume` would start from.

use crate::artifacts::ObjectStore;
use crate::artifacts::checkpoint;
use std::io::Write;

use crate::cli::Output;
use crate::commands::json;

pub async fn latest<O: ObjectStore>(
    objects: &O,
    experiment: &str,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let m = checkpoint::latest(objects, experiment).await?;
    match (output, m) {
        (Output::Json, m) => json(out, &m)?,
        (Output::Text, None) => writeln!(out, "experiment {experiment} has no checkpoint yet")?,
        (Output::Text, Some(m)) => {
            let step = m.step.map_or("-".into(), |s| s.to_string());
            writeln!(out, "checkpoint {} of run {} (step {step})", m.checkpoint_id, m.run_id)?;
            for f in &m.files {
                writeln!(out, "  {:>12}  {}  {}", f.size, &f.sha256[..12], f.path)?;
            }
        }
    }
    Ok(())
}
