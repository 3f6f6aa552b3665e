//! Pods and containers on this node, learned from the runtime (NRI, or containerd's API), and
//! what the capture policy says about each.
//!
//! A container is registered the moment its cgroup exists and before its workload runs (NRI
//! StartContainer): its cgroup id goes into the kernel's capture-mode map and its metadata onto
//! the [`UpdateQueue`], both before the runtime is answered. The agent drains the queue into
//! the state stage after it takes each batch of kernel records and before it applies it, so a
//! container's metadata is there before its first record. Nothing here is called back: later
//! changes (policy reloads, removals) go the same way, as [`WorkloadUpdate`]s.

pub mod containerd_api;
pub mod nri_source;
pub mod policy_watch;
pub mod queue;
pub mod source;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use sysflow::{ContainerType, encoding::ipv4_to_long};
use tracing::{debug, info};

pub use self::queue::UpdateQueue;
use crate::{
    capture::CaptureMode,
    host::Host,
    internal_events::{Loss, Losses},
    policy::{Decision, PathFilter, Policy},
    probe::CaptureControl,
};

/// Containers (and pod sandboxes) tracked at once; more are counted and not tagged.
pub const MAX_CONTAINERS: usize = 16_384;
/// Updates queued for the state stage: room for an upsert of every container and pod sandbox
/// (they coalesce) and as many removals.
pub const UPDATE_QUEUE: usize = 4 * MAX_CONTAINERS;
/// Name of the container entity of a pod's sandbox (pause) process, as kubelet names it.
pub const SANDBOX_CONTAINER_NAME: &str = "POD";

/// A pod as a runtime describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    /// The sandbox id.
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub ips: Vec<String>,
    /// The sandbox's own cgroup (its pause process), if known.
    pub cgroups_path: String,
    pub pid: u32,
    /// Creation time, ns since the epoch (0: now).
    pub created_ns: i64,
}

/// A container as a runtime describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub cgroups_path: String,
    pub pid: u32,
    pub privileged: bool,
}

/// What the state stage needs to tag one cgroup's records.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadMeta {
    pub cgroup_id: u64,
    pub container: sysflow::Container,
    pub pod: Option<sysflow::Pod>,
    pub mode: CaptureMode,
    pub paths: Arc<PathFilter>,
}

#[derive(Clone, Debug)]
pub enum WorkloadUpdate {
    /// New or changed metadata or policy for a cgroup.
    Upsert(Arc<WorkloadMeta>),
    /// The runtime removed the container: once its last records are out, forget it.
    Removed {
        cgroup_id: u64,
        container_id: String,
    },
    /// The runtime removed the pod.
    PodRemoved { pod_id: String },
}

#[derive(Default)]
pub struct WorkloadStats {
    pub containers_registered: AtomicU64,
    /// Containers registered after their first process had already run (containerd-API
    /// fallback: task events arrive after the fact).
    pub late_registrations: AtomicU64,
    pub policy_reloads_ok: AtomicU64,
    pub policy_reloads_failed: AtomicU64,
}

struct PodEntry {
    info: PodInfo,
    decision: Decision,
    sysflow: sysflow::Pod,
    /// The sandbox's cgroup, when registered.
    sandbox_cgroup: Option<u64>,
}

struct ContainerEntry {
    info: ContainerInfo,
    cgroup_id: u64,
}

struct State {
    policy: Policy,
    pods: HashMap<String, PodEntry>,
    containers: HashMap<String, ContainerEntry>,
    by_cgroup: HashMap<u64, Arc<WorkloadMeta>>,
}

