//! Text rendering of goodput (`tap goodput`, `runs show`'s lines, `tap goodput simulate`)
//! and of pools (`tap fleet pools`).

use tap_core::time::rfc3339;

use super::span;

/// Seconds for the goodput report: `0.42 s`, `12.3 s`, `4m05s`, `2h10m`.
fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        span((s * 1000.0) as i64)
    }
}

/// The goodput's badput lines (one per cause, the recovery split), for one run or a sum.
fn badput_lines(g: &tap_core::goodput::Goodput) -> String {
    let b = &g.badput;
    let r = &b.infrastructure_recovery;
    let line = |name: &str, sh: tap_core::goodput::Share, more: String| {
        format!("  {name:<26} {:>9} {:>6.1}%{more}\n", secs(sh.s), sh.pct)
    };
    let mut s = String::new();
    s.push_str(&line("productive", tap_core::goodput::Share { s: g.productive_s, pct: g.goodput_pct }, String::new()));
    s.push_str(&line("program start-up", b.program_startup, String::new()));
    s.push_str(&line("checkpoint save", b.checkpoint_save, format!("  ({} checkpoints)", g.checkpoints)));
    s.push_str(&line("checkpoint restore", b.checkpoint_restore, String::new()));
    s.push_str(&line("wasted progress", b.wasted_progress, format!("  ({} steps re-run)", g.wasted_steps)));
    s.push_str(&line(
        "infrastructure recovery",
        r.total,
        format!(
            "  (stopping {}, waiting for capacity {}, boot and launch {})",
            secs(r.stopping.s),
            secs(r.waiting_for_capacity.s),
            secs(r.boot_launch.s)
        ),
    ));
    s.push_str(&line("idle and other", b.idle_other, String::new()));
    s
}

/// `tap goodput RUN`: the attempts, the goodput and its badput by cause, the cadence.
pub fn goodput(r: &crate::commands::goodput::RunGoodput) -> String {
    let g = &r.goodput;
    let mut s = format!(
        "run {}/{}{} {}: goodput {:.1}% of {} ({:.2} node-hours)\n",
        r.experiment,
        r.run_id,
        r.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
        r.status.as_str(),
        g.goodput_pct,
        secs(g.total_s),
        g.node_hours
    );
    s.push_str(&format!(
        "steps: {} kept of {} computed; ideal step {}\n",
        g.steps_kept,
        g.steps_computed,
        g.ideal_step_s.map_or_else(
            || "-".to_owned(),
            |v| format!("{v:.3} s (median; slower than median + 3 MAD is not a plain step)")
        )
    ));
    s.push_str("attempts:\n");
    for a in &g.attempts {
        let node = match &a.node {
            Some(n) => format!(
                "{} {} {}{}",
                n.instance_id,
                n.instance_type,
                n.availability_zone,
                n.lifecycle.map(|l| format!(" {}", l.as_str())).unwrap_or_default()
            ),
            None => a.instance_id.clone().unwrap_or_else(|| a.host.clone()),
        };
        let steps = match (a.first_step, a.last_step) {
            (Some(f), Some(l)) => format!("steps {f}-{l}"),
            _ => "no steps".to_owned(),
        };
        let wasted = if a.wasted_steps > 0 { format!(", {} re-run later", a.wasted_steps) } else { String::new() };
        s.push_str(&format!(
            "  #{:<3} {:<40} {} {:>8} {:<11} {steps}{wasted}\n",
            a.number,
            node,
            rfc3339(a.started_ms),
            span(a.ended_ms - a.started_ms),
            a.status.as_str(),
        ));
        if let Some(why) = &a.why {
            s.push_str(&format!(
                "       ended by {why}{}\n",
                a.verdict.as_ref().map(|v| format!("; {v}")).unwrap_or_default()
            ));
        }
    }
    s.push_str("time:\n");
    s.push_str(&badput_lines(g));
    s.push_str(&cadence_line(&r.cadence, &r.pool));
    if let Some(d) = &r.dollars {
        s.push_str(&dollars_line(d));
    }
    s
}

