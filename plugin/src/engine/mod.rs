//! The record engine: kernel records in, SysFlow records out.
//!
//! It keeps the process table (with each process's descriptors and the flow in progress on
//! each), resolves paths and containers, and follows the reference collector's rules:
//! * ProcessEvent CLONE (under the parent with the child's pid, and under the child with 0),
//!   EXEC (after the process is written again as MODIFIED), EXIT (after every open flow of the
//!   process is written with TRUNCATE), SETUID (with the new user's name).
//! * FileEvent MKDIR, RMDIR, LINK, SYMLINK, UNLINK, RENAME (chmod/chown have no flag in the
//!   schema and only update nothing).
//! * FileFlow / NetworkFlow from the kernel's I/O counters, which arrive as records: written on
//!   close, on process exit (TRUNCATE), at every periodic flush for long-lived descriptors (then
//!   restarted: new start time, counters and flags reset), and at shutdown (TRUNCATE). A flow on
//!   which nothing was observed (flags only CLOSE and/or TRUNCATE, or none) is never written.
//!   Counters reported ahead of an exit, exec or close_range are added to their flows, which
//!   that record then ends.

pub mod containers;
mod files;
pub mod paths;
pub mod process;
pub mod users;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use sysflow::{
    Container, File, FileEvent, FileFlow, Foid, Ipv6Bytes, NetworkFlow, Oid, ProcessEvent,
    ProcessFlow, Record as SfRecord, SfObjectState, SysFlowWriter, SysflowWriteError,
    encoding::{ipv4_to_int, linux_open_flags_to_ppm, op, proto, restype, restype_from_mode},
};
use sysflow_common::AT_FDCWD;
use tracing::warn;

use self::{
    containers::ContainerResolver,
    paths::resolve,
    process::{FdEntry, FdKind, FlowState, ProcEntry, ProcessTable, ThreadCounts, snapshot},
    users::UserNames,
};
use crate::{
    metrics::workload::{WorkloadLabels, WorkloadSeries},
    policy::PathFilter,
    probe::{
        IoCounters, Record,
        records::{
            CloseReason, Common, CountersEvent, CountersReason, PathOp, SetIdSyscall, SockOp,
            Socket,
        },
    },
    workloads::{WorkloadMeta, WorkloadUpdate, Workloads},
};

const O_CLOEXEC: u32 = 0o2000000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const AT_REMOVEDIR: u32 = 0x200;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Write Process.env (values of secret-looking names redacted). Off by default: the
    /// environment is sensitive.
    pub capture_env: bool,
    /// Fold thread clones and exits into ProcessFlow records.
    pub process_flows: bool,
    /// Most processes kept in the table.
    pub max_processes: usize,
    /// How long an exited process stays known (for late references), in ns.
    pub exit_grace_ns: i64,
    /// Most file entities kept beyond those open descriptors refer to.
    pub max_files: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            capture_env: false,
            process_flows: false,
            max_processes: 65_536,
            exit_grace_ns: 10_000_000_000,
            max_files: 100_000,
        }
    }
}

/// What the engine did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub kernel_records: u64,
    /// Processes first met through a record (not seen starting), created from /proc.
    pub processes_discovered: u64,
    pub processes_evicted: u64,
    pub flows_exported: u64,
    /// File records a container's path policy left out.
    pub filtered_by_path: u64,
    /// File entities forgotten to keep the file table bounded.
    pub files_evicted: u64,
    /// Records the writer refused (a record referring to an entity it was never given: a bug
    /// if ever non-zero). Records lost to a failing output are counted by the writer.
    pub records_refused: u64,
}

pub struct Engine {
    config: EngineConfig,
    procs: ProcessTable,
    names: UserNames,
    containers: ContainerResolver,
    containers_set: HashSet<String>,
    files_set: foldhash::HashSet<Foid>,
    foids: files::FoidCache,
    /// Runtime metadata of containers (NRI or containerd's API), when the agent has it.
    workloads: Option<Arc<Workloads>>,
    /// File path prefixes each container's policy keeps (containers without one keep all).
    path_filters: HashMap<String, Arc<PathFilter>>,
    /// Removed containers and pods: forgotten at the flow interval after the next, once
    /// their last records are out. (cgroup id, container id) and pod ids.
    removed: Vec<(u64, String)>,
    removed_pods: Vec<String>,
    forget_now: (Vec<(u64, String)>, Vec<String>),
    /// Per-workload metrics, when the agent exports them; series labels by container id.
    series: Option<WorkloadSeries>,
    labels: HashMap<String, WorkloadLabels>,
    /// Removed containers whose series go away after the grace period: (due wall ns, id).
    series_expiry: Vec<(i64, String)>,
    series_grace_ns: i64,
    writer: SysFlowWriter,
    refusals_logged: crate::log_limit::LogLimiter,
    /// Add to a CLOCK_BOOTTIME timestamp to get wall-clock ns.
    boot_to_wall_ns: i128,
    pub stats: EngineStats,
}

fn wall(offset: i128, boot_ns: u64) -> i64 {
    (boot_ns as i128 + offset) as i64
}

impl Engine {
    pub fn new(config: EngineConfig, writer: SysFlowWriter, boot_to_wall_ns: i128) -> Self {
        let max_files = config.max_files;
        Engine {
            procs: ProcessTable::new(config.max_processes),
            config,
            names: UserNames::load(),
            containers: ContainerResolver::default(),
            containers_set: HashSet::new(),
            files_set: Default::default(),
            foids: files::FoidCache::new(max_files * 2),
            workloads: None,
            path_filters: HashMap::new(),
            removed: Vec::new(),
            removed_pods: Vec::new(),
            forget_now: (Vec::new(), Vec::new()),
            series: None,
            labels: HashMap::new(),
            series_expiry: Vec::new(),
            series_grace_ns: 300_000_000_000,
            writer,
            refusals_logged: crate::log_limit::LogLimiter::new(std::time::Duration::from_secs(10)),
            boot_to_wall_ns,
            stats: EngineStats::default(),
        }
    }

