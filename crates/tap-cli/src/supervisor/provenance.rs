//! What a run ran: the working directory's git state, tap's version, the command's Python and
//! its installed packages, and the EC2 node. Each probe is a bounded child process or IMDS
//! read on the async runtime; a probe that fails or times out leaves its part out (a run is
//! never refused for its provenance).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tap_core::runs::{GitState, NodeIdentity, Provenance, PythonEnv};

/// How long one probe (a git or python child, an IMDS read) may take.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// The packages list as the probe prints it: the Python version, then one `name==version` per
/// installed distribution (importlib.metadata, Python ≥ 3.8: what `pip freeze` reads).
const PYTHON_PROBE: &str = "import sys\nimport importlib.metadata as m\nprint(sys.version.split()[0])\nprint(sys.executable)\nfor d in m.distributions():\n    n = d.metadata['Name']\n    if n: print(f'{n.lower()}=={d.version}')\n";

/// Probes what `command` run in `cwd` is, on this node.
pub async fn collect(command: &[String], cwd: &Path, node: Option<NodeIdentity>) -> Provenance {
    let (git, python) = tokio::join!(git_state(cwd), python_env(command, cwd));
    Provenance { tap_version: env!("CARGO_PKG_VERSION").to_owned(), git, python, node }
}

/// Runs `program args` in `cwd`: its stdout when it exits 0 within [`PROBE_LIMIT`].
async fn output(program: &Path, args: &[&str], cwd: &Path) -> Option<String> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PROBE_LIMIT, child).await.ok()?.ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn git_state(cwd: &Path) -> Option<GitState> {
    let git = Path::new("git");
    let commit = output(git, &["rev-parse", "--verify", "HEAD"], cwd).await?.trim().to_owned();
    let branch = output(git, &["symbolic-ref", "--quiet", "--short", "HEAD"], cwd).await.map(|b| b.trim().to_owned());
    // Tracked files only: build outputs and datasets beside the code are not "the code".
    let status = output(git, &["status", "--porcelain", "--untracked-files=no"], cwd).await?;
    Some(GitState { commit, branch: branch.filter(|b| !b.is_empty()), dirty: !status.trim().is_empty() })
}

/// The interpreter a command runs: `python3 train.py` runs python3; `torchrun …` (and any
/// script) runs what its `#!` line names when that is a Python.
pub fn interpreter(command: &[String], cwd: &Path) -> Option<PathBuf> {
    let program = command.first()?;
    let path = resolve(program, cwd)?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    if name.starts_with("python") {
        return Some(path);
    }
    let head = std::fs::read(&path).ok()?;
    let first = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(first).ok()?.strip_prefix("#!")?.trim();
    let mut words = line.split_whitespace();
    let exe = words.next()?;
    let exe = if exe.ends_with("/env") { words.next()? } else { exe };
    Path::new(exe).file_name()?.to_string_lossy().starts_with("python").then(|| resolve(exe, cwd)).flatten()
}

/// `program` as the command's `execvp` would find it.
fn resolve(program: &str, cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let p = cwd.join(program);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

async fn python_env(command: &[String], cwd: &Path) -> Option<PythonEnv> {
    let (command, cwd2) = (command.to_vec(), cwd.to_owned());
    let exe = crate::blocking::run(move |_| Ok::<_, std::io::Error>(interpreter(&command, &cwd2))).await.ok()??;
    let text = output(&exe, &["-c", PYTHON_PROBE], cwd).await?;
    let mut lines = text.lines();
    let version = lines.next()?.trim().to_owned();
    let executable = lines.next()?.trim().to_owned();
    let mut packages: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    packages.sort_unstable();
    packages.dedup();
    let list = packages.join("\n");
    Some(PythonEnv {
        version,
        executable,
        packages_sha256: crate::artifacts::sha256_bytes(list.as_bytes()),
        packages: u32::try_from(packages.len()).unwrap_or(u32::MAX),
    })
}

/// This node's EC2 identity from IMDSv2, asked only on EC2 (DMI says "Amazon EC2", or an
/// IMDS endpoint is named in AWS_EC2_METADATA_SERVICE_ENDPOINT) so a laptop never waits on a
/// metadata timeout.
pub async fn node_identity() -> Option<NodeIdentity> {
    use tap_aws::imds;
    if !imds::worth_asking() {
        return None;
    }
    let client = imds::client(None, imds::Patience::NICE_TO_HAVE).ok()?;
    let get = |path: &'static str| {
        let client = client.clone();
        async move { imds::require(&client, path).await.ok() }
    };
    let instance_id = get(imds::INSTANCE_ID).await?;
    let (instance_type, availability_zone, ami_id, lifecycle) = tokio::join!(
        get(imds::INSTANCE_TYPE),
        get(imds::AVAILABILITY_ZONE),
        get(imds::AMI_ID),
        get(imds::INSTANCE_LIFE_CYCLE)
    );
    let unknown = || "unknown".to_owned();
    Some(NodeIdentity {
        instance_id,
        instance_type: instance_type.unwrap_or_else(unknown),
        availability_zone: availability_zone.unwrap_or_else(unknown),
        ami_id: ami_id.unwrap_or_else(unknown),
        lifecycle: lifecycle.as_deref().and_then(tap_core::runs::Lifecycle::parse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_is_the_python_or_a_scripts_shebang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let py = d.join("python3.11");
        std::fs::write(&py, "#!/bin/sh\n").expect("write");
        let launcher = d.join("torchrun");
        std::fs::write(&launcher, format!("#!{}\nimport sys\n", py.display())).expect("write");
        let shell = d.join("job.sh");
        std::fs::write(&shell, "#!/bin/sh\necho hi\n").expect("write");
        let cmd = |p: &Path| vec![p.display().to_string(), "train.py".to_owned()];
        assert_eq!(interpreter(&cmd(&py), d), Some(py.clone()));
        assert_eq!(interpreter(&cmd(&launcher), d), Some(py.clone()));
        assert_eq!(interpreter(&cmd(&shell), d), None);
        assert_eq!(interpreter(&["no-such-program-xyz".to_owned()], d), None);
    }
}
