//! Every metric's name, help text and unit, in one place. Exported with the `nri_sysflow_`
//! prefix; prometheus_client appends the unit (`_bytes`, `_seconds`, `_ratio`) and, for
//! counters, `_total`. Dashboards and alert rules query these names: a test checks that every
//! agent metric is on the agent-health dashboard.

use prometheus_client::registry::{Metric, Registry, Unit};

/// The prefix of every exported name.
pub const PREFIX: &str = "nri_sysflow";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricUnit {
    Bytes,
    Seconds,
    Ratio,
}

impl MetricUnit {
    const fn suffix(self) -> &'static str {
        match self {
            MetricUnit::Bytes => "bytes",
            MetricUnit::Seconds => "seconds",
            MetricUnit::Ratio => "ratio",
        }
    }

    fn unit(self) -> Unit {
        match self {
            MetricUnit::Bytes => Unit::Bytes,
            MetricUnit::Seconds => Unit::Seconds,
            MetricUnit::Ratio => Unit::Other(self.suffix().into()),
        }
    }
}

/// One metric family's name (without prefix and unit), help text and unit.
#[derive(Debug)]
pub struct MetricName {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<MetricUnit>,
}

impl MetricName {
    const fn new(name: &'static str, help: &'static str) -> Self {
        MetricName {
            name,
            help,
            unit: None,
        }
    }

    const fn with_unit(name: &'static str, help: &'static str, unit: MetricUnit) -> Self {
        MetricName {
            name,
            help,
            unit: Some(unit),
        }
    }

    /// The family's name as Prometheus shows it (series of counters add `_total`, of
    /// histograms `_bucket`, `_sum` and `_count`).
    pub fn exported(&self) -> String {
        match self.unit {
            Some(unit) => format!("{PREFIX}_{}_{}", self.name, unit.suffix()),
            None => format!("{PREFIX}_{}", self.name),
        }
    }

    /// Registers `metric` under this name in a registry made with [`PREFIX`].
    pub fn register(&self, registry: &mut Registry, metric: impl Metric) {
        match self.unit {
            Some(unit) => registry.register_with_unit(self.name, self.help, unit.unit(), metric),
            None => registry.register(self.name, self.help, metric),
        }
    }
}

// The agent's health.

pub const KERNEL_RECORDS: MetricName = MetricName::new(
    "kernel_records",
    "Records the eBPF programs delivered to the ring buffers",
);

pub const KERNEL_RECORDS_READ: MetricName = MetricName::new(
    "kernel_records_read",
    "Records the agent read from the ring buffers and decoded (undecodable ones are counted under losses): kernel_records minus this is what the queue and rings still hold",
);

pub const KERNEL_RECORDS_DROPPED: MetricName = MetricName::new(
    "kernel_records_dropped",
    "Kernel records lost, by reason: ring_full (ring buffer full), fd_table_full and pending_table_full (kernel tables full), read_fault (unreadable user memory), state_unavailable (a process's state could not be allocated), orphaned_counters (counters of a process that ended without reporting them)",
);

pub const LOSSES: MetricName = MetricName::new(
    "losses",
    "What the agent lost or gave up outside the kernel, by what: undecodable_kernel_records, dropped_workload_updates (container updates the workload update queue had no room for), unresolved_container_cgroups, untracked_containers (workload table full), kernel_map_errors, sysflow_records_lost (output failed), sysflow_records_refused (a bug), missing_ancestors (dangling parent OIDs), rules_records_dropped (the detection rules' queue was full), alerts_lost (the alert file could not be written), export_files_dropped (completed files dropped from a full export spool)",
);

pub const ARGS_REDACTED: MetricName = MetricName::new(
    "args_redacted",
    "Secrets replaced by <redacted> in captured command lines, by pattern: flag (--password=...), assignment (NAME=value with a secret-looking name), url_password (user:password@ in a URL), client_flag (mysql -p..., sshpass -p, redis-cli -a, curl -u), auth_header (Authorization: ...)",
);

pub const RECORDS_FILTERED_BY_PATH: MetricName = MetricName::new(
    "records_filtered_by_path",
    "File records a container's path policy left out",
);

