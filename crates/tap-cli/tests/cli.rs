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