    pub fn writer(&self) -> &SysFlowWriter {
        &self.writer
    }

    pub fn writer_mut(&mut self) -> &mut SysFlowWriter {
        &mut self.writer
    }

    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    pub fn file_count(&self) -> usize {
        self.files_set.len()
    }

    pub fn containers_mut(&mut self) -> &mut ContainerResolver {
        &mut self.containers
    }

    /// Counts every record written into per-workload metrics; a removed container's series
    /// disappear `grace` after its removal.
    pub fn set_workload_series(&mut self, series: WorkloadSeries, grace: std::time::Duration) {
        self.series = Some(series);
        self.series_grace_ns = grace.as_nanos() as i64;
    }

    /// The metric handles of a process's workload.
    fn counters_of(&mut self, tgid: u32) -> Option<&crate::metrics::workload::WorkloadCounters> {
        let container = self.procs.get(tgid)?.container_id.as_deref();
        let known = &self.labels;
        Some(
            self.series
                .as_mut()?
                .of(container, || workload_labels(known, container)),
        )
    }

    /// Live processes per workload, into the active-processes gauges.
    fn count_active_processes(&mut self) {
        let Some(series) = self.series.as_mut() else {
            return;
        };
        let mut counts: HashMap<Option<&str>, i64> = HashMap::new();
        for p in self.procs.values().filter(|p| p.exited_at_ns.is_none()) {
            *counts.entry(p.container_id.as_deref()).or_default() += 1;
        }
        let known = &self.labels;
        series.set_active(&counts, |c| workload_labels(known, c));
    }

    /// Tags records with the runtime's metadata: each new cgroup is looked up there first.
    pub fn set_workloads(&mut self, workloads: Arc<Workloads>) {
        self.workloads = Some(workloads);
    }

    /// Takes in a change the runtime side made (new metadata, a policy change, a removal).
    pub fn apply_workload(&mut self, update: WorkloadUpdate) {
        match update {
            WorkloadUpdate::Upsert(meta) => self.adopt(&meta),
            WorkloadUpdate::Removed {
                cgroup_id,
                container_id,
            } => self.removed.push((cgroup_id, container_id)),
            WorkloadUpdate::PodRemoved { pod_id } => self.removed_pods.push(pod_id),
        }
    }

    /// Makes a cgroup's metadata current: writer entities, cgroup cache, path filter.
    fn adopt(&mut self, meta: &WorkloadMeta) {
        self.containers.insert(
            meta.cgroup_id,
            Some(containers::CgroupContainer {
                id: meta.container.id.clone(),
                runtime: meta.container.container_type,
            }),
        );
        let labels = WorkloadLabels {
            namespace: meta
                .pod
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_default(),
            pod: meta
                .pod
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            container: meta.container.name.clone(),
        };
        if self.labels.get(&meta.container.id) != Some(&labels) {
            // The series under the old labels (e.g. a bare container id) go.
            if let Some(series) = self.series.as_mut() {
                series.relabel(&meta.container.id);
            }
            self.labels.insert(meta.container.id.clone(), labels);
        }
        if meta.paths.is_everything() {
            self.path_filters.remove(&meta.container.id);
        } else {
            self.path_filters
                .insert(meta.container.id.clone(), meta.paths.clone());
        }
        self.set_container(meta.container.clone(), meta.pod.clone());
    }

    /// Whether a file path passes its container's policy.
    fn path_allowed(&self, container: Option<&str>, path: &str) -> bool {
        container
            .and_then(|c| self.path_filters.get(c))
            .is_none_or(|f| f.allows(path))
    }

    /// Forgets the containers and pods removed before the previous interval: their last
    /// records are out by now.
    fn forget_removed(&mut self, now_boot_ns: u64) {
        let (containers, pods) = std::mem::replace(
            &mut self.forget_now,
            (
                std::mem::take(&mut self.removed),
                std::mem::take(&mut self.removed_pods),
            ),
        );
        let now = self.wall(now_boot_ns);
        for (cgroup_id, id) in containers {
            self.series_expiry
                .push((now + self.series_grace_ns, id.clone()));
            self.writer.forget_container(&id);
            self.foids.forget_container(&id);
            self.containers_set.remove(&id);
            self.path_filters.remove(&id);
            self.containers.forget(cgroup_id);
            if let Some(w) = &self.workloads {
                w.forget(cgroup_id);
            }
        }
        for id in pods {
            self.writer.forget_pod(&id);
        }
    }

    fn wall(&self, boot_ns: u64) -> i64 {
        wall(self.boot_to_wall_ns, boot_ns)
    }

    /// Learns every process running now from /proc, with its descriptors.
    pub fn seed_from_proc(&mut self) {
        let mut snapshots: Vec<_> = process::all_pids()
            .into_iter()
            .filter_map(|pid| snapshot(pid, self.config.capture_env))
            .collect();
        // Parents before children, so each child finds its parent's OID.
        snapshots.sort_by_key(|s| s.start_boot_ns);
        for s in snapshots {
            // No cgroup id from /proc: the container comes from the cgroup path instead.
            self.insert_snapshot(s, 0, true);
        }
    }

