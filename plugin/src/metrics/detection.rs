//! The detection rules' metrics: alerts by rule and workload, records evaluated, time spent,
//! reloads. Updated by the rules' worker thread, but for the time the pipeline spends handing
//! records over.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{ResultLabel, names};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// A rule name from the loaded files (so the label set is bounded by them).
    pub rule: String,
    pub priority: &'static str,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

#[derive(Clone, Default)]
pub struct DetectionMetrics {
    pub alerts: Family<AlertLabels, Counter>,
    pub records_evaluated: Counter,
    pub evaluation_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Updated by the pipeline (the rules' sink), the one exception.
    pub handoff_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub reloads: Family<ResultLabel, Counter>,
    pub rules_loaded: Gauge,
}

impl DetectionMetrics {
    pub fn register(&self, r: &mut Registry) {
        names::ALERTS.register(r, self.alerts.clone());
        names::RULES_RECORDS_EVALUATED.register(r, self.records_evaluated.clone());
        names::RULES_EVALUATION.register(r, self.evaluation_seconds.clone());
        names::RULES_HANDOFF.register(r, self.handoff_seconds.clone());
        names::RULES_RELOADS.register(r, self.reloads.clone());
        names::RULES_LOADED.register(r, self.rules_loaded.clone());
        // Both results from the start, so a rate over them is 0, not absent.
        for result in ["ok", "failed"] {
            drop(self.reloads.get_or_create(&ResultLabel { result }));
        }
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }
}
