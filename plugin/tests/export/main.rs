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

/// The agent with `cfg`, rotating every `rotate` seconds, exporting to `url` at `endpoint`.
fn exporting(
    output: Option<&Path>,
    cfg: &Path,
    rotate: &str,
    url: &str,
    endpoint: &str,
    env: &[(&str, &str)],
) -> Agent {
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--rotate",
        rotate,
        "--no-nri",
        "--export",
        url,
        "--s3-endpoint",
        endpoint,
    ];
    Agent::start_with(output, &args, env)
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
    let store = Seaweed::start(24100);
    let work = tempfile::tempdir().unwrap();
    let cfg = config(
        work.path(),
        "output:\n  node_name: node-a\n  node_ip: 10.9.8.7\nexport:\n  create_bucket: true\n  cluster: c1\n  keep_local_secs: 3600\n  scan_interval_ms: 200\n",
    );
    let agent = exporting(
        None,
        &cfg,
        "1",
        "s3://archive/sysflow",
        &store.endpoint(),
        &ENV,
    );
    let uploads = series("export_uploads_total", "format=\"sysflow\"");
    assert!(
        wait_until(Duration::from_secs(30), || agent
            .metric(&uploads)
            .is_some_and(|n| n >= 3.0)),
        "{:?}\n{}\n{}",
        agent.metric(&uploads),
        agent.log.lock().unwrap(),
        store.log_tail()
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
    let store = Seaweed::start(24200);
    let work = tempfile::tempdir().unwrap();
    // sysprint lists a bucket without recursing: only the flat layout (objects at the root)
    // is readable by it.
    let cfg = config(
        work.path(),
        "export:\n  create_bucket: true\n  layout: flat\n  keep_local_secs: 3600\n  scan_interval_ms: 200\n",
    );
    let agent = exporting(None, &cfg, "1", "s3://telemetry", &store.endpoint(), &ENV);
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

/// Everything in `<output>` and `<output>/uploaded` that is a SysFlow file.
fn written(output: &Path) -> Vec<String> {
    let mut names: Vec<String> = files(output, ".sf")
        .into_iter()
        .chain(files(&output.join("uploaded"), ".sf"))
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

#[test]
fn a_store_down_for_a_minute_loses_nothing_and_the_backlog_rises_and_falls() {
    let mut store = Seaweed::start(24300);
    let work = tempfile::tempdir().unwrap();
    let cfg = config(
        work.path(),
        "output:\n  node_name: node-b\nexport:\n  create_bucket: true\n  keep_local_secs: 3600\n  scan_interval_ms: 200\n  max_backoff_secs: 4\n",
    );
    let agent = exporting(None, &cfg, "2", "s3://outage", &store.endpoint(), &ENV);
    let uploads = series("export_uploads_total", "format=\"sysflow\"");
    let waiting = "nri_sysflow_export_spool_files";
    assert!(
        wait_until(Duration::from_secs(30), || agent
            .metric(&uploads)
            .is_some_and(|n| n >= 1.0)),
        "{}\n{}",
        agent.log.lock().unwrap(),
        store.log_tail()
    );
    store.stop();
    let down = Instant::now();
    let mut peak = 0.0f64;
    while down.elapsed() < Duration::from_secs(60) {
        peak = peak.max(agent.metric(waiting).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let unreachable = agent
        .metric(&series("export_failures_total", "reason=\"unreachable\""))
        .unwrap();
    let retries = agent.metric("nri_sysflow_export_retries_total").unwrap();
    let oldest = agent
        .metric("nri_sysflow_export_oldest_waiting_seconds")
        .unwrap();
    store.restart();
    assert!(
        wait_until(Duration::from_secs(60), || agent.metric(waiting)
            == Some(0.0)),
        "{:?}",
        agent.metric(waiting)
    );
    let output = agent.output.clone();
    let stopped = agent.stop();
    // 60 s at one file per 2 s: about 30 files piled up, then all went.
    assert!(peak >= 20.0, "backlog peaked at {peak}");
    assert!(
        unreachable >= 5.0 && retries >= 5.0,
        "{unreachable} {retries}"
    );
    assert!(oldest >= 40.0, "oldest waiting {oldest} s");
    // Every file written arrived exactly once, and none is left behind.
    assert_eq!(stopped.files, Vec::<PathBuf>::new());
    let names = written(&output);
    let objects: Vec<String> = store
        .list("outage")
        .into_iter()
        .map(|(key, _)| key.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(objects, names);
    assert!(names.len() >= 30, "{}", names.len());
}

#[test]
fn an_agent_killed_mid_upload_leaves_no_object_and_its_restart_uploads_the_file_once() {
    let store = Seaweed::start(24400);
    let work = tempfile::tempdir().unwrap();
    let output = work.path().join("out");
    std::fs::create_dir(&output).unwrap();
    // A completed 256 MiB file waiting from an earlier run: a multipart upload of 32 parts.
    let big = "node-c-1700000000-000.sf";
    let mut data = vec![0u8; 256 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(output.join(big), &data).unwrap();
    let cfg = config(
        work.path(),
        "output:\n  node_name: node-c\nexport:\n  create_bucket: true\n  scan_interval_ms: 200\n",
    );
    // The default rotation (300 s): only the waiting file goes up while the test looks.
    let start = || {
        exporting(
            Some(&output),
            &cfg,
            "300",
            "s3://crash",
            &store.endpoint(),
            &ENV,
        )
    };
    let key = format!("node-c/2023/11/14/{big}");
    let mut agent = start();
    assert!(wait_until(Duration::from_secs(30), || agent
        .log
        .lock()
        .unwrap()
        .contains(&format!("export: uploading file={big}"))));
    std::thread::sleep(Duration::from_millis(300));
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    drop(agent);
    // No half object: a multipart upload is not an object until it is completed.
    assert!(!store.exists("crash", &key));
    assert!(output.join(big).exists());

    let agent = start();
    assert!(wait_until(Duration::from_secs(60), || !output
        .join(big)
        .exists()));
    let stopped = agent.stop();
    let bigs: Vec<(String, u64)> = store
        .list("crash")
        .into_iter()
        .filter(|(k, _)| k.ends_with(big))
        .collect();
    assert_eq!(bigs, vec![(key.clone(), 256 << 20)]);
    assert!(
        store.get("crash", &key).0 == data,
        "the object differs from the file"
    );
    assert!(
        stopped
            .log
            .contains(&format!("export: uploaded file={big}")),
        "{}",
        stopped.log
    );
}

#[test]
fn a_full_spool_drops_the_oldest_files_counts_each_and_keeps_the_newest() {
    let work = tempfile::tempdir().unwrap();
    let output = work.path().join("out");
    std::fs::create_dir(&output).unwrap();
    // Five completed 100 kB files from an earlier run, oldest first; the store is unreachable
    // (nothing listens on the discard port).
    let old: Vec<String> = (0..5)
        .map(|i| format!("node-d-17000000{i:02}-000.sf"))
        .collect();
    for name in &old {
        std::fs::write(output.join(name), vec![7u8; 100_000]).unwrap();
    }
    let cfg = config(
        work.path(),
        "output:\n  node_name: node-d\ncapture:\n  default_mode: off\nexport:\n  spool_max_bytes: 350000\n  scan_interval_ms: 200\n  max_backoff_secs: 1\n",
    );
    let agent = exporting(
        Some(&output),
        &cfg,
        "1",
        "s3://nowhere",
        "http://127.0.0.1:9",
        &ENV,
    );
    let dropped = "nri_sysflow_export_dropped_files_total";
    assert!(wait_until(Duration::from_secs(20), || agent
        .metric(dropped)
        .is_some_and(|n| n >= 2.0)));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.metric(dropped), Some(2.0));
    assert_eq!(
        agent.metric("nri_sysflow_export_dropped_bytes_total"),
        Some(200_000.0)
    );
    assert_eq!(
        agent.metric(&series("losses_total", "what=\"export_files_dropped\"")),
        Some(2.0)
    );
    assert!(
        agent
            .metric(&series("export_failures_total", "reason=\"unreachable\""))
            .is_some_and(|n| n >= 1.0)
    );
    let stopped = agent.stop();
    let left = written(&output);
    // The two oldest went; the three newer and every file of this run stayed.
    assert!(
        !left.contains(&old[0]) && !left.contains(&old[1]),
        "{left:?}"
    );
    assert_eq!(left[..3], old[2..]);
    assert!(left.len() >= 5, "{left:?}");
    assert!(
        stopped.log.contains(&format!(
            "export: the spool is over 350000 bytes: dropped {} (100000 bytes) without uploading it",
            old[0]
        )),
        "{}",
        stopped.log
    );
}

#[test]
fn wrong_credentials_are_a_clear_error_and_a_metric_and_capture_goes_on() {
    let store = Seaweed::start(24500);
    let work = tempfile::tempdir().unwrap();
    let cfg = config(
        work.path(),
        "export:\n  create_bucket: true\n  scan_interval_ms: 200\n  max_backoff_secs: 1\n",
    );
    let mut env = ENV;
    env[1] = ("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let agent = exporting(None, &cfg, "1", "s3://denied", &store.endpoint(), &env);
    let refused = series("export_failures_total", "reason=\"credentials\"");
    assert!(wait_until(Duration::from_secs(20), || agent
        .metric(&refused)
        .is_some_and(|n| n >= 2.0)));
    assert_eq!(
        agent.metric(&series("export_uploads_total", "format=\"sysflow\"")),
        Some(0.0)
    );
    let stopped = agent.stop();
    // Capture went on: the files are all there, waiting for a store that takes them.
    assert!(stopped.files.len() >= 2, "{:?}", stopped.files);
    let line = stopped
        .log
        .lines()
        .find(|l| l.contains("failed (credentials)"))
        .unwrap_or_else(|| panic!("{}", stopped.log));
    assert!(
        line.contains("export: creating bucket denied failed (credentials): cannot create bucket denied: 403 Forbidden: "),
        "{line}"
    );
    assert!(line.contains("retrying"), "{line}");
}

/// A CA, and a certificate it signed for 127.0.0.1: (ca.pem, server.pem, server.key).
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=nri-sysflow test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn over_tls_the_configured_ca_is_trusted_and_an_unknown_one_is_a_tls_failure() {
    let work = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(work.path());
    let store = Seaweed::start_with_tls(24800, Some((cert, key)));
    let run = |ca_bundle: Option<&Path>| {
        let mut text =
            "export:\n  create_bucket: true\n  scan_interval_ms: 200\n  max_backoff_secs: 1\n"
                .to_string();
        if let Some(ca) = ca_bundle {
            text.push_str(&format!("  ca_bundle: {}\n", ca.display()));
        }
        let cfg = config(work.path(), &text);
        let agent = exporting(
            None,
            &cfg,
            "1",
            "s3://secure",
            &store.https_endpoint(),
            &ENV,
        );
        let uploads = series("export_uploads_total", "format=\"sysflow\"");
        let tls = series("export_failures_total", "reason=\"tls\"");
        let done = wait_until(Duration::from_secs(20), || {
            agent.metric(&uploads).is_some_and(|n| n >= 1.0)
                || agent.metric(&tls).is_some_and(|n| n >= 2.0)
        });
        let figures = (agent.metric(&uploads), agent.metric(&tls));
        let stopped = agent.stop();
        assert!(done, "{figures:?}\n{}\n{}", stopped.log, store.log_tail());
        (figures, stopped)
    };
    // The CA the store's certificate comes from, in export.ca_bundle: uploads go through.
    let ((uploads, tls), _) = run(Some(&ca));
    assert!(
        uploads.unwrap() >= 1.0 && tls == Some(0.0),
        "{uploads:?} {tls:?}"
    );
    assert!(!store.list("secure").is_empty());
    // Without it the system's roots do not know that CA: a TLS failure, said as such.
    let ((uploads, tls), stopped) = run(None);
    assert_eq!(uploads, Some(0.0));
    assert!(tls.unwrap() >= 2.0);
    assert!(stopped.log.contains("failed (tls)"), "{}", stopped.log);
}

mod spark;
