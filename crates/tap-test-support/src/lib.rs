//! Test support shared by tap's crates: a moto server (AWS protocols) on loopback, started by
//! the tests themselves and killed on drop. Never used by shipped code.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts the `moto_server` named by `TAP_MOTO_SERVER` (scripts/tools.sh installs it).
    pub fn from_env(port: u16) -> Moto {
        let exe = std::env::var("TAP_MOTO_SERVER")
            .expect("TAP_MOTO_SERVER must name moto_server (scripts/tools.sh installs it)");
        Moto::start(&exe, port)
    }

    /// Starts `moto_server` (path in `exe`) on 127.0.0.1:`port` and waits until it listens.
    pub fn start(exe: &str, port: u16) -> Moto {
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        endpoint(self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
