//! tap-agent benchmark: prints figures and ratios against the competitors measured in the
//! same run. `cargo bench -p tap-agent --bench agent` (scripts/bench-agent.sh sets up moto).
//!
//! 1. Cost per sample: the in-process reader (+ aggregation) vs forking an `nvidia-smi`-like
//!    process per sample and parsing its CSV (the reference stack's way). On a GPU machine
//!    NVML and the real `nvidia-smi` are measured too.
//! 2. The real agent binary at 1 s sampling with 8 simulated GPUs, publishing to moto: peak
//!    RSS and CPU share (TAP_BENCH_SECONDS, default 60; skipped without TAP_MOTO_SERVER).
//! 3. PutMetricData requests per hour for 8 GPUs at 1 / 10 / 60 s sampling vs one request per
//!    sample and vs batches of 20 datums.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tap_agent::daemon::record_sample;
use tap_agent::gpu::nvml::NvmlReader;
use tap_agent::gpu::sim::SimReader;
use tap_agent::gpu::smi::SmiReader;
use tap_agent::gpu::{GpuReader, GpuReading};
use tap_agent::health::{Health, HealthOptions};
use tap_agent::metrics::{Aggregator, Labels, pack};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median cost of one sample: read every GPU and fold it into the window.
fn per_sample(reader: &mut dyn GpuReader, iterations: usize) -> Duration {
    let mut agg = Aggregator::new();
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        let readings = reader.read().expect("read");
        agg.add_sample(i as i64, &readings);
        times.push(start.elapsed());
        if agg.samples() == 60 {
            std::hint::black_box(agg.finish(0, &labels(), 0, false));
        }
    }
    median(times)
}

fn labels() -> Labels {
    Labels { environment: "bench".into(), instance_id: "i-0bench".into(), availability_zone: "us-east-1a".into() }
}

/// A stand-in `nvidia-smi`: a shell script that prints the CSV of 8 V100s. Real nvidia-smi
/// also talks to the driver (7–14 ms per call on GPU machines), so this ratio is a floor.
fn fake_smi(dir: &std::path::Path) -> String {
    let mut csv = String::new();
    for i in 0..8 {
        csv.push_str(&format!(
            "{i}, GPU-9d4c2b1e-7a3f-4b8e-9c1d-2e3f4a5b6c{i:02}, 00000000:00:{:02X}.0, Tesla V100-SXM2-16GB, 87, 12034, 16384, 61, 243.52, 300.00, 1530, 0x0000000000000000, 0, 0, 0, 0, No\n",
            0x10 + i
        ));
    }
    let path = dir.join("nvidia-smi");
    std::fs::write(&path, format!("#!/bin/sh\ncat <<'CSV'\n{csv}CSV\n")).expect("write fake nvidia-smi");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_string_lossy().into_owned()
}

