//! Prometheus scraping the agent: the metrics agree with the SysFlow files.

use super::*;

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
         cat /etc/shadow > /dev/null; \
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

    // The shipped detection rules saw the read of /etc/shadow: one alert, in the metric with
    // the pod's labels and in the node's alert file with the record (busybox's shell runs
    // its applets through /proc/self/exe).
    let alerts =
        format!(r#"nri_sysflow_alerts_total{{rule="Sensitive file read",priority="high",{sel}}}"#);
    wait_until(Duration::from_secs(10), || scalar(&alerts) == Some(1.0))
        .unwrap_or_else(|| panic!("{alerts} is {:?}", scalar(&alerts)));
    let lines: Vec<serde_json::Value> = nri_sysflow_e2e::sf::alerts(&agent.out_dir)
        .unwrap()
        .into_iter()
        .filter(|a: &serde_json::Value| {
            a["policies"][0]["id"] == "Sensitive file read" && a["pod"]["name"] == "metrics-0"
        })
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let a = &lines[0];
    assert_eq!(
        (
            &a["pod"]["namespace"],
            &a["container"]["name"],
            &a["file"]["path"],
            &a["proc"]["exe"],
            &a["policies"][0]["priority"]
        ),
        (
            &serde_json::json!("metrics-e2e"),
            &serde_json::json!("worker"),
            &serde_json::json!("/etc/shadow"),
            &serde_json::json!("/proc/self/exe"),
            &serde_json::json!(3)
        )
    );

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
        6,
        "{loaded}"
    );
    assert!(!loaded.contains("\"health\":\"err\""), "{loaded}");
    // The pod's first high-priority alert fires the alert rule (rules are evaluated every
    // second here).
    wait_until(Duration::from_secs(10), || {
        prom.get("/api/v1/alerts").is_ok_and(|a| {
            a.contains("\"alertname\":\"NriSysflowHighPriorityAlert\"")
                && a.contains("\"rule\":\"Sensitive file read\"")
                && a.contains("\"pod\":\"metrics-0\"")
        })
    })
    .unwrap_or_else(|| panic!("{:?}", prom.get("/api/v1/alerts")));
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
