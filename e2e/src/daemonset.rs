//! A DaemonSet's pod, turned into the CRI calls kubelet would make for it on one node: the
//! sandbox (host namespaces, labels, cgroup parent, port mappings) and each container (image,
//! args, environment with the downward API resolved, mounts with hostPath, ConfigMap, Secret
//! and emptyDir volumes materialised the way kubelet does, resources as cgroup settings, the
//! security context), plus the probes kubelet would run.
//!
//! What kubelet leaves to others (scheduling, tolerations, priority, update strategy) is not
//! CRI's business and is not translated. A manifest field this translation does not know makes
//! it fail, so a test never runs something other than what the manifest says.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};
use serde_json::Value as Json;

/// Every document of a multi-document manifest file.
pub struct Manifests {
    pub path: PathBuf,
    pub docs: Vec<Json>,
}

impl Manifests {
    pub fn load(path: &Path) -> anyhow::Result<Manifests> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let docs: Vec<Json> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        Ok(Manifests {
            path: path.into(),
            docs: docs.into_iter().filter(|d| !d.is_null()).collect(),
        })
    }

    /// The object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> anyhow::Result<&Json> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .ok_or_else(|| anyhow!("{}: no {kind} {name}", self.path.display()))
    }

    pub fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Json> {
        self.docs.iter().filter(move |d| d["kind"] == kind)
    }
}

/// The node the pod lands on, and where its host paths are in this test.
pub struct Node {
    pub name: String,
    pub ip: String,
    /// Manifest hostPath → the folder standing in for it.
    pub host_paths: HashMap<String, PathBuf>,
    /// Where ConfigMap, Secret and emptyDir volumes are materialised.
    pub volumes_dir: PathBuf,
    /// kubelet's pod cgroup (`<root>/burstable/pod<uid>` in the cgroupfs layout).
    pub cgroup_parent: String,
    pub log_dir: PathBuf,
}

/// A probe kubelet would run against the pod (host network: on the node's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    pub kind: &'static str,
    pub container: String,
    pub path: String,
    pub port: u16,
}

/// The CRI configs of one DaemonSet pod.
pub struct PodConfigs {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox: PodSandboxConfig,
    pub containers: Vec<ContainerConfig>,
    pub probes: Vec<HttpProbe>,
}

/// The strings of a JSON array (none when it is not one).
fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn str_of<'a>(v: &'a Json, what: &str) -> anyhow::Result<&'a str> {
    v.as_str()
        .ok_or_else(|| anyhow!("{what}: expected a string, got {v}"))
}

/// A Kubernetes quantity ("100m", "128Mi", "2", "1G") in the unit's base (milli-units when
/// `milli`).
pub fn quantity(q: &Json, milli: bool) -> anyhow::Result<i64> {
    let text = match q {
        Json::Number(n) => n.to_string(),
        other => str_of(other, "quantity")?.to_string(),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("quantity {text:?}"))?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("quantity {text:?}: unknown suffix {other:?}"),
    };
    let value = number * factor * if milli { 1000.0 } else { 1.0 };
    Ok(value.round() as i64)
}

/// The pod template's fields kubelet reads; anything else in the spec is refused.
const POD_FIELDS: &[&str] = &[
    "serviceAccountName",
    "automountServiceAccountToken",
    "hostPID",
    "hostNetwork",
    "hostIPC",
    "dnsPolicy",
    "priorityClassName",
    "tolerations",
    "nodeSelector",
    "terminationGracePeriodSeconds",
    "containers",
    "volumes",
];
const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "env",
    "resources",
    "securityContext",
    "volumeMounts",
];

fn known_fields(obj: &Json, known: &[&str], what: &str) -> anyhow::Result<()> {
    for key in obj.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !known.contains(&key.as_str()) {
            bail!("{what}: field {key} is not translated to CRI by this harness");
        }
    }
    Ok(())
}

struct Translation<'a> {
    manifests: &'a Manifests,
    namespace: String,
    pod_name: String,
    uid: String,
    node: &'a Node,
    volumes: HashMap<String, Json>,
}

