use std::time::Duration;

use sysflow::{FileFlow, NetworkFlow, Oid, ProcessEvent, Record, encoding::op};

use super::{server, workload::*, *};

fn labels(container: &str) -> WorkloadLabels {
    WorkloadLabels {
        namespace: "shop".into(),
        pod: "web-0".into(),
        container: container.into(),
    }
}

fn line<'a>(text: &'a str, starts: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(starts))
}

#[test]
fn records_move_their_workloads_series() {
    let m = Metrics::new();
    let mut series = WorkloadSeries::new(m.workload.clone());
    let c = series.of(Some("id1"), || labels("app")).clone();
    c.observe(&Record::FileFlow(FileFlow {
        op_flags: op::OPEN | op::WRITE_SEND | op::CLOSE,
        num_w_send_ops: 3,
        num_w_send_bytes: 300,
        ..FileFlow::default()
    }));
    c.observe(&Record::NetworkFlow(NetworkFlow {
        op_flags: op::CONNECT | op::WRITE_SEND | op::READ_RECV,
        proto: 6,
        num_w_send_bytes: 64,
        num_r_recv_bytes: 32,
        ..NetworkFlow::default()
    }));
    for ret in [0, 3, -9] {
        c.observe(&Record::ProcessEvent(ProcessEvent {
            proc_oid: Oid::default(),
            op_flags: op::EXIT,
            ret,
            ..ProcessEvent::default()
        }));
    }
    c.observe(&Record::ProcessEvent(ProcessEvent {
        op_flags: op::EXEC,
        ret: -2,
        ..ProcessEvent::default()
    }));
    let text = m.encode_text();
    let l = r#"{namespace="shop",pod="web-0",container="app""#;
    for expected in [
        format!("nri_sysflow_workload_file_written_bytes_total{l}}} 300"),
        format!("nri_sysflow_workload_file_write_ops_total{l}}} 3"),
        format!("nri_sysflow_workload_file_opens_total{l}}} 1"),
        format!(
            r#"nri_sysflow_workload_network_connections_total{l},direction="outbound",protocol="tcp"}} 1"#
        ),
        format!(
            r#"nri_sysflow_workload_network_connections_total{l},direction="inbound",protocol="tcp"}} 0"#
        ),
        format!("nri_sysflow_workload_network_sent_bytes_total{l}}} 64"),
        format!("nri_sysflow_workload_network_received_bytes_total{l}}} 32"),
        format!(r#"nri_sysflow_workload_process_exits_total{l},class="success"}} 1"#),
        format!(r#"nri_sysflow_workload_process_exits_total{l},class="failure"}} 1"#),
        format!(r#"nri_sysflow_workload_process_exits_total{l},class="signal"}} 1"#),
        format!("nri_sysflow_workload_exec_failures_total{l}}} 1"),
        format!("nri_sysflow_workload_processes_started_total{l}}} 0"),
    ] {
        assert!(
            text.lines().any(|x| x == expected),
            "missing {expected}:\n{text}"
        );
    }
}

#[test]
fn a_removed_workload_leaves_no_series() {
    let m = Metrics::new();
    let mut series = WorkloadSeries::new(m.workload.clone());
    series.of(Some("id1"), || labels("app"));
    series.of(Some("id2"), || labels("db"));
    series.remove("id1");
    let text = m.encode_text();
    assert!(!text.contains(r#"container="app""#), "{text}");
    assert!(text.contains(r#"container="db""#));
}

#[test]
fn mirrored_counters_add_only_growth() {
    let c = MirroredCounter::default();
    c.set_total(5);
    c.set_total(5);
    c.set_total(12);
    assert_eq!(c.counter.get(), 12);
}

#[test]
fn health_metrics_follow_the_conventions() {
    let m = Metrics::new();
    m.health.set_drops([7, 0, 1, 0, 2, 3]);
    m.health
        .set_records_written(&[1, 0, 0, 0, 4, 0, 2, 9, 0, 0, 0, 0]);
    let text = m.encode_text();
    for expected in [
        r#"nri_sysflow_kernel_records_dropped_total{reason="ring_full"} 7"#,
        r#"nri_sysflow_kernel_records_dropped_total{reason="pending_table_full"} 1"#,
        r#"nri_sysflow_kernel_records_dropped_total{reason="state_unavailable"} 2"#,
        r#"nri_sysflow_kernel_records_dropped_total{reason="orphaned_counters"} 3"#,
        r#"nri_sysflow_sysflow_records_written_total{type="FF"} 2"#,
        r#"nri_sysflow_sysflow_records_written_total{type="FE"} 9"#,
        r#"nri_sysflow_sysflow_records_written_total{type="PE"} 4"#,
        r#"nri_sysflow_build_info{version=""#,
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(expected)),
            "missing {expected}:\n{text}"
        );
    }
    assert!(
        line(
            &text,
            "# TYPE nri_sysflow_nri_handler_duration_seconds histogram"
        )
        .is_some()
    );
    assert!(
        line(
            &text,
            "# TYPE nri_sysflow_agent_resident_memory_bytes gauge"
        )
        .is_some()
    );
}

#[tokio::test]
async fn scrapes_get_the_format_they_ask_for() {
    let m = std::sync::Arc::new(Metrics::new());
    let addr = server::start("127.0.0.1:0".parse().unwrap(), m.clone())
        .await
        .unwrap();
    let get = |accept: Option<&'static str>| async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = String::from("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(a) = accept {
            req.push_str(&format!("Accept: {a}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    };
    let text = get(None).await;
    assert!(
        text.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{text}"
    );
    assert!(text.contains("# TYPE nri_sysflow_kernel_records_total counter"));
    assert!(!text.contains("# EOF"));
    let om = get(Some(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    ))
    .await;
    assert!(
        om.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{om}"
    );
    assert!(om.contains("# TYPE nri_sysflow_kernel_records counter"));
    assert!(om.trim_end().ends_with("# EOF"));
}

#[test]
fn every_family_is_named_in_names_rs_and_every_agent_metric_is_on_the_health_dashboard() {
    // A series in every family (families without one are not exported), named as OpenMetrics
    // does: without the `_total` of counters.
    let m = Metrics::new();
    m.health.set_drops([1; 6]);
    m.health.set_losses([1; Loss::ALL.len()]);
    m.health.set_records_written(&[1; 12]);
    m.health.set_nri_events(&[1; 16]);
    m.health.set_source("nri");
    m.health.set_policy_reloads(1, 0);
    m.health.set_tables([1; 4], [1; 3]);
    m.health
        .set_args_redacted(&[1; crate::redact::PATTERNS.len()]);
    WorkloadSeries::new(m.workload.clone()).of(Some("id1"), || labels("app"));
    m.detection
        .alerts
        .get_or_create(&detection::AlertLabels {
            rule: "r".into(),
            priority: "high",
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
        })
        .inc();
    m.detection.reloaded(true);
    let text = m.encode_openmetrics();
    let mut exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .collect();
    exported.sort_unstable();
    let mut named: Vec<String> = names::HEALTH
        .iter()
        .chain(names::WORKLOAD.iter())
        .chain(names::DETECTION.iter())
        .chain(names::EXPORT.iter())
        .map(|n| n.exported())
        .collect();
    named.sort_unstable();
    assert_eq!(exported, named);

    let board = |name: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../dashboards")
                .join(name),
        )
        .unwrap()
    };
    let health = board("agent-health.json");
    let missing: Vec<String> = names::HEALTH
        .iter()
        .chain(
            names::DETECTION
                .iter()
                .filter(|n| n.name != names::ALERTS.name),
        )
        .chain(names::EXPORT.iter())
        .map(|n| n.exported())
        .filter(|name| !health.contains(name.as_str()))
        .collect();
    assert_eq!(missing, Vec::<String>::new(), "not on agent-health.json");
    for name in ["workload.json", "node-overview.json"] {
        assert!(board(name).contains("nri_sysflow_alerts_total"), "{name}");
    }
}

#[test]
fn the_losses_help_names_every_loss_and_each_is_exported_under_its_label() {
    for loss in Loss::ALL {
        assert!(names::LOSSES.help.contains(loss.label()), "{loss:?}");
    }
    let m = Metrics::new();
    let mut counts = [0; Loss::ALL.len()];
    counts[Loss::SysflowRecordLost as usize] = 7;
    m.health.set_losses(counts);
    counts[Loss::SysflowRecordLost as usize] = 9;
    counts[Loss::UntrackedContainer as usize] = 1;
    m.health.set_losses(counts);
    let text = m.encode_text();
    assert_eq!(
        line(
            &text,
            r#"nri_sysflow_losses_total{what="sysflow_records_lost"}"#
        ),
        Some(r#"nri_sysflow_losses_total{what="sysflow_records_lost"} 9"#)
    );
    assert_eq!(
        line(
            &text,
            r#"nri_sysflow_losses_total{what="untracked_containers"}"#
        ),
        Some(r#"nri_sysflow_losses_total{what="untracked_containers"} 1"#)
    );
    assert_eq!(
        line(
            &text,
            r#"nri_sysflow_losses_total{what="missing_ancestors"}"#
        ),
        Some(r#"nri_sysflow_losses_total{what="missing_ancestors"} 0"#)
    );
}

/// Each record type's count is labelled with its own abbreviation (the writer counts by
/// union branch).
#[test]
fn record_type_labels_follow_the_union_branches() {
    let records = [
        (Record::ProcessEvent(Default::default()), "PE"),
        (Record::NetworkFlow(Default::default()), "NF"),
        (Record::FileFlow(Default::default()), "FF"),
        (Record::FileEvent(Default::default()), "FE"),
        (Record::NetworkEvent(Default::default()), "NE"),
        (Record::ProcessFlow(Default::default()), "PF"),
        (Record::Pod(Default::default()), "POD"),
        (Record::K8sEvent(Default::default()), "KE"),
        (Record::Process(Default::default()), "P"),
        (Record::File(Default::default()), "F"),
    ];
    for (record, label) in records {
        assert_eq!(RECORD_TYPES[record.branch_index()], label, "{record:?}");
    }
}
