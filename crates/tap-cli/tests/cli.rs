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
    assert!(help.contains("\n  tap runs list  "), "one example per line, not reflowed:\n{help}");
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

/// Regression (a huge --checkpoint-deadline was accepted and the notice path then panicked
/// on overflow): every duration flag is bounded, refused in one line naming the flag.
#[test]
fn huge_durations_are_refused_in_one_line() {
    for args in [
        &["run", "--checkpoint-deadline", "18446744073709551615s", "--", "true"][..],
        &["run", "--checkpoint-deadline", "3h", "--", "true"][..],
        &["launch", "--wait", "99999999999h", "-n", "1", "--", "true"][..],
    ] {
        let out = tap(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("invalid value") && stderr.contains("longer than"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Regression (issue 23): `TAP_EXPERIMENT=` (set, empty) failed with "invalid value '' for
/// '--experiment'", a flag the user never typed. An empty variable counts as unset.
#[test]
fn an_empty_environment_variable_blamed_on_a_flag_the_user_never_typed() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_tap"))
        .args(["run", "--", "true"])
        .env("TAP_HOME", home.path())
        .env("TAP_EXPERIMENT", "")
        .env("TAP_OUTPUT", "")
        .output()
        .expect("tap runs");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("--experiment") && stderr.contains("run default/"), "{stderr}");
}

/// The same class: a bad value in an environment variable that stands for an option is
/// blamed on the variable, not on a flag nobody typed; a bad value typed on the command line is
/// still blamed on the flag.
#[test]
fn a_bad_environment_variable_blamed_on_a_flag_the_user_never_typed() {
    let home = tempfile::tempdir().expect("tempdir");
    let run = |vars: &[(&str, &str)], args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(args)
            .env("TAP_HOME", home.path())
            .env_remove("TAP_EXPERIMENT")
            .env_remove("TAP_OUTPUT")
            .envs(vars.iter().copied())
            .output()
            .expect("tap runs");
        (out.status.code(), text(&out.stderr))
    };
    for (var, value, says) in [
        ("TAP_EXPERIMENT", " ", "TAP_EXPERIMENT=\" \" in the environment (it stands for --experiment): "),
        ("TAP_OUTPUT", "xml", "TAP_OUTPUT=\"xml\" in the environment (it stands for --output): it takes text, json"),
        ("TAP_DISK_RESERVE", "lots", "TAP_DISK_RESERVE=\"lots\" in the environment (it stands for --disk-reserve)"),
    ] {
        let (code, err) = run(&[(var, value)], &["run", "--", "true"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.starts_with(&format!("error: {says}")) && err.trim_end().lines().count() == 1, "{err}");
    }
    let (code, err) = run(&[("TAP_EXPERIMENT", "fine")], &["run", "-e", " ", "--", "true"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("'--experiment <EXPERIMENT>'"), "typed: the flag is blamed: {err}");
}

/// Regression (issue 23): an existing file as a pull destination was reported as "File
/// exists (os error 17)". Both pulls say what is wrong with the destination, in one line.
#[test]
fn an_existing_file_as_a_pull_destination() {
    let home = tempfile::tempdir().expect("tempdir");
    let src = home.path().join("weights.bin");
    std::fs::write(&src, b"w").expect("write");
    let file = home.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let tap_in = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tap")).args(args).env("TAP_HOME", home.path()).output().expect("tap runs")
    };
    assert!(tap_in(&["artifacts", "push", src.to_str().expect("utf-8")]).status.success());
    let run = tap_in(&["run", "-e", "e", "--name", "r", "--", "sh", "-c", "echo 1 > \"$TAP_CHECKPOINT_DIR/c\""]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let dest = file.to_str().expect("utf-8");
    for args in [&["artifacts", "pull", "weights.bin", dest][..], &["checkpoints", "pull", "r", dest][..]] {
        let out = tap_in(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            format!("tap: error: {dest} is a file, not a directory: pull into a new or empty directory\n"),
            "{args:?}"
        );
        assert_eq!(std::fs::read(&file).expect("still there"), b"x", "the file is left as it was");
    }
    // The same class: a destination under a file said "Not a directory (os error 20)".
    let under = format!("{dest}/sub/dir");
    for args in [&["artifacts", "pull", "weights.bin", &under][..], &["checkpoints", "pull", "r", &under][..]] {
        let stderr = text(&tap_in(args).stderr);
        assert_eq!(
            stderr,
            format!(
                "tap: error: {dest} is a file, so {under} cannot be made under it: pull into a new or empty directory\n"
            ),
            "{args:?}"
        );
    }
}

/// The stack's own partitions of the experiment table are not experiments.
#[test]
fn an_experiment_named_like_the_stacks_own_partition_is_refused() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_tap"))
        .args(["run", "-e", "_tap-node", "--", "true"])
        .env("TAP_HOME", home.path())
        .output()
        .expect("tap runs");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("\"_tap-node\" is reserved for the stack's own records"), "{err}");
}

#[test]
fn unknown_command_fails() {
    let out = tap(&["launch-rockets"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unrecognized subcommand"));
}

use tap_test_support::loss_steps;

/// Waits (at most 60 s) until the newest run has recorded 75 metric points, then sends
/// `tap run` the interruption notice (SIGUSR1) and waits for it to exit.
fn interrupt_after_progress(child: std::process::Child, runs: impl Fn() -> serde_json::Value) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = runs();
        if list[0]["metric_points"].as_u64().unwrap_or(0) >= 3 * 25 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run made no progress: {list}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-USR1", &child.id().to_string()]).status().expect("kill").success());
    child.wait_with_output().expect("wait")
}

/// Waits (at most `limit`) until `path` exists.
fn wait_for_file(path: &std::path::Path, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !path.exists() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// Waits (at most `limit`, checking every 50 ms) until `done` holds; panics naming `what`.
fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[path = "cli/run_model.rs"]
mod run_model;

#[path = "cli/groups.rs"]
mod groups;

#[path = "cli/goodput.rs"]
mod goodput;

#[path = "cli/ui.rs"]
mod ui;

mod local {
    use std::path::Path;
    use std::process::{Command, Output, Stdio};
    use std::time::Duration;

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

    /// `dir/name/f`, one byte: something to push.
    fn one_file_dir(dir: &Path, name: &str) -> std::path::PathBuf {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("f"), b"x").expect("write");
        d
    }

    fn steps(home: &Path, run_id: &str) -> Vec<u64> {
        super::loss_steps(&json(home, &["runs", "show", run_id]))
    }

    /// Regression (an experiment or artifact named `..` was accepted, then failed at every
    /// checkpoint): `.` and `..` are refused by every command that takes a name, at once.
    #[test]
    fn dot_names_are_refused_by_the_first_command() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let src = one_file_dir(h, "data");
        let src = src.to_str().expect("utf-8");
        for args in [
            &["run", "-e", "..", "--", "true"][..],
            &["run", "-e", ".", "--", "true"],
            &["artifacts", "push", src, "--name", ".."],
            &["artifacts", "pull", ".."],
            &["params", "set", "..", "1"],
            &["checkpoints", "latest", "-e", ".."],
        ] {
            let out = tap_in(h, args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains("not only dots") || err.contains("segment \"..\""), "{args:?}: {err}");
        }
        assert!(
            !h.join("runs").exists() || std::fs::read_dir(h.join("runs")).expect("runs").next().is_none(),
            "nothing ran"
        );
    }

    /// Regression (one corrupt run row made every listing fail without naming it): the
    /// listing shows the rest, with one warning naming the culprit.
    #[test]
    fn a_corrupt_run_row_is_named_and_the_listing_goes_on() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        for _ in 0..2 {
            assert!(tap_in(h, &["run", "--", "true"]).status.success());
        }
        let runs = json(h, &["runs", "list"]);
        let bad = runs[0]["run_id"].as_str().expect("id").to_owned();
        let c = rusqlite::Connection::open(h.join("tap.db")).expect("open");
        c.execute("UPDATE runs SET body = 'garbage' WHERE run_id = ?1", [&bad]).expect("corrupt");
        let out = tap_in(h, &["runs", "list"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("tap: warning: run record {bad} is unreadable (")) && err.lines().count() == 1,
            "{err}"
        );
        assert_eq!(text(&out.stdout).lines().count(), 2, "the header and the good run");
    }

    /// Regression (one corrupt artifact manifest made `artifacts ls` fail, speaking of a
    /// "checkpoint"): it lists the rest with one warning naming the artifact.
    #[test]
    fn a_corrupt_artifact_manifest_is_named_and_ls_goes_on() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let src = one_file_dir(h, "src");
        for name in ["good", "bad"] {
            assert!(tap_in(h, &["artifacts", "push", src.to_str().expect("utf-8"), "--name", name]).status.success());
        }
        let manifests = h.join("artifacts/artifacts/bad/manifests");
        let m = std::fs::read_dir(&manifests).expect("manifests").next().expect("one").expect("entry").path();
        std::fs::write(&m, b"garbage").expect("corrupt");
        let out = tap_in(h, &["artifacts", "ls"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.starts_with("tap: warning: artifact bad: corrupt artifact manifest: ") && err.lines().count() == 1,
            "{err}"
        );
        assert!(!err.contains("checkpoint manifest"), "an artifact is not a checkpoint: {err}");
        let stdout = text(&out.stdout);
        assert!(stdout.lines().count() == 2 && stdout.contains("good"), "{stdout}");
    }

    /// Regressions: a broken config printed toml's five-line diagnostic, and blocked
    /// `tap stack forget` and `--local`, the ways out of it.
    #[test]
    fn a_broken_config_is_one_line_and_forget_and_local_still_work() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let config = h.join("config.toml");
        std::fs::write(&config, "[stack]\nregion = 3\n").expect("write");
        let cfg = config.to_str().expect("utf-8");
        let out = tap_in(h, &["--config", cfg, "runs", "list"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with(&format!("tap: error: {cfg}: line 2, column 10: ")) && err.lines().count() == 1,
            "{err}"
        );
        assert!(err.contains("`tap stack forget`"), "{err}");
        assert!(tap_in(h, &["--config", cfg, "--local", "runs", "list"]).status.success(), "--local does not read it");
        let forget = tap_in(h, &["--config", cfg, "stack", "forget"]);
        assert!(forget.status.success(), "{}", text(&forget.stderr));
        assert!(tap_in(h, &["--config", cfg, "runs", "list"]).status.success(), "fixed by forget");
    }

    /// Regression (every run kept a full scratch copy of its checkpoint in $TAP_HOME/runs
    /// forever): once the store holds it, the run's checkpoint directory is gone.
    #[test]
    fn a_runs_scratch_checkpoint_goes_once_the_store_holds_it() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let save = r#"echo w > "$TAP_CHECKPOINT_DIR/m.bin"; echo '{"checkpoint": true, "step": 1}' >> "$TAP_METRICS_FILE"; sleep 0.3; echo late > "$TAP_CHECKPOINT_DIR/late.bin""#;
        let out = tap_in(h, &["run", "-e", "scratch", "--", "sh", "-c", save]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let id = json(h, &["runs", "list"])[0]["run_id"].as_str().expect("id").to_owned();
        let work = h.join("runs").join(&id);
        // Regression too: each run kept its raw metrics file beside the store (195 MB from one
        // long run); the whole scratch directory goes once the store holds the run.
        assert!(!work.exists(), "the scratch directory is removed: {:?}", std::fs::read_dir(&work).map(|d| d.count()));
        let latest = json(h, &["checkpoints", "latest", "-e", "scratch"]);
        let files: Vec<&str> =
            latest["files"].as_array().expect("files").iter().map(|f| f["path"].as_str().expect("path")).collect();
        assert_eq!(files, ["late.bin", "m.bin"], "the final sync stored what was left first");
    }

    /// Regression (a TAP_HOME that is a file said "File exists (os error 17)").
    #[test]
    fn a_tap_home_that_is_a_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("home");
        std::fs::write(&file, b"not a directory").expect("write");
        let out = tap_in(&file, &["runs", "list"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            text(&out.stderr),
            format!(
                "tap: error: {} is not a directory: tap keeps its local store there (set TAP_HOME or --home to a directory)\n",
                file.display()
            )
        );
    }

    /// Regression (hyperparameters `a.b`, `a_b` and `A_B` shadowed each other as TAP_HP_A_B
    /// without a word): the second is refused at `params set`, naming the first.
    #[test]
    fn hyperparameters_that_share_an_environment_variable_are_refused() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        assert!(tap_in(h, &["params", "set", "a.b", "1"]).status.success());
        for other in ["a_b", "A_B", "a-b"] {
            let out = tap_in(h, &["params", "set", other, "2"]);
            assert_eq!(out.status.code(), Some(1), "{other}");
            assert_eq!(
                text(&out.stderr),
                format!(
                    "tap: error: hyperparameter {other} would share TAP_HP_A_B with a.b in the command's environment; use another name (or `tap params set a.b ...`)\n"
                )
            );
        }
        assert!(tap_in(h, &["params", "set", "a.b", "3"]).status.success(), "a new version of the same name is fine");
        assert_eq!(json(h, &["params", "list"]).as_array().map(Vec::len), Some(1));
    }

    /// Regression (hyperparameters whose environment names collide still shadowed each other
    /// when they came from `--param`, `--params-file` and the store together): no command
    /// starts with one variable for two names, whichever path brought them.
    #[test]
    fn hyperparameters_whose_environment_names_collide_on_any_path_are_refused() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        assert!(tap_in(h, &["params", "set", "train/lr", "1"]).status.success());
        let file = h.join("p.json");
        std::fs::write(&file, r#"{"model.depth": 3}"#).expect("write");
        let file = file.to_str().expect("utf-8");
        for args in [
            &["run", "--param", "train_lr=2", "--", "true"][..],
            &["run", "--param", "Train.LR=2", "--", "true"],
            &["run", "--params-file", file, "--param", "model_depth=4", "--", "true"],
        ] {
            let out = tap_in(h, args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("would all be TAP_HP_") && err.contains("rename one"), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(json(h, &["runs", "list"]).as_array().is_some_and(Vec::is_empty), "nothing ran");
        let ok = tap_in(h, &["run", "--param", "train/lr=5", "--", "sh", "-c", "echo lr=$TAP_HP_TRAIN_LR"]);
        assert!(text(&ok.stdout).contains("lr=5"), "a namespaced name is a variable: {}", text(&ok.stderr));
    }

    /// Regression (an argument list too long for the kernel, made so by hyperparameter values,
    /// was blamed on the command: "cannot start sh: Argument list too long"): the message
    /// names the TAP_HP_ variables and the largest value.
    #[test]
    fn an_argument_list_too_long_is_blamed_on_the_hyperparameters() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let file = h.join("big.json");
        // Over Linux's 128 KiB limit on one string and, together, on the whole environment.
        let body: serde_json::Map<String, serde_json::Value> =
            (0..40).map(|i| (format!("blob{i}"), serde_json::Value::from("x".repeat(200_000)))).collect();
        std::fs::write(&file, serde_json::to_string(&body).expect("json")).expect("write");
        let out = tap_in(h, &["run", "--params-file", file.to_str().expect("utf-8"), "--", "true"]);
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("TAP_HP_ variables add") && err.contains("blob"), "{err}");
        assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
    }

    /// Regressions: pushing a FIFO said "Not a directory"; an empty directory was pushed and
    /// pulled back as nothing; a link leaving the directory was dropped without a word.
    #[test]
    fn pushes_of_what_tap_cannot_store_are_refused_in_one_line() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let fifo = h.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let empty = h.join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let linked = h.join("linked");
        std::fs::create_dir(&linked).expect("mkdir");
        std::fs::write(linked.join("data"), b"x").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", linked.join("escape")).expect("link");
        for (path, want) in [
            (&fifo, format!("{}: not a regular file or directory (a FIFO, socket or device)", fifo.display())),
            (
                &empty,
                format!("{}: an empty directory (or only hidden and .tmp files): nothing to push", empty.display()),
            ),
        ] {
            let out = tap_in(h, &["artifacts", "push", path.to_str().expect("utf-8"), "--name", "set"]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.starts_with("tap: error: ") && err.contains(&want) && err.lines().count() == 1, "{err}");
        }
        assert!(text(&tap_in(h, &["artifacts", "ls"]).stdout).lines().count() <= 1, "nothing was stored");
        // Regression (one link leaving a pushed directory refused the whole push): the link is
        // left out, said, and recorded; the rest is stored.
        let out = tap_in(h, &["artifacts", "push", linked.to_str().expect("utf-8"), "--name", "set"]);
        let (err, said) = (text(&out.stderr), text(&out.stdout));
        assert!(out.status.success(), "{err}");
        assert!(err.contains("leaving out") && err.contains("escape: a symbolic link to /etc/hostname"), "{err}");
        assert!(said.contains("1 entry (escape) left out when it was stored"), "{said}");
        let back = h.join("back");
        let pulled = tap_in(h, &["artifacts", "pull", "set", back.to_str().expect("utf-8")]);
        assert!(pulled.status.success(), "{}", text(&pulled.stderr));
        assert_eq!(std::fs::read(back.join("data")).expect("read"), b"x");
        assert!(!back.join("escape").exists());
    }

    /// Regression (one link to a file outside the checkpoint directory, or one FIFO, made tap
    /// refuse the whole checkpoint, every periodic one and the final one, and the run still
    /// ended `succeeded` with nothing stored): the rest is stored, each entry is said once,
    /// the manifest and the record list them, and the last line says so.
    #[test]
    fn a_checkpoint_was_refused_whole_for_one_link_or_fifo() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let script = r#"ln -s /etc/passwd "$TAP_CHECKPOINT_DIR/pw"; mkfifo "$TAP_CHECKPOINT_DIR/pipe"
