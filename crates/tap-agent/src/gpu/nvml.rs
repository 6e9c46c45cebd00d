//! In-process reader on NVML (`libnvidia-ml.so.1`, loaded at run time by nvml-wrapper).
//!
//! NVML is initialised once; static facts (UUID, PCI bus id, name) are read once; each sample
//! reads only dynamic fields (microseconds per call, against milliseconds for forking
//! `nvidia-smi`). When NVML reports that it or a GPU went away, the handle is dropped and
//! re-initialised on the next read.

use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, RetirementCause, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::{GpuIdentity, GpuReader, GpuReading, GpuSample, ReadError, ReaderKind};

pub struct NvmlReader {
    nvml: Option<Nvml>,
    gpus: Vec<GpuIdentity>,
}

impl NvmlReader {
    /// Loads NVML and reads every GPU's identity; fails on a machine without the driver.
    pub fn open() -> Result<NvmlReader, NvmlError> {
        let nvml = Nvml::init()?;
        let gpus = identities(&nvml)?;
        Ok(NvmlReader { nvml: Some(nvml), gpus })
    }

    /// Re-initialises NVML after it went stale.
    fn ensure_initialised(&mut self) -> Result<(), ReadError> {
        if self.nvml.is_none() {
            let nvml = Nvml::init().map_err(|e| ReadError::Failed(format!("re-initialising NVML: {e}")))?;
            self.gpus = identities(&nvml).map_err(|e| ReadError::Failed(format!("listing GPUs: {e}")))?;
            self.nvml = Some(nvml);
        }
        Ok(())
    }
}

fn identities(nvml: &Nvml) -> Result<Vec<GpuIdentity>, NvmlError> {
    (0..nvml.device_count()?)
        .map(|index| {
            let dev = nvml.device_by_index(index)?;
            Ok(GpuIdentity {
                index,
                uuid: dev.uuid()?,
                pci_bus_id: dev.pci_info().ok().map(|p| p.bus_id),
                name: dev.name().ok(),
            })
        })
        .collect()
}

/// Errors after which the NVML handle is no longer trustworthy.
fn is_stale(e: &NvmlError) -> bool {
    matches!(e, NvmlError::GpuLost | NvmlError::Uninitialized | NvmlError::DriverNotLoaded | NvmlError::Unknown)
}

/// Collects field errors: `None` for the field, and remembers whether one means "stale".
struct Fields {
    stale: Option<String>,
}

impl Fields {
    fn get<T>(&mut self, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                if is_stale(&e) && self.stale.is_none() {
                    self.stale = Some(e.to_string());
                }
                None
            }
        }
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn watts(milliwatts: u32) -> f64 {
    f64::from(milliwatts) / 1000.0
}

fn sample(dev: &Device<'_>, f: &mut Fields) -> GpuSample {
    let memory = f.get(dev.memory_info());
    let retired = f.get(dev.retired_pages(RetirementCause::MultipleSingleBitEccErrors)).and_then(|single| {
        f.get(dev.retired_pages(RetirementCause::DoubleBitEccError)).map(|double| (single.len() + double.len()) as u64)
    });
    GpuSample {
        utilization_pct: f.get(dev.utilization_rates()).map(|u| f64::from(u.gpu)),
        memory_used_mib: memory.as_ref().map(|m| mib(m.used)),
        memory_total_mib: memory.as_ref().map(|m| mib(m.total)),
        temperature_c: f.get(dev.temperature(TemperatureSensor::Gpu)).map(f64::from),
        power_draw_w: f.get(dev.power_usage()).map(watts),
        power_limit_w: f.get(dev.enforced_power_limit()).map(watts),
        sm_clock_mhz: f.get(dev.clock_info(Clock::SM)).map(f64::from),
        throttle_reasons: f.get(dev.current_throttle_reasons()).map(|r| r.bits()),
        ecc_corrected: f.get(dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)),
        ecc_uncorrected: f.get(dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)),
        retired_pages: retired,
        retirement_pending: f.get(dev.are_pages_pending_retired()),
    }
}

impl GpuReader for NvmlReader {
    fn kind(&self) -> ReaderKind {
        ReaderKind::Nvml
    }

