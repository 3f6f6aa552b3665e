//! The workload table against real directories standing in for cgroups (a cgroup id is the
//! directory's inode) and the real cgroup of this test process.

use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

use super::*;
use crate::capture::CaptureMode;
use crate::host::{Host, cgroup::cgroup2_mount};

const POLICY: &str = "\
default: process
host: off
rules:
  - namespaces: [shop]
    mode: all
    paths: {exclude: [/proc]}
  - namespaces: [quiet]
    mode: off
";

struct Fixture {
    _root: tempfile::TempDir,
    mount: PathBuf,
    workloads: Arc<Workloads>,
    updates: Arc<UpdateQueue>,
    losses: Arc<Losses>,
}

fn fixture(policy: &str) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().to_path_buf();
    let losses = Arc::new(Losses::default());
    let (workloads, updates) = Workloads::new(
        Policy::parse(policy, "test").unwrap(),
        None,
        Host::new("/proc", "/etc", mount.clone()),
        "node-1".into(),
        Some(Ipv4Addr::new(10, 0, 0, 7)),
        losses.clone(),
    );
    Fixture {
        _root: root,
        mount,
        workloads,
        updates,
        losses,
    }
}

impl Fixture {
    /// Makes the cgroup directory of `path` and returns its id.
    fn cgroup(&self, path: &str) -> u64 {
        let dir = self.mount.join(path);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::metadata(dir).unwrap().ino()
    }

    fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for u in self.updates.drain() {
            out.push(match u {
                WorkloadUpdate::Upsert(m) => format!(
                    "upsert {} {} mode={}",
                    m.container.name,
                    m.pod.as_ref().map(|p| p.name.as_str()).unwrap_or("-"),
                    m.mode
                ),
                WorkloadUpdate::Removed { container_id, .. } => format!("removed {container_id}"),
                WorkloadUpdate::PodRemoved { pod_id } => format!("pod removed {pod_id}"),
            });
        }
        out
    }
}

fn pod(id: &str, name: &str, ns: &str) -> PodInfo {
    PodInfo {
        id: id.into(),
        uid: format!("uid-{id}"),
        name: name.into(),
        namespace: ns.into(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        ips: vec!["10.1.2.3".into()],
        cgroups_path: format!("/kubepods/pod{id}/{id}"),
        ..PodInfo::default()
    }
}

fn container(id: &str, pod_id: &str, name: &str) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        pod_id: pod_id.into(),
        name: name.into(),
        annotations: HashMap::from([(
            "io.kubernetes.cri.image-name".to_string(),
            "docker.io/library/web:1".to_string(),
        )]),
        cgroups_path: format!("/kubepods/pod{pod_id}/{id}"),
        ..ContainerInfo::default()
    }
}

#[test]
fn a_started_container_is_tagged_with_its_pod_and_policy_mode() {
    let mut f = fixture(POLICY);
    let sandbox_cg = f.cgroup("kubepods/podp1/p1");
    let cg = f.cgroup("kubepods/podp1/c1");
    f.workloads.pod_started(pod("p1", "web-0", "shop"));
    f.workloads
        .container_started(container("c1", "p1", "nginx"), None);

    let meta = f.workloads.registered(cg).expect("registered");
    assert_eq!(meta.mode, CaptureMode::ALL);
    assert_eq!(meta.paths.exclude, vec!["/proc"]);
    assert_eq!(meta.container.name, "nginx");
    assert_eq!(meta.container.image, "docker.io/library/web:1");
    assert_eq!(meta.container.pod_id.as_deref(), Some("uid-p1"));
    let pod = meta.pod.as_ref().unwrap();
    assert_eq!(
        (
            pod.id.as_str(),
            pod.name.as_str(),
            pod.namespace.as_str(),
            pod.node_name.as_str()
        ),
        ("uid-p1", "web-0", "shop", "node-1")
    );
    assert_eq!(
        pod.internal_ip,
        vec![ipv4_to_long(Ipv4Addr::new(10, 1, 2, 3))]
    );
    assert_eq!(pod.host_ip, vec![ipv4_to_long(Ipv4Addr::new(10, 0, 0, 7))]);
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("web-0"));
    // The sandbox's own cgroup is tagged too, as kubelet's "POD" container.
    let sandbox = f.workloads.registered(sandbox_cg).unwrap();
    assert_eq!(sandbox.container.name, SANDBOX_CONTAINER_NAME);
    assert_eq!(sandbox.container.id, "p1");
    assert_eq!(
        f.drain(),
        vec![
            format!("upsert POD web-0 mode={}", CaptureMode::ALL),
            format!("upsert nginx web-0 mode={}", CaptureMode::ALL),
        ]
    );
    assert_eq!(f.workloads.container_count(), 1);
    assert_eq!(f.workloads.pod_count(), 1);
}