pub const SYSCALL_HOOKS_ATTACHED: MetricName = MetricName::new(
    "syscall_hooks_attached",
    "1 while the syscall hooks are attached: some cgroup wants file, network, I/O or syscall-level process capture (0: no thread on the node pays for them)",
);

pub const KERNEL_STRINGS_TRUNCATED: MetricName = MetricName::new(
    "kernel_strings_truncated",
    "Paths and arguments cut at their size limit",
);

pub const RING_BUFFER_FILL: MetricName = MetricName::with_unit(
    "ring_buffer_fill",
    "Fullest ring buffer, as a fraction of its size, at the last sample",
    MetricUnit::Ratio,
);

pub const RECORD_QUEUE_LENGTH: MetricName = MetricName::new(
    "record_queue_length",
    "Kernel records read from the rings and waiting for the pipeline",
);

pub const SYSFLOW_RECORDS_WRITTEN: MetricName = MetricName::new(
    "sysflow_records_written",
    "SysFlow records written, by type (PE, FF, NF, FE, PF, and entities P, F, C, POD, H)",
);

pub const SYSFLOW_FILES_COMPLETED: MetricName = MetricName::new(
    "sysflow_files_completed",
    "SysFlow files completed (rotated or closed)",
);

pub const SYSFLOW_WRITTEN: MetricName = MetricName::with_unit(
    "sysflow_written",
    "Bytes written to SysFlow files",
    MetricUnit::Bytes,
);

pub const OUTPUT_ERRORS: MetricName = MetricName::new(
    "output_errors",
    "SysFlow output operations that failed (a block or a file that could not be written)",
);

pub const NRI_EVENTS: MetricName = MetricName::new("nri_events", "NRI events handled, by event");

pub const NRI_HANDLER_DURATION: MetricName = MetricName::with_unit(
    "nri_handler_duration",
    "Time NRI handlers took (the runtime waits for them)",
    MetricUnit::Seconds,
);

pub const NRI_CONNECTED: MetricName = MetricName::new(
    "nri_connected",
    "1 while registered with the runtime over NRI",
);

pub const NRI_MALFORMED_MESSAGES: MetricName = MetricName::new(
    "nri_malformed_messages",
    "Malformed NRI messages: frames that are no NRI frame and requests that cannot be decoded (each closes the connection)",
);

pub const METADATA_SOURCE: MetricName = MetricName::new(
    "metadata_source",
    "1 for the source of pod metadata in use: nri, containerd_api or none",
);

pub const CONTAINERS: MetricName = MetricName::new("containers", "Containers known");

pub const PODS: MetricName = MetricName::new("pods", "Pods known");

pub const LATE_REGISTRATIONS: MetricName = MetricName::new(
    "late_registrations",
    "Containers registered after their first process ran (containerd API fallback)",
);

pub const POLICY_RELOADS: MetricName = MetricName::new(
    "policy_reloads",
    "Capture policy reloads, by result (ok, failed)",
);

pub const TABLE_ENTRIES: MetricName = MetricName::new(
    "table_entries",
    "Entries in the agent's tables (process, file, kernel_fd; exited_process: the process table's entries of exited processes, kept for late references)",
);

pub const TABLE_EVICTIONS: MetricName = MetricName::new(
    "table_evictions",
    "Entries evicted from full tables (process, file; exited_process: exited processes forgotten before their 10 s to keep at most kernel.max_exited_processes)",
);

pub const AGENT_CPU: MetricName = MetricName::with_unit(
    "agent_cpu",
    "CPU time the agent used (user + system)",
    MetricUnit::Seconds,
);

pub const AGENT_RESIDENT_MEMORY: MetricName = MetricName::with_unit(
    "agent_resident_memory",
    "The agent's resident memory",
    MetricUnit::Bytes,
);

pub const BUILD_INFO: MetricName =
    MetricName::new("build_info", "Always 1; the version as a label");

