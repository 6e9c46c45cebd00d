//! `tap-agent`'s configuration file (`/etc/tap/agent.toml`).
//!
//! The stack's user_data writes it from Terraform values (`local.agent_config` in
//! `infra/tap-stack.tf`; a test below parses that template). Unknown keys are rejected and
//! every error names the file and the key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::contract::NAMESPACE;

/// Publish intervals CloudWatch statistics line up with (the stack validates the same list).
/// Above 60 s the datapoints stay per minute; only the requests are fewer.
pub const PUBLISH_INTERVALS: [u32; 8] = [10, 20, 30, 60, 120, 300, 600, 900];

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub aws: AwsSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub logs: LogsSection,
    #[serde(default)]
    pub spool: SpoolSection,
    #[serde(default)]
    pub prometheus: PrometheusSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub spot: SpotSection,
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub idle: IdleSection,
    #[serde(default)]
    pub jobs: JobsSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    /// Region to publish to. Absent: `AWS_REGION`, then the instance's region from IMDSv2.
    pub region: Option<String>,
    /// Value of the `InstanceId` dimension where instance metadata is unavailable
    /// (`AWS_EC2_METADATA_DISABLED=true`, not on EC2). On EC2, IMDSv2 wins.
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Must be the contract's namespace: the stack's alarms watch only that one.
    pub namespace: String,
    /// Value of the `Environment` dimension.
    pub environment: String,
    pub sample_interval_seconds: u32,
    pub publish_interval_seconds: u32,
    /// Publish with 1-second storage resolution.
    pub high_resolution: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            namespace: NAMESPACE.to_owned(),
            environment: "dev".to_owned(),
            sample_interval_seconds: 1,
            publish_interval_seconds: 60,
            high_resolution: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsSection {
    /// CloudWatch log group of the training logs.
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Where batches CloudWatch has not accepted yet wait (survives restarts).
    pub dir: std::path::PathBuf,
    /// Bound of the spool; beyond it the oldest batches are dropped and counted.
    pub max_bytes: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection { dir: "/var/lib/tap/spool".into(), max_bytes: 64 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusSection {
    /// Serve `GET /metrics` for Prometheus/Grafana.
    pub enabled: bool,
    /// Address to listen on; loopback by default (put a reverse proxy or an SSM tunnel in
    /// front rather than opening it to the VPC).
    pub listen: String,
}

impl Default for PrometheusSection {
    fn default() -> Self {
        PrometheusSection { enabled: false, listen: "127.0.0.1:9400".to_owned() }
    }
}

/// What the agent does when a fatal GPU finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFatal {
    /// Log what it would do, do nothing (the default outside the stack).
    DryRun,
    /// Take no new work and ask the runs to checkpoint and stop; leave the node up.
    Drain,
    /// Drain, then power the node off once the runs are done or the deadline passed, so the
    /// fleet (type `maintain`, shutdown behaviour `terminate`) replaces it (the stack's default).
    Replace,
}

impl OnFatal {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFatal::DryRun => "dry-run",
            OnFatal::Drain => "drain",
            OnFatal::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Judge GPU health (XID, ECC, page retirement, GPUs missing or lost, throttling).
    pub enabled: bool,
    pub on_fatal: OnFatal,
    /// Where XIDs are read besides NVML events (DCGM and NVML miss XID 79, 119, 120).
    pub kernel_log: std::path::PathBuf,
    /// The findings, as JSON, rewritten when they change.
    pub state_file: std::path::PathBuf,
    /// GPUs the node must have. Absent: from the instance type (IMDS), when known.
    pub expected_gpus: Option<u32>,
    /// How long fewer GPUs than expected may be visible before that is fatal (boot, driver install).
    pub gpu_missing_seconds: u32,
    /// Failed reads in a row, after reads worked, that mean the GPUs are lost.
    pub lost_after_failed_reads: u32,
    /// How long costly throttling (power, thermal) must last to be a warning.
    pub throttle_warning_seconds: u32,
    /// After a fatal finding: how long runs get to checkpoint and exit before the power-off.
    pub drain_deadline_seconds: u32,
    /// The power-off command (`replace`).
    pub power_off_command: Vec<String>,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            enabled: true,
            on_fatal: OnFatal::DryRun,
            kernel_log: "/dev/kmsg".into(),
            state_file: "/var/lib/tap/health.json".into(),
            expected_gpus: None,
            gpu_missing_seconds: 600,
            lost_after_failed_reads: 3,
            throttle_warning_seconds: 300,
            drain_deadline_seconds: 300,
            power_off_command: vec!["systemctl".into(), "poweroff".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpotSection {
    /// Watch IMDSv2 for the spot interruption notice and the rebalance recommendation.
    pub enabled: bool,
    /// Polling interval (EC2 gives two minutes' notice; AWS suggests every 5 s).
    pub poll_seconds: u32,
    /// Instance metadata endpoint (tests); absent: `AWS_EC2_METADATA_SERVICE_ENDPOINT` or EC2's.
    pub imds_endpoint: Option<String>,
}

impl Default for SpotSection {
    fn default() -> Self {
        SpotSection { enabled: true, poll_seconds: 5, imds_endpoint: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Where the agent and `tap run` meet: notice.json, drain, runs/ (see tap_core::notice).
    pub runtime_dir: std::path::PathBuf,
    /// The EC2 Fleet this node belongs to, for the idle rule and the job controller alike.
    /// Absent: found once at start (the instance's `aws:ec2:fleet-id` tag, else the active
    /// fleet that lists it).
    pub fleet_id: Option<String>,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection { runtime_dir: crate::notice::DEFAULT_RUNTIME_DIR.into(), fleet_id: None }
    }
}

/// Where a fleet id set under `[idle]` or `[jobs]` (before there was one key) now goes.
const FLEET_ID_MOVED: &str = "moved to [node] fleet_id, the one key for this node's fleet";

/// Opt-in cost control: when every GPU of the fleet has idled for `minutes`, the fleet's
/// oldest reporting node sets its target capacity to zero (ModifyFleet). The rule is
/// tap_fleet::idle's; `tap fleet idle` shows what it sees.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdleSection {
    pub scale_to_zero: bool,
    /// How long every GPU of the fleet must have idled.
    pub minutes: u32,
    /// A minute whose average GPU utilization is below this (percent) is idle.
    pub below_percent: f64,
    /// How often the rule is checked.
    pub check_seconds: u32,
    /// Refused: [`NodeSection::fleet_id`] is the one key (read only to say so).
    #[serde(skip_serializing)]
    pub fleet_id: Option<String>,
}

impl Default for IdleSection {
    fn default() -> Self {
        IdleSection { scale_to_zero: false, minutes: 60, below_percent: 5.0, check_seconds: 300, fleet_id: None }
    }
}

/// The fleet's job controller (managed jobs, `tap launch`): every node's agent contends for
/// the lease in the experiment table, and the one holding it runs, watches and heals the
/// queued jobs (tap-agent's `controller`). The stack turns it on for its fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSection {
    pub controller: bool,
    /// The stack's experiment table (jobs, the lease and run records live there).
    pub table: Option<String>,
    /// The training log group: each rank's SSM command output goes there.
    pub log_group: Option<String>,
    /// Refused: [`NodeSection::fleet_id`] is the one key (read only to say so).
    #[serde(skip_serializing)]
    pub fleet_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is the source, printed once by the error chain (regression: it was printed
    /// twice, "…: No such file or directory (os error 2): No such file or directory (os error 2)").
    #[error("{path}: cannot read")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: String, key: &'static str, message: String },
}

impl AgentConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        AgentConfig::parse(&text, &shown)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: crate::text::toml_error(text, &e) })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let checks: [Check; 5] = [
            Self::validate_metrics,
            Self::validate_local,
            Self::validate_health,
            Self::validate_node,
            Self::validate_jobs,
        ];
        checks.iter().try_for_each(|check| check(self)).map_err(|Problem { key, message }| ConfigError::Invalid {
            path: origin.to_owned(),
            key,
            message,
        })
    }

    /// `[metrics]`: the contract's namespace, the environment, the intervals.
    fn validate_metrics(&self) -> Result<(), Problem> {
        let m = &self.metrics;
        if m.namespace != NAMESPACE {
            return Err(Problem::new(
                "metrics.namespace",
                format!(
                    "\"{}\" is not the contract namespace \"{NAMESPACE}\" that the stack's alarms watch",
                    m.namespace
                ),
            ));
        }
        if m.environment.is_empty()
            || m.environment.len() > 255
            || !m.environment.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Problem::new(
                "metrics.environment",
                format!("\"{}\" must be 1-255 letters, digits, '-' or '_'", m.environment),
            ));
        }
        if !(1..=60).contains(&m.sample_interval_seconds) {
            return Err(Problem::new(
                "metrics.sample_interval_seconds",
                format!("{} is not in 1..=60", m.sample_interval_seconds),
            ));
        }
        if !PUBLISH_INTERVALS.contains(&m.publish_interval_seconds) {
            return Err(Problem::new(
                "metrics.publish_interval_seconds",
                format!("{} is not one of {PUBLISH_INTERVALS:?}", m.publish_interval_seconds),
            ));
        }
        if m.publish_interval_seconds < m.sample_interval_seconds {
            return Err(Problem::new(
                "metrics.publish_interval_seconds",
                format!(
                    "{} is shorter than sample_interval_seconds ({})",
                    m.publish_interval_seconds, m.sample_interval_seconds
                ),
            ));
        }
        Ok(())
    }

    /// `[aws]`, `[spool]`, `[prometheus]`, `[logs]`: who the node is and what it keeps locally.
    fn validate_local(&self) -> Result<(), Problem> {
        if let Some(region) = &self.aws.region
            && !is_region(region)
        {
            return Err(Problem::new(
                "aws.region",
                format!("\"{region}\" does not look like an AWS region (e.g. us-east-1)"),
            ));
        }
        if let Some(id) = &self.aws.instance_id
            && (id.is_empty() || id.len() > 255 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(Problem::new(
                "aws.instance_id",
                format!("\"{id}\" must be 1-255 letters, digits, '-', '_' or '.'"),
            ));
        }
        if self.spool.max_bytes < 1024 * 1024 {
            return Err(Problem::new(
                "spool.max_bytes",
                format!("{} is below the minimum of 1 MiB", self.spool.max_bytes),
            ));
        }
        if !self.spool.dir.is_absolute() {
            return Err(Problem::new(
                "spool.dir",
                format!("\"{}\" must be an absolute path", self.spool.dir.display()),
            ));
        }
        if self.prometheus.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Problem::new(
                "prometheus.listen",
                format!("\"{}\" is not an address:port such as 127.0.0.1:9400", self.prometheus.listen),
            ));
        }
        if let Some(group) = &self.logs.group
            && (group.is_empty() || group.len() > 512)
        {
            return Err(Problem::new("logs.group", "must be 1-512 characters".to_owned()));
        }
        Ok(())
    }

    /// `[health]`, and the ranges of `[spot]` and `[idle]`: paths absolute, every bound named.
    fn validate_health(&self) -> Result<(), Problem> {
        let h = &self.health;
        for (key, path) in [
            ("health.kernel_log", &h.kernel_log),
            ("health.state_file", &h.state_file),
            ("node.runtime_dir", &self.node.runtime_dir),
        ] {
            if !path.is_absolute() {
                return Err(Problem::new(key, format!("\"{}\" must be an absolute path", path.display())));
            }
        }
        if let Some(n) = h.expected_gpus
            && !(1..=16).contains(&n)
        {
            return Err(Problem::new("health.expected_gpus", format!("{n} is not in 1..=16")));
        }
        for (key, v, range) in [
            ("health.gpu_missing_seconds", h.gpu_missing_seconds, 0..=86_400),
            ("health.lost_after_failed_reads", h.lost_after_failed_reads, 1..=1000),
            ("health.throttle_warning_seconds", h.throttle_warning_seconds, 1..=86_400),
            ("health.drain_deadline_seconds", h.drain_deadline_seconds, 0..=3600),
            ("spot.poll_seconds", self.spot.poll_seconds, 1..=60),
            ("idle.minutes", self.idle.minutes, 5..=10_080),
            ("idle.check_seconds", self.idle.check_seconds, 1..=3600),
        ] {
            if !range.contains(&v) {
                return Err(Problem::new(key, format!("{v} is not in {}..={}", range.start(), range.end())));
            }
        }
        if h.power_off_command.first().is_none_or(|c| c.is_empty()) {
            return Err(Problem::new(
                "health.power_off_command",
                "must name a program, e.g. [\"systemctl\", \"poweroff\"]".into(),
            ));
        }
        Ok(())
    }

    /// Where notices come from, the idle threshold, and the one key for the node's fleet.
    fn validate_node(&self) -> Result<(), Problem> {
        if let Some(e) = &self.spot.imds_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(Problem::new("spot.imds_endpoint", format!("\"{e}\" is not an http:// or https:// URL")));
        }
        let p = self.idle.below_percent;
        if !(p > 0.0 && p <= 100.0) {
            return Err(Problem::new("idle.below_percent", format!("{p} is not a percentage in (0, 100]")));
        }
        if self.idle.fleet_id.is_some() {
            return Err(Problem::new("idle.fleet_id", FLEET_ID_MOVED.into()));
        }
        if self.jobs.fleet_id.is_some() {
            return Err(Problem::new("jobs.fleet_id", FLEET_ID_MOVED.into()));
        }
        if let Some(id) = &self.node.fleet_id
            && !is_fleet_id(id)
        {
            return Err(Problem::new("node.fleet_id", format!("\"{id}\" is not an EC2 Fleet id (fleet-...)")));
        }
        Ok(())
    }

    /// `[jobs]`: the controller needs the experiment table and the training log group.
    fn validate_jobs(&self) -> Result<(), Problem> {
        let j = &self.jobs;
        match &j.table {
            // DynamoDB table names: 3-255 of [A-Za-z0-9_.-].
            Some(t)
                if !(3..=255).contains(&t.len())
                    || !t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
            {
                return Err(Problem::new("jobs.table", format!("\"{t}\" is not a DynamoDB table name")));
            }
            None if j.controller => {
                return Err(Problem::new(
                    "jobs.table",
                    "the controller needs the experiment table (jobs.table)".into(),
                ));
            }
            _ => {}
        }
        if j.controller && j.log_group.as_deref().is_none_or(|g| g.is_empty() || g.len() > 512) {
            return Err(Problem::new(
                "jobs.log_group",
                "the controller needs the training log group (1-512 characters)".into(),
            ));
        }
        Ok(())
    }
}