impl Translation<'_> {
    fn downward(&self, field: &str) -> anyhow::Result<String> {
        Ok(match field {
            "spec.nodeName" => self.node.name.clone(),
            "metadata.name" => self.pod_name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "metadata.uid" => self.uid.clone(),
            // Host network: the pod's address is the node's.
            "status.podIP" | "status.hostIP" => self.node.ip.clone(),
            other => bail!("downward API field {other} not supported"),
        })
    }

    fn env(&self, container: &Json) -> anyhow::Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let key = str_of(&e["name"], "env name")?.to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                self.downward(path)?
            } else {
                bail!("env {key}: only value and fieldRef are supported");
            };
            out.push(KeyValue { key, value });
        }
        Ok(out)
    }

    /// Writes a ConfigMap's or Secret's keys (or the `items` chosen) into a folder, as kubelet
    /// projects them; returns the folder.
    fn project(
        &self,
        volume: &str,
        data: &HashMap<String, Vec<u8>>,
        items: &Json,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.node.volumes_dir.join(volume);
        std::fs::create_dir_all(&dir)?;
        let chosen: Vec<(String, String)> = match items.as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    Ok((
                        str_of(&i["key"], "items.key")?.to_string(),
                        str_of(&i["path"], "items.path")?.to_string(),
                    ))
                })
                .collect::<anyhow::Result<_>>()?,
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in chosen {
            let bytes = data
                .get(&key)
                .with_context(|| format!("volume {volume}: no key {key}"))?;
            std::fs::write(dir.join(path), bytes)?;
        }
        Ok(dir)
    }

    /// The host folder a volume's mount comes from, and whether kubelet forces it read-only.
    fn volume_source(&self, name: &str) -> anyhow::Result<(PathBuf, bool)> {
        let v = self
            .volumes
            .get(name)
            .with_context(|| format!("no volume {name}"))?;
        if let Some(path) = v["hostPath"]["path"].as_str() {
            let stand_in = self.node.host_paths.get(path).with_context(|| {
                format!("hostPath {path} (volume {name}): the test gives no folder for it")
            })?;
            if v["hostPath"]["type"] == "DirectoryOrCreate" {
                std::fs::create_dir_all(stand_in)?;
            }
            return Ok((stand_in.clone(), false));
        }
        if let Some(cm) = v["configMap"]["name"].as_str() {
            let doc = self.manifests.get("ConfigMap", cm)?;
            let data: HashMap<String, Vec<u8>> = doc["data"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| Ok((k.clone(), str_of(v, k)?.as_bytes().to_vec())))
                .collect::<anyhow::Result<_>>()?;
            return Ok((self.project(name, &data, &v["configMap"]["items"])?, true));
        }
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            // Secrets are created by the operator, not shipped: an optional one that does not
            // exist is an empty folder, as kubelet mounts it.
            let data = match self.manifests.get("Secret", secret) {
                Ok(doc) => doc["stringData"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| Ok((k.clone(), str_of(v, k)?.as_bytes().to_vec())))
                    .collect::<anyhow::Result<_>>()?,
                Err(_) if v["secret"]["optional"] == true => HashMap::new(),
                Err(e) => return Err(e),
            };
            return Ok((self.project(name, &data, &v["secret"]["items"])?, true));
        }
        if v.get("emptyDir").is_some() {
            let dir = self.node.volumes_dir.join(name);
            std::fs::create_dir_all(&dir)?;
            return Ok((dir, false));
        }
        bail!("volume {name}: only hostPath, configMap, secret and emptyDir are supported")
    }

    fn mounts(&self, container: &Json) -> anyhow::Result<Vec<Mount>> {
        let mut out = Vec::new();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = str_of(&m["name"], "volumeMounts.name")?;
            let (mut host_path, forced_read_only) = self.volume_source(name)?;
            if let Some(sub) = m["subPath"].as_str() {
                host_path = host_path.join(sub);
            }
            let propagation = match m["mountPropagation"].as_str() {
                None | Some("None") => MountPropagation::PropagationPrivate,
                Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => MountPropagation::PropagationBidirectional,
                Some(other) => bail!("mountPropagation {other}"),
            };
            out.push(Mount {
                container_path: str_of(&m["mountPath"], "mountPath")?.to_string(),
                host_path: host_path.display().to_string(),
                readonly: forced_read_only || m["readOnly"] == true,
                propagation: propagation as i32,
                ..Default::default()
            });
        }
        Ok(out)
    }

    fn resources(&self, container: &Json) -> anyhow::Result<LinuxContainerResources> {
        let r = &container["resources"];
        let mut out = LinuxContainerResources::default();
        // kubelet: shares = milli-CPU × 1024 / 1000 (at least 2); no CPU limit, no quota.
        let cpu_request = match r["requests"].get("cpu") {
            Some(q) => quantity(q, true)?,
            None => 0,
        };
        out.cpu_shares = (cpu_request * 1024 / 1000).max(2);
        if let Some(q) = r["limits"].get("cpu") {
            out.cpu_period = 100_000;
            out.cpu_quota = quantity(q, true)? * 100;
        }
        if let Some(q) = r["limits"].get("memory") {
            out.memory_limit_in_bytes = quantity(q, false)?;
        }
        Ok(out)
    }

    fn ports(container: &Json) -> HashMap<String, u16> {
        container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    p["containerPort"].as_u64()? as u16,
                ))
            })
            .collect()
    }

    fn probes(&self, container: &Json) -> anyhow::Result<Vec<HttpProbe>> {
        let name = str_of(&container["name"], "container name")?.to_string();
        let ports = Self::ports(container);
        let mut out = Vec::new();
        for (kind, key) in [
            ("liveness", "livenessProbe"),
            ("readiness", "readinessProbe"),
        ] {
            let Some(get) = container[key].get("httpGet") else {
                continue;
            };
            let port = match &get["port"] {
                Json::Number(n) => n.as_u64().context("probe port")? as u16,
                Json::String(named) => *ports
                    .get(named)
                    .with_context(|| format!("{key}: no container port named {named}"))?,
                other => bail!("{key}: port {other}"),
            };
            out.push(HttpProbe {
                kind,
                container: name.clone(),
                path: str_of(&get["path"], "httpGet.path")?.to_string(),
                port,
            });
        }
        Ok(out)
    }

    fn security(
        &self,
        container: &Json,
        namespaces: NamespaceOption,
    ) -> anyhow::Result<LinuxContainerSecurityContext> {
        let sc = &container["securityContext"];
        let capabilities = (sc.get("capabilities").is_some()).then(|| Capability {
            add_capabilities: strings(&sc["capabilities"]["add"]),
            drop_capabilities: strings(&sc["capabilities"]["drop"]),
            ..Default::default()
        });
        Ok(LinuxContainerSecurityContext {
            privileged: sc["privileged"] == true,
            capabilities,
            namespace_options: Some(namespaces),
            readonly_rootfs: sc["readOnlyRootFilesystem"] == true,
            run_as_user: sc["runAsUser"]
                .as_i64()
                .map(|value| k8s_cri::v1::Int64Value { value }),
            ..Default::default()
        })
    }
}

