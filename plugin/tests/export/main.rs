//! Export to a real S3-compatible store (SeaweedFS on loopback), as a user runs it: the agent
//! binary with `--export`, its files compared with the objects, the store stopped and started
//! under it, the agent killed mid-upload, a spool that fills, wrong credentials. Needs root
//! (the agent loads its eBPF programs) and the test venv (weed, sysprint).

#[path = "../support/mod.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value as Json;
use support::{
    agent::{AGENT, Agent},
    seaweed::{ACCESS_KEY, SECRET_KEY, Seaweed},
};

/// The agent's credentials and the pod it would run in (the DaemonSet's downward API).
const ENV: [(&str, &str); 6] = [
    ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ("POD_NAME", "nri-sysflow-7xk2p"),
    ("POD_NAMESPACE", "monitoring"),
    ("POD_UID", "0f6c2a8e-5d1b-4c3e-9a7f-2b8d4e6f1a3c"),
    ("RUST_LOG", "info,nri_sysflow::export=debug"),
];

fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// `(name, bytes)` of the files directly in `dir` whose names end with `suffix`, by name.
fn files(dir: &Path, suffix: &str) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .filter(|(n, _)| n.ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// The UTC day in one of our file names (`<node>-<secs>-<seq>.sf`), as the key has it.
fn day_of(name: &str) -> String {
    let secs: i64 = name.rsplit('-').nth(1).unwrap().parse().unwrap();
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%Y/%m/%d")
        .to_string()
}

fn series(name: &str, labels: &str) -> String {
    format!("nri_sysflow_{name}{{{labels}}}")
}

#[test]
fn completed_files_arrive_under_their_keys_byte_identical_with_their_metadata() {
    let store = Seaweed::start(41000);
    let work = tempfile::tempdir().unwrap();
    let cfg = config(
        work.path(),
        "output:\n  node_name: node-a\n  node_ip: 10.9.8.7\nexport:\n  create_bucket: true\n  cluster: c1\n  keep_local_secs: 3600\n  scan_interval_ms: 200\n",
    );
    let agent = Agent::start_with(
        None,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--rotate",
            "1",
            "--no-nri",
            "--export",
            "s3://archive/sysflow",
            "--s3-endpoint",
            &store.endpoint(),
        ],
        &ENV,
    );
    let uploads = series("export_uploads_total", "format=\"sysflow\"");
    assert!(
        wait_until(Duration::from_secs(30), || agent
            .metric(&uploads)
            .is_some_and(|n| n >= 3.0)),
        "{:?}",
        agent.metric(&uploads)
    );
    let output = agent.output.clone();
    let stopped = agent.stop();
    // Nothing waits: every file went up at shutdown, and is kept in uploaded/ as asked.
    assert_eq!(stopped.files, Vec::<PathBuf>::new(), "{}", stopped.log);
    let kept = files(&output.join("uploaded"), ".sf");
    assert!(kept.len() >= 4, "{kept:?}");
    let expected: Vec<(String, u64)> = kept
        .iter()
        .map(|(name, bytes)| {
            (
                format!("sysflow/c1/node-a/10.9.8.7/{}/{name}", day_of(name)),
                *bytes,
            )
        })
        .collect();
    assert_eq!(store.list("archive"), expected);
    for ((name, _), (key, _)) in kept.iter().zip(&expected) {
        let (bytes, content_type, meta) = store.get("archive", key);
        assert!(
            bytes == std::fs::read(output.join("uploaded").join(name)).unwrap(),
            "{key} differs from {name}"
        );
        assert_eq!(content_type, "application/avro");
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            meta,
            [
                ("nodeip", "10.9.8.7"),
                ("nodename", "node-a"),
                ("podname", "nri-sysflow-7xk2p"),
                ("podns", "monitoring"),
                ("poduuid", "0f6c2a8e-5d1b-4c3e-9a7f-2b8d4e6f1a3c"),
            ]
        );
    }
    assert!(
        stopped.log.contains("export: bucket ready bucket=archive"),
        "{}",
        stopped.log
    );
}

#[test]
fn sysprint_reads_a_flat_bucket_exactly_as_our_reader_reads_the_files() {
    let store = Seaweed::start(42000);
    let work = tempfile::tempdir().unwrap();
    // sysprint lists a bucket without recursing: only the flat layout (objects at the root)
    // is readable by it.
    let cfg = config(
        work.path(),
        "export:\n  create_bucket: true\n  layout: flat\n  keep_local_secs: 3600\n  scan_interval_ms: 200\n",
    );
    let agent = Agent::start_with(
        None,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--rotate",
            "1",
            "--no-nri",
            "--export",
            "s3://telemetry",
            "--s3-endpoint",
            &store.endpoint(),
        ],
        &ENV,
    );
    std::thread::sleep(Duration::from_secs(3));
    let output = agent.output.clone();
    let stopped = agent.stop();
    assert_eq!(stopped.files, Vec::<PathBuf>::new());
    let kept = files(&output.join("uploaded"), ".sf");
    assert_eq!(store.list("telemetry"), kept);

    let venv =
        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv");
    let port = store.endpoint().rsplit(':').next().unwrap().to_string();
    let theirs = Command::new(venv.join("bin/sysprint"))
        .args([
            "-i",
            "s3",
            "-e",
            "127.0.0.1",
            "-p",
            &port,
            "-a",
            ACCESS_KEY,
            "-s",
            SECRET_KEY,
        ])
        .args(["--secure", "False", "-o", "json", "telemetry"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&theirs.stderr);
    assert!(!stderr.contains("Error"), "{stderr}");
    let ours = Command::new(AGENT)
        .args(["print", "--format", "json"])
        .arg(output.join("uploaded"))
        .output()
        .unwrap();
    assert!(ours.status.success());
    let parse = |out: &[u8]| -> Vec<Json> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (theirs, ours) = (parse(&theirs.stdout), parse(&ours.stdout));
    assert!(ours.len() > 100, "{}", ours.len());
    assert_eq!(theirs.len(), ours.len());
    assert!(theirs == ours, "sysprint -i s3 and our reader differ");
}
