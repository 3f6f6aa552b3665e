//! End-to-end scenarios: a real containerd 1.7 with NRI and runc, pods created through CRI,
//! the agent's `.sf` output read with our reader and with sysprint. Needs root.
//!
//! The scenarios run one at a time (one containerd, two CPUs, one shim socket directory).

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nri_sysflow_e2e::{
    agent::{Agent, AgentOptions},
    containerd::{BUSYBOX_IMAGE, Containerd},
    cri::{Cri, PodSpec},
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

/// A TCP server on loopback that answers each connection's 4 bytes with "pong".
fn pong_server() -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(false).unwrap();
    let handle = std::thread::spawn(move || {
        let mut got = Vec::new();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end && got.is_empty() {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut buf = [0u8; 4];
                    if s.read_exact(&mut buf).is_ok() {
                        got.push(String::from_utf8_lossy(&buf).into_owned());
                        let _ = s.write_all(b"pong");
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        got
    });
    (port, handle)
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
    let flows: Vec<(i32, i64, i64)> = web_records
        .iter()
        .filter_map(|r| match &r.record {
            Record::NetworkFlow(n) => Some((n.dport, n.num_w_send_bytes, n.num_r_recv_bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(flows, vec![(port as i32, 4, 4)]);
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

/// A container that appends "tick\n" to /data/ticks every 100 ms until killed.
const TICKER: &str = "while true; do echo tick >> /data/ticks; sleep 0.1; done";

/// FileFlows of /data/ticks that wrote, in a pod's container `name`: (start ts, bytes
/// written). (The shell opens the file, moves it to fd 1 and closes the first descriptor,
/// so each tick also has a flow that wrote nothing.)
fn ticks(records: &[FlatRecord], pod: &str, container: &str) -> Vec<(i64, i64)> {
    records
        .iter()
        .filter(|r| pod_name(r) == pod && container_name(r) == container)
        .filter_map(|r| match &r.record {
            Record::FileFlow(f) if file_path(r) == "/data/ticks" && f.num_w_send_ops > 0 => {
                Some((f.ts, f.num_w_send_bytes))
            }
            _ => None,
        })
        .collect()
}

fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Scenario 2: a container started before the agent is adopted through Synchronize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_running_before_the_agent_is_adopted() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let pod = env.pod("early-0", "adopt-e2e");
    let (sandbox, _ctr) = env.run_script(&pod, "ticker", TICKER).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let agent = env.nri_agent("out", None);
    assert!(
        agent.log_text().contains("pods=1 containers=1"),
        "Synchronize should hand over the running pod:\n{}",
        agent.log_text()
    );
    // Some ticks while the agent runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.cri.remove_pod(&sandbox).await.unwrap();
    agent.stop().unwrap();

    let records = sf::flat(&env.path("out")).unwrap();
    let ticks = ticks(&records, "early-0", "ticker");
    assert!(ticks.len() >= 5, "ticks seen: {ticks:?}");
    assert!(ticks.iter().all(|&(_, bytes)| bytes == 5), "{ticks:?}");
    let tagged = records
        .iter()
        .filter(|r| pod_name(r) == "early-0")
        .all(|r| pod_namespace(r) == "adopt-e2e");
    assert!(tagged);
}

/// Scenario 3: the first exec of a container started right after its pod is captured and
/// tagged: NRI registers the cgroup before the workload starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_exec_of_a_fresh_container_is_tagged() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let agent = env.nri_agent("out", None);
    let pod = env.pod("quick-0", "race-e2e");
    let started = Instant::now();
    let sandbox = env.cri.run_pod(&pod).await.unwrap();
    let pod_up = started.elapsed();
    let ctr = env
        .cri
        .run_container(
            &sandbox,
            &pod,
            "first",
            BUSYBOX_IMAGE,
            &["/bin/sh", "-c", "echo first > /data/first.txt"],
        )
        .await
        .unwrap();
    let container_up = started.elapsed() - pod_up;
    println!(
        "pod sandbox ready in {} ms, its container started {} ms later",
        pod_up.as_millis(),
        container_up.as_millis()
    );
    assert_eq!(env.exit_code(&pod, "first", &ctr).await, 0);
    env.cri.remove_pod(&sandbox).await.unwrap();
    agent.stop().unwrap();

    let records = sf::flat(&env.path("out")).unwrap();
    // The container's first exec (its entrypoint) and everything after it carry the
    // container and its pod. (runc's own set-up in the container's cgroup comes before the
    // runtime's StartContainer and is known by cgroup path only.)
    let of_ctr: Vec<&FlatRecord> = records
        .iter()
        .filter(|r| {
            r.process.as_ref().and_then(|p| p.container_id.as_deref()) == Some(ctr.as_str())
        })
        .collect();
    let ts = |r: &FlatRecord| match &r.record {
        Record::ProcessEvent(e) => e.ts,
        Record::FileFlow(f) => f.ts,
        Record::FileEvent(e) => e.ts,
        Record::NetworkFlow(n) => n.ts,
        _ => i64::MAX,
    };
    let first_exec = of_ctr
        .iter()
        .filter(|r| matches!(&r.record, Record::ProcessEvent(e) if e.op_flags == op::EXEC))
        .min_by_key(|r| ts(r))
        .expect("an exec in the container");
    assert!(
        exe_args(first_exec).contains("echo first > /data/first.txt"),
        "{first_exec:?}"
    );
    let exec_ts = ts(first_exec);
    for r in of_ctr.iter().filter(|r| ts(r) >= exec_ts) {
        assert_eq!(
            (container_name(r), pod_name(r), pod_namespace(r)),
            ("first", "quick-0", "race-e2e"),
            "{r:?}"
        );
    }
    let written = bytes_written(of_ctr.iter().copied(), "/data/first.txt");
    assert_eq!(written, 6);
}

/// Scenario 4: switching a namespace from off to all at run time reaches running containers
/// within 2 s; an invalid policy in between is rejected and the old one stays in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_change_reaches_running_containers() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let policy = env.write_policy(
        "policy.yaml",
        "default: all\nhost: off\nrules:\n  - namespaces: [flip-e2e]\n    mode: off\n",
    );
    let mut agent = env.nri_agent("out", Some(&policy));
    let pod = env.pod("flip-0", "flip-e2e");
    let (sandbox, ctr) = env.run_script(&pod, "ticker", TICKER).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    // A broken policy: rejected, the namespace stays off.
    let rejected_at = wall_ns();
    std::fs::write(
        &policy,
        "default: all\nrules:\n  - namespaces: [flip-e2e]\n    mode: sometimes\n",
    )
    .unwrap();
    agent
        .wait_log("policy not reloaded", Duration::from_secs(5))
        .unwrap();
    assert!(
        agent
            .log_text()
            .contains("policy.yaml:4:11: unknown capture mode \"sometimes\"")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let switched_at = wall_ns();
    std::fs::write(&policy, "default: all\nhost: off\n").unwrap();
    agent
        .wait_log("policy reloaded", Duration::from_secs(5))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    env.cri.remove_pod(&sandbox).await.unwrap();
    agent.stop().unwrap();

    let records = sf::flat(&env.path("out")).unwrap();
    let ticks = ticks(&records, "flip-0", "ticker");
    assert!(!ticks.is_empty(), "no ticks after the switch");
    let first = ticks.iter().map(|&(ts, _)| ts).min().unwrap();
    assert!(
        first >= switched_at && first > rejected_at,
        "a tick captured before the switch: {} ns early",
        switched_at - first
    );
    let delay_ms = (first - switched_at) / 1_000_000;
    println!("first record {delay_ms} ms after the policy file changed");
    assert!(delay_ms < 2000, "the switch took {delay_ms} ms");
    // Same container: not restarted.
    assert!(
        records
            .iter()
            .filter(|r| pod_name(r) == "flip-0" && container_name(r) == "ticker")
            .all(|r| r.container.as_ref().unwrap().id == ctr)
    );
}

/// Scenario 5: containerd restarts; the plugin reconnects and keeps tagging new pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_reconnects_after_containerd_restarts() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let mut agent = env.nri_agent("out", None);
    env.containerd.restart().await.unwrap();
    env.cri = env.containerd.cri().await.unwrap();
    wait_until(Duration::from_secs(15), || {
        agent.log_count("NRI: synchronized") >= 2
    })
    .unwrap_or_else(|| panic!("no second Synchronize:\n{}", agent.log_text()));
    let _ = agent.wait_log("NRI: synchronized", Duration::from_secs(1));
    let pod = env.pod("after-0", "restart-e2e");
    let (sandbox, ctr) = env
        .run_script(&pod, "job", "echo done > /data/done.txt")
        .await;
    assert_eq!(env.exit_code(&pod, "job", &ctr).await, 0);
    env.cri.remove_pod(&sandbox).await.unwrap();
    agent.stop().unwrap();

    let records = sf::flat(&env.path("out")).unwrap();
    let written = bytes_written(
        records
            .iter()
            .filter(|r| pod_name(r) == "after-0" && container_name(r) == "job"),
        "/data/done.txt",
    );
    assert_eq!(written, 5);
}

/// Scenario 6: the agent killed with SIGKILL: pods still start; restarted, it adopts them,
/// and the files of the killed run are readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_does_not_block_pods_and_adopts_them_on_restart() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let agent = env.nri_agent("out", None);
    let before = env.pod("before-0", "kill-e2e");
    let (before_sandbox, _) = env.run_script(&before, "ticker", TICKER).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.kill9();

    let started = Instant::now();
    let pod = env.pod("survivor-0", "kill-e2e");
    let (sandbox, _ctr) = env.run_script(&pod, "ticker", TICKER).await;
    println!(
        "pod with the agent killed started in {} ms",
        started.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Same output folder, its own log.
    let agent = env.nri_agent_logging_to("out", "restarted.log", None);
    assert!(
        agent.log_text().contains("pods=2 containers=2"),
        "{}",
        agent.log_text()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.cri.remove_pod(&sandbox).await.unwrap();
    env.cri.remove_pod(&before_sandbox).await.unwrap();
    let log = agent.stop().unwrap();
    assert!(
        log.contains("completed the names of files a previous run left"),
        "{log}"
    );

    // Every file, the killed run's included, reads whole, and sysprint reads them too.
    let records = sf::flat(&env.path("out")).unwrap();
    assert!(!ticks(&records, "before-0", "ticker").is_empty());
    let survivor = ticks(&records, "survivor-0", "ticker");
    assert!(survivor.len() >= 5, "{survivor:?}");
    assert!(!sf::sysprint(&env.path("out")).unwrap().is_empty());
}

/// Scenario 7: 20 pods at once; every one is tagged, and the handler latency is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_twenty_pods_is_tagged_and_handler_latency_reported() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let agent = env.nri_agent("out", None);
    let pods: Vec<PodSpec> = (0..20)
        .map(|i| env.pod(&format!("burst-{i}"), "burst-e2e"))
        .collect();
    let mut tasks = Vec::new();
    for pod in pods.clone() {
        let mut cri = env.cri.clone();
        tasks.push(tokio::spawn(async move {
            let sandbox = cri.run_pod(&pod).await?;
            let ctr = cri
                .run_container(
                    &sandbox,
                    &pod,
                    "job",
                    BUSYBOX_IMAGE,
                    &["/bin/sh", "-c", "echo hi > /data/hi.txt"],
                )
                .await?;
            cri.wait_exit(&ctr, Duration::from_secs(60)).await?;
            anyhow::Ok(sandbox)
        }));
    }
    let mut sandboxes = Vec::new();
    for t in tasks {
        sandboxes.push(t.await.unwrap().expect("pod of the burst"));
    }
    for s in &sandboxes {
        env.cri.remove_pod(s).await.unwrap();
    }
    let log = agent.stop().unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("handler latency"))
        .unwrap_or_else(|| panic!("no latency summary:\n{log}"));
    println!("{line}");
    for slow in log.lines().filter(|l| l.contains("slow handler")) {
        println!("{slow}");
    }
    let records = sf::flat(&env.path("out")).unwrap();
    for pod in &pods {
        let written = bytes_written(
            records
                .iter()
                .filter(|r| pod_name(r) == pod.name && container_name(r) == "job"),
            "/data/hi.txt",
        );
        assert_eq!(written, 3, "{}", pod.name);
    }
}

/// Scenario 8: containerd with NRI disabled: containerd's API tags the pods' records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_api_fallback_tags_pods_without_nri() {
    let _guard = serial().await;
    let mut env = Env::new(false).await;
    assert!(!env.containerd.nri_socket.exists());
    let mut agent = Agent::start(
        &env.path("out"),
        &env.path("out.log"),
        &AgentOptions {
            nri_socket: Some(env.containerd.nri_socket.clone()),
            containerd_socket: Some(env.containerd.socket.clone()),
            ..AgentOptions::default()
        },
    )
    .unwrap();
    agent
        .wait_log("containerd API: adopted", Duration::from_secs(15))
        .unwrap();
    let pod = env.pod("fallback-0", "api-e2e");
    let (sandbox, ctr) = env.run_script(&pod, "ticker", TICKER).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    env.cri.remove_pod(&sandbox).await.unwrap();
    let log = agent.stop().unwrap();
    assert!(
        log.contains("2 containers registered after their first process ran"),
        "the sandbox and the container come from events:\n{log}"
    );

    let records = sf::flat(&env.path("out")).unwrap();
    let ticks = ticks(&records, "fallback-0", "ticker");
    assert!(ticks.len() >= 5, "{ticks:?}");
    let tagged = records
        .iter()
        .find(|r| pod_name(r) == "fallback-0" && container_name(r) == "ticker")
        .unwrap();
    let c = tagged.container.as_ref().unwrap();
    assert_eq!(
        (c.id.as_str(), c.image.as_str()),
        (ctr.as_str(), BUSYBOX_IMAGE)
    );
    assert_eq!(
        (
            pod_namespace(tagged),
            tagged.pod.as_ref().unwrap().id.as_str()
        ),
        ("api-e2e", pod.uid.as_str())
    );
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    nri_sysflow_e2e::wait_for(timeout, || f().then_some(()))
}

/// Runtime-launched mode: containerd starts the agent itself from its plugin folder and hands
/// it a connected socket (fd 3, `NRI_PLUGIN_SOCKET`); pods are tagged the same way. Stopping
/// containerd kills its plugins (SIGKILL): the files stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_launched_by_containerd_tags_pods() {
    let _guard = serial().await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let log = work.path().join("launched.log");
    // containerd gives launched plugins no PATH and no other environment.
    let script = format!(
        "#!/bin/sh\nexec {} run --output {} --containerd-socket /nonexistent.sock --metrics-addr 127.0.0.1:0 --hooks {} 2>>{}\n",
        nri_sysflow_e2e::agent::binary().unwrap().display(),
        out.display(),
        nri_sysflow_e2e::agent::hook_set(),
        log.display()
    );
    let mut containerd = Containerd::start_with_plugin(true, Some(("10-sysflow", &script)))
        .await
        .expect("containerd starts and launches the plugin");
    let mut cri = containerd.cri().await.unwrap();
    wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("NRI: registered")
    })
    .unwrap_or_else(|| {
        panic!(
            "launched agent did not register:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("NRI: registered name=sysflow index=10"),
        "{text}"
    );

    let pod = PodSpec::new(
        "launched-0",
        "launch-e2e",
        &format!("{}/besteffort", containerd.cgroup_root),
        &containerd.dir.join("logs"),
    );
    let sandbox = cri.run_pod(&pod).await.unwrap();
    let ctr = cri
        .run_container(
            &sandbox,
            &pod,
            "job",
            BUSYBOX_IMAGE,
            &["/bin/sh", "-c", "echo launched > /data/l.txt"],
        )
        .await
        .unwrap();
    assert_eq!(
        cri.wait_exit(&ctr, Duration::from_secs(30)).await.unwrap(),
        0
    );
    // Give the agent a flush interval, then take containerd (and with it the agent) down.
    tokio::time::sleep(Duration::from_secs(6)).await;
    cri.remove_pod(&sandbox).await.unwrap();
    containerd.stop();
    let out_arg = out.display().to_string();
    let agent_running = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&out_arg))
            })
    };
    wait_until(Duration::from_secs(30), || !agent_running()).unwrap_or_else(|| {
        panic!(
            "the launched agent still runs after containerd stopped:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });

    // Whatever way it ended, its files are readable once their names are completed.
    sysflow::writer::recover_partials(&out).unwrap();
    let records = sf::flat(&out).unwrap();
    let written = bytes_written(
        records
            .iter()
            .filter(|r| pod_name(r) == "launched-0" && container_name(r) == "job"),
        "/data/l.txt",
    );
    assert_eq!(
        written,
        9,
        "agent log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        records
            .iter()
            .find(|r| pod_name(r) == "launched-0")
            .map(pod_namespace),
        Some("launch-e2e")
    );
}

/// The `sum by (...)` / `max by (...)` labels of an expression, which its result must carry.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split(" by (").skip(1) {
        if let Some(list) = part.split(')').next() {
            out.extend(
                list.split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && l != "le"),
            );
        }
    }
    out
}

