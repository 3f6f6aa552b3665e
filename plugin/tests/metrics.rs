//! Per-workload metrics counted from real kernel records: a workload in a container's cgroup
//! moves its container's series by exactly what it did. Needs root.

mod support;

use std::path::Path;

use nri_sysflow::{
    cgroup::cgroup2_mount,
    engine::{Engine, EngineConfig},
    metrics::{Metrics, workload::WorkloadSeries},
    policy::Policy,
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
    let mut engine = Engine::new(
        EngineConfig::default(),
        writer,
        s.probe.boot_to_wall_offset_ns(),
    );
    // The test cgroup stands for a container of pod shop/web-0.
    let mount = cgroup2_mount(Path::new("/proc/self/mountinfo")).unwrap();
    let (workloads, mut updates) = Workloads::new(
        Policy::uniform(nri_sysflow::capture::CaptureMode::ALL),
        None,
        mount.clone(),
        "node-1".into(),
        None,
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
    engine.set_workloads(workloads.clone());
    // No grace period: a removed container's series go at the first tick after it is
    // forgotten.
    engine.set_workload_series(
        WorkloadSeries::new(metrics.workload.clone()),
        std::time::Duration::ZERO,
    );
    while let Ok(u) = updates.try_recv() {
        engine.apply_workload(u);
    }

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
        for record in s.collect().await {
            engine.handle(record);
        }
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
    // The runtime removes the container: its series stay until the engine forgets it (one
    // flow interval after the next), then go.
    workloads.container_removed(&"a".repeat(64));
    while let Ok(u) = updates.try_recv() {
        engine.apply_workload(u);
    }
    let now = nri_sysflow::probe::boot_now_ns();
    engine.interval(now);
    engine.tick(now);
    assert!(metrics.encode_text().contains(r#"container="app""#));
    engine.interval(now);
    engine.tick(now + 1);
    let text = metrics.encode_text();
    assert!(!text.contains(r#"container="app""#), "{text}");
    assert!(workloads.lookup(s.cgroup.id).is_none());

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
