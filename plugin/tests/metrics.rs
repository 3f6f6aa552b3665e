//! Per-workload metrics counted from real kernel records: a workload in a container's cgroup
//! moves its container's series by exactly what it did. Needs root.

mod support;

use std::time::{Duration, Instant};

use nri_sysflow::{
    host::Host,
    metrics::{Metrics, workload::WorkloadSeries},
    pipeline::Pipeline,
    policy::Policy,
    sink::{Fanout, sysflow_files::FileSink, workload_metrics::MetricsSink},
    state::{State, StateConfig},
    workloads::{ContainerInfo, PodInfo, Workloads},
};
use support::Session;
use sysflow::{SysFlowWriter, WriterConfig};
use sysflow_common::capture;

/// The value of the series `name{labels}` in the text exposition, if present.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_series_move_by_exactly_its_workloads_amounts() {
    let mut s = Session::start("metrics", capture::ALL);
    let metrics = Metrics::new();
    let out = tempfile::tempdir().unwrap();
    let writer = SysFlowWriter::to_directory(out.path(), WriterConfig::default()).unwrap();
    let host = Host::system().unwrap();
    // No grace period: a removed container's series go at the first tick after it is
    // forgotten.
    let sinks = Fanout::default()
        .with(FileSink::new(
            writer,
            Duration::from_secs(1),
            Default::default(),
        ))
        .with(MetricsSink::new(
            WorkloadSeries::new(metrics.workload.clone()),
            Duration::ZERO,
        ));
    let state = State::new(
        StateConfig::default(),
        host.clone(),
        s.probe.boot_to_wall_offset_ns(),
    );
    let mut pipeline = Pipeline::new(state, sinks);
    // The test cgroup stands for a container of pod shop/web-0.
    let mount = host.cgroup2().to_path_buf();
    let (workloads, updates) = Workloads::new(
        Policy::uniform(nri_sysflow::capture::CaptureMode::ALL),
        None,
        host.clone(),
        "node-1".into(),
        None,
        Default::default(),
    );
    workloads.pod_started(PodInfo {
        id: "sandbox-1".into(),
        uid: "uid-1".into(),
        name: "web-0".into(),
        namespace: "shop".into(),
        ..PodInfo::default()
    });
    let relative = s
        .cgroup
        .path
        .strip_prefix(&mount)
        .unwrap()
        .display()
        .to_string();
    workloads.container_started(
        ContainerInfo {
            id: "a".repeat(64),
            pod_id: "sandbox-1".into(),
            name: "app".into(),
            cgroups_path: format!("/{relative}"),
            ..ContainerInfo::default()
        },
        None,
    );
    pipeline.workload_updates(updates.drain());

    let labels = r#"namespace="shop",pod="web-0",container="app""#;
    let file = out.path().join("data.bin");
    // Series whose per-run amount depends on the program's loader (libraries opened and
    // read): the second run must add exactly what the first did.
    let loader_dependent = [
        "nri_sysflow_workload_file_opens_total",
        "nri_sysflow_workload_file_open_failures_total",
        "nri_sysflow_workload_file_read_bytes_total",
        "nri_sysflow_workload_file_read_ops_total",
    ];
    let mut first_run = Vec::new();
    for round in 1..=2u32 {
        // 3 writes of 100 bytes each round.
        let (_, status) = s.run(&mut s.cgroup.workload(&["write-file", file.to_str().unwrap()]));
        assert!(status.success());
        pipeline.records(s.collect().await);
        let text = metrics.encode_text();
        let round = f64::from(round);
        for (name, per_run) in [
            ("nri_sysflow_workload_file_written_bytes_total", 300.0),
            ("nri_sysflow_workload_file_write_ops_total", 3.0),
            ("nri_sysflow_workload_processes_started_total", 1.0),
            ("nri_sysflow_workload_exec_failures_total", 0.0),
        ] {
            assert_eq!(
                value(&text, name, labels),
                Some(per_run * round),
                "{name} after run {round}:\n{text}"
            );
        }
        assert_eq!(
            value(
                &text,
                "nri_sysflow_workload_process_exits_total",
                &format!(r#"{labels},class="success""#)
            ),
            Some(round)
        );
        let now: Vec<f64> = loader_dependent
            .iter()
            .map(|n| value(&text, n, labels).unwrap())
            .collect();
        if first_run.is_empty() {
            assert!(now[0] >= 1.0, "the data file's open at least");
            first_run = now;
        } else {
            let doubled: Vec<f64> = first_run.iter().map(|v| v * 2.0).collect();
            assert_eq!(now, doubled, "{loader_dependent:?}");
        }
    }
    // The runtime removes the container: its series stay until the pipeline forgets it (one
    // flow interval after the next), then go.
    workloads.container_removed(&"a".repeat(64));
    assert!(workloads.registered(s.cgroup.id).is_none());
    pipeline.workload_updates(updates.drain());
    let now = nri_sysflow::probe::boot_now_ns();
    pipeline.interval();
    pipeline.tick(now, Instant::now());
    assert!(metrics.encode_text().contains(r#"container="app""#));
    pipeline.interval();
    pipeline.tick(now + 1, Instant::now());
    let text = metrics.encode_text();
    assert!(!text.contains(r#"container="app""#), "{text}");

    // Nothing of the workload was counted as the host's.
    let text = metrics.encode_text();
    assert_eq!(
        value(
            &text,
            "nri_sysflow_workload_file_written_bytes_total",
            r#"namespace="",pod="",container="""#
        ),
        None
    );
}
