//! Containers and the agent coming and going: adoption, first exec, policy changes,
//! containerd restarts, a killed agent, bursts, the containerd-API fallback, a
//! runtime-launched plugin.

use super::*;

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

/// Scenario 6b: the agent killed as its capture policy changes (SIGKILL right after the new
/// policy is written: before, during or after its reload): restarted on the same output folder
/// and policy, it captures with the policy on disk, and every file of the killed run is
/// completed and reads whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_a_policy_reload_restarts_with_the_policy_on_disk() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let policy = env.write_policy(
        "policy.yaml",
        "default: all\nhost: off\nrules:\n  - namespaces: [reload-e2e]\n    mode: off\n",
    );
    let agent = env.nri_agent("out", Some(&policy));
    let pod = env.pod("reload-0", "reload-e2e");
    let (sandbox, _ctr) = env.run_script(&pod, "ticker", TICKER).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let changed_at = wall_ns();
    std::fs::write(&policy, "default: all\nhost: off\n").unwrap();
    agent.kill9();

    let agent = env.nri_agent_logging_to("out", "restarted.log", Some(&policy));
    let restarted_at = wall_ns();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.cri.remove_pod(&sandbox).await.unwrap();
    let log = agent.stop().unwrap();
    assert!(
        log.contains("completed the names of files a previous run left"),
        "{log}"
    );

    // Every file, the killed run's included, reads whole.
    let records = sf::flat(&env.path("out")).unwrap();
    let ticks = ticks(&records, "reload-0", "ticker");
    // The namespace was off until the change: nothing of it from before.
    assert!(
        ticks.iter().all(|&(ts, _)| ts >= changed_at),
        "a tick from before the policy changed: {ticks:?}"
    );
    // The restarted agent captures with the policy on disk (a tick every 100 ms).
    let after = ticks.iter().filter(|&&(ts, _)| ts >= restarted_at).count();
    println!(
        "ticks captured: {} in all, {after} after the restart",
        ticks.len()
    );
    assert!(after >= 5, "{ticks:?}");
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
        "#!/bin/sh\nexec {} run --output {} --containerd-socket /nonexistent.sock --metrics-addr 127.0.0.1:0 --hooks {} --log-format text 2>>{}\n",
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

/// What the relay below sends the agent in containerd's name.
enum Injection {
    /// Bytes that are no NRI frame, then the relay carries on (the agent must hang up).
    Garbage(&'static [u8]),
    /// The start of a frame, then the runtime's side closes mid-frame.
    HalfFrameThenClose,
}

/// A relay between the agent and containerd's real NRI socket that can also send the agent
/// bytes of its own, as a broken or hostile runtime would. Each connection of the agent gets
/// one to containerd; an injection goes to the newest.
struct NriRelay {
    path: PathBuf,
    current: std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Injection>>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl NriRelay {
    fn start(path: PathBuf, containerd: PathBuf) -> NriRelay {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let current = std::sync::Arc::new(std::sync::Mutex::new(None));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (slot, count) = (current.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut agent, _)) = listener.accept().await {
                count.fetch_add(1, Relaxed);
                let Ok(mut runtime) = tokio::net::UnixStream::connect(&containerd).await else {
                    continue;
                };
                let (tx, mut injections) = tokio::sync::mpsc::channel(4);
                *slot.lock().unwrap() = Some(tx);
                tokio::spawn(async move {
                    let (mut from_agent, mut to_agent) = agent.split();
                    let (mut from_runtime, mut to_runtime) = runtime.split();
                    let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
                    loop {
                        tokio::select! {
                            n = from_agent.read(&mut up) => match n {
                                Ok(n) if n > 0 => {
                                    if to_runtime.write_all(&up[..n]).await.is_err() { break }
                                }
                                _ => break,
                            },
                            n = from_runtime.read(&mut down) => match n {
                                Ok(n) if n > 0 => {
                                    if to_agent.write_all(&down[..n]).await.is_err() { break }
                                }
                                _ => break,
                            },
                            Some(injection) = injections.recv() => match injection {
                                Injection::Garbage(bytes) => {
                                    if to_agent.write_all(bytes).await.is_err() { break }
                                }
                                Injection::HalfFrameThenClose => {
                                    // Connection 1, 64 bytes announced, 16 sent.
                                    let mut half = vec![0, 0, 0, 1, 0, 0, 0, 64];
                                    half.extend_from_slice(&[0u8; 16]);
                                    let _ = to_agent.write_all(&half).await;
                                    break;
                                }
                            },
                        }
                    }
                });
            }
        });
        NriRelay {
            path,
            current,
            accepted,
        }
    }

    async fn inject(&self, injection: Injection) {
        let tx = self
            .current
            .lock()
            .unwrap()
            .clone()
            .expect("an agent connected");
        tx.send(injection).await.unwrap();
    }
}

/// Scenario 5b: garbage and half a frame on the agent's NRI connection, from containerd's side
/// of a real connection (through a relay): each time the agent drops the connection, connects
/// again and synchronizes with containerd; pods start throughout and are tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_real_nri_connection_is_dropped_and_the_plugin_reconnects() {
    let _guard = serial().await;
    let mut env = Env::new(true).await;
    let relay = NriRelay::start(env.path("relay.sock"), env.containerd.nri_socket.clone());
    let agent = Agent::start(
        &env.path("out"),
        &env.path("out.log"),
        &AgentOptions {
            nri_socket: Some(relay.path.clone()),
            wait_for_nri: true,
            ..AgentOptions::default()
        },
    )
    .expect("agent starts");
    let mut pods = Vec::new();
    for (round, injection) in [
        Injection::Garbage(b"GET /metrics HTTP/1.1\r\nHost: nri\r\n\r\n"),
        Injection::HalfFrameThenClose,
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        relay.inject(injection).await;
        // Once when it started, then once more each round.
        wait_until(Duration::from_secs(15), || {
            agent.log_count("NRI: synchronized") >= round + 2
        })
        .unwrap_or_else(|| panic!("no Synchronize after round {round}:\n{}", agent.log_text()));
        println!(
            "round {round}: connected and synchronized again {} ms after the injection",
            started.elapsed().as_millis()
        );
        let pod = env.pod(&format!("after-{round}"), "garbage-e2e");
        let (sandbox, ctr) = env
            .run_script(&pod, "job", "echo done > /data/done.txt")
            .await;
        assert_eq!(env.exit_code(&pod, "job", &ctr).await, 0);
        pods.push(sandbox);
    }
    assert_eq!(relay.accepted.load(std::sync::atomic::Ordering::Relaxed), 3);
    for sandbox in pods {
        env.cri.remove_pod(&sandbox).await.unwrap();
    }
    // The agent copies its counters into /metrics once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = agent.metrics_text().unwrap();
    let log = agent.stop().unwrap();
    assert!(
        log.contains("malformed frame: frame of 795698548 bytes on connection 1195725856"),
        "the garbage is named in the log:\n{log}"
    );
    assert!(
        log.contains("malformed frame: connection closed inside a 64-byte frame on connection 1"),
        "the half frame is named in the log:\n{log}"
    );
    assert!(
        metrics.contains("nri_sysflow_nri_malformed_messages_total 2"),
        "{metrics}"
    );
    let records = sf::flat(&env.path("out")).unwrap();
    for pod in ["after-0", "after-1"] {
        let written = bytes_written(
            records
                .iter()
                .filter(|r| pod_name(r) == pod && container_name(r) == "job"),
            "/data/done.txt",
        );
        assert_eq!(written, 5, "{pod}");
    }
}