fn cost_per_sample() {
    println!("== 1. cost per sample (8 GPUs, median) ==");
    let mut sim = SimReader::new(8, vec![]);
    let in_process = per_sample(&mut sim, 20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut smi = SmiReader::open(&fake_smi(dir.path())).expect("fake nvidia-smi runs");
    let forked = per_sample(&mut smi, 300);
    println!("in-process reader (simulated) + aggregation: {:>10.2} µs", in_process.as_secs_f64() * 1e6);
    println!("fork nvidia-smi-like process + parse CSV:    {:>10.2} µs", forked.as_secs_f64() * 1e6);
    println!("ratio: in-process is {:.0}x cheaper (target >= 100x)", forked.as_secs_f64() / in_process.as_secs_f64());
    match NvmlReader::open() {
        Ok(mut nvml) => {
            let t = per_sample(&mut nvml, 2_000);
            println!("NVML reader (real GPUs) + aggregation:      {:>10.2} µs", t.as_secs_f64() * 1e6);
            if let Ok(mut real) = SmiReader::open(tap_agent::gpu::smi::NVIDIA_SMI) {
                let r = per_sample(&mut real, 50);
                println!("real nvidia-smi per sample:                 {:>10.2} µs", r.as_secs_f64() * 1e6);
                println!("ratio: NVML is {:.0}x cheaper than nvidia-smi", r.as_secs_f64() / t.as_secs_f64());
            }
        }
        Err(e) => println!("NVML: not measured here ({e})"),
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of every thread of a process, in seconds, from the scheduler's nanosecond
/// accounting (`/proc/<pid>/task/*/schedstat`; utime/stime have 10 ms ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

fn agent_footprint() {
    println!("\n== 2. agent footprint: 1 s sampling, 8 simulated GPUs, publishing to moto ==");
    let Ok(moto_exe) = std::env::var("TAP_MOTO_SERVER") else {
        println!("skipped: set TAP_MOTO_SERVER (scripts/bench-agent.sh does)");
        return;
    };
    // Ten minutes by default: RSS grew for the first ~7 minutes of a run (issue 14), so a
    // one-minute figure was not the steady state.
    let seconds: u64 = std::env::var("TAP_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let moto = tap_test_support::Moto::start(&moto_exe, tap_test_support::free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    let mut f = std::fs::File::create(&config).expect("config");
    write!(
        f,
        "[aws]\nregion = \"us-east-1\"\ninstance_id = \"i-0bench\"\n[metrics]\nenvironment = \"bench\"\n\
         sample_interval_seconds = 1\npublish_interval_seconds = 60\n[spool]\ndir = \"{}\"\n",
        dir.path().join("spool").display()
    )
    .expect("write config");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_tap-agent"))
        .args(["--config", config.to_str().expect("utf-8"), "run", "--simulate", "8"])
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TAP_AGENT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent");
    let pid = agent.id();
    // Let it start (runtime, SDK client) before measuring the steady state.
    std::thread::sleep(Duration::from_secs(2));
    let (t0, c0) = (Instant::now(), cpu_seconds(pid));
    // RSS once a minute: where it grows, and whether it levels off; split into anonymous
    // pages (heap, thread stacks, allocator arenas) and file pages (the binary's code and
    // data, faulted in as code paths first run).
    let mib = |kib: u64| kib as f64 / 1024.0;
    let (mut curve, mut split) = (Vec::new(), Vec::new());
    let anon0 = proc_field(pid, "status", "RssAnon:").unwrap_or(0);
    let file0 = proc_field(pid, "status", "RssFile:").unwrap_or(0);
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(60).min(Duration::from_secs(seconds).saturating_sub(t0.elapsed())));
        let rss = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
        let anon = proc_field(pid, "status", "RssAnon:").unwrap_or(0);
        let file = proc_field(pid, "status", "RssFile:").unwrap_or(0);
        curve.push(format!("{:.0}s {:.1}", t0.elapsed().as_secs_f64(), mib(rss)));
        split.push(format!("{:.1}+{:.1}", mib(anon), mib(file)));
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds(pid) - c0);
    let peak = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
    let rss = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = agent.wait();
    drop(moto);
    println!("measured over {wall:.0} s (after 2 s of start-up), {} publishes", (wall / 60.0).floor());
    println!("RSS (MiB) by minute: {}", curve.join(", "));
    println!(
        "  of which anonymous + file pages: at start {:.1}+{:.1}, then {}",
        mib(anon0),
        mib(file0),
        split.join(", ")
    );
    println!("peak RSS: {:.1} MiB (now {:.1} MiB; target <= 15 MiB)", mib(peak), mib(rss));
    println!("CPU: {:.1} ms in {wall:.0} s = {:.4} % of one core (target <= 0.1 %)", cpu * 1e3, 100.0 * cpu / wall);
}

fn requests_per_hour() {
    println!("\n== 3. PutMetricData requests per hour, 8 GPUs ==");
    let mut sim = SimReader::new(8, vec![]);
    let readings: Vec<GpuReading> = sim.read().expect("read");
    let readings = Ok(readings);
    println!("tap-agent sends one statistic set per series and minute; publish = how often it sends.");
    println!(
        "series: what one window holds with the defaults (health checks on), counted by the daemon's own record_sample"
    );
    println!(
        "sampling  series  tap-agent publish 60 s  publish 600 s  one-per-sample  batches-of-20  bound ceil(series*3600/(interval*1000))"
    );
    for interval in [1u64, 10, 60] {
        let requests = |publish: u64| {
            // One simulated publish: its windows of at most a minute, packed into requests.
            let window = publish.min(60);
            let mut datums = Vec::new();
            let mut agg = Aggregator::new();
            let mut health = Health::new(HealthOptions::default());
            for w in 0..publish / window {
                for i in 0..(window / interval).max(1) {
                    record_sample(&mut agg, Some(&mut health), ((w * window + i * interval) * 1000) as i64, &readings);
                }
                datums.extend(agg.finish(0, &labels(), 0, false));
            }
            let series = (datums.len() as u64) / (publish / window);
            (series, (3600 / publish) * pack(datums).len() as u64)
        };
        let (series, ours_60) = requests(60);
        let (_, ours_600) = requests(600);
        let samples_per_hour = 3600 / interval;
        let batches_of_20 = samples_per_hour * series.div_ceil(20);
        let bound = (series * 3600).div_ceil(interval * 1000);
        println!(
            "{interval:>6} s  {series:>6}  {ours_60:>22}  {ours_600:>13}  {samples_per_hour:>14}  {batches_of_20:>13}  {bound:>6}"
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    cost_per_sample();
    agent_footprint();
    requests_per_hour();
}
