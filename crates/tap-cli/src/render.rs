//! Text rendering of runs for the terminal: tables and sparklines (pure, unit-tested).

use std::collections::{BTreeMap, BTreeSet};

use tap_core::runs::{MetricPoint, Run};
use tap_core::time::rfc3339;

mod goodput;
#[cfg(feature = "fleet")]
pub use goodput::pools;
pub use goodput::{goodput, goodput_brief, goodput_experiment, simulation};

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of `values`, at most `width` characters (averaged into buckets).
pub fn sparkline(values: &[f64], width: usize) -> String {
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let buckets = values.len().min(width);
    let means: Vec<f64> = (0..buckets)
        .map(|b| {
            let (lo, hi) =
                (b * values.len() / buckets, ((b + 1) * values.len() / buckets).max(b * values.len() / buckets + 1));
            values[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
        })
        .collect();
    let (min, max) = means.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    means
        .iter()
        .map(|v| if max > min { BARS[(((v - min) / (max - min)) * 7.0).round() as usize] } else { BARS[3] })
        .collect()
}

pub fn duration(run: &Run) -> String {
    match run.ended_ms {
        Some(end) => {
            let s = (end - run.started_ms).max(0) / 1000;
            format!("{}m{:02}s", s / 60, s % 60)
        }
        None => "-".to_owned(),
    }
}

/// `tap runs list`: a row per run; `columns` are FIELDs (`loss`, `tag.team`, `lr`) shown one
/// column each, else up to four final metrics and the tags in one column.
pub fn runs_table(runs: &[Run], columns: &[String], now_ms: i64) -> String {
    let fields: Vec<tap_core::query::Field> =
        columns.iter().filter_map(|c| tap_core::query::Field::parse(c).ok()).collect();
    let cells = |r: &Run| -> Vec<String> {
        if fields.is_empty() {
            let metrics = r.final_metrics.iter().take(4).map(|(k, v)| format!("{k}={}", number(*v)));
            let tags = r.tags.iter().map(|(k, v)| format!("tag.{k}={v}"));
            return vec![metrics.chain(tags).collect::<Vec<_>>().join(" ")];
        }
        fields
            .iter()
            .map(|f| match f.value(r, now_ms) {
                Some(tap_core::query::Value::Number(n)) => number(n),
                Some(v) => v.to_string(),
                None => "-".into(),
            })
            .collect()
    };
    let heads: Vec<String> =
        if fields.is_empty() { vec!["METRICS".into()] } else { columns.iter().map(|c| c.to_uppercase()).collect() };
    let rows: Vec<Vec<String>> = runs.iter().map(cells).collect();
    let widths: Vec<usize> = (0..heads.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([heads[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |fixed: String, extra: &[String]| -> String {
        let extra: Vec<String> = extra.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{fixed} {}", extra.join(" ")).trim_end().to_owned() + "\n"
    };
    let mut s = line(
        format!(
            "{:<26} {:<16} {:<16} {:<12} {:>8} {:>9} {:<22}",
            "RUN", "NAME", "EXPERIMENT", "STATUS", "ATTEMPTS", "DURATION", "STARTED"
        ),
        &heads,
    );
    for (r, row) in runs.iter().zip(&rows) {
        s.push_str(&line(
            format!(
                "{:<26} {:<16} {:<16} {:<12} {:>8} {:>9} {:<22}",
                r.run_id,
                r.name.as_deref().unwrap_or("-"),
                r.experiment_id,
                r.status.as_str(),
                r.attempt(),
                duration(r),
                rfc3339(r.started_ms),
            ),
            row,
        ));
    }
    s
}

/// The `code:`, `tap:`, `python:` and `node:` lines of `tap runs show`.
fn provenance(p: &tap_core::runs::Provenance) -> String {
    let mut s = String::new();
    if let Some(g) = &p.git {
        let branch = g.branch.as_deref().unwrap_or("detached");
        let dirty = if g.dirty { ", dirty: uncommitted changes" } else { "" };
        s.push_str(&format!("code:        git {} ({branch}{dirty})\n", g.commit));
    }
    s.push_str(&format!("tap:         {}\n", p.tap_version));
    if let Some(py) = &p.python {
        s.push_str(&format!(
            "python:      {} ({}), {} packages, list sha256 {}\n",
            py.version,
            py.executable,
            py.packages,
            &py.packages_sha256[..py.packages_sha256.len().min(16)]
        ));
    }
    if let Some(n) = &p.node {
        s.push_str(&format!(
            "node:        {} {} {} {}\n",
            n.instance_id, n.instance_type, n.availability_zone, n.ami_id
        ));
    }
    s
}

/// `tap runs diff A B`: a line per field that differs, by section.
pub fn diff(a: &Run, b: &Run, differences: &[tap_core::diff::Difference]) -> String {
    if differences.is_empty() {
        return format!(
            "{} and {} do not differ in parameters, code, environment, tags or final metrics\n",
            a.label(),
            b.label()
        );
    }
    let width = differences.iter().map(|d| d.field.chars().count()).max().unwrap_or(0).max(5);
    let col = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let wa = differences.iter().map(|d| col(&d.a).chars().count()).max().unwrap_or(0).max(a.label().chars().count());
    let mut s = format!("{:<12} {:<width$} {:<wa$} {}\n", "", "", a.label(), b.label());
    for d in differences {
        s.push_str(&format!("{:<12} {:<width$} {:<wa$} {}\n", d.section.as_str(), d.field, col(&d.a), col(&d.b)));
    }
    s
}

/// A metric as tables show it: 4 significant digits, without noise (`0.05`, `1.235e-5`).
pub fn number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" { "0".into() } else { s.to_owned() }
    }
}

pub fn run_details(run: &Run, points: &[MetricPoint]) -> String {
    let mut s = format!(
        "run:         {}{}\nexperiment:  {}\nstatus:      {}\ncommand:     {}\nhost:        {}{}\nstarted:     {}\nduration:    {}\n",
        run.run_id,
        run.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
        run.experiment_id,
        run.status.as_str(),
        run.command.join(" "),
        run.host,
        run.instance_id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default(),
        rfc3339(run.started_ms),
        duration(run),
    );
    if let Some(p) = &run.provenance {
        s.push_str(&provenance(p));
    }
    if !run.tags.is_empty() {
        let tags: Vec<String> = run.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!("tags:        {}\n", tags.join(" ")));
    }
    if let Some(n) = &run.note {
        s.push_str(&format!("note:        {}\n", n.replace('\n', "\n             ")));
    }
    if let Some(c) = run.exit_code {
        s.push_str(&format!("exit code:   {c}\n"));
    }
    if let Some(sig) = run.signal {
        s.push_str(&format!("signal:      {sig}\n"));
    }
    match (&run.resumed_from, &run.parent_checkpoint) {
        (Some(r), Some(c)) => s.push_str(&format!("parent:      run {r}, checkpoint {c} (--resume-from)\n")),
        // A record of an earlier release, whose `--resume` made a new record: this one is an
        // attempt of that training.
        (Some(r), None) => s.push_str(&format!("resumed from run {r} (an attempt of its training)\n")),
        _ => {}
    }
    if !run.legacy_records.is_empty() {
        s.push_str(&format!(
            "records:     {} (an earlier release's --resume chain: one training)\n",
            run.legacy_records.join(", ")
        ));
    }
    s.push_str(&attempts_table(run));
    s.push_str(&job_and_end(run));
    s.push_str(&format!("checkpoint:  {}\n", run.checkpoint.as_deref().unwrap_or("-")));
    for e in &run.checkpoint_left_out {
        s.push_str(&format!("left out:    {} ({})\n", e.path, e.why));
    }
    if !run.hparams.is_empty() {
        s.push_str("hyperparameters:\n");
        for (k, h) in &run.hparams {
            let from = match h.source {
                tap_core::runs::ParamSource::Default => format!("default, version {}", h.version),
                tap_core::runs::ParamSource::Override => "override".to_owned(),
            };
            s.push_str(&format!("  {k:<24} {} ({from})\n", h.value));
        }
    }
    let mut series: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for p in points {
        series.entry(&p.name).or_default().push(p.value);
    }
    if !series.is_empty() {
        s.push_str("metrics:\n");
        for (name, values) in series {
            let last = values.last().copied().unwrap_or(f64::NAN);
            s.push_str(&format!("  {name:<24} {last:>12.6}  {}  ({} points)\n", sparkline(&values, 40), values.len()));
        }
    }
    s
}

/// A sharded job's final checkpoint of each attempt that got a notice, and the planner's
/// forecast for its newest attempt (the slowest rank's shard), from its node runs (`nodes`:
/// any runs; those of group `group` are read).
pub fn sharded_job(group: &str, nodes: &[Run]) -> String {
    let mut s = String::new();
    let mut latest = None;
    for (attempt, ranks) in attempts_of(group, nodes) {
        if let Some(j) = tap_core::shards::job_final(&ranks) {
            for (k, l) in j.lines().iter().enumerate() {
                let head =
                    if k == 0 { format!("final ckpt:  attempt {attempt}: ") } else { "             ".to_owned() };
                s.push_str(&format!("{head}{l}\n"));
            }
        }
        latest = Some(ranks);
    }
    if let Some((rank, f)) = latest.as_deref().and_then(tap_core::shards::job_forecast) {
        s.push_str(&format!("planner:     the job's {} (rank {rank}, its slowest shard)\n", f.line()));
        if let Some(w) = f.warning() {
            s.push_str(&format!("             warning: {w}\n"));
        }
    }
    s
}

/// The node runs of `group`, by attempt (oldest first), as the job summaries read them.
pub fn attempts_of<'a>(group: &str, nodes: &'a [Run]) -> Vec<(u32, Vec<tap_core::shards::RankEnd<'a>>)> {
    let mut by: std::collections::BTreeMap<u32, Vec<tap_core::shards::RankEnd<'a>>> = Default::default();
    for r in nodes.iter().filter(|r| r.group.as_deref() == Some(group)) {
        let (Some(attempt), Some(rank)) = (r.job_attempt, r.node_rank) else { continue };
        by.entry(attempt).or_default().push(tap_core::shards::RankEnd {
            rank,
            interruption: r.interruption.as_ref(),
            last_shard: r.last_shard,
            forecast: r.forecast.as_ref(),
        });
    }
    by.into_iter().collect()
}

/// A run's part in a managed job, its nodes (a job's record), how it was interrupted, the
/// planner's forecast and whether it was lost.
fn job_and_end(run: &Run) -> String {
    let mut s = String::new();
    if let Some(g) = &run.group {
        let rank = run.node_rank.map(|r| format!(" (node rank {r})")).unwrap_or_default();
        s.push_str(&format!("job:         {g}{rank}\n"));
    }
    if let Some(j) = &run.job {
        s.push_str(&format!("nodes:       {} on {}, attempt {}\n", j.nodes.len(), j.fleet_id, j.attempt));
        for n in &j.nodes {
            s.push_str(&format!(
                "  rank {:<3} {:<20} {:<10} run {}\n",
                n.rank,
                n.instance_id,
                n.status.as_str(),
                n.run_id.as_deref().unwrap_or("(not started)")
            ));
        }
    }
    if let Some(i) = &run.interruption {
        s.push_str(&format!("interrupted: {} ({})\n", i.kind, i.reason));
        if let Some(v) = &i.verdict {
            s.push_str(&format!("final ckpt:  {}\n", v.line()));
        }
    }
    if let Some(f) = &run.forecast {
        s.push_str(&format!("planner:     {}\n", f.line()));
        if let Some(w) = f.warning() {
            s.push_str(&format!("             warning: {w}\n"));
        }
    }
    if run.status == tap_core::runs::RunStatus::Lost {
        let seen = run.heartbeat_ms.map(tap_core::time::rfc3339).unwrap_or_else(|| "-".into());
        s.push_str(&format!("lost:        its tap run stopped without recording an end (last heartbeat {seen})\n"));
    }
    s
}

/// A run's attempts, one line each: number, host, start, how long, how it ended, and the
/// checkpoint it restored (with the steps it computed again).
pub fn attempts_table(run: &Run) -> String {
    let mut s = format!("attempts:    {}\n", run.attempt());
    for a in run.all_attempts(run.status) {
        let took = a.ended_ms.map_or_else(|| "-".to_owned(), |e| span(e - a.started_ms));
        let restored = match (&a.restored, a.restored_step) {
            (Some(c), Some(step)) => format!("restored {c} (step {step})"),
            (Some(c), None) => format!("restored {c}"),
            (None, _) => "fresh start".to_owned(),
        };
        let again =
            if a.recomputed_steps > 0 { format!(", {} steps again", a.recomputed_steps) } else { String::new() };
        let why = a.interruption.as_ref().map(|i| format!(" ({}: {})", i.kind, i.reason)).unwrap_or_default();
        s.push_str(&format!(
            "  #{:<3} {:<20} {:<22} {:>9} {:<12} {restored}{again}{why}\n",
            a.number,
            a.instance_id.as_deref().unwrap_or(&a.host),
            rfc3339(a.started_ms),
            took,
            a.status.as_str(),
        ));
    }
    s
}

pub fn compare(runs: &[Run]) -> String {
    let hp: BTreeSet<&str> = runs.iter().flat_map(|r| r.hparams.keys().map(String::as_str)).collect();
    let mt: BTreeSet<&str> = runs.iter().flat_map(|r| r.final_metrics.keys().map(String::as_str)).collect();
    let mut s = format!("{:<24}", "");
    for r in runs {
        s.push_str(&format!(" {:>26}", r.label()));
    }
    s.push('\n');
    let mut row = |label: String, cell: &dyn Fn(&Run) -> String| {
        s.push_str(&format!("{label:<24}"));
        for r in runs {
            s.push_str(&format!(" {:>26}", cell(r)));
        }
        s.push('\n');
    };
    row("status".into(), &|r| r.status.as_str().to_owned());
    for k in hp {
        row(format!("hp {k}"), &|r| r.hparams.get(k).map_or("-".to_owned(), |h| h.value.clone()));
    }
    for k in mt {
        row(k.to_owned(), &|r| r.final_metrics.get(k).map_or("-".to_owned(), |v| format!("{v:.6}")));
    }
    s
}

fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s % 3600 / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// One line about where a job is: why it waits, or how it ended.
fn job_note(j: &tap_core::jobs::JobRecord) -> String {
    if let Some(o) = &j.outcome {
        return o.clone();
    }
    if j.cancel_requested_ms.is_some() {
        return "cancel requested".into();
    }
    j.waiting.clone().unwrap_or_default()
}

/// `tap jobs list`.
pub fn jobs_table(jobs: &[tap_core::jobs::JobRecord]) -> String {
    let mut s = format!(
        "{:<26} {:<16} {:<10} {:>5} {:>7} {:>8} {:<22} {}\n",
        "JOB", "EXPERIMENT", "STATE", "NODES", "ATTEMPT", "RESTARTS", "SUBMITTED", "NOTE"
    );
    for j in jobs {
        s.push_str(&format!(
            "{:<26} {:<16} {:<10} {:>5} {:>7} {:>8} {:<22} {}\n",
            j.id,
            j.spec.experiment,
            j.state.as_str(),
            j.spec.nodes,
            j.current().map_or(0, |a| a.number),
            format!("{}/{}", j.restarts_used, j.spec.restarts),
            rfc3339(j.submitted_ms),
            job_note(j)
        ));
    }
    s
}

/// `tap jobs show`: the job's story, attempt by attempt.
/// Where a job's attempts ran, in one line.
fn placement(j: &tap_core::jobs::JobRecord) -> String {
    let allowed = if j.spec.allow_cross_az { "; --allow-cross-az" } else { "" };
    if j.attempts.is_empty() {
        return if j.spec.nodes > 1 && !j.spec.allow_cross_az {
            "one AZ (every rank in one Availability Zone)".into()
        } else {
            format!("not placed yet{allowed}")
        };
    }
    let crossed: Vec<String> =
        j.attempts.iter().filter(|a| a.cross_az).map(|a| format!("#{} {}", a.number, a.zones().join("+"))).collect();
    if crossed.is_empty() {
        let mut zones: Vec<&str> = j.attempts.iter().flat_map(|a| a.zones()).collect();
        zones.dedup();
        format!("one AZ per attempt ({}){allowed}", zones.join(", then "))
    } else {
        format!("crossed AZs: {} (--allow-cross-az)", crossed.join("; "))
    }
}

/// Bytes in gigabytes (10^9, as AWS bills them).
fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / tap_core::jobs::GB)
}