/// The agent metrics, in the order they are exported.
pub const HEALTH: [&MetricName; 28] = [
    &KERNEL_RECORDS,
    &KERNEL_RECORDS_READ,
    &KERNEL_RECORDS_DROPPED,
    &LOSSES,
    &RECORDS_FILTERED_BY_PATH,
    &ARGS_REDACTED,
    &SYSCALL_HOOKS_ATTACHED,
    &KERNEL_STRINGS_TRUNCATED,
    &RING_BUFFER_FILL,
    &RECORD_QUEUE_LENGTH,
    &SYSFLOW_RECORDS_WRITTEN,
    &SYSFLOW_FILES_COMPLETED,
    &SYSFLOW_WRITTEN,
    &OUTPUT_ERRORS,
    &NRI_EVENTS,
    &NRI_HANDLER_DURATION,
    &NRI_CONNECTED,
    &NRI_MALFORMED_MESSAGES,
    &METADATA_SOURCE,
    &CONTAINERS,
    &PODS,
    &LATE_REGISTRATIONS,
    &POLICY_RELOADS,
    &TABLE_ENTRIES,
    &TABLE_EVICTIONS,
    &AGENT_CPU,
    &AGENT_RESIDENT_MEMORY,
    &BUILD_INFO,
];

// Detection rules.

pub const ALERTS: MetricName = MetricName::new(
    "alerts",
    "Alerts the detection rules raised, by rule, priority (low, medium, high), namespace, pod and container (all three empty for host processes)",
);

pub const RULES_RECORDS_EVALUATED: MetricName = MetricName::new(
    "rules_records_evaluated",
    "SysFlow records the detection rules were evaluated on",
);

pub const RULES_EVALUATION: MetricName = MetricName::with_unit(
    "rules_evaluation",
    "Time the detection rules' worker spent flattening records and evaluating the rules on them",
    MetricUnit::Seconds,
);

pub const RULES_HANDOFF: MetricName = MetricName::with_unit(
    "rules_handoff",
    "Time the pipeline spent handing records to the detection rules' worker (passing over those known quiet, copying the rest): what the rules cost the capture path",
    MetricUnit::Seconds,
);

pub const RULES_RELOADS: MetricName = MetricName::new(
    "rules_reloads",
    "Detection rules reloads, by result (ok; failed: the rules in force stay)",
);

pub const RULES_LOADED: MetricName =
    MetricName::new("rules_loaded", "Enabled detection rules in force");

/// The detection rules' metrics.
pub const DETECTION: [&MetricName; 6] = [
    &ALERTS,
    &RULES_RECORDS_EVALUATED,
    &RULES_EVALUATION,
    &RULES_HANDOFF,
    &RULES_RELOADS,
    &RULES_LOADED,
];

// Export to an object store.

pub const EXPORT_UPLOADS: MetricName = MetricName::new(
    "export_uploads",
    "Files uploaded to the object store and confirmed there (size and checksum), by format (sysflow, parquet, alerts)",
);

pub const EXPORT_UPLOADED: MetricName = MetricName::with_unit(
    "export_uploaded",
    "Bytes uploaded to the object store and confirmed there, by format",
    MetricUnit::Bytes,
);

pub const EXPORT_FAILURES: MetricName = MetricName::new(
    "export_failures",
    "Failed export attempts, by reason (unreachable, tls, credentials, bucket, verify, store, local, convert); the file stays in the spool and is retried",
);

pub const EXPORT_RETRIES: MetricName = MetricName::new(
    "export_retries",
    "Upload attempts made again after a failure (after a capped, jittered backoff)",
);

pub const EXPORT_SPOOL_FILES: MetricName = MetricName::new(
    "export_spool_files",
    "Completed files waiting in the output folder for upload",
);

pub const EXPORT_SPOOL: MetricName = MetricName::with_unit(
    "export_spool",
    "Bytes of the completed files waiting for upload",
    MetricUnit::Bytes,
);

pub const EXPORT_OLDEST_WAITING: MetricName = MetricName::with_unit(
    "export_oldest_waiting",
    "Age of the oldest file waiting for upload (0 when none waits)",
    MetricUnit::Seconds,
);

pub const EXPORT_DROPPED_FILES: MetricName = MetricName::new(
    "export_dropped_files",
    "Files dropped from a full spool (export.spool_max_bytes) without being uploaded, the oldest first",
);