    fn insert_snapshot(&mut self, s: process::ProcSnapshot, cgroup_id: u64, coarse: bool) -> u32 {
        let tgid = s.tgid;
        let start = s.start_boot_ns;
        let parent = self.procs.get(s.parent_tgid).map(|p| p.oid);
        let container = self.container_of(cgroup_id, tgid);
        let ts = self.wall(start);
        let mut entry = ProcEntry {
            tgid,
            oid: Oid {
                create_ts: ts,
                hpid: tgid as i64,
            },
            start_boot_ns: start,
            coarse_start: coarse,
            poid: parent,
            parent_tgid: s.parent_tgid,
            exe: s.exe,
            args: s.args,
            uid: s.uid,
            gid: s.gid,
            tty: s.tty,
            entry: s.entry,
            cwd: s.cwd,
            env: s.env,
            cgroup_id,
            container_id: container,
            ts,
            state: SfObjectState::Created,
            fds: Default::default(),
            threads: ThreadCounts::default(),
            exited_at_ns: None,
        };
        for (fd, target, cloexec) in s.fds {
            if let Some(kind) = self.kind_from_link(&target, entry.container_id.as_deref(), ts) {
                entry.fds.insert(
                    fd,
                    FdEntry {
                        kind,
                        flow: FlowState::starting(
                            ts,
                            if cloexec { CLOEXEC_MARK } else { 0 },
                            tgid as i64,
                        ),
                    },
                );
            }
        }
        self.publish(&entry);
        self.procs.insert(entry);
        self.stats.processes_evicted = self.procs.evictions;
        tgid
    }

    /// What a /proc/<pid>/fd link names: a path, a pipe, a socket.
    fn kind_from_link(&mut self, target: &str, container: Option<&str>, ts: i64) -> Option<FdKind> {
        let (path, restype) = if target.starts_with('/') {
            (target.to_owned(), restype::FILE)
        } else if target.starts_with("pipe:") {
            (target.to_owned(), restype::PIPE)
        } else if target.starts_with("socket:") {
            return Some(FdKind::Socket(None));
        } else {
            return None;
        };
        let oid = self.set_file(&path, container, restype, ts);
        Some(FdKind::File {
            path,
            foid: oid,
            restype,
            open_flags: 0,
        })
    }

    fn container_of(&mut self, cgroup_id: u64, tgid: u32) -> Option<Arc<str>> {
        if cgroup_id != 0
            && !self.containers.knows(cgroup_id)
            && let Some(meta) = self.workloads.as_ref().and_then(|w| w.lookup(cgroup_id))
        {
            self.adopt(&meta);
        }
        let c = if cgroup_id == 0 {
            // Seeding: no cgroup id yet; read the process's cgroup path directly.
            std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
                .ok()
                .and_then(|t| containers::unified_path(&t).and_then(containers::container_of_path))
        } else {
            self.containers.resolve(cgroup_id, tgid)
        }?;
        if self.containers_set.insert(c.id.clone()) {
            // Without runtime metadata the collector writes "incomplete"; NRI fills it later.
            self.writer.set_container(Container {
                id: c.id.clone(),
                name: "incomplete".into(),
                image: "incomplete:incomplete".into(),
                imageid: String::new(),
                container_type: c.runtime,
                privileged: false,
                pod_id: None,
            });
        }
        Some(Arc::from(c.id))
    }

    /// Replaces the metadata of a container (from NRI or the containerd API).
    pub fn set_container(&mut self, container: Container, pod: Option<sysflow::Pod>) {
        if let Some(pod) = pod {
            self.writer.set_pod(pod);
        }
        self.containers_set.insert(container.id.clone());
        self.writer.set_container(container);
    }

    /// Gives the writer the current version of a process.
    fn publish(&mut self, entry: &ProcEntry) {
        self.writer.set_process(entry.to_sysflow(&self.names));
    }

    /// The entry for a record's process: the known one if the start time matches, else one
    /// made from /proc (or a bare one when the process is already gone).
    fn process_for(&mut self, c: &Common) -> u32 {
        let tgid = c.tgid;
        if let Some(entry) = self.procs.get(tgid)
            && entry.same_process(c.proc_start_ns)
        {
            if entry.cgroup_id != c.cgroup_id {
                // Moved to another cgroup (before exec into a container, for instance).
                let container = self.container_of(c.cgroup_id, tgid);
                let entry = self.procs.get_mut(tgid).expect("checked");
                entry.cgroup_id = c.cgroup_id;
                if entry.container_id != container {
                    entry.container_id = container;
                    let snapshot = entry.clone();
                    self.publish(&snapshot);
                }
            }
            return tgid;
        }
        self.stats.processes_discovered += 1;
        let snap = snapshot(tgid, self.config.capture_env).unwrap_or(process::ProcSnapshot {
            tgid,
            parent_tgid: 0,
            start_boot_ns: c.proc_start_ns,
            exe: String::new(),
            args: String::new(),
            uid: 0,
            gid: 0,
            tty: false,
            entry: false,
            cwd: String::new(),
            env: Vec::new(),
            fds: Vec::new(),
        });
        let snap = process::ProcSnapshot {
            start_boot_ns: c.proc_start_ns,
            ..snap
        };
        self.insert_snapshot(snap, c.cgroup_id, false)
    }

    fn write(&mut self, record: SfRecord) {
        if self.series.is_some() {
            let tgid = match &record {
                SfRecord::ProcessEvent(e) => Some(e.proc_oid.hpid as u32),
                SfRecord::FileEvent(e) => Some(e.proc_oid.hpid as u32),
                SfRecord::FileFlow(f) => Some(f.proc_oid.hpid as u32),
                SfRecord::NetworkFlow(n) => Some(n.proc_oid.hpid as u32),
                _ => None,
            };
            if let Some(counters) = tgid.and_then(|t| self.counters_of(t)) {
                counters.observe(&record);
            }
        }
        if let Err(e) = self.writer.write(&record)
            && !e.is_output_failure()
        {
            self.stats.records_refused += 1;
            if let Some(suppressed) = self.refusals_logged.allow() {
                warn!(suppressed, "SysFlow record refused: {e}");
            }
        }
    }

    fn set_file(&mut self, path: &str, container: Option<&str>, restype: i32, ts: i64) -> Foid {
        let oid = self.foids.get(container, path);
        if self.files_set.insert(oid) {
            self.writer.set_file(File {
                state: SfObjectState::Created,
                oid,
                ts,
                restype,
                path: path.into(),
                container_id: container.map(str::to_owned),
            });
        }
        oid
    }

