//! Copies every stage's own statistics into the health metrics, once a second. The stages
//! keep counting as they always do; a scrape reads only what this copied.

use std::sync::atomic::Ordering::Relaxed;

use crate::{
    internal_events::Losses,
    metrics::{HealthMetrics, server::Readiness},
    nri::stats::NriStats,
    probe::Probe,
    sink::sysflow_files::FileSinkReport,
    state::StateStats,
    workloads::{Workloads, source::ActiveSource},
};

pub struct Sources<'a> {
    pub probe: &'a Probe,
    pub losses: &'a Losses,
    pub state: &'a StateStats,
    pub files: &'a FileSinkReport,
    pub queue_length: usize,
    /// Records read from the rings and decoded.
    pub records_read: u64,
    pub kernel_fd_entries: usize,
    pub nri: &'a NriStats,
    pub workloads: &'a Workloads,
    pub source: ActiveSource,
    pub source_settled: bool,
}

/// Sets `/readyz`'s answer: the output takes writes unless a write failed since the last
/// tick (`failures_before`: the count then; returns the count now).
pub fn update_readiness(r: &Readiness, s: &Sources<'_>, failures_before: u64) -> u64 {
    let failures = s
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .writer
        .output_failures;
    r.set_output_writable(failures == failures_before);
    r.set_metadata_source(s.nri.connected.load(Relaxed) || s.source_settled);
    failures
}

pub fn update(m: &HealthMetrics, s: &Sources<'_>) {
    if let Ok(k) = s.probe.kernel_stats() {
        m.kernel_records.set_total(k.records_emitted);
        m.set_drops([
            k.ring_full,
            k.fd_table_full,
            k.pending_table_full,
            k.read_faults,
            k.state_unavailable,
            k.orphaned_counters,
        ]);
        m.strings_truncated.set_total(k.strings_truncated);
    }
    m.kernel_records_read.set_total(s.records_read);
    m.ring_fill.set(s.probe.ring_fill());
    m.syscall_hooks_attached
        .set(i64::from(s.probe.syscall_hooks_attached()));
    m.queue_length.set(s.queue_length as i64);

    let files = s.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let writer = &files.writer;
    m.set_records_written(&writer.records_by_type);
    m.files_completed.set_total(writer.files_completed);
    m.bytes_written.set_total(writer.bytes_written);
    m.output_errors.set_total(writer.output_failures);
    m.set_losses(s.losses.counts());
    m.records_filtered_by_path
        .set_total(s.state.filtered_by_path);
    m.set_args_redacted(&s.state.args_redacted);
    m.set_tables(
        [
            s.state.processes,
            s.state.exited_processes,
            s.state.files,
            s.kernel_fd_entries,
        ],
        [
            s.state.processes_evicted,
            s.state.exited_processes_evicted,
            s.state.files_evicted,
        ],
    );

    let events: [u64; 16] = std::array::from_fn(|i| s.nri.events[i].load(Relaxed));
    m.set_nri_events(&events);
    m.nri_connected
        .set(i64::from(s.nri.connected.load(Relaxed)));
    m.nri_malformed.set_total(s.nri.malformed.load(Relaxed));
    m.set_source(match s.source {
        ActiveSource::Nri => "nri",
        ActiveSource::ContainerdApi => "containerd_api",
        ActiveSource::None => "none",
    });

    m.containers.set(s.workloads.container_count() as i64);
    m.pods.set(s.workloads.pod_count() as i64);
    let w = &s.workloads.stats;
    m.late_registrations
        .set_total(w.late_registrations.load(Relaxed));
    m.set_policy_reloads(
        w.policy_reloads_ok.load(Relaxed),
        w.policy_reloads_failed.load(Relaxed),
    );
    m.sample_process();
}
