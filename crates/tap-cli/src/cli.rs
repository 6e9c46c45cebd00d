//! Command line of `tap`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// tap: spot-GPU training on AWS.
///
/// A platform team deploys the stack (infra/tap-stack.tf); `tap` is how an ML engineer uses
/// it. Without a stack, tap works on an embedded local store ($TAP_HOME, default
/// ~/.local/share/tap): runs, metrics, logs and hyperparameters in SQLite, checkpoints in a
/// directory.
///
/// Examples:
///   tap params set learning_rate 0.01                  store a hyperparameter (versioned)
///   tap run -e mnist -- python3 examples/train.py      a tracked, checkpointed run
///   tap run -e mnist --name lr01 --param learning_rate=0.1 -- python3 examples/train.py
///                                                      a named run with its own value
///   tap run -e mnist --resume lr01 -- python3 examples/train.py
///                                                      continue that run (a new attempt)
///   tap run -e mnist --resume -- python3 examples/train.py
///                                                      continue the one interrupted run
///   tap runs list                                      every run, newest first
///   tap runs show RUN_ID                               one run, with its metric curves
///   tap runs plot RUN_A RUN_B --metric loss            metric curves as a PNG
///   tap logs RUN_ID --follow                           a run's output as it comes
///   tap fleet status                                   the stack's spot nodes and their health
///   tap launch --nodes 2 -- torchrun ... train.py      a multi-node job (see `tap launch --help`)
///   tap contract --output json                         the metrics tap-agent publishes
#[derive(Debug, Parser)]
#[command(name = "tap", version, about, long_about, verbatim_doc_comment, arg_required_else_help = true)]
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

    /// Where the local store lives (runs, metrics, logs, parameters, checkpoints).
    #[arg(long, global = true, env = "TAP_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// tap's config file (default ~/.config/tap/config.toml).
    #[arg(long, global = true, env = "TAP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Use the local store even when a stack is imported.
    #[arg(long, global = true)]
    pub local: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a training command as a tracked, checkpointed, spot-safe run.
    ///
    /// A Python command imports tapml, which tap puts on its PYTHONPATH (no install):
    /// tapml.hparams(), tapml.log(step, loss=..), `with tapml.checkpoint(step) as d:`,
    /// tapml.should_stop(), tapml.restored() (see python/README.md).
    ///
    /// Underneath, the command gets TAP_HP_<NAME> for every hyperparameter, TAP_HPARAMS_FILE
    /// (JSON), TAP_CHECKPOINT_DIR, TAP_METRICS_FILE, TAP_RUN_ID and TAP_EXPERIMENT. It appends
    /// JSON lines to TAP_METRICS_FILE: {"step": 10, "loss": 0.4} records metrics;
    /// {"checkpoint": true} says a complete checkpoint is in TAP_CHECKPOINT_DIR (tap snapshots
    /// and uploads it). On an interruption notice (SIGUSR1 to tap, or --notice-file appearing) tap sends
    /// the command --interrupt-signal, waits for its checkpoint, uploads it and exits 75.
    ///
    /// Exit status: the command's own; 75 after a notice (then `tap run --resume`), also for
    /// a notice before the command started (nothing is recorded); 130/143 for SIGINT/SIGTERM
    /// before it started. SIGINT/SIGTERM are forwarded once: the command has 10 s, then it
    /// and its process group get SIGKILL (a second signal kills at once); tap ends within
    /// 60 s of SIGTERM. What the command leaves in its process group ends with it. If the
    /// store fails mid-run, output and metrics are buffered and retried; the command goes on.
    /// A run whose tap died without recording an end shows as `lost` everywhere.
    ///
    /// A run is one training: `tap run --resume RUN` continues it as a new attempt, with its
    /// own checkpoint and the hyperparameters it started with (`--name` gives it a name to use
    /// there); a run stopped by SIGINT/SIGTERM ends `cancelled`.
    Run(RunArgs),
    /// Runs: list, show, compare, diff, plot, tag, note, delete.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Free storage: checkpoints beyond the newest N of each run, artifact versions beyond
    /// the newest N, and every stored object that nothing names any more. Checkpoints that a
    /// LATEST pointer or a run names are always kept; an experiment with a running run is left
    /// alone. Prints what it frees.
    ///
    /// Example: tap gc --keep-checkpoints 3 --keep-artifact-versions 5 --dry-run
    Gc {
        /// Keep the newest N checkpoints of each run (default: keep them all).
        #[arg(long, value_name = "N")]
        keep_checkpoints: Option<usize>,
        /// Keep the newest N versions of each artifact (default: keep them all).
        #[arg(long, value_name = "N")]
        keep_artifact_versions: Option<usize>,
        /// Say what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Hyperparameters: list, get, set, history.
    #[command(subcommand)]
    Params(ParamsCommand),
    /// Checkpoints of an experiment.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Datasets, models and other files: versioned, deduplicated, verified transfers to the
    /// artifacts bucket (or the local store).
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Connect tap to a deployed stack (or disconnect it).
    #[command(subcommand)]
    Stack(StackCommand),
    /// tap's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the metric contract: the CloudWatch namespace, metric names, units and dimension
    /// sets that tap-agent publishes and that the stack's alarms and dashboard watch.
    Contract,
    /// The stack's spot fleet: status, scale, idle nodes (needs an imported stack).
    #[cfg(feature = "fleet")]
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Submit a job to the fleet: it is queued in the stack's table and returns its id at
    /// once; the fleet's own job controller (tap-agent on one node, holding a lease) starts it
    /// when enough nodes are healthy, watches it and, when a node is reclaimed, fails its GPU
    /// health or disappears, cancels the other ranks and relaunches every rank from the
    /// latest checkpoint. Nothing needs to stay running here: close the laptop.
    ///
    /// Every rank runs in one Availability Zone (traffic between AZs is billed at $0.01/GB
    /// each way): a fleet split over AZs makes the job wait, saying how many healthy nodes
    /// each AZ has, until one AZ holds it; --allow-cross-az lets it span them.
    ///
    /// Each node runs `tap run` with torchrun's rendezvous variables: MASTER_ADDR,
    /// MASTER_PORT, NNODES, NODE_RANK and RDZV_ID/TAP_RUN_GROUP (the job id). In the command,
    /// $NNODES, $NODE_RANK, $MASTER_ADDR, $MASTER_PORT and $RDZV_ID are expanded on each node
    /// (quote them from your shell); nothing else is. A fleet at target capacity 0 is scaled
    /// up to the job's node count first (asked; --yes for scripts). Then: `tap jobs show ID`
    /// (attempts, nodes, why it waits or ended), `tap jobs logs ID --follow` (rank 0's
    /// output), `tap jobs cancel ID`.
    ///
    /// Example: tap launch --nodes 2 -e llm -- torchrun --nnodes='$NNODES' --node-rank='$NODE_RANK'
    ///          --master-addr='$MASTER_ADDR' --master-port='$MASTER_PORT' --nproc-per-node=1 train.py
    #[cfg(feature = "fleet")]
    Launch(LaunchArgs),
    /// Managed jobs on the fleet (`tap launch` submits them): list, show, cancel, logs.
    #[cfg(feature = "fleet")]
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Goodput: how much of the time a training paid for went into steps it kept, and where
    /// the rest went (program start-up, checkpoint save and restore, steps re-run after a
    /// disruption, infrastructure recovery, idle), per attempt, with the checkpoint interval
    /// the measured costs imply.
    ///
    /// RUN is a run or a managed job (id, name or unique id prefix); -e EXP reports every run
    /// of the experiment and their sum.
    ///
    /// Example: tap goodput -e demo        tap goodput 20261207T101500Z-3f9a1c --output json
    Goodput(GoodputArgs),
    /// A web dashboard of the store's runs: a runs table with the columns you choose, each run's
    /// charts (zoom, hover, log scale, smoothing), log tail, attempts, checkpoints and goodput,
    /// runs compared side by side, and on a stack the job queue (with Cancel) and the fleet.
    /// Served from this binary (no CDN, no Node): open the URL it prints.
    ///
    /// It binds to 127.0.0.1; on a node, reach it through SSM port forwarding:
    ///   aws ssm start-session --target i-0123 --document-name AWS-StartPortForwardingSession \
    ///       --parameters portNumber=8450,localPortNumber=8450
    /// Any other --host needs the token in the URL it prints (then a cookie); the one write
    /// (Cancel on a job) needs a POST with the page's XSRF token.
    ///
    /// Example: tap ui --open        tap ui --port 9000 --local
    #[command(verbatim_doc_comment)]
    Ui(UiArgs),
    /// A run's output (stdout and stderr) from the store; --follow prints new lines until the
    /// run ends. For a multi-node job's id (tap launch), its rank 0's output.
    Logs {
        run_id: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// Shell completions for tap, generated from its own definition (every command and flag).
    ///
    ///   bash: tap completions bash > ~/.local/share/bash-completion/completions/tap
    ///   zsh:  tap completions zsh > ~/.zfunc/_tap      (with `fpath+=~/.zfunc` before compinit)
    ///   fish: tap completions fish > ~/.config/fish/completions/tap.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// tap's manual page (roff), generated from its own definition.
    ///
    ///   tap man > ~/.local/share/man/man1/tap.1 && man tap
    ///   tap man --dir ~/.local/share/man/man1     tap.1 and one page per command (tap-run.1, ...)
    #[command(verbatim_doc_comment)]
    Man {
        /// Write tap.1 and a page for every command (tap-run.1, tap-runs-list.1, ...) into DIR
        /// instead of printing tap.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl Cli {
    /// clap's definition of `tap` as it parses: every option that takes a value takes a
    /// negative number as that value, so `--concurrency -1` is refused for its value ("-1 is
    /// not in 1..=64") instead of read as an unknown flag `-1` with a tip that does not work
    /// (issue 23: fixed for every option at once, not flag by flag).
    ///
    /// An environment variable that stands for an option (`TAP_EXPERIMENT`, `TAP_OUTPUT`, …)
    /// and is set but empty counts as unset, as a shell's `VAR=` means: its option takes its
    /// default instead of failing on `''` with a message about a flag nobody typed (issue 23).
    pub fn definition() -> clap::Command {
        tap_core::args::adjusted(<Cli as clap::CommandFactory>::command())
    }

    /// Parses `args` (the program name first) with [`Cli::definition`].
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = Cli::definition();
        let mut m = tap_core::args::matches(&mut cmd, args)?;
        Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd))
    }

    /// Parses the process's arguments; on a bad one prints clap's message and exits (2).
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Target and fulfilled capacity, every instance (type, AZ, IP, state, age, agent
    /// heartbeat, GPU health) and the spot interruptions of the last 24 h.
    Status,
    /// Set the fleet's target capacity (0 stops paying for GPUs). Scaling down asks first.
    /// Also tells the stack's fleet-not-reporting alarm (0: an intended zero, no page; N:
    /// nodes expected after their boot). The next `terraform apply` restores target_capacity.
    Scale {
        #[arg(value_parser = clap::value_parser!(u32).range(0..=1000))]
        target: u32,
        /// Do not ask (for scripts).
        #[arg(long, short)]
        yes: bool,
    },
    /// Nodes whose GPUs idled (every minute's average utilization below a threshold, for
    /// most of the window) and whether the whole fleet did: tap-agent's opt-in [idle] rule,
    /// which scales such a fleet to zero by itself, judges the same way.
    Idle {
        /// Look back this many minutes.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(5..=1440))]
        minutes: u32,
        /// Idle means every minute's average GPU utilization below this (percent).
        #[arg(long, default_value_t = 5.0, value_parser = parse_percent)]
        below_percent: f64,
    },
    /// Spot pools (instance type × AZ) as your runs saw them: node-hours, spot interruptions,
    /// interruptions per 100 node-hours, mean time between interruptions; and the
    /// `instance_types` / `availability_zones` order it would choose, as tfvars lines to
    /// paste. Advice only: it changes nothing. Reads the store (works on the local one too).
    ///
    /// Example: tap fleet pools --days 7
    Pools {
        /// Look back this many days.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
}

#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// How many nodes (healthy ones: running, agent heartbeat within 5 min, no fatal GPU
    /// finding, not running another job).
    #[arg(long, short)]
    pub nodes: u32,
    #[arg(long, short, env = "TAP_EXPERIMENT", default_value = "default", value_parser = parse_experiment)]
    pub experiment: String,
    /// The first attempt restores the experiment's latest checkpoint too (relaunches always do).
    #[arg(long)]
    pub resume: bool,
    /// Rendezvous port on rank 0 (MASTER_PORT).
    #[arg(long, default_value_t = 29500)]
    pub port: u16,
    /// The user the job runs as on the nodes (SSM runs commands as root).
    #[arg(long, default_value = "ubuntu")]
    pub user: String,
    /// The job's id, also the run group of its node runs (default: a new one).
    #[arg(long, value_parser = parse_id)]
    pub group: Option<String>,
    /// How long each attempt may run (its commands' SSM executionTimeout, plus 10 min for
    /// the restore and the final upload).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Relaunches after reclaims, lost nodes and GPU faults (from the latest checkpoint).
    #[arg(long, default_value_t = tap_core::jobs::DEFAULT_RESTARTS, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub restarts: u32,
    /// Relaunches after the command's own error exit (counted apart from --restarts).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retry_on_error: u32,
    /// How long a relaunch waits for enough healthy nodes before the job fails.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub wait: Duration,
    /// Extra environment for the command on every node (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Let the ranks span Availability Zones when no one AZ has enough healthy nodes.
    /// Without it a multi-node job waits for one AZ that holds it: the collective's traffic
    /// between AZs is billed at $0.01/GB each way and adds a hop to every all-reduce. Prints
    /// what crossing would cost an hour (from --traffic-per-step, or the traffic measured
    /// on the experiment's last job); `tap jobs show` says where each attempt ran.
    #[arg(long)]
    pub allow_cross_az: bool,
    /// A label for the job and every rank's run, to find them by (`tap runs list --tag`);
    /// repeat for several.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// The bytes each rank sends per training step, for the crossing's cost (a DDP ring
    /// all-reduce sends 2·(N−1)/N × the gradients' bytes: 4.3GB for 1.3 B fp16 parameters
    /// on 6 nodes). Decimal units: 4.3GB, 800MB.
    #[arg(long, value_name = "BYTES", value_parser = parse_traffic, requires_all = ["allow_cross_az", "step_time"])]
    pub traffic_per_step: Option<f64>,
    /// How long one training step takes, with --traffic-per-step (e.g. 4s, 800ms).
    #[arg(long, value_parser = parse_duration, requires = "traffic_per_step")]
    pub step_time: Option<Duration>,
    /// Watch the job after submitting it: state changes, each attempt, rank 0's output.
    /// Ctrl-C stops watching, never the job.
    #[arg(long, short)]
    pub follow: bool,
    /// Do not ask before raising the fleet's target capacity (for scripts).
    #[arg(long, short)]
    pub yes: bool,
    /// The training command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job, newest first: state, nodes, attempt, restarts, and why it waits or how it ended.
    List {
        /// Only jobs that are queued, starting, running or recovering.
        #[arg(long)]
        active: bool,
    },
    /// One job's story: each attempt with its nodes (instance, type, AZ), start, end, why it
    /// ended (spot reclaim, GPU XID, error exit, cancelled), the checkpoint it resumed from,
    /// and the downtime between attempts; or why it waits.
    Show { job_id: String },
    /// Cancel a job: the fleet's controller stops every rank and ends it as cancelled.
    Cancel { job_id: String },
    /// Rank 0's output of the job's current attempt; --follow prints new lines until it ends.
    Logs {
        job_id: String,
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Import the stack's outputs: `terraform output -json | tap stack import`. From then on
    /// tap uses the stack's DynamoDB table, SSM parameters, S3 bucket and log group.
    Import {
        /// File with `terraform output -json` (or `-json tap_config`); `-` reads stdin.
        #[arg(default_value = "-", value_name = "FILE")]
        file: PathBuf,
    },
    /// Forget the imported stack: back to the local store.
    Forget,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The effective configuration: which backend, where, and the AWS settings in effect.
    Show,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Experiment the run belongs to.
    #[arg(long, short, env = "TAP_EXPERIMENT", default_value = "default", value_parser = parse_experiment)]
    pub experiment: String,

    /// Continue run RUN (id, unique id prefix or name) as a new attempt: its own latest
    /// checkpoint is restored into TAP_CHECKPOINT_DIR and it keeps the hyperparameters it
    /// started with. Without RUN: the experiment's one interrupted, failed or lost run with a
    /// checkpoint; tap refuses (and lists them) when there is none or more than one.
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "", conflicts_with = "resume_from")]
    pub resume: Option<String>,

    /// Start a NEW run from checkpoint CHECKPOINT (an id) or from run RUN's latest one, and
    /// record it as the parent (fine-tuning, forks). Hyperparameters: the defaults and --param.
    #[arg(long, value_name = "CHECKPOINT|RUN")]
    pub resume_from: Option<String>,

    /// A name for the run, unique in its experiment, usable wherever its id is (a resumed
    /// run keeps its own: --resume NAME).
    #[arg(long, value_parser = parse_id, conflicts_with = "resume")]
    pub name: Option<String>,

    /// This run's value of hyperparameter NAME, over the stored default (repeatable). The run
    /// records each value and where it came from; resumed attempts get the same values.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,

    /// A label to find the run by (`tap runs list --tag team=nlp`, `--where tag.team=nlp`);
    /// repeat for several. `tap runs tag` adds more later.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,

    /// Hyperparameters for this run from a file: a JSON object ({"lr": 0.1, ...}) or
    /// NAME=VALUE lines; --param wins over it.
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,

    /// Run as rank --rank of job GROUP, started by hand on each node (one `tap run` per
    /// node, each with its own --rank): every rank stores its checkpoint directory as its
    /// shard of each step, and a step is restorable once every rank's shard is stored.
    /// Continue the group with --resume GROUP on every rank. A managed job's nodes
    /// (tap launch) are ranks without it.
    #[arg(long, env = "TAP_RUN_GROUP", value_parser = parse_id, value_name = "GROUP")]
    pub group: Option<String>,

    /// This rank's number in its group, 0 to --world-size − 1 [default: $RANK, else
    /// $NODE_RANK].
    #[arg(long, value_name = "R")]
    pub rank: Option<u32>,

    /// How many ranks the group has [default: $WORLD_SIZE, else $NNODES].
    #[arg(long, value_name = "N")]
    pub world_size: Option<u32>,

    /// What a rank of a group gets back on --resume: `own` (its shard of the newest committed
    /// step) or `all` (every shard, in TAP_CHECKPOINT_DIR/rank-<r>: what DCP needs to load into
    /// another world size than the step was saved with).
    #[arg(long, value_enum, default_value = "own", value_name = "SHARDS")]
    pub restore: RestoreShards,

    /// With --resume of a group: restore committed step STEP instead of the newest (when the
    /// newest cannot be restored, tap names the one before it).
    #[arg(long, value_name = "STEP")]
    pub restore_step: Option<u64>,

    /// Signal sent to the command on an interruption notice.
    #[arg(long, default_value = "SIGUSR1", value_parser = parse_signal)]
    pub interrupt_signal: nix::sys::signal::Signal,

    /// How long the command may take for its final checkpoint after a notice (at most 2h).
    #[arg(long, default_value = "90s", value_parser = parse_checkpoint_deadline)]
    pub checkpoint_deadline: Duration,

    /// Disk space set aside at the start (a preallocated file in TAP_HOME/runs) and given back
    /// when the disk fills, so the run's end and its buffered output and metrics are still
    /// recorded; beyond it, tap says what the store does not hold and exits 74. 0: none.
    #[arg(long, env = "TAP_DISK_RESERVE", default_value = "64MiB", value_parser = parse_reserve, value_name = "SIZE")]
    pub disk_reserve: u64,

    /// A file whose appearance is an interruption notice (any file; default: notice.json in
    /// the runtime directory).
    #[arg(long, env = "TAP_NOTICE_FILE", value_name = "PATH")]
    pub notice_file: Option<PathBuf>,

    /// tap-agent's runtime directory on a node: tap run registers there, takes notice.json
    /// as the interruption notice (with its deadline) and refuses to start while the node
    /// drains [default: /run/tap when it exists].
    #[arg(long, env = "TAP_RUNTIME_DIR", value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// The training command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `tap run --restore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestoreShards {
    /// The rank's own shard.
    Own,
    /// Every rank's shard.
    All,
}

