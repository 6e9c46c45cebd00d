//! Command line of `tap`.

use clap::{Parser, Subcommand, ValueEnum};

/// tap: spot-GPU training on AWS.
///
/// A platform team deploys the stack (infra/tap-stack.tf); `tap` is how an ML engineer uses
/// it. Without a stack, tap works on an embedded local default.
///
/// Examples:
///   tap contract                 the metrics tap-agent publishes and the stack alarms on
///   tap contract --output json   the same, for scripts
#[derive(Debug, Parser)]
#[command(name = "tap", version, about, long_about, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, clap::Args)]
pub struct Global {
    /// Output format of listing commands.
    #[arg(long, short, global = true, env = "TAP_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the metric contract: the CloudWatch namespace, metric names, units and dimension
    /// sets that tap-agent publishes and that the stack's alarms and dashboard watch.
    Contract,
}