#[test]
fn systemd_driver_paths_and_pids_resolve_too() {
    let f = fixture(POLICY);
    let cg = f.cgroup(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podp2.slice/cri-containerd-c2.scope",
    );
    f.workloads.pod_started(pod("p2", "db-0", "quiet"));
    let mut c = container("c2", "p2", "db");
    c.cgroups_path = "kubepods-besteffort-podp2.slice:cri-containerd:c2".into();
    f.workloads.container_started(c, None);
    assert_eq!(f.workloads.registered(cg).unwrap().mode, CaptureMode::OFF);

    // No cgroups path: the cgroup of the container's process (here: this test process, in
    // the real cgroup2 hierarchy).
    let mount = cgroup2_mount(std::path::Path::new("/proc/self/mountinfo")).unwrap();
    let host = Host::new("/proc", "/etc", mount.clone());
    let (workloads, _queue) = Workloads::new(
        Policy::parse(POLICY, "test").unwrap(),
        None,
        host.clone(),
        "n".into(),
        None,
        Arc::default(),
    );
    let mut c = container("c3", "none", "x");
    c.cgroups_path.clear();
    c.pid = std::process::id();
    workloads.container_started(c, None);
    let own_id = host
        .cgroup_id(&host.cgroup_path_of(std::process::id()).unwrap())
        .unwrap();
    let meta = workloads.registered(own_id).expect("resolved by pid");
    // No pod known: the policy's default.
    assert_eq!(
        (meta.mode, meta.pod.is_none()),
        (CaptureMode::PROCESS, true)
    );
}

#[test]
fn an_unresolvable_cgroup_is_counted_not_tagged() {
    let f = fixture(POLICY);
    f.workloads
        .container_started(container("c9", "p9", "ghost"), None);
    assert_eq!(f.losses.count(Loss::UnresolvedContainerCgroup), 1);
    assert_eq!(f.workloads.container_count(), 0);
}

#[test]
fn a_policy_change_updates_running_containers() {
    let mut f = fixture(POLICY);
    let cg = f.cgroup("kubepods/podp1/c1");
    f.workloads.pod_started(pod("p1", "web-0", "quiet"));
    f.workloads
        .container_started(container("c1", "p1", "nginx"), None);
    assert_eq!(f.workloads.registered(cg).unwrap().mode, CaptureMode::OFF);
    f.drain();
    f.workloads.set_policy(
        Policy::parse(
            "default: process\nrules:\n  - namespaces: [quiet]\n    mode: all\n",
            "t",
        )
        .unwrap(),
    );
    assert_eq!(f.workloads.registered(cg).unwrap().mode, CaptureMode::ALL);
    assert_eq!(
        f.drain(),
        vec![format!("upsert nginx web-0 mode={}", CaptureMode::ALL)]
    );
    // The same policy again changes nothing.
    f.workloads.set_policy(f.workloads.policy());
    assert!(f.drain().is_empty());
}

#[test]
fn removal_drops_the_entry_at_once_and_queues_the_removal_once() {
    let mut f = fixture(POLICY);
    let cg = f.cgroup("kubepods/podp1/c1");
    f.workloads.pod_started(pod("p1", "web-0", "shop"));
    f.workloads
        .container_started(container("c1", "p1", "nginx"), None);
    f.drain();
    f.workloads.container_removed("c1");
    f.workloads.container_removed("c1");
    assert_eq!(f.drain(), vec!["removed c1"]);
    assert_eq!(f.workloads.container_count(), 0);
    assert!(f.workloads.registered(cg).is_none());
    f.workloads.pod_removed("p1");
    assert_eq!(f.drain(), vec!["pod removed uid-p1"]);
    assert_eq!(f.workloads.pod_count(), 0);
}

#[test]
fn synchronize_adopts_new_and_removes_vanished_workloads() {
    let mut f = fixture(POLICY);
    f.cgroup("kubepods/podp1/c1");
    let cg2 = f.cgroup("kubepods/podp1/c2");
    f.workloads.pod_started(pod("p1", "web-0", "shop"));
    f.workloads
        .container_started(container("c1", "p1", "old"), None);
    f.drain();
    // Reconnected: the runtime now runs c2 only.
    f.workloads.synchronize(
        vec![pod("p1", "web-0", "shop")],
        vec![container("c2", "p1", "new")],
    );
    assert_eq!(
        f.drain(),
        vec![
            "removed c1".to_string(),
            format!("upsert new web-0 mode={}", CaptureMode::ALL)
        ]
    );
    assert_eq!(f.workloads.registered(cg2).unwrap().container.name, "new");
}
