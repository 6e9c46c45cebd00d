//! Test support shared by tap's crates — the one place for it: a moto server (AWS protocols)
//! on loopback, started by the tests themselves and killed on drop; the stack's resources on it
//! ([`aws`]); and [`failing`] clients (failure injection that wraps a real SDK client instead
//! of a parameter of production code). Never used by shipped code.

pub mod aws;
pub mod failing;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub port: u16,
    /// What it writes to stderr (removed on drop).
    log: std::path::PathBuf,
}

impl Moto {
    /// Starts the `moto_server` named by `TAP_MOTO_SERVER` (scripts/tools.sh installs it).
    pub fn from_env(port: u16) -> Moto {
        Moto::start(&moto_server(), port)
    }

    /// As [`Moto::from_env`], and every API call it answers is appended to `log` as one line
    /// `SERVICE ACTION` (tools/moto/tap_moto_server.py), for counting requests.
    pub fn from_env_logging(port: u16, log: &std::path::Path) -> Moto {
        Moto::start_with(&moto_server(), port, Some(log))
    }

    /// Starts `moto_server` (path in `exe`) on 127.0.0.1:`port` and waits until it listens.
    pub fn start(exe: &str, port: u16) -> Moto {
        Moto::start_with(exe, port, None)
    }

    /// As [`Moto::from_env`], with extra environment for tools/moto/tap_moto_server.py (e.g.
    /// `TAP_MOTO_REQUEST_LOG`, `TAP_MOTO_SSM_AGENTS`).
    pub fn from_env_with(port: u16, env: &[(&str, &std::ffi::OsStr)]) -> Moto {
        let mut cmd = Command::new(moto_server());
        cmd.envs(env.iter().copied());
        Moto::spawn(cmd, port)
    }

    fn start_with(exe: &str, port: u16, log: Option<&std::path::Path>) -> Moto {
        let mut cmd = Command::new(exe);
        if let Some(log) = log {
            cmd.env("TAP_MOTO_REQUEST_LOG", log);
        }
        Moto::spawn(cmd, port)
    }

    fn spawn(mut cmd: Command, port: u16) -> Moto {
        // Its output goes to a file, so that a failure to start can say why.
        let log = stderr_log(port);
        let stderr = std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from);
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("moto_server starts");
        let mut moto = Moto { child, port, log };
        moto.wait_listening(MOTO_START_LIMIT);
        moto
    }

    /// The last lines moto_server wrote, for a failure's message.
    fn said(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() { String::new() } else { format!("; it said: {tail}") }
    }

    /// Waits until our child listens on the port, and until then that it is still running: a
    /// moto_server that exits (its port taken, a broken install) is named at once, and a port
    /// another process answers on is never taken for ours.
    fn wait_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut foreign = false;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let why = if foreign { ": another process listens on the port" } else { "" };
                panic!(
                    "moto_server exited ({status}) before it listened on 127.0.0.1:{}{why}{}",
                    self.port,
                    self.said()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                match listens(self.child.id(), self.port) {
                    Some(false) => foreign = true,
                    // Ours, or no /proc to tell (not Linux): the answer is taken as ours.
                    Some(true) | None => return,
                }
            }
            assert!(Instant::now() < deadline, "moto did not listen on {} within {limit:?}{}", self.port, self.said());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        endpoint(self.port)
    }
}

fn moto_server() -> String {
    std::env::var("TAP_MOTO_SERVER").expect("TAP_MOTO_SERVER must name moto_server (scripts/tools.sh installs it)")
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// How many lines of a request log (see [`Moto::from_env_logging`]) are `SERVICE ACTION`
/// (from any caller).
pub fn requests_logged(log: &std::path::Path, service: &str, action: &str) -> usize {
    requests_matching(log, |s, a, _| s == service && a == action)
}

/// How many lines of a request log (`SERVICE ACTION APP`) match `f(service, action, app)`;
/// `app` is the caller's SDK app name (`-` when it set none).
pub fn requests_matching(log: &std::path::Path, f: impl Fn(&str, &str, &str) -> bool) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| {
        t.lines()
            .filter(|l| {
                let mut p = l.split(' ');
                let (s, a, app) = (p.next().unwrap_or(""), p.next().unwrap_or(""), p.next().unwrap_or("-"));
                f(s, a, app)
            })
            .count()
    })
}

/// Whether process `pid` holds the loopback socket listening on `port` (Linux's /proc: the
/// socket's inode in /proc/net/tcp{,6}, among the process's descriptors); None where /proc
/// does not tell.
fn listens(pid: u32, port: u16) -> Option<bool> {
    let local = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st … inode; st 0A is LISTEN.
            if f.len() > 9 && f[1].ends_with(&local) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        // Something answered, yet no table shows a listener (a sandbox's /proc): can't tell.
        return None;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let ours = fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|link| {
        let link = link.to_string_lossy();
        inodes.iter().any(|i| *i == link)
    });
    Some(ours)
}

