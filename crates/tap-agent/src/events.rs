//! `tap-agent events`: XIDs as they happen (NVML events and the kernel log), one JSON line
//! each, for a bounded time.

use std::path::Path;
use std::time::Duration;

use crate::{gpu, health};

/// `tap-agent events`: XIDs from NVML events and the kernel log for `how_long`, one JSON
/// line each; returns how many arrived.
pub async fn watch_events(kernel_log: &Path, how_long: Duration) -> u64 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    crate::app::init_logging();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let stop = Arc::new(AtomicBool::new(false));
    gpu::nvml::spawn_xid_events(tx.clone(), stop.clone());
    health::kernel_log::spawn(kernel_log.to_owned(), tx, stop.clone());
    let mut n = 0;
    let until = tokio::time::sleep(how_long);
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => break,
            Some(ev) = rx.recv() => {
                n += 1;
                let fatal = health::xid::is_fatal(ev.xid);
                println!("{}", serde_json::json!({
                    "xid": ev.xid, "fatal": fatal, "gpu": ev.uuid, "pci": ev.pci, "source": ev.source, "detail": ev.detail,
                }));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    n
}
