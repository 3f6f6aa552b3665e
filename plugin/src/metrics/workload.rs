//! Per-workload metrics (labels: namespace, pod, container), counted from the very SysFlow
//! records the pipeline writes, so they agree with the `.sf` files. Handles are cached per
//! container: the record path increments atomics, it does not look label sets up.

use std::collections::HashMap;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use sysflow::{Record, encoding::op};

use super::names;

/// Who a series is about. Host processes have all three empty.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    namespace: String,
    pod: String,
    container: String,
    /// success (0), failure (non-zero code) or signal.
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    namespace: String,
    pod: String,
    container: String,
    /// inbound (accepted) or outbound (connected).
    direction: &'static str,
    /// tcp, udp or other.
    protocol: &'static str,
}

/// The metric families, registered once.
#[derive(Clone, Default)]
pub struct WorkloadFamilies {
    processes_started: Family<WorkloadLabels, Counter>,
    exec_failures: Family<WorkloadLabels, Counter>,
    exits: Family<ExitLabels, Counter>,
    active_processes: Family<WorkloadLabels, Gauge>,
    file_opens: Family<WorkloadLabels, Counter>,
    file_open_failures: Family<WorkloadLabels, Counter>,
    file_read_bytes: Family<WorkloadLabels, Counter>,
    file_written_bytes: Family<WorkloadLabels, Counter>,
    file_read_ops: Family<WorkloadLabels, Counter>,
    file_write_ops: Family<WorkloadLabels, Counter>,
    file_renames: Family<WorkloadLabels, Counter>,
    file_unlinks: Family<WorkloadLabels, Counter>,
    connections: Family<ConnectionLabels, Counter>,
    network_sent_bytes: Family<WorkloadLabels, Counter>,
    network_received_bytes: Family<WorkloadLabels, Counter>,
}

impl WorkloadFamilies {
    pub fn register(&self, r: &mut Registry) {
        names::WORKLOAD_PROCESSES_STARTED.register(r, self.processes_started.clone());
        names::WORKLOAD_EXEC_FAILURES.register(r, self.exec_failures.clone());
        names::WORKLOAD_PROCESS_EXITS.register(r, self.exits.clone());
        names::WORKLOAD_ACTIVE_PROCESSES.register(r, self.active_processes.clone());
        names::WORKLOAD_FILE_OPENS.register(r, self.file_opens.clone());
        names::WORKLOAD_FILE_OPEN_FAILURES.register(r, self.file_open_failures.clone());
        names::WORKLOAD_FILE_READ.register(r, self.file_read_bytes.clone());
        names::WORKLOAD_FILE_WRITTEN.register(r, self.file_written_bytes.clone());
        names::WORKLOAD_FILE_READ_OPS.register(r, self.file_read_ops.clone());
        names::WORKLOAD_FILE_WRITE_OPS.register(r, self.file_write_ops.clone());
        names::WORKLOAD_FILE_RENAMES.register(r, self.file_renames.clone());
        names::WORKLOAD_FILE_UNLINKS.register(r, self.file_unlinks.clone());
        names::WORKLOAD_NETWORK_CONNECTIONS.register(r, self.connections.clone());
        names::WORKLOAD_NETWORK_SENT.register(r, self.network_sent_bytes.clone());
        names::WORKLOAD_NETWORK_RECEIVED.register(r, self.network_received_bytes.clone());
    }

    /// Drops every series of a workload (after it was removed and its grace period passed).
    pub fn remove(&self, l: &WorkloadLabels) {
        for f in [
            &self.processes_started,
            &self.exec_failures,
            &self.file_opens,
            &self.file_open_failures,
            &self.file_read_bytes,
            &self.file_written_bytes,
            &self.file_read_ops,
            &self.file_write_ops,
            &self.file_renames,
            &self.file_unlinks,
            &self.network_sent_bytes,
            &self.network_received_bytes,
        ] {
            f.remove(l);
        }
        self.active_processes.remove(l);
        for class in ["success", "failure", "signal"] {
            self.exits.remove(&ExitLabels {
                namespace: l.namespace.clone(),
                pod: l.pod.clone(),
                container: l.container.clone(),
                class,
            });
        }
        for direction in ["inbound", "outbound"] {
            for protocol in ["tcp", "udp", "other"] {
                self.connections.remove(&ConnectionLabels {
                    namespace: l.namespace.clone(),
                    pod: l.pod.clone(),
                    container: l.container.clone(),
                    direction,
                    protocol,
                });
            }
        }
    }

    fn handles(&self, l: &WorkloadLabels) -> WorkloadCounters {
        let exit = |class| {
            self.exits.get_or_create_owned(&ExitLabels {
                namespace: l.namespace.clone(),
                pod: l.pod.clone(),
                container: l.container.clone(),
                class,
            })
        };
        let conn = |direction, protocol| {
            self.connections.get_or_create_owned(&ConnectionLabels {
                namespace: l.namespace.clone(),
                pod: l.pod.clone(),
                container: l.container.clone(),
                direction,
                protocol,
            })
        };
        WorkloadCounters {
            processes_started: self.processes_started.get_or_create_owned(l),
            exec_failures: self.exec_failures.get_or_create_owned(l),
            exits: [exit("success"), exit("failure"), exit("signal")],
            active_processes: self.active_processes.get_or_create_owned(l),
            file_opens: self.file_opens.get_or_create_owned(l),
            file_open_failures: self.file_open_failures.get_or_create_owned(l),
            file_read_bytes: self.file_read_bytes.get_or_create_owned(l),
            file_written_bytes: self.file_written_bytes.get_or_create_owned(l),
            file_read_ops: self.file_read_ops.get_or_create_owned(l),
            file_write_ops: self.file_write_ops.get_or_create_owned(l),
            file_renames: self.file_renames.get_or_create_owned(l),
            file_unlinks: self.file_unlinks.get_or_create_owned(l),
            connections: [
                conn("inbound", "tcp"),
                conn("inbound", "udp"),
                conn("inbound", "other"),
                conn("outbound", "tcp"),
                conn("outbound", "udp"),
                conn("outbound", "other"),
            ],
            network_sent_bytes: self.network_sent_bytes.get_or_create_owned(l),
            network_received_bytes: self.network_received_bytes.get_or_create_owned(l),
        }
    }
}

