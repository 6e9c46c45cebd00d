//! `tap-agent bootstrap`: the node's first boot after user_data has fetched tap-agent. It reads
//! the stack's settings (tap_core::boot::BootSettings, `s3://` through the SDK), makes the GPU
//! driver work (releasing the DLAMI's open modules for Volta, one reboot at most, a failure
//! counted per image in the experiment table), installs and starts the CloudWatch agent,
//! writes tap-agent's config and installs its service, and installs `tap` configured for the
//! stack. Each step that fails is reported — console, journal (stdout), a line of
//! `/var/lib/tap/bootstrap-failed` — and the rest still run, so a node with a broken driver
//! still reports through its agent. The decisions are tap_core::boot's pure functions; this
//! module only observes and acts.
//!
//! A boot is one sequence of steps, most of them other programs (apt-get, nvidia-smi,
//! systemctl): it runs on this thread, and a current-thread runtime drives only the SDK's
//! calls (`block_on`). Downloads are tried [`boot::DOWNLOAD_ATTEMPTS`] times,
//! [`boot::DOWNLOAD_PAUSE_S`] apart; the pause is the system's `sleep`, as in the shell boot
//! this replaced (the sandbox boot test's clock is that command).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use tap_core::boot::{self, AfterInstall, BootFailure, BootSettings, DriverStep, Source};

/// Where the boot reads and writes on a node.
pub struct Layout {
    pub state: PathBuf,
    pub etc: PathBuf,
    pub bin: PathBuf,
    pub units: PathBuf,
    pub console: PathBuf,
}

impl Layout {
    pub fn node() -> Layout {
        Layout {
            state: "/var/lib/tap".into(),
            etc: "/etc/tap".into(),
            bin: "/usr/local/bin".into(),
            units: "/etc/systemd/system".into(),
            console: "/dev/console".into(),
        }
    }

    fn failed_file(&self) -> PathBuf {
        self.state.join("bootstrap-failed")
    }

    fn rebooted_marker(&self) -> PathBuf {
        self.state.join("driver-rebooted")
    }
}

/// The unit that runs the boot once more after the driver's reboot.
const RERUN_UNIT: &str = "tap-bootstrap.service";

/// The boot of one node.
pub struct Boot {
    pub layout: Layout,
    /// Where the settings came from, for the rerun after a reboot.
    pub settings_source: String,
    pub region: String,
    failures: Vec<BootFailure>,
    runtime: tokio::runtime::Runtime,
    sdk: aws_config::SdkConfig,
}

/// How the boot ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every step done.
    Done,
    /// The node reboots for its driver; the boot runs again after it.
    Rebooting,
    /// Some steps failed (each reported).
    Failed(usize),
}

