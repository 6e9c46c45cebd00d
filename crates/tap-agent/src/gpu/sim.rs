//! A deterministic simulated reader: N GPUs with scripted values and faults.
//!
//! Used by tests and by the demo. Its GPUs carry `GPU-SIMULATED-…` UUIDs and the reader
//! reports [`ReaderKind::Simulated`], so simulated data is never mistaken for real data.

use super::{GpuIdentity, GpuReader, GpuReading, GpuSample, ReadError, ReaderKind};

/// A scripted fault, active for reads `from..to` (0-based read counter).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Every read fails (driver gone, GPU fell off the bus).
    ReadFails { from: u64, to: u64 },
    /// One GPU's temperature cannot be read (the field is `None`).
    TemperatureUnreadable { gpu: usize, from: u64, to: u64 },
    /// One GPU runs hot at a fixed temperature.
    Hot { gpu: usize, celsius: f64, from: u64, to: u64 },
    /// One GPU's uncorrected ECC counter rises by `per_read` each read.
    EccErrors { gpu: usize, per_read: u64, from: u64, to: u64 },
}

pub struct SimReader {
    gpus: Vec<GpuIdentity>,
    reads: u64,
    faults: Vec<Fault>,
    ecc_uncorrected: Vec<u64>,
}

pub const MEMORY_TOTAL_MIB: f64 = 16_160.0; // a 16 GB V100

impl SimReader {
    pub fn new(gpus: usize, faults: Vec<Fault>) -> SimReader {
        let gpus = (0..gpus)
            .map(|i| GpuIdentity {
                index: i as u32,
                uuid: format!("GPU-SIMULATED-{i:04}"),
                pci_bus_id: Some(format!("00000000:{:02X}:00.0", 0x10 + i)),
                name: Some("Simulated Tesla V100-SXM2-16GB".to_owned()),
            })
            .collect::<Vec<_>>();
        let ecc_uncorrected = vec![0; gpus.len()];
        SimReader { gpus, reads: 0, faults, ecc_uncorrected }
    }

    /// The utilization GPU `gpu` reports on read `n`: a 0–100 % sawtooth offset per GPU, so
    /// averages over a window are easy to compute in tests.
    pub fn utilization(gpu: usize, n: u64) -> f64 {
        ((n + 10 * gpu as u64) % 101) as f64
    }

    fn active(from: u64, to: u64, n: u64) -> bool {
        (from..to).contains(&n)
    }
}

impl GpuReader for SimReader {
    fn kind(&self) -> ReaderKind {
        ReaderKind::Simulated
    }

    fn read(&mut self) -> Result<Vec<GpuReading>, ReadError> {
        let n = self.reads;
        self.reads += 1;
        for f in &self.faults {
            if let Fault::ReadFails { from, to } = *f
                && Self::active(from, to, n)
            {
                return Err(ReadError::Failed(format!("simulated read failure (read {n})")));
            }
        }
        let mut out = Vec::with_capacity(self.gpus.len());
        for (i, gpu) in self.gpus.iter().enumerate() {
            let util = Self::utilization(i, n);
            let mut s = GpuSample {
                utilization_pct: Some(util),
                memory_used_mib: Some(4_000.0 + 80.0 * util),
                memory_total_mib: Some(MEMORY_TOTAL_MIB),
                temperature_c: Some(45.0 + 0.3 * util),
                power_draw_w: Some(60.0 + 2.0 * util),
                power_limit_w: Some(300.0),
                sm_clock_mhz: Some(if util > 0.0 { 1_530.0 } else { 135.0 }),
                throttle_reasons: Some(if util > 0.0 { 0 } else { super::throttle::GPU_IDLE }),
                ecc_corrected: Some(0),
                ecc_uncorrected: None,
                retired_pages: Some(0),
                retirement_pending: Some(false),
            };
            for f in &self.faults {
                match *f {
                    Fault::TemperatureUnreadable { gpu: g, from, to } if g == i && Self::active(from, to, n) => {
                        s.temperature_c = None;
                    }
                    Fault::Hot { gpu: g, celsius, from, to } if g == i && Self::active(from, to, n) => {
                        s.temperature_c = Some(celsius);
                        s.throttle_reasons = Some(super::throttle::HW_THERMAL_SLOWDOWN);
                    }
                    Fault::EccErrors { gpu: g, per_read, from, to } if g == i && Self::active(from, to, n) => {
                        self.ecc_uncorrected[i] += per_read;
                    }
                    _ => {}
                }
            }
            s.ecc_uncorrected = Some(self.ecc_uncorrected[i]);
            out.push(GpuReading { gpu: gpu.clone(), sample: s });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_labelled() {
        let mut a = SimReader::new(2, vec![]);
        let mut b = SimReader::new(2, vec![]);
        assert_eq!(a.read(), b.read());
        assert_eq!(a.kind(), ReaderKind::Simulated);
        assert!(a.read().expect("reads")[1].gpu.uuid.starts_with("GPU-SIMULATED-"));
    }

    #[test]
    fn scripted_faults_apply_in_their_window() {
        let mut r = SimReader::new(
            2,
            vec![
                Fault::ReadFails { from: 1, to: 2 },
                Fault::TemperatureUnreadable { gpu: 1, from: 2, to: 3 },
                Fault::EccErrors { gpu: 0, per_read: 2, from: 0, to: 10 },
            ],
        );
        let first = r.read().expect("read 0");
        assert_eq!(first[0].sample.ecc_uncorrected, Some(2));
        assert!(r.read().is_err());
        let third = r.read().expect("read 2");
        assert_eq!(third[1].sample.temperature_c, None);
        assert!(third[0].sample.temperature_c.is_some());
        assert_eq!(third[0].sample.ecc_uncorrected, Some(4));
    }
}