/// One workload's series handles (shared atomics).
#[derive(Clone)]
pub struct WorkloadCounters {
    processes_started: Counter,
    exec_failures: Counter,
    exits: [Counter; 3],
    active_processes: Gauge,
    file_opens: Counter,
    file_open_failures: Counter,
    file_read_bytes: Counter,
    file_written_bytes: Counter,
    file_read_ops: Counter,
    file_write_ops: Counter,
    file_renames: Counter,
    file_unlinks: Counter,
    connections: [Counter; 6],
    network_sent_bytes: Counter,
    network_received_bytes: Counter,
}

fn protocol_slot(proto: i32) -> usize {
    match proto {
        6 => 0,
        17 => 1,
        _ => 2,
    }
}

fn positive(v: i64) -> u64 {
    v.max(0) as u64
}

impl WorkloadCounters {
    /// Counts one SysFlow record written for this workload.
    pub fn observe(&self, record: &Record) {
        match record {
            Record::ProcessEvent(e) if e.op_flags == op::EXEC => {
                if e.ret < 0 {
                    self.exec_failures.inc();
                } else {
                    self.processes_started.inc();
                }
            }
            Record::ProcessEvent(e) if e.op_flags == op::EXIT => {
                let class = match e.ret {
                    0 => 0,
                    r if r > 0 => 1,
                    _ => 2,
                };
                self.exits[class].inc();
            }
            Record::FileEvent(e) => {
                if e.op_flags & op::RENAME != 0 {
                    self.file_renames.inc();
                }
                if e.op_flags & (op::UNLINK | op::RMDIR) != 0 {
                    self.file_unlinks.inc();
                }
            }
            Record::FileFlow(f) => {
                if f.op_flags & op::OPEN != 0 {
                    self.file_opens.inc();
                }
                self.file_read_bytes.inc_by(positive(f.num_r_recv_bytes));
                self.file_written_bytes.inc_by(positive(f.num_w_send_bytes));
                self.file_read_ops.inc_by(positive(f.num_r_recv_ops));
                self.file_write_ops.inc_by(positive(f.num_w_send_ops));
            }
            Record::NetworkFlow(n) => {
                let slot = protocol_slot(n.proto);
                if n.op_flags & op::ACCEPT != 0 {
                    self.connections[slot].inc();
                }
                if n.op_flags & op::CONNECT != 0 {
                    self.connections[3 + slot].inc();
                }
                self.network_sent_bytes.inc_by(positive(n.num_w_send_bytes));
                self.network_received_bytes
                    .inc_by(positive(n.num_r_recv_bytes));
            }
            _ => {}
        }
    }

    pub fn open_failed(&self) {
        self.file_open_failures.inc();
    }
}

/// Per-container handle cache for the metrics sink (looked up for every record written: no
/// allocation once a container's handles exist).
#[derive(Default)]
pub struct WorkloadSeries {
    families: WorkloadFamilies,
    host: Option<(WorkloadLabels, WorkloadCounters)>,
    by_container: foldhash::HashMap<String, (WorkloadLabels, WorkloadCounters)>,
}

impl WorkloadSeries {
    pub fn new(families: WorkloadFamilies) -> Self {
        WorkloadSeries {
            families,
            host: None,
            by_container: Default::default(),
        }
    }

    /// The handles of a container (None: the host), created with `labels` the first time.
    pub fn of(
        &mut self,
        container: Option<&str>,
        labels: impl FnOnce() -> WorkloadLabels,
    ) -> &WorkloadCounters {
        let families = &self.families;
        let create = || {
            let l = labels();
            let c = families.handles(&l);
            (l, c)
        };
        match container {
            None => &self.host.get_or_insert_with(create).1,
            Some(id) => {
                if !self.by_container.contains_key(id) {
                    self.by_container.insert(id.to_owned(), create());
                }
                &self.by_container[id].1
            }
        }
    }

    /// New labels for a container (its pod and name became known): the series under the old
    /// labels go (nothing would ever remove them), later counts go to the new series.
    pub fn relabel(&mut self, container: &str) {
        self.remove(container);
    }

    /// Sets every workload's active-process gauge (workloads not in `counts` go to 0).
    pub fn set_active(
        &mut self,
        counts: &HashMap<Option<&str>, i64>,
        labels: impl Fn(Option<&str>) -> WorkloadLabels,
    ) {
        for (container, n) in counts {
            self.of(*container, || labels(*container))
                .active_processes
                .set(*n);
        }
        if let Some((_, c)) = &self.host
            && !counts.contains_key(&None)
        {
            c.active_processes.set(0);
        }
        for (container, (_, c)) in &self.by_container {
            if !counts.contains_key(&Some(container.as_str())) {
                c.active_processes.set(0);
            }
        }
    }

    /// Forgets a container's handles and drops its series.
    pub fn remove(&mut self, container: &str) {
        if let Some((labels, _)) = self.by_container.remove(container) {
            self.families.remove(&labels);
        }
    }
}
