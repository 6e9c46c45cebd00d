//! Managed jobs end to end, with real processes on loopback: one moto (EC2 fleet, DynamoDB,
//! S3, CloudWatch, CloudWatch Logs, SSM with Run Command held for node agents), and per
//! simulated node a real tap-agent (own runtime dir, fake IMDS, job controller on) and an
//! SSM agent stand-in (tools/moto/ssm_node.py) that runs the controller's commands — so each
//! rank is a real `tap run` of tests/fixtures/mn_train.py. The submitting `tap launch` exits
//! at once; everything after is the fleet's own doing.
//!
//! `cargo test managed_job` runs these alone; each prints its timeline ending in
//! `steps lost: N`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tap_core::jobs::{JobRecord, JobState};
use tap_store::RunStore;
use tap_store::jobs::{JobEntry, JobStore};
use tap_test_support::{FakeImds, Moto, endpoint, free_port};

const TABLE: &str = "tap-dev-experiments";
const FIXTURE: &str = include_str!("../../../tap-cli/tests/fixtures/tap_config.json");
const STEPS: u64 = 400;

use tap_core::time::now_ms;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One simulated node: its agent and its SSM agent stand-in.
struct Node {
    id: String,
    dir: PathBuf,
    imds: FakeImds,
    agent: Option<Child>,
    ssm: Option<Child>,
}

impl Node {
    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The node goes away with everything on it (EC2 terminated it).
    fn vanish(&mut self) {
        for c in [self.ssm.take(), self.agent.take()].into_iter().flatten() {
            let mut c = c;
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let until = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.vanish();
    }
}

struct Fleet {
    moto: Moto,
    dir: tempfile::TempDir,
    sdk: aws_config::SdkConfig,
    fleet_id: String,
    requests: PathBuf,
    jobs: JobStore,
    runs: tap_store::dynamo::DynamoStore,
    nodes: Vec<Node>,
    /// Epoch ms when the fleet started: timeline times are relative to it.
    base_ms: i64,
}

impl Fleet {
    /// Moto with the stack's resources, a maintain fleet of `n` instances, tap's config.
    async fn new(n: i32) -> Fleet {
        Fleet::new_in(n, &[]).await
    }

