//! The node's network bytes from the kernel's interface counters (`/proc/net/dev`): what a
//! job's ranks exchanged, published as `NetworkBytesIn`/`NetworkBytesOut` with the node's
//! Availability Zone, so the job controller can put the traffic that crossed AZs on the bill.
//!
//! Counted: every interface but loopback and the virtual ones a container runtime or a
//! bridge adds (their bytes pass through a physical interface too and would count twice).
//! Not counted: EFA's RDMA traffic, which bypasses the kernel's network stack.

use std::path::Path;

/// Where Linux keeps the counters.
pub const PROC_NET_DEV: &str = "/proc/net/dev";

/// Prefixes of interfaces whose traffic also crosses a physical interface (or never leaves
/// the node): loopback, veth pairs, Docker's and libvirt's bridges, CNI and overlay devices.
const VIRTUAL_PREFIXES: [&str; 10] = ["lo", "veth", "docker", "br-", "virbr", "cni", "flannel", "cali", "vxlan", "tun"];

/// Bytes received and sent over the counted interfaces since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Sums `/proc/net/dev`'s text: two header lines, then `iface: rx_bytes rx_packets … (8
/// receive fields) tx_bytes …`. A line that does not parse is skipped (None when none did).
pub fn parse(text: &str) -> Option<Counters> {
    let mut total = Counters::default();
    let mut any = false;
    for line in text.lines().skip(2) {
        let Some((name, fields)) = line.split_once(':') else { continue };
        let name = name.trim();
        if VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let f: Vec<u64> = fields.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() < 16 {
            continue;
        }
        total.bytes_in = total.bytes_in.saturating_add(f[0]);
        total.bytes_out = total.bytes_out.saturating_add(f[8]);
        any = true;
    }
    any.then_some(total)
}

/// Reads and sums the counters (None: unreadable, e.g. not Linux).
pub fn read(path: &Path) -> Option<Counters> {
    std::fs::read_to_string(path).ok().as_deref().and_then(parse)
}

/// What the counters moved by from `before` to `after` (an interface that came back, a
/// 32-bit wrap: [`crate::metrics::counter_delta`]'s reset rule).
pub fn delta(before: Counters, after: Counters) -> Counters {
    use crate::metrics::counter_delta;
    Counters {
        bytes_in: counter_delta(before.bytes_in, after.bytes_in),
        bytes_out: counter_delta(before.bytes_out, after.bytes_out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9000000    100    0    0    0     0          0         0  9000000    100    0    0    0     0       0          0
  ens5: 1000       10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
vethab12: 555      5    0    0    0     0          0         0      666       6    0    0    0     0       0          0
docker0: 777      5    0    0    0     0          0         0      888       6    0    0    0     0       0          0
  ens6: 30       1    0    0    0     0          0         0       40       1    0    0    0     0       0          0
";

    #[test]
    fn physical_interfaces_are_summed_and_virtual_ones_left_out() {
        assert_eq!(parse(SAMPLE), Some(Counters { bytes_in: 1030, bytes_out: 2040 }));
        assert_eq!(parse("header\nheader\n  lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("a\nb\neth0: 1 2 3\n"), None, "a short line is skipped");
    }

    #[test]
    fn a_counter_that_went_down_counts_from_zero() {
        let c = |i, o| Counters { bytes_in: i, bytes_out: o };
        assert_eq!(delta(c(100, 200), c(150, 260)), c(50, 60));
        assert_eq!(delta(c(100, 200), c(40, 260)), c(40, 60));
    }
}
