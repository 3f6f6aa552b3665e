//! A CRI client that creates pods and containers the way kubelet does: the same labels and
//! annotations kubelet sets, host networking (no CNI here), a cgroup parent per pod.

use std::{collections::HashMap, path::Path};

use anyhow::Context as _;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::{Channel, Endpoint};

/// A pod to create.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    /// Parent cgroup (kubelet's cgroupfs layout: `/kubepods/besteffort/pod<uid>`).
    pub cgroup_parent: String,
    pub log_dir: String,
}

impl PodSpec {
    pub fn new(name: &str, namespace: &str, cgroup_root: &str, log_root: &Path) -> PodSpec {
        let uid = format!(
            "{:08x}-e2e0-4000-8000-{:012x}",
            std::process::id(),
            unique()
        );
        PodSpec {
            name: name.into(),
            namespace: namespace.into(),
            cgroup_parent: format!("{cgroup_root}/pod{uid}"),
            log_dir: log_root.join(&uid).display().to_string(),
            uid,
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            annotations: HashMap::new(),
        }
    }

    fn namespaces() -> NamespaceOption {
        NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    /// The sandbox config kubelet would send.
    pub fn sandbox_config(&self) -> PodSandboxConfig {
        let mut labels = self.labels.clone();
        labels.insert("io.kubernetes.pod.name".into(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), self.uid.clone());
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // Host-network pods must leave the hostname empty.
            hostname: String::new(),
            log_directory: self.log_dir.clone(),
            labels,
            annotations: self.annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(Self::namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (NEXT.fetch_add(1, Ordering::Relaxed) << 32 | nanos) & 0xffff_ffff_ffff
}

#[derive(Clone)]
pub struct Cri {
    rt: RuntimeServiceClient<Channel>,
}

impl Cri {
    pub async fn connect(socket: &Path) -> anyhow::Result<Cri> {
        let socket = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:0")?
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .context("connecting to the CRI socket")?;
        Ok(Cri {
            rt: RuntimeServiceClient::new(channel),
        })
    }

    /// RunPodSandbox; returns the sandbox id.
    pub async fn run_pod(&mut self, pod: &PodSpec) -> anyhow::Result<String> {
        self.run_pod_config(pod.sandbox_config()).await
    }

    /// RunPodSandbox with a config built elsewhere (e.g. from a manifest).
    pub async fn run_pod_config(&mut self, config: PodSandboxConfig) -> anyhow::Result<String> {
        std::fs::create_dir_all(&config.log_directory)?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        let r = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .with_context(|| format!("RunPodSandbox {name}"))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// CreateContainer + StartContainer with configs built elsewhere; returns its id.
    pub async fn run_container_config(
        &mut self,
        pod_id: &str,
        sandbox: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> anyhow::Result<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let id = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .with_context(|| format!("CreateContainer {name}"))?
            .into_inner()
            .container_id;
        self.start_container(&id).await?;
        Ok(id)
    }

    /// StopContainer: SIGTERM, SIGKILL after `timeout_secs`, as kubelet stops a container.
    pub async fn stop_container(&mut self, id: &str, timeout_secs: i64) -> anyhow::Result<()> {
        self.rt
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_secs,
            })
            .await
            .with_context(|| format!("StopContainer {id}"))?;
        Ok(())
    }

    /// CreateContainer; returns the container id.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        pod: &PodSpec,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> anyhow::Result<String> {
        let labels = HashMap::from([
            ("io.kubernetes.container.name".to_string(), name.to_string()),
            ("io.kubernetes.pod.name".to_string(), pod.name.clone()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                pod.namespace.clone(),
            ),
            ("io.kubernetes.pod.uid".to_string(), pod.uid.clone()),
        ]);
        let annotations = HashMap::from([(
            "io.kubernetes.container.restartCount".to_string(),
            "0".to_string(),
        )]);
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            labels,
            annotations,
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(PodSpec::namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(pod.sandbox_config()),
            })
            .await
            .with_context(|| format!("CreateContainer {name} in {}", pod.name))?;
        Ok(r.into_inner().container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> anyhow::Result<()> {
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .with_context(|| format!("StartContainer {id}"))?;
        Ok(())
    }

    /// Creates and starts one container; returns its id.
    pub async fn run_container(
        &mut self,
        pod_id: &str,
        pod: &PodSpec,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> anyhow::Result<String> {
        let id = self
            .create_container(pod_id, pod, name, image, command)
            .await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    /// The container's exit code once it exited (None while it runs).
    pub async fn exit_code(&mut self, id: &str) -> anyhow::Result<Option<i32>> {
        let status = self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .context("no status")?;
        Ok(
            (status.state == k8s_cri::v1::ContainerState::ContainerExited as i32)
                .then_some(status.exit_code),
        )
    }

    /// Waits for a container to exit; returns its exit code.
    pub async fn wait_exit(
        &mut self,
        id: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<i32> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_code(id).await? {
                return Ok(code);
            }
            if tokio::time::Instant::now() > end {
                anyhow::bail!("container {id} still running after {timeout:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// StopPodSandbox + RemovePodSandbox (kills and removes its containers too).
    pub async fn remove_pod(&mut self, pod_id: &str) -> anyhow::Result<()> {
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .with_context(|| format!("StopPodSandbox {pod_id}"))?;
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .with_context(|| format!("RemovePodSandbox {pod_id}"))?;
        Ok(())
    }

    /// Ids of every pod sandbox the runtime knows.
    pub async fn pod_ids(&mut self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .rt
            .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect())
    }
}
