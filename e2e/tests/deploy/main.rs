//! The agent as it ships: the image archive `cargo xtask image` builds, read back and rebuilt;
//! then imported into a real containerd and run through CRI exactly as deploy/'s DaemonSet
//! describes its pod (rendered by `kubectl kustomize deploy`, so the ConfigMap is the one an
//! operator installs). Needs root, the image (`cargo xtask image`) and kubectl.

mod image;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use nri_sysflow_e2e::{
    containerd::{BUSYBOX_IMAGE, Containerd},
    cri::PodSpec,
    daemonset::{Manifests, Node},
    pong_server,
    prometheus::Prometheus,
    sf::{self, container_name, exe_args, pod_name},
    wait_for, workspace_root,
};
use sysflow::{Record, encoding::op, flat::FlatRecord};

/// The archive under test: `NRI_SYSFLOW_IMAGE`, or where `cargo xtask image` writes it.
pub fn image_archive() -> PathBuf {
    std::env::var_os("NRI_SYSFLOW_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/oci/nri-sysflow.tar"))
}

/// The image archive must exist; say how to make it.
pub fn require_image() -> PathBuf {
    let archive = image_archive();
    assert!(
        archive.exists(),
        "{} does not exist: build it with `cargo xtask image`",
        archive.display()
    );
    archive
}

/// GET `path` on `addr`: (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

/// The container's log as CRI writes it (`<time> <stream> <tag> <line>`): the lines.
fn container_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(String::from))
        .collect()
}

fn file_path(r: &FlatRecord) -> &str {
    r.file.as_ref().map(|f| f.path.as_str()).unwrap_or("")
}

