//! GPU health: findings from XID events (NVML events and the kernel log), from samples (ECC,
//! page retirement, GPUs missing or lost, throttling), and the standing verdict.
//!
//! Pure logic: [`Health`] takes observations with their time and returns what is new; the
//! daemon does the I/O (state file, metric, log, policy). Fatal findings stand until the node
//! restarts (a GPU that fell off the bus does not come back by itself); warnings about
//! throttling clear when it stops.

pub mod gpus;
pub mod kernel_log;
pub mod policy;
pub mod xid;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::gpu::{GpuIdentity, GpuReading, ReadError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Fatal,
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "kebab-case")]
pub enum Check {
    Xid { xid: u32 },
    EccUncorrected { count: u64 },
    RetirementPending,
    GpuMissing { expected: u32, visible: u32 },
    GpuLost,
    Throttled,
}

impl Check {
    /// The identity of a standing finding (with its GPU): repeated observations update it.
    fn key(&self) -> String {
        match self {
            Check::Xid { xid } => format!("xid-{xid}"),
            Check::EccUncorrected { .. } => "ecc-uncorrected".into(),
            Check::RetirementPending => "retirement-pending".into(),
            Check::GpuMissing { .. } => "gpu-missing".into(),
            Check::GpuLost => "gpu-lost".into(),
            Check::Throttled => "throttled".into(),
        }
    }
}

/// One standing finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    #[serde(flatten)]
    pub check: Check,
    pub severity: Severity,
    /// The GPU's UUID; `None` for findings about the node (GPUs missing, unreadable).
    pub gpu: Option<String>,
    /// Where it was seen: `nvml-event`, `kernel-log` or `sample`.
    pub source: &'static str,
    pub message: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: u64,
}

/// An XID from either source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidEvent {
    pub xid: u32,
    /// The GPU's UUID when the source knows it (NVML), else its PCI address (kernel log).
    pub uuid: Option<String>,
    pub pci: Option<String>,
    pub detail: String,
    pub source: &'static str,
}

#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// GPUs the node should have (from the instance type or the config); `None`: unchecked.
    pub expected_gpus: Option<u32>,
    /// How long fewer GPUs than expected may be visible before it is fatal (the driver may
    /// still be installing at boot).
    pub missing_grace: Duration,
    /// Consecutive failed reads, after reads worked, that mean the GPUs are lost.
    pub lost_after_failed_reads: u32,
    /// How long costly throttling must last to be reported.
    pub throttle_warning: Duration,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            expected_gpus: None,
            missing_grace: Duration::from_secs(600),
            lost_after_failed_reads: 3,
            throttle_warning: Duration::from_secs(300),
        }
    }
}

/// The node's health.
#[derive(Debug)]
pub struct Health {
    opts: HealthOptions,
    findings: BTreeMap<(String, Option<String>), Finding>,
    gpus: Vec<GpuIdentity>,
    read_ok_once: bool,
    failed_reads: u32,
    missing_since: Option<i64>,
    throttled_since: HashMap<String, i64>,
}

impl Health {
    pub fn new(opts: HealthOptions) -> Health {
        Health {
            opts,
            findings: BTreeMap::new(),
            gpus: Vec::new(),
            read_ok_once: false,
            failed_reads: 0,
            missing_since: None,
            throttled_since: HashMap::new(),
        }
    }

    /// Records a finding; returns it when it is new (not an update of a standing one).
    fn raise(
        &mut self,
        at_ms: i64,
        check: Check,
        severity: Severity,
        gpu: Option<&str>,
        source: &'static str,
        message: String,
    ) -> Option<Finding> {
        let key = (check.key(), gpu.map(str::to_owned));
        if let Some(f) = self.findings.get_mut(&key) {
            f.last_ms = at_ms;
            f.count += 1;
            f.check = check;
            return None;
        }
        let f = Finding {
            check,
            severity,
            gpu: gpu.map(str::to_owned),
            source,
            message,
            first_ms: at_ms,
            last_ms: at_ms,
            count: 1,
        };
        self.findings.insert(key, f.clone());
        Some(f)
    }