/// Where the moto_server on `port` started by this process writes its stderr.
fn stderr_log(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tap-moto-{}-{port}.log", std::process::id()))
}

/// How long a moto_server may take to import moto and listen: 2–3 s alone, over 30 s once on a
/// 2-core machine that was also compiling (CI beside a build).
const MOTO_START_LIMIT: Duration = Duration::from_secs(90);

/// Where [`free_port`] looks: below Linux's default ephemeral range (32768–60999,
/// `net.ipv4.ip_local_port_range`), so no outgoing connection's source port can take a port
/// between `free_port()` and the bind of the server it is for.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The ports [`free_port`] handed out in this process: parallel tests never get the same one.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A loopback port for a server a test starts: free now, never handed out before in this
/// process, outside the ephemeral range.
///
/// Regression (stop 19's CI, `idle_rule_against_moto`: "Connection refused" on its first call):
/// this was the kernel's pick for port 0, which two tests running in parallel can both get
/// while neither server has bound it yet. The second moto_server failed to bind, its test took
/// the first one's moto for its own, and lost it when that test ended.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = TEST_PORTS.len();
    // Start where another process running tests at the same time is unlikely to look.
    let start = std::process::id() as usize * 7_919 + handed_out.len();
    let port = (0..span)
        .filter_map(|i| u16::try_from((start + i) % span).ok().map(|i| TEST_PORTS.start + i))
        .find(|p| !handed_out.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free loopback port in {TEST_PORTS:?}"));
    handed_out.insert(port);
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (stop 19's CI): two tests got the same port from the kernel.
    #[test]
    fn free_port_never_hands_out_the_same_port_twice_in_a_process() {
        let ports: Vec<u16> = std::thread::scope(|s| {
            let workers: Vec<_> =
                (0..4).map(|_| s.spawn(|| (0..250).map(|_| free_port()).collect::<Vec<_>>())).collect();
            workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
        });
        let unique: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        assert!(ports.iter().all(|p| TEST_PORTS.contains(p)), "a port outside {TEST_PORTS:?}");
    }

    /// A server that exits before it listens is named at once, not waited on for the limit.
    #[test]
    fn a_moto_server_that_exits_is_named_at_once() {
        let started = Instant::now();
        let e = std::panic::catch_unwind(|| Moto::start("false", free_port())).expect_err("must panic");
        let message = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.starts_with("moto_server exited (exit status: 1) before it listened on 127.0.0.1:"),
            "{message}"
        );
        assert!(started.elapsed() < MOTO_START_LIMIT, "it waited out the start limit");
    }

    /// A port another process listens on is not taken for our moto_server's.
    #[test]
    fn a_port_held_by_another_server_is_not_taken_for_ours() {
        let holder = TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
        let port = holder.local_addr().expect("addr").port();
        // A stand-in for a moto_server that fails on the taken port after its imports.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 1; exit 3", "moto"]);
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || Moto::spawn(cmd, port)))
            .expect_err("must panic");
        let message = e.downcast_ref::<String>().cloned().unwrap_or_default();
        let want = format!(
            "moto_server exited (exit status: 3) before it listened on 127.0.0.1:{port}: another process listens on the port"
        );
        assert_eq!(message, want);
    }

    /// What a moto_server that fails to start wrote is in the failure's message.
    #[test]
    fn a_moto_server_that_fails_says_why() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'ModuleNotFoundError: moto' >&2; exit 4", "moto"]);
        let port = free_port();
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || Moto::spawn(cmd, port)))
            .expect_err("must panic");
        let message = e.downcast_ref::<String>().cloned().unwrap_or_default();
        let want = format!(
            "moto_server exited (exit status: 4) before it listened on 127.0.0.1:{port}; it said: ModuleNotFoundError: moto"
        );
        assert_eq!(message, want);
        assert!(!stderr_log(port).exists(), "its log is removed");
    }

    #[test]
    fn listens_tells_the_process_that_holds_a_port() {
        let holder = TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
        let port = holder.local_addr().expect("addr").port();
        assert_eq!(listens(std::process::id(), port), Some(true));
        let mut other = Command::new("sleep").arg("5").spawn().expect("sleep");
        assert_eq!(listens(other.id(), port), Some(false));
        let _ = other.kill();
        let _ = other.wait();
        drop(holder);
        assert_eq!(listens(std::process::id(), port), None, "no listener: nothing to tell");
    }
}

