//! `tap logs RUN [--follow]`: a run's recorded output.

use std::process::ExitCode;

use anyhow::Context;

use crate::commands::find_run;
use crate::store::{LogStore, RunStore};
use std::io::Write;

use crate::cli::Output;
use crate::commands::json;

/// `tap logs --follow` asks the store for new lines this often.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// `tap logs RUN` (and `tap jobs logs JOB`): a run's output, or a multi-node job's rank 0's;
/// `follow` prints new lines until the run ends.
pub async fn print_logs<R: RunStore, L: LogStore>(
    runs: &R,
    logs: &L,
    run_id: &str,
    follow: bool,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut run = find_run(runs, run_id).await?;
    // A multi-node job's output is its rank 0's (each node's: tap logs <its run>).
    if let Some(job) = &run.job {
        let rank0 = job.nodes.iter().find(|n| n.rank == 0).and_then(|n| n.run_id.clone()).with_context(|| {
            format!("job {run_id}: rank 0 has not started its run yet (see `tap runs show {run_id}`)")
        })?;
        run =
            crate::liveness::observed(runs.get_run(&run.experiment_id, &rank0).await?.context("the job's rank 0 run")?);
    }
    // A folded format-1 chain: the earlier records' output first, then its last record's.
    let records: Vec<String> = run.records().into_iter().map(str::to_owned).collect();
    if let Some((last, earlier)) = records.split_last() {
        for id in earlier {
            let lines = logs.logs(&run.experiment_id, id).await?;
            print_lines(&lines, output, out)?;
        }
        run.run_id.clone_from(last);
    }
    let mut printed = 0;
    // Bounded: a followed run that never ends is given up on after a week.
    for _ in 0..(7 * 24 * 3600 / 2) {
        let now = runs.get_run(&run.experiment_id, &run.run_id).await?.map(crate::liveness::observed);
        let lost = now.as_ref().is_some_and(|r| r.status == tap_core::runs::RunStatus::Lost);
        let done = !follow
            || now.is_none_or(|r| {
                !matches!(r.status, tap_core::runs::RunStatus::Running | tap_core::runs::RunStatus::Queued)
            });
        let lines = logs.logs(&run.experiment_id, &run.run_id).await?;
        print_lines(lines.get(printed..).unwrap_or_default(), output, out)?;
        printed = printed.max(lines.len());
        if done && follow && lost {
            match output {
                Output::Json => json(out, &serde_json::json!({ "run": run.run_id, "status": "lost" }))?,
                Output::Text => writeln!(
                    out,
                    "tap: run {} is lost: its tap run stopped without recording an end (killed, or its node \
                         went away); `tap run -e {} --resume {}` continues from its last checkpoint",
                    run.run_id, run.experiment_id, run.run_id
                )?,
            }
        }
        out.flush()?;
        if done {
            break;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Output lines as `tap logs` prints them: stderr tagged in text, a JSON array otherwise.
fn print_lines(lines: &[crate::store::LogLine], output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    match output {
        Output::Json => json(out, &lines)?,
        Output::Text => {
            for l in lines {
                let tag = if l.stream == crate::store::Stream::Stderr { "[stderr] " } else { "" };
                writeln!(out, "{tag}{}", l.text)?;
            }
        }
    }
    Ok(())
}
