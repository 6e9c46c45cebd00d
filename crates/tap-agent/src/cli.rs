//! Command line of `tap-agent`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// tap-agent: the daemon on every GPU node of a tap fleet.
///
/// It samples every GPU through NVML (or nvidia-smi when NVML cannot be loaded), publishes
/// the metrics of tap's metric contract to CloudWatch as statistic sets (the stack's alarms
/// and dashboard watch them), and keeps what CloudWatch does not accept in a bounded on-disk
/// spool until it does. It judges GPU health (XID, ECC, GPUs lost or missing) and watches
/// for EC2's spot interruption notice; either way it tells the `tap run`s on the node to
/// checkpoint (/run/tap). Settings come from a TOML file that the stack's user_data writes.
///
/// Examples:
///   tap-agent --check-config                    validate /etc/tap/agent.toml
///   tap-agent run --once                        print every field of every GPU, once
///   tap-agent run --once --simulate 8           the same on 8 simulated GPUs
///   tap-agent --config agent.toml run           run the daemon (what systemd starts)
///   sudo tap-agent install                      install and start the systemd service
///   tap-agent health                            the node's GPU health findings and verdict
///   tap-agent events --seconds 30               print XID events (NVML and kernel log) as they come
///   tap-agent bootstrap --settings s3://B/tap/node/boot.json --region R
///                                               the node's boot (the stack's user_data runs it)
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment, arg_required_else_help = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "TAP_AGENT_CONFIG", default_value = "/etc/tap/agent.toml", value_name = "PATH")]
    pub config: PathBuf,

    /// Validate the configuration file, print the effective settings and exit
    /// (exit status 0 when valid, 1 with the file, key and problem when not).
    #[arg(long)]
    pub check_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses `args` (the program name first) as tap does its own ([`tap_core::args`]):
    /// negative numbers are values, an empty environment variable is unset, a bad one is
    /// blamed on the variable.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let mut cmd = tap_core::args::adjusted(<Cli as clap::CommandFactory>::command());
        let mut m = tap_core::args::matches(&mut cmd, args.into_iter().map(Into::into).collect())?;
        Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd))
    }

    /// Parses the process's arguments; on a bad one prints clap's message and exits (2).
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: sample, publish to CloudWatch, spool while it is unreachable.
    /// SIGTERM or Ctrl-C publishes (or spools) the last window, then exits.
    Run(RunArgs),
    /// Write the systemd unit (tap-agent.service) and enable and start it.
    Install(InstallArgs),
    /// Print the GPU health state the running agent keeps (health.state_file): verdict and
    /// findings (XID, ECC, page retirement, GPUs missing or lost, throttling).
    Health,
    /// Subscribe to XID events (NVML's event API and the kernel log) for a while and print
    /// each as a JSON line: checks the event path on a real driver.
    Events(EventsArgs),
    /// The node's boot, run by the stack's user_data once it has fetched tap-agent: makes the
    /// GPU driver work (one reboot at most), installs the CloudWatch agent, writes this
    /// agent's config and installs its service, installs `tap` for the stack. Every step that
    /// fails is reported on the console, in the journal and in /var/lib/tap/bootstrap-failed,
    /// and the others still run; the exit status is 1 when any failed.
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The stack's boot settings: s3://BUCKET/KEY (the stack writes tap/node/boot.json in its
    /// artifacts bucket) or a file.
    #[arg(long, value_name = "S3_URL|PATH")]
    pub settings: String,
    /// The stack's region (where the settings are read from).
    #[arg(long)]
    pub region: String,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// How long to listen.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Read simulated GPUs instead of real ones (labelled SIMULATED everywhere).
    #[arg(long, value_name = "GPUS", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub simulate: Option<u16>,

    /// Read every GPU once, print every field and exit (no config or AWS needed).
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Directory of the unit file.
    #[arg(long, default_value = "/etc/systemd/system", value_name = "DIR")]
    pub unit_dir: PathBuf,

    /// Path of the tap-agent binary the unit runs.
    #[arg(long, default_value = "/usr/local/bin/tap-agent", value_name = "PATH")]
    pub binary: PathBuf,

    /// Only write the unit; do not run systemctl.
    #[arg(long)]
    pub no_start: bool,
}

#[cfg(test)]
mod tests {
    /// clap checks its definitions only when asked: a clash fails here, not in a user's hands.
    #[test]
    fn command_definitions_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Issue 23's class, on tap-agent's command line too: `--seconds -1` is refused for its
    /// value, not read as an unknown flag.
    #[test]
    fn negative_numbers_given_to_numeric_flags_are_taken_for_flags() {
        let e = super::Cli::try_parse_args(["tap-agent", "events", "--seconds", "-1"]).expect_err("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
        assert!(e.to_string().contains("invalid value '-1' for '--seconds"), "{e}");
        assert!(super::Cli::try_parse_args(["tap-agent", "events", "--seconds", "5"]).is_ok());
    }
}
