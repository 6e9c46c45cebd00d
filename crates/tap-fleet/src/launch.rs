//! `tap launch`: which nodes run a multi-node job, and the shell script each one gets through
//! SSM Run Command (`AWS-RunShellScript`). Pure: no I/O, unit-tested apart from AWS.
//!
//! Every node runs the same `tap run` under one shared run group, with torchrun's rendezvous
//! variables in its environment: `MASTER_ADDR`/`MASTER_PORT` (rank 0's private IP), `NNODES`,
//! `NODE_RANK`, and `TAP_RUN_GROUP`/`RDZV_ID` (the shared id). The command is the user's, so
//! `torchrun --nnodes=$NNODES --node-rank=$NODE_RANK --master-addr=$MASTER_ADDR
//! --master-port=$MASTER_PORT train.py` (or `--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT`)
//! works as on any cluster.

use std::fmt::Write as _;

use serde::Serialize;
use tap_core::command_env as env;

pub use tap_core::fleet::{HEARTBEAT_STALE_S, NodeInfo};

/// What one node is sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeCommand {
    pub instance_id: String,
    pub rank: usize,
    /// The `commands` parameter of AWS-RunShellScript.
    pub script: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub nodes: usize,
    pub experiment: String,
    /// Shared by every node's `tap run` (and torchrun's rendezvous id).
    pub group: String,
    pub master_port: u16,
    pub resume: bool,
    pub command: Vec<String>,
    /// The OS user the job runs as (SSM runs scripts as root).
    pub run_as: String,
    /// Which launch of the job this is (1, then one more per relaunch): each node's run
    /// records itself in the job's record under it (`TAP_JOB_ATTEMPT`).
    pub attempt: u32,
    /// Extra environment for the command (names checked by `JobSpec::problem`).
    pub env: Vec<(String, String)>,
    /// `--tag KEY=VALUE` for every node's `tap run`.
    pub tags: Vec<(String, String)>,
}

