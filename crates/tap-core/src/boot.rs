//! The node's boot, as data and decisions: what the stack tells a new node (the settings
//! document Terraform renders, `local.node_boot` in infra/tap-stack.tf, stored beside the
//! binaries), and the pure decisions of `tap-agent bootstrap` over what it observes. The
//! user_data only fetches tap-agent and runs it; everything else lives here and in
//! tap-agent's `bootstrap` module, typed and tested.

use serde::{Deserialize, Serialize};

/// The settings document's format; the stack writes it, `tap-agent bootstrap` refuses others.
pub const BOOT_SETTINGS_VERSION: u32 = 1;

/// Where the stack stores the settings document, in its artifacts bucket.
pub const BOOT_SETTINGS_KEY: &str = "tap/node/boot.json";

/// Downloads at boot are tried this many times, [`DOWNLOAD_PAUSE_S`] apart: ten minutes, for
/// the network of a new stack (NAT, endpoints, routes) to settle.
pub const DOWNLOAD_ATTEMPTS: u32 = 60;
pub const DOWNLOAD_PAUSE_S: u64 = 10;

/// How long apt waits for the dpkg lock (unattended-upgrades holds it at first boot).
pub const DPKG_LOCK_TIMEOUT_S: u32 = 600;

/// What the stack tells a new node (infra/tap-stack.tf `local.node_boot`; a tap-core test
/// holds the two to the same keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSettings {
    pub version: u32,
    pub region: String,
    /// The experiment table: the boot counts this AMI's driver failures there.
    pub table: String,
    /// The image the node runs (driver failures are counted per image).
    pub ami_id: String,
    /// Driver failures of one image that end in a replacement; past them a node is held.
    pub max_driver_failures: u32,
    /// Installed when `nvidia-smi` fails (Volta needs the proprietary driver).
    pub volta_driver_package: String,
    /// The CloudWatch agent's package (the region's own bucket).
    pub cloudwatch_agent_url: String,
    /// The CloudWatch agent's configuration (JSON text).
    pub cloudwatch_agent_config: String,
    /// tap-agent's own configuration (TOML text, tap_core::agent_config's format).
    pub agent_config: String,
    /// Where `tap` comes from: `s3://bucket/key` or an https URL.
    pub cli_source: String,
    /// The stack as `tap` on the node sees it (`tap stack import` reads it).
    pub tap_config: serde_json::Value,
}

/// What is wrong with a settings document.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("not the stack's boot settings")]
    Malformed(#[source] serde_json::Error),
    #[error(
        "boot settings version {0} (this tap-agent reads version {BOOT_SETTINGS_VERSION}; the stack and tap-agent differ)"
    )]
    Version(u32),
    #[error("{0} is empty")]
    Empty(&'static str),
}

impl BootSettings {
    pub fn parse(bytes: &[u8]) -> Result<BootSettings, SettingsError> {
        let s: BootSettings = serde_json::from_slice(bytes).map_err(SettingsError::Malformed)?;
        if s.version != BOOT_SETTINGS_VERSION {
            return Err(SettingsError::Version(s.version));
        }
        for (name, value) in [
            ("region", &s.region),
            ("table", &s.table),
            ("ami_id", &s.ami_id),
            ("volta_driver_package", &s.volta_driver_package),
            ("cloudwatch_agent_url", &s.cloudwatch_agent_url),
            ("agent_config", &s.agent_config),
            ("cli_source", &s.cli_source),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::Empty(name));
            }
        }
        Ok(s)
    }

    /// The driver-failure counter's sort key in [`crate::runs::NODE_PARTITION`].
    pub fn driver_counter(&self) -> String {
        format!("driver-failures/{}", self.ami_id)
    }
}

/// Where something comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    S3 { bucket: String, key: String },
    Url(String),
}

impl Source {
    /// `s3://bucket/key`, or an http(s) URL.
    pub fn parse(text: &str) -> Option<Source> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/')?;
            return (!bucket.is_empty() && !key.is_empty())
                .then(|| Source::S3 { bucket: bucket.to_owned(), key: key.to_owned() });
        }
        (text.starts_with("https://") || text.starts_with("http://")).then(|| Source::Url(text.to_owned()))
    }
}

/// One thing the boot could not do: each is reported on the console, in the journal and as a
/// line of `/var/lib/tap/bootstrap-failed`, and makes the boot exit non-zero. The words are
/// the ones the shell boot used (scripts and people grep for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFailure {
    Settings(String),
    Driver { failure: Option<u64>, ami_id: String, cap: u32 },
    CloudWatchInstall,
    CloudWatchStart,
    AgentService,
    TapDownload,
    TapConfig,
}

