//! `tap goodput` on the local store (issue 26): a training with a known timeline
//! (fixtures/goodput_job.py), interrupted and resumed; its report checked against what the run
//! itself recorded, and the checkpoint interval handed to the command.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::text;

const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/goodput_job.py");

fn spawn(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tap"));
    c.args(args)
        .env("TAP_HOME", home)
        .env_remove("TAP_OUTPUT")
        .env_remove("TAP_EXPERIMENT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("tap starts")
}

fn tap(home: &Path, args: &[&str]) -> Output {
    spawn(home, args, &[]).wait_with_output().expect("tap runs")
}

fn json(home: &Path, args: &[&str]) -> serde_json::Value {
    let out = tap(home, &[args, &["--output", "json"]].concat());
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

/// Runs `name` until it has a committed checkpoint and 20 steps, then the notice (exit 75);
/// then `--resume name` to the end. Returns the two attempts' output.
fn interrupted_and_resumed(home: &Path, name: &str, env: &[(&str, &str)]) -> (String, String) {
    let args = ["run", "-e", "gp", "--name", name, "--", "python3", JOB];
    let child = spawn(home, &args, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = tap(home, &["runs", "show", name, "--output", "json"]);
        let shown: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        let run = shown.as_ref().map(|s| &s["run"]);
        if run.is_some_and(|r| r["checkpoint"].is_string() && r["metric_points"].as_u64().unwrap_or(0) >= 20) {
            break;
        }
        assert!(Instant::now() < deadline, "{name} made no progress: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-USR1", &child.id().to_string()]).status().expect("kill").success());
    let first = child.wait_with_output().expect("wait");
    assert_eq!(first.status.code(), Some(75), "{}", text(&first.stderr));
    let resumed = spawn(home, &["run", "-e", "gp", "--resume", name, "--", "python3", JOB], env)
        .wait_with_output()
        .expect("resume");
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    (text(&first.stdout), text(&resumed.stdout))
}

/// Every second of the run is in one cause: the causes and the productive time add up to the
/// total, and the total is the run's span (one machine, no overlap).
fn assert_adds_up(g: &serde_json::Value) {
    let b = &g["badput"];
    let causes = ["program_startup", "checkpoint_save", "checkpoint_restore", "wasted_progress", "idle_other"];
    let sum = f(&g["productive_s"])
        + causes.iter().map(|c| f(&b[c]["s"])).sum::<f64>()
        + f(&b["infrastructure_recovery"]["total"]["s"]);
    assert!((sum - f(&g["total_s"])).abs() < 0.01, "{sum} != {}: {g}", g["total_s"]);
    let attempts = g["attempts"].as_array().expect("attempts");
    let span = attempts.last().map(|a| f(&a["ended_ms"])).unwrap_or(0.0) - f(&attempts[0]["started_ms"]);
    assert!((span / 1000.0 - f(&g["total_s"])).abs() < 0.01, "total is the run's span: {g}");
    assert!((0.0..=100.0).contains(&f(&g["goodput_pct"])));
}

/// The demo's case: a notice, the final checkpoint committed, a resume: two attempts, no
/// step re-run, the checkpoint writes measured, the steps at their ideal time.
#[test]
fn goodput_of_an_interrupted_and_resumed_run_matches_its_timeline() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let (first, second) = interrupted_and_resumed(h, "gp", &[]);
    assert!(first.contains("interval 300.0"), "no checkpoint measured yet: {first}");
    let handed: f64 = second
        .lines()
        .find_map(|l| l.strip_prefix("interval "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{second}"));
    assert!(handed != 300.0 && handed > 0.1, "attempt 2 gets the measured interval: {second}");
    let cadence = second.lines().find_map(|l| l.strip_prefix("cadence ")).expect("cadence line");
    let cadence: serde_json::Value = serde_json::from_str(cadence).unwrap_or_else(|_| panic!("{second}"));
    let delta = f(&cadence["checkpoint_s"]);
    assert!((0.08..0.5).contains(&delta), "δ is the command's write time (0.1 s): {cadence}");
    // The notice's checkpoint committed: nothing was lost, so M is still the assumed one.
    assert!(cadence["interval_s"].as_f64().is_some() && cadence["mtbi_assumed"] == true, "{cadence}");

    let g = json(h, &["goodput", "gp"]);
    assert_adds_up(&g);
    let attempts = g["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{g}");
    assert_eq!(attempts[0]["status"], "interrupted");
    assert!(attempts[0]["verdict"].as_str().is_some_and(|v| v.starts_with("committed")), "{g}");
    assert!(attempts[0]["why"].as_str().is_some_and(|w| w.contains("SIGUSR1")), "{g}");
    assert_eq!(attempts[1]["status"], "succeeded");
    assert_eq!(attempts[1]["restored_step"], attempts[0]["last_step"], "{g}");
    assert_eq!(
        (g["steps_computed"].as_u64(), g["steps_kept"].as_u64(), g["wasted_steps"].as_u64()),
        (Some(60), Some(60), Some(0))
    );
    let ideal = f(&g["ideal_step_s"]);
    assert!((0.045..0.1).contains(&ideal), "steps of 0.05 s: {ideal}");
    let checkpoints = g["checkpoints"].as_u64().expect("count");
    assert!(checkpoints >= 5, "{g}");
    let save = f(&g["badput"]["checkpoint_save"]["s"]);
    assert!(
        save >= 0.08 * checkpoints as f64 && save < 0.5 * checkpoints as f64,
        "0.1 s per checkpoint: {save} for {checkpoints}"
    );
    assert!(f(&g["productive_s"]) >= 60.0 * 0.05 * 0.9, "{g}");
    assert!(f(&g["badput"]["program_startup"]["s"]) > 0.0 && f(&g["badput"]["checkpoint_restore"]["s"]) > 0.0, "{g}");

    // The simulator, replaying this run's own events with its measured costs, gets its
    // measured goodput within 2 points.
    let simulated = replay_of(h, &g);
    assert!(
        (simulated - f(&g["goodput_pct"])).abs() <= 2.0,
        "simulated {simulated:.2}% against measured {}%: {g}",
        g["goodput_pct"]
    );

    // Dollars: this laptop priced as a g5.xlarge at a spot price from a file, against the
    // built-in on-demand price.
    let prices = h.join("prices.csv");
    std::fs::write(&prices, "spot,g5.xlarge,0.40\n").expect("prices");
    let priced =
        json(h, &["goodput", "gp", "--prices", prices.to_str().expect("path"), "--instance-type", "g5.xlarge"]);
    let d = &priced["dollars"];
    let node_hours = f(&priced["node_hours"]);
    assert!((f(&d["paid_usd"]) - 0.40 * node_hours).abs() < 1e-9, "{d}");
    assert!((f(&d["on_demand_usd"]) - 1.006 * node_hours).abs() < 1e-9, "{d}");
    assert!((f(&d["naive_saving_pct"]) - 100.0 * (1.0 - 0.40 / 1.006)).abs() < 1e-6, "{d}");
    assert!(f(&d["effective_saving_pct"]) < f(&d["naive_saving_pct"]), "the restart cost counts: {d}");
    assert!(g["dollars"].is_null(), "no spot price, no dollars: {g}");

    // Text fits a screen; runs show carries the same figure.
    let shown = tap(h, &["goodput", "gp"]);
    let t = text(&shown.stdout);
    assert!(t.contains("goodput") && t.contains("wasted progress") && t.contains("checkpoint every"), "{t}");
    assert!(t.lines().count() <= 25, "{t}");
    let run = json(h, &["runs", "show", "gp"]);
    assert!((f(&run["goodput"]["goodput_pct"]) - f(&g["goodput_pct"])).abs() < 1e-9, "{run}");
    let t = text(&tap(h, &["runs", "show", "gp"]).stdout);
    assert!(t.contains("goodput:") && t.contains("cadence:"), "{t}");
}

/// `tap goodput simulate` of a recorded two-attempt run (`g`, its goodput JSON): one node for
/// each attempt, joining when the attempt launched, the first reclaimed with its notice
/// honoured; the step, checkpoint, restore, launch, start-up, stop and shut-down costs as measured
/// (the last attempt's idle time is its shut-down: this fixture does not stall). The
/// simulated goodput.
fn replay_of(home: &Path, g: &serde_json::Value) -> f64 {
    let a = g["attempts"].as_array().expect("attempts");
    let t0 = a[0]["started_ms"].as_i64().expect("start");
    let b = &g["badput"];
    let ms = |s: f64| format!("{}ms", (s * 1000.0).round() as i64);
    let delta = f(&b["checkpoint_save"]["s"]) / f(&g["checkpoints"]);
    let launch = f(&b["infrastructure_recovery"]["boot_launch"]["s"]);
    let stop = f(&b["infrastructure_recovery"]["stopping"]["s"]);
    let startup = ((f(&b["program_startup"]["s"]) - launch) / 2.0).max(0.0);
    // Attempt 1 ends at its notice + its stop; the notice comes two minutes before the remove.
    let end1 = a[0]["ended_ms"].as_i64().expect("end") - t0;
    let remove = end1 - (stop * 1000.0) as i64 + 120_000;
    let start2 = a[1]["started_ms"].as_i64().expect("start") - t0;
    let trace = home.join("replay.csv");
    std::fs::write(&trace, format!("0,add,n1\n{start2},add,n2\n{remove},remove,n1\n3600000,add,n3\n")).expect("trace");
    let step = f(&g["ideal_step_s"]);
    let out = tap(
        home,
        &[
            "goodput",
            "simulate",
            "--trace",
            trace.to_str().expect("path"),
            "--nodes",
            "1",
            "--step",
            &ms(step),
            "--checkpoint-cost",
            &ms(delta),
            "--restore-cost",
            &ms(f(&b["checkpoint_restore"]["s"])),
            "--boot",
            "0s",
            "--launch",
            &ms(launch),
            "--startup",
            &ms(startup),
            "--shutdown",
            &ms(f(&b["idle_other"]["s"])),
            "--interval",
            &ms(10.0 * step),
            "--steps",
            "60",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sim: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let asked = &sim["asked"]["goodput"];
    assert_eq!(asked["attempts"].as_array().map(Vec::len), Some(2), "{sim}");
    f(&asked["goodput_pct"])
}

/// A notice the command ignored (no final checkpoint of its own): the resume starts from the
/// last periodic one and the steps since are counted as wasted progress, on the attempt that lost
/// them.
#[test]
fn a_missed_final_checkpoint_counts_the_steps_run_again() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    interrupted_and_resumed(h, "drop", &[("GP_ON_NOTICE", "drop")]);
    let g = json(h, &["goodput", "drop"]);
    assert_adds_up(&g);
    let a = g["attempts"].as_array().expect("attempts");
    // (Its verdict may say committed: a periodic checkpoint can commit after the notice.)
    assert!(a[0]["verdict"].is_string(), "{g}");
    let lost = a[0]["last_step"].as_u64().expect("last") - a[1]["restored_step"].as_u64().expect("restored");
    assert!(lost >= 3, "three steps after the notice at least: {g}");
    assert_eq!(g["wasted_steps"].as_u64(), Some(lost));
    assert_eq!(a[0]["wasted_steps"].as_u64(), Some(lost));
    assert_eq!(g["steps_computed"].as_u64(), Some(60 + lost));
    assert_eq!(g["steps_kept"].as_u64(), Some(60));
    let wasted = f(&g["badput"]["wasted_progress"]["s"]);
    assert!(wasted >= lost as f64 * 0.045, "{wasted} s for {lost} steps");

    // The experiment: every training and the sum.
    let e = json(h, &["goodput", "-e", "gp"]);
    assert_eq!(e["runs"].as_array().map(Vec::len), Some(1));
    assert!((f(&e["sum"]["total_s"]) - f(&g["total_s"])).abs() < 1e-9, "{e}");
    // Its pool (this machine, off EC2): two attempts, one disruption; no EC2 advice.
    let pools = json(h, &["fleet", "pools", "--days", "7"]);
    let p = &pools["pools"][0];
    assert_eq!(
        (p["pool"]["kind"].as_str(), p["attempts"].as_u64(), p["disruptions"].as_u64()),
        (Some("host"), Some(2), Some(1)),
        "{pools}"
    );
    assert!(pools["tfvars"].is_null() && pools["instance_types"].as_array().is_some_and(Vec::is_empty), "{pools}");
    let t = text(&tap(h, &["fleet", "pools"]).stdout);
    assert!(t.contains("POOL") && t.contains("no EC2 pool on record"), "{t}");
    let zero = tap(h, &["fleet", "pools", "--days", "0"]);
    assert!(!zero.status.success() && text(&zero.stderr).contains("--days"), "{}", text(&zero.stderr));
    let missing = tap(h, &["goodput", "-e", "nothing-here"]);
    assert!(!missing.status.success() && text(&missing.stderr).contains("has no runs"), "{}", text(&missing.stderr));
}

/// `tap goodput simulate` on bad input: one line naming the problem; a job the trace never
/// had the nodes for says so.
#[test]
fn simulate_says_what_is_wrong_in_one_line() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let costs = ["--step", "1s", "--checkpoint-cost", "30s", "--restore-cost", "1m"];
    let run = |trace: &str, nodes: &str| {
        let mut args = vec!["goodput", "simulate", "--trace", trace, "--nodes", nodes];
        args.extend_from_slice(&costs);
        tap(h, &args)
    };
    let bad = h.join("bad.csv");
    std::fs::write(&bad, "0,add,n1\n10,leave,n1\n").expect("trace");
    let out = run(bad.to_str().expect("path"), "1");
    let e = text(&out.stderr);
    assert!(!out.status.success() && e.contains("line 2") && e.contains("neither add nor remove"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    let missing = run(h.join("none.csv").to_str().expect("path"), "1");
    assert!(
        !missing.status.success() && text(&missing.stderr).contains("reading the trace"),
        "{}",
        text(&missing.stderr)
    );
    let small = h.join("small.csv");
    std::fs::write(&small, "0,add,n1\n3600000,remove,n1\n").expect("trace");
    let never = run(small.to_str().expect("path"), "2");
    assert!(never.status.success(), "{}", text(&never.stderr));
    assert!(text(&never.stdout).contains("the job never started"), "{}", text(&never.stdout));
    let one = run(small.to_str().expect("path"), "1");
    let t = text(&one.stdout);
    assert!(t.contains("goodput") && t.contains("1 removals") && t.contains("best interval found"), "{t}");
}
