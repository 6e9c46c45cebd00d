//! `tap goodput simulate`: a preemption trace replayed against the job controller's decisions
//! (tap_core::simulate) at the Young/Daly interval, a sweep of intervals, and `--interval`.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;
use tap_core::simulate::{self, Params, Replay, TraceEvent};

use crate::cli::{Output, SimulateArgs};
use crate::commands::json;

/// What the trace holds, in brief.
#[derive(Debug, Serialize)]
pub struct TraceSummary {
    pub file: String,
    pub events: usize,
    pub hours: f64,
    pub nodes_max: usize,
    pub removals: usize,
    /// A node's mean time between removals (node-hours per removal), the M of Young/Daly
    /// per node; the job's is this over its node count.
    pub node_mtbi_s: Option<f64>,
}

/// The simulation's result.
#[derive(Debug, Serialize)]
pub struct Simulation {
    pub trace: TraceSummary,
    pub params: Params,
    /// The job's M: a node's time between removals over the job's node count, and over the
    /// share of notices not honoured (an honoured one loses no work); None: nothing is lost.
    pub job_mtbi_s: Option<f64>,
    /// The replay at Young/Daly's interval (δ, R = restore + boot, the job's M).
    pub young_daly: Option<Replay>,
    /// The replay at `--interval`.
    pub asked: Option<Replay>,
    /// The sweep's best replay.
    pub best: Replay,
    pub sweep: Vec<SweepPoint>,
    /// The shown replay's dollars (`--instance-type`, with a spot price in `--prices`).
    pub dollars: Option<tap_core::prices::Dollars>,
}

#[derive(Debug, Serialize)]
pub struct SweepPoint {
    pub interval_s: f64,
    pub goodput_pct: f64,
    pub wasted_steps: u64,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn summary(file: &str, trace: &[TraceEvent]) -> TraceSummary {
    let mut live = std::collections::BTreeSet::new();
    let mut most = 0;
    for e in trace {
        if e.add {
            live.insert(e.node.as_str());
        } else {
            live.remove(e.node.as_str());
        }
        most = most.max(live.len());
    }
    let span = trace.last().map_or(0, |e| e.at_ms) - trace.first().map_or(0, |e| e.at_ms);
    TraceSummary {
        file: file.to_owned(),
        events: trace.len(),
        hours: span as f64 / 3_600_000.0,
        nodes_max: most,
        removals: trace.iter().filter(|e| !e.add).count(),
        node_mtbi_s: simulate::trace_mtbi_s(trace),
    }
}

pub fn run(a: &SimulateArgs, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let prices = crate::commands::goodput::load_prices(a.prices.prices.as_deref())?;
    let text = std::fs::read(&a.trace).with_context(|| format!("reading the trace {}", a.trace.display()))?;
    let text =
        String::from_utf8(text).map_err(|e| anyhow::anyhow!("the trace {} is not UTF-8 ({e})", a.trace.display()))?;
    let trace = simulate::parse_trace(&text).map_err(|e| anyhow::anyhow!("the trace {}: {e}", a.trace.display()))?;
    if a.step.is_zero() {
        anyhow::bail!("--step must be longer than 0");
    }
    let base = Params {
        nodes: a.nodes,
        step_ms: ms(a.step),
        checkpoint_ms: ms(a.checkpoint_cost),
        restore_ms: ms(a.restore_cost),
        boot_ms: ms(a.boot),
        launch_ms: ms(a.launch),
        startup_ms: ms(a.startup),
        shutdown_ms: ms(a.shutdown),
        stop_ms: a.stop.map(ms),
        notice_honoured: a.notice_honoured,
        interval_ms: 0,
        total_steps: a.steps,
    };
    let summary = summary(&a.trace.display().to_string(), &trace);
    let lose = 1.0 - a.notice_honoured;
    let job_mtbi_s = summary.node_mtbi_s.filter(|_| lose > 0.0).map(|m| m / f64::from(a.nodes) / lose);
    let yd_ms = job_mtbi_s
        .and_then(|m| {
            tap_core::goodput::checkpoint_interval_s(
                base.checkpoint_ms as f64 / 1000.0,
                m,
                (base.restore_ms + base.boot_ms + base.launch_ms + base.startup_ms) as f64 / 1000.0,
            )
        })
        .map(|t| (t * 1000.0).round() as i64);
    let at = |interval_ms: i64| simulate::replay(&trace, &Params { interval_ms, ..base.clone() });
    let intervals = simulate::sweep_intervals(&base, a.sweep as usize);
    let replays = simulate::sweep(&trace, &base, &intervals);
    let sweep: Vec<SweepPoint> = replays
        .iter()
        .map(|r| SweepPoint {
            interval_s: r.interval_s,
            goodput_pct: r.goodput.goodput_pct,
            wasted_steps: r.goodput.wasted_steps,
        })
        .collect();
    let best = replays
        .into_iter()
        .max_by(|x, y| x.goodput.goodput_pct.total_cmp(&y.goodput.goodput_pct))
        .context("the sweep tried no interval")?;
    let mut sim = Simulation {
        trace: summary,
        params: base.clone(),
        job_mtbi_s,
        young_daly: yd_ms.map(at),
        asked: a.interval.map(|d| at(ms(d))),
        best,
        sweep,
        dollars: None,
    };
    sim.dollars = tap_core::prices::dollars(
        &sim.shown().goodput,
        &prices,
        a.prices.instance_type.as_deref(),
        &std::collections::BTreeMap::new(),
    );
    match output {
        Output::Json => json(out, &sim)?,
        Output::Text => out.write_all(crate::render::simulation(&sim).as_bytes())?,
    }
    Ok(())
}

impl Simulation {
    /// The replay the report shows: `--interval`'s, else Young/Daly's, else the sweep's best.
    pub fn shown(&self) -> &Replay {
        self.asked.as_ref().or(self.young_daly.as_ref()).unwrap_or(&self.best)
    }
}