for s in 1 2; do echo "w$s" > "$TAP_CHECKPOINT_DIR/model.pt"; echo "{\"step\": $s, \"loss\": 1, \"checkpoint\": true}" >> "$TAP_METRICS_FILE"; sleep 0.5; done"#;
        let out = tap_in(h, &["run", "--", "sh", "-c", script]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(err.matches("left out pw: a symbolic link to /etc/passwd").count(), 1, "once per run: {err}");
        assert_eq!(err.matches("left out pipe: not a regular file").count(), 1, "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains("succeeded; its checkpoints left out what tap cannot store: 2 entries (pipe, pw)"),
            "{last}"
        );
        let run = &json(h, &["runs", "list"])[0];
        assert_eq!(run["checkpoint_left_out"].as_array().map(Vec::len), Some(2), "{run}");
        let id = run["run_id"].as_str().expect("id");
        let dest = h.join("restored");
        let pulled = tap_in(h, &["checkpoints", "pull", id, dest.to_str().expect("utf-8")]);
        assert!(pulled.status.success(), "{}", text(&pulled.stderr));
        assert_eq!(std::fs::read(dest.join("model.pt")).expect("model"), b"w2\n", "the checkpoint is stored");
        let shown = text(&tap_in(h, &["runs", "show", id]).stdout);
        assert!(shown.contains("left out:    pw (a symbolic link to /etc/passwd"), "{shown}");
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
        assert!(text(&bad.stderr).contains("is refused: it holds white space"));
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
        let out = super::interrupt_after_progress(first, || json(h, &["runs", "list"]));
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
        assert_eq!(runs.as_array().map(Vec::len), Some(1), "the resume is an attempt of the same run: {runs}");
        assert_eq!(
            (runs[0]["run_id"].as_str(), runs[0]["status"].as_str()),
            (Some(first_id.as_str()), Some("succeeded"))
        );
        assert_eq!(runs[0]["attempts"][0]["status"], "interrupted");
        assert_eq!(runs[0]["recomputed_steps"], serde_json::Value::Null, "no step computed twice: {runs}");
        assert_eq!(steps(h, &first_id), (1..=100).collect::<Vec<u64>>(), "every step once, in the run's one series");
        assert_eq!(runs[0]["metric_points"].as_u64(), Some(300), "100 steps × 3 metrics, none recorded twice");
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
        // Regression (a fixed 800 ms sleep): the notice comes once the run is training.
        super::wait_until("the run's first metrics", Duration::from_secs(60), || {
            json(h, &["runs", "list"])[0]["metric_points"].as_u64().is_some_and(|n| n > 0)
        });
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
        assert!(text(&out.stderr).contains("ignoring line 1 of TAP_METRICS_FILE: not json"), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("lr=0.3"), "hyperparameters reach the child");
        let run = &json(home.path(), &["runs", "list"])[0];
        assert_eq!(run["final_metrics"]["acc"], 0.75);
        assert_eq!(run["hparams"]["learning_rate"]["version"], 1);
    }

    /// Regression (`train/loss` was refused, and one refused name dropped its whole line:
    /// `loss` beside `acc\xc3\xa9` or `..` was lost): namespaced names are recorded, a
    /// refused name is skipped alone and said once per run, and a huge name is not echoed.
    #[test]
    fn one_refused_name_dropped_the_whole_metrics_line() {
        let home = tempfile::tempdir().expect("tempdir");
        let long = "n".repeat(5000);
        let script = format!(
            r#"for s in 1 2 3; do printf '{{"step": %s, "train/loss": 0.5, "eval/acc@1": 0.9, "loss": 0.25, "acc\303\251": 1, "..": 2, "{long}": 3}}\n' $s >> "$TAP_METRICS_FILE"; done"#
        );
        let out = tap_in(home.path(), &["run", "--", "sh", "-c", &script]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stderr.matches("skipping metric \"acc\u{e9}\"").count(), 1, "once per run: {stderr}");
        assert_eq!(stderr.matches("skipping metric \"..\"").count(), 1, "{stderr}");
        assert!(!stderr.contains(&long), "a long name is clipped: {} bytes of stderr", stderr.len());
        let run = &json(home.path(), &["runs", "list"])[0];
        let finals = &run["final_metrics"];
        assert_eq!((finals["train/loss"].as_f64(), finals["eval/acc@1"].as_f64()), (Some(0.5), Some(0.9)), "{run}");
        assert_eq!(finals["loss"], 0.25, "the other values of the line are kept: {run}");
        assert_eq!(finals.as_object().map(|o| o.len()), Some(3), "{run}");
        let id = run["run_id"].as_str().expect("id").to_owned();
        assert_eq!(steps(home.path(), &id), [1, 2, 3]);
        let plot = home.path().join("p.png");
        let shown =
            tap_in(home.path(), &["runs", "plot", &id, "-m", "train/loss", "--out", plot.to_str().expect("utf-8")]);
        assert!(shown.status.success(), "a namespaced metric plots: {}", text(&shown.stderr));
    }

    /// Regression ("which run had the lowest loss" needed JSON and a script; no names, tags or
    /// notes; `runs list` could not filter, sort or limit): a sweep of four runs found by tag,
    /// by `--where` on metrics, hyperparameters and tags, sorted and cut, with chosen columns.
    #[test]
    fn runs_list_could_not_filter_sort_or_limit() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        for (name, lr, loss, team) in
            [("a", "0.1", "0.5", "nlp"), ("b", "0.01", "0.05", "vision"), ("c", "0.001", "0.08", "nlp")]
        {
            let script = format!(r#"echo '{{"step": 1, "train/loss": {loss}}}' >> "$TAP_METRICS_FILE""#);
            let out = tap_in(
                h,
                &[
                    "run",
                    "-e",
                    "sweep",
                    "--name",
                    name,
                    "--param",
                    &format!("lr={lr}"),
                    "--tag",
                    &format!("team={team}"),
                    "--",
                    "sh",
                    "-c",
                    &script,
                ],
            );
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        assert!(!tap_in(h, &["run", "-e", "sweep", "--name", "d", "--", "false"]).status.success());
        let names = |args: &[&str]| -> Vec<String> {
            let mut all = vec!["runs", "list"];
            all.extend_from_slice(args);
            let listed = json(h, &all);
            listed.as_array().expect("array").iter().map(|r| r["name"].as_str().unwrap_or("?").to_owned()).collect()
        };
        assert_eq!(names(&["--sort", "train/loss", "--limit", "1"]), ["b"], "the lowest loss");
        assert_eq!(names(&["--sort", "-train/loss"]), ["a", "c", "b", "d"], "d has no loss: last");
        assert_eq!(names(&["--where", "train/loss<0.1", "--where", "tag.team=nlp"]), ["c"]);
        assert_eq!(names(&["--where", "lr>=0.01", "--sort", "lr"]), ["b", "a"]);
        assert_eq!(names(&["--tag", "team=nlp", "--sort", "name"]), ["a", "c"]);
        assert_eq!(names(&["--status", "failed"]), ["d"]);
        assert_eq!(names(&["--status", "failed,succeeded", "--limit", "2"]).len(), 2);

        let table = text(&tap_in(h, &["runs", "list", "--columns", "train/loss,lr,tag.team", "--sort", "name"]).stdout);
        let head = table.lines().next().unwrap_or_default();
        assert!(head.contains("TRAIN/LOSS") && head.contains("LR") && head.contains("TAG.TEAM"), "{table}");
        let row_b = table.lines().find(|l| l.contains(" b ")).unwrap_or_default();
        assert!(row_b.contains("0.05") && row_b.contains("0.01") && row_b.contains("vision"), "{table}");

        // Tags, untags and notes by name and by unique id prefix.
        let tagged = tap_in(h, &["runs", "tag", "b", "stage=best", "team=core"]);
        assert!(tagged.status.success(), "{}", text(&tagged.stderr));
        assert_eq!(names(&["--tag", "stage=best"]), ["b"]);
        let id = json(h, &["runs", "list", "--tag", "stage=best"])[0]["run_id"].as_str().expect("id").to_owned();
        assert!(tap_in(h, &["runs", "untag", &id[..id.len() - 2], "stage"]).status.success(), "by prefix");
        assert!(names(&["--tag", "stage=best"]).is_empty());
        assert!(tap_in(h, &["runs", "tag", "b", "tmp=1"]).status.success());
        assert!(tap_in(h, &["runs", "untag", "b", "tmp=1"]).status.success(), "KEY=VALUE names its key");
        let missing = tap_in(h, &["runs", "untag", "b", "stage"]);
        assert!(text(&missing.stderr).contains("has no tag stage"), "{}", text(&missing.stderr));
        assert!(tap_in(h, &["runs", "note", "b", "lr 0.01 wins; try warmup"]).status.success());
        let shown = text(&tap_in(h, &["runs", "show", "b"]).stdout);
        assert!(shown.contains("tags:        team=core") && shown.contains("note:        lr 0.01 wins"), "{shown}");

        for (args, says) in [
            (&["runs", "list", "--where", "loss"][..], "is not FIELD<VALUE"),
            (&["runs", "list", "--where", "loss<low"], "compares numbers"),
            (&["runs", "list", "--status", "done"], "not a run status"),
            (&["runs", "list", "--sort", "a b"], "white space"),
            (&["runs", "tag", "b", "team="], "untag"),
        ] {
            let out = tap_in(h, args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    /// Regression (nothing said which code a run ran: no git commit, no dirty flag, no
    /// environment): two runs in a repository, the second after a commit and with an edit,
    /// on an EC2 node (IMDS on loopback); `runs show` and `runs diff` tell them apart.
    #[test]
    fn nothing_said_which_code_a_run_ran() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let repo = h.join("repo");
        std::fs::create_dir(&repo).expect("mkdir");
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
                .args(args)
                .current_dir(&repo)
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
            text(&out.stdout).trim().to_owned()
        };
        git(&["init", "-q"]);
        std::fs::write(repo.join("train.py"), "print('v1')\n").expect("write");
        git(&["add", "."]);
        git(&["commit", "-qm", "v1"]);
        let first = git(&["rev-parse", "HEAD"]);
        let imds = tap_test_support::FakeImds::start("i-0abc", "g5.xlarge");
        let run = |name: &str, lr: &str| {
            let out = Command::new(env!("CARGO_BIN_EXE_tap"))
                .args(["run", "--name", name, "--param", &format!("lr={lr}"), "--", "python3", "train.py"])
                .current_dir(&repo)
                .env("TAP_HOME", h)
                .env_remove("TAP_EXPERIMENT")
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("http://127.0.0.1:{}", imds.port))
                .output()
                .expect("tap");
            assert!(out.status.success(), "{}", text(&out.stderr));
        };
        run("one", "0.1");
        std::fs::write(repo.join("train.py"), "print('v2')\n").expect("write");
        git(&["commit", "-qam", "v2"]);
        std::fs::write(repo.join("train.py"), "print('v3, not committed')\n").expect("write");
        run("two", "0.01");

        let shown = json(h, &["runs", "show", "one"]);
        let p = &shown["run"]["provenance"];
        assert_eq!(p["git"]["commit"], first.as_str(), "{p}");
        assert_eq!((p["git"]["branch"].as_str(), p["git"]["dirty"].as_bool()), (Some("main"), Some(false)), "{p}");
        assert_eq!(p["tap_version"], env!("CARGO_PKG_VERSION"));
        assert!(p["python"]["version"].as_str().is_some_and(|v| v.starts_with('3')), "{p}");
        assert_eq!(p["python"]["packages_sha256"].as_str().map(str::len), Some(64), "{p}");
        assert_eq!(p["node"]["instance_type"], "g5.xlarge", "{p}");
        assert_eq!(p["node"]["ami_id"], tap_test_support::FAKE_AMI, "{p}");
        assert_eq!(p["node"]["availability_zone"], "us-east-1a", "{p}");
        let text_two = text(&tap_in(h, &["runs", "show", "two"]).stdout);
        assert!(text_two.contains("(main, dirty: uncommitted changes)"), "{text_two}");
        assert!(text_two.contains("node:        i-0abc g5.xlarge us-east-1a"), "{text_two}");

        let d = json(h, &["runs", "diff", "one", "two"]);
        let fields: Vec<&str> =
            d["differences"].as_array().expect("array").iter().filter_map(|x| x["field"].as_str()).collect();
        assert_eq!(fields, ["lr", "git.commit", "git.dirty"], "{d}");
        let table = text(&tap_in(h, &["runs", "diff", "one", "two"]).stdout);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("code") && l.contains("git.dirty") && l.contains("false") && l.contains("true")),
            "{table}"
        );
        let same = text(&tap_in(h, &["runs", "diff", "one", "one"]).stdout);
        assert!(same.contains("do not differ"), "{same}");
    }

    /// Regression (the store only grew: no `runs delete`, no way to drop old checkpoints or
    /// artifact versions): a run is deleted with its checkpoints, logs and metrics while the
    /// objects another run shares stay; a running run is refused; `tap gc` keeps the newest N
    /// and what is named, and says what it frees.
    #[test]
    fn the_store_only_grew() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let ckpts = |n: u32| {
            format!(
                r#"echo shared > "$TAP_CHECKPOINT_DIR/base.bin"; for s in $(seq 1 {n}); do head -c 100000 /dev/urandom > "$TAP_CHECKPOINT_DIR/w.bin"; echo "{{\"step\": $s, \"loss\": 1, \"checkpoint\": true}}" >> "$TAP_METRICS_FILE"; sleep 0.3; done; echo out"#
            )
        };
        for (name, n) in [("a", 3), ("b", 2)] {
            let out = tap_in(h, &["run", "-e", "sweep", "--name", name, "--", "sh", "-c", &ckpts(n)]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        let objects = |h: &Path| -> usize {
            std::fs::read_dir(h.join("artifacts/checkpoints/sweep/objects")).map_or(0, |d| d.count())
        };
        let before = objects(h);
        let dry = tap_in(h, &["runs", "delete", "a", "--dry-run"]);
        assert!(
            text(&dry.stdout).contains("would remove 3 checkpoints/versions and 3 objects"),
            "{}",
            text(&dry.stdout)
        );
        assert_eq!(objects(h), before, "a dry run deletes nothing");
        let gone = tap_in(h, &["runs", "delete", "a"]);
        assert!(gone.status.success(), "{}", text(&gone.stderr));
        assert!(text(&gone.stdout).contains("run sweep/"), "{}", text(&gone.stdout));
        assert_eq!(json(h, &["runs", "list"]).as_array().map(Vec::len), Some(1), "only b is left");
        assert!(!tap_in(h, &["logs", "a"]).status.success(), "its output went with it");
        assert_eq!(objects(h), before - 3, "a's own objects went; the shared one stayed");
        let dest = h.join("b-restored");
        let pulled = tap_in(h, &["checkpoints", "pull", "b", dest.to_str().expect("utf-8")]);
        assert!(pulled.status.success(), "b's checkpoint is whole: {}", text(&pulled.stderr));
        assert_eq!(std::fs::read(dest.join("base.bin")).expect("shared"), b"shared\n");

        // A running run is refused.
        let mut running = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "-e", "sweep", "--name", "live", "--", "sleep", "30"])
            .env("TAP_HOME", h)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tap run");
        let listed = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            json(h, &["runs", "list", "--status", "running"]).as_array().is_some_and(|a| !a.is_empty())
        });
        assert!(listed, "the live run registered");
        let refused = tap_in(h, &["runs", "delete", "live"]);
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(running.id() as i32), nix::sys::signal::Signal::SIGINT);
        let _ = running.wait();
        assert_eq!(refused.status.code(), Some(1));
        assert!(
            text(&refused.stderr).contains("is running") && text(&refused.stderr).contains("stop it first"),
            "{}",
            text(&refused.stderr)
        );

        // gc: b keeps its newest checkpoint; artifacts keep their newest version.
        let data = one_file_dir(h, "data");
        for v in ["1", "2", "3"] {
            std::fs::write(data.join("f"), v.repeat(1000)).expect("write");
            assert!(tap_in(h, &["artifacts", "push", data.to_str().expect("utf-8"), "--name", "ds"]).status.success());
        }
        let plan = json(
            h,
            &["--output", "json", "gc", "--keep-checkpoints", "1", "--keep-artifact-versions", "1", "--dry-run"],
        );
        assert_eq!(plan["dry_run"], true);
        assert!(plan["freed_bytes"].as_u64().is_some_and(|b| b >= 100_000 + 2000), "{plan}");
        let freed = text(&tap_in(h, &["gc", "--keep-checkpoints", "1", "--keep-artifact-versions", "1"]).stdout);
        assert!(
            freed.contains("checkpoints/sweep: removed 1 checkpoints/versions")
                && freed.contains("artifacts/ds: removed 2"),
            "{freed}"
        );
        assert!(freed.contains("freed "), "{freed}");
        let back = h.join("ds-back");
        assert!(tap_in(h, &["artifacts", "pull", "ds", back.to_str().expect("utf-8")]).status.success());
        assert_eq!(std::fs::read_to_string(back.join("f")).expect("f"), "3".repeat(1000));
        let again = text(&tap_in(h, &["gc", "--keep-checkpoints", "1", "--keep-artifact-versions", "1"]).stdout);
        assert!(again.contains("freed 0 B"), "nothing more to free: {again}");
    }

    /// Runs `script` in a private mount namespace (`unshare`, so the tmpfs it mounts never
    /// outlives it) with TAP_BIN and OUT set; what it leaves in OUT (outside the tmpfs) is
    /// read afterwards.
    fn in_tmpfs(script: &str, out: &Path) -> Output {
        Command::new("unshare")
            .args(["--mount", "--map-root-user", "sh", "-c", script])
            .env("TAP_BIN", env!("CARGO_BIN_EXE_tap"))
            .env("OUT", out)
            .env_remove("TAP_HOME")
            .env_remove("TAP_EXPERIMENT")
            .output()
            .expect("unshare")
    }

    /// The command of both full-disk runs: 50 steps, then the disk fills (`fill1`), then lines
    /// up to LAST; with FILLS=2 `fill2` fills it again after tap gave its reserve back.
    const FILLING_RUN: &str = r#"$TAP_BIN run --disk-reserve 2MiB -- sh -c '
