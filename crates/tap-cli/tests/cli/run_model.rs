//! A run is a training (issue 21), on the local store: its attempts, its own checkpoints, its
//! own hyperparameters. The job (fixtures/sweep_job.py) exits 3 when a resume hands it
//! another training's state or other hyperparameters.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sweep_job.py");

fn tap(home: &Path, args: &[&str]) -> Output {
    spawn(home, args, "0.01").wait_with_output().expect("tap runs")
}

fn spawn(home: &Path, args: &[&str], step_seconds: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tap"))
        .args(args)
        .env("TAP_HOME", home)
        .env_remove("TAP_OUTPUT")
        .env_remove("TAP_EXPERIMENT")
        .env("SWEEP_STEP_SECONDS", step_seconds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tap starts")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(home: &Path, args: &[&str]) -> serde_json::Value {
    let out = tap(home, &[args, &["--output", "json"]].concat());
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `tap run -e sweep <flags> -- python3 JOB`, as arguments.
fn run_args<'a>(flags: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["run", "-e", "sweep"];
    a.extend_from_slice(flags);
    a.extend_from_slice(&["--", "python3", JOB]);
    a
}

/// Starts a slow training named `name`, waits until it has a committed checkpoint and ten
/// steps, then delivers the notice: it ends interrupted (exit 75).
fn interrupted(home: &Path, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["--name", name];
    args.extend_from_slice(flags);
    let child = spawn(home, &run_args(&args), "0.1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = tap(home, &["runs", "show", name, "--output", "json"]);
        let shown: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        let run = shown.as_ref().map(|s| &s["run"]);
        let ckpt = run.is_some_and(|r| r["checkpoint"].is_string());
        if ckpt && run.and_then(|r| r["metric_points"].as_u64()).unwrap_or(0) >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "{name} made no checkpoint: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-USR1", &child.id().to_string()]).status().expect("kill").success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(75), "{name} is interrupted:\n{}", text(&out.stderr));
    json(home, &["runs", "show", name])["run"]["run_id"].as_str().expect("id").to_owned()
}

/// Regression (issue 21): in a sweep, `--resume` took the experiment's latest checkpoint —
/// the other training's — and the interrupted training "resumed" with its weights at its
/// final step. Now each training resumes its own checkpoint with its own learning rate, as
/// a new attempt of the same run, and every step of it is in its one series.
#[test]
fn sweep_resume_continues_its_own_training_not_the_experiments_latest() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let slow = interrupted(h, "slow", &["--param", "learning_rate=0.1"]);
    // The other training finishes after it: it holds the experiment's newest checkpoint.
    let fast = tap(h, &run_args(&["--name", "fast", "--param", "learning_rate=0.9"]));
    assert!(fast.status.success(), "{}", text(&fast.stderr));

    let resumed = tap(h, &run_args(&["--resume"]));
    let (out, err) = (text(&resumed.stdout), text(&resumed.stderr));
    assert!(resumed.status.success(), "{out}\n{err}");
    assert!(out.contains("resumed lr=0.1 step=") && out.contains("done lr=0.1 step=60"), "{out}");
    assert!(err.contains(&format!("of run {slow}")), "restored its own checkpoint: {err}");

    let runs = json(h, &["runs", "list", "-e", "sweep"]);
    assert_eq!(runs.as_array().expect("runs").len(), 2, "a resume adds an attempt, never a run: {runs}");
    let shown = json(h, &["runs", "show", "slow"]);
    let run = &shown["run"];
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(1), "one earlier attempt: {run}");
    assert_eq!(run["attempts"][0]["status"], "interrupted");
    assert!(run["restored"].as_str().is_some_and(|c| c.starts_with(&slow)), "{run}");
    assert_eq!(run["hparams"]["learning_rate"]["value"], "0.1");
    assert_eq!(run["hparams"]["learning_rate"]["source"], "override");
    assert_eq!(tap_test_support::loss_steps(&shown), (1..=60).collect::<Vec<u64>>(), "one series over both attempts");
    let attempts: Vec<&str> =
        shown["attempts"].as_array().expect("all attempts").iter().filter_map(|a| a["status"].as_str()).collect();
    assert_eq!(attempts, ["interrupted", "succeeded"]);
    let text_view = text(&tap(h, &["runs", "show", "slow"]).stdout);
    assert!(text_view.contains("attempts:    2") && text_view.contains("fresh start"), "{text_view}");
    let log = text(&tap(h, &["logs", "slow"]).stdout);
    let (cut, done) = (log.find("notice: checkpointed at step"), log.find("done lr=0.1 step=60"));
    assert!(cut.is_some() && done.is_some() && cut < done, "both attempts' output, in order: {log}");
    let table = text(&tap(h, &["runs", "list"]).stdout);
    assert!(table.contains("ATTEMPTS") && table.contains("slow"), "{table}");

    // The resumed attempt's checkpoints are the run's own, and listed with it.
    let listed = json(h, &["checkpoints", "list", "slow"]);
    let ids: Vec<&str> = listed.as_array().expect("list").iter().filter_map(|c| c["checkpoint_id"].as_str()).collect();
    assert!(ids.iter().all(|c| c.starts_with(&slow)), "{ids:?}");
    assert!(ids.iter().any(|c| c.starts_with(&format!("{slow}-a2-"))), "attempt 2's ids carry it: {ids:?}");
}

