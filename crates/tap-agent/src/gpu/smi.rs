//! Fallback reader: `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`.
//!
//! Used when NVML cannot be loaded but the `nvidia-smi` binary works. One process per sample
//! (milliseconds each; see the benchmark), with a timeout because `nvidia-smi` hangs on a
//! GPU that fell off the bus.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{GpuIdentity, GpuReader, GpuReading, GpuSample, ReadError, ReaderKind};

pub const NVIDIA_SMI: &str = "nvidia-smi";

/// Query fields, in the column order [`parse`] expects.
pub const FIELDS: [&str; 17] = [
    "index",
    "uuid",
    "pci.bus_id",
    "name",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "clocks.sm",
    "clocks_event_reasons.active",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "retired_pages.single_bit_ecc.count",
    "retired_pages.double_bit.count",
    "retired_pages.pending",
];

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct SmiReader {
    program: String,
}

impl SmiReader {
    /// Checks that `program` answers a query before relying on it.
    pub fn open(program: &str) -> Result<SmiReader, ReadError> {
        let mut r = SmiReader { program: program.to_owned() };
        r.read()?;
        Ok(r)
    }

    fn run(&self) -> Result<String, ReadError> {
        let query = format!("--query-gpu={}", FIELDS.join(","));
        let mut child = Command::new(&self.program)
            .args([query.as_str(), "--format=csv,noheader,nounits"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ReadError::NoDriver(format!("cannot run {}: {e}", self.program)))?;
        let start = Instant::now();
        // Bounded wait: poll, then kill after TIMEOUT.
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() < TIMEOUT => std::thread::sleep(Duration::from_millis(2)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ReadError::Failed(format!("{} did not answer within {TIMEOUT:?}", self.program)));
                }
                Err(e) => {
                    return Err(ReadError::Failed(format!("waiting for {}: {e}", self.program)));
                }
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        if !status.success() {
            let msg = if stdout.trim().is_empty() { stderr.trim() } else { stdout.trim() };
            return Err(ReadError::Failed(format!("{} failed ({status}): {msg}", self.program)));
        }
        Ok(stdout)
    }
}

impl GpuReader for SmiReader {
    fn kind(&self) -> ReaderKind {
        ReaderKind::NvidiaSmi
    }

    fn read(&mut self) -> Result<Vec<GpuReading>, ReadError> {
        parse(&self.run()?).map_err(ReadError::Failed)
    }
}

/// A value nvidia-smi could not read: `[N/A]`, `[Not Supported]`, `N/A`, `[Unknown Error]`, …
fn missing(v: &str) -> bool {
    v.is_empty() || v.starts_with('[') || v.eq_ignore_ascii_case("n/a")
}

