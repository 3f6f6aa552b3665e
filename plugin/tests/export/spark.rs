//! The Spark job (analytics/summarize.py) over what the agent exported, against the same
//! sums computed with our reader.

use super::*;

/// The Spark job's four summaries, computed from SysFlow files and alert files directly with
/// our reader, the way analytics/summarize.py defines them.
fn summaries_from(sf_files: &[PathBuf], alert_files: &[PathBuf]) -> Json {
    use std::collections::{BTreeMap, BTreeSet};
    use sysflow::{SysFlowReader, flat::Flattener, reader::ReadItem};
    const EXEC: i64 = 1 << 1;
    const ACCEPT: i64 = 1 << 5;
    const WRITE: i64 = 1 << 9;
    const RMDIR_UNLINK: i64 = (1 << 16) | (1 << 18);
    let mut talkers: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    let mut written: BTreeMap<(String, String), (BTreeSet<String>, i64)> = BTreeMap::new();
    let mut deleted: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut processes: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for file in sf_files {
        let mut flat = Flattener::default();
        for item in SysFlowReader::open(file).unwrap() {
            let ReadItem::Record(record) = item.unwrap() else {
                continue;
            };
            let Some(f) = flat.push(record) else { continue };
            let j = f.to_sysprint_json();
            let text = |v: &Json| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let pod = (text(&j["pod"]["ns"]), text(&j["pod"]["name"]));
            let flags = j["opflags_bitmap"].as_i64().unwrap_or(0);
            let int = |v: &Json| v.as_i64().unwrap_or(0);
            match f.code() {
                "NF" => {
                    let remote = if flags & ACCEPT != 0 {
                        format!("{}:{}", text(&j["net"]["sip"]), j["net"]["sport"])
                    } else {
                        format!("{}:{}", text(&j["net"]["dip"]), j["net"]["dport"])
                    };
                    let t = talkers.entry((pod.0, pod.1, remote)).or_default();
                    t.0 += int(&j["flow"]["wbytes"]);
                    t.1 += int(&j["flow"]["rbytes"]);
                }
                "FF" if flags & WRITE != 0 => {
                    let w = written.entry(pod).or_default();
                    w.0.insert(text(&j["file"]["path"]));
                    w.1 += int(&j["flow"]["wbytes"]);
                }
                "FE" if flags & RMDIR_UNLINK != 0 => *deleted.entry(pod).or_default() += 1,
                "PE" if flags == EXEC => {
                    let p = processes.entry(pod).or_default();
                    if int(&j["ret"]) == 0 {
                        p.0 += 1;
                    } else {
                        p.1 += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let mut alerts: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for file in alert_files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let a: Json = serde_json::from_str(line).unwrap();
            let text = |v: &Json| v.as_str().unwrap_or_default().to_string();
            for p in a["policies"].as_array().unwrap() {
                let key = (
                    text(&a["pod"]["namespace"]),
                    text(&a["pod"]["name"]),
                    text(&p["id"]),
                );
                *alerts.entry(key).or_default() += 1;
            }
        }
    }
    let pods: BTreeSet<&(String, String)> = written.keys().chain(deleted.keys()).collect();
    serde_json::json!({
        "talkers": talkers.iter().map(|((ns, pod, remote), (sent, received))| serde_json::json!({
            "namespace": ns, "pod": pod, "remote": remote,
            "bytes_sent": sent, "bytes_received": received,
        })).collect::<Vec<_>>(),
        "files": pods.into_iter().map(|key| {
            let (paths, bytes) = written.get(key).map_or((0, 0), |(p, b)| (p.len(), *b));
            serde_json::json!({
                "namespace": key.0, "pod": key.1, "files_written": paths,
                "bytes_written": bytes, "files_deleted": deleted.get(key).copied().unwrap_or(0),
            })
        }).collect::<Vec<_>>(),
        "processes": processes.iter().map(|((ns, pod), (ok, failed))| serde_json::json!({
            "namespace": ns, "pod": pod, "executed": ok, "exec_failures": failed,
        })).collect::<Vec<_>>(),
        "alerts": alerts.iter().map(|((ns, pod, rule), n)| serde_json::json!({
            "namespace": ns, "pod": pod, "rule": rule, "alerts": n,
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn the_spark_job_over_the_exported_parquet_sums_what_our_reader_sums() {
    let store = Seaweed::start(24600);
    let work = tempfile::tempdir().unwrap();
    let output = work.path().join("out");
    std::fs::create_dir(&output).unwrap();
    // A trace with pods, and the kit's runtime-integrity alerts on it, waiting from an earlier
    // run beside what the agent captures now.
    let trace = support::cli::reference_dir().join("processor-v4-k8s-small.sf");
    std::fs::copy(&trace, output.join("k8s-1700000000-000.sf")).unwrap();
    let rules = support::cli::kit().join("policies/runtimeintegrity");
    let alerts = Command::new(AGENT)
        .args(["rules", "run", "--format", "json", "--policy"])
        .args([&rules, &trace])
        .output()
        .unwrap();
    assert!(alerts.status.success());
    std::fs::write(output.join("alerts-1700000000-000.jsonl"), &alerts.stdout).unwrap();
    let cfg = config(
        work.path(),
        "export:\n  create_bucket: true\n  formats: [sysflow, parquet]\n  keep_local_secs: 3600\n  scan_interval_ms: 200\n",
    );
    let agent = exporting(
        Some(&output),
        &cfg,
        "1",
        "s3://lake/sysflow",
        &store.endpoint(),
        &ENV,
    );
    std::thread::sleep(Duration::from_secs(3));
    let stopped = agent.stop();
    assert_eq!(stopped.files, Vec::<PathBuf>::new());
    let kept = output.join("uploaded");
    let sf: Vec<PathBuf> = files(&kept, ".sf")
        .iter()
        .map(|(n, _)| kept.join(n))
        .collect();
    let parquet = files(&kept, ".parquet");
    assert_eq!(parquet.len(), sf.len(), "one Parquet file per SysFlow file");
    let objects = store.list("lake");
    assert_eq!(objects.len(), 2 * sf.len() + 1, "{objects:?}");

    let run_job = |extra: &[&str]| -> Json {
        let summary = work.path().join("summary.json");
        let venv =
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv");
        let job = Command::new(venv.join("bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../analytics/summarize.py"))
            .args([
                "--bucket",
                "lake",
                "--prefix",
                "sysflow",
                "--endpoint",
                &store.endpoint(),
            ])
            .args(extra)
            .arg("--out")
            .arg(&summary)
            .envs(ENV.iter().copied().take(2))
            .output()
            .unwrap();
        assert!(
            job.status.success(),
            "{}",
            String::from_utf8_lossy(&job.stderr)
        );
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap()
    };
    let mut theirs = run_job(&[]);
    let inputs = theirs.as_object_mut().unwrap().remove("inputs").unwrap();
    assert_eq!(inputs["parquet_files"], sf.len());
    assert_eq!(inputs["alert_files"], 1);
    let ours = summaries_from(&sf, &[kept.join("alerts-1700000000-000.jsonl")]);
    assert!(theirs == ours, "Spark:\n{theirs:#}\nour reader:\n{ours:#}");
    // The trace's pods are there: kube-proxy's 46 execs, and the kit's alerts for rabbitmq.
    let processes = theirs["processes"].as_array().unwrap();
    assert!(processes.contains(&serde_json::json!({
        "namespace": "kube-system", "pod": "kube-proxy-9g9kt", "executed": 46, "exec_failures": 0
    })));
    assert!(theirs["alerts"].as_array().unwrap().contains(&serde_json::json!({
        "namespace": "robot-shop", "pod": "rabbitmq-785b678f74-mhhtg", "rule": "Non sudo setuid", "alerts": 19
    })), "{:#}", theirs["alerts"]);
    // A time range: only the files started on the trace's day (the agent's own are later).
    let day = run_job(&["--from", "2023-11-14", "--to", "2023-11-14"]);
    assert_eq!(
        day["inputs"],
        serde_json::json!({"parquet_files": 1, "alert_files": 1, "records": 5247})
    );
}