pub const EXPORT_DROPPED: MetricName = MetricName::with_unit(
    "export_dropped",
    "Bytes of the files dropped from a full spool",
    MetricUnit::Bytes,
);

/// The exporter's metrics.
pub const EXPORT: [&MetricName; 9] = [
    &EXPORT_UPLOADS,
    &EXPORT_UPLOADED,
    &EXPORT_FAILURES,
    &EXPORT_RETRIES,
    &EXPORT_SPOOL_FILES,
    &EXPORT_SPOOL,
    &EXPORT_OLDEST_WAITING,
    &EXPORT_DROPPED_FILES,
    &EXPORT_DROPPED,
];

// Per workload (labels: namespace, pod, container).

pub const WORKLOAD_PROCESSES_STARTED: MetricName = MetricName::new(
    "workload_processes_started",
    "Programs started (successful exec)",
);

pub const WORKLOAD_EXEC_FAILURES: MetricName =
    MetricName::new("workload_exec_failures", "Failed exec calls");

pub const WORKLOAD_PROCESS_EXITS: MetricName = MetricName::new(
    "workload_process_exits",
    "Process exits, by class: success (exit 0), failure (non-zero exit), signal",
);

pub const WORKLOAD_ACTIVE_PROCESSES: MetricName =
    MetricName::new("workload_active_processes", "Processes alive now");

pub const WORKLOAD_FILE_OPENS: MetricName = MetricName::new("workload_file_opens", "Files opened");

pub const WORKLOAD_FILE_OPEN_FAILURES: MetricName =
    MetricName::new("workload_file_open_failures", "Failed open calls");

pub const WORKLOAD_FILE_READ: MetricName = MetricName::with_unit(
    "workload_file_read",
    "Bytes read from files (counted when their FileFlow is written)",
    MetricUnit::Bytes,
);

pub const WORKLOAD_FILE_WRITTEN: MetricName = MetricName::with_unit(
    "workload_file_written",
    "Bytes written to files (counted when their FileFlow is written)",
    MetricUnit::Bytes,
);

pub const WORKLOAD_FILE_READ_OPS: MetricName =
    MetricName::new("workload_file_read_ops", "File read calls");

pub const WORKLOAD_FILE_WRITE_OPS: MetricName =
    MetricName::new("workload_file_write_ops", "File write calls");

pub const WORKLOAD_FILE_RENAMES: MetricName =
    MetricName::new("workload_file_renames", "Files renamed");

pub const WORKLOAD_FILE_UNLINKS: MetricName =
    MetricName::new("workload_file_unlinks", "Files and directories removed");

pub const WORKLOAD_NETWORK_CONNECTIONS: MetricName = MetricName::new(
    "workload_network_connections",
    "Connections opened, by direction and protocol",
);

pub const WORKLOAD_NETWORK_SENT: MetricName = MetricName::with_unit(
    "workload_network_sent",
    "Bytes sent on sockets (counted when their NetworkFlow is written)",
    MetricUnit::Bytes,
);

pub const WORKLOAD_NETWORK_RECEIVED: MetricName = MetricName::with_unit(
    "workload_network_received",
    "Bytes received on sockets (counted when their NetworkFlow is written)",
    MetricUnit::Bytes,
);

/// Per-workload metrics, in the order they are exported.
pub const WORKLOAD: [&MetricName; 15] = [
    &WORKLOAD_PROCESSES_STARTED,
    &WORKLOAD_EXEC_FAILURES,
    &WORKLOAD_PROCESS_EXITS,
    &WORKLOAD_ACTIVE_PROCESSES,
    &WORKLOAD_FILE_OPENS,
    &WORKLOAD_FILE_OPEN_FAILURES,
    &WORKLOAD_FILE_READ,
    &WORKLOAD_FILE_WRITTEN,
    &WORKLOAD_FILE_READ_OPS,
    &WORKLOAD_FILE_WRITE_OPS,
    &WORKLOAD_FILE_RENAMES,
    &WORKLOAD_FILE_UNLINKS,
    &WORKLOAD_NETWORK_CONNECTIONS,
    &WORKLOAD_NETWORK_SENT,
    &WORKLOAD_NETWORK_RECEIVED,
];