impl Boot {
    pub fn new(layout: Layout, settings_source: &str, region: &str) -> anyhow::Result<Boot> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
        let sdk = runtime.block_on(crate::cloudwatch::sdk_config(region));
        Ok(Boot {
            layout,
            settings_source: settings_source.to_owned(),
            region: region.to_owned(),
            failures: Vec::new(),
            runtime,
            sdk,
        })
    }

    /// Says a failure everywhere it must be seen, and remembers it for the exit status.
    fn fail(&mut self, failure: BootFailure) {
        let line = failure.to_string();
        println!("TAP BOOTSTRAP FAILED: {line}");
        if let Ok(mut console) = std::fs::OpenOptions::new().append(true).open(&self.layout.console) {
            use std::io::Write;
            let _ = writeln!(console, "TAP BOOTSTRAP FAILED: {line}");
        }
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.failed_file())
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            println!("tap-agent bootstrap: cannot write {}: {e}", self.layout.failed_file().display());
        }
        self.failures.push(failure);
    }

    pub fn run(mut self) -> Ended {
        let l = &self.layout;
        for dir in [&l.state, &l.etc] {
            if let Err(e) = std::fs::create_dir_all(dir) {
                println!("tap-agent bootstrap: cannot create {}: {e}", dir.display());
            }
        }
        let _ = std::fs::remove_file(l.failed_file());
        let settings = match self.settings() {
            Ok(s) => s,
            Err(why) => {
                self.fail(BootFailure::Settings(why));
                return Ended::Failed(self.failures.len());
            }
        };
        let hold = match self.driver(&settings) {
            Some(hold) => hold,
            None => return Ended::Rebooting,
        };
        self.cloudwatch_agent(&settings);
        self.agent_service(&settings, hold);
        self.tap(&settings);
        match self.failures.len() {
            0 => Ended::Done,
            n => Ended::Failed(n),
        }
    }

    /// The settings document, from S3 (retried like every download) or a file.
    fn settings(&self) -> Result<BootSettings, String> {
        let bytes = match Source::parse(&self.settings_source) {
            Some(Source::S3 { bucket, key }) => {
                self.s3_object(&bucket, &key).map_err(|e| format!("{}: {e:#}", self.settings_source))?
            }
            Some(Source::Url(u)) => return Err(format!("{u}: settings come from s3:// or a file")),
            None => std::fs::read(&self.settings_source).map_err(|e| format!("{}: {e}", self.settings_source))?,
        };
        BootSettings::parse(&bytes).map_err(|e| format!("{}: {}", self.settings_source, tap_core::text::chain(&e)))
    }

    /// Makes the driver work. `Some(hold)`: go on (hold: the node stays up drained instead of
    /// powering off into another replacement); `None`: the node is rebooting for its driver.
    fn driver(&mut self, s: &BootSettings) -> Option<bool> {
        let rebooted = self.layout.rebooted_marker();
        let mut hold = false;
        match boot::driver_step(gpu_works(), rebooted.exists()) {
            DriverStep::Fine => {}
            DriverStep::Install => {
                let installed = install_driver(&s.volta_driver_package);
                let works = installed && {
                    // The open modules may still be loaded: swap them for the new one.
                    let _ = run("rmmod", &["nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"]);
                    let _ = run("modprobe", &["nvidia"]);
                    gpu_works()
                };
                let fine = match boot::after_install(installed, works) {
                    AfterInstall::Works => true,
                    AfterInstall::RebootOnce => match self.reboot_once() {
                        Ok(()) => return None,
                        Err(e) => {
                            println!("tap-agent bootstrap: no reboot for the driver: {e:#}");
                            false
                        }
                    },
                    AfterInstall::Report => false,
                };
                if !fine {
                    hold = self.count_driver_failure(s);
                }
            }
            DriverStep::Report => hold = self.count_driver_failure(s),
        }
        if rebooted.exists() && !run("systemctl", &["disable", RERUN_UNIT]) {
            println!("tap-agent bootstrap: could not disable {RERUN_UNIT}");
        }
        Some(hold)
    }

    /// Counts this image's driver failure in the experiment table and reports it; whether
    /// the node is held ([`boot::hold_node`]).
    fn count_driver_failure(&mut self, s: &BootSettings) -> bool {
        let dynamo = aws_sdk_dynamodb::Client::new(&self.sdk);
        let counted = self.runtime.block_on(
            dynamo
                .update_item()
                .table_name(&s.table)
                .key("experiment_id", AttributeValue::S(tap_core::runs::NODE_PARTITION.into()))
                .key("run_id", AttributeValue::S(s.driver_counter()))
                .update_expression("ADD failures :one")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .return_values(ReturnValue::UpdatedNew)
                .send(),
        );
        let failure = match counted {
            Ok(out) => out.attributes().and_then(|a| a.get("failures")).and_then(|v| v.as_n().ok()?.parse().ok()),
            Err(e) => {
                println!(
                    "tap-agent bootstrap: the driver failure was not counted ({})",
                    tap_core::text::chain(&tap_aws::sdk_error("DynamoDB UpdateItem", e))
                );
                None
            }
        };
        self.fail(BootFailure::Driver { failure, ami_id: s.ami_id.clone(), cap: s.max_driver_failures });
        boot::hold_node(failure, s.max_driver_failures)
    }

    /// Leaves a unit that runs this boot again after the reboot, then reboots.
    fn reboot_once(&self) -> anyhow::Result<()> {
        let script = self.layout.state.join("bootstrap.sh");
        let agent = self.layout.bin.join("tap-agent");
        let text = format!(
            "#!/bin/sh\n# tap node boot, once more after the driver's reboot (written by tap-agent bootstrap).\nexec {} bootstrap --settings '{}' --region '{}'\n",
            agent.display(),
            self.settings_source,
            self.region
        );
        write_mode(&script, text.as_bytes(), 0o700)?;
        let unit = format!(
            "[Unit]\nAfter=network-online.target\nWants=network-online.target\n[Service]\nType=oneshot\nExecStart={}\n[Install]\nWantedBy=multi-user.target\n",
            script.display()
        );
        write_mode(&self.layout.units.join(RERUN_UNIT), unit.as_bytes(), 0o644)?;
        anyhow::ensure!(run("systemctl", &["enable", RERUN_UNIT]), "systemctl enable {RERUN_UNIT} failed");
        std::fs::write(self.layout.rebooted_marker(), b"").context("marking the reboot")?;
        println!("tap-agent bootstrap: the driver needs a reboot; the boot goes on after it");
        anyhow::ensure!(run("reboot", &[]), "reboot failed");
        Ok(())
    }

    fn cloudwatch_agent(&mut self, s: &BootSettings) {
        let deb = Path::new("/tmp/cwa.deb");
        let installed = retried(&s.cloudwatch_agent_url, || curl(&s.cloudwatch_agent_url, deb))
            && apt(&["install", "-y", &deb.display().to_string()]);
        if !installed {
            self.fail(BootFailure::CloudWatchInstall);
        }
        let config = self.layout.etc.join("cwagent.json");
        let started = std::fs::write(&config, &s.cloudwatch_agent_config).is_ok()
            && run(
                "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl",
                &["-a", "fetch-config", "-m", "ec2", "-s", "-c", &format!("file:{}", config.display())],
            );
        if !started {
            self.fail(BootFailure::CloudWatchStart);
        }
    }

    /// Writes tap-agent's config (checked first) and installs and starts its service.
    fn agent_service(&mut self, s: &BootSettings, hold: bool) {
        let config = self.layout.etc.join("agent.toml");
        let done = boot::agent_config(&s.agent_config, hold)
            .map_err(anyhow::Error::from)
            .and_then(|text| {
                tap_core::agent_config::AgentConfig::parse(&text, "the stack's agent config")?;
                tap_core::fsutil::write_atomic(&config, text.as_bytes())
                    .with_context(|| format!("writing {}", config.display()))
            })
            .and_then(|()| {
                crate::install::install(&crate::install::InstallOptions {
                    unit_dir: self.layout.units.clone(),
                    binary: self.layout.bin.join("tap-agent"),
                    config: config.clone(),
                    start: true,
                })
            });
        if let Err(e) = done {
            println!("tap-agent bootstrap: tap-agent service: {e:#}");
            self.fail(BootFailure::AgentService);
        }
    }

    /// Installs `tap` and configures it for the stack (`tap launch` runs `tap run` here).
    fn tap(&mut self, s: &BootSettings) {
        let fetched = match Source::parse(&s.cli_source) {
            Some(Source::S3 { bucket, key }) => self
                .s3_object(&bucket, &key)
                .inspect_err(|e| println!("tap-agent bootstrap: {}: {e:#}", s.cli_source))
                .ok(),
            Some(Source::Url(u)) => {
                let tmp = Path::new("/tmp/tap");
                retried(&u, || curl(&u, tmp)).then(|| std::fs::read(tmp).ok()).flatten()
            }
            None => None,
        };
        let tap = self.layout.bin.join("tap");
        if fetched.is_none_or(|b| write_mode(&tap, &b, 0o755).is_err()) {
            self.fail(BootFailure::TapDownload);
        }
        let imported = self.layout.etc.join("tap_config.json");
        let tap_config = self.layout.etc.join("config.toml");
        let configured = std::fs::write(&imported, s.tap_config.to_string()).is_ok()
            && run(
                &tap.display().to_string(),
                &["--config", &tap_config.display().to_string(), "stack", "import", &imported.display().to_string()],
            )
            && set_mode(&tap_config, 0o644);
        if !configured {
            self.fail(BootFailure::TapConfig);
        }
    }

    /// An object's bytes, retried like every download; the last error when none worked.
    fn s3_object(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk).force_path_style(tap_aws::s3_path_style()).build(),
        );
        let mut last = Err(anyhow::anyhow!("s3://{bucket}/{key}: not fetched"));
        retried(&format!("s3://{bucket}/{key}"), || {
            last = self.runtime.block_on(s3_bytes(&s3, bucket, key));
            last.is_ok()
        });
        last
    }
}