    /// Handles one kernel record.
    pub fn handle(&mut self, record: Record) {
        self.stats.kernel_records += 1;
        match record {
            Record::Clone(e) => self.on_clone(e),
            Record::Exec(e) => self.on_exec(e),
            Record::Exit(e) => self.on_exit(e),
            Record::SetId(e) => self.on_setid(e),
            Record::Open(e) => self.on_open(e),
            Record::Close(e) => self.on_close(e),
            Record::Counters(e) => self.on_counters(e),
            Record::PathOp(e) => self.on_path_op(e),
            Record::Dup(e) => self.on_dup(e),
            Record::CloseRange(e) => self.on_close_range(e),
            Record::Socket(e) => self.on_socket(e),
            Record::SockOp(e) => self.on_sock_op(e),
        }
    }

    fn process_event(&mut self, tgid: u32, c: &Common, op_flags: i32, args: Vec<String>, ret: i64) {
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        let record = SfRecord::ProcessEvent(ProcessEvent {
            proc_oid: entry.oid,
            ts: self.wall(c.ts_ns),
            tid: c.tid as i64,
            op_flags,
            args,
            ret: ret.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        });
        self.write(record);
    }

    fn on_clone(&mut self, e: crate::probe::records::CloneEvent) {
        let c = &e.common;
        if e.is_thread {
            if self.config.process_flows && !e.is_child {
                let tgid = self.process_for(c);
                let ts = self.wall(c.ts_ns);
                let entry = self.procs.get_mut(tgid).expect("just ensured");
                if entry.threads.first_ts == 0 {
                    entry.threads.first_ts = ts;
                }
                if c.ret < 0 {
                    entry.threads.clone_errors += 1;
                } else {
                    entry.threads.cloned += 1;
                }
            }
            return;
        }
        if !e.is_child {
            let tgid = self.process_for(c);
            self.process_event(tgid, c, op::CLONE, vec![], c.ret);
            return;
        }
        // The new process reports itself: copy what it inherits from its parent.
        let ts = self.wall(c.ts_ns);
        let parent = self.procs.get(e.parent_tgid).cloned();
        let container = self.container_of(c.cgroup_id, c.tgid);
        let mut entry = ProcEntry {
            tgid: c.tgid,
            oid: Oid {
                create_ts: self.wall(c.proc_start_ns),
                hpid: c.tgid as i64,
            },
            start_boot_ns: c.proc_start_ns,
            coarse_start: false,
            poid: parent.as_ref().map(|p| p.oid),
            parent_tgid: e.parent_tgid,
            exe: String::new(),
            args: String::new(),
            uid: 0,
            gid: 0,
            tty: false,
            entry: false,
            cwd: String::new(),
            env: Vec::new(),
            cgroup_id: c.cgroup_id,
            container_id: container,
            ts,
            state: SfObjectState::Created,
            fds: Default::default(),
            threads: ThreadCounts::default(),
            exited_at_ns: None,
        };
        match &parent {
            Some(p) => {
                entry.exe = p.exe.clone();
                entry.args = p.args.clone();
                entry.uid = p.uid;
                entry.gid = p.gid;
                entry.tty = p.tty;
                entry.cwd = p.cwd.clone();
                entry.env = p.env.clone();
                // Descriptors are inherited (with their close-on-exec mark); each copy is a
                // flow of its own in the child.
                for (fd, f) in &p.fds {
                    entry.fds.insert(
                        *fd,
                        FdEntry {
                            kind: f.kind.clone(),
                            flow: FlowState::starting(
                                ts,
                                f.flow.op_flags & CLOEXEC_MARK,
                                c.tid as i64,
                            ),
                        },
                    );
                }
            }
            None => {
                if let Some(s) = snapshot(c.tgid, self.config.capture_env) {
                    entry.exe = s.exe;
                    entry.args = s.args;
                    entry.uid = s.uid;
                    entry.gid = s.gid;
                    entry.tty = s.tty;
                    entry.cwd = s.cwd;
                    entry.env = s.env;
                }
            }
        }
        self.publish(&entry);
        self.procs.insert(entry);
        self.stats.processes_evicted = self.procs.evictions;
        self.process_event(c.tgid, c, op::CLONE, vec![], 0);
    }

    fn on_exec(&mut self, e: crate::probe::records::ExecEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret < 0 {
            self.process_event(tgid, c, op::EXEC, vec![], c.ret);
            return;
        }
        // Descriptors marked close-on-exec were closed by the exec, without a close(2); their
        // counters came just before this record.
        self.close_cloexec(tgid, c);
        let ts = self.wall(c.ts_ns);
        let env = if self.config.capture_env {
            snapshot(tgid, true).map(|s| s.env).unwrap_or_default()
        } else {
            Vec::new()
        };
        let entry = self.procs.get_mut(tgid).expect("ensured");
        entry.exe = resolve(Some(&entry.cwd), &e.filename);
        entry.args = e.args.get(1..).map(|a| a.join(" ")).unwrap_or_default();
        entry.uid = e.uid;
        entry.gid = e.gid;
        entry.env = env;
        entry.state = SfObjectState::Modified;
        entry.ts = ts;
        let snapshot = entry.clone();
        self.publish(&snapshot);
        self.process_event(tgid, c, op::EXEC, vec![], 0);
    }

    fn close_cloexec(&mut self, tgid: u32, c: &Common) {
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        let cloexec: Vec<i32> = entry
            .fds
            .iter()
            .filter(|(_, f)| f.flow.op_flags & CLOEXEC_MARK != 0)
            .map(|(fd, _)| *fd)
            .collect();
        if !cloexec.is_empty() {
            let end = self.wall(c.ts_ns);
            self.end_flows(tgid, cloexec, end, op::CLOSE);
        }
    }

