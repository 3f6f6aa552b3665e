//! The state stage: what the agent knows about the host's processes, their descriptors, the
//! files and containers they refer to, kept current from kernel records and runtime updates.
//! It is the only owner of that knowledge; it hands on [`Fact`]s (entities, what to forget,
//! and what processes did, every reference resolved) and never calls another stage.
//!
//! Everything it reads from the host (/proc, cgroupfs, /etc) goes through [`Host`], so it is
//! tested on fake trees.

pub mod containers;
mod descriptors;
pub mod facts;
pub mod files;
mod lifecycle;
pub mod paths;
pub mod processes;
mod room;
pub mod users;

use std::{collections::HashMap, sync::Arc};

use sysflow::{Container, Foid, encoding::op};

use self::{
    containers::ContainerTable, files::FileTable, processes::ProcessTable, users::UserNames,
};
pub use self::{
    descriptors::{FdKind, FlowState},
    facts::{Actor, Entity, Fact, FlowTarget, Forget},
    processes::ThreadCounts,
};
use crate::{
    host::{Host, cgroup::container_of_path},
    probe::Record,
    workloads::{WorkloadMeta, WorkloadUpdate},
};

/// Name and image the collector gives a container it knows only from its cgroup path; the
/// runtime's metadata replaces them.
pub const UNKNOWN_CONTAINER: &str = "incomplete";
const UNKNOWN_IMAGE: &str = "incomplete:incomplete";

#[derive(Clone, Debug)]
pub struct StateConfig {
    /// Report Process.env (values of secret-looking names redacted). Off by default: the
    /// environment is sensitive.
    pub capture_env: bool,
    /// Count thread clones and exits, for ProcessFlow.
    pub process_flows: bool,
    /// Most processes kept in the table.
    pub max_processes: usize,
    /// How long an exited process stays known (for late references), in ns.
    pub exit_grace_ns: i64,
    /// Most exited processes kept known: beyond, the longest exited go before their grace
    /// period is over (a fork storm would otherwise keep seconds' worth of them).
    pub max_exited_processes: usize,
    /// Most file entities kept beyond those open descriptors refer to.
    pub max_files: usize,
    /// Secrets in command lines (`capture.redact_args`).
    pub redact: crate::redact::ArgRedactor,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            capture_env: false,
            process_flows: false,
            max_processes: 65_536,
            exit_grace_ns: 10_000_000_000,
            max_exited_processes: 4_096,
            max_files: 100_000,
            redact: crate::redact::ArgRedactor::default(),
        }
    }
}

/// What the state stage did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateStats {
    pub kernel_records: u64,
    /// Processes first met through a record (not seen starting), created from /proc.
    pub processes_discovered: u64,
    pub processes_evicted: u64,
    /// Exited processes forgotten before their grace period, to stay within the bound.
    pub exited_processes_evicted: u64,
    /// File entities forgotten to keep the file table bounded.
    pub files_evicted: u64,
    /// File flows and events a container's path policy left out.
    pub filtered_by_path: u64,
    /// Secrets replaced in command lines, by pattern (`redact::PATTERNS`).
    pub args_redacted: crate::redact::RedactionCounts,
    pub processes: usize,
    /// Of `processes`, those that exited.
    pub exited_processes: usize,
    pub files: usize,
}

/// Containers and pods the runtime removed, forgotten at the flow interval after the next,
/// once their last records are out.
#[derive(Default)]
struct Removals {
    containers: Vec<(u64, String)>,
    pods: Vec<String>,
}

pub struct State {
    config: StateConfig,
    host: Host,
    procs: ProcessTable,
    files: FileTable,
    containers: ContainerTable,
    users: UserNames,
    removed: Removals,
    forget_at_next_interval: Removals,
    /// Add to a CLOCK_BOOTTIME timestamp to get wall-clock ns.
    boot_to_wall_ns: i128,
    facts: Vec<Fact>,
    stats: StateStats,
}

impl State {
    pub fn new(config: StateConfig, host: Host, boot_to_wall_ns: i128) -> Self {
        State {
            procs: ProcessTable::new(config.max_processes),
            files: FileTable::new(config.max_files),
            users: UserNames::load(&host),
            containers: ContainerTable::default(),
            removed: Removals::default(),
            forget_at_next_interval: Removals::default(),
            config,
            host,
            boot_to_wall_ns,
            facts: Vec::new(),
            stats: StateStats::default(),
        }
    }

    pub fn stats(&self) -> StateStats {
        StateStats {
            processes: self.procs.len(),
            exited_processes: self.procs.exited_len(),
            files: self.files.len(),
            processes_evicted: self.procs.evictions,
            files_evicted: self.files.evictions,
            ..self.stats.clone()
        }
    }