/// `tap goodput`'s arguments.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["run", "experiment"])))]
pub struct GoodputArgs {
    #[command(subcommand)]
    pub command: Option<GoodputCommand>,
    /// A run or a managed job: id, name or unique id prefix.
    pub run: Option<String>,
    /// Every run of this experiment, and their sum.
    #[arg(long, short, value_parser = parse_id, conflicts_with = "run")]
    pub experiment: Option<String>,
    /// Also draw each run's timeline as a PNG here: attempts as bars coloured by node, the
    /// badput shaded by cause, the step curve with the steps run again marked.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// The plot's size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1200x800", value_parser = parse_picture_size)]
    pub size: (u32, u32),
    #[command(flatten)]
    pub prices: PriceArgs,
}

/// Where the dollars' prices come from.
#[derive(Debug, Clone, clap::Args)]
pub struct PriceArgs {
    /// Prices over the built-in on-demand table (us-east-1): `on-demand,TYPE,USD_PER_HOUR` or
    /// `spot,TYPE,USD_PER_HOUR[,AZ]` a line. Spot prices are needed for dollars.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// The instance type of attempts that ran off EC2 (a laptop) or are simulated: priced as
    /// that type.
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// The address to listen on. Anything but 127.0.0.1 or ::1 (127.0.0.2 and 0.0.0.0 too)
    /// serves only requests that carry the token printed at start.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The port (0: any free one; the URL printed says which).
    #[arg(long, default_value_t = 8450)]
    pub port: u16,
    /// Open the page in the default browser (xdg-open / open).
    #[arg(long)]
    pub open: bool,
    /// Show hyperparameters whose names say they are secrets (token, password, key, ...)
    /// instead of masking their values.
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Subcommand)]
pub enum GoodputCommand {
    /// Before you launch: replay a preemption trace (`ms,add|remove,node` a line, the
    /// Bamboo/Parcae format) against the job controller's own decisions in virtual time, with
    /// a training of the costs you give, and print the same report as `tap goodput` — at the
    /// Young/Daly checkpoint interval, and the best interval a sweep finds.
    ///
    /// Example: tap goodput simulate --trace g4dn-trace.csv --nodes 8 --step 1s
    ///          --checkpoint-cost 30s --restore-cost 1m --boot 2m --notice-honoured 0.9
    Simulate(SimulateArgs),
}