/// Regression (issue 21): a `tap params set` between the interruption and the resume changed
/// the resumed training's hyperparameters without a word. The resumed attempt gets the value
/// its run recorded, and tap says the default changed.
#[test]
fn params_set_between_interruption_and_resume_is_not_applied() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    assert!(tap(h, &["params", "set", "learning_rate", "0.3"]).status.success());
    interrupted(h, "base", &[]);
    assert!(tap(h, &["params", "set", "learning_rate", "0.7"]).status.success());
    // Overriding a resumed run's values is refused: its hyperparameters are fixed.
    let refused = tap(h, &run_args(&["--resume", "base", "--param", "learning_rate=1"]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("keeps the hyperparameters it started with"), "{}", text(&refused.stderr));
    let resumed = tap(h, &run_args(&["--resume", "base"]));
    let (out, err) = (text(&resumed.stdout), text(&resumed.stderr));
    assert!(resumed.status.success(), "{out}\n{err}");
    assert!(out.contains("resumed lr=0.3") && out.contains("(given lr=0.3)"), "{out}");
    assert!(err.contains("defaults changed") && err.contains("learning_rate"), "said once: {err}");
    // A new run gets the new default.
    let fresh = json(h, &["runs", "show", "base"]);
    assert_eq!(fresh["run"]["hparams"]["learning_rate"]["value"], "0.3");
    assert_eq!(fresh["run"]["hparams"]["learning_rate"]["version"], 1);
}

/// `--resume` without a run refuses when there is none or more than one to resume, naming the
/// candidates, and never starts fresh or guesses.
#[test]
fn resume_without_a_run_refuses_zero_and_two_candidates() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let none = tap(h, &run_args(&["--resume"]));
    assert_eq!(none.status.code(), Some(1));
    let err = text(&none.stderr);
    assert!(err.contains("no run to resume") && err.lines().count() == 1, "{err}");
    assert!(json(h, &["runs", "list"]).as_array().expect("runs").is_empty(), "nothing started");

    let a = interrupted(h, "a", &[]);
    let b = interrupted(h, "b", &[]);
    let two = tap(h, &run_args(&["--resume"]));
    assert_eq!(two.status.code(), Some(1));
    let err = text(&two.stderr);
    assert!(err.contains("2 runs to resume") && err.contains(&a) && err.contains(&b), "{err}");
    assert!(err.contains("(a)") && err.contains("(b)") && err.contains("--resume RUN"), "{err}");
    // A unique prefix names one.
    let prefix = &b[..b.len() - 2];
    let by_prefix = tap(h, &run_args(&["--resume", prefix]));
    if a.starts_with(prefix) {
        assert!(text(&by_prefix.stderr).contains("fits 2 runs"), "{}", text(&by_prefix.stderr));
    } else {
        assert!(by_prefix.status.success(), "{}", text(&by_prefix.stderr));
    }
    // A resumed run keeps its name.
    let renamed = tap(h, &run_args(&["--resume", "a", "--name", "z"]));
    assert_eq!(renamed.status.code(), Some(2), "{}", text(&renamed.stderr));
    // A name is unique in its experiment.
    let dup = tap(h, &run_args(&["--name", "a"]));
    assert_eq!(dup.status.code(), Some(1));
    assert!(text(&dup.stderr).contains("already has a run named \"a\""), "{}", text(&dup.stderr));
}