impl LaunchSpec {
    /// Attempt `attempt` of a managed job: attempts after the first resume from the latest
    /// checkpoint.
    pub fn for_job(job: &tap_core::jobs::JobRecord, attempt: u32) -> LaunchSpec {
        let s = &job.spec;
        LaunchSpec {
            nodes: s.nodes as usize,
            experiment: s.experiment.clone(),
            group: job.id.clone(),
            master_port: s.master_port,
            resume: s.resume || attempt > 1,
            command: s.command.clone(),
            run_as: s.user.clone(),
            attempt,
            env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// Each chosen node's command, in rank order: rank 0 (the first) is the rendezvous master.
pub fn commands(spec: &LaunchSpec, chosen: &[&NodeInfo]) -> Vec<NodeCommand> {
    let master = chosen.first().and_then(|n| n.private_ip.clone()).unwrap_or_default();
    chosen
        .iter()
        .enumerate()
        .map(|(rank, n)| NodeCommand { instance_id: n.instance_id.clone(), rank, script: script(spec, &master, rank) })
        .collect()
}

/// Where the stack's user_data writes tap's config on every node.
pub const NODE_TAP_CONFIG: &str = "/etc/tap/config.toml";

/// The shell script of one node.
pub fn script(spec: &LaunchSpec, master: &str, rank: usize) -> String {
    let mut tap = vec!["tap".to_owned(), "run".into(), "--experiment".into(), spec.experiment.clone()];
    if spec.resume {
        tap.push("--resume".into());
    }
    for (k, v) in &spec.tags {
        tap.extend(["--tag".to_owned(), format!("{k}={v}")]);
    }
    tap.push("--".into());
    tap.extend(spec.command.iter().cloned());
    let inner: Vec<String> = tap.iter().map(|a| node_arg(a)).collect();
    let mut s = String::from("set -eu\n");
    let values = [
        master.to_owned(),
        spec.master_port.to_string(),
        spec.nodes.to_string(),
        rank.to_string(),
        spec.group.clone(),
        spec.group.clone(),
        spec.attempt.to_string(),
    ];
    for (k, v) in env::NODE.iter().zip(values) {
        let _ = writeln!(s, "export {k}={}", shell_quote(&v));
    }
    let mut passed = String::new();
    for (k, v) in &spec.env {
        let _ = writeln!(s, "export {k}={}", shell_quote(v));
        let _ = write!(passed, " {k}=\"${k}\"");
    }
    // A login shell of the job's user (its PATH, its Python), with the stack's tap config that
    // the node's user_data wrote.
    let node: String = env::NODE.iter().map(|k| format!(" {k}=\"${k}\"")).collect();
    let _ = write!(
        s,
        "exec runuser -u {} -- env TAP_CONFIG={NODE_TAP_CONFIG}{node}{passed} bash -lc {}",
        shell_quote(&spec.run_as),
        shell_quote(&inner.join(" "))
    );
    s
}

/// The rendezvous variables, expanded on the node where an argument names them.
pub const NODE_VARS: [&str; 6] = env::RENDEZVOUS;

/// Quotes one argument of the user's command for the node's shell: literally, except that
/// `$NNODES`, `${NODE_RANK}`, … (the [`NODE_VARS`]) are expanded there. Nothing else is.
pub fn node_arg(arg: &str) -> String {
    let mut out = String::new();
    let mut literal = String::new();
    let mut rest = arg;
    'scan: while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        for v in NODE_VARS {
            let braced = format!("{{{v}}}");
            let len = if after.starts_with(&braced) {
                braced.len()
            } else if after.starts_with(v)
                && !after[v.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            {
                v.len()
            } else {
                continue;
            };
            literal.push_str(&rest[..i]);
            if !literal.is_empty() {
                out.push_str(&shell_quote(&literal));
                literal.clear();
            }
            out.push_str(&format!("\"${v}\""));
            rest = &after[len..];
            continue 'scan;
        }
        literal.push_str(&rest[..=i]);
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() || out.is_empty() {
        out.push_str(&shell_quote(&literal));
    }
    out
}

/// Quotes `s` for a POSIX shell: safe words stay as they are, anything else goes in single
/// quotes (a single quote itself becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: &str, ip: &str, launched: i64) -> NodeInfo {
        NodeInfo {
            instance_id: id.into(),
            instance_type: Some("p3.2xlarge".into()),
            availability_zone: Some("us-east-1a".into()),
            private_ip: Some(ip.into()),
            state: "running".into(),
            launch_time_ms: Some(launched),
            heartbeat_age_s: Some(30),
            unhealthy: Some(false),
            interrupting: None,
        }
    }

    fn spec(nodes: usize) -> LaunchSpec {
        LaunchSpec {
            nodes,
            experiment: "llm".into(),
            group: "20261127T030000Z-abc123".into(),
            master_port: 29500,
            resume: true,
            command: vec![
                "torchrun".into(),
                "--nnodes=$NNODES".into(),
                "--rdzv-endpoint=${MASTER_ADDR}:$MASTER_PORT".into(),
                "train.py".into(),
                "it's $HOME".into(),
            ],
            run_as: "ubuntu".into(),
            attempt: 1,
            env: vec![("HF_HOME".into(), "/data/hf cache".into())],
            tags: vec![("team".into(), "nlp $HOME".into())],
        }
    }

    #[test]
    fn rank_0_is_the_master_and_every_node_gets_the_rendezvous() {
        let (a, b) = (node("i-a", "10.0.0.1", 100), node("i-b", "10.0.0.2", 200));
        let plan = commands(&spec(2), &[&a, &b]);
        assert_eq!(plan.iter().map(|c| (c.instance_id.as_str(), c.rank)).collect::<Vec<_>>(), [("i-a", 0), ("i-b", 1)]);
        assert!(plan[1].script.contains("export MASTER_ADDR=10.0.0.1\n"), "{}", plan[1].script);
        assert!(plan[1].script.contains("export NODE_RANK=1\n") && plan[1].script.contains("export NNODES=2\n"));
    }

    /// The script really runs in a shell: the command's arguments arrive intact, the
    /// rendezvous variables are set, and `$NNODES` in an argument is expanded on the node.
    #[test]
    fn the_script_runs_in_sh_and_passes_arguments_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake_bin = dir.path().join("bin");
        std::fs::create_dir(&fake_bin).expect("bin");
        // Stand-ins for runuser (drop the user, run the rest), tap (print its arguments) and a
        // login bash.
        std::fs::write(fake_bin.join("runuser"), "#!/bin/sh\nshift 3\nexec \"$@\"\n").expect("runuser");
        // A login shell would reset PATH to the system's; this one keeps the stand-ins.
        std::fs::write(fake_bin.join("bash"), "#!/bin/sh\n[ \"$1\" = -lc ] && shift\nexec /bin/bash -c \"$1\"\n")
            .expect("bash");
        std::fs::write(fake_bin.join("tap"), "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>' \"$a\"; done; echo \" rank=$NODE_RANK of $NNODES at $MASTER_ADDR:$MASTER_PORT id=$RDZV_ID config=$TAP_CONFIG hf=$HF_HOME\"\n").expect("tap");
        for f in ["runuser", "tap", "bash"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(fake_bin.join(f), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let s = script(&spec(3), "10.0.0.1", 2);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&s)
            .env("PATH", format!("{}:/usr/bin:/bin", fake_bin.display()))
            .output()
            .expect("sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "<run><--experiment><llm><--resume><--tag><team=nlp $HOME><--><torchrun><--nnodes=3><--rdzv-endpoint=10.0.0.1:29500><train.py><it's $HOME> rank=2 of 3 at 10.0.0.1:29500 id=20261127T030000Z-abc123 config=/etc/tap/config.toml hf=/data/hf cache"
        );
    }

    #[test]
    fn node_args_expand_only_rendezvous_variables() {
        assert_eq!(node_arg("train.py"), "train.py");
        assert_eq!(node_arg(""), "''");
        assert_eq!(node_arg("--nnodes=$NNODES"), "--nnodes=\"$NNODES\"");
        assert_eq!(node_arg("$NODE_RANKX"), "'$NODE_RANKX'", "not a rendezvous variable");
        assert_eq!(node_arg("$(reboot)"), "'$(reboot)'");
        assert_eq!(node_arg("${RDZV_ID}"), "\"$RDZV_ID\"");
    }

    proptest! {
        #[test]
        fn node_arg_without_variables_is_literal(arg in "[^$\\x00]{0,30}") {
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf '%s' {}", node_arg(&arg))).output().expect("sh");
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), arg);
        }

        #[test]
        fn shell_quote_round_trips_through_sh(arg in "\\PC{0,40}") {
            prop_assume!(!arg.contains('\0'));
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf '%s' {}", shell_quote(&arg))).output().expect("sh");
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), arg);
        }
    }
}