/// The dollars line: paid, on demand, the naive and the effective saving.
pub fn dollars_line(d: &tap_core::prices::Dollars) -> String {
    format!(
        "dollars: paid ${:.2}; the same node-hours on demand ${:.2} (naive saving {:.1}%); the same work on demand ${:.2} (effective saving {:.1}%){}\n",
        d.paid_usd,
        d.on_demand_usd,
        d.naive_saving_pct,
        d.work_on_demand_usd,
        d.effective_saving_pct,
        if d.unpriced_node_hours > 0.0 {
            format!("; {:.2} node-hours without a price left out", d.unpriced_node_hours)
        } else {
            String::new()
        }
    )
}

/// The cadence line: the interval, or what it still needs.
fn cadence_line(c: &tap_core::goodput::Cadence, pool: &tap_core::pools::Pool) -> String {
    let m = if c.mtbi_assumed {
        format!("{} assumed: no disruption in {} on record", secs(c.mtbi_s), pool.label())
    } else {
        format!("{} in {}", secs(c.mtbi_s), pool.label())
    };
    match c.interval_s {
        Some(t) => format!(
            "checkpoint every {} (Young/Daly: checkpoint {}, restart {}, mean time between disruptions {m})\n",
            secs(t),
            c.checkpoint_s.map_or_else(|| "-".to_owned(), secs),
            c.restart_s.map_or_else(|| "0 s (no disruption yet)".to_owned(), secs),
        ),
        None => format!(
            "checkpoint interval: first one after {} (no periodic checkpoint with a measured write time yet)\n",
            secs(c.handed_s())
        ),
    }
}

/// `tap goodput -e EXP`: a line per run, the sum and its badput.
pub fn goodput_experiment(
    experiment: &str,
    reports: &[crate::commands::goodput::RunGoodput],
    sum: &tap_core::goodput::Goodput,
) -> String {
    let mut s = format!(
        "{:<32} {:<11} {:>8} {:>8} {:>6} {:>9} {:>10}\n",
        "RUN", "STATUS", "ATTEMPTS", "GOODPUT", "RE-RUN", "TOTAL", "CKPT EVERY"
    );
    for r in reports {
        let g = &r.goodput;
        s.push_str(&format!(
            "{:<32} {:<11} {:>8} {:>7.1}% {:>6} {:>9} {:>10}\n",
            r.name.as_deref().unwrap_or(&r.run_id),
            r.status.as_str(),
            g.attempts.len(),
            g.goodput_pct,
            g.wasted_steps,
            secs(g.total_s),
            r.cadence.interval_s.map_or_else(|| "-".to_owned(), secs)
        ));
    }
    s.push_str(&format!(
        "experiment {experiment}: {} runs, goodput {:.1}% of {} ({:.2} node-hours); {} steps kept of {} computed\n",
        reports.len(),
        sum.goodput_pct,
        secs(sum.total_s),
        sum.node_hours,
        sum.steps_kept,
        sum.steps_computed
    ));
    s.push_str(&badput_lines(sum));
    s
}

/// The goodput so far in `tap runs show` and `tap jobs show`: two lines.
pub fn goodput_brief(r: &crate::commands::goodput::RunGoodput) -> String {
    let g = &r.goodput;
    let b = &g.badput;
    format!(
        "goodput:     {:.1}% of {} (start-up {:.1}%, checkpoints {:.1}%, re-run {:.1}% [{} steps], recovery {:.1}%, other {:.1}%; `tap goodput {}`)\n{}",
        g.goodput_pct,
        secs(g.total_s),
        b.program_startup.pct,
        b.checkpoint_save.pct + b.checkpoint_restore.pct,
        b.wasted_progress.pct,
        g.wasted_steps,
        b.infrastructure_recovery.total.pct,
        b.idle_other.pct,
        r.run_id,
        cadence_line(&r.cadence, &r.pool).replacen("checkpoint ", "cadence:     checkpoint ", 1)
    )
}