    /// [`Fleet::new`] with one fleet override per AZ (moto fills them round robin).
    async fn new_in(n: i32, zones: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let requests = dir.path().join("requests.log");
        let moto = Moto::from_env_with(
            free_port(),
            &[("TAP_MOTO_REQUEST_LOG", requests.as_os_str()), ("TAP_MOTO_SSM_AGENTS", "1".as_ref())],
        );
        let sdk = tap_test_support::aws::sdk_config(&endpoint(moto.port));
        tap_test_support::aws::create_stack(&sdk, TABLE).await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let fleet_id = tap_test_support::aws::make_fleet_in(&sdk, n, zones).await;
        let f = Fleet {
            jobs: JobStore::new(dynamo.clone(), TABLE),
            runs: tap_store::dynamo::DynamoStore::new(dynamo, TABLE),
            moto,
            dir,
            sdk,
            fleet_id,
            requests,
            nodes: Vec::new(),
            base_ms: now_ms(),
        };
        let outputs = f.dir.path().join("outputs.json");
        let config = FIXTURE.replace("fleet-0123456789abcdef0", &f.fleet_id);
        std::fs::write(&outputs, format!("{{\"tap_config\": {{\"value\": {config}}}}}")).expect("outputs");
        let out = f.tap(&["stack", "import", outputs.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        f
    }

    /// Now, in ms since the fleet started.
    /// A fleet of `n` nodes, each with its agent and SSM stand-in, once one holds the lease.
    async fn running(n: i32) -> Fleet {
        let mut f = Fleet::new(n).await;
        for id in f.instances().await.into_iter().map(|n| n.instance_id) {
            f.start_node(&id);
        }
        wait_until(&f, "a node takes the lease", Duration::from_secs(60), async || holder(&f.jobs).await.is_some())
            .await;
        f
    }

    fn ms(&self) -> i64 {
        now_ms() - self.base_ms
    }

    fn tap_config(&self) -> PathBuf {
        self.dir.path().join("tap-config.toml")
    }

    /// A command whose AWS calls go to this fleet's moto, and nowhere else.
    fn aws(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("AWS_ENDPOINT_URL", endpoint(self.moto.port))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("TAP_OUTPUT");
        c
    }

    /// `tap` on the submitter's machine, with the imported stack.
    fn tap_command(&self, args: &[String]) -> Command {
        let mut c = self.aws(tap_test_support::workspace_bin("tap", env!("CARGO_BIN_EXE_tap-agent")));
        c.args(args).env("TAP_CONFIG", self.tap_config()).env("TAP_HOME", self.dir.path().join("cli-home"));
        c
    }

    fn tap(&self, args: &[&str]) -> std::process::Output {
        self.tap_command(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>()).output().expect("tap")
    }

    /// The fleet's instances, oldest first (EC2's view).
    async fn instances(&self) -> Vec<tap_fleet::launch::NodeInfo> {
        let f = tap_fleet::aws::Fleet::connect(&self.sdk, &self.fleet_id, "dev", "");
        f.describe()
            .await
            .expect("describe")
            .nodes
            .into_iter()
            .filter(|n| n.state == tap_core::fleet::InstanceState::Running)
            .collect()
    }

    /// Starts the agent and the SSM stand-in of instance `id`.
    fn start_node(&mut self, id: &str) {
        self.start_node_in(id, None);
    }

    /// [`Fleet::start_node`] with the AZ its instance metadata says (None: the fake's default).
    fn start_node_in(&mut self, id: &str, zone: Option<&str>) {
        let dir = self.dir.path().join(id);
        std::fs::create_dir_all(dir.join("run")).expect("node dir");
        let imds = FakeImds::start(id, "p3.2xlarge");
        if let Some(z) = zone {
            imds.state.lock().expect("imds").availability_zone = z.to_owned();
        }
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[aws]\nregion = \"us-east-1\"\ninstance_id = \"{id}\"\n\
                 [metrics]\nenvironment = \"dev\"\npublish_interval_seconds = 10\n\
                 [spool]\ndir = \"{d}/spool\"\n[node]\nruntime_dir = \"{d}/run\"\nfleet_id = \"{fleet}\"\n\
                 [health]\nstate_file = \"{d}/health.json\"\nkernel_log = \"{d}/kmsg\"\n\
                 [spot]\npoll_seconds = 1\nimds_endpoint = \"{imds}\"\n\
                 [jobs]\ncontroller = true\ntable = \"{TABLE}\"\nlog_group = \"/tap/dev/training\"\n",
                d = dir.display(),
                imds = imds.endpoint(),
                fleet = self.fleet_id,
            ),
        )
        .expect("agent config");
        let log = std::fs::File::create(dir.join("agent.log")).expect("log");
        let agent = self
            .aws(env!("CARGO_BIN_EXE_tap-agent"))
            .args(["--config", config.to_str().expect("utf-8"), "run", "--simulate", "1"])
            .env("TAP_AGENT_LOG", "info,tap_agent::controller=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tap-agent starts");
        let tap = tap_test_support::workspace_bin("tap", env!("CARGO_BIN_EXE_tap-agent"));
        let path =
            format!("{}:{}", tap.parent().expect("bin dir").display(), std::env::var("PATH").unwrap_or_default());
        let ssm_log = std::fs::File::create(dir.join("ssm.log")).expect("log");
        let ssm = self
            .aws("python3")
            .arg(repo().join("tools/moto/ssm_node.py"))
            .args(["--endpoint", &endpoint(self.moto.port), "--instance", id])
            .args(["--config", self.tap_config().to_str().expect("utf-8")])
            .args(["--log-dir", dir.join("commands").to_str().expect("utf-8")])
            .env("PATH", path)
            .env("TAP_RUNTIME_DIR", dir.join("run"))
            .env("TAP_HOME", dir.join("home"))
            .stdout(Stdio::null())
            .stderr(ssm_log)
            .spawn()
            .expect("ssm stand-in starts");
        self.nodes.push(Node { id: id.to_owned(), dir, imds, agent: Some(agent), ssm: Some(ssm) });
    }

    fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }

    fn log_of(&self, id: &str) -> String {
        self.nodes.iter().find(|n| n.id == id).expect("node").agent_log()
    }

    /// The job, once `tap launch` wrote it.
    async fn job(&self, id: &str) -> Option<JobRecord> {
        match self.jobs.get(id).await.expect("get job") {
            Some(JobEntry::Job { job, .. }) => Some(*job),
            None => None,
            Some(other) => panic!("job {id}: {other:?}"),
        }
    }

