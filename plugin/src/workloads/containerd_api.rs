//! Fallback metadata source for clusters where NRI is off: containerd's own API. Lists the
//! containers and tasks of the Kubernetes namespace (`k8s.io`) and follows task events.
//!
//! The start-up race: containerd publishes `/tasks/start` after the task's process runs, so a
//! container's first records are captured in the host mode and tagged by cgroup path only
//! (container id, "incomplete" name) until the event arrives and the container is registered;
//! later records carry its pod. Every registration that comes from an event is counted as
//! late (`WorkloadStats::late_registrations`). NRI has no such race: it registers the cgroup
//! before the workload starts.

use std::{collections::HashMap, path::Path, sync::Arc};

use containerd_client::{
    events::{ContainerDelete, TaskDelete, TaskStart},
    services::v1::{
        Container, ListContainersRequest, ListTasksRequest, SubscribeRequest,
        containers_client::ContainersClient, events_client::EventsClient,
        tasks_client::TasksClient,
    },
    tonic::Request,
    types::v1::Status,
    with_namespace,
};
use prost::Message as _;
use tracing::{debug, info};

use super::{ContainerInfo, PodInfo, Workloads};

/// CRI labels containerd keeps on its containers.
const KIND_LABEL: &str = "io.cri-containerd.kind";
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to containerd at {path}: {source}")]
    Connect {
        path: String,
        source: containerd_client::tonic::transport::Error,
    },
    #[error("containerd API call {call} failed: {status}")]
    Call {
        call: &'static str,
        status: Box<containerd_client::tonic::Status>,
    },
    #[error("containerd event stream ended")]
    StreamEnded,
}

fn call_err(call: &'static str) -> impl Fn(containerd_client::tonic::Status) -> ApiError {
    move |status| ApiError::Call {
        call,
        status: Box::new(status),
    }
}

/// A CRI container or sandbox seen through containerd's API.
enum Described {
    Sandbox(Box<PodInfo>),
    Container(Box<(ContainerInfo, PodInfo)>),
}

fn pod_of(labels: &HashMap<String, String>, sandbox_id: &str) -> PodInfo {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let uid = get(POD_UID);
    PodInfo {
        // Containers only know their pod's uid, so in this mode the uid is the pod's key.
        id: if uid.is_empty() {
            sandbox_id.to_string()
        } else {
            uid.clone()
        },
        uid,
        name: get(POD_NAME),
        namespace: get(POD_NAMESPACE),
        labels: labels
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("io.cri-containerd.") && !k.starts_with("io.kubernetes.")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..PodInfo::default()
    }
}

fn describe(c: &Container, pid: u32) -> Option<Described> {
    match c.labels.get(KIND_LABEL).map(String::as_str) {
        Some("sandbox") => Some(Described::Sandbox(Box::new(PodInfo {
            pid,
            ..pod_of(&c.labels, &c.id)
        }))),
        Some("container") => {
            let pod = pod_of(&c.labels, "");
            Some(Described::Container(Box::new((
                ContainerInfo {
                    id: c.id.clone(),
                    pod_id: pod.id.clone(),
                    name: c.labels.get(CONTAINER_NAME).cloned().unwrap_or_default(),
                    image: c.image.clone(),
                    labels: c.labels.clone(),
                    pid,
                    ..ContainerInfo::default()
                },
                pod,
            ))))
        }
        // Not created through CRI.
        _ => None,
    }
}

fn register(workloads: &Workloads, described: Described) {
    match described {
        Described::Sandbox(pod) => workloads.pod_started(*pod),
        Described::Container(both) => {
            let (c, pod) = *both;
            workloads.container_started(c, Some(pod))
        }
    }
}

