//! A sharded job run by hand (issue 25), on the local store: `tap run --group G --rank R
//! --world-size N` on each "node", every rank committing its own shard of each step, the
//! group interrupted and resumed as one run. The job (fixtures/shard_job.py) exits 3 when a
//! restore hands a rank another rank's shard or bytes it did not write.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/shard_job.py");

fn tap_cmd(home: &Path, shared: &Path, args: &[&str], step_seconds: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tap"));
    c.args(args)
        .env("TAP_HOME", home)
        .env("SHARD_SHARED", shared)
        .env("SHARD_STEPS", "200")
        .env("SHARD_STEP_SECONDS", step_seconds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in [
        "TAP_OUTPUT",
        "TAP_EXPERIMENT",
        "TAP_RUN_GROUP",
        "TAP_JOB_ATTEMPT",
        "RANK",
        "WORLD_SIZE",
        "NODE_RANK",
        "NNODES",
    ] {
        c.env_remove(v);
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tap run -e llm <group flags> --rank R --world-size N -- python3 JOB`.
fn rank(home: &Path, shared: &Path, group: &[&str], r: u32, world: u32, step_seconds: &str) -> Child {
    let (r, world) = (r.to_string(), world.to_string());
    let mut args = vec!["run", "-e", "llm"];
    args.extend_from_slice(group);
    args.extend_from_slice(&["--rank", &r, "--world-size", &world, "--", "python3", JOB]);
    tap_cmd(home, shared, &args, step_seconds).spawn().expect("tap starts")
}

fn show(home: &Path, shared: &Path, run: &str) -> serde_json::Value {
    let out = tap_cmd(home, shared, &["runs", "show", run, "--output", "json"], "0").output().expect("tap runs");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn finish(children: Vec<Child>) -> Vec<Output> {
    children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect()
}

/// Regression-style scenario for the issue's local test: three ranks write different shards,
/// are interrupted (each gets the notice, the job agrees on a final step, each rank's shard of
/// it is stored and the step commits), and are resumed with --resume G: each rank gets its own
/// shard back (the job checks its bytes), and every step runs exactly once.
#[test]
fn a_three_rank_group_is_interrupted_and_resumed_each_rank_with_its_own_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (home, shared) = (dir.path().join("home"), dir.path().join("shared"));
    std::fs::create_dir_all(&shared).expect("mkdir");
    let first: Vec<Child> = (0..3).map(|r| rank(&home, &shared, &["--group", "g"], r, 3, "0.05")).collect();
    // Until the group's first step commits (step 10 of 200), then the notice to every rank.
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = || {
        let out = tap_cmd(&home, &shared, &["runs", "list", "-g", "g", "--output", "json"], "0").output().expect("tap");
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        runs.as_array().is_some_and(|l| l.iter().any(|r| r["node_rank"].is_u64() && r["checkpoint"].is_string()))
    };
    while !committed() {
        assert!(Instant::now() < deadline, "the group committed no step: {}", show(&home, &shared, "g"));
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in &first {
        assert!(Command::new("kill").args(["-USR1", &c.id().to_string()]).status().expect("kill").success());
    }
    for (r, out) in finish(first).iter().enumerate() {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "rank {r} ends interrupted: {err}");
        assert!(err.contains("final checkpoint committed"), "rank {r}: the job's final step committed: {err}");
    }
    let g = show(&home, &shared, "g");
    let stopped = g["run"]["checkpoint"].as_str().expect("a commit").to_owned();
    assert!(stopped.starts_with("g-a1-s"), "{stopped}");
    // The job's verdict: committed (every shard landed in time), no rank late or missing.
    let fin = &g["final_checkpoints"][0];
    assert_eq!(
        (fin["attempt"].as_u64(), fin["final"]["verdict"]["verdict"].as_str()),
        (Some(1), Some("committed")),
        "{g}"
    );
    assert_eq!(fin["final"]["late"], serde_json::json!([]), "{g}");
    assert_eq!(fin["final"]["missing"], serde_json::json!([]), "{g}");
    let shown = tap_cmd(&home, &shared, &["runs", "show", "g"], "0").output().expect("tap runs");
    let shown = text(&shown.stdout);
    assert!(shown.contains("final ckpt:  attempt 1: the job's final checkpoint committed: g-a1-s"), "{shown}");

    // A rank of the finished attempt started again without --resume is refused.
    let again = rank(&home, &shared, &["--group", "g"], 1, 3, "0").wait_with_output().expect("wait");
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("rank 1 of group g already ran in attempt 1"), "{}", text(&again.stderr));

    let resumed = finish((0..3).map(|r| rank(&home, &shared, &["--resume", "g"], r, 3, "0.002")).collect());
    let stop_step: u64 = stopped.rsplit("-s").next().and_then(|s| s.parse().ok()).expect("the step");
    for (r, out) in resumed.iter().enumerate() {
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "rank {r}: {o}{e}");
        assert!(o.contains(&format!("rank {r}: resumed at step {stop_step}")), "rank {r} got its own shard: {o}");
        assert!(e.contains(&format!("restoring rank {r}'s shard of step {stop_step} of job g")), "{e}");
        let steps = std::fs::read_to_string(shared.join(format!("steps-{r}.log"))).expect("log");
        let steps: Vec<u64> = steps.lines().map(|l| l.parse().expect("a step")).collect();
        assert_eq!(steps, (1..=200).collect::<Vec<_>>(), "rank {r}: every step once, in order");
    }
    let g = show(&home, &shared, "g");
    assert_eq!(g["run"]["status"], "succeeded", "{g}");
    assert_eq!(g["run"]["attempts"].as_array().map(Vec::len), Some(1), "one earlier attempt: {g}");
    assert_eq!(g["run"]["checkpoint"], "g-a2-s0000000200", "{g}");
    assert_eq!(g["run"]["restored"], stopped, "{g}");
    // Its goodput (issue 26): the group's two attempts of three nodes, rank 0's steps, no step
    // run again (attempt 2 restored where attempt 1 stopped).
    let out = tap_cmd(&home, &shared, &["goodput", "g", "--output", "json"], "0").output().expect("tap goodput");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gp: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let nodes: Vec<Option<u64>> =
        gp["attempts"].as_array().expect("attempts").iter().map(|a| a["nodes"].as_u64()).collect();
    assert_eq!(nodes, [Some(3), Some(3)], "{gp}");
    assert_eq!((gp["steps_kept"].as_u64(), gp["wasted_steps"].as_u64()), (Some(200), Some(0)), "{gp}");

    // Another world size: refused without --restore all, with both sizes and the fix.
    let four = rank(&home, &shared, &["--resume", "g"], 0, 4, "0").wait_with_output().expect("wait");
    let e = text(&four.stderr);
    assert_eq!(four.status.code(), Some(1), "{e}");
    assert!(e.contains("committed by 3 ranks and this job has 4") && e.contains("--restore all"), "{e}");
    // With it, a rank gets every shard, each in rank-<r>/.
    let args = ["run", "-e", "llm", "--resume", "g", "--rank", "3", "--world-size", "4", "--restore", "all", "--"];
    let script = "for r in 0 1 2; do test -f \"$TAP_CHECKPOINT_DIR/rank-$r/shard.bin\" || exit 9; done";
    let all = tap_cmd(&home, &shared, &[&args[..], &["sh", "-c", script]].concat(), "0").output().expect("tap runs");
    assert_eq!(all.status.code(), Some(0), "every shard restored: {}", text(&all.stderr));

    // A shard found corrupt at restore: the step is refused with its rank named, and the
    // committed step before it is offered (--restore-step), which restores.
    let r1 = home.join("artifacts/checkpoints/llm/shards/g/a2/s200/r1.json");
    std::fs::write(&r1, b"{\"rank\": 1}").expect("corrupt rank 1's shard of step 200");
    let refused = rank(&home, &shared, &["--resume", "g"], 1, 3, "0").wait_with_output().expect("wait");
    let e = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{e}");
    assert!(
        e.contains("step 200 of job g cannot be restored") && e.contains("rank 1's shard is not the one committed"),
        "{e}"
    );
    let before: u64 = e
        .split("the committed step before it is ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a step offered: {e}"));
    assert!(before < 200 && e.contains(&format!("--restore-step {before}")), "{e}");
    let from = before.to_string();
    let args = ["run", "-e", "llm", "--resume", "g", "--rank", "1", "--world-size", "3", "--restore-step", &from, "--"];
    let script = format!("grep -q '\"step\": {before}' \"$TAP_CHECKPOINT_DIR/state.json\"");
    let older = tap_cmd(&home, &shared, &[&args[..], &["sh", "-c", &script]].concat(), "0").output().expect("tap runs");
    assert_eq!(older.status.code(), Some(0), "rank 1's shard of step {before}: {}", text(&older.stderr));
}

/// A disk that fills while one rank's shard of a step is being stored (on a 12 MiB tmpfs, in a
/// private mount namespace): rank 1 fills it right after writing its shard of step 20, so tap
/// cannot store that shard; it frees the disk 2 s later. Step 20 never commits (the job's
/// latest stays step 10 meanwhile), the training goes on, step 30 commits, and the shards of
/// step 20 that did land are removed once it has — nothing half-stored is ever restorable.
#[test]
fn a_disk_that_fills_during_one_ranks_shard_leaves_its_step_uncommitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let script = r#"set -u; T=$OUT/t; mkdir -p $T && mount -t tmpfs -o size=12m tmpfs $T || exit 99
export TAP_HOME=$T/home SHARD_SHARED=$OUT/shared SHARD_STEPS=40 SHARD_STEP_SECONDS=0.05 SHARD_FILL_RANK=1 SHARD_FILL_STEP=20
mkdir -p $SHARD_SHARED
for r in 0 1; do
  ( $TAP_BIN run -e llm --disk-reserve 1MiB --group g --rank $r --world-size 2 -- python3 $JOB > $OUT/out$r 2> $OUT/err$r; echo $? > $OUT/rc$r ) &
done
wait
find $TAP_HOME/artifacts/checkpoints/llm -name '*.json' | sed "s|$TAP_HOME/artifacts/checkpoints/llm/||" | sort > $OUT/stored
true"#;
    let ran = Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c", script])
        .env("TAP_BIN", env!("CARGO_BIN_EXE_tap"))
        .env("JOB", JOB)
        .env("OUT", out)
        .env_remove("TAP_HOME")
        .env_remove("TAP_EXPERIMENT")
        .env_remove("TAP_RUN_GROUP")
        .output()
        .expect("unshare");
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    for r in 0..2 {
        assert_eq!(read(&format!("rc{r}")).trim(), "0", "rank {r}: {}", read(&format!("err{r}")));
    }
    let err1 = read("err1");
    assert!(err1.contains("No space left on device") || err1.contains("disk is full"), "{err1}");
    let stored = read("stored");
    let commits: Vec<&str> = stored.lines().filter(|l| l.starts_with("commits/g/")).collect();
    assert_eq!(
        commits,
        ["commits/g/g-a1-s0000000010.json", "commits/g/g-a1-s0000000030.json", "commits/g/g-a1-s0000000040.json"],
        "step 20 never commits: {stored}"
    );
    assert!(!stored.contains("shards/g/a1/s20/"), "step 20's shards are removed once step 30 committed: {stored}");
}

/// Regression (tap gc and tap runs delete kept an experiment holding a sharded job's
/// checkpoints whole, freeing nothing there): gc follows shard manifests — a stray old object
/// goes, every object a shard names stays and the group still resumes — and `tap runs delete
/// GROUP` removes its commits, its shards and the objects only they named.
#[test]
fn gc_and_runs_delete_follow_a_sharded_jobs_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (home, shared) = (dir.path().join("home"), dir.path().join("shared"));
    std::fs::create_dir_all(&shared).expect("mkdir");
    let run = |args: &[&str]| tap_cmd(&home, &shared, args, "0.002").env("SHARD_STEPS", "20").output().expect("tap");
    let ranks: Vec<Child> = (0..2)
        .map(|r| {
            let (r, w) = (r.to_string(), "2".to_owned());
            let args = ["run", "-e", "gc", "--group", "g", "--rank", &r, "--world-size", &w, "--", "python3", JOB];
            tap_cmd(&home, &shared, &args, "0.002").env("SHARD_STEPS", "20").spawn().expect("tap starts")
        })
        .collect();
    for (r, out) in finish(ranks).iter().enumerate() {
        assert_eq!(out.status.code(), Some(0), "rank {r}: {}", text(&out.stderr));
    }
    let root = home.join("artifacts/checkpoints/gc");
    let objects = || std::fs::read_dir(root.join("objects")).map(|d| d.count()).unwrap_or(0);
    let stray = root.join("objects").join("0".repeat(64));
    std::fs::write(&stray, b"left by an upload that died").expect("stray");
    assert!(Command::new("touch").args(["-d", "2 days ago"]).arg(&stray).status().expect("touch").success());
    let before = objects();
    let gc = run(&["gc", "--keep-checkpoints", "1"]);
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    assert!(!text(&gc.stdout).contains("kept:"), "the experiment is no longer kept whole: {}", text(&gc.stdout));
    assert!(!stray.exists(), "the stray object went");
    assert_eq!(objects(), before - 1, "every object a shard names stayed");
    let check = "test -s \"$TAP_CHECKPOINT_DIR/shard.bin\"";
    let resumed =
        run(&["run", "-e", "gc", "--resume", "g", "--rank", "1", "--world-size", "2", "--", "sh", "-c", check]);
    assert_eq!(resumed.status.code(), Some(0), "still restorable after gc: {}", text(&resumed.stderr));

    let deleted = run(&["runs", "delete", "g"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert_eq!(objects(), 0, "the objects only its shards named went: {}", text(&deleted.stdout));
    for gone in ["commits/g", "shards/g"] {
        let left: Vec<_> = walk(&root.join(gone));
        assert!(left.is_empty(), "{gone}: {left:?}");
    }
}

/// Every file below `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() { stack.push(e.path()) } else { out.push(e.path()) }
        }
    }
    out
}