    fn read(&mut self) -> Result<Vec<GpuReading>, ReadError> {
        self.ensure_initialised()?;
        let Some(nvml) = self.nvml.as_ref() else {
            return Err(ReadError::Failed("NVML unavailable".to_owned()));
        };
        let mut fields = Fields { stale: None };
        let mut out = Vec::with_capacity(self.gpus.len());
        for gpu in &self.gpus {
            let Some(dev) = fields.get(nvml.device_by_index(gpu.index)) else {
                continue;
            };
            out.push(GpuReading { gpu: gpu.clone(), sample: sample(&dev, &mut fields) });
        }
        if let Some(reason) = fields.stale {
            // Drop the handle: the next read re-initialises NVML and re-lists the GPUs.
            self.nvml = None;
            return Err(ReadError::Failed(reason));
        }
        Ok(out)
    }
}

/// Subscribes to NVML's critical-XID and ECC events on every GPU and sends each XID to `tx`
/// (on its own thread: `nvmlEventSetWait` blocks). Ends when `tx`'s receiver is gone or
/// `stop` is set; returns at once with a warning where NVML cannot load or a GPU does not
/// support events (the kernel log still reports XIDs).
pub fn spawn_xid_events(
    tx: tokio::sync::mpsc::Sender<crate::health::XidEvent>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let spawned = std::thread::Builder::new().name("tap-nvml-events".into()).spawn(move || {
        if let Err(e) = xid_events(&tx, &stop) {
            tracing::warn!(error = %e, "NVML events unavailable: XIDs come from the kernel log only");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the NVML event thread");
    }
}

fn xid_events(
    tx: &tokio::sync::mpsc::Sender<crate::health::XidEvent>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), NvmlError> {
    use nvml_wrapper::bitmasks::event::EventTypes;
    use nvml_wrapper::enums::event::XidError;
    let nvml = Nvml::init()?;
    let mut set = nvml.create_event_set()?;
    let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR | EventTypes::SINGLE_BIT_ECC_ERROR;
    let mut registered = 0;
    for i in 0..nvml.device_count()? {
        let dev = nvml.device_by_index(i)?;
        let types = dev.supported_event_types().map(|t| t & wanted).unwrap_or(EventTypes::CRITICAL_XID_ERROR);
        set = dev.register_events(types, set).map_err(|e| e.error)?;
        registered += 1;
    }
    tracing::info!(gpus = registered, "subscribed to NVML XID and ECC events");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let ev = match set.wait(1000) {
            Ok(ev) => ev,
            Err(NvmlError::Timeout) => continue,
            Err(e) => return Err(e),
        };
        let uuid = ev.device.uuid().ok();
        let (xid, detail) = if ev.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
            match ev.event_data {
                Some(XidError::Value(x)) => (x as u32, "reported by NVML".to_owned()),
                _ => continue,
            }
        } else if ev.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
            // A double-bit ECC error is what XID 48 reports; count it as such.
            (48, "double-bit ECC error event (NVML)".to_owned())
        } else {
            tracing::info!(gpu = uuid.as_deref().unwrap_or("?"), "single-bit ECC error (corrected)");
            continue;
        };
        let x = crate::health::XidEvent { xid, uuid, pci: None, detail, source: "nvml-event" };
        if tx.blocking_send(x).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(mib(16 * 1024 * 1024 * 1024), 16384.0);
        assert_eq!(watts(253_500), 253.5);
    }

    #[test]
    fn lost_gpu_marks_the_handle_stale_but_not_supported_does_not() {
        let mut f = Fields { stale: None };
        assert_eq!(f.get::<u32>(Err(NvmlError::NotSupported)), None);
        assert!(f.stale.is_none());
        assert_eq!(f.get::<u32>(Err(NvmlError::GpuLost)), None);
        assert!(f.stale.is_some());
    }

    /// On a machine without the NVIDIA driver (this one, CI) opening fails cleanly.
    #[test]
    fn open_without_driver_is_an_error_not_a_panic() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return; // a GPU machine: covered by the device check script instead
        }
        assert!(NvmlReader::open().is_err());
    }
}
