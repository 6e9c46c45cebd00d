//! Follows the kernel log for XIDs: `/dev/kmsg` on a node (every record of this boot first,
//! then new ones as the kernel writes them), or any file that is appended to (tests; a
//! `journalctl -k -f` pipe). Runs on its own thread: reads block.
//!
//! Hostile input is expected: lines that are not XIDs are skipped, invalid UTF-8 is read
//! lossily, a line longer than [`xid::MAX_LINE`] is dropped whole, a partly written last
//! line is completed before it is parsed, and records the kernel overwrote before we read
//! them (`EPIPE` on `/dev/kmsg`) are skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::XidEvent;
use super::xid::{self, parse_kernel_line};

/// How long to wait at the end of a regular file before looking for more.
const EOF_POLL: Duration = Duration::from_millis(200);

/// Reads `path` until `stop` is set (checked between lines and at end of file), calling
/// `emit` with each XID; stops early when `emit` returns false.
pub fn follow(path: &Path, stop: &AtomicBool, mut emit: impl FnMut(XidEvent) -> bool) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    // /dev/kmsg returns one record per read and needs room for a whole one: 16 KiB is plenty.
    let mut r = BufReader::with_capacity(16 * 1024, file);
    let mut pending: Vec<u8> = Vec::new();
    let mut too_long = false;
    while !stop.load(Ordering::Relaxed) {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) || e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            std::thread::sleep(EOF_POLL);
            continue;
        }
        let (chunk, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        if pending.len() + chunk.len() > xid::MAX_LINE {
            too_long = true;
            pending.clear();
        } else if !too_long {
            pending.extend_from_slice(chunk);
        }
        let used = chunk.len() + usize::from(ends_line);
        r.consume(used);
        if ends_line {
            if !too_long && let Some(k) = parse_kernel_line(&String::from_utf8_lossy(&pending)) {
                let ev = XidEvent { xid: k.xid, uuid: None, pci: Some(k.pci), detail: k.detail, source: "kernel-log" };
                if !emit(ev) {
                    return Ok(());
                }
            }
            pending.clear();
            too_long = false;
        }
    }
    Ok(())
}

/// Follows `path` on a thread, sending XIDs to `tx` until the receiver is gone or `stop` is
/// set. An unreadable log is logged once (the NVML event path still works).
pub fn spawn(path: PathBuf, tx: tokio::sync::mpsc::Sender<XidEvent>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new().name("tap-kernel-log".into()).spawn(move || {
        if let Err(e) = follow(&path, &stop, |ev| tx.blocking_send(ev).is_ok()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the kernel log: XIDs come from NVML events only");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the kernel log reader");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect_after(path: &Path, writes: impl FnOnce() + Send + 'static, want: usize) -> Vec<XidEvent> {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let writer = std::thread::spawn(move || {
            writes();
            std::thread::sleep(Duration::from_secs(5));
            s2.store(true, Ordering::Relaxed); // bound: never wait forever
        });
        let mut got = Vec::new();
        follow(path, &stop, |ev| {
            got.push(ev);
            got.len() < want
        })
        .expect("follows");
        stop.store(true, Ordering::Relaxed);
        drop(writer);
        got
    }

    #[test]
    fn finds_xids_among_garbage_and_waits_for_half_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kmsg");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(b"6,1,1,-;Linux version 6.8.0\n\xff\xfe\x00 binary junk\n").expect("write");
        f.write_all(&[b'x'; 10_000]).expect("long");
        f.write_all(b" NVRM: Xid (PCI:0000:00:1e): 48, inside an overlong line\n").expect("write");
        f.write_all(b"4,2,2,-;NVRM: Xid (PCI:0000:00:1e): 13, pid=7, name=python3, Graphics Exception\n")
            .expect("write");
        f.write_all(b"3,3,3,-;NVRM: Xid (PCI:0000:00:1e): 7").expect("half a line");
        f.flush().expect("flush");
        let p2 = path.clone();
        let got = collect_after(
            &path,
            move || {
                std::thread::sleep(Duration::from_millis(400));
                let mut f = std::fs::OpenOptions::new().append(true).open(&p2).expect("open");
                f.write_all(b"9, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n").expect("rest");
            },
            2,
        );
        let xids: Vec<u32> = got.iter().map(|e| e.xid).collect();
        assert_eq!(xids, [13, 79], "the overlong line is dropped whole; the half line is completed first");
        assert_eq!(got[1].pci.as_deref(), Some("0000:00:1e"));
        assert_eq!(got[1].source, "kernel-log");
    }

    #[test]
    fn a_missing_log_is_an_error() {
        let stop = AtomicBool::new(false);
        assert!(follow(Path::new("/nonexistent/kmsg"), &stop, |_| true).is_err());
    }
}
