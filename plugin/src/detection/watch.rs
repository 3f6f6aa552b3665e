//! Reloads the detection rules when a rules file changes (inotify on the folders that hold
//! them, which also sees a ConfigMap's symlink swap) or on SIGHUP. Rules that do not compile
//! are rejected with the error and its position logged; the rules in force stay.

use std::sync::Arc;

use sysflow_rules::compiler::compile_sources;
use tracing::{error, info, warn};

use super::{Fingerprint, LoadedRules};
use crate::{
    file_watch::{self, Trigger, folder_of},
    metrics::detection::DetectionMetrics,
};

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Applied,
    Unchanged,
    Rejected,
}

/// Compiles the rules again if their files changed since `last`; swaps them in if they
/// compile.
pub fn reload(rules: &LoadedRules, last: &mut Fingerprint, metrics: &DetectionMetrics) -> Reload {
    let print = match super::read_trusted_sources(&rules.paths) {
        Ok(p) => p,
        Err(e) => {
            metrics.reloaded(false);
            error!("detection rules not reloaded, the rules in force stay: {e}");
            return Reload::Rejected;
        }
    };
    if print == *last {
        return Reload::Unchanged;
    }
    let compiled = compile_sources(&print);
    // Remembered either way, so an unrelated event does not log the same error again.
    *last = print;
    match compiled {
        Ok(policy) => {
            let enabled = policy.rules.iter().filter(|r| r.enabled).count();
            let lints = policy.lints.len();
            for lint in &policy.lints {
                warn!("detection rules: {lint}");
            }
            metrics.rules_loaded.set(enabled as i64);
            rules.replace(policy);
            metrics.reloaded(true);
            info!(
                rules = enabled,
                warnings = lints,
                "detection rules reloaded"
            );
            Reload::Applied
        }
        Err(e) => {
            metrics.reloaded(false);
            error!("detection rules not reloaded, the rules in force stay: {e}");
            Reload::Rejected
        }
    }
}

/// Watches the rules until the process ends. `initial`: the files of the rules in force.
pub async fn watch(rules: Arc<LoadedRules>, initial: Fingerprint, metrics: DetectionMetrics) {
    let mut last = initial;
    let folders: Vec<_> = rules.paths.iter().map(|p| folder_of(p)).collect();
    file_watch::watch(&folders, "the detection rules", |trigger| {
        if trigger == Trigger::Signal {
            last.clear();
        }
        if rules.paths.iter().any(|p| !p.exists()) {
            // Mid-swap, or deleted: keep the rules in force until the files are back.
            return;
        }
        reload(&rules, &mut last, &metrics);
    })
    .await;
}