    /// Ends the flows of these descriptors of `tgid` (in fd order) with `flag` (CLOSE or
    /// TRUNCATE), with what was counted on them: what process exit, exec (close-on-exec),
    /// close_range and shutdown have in common.
    fn end_flows(&mut self, tgid: u32, mut fds: Vec<i32>, end: i64, flag: i32) {
        fds.sort_unstable();
        for fd in fds {
            if let Some(mut f) = self.procs.get_mut(tgid).and_then(|p| p.fds.remove(&fd)) {
                f.flow.op_flags |= flag;
                self.export(tgid, fd, &f, None, end);
            }
        }
    }

    /// A descriptor's counters reported because of something else: a periodic flush writes
    /// the flow so far and restarts it; ahead of an exit, exec, close_range or shutdown they
    /// are added to the flow, which that event ends.
    fn on_counters(&mut self, e: CountersEvent) {
        let c = &e.common;
        let (tgid, f) = self.counted_flow(c, e.fd, &e.counters);
        if e.reason == CountersReason::Flush {
            let now = self.wall(c.ts_ns);
            self.export(tgid, e.fd, &f, Some(&e.counters), now);
            let restarted_flow = restarted(&f.flow, now);
            if let Some(p) = self.procs.get_mut(tgid) {
                p.fds.insert(
                    e.fd,
                    FdEntry {
                        kind: f.kind,
                        flow: FlowState {
                            op_flags: f.flow.op_flags & CLOEXEC_MARK,
                            ..restarted_flow
                        },
                    },
                );
            }
            return;
        }
        if let Some(p) = self.procs.get_mut(tgid) {
            p.fds.insert(e.fd, f);
        }
    }

    fn on_exit(&mut self, e: crate::probe::records::ExitEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if !e.group_dead {
            if self.config.process_flows
                && let Some(entry) = self.procs.get_mut(tgid)
            {
                entry.threads.exited += 1;
            }
            return;
        }
        let end = self.wall(c.ts_ns);
        // Every flow of the process ends here, marked truncated, with the counters reported just
        // before this record.
        let fds: Vec<i32> = self
            .procs
            .get(tgid)
            .map(|p| p.fds.keys().copied().collect())
            .unwrap_or_default();
        self.end_flows(tgid, fds, end, op::TRUNCATE);
        if self.config.process_flows {
            self.write_process_flow(tgid, end);
        }
        let ret = e.exit_code.unwrap_or_else(|| -e.signal.unwrap_or(0));
        self.process_event(tgid, c, op::EXIT, vec![], ret as i64);
        if let Some(entry) = self.procs.get_mut(tgid) {
            entry.exited_at_ns = Some(end);
        }
    }

    fn write_process_flow(&mut self, tgid: u32, end: i64) {
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let t = std::mem::take(&mut entry.threads);
        if t.cloned + t.exited + t.clone_errors == 0 {
            return;
        }
        let mut flags = 0;
        if t.cloned + t.clone_errors > 0 {
            flags |= op::CLONE;
        }
        if t.exited > 0 {
            flags |= op::EXIT;
        }
        let record = SfRecord::ProcessFlow(ProcessFlow {
            proc_oid: entry.oid,
            ts: if t.first_ts != 0 {
                t.first_ts
            } else {
                entry.ts
            },
            num_threads_cloned: t.cloned,
            op_flags: flags,
            end_ts: end,
            num_threads_exited: t.exited,
            num_clone_errors: t.clone_errors,
        });
        self.write(record);
    }

    fn on_setid(&mut self, e: crate::probe::records::SetIdEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret != 0 {
            return;
        }
        let is_uid = matches!(
            e.syscall,
            SetIdSyscall::Setuid | SetIdSyscall::Setreuid | SetIdSyscall::Setresuid
        );
        // The effective id: the only argument of set[ug]id, the second of the others.
        let new_id = match e.syscall {
            SetIdSyscall::Setuid | SetIdSyscall::Setgid => e.ids[0],
            _ => e.ids[1],
        };
        let ts = self.wall(c.ts_ns);
        let entry = self.procs.get_mut(tgid).expect("ensured");
        if let Some(id) = new_id {
            if is_uid {
                entry.uid = id;
            } else {
                entry.gid = id;
            }
        }
        entry.state = SfObjectState::Modified;
        entry.ts = ts;
        let snapshot = entry.clone();
        self.publish(&snapshot);
        if is_uid {
            // The collector renders the argument as Falco does: the user name.
            let arg = new_id
                .map(|id| {
                    let name = self.names.user(id);
                    if name.is_empty() {
                        id.to_string()
                    } else {
                        name
                    }
                })
                .unwrap_or_default();
            self.process_event(tgid, c, op::SETUID, vec![arg], 0);
        }
    }

    /// The directory a dirfd refers to, or the cwd for AT_FDCWD.
    fn base_dir(&self, tgid: u32, dirfd: i32) -> Option<String> {
        let entry = self.procs.get(tgid)?;
        if dirfd == AT_FDCWD {
            return (!entry.cwd.is_empty()).then(|| entry.cwd.clone());
        }
        match &entry.fds.get(&dirfd)?.kind {
            FdKind::File { path, .. } if path.starts_with('/') => Some(path.clone()),
            _ => None,
        }
    }

    fn on_open(&mut self, e: crate::probe::records::OpenEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret < 0 {
            if let Some(counters) = self.counters_of(tgid) {
                counters.open_failed();
            }
            return;
        }
        let base = self.base_dir(tgid, e.dirfd);
        let path = resolve(base.as_deref(), &e.path);
        let ts = self.wall(c.ts_ns);
        let container = self.procs.get(tgid).and_then(|p| p.container_id.clone());
        let rtype = if e.file.mode == 0 {
            restype::FILE
        } else {
            restype_from_mode(e.file.mode as u32)
        };
        let oid = self.set_file(&path, container.as_deref(), rtype, ts);
        let mut op_flags = op::OPEN;
        if e.flags & O_CLOEXEC != 0 {
            op_flags |= CLOEXEC_MARK;
        }
        let entry = self.procs.get_mut(tgid).expect("ensured");
        entry.fds.insert(
            c.ret as i32,
            FdEntry {
                kind: FdKind::File {
                    path,
                    foid: oid,
                    restype: rtype,
                    open_flags: linux_open_flags_to_ppm(e.flags),
                },
                flow: FlowState::starting(ts, op_flags, c.tid as i64),
            },
        );
    }