/// Adopts what runs in `namespace` now, then follows task events until the connection ends.
pub async fn follow(
    socket: &Path,
    namespace: &str,
    workloads: Arc<Workloads>,
) -> Result<(), ApiError> {
    let channel = containerd_client::connect(socket)
        .await
        .map_err(|source| ApiError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let mut containers = ContainersClient::new(channel.clone());
    let mut tasks = TasksClient::new(channel.clone());
    // Subscribe first, so nothing that starts while we list is missed. containerd answers a
    // subscription only with its first event, so the stream is awaited after the listing.
    let mut events_client = EventsClient::new(channel);
    let filters = vec![format!(
        "namespace=={namespace},topic~=\"^/(tasks|containers)/\""
    )];
    let subscription =
        tokio::spawn(async move { events_client.subscribe(SubscribeRequest { filters }).await });
    // Let the request reach containerd before listing.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    let listed = containers
        .list(with_namespace!(ListContainersRequest::default(), namespace))
        .await
        .map_err(call_err("Containers.List"))?
        .into_inner()
        .containers;
    let running: HashMap<String, u32> = tasks
        .list(with_namespace!(ListTasksRequest::default(), namespace))
        .await
        .map_err(call_err("Tasks.List"))?
        .into_inner()
        .tasks
        .into_iter()
        .filter(|t| t.status == Status::Running as i32 && t.pid > 0)
        .map(|t| (t.id, t.pid))
        .collect();
    let mut pods = HashMap::new();
    let mut found = Vec::new();
    for c in &listed {
        let Some(&pid) = running.get(&c.id) else {
            continue;
        };
        match describe(c, pid) {
            Some(Described::Sandbox(pod)) => {
                pods.insert(pod.id.clone(), *pod);
            }
            Some(Described::Container(both)) => found.push(both.0),
            None => {}
        }
    }
    info!(
        pods = pods.len(),
        containers = found.len(),
        "containerd API: adopted running workloads (NRI is not available)"
    );
    workloads.synchronize(pods.into_values().collect(), found);

    let mut by_id: HashMap<String, Container> =
        listed.into_iter().map(|c| (c.id.clone(), c)).collect();
    let mut events = match subscription.await {
        Ok(r) => r.map_err(call_err("Events.Subscribe"))?.into_inner(),
        Err(_) => return Err(ApiError::StreamEnded),
    };
    loop {
        let envelope = match events.message().await {
            Ok(Some(e)) => e,
            Ok(None) => return Err(ApiError::StreamEnded),
            Err(status) => return Err(call_err("Events stream")(status)),
        };
        if envelope.namespace != namespace {
            continue;
        }
        let Some(payload) = envelope.event else {
            continue;
        };
        match envelope.topic.as_str() {
            "/tasks/start" => {
                let Ok(start) = TaskStart::decode(payload.value.as_slice()) else {
                    debug!("undecodable TaskStart");
                    continue;
                };
                if !by_id.contains_key(&start.container_id) {
                    // Created after our listing: fetch it.
                    match containers
                        .get(with_namespace!(
                            containerd_client::services::v1::GetContainerRequest {
                                id: start.container_id.clone(),
                            },
                            namespace
                        ))
                        .await
                    {
                        Ok(r) => {
                            if let Some(c) = r.into_inner().container {
                                by_id.insert(c.id.clone(), c);
                            }
                        }
                        Err(status) => {
                            debug!(container = %start.container_id, "container vanished: {status}");
                            continue;
                        }
                    }
                }
                if let Some(described) = by_id
                    .get(&start.container_id)
                    .and_then(|c| describe(c, start.pid))
                {
                    workloads
                        .stats
                        .late_registrations
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    register(&workloads, described);
                }
            }
            "/tasks/delete" => {
                let Ok(deleted) = TaskDelete::decode(payload.value.as_slice()) else {
                    continue;
                };
                // Only the init process ending ends the container.
                if !deleted.id.is_empty() && deleted.id != deleted.container_id {
                    continue;
                }
                match by_id
                    .get(&deleted.container_id)
                    .and_then(|c| describe(c, 0))
                {
                    Some(Described::Sandbox(pod)) => workloads.pod_removed(&pod.id),
                    Some(Described::Container(both)) => workloads.container_removed(&both.0.id),
                    None => {}
                }
            }
            "/containers/delete" => {
                if let Ok(deleted) = ContainerDelete::decode(payload.value.as_slice()) {
                    by_id.remove(&deleted.id);
                }
            }
            _ => {}
        }
    }
}