for i in $(seq 1 50); do echo "{\"step\": $i, \"loss\": 1}" >> "$TAP_METRICS_FILE"; echo "line $i"; done
sleep 1.5
dd if=/dev/zero of=$T/fill1 bs=64k 2>/dev/null
sleep 2.5
[ "$FILLS" = 2 ] && dd if=/dev/zero of=$T/fill2 bs=64k 2>/dev/null
for i in $(seq 51 $LAST); do echo "line $i padded to a hundred bytes so that the store has to grow to hold them ........"; done
sleep 1.5' > $OUT/stdout 2> $OUT/stderr; echo $? > $OUT/rc"#;

    fn full_disk_script(fills: u32, last: u32) -> String {
        format!(
            r#"set -u; T=$OUT/t; mkdir -p $T && mount -t tmpfs -o size=6m tmpfs $T || exit 99
export TAP_HOME=$T/home FILLS={fills} T LAST={last}
{FILLING_RUN}
rm -f $T/fill1 $T/fill2
$TAP_BIN --output json runs list > $OUT/runs.json
id=$($TAP_BIN --output json runs list | sed -n 's/.*"run_id": *"\([^"]*\)".*/\1/p' | head -1)
$TAP_BIN logs "$id" > $OUT/logs.txt 2>&1
true"#
        )
    }

    /// Regression (a full disk mid-run: tap warned, then printed "could not record the end …
    /// readers will show it as lost" and "run … succeeded" and exited 0; the store then showed
    /// `lost`, no metric points, 171 of 301 lines, and nothing said what was dropped). On a
    /// small tmpfs, as the newcomer did: the disk fills mid-run; tap gives back its reserve and
    /// records everything; the last line, the exit status and the store agree.
    #[test]
    fn a_full_disk_made_the_record_contradict_the_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path();
        let ran = in_tmpfs(&full_disk_script(1, 100), out);
        assert!(ran.status.success(), "{}", text(&ran.stderr));
        let stderr = std::fs::read_to_string(out.join("stderr")).expect("stderr");
        let rc = std::fs::read_to_string(out.join("rc")).expect("rc");
        assert!(stderr.contains("the disk is full") && stderr.contains("gave back the 2.0 MiB"), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        let runs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("runs.json")).expect("runs")).expect("json");
        let run = &runs[0];
        assert_eq!((rc.trim(), run["status"].as_str()), ("0", Some("succeeded")), "{last}\n{stderr}");
        assert!(last.ends_with("succeeded"), "the last line agrees with the store: {last}");
        assert_eq!(run["metric_points"], 50, "{run}");
        let logs = std::fs::read_to_string(out.join("logs.txt")).expect("logs");
        assert_eq!(logs.lines().filter(|l| l.starts_with("line ")).count(), 100, "every line recorded: {logs}");
    }

    /// Beyond the reserve: the disk fills again after tap gave its reserve back. The end
    /// cannot be recorded; tap's last line says so and what the store does not hold, and it
    /// exits 74 — as the store shows the run (lost), with exactly the lines it says it has.
    #[test]
    fn a_full_disk_beyond_the_reserve_is_said_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path();
        let ran = in_tmpfs(&full_disk_script(2, 30_000), out);
        assert!(ran.status.success(), "{}", text(&ran.stderr));
        let stderr = std::fs::read_to_string(out.join("stderr")).expect("stderr");
        let rc = std::fs::read_to_string(out.join("rc")).expect("rc");
        let last = stderr.lines().last().unwrap_or_default();
        assert_eq!(rc.trim(), "74", "{stderr}");
        assert!(last.contains("the store could not record its end: readers show it as lost"), "{last}");
        let runs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("runs.json")).expect("runs")).expect("json");
        assert_eq!(runs[0]["status"], "lost", "{}", runs[0]);
        let logs = std::fs::read_to_string(out.join("logs.txt")).expect("logs");
        let recorded = logs.lines().filter(|l| l.starts_with("line ")).count();
        let said: usize = last
            .split("does not hold ")
            .nth(1)
            .and_then(|r| r.split(" metric points and ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the last line counts the lines: {last}"));
        assert_eq!(recorded + said, 30_000, "it says exactly what it dropped: {last}");
    }

    /// Regression (a read-only copy of a store — a mounted snapshot, a colleague's directory —
    /// could not even be listed: "unable to open database file"): on a file system remounted
    /// read-only, every read command works and every write says in one line that the store is
    /// read-only.
    #[test]
    fn a_read_only_copy_of_a_store_could_not_even_be_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ran = in_tmpfs(READ_ONLY_SCRIPT, dir.path());
        let said = text(&ran.stdout) + &text(&ran.stderr);
        assert!(ran.status.success(), "{said}");
        assert!(!said.contains("FAIL"), "every read works: {said}");
        assert_eq!(said.matches("is read-only: tap reads it, but cannot record anything there").count(), 3, "{said}");
        assert_eq!(said.matches("rc=1").count(), 3, "{said}");
        assert!(!said.contains("os error"), "{said}");
    }

    const READ_ONLY_SCRIPT: &str = r#"set -u; T=$OUT/t; mkdir -p $T && mount -t tmpfs -o size=16m tmpfs $T || exit 99