/// Grafana's variables, set to the test's workload.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$node", ".+")
        .replace("$namespace", "metrics-e2e")
        .replace("$pod", "metrics-0")
        .replace("$container", "worker")
}

/// Metrics: a real Prometheus scrapes the agent while a pod works. Every dashboard query and
/// template variable and every alert rule's query answers with series carrying the expected
/// labels, and the workload's byte counters equal what its flows in the `.sf` files say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_metrics_that_agree_with_the_sysflow_files() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let agent = env.nri_agent("out", None);
    let metrics_addr = agent.metrics_addr.expect("the agent serves /metrics");
    let tools = nri_sysflow_e2e::packages::ensure().unwrap();
    let dashboards = nri_sysflow_e2e::workspace_root().join("dashboards");
    let rules = dashboards.join("alerts.yaml");
    nri_sysflow_e2e::run(
        std::process::Command::new(&tools.promtool)
            .args(["check", "rules"])
            .arg(&rules),
    )
    .expect("promtool accepts the alert rules");
    let prom = nri_sysflow_e2e::prometheus::Prometheus::start(&tools, metrics_addr, &rules)
        .expect("prometheus starts");

    let (port, server) = pong_server();
    let pod = env.pod("metrics-0", "metrics-e2e");
    let script = format!(
        "dd if=/dev/zero of=/data/blob bs=100 count=10 2>/dev/null; cat /data/blob > /dev/null; \
         /bin/nope 2>/dev/null; echo -n ping | nc 127.0.0.1 {port}; exit 0"
    );
    let (sandbox, ctr) = env.run_script(&pod, "worker", &script).await;
    assert_eq!(env.exit_code(&pod, "worker", &ctr).await, 0);
    assert_eq!(server.join().unwrap(), vec!["ping"]);

    let sel = r#"namespace="metrics-e2e",pod="metrics-0",container="worker""#;
    let scalar = |expr: &str| -> Option<f64> {
        let r = prom.query(expr).ok()?;
        r.first()?["value"][1].as_str()?.parse().ok()
    };
    wait_until(Duration::from_secs(30), || {
        scalar(&format!(
            "nri_sysflow_workload_network_received_bytes_total{{{sel}}}"
        )) == Some(4.0)
    })
    .unwrap_or_else(|| {
        panic!(
            "the workload's series never reached Prometheus:\n{}",
            prom.log()
        )
    });
    // Enough samples for 30 s rate windows.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        scalar(&format!(
            "nri_sysflow_workload_exec_failures_total{{{sel}}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        scalar(&format!(
            r#"nri_sysflow_workload_network_connections_total{{{sel},direction="outbound",protocol="tcp"}}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        scalar(r#"nri_sysflow_metadata_source{source="nri"}"#),
        Some(1.0)
    );
    assert_eq!(scalar("nri_sysflow_nri_connected"), Some(1.0));

    // Every panel's queries and every template variable.
    for name in ["node-overview.json", "workload.json", "agent-health.json"] {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dashboards.join(name)).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = substitute(t["expr"].as_str().unwrap());
                let result = prom.query(&expr).unwrap();
                assert!(
                    !result.is_empty(),
                    "{name}: panel {:?} returns nothing: {expr}",
                    p["title"]
                );
                for label in grouping_labels(&expr) {
                    assert!(
                        result.iter().all(|s| s["metric"].get(&label).is_some()
                            || s["metric"].as_object().is_some_and(|m| m.is_empty())),
                        "{name}: {expr} lacks label {label}: {result:?}"
                    );
                }
            }
        }
        for v in d["templating"]["list"].as_array().unwrap().iter().skip(1) {
            let q = substitute(v["definition"].as_str().unwrap());
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap();
            let (selector, label) = inner.rsplit_once(", ").unwrap();
            let values = prom.label_values(label, selector).unwrap();
            assert!(!values.is_empty(), "{name}: variable {label} has no values");
            if label == "namespace" {
                assert!(values.contains(&"metrics-e2e".to_string()), "{values:?}");
            }
        }
    }
    // The workload board's per-container series carry the workload's labels.
    let by_pod = prom
        .query(&substitute(
            "sum by (namespace, pod, container) (nri_sysflow_workload_file_written_bytes_total{namespace=~\"$namespace\"})",
        ))
        .unwrap();
    assert!(
        by_pod
            .iter()
            .any(|s| s["metric"]["pod"] == "metrics-0" && s["metric"]["container"] == "worker")
    );

    // Alert rules: loaded by Prometheus, and each query (left of its comparison) answers.
    let loaded = prom.get("/api/v1/rules").unwrap();
    assert_eq!(
        loaded.matches("\"type\":\"alerting\"").count(),
        4,
        "{loaded}"
    );
    assert!(!loaded.contains("\"health\":\"err\""), "{loaded}");
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    for line in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
    {
        let query = [" == ", " > ", " < "]
            .iter()
            .filter_map(|op| line.rsplit_once(op).map(|(q, _)| q))
            .next()
            .unwrap_or(line);
        let result = prom.query(query).unwrap();
        assert!(!result.is_empty(), "alert query returns nothing: {query}");
        assert!(
            result.iter().all(|s| s["metric"].get("instance").is_some()),
            "{query}: {result:?}"
        );
    }

    println!(
        "scrape of the agent: {:?} s, {:?} samples",
        scalar(r#"scrape_duration_seconds{job="nri-sysflow"}"#),
        scalar(r#"scrape_samples_scraped{job="nri-sysflow"}"#)
    );

    // The counters agree with the flows in the .sf files that had ended when Prometheus was
    // asked (flows still open then are written later, at the latest at shutdown).
    let asked_at = wall_ns();
    let metric = |name: &str| scalar(&format!("{name}{{{sel}}}")).unwrap_or(-1.0) as i64;
    let (written, read, sent, received) = (
        metric("nri_sysflow_workload_file_written_bytes_total"),
        metric("nri_sysflow_workload_file_read_bytes_total"),
        metric("nri_sysflow_workload_network_sent_bytes_total"),
        metric("nri_sysflow_workload_network_received_bytes_total"),
    );
    env.cri.remove_pod(&sandbox).await.unwrap();
    agent.stop().unwrap();
    let records = sf::flat(&env.path("out")).unwrap();
    let of_worker: Vec<&FlatRecord> = records
        .iter()
        .filter(|r| pod_name(r) == "metrics-0" && container_name(r) == "worker")
        .collect();
    let ended_before = |r: &Record| match r {
        Record::FileFlow(f) => f.end_ts <= asked_at,
        Record::NetworkFlow(n) => n.end_ts <= asked_at,
        _ => false,
    };
    let sum = |f: fn(&Record) -> i64| {
        of_worker
            .iter()
            .filter(|r| ended_before(&r.record))
            .map(|r| f(&r.record))
            .sum::<i64>()
    };
    let sf_written = sum(|r| match r {
        Record::FileFlow(f) => f.num_w_send_bytes,
        _ => 0,
    });
    let sf_read = sum(|r| match r {
        Record::FileFlow(f) => f.num_r_recv_bytes,
        _ => 0,
    });
    let sf_sent = sum(|r| match r {
        Record::NetworkFlow(n) => n.num_w_send_bytes,
        _ => 0,
    });
    let sf_received = sum(|r| match r {
        Record::NetworkFlow(n) => n.num_r_recv_bytes,
        _ => 0,
    });
    println!(
        "metrics vs .sf for metrics-0/worker: written {written}/{sf_written}, read {read}/{sf_read}, sent {sent}/{sf_sent}, received {received}/{sf_received}"
    );
    assert_eq!(
        (written, read, sent, received),
        (sf_written, sf_read, sf_sent, sf_received)
    );
    assert_eq!(bytes_written(of_worker.iter().copied(), "/data/blob"), 1000);
    assert_eq!((sent, received), (4, 4));
}