    /// The facts found since the last call, in order.
    pub fn drain_facts(&mut self) -> std::vec::Drain<'_, Fact> {
        self.facts.drain(..)
    }

    /// Gives back the room of the (drained) fact queue beyond `room`.
    pub fn shrink_facts(&mut self, room: usize) {
        self.facts.shrink_to(room);
    }

    /// Wall-clock ns of a CLOCK_BOOTTIME timestamp.
    fn wall(&self, boot_ns: u64) -> i64 {
        (i128::from(boot_ns) + self.boot_to_wall_ns) as i64
    }

    /// Takes in one kernel record.
    pub fn apply(&mut self, record: Record) {
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

    /// Takes in a change the runtime side made (new metadata, a policy change, a removal).
    pub fn apply_workload(&mut self, update: WorkloadUpdate) {
        match update {
            WorkloadUpdate::Upsert(meta) => self.adopt(&meta),
            WorkloadUpdate::Removed {
                cgroup_id,
                container_id,
            } => self.removed.containers.push((cgroup_id, container_id)),
            WorkloadUpdate::PodRemoved { pod_id } => self.removed.pods.push(pod_id),
        }
    }

    /// Makes a cgroup's metadata current: its container, path policy and entities.
    fn adopt(&mut self, meta: &WorkloadMeta) {
        let adopted = self
            .containers
            .adopt(meta.cgroup_id, &meta.container.id, &meta.paths);
        if let Some(pod) = &meta.pod {
            self.facts.push(Fact::Entity(Entity::Pod(pod.clone())));
        }
        self.facts
            .push(Fact::Entity(Entity::Container(meta.container.clone())));
        if adopted.retag {
            self.retag(meta.cgroup_id, &adopted.id);
        }
    }

    /// Processes met in a cgroup before the runtime registered it (a sandbox's pause process
    /// runs before RunPodSandbox, runc's set-up before StartContainer) belong to its container
    /// from now on.
    fn retag(&mut self, cgroup_id: u64, id: &Arc<str>) {
        let members: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.cgroup_id == cgroup_id && p.container_id.as_ref() != Some(id))
            .map(|p| p.tgid)
            .collect();
        for tgid in members {
            if let Some(p) = self.procs.get_mut(tgid) {
                p.container_id = Some(id.clone());
            }
            self.publish(tgid);
        }
    }

    /// The container of a record's cgroup (cgroup id 0 when seeding: from the process's
    /// cgroup path only). A container met for the first time without runtime metadata is
    /// reported as the collector does, "incomplete"; the runtime's upsert replaces it.
    fn container_of(&mut self, cgroup_id: u64, tgid: u32) -> Option<Arc<str>> {
        if cgroup_id != 0
            && let Some(known) = self.containers.of_cgroup(cgroup_id)
        {
            return known;
        }
        let found = self
            .host
            .cgroup_path_of(tgid)
            .and_then(|path| container_of_path(&path));
        let container = found.map(|found| {
            let (id, new) = self.containers.intern(&found);
            if new {
                self.facts.push(Fact::Entity(Entity::Container(Container {
                    id: found.id,
                    name: UNKNOWN_CONTAINER.into(),
                    image: UNKNOWN_IMAGE.into(),
                    imageid: String::new(),
                    container_type: found.runtime,
                    privileged: false,
                    pod_id: None,
                })));
            }
            id
        });
        self.containers.remember(cgroup_id, container.clone());
        container
    }

    /// The FOID of a file and the name its descriptors keep; the File entity is reported when
    /// it is new.
    fn file(
        &mut self,
        path: &str,
        container: Option<&str>,
        restype: i32,
        ts: i64,
    ) -> (Foid, Arc<str>) {
        let (foid, name, new) = self.files.file(path, container, restype, ts);
        if let Some(file) = new {
            self.facts.push(Fact::Entity(Entity::File(file)));
        }
        (foid, name)
    }

    /// At the flow interval (the kernel's flush reports were asked for and end or cut each
    /// flow as they arrive): forget the containers and pods removed before the previous one.
    pub fn interval(&mut self) {
        let due = std::mem::replace(
            &mut self.forget_at_next_interval,
            std::mem::take(&mut self.removed),
        );
        for (cgroup_id, id) in due.containers {
            self.files.forget_container(&id);
            self.containers.forget(cgroup_id, &id);
            self.facts.push(Fact::Forget(Forget::Container(id)));
        }
        for id in due.pods {
            self.facts.push(Fact::Forget(Forget::Pod(id)));
        }
    }

    /// Housekeeping, once a second: live processes per container, descriptor tables shrunk to
    /// what they hold, forget processes that exited long enough ago (or beyond the most kept)
    /// and files no descriptor can refer to again, bound the file entities.
    pub fn tick(&mut self, now_boot_ns: u64) {
        let now = self.wall(now_boot_ns);
        let mut live: HashMap<Option<Arc<str>>, i64> = HashMap::new();
        for p in self.procs.values_mut() {
            p.shrink_idle_fds();
            if p.exited_at_ns().is_none() {
                *live.entry(p.container_id.clone()).or_default() += 1;
            }
        }
        self.facts
            .push(Fact::LiveProcesses(live.into_iter().collect()));
        let expired = self.procs.expired(
            now,
            self.config.exit_grace_ns,
            self.config.max_exited_processes,
        );
        self.stats.exited_processes_evicted += expired.early;
        for tgid in expired.tgids {
            if let Some(p) = self.procs.remove(tgid) {
                self.facts.push(Fact::Forget(Forget::Process(p.oid)));
            }
        }
        let released = self.files.release_unheld();
        self.facts
            .extend(released.into_iter().map(|f| Fact::Forget(Forget::File(f))));
        let procs = &self.procs;
        let forgotten = self.files.bound(|| {
            procs
                .values()
                .flat_map(|p| p.fds.values())
                .filter_map(|f| match &f.kind {
                    FdKind::File { foid, .. } => Some(*foid),
                    FdKind::Socket(_) => None,
                })
                .collect()
        });
        self.facts
            .extend(forgotten.into_iter().map(|f| Fact::Forget(Forget::File(f))));
    }

    /// At shutdown (after the kernel's final flush reports were taken in): every open flow
    /// ends, truncated.
    pub fn shutdown(&mut self, now_boot_ns: u64) {
        let now = self.wall(now_boot_ns);
        let mut tgids: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.exited_at_ns().is_none())
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
    }
}

#[cfg(test)]
mod tests;