fn float(v: &str) -> Option<f64> {
    if missing(v) {
        return None;
    }
    v.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn int(v: &str) -> Option<u64> {
    if missing(v) {
        return None;
    }
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Parses nvidia-smi's CSV output (no header, no units). Unreadable values become `None`;
/// a line with the wrong number of columns or without index/UUID is an error.
pub fn parse(text: &str) -> Result<Vec<GpuReading>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols.len() != FIELDS.len() {
            return Err(format!(
                "nvidia-smi line {}: {} columns, expected {}: {line:?}",
                n + 1,
                cols.len(),
                FIELDS.len()
            ));
        }
        let index = int(cols[0]).and_then(|i| u32::try_from(i).ok());
        let (Some(index), false) = (index, missing(cols[1])) else {
            return Err(format!("nvidia-smi line {}: no GPU index or UUID: {line:?}", n + 1));
        };
        let retired = match (int(cols[14]), int(cols[15])) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        out.push(GpuReading {
            gpu: GpuIdentity {
                index,
                uuid: cols[1].to_owned(),
                pci_bus_id: (!missing(cols[2])).then(|| cols[2].to_owned()),
                name: (!missing(cols[3])).then(|| cols[3].to_owned()),
            },
            sample: GpuSample {
                utilization_pct: float(cols[4]),
                memory_used_mib: float(cols[5]),
                memory_total_mib: float(cols[6]),
                temperature_c: float(cols[7]),
                power_draw_w: float(cols[8]),
                power_limit_w: float(cols[9]),
                sm_clock_mhz: float(cols[10]),
                throttle_reasons: int(cols[11]),
                ecc_corrected: int(cols[12]),
                ecc_uncorrected: int(cols[13]),
                retired_pages: retired,
                retirement_pending: match cols[16] {
                    "Yes" => Some(true),
                    "No" => Some(false),
                    _ => None,
                },
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V100: &str = "0, GPU-9d4c2b1e-7a3f-4b8e-9c1d-2e3f4a5b6c7d, 00000000:00:1E.0, Tesla V100-SXM2-16GB, 87, 12034, 16384, 61, 243.52, 300.00, 1530, 0x0000000000000000, 0, 0, 0, 0, No\n";

    #[test]
    fn parses_a_v100_line() {
        let r = parse(V100).expect("parses");
        assert_eq!(r.len(), 1);
        let g = &r[0];
        assert_eq!(g.gpu.uuid, "GPU-9d4c2b1e-7a3f-4b8e-9c1d-2e3f4a5b6c7d");
        assert_eq!(g.gpu.pci_bus_id.as_deref(), Some("00000000:00:1E.0"));
        assert_eq!(g.sample.utilization_pct, Some(87.0));
        assert_eq!(g.sample.power_draw_w, Some(243.52));
        assert_eq!(g.sample.throttle_reasons, Some(0));
        assert_eq!(g.sample.retirement_pending, Some(false));
    }

    #[test]
    fn unsupported_values_are_absent_not_zero() {
        let line = "1, GPU-x, [N/A], NVIDIA A10G, 5, 100, 23028, 40, [N/A], [Not Supported], 210, 0x0000000000000001, [N/A], [N/A], [N/A], [N/A], [N/A]\n";
        let g = &parse(line).expect("parses")[0];
        assert_eq!(g.sample.power_draw_w, None);
        assert_eq!(g.sample.ecc_uncorrected, None);
        assert_eq!(g.sample.retired_pages, None);
        assert_eq!(g.sample.retirement_pending, None);
        assert_eq!(g.gpu.pci_bus_id, None);
        assert_eq!(g.sample.throttle_reasons, Some(1));
    }

    #[test]
    fn wrong_column_count_is_an_error() {
        let e = parse("0, GPU-x, 87\n").expect_err("rejected");
        assert!(e.contains("3 columns, expected 17"), "{e}");
    }

    #[test]
    fn several_gpus_and_blank_lines() {
        let text = format!("{V100}\n{}", V100.replacen("0, GPU-9d", "1, GPU-8d", 1));
        let r = parse(&text).expect("parses");
        assert_eq!(r.iter().map(|g| g.gpu.index).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn missing_program_is_no_driver() {
        let e = SmiReader::open("/nonexistent/nvidia-smi").err().expect("fails");
        assert!(matches!(&e, ReadError::NoDriver(m) if m.contains("cannot run")), "{e}");
    }

    proptest! {
        #[test]
        fn never_panics(text in "[ -~\\n]{0,300}") {
            let _ = parse(&text);
        }

        #[test]
        fn numbers_round_trip(util in 0u32..=100, temp in 0u32..=120, power in 0.0f64..1000.0) {
            let line = format!("3, GPU-a, [N/A], X, {util}, 1, 2, {temp}, {power:.2}, 300, 1, 0x4, 0, 0, 0, 0, Yes");
            let g = &parse(&line).expect("parses")[0];
            prop_assert_eq!(g.sample.utilization_pct, Some(f64::from(util)));
            prop_assert_eq!(g.sample.temperature_c, Some(f64::from(temp)));
            prop_assert!((g.sample.power_draw_w.expect("power") - power).abs() < 0.01);
            prop_assert_eq!(g.sample.throttle_reasons, Some(4));
        }
    }
}
