//! The one channel from the runtime side to the state stage: workload updates in order,
//! bounded. An update for a cgroup that already has one waiting replaces it in place (only
//! the latest metadata matters), so a policy reload that touches every container needs one
//! slot per container, not one per change. Past the bound, updates are dropped and counted.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

use super::WorkloadUpdate;
use crate::internal_events::{Loss, Losses};

pub struct UpdateQueue {
    pending: Mutex<Pending>,
    ready: Notify,
    capacity: usize,
    losses: Arc<Losses>,
}

#[derive(Default)]
struct Pending {
    updates: Vec<WorkloadUpdate>,
    /// Where each cgroup's waiting upsert is in `updates`.
    upserts: HashMap<u64, usize>,
}

impl UpdateQueue {
    pub fn new(capacity: usize, losses: Arc<Losses>) -> Self {
        UpdateQueue {
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
            capacity,
            losses,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an update; false when the queue was full (the update is dropped and counted).
    pub fn push(&self, update: WorkloadUpdate) -> bool {
        let mut p = self.pending();
        if let WorkloadUpdate::Upsert(meta) = &update
            && let Some(&at) = p.upserts.get(&meta.cgroup_id)
        {
            p.updates[at] = update;
            return true;
        }
        if p.updates.len() >= self.capacity {
            drop(p);
            self.losses.emit(
                Loss::DroppedWorkloadUpdate,
                1,
                format_args!(
                    "workload update queue full ({} updates): an update was dropped",
                    self.capacity
                ),
            );
            return false;
        }
        if let WorkloadUpdate::Upsert(meta) = &update {
            let at = p.updates.len();
            p.upserts.insert(meta.cgroup_id, at);
        }
        p.updates.push(update);
        drop(p);
        self.ready.notify_one();
        true
    }

    /// Every waiting update, in order.
    pub fn drain(&self) -> Vec<WorkloadUpdate> {
        let mut p = self.pending();
        p.upserts.clear();
        std::mem::take(&mut p.updates)
    }

    /// Resolves once updates are waiting (at once if some were queued since the last drain).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    pub fn len(&self) -> usize {
        self.pending().updates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        capture::CaptureMode,
        workloads::{WorkloadMeta, WorkloadUpdate},
    };

    fn upsert(cgroup_id: u64, name: &str) -> WorkloadUpdate {
        WorkloadUpdate::Upsert(Arc::new(WorkloadMeta {
            cgroup_id,
            container: sysflow::Container {
                id: format!("c{cgroup_id}"),
                name: name.into(),
                image: String::new(),
                imageid: String::new(),
                container_type: sysflow::ContainerType::Containerd,
                privileged: false,
                pod_id: None,
            },
            pod: None,
            mode: CaptureMode::ALL,
            paths: Arc::default(),
        }))
    }

    fn names(updates: &[WorkloadUpdate]) -> Vec<String> {
        updates
            .iter()
            .map(|u| match u {
                WorkloadUpdate::Upsert(m) => format!("{}={}", m.cgroup_id, m.container.name),
                WorkloadUpdate::Removed { cgroup_id, .. } => format!("-{cgroup_id}"),
                WorkloadUpdate::PodRemoved { pod_id } => format!("-pod {pod_id}"),
            })
            .collect()
    }

    #[test]
    fn a_later_upsert_replaces_the_waiting_one_in_place_and_order_is_kept() {
        let losses = Arc::new(Losses::default());
        let q = UpdateQueue::new(3, losses.clone());
        assert!(q.push(upsert(1, "a")));
        assert!(q.push(upsert(2, "b")));
        assert!(q.push(WorkloadUpdate::Removed {
            cgroup_id: 1,
            container_id: "c1".into()
        }));
        // Full, but cgroup 2 has an upsert waiting: it is replaced, nothing is dropped.
        assert!(q.push(upsert(2, "b2")));
        assert!(!q.push(upsert(3, "c")));
        assert_eq!(losses.count(Loss::DroppedWorkloadUpdate), 1);
        assert_eq!(names(&q.drain()), ["1=a", "2=b2", "-1"]);
        assert!(q.is_empty());
        // After a drain, an upsert for a cgroup seen before queues anew.
        assert!(q.push(upsert(2, "b3")));
        assert_eq!(names(&q.drain()), ["2=b3"]);
    }
}