impl Node {
    /// The pod `daemonset` (in `manifests`) gets on this node, named `pod_name` with `uid`.
    pub fn pod_of(
        &self,
        manifests: &Manifests,
        daemonset: &str,
        pod_name: &str,
        uid: &str,
    ) -> anyhow::Result<PodConfigs> {
        let ds = manifests.get("DaemonSet", daemonset)?;
        let namespace = str_of(&ds["metadata"]["namespace"], "DaemonSet namespace")?.to_string();
        let template = &ds["spec"]["template"];
        let spec = &template["spec"];
        known_fields(spec, POD_FIELDS, "the pod template")?;
        if spec["hostNetwork"] != true {
            bail!(
                "the pod network needs a CNI plugin, which this harness has not: hostNetwork only"
            );
        }
        let namespaces = NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: if spec["hostPID"] == true {
                NamespaceMode::Node
            } else {
                NamespaceMode::Container
            } as i32,
            ipc: if spec["hostIPC"] == true {
                NamespaceMode::Node
            } else {
                NamespaceMode::Pod
            } as i32,
            ..Default::default()
        };
        let t = Translation {
            manifests,
            namespace: namespace.clone(),
            pod_name: pod_name.into(),
            uid: uid.into(),
            node: self,
            volumes: spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| Some((v["name"].as_str()?.to_string(), v.clone())))
                .collect(),
        };
        let containers = spec["containers"]
            .as_array()
            .context("the pod template has no containers")?;
        let mut labels: HashMap<String, String> = template["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        labels.insert("io.kubernetes.pod.name".into(), pod_name.into());
        labels.insert("io.kubernetes.pod.namespace".into(), namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), uid.into());
        let port_mappings = containers
            .iter()
            .flat_map(|c| Translation::ports(c).into_values())
            .map(|port| PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: port as i32,
                host_port: port as i32,
                host_ip: String::new(),
            })
            .collect();
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod_name.into(),
                uid: uid.into(),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            hostname: String::new(),
            log_directory: self.log_dir.display().to_string(),
            port_mappings,
            labels: labels.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces.clone()),
                    privileged: containers
                        .iter()
                        .any(|c| c["securityContext"]["privileged"] == true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut configs = Vec::new();
        let mut probes = Vec::new();
        for c in containers {
            known_fields(c, CONTAINER_FIELDS, "a container")?;
            let name = str_of(&c["name"], "container name")?.to_string();
            let mut container_labels = HashMap::from([
                ("io.kubernetes.container.name".to_string(), name.clone()),
                ("io.kubernetes.pod.name".to_string(), pod_name.to_string()),
                ("io.kubernetes.pod.namespace".to_string(), namespace.clone()),
                ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
            ]);
            container_labels.retain(|_, v| !v.is_empty());
            configs.push(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.clone(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: str_of(&c["image"], "image")?.to_string(),
                    ..Default::default()
                }),
                command: strings(&c["command"]),
                args: strings(&c["args"]),
                envs: t.env(c)?,
                mounts: t.mounts(c)?,
                labels: container_labels,
                annotations: HashMap::from([(
                    "io.kubernetes.container.restartCount".to_string(),
                    "0".to_string(),
                )]),
                log_path: format!("{name}.log"),
                linux: Some(LinuxContainerConfig {
                    resources: Some(t.resources(c)?),
                    security_context: Some(t.security(c, namespaces.clone())?),
                }),
                ..Default::default()
            });
            probes.extend(t.probes(c)?);
        }
        Ok(PodConfigs {
            name: pod_name.into(),
            namespace,
            uid: uid.into(),
            sandbox,
            containers: configs,
            probes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_base_units() {
        let q = |s: &str, milli| quantity(&Json::String(s.into()), milli).unwrap();
        assert_eq!(q("100m", true), 100);
        assert_eq!(q("2", true), 2000);
        assert_eq!(q("128Mi", false), 134_217_728);
        assert_eq!(q("1G", false), 1_000_000_000);
        assert!(quantity(&Json::String("5Q".into()), false).is_err());
    }
}
