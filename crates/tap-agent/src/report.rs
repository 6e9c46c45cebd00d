//! What the agent prints for a person: `run --once` (every field of every GPU) and
//! `--check-config` (what the configuration means).

use std::fmt::Write as _;
use std::time::Instant;

use tap_core::agent_config::AgentConfig;

use crate::gpu::GpuReader;

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} {unit}"))
}

/// `run --once`: every field of every GPU, and how long the read took.
pub fn once(reader: &mut dyn GpuReader) -> anyhow::Result<String> {
    let start = Instant::now();
    let readings = reader.read()?;
    let took = start.elapsed();
    let mut s =
        format!("reader: {}\ngpus: {}\nread time: {:.3} ms\n", reader.kind(), readings.len(), took.as_secs_f64() * 1e3);
    for r in &readings {
        let g = &r.gpu;
        let x = &r.sample;
        let _ = writeln!(
            s,
            "\nGPU {} {} ({}, {})",
            g.index,
            g.uuid,
            g.name.as_deref().unwrap_or("unknown model"),
            g.pci_bus_id.as_deref().unwrap_or("no PCI id")
        );
        let rows: [(&str, String); 12] = [
            ("utilization", fmt_opt(x.utilization_pct, "%")),
            ("memory used", fmt_opt(x.memory_used_mib, "MiB")),
            ("memory total", fmt_opt(x.memory_total_mib, "MiB")),
            ("memory utilization", fmt_opt(x.memory_utilization_pct(), "%")),
            ("temperature", fmt_opt(x.temperature_c, "C")),
            ("power draw", fmt_opt(x.power_draw_w, "W")),
            ("power limit", fmt_opt(x.power_limit_w, "W")),
            ("SM clock", fmt_opt(x.sm_clock_mhz, "MHz")),
            (
                "throttle reasons",
                x.throttle_reasons
                    .map_or("n/a".into(), |r| format!("{r:#x} (costly: {})", x.throttled().unwrap_or(false))),
            ),
            (
                "ECC corrected / uncorrected",
                format!(
                    "{} / {}",
                    x.ecc_corrected.map_or("n/a".into(), |v| v.to_string()),
                    x.ecc_uncorrected.map_or("n/a".into(), |v| v.to_string())
                ),
            ),
            ("retired pages", x.retired_pages.map_or("n/a".into(), |v| v.to_string())),
            ("retirement pending", x.retirement_pending.map_or("n/a".into(), |v| v.to_string())),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<28} {v}");
        }
    }
    Ok(s)
}

/// One line per setting, as `--check-config` prints them.
pub fn describe(config: &AgentConfig) -> String {
    let m = &config.metrics;
    let region = config.aws.region.as_deref().unwrap_or("(from AWS_REGION or instance metadata)");
    let group = config.logs.group.as_deref().unwrap_or("(none)");
    let i = &config.idle;
    let idle = if i.scale_to_zero {
        format!(
            "scaled to 0 once every GPU stayed below {}% for {} min (checked every {} s, fleet {})",
            i.below_percent,
            i.minutes,
            i.check_seconds,
            i.fleet_id.as_deref().unwrap_or("of this instance")
        )
    } else {
        "left alone ([idle] scale_to_zero = false)".to_owned()
    };
    let j = &config.jobs;
    let jobs = if j.controller {
        format!(
            "contends for the lease in {} (fleet {}); the holder runs the fleet's managed jobs",
            j.table.as_deref().unwrap_or("?"),
            j.fleet_id.as_deref().unwrap_or("of this instance")
        )
    } else {
        "off ([jobs] controller = false)".to_owned()
    };
    format!(
        "region:           {region}\n\
         namespace:        {}\n\
         environment:      {}\n\
         sample interval:  {} s\n\
         publish interval: {} s\n\
         resolution:       {}\n\
         log group:        {group}\n\
         spool:            {} (at most {} MiB)\n\
         idle fleet:       {idle}\n\
         job controller:   {jobs}",
        m.namespace,
        m.environment,
        m.sample_interval_seconds,
        m.publish_interval_seconds,
        if m.high_resolution { "1 s (high)" } else { "60 s (standard)" },
        config.spool.dir.display(),
        config.spool.max_bytes / (1024 * 1024),
    )
}