/// A binary of another crate of this workspace, from beside this test's own binaries
/// (`cargo test --workspace` builds every crate's binaries before running any test).
pub fn workspace_bin(name: &str, beside: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(beside).with_file_name(name);
    assert!(
        p.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build --bin {name}` first)",
        p.display()
    );
    p
}

/// What the fake instance metadata service answers; change it while it runs.
#[derive(Debug, Clone)]
pub struct ImdsState {
    pub instance_id: String,
    pub instance_type: String,
    pub region: String,
    /// `placement/availability-zone`.
    pub availability_zone: String,
    /// Body of `spot/instance-action` (None: 404, no notice).
    pub instance_action: Option<String>,
    /// Body of `events/recommendations/rebalance` (None: 404).
    pub rebalance: Option<String>,
    /// Every request: (when, "METHOD path").
    pub requests: Vec<(Instant, String)>,
}

/// IMDSv2 on 127.0.0.1, as EC2 serves it: `PUT /latest/api/token` hands out a token and
/// every metadata GET without it gets 401. Stops when dropped.
/// The AMI id [`FakeImds`] answers with.
pub const FAKE_AMI: &str = "ami-0123456789abcdef0";

pub struct FakeImds {
    pub port: u16,
    pub state: std::sync::Arc<std::sync::Mutex<ImdsState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeImds {
    pub fn start(instance_id: &str, instance_type: &str) -> FakeImds {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let state = std::sync::Arc::new(std::sync::Mutex::new(ImdsState {
            instance_id: instance_id.to_owned(),
            instance_type: instance_type.to_owned(),
            region: "us-east-1".to_owned(),
            availability_zone: "us-east-1a".to_owned(),
            instance_action: None,
            rebalance: None,
            requests: Vec::new(),
        }));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                let mut s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf).into_owned();
                let first = req.lines().next().unwrap_or_default().to_owned();
                let mut parts = first.split_whitespace();
                let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                let has_token = req.to_ascii_lowercase().contains("x-aws-ec2-metadata-token: tok-fake");
                let (status, body) = {
                    let mut g = st.lock().expect("imds state");
                    g.requests.push((Instant::now(), format!("{method} {path}")));
                    match (method, path) {
                        ("PUT", "/latest/api/token") => ("200 OK", Some("tok-fake".to_owned())),
                        _ if !has_token => ("401 Unauthorized", None),
                        ("GET", "/latest/meta-data/instance-id") => ("200 OK", Some(g.instance_id.clone())),
                        ("GET", "/latest/meta-data/instance-type") => ("200 OK", Some(g.instance_type.clone())),
                        ("GET", "/latest/meta-data/placement/region") => ("200 OK", Some(g.region.clone())),
                        ("GET", "/latest/meta-data/ami-id") => ("200 OK", Some(FAKE_AMI.to_owned())),
                        ("GET", "/latest/meta-data/instance-life-cycle") => ("200 OK", Some("spot".to_owned())),
                        ("GET", "/latest/meta-data/placement/availability-zone") => {
                            ("200 OK", Some(g.availability_zone.clone()))
                        }
                        ("GET", "/latest/meta-data/spot/instance-action") => match &g.instance_action {
                            Some(b) => ("200 OK", Some(b.clone())),
                            None => ("404 Not Found", None),
                        },
                        ("GET", "/latest/meta-data/events/recommendations/rebalance") => match &g.rebalance {
                            Some(b) => ("200 OK", Some(b.clone())),
                            None => ("404 Not Found", None),
                        },
                        _ => ("404 Not Found", None),
                    }
                };
                let body = body.unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes());
            }
        });
        FakeImds { port, state, stop }
    }

    pub fn endpoint(&self) -> String {
        endpoint(self.port)
    }

    pub fn set_instance_action(&self, body: Option<&str>) {
        self.state.lock().expect("imds state").instance_action = body.map(str::to_owned);
    }

    pub fn set_rebalance(&self, body: Option<&str>) {
        self.state.lock().expect("imds state").rebalance = body.map(str::to_owned);
    }

    /// When each request for `path` came.
    pub fn requests_for(&self, path: &str) -> Vec<Instant> {
        let g = self.state.lock().expect("imds state");
        g.requests.iter().filter(|(_, r)| r.ends_with(path)).map(|(t, _)| *t).collect()
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The steps of the `loss` points in `tap runs show --output json`, in order.
pub fn loss_steps(show: &serde_json::Value) -> Vec<u64> {
    show["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter(|p| p["name"] == "loss")
        .map(|p| p["step"].as_u64().expect("step"))
        .collect()
}