/// One section's checks.
type Check = fn(&AgentConfig) -> Result<(), Problem>;

/// A key of the config and what is wrong with its value.
struct Problem {
    key: &'static str,
    message: String,
}

impl Problem {
    fn new(key: &'static str, message: String) -> Problem {
        Problem { key, message }
    }
}

fn is_fleet_id(id: &str) -> bool {
    id.starts_with("fleet-") && id.len() <= 64 && id[6..].chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// `xx-name-N` or `xx-gov-name-N`, as the stack's `aws_region` validation.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lower = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase());
    (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(lower)
        && parts[parts.len() - 1].len() == 1
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack_source;
    use proptest::prelude::*;

    fn err(text: &str) -> String {
        AgentConfig::parse(text, "/etc/tap/agent.toml").expect_err("config should be rejected").to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(AgentConfig::parse("", "x").expect("valid"), AgentConfig::default());
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let e = err("[metrics]\nsample_interval = 5\n");
        assert!(e.starts_with("/etc/tap/agent.toml: "), "{e}");
        assert!(e.contains("unknown field `sample_interval`"), "{e}");
    }

    #[test]
    fn the_job_controller_needs_its_table_and_log_group() {
        assert!(
            err("[jobs]\ncontroller = true\n").starts_with("/etc/tap/agent.toml: jobs.table: the controller needs")
        );
        let e = err("[jobs]\ncontroller = true\ntable = \"tap-dev-experiments\"\n");
        assert!(e.contains("jobs.log_group"), "{e}");
        assert!(err("[jobs]\ntable = \"a b\"\n").contains("jobs.table: \"a b\" is not a DynamoDB table name"));
        assert!(err("[jobs]\nfleet_id = \"x\"\n").contains("jobs.fleet_id"));
        let ok = AgentConfig::parse(
            "[jobs]\ncontroller = true\ntable = \"tap-dev-experiments\"\nlog_group = \"/tap/dev/training\"\n",
            "x",
        )
        .expect("valid");
        assert!(ok.jobs.controller);
    }

    #[test]
    fn unknown_section_is_rejected() {
        assert!(err("[metric]\n").contains("unknown field `metric`"));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err("[metrics]\npublish_interval_seconds = \"60\"\n");
        assert!(e.contains("publish_interval_seconds"), "{e}");
    }

    #[test]
    fn foreign_namespace_is_rejected() {
        let e = err("[metrics]\nnamespace = \"CWAgent\"\n");
        assert!(e.contains("metrics.namespace") && e.contains("Tap/GPU"), "{e}");
    }

    #[test]
    fn intervals_are_checked() {
        assert!(err("[metrics]\nsample_interval_seconds = 0\n").contains("metrics.sample_interval_seconds"));
        assert!(err("[metrics]\npublish_interval_seconds = 45\n").contains("metrics.publish_interval_seconds"));
        let e = err("[metrics]\nsample_interval_seconds = 30\npublish_interval_seconds = 20\n");
        assert!(e.contains("shorter than sample_interval_seconds"), "{e}");
    }

    #[test]
    fn region_is_checked() {
        assert!(err("[aws]\nregion = \"us-east\"\n").contains("aws.region"));
        assert!(AgentConfig::parse("[aws]\nregion = \"us-gov-west-1\"\n", "x").is_ok());
    }

    #[test]
    fn spool_and_instance_id_are_checked() {
        assert!(err("[spool]\nmax_bytes = 10\n").contains("spool.max_bytes"));
        assert!(err("[spool]\ndir = \"spool\"\n").contains("spool.dir"));
        assert!(err("[aws]\ninstance_id = \"i 1\"\n").contains("aws.instance_id"));
        let c = AgentConfig::parse("[aws]\ninstance_id = \"i-0abc\"\n[spool]\ndir = \"/tmp/s\"\n", "x").expect("valid");
        assert_eq!(c.aws.instance_id.as_deref(), Some("i-0abc"));
        assert_eq!(c.spool.max_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn prometheus_address_is_checked() {
        assert!(err("[prometheus]\nlisten = \"localhost\"\n").contains("prometheus.listen"));
        let c = AgentConfig::parse("[prometheus]\nenabled = true\n", "x").expect("valid");
        assert_eq!(c.prometheus.listen, "127.0.0.1:9400");
    }

    #[test]
    fn health_spot_and_node_are_checked() {
        let c = AgentConfig::parse(
            "[health]\non_fatal = \"replace\"\nexpected_gpus = 8\npower_off_command = [\"/bin/true\"]\n[spot]\npoll_seconds = 2\n[node]\nruntime_dir = \"/tmp/tap\"\n",
            "x",
        )
        .expect("valid");
        assert_eq!((c.health.on_fatal, c.health.expected_gpus, c.spot.poll_seconds), (OnFatal::Replace, Some(8), 2));
        assert!(err("[health]\non_fatal = \"explode\"\n").contains("unknown variant `explode`"));
        assert!(err("[health]\nexpected_gpus = 0\n").contains("health.expected_gpus: 0 is not in 1..=16"));
        assert!(
            err("[health]\nkernel_log = \"kmsg\"\n").contains("health.kernel_log: \"kmsg\" must be an absolute path")
        );
        assert!(err("[health]\npower_off_command = []\n").contains("health.power_off_command: must name a program"));
        assert!(err("[spot]\npoll_seconds = 0\n").contains("spot.poll_seconds: 0 is not in 1..=60"));
        assert!(err("[spot]\nimds_endpoint = \"169.254.169.254\"\n").contains("spot.imds_endpoint"));
    }

    #[test]
    fn idle_scale_to_zero_is_off_unless_asked_and_checked() {
        let c = AgentConfig::parse("", "t").expect("empty");
        assert!(!c.idle.scale_to_zero);
        let c = AgentConfig::parse(
            "[idle]\nscale_to_zero = true\nminutes = 30\nbelow_percent = 3\n[node]\nfleet_id = \"fleet-0a1b2c3d-4e5f\"\n",
            "t",
        )
        .expect("valid");
        assert_eq!(
            (c.idle.scale_to_zero, c.idle.minutes, c.idle.below_percent, c.node.fleet_id.as_deref()),
            (true, 30, 3.0, Some("fleet-0a1b2c3d-4e5f"))
        );
        let err = |t: &str| AgentConfig::parse(t, "a.toml").expect_err(t).to_string();
        assert_eq!(err("[idle]\nminutes = 2\n"), "a.toml: idle.minutes: 2 is not in 5..=10080");
        assert_eq!(err("[idle]\nbelow_percent = 0\n"), "a.toml: idle.below_percent: 0 is not a percentage in (0, 100]");
        assert!(err("[idle]\nbelow_percent = 101.5\n").contains("idle.below_percent"));
        assert!(err("[idle]\ncheck_seconds = 0\n").contains("idle.check_seconds: 0 is not in 1..=3600"));
        assert!(err("[node]\nfleet_id = \"sfr-123\"\n").contains("node.fleet_id: \"sfr-123\" is not an EC2 Fleet id"));
        // One key for the node's fleet: the two it replaces say where it went.
        for old in ["[idle]\nfleet_id = \"fleet-0a1b2c3d-4e5f\"\n", "[jobs]\nfleet_id = \"fleet-0a1b2c3d-4e5f\"\n"] {
            assert!(err(old).contains("moved to [node] fleet_id"), "{}", err(old));
        }
        assert!(err("[node]\nruntime_dir = \"run\"\n").contains("node.runtime_dir"));
    }

    #[test]
    fn missing_file_is_named() {
        let e = AgentConfig::load(Path::new("/nonexistent/agent.toml")).expect_err("missing").to_string();
        assert!(e.starts_with("/nonexistent/agent.toml: cannot read"), "{e}");
    }

    /// The template user_data writes (`local.agent_config`), filled in the way Terraform
    /// would with the stack's defaults, is a valid configuration for this parser.
    #[test]
    fn stack_user_data_config_parses() {
        let template = stack_source::local_heredoc("agent_config");
        let values = [
            ("var.aws_region", "us-east-1"),
            ("local.metric_contract.namespace", NAMESPACE),
            ("var.environment", "dev"),
            ("var.agent_sample_interval_seconds", "1"),
            ("var.agent_publish_interval_seconds", "60"),
            ("var.high_resolution_metrics", "false"),
            ("local.log_group_name", "/tap/dev/training"),
            ("var.gpu_health_action", "replace"),
            ("var.scale_to_zero_after_idle_minutes > 0", "false"),
            ("max(var.scale_to_zero_after_idle_minutes, 10)", "10"),
            ("var.idle_gpu_utilization_percent", "5"),
            ("local.table_name", "tap-dev-experiments"),
        ];
        let mut text = template.clone();
        for (expr, value) in values {
            text = text.replace(&format!("${{{expr}}}"), value);
        }
        assert!(!text.contains("${"), "unhandled interpolation in local.agent_config:\n{text}");
        let config = AgentConfig::parse(&text, "local.agent_config").expect("the stack writes a valid config");
        assert_eq!(config.aws.region.as_deref(), Some("us-east-1"));
        assert_eq!(config.metrics.environment, "dev");
        assert_eq!(config.logs.group.as_deref(), Some("/tap/dev/training"));
        assert_eq!(config.health.on_fatal, OnFatal::Replace);
        assert!(config.jobs.controller, "every node contends for the job controller's lease");
        assert_eq!(config.jobs.table.as_deref(), Some("tap-dev-experiments"));
        assert_eq!(config.jobs.log_group.as_deref(), Some("/tap/dev/training"));
        assert!(!config.idle.scale_to_zero, "the idle rule is opt-in");
        assert_eq!((config.idle.minutes, config.idle.below_percent), (10, 5.0));
    }

    fn arb_config() -> impl Strategy<Value = AgentConfig> {
        (
            proptest::option::of(prop_oneof![Just("us-east-1"), Just("eu-west-2"), Just("ap-southeast-1")]),
            "[a-z][a-z0-9-]{0,15}",
            1u32..=10,
            proptest::sample::select(PUBLISH_INTERVALS.to_vec()),
            any::<bool>(),
            proptest::option::of("/[a-z]{1,10}/[a-z]{1,10}"),
        )
            .prop_map(|(region, environment, sample, publish, high_resolution, group)| AgentConfig {
                aws: AwsSection { region: region.map(str::to_owned), instance_id: None },
                metrics: MetricsSection {
                    namespace: NAMESPACE.to_owned(),
                    environment,
                    sample_interval_seconds: sample,
                    publish_interval_seconds: publish,
                    high_resolution,
                },
                logs: LogsSection { group },
                spool: SpoolSection::default(),
                prometheus: PrometheusSection::default(),
                health: HealthSection::default(),
                spot: SpotSection::default(),
                node: NodeSection::default(),
                idle: IdleSection::default(),
                jobs: JobsSection::default(),
            })
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,200}") {
            let _ = AgentConfig::parse(&text, "fuzz");
        }

        #[test]
        fn parser_never_panics_on_near_valid_toml(
            section in prop_oneof![Just("aws"), Just("metrics"), Just("logs"), Just("other")],
            key in "[a-z_]{1,30}",
            value in prop_oneof![Just("1".to_owned()), Just("true".to_owned()), "\"[^\"\\\\]{0,20}\"", Just("[1, 2]".to_owned())],
        ) {
            let _ = AgentConfig::parse(&format!("[{section}]\n{key} = {value}\n"), "fuzz");
        }

        #[test]
        fn valid_configs_round_trip(config in arb_config()) {
            let text = toml::to_string(&config).expect("serialises");
            prop_assert_eq!(AgentConfig::parse(&text, "roundtrip").expect("valid"), config);
        }
    }
}