/// `--resume-from` starts a new run from another run's checkpoint and records the parent;
/// `tap checkpoints pull` fetches one without recording a run.
#[test]
fn resume_from_forks_a_new_run_with_its_parent() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let base = tap(h, &run_args(&["--name", "base", "--param", "learning_rate=0.9"]));
    assert!(base.status.success(), "{}", text(&base.stderr));
    let base_id = json(h, &["runs", "show", "base"])["run"]["run_id"].as_str().expect("id").to_owned();
    let fork = tap(h, &run_args(&["--resume-from", "base", "--name", "tuned", "--param", "steps=70"]));
    let out = text(&fork.stdout);
    assert!(fork.status.success(), "{out}\n{}", text(&fork.stderr));
    assert!(out.contains("resumed lr=0.9 step=60") && out.contains("done lr=0.9 step=70"), "{out}");
    let tuned = json(h, &["runs", "show", "tuned"])["run"].clone();
    assert_ne!(tuned["run_id"], base_id.as_str(), "a fork is a new run");
    assert_eq!(tuned["resumed_from"], base_id.as_str());
    assert!(tuned["parent_checkpoint"].as_str().is_some_and(|c| c.starts_with(&base_id)), "{tuned}");
    assert_eq!(tuned["hparams"]["steps"]["source"], "override");

    let dest = h.join("pulled");
    let pulled = tap(h, &["checkpoints", "pull", "tuned", dest.to_str().expect("utf-8")]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let state = std::fs::read_to_string(dest.join("state.json")).expect("pulled state");
    assert!(state.contains("\"step\": 70"), "{state}");
    assert_eq!(json(h, &["runs", "list"]).as_array().map(Vec::len), Some(2), "pull records no run");
    let again = tap(h, &["checkpoints", "pull", "tuned", dest.to_str().expect("utf-8")]);
    assert!(text(&again.stderr).contains("is not empty"), "{}", text(&again.stderr));
}

/// SIGINT to `tap run` is the user's stop: the run ends `cancelled` (not failed), and
/// `--resume` does not take a cancelled run unless it is named.
#[test]
fn sigint_ends_the_run_cancelled() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let child = spawn(h, &run_args(&["--name", "stopped"]), "0.1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while json(h, &["runs", "list"]).as_array().is_none_or(|r| r.first().is_none_or(|r| r["metric_points"] == 0)) {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill").success());
    let out = child.wait_with_output().expect("wait");
    assert_ne!(out.status.code(), Some(0));
    let run = json(h, &["runs", "show", "stopped"])["run"].clone();
    assert_eq!(run["status"], "cancelled", "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cancelled"), "{}", text(&out.stderr));
    let refused = tap(h, &run_args(&["--resume"]));
    assert!(text(&refused.stderr).contains("no run to resume"), "{}", text(&refused.stderr));
}

/// `tap params unset` and the refusal of an empty value.
#[test]
fn params_unset_and_empty_values() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let empty = tap(h, &["params", "set", "lr", ""]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(text(&empty.stderr).contains("--allow-empty"), "{}", text(&empty.stderr));
    assert!(tap(h, &["params", "set", "lr", "", "--allow-empty"]).status.success());
    assert!(tap(h, &["params", "unset", "lr"]).status.success());
    assert!(json(h, &["params", "list"]).as_array().expect("list").is_empty());
    let again = tap(h, &["params", "unset", "lr"]);
    assert!(text(&again.stderr).contains("no hyperparameter lr"), "{}", text(&again.stderr));
    let bad = tap(h, &run_args(&["--param", "lr="]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("the value is empty"), "{}", text(&bad.stderr));
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() { copy_tree(&src, &dst) } else { std::fs::copy(&src, &dst).map(drop).expect("copy") }
    }
}

