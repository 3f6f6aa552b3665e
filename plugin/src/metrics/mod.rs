//! Prometheus metrics: per-workload activity (see `workload`) and the agent's own health, in
//! one registry served on `/metrics` (see `server`).
//!
//! Nothing here sits on the capture path's critical section: workload counters are atomics
//! the metrics sink increments through cached handles; health figures are copied from the stages'
//! own statistics once a second by the agent loop; a scrape only reads atomics.

pub mod detection;
pub mod export;
pub mod names;
pub mod server;
pub mod workload;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use self::workload::WorkloadFamilies;
use crate::internal_events::Loss;

/// Upper bounds (seconds) of the NRI handler latency buckets: the runtime waits for every
/// handler, so the interesting range is microseconds to the runtime's 2 s timeout.
pub const NRI_HANDLER_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
    1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A SysFlow record type, as its short code (PE, FF, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeName {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabel {
    pub what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PatternLabel {
    pub pattern: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// A counter that mirrors a total kept elsewhere (a stage's own statistics): each update adds
/// what the total grew by since the last one.
#[derive(Default)]
pub struct MirroredCounter {
    counter: Counter,
    last: AtomicU64,
}

impl MirroredCounter {
    pub fn set_total(&self, total: u64) {
        let last = self.last.swap(total, Relaxed);
        if total > last {
            self.counter.inc_by(total - last);
        }
    }
}

/// The agent's health metrics.
pub struct HealthMetrics {
    pub kernel_records: MirroredCounter,
    pub kernel_records_read: MirroredCounter,
    pub kernel_dropped: Family<ReasonLabel, Counter>,
    dropped_last: [AtomicU64; 6],
    pub losses: Family<WhatLabel, Counter>,
    losses_last: [AtomicU64; Loss::ALL.len()],
    pub records_filtered_by_path: MirroredCounter,
    pub args_redacted: Family<PatternLabel, Counter>,
    args_redacted_last: [AtomicU64; crate::redact::PATTERNS.len()],
    pub strings_truncated: MirroredCounter,
    pub ring_fill: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub queue_length: Gauge,
    pub records_written: Family<TypeName, Counter>,
    written_last: [AtomicU64; 12],
    pub files_completed: MirroredCounter,
    pub bytes_written: MirroredCounter,
    pub output_errors: MirroredCounter,
    pub nri_events: Family<EventLabel, Counter>,
    nri_events_last: [AtomicU64; 16],
    pub nri_handler_seconds: Histogram,
    pub nri_connected: Gauge,
    pub nri_malformed: MirroredCounter,
    pub syscall_hooks_attached: Gauge,
    pub metadata_source: Family<SourceLabel, Gauge>,
    pub containers: Gauge,
    pub pods: Gauge,
    pub late_registrations: MirroredCounter,
    pub policy_reloads: Family<ResultLabel, Counter>,
    reloads_last: [AtomicU64; 2],
    pub table_entries: Family<TableLabel, Gauge>,
    pub table_evictions: Family<TableLabel, Counter>,
    evictions_last: [AtomicU64; 3],
    pub cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    cpu_last_ticks: AtomicU64,
    pub resident_memory: Gauge,
    pub build_info: Family<BuildLabels, Gauge>,
}

/// SysFlow record types by union branch index, as sysprint abbreviates them.
pub const RECORD_TYPES: [&str; 12] = [
    "H", "C", "P", "F", "PE", "NF", "FF", "FE", "NE", "PF", "POD", "KE",
];

/// Reasons kernel records are lost, in `KernelStats` order.
pub const DROP_REASONS: [&str; 6] = [
    "ring_full",
    "fd_table_full",
    "pending_table_full",
    "read_fault",
    "state_unavailable",
    "orphaned_counters",
];

/// The NRI events counted, by `Event` number.
const NRI_EVENT_NAMES: [&str; 16] = [
    "unknown",
    "run_pod_sandbox",
    "stop_pod_sandbox",
    "remove_pod_sandbox",
    "create_container",
    "post_create_container",
    "start_container",
    "post_start_container",
    "update_container",
    "post_update_container",
    "stop_container",
    "remove_container",
    "update_pod_sandbox",
    "post_update_pod_sandbox",
    "validate_container_adjustment",
    "synchronize",
];

fn add_delta(counter: &Counter, last: &AtomicU64, total: u64) {
    let before = last.swap(total, Relaxed);
    if total > before {
        counter.inc_by(total - before);
    }
}

impl HealthMetrics {
    fn new() -> Self {
        HealthMetrics {
            kernel_records: MirroredCounter::default(),
            kernel_records_read: MirroredCounter::default(),
            kernel_dropped: Family::default(),
            dropped_last: Default::default(),
            losses: Family::default(),
            losses_last: Default::default(),
            records_filtered_by_path: MirroredCounter::default(),
            args_redacted: Family::default(),
            args_redacted_last: Default::default(),
            strings_truncated: MirroredCounter::default(),
            ring_fill: Gauge::default(),
            queue_length: Gauge::default(),
            records_written: Family::default(),
            written_last: Default::default(),
            files_completed: MirroredCounter::default(),
            bytes_written: MirroredCounter::default(),
            output_errors: MirroredCounter::default(),
            nri_events: Family::default(),
            nri_events_last: Default::default(),
            nri_handler_seconds: Histogram::new(NRI_HANDLER_BUCKETS),
            nri_connected: Gauge::default(),
            nri_malformed: MirroredCounter::default(),
            syscall_hooks_attached: Gauge::default(),
            metadata_source: Family::default(),
            containers: Gauge::default(),
            pods: Gauge::default(),
            late_registrations: MirroredCounter::default(),
            policy_reloads: Family::default(),
            reloads_last: Default::default(),
            table_entries: Family::default(),
            table_evictions: Family::default(),
            evictions_last: Default::default(),
            cpu_seconds: Counter::default(),
            cpu_last_ticks: AtomicU64::new(0),
            resident_memory: Gauge::default(),
            build_info: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        names::KERNEL_RECORDS.register(r, self.kernel_records.counter.clone());
        names::KERNEL_RECORDS_READ.register(r, self.kernel_records_read.counter.clone());
        names::KERNEL_RECORDS_DROPPED.register(r, self.kernel_dropped.clone());
        names::LOSSES.register(r, self.losses.clone());
        names::RECORDS_FILTERED_BY_PATH.register(r, self.records_filtered_by_path.counter.clone());
        names::ARGS_REDACTED.register(r, self.args_redacted.clone());
        names::SYSCALL_HOOKS_ATTACHED.register(r, self.syscall_hooks_attached.clone());
        names::KERNEL_STRINGS_TRUNCATED.register(r, self.strings_truncated.counter.clone());
        names::RING_BUFFER_FILL.register(r, self.ring_fill.clone());
        names::RECORD_QUEUE_LENGTH.register(r, self.queue_length.clone());
        names::SYSFLOW_RECORDS_WRITTEN.register(r, self.records_written.clone());
        names::SYSFLOW_FILES_COMPLETED.register(r, self.files_completed.counter.clone());
        names::SYSFLOW_WRITTEN.register(r, self.bytes_written.counter.clone());
        names::OUTPUT_ERRORS.register(r, self.output_errors.counter.clone());
        names::NRI_EVENTS.register(r, self.nri_events.clone());
        names::NRI_HANDLER_DURATION.register(r, self.nri_handler_seconds.clone());
        names::NRI_CONNECTED.register(r, self.nri_connected.clone());
        names::NRI_MALFORMED_MESSAGES.register(r, self.nri_malformed.counter.clone());
        names::METADATA_SOURCE.register(r, self.metadata_source.clone());
        names::CONTAINERS.register(r, self.containers.clone());
        names::PODS.register(r, self.pods.clone());
        names::LATE_REGISTRATIONS.register(r, self.late_registrations.counter.clone());
        names::POLICY_RELOADS.register(r, self.policy_reloads.clone());
        names::TABLE_ENTRIES.register(r, self.table_entries.clone());
        names::TABLE_EVICTIONS.register(r, self.table_evictions.clone());
        names::AGENT_CPU.register(r, self.cpu_seconds.clone());
        names::AGENT_RESIDENT_MEMORY.register(r, self.resident_memory.clone());
        names::BUILD_INFO.register(r, self.build_info.clone());
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
    }

    pub fn set_drops(&self, by_reason: [u64; 6]) {
        for (i, total) in by_reason.into_iter().enumerate() {
            let c = self.kernel_dropped.get_or_create_owned(&ReasonLabel {
                reason: DROP_REASONS[i],
            });
            add_delta(&c, &self.dropped_last[i], total);
        }
    }

    /// `by_what` in [`Loss::ALL`] order.
    pub fn set_losses(&self, by_what: [u64; Loss::ALL.len()]) {
        for (i, total) in by_what.into_iter().enumerate() {
            let c = self.losses.get_or_create_owned(&WhatLabel {
                what: Loss::ALL[i].label(),
            });
            add_delta(&c, &self.losses_last[i], total);
        }
    }

    pub fn set_records_written(&self, by_type: &[u64; 12]) {
        for (i, &total) in by_type.iter().enumerate() {
            let c = self.records_written.get_or_create_owned(&TypeName {
                r#type: RECORD_TYPES[i],
            });
            add_delta(&c, &self.written_last[i], total);
        }
    }

    pub fn set_nri_events(&self, by_slot: &[u64; 16]) {
        for (i, &total) in by_slot.iter().enumerate() {
            if total == 0 {
                continue;
            }
            let c = self.nri_events.get_or_create_owned(&EventLabel {
                event: NRI_EVENT_NAMES[i],
            });
            add_delta(&c, &self.nri_events_last[i], total);
        }
    }

    pub fn set_policy_reloads(&self, ok: u64, failed: u64) {
        for (i, (result, total)) in [("ok", ok), ("failed", failed)].into_iter().enumerate() {
            let c = self
                .policy_reloads
                .get_or_create_owned(&ResultLabel { result });
            add_delta(&c, &self.reloads_last[i], total);
        }
    }

    /// Every pattern's series exists from the start, at 0 until a redaction.
    pub fn set_args_redacted(&self, counts: &crate::redact::RedactionCounts) {
        for (i, pattern) in crate::redact::PATTERNS.into_iter().enumerate() {
            let c = self
                .args_redacted
                .get_or_create_owned(&PatternLabel { pattern });
            add_delta(&c, &self.args_redacted_last[i], counts[i]);
        }
    }

    /// Entries: [process, exited_process, file, kernel_fd]; evictions: [process,
    /// exited_process, file].
    pub fn set_tables(&self, entries: [usize; 4], evicted: [u64; 3]) {
        for (table, n) in ["process", "exited_process", "file", "kernel_fd"]
            .into_iter()
            .zip(entries)
        {
            self.table_entries
                .get_or_create(&TableLabel { table })
                .set(n as i64);
        }
        for (i, table) in ["process", "exited_process", "file"]
            .into_iter()
            .enumerate()
        {
            let c = self
                .table_evictions
                .get_or_create_owned(&TableLabel { table });
            add_delta(&c, &self.evictions_last[i], evicted[i]);
        }
    }

    pub fn set_source(&self, active: &'static str) {
        for source in ["nri", "containerd_api", "none"] {
            self.metadata_source
                .get_or_create(&SourceLabel { source })
                .set(i64::from(source == active));
        }
    }

    /// CPU time and resident memory of this process, from /proc/self.
    pub fn sample_process(&self) {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = 4096i64;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
        {
            // Fields after the command: state is field 3; utime 14, stime 15 (1-based).
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
                .sum();
            let before = self.cpu_last_ticks.swap(ticks, Relaxed);
            if ticks > before {
                self.cpu_seconds
                    .inc_by((ticks - before) as f64 / ticks_per_sec);
            }
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        {
            self.resident_memory.set(pages * page);
        }
    }
}

/// Every metric of the agent.
pub struct Metrics {
    pub registry: Registry,
    pub health: std::sync::Arc<HealthMetrics>,
    pub workload: WorkloadFamilies,
    pub detection: detection::DetectionMetrics,
    pub export: export::ExportMetrics,
    /// What `/readyz` answers (not a metric: the same server serves it).
    pub readiness: server::Readiness,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nri_sysflow");
        let health = std::sync::Arc::new(HealthMetrics::new());
        health.register(&mut registry);
        let workload = WorkloadFamilies::default();
        workload.register(&mut registry);
        let detection = detection::DetectionMetrics::default();
        detection.register(&mut registry);
        let export = export::ExportMetrics::default();
        export.register(&mut registry);
        Metrics {
            registry,
            health,
            workload,
            detection,
            export,
            readiness: server::Readiness::default(),
        }
    }

    /// The registry in the Prometheus text format (0.0.4).
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests;
