//! Runs the real `tap` binary.

use std::process::{Command, Output};

fn tap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tap")).args(args).env_remove("TAP_OUTPUT").output().expect("tap runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_names_the_binary() {
    let out = tap(&["--version"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), format!("tap {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_commands_and_examples() {
    let out = tap(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("contract") && help.contains("Examples:") && help.contains("--output"), "{help}");
}

#[test]
fn contract_prints_the_alarmed_metrics() {
    let out = tap(&["contract"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for name in ["Tap/GPU", "GPUUtilization", "AgentHeartbeat", "GPUTemperature", "GPUUnhealthy", "{Environment}"] {
        assert!(stdout.contains(name), "missing {name} in:\n{stdout}");
    }
}

#[test]
fn contract_json_parses() {
    let out = tap(&["contract", "--output", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["namespace"], "Tap/GPU");
}

#[test]
fn bad_output_format_is_one_clear_error() {
    let out = tap(&["contract", "--output", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid value 'yaml'") && stderr.contains("--output"), "{stderr}");
}

#[test]
fn unknown_command_fails() {
    let out = tap(&["launch-rockets"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unrecognized subcommand"));
}

mod local {
    use std::path::Path;
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    const TRAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/train.py");

    fn tap_in(home: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(args)
            .env("TAP_HOME", home)
            .env_remove("TAP_OUTPUT")
            .env_remove("TAP_EXPERIMENT")
            .env("TAP_EXAMPLE_STEP_SECONDS", "0.02")
            .output()
            .expect("tap runs")
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn json(home: &Path, args: &[&str]) -> serde_json::Value {
        let out = tap_in(home, &[args, &["--output", "json"]].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    fn set_params(home: &Path) {
        for (k, v) in [("epochs", "2"), ("steps_per_epoch", "50"), ("checkpoint_every", "10")] {
            assert!(tap_in(home, &["params", "set", k, v]).status.success());
        }
    }

    /// Steps recorded for `metric` in a run, in order.
    fn steps(home: &Path, run_id: &str) -> Vec<u64> {
        let v = json(home, &["runs", "show", run_id]);
        v["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter(|p| p["name"] == "loss")
            .map(|p| p["step"].as_u64().expect("step"))
            .collect()
    }

    #[test]
    fn params_are_versioned() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        assert!(tap_in(h, &["params", "set", "learning_rate", "0.1"]).status.success());
        assert!(tap_in(h, &["params", "set", "learning_rate", "0.05"]).status.success());
        assert_eq!(text(&tap_in(h, &["params", "get", "learning_rate"]).stdout).trim(), "0.05");
        let history = json(h, &["params", "history", "learning_rate"]);
        assert_eq!(history.as_array().map(Vec::len), Some(2));
        assert_eq!(history[0]["value"], "0.1");
        let missing = tap_in(h, &["params", "get", "momentum"]);
        assert_eq!(missing.status.code(), Some(1));
        assert!(text(&missing.stderr).contains("no hyperparameter momentum"));
        let bad = tap_in(h, &["params", "set", "a b", "1"]);
        assert_eq!(bad.status.code(), Some(2));
        assert!(text(&bad.stderr).contains("must be 1-128 letters"));
    }

    /// A run is interrupted mid-training (the spot notice), then a second process — a second
    /// node — resumes it from the uploaded checkpoint: every step runs exactly once.
    #[test]
    fn interrupted_run_resumes_in_another_process() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        set_params(h);
        let first = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "-e", "spot", "--", "python3", TRAIN])
            .env("TAP_HOME", h)
            .env("TAP_EXAMPLE_STEP_SECONDS", "0.02")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap run");
        // Let it train (and checkpoint) for a while, then deliver the notice.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs = json(h, &["runs", "list"]);
            if runs[0]["metric_points"].as_u64().unwrap_or(0) >= 3 * 25 {
                break;
            }
            assert!(Instant::now() < deadline, "the run made no progress: {runs}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(Command::new("kill").args(["-USR1", &first.id().to_string()]).status().expect("kill").success());
        let out = first.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(75), "interrupted runs exit 75:\n{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("interruption notice"));

        let runs = json(h, &["runs", "list"]);
        let first_id = runs[0]["run_id"].as_str().expect("id").to_owned();
        assert_eq!(runs[0]["status"], "interrupted");
        assert!(runs[0]["checkpoint"].is_string(), "the final checkpoint is recorded: {runs}");
        let done = steps(h, &first_id);
        let last = *done.last().expect("steps");
        assert!(last > 0 && last < 100, "stopped mid-training at {last}");

        let second = tap_in(h, &["run", "-e", "spot", "--resume", "--", "python3", TRAIN]);
        assert!(second.status.success(), "{}", text(&second.stderr));
        assert!(text(&second.stdout).contains(&format!("resumed at step {last}")), "{}", text(&second.stdout));
        let runs = json(h, &["runs", "list"]);
        assert_eq!(runs[0]["status"], "succeeded");
        assert_eq!(runs[0]["resumed_from"], first_id.as_str());
        let rest = steps(h, runs[0]["run_id"].as_str().expect("id"));
        let all: Vec<u64> = done.iter().chain(&rest).copied().collect();
        assert_eq!(all, (1..=100).collect::<Vec<u64>>(), "every step exactly once across the two nodes");
    }

    #[test]
    fn notice_file_interrupts_too() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        set_params(h);
        let notice = h.join("notice");
        let child = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "-e", "n", "--notice-file", notice.to_str().expect("utf-8"), "--", "python3", TRAIN])
            .env("TAP_HOME", h)
            .env("TAP_EXAMPLE_STEP_SECONDS", "0.02")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap run");
        std::thread::sleep(Duration::from_millis(800));
        std::fs::write(&notice, "{\"action\":\"terminate\"}").expect("notice");
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
        assert_eq!(json(h, &["runs", "list"])[0]["status"], "interrupted");
    }

    #[test]
    fn failing_command_keeps_its_exit_code() {
        let home = tempfile::tempdir().expect("tempdir");
        let out = tap_in(home.path(), &["run", "--", "sh", "-c", "echo to stderr >&2; exit 3"]);
        assert_eq!(out.status.code(), Some(3));
        let run = &json(home.path(), &["runs", "list"])[0];
        assert_eq!((run["status"].as_str(), run["exit_code"].as_i64()), (Some("failed"), Some(3)));
        let logs_out = text(&out.stderr);
        assert!(logs_out.contains("to stderr"), "the child's stderr reaches the terminal");
    }

    #[test]
    fn metrics_lines_are_recorded_and_bad_ones_reported() {
        let home = tempfile::tempdir().expect("tempdir");
        let script = r#"echo 'not json' >> "$TAP_METRICS_FILE"; echo '{"step": 1, "acc": 0.5}' >> "$TAP_METRICS_FILE"; echo '{"step": 2, "acc": 0.75}' >> "$TAP_METRICS_FILE"; echo "lr=$TAP_HP_LEARNING_RATE""#;
        assert!(tap_in(home.path(), &["params", "set", "learning_rate", "0.3"]).status.success());
        let out = tap_in(home.path(), &["run", "--", "sh", "-c", script]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("ignoring a line of TAP_METRICS_FILE: not json"));
        assert!(text(&out.stdout).contains("lr=0.3"), "hyperparameters reach the child");
        let run = &json(home.path(), &["runs", "list"])[0];
        assert_eq!(run["final_metrics"]["acc"], 0.75);
        assert_eq!(run["hparams"]["learning_rate"]["version"], 1);
    }

    #[test]
    fn command_that_cannot_start_is_one_clear_error() {
        let home = tempfile::tempdir().expect("tempdir");
        let out = tap_in(home.path(), &["run", "--", "/nonexistent/train"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("tap: error: cannot start /nonexistent/train"), "{stderr}");
        assert_eq!(json(home.path(), &["runs", "list"])[0]["status"], "failed");
    }

    #[test]
    fn run_without_command_is_a_usage_error() {
        let home = tempfile::tempdir().expect("tempdir");
        assert_eq!(tap_in(home.path(), &["run"]).status.code(), Some(2));
    }
}