/// `tap goodput simulate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The trace: `ms since start,add|remove,node` a line.
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    /// The job's nodes (each attempt needs this many healthy nodes in one AZ).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub nodes: u32,
    /// One training step.
    #[arg(long, value_parser = parse_duration)]
    pub step: Duration,
    /// What one checkpoint costs training (δ: the pause to write it).
    #[arg(long, value_parser = parse_duration)]
    pub checkpoint_cost: Duration,
    /// What restoring a checkpoint costs a relaunch.
    #[arg(long, value_parser = parse_duration)]
    pub restore_cost: Duration,
    /// From a node joining the fleet to its agent reporting healthy.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub boot: Duration,
    /// From an attempt's launch to its command's start, before the restore (SSM, tap run).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub launch: Duration,
    /// The command's start-up before its first step (imports, data loaders, compilation).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub startup: Duration,
    /// A finished training's time after its last step (its final save, the exit).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub shutdown: Duration,
    /// From an honoured notice to its attempt's end: the final checkpoint and the exit
    /// (default: --checkpoint-cost).
    #[arg(long, value_parser = parse_duration)]
    pub stop: Option<Duration>,
    /// Share of reclaims whose notice is honoured (the final checkpoint commits), 0 to 1.
    #[arg(long, default_value_t = 1.0, value_parser = parse_share)]
    pub notice_honoured: f64,
    /// Replay at this checkpoint interval too (default: Young/Daly's and the sweep's best).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// The training's length in steps (default: it trains until the trace ends).
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Intervals the sweep tries (geometric, one step to 24 h).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(2..=200))]
    pub sweep: u32,
    #[command(flatten)]
    pub prices: PriceArgs,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a share from 0 to 1")),
    }
}

