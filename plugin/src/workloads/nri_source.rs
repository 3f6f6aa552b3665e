//! NRI events into the workload table.

use std::sync::Arc;

use super::{ContainerInfo, PodInfo, Workloads};
use crate::nri::{
    NriHandler,
    proto::{Container, Event, PodSandbox},
};

/// `ContainerState::CONTAINER_RUNNING`.
const RUNNING: i32 = 3;

pub struct NriWorkloads(pub Arc<Workloads>);

pub fn pod_info(pod: PodSandbox) -> PodInfo {
    let cgroups_path = pod
        .linux
        .as_ref()
        .map(|l| l.cgroups_path.clone())
        .unwrap_or_default();
    PodInfo {
        id: pod.id,
        uid: pod.uid,
        name: pod.name,
        namespace: pod.namespace,
        labels: pod.labels,
        annotations: pod.annotations,
        ips: pod.ips,
        cgroups_path,
        pid: pod.pid,
        created_ns: 0,
    }
}

pub fn container_info(c: Container) -> ContainerInfo {
    ContainerInfo {
        cgroups_path: c.linux.map(|l| l.cgroups_path).unwrap_or_default(),
        id: c.id,
        pod_id: c.pod_sandbox_id,
        name: c.name,
        // containerd's CRI plugin records the image the pod spec asked for.
        image: c
            .annotations
            .get("io.kubernetes.cri.image-name")
            .cloned()
            .unwrap_or_default(),
        image_id: String::new(),
        labels: c.labels,
        annotations: c.annotations,
        pid: c.pid,
        privileged: false,
    }
}

impl NriHandler for NriWorkloads {
    fn synchronize(&self, pods: Vec<PodSandbox>, containers: Vec<Container>) {
        // Only running containers have a cgroup to adopt.
        let containers = containers
            .into_iter()
            .filter(|c| c.state == RUNNING || c.pid > 0)
            .map(container_info)
            .collect();
        self.0
            .synchronize(pods.into_iter().map(pod_info).collect(), containers);
    }

    fn pod_event(&self, event: Event, pod: PodSandbox) {
        match event {
            Event::RunPodSandbox => self.0.pod_started(pod_info(pod)),
            Event::RemovePodSandbox => self.0.pod_removed(&pod.id),
            _ => {}
        }
    }

    fn container_event(&self, event: Event, pod: Option<PodSandbox>, container: Container) {
        match event {
            Event::StartContainer => self
                .0
                .container_started(container_info(container), pod.map(pod_info)),
            Event::RemoveContainer => self.0.container_removed(&container.id),
            _ => {}
        }
    }
}