/// The previous release's local store (fixtures/store-v1/local, made by
/// scripts/make-store-fixtures.py with that release): its runs read as one-attempt runs, its
/// `--resume` chain (B resumed from A) reads as one training with two attempts, and
/// `--resume` continues the one unfinished training (C) from the checkpoint its record
/// names, as attempt 2.
#[test]
fn a_local_store_of_the_previous_release_opens_and_resumes() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1/local"), h);
    let runs = json(h, &["runs", "list", "-e", "legacy"]);
    let runs = runs.as_array().expect("runs");
    assert_eq!(runs.len(), 2, "the chain A <- B is one run: {runs:?}");
    let (c, a) = (&runs[0], &runs[1]);
    assert_eq!((a["status"].as_str(), c["status"].as_str()), (Some("succeeded"), Some("interrupted")));
    assert!(c["attempts"].is_null(), "one attempt");
    let a_id = a["run_id"].as_str().expect("id");
    let records = a["legacy_records"].as_array().expect("the chain's records");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0], a_id);
    assert_eq!(a["attempts"][0]["status"], "interrupted", "{a}");
    let shown = json(h, &["runs", "show", a_id]);
    let statuses: Vec<&str> =
        shown["attempts"].as_array().expect("attempts").iter().filter_map(|x| x["status"].as_str()).collect();
    assert_eq!(statuses, ["interrupted", "succeeded"]);
    assert_eq!(tap_test_support::loss_steps(&shown), (1..=40).collect::<Vec<u64>>(), "one series over both records");
    let b_id = records[1].as_str().expect("id");
    let b_shown = text(&tap(h, &["runs", "show", b_id]).stdout);
    assert!(b_shown.contains(&format!("run:         {a_id}")) && b_shown.contains("attempts:    2"), "{b_shown}");
    let ckpts = json(h, &["checkpoints", "list", a_id]);
    assert!(ckpts.as_array().expect("list").iter().any(|m| m["run_id"] == b_id), "{ckpts}");

    let train = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/train.py");
    let resumed = tap(h, &["run", "-e", "legacy", "--resume", "--", "python3", train]);
    let (out, err) = (text(&resumed.stdout), text(&resumed.stderr));
    assert!(resumed.status.success(), "{out}\n{err}");
    let c_id = c["run_id"].as_str().expect("id");
    let c_ckpt = c["checkpoint"].as_str().expect("checkpoint");
    assert!(err.contains(&format!("restoring checkpoint {c_ckpt} of run {c_id}")), "{err}");
    assert!(out.contains("resumed at step"), "{out}");
    let after = json(h, &["runs", "show", c_id])["run"].clone();
    assert_eq!(
        (after["status"].as_str(), after["attempts"][0]["status"].as_str()),
        (Some("succeeded"), Some("interrupted"))
    );
    assert_eq!(after["restored"], c_ckpt);
    assert_eq!(json(h, &["runs", "list", "-e", "legacy"]).as_array().map(Vec::len), Some(2), "no new record");
    let finished = tap(h, &["run", "-e", "legacy", "--resume", a_id, "--", "true"]);
    assert!(
        text(&finished.stderr).contains("succeeded: nothing is left to do"),
        "the chain ended: {}",
        text(&finished.stderr)
    );
}

