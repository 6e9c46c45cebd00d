//! `tap run` against stores that block, hang or fail: the supervisor must keep draining the
//! command's output, act on a notice, and tell the truth in the record. The faults wrap the
//! real local stores (failure injection by wrapper); nothing here is timed — each test waits
//! for an event the broken behaviour would never produce, with a bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use tap_core::runs::{MetricPoint, Run, RunStatus};

use super::{EXIT_INTERRUPTED, RunOptions, run};
use crate::artifacts::local::LocalStore;
use crate::artifacts::{ObjectInfo, ObjectStore, Result as ObjResult};
use crate::store::sqlite::SqliteStore;
use crate::store::{LogLine, LogStore, Result as StoreResult, RunStore, StoreError};

/// How long a fault waits for the event that proves the supervisor alive.
const PROOF_WAIT: Duration = Duration::from_secs(30);

fn wait_for(path: &Path, limit: Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    while !path.exists() {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// What a fault does to one object-store call.
#[derive(Clone, Debug)]
enum Fault {
    /// put_file blocks its thread (not the blocking pool: a deliberately bad store) until
    /// `until` exists; records in `proof` whether it did.
    BlockPutUntil { until: PathBuf, proof: PathBuf },
    /// put_file of a file named `name` never returns.
    HangPut { name: String },
    /// get_file writes a partial temporary file beside its destination, writes `notice`, and
    /// never returns.
    HangGetAfterNotice { notice: PathBuf },
    /// The first put_file writes `started`, then waits (bounded) until `until` exists.
    HoldFirstPut { started: PathBuf, until: PathBuf },
}

#[derive(Clone)]
struct Faulty {
    inner: LocalStore,
    fault: Fault,
}

impl ObjectStore for Faulty {
    async fn put_file(&self, key: &str, src: &Path, sha256: &str) -> ObjResult<()> {
        match &self.fault {
            // The first call's finding counts (a later one, the final sync, would see the file).
            Fault::BlockPutUntil { until, proof } if !proof.exists() => {
                // The put blocks its thread, as a store stuck in a syscall would. block_in_place
                // hands this worker's other tasks to a new thread first: without it a task
                // left in this worker's LIFO slot (which other workers do not steal) could stall
                // with it, and the test failed now and then on a busy machine though the loop
                // never waited on the put.
                // A loop that awaited the put itself still stalls here, so the test can fail.
                let ok = tokio::task::block_in_place(|| wait_for(until, PROOF_WAIT));
                std::fs::write(proof, if ok { "seen" } else { "timed out" }).expect("proof");
            }
            Fault::HoldFirstPut { started, until } if !started.exists() => {
                std::fs::write(started, b"").expect("started");
                let bound = std::time::Instant::now() + PROOF_WAIT;
                while !until.exists() && std::time::Instant::now() < bound {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Fault::HangPut { name } if src.file_name().is_some_and(|n| n == name.as_str()) => {
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        self.inner.put_file(key, src, sha256).await
    }
    async fn get_file(&self, key: &str, dest: &Path, sha256: &str) -> ObjResult<()> {
        if let Fault::HangGetAfterNotice { notice } = &self.fault {
            let partial = dest.with_file_name(".partial.tmp-1");
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            std::fs::write(&partial, b"half").expect("partial");
            std::fs::write(notice, b"{}").expect("notice");
            let _cleanup = RemoveOnDrop(partial);
            std::future::pending::<()>().await;
        }
        self.inner.get_file(key, dest, sha256).await
    }
    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> ObjResult<()> {
        self.inner.put_bytes(key, bytes).await
    }
    async fn put_bytes_once(&self, key: &str, bytes: &[u8]) -> ObjResult<bool> {
        self.inner.put_bytes_once(key, bytes).await
    }
    async fn get_bytes(&self, key: &str) -> ObjResult<Option<Vec<u8>>> {
        self.inner.get_bytes(key).await
    }
    async fn exists(&self, key: &str) -> ObjResult<bool> {
        self.inner.exists(key).await
    }
    async fn list(&self, prefix: &str) -> ObjResult<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, keys: &[String]) -> ObjResult<()> {
        self.inner.delete(keys).await
    }
    fn bytes_moved(&self) -> u64 {
        self.inner.bytes_moved()
    }
}

/// A cancelled transfer removes its temporary file (as copy_verified does).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The run and log stores fail (as a full disk does) while `down` exists.
struct Flaky {
    inner: SqliteStore,
    down: PathBuf,
}

impl Flaky {
    fn check(&self) -> StoreResult<()> {
        if self.down.exists() { Err(StoreError::message("database or disk is full")) } else { Ok(()) }
    }
}

impl RunStore for Flaky {
    async fn create_run(&self, run: &Run) -> StoreResult<Run> {
        self.check()?;
        self.inner.create_run(run).await
    }
    async fn get_run(&self, e: &str, id: &str) -> StoreResult<Option<Run>> {
        self.inner.get_run(e, id).await
    }
    async fn update_run<F>(&self, e: &str, id: &str, f: F) -> StoreResult<Run>
    where
        F: Fn(&mut Run) + Send + Sync,
    {
        self.check()?;
        self.inner.update_run(e, id, f).await
    }
    async fn list_runs(&self, e: Option<&str>) -> StoreResult<crate::store::Runs> {
        self.inner.list_runs(e).await
    }
    async fn append_metrics(&self, e: &str, id: &str, points: &[MetricPoint]) -> StoreResult<()> {
        self.check()?;
        self.inner.append_metrics(e, id, points).await
    }
    async fn metrics(&self, e: &str, id: &str) -> StoreResult<Vec<MetricPoint>> {
        self.inner.metrics(e, id).await
    }
    async fn delete_run(&self, e: &str, id: &str) -> StoreResult<bool> {
        self.check()?;
        self.inner.delete_run(e, id).await
    }
}

impl LogStore for Flaky {
    async fn append_logs(&self, e: &str, id: &str, lines: &[LogLine]) -> StoreResult<()> {
        self.check()?;
        self.inner.append_logs(e, id, lines).await
    }
    async fn logs(&self, e: &str, id: &str) -> StoreResult<Vec<LogLine>> {
        self.inner.logs(e, id).await
    }
    async fn delete_logs(&self, e: &str, id: &str) -> StoreResult<()> {
        self.check()?;
        self.inner.delete_logs(e, id).await
    }
}

struct Env {
    dir: tempfile::TempDir,
    store: SqliteStore,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("tap.db")).expect("open");
        Env { dir, store }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn objects(&self) -> LocalStore {
        LocalStore::new(&self.path("objects"))
    }
    fn opts(&self, experiment: &str, script: &str) -> RunOptions {
        RunOptions {
            experiment: experiment.into(),
            resume: crate::supervisor::Resume::No,
            name: None,
            tags: Vec::new(),
            disk_reserve: 0,
            overrides: Default::default(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            interrupt_signal: Signal::SIGUSR1,
            checkpoint_deadline: Duration::from_secs(30),
            notice_file: Some(self.path("notice")),
            runtime: None,
            runs_dir: self.path("runs"),
            host: "test".into(),
            instance_id: None,
            node: None,
            membership: Default::default(),
        }
    }
}

/// The test's lines, one per call, so a shell script can say where it is.
fn sh_path(p: &Path) -> String {
    p.to_str().expect("utf-8").to_owned()
}

/// The loop drains the command's output and delivers the notice while the object store
/// blocks a thread committing a checkpoint. The command writes more than a pipe holds after
/// its checkpoint, then asks for the notice and waits for it: with a loop stuck behind the
/// store, its writes would block, the notice would never come, and the store would see no
/// proof within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_drains_output_and_delivers_a_notice_while_the_store_blocks() {
    let env = Env::new();
    let (got, proof) = (env.path("got-notice"), env.path("proof"));
    let objects =
        Faulty { inner: env.objects(), fault: Fault::BlockPutUntil { until: got.clone(), proof: proof.clone() } };
    let script = format!(
        r#"trap 'touch {got}; exit 0' USR1
echo weights > "$TAP_CHECKPOINT_DIR/w.bin"; echo '{{"checkpoint": true, "step": 1}}' >> "$TAP_METRICS_FILE"
i=0; while [ $i -lt 4000 ]; do echo "line $i padded to be longer than a pipe buffer holds"; i=$((i+1)); done
touch {notice}
n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; exit 9"#,
        got = sh_path(&got),
        notice = sh_path(&env.path("notice"))
    );
    let out = run(&env.store, &env.store, &env.store, &objects, &env.opts("block", &script)).await.expect("run");
    assert_eq!(
        std::fs::read_to_string(&proof).expect("the store was called"),
        "seen",
        "the notice reached the command while the store blocked"
    );
    assert_eq!(out.exit_code, EXIT_INTERRUPTED);
    let run = out.run.expect("recorded");
    assert_eq!(run.status, RunStatus::Interrupted);
    let logs = env.store.logs("block", &run.run_id).await.expect("logs");
    assert_eq!(logs.len(), 4000, "every line drained and recorded");
}

/// Regression (a notice while `--resume` restored killed tap by the signal itself, exit 138,
/// and left a partial temporary file): the restore is cancelled, tap exits 75, records
/// nothing, and the run's scratch directory is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_during_the_restore_exits_75_and_leaves_nothing() {
    let env = Env::new();
    let plain = env.objects();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("model.bin"), b"weights").expect("write");
    crate::artifacts::checkpoint::save(
        &plain,
        &crate::artifacts::checkpoint::CheckpointTarget::checkpoint("r", "old", "old-0001", Some(3)),
        &src,
    )
    .await
    .expect("save");
    let mut old = tap_core::runs::Run::new("r", "old", vec!["true".into()], "test", 1);
    old.status = tap_core::runs::RunStatus::Interrupted;
    old.checkpoint = Some("old-0001".into());
    crate::store::RunStore::create_run(&env.store, &old).await.expect("the interrupted run");
    let objects = Faulty { inner: plain, fault: Fault::HangGetAfterNotice { notice: env.path("notice") } };
    let mut opts = env.opts("r", "echo should not run; exit 1");
    opts.resume = crate::supervisor::Resume::Run("old".into());
    let out = tokio::time::timeout(PROOF_WAIT, run(&env.store, &env.store, &env.store, &objects, &opts))
        .await
        .expect("the notice ends the restore")
        .expect("run");
    assert_eq!(out.exit_code, EXIT_INTERRUPTED);
    assert!(out.run.is_none());
    let runs = env.store.list_runs(Some("r")).await.expect("list").runs;
    assert_eq!(
        runs.iter().map(|r| (r.run_id.as_str(), r.attempt(), r.status)).collect::<Vec<_>>(),
        [("old", 1, tap_core::runs::RunStatus::Interrupted)],
        "no record of an attempt that never started"
    );
    let left: Vec<_> =
        std::fs::read_dir(env.path("runs")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the scratch directory is removed: {left:?}");
}

/// Regression (the store failing mid-run made tap exit while its command kept running, and
/// the run stayed `running`): tap keeps supervising, buffers, catches up when the store is
/// back, and exits with the command's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_mid_run_never_orphans_the_command() {
    let env = Env::new();
    let down = env.path("down");
    let store = Flaky { inner: SqliteStore::open(&env.path("tap.db")).expect("open"), down: down.clone() };
    let script = format!(
        r#"for i in 1 2 3; do echo "before $i"; echo "{{\"step\": $i, \"loss\": 1}}" >> "$TAP_METRICS_FILE"; done
sleep 1.2; touch {down}
for i in 4 5 6; do echo "during $i"; echo "{{\"step\": $i, \"loss\": 1}}" >> "$TAP_METRICS_FILE"; done
sleep 2.5; rm {down}
for i in 7 8; do echo "after $i"; echo "{{\"step\": $i, \"loss\": 0.5}}" >> "$TAP_METRICS_FILE"; done
exit 4"#,
        down = sh_path(&down)
    );
    let out = run(&store, &env.store, &store, &env.objects(), &env.opts("flaky", &script)).await.expect("run");
    assert_eq!(out.exit_code, 4, "the command's status is tap's");
    let run = out.run.expect("recorded once the store was back");
    assert_eq!((run.status, run.exit_code), (RunStatus::Failed, Some(4)));
    let stored = env.store.get_run("flaky", &run.run_id).await.expect("get").expect("run");
    assert_eq!((stored.status, stored.metric_points), (RunStatus::Failed, 8));
    assert_eq!(
        env.store.logs("flaky", &run.run_id).await.expect("logs").len(),
        8,
        "lines from the outage recorded late"
    );
}

/// A notice pre-empts a periodic upload that would not land in time: it is cancelled, the
/// final checkpoint is committed, and LATEST never points at the cancelled one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_cancels_a_periodic_upload_that_would_not_land_in_time() {
    let env = Env::new();
    let objects = Faulty { inner: env.objects(), fault: Fault::HangPut { name: "slow.bin".into() } };
    let script = format!(
        r#"trap 'rm "$TAP_CHECKPOINT_DIR/slow.bin"; echo final > "$TAP_CHECKPOINT_DIR/final.bin"; echo "{{\"checkpoint\": true, \"step\": 20}}" >> "$TAP_METRICS_FILE"; exit 0' USR1
echo slow > "$TAP_CHECKPOINT_DIR/slow.bin"; echo '{{"checkpoint": true, "step": 10}}' >> "$TAP_METRICS_FILE"
sleep 0.5; touch {notice}
n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; exit 9"#,
        notice = sh_path(&env.path("notice"))
    );
    let out =
        tokio::time::timeout(PROOF_WAIT, run(&env.store, &env.store, &env.store, &objects, &env.opts("pre", &script)))
            .await
            .expect("the hanging upload did not hold tap")
            .expect("run");
    assert_eq!(out.exit_code, EXIT_INTERRUPTED);
    let run = out.run.expect("recorded");
    let latest = crate::artifacts::checkpoint::latest(&env.objects(), "pre").await.expect("latest").expect("one");
    assert_eq!(latest.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["final.bin"]);
    assert_eq!(run.checkpoint.as_deref(), Some(latest.checkpoint_id.as_str()));
    let verdict = run.interruption.and_then(|i| i.verdict).expect("a verdict");
    assert!(matches!(verdict, tap_core::commit::Verdict::Committed { .. }), "{verdict:?}");
}

/// Regression (a checkpoint the command replaced while it uploaded was refused as "changed",
/// and one announced while another uploaded was uploaded later with whatever the directory
/// held by then, under the wrong step): every announced checkpoint is sent as it was when
/// announced. The command replaces its file by rename (as tapml and the protocol say) while
/// the first upload is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_checkpoint_is_uploaded_as_announced_though_the_next_replaced_it() {
    let env = Env::new();
    let (started, until) = (env.path("upload-started"), env.path("release"));
    let objects =
        Faulty { inner: env.objects(), fault: Fault::HoldFirstPut { started: started.clone(), until: until.clone() } };
    let script = format!(
        r#"put() {{ echo "$1" > "$TAP_CHECKPOINT_DIR/w.bin.tmp"; mv "$TAP_CHECKPOINT_DIR/w.bin.tmp" "$TAP_CHECKPOINT_DIR/w.bin"; }}
put v1; echo '{{"checkpoint": true, "step": 1}}' >> "$TAP_METRICS_FILE"
n=0; while [ ! -e {started} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done
put v2; echo '{{"checkpoint": true, "step": 2}}' >> "$TAP_METRICS_FILE"
sleep 0.5
wc -c < "$TAP_METRICS_FILE" | tr -d ' \n' > {len}; cat "$TAP_CHECKPOINT_ACK" > {ack}
put v3; touch {until}; exit 0"#,
        started = sh_path(&started),
        until = sh_path(&until),
        len = sh_path(&env.path("metrics-len")),
        ack = sh_path(&env.path("ack-seen"))
    );
    let out = tokio::time::timeout(
        PROOF_WAIT * 2,
        run(&env.store, &env.store, &env.store, &objects, &env.opts("snap", &script)),
    )
    .await
    .expect("bounded")
    .expect("run");
    assert_eq!(out.exit_code, 0);
    let run = out.run.expect("recorded");
    let plain = env.objects();
    let mut seen = Vec::new();
    for n in 1..=3 {
        let id = format!("{}-{n:04}", run.run_id);
        let body = plain
            .get_bytes(&crate::artifacts::checkpoint::manifest_key("snap", &id))
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("checkpoint {id} was committed"));
        let m: tap_core::manifest::Manifest = serde_json::from_slice(&body).expect("manifest");
        seen.push((m.step, m.files.iter().map(|f| f.sha256.clone()).collect::<Vec<_>>()));
    }
    let sha = |v: &str| crate::artifacts::sha256_bytes(format!("{v}\n").as_bytes());
    assert_eq!(
        seen,
        [(Some(1), vec![sha("v1")]), (Some(2), vec![sha("v2")]), (Some(2), vec![sha("v3")])],
        "checkpoints 1 and 2 as announced; the final sync has what the command left"
    );
    let work = env.path("runs").join(&run.run_id);
    assert!(!work.exists(), "the scratch directory (snapshots, TAP_METRICS_FILE) goes once the store holds the run");
    assert_eq!(
        std::fs::read_to_string(env.path("ack-seen")).expect("ack"),
        std::fs::read_to_string(env.path("metrics-len")).expect("metrics length"),
        "TAP_CHECKPOINT_ACK is past the last checkpoint line once its snapshot was taken"
    );
}