const NODE_NAME: &str = "e2e-node-1";
const AGENT_POD: &str = "nri-sysflow-x7k2p";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemonset_pod_runs_the_image_and_captures_another_pod() {
    let archive = require_image();
    let containerd = Containerd::start(true).await.expect("containerd starts");
    let mut cri = containerd.cri().await.unwrap();
    containerd
        .import_image(&archive)
        .expect("ctr imports the archive");

    // What `kubectl apply -k deploy/` would create.
    let work = tempfile::tempdir().unwrap();
    let rendered = work.path().join("deploy.yaml");
    let yaml = nri_sysflow_e2e::run(
        std::process::Command::new("kubectl")
            .args(["kustomize", "deploy"])
            .current_dir(workspace_root()),
    )
    .expect("kubectl kustomize deploy");
    std::fs::write(&rendered, yaml).unwrap();
    let manifests = Manifests::load(&rendered).unwrap();

    // This node: its host paths are folders of this test, except /sys, which is the host's
    // (the agent needs its cgroup2 mount and BTF); /var/run/nri holds this containerd's
    // socket; /run/containerd (the API fallback) is left empty: NRI is on.
    let output = work.path().join("var-lib-nri-sysflow");
    let run_containerd = work.path().join("run-containerd");
    std::fs::create_dir_all(&run_containerd).unwrap();
    let uid = format!("{:08x}-de91-4000-8000-000000000001", std::process::id());
    let node = Node {
        name: NODE_NAME.into(),
        ip: "127.0.0.1".into(),
        host_paths: [
            (
                "/var/run/nri",
                containerd.nri_socket.parent().unwrap().to_path_buf(),
            ),
            ("/run/containerd", run_containerd.clone()),
            ("/var/lib/nri-sysflow", output.clone()),
            ("/sys", PathBuf::from("/sys")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        volumes_dir: work.path().join("volumes"),
        cgroup_parent: format!("{}/burstable/pod{uid}", containerd.cgroup_root),
        log_dir: containerd.dir.join("logs").join(&uid),
    };
    let pod = node
        .pod_of(&manifests, "nri-sysflow", AGENT_POD, &uid)
        .expect("the DaemonSet's pod translates to CRI");
    assert_eq!(pod.namespace, "nri-sysflow");
    let sandbox = cri
        .run_pod_config(pod.sandbox.clone())
        .await
        .expect("RunPodSandbox");
    let [agent_config] = pod.containers.as_slice() else {
        panic!("one container expected")
    };
    let agent = cri
        .run_container_config(&sandbox, &pod.sandbox, agent_config.clone())
        .await
        .expect("the agent container starts");
    let agent_log = node.log_dir.join("agent.log");
    let show_log = || container_log(&agent_log).join("\n");

    // The probes kubelet would run, on the port the manifest names.
    let probe = |kind: &str| {
        pod.probes
            .iter()
            .find(|p| p.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} probe"))
            .clone()
    };
    let (liveness, readiness) = (probe("liveness"), probe("readiness"));
    assert_eq!(
        (
            liveness.path.as_str(),
            readiness.path.as_str(),
            readiness.port
        ),
        ("/healthz", "/readyz", 9464)
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], readiness.port));
    wait_for(Duration::from_secs(120), || {
        http_get(addr, &readiness.path)
            .ok()
            .filter(|(code, _)| *code == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "/readyz never answered 200 (last: {:?}); agent log:\n{}",
            http_get(addr, &readiness.path),
            show_log()
        )
    });
    assert_eq!(http_get(addr, &liveness.path).unwrap().0, 200);

    // Registered over NRI from inside its container, logging JSON lines (no terminal).
    wait_for(Duration::from_secs(30), || {
        show_log().contains("NRI: synchronized").then_some(())
    })
    .unwrap_or_else(|| panic!("the agent never synchronized over NRI:\n{}", show_log()));
    let lines = container_log(&agent_log);
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(
        parsed
            .iter()
            .any(|j| j["level"] == "INFO" && j["fields"]["message"] == "NRI: synchronized"),
        "{}",
        show_log()
    );

    // Prometheus scrapes the pod's metrics port, as the PodMonitor/Service describe it.
    let monitor = manifests
        .get("PodMonitor", "nri-sysflow")
        .expect("the PodMonitor");
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["path"],
        "/metrics"
    );
    let tools = nri_sysflow_e2e::packages::ensure().unwrap();
    let prom = Prometheus::start(
        &tools,
        addr,
        &workspace_root().join("dashboards/alerts.yaml"),
    )
    .expect("prometheus starts");

    // A second pod: a shell that writes a file, reads a credentials file and connects out.
    let (port, server) = pong_server();
    let web = PodSpec::new(
        "web-0",
        "shop",
        &format!("{}/besteffort", containerd.cgroup_root),
        &containerd.dir.join("logs"),
    );
    let web_sandbox = cri.run_pod(&web).await.unwrap();
    let script = format!(
        "echo hello > /data/out.txt; cat /etc/shadow > /dev/null; \
         echo -n ping | nc 127.0.0.1 {port}; exit 3"
    );
    let web_ctr = cri
        .run_container(
            &web_sandbox,
            &web,
            "web",
            BUSYBOX_IMAGE,
            &["/bin/sh", "-c", &script],
        )
        .await
        .unwrap();
    assert_eq!(
        cri.wait_exit(&web_ctr, Duration::from_secs(30))
            .await
            .unwrap(),
        3
    );
    assert_eq!(server.join().unwrap(), vec!["ping"]);

    let sel = r#"namespace="shop",pod="web-0",container="web""#;
    let scalar = |expr: &str| -> Option<f64> {
        let r = prom.query(expr).ok()?;
        r.first()?["value"][1].as_str()?.parse().ok()
    };
    let received = format!("nri_sysflow_workload_network_received_bytes_total{{{sel}}}");
    wait_for(Duration::from_secs(30), || {
        (scalar(&received) == Some(4.0)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{received} is {:?} in Prometheus; its log:\n{}",
            scalar(&received),
            prom.log()
        )
    });
    assert_eq!(scalar(r#"up{job="nri-sysflow"}"#), Some(1.0));
    assert_eq!(scalar("nri_sysflow_nri_connected"), Some(1.0));
    // The rules from the ConfigMap run in the container.
    let alert =
        format!(r#"nri_sysflow_alerts_total{{rule="Sensitive file read",priority="high",{sel}}}"#);
    wait_for(Duration::from_secs(10), || {
        (scalar(&alert) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("{alert} is {:?}", scalar(&alert)));

    // kubelet stops the pod: SIGTERM, a clean exit, the last file completed.
    cri.remove_pod(&web_sandbox).await.unwrap();
    cri.stop_container(&agent, 30).await.unwrap();
    assert_eq!(
        cri.wait_exit(&agent, Duration::from_secs(40))
            .await
            .unwrap(),
        0,
        "{}",
        show_log()
    );
    cri.remove_pod(&sandbox).await.unwrap();

    // The files on the node's output path, named for the node the downward API gave.
    let files = sf::files(&output).unwrap();
    assert!(!files.is_empty(), "no .sf files; log:\n{}", show_log());
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(NODE_NAME), "{name}");
    }
    let records = sf::flat(&output).unwrap();
    let web_records: Vec<&FlatRecord> = records
        .iter()
        .filter(|r| pod_name(r) == "web-0" && container_name(r) == "web")
        .collect();
    for r in &web_records {
        let p = r.pod.as_ref().unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.id.as_str()),
            ("shop", web.uid.as_str())
        );
    }
    assert!(
        web_records.iter().any(
            |r| matches!(&r.record, Record::ProcessEvent(e) if e.op_flags == op::EXEC)
                && exe_args(r).contains("echo hello > /data/out.txt")
        ),
        "no EXEC of web's shell"
    );
    let written: i64 = web_records
        .iter()
        .filter_map(|r| match &r.record {
            Record::FileFlow(f) if file_path(r) == "/data/out.txt" => Some(f.num_w_send_bytes),
            _ => None,
        })
        .sum();
    assert_eq!(written, 6, "bytes written to /data/out.txt");
    assert_eq!(
        sf::network_flows(web_records.iter().copied()),
        vec![(port as i32, 4, 4)]
    );
    // The alert file holds the same alert, with the pod.
    let alerts: Vec<serde_json::Value> = sf::alerts(&output)
        .unwrap()
        .into_iter()
        .filter(|a| a["pod"]["name"] == "web-0")
        .collect();
    let rules: Vec<&str> = alerts
        .iter()
        .flat_map(|a| a["policies"].as_array().unwrap())
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(rules, vec!["Sensitive file read"], "{alerts:?}");
}