impl std::fmt::Display for BootFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootFailure::Settings(why) => write!(f, "boot settings: {why}"),
            BootFailure::Driver { failure, ami_id, cap } => {
                let n = failure.map_or_else(|| "?".to_owned(), |n| n.to_string());
                write!(f, "no working NVIDIA driver (failure {n} of {ami_id}; the first {cap} are replaced)")
            }
            BootFailure::CloudWatchInstall => f.write_str("CloudWatch agent install"),
            BootFailure::CloudWatchStart => f.write_str("CloudWatch agent start"),
            BootFailure::AgentService => f.write_str("tap-agent service"),
            BootFailure::TapDownload => f.write_str("tap download"),
            BootFailure::TapConfig => f.write_str("tap config"),
        }
    }
}

/// Whether a node whose image has failed `failure` times (None: the count could not be
/// kept) is held — drained and reported, not powered off — instead of replaced: past the
/// cap another replacement would only boot the same broken image again, paying for it.
pub fn hold_node(failure: Option<u64>, cap: u32) -> bool {
    failure.is_none_or(|n| n > u64::from(cap))
}

/// What to do about the driver, from what the node shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverStep {
    /// `nvidia-smi` works: nothing to do.
    Fine,
    /// Release the open modules and install the proprietary driver.
    Install,
    /// It was installed before the reboot and still does not work: count and report it.
    Report,
}

pub fn driver_step(works: bool, rebooted_for_it: bool) -> DriverStep {
    match (works, rebooted_for_it) {
        (true, _) => DriverStep::Fine,
        (false, false) => DriverStep::Install,
        (false, true) => DriverStep::Report,
    }
}

/// After the install and a module reload: done, reboot once (the module needs it), or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterInstall {
    Works,
    RebootOnce,
    Report,
}

pub fn after_install(installed: bool, works_after_reload: bool) -> AfterInstall {
    match (installed, works_after_reload) {
        (false, _) => AfterInstall::Report,
        (true, true) => AfterInstall::Works,
        (true, false) => AfterInstall::RebootOnce,
    }
}

/// Why the stack's agent config could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("the stack's agent config is not TOML")]
    Parse(#[from] toml::de::Error),
    #[error("the held agent config could not be written")]
    Write(#[from] toml::ser::Error),
}

/// tap-agent's configuration as the stack wrote it, with `health.on_fatal = "drain"` when the
/// node is held ([`hold_node`]); checked by tap_core::agent_config before it is used. A config
/// that cannot be held is an error, never the unheld config (which would power the node off
/// into another replacement).
pub fn agent_config(settings_toml: &str, hold: bool) -> Result<String, HoldError> {
    if !hold {
        return Ok(settings_toml.to_owned());
    }
    let mut table: toml::Table = settings_toml.parse()?;
    let health = table.entry("health").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(h) = health.as_table_mut() {
        h.insert("on_fatal".into(), toml::Value::String("drain".into()));
    }
    Ok(toml::to_string(&table)?)
}

/// The open-module packages to purge, from `dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n'`:
/// the installed (`ii`) ones.
pub fn installed_packages(dpkg_query: &str) -> Vec<String> {
    dpkg_query
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("ii")).then(|| w.next()).flatten().map(str::to_owned)
        })
        .collect()
}

