//! XID errors: which are fatal, and reading them out of the kernel log.
//!
//! The NVIDIA driver logs every XID as `NVRM: Xid (PCI:0000:00:1e): 79, pid=…, GPU has fallen
//! off the bus.` NVML's event API reports most of them too, but not all (DCGM, which uses it,
//! cannot see 79, 119 and 120), so the agent reads both and merges them.

/// Fatal XIDs, as AWS's EKS node-monitoring agent classifies them (FACTS.md): the GPU or its
/// memory is in a state only a reset or a new node fixes. Every other XID is a warning.
pub const FATAL_XIDS: [u32; 21] =
    [46, 48, 54, 62, 63, 64, 74, 79, 95, 109, 110, 119, 120, 136, 140, 142, 143, 151, 155, 156, 158];

pub fn is_fatal(xid: u32) -> bool {
    FATAL_XIDS.contains(&xid)
}

/// A short description of well-known XIDs, for findings people read.
pub fn describe(xid: u32) -> &'static str {
    match xid {
        13 => "graphics engine exception (often an application bug)",
        31 => "GPU memory page fault (often an application bug)",
        43 => "GPU stopped processing (application fault)",
        45 => "preemptive cleanup after an error",
        46 => "GPU stopped processing",
        48 => "double-bit (uncorrectable) ECC error",
        54 => "auxiliary power not connected",
        62 | 140 => "internal micro-controller halt",
        63 => "ECC page retirement or row remapping recorded",
        64 => "ECC page retirement or row remapping failed",
        74 => "NVLink error",
        79 => "GPU has fallen off the bus",
        92 => "high single-bit ECC error rate",
        94 => "contained ECC error",
        95 => "uncontained ECC error",
        109 => "context switch timeout",
        110 => "security fault",
        119 | 120 => "GSP firmware error",
        _ => "see NVIDIA's XID catalogue",
    }
}

/// One XID as the kernel logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelXid {
    /// The GPU's PCI address as the kernel writes it (`0000:00:1e` or `0000:00:1e.0`).
    pub pci: String,
    pub xid: u32,
    /// The rest of the line (pid, process name, the driver's description).
    pub detail: String,
}

/// Longest line considered: a kernel record is at most ~1 KiB; anything longer is garbage.
pub const MAX_LINE: usize = 4096;

/// Parses one kernel log line (a `/dev/kmsg` record `6,1234,5678,-;NVRM: …`, a `dmesg` line
/// `[ 12.34] NVRM: …` or a journal line); `None` for every line that is not an XID report.
pub fn parse_kernel_line(line: &str) -> Option<KernelXid> {
    if line.len() > MAX_LINE {
        return None;
    }
    let at = line.find("NVRM: Xid (")?;
    let rest = &line[at + "NVRM: Xid (".len()..];
    let rest = rest.strip_prefix("PCI:").unwrap_or(rest);
    let close = rest.find("):")?;
    let pci = rest[..close].trim();
    if pci.is_empty() || pci.len() > 32 || !pci.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
        return None;
    }
    let after = rest[close + 2..].trim_start();
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 {
        return None;
    }
    let xid: u32 = after[..digits].parse().ok()?;
    let detail = after[digits..].trim_start_matches([',', ' ']).trim_end().to_owned();
    Some(KernelXid { pci: pci.to_owned(), xid, detail })
}

/// (domain, bus, device) of a PCI address in any of the spellings the driver, the kernel and
/// NVML use: `0000:00:1e`, `0000:00:1e.0`, `00000000:00:1E.0`, `00:1e.0`.
pub fn pci_key(addr: &str) -> Option<(u32, u32, u32)> {
    let addr = addr.trim();
    let base = addr.split('.').next()?;
    let parts: Vec<&str> = base.split(':').collect();
    let hex = |s: &str| if s.is_empty() || s.len() > 8 { None } else { u32::from_str_radix(s, 16).ok() };
    match parts.as_slice() {
        [d, b, dev] => Some((hex(d)?, hex(b)?, hex(dev)?)),
        [b, dev] => Some((0, hex(b)?, hex(dev)?)),
        _ => None,
    }
}

/// Whether two PCI addresses name the same device.
pub fn same_pci(a: &str, b: &str) -> bool {
    matches!((pci_key(a), pci_key(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fatal_list_is_the_documented_one() {
        for x in [48, 79, 119, 120, 63, 64, 95] {
            assert!(is_fatal(x), "{x}");
        }
        for x in [13, 31, 43, 45, 92, 94] {
            assert!(!is_fatal(x), "{x} is a warning");
        }
    }

    #[test]
    fn real_kernel_lines() {
        let kmsg = "3,1543,812345678,-;NVRM: Xid (PCI:0000:00:1e): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.";
        let x = parse_kernel_line(kmsg).expect("xid");
        assert_eq!((x.pci.as_str(), x.xid), ("0000:00:1e", 79));
        assert!(x.detail.ends_with("GPU has fallen off the bus."), "{}", x.detail);
        let dmesg = "[  812.345678] NVRM: Xid (PCI:0000:3b:00): 48, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 0, subpartition 0.";
        assert_eq!(parse_kernel_line(dmesg).map(|x| x.xid), Some(48));
        let journal = "Nov 27 03:14:15 ip-10-0-1-5 kernel: NVRM: Xid (PCI:0000:00:1e.0): 13, pid=2417, name=python3, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0)";
        let x = parse_kernel_line(journal).expect("xid");
        assert_eq!((x.pci.as_str(), x.xid), ("0000:00:1e.0", 13));
    }

    #[test]
    fn garbage_is_not_an_xid() {
        for line in [
            "",
            "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  580.95.05",
            "NVRM: Xid (PCI:0000:00:1e): , pid=1",
            "NVRM: Xid (PCI:0000:00:1e): 999999, pid=1",
            "NVRM: Xid (PCI:zz:yy): 79, x",
            "NVRM: Xid (PCI:0000:00:1e) 79",
            "NVRM: Xid (",
            "\u{0}\u{1}NVRM: Xid (PCI:",
        ] {
            assert_eq!(parse_kernel_line(line), None, "{line:?}");
        }
        let long = format!("NVRM: Xid (PCI:0000:00:1e): 79, {}", "x".repeat(MAX_LINE));
        assert_eq!(parse_kernel_line(&long), None);
    }

    #[test]
    fn pci_spellings_agree() {
        assert!(same_pci("0000:00:1e", "00000000:00:1E.0"));
        assert!(same_pci("00:1e.0", "0000:00:1e"));
        assert!(!same_pci("0000:00:1e", "0000:00:1f"));
        assert!(!same_pci("junk", "junk"));
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,200}") {
            let _ = parse_kernel_line(&line);
        }

        #[test]
        fn finds_any_xid_in_any_prefix(prefix in "[ -~]{0,60}", xid in 0u32..100_000, bus in 0u32..256, dev in 0u32..32) {
            let line = format!("{prefix}NVRM: Xid (PCI:0000:{bus:02x}:{dev:02x}): {xid}, pid=1, name=x, text");
            let x = parse_kernel_line(&line);
            // The prefix itself may contain an earlier "NVRM: Xid (" only by chance; it has no "):".
            prop_assume!(!prefix.contains("NVRM: Xid ("));
            let x = x.expect("parsed");
            prop_assert_eq!(x.xid, xid);
            prop_assert_eq!(pci_key(&x.pci), Some((0, bus, dev)));
        }
    }
}
