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
    assert!(text(&out.stderr).contains("/nonexistent/tap/agent.toml: cannot read"));
}