/// The held packages of NVIDIA's to release, from `apt-mark showhold`.
pub fn nvidia_holds(showhold: &str) -> Vec<String> {
    showhold.lines().map(str::trim).filter(|p| p.to_ascii_lowercase().contains("nvidia")).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "version": 1,
            "region": "us-east-1",
            "table": "tap-dev-experiments",
            "ami_id": "ami-0123",
            "max_driver_failures": 3,
            "volta_driver_package": "nvidia-driver-580-server",
            "cloudwatch_agent_url": "https://amazoncloudwatch-agent-us-east-1.s3.us-east-1.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb",
            "cloudwatch_agent_config": "{}",
            "agent_config": "[aws]\nregion = \"us-east-1\"\n[health]\non_fatal = \"replace\"\n",
            "cli_source": "s3://b/tap/bin/tap",
            "tap_config": {"version": 1}
        })
    }

    /// The stack's `local.node_boot` and [`BootSettings`] have the same keys, and the stack
    /// stores it where the user_data tells tap-agent to read it.
    #[test]
    fn the_stacks_boot_settings_are_this_struct() {
        use crate::stack_source;
        let stack = stack_source::local("node_boot");
        let keys: std::collections::BTreeSet<String> =
            stack.as_object().expect("local.node_boot is an object").keys().cloned().collect();
        let ours: std::collections::BTreeSet<String> = sample().as_object().expect("object").keys().cloned().collect();
        assert_eq!(keys, ours, "local.node_boot and BootSettings differ");
        assert_eq!(stack.as_object().and_then(|o| o.get("version")), Some(&hcl::Value::from(BOOT_SETTINGS_VERSION)));
        assert_eq!(stack_source::local("node_boot_key"), hcl::Value::from(BOOT_SETTINGS_KEY));
        let user_data = stack_source::local_heredoc("user_data");
        assert!(
            user_data.contains("bootstrap --settings 's3://${local.buckets.model_artifacts}/${local.node_boot_key}'")
        );
        assert!(user_data.len() < 2048, "user_data is {} bytes before rendering", user_data.len());
    }

    #[test]
    fn settings_parse_and_say_what_is_wrong() {
        let s = BootSettings::parse(sample().to_string().as_bytes()).expect("valid");
        assert_eq!(s.driver_counter(), "driver-failures/ami-0123");
        let mut v = sample();
        v["version"] = 2.into();
        let e = BootSettings::parse(v.to_string().as_bytes()).expect_err("version");
        assert!(e.to_string().contains("version 2"), "{e}");
        let mut v = sample();
        v["table"] = "".into();
        assert!(matches!(BootSettings::parse(v.to_string().as_bytes()), Err(SettingsError::Empty("table"))));
        let mut v = sample();
        v["surprise"] = 1.into();
        assert!(matches!(BootSettings::parse(v.to_string().as_bytes()), Err(SettingsError::Malformed(_))));
        assert!(matches!(BootSettings::parse(b"\xff"), Err(SettingsError::Malformed(_))));
    }

    #[test]
    fn sources_are_s3_or_urls() {
        assert_eq!(
            Source::parse("s3://b/tap/bin/tap"),
            Some(Source::S3 { bucket: "b".into(), key: "tap/bin/tap".into() })
        );
        assert_eq!(Source::parse("https://x/tap"), Some(Source::Url("https://x/tap".into())));
        for bad in ["s3://b", "s3:///k", "ftp://x", "/tmp/tap", ""] {
            assert_eq!(Source::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn failures_use_the_words_the_shell_boot_used() {
        let d = BootFailure::Driver { failure: Some(4), ami_id: "ami-0123".into(), cap: 3 };
        assert_eq!(d.to_string(), "no working NVIDIA driver (failure 4 of ami-0123; the first 3 are replaced)");
        let unknown = BootFailure::Driver { failure: None, ami_id: "ami-0123".into(), cap: 3 };
        assert!(unknown.to_string().contains("failure ? of ami-0123"));
        assert_eq!(BootFailure::TapDownload.to_string(), "tap download");
    }

    #[test]
    fn a_node_is_held_past_the_cap_or_when_the_count_is_unknown() {
        assert!(!hold_node(Some(1), 3) && !hold_node(Some(3), 3));
        assert!(hold_node(Some(4), 3) && hold_node(None, 3));
    }

    #[test]
    fn driver_decisions() {
        assert_eq!(driver_step(true, false), DriverStep::Fine);
        assert_eq!(driver_step(true, true), DriverStep::Fine);
        assert_eq!(driver_step(false, false), DriverStep::Install);
        assert_eq!(driver_step(false, true), DriverStep::Report, "never a second reboot");
        assert_eq!(after_install(false, false), AfterInstall::Report);
        assert_eq!(after_install(true, true), AfterInstall::Works);
        assert_eq!(after_install(true, false), AfterInstall::RebootOnce);
    }

    #[test]
    fn a_held_node_drains_instead_of_powering_off() {
        let toml = "[aws]\nregion = \"us-east-1\"\n\n[health]\non_fatal = \"replace\"\n";
        assert_eq!(agent_config(toml, false).expect("as is"), toml);
        let held = agent_config(toml, true).expect("held");
        assert!(held.contains("on_fatal = \"drain\"") && !held.contains("replace"), "{held}");
        assert!(held.contains("region = \"us-east-1\""), "{held}");
        let none = agent_config("[aws]\nregion = \"x\"\n", true).expect("no health section");
        assert!(none.contains("[health]") && none.contains("on_fatal = \"drain\""), "{none}");
        assert!(agent_config("[aws", true).is_err());
    }

    #[test]
    fn package_lists_from_dpkg_and_apt_mark() {
        let q = "ii  nvidia-driver-570-open\nun  nvidia-open-removed-long-ago\nii  nvidia-dkms-570-open\n";
        assert_eq!(installed_packages(q), ["nvidia-driver-570-open", "nvidia-dkms-570-open"]);
        assert_eq!(
            nvidia_holds("linux-image-aws\nnvidia-driver-570-open\nlinux-modules-nvidia-570-open-aws\n"),
            ["nvidia-driver-570-open", "linux-modules-nvidia-570-open-aws"]
        );
    }
}
