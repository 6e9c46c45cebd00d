//! Optional Prometheus endpoint (`GET /metrics`, bound to 127.0.0.1 by default) with the same
//! fields the agent samples, for Grafana users. The text is rendered from the latest sample.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::gpu::{GpuReading, GpuSample};

/// What the endpoint shows: the latest readings and agent counters.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub readings: Vec<GpuReading>,
    pub reader: String,
    pub samples_total: u64,
    pub read_errors_total: u64,
}

pub type Shared = Arc<Mutex<Snapshot>>;

type Field = (&'static str, &'static str, fn(&GpuSample) -> Option<f64>);

const FIELDS: [Field; 12] = [
    ("tap_gpu_utilization_percent", "Share of time a kernel ran on the GPU.", |s| s.utilization_pct),
    ("tap_gpu_memory_used_mebibytes", "GPU memory used.", |s| s.memory_used_mib),
    ("tap_gpu_memory_total_mebibytes", "GPU memory installed.", |s| s.memory_total_mib),
    ("tap_gpu_memory_utilization_percent", "GPU memory used / total.", |s| s.memory_utilization_pct()),
    ("tap_gpu_temperature_celsius", "GPU core temperature.", |s| s.temperature_c),
    ("tap_gpu_power_draw_watts", "Board power draw.", |s| s.power_draw_w),
    ("tap_gpu_power_limit_watts", "Enforced power limit.", |s| s.power_limit_w),
    ("tap_gpu_sm_clock_megahertz", "Streaming-multiprocessor clock.", |s| s.sm_clock_mhz),
    ("tap_gpu_throttle_reasons", "NVML clock-event reason bitmask.", |s| s.throttle_reasons.map(|v| v as f64)),
    ("tap_gpu_ecc_corrected_errors_total", "Corrected ECC errors since the driver loaded.", |s| {
        s.ecc_corrected.map(|v| v as f64)
    }),
    ("tap_gpu_ecc_uncorrected_errors_total", "Uncorrected ECC errors since the driver loaded.", |s| {
        s.ecc_uncorrected.map(|v| v as f64)
    }),
    ("tap_gpu_retired_pages", "Memory pages retired for ECC errors.", |s| s.retired_pages.map(|v| v as f64)),
];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4. Unreadable values are left out, never 0.
pub fn render(s: &Snapshot, environment: &str, instance_id: &str) -> String {
    let mut out = String::new();
    let base = format!("environment=\"{}\",instance_id=\"{}\"", escape(environment), escape(instance_id));
    let _ = writeln!(out, "# HELP tap_agent_info The agent and its GPU reader.\n# TYPE tap_agent_info gauge");
    let _ = writeln!(
        out,
        "tap_agent_info{{{base},reader=\"{}\",version=\"{}\"}} 1",
        escape(&s.reader),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# HELP tap_agent_gpus_visible GPUs read in the latest sample.\n# TYPE tap_agent_gpus_visible gauge"
    );
    let _ = writeln!(out, "tap_agent_gpus_visible{{{base}}} {}", s.readings.len());
    let _ = writeln!(out, "# HELP tap_agent_samples_total Samples taken.\n# TYPE tap_agent_samples_total counter");
    let _ = writeln!(out, "tap_agent_samples_total{{{base}}} {}", s.samples_total);
    let _ = writeln!(
        out,
        "# HELP tap_agent_read_errors_total Failed GPU reads.\n# TYPE tap_agent_read_errors_total counter"
    );
    let _ = writeln!(out, "tap_agent_read_errors_total{{{base}}} {}", s.read_errors_total);
    for (name, help, get) in FIELDS {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &s.readings {
            if let Some(v) = get(&r.sample) {
                let _ = writeln!(
                    out,
                    "{name}{{{base},gpu=\"{}\",gpu_uuid=\"{}\",pci_bus_id=\"{}\"}} {v}",
                    r.gpu.index,
                    escape(&r.gpu.uuid),
                    escape(r.gpu.pci_bus_id.as_deref().unwrap_or(""))
                );
            }
        }
    }
    out
}

/// Serves `GET /metrics` until the task is dropped. Each connection is answered once and
/// closed; requests are read with a size and time bound.
pub async fn serve(listener: TcpListener, shared: Shared, environment: String, instance_id: String) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let body = {
            let snapshot = shared.lock().map(|s| s.clone()).unwrap_or_default();
            render(&snapshot, &environment, &instance_id)
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let Ok(Ok(n)) = read else { return };
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\nConnection: close\r\n\r\ntry GET /metrics\r\n\r\n"
                    .to_owned()
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(response.as_bytes())).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuReader;
    use crate::gpu::sim::{Fault, SimReader};

    fn snapshot() -> Snapshot {
        let mut r = SimReader::new(2, vec![Fault::TemperatureUnreadable { gpu: 1, from: 0, to: 1 }]);
        Snapshot {
            readings: r.read().expect("read"),
            reader: "simulated".into(),
            samples_total: 7,
            read_errors_total: 0,
        }
    }

    #[test]
    fn renders_every_field_and_leaves_unreadable_ones_out() {
        let text = render(&snapshot(), "dev", "i-1");
        assert!(text.contains("tap_agent_gpus_visible{environment=\"dev\",instance_id=\"i-1\"} 2\n"));
        assert!(text.contains(
            "tap_gpu_utilization_percent{environment=\"dev\",instance_id=\"i-1\",gpu=\"1\",gpu_uuid=\"GPU-SIMULATED-0001\",pci_bus_id=\"00000000:11:00.0\"} 10\n"
        ), "{text}");
        assert_eq!(text.matches("tap_gpu_temperature_celsius{").count(), 1, "GPU 1's temperature is unreadable");
        assert!(text.contains("# TYPE tap_gpu_ecc_uncorrected_errors_total counter"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&Snapshot::default(), "a\"b", "c\\d");
        assert!(text.contains("environment=\"a\\\"b\",instance_id=\"c\\\\d\""));
    }

    #[tokio::test]
    async fn serves_metrics_on_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared: Shared = Arc::new(Mutex::new(snapshot()));
        let server = tokio::spawn(serve(listener, shared, "dev".into(), "i-1".into()));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.contains("tap_gpu_power_draw_watts{"), "{ok}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
