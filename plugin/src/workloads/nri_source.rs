//! NRI events into the workload table. The plugin handles pods coming and going, containers
//! starting (their cgroup exists, their workload has not run yet) and being removed; nothing
//! else, because the runtime calls every subscribed plugin in turn on the pod's start path.

use std::sync::Arc;

use super::{ContainerInfo, PodInfo, Workloads};
use crate::nri::proto::{Container, PodSandbox};

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

crate::nri_plugin! {
    impl Plugin for NriWorkloads {
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

        fn run_pod_sandbox(&self, pod: PodSandbox) {
            self.0.pod_started(pod_info(pod));
        }

        fn remove_pod_sandbox(&self, pod: PodSandbox) {
            self.0.pod_removed(&pod.id);
        }

        /// The container's cgroup exists and its workload has not run yet.
        fn start_container(&self, pod: Option<PodSandbox>, container: Container) {
            self.0
                .container_started(container_info(container), pod.map(pod_info));
        }

        fn remove_container(&self, _pod: Option<PodSandbox>, container: Container) {
            self.0.container_removed(&container.id);
        }
    }
}