/// `nvidia-smi -L` lists the GPUs.
fn gpu_works() -> bool {
    run("nvidia-smi", &["-L"])
}

/// Releases NVIDIA's held packages, purges the open modules and installs `package`.
fn install_driver(package: &str) -> bool {
    let holds = output("apt-mark", &["showhold"]).map(|o| boot::nvidia_holds(&o)).unwrap_or_default();
    if !holds.is_empty() {
        let mut args = vec!["unhold"];
        args.extend(holds.iter().map(String::as_str));
        let _ = run("apt-mark", &args);
    }
    let open = output("dpkg-query", &["-W", "-f", "${db:Status-Abbrev} ${Package}\\n", "*nvidia*open*"])
        .map(|o| boot::installed_packages(&o))
        .unwrap_or_default();
    if !open.is_empty() {
        let mut args = vec!["purge", "-y"];
        args.extend(open.iter().map(String::as_str));
        let _ = apt(&args);
    }
    apt(&["update"]) && apt(&["install", "-y", package])
}

/// apt-get, waiting for the dpkg lock ([`boot::DPKG_LOCK_TIMEOUT_S`]) and retrying downloads.
fn apt(args: &[&str]) -> bool {
    let lock = format!("DPkg::Lock::Timeout={}", boot::DPKG_LOCK_TIMEOUT_S);
    let mut all = vec!["-q", "-o", &lock, "-o", "Acquire::Retries=5"];
    all.extend_from_slice(args);
    Command::new("apt-get").args(&all).env("DEBIAN_FRONTEND", "noninteractive").status().is_ok_and(|s| s.success())
}