/// The node's workloads, kept by the metadata source and the policy watcher; the state stage
/// hears of them only through the update queue.
pub struct Workloads {
    state: Mutex<State>,
    control: Option<CaptureControl>,
    host: Host,
    node_name: String,
    node_ip: Option<Ipv4Addr>,
    updates: Arc<UpdateQueue>,
    losses: Arc<Losses>,
    pub stats: WorkloadStats,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Workloads {
    /// `control` is None only in tests that run without the kernel side.
    pub fn new(
        policy: Policy,
        control: Option<CaptureControl>,
        host: Host,
        node_name: String,
        node_ip: Option<Ipv4Addr>,
        losses: Arc<Losses>,
    ) -> (Arc<Workloads>, Arc<UpdateQueue>) {
        let updates = Arc::new(UpdateQueue::new(UPDATE_QUEUE, losses.clone()));
        let w = Workloads {
            state: Mutex::new(State {
                policy,
                pods: HashMap::new(),
                containers: HashMap::new(),
                by_cgroup: HashMap::new(),
            }),
            control,
            host,
            node_name,
            node_ip,
            updates: updates.clone(),
            losses,
            stats: WorkloadStats::default(),
        };
        w.apply_host_mode();
        (Arc::new(w), updates)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update below leaves the tables consistent between statements that can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply_host_mode(&self) {
        let host = self.state().policy.host;
        if let Some(control) = &self.control
            && let Err(e) = control.set_default_mode(host)
        {
            self.losses.emit(
                Loss::KernelMapError,
                1,
                format_args!("cannot set the default capture mode: {e}"),
            );
        }
    }

    fn set_kernel_mode(&self, cgroup: u64, mode: CaptureMode) {
        if let Some(control) = &self.control
            && let Err(e) = control.set_cgroup_mode(cgroup, mode)
        {
            self.losses.emit(
                Loss::KernelMapError,
                1,
                format_args!("cannot set the capture mode of cgroup {cgroup}: {e}"),
            );
        }
    }

    fn send(&self, update: WorkloadUpdate) {
        // A full queue counts and logs the drop itself.
        let _ = self.updates.push(update);
    }

    /// What this side knows of a cgroup now (for inspection: the state stage learns it from
    /// the queue).
    pub fn registered(&self, cgroup_id: u64) -> Option<Arc<WorkloadMeta>> {
        self.state().by_cgroup.get(&cgroup_id).cloned()
    }

    pub fn container_count(&self) -> usize {
        self.state().containers.len()
    }

    pub fn pod_count(&self) -> usize {
        self.state().pods.len()
    }

    pub fn policy(&self) -> Policy {
        self.state().policy.clone()
    }

    /// The cgroup id of a runtime's cgroups path, or of a process's cgroup.
    fn resolve_cgroup(&self, cgroups_path: &str, pid: u32) -> Option<u64> {
        self.host.container_cgroup_id(cgroups_path, pid)
    }

    fn pod_sysflow(&self, info: &PodInfo, restart_count: i64) -> sysflow::Pod {
        let ipv4 = |s: &String| s.parse::<Ipv4Addr>().ok().map(ipv4_to_long);
        sysflow::Pod {
            ts: if info.created_ns > 0 {
                info.created_ns
            } else {
                now_ns()
            },
            id: if info.uid.is_empty() {
                info.id.clone()
            } else {
                info.uid.clone()
            },
            name: info.name.clone(),
            node_name: self.node_name.clone(),
            host_ip: self.node_ip.map(ipv4_to_long).into_iter().collect(),
            internal_ip: info.ips.iter().filter_map(ipv4).collect(),
            namespace: info.namespace.clone(),
            restart_count,
            // The pod's own labels, without those the kubelet and the runtime add.
            labels: info
                .labels
                .iter()
                .filter(|(k, _)| {
                    !k.starts_with("io.kubernetes.") && !k.starts_with("io.cri-containerd.")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            selectors: BTreeMap::new(),
            services: Vec::new(),
        }
    }

    /// A pod sandbox is running (or was found running).
    pub fn pod_started(&self, info: PodInfo) {
        let mut st = self.state();
        self.upsert_pod(&mut st, info);
    }

    fn upsert_pod(&self, st: &mut State, info: PodInfo) {
        let decision = st
            .policy
            .decide(&info.namespace, &info.labels, &info.annotations);
        let (ts, restarts) = st
            .pods
            .get(&info.id)
            .map(|p| (p.sysflow.ts, p.sysflow.restart_count))
            .unwrap_or((0, 0));
        let mut pod = self.pod_sysflow(&info, restarts);
        if ts != 0 {
            pod.ts = ts;
        }
        let sandbox_cgroup = if st.by_cgroup.len() < MAX_CONTAINERS {
            self.resolve_cgroup(&info.cgroups_path, info.pid)
        } else {
            None
        };
        info!(
            namespace = %info.namespace,
            pod = %info.name,
            mode = %decision.mode,
            reason = %decision.reason,
            "pod"
        );
        let id = info.id.clone();
        st.pods.insert(
            id.clone(),
            PodEntry {
                info,
                decision,
                sysflow: pod,
                sandbox_cgroup,
            },
        );
        if let Some(cgroup) = sandbox_cgroup {
            let meta = Arc::new(self.sandbox_meta(&st.pods[&id], cgroup));
            self.publish(st, meta);
        }
        // The pod's containers follow its (possibly new) decision.
        let members: Vec<String> = st
            .containers
            .iter()
            .filter(|(_, c)| c.info.pod_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        for cid in members {
            self.refresh_container(st, &cid);
        }
    }

    fn sandbox_meta(&self, pod: &PodEntry, cgroup: u64) -> WorkloadMeta {
        WorkloadMeta {
            cgroup_id: cgroup,
            container: sysflow::Container {
                id: pod.info.id.clone(),
                name: SANDBOX_CONTAINER_NAME.into(),
                image: pod
                    .info
                    .annotations
                    .get("io.kubernetes.cri.image-name")
                    .cloned()
                    .unwrap_or_default(),
                imageid: String::new(),
                container_type: ContainerType::Containerd,
                privileged: false,
                pod_id: Some(pod.sysflow.id.clone()),
            },
            pod: Some(pod.sysflow.clone()),
            mode: pod.decision.mode,
            paths: pod.decision.paths.clone(),
        }
    }

    /// Sets the kernel mode and the entry of a cgroup, and queues it for the state stage.
    fn publish(&self, st: &mut State, meta: Arc<WorkloadMeta>) {
        if st.by_cgroup.get(&meta.cgroup_id) == Some(&meta) {
            return;
        }
        self.set_kernel_mode(meta.cgroup_id, meta.mode);
        st.by_cgroup.insert(meta.cgroup_id, meta.clone());
        self.send(WorkloadUpdate::Upsert(meta));
    }

    /// A container is about to run its workload (or was found running).
    pub fn container_started(&self, info: ContainerInfo, pod: Option<PodInfo>) {
        let mut st = self.state();
        if let Some(pod) = pod
            && !st.pods.contains_key(&pod.id)
        {
            self.upsert_pod(&mut st, pod);
        }
        if !st.containers.contains_key(&info.id) && st.containers.len() >= MAX_CONTAINERS {
            self.losses.emit(
                Loss::UntrackedContainer,
                1,
                format_args!(
                    "container table full ({MAX_CONTAINERS}): container {} not tagged",
                    info.id
                ),
            );
            return;
        }
        let Some(cgroup) = self.resolve_cgroup(&info.cgroups_path, info.pid) else {
            self.losses.emit(
                Loss::UnresolvedContainerCgroup,
                1,
                format_args!(
                    "cgroup of container {} not found (cgroups path {:?}, pid {}): captured \
                     in the default mode, untagged",
                    info.id, info.cgroups_path, info.pid
                ),
            );
            return;
        };
        self.stats.containers_registered.fetch_add(1, Relaxed);
        let id = info.id.clone();
        st.containers.insert(
            id.clone(),
            ContainerEntry {
                info,
                cgroup_id: cgroup,
            },
        );
        self.refresh_container(&mut st, &id);
    }

    /// Recomputes a container's metadata from its pod and publishes it if it changed.
    fn refresh_container(&self, st: &mut State, id: &str) {
        let Some(c) = st.containers.get(id) else {
            return;
        };
        let pod = st.pods.get_mut(&c.info.pod_id);
        let restarts: i64 = c
            .info
            .annotations
            .get("io.kubernetes.container.restartCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (decision, pod_sf) = match pod {
            Some(p) => {
                if restarts > p.sysflow.restart_count {
                    p.sysflow.restart_count = restarts;
                }
                (p.decision.clone(), Some(p.sysflow.clone()))
            }
            None => {
                // A container without a known pod (not created through CRI): the default.
                let d = st.policy.decide("", &c.info.labels, &c.info.annotations);
                (d, None)
            }
        };
        let image = if c.info.image.is_empty() {
            c.info
                .annotations
                .get("io.kubernetes.cri.image-name")
                .cloned()
                .unwrap_or_default()
        } else {
            c.info.image.clone()
        };
        let meta = Arc::new(WorkloadMeta {
            cgroup_id: c.cgroup_id,
            container: sysflow::Container {
                id: c.info.id.clone(),
                name: c.info.name.clone(),
                image,
                imageid: c.info.image_id.clone(),
                container_type: ContainerType::Containerd,
                privileged: c.info.privileged,
                pod_id: pod_sf.as_ref().map(|p| p.id.clone()),
            },
            pod: pod_sf,
            mode: decision.mode,
            paths: decision.paths,
        });
        debug!(container = %meta.container.name, cgroup = meta.cgroup_id, mode = %meta.mode, "container");
        self.publish(st, meta);
    }

    /// The runtime removed a container (its processes are gone): its entry and kernel mode go
    /// now; the state stage forgets it once its last records are out.
    pub fn container_removed(&self, id: &str) {
        let mut st = self.state();
        let Some(c) = st.containers.remove(id) else {
            return;
        };
        st.by_cgroup.remove(&c.cgroup_id);
        drop(st);
        self.forget_kernel_mode(c.cgroup_id);
        self.send(WorkloadUpdate::Removed {
            cgroup_id: c.cgroup_id,
            container_id: id.to_string(),
        });
    }

    pub fn pod_removed(&self, id: &str) {
        let mut st = self.state();
        let Some(pod) = st.pods.remove(id) else {
            return;
        };
        let members: Vec<String> = st
            .containers
            .iter()
            .filter(|(_, c)| c.info.pod_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        drop(st);
        for cid in members {
            self.container_removed(&cid);
        }
        if let Some(cgroup) = pod.sandbox_cgroup {
            self.state().by_cgroup.remove(&cgroup);
            self.forget_kernel_mode(cgroup);
            self.send(WorkloadUpdate::Removed {
                cgroup_id: cgroup,
                container_id: pod.info.id.clone(),
            });
        }
        self.send(WorkloadUpdate::PodRemoved {
            pod_id: pod.sysflow.id,
        });
    }

    fn forget_kernel_mode(&self, cgroup_id: u64) {
        if let Some(control) = &self.control
            && let Err(e) = control.remove_cgroup(cgroup_id)
        {
            self.losses.emit(
                Loss::KernelMapError,
                1,
                format_args!("cannot remove the capture mode of cgroup {cgroup_id}: {e}"),
            );
        }
    }

    /// Everything the runtime runs now (after a (re)connect): adopts what is new, and removes
    /// what we knew but the runtime no longer has.
    pub fn synchronize(&self, pods: Vec<PodInfo>, containers: Vec<ContainerInfo>) {
        let pod_ids: HashSet<String> = pods.iter().map(|p| p.id.clone()).collect();
        let container_ids: HashSet<String> = containers.iter().map(|c| c.id.clone()).collect();
        let (gone_pods, gone_containers): (Vec<String>, Vec<String>) = {
            let st = self.state();
            (
                st.pods
                    .keys()
                    .filter(|k| !pod_ids.contains(*k))
                    .cloned()
                    .collect(),
                st.containers
                    .keys()
                    .filter(|k| !container_ids.contains(*k))
                    .cloned()
                    .collect(),
            )
        };
        for id in gone_containers {
            self.container_removed(&id);
        }
        for id in gone_pods {
            self.pod_removed(&id);
        }
        for pod in pods {
            self.pod_started(pod);
        }
        for c in containers {
            self.container_started(c, None);
        }
    }

    /// Applies a new policy to every pod and container now.
    pub fn set_policy(&self, policy: Policy) {
        let mut st = self.state();
        st.policy = policy;
        let pods: Vec<PodInfo> = st.pods.values().map(|p| p.info.clone()).collect();
        for pod in pods {
            self.upsert_pod(&mut st, pod);
        }
        // Containers without a pod follow the default.
        let orphans: Vec<String> = st
            .containers
            .iter()
            .filter(|(_, c)| !st.pods.contains_key(&c.info.pod_id))
            .map(|(k, _)| k.clone())
            .collect();
        for id in orphans {
            self.refresh_container(&mut st, &id);
        }
        drop(st);
        self.apply_host_mode();
    }
}

#[cfg(test)]
mod tests;
