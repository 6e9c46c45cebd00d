//! Command line of `tap-agent`.

use std::path::PathBuf;

use clap::Parser;

/// tap-agent: the daemon on every GPU node of a tap fleet.
///
/// It samples every GPU through NVML, publishes the metrics of tap's metric contract to
/// CloudWatch (the stack's alarms and dashboard watch them), judges GPU health and watches for
/// EC2 spot interruption notices. It reads its settings from a TOML file that the stack's
/// user_data writes (`/etc/tap/agent.toml`).
///
/// Examples:
///   tap-agent --check-config                       validate /etc/tap/agent.toml
///   tap-agent --check-config --config ./agent.toml validate another file
#[derive(Debug, Parser)]
#[command(version, about, long_about, arg_required_else_help = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        env = "TAP_AGENT_CONFIG",
        default_value = "/etc/tap/agent.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Validate the configuration file, print the effective settings and exit
    /// (exit status 0 when valid, 1 with the file, key and problem when not).
    #[arg(long)]
    pub check_config: bool,
}
