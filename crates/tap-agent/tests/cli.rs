//! Runs the real `tap-agent` binary.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tap-agent"))
        .args(args)
        .env_remove("TAP_AGENT_CONFIG")
        .output()
        .expect("tap-agent runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_names_the_binary() {
    let out = agent(&["--version"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), format!("tap-agent {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_teaches_with_examples() {
    let out = agent(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("--check-config") && help.contains("Examples:") && help.contains("/etc/tap/agent.toml"),
        "{help}"
    );
    assert!(help.contains("\n  tap-agent run --once  "), "one example per line, not reflowed:\n{help}");
}

#[test]
fn no_arguments_prints_help_and_fails() {
    let out = agent(&[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Usage:"));
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[aws]\nregion = \"eu-west-1\"\n[metrics]\nenvironment = \"prod\"\npublish_interval_seconds = 30\n",
    )
    .expect("write");
    let out = agent(&["--check-config", "--config", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(": ok") && stdout.contains("eu-west-1") && stdout.contains("publish interval: 30 s"),
        "{stdout}"
    );
}

#[test]
fn check_config_names_file_and_key_of_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[metrics]\npublish_every = 60\n").expect("write");
    let out = agent(&["--check-config", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("tap-agent: error: ") && stderr.contains(path.to_str().expect("utf-8")), "{stderr}");
    assert!(stderr.contains("publish_every"), "{stderr}");
    assert!(text(&out.stdout).is_empty(), "nothing printed on stdout for an invalid file");
}

#[test]
fn check_config_reports_a_missing_file() {
    let out = agent(&["--check-config", "--config", "/nonexistent/tap/agent.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/nonexistent/tap/agent.toml: cannot read"), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "the cause once: {stderr}");
}

#[test]
fn run_with_a_malformed_config_fails_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[metrics\nenvironment = \"x\"\n").expect("write");
    let out = agent(&["--config", path.to_str().expect("utf-8"), "run", "--simulate", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("tap-agent: error: ") && stderr.contains("agent.toml"), "{stderr}");
}

#[test]
fn once_prints_every_field_of_simulated_gpus_labelled_as_such() {
    let out = agent(&["run", "--once", "--simulate", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("reader: SIMULATED"), "{stdout}");
    assert_eq!(stdout.matches("GPU-SIMULATED-").count(), 3);
    for field in [
        "  utilization ",
        "memory total",
        "power limit",
        "SM clock",
        "throttle reasons",
        "ECC corrected",
        "retired pages",
    ] {
        assert_eq!(stdout.matches(field).count(), 3, "{field}");
    }
}

#[test]
fn simulate_rejects_zero_gpus() {
    let out = agent(&["run", "--once", "--simulate", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--simulate"));
}

#[test]
fn install_writes_the_unit_without_systemctl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").expect("write");
    let out = agent(&[
        "--config",
        config.to_str().expect("utf-8"),
        "install",
        "--no-start",
        "--unit-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unit = std::fs::read_to_string(dir.path().join("tap-agent.service")).expect("unit written");
    assert!(unit.contains(&format!("--config {} run", config.display())));
}

#[test]
fn health_prints_the_state_or_says_why_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    let state = dir.path().join("health.json");
    std::fs::write(&config, format!("[health]\nstate_file = \"{}\"\n", state.display())).expect("config");
    let c = config.to_str().expect("utf-8");
    let out = agent(&["--config", c, "health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no health state yet (is tap-agent running"), "{}", text(&out.stderr));
    std::fs::write(&state, "{\"verdict\": \"healthy\", \"findings\": []}\n").expect("state");
    let out = agent(&["--config", c, "health"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("\"verdict\": \"healthy\""));
}

/// `events` reads the kernel log (NVML is absent here: it says so and goes on).
#[test]
fn events_prints_each_xid_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    let kmsg = dir.path().join("kmsg");
    std::fs::write(&kmsg, "junk\n3,1,1,-;NVRM: Xid (PCI:0000:00:1e): 79, pid=1, name=x, GPU has fallen off the bus.\n")
        .expect("kmsg");
    std::fs::write(&config, format!("[health]\nkernel_log = \"{}\"\n", kmsg.display())).expect("config");
    let out = agent(&["--config", config.to_str().expect("utf-8"), "events", "--seconds", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0]["xid"].as_u64(), lines[0]["fatal"].as_bool()), (Some(79), Some(true)));
    assert_eq!(lines[0]["source"], "kernel-log");
    assert_eq!(lines[1]["events"], 1);
}

#[cfg(feature = "aws-integration")]
#[path = "cli/managed_jobs.rs"]
mod managed_jobs;

/// The agent against moto's CloudWatch on loopback (`--features aws-integration`;
/// `TAP_MOTO_SERVER` names the moto_server executable, scripts/test.sh sets it).
#[cfg(feature = "aws-integration")]
mod moto {
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    use tap_core::contract::Metric;

    use tap_test_support::{Moto, endpoint, free_port};

    struct Agent {
        child: Child,
    }

    impl Agent {
        fn start(dir: &Path, port: u16, gpus: u16) -> Agent {
            Agent::start_with(dir, port, gpus, "")
        }

        fn start_with(dir: &Path, port: u16, gpus: u16, extra_config: &str) -> Agent {
            Agent::start_as("i-0moto", dir, port, gpus, extra_config)
        }

        fn start_as(instance_id: &str, dir: &Path, port: u16, gpus: u16, extra_config: &str) -> Agent {
            let config = dir.join("agent.toml");
            // Node paths inside the test's directory, never the machine's /run or /var/lib.
            let health = if extra_config.contains("[health]") {
                String::new()
            } else {
                format!(
                    "[health]\nstate_file = \"{}\"\nkernel_log = \"{}\"\n",
                    dir.join("health.json").display(),
                    dir.join("kmsg").display()
                )
            };
            std::fs::write(
                &config,
                format!(
                    "[aws]\nregion = \"us-east-1\"\ninstance_id = \"{instance_id}\"\n\
                     [metrics]\nenvironment = \"ci\"\npublish_interval_seconds = 10\n\
                     [spool]\ndir = \"{}\"\n[node]\nruntime_dir = \"{}\"\n{health}{extra_config}",
                    spool_dir(dir).display(),
                    dir.join("run").display()
                ),
            )
            .expect("config");
            let mut args = vec!["--config".to_owned(), config.to_str().expect("utf-8").to_owned(), "run".to_owned()];
            if gpus > 0 {
                args.extend(["--simulate".to_owned(), gpus.to_string()]);
            }
            let child = Command::new(env!("CARGO_BIN_EXE_tap-agent"))
                .args(&args)
                .env("AWS_ENDPOINT_URL", endpoint(port))
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("AWS_PROFILE")
                .env("TAP_AGENT_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("tap-agent starts");
            Agent { child }
        }

        /// SIGTERM, then waits (bounded) for a clean exit.
        fn stop(mut self) -> String {
            let pid = self.child.id().to_string();
            assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                if let Some(status) = self.child.try_wait().expect("wait") {
                    let mut log = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut log);
                    }
                    assert!(status.success(), "tap-agent exited with {status}:\n{log}");
                    return log;
                }
                assert!(Instant::now() < deadline, "tap-agent did not stop within 40 s of SIGTERM");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn spool_dir(dir: &Path) -> PathBuf {
        dir.join("spool")
    }

    fn spooled_batches(dir: &Path) -> usize {
        std::fs::read_dir(spool_dir(dir)).map_or(0, |d| d.filter(|e| e.is_ok()).count())
    }

    fn client(port: u16) -> aws_sdk_cloudwatch::Client {
        let config = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint(port))
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .build();
        aws_sdk_cloudwatch::Client::from_conf(config)
    }

    #[derive(Debug, Default, PartialEq)]
    struct Totals {
        count: f64,
        sum: f64,
        min: f64,
        max: f64,
    }

    /// All datapoints of one series over the last hour, folded together.
    async fn totals(port: u16, metric: &str, dims: &[(&str, &str)]) -> Totals {
        let now = std::time::SystemTime::now();
        let out = client(port)
            .get_metric_statistics()
            .namespace("Tap/GPU")
            .metric_name(metric)
            .set_dimensions(Some(dims.iter().map(|(k, v)| Dimension::builder().name(*k).value(*v).build()).collect()))
            .start_time(DateTime::from(now - Duration::from_secs(3600)))
            .end_time(DateTime::from(now + Duration::from_secs(600)))
            .period(60)
            .set_statistics(Some(vec![Statistic::SampleCount, Statistic::Sum, Statistic::Minimum, Statistic::Maximum]))
            .send()
            .await
            .expect("GetMetricStatistics");
        out.datapoints().iter().fold(Totals { min: f64::MAX, max: f64::MIN, ..Totals::default() }, |t, p| Totals {
            count: t.count + p.sample_count().unwrap_or(0.0),
            sum: t.sum + p.sum().unwrap_or(0.0),
            min: t.min.min(p.minimum().unwrap_or(f64::MAX)),
            max: t.max.max(p.maximum().unwrap_or(f64::MIN)),
        })
    }

    /// This node's instance-level dimensions.
    const NODE: [(&str, &str); 2] = [("Environment", "ci"), ("InstanceId", "i-0moto")];

    /// Waits (bounded) until moto's statistics of `metric` for `dims` satisfy `done`: a window
    /// that holds it was published. (Regression, issue 14: fixed sleeps of "about one window".)
    async fn wait_published(port: u16, metric: &str, dims: &[(&str, &str)], done: impl Fn(&Totals) -> bool) {
        const LIMIT: Duration = Duration::from_secs(60);
        let deadline = Instant::now() + LIMIT;
        while !done(&totals(port, metric, dims).await) {
            assert!(Instant::now() < deadline, "timed out after {LIMIT:?} waiting for {metric} on moto");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits (bounded) until moto holds at least `n` heartbeats of this node.
    async fn wait_heartbeats(port: u16, n: f64) {
        wait_published(port, "AgentHeartbeat", &NODE, |t| t.count >= n).await;
    }

    /// `GET /metrics` on the agent's Prometheus endpoint, or None while it does not answer yet.
    fn try_scrape(port: u16) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    const GPU0: [(&str, &str); 3] =
        [("Environment", "ci"), ("InstanceId", "i-0moto"), ("GpuUuid", "GPU-SIMULATED-0000")];

    /// The simulated GPU 0 reports 0, 1, 2, … on successive reads: if every sample arrived
    /// exactly once, the statistics are those of 0..n.
    fn assert_every_sample_once(t: &Totals) {
        let n = t.count;
        assert!(n >= 5.0, "too few samples: {t:?}");
        assert_eq!(t.sum, n * (n - 1.0) / 2.0, "a sample was lost or duplicated: {t:?}");
        assert_eq!((t.min, t.max), (0.0, n - 1.0), "{t:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn metrics_arrive_with_contract_names_dimensions_and_statistics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let moto = Moto::from_env(free_port());
        let prometheus = free_port();
        let agent = Agent::start_with(
            dir.path(),
            moto.port,
            2,
            &format!("[prometheus]\nenabled = true\nlisten = \"127.0.0.1:{prometheus}\"\n"),
        );
        let sampled = "tap_agent_gpus_visible{environment=\"ci\",instance_id=\"i-0moto\"} 2";
        wait_for("the first sample on the Prometheus endpoint", Duration::from_secs(30), || {
            try_scrape(prometheus).is_some_and(|p| p.contains(sampled))
        });
        let scraped = try_scrape(prometheus).expect("the Prometheus endpoint answers");
        assert!(scraped.contains("tap_agent_gpus_visible{environment=\"ci\",instance_id=\"i-0moto\"} 2"), "{scraped}");
        assert_eq!(scraped.matches("tap_gpu_power_draw_watts{").count(), 2, "{scraped}");
        wait_heartbeats(moto.port, 1.0).await;
        agent.stop();

        let listed = client(moto.port).list_metrics().namespace("Tap/GPU").send().await.expect("ListMetrics");
        assert!(listed.metrics().len() >= 20, "{:?}", listed.metrics());
        for m in listed.metrics() {
            let name = m.metric_name().expect("name");
            let spec = Metric::ALL.iter().map(|x| x.spec()).find(|s| s.name == name).expect("a contract metric");
            let dims: Vec<&str> = m.dimensions().iter().filter_map(|d| d.name()).collect();
            assert!(
                spec.sets.iter().any(|s| s.dimensions().iter().map(|d| d.name()).eq(dims.iter().copied())),
                "{name} published with {dims:?}, not a contract dimension set"
            );
        }
        let gpu0 = totals(moto.port, "GPUUtilization", &GPU0).await;
        assert_every_sample_once(&gpu0);
        // The series the stack's alarms watch exist with exactly the fleet dimension set.
        // (moto's GetMetricStatistics also matches dimension supersets, unlike CloudWatch, so
        // the fleet series is checked through ListMetrics, not its statistics.)
        for alarmed in ["GPUUtilization", "AgentHeartbeat", "GPUTemperature"] {
            assert!(
                listed.metrics().iter().any(|m| m.metric_name() == Some(alarmed)
                    && m.dimensions().iter().filter_map(|d| d.name()).eq(["Environment"])),
                "{alarmed} is not published with {{Environment}}"
            );
        }
        let instance = NODE;
        let heartbeats = totals(moto.port, "AgentHeartbeat", &instance).await;
        assert_eq!(heartbeats.count, 2.0, "one heartbeat per window: the 10 s one and the SIGTERM flush");
        let visible = totals(moto.port, "GPUsVisible", &instance).await;
        assert_eq!((visible.min, visible.max), (2.0, 2.0));
    }

    /// This machine has no NVIDIA driver: the agent says so once and keeps publishing host
    /// health, so the stack's heartbeat alarm stays quiet and GPUsVisible shows 0.
    #[tokio::test(flavor = "multi_thread")]
    async fn without_a_driver_the_agent_publishes_host_health_only() {
        if Path::new("/dev/nvidiactl").exists() {
            return; // a GPU machine: this test is about machines without one
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let moto = Moto::from_env(free_port());
        let agent = Agent::start(dir.path(), moto.port, 0);
        wait_heartbeats(moto.port, 1.0).await;
        let log = agent.stop();
        let warnings = log.lines().filter(|l| l.contains("\"WARN\"") && l.contains("no NVIDIA driver")).count();
        assert_eq!(warnings, 1, "said once, in one line:\n{log}");
        let instance = NODE;
        assert_eq!(totals(moto.port, "AgentHeartbeat", &instance).await.count, 2.0);
        let visible = totals(moto.port, "GPUsVisible", &instance).await;
        assert_eq!((visible.max, visible.count > 5.0), (0.0, true), "{visible:?}");
        let listed = client(moto.port)
            .list_metrics()
            .namespace("Tap/GPU")
            .metric_name("GPUUtilization")
            .send()
            .await
            .expect("list");
        assert!(listed.metrics().is_empty(), "no GPU values are invented");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cloudwatch_outage_loses_no_sample() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        // CloudWatch is down when the agent starts: the first window must be spooled.
        let agent = Agent::start(dir.path(), port, 1);
        wait_for("the failed window on disk", Duration::from_secs(60), || spooled_batches(dir.path()) >= 1);
        let moto = Moto::from_env(port);
        wait_for("the backlog replayed", Duration::from_secs(60), || spooled_batches(dir.path()) == 0);
        let log = agent.stop();
        assert_eq!(spooled_batches(dir.path()), 0, "the backlog was replayed:\n{log}");
        assert!(
            log.contains("CloudWatch reachable again; the spool is replayed") && log.contains("replayed_datums"),
            "the recovery is logged with what was replayed:\n{log}"
        );
        assert_every_sample_once(&totals(moto.port, "GPUUtilization", &GPU0).await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn spool_survives_an_agent_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let first = Agent::start(dir.path(), port, 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        first.stop();
        assert_eq!(spooled_batches(dir.path()), 1, "SIGTERM spooled the last window while CloudWatch was down");
        let moto = Moto::from_env(port);
        let second = Agent::start(dir.path(), port, 1);
        // The first run's spooled window and the second run's first.
        wait_heartbeats(moto.port, 2.0).await;
        second.stop();
        assert_eq!(spooled_batches(dir.path()), 0);
        let heartbeats = totals(moto.port, "AgentHeartbeat", &NODE).await;
        assert_eq!(heartbeats.count, 3.0, "the first run's window arrived, plus the second run's two");
    }

    /// How long a step of examples/train.py takes on a node that is to get a notice: its 200
    /// steps (40 s) outlast the notice's path on a loaded machine by far, so the notice
    /// always meets a run still training. Regression (a CI run beside a build: A trained all
    /// 200 steps at 0.05 s before its notice, and B had nothing left to resume).
    const NOTICED_STEP_S: f64 = 0.2;

    /// How long a step takes where nothing interrupts the run (node B).
    const QUICK_STEP_S: f64 = 0.02;

    /// `tap run` (the CLI's binary, built beside this one) on a node whose runtime dir is
    /// `node`, with the shared store `home`, training examples/train.py at `step_s` a step.
    fn tap_run(node: &Path, home: &Path, step_s: f64, extra: &[&str]) -> Child {
        let tap = tap_test_support::workspace_bin("tap", env!("CARGO_BIN_EXE_tap-agent"));
        let train = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/train.py");
        Command::new(tap)
            .args(["run", "-e", "spot"])
            .args(extra)
            .args(["--", "python3", train])
            .env("TAP_HOME", home)
            .env("TAP_RUNTIME_DIR", node)
            .env("TAP_EXAMPLE_STEP_SECONDS", step_s.to_string())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("TAP_OUTPUT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap run starts")
    }

    fn tap_json(home: &Path, args: &[&str]) -> serde_json::Value {
        let tap = tap_test_support::workspace_bin("tap", env!("CARGO_BIN_EXE_tap-agent"));
        let out = Command::new(tap).args(args).args(["--output", "json"]).env("TAP_HOME", home).output().expect("tap");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    fn set_params(home: &Path) {
        let tap = tap_test_support::workspace_bin("tap", env!("CARGO_BIN_EXE_tap-agent"));
        for (k, v) in [("epochs", "4"), ("steps_per_epoch", "50"), ("checkpoint_every", "20")] {
            let out = Command::new(&tap).args(["params", "set", k, v]).env("TAP_HOME", home).output().expect("tap");
            assert!(out.status.success());
        }
    }

    /// Waits (bounded) until `cond` holds.
    fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Instant {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Instant::now()
    }

    /// The proof that matters: a two-node "fleet" of local processes sharing one store. EC2
    /// announces the reclaim of node A through (fake) IMDS; A's agent tells A's `tap run`
    /// within one poll, the run checkpoints, uploads and stops before the deadline; node B
    /// resumes the experiment with no step lost or repeated. Prints the measured timeline.
    #[tokio::test(flavor = "multi_thread")]
    async fn spot_reclaim_on_node_a_resumes_on_node_b_without_lost_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (node_a, node_b, home) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("store"));
        std::fs::create_dir_all(&node_a).expect("a");
        set_params(&home);
        let moto = Moto::from_env(free_port());
        let imds = tap_test_support::FakeImds::start("i-0nodea", "p3.2xlarge");
        let poll = Duration::from_secs(1);
        let agent = Agent::start_with(
            &node_a,
            moto.port,
            1,
            &format!("[spot]\npoll_seconds = {}\nimds_endpoint = \"{}\"\n", poll.as_secs(), imds.endpoint()),
        );
        wait_for("A's agent polls IMDS", Duration::from_secs(20), || {
            !imds.requests_for("/latest/meta-data/spot/instance-action").is_empty()
        });
        let mut run_a = tap_run(&node_a.join("run"), &home, NOTICED_STEP_S, &[]);
        wait_for("A's run registers and trains past its first checkpoint", Duration::from_secs(60), || {
            let runs = tap_json(&home, &["runs", "list"]);
            runs[0]["checkpoint"].is_string() && runs[0]["metric_points"].as_u64().unwrap_or(0) >= 3 * 35
        });

        // EC2 decides to reclaim node A, two minutes from now.
        let deadline_ms = tap_agent::daemon::now_ms() + 120_000;
        let cued = Instant::now();
        let cued_ms = tap_agent::daemon::now_ms();
        imds.set_instance_action(Some(&format!(
            r#"{{"action": "terminate", "time": "{}"}}"#,
            tap_core::time::rfc3339(deadline_ms)
        )));
        let notice_path = node_a.join("run").join("notice.json");
        let notified = wait_for("the notice file", Duration::from_secs(10), || notice_path.exists());
        let status = loop {
            if let Some(s) = run_a.try_wait().expect("wait") {
                break s;
            }
            assert!(cued.elapsed() < Duration::from_secs(120), "A's run outlived the spot deadline");
            std::thread::sleep(Duration::from_millis(20));
        };
        let exited = Instant::now();
        let mut err = String::new();
        if let Some(mut e) = run_a.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert_eq!(status.code(), Some(75), "interrupted runs exit 75:\n{err}");
        let run = tap_json(&home, &["runs", "list"])[0].clone();
        let run_a_id = run["run_id"].as_str().expect("id").to_owned();
        assert_eq!(run["status"], "interrupted");
        assert_eq!(run["interruption"]["kind"], "spot-interruption", "{run}");
        assert_eq!(run["interruption"]["deadline_ms"].as_i64(), Some(deadline_ms / 1000 * 1000));
        let a_steps = tap_test_support::loss_steps(&tap_json(&home, &["runs", "show", &run_a_id]));
        let ckpt = tap_json(&home, &["checkpoints", "latest", "-e", "spot"]);
        assert_eq!(ckpt["run_id"], run_a_id.as_str(), "A's final checkpoint is the latest");
        let ckpt_step = ckpt["step"].as_u64().expect("step");
        let a_last = *a_steps.last().expect("A trained");
        agent.stop();

        // Node B: a fresh node resumes the experiment.
        let b_start = Instant::now();
        let run_b =
            tap_run(&node_b.join("run"), &home, QUICK_STEP_S, &["--resume"]).wait_with_output().expect("B runs");
        assert!(run_b.status.success(), "{}", String::from_utf8_lossy(&run_b.stderr));
        let runs = tap_json(&home, &["runs", "list"]);
        assert_eq!(runs.as_array().map(Vec::len), Some(1), "B's resume is attempt 2 of A's run: {runs}");
        assert_eq!(
            (runs[0]["status"].as_str(), runs[0]["run_id"].as_str(), runs[0]["attempts"][0]["status"].as_str()),
            (Some("succeeded"), Some(run_a_id.as_str()), Some("interrupted"))
        );
        let resumed_at = runs[0]["restored_step"].as_u64().expect("B recorded its restore");
        assert_eq!(resumed_at, ckpt_step, "B starts from A's last checkpoint");
        let redone = a_last.saturating_sub(ckpt_step);
        let shown = tap_json(&home, &["runs", "show", &run_a_id]);
        assert_eq!(tap_test_support::loss_steps(&shown), (1..=200).collect::<Vec<u64>>(), "one series, every step");
        let names: std::collections::BTreeSet<&str> =
            shown["metrics"].as_array().expect("metrics").iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(runs[0]["metric_points"].as_u64(), Some(200 * names.len() as u64), "every step exactly once");
        assert_eq!(redone, 0, "no step was lost beyond the last checkpoint");

        let notice: tap_core::notice::Notice =
            serde_json::from_slice(&std::fs::read(&notice_path).expect("notice")).expect("notice JSON");
        let ms = |d: Duration| d.as_millis();
        eprintln!(
            "timeline (ms after EC2's notice appeared in IMDS; deadline at +120000):\n  \
             agent wrote notice.json and signalled:   +{}\n  \
             tap run saw it (recorded):               +{}\n  \
             checkpoint uploaded, tap run exited:     +{}\n  \
             time left before the deadline:           {} ms\n  \
             node B resumed from step {ckpt_step}; steps lost: {redone} ({:.1} s of training at {NOTICED_STEP_S} s/step)\n  \
             node B finished the job in:              {} ms",
            notice.detected_ms - cued_ms,
            run["interruption"]["noticed_ms"].as_i64().unwrap_or(0) - cued_ms,
            ms(exited - cued),
            deadline_ms - cued_ms - ms(exited - cued) as i64,
            redone as f64 * NOTICED_STEP_S,
            ms(b_start.elapsed()),
        );
        assert!(notified - cued <= poll + Duration::from_millis(1500), "the agent noticed within one poll interval");

        let listed = client(moto.port)
            .list_metrics()
            .namespace("Tap/GPU")
            .metric_name("SpotInterruptionNotice")
            .send()
            .await
            .expect("list");
        assert!(!listed.metrics().is_empty(), "the notice is published as a metric");
    }

    /// A fatal XID in the kernel log on node A: the agent publishes GPUUnhealthy, drains the
    /// node (a new `tap run` is refused), asks the running one to checkpoint, and powers the
    /// node off (a marker script) once it has exited.
    #[tokio::test(flavor = "multi_thread")]
    async fn fatal_xid_in_the_kernel_log_drains_checkpoints_and_powers_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (node, home) = (dir.path().join("node"), dir.path().join("store"));
        std::fs::create_dir_all(&node).expect("node");
        set_params(&home);
        let kmsg = node.join("kmsg");
        std::fs::write(&kmsg, "6,1,1,-;Linux version 6.8.0\n").expect("kmsg");
        let marker = node.join("powered-off");
        let moto = Moto::from_env(free_port());
        let agent = Agent::start_with(
            &node,
            moto.port,
            2,
            &format!(
                "[health]\non_fatal = \"replace\"\nkernel_log = \"{}\"\nstate_file = \"{}\"\ndrain_deadline_seconds = 60\npower_off_command = [\"sh\", \"-c\", \"echo off > {}\"]\n",
                kmsg.display(),
                node.join("health.json").display(),
                marker.display()
            ),
        );
        let runtime = node.join("run");
        let mut run = tap_run(&runtime, &home, NOTICED_STEP_S, &[]);
        wait_for("the run trains", Duration::from_secs(60), || {
            tap_json(&home, &["runs", "list"])[0]["metric_points"].as_u64().unwrap_or(0) >= 3 * 10
        });
        // GPU 1 of the simulation sits at PCI 00000000:11:00.0.
        let mut f = std::fs::OpenOptions::new().append(true).open(&kmsg).expect("kmsg");
        std::io::Write::write_all(&mut f, b"garbage \xff line\n3,2,2,-;NVRM: Xid (PCI:0000:11:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n").expect("xid");
        let status = loop {
            if let Some(s) = run.try_wait().expect("wait") {
                break s;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(75));
        wait_for("the power-off", Duration::from_secs(10), || marker.exists());
        let refused = tap_run(&runtime, &home, QUICK_STEP_S, &[]).wait_with_output().expect("refused");
        assert_eq!(refused.status.code(), Some(75));
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("takes no new work"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        // The window that holds the finding reaches CloudWatch (bounded, not a fixed sleep).
        let gpu1 = [("Environment", "ci"), ("InstanceId", "i-0moto"), ("GpuUuid", "GPU-SIMULATED-0001")];
        wait_published(moto.port, "GPUUnhealthy", &gpu1, |t| t.max >= 1.0).await;
        let log = agent.stop();
        assert!(log.contains("fatal GPU health finding") && log.contains("XID 79"), "{log}");
        let run = tap_json(&home, &["runs", "list"])[0].clone();
        assert_eq!(
            (run["status"].as_str(), run["interruption"]["kind"].as_str()),
            (Some("interrupted"), Some("gpu-fatal"))
        );
        assert!(run["checkpoint"].is_string());
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(node.join("health.json")).expect("state")).expect("JSON");
        assert_eq!(state["verdict"], "fatal");
        assert_eq!(totals(moto.port, "GPUUnhealthy", &gpu1).await.max, 1.0, "GPUUnhealthy published for the GPU");
    }

    /// The opt-in idle rule end to end: every GPU of a 2-node fleet idled for the window; the
    /// agent on the oldest reporting node finds its fleet by itself and scales it to zero,
    /// the agent on the other node leaves it alone.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_idle_fleet_is_scaled_to_zero_by_its_oldest_node_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let requests = dir.path().join("requests.log");
        let moto = Moto::from_env_logging(free_port(), &requests);
        let sdk = tap_test_support::aws::sdk_config(&endpoint(moto.port));
        let fleet_id = tap_test_support::aws::make_fleet(&sdk, 2).await;
        let fleet = tap_fleet::aws::Fleet::connect(&sdk, &fleet_id, "ci", "");
        let status = fleet.describe().await.expect("describe");
        for n in &status.nodes {
            tap_test_support::aws::idle_node(&sdk, "ci", &n.instance_id, 10, 0.5).await;
        }
        let leader = tap_fleet::idle::leader(&status).expect("leader").instance_id.clone();
        let other = status.nodes.iter().find(|n| n.instance_id != leader).expect("other").instance_id.clone();
        let count = |action: &str| {
            let service = if action == "GetMetricData" { "cloudwatch" } else { "ec2" };
            tap_test_support::requests_logged(&requests, service, action)
        };

        // The other node first: it must not act, nor read metrics (it is not the one that decides).
        let rule = "[idle]\nscale_to_zero = true\nminutes = 10\nbelow_percent = 5\ncheck_seconds = 1\n";
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).expect("a");
        std::fs::create_dir_all(&b).expect("b");
        let (metric_reads, fleet_reads) = (count("GetMetricData"), count("DescribeFleets"));
        let follower = Agent::start_as(&other, &b, moto.port, 0, rule);
        // Finding its fleet and then a few checks (one DescribeFleets each); bounded wait.
        wait_for("the follower's checks", Duration::from_secs(60), || count("DescribeFleets") >= fleet_reads + 4);
        let log = follower.stop();
        assert_eq!(fleet.describe().await.expect("describe").target_capacity, Some(2));
        assert!(log.contains(&format!("{leader} decides for the fleet")), "{log}");
        assert_eq!(count("GetMetricData"), metric_reads, "a node that does not decide reads no metrics");

        let decider = Agent::start_as(&leader, &a, moto.port, 0, rule);
        let until = Instant::now() + Duration::from_secs(60);
        while fleet.describe().await.expect("describe").target_capacity != Some(0) {
            assert!(Instant::now() < until, "the fleet was not scaled to zero within 60 s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Two more checks, which see the fleet at 0 (the test itself asks EC2 no more).
        let seen = count("DescribeFleets");
        wait_for("two more checks", Duration::from_secs(60), || count("DescribeFleets") >= seen + 2);
        let log = decider.stop();
        assert!(
            log.contains("idle fleet: target capacity set to 0")
                && log.contains(&fleet_id)
                && log.contains("every GPU of the fleet's 2 node(s) idled for 10 min"),
            "{log}"
        );
        assert!(log.contains("the fleet's target capacity is already 0"), "{log}");
        assert_eq!(count("ModifyFleet"), 1, "one ModifyFleet for the whole fleet");
        assert_eq!(count("GetMetricData"), metric_reads + 1, "one metrics read: the check that scaled");
    }
}