    fn on_close(&mut self, e: crate::probe::records::CloseEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let end = self.wall(c.ts_ns);
        match e.reason {
            CloseReason::PeerChanged => {
                // The descriptor stays open: report the old peer's share and restart the flow.
                let Some(counters) = &e.counters else { return };
                let f = self.fd_entry(tgid, e.fd, counters, end);
                let mut f = f;
                add_counters(&mut f.flow, counters);
                self.export(tgid, e.fd, &f, Some(counters), end);
                if let Some(live) = self.procs.get_mut(tgid).and_then(|p| p.fds.get_mut(&e.fd)) {
                    live.flow = restarted(&live.flow, end);
                }
            }
            CloseReason::Close | CloseReason::Replaced => {
                let known = self.procs.get_mut(tgid).and_then(|p| p.fds.remove(&e.fd));
                let mut f = match (known, &e.counters) {
                    (Some(f), _) => f,
                    (None, Some(counters)) => self.fd_entry(tgid, e.fd, counters, end),
                    (None, None) => return,
                };
                if let Some(counters) = &e.counters {
                    add_counters(&mut f.flow, counters);
                }
                f.flow.op_flags |= op::CLOSE;
                self.export(tgid, e.fd, &f, e.counters.as_ref(), end);
                // Descriptors that were never seen opening stay unknown after close.
                if let Some(p) = self.procs.get_mut(tgid) {
                    p.fds.remove(&e.fd);
                }
            }
        }
    }

    /// The process's entry for `fd`, creating one from what the kernel's counters say about
    /// a descriptor the agent did not see opening (inherited before the agent started, etc.).
    fn fd_entry(&mut self, tgid: u32, fd: i32, counters: &IoCounters, ts: i64) -> FdEntry {
        if let Some(f) = self.procs.get(tgid).and_then(|p| p.fds.get(&fd)) {
            return f.clone();
        }
        let kind = match &counters.sock {
            Some(s) if matches!(s.family, AF_INET | AF_INET6) => FdKind::Socket(Some(s.clone())),
            _ => {
                let container = self.procs.get(tgid).and_then(|p| p.container_id.clone());
                let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .ok();
                let ftype = counters.file.file_type() as u32;
                let path = match link {
                    Some(l) => l,
                    None if counters.sock.is_some() => format!("socket:[{}]", counters.file.ino),
                    None if ftype == 0o010000 => format!("pipe:[{}]", counters.file.ino),
                    None => format!("anon_inode:[{}:{}]", counters.file.dev, counters.file.ino),
                };
                let rtype = restype_from_mode(counters.file.mode as u32);
                let oid = self.set_file(&path, container.as_deref(), rtype, ts);
                FdKind::File {
                    path,
                    foid: oid,
                    restype: rtype,
                    open_flags: 0,
                }
            }
        };
        FdEntry {
            kind,
            flow: FlowState {
                ts: counters_start(self.boot_to_wall_ns, counters, ts),
                tid: counters.last_tid as i64,
                ..FlowState::default()
            },
        }
    }

    fn on_path_op(&mut self, e: crate::probe::records::PathOpEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let flag = match e.op {
            PathOp::Unlinkat if e.mode_or_flags & AT_REMOVEDIR != 0 => op::RMDIR,
            PathOp::Unlink | PathOp::Unlinkat => op::UNLINK,
            PathOp::Rmdir => op::RMDIR,
            PathOp::Rename | PathOp::Renameat | PathOp::Renameat2 => op::RENAME,
            PathOp::Mkdir | PathOp::Mkdirat => op::MKDIR,
            PathOp::Link | PathOp::Linkat => op::LINK,
            PathOp::Symlink | PathOp::Symlinkat => op::SYMLINK,
            PathOp::Chdir | PathOp::Fchdir => {
                if c.ret == 0 {
                    let dir = match (e.op.clone(), e.fd) {
                        (PathOp::Fchdir, Some(fd)) => self.base_dir(tgid, fd),
                        _ => Some(resolve(self.base_dir(tgid, AT_FDCWD).as_deref(), &e.path)),
                    };
                    if let (Some(dir), Some(p)) = (dir, self.procs.get_mut(tgid)) {
                        p.cwd = dir;
                    }
                }
                return;
            }
            // No opFlag in the schema for chmod and chown.
            _ => return,
        };
        let ts = self.wall(c.ts_ns);
        let container = self.procs.get(tgid).and_then(|p| p.container_id.clone());
        let base = self.base_dir(tgid, e.dirfd);
        let path = resolve(base.as_deref(), &e.path);
        let rtype = if flag & (op::MKDIR | op::RMDIR) != 0 {
            restype::DIRECTORY
        } else {
            restype::UNKNOWN
        };
        let path2 = (flag & (op::RENAME | op::LINK | op::SYMLINK) != 0).then(|| {
            let base2 = self.base_dir(tgid, e.dirfd2);
            resolve(base2.as_deref(), &e.path2)
        });
        let allowed = |p: &str| self.path_allowed(container.as_deref(), p);
        if !allowed(&path) && path2.as_deref().is_none_or(|p| !allowed(p)) {
            self.stats.filtered_by_path += 1;
            return;
        }
        let file_oid = self.set_file(&path, container.as_deref(), rtype, ts);
        let new_file_oid = path2.map(|p| self.set_file(&p, container.as_deref(), rtype, ts));
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        let record = SfRecord::FileEvent(FileEvent {
            proc_oid: entry.oid,
            ts,
            tid: c.tid as i64,
            op_flags: flag,
            file_oid,
            ret: c.ret as i32,
            new_file_oid,
        });
        self.write(record);
    }