    /// GPUs missing against the instance type's count, for longer than the grace: fatal.
    fn check_missing(&mut self, at_ms: i64, visible: u32, why: &str) -> Option<Finding> {
        let expected = self.opts.expected_gpus?;
        if visible >= expected {
            self.missing_since = None;
            return None;
        }
        let since = *self.missing_since.get_or_insert(at_ms);
        if at_ms - since < self.opts.missing_grace.as_millis() as i64 {
            return None;
        }
        let msg = format!("{visible} of the instance type's {expected} GPUs visible{why}");
        self.raise(at_ms, Check::GpuMissing { expected, visible }, Severity::Fatal, None, "sample", msg)
    }

    fn clear(&mut self, check: &Check, gpu: Option<&str>) {
        self.findings.remove(&(check.key(), gpu.map(str::to_owned)));
    }

    /// One read of every GPU (or its failure); returns the new findings.
    pub fn observe_sample(&mut self, at_ms: i64, result: &Result<Vec<GpuReading>, ReadError>) -> Vec<Finding> {
        let mut new = Vec::new();
        let readings = match result {
            Ok(r) => {
                self.failed_reads = 0;
                self.read_ok_once |= !r.is_empty();
                r
            }
            Err(e) => {
                self.failed_reads += 1;
                if self.read_ok_once && self.failed_reads >= self.opts.lost_after_failed_reads {
                    let msg = format!("GPUs cannot be read for {} reads in a row: {}", self.failed_reads, e.reason());
                    new.extend(self.raise(at_ms, Check::GpuLost, Severity::Fatal, None, "sample", msg));
                } else if let ReadError::NoDriver(reason) = e {
                    // No driver to read with (nvidia-smi absent, NVML not loadable): none of the
                    // instance type's GPUs is visible, fatal after the same grace as the
                    // no-driver reader's empty reads.
                    new.extend(self.check_missing(at_ms, 0, &format!(" (no NVIDIA driver: {reason})")));
                }
                return new;
            }
        };
        if !readings.is_empty() {
            self.gpus = readings.iter().map(|r| r.gpu.clone()).collect();
        }
        new.extend(self.check_missing(at_ms, readings.len() as u32, ""));
        for r in readings {
            let uuid = r.gpu.uuid.as_str();
            let s = &r.sample;
            if let Some(n) = s.ecc_uncorrected.filter(|&n| n > 0) {
                let msg = format!("{n} uncorrected ECC errors since the driver loaded");
                new.extend(self.raise(
                    at_ms,
                    Check::EccUncorrected { count: n },
                    Severity::Fatal,
                    Some(uuid),
                    "sample",
                    msg,
                ));
            }
            if s.retirement_pending == Some(true) {
                let msg = "memory pages wait for retirement (needs a GPU reset)".to_owned();
                new.extend(self.raise(at_ms, Check::RetirementPending, Severity::Fatal, Some(uuid), "sample", msg));
            }
            match s.throttled() {
                Some(true) => {
                    let since = *self.throttled_since.entry(uuid.to_owned()).or_insert(at_ms);
                    let lasted = at_ms - since;
                    if lasted >= self.opts.throttle_warning.as_millis() as i64 {
                        let msg = format!(
                            "throttled (reasons {:#x}) for {} s",
                            s.throttle_reasons.unwrap_or(0),
                            lasted / 1000
                        );
                        new.extend(self.raise(at_ms, Check::Throttled, Severity::Warning, Some(uuid), "sample", msg));
                    }
                }
                Some(false) => {
                    self.throttled_since.remove(uuid);
                    self.clear(&Check::Throttled, Some(uuid));
                }
                None => {}
            }
        }
        new
    }