export TAP_HOME=$T/home
$TAP_BIN run --name r1 --tag team=nlp -- sh -c 'echo "{\\"step\\": 1, \\"loss\\": 0.5}" >> $TAP_METRICS_FILE; echo hi; echo w > $TAP_CHECKPOINT_DIR/m.bin; echo "{\\"checkpoint\\": true, \\"step\\": 1}" >> $TAP_METRICS_FILE; sleep 0.3' >/dev/null 2>&1
$TAP_BIN params set lr 0.1 >/dev/null
mkdir -p $OUT/data && echo d > $OUT/data/f && $TAP_BIN artifacts push $OUT/data --name ds >/dev/null 2>&1
mount -o remount,ro $T || exit 98
for c in "runs list" "runs show r1" "logs r1" "artifacts ls" "checkpoints list r1" "params list" "runs list --where loss<1"; do
  $TAP_BIN $c > /dev/null 2> $OUT/err || { echo "FAIL: $c: $(cat $OUT/err)"; }
done
$TAP_BIN artifacts pull ds $OUT/back >/dev/null 2>&1 || echo "FAIL: artifacts pull"
$TAP_BIN runs tag r1 a=b; echo "rc=$?"
$TAP_BIN run -- true; echo "rc=$?"
$TAP_BIN params set lr 0.2; echo "rc=$?"
"#;

    /// Regression (a byte that is not UTF-8 made tap stop reading that pipe; the command then
    /// died of SIGPIPE, exit 141, run failed, output lost): the issue's reproduction, and the
    /// same on stderr.
    #[test]
    fn output_that_is_not_utf8_is_kept_and_the_command_lives() {
        let home = tempfile::tempdir().expect("tempdir");
        let script = r#"echo before; printf 'bad \377 byte\n'; printf 'err \377\n' >&2; sleep 0.5; for i in 1 2 3; do echo after $i; echo err $i >&2; done"#;
        let out = tap_in(home.path(), &["run", "--", "sh", "-c", script]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(text(&out.stdout).contains("after 3\n"), "{}", text(&out.stdout));
        assert!(stderr.contains("err 3"), "{stderr}");
        assert!(stderr.contains("line 2 of the command's stdout is not UTF-8"), "said once, with its line: {stderr}");
        assert!(stderr.contains("line 1 of the command's stderr is not UTF-8"), "{stderr}");
        assert_eq!(stderr.matches("is not UTF-8").count(), 2, "once per stream: {stderr}");
        let run = &json(home.path(), &["runs", "list"])[0];
        assert_eq!(run["status"], "succeeded");
        let id = run["run_id"].as_str().expect("id");
        let logs = text(&tap_in(home.path(), &["logs", id]).stdout);
        assert!(logs.contains("bad \u{FFFD} byte\n") && logs.contains("after 3\n"), "every line recorded: {logs}");
    }

    /// Regression (one line of TAP_METRICS_FILE that was not UTF-8 silently ended metric
    /// reading, and with it every later checkpoint upload): it is reported with its number and
    /// skipped, and the lines after it still count.
    #[test]
    fn a_metrics_line_that_is_not_utf8_is_skipped_and_reading_goes_on() {
        let home = tempfile::tempdir().expect("tempdir");
        let script = r#"printf '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": \377}\n' >> "$TAP_METRICS_FILE"; sleep 0.3; echo '{"step": 3, "loss": 0.25}' >> "$TAP_METRICS_FILE""#;
        let out = tap_in(home.path(), &["run", "--", "sh", "-c", script]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("ignoring line 2 of TAP_METRICS_FILE: not UTF-8"), "{stderr}");
        let run = &json(home.path(), &["runs", "list"])[0];
        assert_eq!(run["final_metrics"]["loss"], 0.25, "the line after the bad one still counts: {run}");
        let id = run["run_id"].as_str().expect("id").to_owned();
        assert_eq!(steps(home.path(), &id), [1, 3]);
    }

    /// Regression (a command that exited but left a background process holding its stdout kept
    /// tap waiting for as long as that process lived): tap ends soon after the command does.
    #[test]
    fn a_background_process_holding_the_output_does_not_keep_tap_waiting() {
        let home = tempfile::tempdir().expect("tempdir");
        let pidfile = home.path().join("grandchild.pid");
        let script = format!("echo started; sleep 300 & echo $! > {}; exit 0", pidfile.display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "--", "sh", "-c", &script])
            .env("TAP_HOME", home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap runs");
        // Bounded: the grandchild lives 300 s; tap must be done long before.
        let status = wait_bounded(&mut child, Duration::from_secs(60));
        let grandchild = std::fs::read_to_string(&pidfile).unwrap_or_default();
        let left_alive = alive(grandchild.trim());
        if let Ok(pid) = grandchild.trim().parse::<i32>() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        assert!(!left_alive, "what the command left in its process group is ended");
        let Some(status) = status else {
            panic!("tap still waits for the background process 60 s after the command exited");
        };
        let out = child.wait_with_output().expect("output");
        assert_eq!(status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("started"), "the command's own output is kept");
        assert!(text(&out.stderr).contains("still holds its output open"), "{}", text(&out.stderr));
        assert_eq!(json(home.path(), &["runs", "list"])[0]["status"], "succeeded");
    }

    /// Waits (at most `limit`) for `child` to exit.
    fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(pid: &str) -> bool {
        // A zombie is as good as gone.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    }

    /// Regression (`kill -9` of `tap run` left the run `running` forever, and `tap logs
    /// --follow` on it never returned): every reader shows it as lost, and follow ends with a
    /// line saying so.
    #[test]
    fn a_run_whose_tap_was_killed_is_lost_and_logs_follow_ends() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let pidfile = h.join("command.pid");
        let script = format!("echo hello; echo $$ > {}; exec sleep 30", pidfile.display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "-e", "k9", "--", "sh", "-c", &script])
            .env("TAP_HOME", h)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tap run");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let id = loop {
            let list = json(h, &["runs", "list"]);
            if let Some(id) = list[0]["run_id"].as_str() {
                assert_eq!(list[0]["status"], "running", "alive while its tap runs: {list}");
                break id.to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "the run never started");
            std::thread::sleep(Duration::from_millis(50));
        };
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        assert_eq!(json(h, &["runs", "list"])[0]["status"], "lost");
        assert_eq!(json(h, &["runs", "show", &id])["run"]["status"], "lost");
        let show = text(&tap_in(h, &["runs", "show", &id]).stdout);
        assert!(show.contains("status:      lost") && show.contains("last heartbeat"), "{show}");
        let mut follow = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["logs", "--follow", &id])
            .env("TAP_HOME", h)
            .stdout(Stdio::piped())
            .spawn()
            .expect("tap logs");
        let status = wait_bounded(&mut follow, Duration::from_secs(30)).expect("logs --follow ends on a lost run");
        let out = follow.wait_with_output().expect("output");
        assert!(status.success());
        assert!(text(&out.stdout).contains(&format!("tap: run {id} is lost")), "{}", text(&out.stdout));
        // The command outlived its tap (nobody is left to clean up after kill -9).
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }

    /// Regression (SIGTERM to tap did not end a command that ignores it): the command gets
    /// TERM_GRACE, then it and its process group are killed, and tap ends within its bound.
    #[test]
    fn sigterm_to_tap_ends_a_command_that_ignores_it_and_its_group() {
        let home = tempfile::tempdir().expect("tempdir");
        let pidfile = home.path().join("grandchild.pid");
        let script = format!("trap '' TERM; sleep 300 & echo $! > {}; echo ready; wait; sleep 300", pidfile.display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "--", "sh", "-c", &script])
            .env("TAP_HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap runs");
        assert!(super::wait_for_file(&pidfile, Duration::from_secs(30)), "the command started");
        super::wait_until("the run recorded as running", Duration::from_secs(30), || {
            json(home.path(), &["runs", "list"])[0]["status"] == "running"
        });
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
        let status = wait_bounded(&mut child, Duration::from_secs(60)).expect("tap ends within its SIGTERM bound");
        let err = text(&child.wait_with_output().expect("output").stderr);
        assert_eq!(status.code(), Some(137), "the command was killed: {err}");
        assert!(err.contains("SIGTERM forwarded") && err.contains("SIGKILL"), "{err}");
        let grandchild = std::fs::read_to_string(&pidfile).expect("pid");
        assert!(!alive(grandchild.trim()), "the process group is gone");
        assert_eq!(json(home.path(), &["runs", "list"])[0]["status"], "cancelled", "the user's stop, not a failure");
    }

    /// SIGTERM during the final upload (a checkpoint the command wrote without announcing it):
    /// the upload is cancelled or already done, tap exits with the command's status, LATEST
    /// never points at a partial checkpoint, and no temporary file is left in the store.
    #[test]
    fn sigterm_during_the_final_upload_leaves_no_temporary_file() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let exited = h.join("exited");
        let script = format!(
            r#"head -c 300000000 /dev/urandom > "$TAP_CHECKPOINT_DIR/m.bin"; touch {}; exit 0"#,
            exited.display()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "-e", "fin", "--", "sh", "-c", &script])
            .env("TAP_HOME", h)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap runs");
        assert!(super::wait_for_file(&exited, Duration::from_secs(60)), "the command ran");
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let status = wait_bounded(&mut child, Duration::from_secs(60)).expect("tap ends within its SIGTERM bound");
        let err = text(&child.wait_with_output().expect("output").stderr);
        assert_eq!(status.code(), Some(0), "the command's status: {err}");
        let cancelled = err.contains("final checkpoint upload cancelled");
        assert!(cancelled || err.contains("final checkpoint"), "{err}");
        let store = h.join("artifacts");
        let temporary: Vec<_> = walk(&store).into_iter().filter(|p| p.to_string_lossy().contains(".tmp")).collect();
        assert!(temporary.is_empty(), "no temporary file in the store: {temporary:?}");
        let latest = store.join("checkpoints/fin/LATEST");
        assert_eq!(latest.exists(), !cancelled, "LATEST moves only to a complete checkpoint: {err}");
        assert_eq!(json(h, &["runs", "list"])[0]["status"], "succeeded");
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    /// Regression (a notice during the restore of `--resume` killed tap by the signal, exit
    /// 138, with a partial temporary file): a notice already up when `tap run --resume` starts
    /// stops it cleanly — exit 75, no record, nothing left in its scratch directory.
    #[test]
    fn a_notice_during_start_up_exits_75_and_leaves_nothing() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let first = tap_in(
            h,
            &[
                "run",
                "-e",
                "nr",
                "--",
                "sh",
                "-c",
                r#"head -c 3000000 /dev/zero > "$TAP_CHECKPOINT_DIR/m.bin"; exit 1"#,
            ],
        );
        // A failed run with a checkpoint: the one `--resume` takes.
        assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
        let notice = h.join("notice");
        std::fs::write(&notice, "{}").expect("notice");
        let out = tap_in(
            h,
            &[
                "run",
                "-e",
                "nr",
                "--resume",
                "--notice-file",
                notice.to_str().expect("utf-8"),
                "--",
                "sh",
                "-c",
                "echo started",
            ],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{err}");
        assert!(err.contains("the command was not started"), "{err}");
        assert!(!text(&out.stdout).contains("started"), "the command did not run");
        assert_eq!(json(h, &["runs", "list"]).as_array().expect("list").len(), 1, "no record for it");
        let scratch: Vec<_> = std::fs::read_dir(h.join("runs")).expect("runs").flatten().collect();
        assert!(scratch.is_empty(), "the first run's went once recorded, this one left none: {scratch:?}");
    }

    /// The final checkpoint's verdict and the planner's forecast, in `runs show` and JSON:
    /// two periodic checkpoints, a notice, a final checkpoint in time → committed; a command
    /// that ignores the notice and exits → missed, with how many steps a resume loses.
    #[test]
    fn every_final_checkpoint_gets_a_verdict_and_the_planner_a_forecast() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let notice = h.join("notice");
        let n = notice.to_str().expect("utf-8");
        let script = h.join("train.sh");
        std::fs::write(
            &script,
            r#"ckpt() { head -c 2000000 /dev/urandom > "$TAP_CHECKPOINT_DIR/w.bin"; echo "{\"step\": $1, \"loss\": 1, \"checkpoint\": true}" >> "$TAP_METRICS_FILE"; sleep 0.5; }
if [ "$1" = committed ]; then trap 'ckpt 30; exit 0' USR1; ckpt 10; ckpt 20
else trap 'exit 0' USR1; ckpt 12; echo '{"step": 17, "loss": 1}' >> "$TAP_METRICS_FILE"; sleep 0.3; fi
touch "$2"
i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; exit 9
"#,
        )
        .expect("script");
        let sh = script.to_str().expect("utf-8");
        let out = tap_in(h, &["run", "-e", "v", "--notice-file", n, "--", "sh", sh, "committed", n]);
        assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("tap: final checkpoint committed:"), "{err}");
        let run = &json(h, &["runs", "list"])[0];
        let id = run["run_id"].as_str().expect("id").to_owned();
        let verdict = &run["interruption"]["verdict"];
        assert_eq!(verdict["verdict"], "committed", "{run}");
        assert!(verdict["spare_s"].as_f64().expect("spare") > 60.0, "{verdict}");
        assert!(run["forecast"]["commit_s"].as_f64().expect("forecast") >= 0.0, "{run}");
        let show = text(&tap_in(h, &["runs", "show", &id]).stdout);
        assert!(
            show.contains("final ckpt:  committed") && show.contains("planner:     a final checkpoint would take"),
            "{show}"
        );

        std::fs::remove_file(&notice).expect("rm");
        let out = tap_in(h, &["run", "-e", "v", "--notice-file", n, "--", "sh", sh, "missed", n]);
        assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
        let run = &json(h, &["runs", "list"])[0];
        let verdict = &run["interruption"]["verdict"];
        assert_eq!((verdict["verdict"].as_str(), verdict["steps_older"].as_u64()), (Some("missed"), Some(5)), "{run}");
    }

    /// Regression class (println! panics on a closed stdout, and a panicking tap run would
    /// orphan its command): `tap run ... | head -1` keeps supervising and recording.
    #[test]
    fn a_closed_stdout_does_not_kill_tap_run() {
        let home = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tap"));
        cmd.args([
            "run",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; sleep 0.3; echo last",
        ])
        .env("TAP_HOME", home.path());
        let (status, err) = into_a_closed_pipe(&mut cmd);
        assert_eq!(status.code(), Some(0), "{err}");
        assert!(err.contains("stdout is closed"), "{err}");
        let run = &json(home.path(), &["runs", "list"])[0];
        assert_eq!(run["status"], "succeeded");
        let logs = text(&tap_in(home.path(), &["logs", run["run_id"].as_str().expect("id")]).stdout);
        assert!(logs.ends_with("last\n") && logs.lines().count() == 3001, "every line recorded");
    }

    /// Runs `cmd` with its stdout closed at once: its exit status and stderr (bounded wait).
    fn into_a_closed_pipe(cmd: &mut Command) -> (std::process::ExitStatus, String) {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tap runs");
        drop(child.stdout.take());
        let status = wait_bounded(&mut child, Duration::from_secs(60)).expect("tap ends");
        (status, text(&child.wait_with_output().expect("output").stderr))
    }

    /// Regression (`tap runs show ID -o json | head -c1` said `tap: error: Broken pipe`: the
    /// JSON writer's error hid the closed pipe): a listing into a closed pipe exits 0, silent.
    #[test]
    fn a_listing_into_a_closed_pipe_exits_quietly() {
        let home = tempfile::tempdir().expect("tempdir");
        let points = r#"i=0; while [ $i -lt 3000 ]; do echo "{\"step\": $i, \"loss\": 1}" >> "$TAP_METRICS_FILE"; i=$((i+1)); done"#;
        assert!(tap_in(home.path(), &["run", "--", "sh", "-c", points]).status.success());
        let id = json(home.path(), &["runs", "list"])[0]["run_id"].as_str().expect("id").to_owned();
        for args in [&["runs", "show", id.as_str(), "--output", "json"][..], &["runs", "show", id.as_str()]] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tap"));
            cmd.args(args).env("TAP_HOME", home.path()).env_remove("TAP_OUTPUT");
            let (status, err) = into_a_closed_pipe(&mut cmd);
            assert_eq!((status.code(), err.as_str()), (Some(0), ""), "tap {args:?} into a closed pipe");
        }
    }

    /// Completions and the man page come from the binary itself; regression:
    /// `tap completions bash | head` panicked (clap_complete's writer) instead of ending quietly.
    #[test]
    fn completions_and_the_man_page_and_a_closed_pipe() {
        for shell in ["bash", "zsh", "fish"] {
            let out = crate::tap(&["completions", shell]);
            assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
            assert!(text(&out.stdout).contains("checkpoints"), "{shell}");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tap"));
            cmd.args(["completions", shell]);
            let (status, err) = into_a_closed_pipe(&mut cmd);
            assert_eq!((status.code(), err.as_str()), (Some(0), ""), "tap completions {shell} into a closed pipe");
        }
        let bad = crate::tap(&["completions", "cmd.exe"]);
        assert_eq!(bad.status.code(), Some(2));
        assert!(text(&bad.stderr).contains("possible values: bash"), "{}", text(&bad.stderr));
        let man = crate::tap(&["man"]);
        assert!(man.status.success() && text(&man.stdout).contains(".TH tap 1"), "{}", text(&man.stderr));
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = dir.path().join("man1");
        let out = crate::tap(&["man", "--dir", pages.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(pages.join("tap-runs-list.1").is_file() && pages.join("tap.1").is_file());
    }

    /// Regression class (a line without an end grew tap's memory without bound): output lines
    /// come in pieces of at most 1 MiB, and an overlong metrics line is reported and skipped.
    #[test]
    fn overlong_lines_are_bounded() {
        let home = tempfile::tempdir().expect("tempdir");
        let script = r#"head -c 2500000 /dev/zero | tr '\0' x; echo; printf '{"step": 1, "loss": 1}\n' >> "$TAP_METRICS_FILE"; head -c 1500000 /dev/zero | tr '\0' y >> "$TAP_METRICS_FILE"; printf '\n{"step": 2, "loss": 0.5}\n' >> "$TAP_METRICS_FILE""#;
        let out = tap_in(home.path(), &["run", "--", "sh", "-c", script]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{}", &err[..err.len().min(2000)]);
        assert!(
            err.contains("ignoring line 2 of TAP_METRICS_FILE: longer than 1048576 bytes"),
            "{}",
            &err[..err.len().min(2000)]
        );
        assert!(err.len() < 10_000, "the overlong line is not echoed into the message");
        let run = &json(home.path(), &["runs", "list"])[0];
        assert_eq!(run["final_metrics"]["loss"], 0.5, "the line after it counts");
        let logs = text(&tap_in(home.path(), &["logs", run["run_id"].as_str().expect("id")]).stdout);
        let lengths: Vec<usize> = logs.lines().map(str::len).collect();
        assert_eq!(lengths, [1 << 20, 1 << 20, 2_500_000 - (2 << 20)]);
    }

    #[test]
    fn runs_plot_writes_a_png() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let script =
            r#"for s in 1 2 3 4; do echo "{\"step\": $s, \"loss\": 0.$((5 - s))}" >> "$TAP_METRICS_FILE"; done"#;
        assert!(tap_in(h, &["run", "--", "sh", "-c", script]).status.success());
        let id = json(h, &["runs", "list"])[0]["run_id"].as_str().expect("id").to_owned();
        let png = h.join("curves.png");
        let p = png.to_str().expect("utf-8");
        let out = json(h, &["runs", "plot", &id, "--out", p, "--size", "400x300", "--log-y"]);
        assert_eq!(out["metrics"], serde_json::json!(["loss"]));
        let bytes = std::fs::read(&png).expect("the PNG is written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let missing = tap_in(h, &["runs", "plot", &id, "--metric", "acc", "--out", p]);
        assert_eq!(missing.status.code(), Some(1));
        assert_eq!(text(&missing.stderr).trim(), "tap: error: no metric acc in these runs; they have: loss");
        assert_eq!(std::fs::read(&png).expect("png"), bytes, "a failed plot leaves the old file alone");
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
    fn artifacts_push_ls_pull_round_trip() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(data.path().join("ds/train")).expect("mkdir");
        std::fs::write(data.path().join("ds/train/a.bin"), vec![1u8; 100_000]).expect("write");
        std::fs::write(data.path().join("ds/labels.csv"), "x,y\n1,2\n").expect("write");
        let push = tap_in(h, &["artifacts", "push", data.path().join("ds").to_str().expect("utf-8")]);
        assert!(push.status.success(), "{}", text(&push.stderr));
        assert!(text(&push.stdout).starts_with("pushed ds version "), "{}", text(&push.stdout));
        let ls = json(h, &["artifacts", "ls"]);
        assert_eq!((ls[0]["name"].as_str(), ls[0]["files"].as_array().map(Vec::len)), (Some("ds"), Some(2)));
        // Regression (issue 24): an artifact was listed as a checkpoint, an experiment id and
        // a run called "push"; it is its name and version, under `list` as under `ls`.
        let listed = json(h, &["artifacts", "list"]);
        assert_eq!(listed, ls);
        let version = ls[0]["version"].as_str().expect("a version");
        assert!(text(&push.stdout).starts_with(&format!("pushed ds version {version}")), "{}", text(&push.stdout));
        for absent in ["experiment_id", "run_id", "checkpoint_id"] {
            assert!(ls[0].get(absent).is_none(), "{absent} in {}", ls[0]);
        }
        let table = text(&tap_in(h, &["artifacts", "list"]).stdout);
        assert!(table.contains("ds ") && table.contains(version) && !table.contains("push"), "{table}");
        let dest = data.path().join("back");
        let pull = tap_in(h, &["artifacts", "pull", "ds", dest.to_str().expect("utf-8")]);
        assert!(pull.status.success(), "{}", text(&pull.stderr));
        assert_eq!(std::fs::read(dest.join("train/a.bin")).expect("read"), vec![1u8; 100_000]);
        assert_eq!(std::fs::read_to_string(dest.join("labels.csv")).expect("read"), "x,y\n1,2\n");
        let missing = tap_in(h, &["artifacts", "pull", "nope"]);
        assert_eq!(missing.status.code(), Some(1));
        assert!(text(&missing.stderr).contains("no artifact nope"));
        let bad = tap_in(h, &["artifacts", "push", "/nonexistent/file"]);
        assert!(text(&bad.stderr).contains("no such file or directory"), "{}", text(&bad.stderr));
        let tiny = tap_in(h, &["artifacts", "push", "--part-size", "1MiB", data.path().to_str().expect("utf-8")]);
        assert_eq!(tiny.status.code(), Some(2), "S3 part limits are checked up front");
    }

    /// Regression (a survivor rank trained on, or hung on its lost peer, until SSM's cancel
    /// happened to reach it): a rank of a managed job stops its command within a few seconds
    /// once the fleet's controller ends its attempt in the job's record, whatever SSM does.
    #[test]
    fn a_survivor_rank_stops_when_the_controller_ends_its_attempt() {
        use tap_cli::store::RunStore;
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let store = tap_cli::store::sqlite::SqliteStore::open(&h.join("tap.db")).expect("store");
        let mut record = tap_core::runs::Run::new("llm", "job-9", vec!["train".into()], "fleet", 0);
        record.job = Some(tap_core::runs::Job { fleet_id: "fleet-1".into(), attempt: 1, nodes: vec![], stop: None });
        rt.block_on(store.create_run(&record)).expect("job record");
        let rank = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["run", "-e", "llm", "--", "sleep", "600"])
            .env("TAP_HOME", h)
            .env("TAP_RUN_GROUP", "job-9")
            .env("TAP_JOB_ATTEMPT", "1")
            .env("NODE_RANK", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap run");
        // Regression (a fixed 2 s sleep): the attempt ends once this rank runs.
        super::wait_until("the rank's run", Duration::from_secs(60), || {
            json(h, &["runs", "list", "-e", "llm"])
                .as_array()
                .is_some_and(|runs| runs.iter().any(|r| r["group"] == "job-9" && r["status"] == "running"))
        });
        let stopped = std::time::Instant::now();
        rt.block_on(store.update_run("llm", "job-9", |r| {
            if let Some(j) = r.job.as_mut() {
                j.stop = Some("spot reclaim of rank 0's node i-0".into());
            }
        }))
        .expect("stop");
        let out = rank.wait_with_output().expect("wait");
        let took = stopped.elapsed();
        let err = text(&out.stderr);
        assert!(
            err.contains("tap: job job-9 ended attempt 1: spot reclaim of rank 0's node i-0: stopping this rank"),
            "{err}"
        );
        assert!(took < Duration::from_secs(30), "stopped {took:?} after the attempt ended");
        assert!(!out.status.success(), "a stopped rank does not report success");
    }

    /// What `tap launch` does on two nodes, on one machine: two `tap run`s with the
    /// rendezvous variables, each starting torchrun, one shared group id — a sharded job of
    /// two ranks, each committing its own shard. Needs PyTorch: the Python beside $PYTEST
    /// (scripts/tools.sh installs torch there, as CI does), else python3; where torch cannot be
    /// imported the test says so and stops.
    #[test]
    fn two_node_torchrun_job_runs_locally() {
        let python = std::env::var_os("PYTEST")
            .map(|p| std::path::PathBuf::from(p).with_file_name("python"))
            .filter(|p| p.is_file())
            .map_or_else(|| "python3".to_owned(), |p| p.to_string_lossy().into_owned());
        let probe = Command::new(&python).args(["-c", "import torch"]).output().expect("python3");
        if !probe.status.success() {
            eprintln!(
                "skipped two_node_torchrun_job_runs_locally: PyTorch is not importable here ({})",
                text(&probe.stderr).lines().last().unwrap_or("import failed")
            );
            return;
        }
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        assert!(tap_in(h, &["params", "set", "steps", "30"]).status.success());
        let port = tap_test_support::free_port().to_string();
        let ddp = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/ddp_train.py");
        let nodes: Vec<_> = (0..2)
            .map(|rank| {
                Command::new(env!("CARGO_BIN_EXE_tap"))
                    .args(["run", "-e", "ddp", "--", &python, "-m", "torch.distributed.run", "--nnodes=2"])
                    .arg(format!("--node-rank={rank}"))
                    .args(["--master-addr=127.0.0.1", &format!("--master-port={port}"), "--nproc-per-node=1", ddp])
                    .env("TAP_HOME", h)
                    .env("TAP_RUN_GROUP", "g-local")
                    .env("NODE_RANK", rank.to_string())
                    .env("NNODES", "2")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("tap run")
            })
            .collect();
        for n in nodes {
            let out = n.wait_with_output().expect("wait");
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        let runs = json(h, &["runs", "list", "--group", "g-local"]);
        assert_eq!(runs.as_array().map(Vec::len), Some(3), "the group's run and its two ranks': {runs}");
        let rank0 = runs.as_array().expect("runs").iter().find(|r| r["node_rank"] == 0).expect("rank 0");
        assert_eq!(rank0["final_metrics"]["world"], 2.0, "both nodes joined one job");
        assert!(rank0["final_metrics"]["loss"].as_f64().expect("loss") < 0.1);
        let group = runs.as_array().expect("runs").iter().find(|r| r["run_id"] == "g-local").expect("the group");
        assert_eq!(group["checkpoint"], "g-local-a1-s0000000030", "both ranks' shards of the last step: {group}");
    }

    #[cfg(feature = "fleet")]
    #[test]
    fn fleet_commands_need_a_stack() {
        let home = tempfile::tempdir().expect("tempdir");
        for args in [&["fleet", "status"][..], &["launch", "--nodes", "2", "--", "python3", "train.py"]] {
            let out = Command::new(env!("CARGO_BIN_EXE_tap"))
                .args(args)
                .env("TAP_HOME", home.path())
                .env("TAP_CONFIG", home.path().join("none.toml"))
                .output()
                .expect("tap");
            assert_eq!(out.status.code(), Some(1));
            assert!(
                text(&out.stderr)
                    .contains("needs a deployed stack: terraform -chdir=infra output -json | tap stack import"),
                "{}",
                text(&out.stderr)
            );
        }
    }

    #[test]
    fn logs_prints_a_runs_output() {
        let home = tempfile::tempdir().expect("tempdir");
        assert_eq!(tap_in(home.path(), &["run", "--", "sh", "-c", "echo out; echo err >&2"]).status.code(), Some(0));
        let id = json(home.path(), &["runs", "list"])[0]["run_id"].as_str().expect("id").to_owned();
        let out = tap_in(home.path(), &["logs", &id, "--follow"]);
        assert!(out.status.success());
        let lines = text(&out.stdout);
        assert!(lines.contains("out\n") && lines.contains("[stderr] err\n"), "{lines}");
        assert_eq!(tap_in(home.path(), &["logs", "nope"]).status.code(), Some(1));
    }

    #[test]
    fn run_without_command_is_a_usage_error() {
        let home = tempfile::tempdir().expect("tempdir");
        assert_eq!(tap_in(home.path(), &["run"]).status.code(), Some(2));
    }
}

/// The same commands on an imported stack: DynamoDB, SSM, S3 and CloudWatch Logs of moto on
/// loopback (`--features aws-integration`).
#[cfg(feature = "aws-integration")]
mod stack {
    use std::process::{Command, Output, Stdio};

    use tap_test_support::{Moto, free_port};

    const TRAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/train.py");
    const FIXTURE: &str = include_str!("fixtures/tap_config.json");

    struct Env {
        moto: Moto,
        dir: tempfile::TempDir,
    }

    impl Env {
        fn command(&self, args: &[&str]) -> Command {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tap"));
            c.args(args)
                .env("TAP_HOME", self.dir.path().join("home"))
                .env("TAP_CONFIG", self.dir.path().join("config.toml"))
                .env("AWS_ENDPOINT_URL", self.moto.endpoint())
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("TAP_EXAMPLE_STEP_SECONDS", "0.02")
                .env_remove("AWS_PROFILE")
                .env_remove("TAP_OUTPUT");
            c
        }

        fn tap(&self, args: &[&str]) -> Output {
            self.command(args).output().expect("tap runs")
        }

        fn json(&self, args: &[&str]) -> serde_json::Value {
            let out = self.tap(&[args, &["--output", "json"]].concat());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).expect("JSON")
        }
    }

    /// Moto with the stack's table, bucket and log group, and tap's config imported.
    async fn stack() -> Env {
        let moto = Moto::from_env(free_port());
        let sdk = tap_test_support::aws::sdk_config(&moto.endpoint());
        tap_test_support::aws::create_stack(&sdk, "tap-dev-experiments").await;
        let env = Env { moto, dir: tempfile::tempdir().expect("tempdir") };
        let outputs = env.dir.path().join("outputs.json");
        let all = serde_json::json!({ "tap_config": { "value": serde_json::from_str::<serde_json::Value>(FIXTURE).expect("fixture"), "type": [], "sensitive": false } });
        std::fs::write(&outputs, all.to_string()).expect("outputs");
        let out = env.tap(&["stack", "import", outputs.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("imported stack tap-dev (us-east-1)"));
        env
    }

    /// `tap ui` on the stack: DynamoDB and CloudWatch Logs on moto (issue 27).
    #[tokio::test(flavor = "multi_thread")]
    async fn ui_serves_every_page_of_the_stack() {
        let env = stack().await;
        super::ui::serves_every_page(&|args| env.command(args));
    }

    /// `tap ui`'s Jobs and Fleet pages on the stack (moto with a fleet): the queue as `tap jobs
    /// list` has it, Cancel refused without the page's XSRF token and done with it, the fleet's
    /// nodes and the pools' advice.
    #[tokio::test(flavor = "multi_thread")]
    async fn ui_jobs_and_fleet_pages_on_the_stack_and_cancel_through_the_guard() {
        let env = stack().await;
        let sdk = tap_test_support::aws::sdk_config(&env.moto.endpoint());
        let fleet_id = tap_test_support::aws::make_fleet(&sdk, 1).await;
        let outputs = env.dir.path().join("outputs.json");
        let config = FIXTURE.replace("fleet-0123456789abcdef0", &fleet_id);
        std::fs::write(&outputs, format!("{{\"tap_config\": {{\"value\": {config}}}}}")).expect("outputs");
        assert!(env.tap(&["stack", "import", outputs.to_str().expect("utf-8")]).status.success());
        let launch =
            env.tap(&["launch", "--nodes", "2", "-e", "llm", "--group", "job-ui", "--", "python3", "train.py"]);
        assert!(launch.status.success(), "{}", String::from_utf8_lossy(&launch.stderr));

        let server = super::ui::Server::start(env.command(&["ui", "--port", "0"]));
        let jobs = server.get("/jobs");
        assert_eq!(jobs.status, 200, "{}", jobs.text());
        let page = jobs.text();
        assert!(page.contains("data-job=\"job-ui\"") && page.contains("class=\"cancel\""), "{page}");
        assert_eq!(server.get("/api/jobs").json(), env.json(&["jobs", "list"]), "`tap jobs list --output json`");
        let shown = server.get("/api/jobs/job-ui").json();
        assert_eq!(shown["job"]["state"], "queued");
        assert_eq!(server.get("/jobs/job-ui").status, 200);
        assert_eq!(server.get("/jobs/nope").status, 404);

        // The write: refused without the token, from another origin, and done with them.
        let refused = super::ui::request(&server.addr, "POST", "/jobs/job-ui/cancel", &[]);
        assert_eq!(refused.status, 403, "{}", refused.text());
        let xsrf = page.split("name=\"tap-xsrf\" content=\"").nth(1).and_then(|r| r.split('"').next()).expect("xsrf");
        let foreign = super::ui::request(
            &server.addr,
            "POST",
            "/jobs/job-ui/cancel",
            &[("X-XSRF-Token", xsrf), ("Origin", "http://evil.example")],
        );
        assert_eq!(foreign.status, 403, "{}", foreign.text());
        assert!(env.json(&["jobs", "show", "job-ui"])["job"]["cancel_requested_ms"].is_null(), "nothing was written");
        let done = super::ui::request(&server.addr, "POST", "/jobs/job-ui/cancel", &[("X-XSRF-Token", xsrf)]);
        assert_eq!(done.status, 200, "{}", done.text());
        assert!(done.json()["said"].as_str().is_some_and(|s| s.starts_with("job job-ui: cancel requested")));
        assert!(env.json(&["jobs", "show", "job-ui"])["job"]["cancel_requested_ms"].is_i64());

        let fleet = server.get("/fleet").text();
        assert!(fleet.contains("id=\"fleet-status\"") && fleet.contains("target 1"), "{fleet}");
        assert!(fleet.contains("id=\"pools\"") && fleet.contains("data-src=\"/api/fleet/utilization\""), "{fleet}");
        assert_eq!(server.get("/api/fleet").json()["target_capacity"], 1);
        let util = server.get("/api/fleet/utilization");
        assert_eq!(util.status, 200, "{}", util.text());
        assert!(util.json()["runs"].is_array());
        assert_eq!(
            server.get("/api/fleet/pools").json(),
            env.json(&["fleet", "pools"]),
            "`tap fleet pools --output json`"
        );

        // A run that ran on the fleet's node: its page charts the node's GPU utilization.
        let node = env.json(&["fleet", "status"])["nodes"][0]["instance_id"].as_str().expect("a node").to_owned();
        let store = tap_store::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "tap-dev-experiments");
        let mut run = tap_core::runs::Run::new("llm", "on-node", vec!["python3".into()], "ip-10-0-1-5", 1_000);
        run.instance_id = Some(node.clone());
        run.status = tap_core::runs::RunStatus::Succeeded;
        run.ended_ms = Some(61_000);
        tap_store::RunStore::create_run(&store, &run).await.expect("a run record");
        // Past the listing's lifetime, one request reads it again beside itself.
        std::thread::sleep(std::time::Duration::from_millis(2_100));
        let _ = server.get("/");
        super::wait_until("the new run listed", std::time::Duration::from_secs(10), || {
            server.get("/runs/llm/on-node").status == 200
        });
        let page = server.get("/runs/llm/on-node").text();
        assert!(page.contains("/api/runs/llm/on-node/system"), "{page}");
        let system = server.get("/api/runs/llm/on-node/system");
        assert_eq!(system.status, 200, "{}", system.text());
        assert!(system.json()["runs"].is_array(), "{}", system.text());
    }

    fn loss_steps(env: &Env, run_id: &str) -> Vec<u64> {
        super::loss_steps(&env.json(&["runs", "show", run_id]))
    }

    /// Regression (issue 21) on the stack (DynamoDB, S3 on moto): in a sweep, `--resume` took
    /// the experiment's latest checkpoint, another training's. Run "slow" is interrupted, run
    /// "fast" (another learning rate) finishes after it, and `--resume` continues "slow" from its
    /// own checkpoint as attempt 2 of the same run.
    #[tokio::test(flavor = "multi_thread")]
    async fn sweep_resume_continues_its_own_training_on_the_stack() {
        let env = stack().await;
        for (k, v) in [("epochs", "2"), ("steps_per_epoch", "50"), ("checkpoint_every", "10")] {
            assert!(env.tap(&["params", "set", k, v]).status.success());
        }
        let slow = env
            .command(&["run", "-e", "sweep", "--name", "slow", "--param", "learning_rate=0.01", "--", "python3", TRAIN])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        let out = super::interrupt_after_progress(slow, || env.json(&["runs", "list"]));
        assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
        let fast =
            env.tap(&["run", "-e", "sweep", "--name", "fast", "--param", "learning_rate=0.3", "--", "python3", TRAIN]);
        assert!(fast.status.success(), "{}", String::from_utf8_lossy(&fast.stderr));
        let slow_run = env.json(&["runs", "show", "slow"])["run"].clone();
        let slow_id = slow_run["run_id"].as_str().expect("id").to_owned();
        let resumed = env.tap(&["run", "-e", "sweep", "--resume", "--", "python3", TRAIN]);
        let (out, err) = (String::from_utf8_lossy(&resumed.stdout), String::from_utf8_lossy(&resumed.stderr));
        assert!(resumed.status.success(), "{out}\n{err}");
        let own = slow_run["checkpoint"].as_str().expect("slow's final checkpoint");
        assert!(err.contains(&format!("restoring checkpoint {own} of run {slow_id}")), "{err}");
        let runs = env.json(&["runs", "list", "-e", "sweep"]);
        assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
        let after = env.json(&["runs", "show", "slow"]);
        assert_eq!(after["run"]["status"], "succeeded");
        assert_eq!(after["run"]["hparams"]["learning_rate"]["value"], "0.01");
        assert_eq!(loss_steps(&env, &slow_id), (1..=100).collect::<Vec<u64>>());
        let listed = env.json(&["checkpoints", "list", "slow"]);
        assert!(listed.as_array().expect("list").iter().all(|c| c["run_id"] == slow_id.as_str()), "{listed}");
    }

    /// Issue 23 on the stack (DynamoDB with its runs index, S3, CloudWatch Logs, SSM on
    /// moto): namespaced names, tags, `--where`/`--sort`/`--limit`, `runs diff`, `runs delete`
    /// and `gc`, as on the local store.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_tracker_basics_work_on_the_stack() {
        let env = stack().await;
        assert!(env.tap(&["params", "set", "optim/lr@1", "3e-4"]).status.success(), "a name SSM cannot hold as it is");
        assert_eq!(env.tap(&["params", "get", "optim/lr@1"]).stdout, b"3e-4\n");
        let script = |loss: &str| {
            format!(
                r#"echo w$RANDOM > "$TAP_CHECKPOINT_DIR/w.bin"; echo '{{"step": 1, "train/loss": {loss}, "acc\303\251": 1, "checkpoint": true}}' >> "$TAP_METRICS_FILE"; sleep 0.5; echo out"#
            )
        };
        for (name, loss, team) in [("a", "0.5", "nlp"), ("b", "0.05", "vision")] {
            let out = env.tap(&[
                "run",
                "-e",
                "sweep",
                "--name",
                name,
                "--tag",
                &format!("team={team}"),
                "--",
                "sh",
                "-c",
                &script(loss),
            ]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
            assert!(err.contains("skipping metric \"acc\u{e9}\""), "{err}");
        }
        let names = |args: &[&str]| -> Vec<String> {
            let listed = env.json(&[&["runs", "list", "-e", "sweep"], args].concat());
            listed.as_array().expect("array").iter().map(|r| r["name"].as_str().unwrap_or("?").to_owned()).collect()
        };
        assert_eq!(names(&["--sort", "train/loss", "--limit", "1"]), ["b"]);
        assert_eq!(names(&["--where", "tag.team=nlp"]), ["a"]);
        assert_eq!(names(&["--where", "train/loss<0.1"]), ["b"]);
        assert!(env.tap(&["runs", "tag", "a", "stage=old"]).status.success());
        let diff = env.json(&["runs", "diff", "a", "b"]);
        let fields: Vec<&str> =
            diff["differences"].as_array().expect("array").iter().filter_map(|d| d["field"].as_str()).collect();
        assert!(fields.contains(&"stage") && fields.contains(&"team") && fields.contains(&"train/loss"), "{diff}");
        let gone = env.tap(&["runs", "delete", "a"]);
        assert!(gone.status.success(), "{}", String::from_utf8_lossy(&gone.stderr));
        assert_eq!(names(&[]), ["b"]);
        assert!(!env.tap(&["logs", "a"]).status.success(), "its log stream went with it");
        let dest = env.dir.path().join("b");
        let pulled = env.tap(&["checkpoints", "pull", "b", dest.to_str().expect("utf-8")]);
        assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));
        let gc = env.json(&["gc", "--keep-checkpoints", "1", "--dry-run"]);
        assert_eq!(gc["dry_run"], true, "{gc}");
    }

    /// The previous release's items in the experiment table (fixtures/store-v1, made by
    /// scripts/make-store-fixtures.py with that release against moto) read as one-attempt
    /// runs; its `--resume` chain reads as one training of two attempts (the chain's start is
    /// not offered to `--resume`); a finished run is not resumed; new runs go beside them.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_table_of_the_previous_release_opens() {
        use aws_sdk_dynamodb::types::AttributeValue;
        let env = stack().await;
        let sdk = tap_test_support::aws::sdk_config(&env.moto.endpoint());
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let items: Vec<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>> =
            serde_json::from_str(include_str!("fixtures/store-v1/dynamodb-items.json")).expect("fixture");
        for item in items {
            let mut put = ddb.put_item().table_name("tap-dev-experiments");
            for (k, v) in item {
                let value = match (v.get("S"), v.get("N")) {
                    (Some(s), _) => AttributeValue::S(s.clone()),
                    (_, Some(n)) => AttributeValue::N(n.clone()),
                    _ => panic!("fixture attribute {k} is neither S nor N"),
                };
                put = put.item(k, value);
            }
            put.send().await.expect("PutItem");
        }
        let runs = env.json(&["runs", "list", "-e", "legacy"]);
        let runs = runs.as_array().expect("runs");
        assert_eq!(runs.len(), 2, "the chain A <- B is one run: {runs:?}");
        let (c, a) = (&runs[0], &runs[1]);
        assert!(c["attempts"].is_null() && c["status"] == "interrupted", "{c}");
        assert_eq!(
            (a["status"].as_str(), a["attempts"][0]["status"].as_str()),
            (Some("succeeded"), Some("interrupted"))
        );
        let b_id = a["legacy_records"][1].as_str().expect("B, folded in");
        let shown = env.tap(&["runs", "show", b_id]);
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.contains("attempts:    2") && shown.contains("an earlier release's --resume chain"), "{shown}");
        // `--resume` takes C, the one unfinished training, and restores only its own
        // checkpoint: the bucket of this test does not hold it, and tap says which it wanted.
        let resumed = env.tap(&["run", "-e", "legacy", "--resume", "--", "true"]);
        let err = String::from_utf8_lossy(&resumed.stderr);
        let wanted = c["checkpoint"].as_str().expect("checkpoint");
        assert_eq!(resumed.status.code(), Some(1), "{err}");
        assert!(err.contains(wanted) && err.lines().count() == 1, "{err}");
        let finished = env.tap(&["run", "-e", "legacy", "--resume", a["run_id"].as_str().expect("id"), "--", "true"]);
        assert!(String::from_utf8_lossy(&finished.stderr).contains("succeeded: nothing is left to do"));
        let fresh = env.tap(&["run", "-e", "legacy", "--name", "new", "--", "true"]);
        assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
        assert_eq!(env.json(&["runs", "list", "-e", "legacy"]).as_array().map(Vec::len), Some(3));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn interrupted_run_resumes_on_the_stack() {
        let env = stack().await;
        let show = env.json(&["config", "show"]);
        assert_eq!(show["backend"], "stack tap-dev in us-east-1");
        for (k, v) in [("epochs", "2"), ("steps_per_epoch", "50"), ("checkpoint_every", "10")] {
            assert!(env.tap(&["params", "set", k, v]).status.success());
        }
        assert_eq!(env.json(&["params", "history", "epochs"])[0]["version"], 1, "versions come from SSM");

        let first = env
            .command(&["run", "-e", "spot", "--", "python3", TRAIN])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        let out = super::interrupt_after_progress(first, || env.json(&["runs", "list"]));
        assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
        let runs = env.json(&["runs", "list"]);
        let first_id = runs[0]["run_id"].as_str().expect("id").to_owned();
        assert_eq!(runs[0]["status"], "interrupted");
        let done = loss_steps(&env, &first_id);

        let second = env.tap(&["run", "-e", "spot", "--resume", "--", "python3", TRAIN]);
        assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
        let runs = env.json(&["runs", "list", "-e", "spot"]);
        assert_eq!(runs.as_array().map(Vec::len), Some(1), "one run, two attempts: {runs}");
        assert_eq!(
            (runs[0]["status"].as_str(), runs[0]["run_id"].as_str(), runs[0]["attempts"][0]["status"].as_str()),
            (Some("succeeded"), Some(first_id.as_str()), Some("interrupted"))
        );
        assert!(done.len() < 100);
        assert_eq!(loss_steps(&env, &first_id), (1..=100).collect::<Vec<u64>>(), "every step once in one series");
        assert_eq!(runs[0]["metric_points"].as_u64(), Some(300), "no step recorded twice");
        let latest = env.json(&["checkpoints", "latest", "-e", "spot"]);
        assert_eq!(latest["step"], 100);

        // `--local` still reaches the local store, which saw none of this.
        let local = env.tap(&["--local", "runs", "list", "--output", "json"]);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&local.stdout).expect("json"), serde_json::json!([]));
    }

    /// `tap fleet` and `tap launch` on the stack's fleet (moto, with ModifyFleet added by
    /// tools/moto/tap_moto_server.py).
    #[tokio::test(flavor = "multi_thread")]
    async fn fleet_status_scale_and_launch_refusals() {
        let env = stack().await;
        let sdk = tap_test_support::aws::sdk_config(&env.moto.endpoint());
        let fleet_id = tap_test_support::aws::make_fleet(&sdk, 2).await;
        let outputs = env.dir.path().join("outputs.json");
        let config = FIXTURE.replace("fleet-0123456789abcdef0", &fleet_id);
        std::fs::write(&outputs, format!("{{\"tap_config\": {{\"value\": {config}}}}}")).expect("outputs");
        assert!(env.tap(&["stack", "import", outputs.to_str().expect("utf-8")]).status.success());

        let status = env.json(&["fleet", "status"]);
        assert_eq!((status["target_capacity"].as_i64(), status["nodes"].as_array().map(Vec::len)), (Some(2), Some(2)));
        let text = String::from_utf8_lossy(&env.tap(&["fleet", "status"]).stdout).into_owned();
        assert!(
            text.contains("target 2, fulfilled 2, 0 ready   ◐◐") && text.contains("no tap-agent heartbeat"),
            "{text}"
        );

        let refused = env.tap(&["fleet", "scale", "1"]);
        assert_eq!(refused.status.code(), Some(1), "scaling down asks; stdin is no terminal here");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("not scaled down: confirm on a terminal, or pass --yes")
        );
        let scaled = env.tap(&["fleet", "scale", "1", "--yes"]);
        assert!(scaled.status.success(), "{}", String::from_utf8_lossy(&scaled.stderr));
        assert!(String::from_utf8_lossy(&scaled.stdout).contains("target capacity 2 -> 1"));
        assert_eq!(env.json(&["fleet", "status"])["target_capacity"], 1);

        let idle = env.json(&["fleet", "idle"]);
        assert_eq!(idle["nodes"][0]["idle"], false, "no utilization data: nothing is called idle");
        assert_eq!(idle["nodes"][0]["minutes_reported"], 0);
        assert_eq!(idle["fleet"]["verdict"], "unknown");

        // An experiment `..` is not a name, for launch as for every command: refused as the
        // arguments are read (regression: `tap run -e ..` was accepted).
        let out = env.tap(&["launch", "-n", "1", "-e", "..", "--", "train"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value '..' for '--experiment"));
        // Specs that can never run are refused at submit, in one line, with nothing written.
        for (args, want) in [
            (&["launch", "-n", "0", "--", "train"][..], "tap: error: --nodes must be at least 1\n"),
            (
                &["launch", "-n", "501", "--", "train"][..],
                "tap: error: --nodes 501: the fleet holds at most 500 nodes (the stack's target_capacity limit)\n",
            ),
            (
                &["launch", "-n", "1", "--", ""][..],
                "tap: error: no command given: tap launch --nodes N -- <command...>\n",
            ),
            (
                &["launch", "-n", "1", "--env", "1X=y", "--", "train"][..],
                "tap: error: --env \"1X\": not an environment variable name\n",
            ),
        ] {
            let out = env.tap(args);
            assert_eq!(
                (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()),
                (Some(1), want.to_owned()),
                "{args:?}"
            );
        }
        // Too few nodes: the job is queued anyway (the fleet's controller starts it once
        // enough are healthy); the CLI says so and returns at once.
        let launch = env.tap(&["launch", "--nodes", "2", "-e", "llm", "--group", "job-0", "--", "python3", "train.py"]);
        assert!(launch.status.success(), "{}", String::from_utf8_lossy(&launch.stderr));
        let err = String::from_utf8_lossy(&launch.stderr).into_owned();
        assert!(err.contains("the job waits until the fleet has 2 healthy nodes (its target is 1"), "{err}");
        assert!(String::from_utf8_lossy(&launch.stdout).starts_with("job job-0 queued: 2 node(s), experiment llm\n"));
        let show = env.json(&["jobs", "show", "job-0"]);
        assert_eq!((show["job"]["state"].as_str(), show["job"]["spec"]["nodes"].as_u64()), (Some("queued"), Some(2)));
        let again = env.tap(&["launch", "--nodes", "1", "--group", "job-0", "--", "x"]);
        assert_eq!(
            String::from_utf8_lossy(&again.stderr),
            "tap: error: job job-0 exists already: pick another --group\n"
        );
        let cancel = env.tap(&["jobs", "cancel", "job-0"]);
        assert!(String::from_utf8_lossy(&cancel.stdout).starts_with("job job-0: cancel requested"), "{cancel:?}");
        let listed = env.json(&["jobs", "list"]);
        assert!(listed[0]["cancel_requested_ms"].is_i64(), "{listed}");
        let text = String::from_utf8_lossy(&env.tap(&["jobs", "list"]).stdout).into_owned();
        assert!(text.starts_with("JOB ") && text.contains("job-0") && text.contains("cancel requested"), "{text}");
        let missing = env.tap(&["jobs", "show", "nope"]);
        assert_eq!(String::from_utf8_lossy(&missing.stderr), "tap: error: no job nope (tap jobs list)\n");

        // A fleet at target 0 has no node for the controller: without --yes nothing is
        // submitted; with it the fleet is raised to the job's size first.
        assert!(env.tap(&["fleet", "scale", "0", "--yes"]).status.success());
        let refused = env.tap(&["launch", "-n", "2", "--group", "job-z", "--", "train"]);
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("not submitted: fleet fleet-"), "{refused:?}");
        assert!(!env.tap(&["jobs", "show", "job-z"]).status.success(), "nothing was written");
        let raised = env.tap(&["launch", "-n", "2", "--yes", "--group", "job-z", "--", "train"]);
        assert!(raised.status.success(), "{}", String::from_utf8_lossy(&raised.stderr));
        assert!(String::from_utf8_lossy(&raised.stderr).contains("target capacity 0 -> 2"));
        assert_eq!(env.json(&["fleet", "status"])["target_capacity"], 2);

        // The job's run record, as the fleet's controller writes it for attempt 1 of a
        // 2-node job, beside its node runs.
        let now = tap_core::time::now_ms();
        let nodes: Vec<String> = env.json(&["fleet", "status"])["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["state"] == "running")
            .map(|n| n["instance_id"].as_str().expect("id").to_owned())
            .collect();
        let record = tap_core::runs::Run {
            status: tap_core::runs::RunStatus::Queued,
            job: Some(tap_core::runs::Job {
                fleet_id: fleet_id.clone(),
                attempt: 1,
                nodes: (0..2u32)
                    .map(|rank| tap_core::runs::JobNode {
                        rank,
                        instance_id: nodes[rank as usize].clone(),
                        command_id: format!("cmd-{rank}"),
                        run_id: None,
                        status: tap_core::runs::RunStatus::Queued,
                    })
                    .collect(),
                stop: None,
            }),
            ..tap_core::runs::Run::new("llm", "job-1", vec!["train".into()], "fleet", now)
        };
        let store = tap_store::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "tap-dev-experiments");
        tap_store::RunStore::create_run(&store, &record).await.expect("job record");
        let job = env.json(&["runs", "show", "job-1"])["run"].clone();
        assert_eq!((job["status"].as_str(), job["job"]["attempt"].as_u64()), (Some("queued"), Some(1)));
        let nodes = job["job"]["nodes"].as_array().expect("nodes").clone();
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| n["command_id"].as_str().is_some_and(|c| !c.is_empty())), "{nodes:?}");

        // Each node's `tap run` (here, on this machine) records itself in the job.
        let node_run = |rank: &str, attempt: &str| {
            let out = env
                .command(&["run", "-e", "llm", "--", "sh", "-c", "echo rank $NODE_RANK says hello"])
                .env("TAP_RUN_GROUP", "job-1")
                .env("NODE_RANK", rank)
                .env("TAP_JOB_ATTEMPT", attempt)
                .output()
                .expect("tap run");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        node_run("1", "1");
        let job = env.json(&["runs", "show", "job-1"])["run"].clone();
        assert_eq!(
            (job["status"].as_str(), job["job"]["nodes"][1]["status"].as_str()),
            (Some("running"), Some("succeeded"))
        );
        node_run("0", "7"); // a run of another attempt changes nothing
        assert_eq!(env.json(&["runs", "show", "job-1"])["run"]["job"]["nodes"][0]["status"], "queued");
        node_run("0", "1");
        let job = env.json(&["runs", "show", "job-1"])["run"].clone();
        assert_eq!(job["status"], "succeeded");
        assert!(job["ended_ms"].is_i64());
        let text = String::from_utf8_lossy(&env.tap(&["runs", "show", "job-1"]).stdout).into_owned();
        assert!(
            text.contains("nodes:       2 on fleet-") && text.contains("attempt 1") && text.contains("  rank 0   i-"),
            "{text}"
        );
        assert_eq!(
            env.json(&["runs", "list", "--group", "job-1"]).as_array().map(Vec::len),
            Some(4),
            "the job and 3 node runs"
        );
        let logs = env.tap(&["logs", "job-1"]);
        assert_eq!(String::from_utf8_lossy(&logs.stdout), "rank 0 says hello\n", "a job's output is its rank 0's");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn artifacts_go_up_in_parallel_parts_and_come_back_verified() {
        let env = stack().await;
        let file = env.dir.path().join("weights.bin");
        let data: Vec<u8> = (0..13 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&file, &data).expect("write");
        let push =
            env.tap(&["artifacts", "push", "--part-size", "5MiB", "--concurrency", "3", file.to_str().expect("utf-8")]);
        assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
        let dest = env.dir.path().join("back");
        let pull = env.tap(&["artifacts", "pull", "weights.bin", dest.to_str().expect("utf-8")]);
        assert!(pull.status.success(), "{}", String::from_utf8_lossy(&pull.stderr));
        assert_eq!(std::fs::read(dest.join("weights.bin")).expect("read"), data);
        assert_eq!(env.json(&["artifacts", "ls"])[0]["name"], "weights.bin");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn many_small_files_go_up_and_come_back() {
        let env = stack().await;
        let dir = env.dir.path().join("shards");
        for i in 0..400 {
            std::fs::create_dir_all(dir.join(format!("s{}", i % 10))).expect("mkdir");
            std::fs::write(dir.join(format!("s{}/{i}.txt", i % 10)), format!("sample {i}")).expect("write");
        }
        let push = env.tap(&["artifacts", "push", dir.to_str().expect("utf-8")]);
        assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
        let dest = env.dir.path().join("back");
        let pull = env.tap(&["artifacts", "pull", "shards", dest.to_str().expect("utf-8")]);
        assert!(pull.status.success(), "{}", String::from_utf8_lossy(&pull.stderr));
        assert_eq!(std::fs::read_to_string(dest.join("s7/397.txt")).expect("read"), "sample 397");
        assert_eq!(std::fs::read_dir(dest.join("s3")).expect("dir").count(), 40);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unreachable_stack_is_one_clear_error() {
        let env = stack().await;
        drop(env.moto);
        let out = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["params", "list"])
            .env("TAP_CONFIG", env.dir.path().join("config.toml"))
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", free_port()))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .expect("tap");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("tap: error: SSM GetParametersByPath") && stderr.lines().count() == 1, "{stderr}");
    }

    #[test]
    fn import_rejects_what_is_not_a_stack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("outputs.json");
        std::fs::write(&bad, "{\"vpc_id\": {\"value\": \"vpc-1\"}}").expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_tap"))
            .args(["stack", "import", bad.to_str().expect("utf-8")])
            .env("TAP_CONFIG", dir.path().join("config.toml"))
            .output()
            .expect("tap");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no tap_config output"));
        assert!(!dir.path().join("config.toml").exists(), "nothing written");
    }

    /// Goodput's dollars on the stack (issue 26): a run on a (fake) spot g4dn.xlarge in
    /// us-east-1a is priced at the mean of EC2's spot price history for that pool over its
    /// attempt (moto publishes $0.00001), against the built-in on-demand price ($0.526), and
    /// the price is kept in the stack's own partition of its table.
    #[tokio::test(flavor = "multi_thread")]
    async fn goodput_prices_a_stack_run_from_ec2s_spot_price_history() {
        let env = stack().await;
        let imds = tap_test_support::FakeImds::start("i-0goodput", "g4dn.xlarge");
        let script =
            "import tapml, time\nfor s in range(1, 6):\n    time.sleep(0.05)\n    tapml.log(s, loss=1.0 / s)\n";
        let out = env
            .command(&["run", "-e", "gp", "--name", "priced", "--", "python3", "-c", script])
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .output()
            .expect("tap run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let g = env.json(&["goodput", "priced"]);
        let node = &g["attempts"][0]["node"];
        assert_eq!(
            (node["instance_type"].as_str(), node["lifecycle"].as_str()),
            (Some("g4dn.xlarge"), Some("spot")),
            "{g}"
        );
        let hours = g["node_hours"].as_f64().expect("node-hours");
        let d = &g["dollars"];
        assert!((d["paid_usd"].as_f64().expect("paid") - 0.00001 * hours).abs() < 1e-12, "{d}");
        assert!((d["on_demand_usd"].as_f64().expect("on demand") - 0.526 * hours).abs() < 1e-12, "{d}");
        assert_eq!(d["attempts"][0]["usd_per_hour"].as_f64(), Some(0.00001), "{d}");
        let sdk = tap_test_support::aws::sdk_config(&env.moto.endpoint());
        let kept = aws_sdk_dynamodb::Client::new(&sdk)
            .query()
            .table_name("tap-dev-experiments")
            .key_condition_expression("experiment_id = :p AND begins_with(run_id, :k)")
            .expression_attribute_values(":p", aws_sdk_dynamodb::types::AttributeValue::S("_tap-node".into()))
            .expression_attribute_values(
                ":k",
                aws_sdk_dynamodb::types::AttributeValue::S("spot-price/g4dn.xlarge/us-east-1a/".into()),
            )
            .send()
            .await
            .expect("query");
        assert_eq!(kept.items().len(), 1, "the attempt's price is kept: {kept:?}");
        // Read again: the kept price, the same dollars.
        assert_eq!(env.json(&["goodput", "priced"])["dollars"], *d);
    }
}