/// `tap fleet pools`: a row per pool, then the advice.
#[cfg(feature = "fleet")]
pub fn pools(v: &crate::commands::pools::PoolsView) -> String {
    if v.pools.is_empty() {
        return format!("no runs in the last {} days: no pool history yet\n", v.days);
    }
    let mut s = format!(
        "{:<34} {:<10} {:>8} {:>10} {:>13} {:>9} {:>10} {:>11}\n",
        "POOL", "BOUGHT", "ATTEMPTS", "NODE-H", "INTERRUPTIONS", "/100 N-H", "MTBI", "LOST WORK"
    );
    for p in &v.pools {
        let bought: Vec<&str> = p.lifecycles.iter().map(|l| l.as_str()).collect();
        s.push_str(&format!(
            "{:<34} {:<10} {:>8} {:>10.2} {:>13} {:>9.2} {:>10} {:>11}\n",
            p.pool.label(),
            if bought.is_empty() { "-".to_owned() } else { bought.join("+") },
            p.attempts,
            p.node_hours,
            p.interruptions,
            p.interruptions_per_100_node_hours,
            p.mtbi_hours.map_or_else(|| "-".to_owned(), |h| secs(h * 3600.0)),
            format!("{} of {}", p.losses, p.disruptions),
        ));
    }
    s.push_str(&format!(
        "(last {} days; MTBI: node-hours per spot interruption; LOST WORK: disruptions of any kind that lost work, whose rate is the checkpoint interval's M)\n",
        v.days
    ));
    match &v.tfvars {
        Some(lines) => {
            s.push_str(
                "advice (fewest spot interruptions per node-hour first; pools under 1 node-hour last), for the stack's tfvars:\n",
            );
            s.push_str(lines);
        }
        None => s.push_str("no EC2 pool on record: no advice for the stack\n"),
    }
    s
}

/// `tap goodput simulate`: the trace, the job, the replay at the interval that matters most
/// (asked, else Young/Daly's, else the best), and the sweep.
pub fn simulation(s: &crate::commands::simulate::Simulation) -> String {
    let t = &s.trace;
    let p = &s.params;
    let mut o = format!(
        "trace {}: {} events over {:.1} h, up to {} nodes, {} removals; a node's mean time between removals {}\n",
        t.file,
        t.events,
        t.hours,
        t.nodes_max,
        t.removals,
        t.node_mtbi_s.map_or_else(|| "- (no removal)".to_owned(), secs)
    );
    o.push_str(&format!(
        "job: {} nodes, step {}, checkpoint {}, restore {}, boot {}, notices honoured {:.0}%{}\n",
        p.nodes,
        secs(p.step_ms as f64 / 1000.0),
        secs(p.checkpoint_ms as f64 / 1000.0),
        secs(p.restore_ms as f64 / 1000.0),
        secs(p.boot_ms as f64 / 1000.0),
        100.0 * p.notice_honoured,
        p.total_steps.map(|n| format!(", {n} steps")).unwrap_or_default()
    ));
    let (label, r) = match (&s.asked, &s.young_daly) {
        (Some(r), _) => ("--interval", r),
        (None, Some(r)) => ("Young/Daly", r),
        (None, None) => ("the sweep's best", &s.best),
    };
    let g = &r.goodput;
    if g.attempts.is_empty() {
        o.push_str(&format!(
            "the job never started: the trace never had {} healthy nodes at once (boot {} after each add)\n",
            p.nodes,
            secs(p.boot_ms as f64 / 1000.0)
        ));
        return o;
    }
    o.push_str(&format!(
        "checkpoint every {} ({label}): goodput {:.1}% of {} over {} attempts ({} reclaims hit the job){}\n",
        secs(r.interval_s),
        g.goodput_pct,
        secs(g.total_s),
        g.attempts.len(),
        r.reclaims_hit,
        r.finished_ms.map(|f| format!("; finished after {}", secs(f as f64 / 1000.0))).unwrap_or_default()
    ));
    o.push_str(&badput_lines(g));
    if let Some(d) = &s.dollars {
        o.push_str(&dollars_line(d));
    }
    o.push_str(&format!(
        "best interval found: {} (goodput {:.1}%); swept {} intervals from {} to {}\n",
        secs(s.best.interval_s),
        s.best.goodput.goodput_pct,
        s.sweep.len(),
        s.sweep.first().map_or_else(|| "-".to_owned(), |x| secs(x.interval_s)),
        s.sweep.last().map_or_else(|| "-".to_owned(), |x| secs(x.interval_s)),
    ));
    o
}
