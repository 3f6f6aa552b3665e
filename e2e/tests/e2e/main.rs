//! End-to-end scenarios: a real containerd 1.7 with NRI and runc, pods created through CRI,
//! the agent's `.sf` output read with our reader and with sysprint. Needs root.
//!
//! The scenarios run one at a time (one containerd, two CPUs, one shim socket directory).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nri_sysflow_e2e::{
    agent::{Agent, AgentOptions},
    containerd::{BUSYBOX_IMAGE, Containerd},
    cri::{Cri, PodSpec},
    pong_server,
    sf::{self, container_name, exe_args, pod_name, pod_namespace},
};
use sysflow::{Record, encoding::op, flat::FlatRecord};

/// An async lock: a failed scenario does not poison it for the next.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A containerd, a scratch folder for agent output and logs, and the pods to create.
struct Env {
    containerd: Containerd,
    work: tempfile::TempDir,
    cri: Cri,
}

impl Env {
    async fn new(nri: bool) -> Env {
        let containerd = Containerd::start(nri).await.expect("containerd starts");
        let cri = containerd.cri().await.expect("CRI connects");
        Env {
            containerd,
            work: tempfile::tempdir().unwrap(),
            cri,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn pod(&self, name: &str, namespace: &str) -> PodSpec {
        PodSpec::new(
            name,
            namespace,
            &format!("{}/besteffort", self.containerd.cgroup_root),
            &self.containerd.dir.join("logs"),
        )
    }

    fn write_policy(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn nri_agent(&self, out: &str, policy: Option<&Path>) -> Agent {
        self.nri_agent_logging_to(out, &format!("{out}.log"), policy)
    }

    fn nri_agent_logging_to(&self, out: &str, log: &str, policy: Option<&Path>) -> Agent {
        Agent::start(
            &self.path(out),
            &self.path(log),
            &AgentOptions {
                nri_socket: Some(self.containerd.nri_socket.clone()),
                policy: policy.map(Path::to_path_buf),
                // As the DaemonSet runs it: with the shipped detection rules.
                rules: vec![nri_sysflow_e2e::workspace_root().join("deploy/rules")],
                wait_for_nri: true,
                ..AgentOptions::default()
            },
        )
        .expect("agent starts")
    }

    /// Waits for a container to exit; on failure shows its log.
    async fn exit_code(&mut self, pod: &PodSpec, name: &str, id: &str) -> i32 {
        match self.cri.wait_exit(id, Duration::from_secs(30)).await {
            Ok(code) => code,
            Err(e) => panic!(
                "{e}; container log:\n{}",
                std::fs::read_to_string(Path::new(&pod.log_dir).join(format!("{name}.log")))
                    .unwrap_or_default()
            ),
        }
    }

    /// Runs a pod with one busybox container running `script`; returns (sandbox, container).
    async fn run_script(
        &mut self,
        pod: &PodSpec,
        container: &str,
        script: &str,
    ) -> (String, String) {
        let sandbox = self.cri.run_pod(pod).await.expect("RunPodSandbox");
        let id = self
            .cri
            .run_container(
                &sandbox,
                pod,
                container,
                BUSYBOX_IMAGE,
                &["/bin/sh", "-c", script],
            )
            .await
            .expect("container starts");
        (sandbox, id)
    }
}

fn of_pod<'a>(records: &'a [FlatRecord], pod: &str) -> Vec<&'a FlatRecord> {
    records.iter().filter(|r| pod_name(r) == pod).collect()
}

fn file_path(r: &FlatRecord) -> &str {
    r.file.as_ref().map(|f| f.path.as_str()).unwrap_or("")
}

/// Bytes the FileFlows of `path` among `records` wrote.
fn bytes_written<'a>(records: impl IntoIterator<Item = &'a FlatRecord>, path: &str) -> i64 {
    records
        .into_iter()
        .filter_map(|r| match &r.record {
            Record::FileFlow(f) if file_path(r) == path => Some(f.num_w_send_bytes),
            _ => None,
        })
        .sum()
}

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Scenario 1: two namespaces, one captured (all) and one off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_namespace_is_tagged_and_off_namespace_yields_nothing() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let policy = env.write_policy(
        "policy.yaml",
        "default: off\nhost: off\nrules:\n  - namespaces: [shop-e2e]\n    mode: all\n",
    );
    let agent = env.nri_agent("out", Some(&policy));
    let (port, server) = pong_server();

    let web = env.pod("web-0", "shop-e2e");
    let script = format!(
        "echo hello > /data/out.txt; mkdir /data/d; mv /data/out.txt /data/d/moved.txt; \
         echo -n ping | nc 127.0.0.1 {port}; exit 3"
    );
    let (web_sandbox, web_ctr) = env.run_script(&web, "web", &script).await;
    let quiet = env.pod("db-0", "quiet-e2e");
    let (quiet_sandbox, quiet_ctr) = env
        .run_script(
            &quiet,
            "db",
            "echo secret > /data/quiet.txt; mkdir /data/q; exit 4",
        )
        .await;
    assert_eq!(env.exit_code(&web, "web", &web_ctr).await, 3);
    assert_eq!(env.exit_code(&quiet, "db", &quiet_ctr).await, 4);
    assert_eq!(server.join().unwrap(), vec!["ping"]);
    env.cri.remove_pod(&web_sandbox).await.unwrap();
    env.cri.remove_pod(&quiet_sandbox).await.unwrap();
    let log = agent.stop().expect("agent stops cleanly");

    let records = sf::flat(&env.path("out")).unwrap();
    let web_records = of_pod(&records, "web-0");
    assert!(
        !web_records.is_empty(),
        "no records of web-0; agent log:\n{log}"
    );
    // Every record of the pod carries its container (or the sandbox's, named POD as kubelet
    // names it) and its pod.
    for r in &web_records {
        let c = r.container.as_ref().unwrap();
        let p = r.pod.as_ref().unwrap();
        let expected = if c.id == web_sandbox {
            (web_sandbox.as_str(), "POD", "")
        } else {
            (web_ctr.as_str(), "web", BUSYBOX_IMAGE)
        };
        assert_eq!(
            (c.id.as_str(), c.name.as_str(), c.image.as_str()),
            expected,
            "{r:?}"
        );
        assert_eq!(
            (p.namespace.as_str(), p.id.as_str()),
            ("shop-e2e", web.uid.as_str())
        );
        assert_eq!(c.pod_id.as_deref(), Some(web.uid.as_str()));
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web-0"));
    }
    let web_records: Vec<&FlatRecord> = web_records
        .into_iter()
        .filter(|r| container_name(r) == "web")
        .collect();
    // The shell's exec, with its arguments.
    assert!(
        web_records.iter().any(
            |r| matches!(&r.record, Record::ProcessEvent(e) if e.op_flags == op::EXEC)
                && exe_args(r).contains("echo hello > /data/out.txt")
        ),
        "no EXEC of the container's shell"
    );
    // 6 bytes written to the file, then renamed into a new directory.
    let written = bytes_written(web_records.iter().copied(), "/data/out.txt");
    assert_eq!(written, 6, "bytes written to /data/out.txt");
    let fe = |flag: i32| {
        web_records
            .iter()
            .filter(|r| matches!(&r.record, Record::FileEvent(e) if e.op_flags == flag))
            .map(|r| {
                (
                    file_path(r).to_string(),
                    r.new_file
                        .as_ref()
                        .map(|f| f.path.clone())
                        .unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(fe(op::MKDIR), vec![("/data/d".to_string(), String::new())]);
    assert_eq!(
        fe(op::RENAME),
        vec![("/data/out.txt".to_string(), "/data/d/moved.txt".to_string())]
    );
    // The connection: 4 bytes each way to the test's port.
    assert_eq!(
        sf::network_flows(web_records.iter().copied()),
        vec![(port as i32, 4, 4)]
    );
    // The shell's exit code.
    let exits: Vec<i32> = web_records
        .iter()
        .filter_map(|r| match &r.record {
            Record::ProcessEvent(e) if e.op_flags == op::EXIT && container_name(r) == "web" => {
                Some(e.ret)
            }
            _ => None,
        })
        .collect();
    assert!(exits.contains(&3), "exit codes {exits:?}");

    // The off namespace: nothing at all, by pod, container or path.
    let leaked: Vec<_> = records
        .iter()
        .filter(|r| {
            pod_namespace(r) == "quiet-e2e"
                || r.container
                    .as_ref()
                    .is_some_and(|c| c.id == quiet_ctr || c.id == quiet_sandbox)
                || file_path(r).contains("quiet")
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "records of the off namespace: {leaked:?}"
    );

    // sysprint reads the same files and sees the same tags.
    let printed = sf::sysprint(&env.path("out")).unwrap();
    let printed_web: Vec<_> = printed
        .iter()
        .filter(|j| j["pod"]["name"] == "web-0" && j["container"]["name"] == "web")
        .collect();
    assert_eq!(printed_web.len(), web_records.len());
    assert!(printed_web.iter().all(|j| j["container"]["name"] == "web"
        && j["pod"]["ns"] == "shop-e2e"
        && j["pod"]["id"] == web.uid.as_str()
        && j["container"]["image"] == BUSYBOX_IMAGE));
}

fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    nri_sysflow_e2e::wait_for(timeout, || f().then_some(()))
}

mod lifecycle;
mod metrics;
