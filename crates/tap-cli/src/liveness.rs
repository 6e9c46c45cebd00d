//! Is a run's supervisor alive? What a reader on the same machine can see directly (kernel
//! boot, PID namespace, pid and its start time), for `tap_core::runs::observed_status`.

use tap_core::runs::{Liveness, Run, Supervisor};

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned())
}

fn pid_ns() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.to_string_lossy().into_owned())
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot); the command name
/// before it is in parentheses and may hold spaces.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This process, as a run record names its supervisor (None where /proc says nothing).
pub fn this_process() -> Option<Supervisor> {
    let pid = std::process::id();
    Some(Supervisor { boot_id: boot_id()?, pid_ns: pid_ns()?, pid, start_ticks: start_ticks(pid)? })
}

/// Alive or dead when `s` ran on this boot of this machine in this PID namespace.
pub fn probe(s: &Supervisor) -> Liveness {
    if boot_id().as_deref() != Some(&s.boot_id) || pid_ns().as_deref() != Some(&s.pid_ns) {
        return Liveness::Unknown;
    }
    match start_ticks(s.pid) {
        Some(t) if t == s.start_ticks => Liveness::Alive,
        _ => Liveness::Dead,
    }
}

/// Runs as readers show them: `lost` where the supervisor is gone (see observed_status).
pub fn observe(runs: &mut [Run]) {
    tap_core::runs::observe_all(runs, crate::now_ms(), probe);
}

/// One run as readers show it.
pub fn observed(mut run: Run) -> Run {
    run.status = tap_core::runs::observed_status(&run, crate::now_ms(), probe);
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_child_is_dead() {
        let me = this_process().expect("/proc");
        assert_eq!(probe(&me), Liveness::Alive);
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let theirs = Supervisor { pid, start_ticks: start_ticks(pid).unwrap_or(0), ..me.clone() };
        child.wait().expect("wait");
        assert_eq!(probe(&theirs), Liveness::Dead);
        assert_eq!(probe(&Supervisor { start_ticks: me.start_ticks + 1, ..me.clone() }), Liveness::Dead, "pid reused");
        assert_eq!(probe(&Supervisor { boot_id: "other".into(), ..me }), Liveness::Unknown);
    }
}