fn curl(url: &str, to: &Path) -> bool {
    run("curl", &["-fsS", "--connect-timeout", "10", "-o", &to.display().to_string(), url])
}

/// Runs a command with the boot's stdout and stderr (the journal); whether it succeeded.
fn run(program: &str, args: &[&str]) -> bool {
    match Command::new(program).args(args).stdin(Stdio::null()).status() {
        Ok(s) => s.success(),
        Err(e) => {
            println!("tap-agent bootstrap: cannot run {program}: {e}");
            false
        }
    }
}

/// A command's stdout, when it succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(program).args(args).stdin(Stdio::null()).stderr(Stdio::inherit()).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tap_core::fsutil::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    anyhow::ensure!(set_mode(path, mode), "chmod {}", path.display());
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).is_ok()
}

/// Pauses between download attempts (see the module's note on `sleep`).
fn pause() {
    let _ = Command::new("sleep").arg(boot::DOWNLOAD_PAUSE_S.to_string()).status();
}

/// Tries `attempt` up to [`boot::DOWNLOAD_ATTEMPTS`] times, [`pause`] apart; whether one worked.
fn retried(what: &str, mut attempt: impl FnMut() -> bool) -> bool {
    for n in 1..=boot::DOWNLOAD_ATTEMPTS {
        if attempt() {
            return true;
        }
        if n == 1 {
            println!("tap-agent bootstrap: {what} failed; trying again every {} s", boot::DOWNLOAD_PAUSE_S);
        }
        if n < boot::DOWNLOAD_ATTEMPTS {
            pause();
        }
    }
    false
}

async fn s3_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| tap_aws::sdk_error(format!("S3 GetObject s3://{bucket}/{key}"), e))?;
    let body = out.body.collect().await.with_context(|| format!("reading s3://{bucket}/{key}"))?;
    Ok(body.into_bytes().to_vec())
}
