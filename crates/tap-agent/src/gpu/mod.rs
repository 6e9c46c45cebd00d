//! GPU readers behind one trait: NVML (in-process), `nvidia-smi` (fallback) and a
//! deterministic simulation (tests and the demo, always labelled as simulated).
//!
//! A value that could not be read is `None`, never 0: "no reading" and "idle" are different
//! facts, and CloudWatch gets no datapoint for the former.

pub mod nvml;
pub mod sim;
pub mod smi;

use std::fmt;

/// Static facts of one GPU, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuIdentity {
    /// Index in the driver's enumeration order (can change across reboots; for humans only).
    pub index: u32,
    /// `GPU-…` UUID: the identity used in metric dimensions.
    pub uuid: String,
    pub pci_bus_id: Option<String>,
    pub name: Option<String>,
}

/// One reading of the dynamic fields of one GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    pub utilization_pct: Option<f64>,
    pub memory_used_mib: Option<f64>,
    pub memory_total_mib: Option<f64>,
    pub temperature_c: Option<f64>,
    pub power_draw_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    /// NVML clock-event (throttle) reason bitmask, see [`throttle`].
    pub throttle_reasons: Option<u64>,
    /// Volatile ECC counters (since the driver loaded); monotonic.
    pub ecc_corrected: Option<u64>,
    pub ecc_uncorrected: Option<u64>,
    /// Pages retired because of ECC errors (single + double bit).
    pub retired_pages: Option<u64>,
    pub retirement_pending: Option<bool>,
}

impl GpuSample {
    /// Memory used / total in percent, when both are known and total is not 0.
    pub fn memory_utilization_pct(&self) -> Option<f64> {
        match (self.memory_used_mib, self.memory_total_mib) {
            (Some(used), Some(total)) if total > 0.0 => Some(100.0 * used / total),
            _ => None,
        }
    }

    /// Whether the GPU was slowed for a reason that costs training throughput.
    pub fn throttled(&self) -> Option<bool> {
        self.throttle_reasons.map(|r| r & throttle::COSTLY != 0)
    }
}

/// NVML `nvmlClocksEventReasons` bits (nvml.h).
pub mod throttle {
    pub const GPU_IDLE: u64 = 0x1;
    pub const APPLICATIONS_CLOCKS_SETTING: u64 = 0x2;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SYNC_BOOST: u64 = 0x10;
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
    pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
    pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
    pub const DISPLAY_CLOCK_SETTING: u64 = 0x100;
    /// Reasons that mean lost throughput (idle, user clock settings and sync boost do not).
    pub const COSTLY: u64 =
        SW_POWER_CAP | HW_SLOWDOWN | SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN | HW_POWER_BRAKE_SLOWDOWN;
}

/// One GPU's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    pub gpu: GpuIdentity,
    pub sample: GpuSample,
}

/// Which reader produced the values (shown in logs and `--once` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    Nvml,
    NvidiaSmi,
    Simulated,
    /// No usable driver (yet): no GPUs are read.
    None,
}

impl fmt::Display for ReaderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReaderKind::Nvml => "nvml",
            ReaderKind::NvidiaSmi => "nvidia-smi",
            ReaderKind::Simulated => "SIMULATED (not real GPUs)",
            ReaderKind::None => "none (no NVIDIA driver)",
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// No usable NVIDIA driver on this machine.
    #[error("no NVIDIA driver: {0}")]
    NoDriver(String),
    /// The reader worked before and fails now (GPU lost, driver reloaded, …).
    #[error("reading GPUs failed: {0}")]
    Failed(String),
}

impl ReadError {
    /// The reason without the kind prefix.
    pub fn reason(&self) -> &str {
        match self {
            ReadError::NoDriver(r) | ReadError::Failed(r) => r,
        }
    }
}

/// A source of GPU readings.
pub trait GpuReader: Send {
    fn kind(&self) -> ReaderKind;
    /// Reads every GPU. GPUs whose fields partly fail are returned with those fields `None`.
    fn read(&mut self) -> Result<Vec<GpuReading>, ReadError>;
}

/// Opens the best reader available: NVML, else `nvidia-smi`, else an error saying why.
pub fn open_hardware() -> Result<Box<dyn GpuReader>, ReadError> {
    match nvml::NvmlReader::open() {
        Ok(r) => Ok(Box::new(r)),
        Err(nvml_err) => match smi::SmiReader::open(smi::NVIDIA_SMI) {
            Ok(r) => Ok(Box::new(r)),
            Err(smi_err) => Err(ReadError::NoDriver(format!("NVML: {nvml_err}; nvidia-smi: {}", smi_err.reason()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_utilization_needs_both_values() {
        let mut s = GpuSample { memory_used_mib: Some(4096.0), memory_total_mib: Some(16384.0), ..Default::default() };
        assert_eq!(s.memory_utilization_pct(), Some(25.0));
        s.memory_total_mib = Some(0.0);
        assert_eq!(s.memory_utilization_pct(), None);
        s.memory_total_mib = None;
        assert_eq!(s.memory_utilization_pct(), None);
    }

    #[test]
    fn idle_is_not_throttling() {
        let s = |r| GpuSample { throttle_reasons: Some(r), ..Default::default() }.throttled();
        assert_eq!(s(throttle::GPU_IDLE | throttle::APPLICATIONS_CLOCKS_SETTING), Some(false));
        assert_eq!(s(throttle::HW_THERMAL_SLOWDOWN), Some(true));
        assert_eq!(s(throttle::SW_POWER_CAP | throttle::GPU_IDLE), Some(true));
        assert_eq!(GpuSample::default().throttled(), None);
    }
}