pub fn job_story(j: &tap_core::jobs::JobRecord, now_ms: i64) -> String {
    let mut s = format!("job:         {} ({})\n", j.id, j.state.as_str());
    s.push_str(&format!("experiment:  {}\n", j.spec.experiment));
    s.push_str(&format!("command:     {}\n", j.spec.command.join(" ")));
    s.push_str(&format!(
        "nodes:       {} (as {}, rendezvous port {})\n",
        j.spec.nodes, j.spec.user, j.spec.master_port
    ));
    s.push_str(&format!("submitted:   {} by {}\n", rfc3339(j.submitted_ms), j.submitted_by));
    s.push_str(&format!(
        "restarts:    {} of {} used (reclaims, lost nodes, GPU faults); error retries {} of {}\n",
        j.restarts_used, j.spec.restarts, j.error_retries_used, j.spec.retry_on_error
    ));
    s.push_str(&format!("placement:   {}\n", placement(j)));
    let net = j.network();
    if net.measured_attempts > 0 {
        s.push_str(&format!(
            "network:     {} out, {} in; cross-AZ {} (${:.2} at ${}/GB each way)\n",
            gb(net.bytes_out),
            gb(net.bytes_in),
            gb(net.cross_az_bytes),
            net.cross_az_usd,
            tap_core::jobs::CROSS_AZ_USD_PER_GB_EACH_WAY
        ));
    } else if !j.attempts.is_empty() {
        s.push_str("network:     not read yet (tap-agent's NetworkBytesIn/Out of its nodes)\n");
    }
    if let Some(w) = j.waiting.as_ref().filter(|_| !j.state.is_final()) {
        s.push_str(&format!("waiting:     {w}\n"));
    }
    if j.cancel_requested_ms.is_some() && !j.state.is_final() {
        s.push_str("cancel:      requested; the fleet's controller stops its ranks\n");
    }
    if let Some(o) = &j.outcome {
        s.push_str(&format!("outcome:     {o}\n"));
    }
    if j.attempts.is_empty() {
        s.push_str("attempts:    none yet\n");
        return s;
    }
    s.push_str("attempts:\n");
    let downtimes = j.downtimes_ms();
    for (k, a) in j.attempts.iter().enumerate() {
        if k > 0 {
            s.push_str(&format!("    downtime {}\n", span(downtimes[k - 1])));
        }
        let end = match a.ended_ms {
            Some(e) => format!("{} ({})", rfc3339(e), span(e - a.started_ms)),
            None => format!("running ({})", span(now_ms - a.started_ms)),
        };
        let why = a.end.as_ref().map(|e| format!("  {}", e.describe())).unwrap_or_default();
        s.push_str(&format!("  #{:<3} {} -> {end}{why}\n", a.number, rfc3339(a.started_ms)));
        let from = a.resumed_from.as_deref().unwrap_or("nothing (fresh start)");
        s.push_str(&format!("       resumed from {from}; launched by {}\n", a.launched_by));
        let zones = a.zones().join(", ");
        let net = match (&a.traffic, a.cross_az_bytes()) {
            (Some(t), Some(cross)) => format!(
                "; network {} out, {} in, cross-AZ {} (${:.2})",
                gb(t.iter().map(|r| r.bytes_out).sum()),
                gb(t.iter().map(|r| r.bytes_in).sum()),
                gb(cross),
                tap_core::jobs::cross_az_usd(cross)
            ),
            _ => String::new(),
        };
        let crossed = if a.cross_az { " (crosses AZs: --allow-cross-az)" } else { "" };
        s.push_str(&format!("       in {zones}{crossed}{net}\n"));
        for n in &a.nodes {
            s.push_str(&format!(
                "       rank {:<3} {:<20} {:<14} {:<12} {}\n",
                n.rank,
                n.instance_id,
                n.instance_type.as_deref().unwrap_or("-"),
                n.availability_zone.as_deref().unwrap_or("-"),
                n.command_id.as_deref().map_or("(command not sent)".to_owned(), |c| format!("command {c}"))
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_story_names_each_attempt_its_nodes_why_it_ended_and_the_downtime() {
        use tap_core::fleet::NodeInfo;
        use tap_core::jobs::{self, AttemptEnd, JobRecord, JobSpec};
        let node = |id: &str, az: &str| NodeInfo {
            instance_id: id.into(),
            instance_type: Some("p3.2xlarge".into()),
            availability_zone: Some(az.into()),
            private_ip: Some("10.0.0.1".into()),
            state: "running".into(),
            launch_time_ms: Some(0),
            heartbeat_age_s: Some(10),
            unhealthy: Some(false),
            interrupting: None,
        };
        let spec = JobSpec {
            experiment: "llm".into(),
            command: vec!["python3".into(), "train.py".into()],
            nodes: 2,
            user: "ubuntu".into(),
            env: BTreeMap::new(),
            master_port: 29500,
            restarts: 3,
            retry_on_error: 0,
            timeout_s: 3600,
            resume: false,
            wait_s: jobs::DEFAULT_WAIT_S,
            allow_cross_az: true,
            tags: BTreeMap::new(),
        };
        let mut j = JobRecord::new("job-1", spec, "me@laptop", 0);
        let waiting = jobs_table(std::slice::from_ref(&j));
        assert!(waiting.starts_with("JOB ") && waiting.contains("job-1") && waiting.contains("queued"), "{waiting}");
        assert!(job_story(&j, 0).ends_with("attempts:    none yet\n"));
        let (a, b, c) = (node("i-a", "us-east-1a"), node("i-b", "us-east-1b"), node("i-c", "us-east-1c"));
        jobs::begin_attempt(&mut j, &[a.clone(), b], None, "i-a#1", 60_000);
        jobs::commands_sent(&mut j, &[("i-a".into(), "cmd-a".into()), ("i-b".into(), "cmd-b".into())], 61_000);
        jobs::end_attempt(&mut j, AttemptEnd::SpotReclaim { rank: 1, instance_id: "i-b".into() }, 3_660_000);
        j.attempts[0].traffic = Some(vec![
            jobs::RankTraffic { rank: 0, bytes_in: 40_000_000_000, bytes_out: 50_000_000_000 },
            jobs::RankTraffic { rank: 1, bytes_in: 50_000_000_000, bytes_out: 40_000_000_000 },
        ]);
        jobs::begin_attempt(&mut j, &[a, c], Some("ckpt-7".into()), "i-a#1", 3_681_000);
        let story = job_story(&j, 3_721_000);
        for want in [
            "job:         job-1 (starting)\n",
            "restarts:    1 of 3 used (reclaims, lost nodes, GPU faults); error retries 0 of 0\n",
            "  #1   1970-01-01T00:01:00Z -> 1970-01-01T01:01:00Z (1h00m)  spot reclaim of rank 1's node i-b\n",
            "       rank 1   i-b                  p3.2xlarge     us-east-1b   command cmd-b\n",
            "    downtime 0m21s\n",
            "  #2   1970-01-01T01:01:21Z -> running (0m40s)\n",
            "       resumed from ckpt-7; launched by i-a#1\n",
            "placement:   crossed AZs: #1 us-east-1a+us-east-1b; #2 us-east-1a+us-east-1c (--allow-cross-az)\n",
            "network:     90.00 GB out, 90.00 GB in; cross-AZ 90.00 GB ($1.80 at $0.01/GB each way)\n",
            "       in us-east-1a, us-east-1b (crosses AZs: --allow-cross-az); network 90.00 GB out, 90.00 GB in, cross-AZ 90.00 GB ($1.80)\n",
            "       rank 1   i-c                  p3.2xlarge     us-east-1c   (command not sent)\n",
        ] {
            assert!(story.contains(want), "{want:?} in\n{story}");
        }
    }

    #[test]
    fn sparkline_shape() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[5.0; 4], 10), "▄▄▄▄");
        assert_eq!(sparkline(&(0..1000).map(f64::from).collect::<Vec<_>>(), 20).chars().count(), 20);
        assert_eq!(sparkline(&[], 10), "");
    }
}