    /// Waits (bounded) until `cond` holds for the job; returns it then.
    async fn wait_job(&self, id: &str, what: &str, limit: Duration, cond: impl Fn(&JobRecord) -> bool) -> JobRecord {
        let until = Instant::now() + limit;
        loop {
            let j = self.job(id).await;
            if let Some(j) = j.as_ref().filter(|j| cond(j)) {
                return j.clone();
            }
            if Instant::now() >= until {
                self.dump();
                panic!("timed out after {limit:?} waiting for {what}: {j:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The run of `rank` in the job's attempt `attempt`, once it recorded itself.
    async fn rank_run(&self, job: &JobRecord, attempt: u32, rank: u32) -> Option<tap_core::runs::Run> {
        let runs = self.runs.list_runs(Some(&job.spec.experiment)).await.expect("runs").runs;
        runs.into_iter().find(|r| {
            r.group.as_deref() == Some(&job.id) && r.node_rank == Some(rank) && r.job_attempt == Some(attempt)
        })
    }

    /// Every node's logs, for a failure.
    fn dump(&self) {
        for n in &self.nodes {
            eprintln!("==== {} agent.log (tail)", n.id);
            let log = n.agent_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
            if let Ok(rd) = std::fs::read_dir(n.dir.join("commands")) {
                for e in rd.flatten() {
                    eprintln!("==== {} {}", n.id, e.path().display());
                    eprintln!("{}", std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
            eprintln!("==== {} ssm.log", n.id);
            eprintln!("{}", std::fs::read_to_string(n.dir.join("ssm.log")).unwrap_or_default());
        }
    }

    /// The controller's requests so far (its SDK app name), and all of them by action.
    fn controller_requests(&self) -> usize {
        tap_test_support::requests_matching(&self.requests, |_, _, app| app == "tap-controller")
    }

    /// EC2 reclaims `id`: the spot notice in its IMDS, two minutes ahead.
    fn notice(&mut self, id: &str) -> i64 {
        let deadline = now_ms() + 120_000;
        let body = format!(r#"{{"action": "terminate", "time": "{}"}}"#, tap_core::time::rfc3339(deadline));
        self.node(id).imds.set_instance_action(Some(&body));
        deadline
    }

    /// EC2 terminates `id` (the maintain fleet launches a replacement); returns the new one.
    async fn terminate(&mut self, id: &str) -> String {
        let before: Vec<String> = self.instances().await.into_iter().map(|n| n.instance_id).collect();
        self.node(id).vanish();
        aws_sdk_ec2_terminate(&self.sdk, id).await;
        let after = self.instances().await;
        after.into_iter().map(|n| n.instance_id).find(|i| !before.contains(i)).expect("a replacement instance")
    }

    /// The `tap launch` arguments of a 2-node job of mn_train.py.
    fn launch_args(&self, id: &str, experiment: &str) -> Vec<String> {
        let collective = self.dir.path().join("collective");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mn_train.py");
        [
            "launch",
            "-n",
            "2",
            "-e",
            experiment,
            "--group",
            id,
            "--user",
            "tester",
            "--env",
            &format!("TAP_TEST_COLLECTIVE={}", collective.display()),
            "--env",
            &format!("TAP_TEST_STEPS={STEPS}"),
            "--env",
            "TAP_EXAMPLE_STEP_SECONDS=0.05",
            "--",
            "python3",
            script.to_str().expect("utf-8"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    /// Submits a 2-node job of mn_train.py with `tap launch`, which must return at once.
    fn submit(&self, id: &str, experiment: &str) -> Duration {
        let args = self.launch_args(id, experiment);
        let t = Instant::now();
        let out = self.tap(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        t.elapsed()
    }

    /// Submits with `tap launch --follow`, which watches until the job ends.
    fn submit_following(&self, id: &str, experiment: &str) -> Child {
        let mut args = self.launch_args(id, experiment);
        args.insert(1, "--follow".into());
        self.tap_command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tap launch --follow")
    }

    /// Every step of the job exactly once: attempt 1's rank 0 steps up to the checkpoint
    /// attempt 2 resumed from, then attempt 2's. Returns the steps attempt 1 did beyond it.
    async fn steps_lost(&self, job: &JobRecord) -> (u64, u64) {
        let mut all = Vec::new();
        let mut lost = 0;
        let mut resumed_at = 0;
        let attempts: Vec<u32> = job.attempts.iter().map(|a| a.number).collect();
        for (k, &a) in attempts.iter().enumerate() {
            let run = self.rank_run(job, a, 0).await.expect("rank 0 run");
            let points = self.runs.metrics(&job.spec.experiment, &run.run_id).await.expect("metrics");
            let steps: Vec<u64> = points.iter().filter(|p| p.name == "loss").map(|p| p.step).collect();
            let next_start = match attempts.get(k + 1) {
                Some(&b) => {
                    let next = self.rank_run(job, b, 0).await.expect("next rank 0 run");
                    let p = self.runs.metrics(&job.spec.experiment, &next.run_id).await.expect("metrics");
                    p.iter().filter(|p| p.name == "loss").map(|p| p.step).min().expect("next trained") - 1
                }
                None => u64::MAX,
            };
            if k + 1 < attempts.len() {
                resumed_at = next_start;
                lost += steps.iter().filter(|&&s| s > next_start).count() as u64;
            }
            all.extend(steps.into_iter().filter(|&s| s <= next_start));
        }
        assert_eq!(all, (1..=STEPS).collect::<Vec<u64>>(), "every step of the job exactly once");
        (lost, resumed_at)
    }
}

async fn aws_sdk_ec2_terminate(sdk: &aws_config::SdkConfig, id: &str) {
    let f = tap_fleet::aws::Fleet::connect(sdk, "x", "dev", "");
    f.ec2.terminate_instances().instance_ids(id).send().await.expect("TerminateInstances");
}

/// Waits (bounded) for `cond`; on a timeout, prints every node's logs.
async fn wait_until(f: &Fleet, what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + limit;
    while !cond().await {
        if Instant::now() >= until {
            f.dump();
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node whose agent holds the lease now.
async fn holder(jobs: &JobStore) -> Option<String> {
    jobs.read_lease().await.expect("lease").and_then(|l| l.holder)
}

/// A reclaim of rank 1's node mid-job, on a 2-node fleet: the job relaunches on the
/// replacement the fleet launches and finishes with every step exactly once; the submitting
/// CLI exited right after submitting. Also measures the idle controller's requests.
#[tokio::test(flavor = "multi_thread")]
async fn managed_job_heals_a_reclaimed_rank_on_the_replacement() {
    let mut f = Fleet::running(2).await;
    // A corrupt job item first in the queue: the controller marks it failed and goes on.
    aws_sdk_dynamodb::Client::new(&f.sdk)
        .put_item()
        .table_name(TABLE)
        .item("experiment_id", aws_sdk_dynamodb::types::AttributeValue::S(tap_store::jobs::JOBS_PARTITION.into()))
        .item("run_id", aws_sdk_dynamodb::types::AttributeValue::S("00000000T000000Z-broken".into()))
        .item("kind", aws_sdk_dynamodb::types::AttributeValue::S("job".into()))
        .item("state", aws_sdk_dynamodb::types::AttributeValue::S("queued".into()))
        .item("version", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
        .item("body", aws_sdk_dynamodb::types::AttributeValue::S("{\"id\": 7".into()))
        .send()
        .await
        .expect("corrupt item");
    let submit_took = f.submit("job-reclaim", "mj1");
    let t_submit = f.ms();
    let (jobs_from, t_jobs) = (f.controller_requests(), Instant::now());
    let job =
        f.wait_job("job-reclaim", "attempt 1 running", Duration::from_secs(90), |j| j.state == JobState::Running).await;
    let t_launched = f.ms();
    let rank1 = job.current().expect("attempt").nodes[1].instance_id.clone();
    // Training past its first checkpoint on rank 0.
    wait_until(&f, "rank 0's first checkpoint", Duration::from_secs(90), async || {
        f.rank_run(&job, 1, 0).await.is_some_and(|r| r.checkpoint.is_some())
    })
    .await;

    let _deadline = f.notice(&rank1);
    let t_notice = f.ms();
    let rank0_ckpt = f.rank_run(&job, 1, 0).await.and_then(|r| r.checkpoint);
    let mut t_ckpt = 0;
    wait_until(&f, "rank 0's final checkpoint and rank 1 interrupted", Duration::from_secs(60), async || {
        let r0 = f.rank_run(&job, 1, 0).await;
        if t_ckpt == 0 && r0.as_ref().is_some_and(|r| r.checkpoint != rank0_ckpt && r.status.is_final()) {
            t_ckpt = f.ms();
        }
        let r1 = f.rank_run(&job, 1, 1).await;
        t_ckpt > 0 && r1.is_some_and(|r| r.status == tap_core::runs::RunStatus::Interrupted)
    })
    .await;
    let ended =
        f.wait_job("job-reclaim", "attempt 1 ended", Duration::from_secs(60), |j| j.attempts[0].end.is_some()).await;
    let t_cancelled = ended.attempts[0].ended_ms.expect("ended") - f.base_ms;
    assert!(
        matches!(&ended.attempts[0].end, Some(tap_core::jobs::AttemptEnd::SpotReclaim { rank: 1, instance_id }) if *instance_id == rank1),
        "{:?}",
        ended.attempts[0].end
    );
    // EC2 terminates the node; the maintain fleet launches a replacement, which boots (its
    // agent starts) and reports.
    let t_term = f.ms();
    let replacement = f.terminate(&rank1).await;
    let t_boot = f.ms();
    f.start_node(&replacement);
    let fleet = tap_fleet::aws::Fleet::connect(&f.sdk, &f.fleet_id, "dev", "");
    let mut t_healthy = 0;
    let until = Instant::now() + Duration::from_secs(120);
    let job = loop {
        if t_healthy == 0
            && let Ok(s) = fleet.nodes(now_ms()).await
            && s.nodes.iter().any(|n| n.instance_id == replacement && n.unfit().is_none())
        {
            t_healthy = f.ms();
        }
        let j = f.job("job-reclaim").await.expect("job");
        if j.attempts.len() == 2 && j.state == JobState::Running {
            break j;
        }
        if Instant::now() >= until {
            f.dump();
            panic!("attempt 2 did not start within 120 s: {j:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let t_relaunched = job.attempts[1].started_ms - f.base_ms;
    assert!(job.attempts[1].nodes.iter().any(|n| n.instance_id == replacement), "relaunched on the replacement");
    assert!(job.attempts[1].nodes.iter().all(|n| n.instance_id != rank1));
    let done = f.wait_job("job-reclaim", "the job to succeed", Duration::from_secs(120), |j| j.state.is_final()).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    let during = f.controller_requests() - jobs_from;
    let during_per_hour = during as f64 * 3600.0 / t_jobs.elapsed().as_secs_f64();
    let run2 = f.rank_run(&done, 2, 0).await.expect("attempt 2 rank 0");
    let first_new_step = f.runs.metrics(&done.spec.experiment, &run2.run_id).await.expect("metrics")[0].ts_ms;
    let t_first = first_new_step - f.base_ms;
    let (lost, resumed_at) = f.steps_lost(&done).await;
    let broken = f.tap(&["jobs", "show", "00000000T000000Z-broken"]);
    let said = String::from_utf8_lossy(&broken.stderr).into_owned();
    assert!(
        said.starts_with("tap: error: job 00000000T000000Z-broken is corrupt: its body is not a job record")
            && said.trim_end().ends_with("the controller marked it failed"),
        "{said}"
    );
    let logs = String::from_utf8_lossy(&f.tap(&["jobs", "logs", "job-reclaim"]).stdout).into_owned();
    assert!(logs.contains("rank 0: resumed at step") && logs.contains("rank 0: done at step 400"), "{logs}");
    let show = String::from_utf8_lossy(&f.tap(&["jobs", "show", "job-reclaim"]).stdout).into_owned();
    assert!(show.contains("spot reclaim of rank 1's node") && show.contains("downtime"), "{show}");
    // The job is one run; its relaunch is attempt 2 of it, which restored the job's own
    // checkpoint (as its rank 0 recorded from the restore itself).
    let job_run = f.runs.get_run(&done.spec.experiment, "job-reclaim").await.expect("get").expect("the job's run");
    assert_eq!((job_run.attempt(), job_run.attempts[0].number), (2, 1), "{job_run:?}");
    let restored = job_run.restored.as_deref().expect("attempt 2 restored a checkpoint");
    assert!(restored.starts_with("job-reclaim-"), "the job's own checkpoint: {restored}");
    assert_eq!(run2.restored.as_deref(), Some(restored));
    assert!(show.contains(&format!("resumed from {restored}")), "{show}");
    // A job of two nodes is sharded (issue 25): what attempt 2 restored is a step commit
    // naming each rank's own shard (distinct: each rank checkpoints its own state, and the
    // fixture exits 3 if handed another rank's), every one stored and pinned by its digest.
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&f.sdk).force_path_style(true).build());
    let key = format!("tap/checkpoints/{}/commits/job-reclaim/{restored}.json", done.spec.experiment);
    let got = s3.get_object().bucket("ml-model-artifacts-dev").key(&key).send().await.expect("the step's commit");
    let body = got.body.collect().await.expect("its body").into_bytes();
    let commit = tap_core::shards::StepCommit::parse(&body).expect("a step commit");
    assert_eq!((commit.world_size, commit.attempt), (2, 1), "{commit:?}");
    assert_ne!(commit.shards[0].manifest_sha256, commit.shards[1].manifest_sha256, "each rank's own shard");
    assert_eq!(Some(commit.step), job_run.restored_step, "{commit:?}");
    // Its goodput (issue 26), against the timeline the job's records hold: two attempts of
    // two nodes, the first from the controller's launch to its end, the gap before the
    // relaunch waiting for capacity (the replacement's boot), no step re-run.
    let gp = f.tap(&["goodput", "job-reclaim", "--output", "json"]);
    assert!(gp.status.success(), "{}", String::from_utf8_lossy(&gp.stderr));
    let gp: serde_json::Value = serde_json::from_slice(&gp.stdout).expect("goodput JSON");
    let a = gp["attempts"].as_array().expect("attempts");
    assert_eq!(a.len(), 2, "{gp}");
    assert_eq!((a[0]["nodes"].as_u64(), a[1]["nodes"].as_u64()), (Some(2), Some(2)), "{gp}");
    assert_eq!(a[0]["started_ms"].as_i64(), Some(job_run.attempts[0].started_ms), "{gp}");
    assert_eq!(a[1]["started_ms"].as_i64(), job_run.attempt_started_ms, "{gp}");
    assert_eq!(a[1]["started_ms"].as_i64(), Some(done.attempts[1].started_ms), "the controller's relaunch: {gp}");
    let (end1, start2) = (a[0]["ended_ms"].as_i64().expect("end"), a[1]["started_ms"].as_i64().expect("start"));
    let waiting = gp["badput"]["infrastructure_recovery"]["waiting_for_capacity"]["s"].as_f64().expect("waiting");
    assert!(((start2 - end1).max(0) as f64 / 1000.0 - waiting).abs() < 0.002, "{gp}");
    let total = gp["total_s"].as_f64().expect("total");
    let span = (a[1]["ended_ms"].as_i64().expect("end") - a[0]["started_ms"].as_i64().expect("start")) as f64 / 1000.0;
    assert!((total - span).abs() < 0.002 || end1 > start2, "{gp}");
    assert_eq!((gp["steps_kept"].as_u64(), gp["wasted_steps"].as_u64()), (Some(400), Some(lost)), "{gp}");
    assert_eq!(a[0]["status"], "interrupted", "{gp}");
    assert!(a[0]["why"].as_str().is_some_and(|w| w.starts_with("spot-interruption")), "{gp}");
    let pools = f.tap(&["fleet", "pools", "--output", "json"]);
    let pools: serde_json::Value = serde_json::from_slice(&pools.stdout).expect("pools JSON");
    let spot: u64 = pools["pools"].as_array().expect("pools").iter().filter_map(|p| p["interruptions"].as_u64()).sum();
    assert!(spot >= 1, "rank 1's reclaim is in its pool: {pools}");
    // The idle controller (the job is over): every request it makes over one minute.
    let (idle_from, t0) = (f.controller_requests(), Instant::now());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = f.controller_requests() - idle_from;
    let idle_per_hour = idle as f64 * 3600.0 / t0.elapsed().as_secs_f64();
    let boot = t_boot - t_term;
    eprintln!(
        "managed_job_heals_a_reclaimed_rank_on_the_replacement (ms since the fleet started):\n  \
         tap launch returned in {} ms (job submitted at +{t_submit}); attempt 1 running at +{t_launched}\n  \
         spot notice for rank 1 ({rank1}):      +{t_notice}\n  \
         rank 0's final checkpoint committed:    +{t_ckpt}\n  \
         ranks cancelled, attempt 1 ended:       +{t_cancelled}\n  \
         node terminated, replacement launched:  +{t_term} .. +{t_boot} ({replacement})\n  \
         replacement healthy (agent reporting):  +{t_healthy}\n  \
         relaunched (attempt 2 running):         +{t_relaunched}\n  \
         first new step (resumed at step {resumed_at}):  +{t_first}\n  \
         time to recover, EC2 boot excluded:     {} ms\n  \
         controller requests: idle {idle_per_hour:.0}/h ({idle} in {:.0} s), during the job {during_per_hour:.0}/h\n  \
         steps lost: {lost}",
        submit_took.as_millis(),
        t_first - t_notice - boot,
        t0.elapsed().as_secs_f64().min(60.0),
    );
    assert_eq!(lost, 0, "no step lost: the final checkpoint was at the step the job stopped");
    assert!(idle_per_hour <= 720.0, "an idle controller makes at most 1 request per 5 s: {idle_per_hour:.0}/h");
}

/// The controller's own node is reclaimed mid-job: its agent hands the lease over at the
/// notice, the next node in line takes it and heals the job from the table's state — the
/// relaunch is made by the new controller, on the two nodes left.
#[tokio::test(flavor = "multi_thread")]
async fn managed_job_heals_after_the_leaders_node_is_reclaimed() {
    let mut f = Fleet::running(3).await;
    let leader = holder(&f.jobs).await.expect("holder");
    f.submit("job-leader", "mj2");
    let job =
        f.wait_job("job-leader", "attempt 1 running", Duration::from_secs(90), |j| j.state == JobState::Running).await;
    let ranks: Vec<String> = job.attempts[0].nodes.iter().map(|n| n.instance_id.clone()).collect();
    assert!(ranks.contains(&leader), "the oldest nodes run the job, the leader among them: {ranks:?} {leader}");
    wait_until(&f, "rank 0's first checkpoint", Duration::from_secs(90), async || {
        f.rank_run(&job, 1, 0).await.is_some_and(|r| r.checkpoint.is_some())
    })
    .await;

    f.notice(&leader);
    let t_notice = f.ms();
    let mut t_handover = 0;
    let mut new_leader = String::new();
    wait_until(&f, "another node takes the lease", Duration::from_secs(60), async || match holder(&f.jobs).await {
        Some(h) if h != leader => {
            t_handover = f.ms();
            new_leader = h;
            true
        }
        _ => false,
    })
    .await;
    let lease = f.jobs.read_lease().await.expect("lease").expect("item");
    assert_eq!(lease.epoch, 2, "one take-over");
    let ended =
        f.wait_job("job-leader", "attempt 1 ended", Duration::from_secs(60), |j| j.attempts[0].end.is_some()).await;
    let t_ended = ended.attempts[0].ended_ms.expect("ended") - f.base_ms;
    let t_term = f.ms();
    let replacement = f.terminate(&leader).await;
    f.start_node(&replacement);
    let job = f
        .wait_job("job-leader", "attempt 2 running", Duration::from_secs(120), |j| {
            j.attempts.len() == 2 && j.state == JobState::Running
        })
        .await;
    let t_relaunched = job.attempts[1].started_ms - f.base_ms;
    let done = f.wait_job("job-leader", "the job to succeed", Duration::from_secs(120), |j| j.state.is_final()).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert!(job.attempts[1].launched_by.starts_with(&format!("{new_leader}#2")), "{:?}", job.attempts[1]);
    assert!(job.attempts[1].nodes.iter().all(|n| n.instance_id != leader));
    let run2 = f.rank_run(&done, 2, 0).await.expect("attempt 2 rank 0");
    let t_first = f.runs.metrics(&done.spec.experiment, &run2.run_id).await.expect("metrics")[0].ts_ms - f.base_ms;
    let (lost, resumed_at) = f.steps_lost(&done).await;
    let new_log = f.log_of(&new_leader);
    assert!(new_log.contains("took the lease"), "{new_log}");
    // The idle controller of this 3-node fleet (the job is over), over one minute.
    let (idle_from, t0) = (f.controller_requests(), Instant::now());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = f.controller_requests() - idle_from;
    let idle_per_hour = idle as f64 * 3600.0 / t0.elapsed().as_secs_f64();
    if std::env::var_os("TAP_TEST_VERBOSE").is_some() {
        for n in &f.nodes {
            for l in n.agent_log().lines().filter(|l| l.contains("lease")) {
                eprintln!("{} {l}", n.id);
            }
        }
    }
    eprintln!(
        "managed_job_heals_after_the_leaders_node_is_reclaimed (ms since the fleet started):\n  \
         spot notice for the leader {leader} (rank {}): +{t_notice}\n  \
         lease handed over, {new_leader} leads (epoch 2): +{t_handover}\n  \
         attempt 1 ended ({}):  +{t_ended}\n  \
         old leader's node terminated:           +{t_term} (replacement {replacement})\n  \
         relaunched by the new leader:           +{t_relaunched}\n  \
         first new step (resumed at step {resumed_at}):  +{t_first}\n  \
         time to recover (no EC2 boot needed: a spare node): {} ms\n  \
         controller requests, 3 nodes idle: {idle_per_hour:.0}/h ({idle} in 60 s)\n  \
         steps lost: {lost}",
        ended.attempts[0].nodes.iter().find(|n| n.instance_id == leader).map_or(9, |n| n.rank),
        ended.attempts[0].end.as_ref().map(tap_core::jobs::AttemptEnd::describe).unwrap_or_default(),
        t_first - t_notice,
    );
    assert_eq!(lost, 0);
    assert!(idle_per_hour <= 720.0, "an idle controller makes at most 1 request per 5 s: {idle_per_hour:.0}/h");
}

/// Two agents both believe they lead: the holder is frozen (SIGSTOP: a VM pause, a stalled
/// disk) past its lease, the next node takes over, and a job is submitted meanwhile; then
/// the old holder wakes up still believing it leads. Exactly one launch happens — by the new
/// holder — and the woken one stands down at its first renewal (fenced writes would refuse it
/// anyway).
#[tokio::test(flavor = "multi_thread")]
async fn managed_job_two_leaders_launch_once() {
    let mut f = Fleet::running(3).await;
    let first = holder(&f.jobs).await.expect("holder");
    let pid = f.node(&first).agent.as_ref().expect("agent").id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    let t_stop = f.ms();
    let mut second = String::new();
    wait_until(&f, "another node takes the stale lease", Duration::from_secs(150), async || {
        match holder(&f.jobs).await {
            Some(h) if h != first => {
                second = h;
                true
            }
            _ => false,
        }
    })
    .await;
    let t_takeover = f.ms();
    let sends = || tap_test_support::requests_matching(&f.requests, |s, a, _| s == "ssm" && a == "SendCommand");
    let follower = f.submit_following("job-once", "mj3");
    let job =
        f.wait_job("job-once", "attempt 1 running", Duration::from_secs(90), |j| j.state == JobState::Running).await;
    // The frozen holder wakes up, believing it leads.
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
    let t_wake = f.ms();
    wait_until(&f, "the woken holder to stand down", Duration::from_secs(60), async || {
        f.log_of(&first).contains("lost the lease")
    })
    .await;
    let done = f.wait_job("job-once", "the job to succeed", Duration::from_secs(120), |j| j.state.is_final()).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(done.attempts.len(), 1, "one attempt");
    assert_eq!(sends(), 2, "exactly one launch: one SendCommand per rank");
    assert!(job.attempts[0].launched_by.starts_with(&format!("{second}#2")), "{:?}", job.attempts[0]);
    assert!(!f.log_of(&first).contains("job launched"), "the woken holder never launched");
    let (lost, _) = f.steps_lost(&done).await;
    // `tap launch --follow` watched it all and ends with the job.
    let watched = follower.wait_with_output().expect("follow");
    let said = String::from_utf8_lossy(&watched.stdout).into_owned();
    assert!(watched.status.success(), "{said}\n{}", String::from_utf8_lossy(&watched.stderr));
    assert!(
        said.starts_with("job job-once queued: 2 node(s), experiment mj3\n")
            && said.contains("attempt 1 on rank 0 i-")
            && said.contains("rank 0: done at step 400")
            && said.trim_end().ends_with("job job-once succeeded: succeeded"),
        "{said}"
    );
    eprintln!(
        "managed_job_two_leaders_launch_once (ms since the fleet started):\n  \
         holder {first} frozen (SIGSTOP):          +{t_stop}\n  \
         {second} took the stale lease (epoch 2):  +{t_takeover} ({} s after the freeze)\n  \
         job launched once, by {second}; {first} woke at +{t_wake} and stood down\n  \
         SendCommand requests: {}\n  \
         steps lost: {lost}",
        (t_takeover - t_stop) / 1000,
        sends(),
    );
}

/// Issue 22: a 2-node job on a fleet with one node in each of two AZs waits with the line that
/// says so, instead of spanning them; a second node in one AZ lets it start there, every rank
/// in that AZ, and its record carries the network its ranks used (nothing crossed).
#[tokio::test(flavor = "multi_thread")]
async fn managed_job_waits_for_one_az_then_starts_there() {
    let mut f = Fleet::new_in(2, &["us-east-1a", "us-east-1b"]).await;
    let nodes = f.instances().await;
    let mut zones: Vec<&str> = nodes.iter().filter_map(|n| n.availability_zone.as_deref()).collect();
    zones.sort_unstable();
    assert_eq!(zones, ["us-east-1a", "us-east-1b"], "one node in each AZ: {nodes:?}");
    for n in &nodes {
        f.start_node_in(&n.instance_id, n.availability_zone.as_deref());
    }
    wait_until(&f, "a node takes the lease", Duration::from_secs(60), async || holder(&f.jobs).await.is_some()).await;
    f.submit("job-az", "mj4");
    let line = "needs 2 healthy nodes in one AZ: us-east-1a has 1, us-east-1b 1";
    let waiting = f
        .wait_job("job-az", "the job to wait for one AZ", Duration::from_secs(90), |j| {
            j.waiting.as_deref() == Some(line)
        })
        .await;
    assert_eq!((waiting.state, waiting.attempts.len()), (JobState::Queued, 0), "{waiting:#?}");
    let shown = f.tap(&["jobs", "show", "job-az"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(&format!("waiting:     {line}\n")), "{text}");

    // One more node: moto's diversified fleet starts again at its first override, us-east-1a.
    let out = f.tap(&["fleet", "scale", "3", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let third = f
        .instances()
        .await
        .into_iter()
        .find(|n| !nodes.iter().any(|o| o.instance_id == n.instance_id))
        .expect("a third instance");
    assert_eq!(third.availability_zone.as_deref(), Some("us-east-1a"));
    f.start_node_in(&third.instance_id, Some("us-east-1a"));
    let job = f
        .wait_job("job-az", "the job to start in one AZ", Duration::from_secs(120), |j| j.state == JobState::Running)
        .await;
    let a = job.current().expect("attempt");
    assert!(
        a.nodes.iter().all(|n| n.availability_zone.as_deref() == Some("us-east-1a")) && !a.cross_az,
        "every rank in us-east-1a: {a:#?}"
    );
    assert!(a.nodes.iter().any(|n| n.instance_id == third.instance_id));
    let job = f
        .wait_job("job-az", "the attempt's network read", Duration::from_secs(60), |j| {
            j.current().and_then(|a| a.traffic.as_ref()).is_some_and(|t| t.len() == 2)
        })
        .await;
    assert_eq!(job.network().cross_az_bytes, 0, "one AZ: nothing crossed");
    let done = f.wait_job("job-az", "the job to end", Duration::from_secs(120), |j| j.state.is_final()).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    let shown = f.tap(&["jobs", "show", "job-az"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("placement:   one AZ per attempt (us-east-1a)\n") && text.contains("; cross-AZ 0.00 GB ($0.00 "),
        "{text}"
    );
    let json = f.tap(&["jobs", "show", "job-az", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["network"]["cross_az_bytes"], 0);
    assert_eq!(v["job"]["attempts"][0]["cross_az"], false);

    // A scale-down keeps the nodes together: the one outside us-east-1a goes (EC2 would pick
    // by pool capacity, whatever the AZ), and the fleet does not replace it.
    let out = f.tap(&["fleet", "scale", "2", "--yes"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("(us-east-1b) (the nodes left stay together)"), "{said}");
    let left = f.instances().await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|n| n.availability_zone.as_deref() == Some("us-east-1a")), "{left:?}");
}
