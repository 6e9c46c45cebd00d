//! `tap-agent install`: writes the systemd unit and starts the service.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use tap_core::agent_config::AgentConfig;

pub const UNIT_NAME: &str = "tap-agent.service";

/// The unit. Hardened, but the agent keeps what it needs: /dev/nvidia* (NVML), the kernel
/// log (XID events), /var/lib/tap (spool, state) and the network.
pub fn unit_text(binary: &Path, config: &Path) -> String {
    format!(
        "\
[Unit]
Description=tap-agent: GPU telemetry, GPU health and spot interruption handling
Documentation=https://github.com/tap-ml/tap
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={binary} --config {config} run
Restart=always
RestartSec=5
# SIGTERM makes the agent publish (or spool) what it sampled before it exits.
TimeoutStopSec=30
StateDirectory=tap
# /run/tap: where the agent and `tap run` meet (notice.json, drain, runs/); kept across agent
# restarts so a notice or a registration is never lost, emptied at boot.
RuntimeDirectory=tap
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
Environment=TAP_AGENT_LOG=info
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/tap /run/tap
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryMax=128M
CPUQuota=20%

[Install]
WantedBy=multi-user.target
",
        binary = binary.display(),
        config = config.display(),
    )
}

pub struct InstallOptions {
    pub unit_dir: PathBuf,
    pub binary: PathBuf,
    pub config: PathBuf,
    pub start: bool,
}

/// Validates the config (a service that cannot start is not installed), writes the unit
/// atomically, then `systemctl daemon-reload` and `enable --now`.
pub fn install(o: &InstallOptions) -> anyhow::Result<PathBuf> {
    AgentConfig::load(&o.config)?;
    let path = o.unit_dir.join(UNIT_NAME);
    tap_core::fsutil::write_atomic(&path, unit_text(&o.binary, &o.config).as_bytes())
        .with_context(|| format!("installing {}", path.display()))?;
    if o.start {
        for args in [&["daemon-reload"][..], &["enable", "--now", UNIT_NAME]] {
            let status = Command::new("systemctl").args(args).status().context("running systemctl")?;
            if !status.success() {
                bail!("systemctl {} failed ({status})", args.join(" "));
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../packaging/tap-agent.service");

    #[test]
    fn shipped_unit_is_the_installed_one() {
        assert_eq!(
            SHIPPED,
            unit_text(Path::new("/usr/local/bin/tap-agent"), Path::new("/etc/tap/agent.toml")),
            "packaging/tap-agent.service drifted from install.rs"
        );
    }

    #[test]
    fn unit_restarts_and_keeps_gpu_access() {
        let u = unit_text(Path::new("/b"), Path::new("/c"));
        assert!(u.contains("ExecStart=/b --config /c run\n"));
        assert!(u.contains("Restart=always"));
        assert!(!u.contains("PrivateDevices=yes"), "NVML needs /dev/nvidia*");
        assert!(!u.contains("ProtectKernelLogs=yes"), "XID events come from the kernel log");
    }

    #[test]
    fn refuses_an_invalid_config_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "[metrics]\nbogus = 1\n").expect("write");
        let o = InstallOptions { unit_dir: dir.path().into(), binary: "/b".into(), config, start: false };
        let e = install(&o).expect_err("rejected").to_string();
        assert!(e.contains("bogus"), "{e}");
        assert!(!dir.path().join(UNIT_NAME).exists());
    }

    #[test]
    fn writes_the_unit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "").expect("write");
        let o = InstallOptions {
            unit_dir: dir.path().into(),
            binary: "/usr/local/bin/tap-agent".into(),
            config,
            start: false,
        };
        let path = install(&o).expect("installs");
        assert!(std::fs::read_to_string(path).expect("read").contains("--config"));
    }
}
