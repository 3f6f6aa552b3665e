//! The exporter's metrics: uploads and bytes by format, failures by reason, retries, the
//! spool (files, bytes, age of the oldest) and what a full spool dropped. Updated by the
//! exporter task only.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::names;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    pub format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every `reason` of `export_failures_total`, present from the start so rates are 0, not absent.
pub const FAILURE_REASONS: [&str; 8] = [
    "unreachable",
    "tls",
    "credentials",
    "bucket",
    "verify",
    "store",
    "local",
    "convert",
];

#[derive(Clone, Default)]
pub struct ExportMetrics {
    pub uploads: Family<FormatLabel, Counter>,
    pub uploaded_bytes: Family<FormatLabel, Counter>,
    pub failures: Family<ReasonLabel, Counter>,
    pub retries: Counter,
    pub spool_files: Gauge,
    pub spool_bytes: Gauge,
    pub oldest_waiting_seconds: Gauge,
    pub dropped_files: Counter,
    pub dropped_bytes: Counter,
}

impl ExportMetrics {
    pub fn register(&self, r: &mut Registry) {
        names::EXPORT_UPLOADS.register(r, self.uploads.clone());
        names::EXPORT_UPLOADED.register(r, self.uploaded_bytes.clone());
        names::EXPORT_FAILURES.register(r, self.failures.clone());
        names::EXPORT_RETRIES.register(r, self.retries.clone());
        names::EXPORT_SPOOL_FILES.register(r, self.spool_files.clone());
        names::EXPORT_SPOOL.register(r, self.spool_bytes.clone());
        names::EXPORT_OLDEST_WAITING.register(r, self.oldest_waiting_seconds.clone());
        names::EXPORT_DROPPED_FILES.register(r, self.dropped_files.clone());
        names::EXPORT_DROPPED.register(r, self.dropped_bytes.clone());
        for format in ["sysflow", "parquet", "alerts"] {
            drop(self.uploads.get_or_create(&FormatLabel { format }));
            drop(self.uploaded_bytes.get_or_create(&FormatLabel { format }));
        }
        for reason in FAILURE_REASONS {
            drop(self.failures.get_or_create(&ReasonLabel { reason }));
        }
    }

    pub fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn uploaded(&self, format: &'static str, bytes: u64) {
        self.uploads.get_or_create(&FormatLabel { format }).inc();
        self.uploaded_bytes
            .get_or_create(&FormatLabel { format })
            .inc_by(bytes);
    }
}
