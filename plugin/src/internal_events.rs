//! Internal events: every place the agent loses or gives up something outside the kernel has
//! one named [`Loss`] here. Emitting it counts it (exported as
//! `nri_sysflow_losses_total{what}`, on the agent-health dashboard's Losses panel) and logs it,
//! rate-limited per kind: the first at once, then at most one line per ten seconds saying how
//! many were not logged. Sites can fire per record, so the log must not grow with the loss.
//!
//! The kernel's own losses are counted in the kernel (`kernel_records_dropped_total`); the
//! writer's are counted by the writer library and turned into events by the file sink.

use std::{
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tracing::warn;

use crate::log_limit::LogLimiter;

/// How often each kind of loss is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What was lost, by the stage that lost it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// probe: a ring item that did not decode (a kernel/user-space layout mismatch).
    UndecodableKernelRecord,
    /// workloads: a container update the update queue had no room for (its metadata comes
    /// with the next update, or never).
    DroppedWorkloadUpdate,
    /// workloads: a container whose cgroup could not be found (captured untagged, in the
    /// default mode).
    UnresolvedContainerCgroup,
    /// workloads: a container not tracked because the workload table was full.
    UntrackedContainer,
    /// workloads: a capture-mode map update the kernel refused.
    KernelMapError,
    /// sink: a SysFlow record given up because the output failed (full disk, unwritable
    /// directory).
    SysflowRecordLost,
    /// sink: a SysFlow record the writer refused (it refers to an entity it never got: a bug).
    SysflowRecordRefused,
    /// sink: a process written with a parent the writer never got (a dangling parent OID).
    MissingAncestor,
    /// detection: a record the detection rules' queue had no room for (not evaluated).
    RulesRecordDropped,
    /// detection: an alert the alert file could not take (full disk, unwritable directory).
    AlertLost,
    /// export: a completed file dropped from a full spool without being uploaded.
    ExportFileDropped,
}

impl Loss {
    pub const ALL: [Loss; 11] = [
        Loss::UndecodableKernelRecord,
        Loss::DroppedWorkloadUpdate,
        Loss::UnresolvedContainerCgroup,
        Loss::UntrackedContainer,
        Loss::KernelMapError,
        Loss::SysflowRecordLost,
        Loss::SysflowRecordRefused,
        Loss::MissingAncestor,
        Loss::RulesRecordDropped,
        Loss::AlertLost,
        Loss::ExportFileDropped,
    ];

    /// The `what` label of `nri_sysflow_losses_total` and of the log line.
    pub const fn label(self) -> &'static str {
        match self {
            Loss::UndecodableKernelRecord => "undecodable_kernel_records",
            Loss::DroppedWorkloadUpdate => "dropped_workload_updates",
            Loss::UnresolvedContainerCgroup => "unresolved_container_cgroups",
            Loss::UntrackedContainer => "untracked_containers",
            Loss::KernelMapError => "kernel_map_errors",
            Loss::SysflowRecordLost => "sysflow_records_lost",
            Loss::SysflowRecordRefused => "sysflow_records_refused",
            Loss::MissingAncestor => "missing_ancestors",
            Loss::RulesRecordDropped => "rules_records_dropped",
            Loss::AlertLost => "alerts_lost",
            Loss::ExportFileDropped => "export_files_dropped",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The counts and log limits of every [`Loss`], shared by the stages that can lose something.
pub struct Losses {
    counts: [AtomicU64; Loss::ALL.len()],
    logged: [Mutex<LogLimiter>; Loss::ALL.len()],
}

impl Default for Losses {
    fn default() -> Self {
        Losses {
            counts: Default::default(),
            logged: std::array::from_fn(|_| Mutex::new(LogLimiter::new(LOG_EVERY))),
        }
    }
}

impl Losses {
    /// Counts `count` of `loss` and logs `why`, unless this kind was logged less than ten
    /// seconds ago.
    pub fn emit(&self, loss: Loss, count: u64, why: impl fmt::Display) {
        if count == 0 {
            return;
        }
        self.counts[loss.index()].fetch_add(count, Relaxed);
        let allowed = self.logged[loss.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow();
        if let Some(not_logged) = allowed {
            warn!(what = loss.label(), count, not_logged, "{why}");
        }
    }

    pub fn count(&self, loss: Loss) -> u64 {
        self.counts[loss.index()].load(Relaxed)
    }

    /// Every count, in [`Loss::ALL`] order.
    pub fn counts(&self) -> [u64; Loss::ALL.len()] {
        Loss::ALL.map(|loss| self.count(loss))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_counts_on_its_own_and_all_is_in_discriminant_order() {
        for (i, loss) in Loss::ALL.into_iter().enumerate() {
            assert_eq!(loss.index(), i, "{loss:?}");
        }
        let losses = Losses::default();
        losses.emit(Loss::SysflowRecordLost, 3, "disk full");
        losses.emit(Loss::SysflowRecordLost, 2, "disk full");
        losses.emit(Loss::KernelMapError, 1, "EPERM");
        losses.emit(Loss::MissingAncestor, 0, "nothing");
        assert_eq!(losses.counts(), [0, 0, 0, 0, 1, 5, 0, 0, 0, 0, 0]);
    }
}