    fn on_dup(&mut self, e: crate::probe::records::DupEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let new_fd = c.ret as i32;
        if c.ret < 0 || new_fd == e.old_fd {
            return;
        }
        let ts = self.wall(c.ts_ns);
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let Some(old) = entry.fds.get(&e.old_fd) else {
            return;
        };
        let mut op_flags = 0;
        if e.flags & O_CLOEXEC != 0 {
            op_flags |= CLOEXEC_MARK;
        }
        let copy = FdEntry {
            kind: old.kind.clone(),
            flow: FlowState::starting(ts, op_flags, c.tid as i64),
        };
        entry.fds.insert(new_fd, copy);
    }

    /// close_range closed every descriptor in the range without a close(2) each: end the flows
    /// of the ones this process has, with the counters reported just before this record.
    fn on_close_range(&mut self, e: crate::probe::records::CloseRangeEvent) {
        const CLOSE_RANGE_CLOEXEC: u32 = 4;
        let c = &e.common;
        let tgid = self.process_for(c);
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let in_range = |fd: &i32| *fd >= 0 && (e.first..=e.last).contains(&(*fd as u32));
        if e.flags & CLOSE_RANGE_CLOEXEC != 0 {
            for (_, f) in entry.fds.iter_mut().filter(|(fd, _)| in_range(fd)) {
                f.flow.op_flags |= CLOEXEC_MARK;
            }
            return;
        }
        if c.ret != 0 {
            return;
        }
        let fds: Vec<i32> = entry.fds.keys().copied().filter(in_range).collect();
        let end = self.wall(c.ts_ns);
        self.end_flows(tgid, fds, end, op::CLOSE);
    }

    fn on_socket(&mut self, e: crate::probe::records::SocketEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret < 0 || !matches!(e.domain as u16, AF_INET | AF_INET6) {
            return;
        }
        let ts = self.wall(c.ts_ns);
        let mut op_flags = 0;
        if e.sock_type & O_CLOEXEC != 0 {
            op_flags |= CLOEXEC_MARK;
        }
        if let Some(entry) = self.procs.get_mut(tgid) {
            entry.fds.insert(
                c.ret as i32,
                FdEntry {
                    kind: FdKind::Socket(None),
                    flow: FlowState::starting(ts, op_flags, c.tid as i64),
                },
            );
        }
    }

    fn on_sock_op(&mut self, e: crate::probe::records::SockOpEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let ts = self.wall(c.ts_ns);
        let (fd, flag) = match e.op {
            SockOp::Connect => (e.fd, op::CONNECT),
            SockOp::Accept | SockOp::Accept4 if c.ret >= 0 => (c.ret as i32, op::ACCEPT),
            _ => return,
        };
        if e.sock
            .as_ref()
            .is_some_and(|s| !matches!(s.family, AF_INET | AF_INET6))
        {
            return;
        }
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let f = entry.fds.entry(fd).or_insert_with(|| FdEntry {
            kind: FdKind::Socket(None),
            flow: FlowState::default(),
        });
        f.kind = FdKind::Socket(e.sock.clone());
        f.flow.ts = ts;
        f.flow.tid = c.tid as i64;
        f.flow.op_flags |= flag;
    }

    /// Writes the flow of one descriptor.
    fn export(&mut self, tgid: u32, fd: i32, f: &FdEntry, counters: Option<&IoCounters>, end: i64) {
        let flags = f.flow.op_flags & !CLOEXEC_MARK;
        // Nothing observed on the descriptor (no open, connect, accept, read or write): the
        // collector writes no flow for it, whether it ended by close, exit or shutdown.
        if flags & !(op::CLOSE | op::TRUNCATE) == 0 {
            return;
        }
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        if let FdKind::File { path, .. } = &f.kind
            && !self.path_allowed(entry.container_id.as_deref(), path)
        {
            self.stats.filtered_by_path += 1;
            return;
        }
        let flow = &f.flow;
        let record = match &f.kind {
            FdKind::File {
                foid, open_flags, ..
            } => SfRecord::FileFlow(FileFlow {
                proc_oid: entry.oid,
                ts: flow.ts,
                tid: flow.tid,
                op_flags: flags,
                open_flags: if flags & op::OPEN != 0 {
                    *open_flags
                } else {
                    0
                },
                end_ts: end.max(flow.ts),
                file_oid: *foid,
                fd,
                num_r_recv_ops: flow.read_ops,
                num_w_send_ops: flow.write_ops,
                num_r_recv_bytes: flow.read_bytes,
                num_w_send_bytes: flow.write_bytes,
            }),
            FdKind::Socket(seen) => {
                // The kernel's view at first I/O has both ends (and a datagram's peer); the
                // connect/accept view covers sockets that moved no data.
                let sock = counters
                    .and_then(|k| k.sock.clone())
                    .filter(|s| s.local.is_some() || s.remote.is_some())
                    .or_else(|| seen.clone());
                network_flow(entry.oid, fd, flow, flags, end, sock.as_ref())
            }
        };
        self.stats.flows_exported += 1;
        self.write(record);
    }

    /// The flow of a descriptor with `delta` added, and its process. Counters may come before
    /// the records that introduce their process: the process is learned then (from /proc),
    /// rather than lose what it counted.
    fn counted_flow(&mut self, c: &Common, fd: i32, delta: &IoCounters) -> (u32, FdEntry) {
        let tgid = self.process_for(c);
        let mut f = self.fd_entry(tgid, fd, delta, self.wall(c.ts_ns));
        add_counters(&mut f.flow, delta);
        // The kernel's view at first I/O has both ends (and a datagram's peer).
        if let FdKind::Socket(seen) = &mut f.kind
            && let Some(sock) = delta
                .sock
                .clone()
                .filter(|s| s.local.is_some() || s.remote.is_some())
        {
            *seen = Some(sock);
        }
        (tgid, f)
    }

    /// At the flow interval (after asking the kernel for a flush, whose reports write and
    /// restart each flow as they arrive): forget the containers and pods removed before the
    /// previous interval.
    pub fn interval(&mut self, now_boot_ns: u64) {
        self.forget_removed(now_boot_ns);
    }