    /// One XID; returns the finding when it is new. The GPU is named by UUID: from the
    /// event, else by matching the kernel's PCI address to the GPUs last read.
    pub fn observe_xid(&mut self, at_ms: i64, ev: &XidEvent) -> Option<Finding> {
        let uuid = ev.uuid.clone().or_else(|| {
            let pci = ev.pci.as_deref()?;
            self.gpus
                .iter()
                .find(|g| g.pci_bus_id.as_deref().is_some_and(|b| xid::same_pci(b, pci)))
                .map(|g| g.uuid.clone())
        });
        // An XID whose GPU cannot be named still counts, against the node.
        let severity = if xid::is_fatal(ev.xid) { Severity::Fatal } else { Severity::Warning };
        let place = match (&uuid, &ev.pci) {
            (Some(_), _) => String::new(),
            (None, Some(p)) => format!(" on PCI {p}"),
            (None, None) => String::new(),
        };
        let msg = format!("XID {} ({}){place}: {}", ev.xid, xid::describe(ev.xid), ev.detail);
        self.raise(at_ms, Check::Xid { xid: ev.xid }, severity, uuid.as_deref(), ev.source, msg)
    }

    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.values()
    }

    /// The worst standing severity; `None`: healthy.
    pub fn verdict(&self) -> Option<Severity> {
        self.findings.values().map(|f| f.severity).max()
    }

    /// The GPUUnhealthy value per GPU last read (1: a fatal finding stands on it) and for the
    /// node (1: any fatal finding stands, on a GPU or on the node).
    pub fn unhealthy(&self) -> (Vec<(String, f64)>, f64) {
        let fatal =
            |g: Option<&str>| self.findings.values().any(|f| f.severity == Severity::Fatal && f.gpu.as_deref() == g);
        let per_gpu: Vec<(String, f64)> =
            self.gpus.iter().map(|g| (g.uuid.clone(), if fatal(Some(&g.uuid)) { 1.0 } else { 0.0 })).collect();
        let node = self.verdict() == Some(Severity::Fatal);
        (per_gpu, if node { 1.0 } else { 0.0 })
    }

    /// The state file's content.
    pub fn state(&self, now_ms: i64) -> serde_json::Value {
        let verdict = match self.verdict() {
            None => "healthy",
            Some(Severity::Warning) => "warning",
            Some(Severity::Fatal) => "fatal",
        };
        let findings: Vec<&Finding> = self.findings.values().collect();
        serde_json::json!({
            "updated": tap_core::time::rfc3339(now_ms),
            "updated_ms": now_ms,
            "verdict": verdict,
            "gpus": self.gpus.iter().map(|g| &g.uuid).collect::<Vec<_>>(),
            "findings": findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuReader;
    use crate::gpu::sim::{Fault, SimReader};

    fn opts() -> HealthOptions {
        HealthOptions {
            expected_gpus: Some(2),
            missing_grace: Duration::from_secs(60),
            lost_after_failed_reads: 3,
            throttle_warning: Duration::from_secs(30),
        }
    }

    #[test]
    fn healthy_simulated_gpus_have_no_findings() {
        let mut h = Health::new(opts());
        let mut r = SimReader::new(2, vec![]);
        for i in 0..100 {
            assert!(h.observe_sample(i * 1000, &r.read()).is_empty());
        }
        assert_eq!(h.verdict(), None);
        assert_eq!(h.unhealthy(), (vec![("GPU-SIMULATED-0000".into(), 0.0), ("GPU-SIMULATED-0001".into(), 0.0)], 0.0));
    }

    #[test]
    fn uncorrected_ecc_is_fatal_on_its_gpu_only() {
        let mut h = Health::new(opts());
        let mut r = SimReader::new(2, vec![Fault::EccErrors { gpu: 1, per_read: 1, from: 5, to: 6 }]);
        let mut new = Vec::new();
        for i in 0..10 {
            new.extend(h.observe_sample(i * 1000, &r.read()));
        }
        assert_eq!(new.len(), 1, "raised once, then updated: {new:?}");
        assert_eq!(new[0].gpu.as_deref(), Some("GPU-SIMULATED-0001"));
        assert_eq!((new[0].severity, new[0].first_ms), (Severity::Fatal, 5000));
        assert_eq!(h.unhealthy(), (vec![("GPU-SIMULATED-0000".into(), 0.0), ("GPU-SIMULATED-0001".into(), 1.0)], 1.0));
    }

    #[test]
    fn lost_gpus_need_several_failed_reads_after_success() {
        let mut h = Health::new(opts());
        let mut r = SimReader::new(2, vec![Fault::ReadFails { from: 3, to: 100 }]);
        let mut raised = Vec::new();
        for i in 0..6 {
            raised.push(h.observe_sample(i * 1000, &r.read()).len());
        }
        assert_eq!(raised, [0, 0, 0, 0, 0, 1], "the third failed read in a row is fatal");
        // Never read at all (no driver yet): not "lost".
        let mut h = Health::new(opts());
        let mut r = SimReader::new(2, vec![Fault::ReadFails { from: 0, to: 100 }]);
        for i in 0..10 {
            assert!(h.observe_sample(i * 1000, &r.read()).is_empty());
        }
    }

    #[test]
    fn missing_gpus_are_fatal_after_the_grace() {
        let mut h = Health::new(opts());
        let mut one = SimReader::new(1, vec![]);
        assert!(h.observe_sample(0, &one.read()).is_empty());
        assert!(h.observe_sample(59_000, &one.read()).is_empty());
        let f = h.observe_sample(60_000, &one.read());
        assert_eq!(f[0].check, Check::GpuMissing { expected: 2, visible: 1 });
        assert_eq!(f[0].gpu, None);
        assert_eq!(h.unhealthy().1, 1.0);
        // Seeing all of them resets the clock.
        let mut h = Health::new(opts());
        let mut two = SimReader::new(2, vec![]);
        h.observe_sample(0, &one.read());
        h.observe_sample(30_000, &two.read());
        assert!(h.observe_sample(70_000, &one.read()).is_empty());
    }

    /// A reader that fails for want of a driver (nvidia-smi absent, NVML not loadable) counts
    /// as no GPU visible, fatal after the grace like the no-driver reader's empty reads;
    /// without a known count nothing is claimed.
    #[test]
    fn no_driver_is_missing_gpus_after_the_grace() {
        let no_driver: Result<Vec<GpuReading>, ReadError> = Err(ReadError::NoDriver("NVML: not found".into()));
        let mut h = Health::new(opts());
        assert!(h.observe_sample(0, &no_driver).is_empty());
        assert!(h.observe_sample(59_000, &no_driver).is_empty(), "within the grace");
        let f = h.observe_sample(60_000, &no_driver);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].check.clone(), f[0].severity),
            (Check::GpuMissing { expected: 2, visible: 0 }, Severity::Fatal)
        );
        assert!(f[0].message.contains("no NVIDIA driver: NVML: not found"), "{}", f[0].message);
        assert_eq!(h.unhealthy().1, 1.0);
        let mut unknown = Health::new(HealthOptions { expected_gpus: None, ..opts() });
        for i in 0..100 {
            assert!(unknown.observe_sample(i * 1000, &no_driver).is_empty());
        }
    }

    #[test]
    fn throttling_warns_when_sustained_and_clears() {
        let mut h = Health::new(opts());
        let mut r = SimReader::new(2, vec![Fault::Hot { gpu: 0, celsius: 91.0, from: 0, to: 40 }]);
        let mut new = Vec::new();
        for i in 0..40 {
            new.extend(h.observe_sample(i * 1000, &r.read()));
        }
        assert_eq!(new.len(), 1);
        assert_eq!((new[0].severity, new[0].first_ms), (Severity::Warning, 30_000));
        assert_eq!(h.unhealthy().1, 0.0, "a warning does not make the node unhealthy");
        h.observe_sample(41_000, &r.read());
        assert_eq!(h.verdict(), None, "cleared once the GPU stops throttling");
    }

    #[test]
    fn xids_from_the_kernel_are_matched_by_pci() {
        let mut h = Health::new(opts());
        let mut r = SimReader::new(2, vec![]);
        h.observe_sample(0, &r.read());
        let ev = |xid, pci: &str| XidEvent {
            xid,
            uuid: None,
            pci: Some(pci.into()),
            detail: "GPU has fallen off the bus.".into(),
            source: "kernel-log",
        };
        // SimReader's GPU 1 sits at 00000000:11:00.0.
        let f = h.observe_xid(1000, &ev(79, "0000:11:00")).expect("new");
        assert_eq!((f.gpu.as_deref(), f.severity), (Some("GPU-SIMULATED-0001"), Severity::Fatal));
        assert!(f.message.starts_with("XID 79 (GPU has fallen off the bus)"), "{}", f.message);
        assert_eq!(h.observe_xid(2000, &ev(79, "0000:11:00")), None, "the same XID again updates it");
        let w = h.observe_xid(3000, &ev(13, "0000:10:00")).expect("new");
        assert_eq!((w.gpu.as_deref(), w.severity), (Some("GPU-SIMULATED-0000"), Severity::Warning));
        let unknown = h.observe_xid(4000, &ev(48, "0000:99:00")).expect("new");
        assert_eq!(unknown.gpu, None, "an XID on an unknown PCI address counts against the node");
        let state = h.state(5000);
        assert_eq!(state["verdict"], "fatal");
        assert_eq!(state["findings"].as_array().map(Vec::len), Some(3));
        assert_eq!(state["findings"][0]["check"], "xid");
    }
}