/// `tap runs list`'s filters, order and columns.
#[derive(Debug, clap::Args)]
pub struct RunsListArgs {
    /// Only this experiment.
    #[arg(long, short, value_parser = parse_id)]
    pub experiment: Option<String>,
    /// Only this multi-node job: its own record and its node runs (the id `tap launch` printed).
    #[arg(long, short, value_parser = parse_id)]
    pub group: Option<String>,
    /// Only runs in one of these states (comma-separated or repeated): queued, running,
    /// succeeded, failed, interrupted, lost, cancelled.
    #[arg(long, value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<tap_core::runs::RunStatus>,
    /// Only runs with this tag (repeat: all of them).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Only runs where FIELD OP VALUE holds (repeat: all of them). OP: < <= > >= = !=.
    #[arg(long = "where", value_name = "EXPR", value_parser = parse_condition)]
    pub conditions: Vec<tap_core::query::Condition>,
    /// Order by FIELD, ascending; -FIELD for descending (default: newest first). Runs
    /// without the field come last.
    #[arg(long, value_name = "[-]FIELD", value_parser = parse_sort, allow_hyphen_values = true)]
    pub sort: Option<tap_core::query::Sort>,
    /// At most N runs (after sorting).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The metric, hyperparameter and tag columns of the table, comma-separated (FIELDs as
    /// above; default: the first four final metrics).
    #[arg(long, value_delimiter = ',', value_parser = parse_field)]
    pub columns: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first: filtered, sorted and cut to what you ask.
    ///
    /// A FIELD is a final metric or a hyperparameter by its name (`loss`, `train/loss`, `lr`;
    /// a metric wins), or `metric.NAME`, `param.NAME`, `tag.KEY`, or one of `id`, `name`,
    /// `experiment`, `status`, `started`, `duration` (seconds), `attempts`.
    ///
    /// Examples:
    ///   tap runs list --where 'loss<0.1' --where tag.team=nlp
    ///   tap runs list -e sweep --sort loss --limit 1          # the lowest final loss
    ///   tap runs list --status failed,lost --tag owner=ana
    ///   tap runs list --columns loss,eval/acc@1,lr
    #[command(verbatim_doc_comment)]
    List(RunsListArgs),
    /// Add or change tags of a run: `tap runs tag RUN team=nlp stage=baseline`.
    Tag {
        /// Id, unique id prefix or name.
        run: String,
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Remove tags of a run by key.
    Untag {
        run: String,
        /// Tag keys (`team`; `team=nlp` is read as its key, as `tap runs tag` wrote it).
        #[arg(required = true, value_name = "KEY", value_parser = parse_tag_key)]
        keys: Vec<String>,
    },
    /// Delete runs: their checkpoints (and the objects no other checkpoint shares), output,
    /// metrics and record. A running run is refused.
    Delete {
        /// Ids, unique id prefixes or names.
        #[arg(required = true)]
        runs: Vec<String>,
        /// Say what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Set a run's note (free text; "" clears it).
    Note { run: String, text: String },
    /// What differs between two runs: hyperparameters, code (git commit, branch, dirty),
    /// environment (tap, Python and its packages, instance type, AMI), tags and final metrics.
    Diff { a: String, b: String },
    /// One run: status, command, hyperparameters, final metrics and a sparkline per metric.
    Show { run_id: String },
    /// Runs side by side: hyperparameters and final metrics.
    Compare {
        #[arg(required = true, num_args = 2..)]
        run_ids: Vec<String>,
    },
    /// Metric curves of one or more runs as a PNG: a panel per metric, a line per run, step on
    /// the x axis (and a sparkline per metric in the terminal).
    ///
    /// Example: tap runs plot 20261127-0301-a1b2 20261127-0412-c3d4 --metric loss --out loss.png
    Plot {
        #[arg(required = true, num_args = 1..)]
        run_ids: Vec<String>,
        /// Only this metric (repeat for several; default: every metric the runs recorded).
        #[arg(long, short, value_parser = parse_key)]
        metric: Vec<String>,
        /// Where to write the PNG (default: ./<first run id>.png).
        #[arg(long, value_name = "FILE.png")]
        out: Option<PathBuf>,
        /// Picture size in pixels, WIDTHxHEIGHT.
        #[arg(long, default_value = "1200x800", value_parser = parse_picture_size)]
        size: (u32, u32),
        /// Logarithmic y axis (values ≤ 0 are left out).
        #[arg(long)]
        log_y: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ParamsCommand {
    /// Latest version of every hyperparameter.
    List,
    /// One hyperparameter's latest value.
    Get {
        #[arg(value_parser = parse_key)]
        name: String,
    },
    /// Store a new version of a hyperparameter: the default every new run gets (runs
    /// started before keep the values they recorded).
    Set {
        #[arg(value_parser = parse_key)]
        name: String,
        value: String,
        /// Store an empty value (refused otherwise: an empty value is nearly always a shell
        /// variable that was not set).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Remove a hyperparameter and its history; runs keep the values they recorded.
    Unset {
        #[arg(value_parser = parse_key)]
        name: String,
    },
    /// Every version of a hyperparameter.
    History {
        #[arg(value_parser = parse_key)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Upload a file or a directory as a new version of artifact NAME.
    Push {
        path: PathBuf,
        /// Artifact name (default: the file or directory name).
        #[arg(long, short, value_parser = parse_id)]
        name: Option<String>,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Download the latest version of artifact NAME into DEST (default: ./NAME).
    Pull {
        #[arg(value_parser = parse_id)]
        name: String,
        dest: Option<PathBuf>,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Artifacts and their latest versions.
    #[command(visible_alias = "ls")]
    List,
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct TransferArgs {
    /// Multipart part size (S3; 5 MiB to 5 GiB), e.g. 16MiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Parts in flight at once (S3).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// The newest checkpoint of an experiment (of any of its runs) and its files.
    Latest {
        #[arg(long, short, default_value = "default", value_parser = parse_id)]
        experiment: String,
    },
    /// A run's committed checkpoints, oldest first: step, size, time, and the verdict on
    /// each final checkpoint after a notice. RUN: id, unique id prefix or name.
    List { run: String },
    /// Fetch a checkpoint into DIR, every file verified against its digest, without
    /// recording a run. WHAT: a run (its latest checkpoint) or a checkpoint id.
    Pull {
        #[arg(value_name = "RUN|CHECKPOINT")]
        what: String,
        dir: PathBuf,
    },
}

/// An experiment, artifact, group or run name ([`tap_core::runs::valid_id`]).
fn parse_id(s: &str) -> Result<String, String> {
    if tap_core::runs::valid_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must be {}", tap_core::runs::ID_RULE))
    }
}

/// An experiment: an id ([`parse_id`]) that is not one of the stack's own partitions.
fn parse_experiment(s: &str) -> Result<String, String> {
    let id = parse_id(s)?;
    if tap_core::runs::reserved_partition(&id) {
        return Err(format!("{s:?} is reserved for the stack's own records; choose another experiment name"));
    }
    Ok(id)
}

/// A metric, tag or hyperparameter name ([`tap_core::names`]).
fn parse_key(s: &str) -> Result<String, String> {
    tap_core::names::checked("name", s).map(str::to_owned)
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    tap_core::names::checked("parameter name", k)?;
    if v.is_empty() {
        return Err(format!("{s:?}: the value is empty"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    tap_core::query::parse_tag(s)
}

fn parse_tag_key(s: &str) -> Result<String, String> {
    parse_key(s.split_once('=').map_or(s, |(k, _)| k))
}

fn parse_status(s: &str) -> Result<tap_core::runs::RunStatus, String> {
    tap_core::runs::RunStatus::parse(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a run status (queued, running, succeeded, failed, interrupted, lost, cancelled)")
    })
}

fn parse_condition(s: &str) -> Result<tap_core::query::Condition, String> {
    tap_core::query::Condition::parse(s)
}

fn parse_sort(s: &str) -> Result<tap_core::query::Sort, String> {
    tap_core::query::Sort::parse(s)
}

/// A `--columns` field, checked (kept as its text: the header shows it).
fn parse_field(s: &str) -> Result<String, String> {
    tap_core::query::Field::parse(s.trim()).map(|_| s.trim().to_owned())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage in (0, 100]")),
    }
}

fn parse_picture_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a size like 1200x800");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    let ok = crate::plot::MIN_SIZE..=crate::plot::MAX_SIZE;
    if !ok.contains(&w) || !ok.contains(&h) {
        return Err(format!("{s:?}: each side must be {}..{} pixels", crate::plot::MIN_SIZE, crate::plot::MAX_SIZE));
    }
    Ok((w, h))
}

fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, String> {
    let name = if s.starts_with("SIG") { s.to_owned() } else { format!("SIG{s}") };
    name.parse().map_err(|_| format!("{s:?} is not a signal name (e.g. SIGUSR1, SIGTERM)"))
}

/// A traffic volume in bytes: `4.3GB`, `800MB`, `2.6e9`, `1.5GiB` (decimal units as AWS
/// bills them; binary ones too).
pub fn parse_traffic(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a byte count like 4.3GB, 800MB or 2.6e9");
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = n * mult;
    // More than a petabyte a step is a typo, not a model.
    if !v.is_finite() || v <= 0.0 || v > 1e15 {
        return Err(format!("{s:?}: give the bytes one rank sends per step (more than 0, at most 1PB)"));
    }
    Ok(v)
}

/// `64MiB`, `8M`, `1GiB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s)?;
    use crate::artifacts::transfer::{S3_MAX_PART_SIZE, S3_MIN_PART_SIZE};
    if !(S3_MIN_PART_SIZE..=S3_MAX_PART_SIZE).contains(&v) {
        return Err(format!("{s:?}: S3 parts must be between 5MiB and 5GiB"));
    }
    Ok(v)
}

/// `--disk-reserve`: 0 to [`MAX_DISK_RESERVE`].
pub fn parse_reserve(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s)?;
    if v > MAX_DISK_RESERVE {
        return Err(format!("{s:?}: at most 16GiB (the reserve holds a run's end, not its data)"));
    }
    Ok(v)
}

/// The largest `--disk-reserve`.
pub const MAX_DISK_RESERVE: u64 = 16 << 30;

/// A byte count: `64MiB`, `8M`, `1GiB`, `4096`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let err = || format!("{s:?} is not a size like 64MiB, 8M or 1GiB");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// The longest duration any flag takes: SSM Run Command's longest executionTimeout
/// (172 800 s, `tap launch --timeout`); no wait of tap's is longer. Bounding every duration
/// keeps the deadline arithmetic from overflowing (regression: a huge --checkpoint-deadline
/// was accepted and the notice path then panicked).
pub const MAX_DURATION: Duration = Duration::from_secs(48 * 3600);

/// The longest final-checkpoint deadline: EC2 Fleet's longest rebalance termination delay
/// (7200 s, the stack's rebalance_termination_delay_seconds); a spot notice gives 2 minutes.
pub const MAX_CHECKPOINT_DEADLINE: Duration = Duration::from_secs(7200);

/// `90s`, `2m`, `1500ms`, at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 90s, 2m or 1500ms");
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let d = n.checked_mul(per_unit_ms).map(Duration::from_millis);
    match d {
        Some(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("{s:?} is longer than {}h, the longest duration tap takes", MAX_DURATION.as_secs() / 3600)),
    }
}

pub fn parse_checkpoint_deadline(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_CHECKPOINT_DEADLINE {
        return Err(format!(
            "{s:?} is longer than {}s, the longest time any notice leaves for a final checkpoint",
            MAX_CHECKPOINT_DEADLINE.as_secs()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_signals() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert!(parse_duration("5d").is_err());
        assert_eq!(parse_duration("48h"), Ok(MAX_DURATION));
        assert!(parse_duration("49h").expect_err("too long").contains("longer than 48h"));
        assert!(parse_duration("18446744073709551615h").expect_err("overflows").contains("longer than 48h"));
        assert!(parse_duration("99999999999999999999").is_err(), "more than u64");
        assert_eq!(parse_checkpoint_deadline("2h"), Ok(MAX_CHECKPOINT_DEADLINE));
        assert!(parse_checkpoint_deadline("7201s").expect_err("too long").contains("longer than 7200s"));
        assert_eq!(parse_signal("USR1"), Ok(nix::sys::signal::Signal::SIGUSR1));
        assert!(parse_signal("SIGBOGUS").is_err());
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("1MiB").expect_err("too small").contains("between 5MiB and 5GiB"));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_picture_size("800x600"), Ok((800, 600)));
        assert!(parse_picture_size("800").is_err());
        assert!(parse_picture_size("9000x600").expect_err("too wide").contains("200..8000"));
    }

    /// clap checks its own definitions (unique short flags, …) only when asked: ask, so a clash
    /// fails this test instead of panicking in a user's hands.
    #[test]
    fn traffic_volumes_read_in_decimal_and_binary_units() {
        assert_eq!(parse_traffic("4.3GB"), Ok(4.3e9));
        assert_eq!(parse_traffic("800MB"), Ok(8e8));
        assert_eq!(parse_traffic("2.6e9"), Ok(2.6e9));
        assert_eq!(parse_traffic("1GiB"), Ok(1_073_741_824.0));
        for bad in ["", "GB", "-1GB", "0", "4.3 parsecs", "NaN", "inf", "2e20"] {
            let e = parse_traffic(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn launch_takes_the_crossing_flags_only_together_and_with_allow_cross_az() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["tap", "launch", "--nodes", "2"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--", "true"]);
            Cli::try_parse_args(args)
        };
        assert!(parse(&["--allow-cross-az", "--traffic-per-step", "4.3GB", "--step-time", "4s"]).is_ok());
        assert!(parse(&["--allow-cross-az"]).is_ok());
        assert!(parse(&["--traffic-per-step", "4.3GB", "--step-time", "4s"]).is_err(), "needs --allow-cross-az");
        assert!(parse(&["--allow-cross-az", "--traffic-per-step", "4.3GB"]).is_err(), "needs --step-time");
        assert!(parse(&["--allow-cross-az", "--step-time", "4s"]).is_err(), "needs --traffic-per-step");
    }

    /// Regression (issue 23): `--concurrency -1` was read as an unknown flag `-1`, with
    /// clap's tip to write `-- -1`, which does not work. Every option that takes a value takes
    /// a negative number as the value, and its own check refuses it.
    #[test]
    fn negative_numbers_given_to_numeric_flags_are_taken_for_flags() {
        for args in [
            &["tap", "artifacts", "push", "x", "--concurrency", "-1"][..],
            &["tap", "fleet", "idle", "--minutes", "-5"][..],
            &["tap", "launch", "--nodes", "-2", "--", "true"][..],
            &["tap", "fleet", "scale", "1", "--yes"][..],
        ] {
            match Cli::try_parse_args(args) {
                Ok(_) => assert_eq!(args[1..3], ["fleet", "scale"], "{args:?} parsed"),
                Err(e) => {
                    assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}: {e}");
                    let text = e.to_string();
                    assert!(text.contains("invalid value '-"), "{text}");
                    assert!(!text.contains("unexpected argument") && !text.contains("-- -"), "{text}");
                }
            }
        }
        fn check(cmd: &clap::Command, path: &str) {
            for a in cmd.get_arguments() {
                if a.get_action().takes_values() && !a.is_positional() {
                    assert!(a.is_allow_negative_numbers_set(), "{path} --{:?}", a.get_long());
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::definition(), "tap");
    }

    #[test]
    fn command_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        Cli::definition().debug_assert();
    }
}