    /// Housekeeping: forget processes that exited long enough ago, bound the file entities,
    /// rotate and flush output.
    pub fn tick(&mut self, now_boot_ns: u64) {
        let now = self.wall(now_boot_ns);
        self.count_active_processes();
        if let Some(series) = self.series.as_mut() {
            let labels = &mut self.labels;
            self.series_expiry.retain(|(due, id)| {
                if *due > now {
                    return true;
                }
                series.remove(id);
                labels.remove(id);
                false
            });
        }
        for tgid in self.procs.expired(now, self.config.exit_grace_ns) {
            if let Some(p) = self.procs.remove(tgid) {
                self.writer.forget_process(&p.oid);
            }
        }
        if self.files_set.len() > self.config.max_files {
            let open: HashSet<Foid> = self
                .procs
                .values()
                .flat_map(|p| p.fds.values())
                .filter_map(|f| match &f.kind {
                    FdKind::File { foid, .. } => Some(*foid),
                    FdKind::Socket(_) => None,
                })
                .collect();
            for oid in self.files_set.iter().filter(|o| !open.contains(o)) {
                self.writer.forget_file(oid);
                self.stats.files_evicted += 1;
            }
            self.files_set.retain(|o| open.contains(o));
        }
        // Failures are the writer's to count and the agent's to report (once, not per tick).
        let _ = self
            .writer
            .rotate_if_due()
            .and_then(|_| self.writer.flush());
    }

    /// Shutdown (after the kernel's final flush reports were handled): every open flow is
    /// written with TRUNCATE, then the file is completed. Returns the last file and what the
    /// writer wrote in all.
    pub fn shutdown(
        mut self,
        now_boot_ns: u64,
    ) -> Result<(Option<std::path::PathBuf>, sysflow::writer::WriterStats), SysflowWriteError> {
        let now = self.wall(now_boot_ns);
        let mut tgids: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.exited_at_ns.is_none())
            .map(|p| p.tgid)
            .collect();
        tgids.sort_unstable();
        for tgid in tgids {
            let fds: Vec<i32> = self
                .procs
                .get(tgid)
                .map(|p| p.fds.keys().copied().collect())
                .unwrap_or_default();
            self.end_flows(tgid, fds, now, op::TRUNCATE);
        }
        let last = self.writer.finish()?;
        Ok((last, self.writer.stats().clone()))
    }
}

/// The series labels of a container (None: the host, all labels empty).
fn workload_labels(
    known: &HashMap<String, WorkloadLabels>,
    container: Option<&str>,
) -> WorkloadLabels {
    match container {
        None => WorkloadLabels::default(),
        Some(id) => known.get(id).cloned().unwrap_or_else(|| WorkloadLabels {
            // Known by cgroup path only: its short id.
            container: id.chars().take(12).collect(),
            ..WorkloadLabels::default()
        }),
    }
}

/// A flag bit outside the schema's opFlags (bit 30) that marks close-on-exec descriptors in a
/// flow state; never written.
const CLOEXEC_MARK: i32 = 1 << 30;

fn add_counters(flow: &mut FlowState, c: &IoCounters) {
    flow.read_ops += c.read_ops as i64;
    flow.write_ops += c.write_ops as i64;
    flow.read_bytes += c.read_bytes as i64;
    flow.write_bytes += c.write_bytes as i64;
    if c.read_ops > 0 {
        flow.op_flags |= op::READ_RECV;
    }
    if c.write_ops > 0 {
        flow.op_flags |= op::WRITE_SEND;
    }
    if c.last_tid != 0 {
        flow.tid = c.last_tid as i64;
    }
}

fn restarted(flow: &FlowState, now: i64) -> FlowState {
    FlowState::starting(now, 0, flow.tid)
}

fn counters_start(offset: i128, c: &IoCounters, fallback: i64) -> i64 {
    if c.first_ns == 0 {
        fallback
    } else {
        wall(offset, c.first_ns)
    }
}

fn ip_fields(addr: Option<SocketAddr>) -> (i32, i32, Option<Ipv6Bytes>) {
    match addr {
        None => (0, 0, None),
        Some(a) => {
            let port = a.port() as i32;
            match a.ip() {
                IpAddr::V4(v4) => (ipv4_to_int(v4), port, None),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => (ipv4_to_int(v4), port, None),
                    None => (0, port, Some(Ipv6Bytes(v6.octets()))),
                },
            }
        }
    }
}

/// A NetworkFlow: like the collector, source = the connecting side, destination = the
/// accepting side, for both ends of a connection.
fn network_flow(
    proc_oid: Oid,
    fd: i32,
    flow: &FlowState,
    flags: i32,
    end: i64,
    sock: Option<&Socket>,
) -> SfRecord {
    let (local, remote) = sock.map(|s| (s.local, s.remote)).unwrap_or((None, None));
    let (src, dst) = if flags & op::ACCEPT != 0 {
        (remote, local)
    } else {
        (local, remote)
    };
    let (sip, sport, sip6) = ip_fields(src);
    let (dip, dport, dip6) = ip_fields(dst);
    let protocol = match sock.map(|s| s.protocol) {
        Some(6) => proto::TCP,
        Some(17) => proto::UDP,
        Some(1) => proto::ICMP,
        Some(255) => proto::RAW,
        _ => proto::UNKNOWN,
    };
    SfRecord::NetworkFlow(NetworkFlow {
        proc_oid,
        ts: flow.ts,
        tid: flow.tid,
        op_flags: flags,
        end_ts: end.max(flow.ts),
        sip,
        sport,
        dip,
        dport,
        proto: protocol,
        fd,
        num_r_recv_ops: flow.read_ops,
        num_w_send_ops: flow.write_ops,
        num_r_recv_bytes: flow.read_bytes,
        num_w_send_bytes: flow.write_bytes,
        sip6,
        dip6,
    })
}