/// `tap run` as a managed job's rank runs it on a node (what the fleet's job controller
/// sends: `tap run --experiment E [--resume] -- CMD` under these variables).
/// `lr`: the job's own learning rate (the tests' stand-in for what a job is submitted with;
/// a relaunch is given none, as the controller gives none).
fn rank(home: &Path, job: &str, attempt: u32, resume: bool, lr: Option<&str>, step_seconds: &str) -> Child {
    let lr = lr.map(|lr| format!("learning_rate={lr}"));
    let mut args = vec!["run", "-e", "jobs"];
    if let Some(lr) = &lr {
        args.extend_from_slice(&["--param", lr]);
    }
    if resume {
        args.push("--resume");
    }
    args.extend_from_slice(&["--", "python3", JOB]);
    Command::new(env!("CARGO_BIN_EXE_tap"))
        .args(&args)
        .env("TAP_HOME", home)
        .env_remove("TAP_OUTPUT")
        .env_remove("TAP_EXPERIMENT")
        .env("TAP_RUN_GROUP", job)
        .env("TAP_JOB_ATTEMPT", attempt.to_string())
        .env("NODE_RANK", "0")
        .env("SWEEP_STEP_SECONDS", step_seconds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tap starts")
}

/// The rank-0 run of attempt `attempt` of `job`.
fn rank_run(home: &Path, job: &str, attempt: u32) -> serde_json::Value {
    let runs = json(home, &["runs", "list", "-e", "jobs", "--group", job]);
    runs.as_array()
        .expect("runs")
        .iter()
        .find(|r| r["job_attempt"] == attempt && r["node_rank"] == 0)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until attempt `attempt` of `job` has committed a checkpoint and ten steps.
fn wait_checkpointed(home: &Path, job: &str, attempt: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rank_run(home, job, attempt);
        if r["checkpoint"].is_string() && r["metric_points"].as_u64().unwrap_or(0) >= 10 {
            return;
        }
        assert!(Instant::now() < deadline, "{job} #{attempt} made no checkpoint: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Regression (issue 21): a managed job's relaunch ran `tap run --resume`, which restored the
/// experiment's latest checkpoint — another job's. Two jobs of one experiment: job-b is
/// reclaimed (its rank 0 gets the notice), job-a then finishes and holds the experiment's
/// newest checkpoint; job-b's relaunch restores job-b's own.
#[test]
fn job_relaunch_restores_its_own_checkpoint_not_another_jobs() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let b1 = rank(h, "job-b", 1, false, Some("0.2"), "0.1");
    wait_checkpointed(h, "job-b", 1);
    assert!(Command::new("kill").args(["-USR1", &b1.id().to_string()]).status().expect("kill").success());
    assert_eq!(b1.wait_with_output().expect("wait").status.code(), Some(75));
    let a1 = rank(h, "job-a", 1, false, Some("0.9"), "0.01").wait_with_output().expect("job-a");
    assert!(a1.status.success(), "{}", text(&a1.stderr));

    let b2 = rank(h, "job-b", 2, true, None, "0.01").wait_with_output().expect("job-b #2");
    let (out, err) = (text(&b2.stdout), text(&b2.stderr));
    assert!(b2.status.success(), "{out}\n{err}");
    assert!(out.contains("resumed lr=0.2 step=") && out.contains("(given lr=0.2)"), "its own state and values: {out}");
    assert!(err.contains("of run job-b"), "the job's own checkpoint: {err}");
    let r2 = rank_run(h, "job-b", 2);
    assert!(r2["restored"].as_str().is_some_and(|c| c.starts_with("job-b-")), "recorded from the restore: {r2}");
}

/// Regression (issue 21): a job whose node was lost before its first checkpoint restored,
/// at its relaunch, whatever the experiment's latest was — another job's, even a finished
/// one — and could end `succeeded` having trained a few of its steps. It starts fresh.
#[test]
fn job_lost_before_its_first_checkpoint_starts_fresh() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let other = rank(h, "job-done", 1, false, Some("0.9"), "0.01").wait_with_output().expect("job-done");
    assert!(other.status.success(), "{}", text(&other.stderr));
    let relaunch = rank(h, "job-new", 2, true, None, "0.01").wait_with_output().expect("job-new #2");
    let (out, err) = (text(&relaunch.stdout), text(&relaunch.stderr));
    assert!(relaunch.status.success(), "{out}\n{err}");
    assert!(!out.contains("resumed") && out.contains("done lr=0.05 step=60"), "trained every step: {out}");
    assert!(err.contains("job job-new has no checkpoint of its own yet; starting fresh"), "{err}");
    assert!(rank_run(h, "job-new", 2)["restored"].is_null());
}

/// Regression (issue 21): when rank 0's node died hard (no notice, no final record), the
/// job's record lost which checkpoint the relaunch restored ("fresh start" for an attempt
/// that resumed). The relaunched rank 0 records what its restore took, and `tap jobs show`
/// reads it from there (tap_core::jobs::restored_by_ranks).
#[test]
fn rank0_lost_without_a_notice_then_the_relaunch_records_its_restore() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let mut r1 = rank(h, "job-k", 1, false, Some("0.4"), "0.1");
    wait_checkpointed(h, "job-k", 1);
    // The node is gone: tap run and its command die at once, nothing more is recorded.
    let group = r1.id().to_string();
    assert!(Command::new("kill").args(["-KILL", &group]).status().expect("kill").success());
    r1.wait().expect("wait");
    std::thread::sleep(Duration::from_millis(300));
    let committed = rank_run(h, "job-k", 1)["checkpoint"].as_str().expect("a committed checkpoint").to_owned();
    let r2 = rank(h, "job-k", 2, true, None, "0.01").wait_with_output().expect("relaunch");
    assert!(r2.status.success(), "{}", text(&r2.stderr));
    let run2 = rank_run(h, "job-k", 2);
    let restored = run2["restored"].as_str().expect("restored recorded");
    assert!(restored.starts_with("job-k-"), "{run2}");
    assert!(restored >= committed.as_str(), "at least the last checkpoint the record saw ({committed}): {restored}");
    assert!(run2["restored_step"].as_u64().is_some_and(|s| s >= 10), "{run2}");
}
