//! `cargo xtask bench agent`: the whole agent (`nri-sysflow run`, capturing everything) while a
//! heavy mixed workload runs, against the same workload without the agent, in one invocation.
//!
//! Prints each loop's throughput both ways, the agent's CPU seconds and peak RSS, its CPU time
//! per kernel record and per SysFlow record written (both counted by the agent's own metrics
//! over the same window as the CPU time), SysFlow records written per second, kernel drops, and
//! `.sf` bytes per 1,000 syscalls of the workload (counted once with `strace -f -c`). Needs
//! root. The last line is one JSON object.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
};

use serde_json::json;

#[path = "../tests/support/mod.rs"]
mod support;

use support::seaweed;

const AGENT: &str = env!("CARGO_BIN_EXE_nri-sysflow");
const WORKLOAD: &str = env!("CARGO_BIN_EXE_sysflow-workload");

/// Accepts connections and reads each to EOF.
fn sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[derive(Clone)]
struct Loop {
    name: &'static str,
    args: Vec<String>,
}

fn loops(sink: SocketAddr, files: &Path) -> Vec<Loop> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        Loop {
            name: "rw_1byte",
            args: s(&["loop-rw", "200000"]),
        },
        Loop {
            name: "open_close",
            args: s(&["loop-open", "/etc/hostname", "50000"]),
        },
        Loop {
            name: "fork_exec",
            args: s(&["loop-fork-exec", "300"]),
        },
        Loop {
            name: "tcp_connect_send_close",
            args: s(&["loop-tcp", &sink.to_string(), "2000"]),
        },
        Loop {
            name: "file_server_64k",
            args: s(&[
                "serve-files",
                files.to_str().unwrap(),
                &sink.to_string(),
                "20000",
            ]),
        },
    ]
}

/// Runs every loop once; returns (name, operations per second) and the workload's busy time
/// (the sum over loops of operations x time per operation).
///
/// Loops with long iterations (fork+exec, TCP) report their median iteration: a loopback TCP
/// connect now and then waits a whole second for a SYN retransmit (port reuse), with or
/// without the agent, and one such stall would otherwise decide the figure.
fn run_workload(loops: &[Loop]) -> (Vec<(&'static str, f64)>, f64) {
    let mut out = Vec::new();
    let mut busy_s = 0.0;
    for l in loops {
        let o = Command::new(WORKLOAD)
            .args(&l.args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{} failed", l.name);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let ns = v["ns_per_op"].as_f64().unwrap();
        busy_s += v["ops"].as_f64().unwrap() * ns / 1e9;
        out.push((l.name, 1e9 / ns));
    }
    (out, busy_s)
}

/// Syscalls the workload makes, counted once under strace (not timed).
fn count_syscalls(loops: &[Loop]) -> u64 {
    let mut total = 0;
    for l in loops {
        let report = tempfile::NamedTempFile::new().unwrap();
        let status = Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(report.path())
            .arg(WORKLOAD)
            .args(&l.args)
            .stdout(Stdio::null())
            .status()
            .expect("strace (cargo xtask setup installs it)");
        assert!(status.success());
        let text = std::fs::read_to_string(report.path()).unwrap();
        // The "total" line: % time, seconds, usecs/call, calls, errors, "total".
        let line = text
            .lines()
            .find(|l| l.trim_end().ends_with("total"))
            .expect("strace total");
        let calls: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        total += calls;
    }
    total
}

/// CPU time of a process (all its threads, live and exited), in seconds, to the nanosecond:
/// its CPU-time clock, where `/proc/PID/stat` counts 10 ms ticks (a tenth of what the agent
/// spends over the workload).
fn cpu_seconds(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both out-pointers point to live locals of the right types.
    unsafe {
        assert_eq!(libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock), 0);
        assert_eq!(libc::clock_gettime(clock, &mut now), 0);
    }
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// A counter's value from the agent's /metrics (the sum of its series).
fn scrape(addr: SocketAddr, name: &str) -> f64 {
    let text = support::stress::scrape(&addr.to_string(), std::time::Duration::from_secs(5))
        .expect("metrics endpoint");
    support::stress::sum(&text, name)
}

/// (kernel records, SysFlow records written) so far, by the agent's own count.
fn agent_counts(addr: SocketAddr) -> (f64, f64) {
    (
        scrape(addr, "nri_sysflow_kernel_records_total"),
        scrape(addr, "nri_sysflow_sysflow_records_written_total"),
    )
}

/// Detection rules the agent evaluates (`NRI_SYSFLOW_BENCH_RULES`, a file or folder), if any.
fn bench_rules() -> Option<String> {
    std::env::var("NRI_SYSFLOW_BENCH_RULES")
        .ok()
        .filter(|r| !r.is_empty())
}

/// Rotation period (`NRI_SYSFLOW_BENCH_ROTATE`, seconds), if not the default.
fn bench_rotate() -> Option<String> {
    std::env::var("NRI_SYSFLOW_BENCH_ROTATE")
        .ok()
        .filter(|r| !r.is_empty())
}

/// The formats the agent exports to a local SeaweedFS (`NRI_SYSFLOW_BENCH_EXPORT`, e.g.
/// `sysflow` or `sysflow,parquet`), if it exports.
fn bench_export() -> Option<String> {
    std::env::var("NRI_SYSFLOW_BENCH_EXPORT")
        .ok()
        .filter(|e| !e.is_empty())
}

fn start_agent(
    dir: &Path,
    store: Option<&seaweed::Seaweed>,
    rules: Option<&str>,
) -> (Child, SocketAddr, std::thread::JoinHandle<String>) {
    // Another build of the agent (e.g. the image's static binary) when given.
    let agent = std::env::var("NRI_SYSFLOW_BENCH_AGENT").unwrap_or_else(|_| AGENT.to_string());
    let mut command = Command::new(agent);
    command
        .env("NRI_SYSFLOW_LOG_FORMAT", "text")
        .args(["run", "--output"])
        .arg(dir)
        .args(["--metrics-addr", "127.0.0.1:0"]);
    if let Some(rules) = rules {
        command.args(["--rules", rules]);
    }
    if let Some(secs) = bench_rotate() {
        command.args(["--rotate", &secs]);
    }
    if let Some(store) = store {
        let config = dir.with_extension("yaml");
        std::fs::write(
            &config,
            format!(
                "export:\n  create_bucket: true\n  formats: [{}]\n  scan_interval_ms: 500\n",
                bench_export().unwrap_or_default()
            ),
        )
        .unwrap();
        command
            .arg("--config")
            .arg(&config)
            .args(["--export", "s3://bench", "--s3-endpoint", &store.endpoint()])
            .env("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY);
    }
    let mut child = command
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut metrics = None;
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "agent exited early"
        );
        if line.contains("serving /metrics")
            && let Some(addr) = line.split("addr=").nth(1)
        {
            metrics = addr.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if line.contains("capturing") {
            break;
        }
    }
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    (
        child,
        metrics.expect("the agent logs its metrics address"),
        log,
    )
}

/// With the agent exporting and the workload running again: how fast a backlog of completed
/// files (alert files, which ship as they are) goes up, big files then small ones.
fn upload_throughput(out: &Path, metrics: SocketAddr, loops: &[Loop]) -> serde_json::Value {
    let mut result = serde_json::Map::new();
    let mut uploaded = 0.0;
    for (key, files, bytes) in [("big", 24usize, 8usize << 20), ("small", 400, 16 << 10)] {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let started = std::time::Instant::now();
        for i in 0..files {
            let data: Vec<u8> = (0..bytes)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            // Written aside and renamed in, as the agent completes its own files.
            let name = format!("alerts-{}-{i:03}.jsonl", 1_600_000_000 + i);
            std::fs::write(out.join(".incoming"), data).unwrap();
            std::fs::rename(out.join(".incoming"), out.join(name)).unwrap();
        }
        let target = uploaded + files as f64;
        let load_until = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = load_until.clone();
        let loops = loops.to_vec();
        let load = std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                run_workload(&loops);
            }
        });
        let series = "nri_sysflow_export_uploads_total{format=\"alerts\"}";
        while scrape(metrics, series) < target {
            assert!(
                started.elapsed().as_secs() < 300,
                "the backlog did not go up"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let secs = started.elapsed().as_secs_f64();
        load_until.store(true, std::sync::atomic::Ordering::Relaxed);
        load.join().unwrap();
        uploaded = target;
        result.insert(
            key.into(),
            json!({
                "files": files,
                "bytes": files * bytes,
                "seconds": secs,
                "mb_per_s": (files * bytes) as f64 / 1e6 / secs,
                "files_per_s": files as f64 / secs,
            }),
        );
    }
    result.into()
}

/// CPU time of the agent's thread named `name` so far, in seconds (0 without one).
fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ns| ns / 1e9)
        .sum()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `NRI_SYSFLOW_BENCH_COMPARE_RULES=PATH`: the agent's CPU over the workload without rules and
/// with the rules at PATH, one agent per run, in pairs whose order alternates (a slow spell of
/// the machine falls on both sides), medians compared. Run to run, the agent's CPU over this
/// 1-s workload varies by 10-20 % (how its ring reads batch up, what else the host runs), more
/// than the rules cost: so the rules' own CPU is measured beside it, in the runs with rules:
/// their worker thread's CPU and the pipeline's time handing records to it
/// (`rules_handoff_seconds_total`), as a share of the agent's CPU without rules.
fn compare_rules(rules: &str, loops: &[Loop]) {
    const ROUNDS: usize = 12;
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut worker = Vec::new();
    let mut handoff = Vec::new();
    let mut written = Vec::new();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_rules in order {
            let out = tempfile::tempdir().unwrap();
            let (mut agent, metrics, log) =
                start_agent(out.path(), None, with_rules.then_some(rules));
            let pid = agent.id();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let counts_before = agent_counts(metrics);
            let handoff_series = "nri_sysflow_rules_handoff_seconds_total";
            let (cpu_before, worker_before, handoff_before) = (
                cpu_seconds(pid),
                thread_cpu_seconds(pid, "detection-rules"),
                scrape(metrics, handoff_series),
            );
            run_workload(loops);
            std::thread::sleep(std::time::Duration::from_secs(2));
            let cpu = cpu_seconds(pid) - cpu_before;
            let worker_cpu = thread_cpu_seconds(pid, "detection-rules") - worker_before;
            let handoff_s = scrape(metrics, handoff_series) - handoff_before;
            let records = agent_counts(metrics).1 - counts_before.1;
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            assert!(agent.wait().unwrap().success());
            let log = log.join().unwrap();
            assert!(
                log.lines().any(|l| l.contains(" 0 ring drops")),
                "drops in a comparison run: {log}"
            );
            eprintln!(
                "round {round}, rules {}: agent CPU {cpu:.3} s, rules worker {worker_cpu:.4} s, hand-off {handoff_s:.4} s, {records:.0} records",
                if with_rules { "on" } else { "off" }
            );
            if with_rules {
                on.push(cpu);
                worker.push(worker_cpu);
                handoff.push(handoff_s);
            } else {
                off.push(cpu);
            }
            written.push(records);
        }
    }
    let (off_s, on_s) = (median(&mut off.clone()), median(&mut on.clone()));
    let mut paired: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    let paired_ratio = median(&mut paired);
    let worker_s = median(&mut worker.clone());
    let handoff_s = median(&mut handoff.clone());
    let records = median(&mut written);
    let own_share = (worker_s + handoff_s) / off_s;
    println!();
    println!("agent CPU over the workload, median of {ROUNDS} runs each, in alternating pairs:");
    println!(
        "{:<32} {:>10} {:>10} {:>8}",
        "", "rules off", "rules on", "ratio"
    );
    println!(
        "{:<32} {off_s:>10.3} {on_s:>10.3} {:>8.3}",
        "agent CPU (s)",
        on_s / off_s
    );
    println!(
        "{:<32} {:>10.2} {:>10.2}",
        "us per SysFlow record written",
        off_s * 1e6 / records,
        on_s * 1e6 / records
    );
    println!("median of the pairs' ratios: {paired_ratio:.3}");
    println!(
        "the rules' own CPU: worker {worker_s:.4} s + pipeline hand-off {handoff_s:.4} s = {:.1} % of the agent's CPU without rules",
        own_share * 100.0
    );
    println!("runs off {off:.3?}, on {on:.3?}");
    println!(
        "{}",
        json!({
            "bench": "agent_rules_compare",
            "rules": rules,
            "rounds": ROUNDS,
            "agent_cpu_s_off": off,
            "agent_cpu_s_on": on,
            "rules_worker_cpu_s": worker,
            "rules_handoff_s": handoff,
            "median_off_s": off_s,
            "median_on_s": on_s,
            "ratio_on_off": on_s / off_s,
            "median_pair_ratio": paired_ratio,
            "rules_own_share_of_off": own_share,
            "median_records_written": records,
            "worker_us_per_record": worker_s * 1e6 / records,
        })
    );
}

fn main() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the agent benchmark runs the agent: run as root"
    );
    let files = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(
            files.path().join(format!("asset-{i:02}.bin")),
            vec![b'a' + i as u8; 64 << 10],
        )
        .unwrap();
    }
    let sink = sink();
    let loops = loops(sink, files.path());
    if let Ok(rules) = std::env::var("NRI_SYSFLOW_BENCH_COMPARE_RULES") {
        compare_rules(&rules, &loops);
        return;
    }
    let syscalls = count_syscalls(&loops);

    let (baseline, baseline_wall) = run_workload(&loops);

    let out = tempfile::tempdir().unwrap();
    let store = bench_export().map(|_| seaweed::Seaweed::start(24700));
    let (mut agent, metrics, log) =
        start_agent(out.path(), store.as_ref(), bench_rules().as_deref());
    let pid = agent.id();
    // Health metrics are copied once a second: let a fresh copy in.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let counts_before = agent_counts(metrics);
    let cpu_before = cpu_seconds(pid);
    let (captured, captured_wall) = run_workload(&loops);
    // Let the agent catch up with what the workload produced before reading its figures.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let agent_cpu = cpu_seconds(pid) - cpu_before;
    let counts_after = agent_counts(metrics);
    let upload = store
        .as_ref()
        .map(|_| upload_throughput(out.path(), metrics, &loops));
    let window_kernel = counts_after.0 - counts_before.0;
    let window_written = counts_after.1 - counts_before.1;
    let us_per_kernel_record = agent_cpu * 1e6 / window_kernel.max(1.0);
    let us_per_sysflow_record = agent_cpu * 1e6 / window_written.max(1.0);
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    assert!(agent.wait().unwrap().success());
    let log = log.join().unwrap();
    // The agent reports its own peak RSS (VmHWM) in its summary line at exit.
    let summary = log
        .lines()
        .find(|l| l.contains("ring drops"))
        .unwrap_or_else(|| panic!("{log}"));
    let field = |suffix: &str| -> u64 {
        summary
            .trim_start_matches("nri-sysflow: ")
            .split(", ")
            .find_map(|p| p.strip_suffix(suffix))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{summary}"))
    };
    let records = field(" SysFlow records written");
    let drops = field(" ring drops");
    let peak_rss_mib: f64 = summary
        .split("peak RSS ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    let sf_bytes: u64 = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sf"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    if let Some(upload) = &upload {
        for (label, key) in [
            ("192 MiB in 24 files", "big"),
            ("400 files of 16 KiB", "small"),
        ] {
            let u = &upload[key];
            println!(
                "upload backlog of {label} under the workload: {:.1} MB/s, {:.1} files/s",
                u["mb_per_s"].as_f64().unwrap(),
                u["files_per_s"].as_f64().unwrap()
            );
        }
    }

    println!();
    println!(
        "{:<24} {:>16} {:>16} {:>9}",
        "loop (ops/s)", "without agent", "with agent", "ratio"
    );
    let mut loops_json = serde_json::Map::new();
    for ((name, base), (_, with)) in baseline.iter().zip(&captured) {
        println!("{name:<24} {base:>16.0} {with:>16.0} {:>9.3}", with / base);
        loops_json.insert(
            name.to_string(),
            json!({"without_agent": base, "with_agent": with, "ratio": with / base}),
        );
    }
    println!(
        "{:<24} {:>15.2}s {:>15.2}s {:>9.3}",
        "whole workload (busy)",
        baseline_wall,
        captured_wall,
        baseline_wall / captured_wall
    );
    println!(
        "agent CPU: {agent_cpu:.3} s over {captured_wall:.2} s of workload; peak RSS {peak_rss_mib:.1} MiB"
    );
    println!(
        "agent CPU per record over the same window: {us_per_kernel_record:.2} us per kernel record ({window_kernel:.0}), {us_per_sysflow_record:.2} us per SysFlow record written ({window_written:.0})"
    );
    println!(
        "SysFlow records written: {records} ({:.0}/s); kernel drops: {drops}; .sf bytes: {sf_bytes} ({:.1} per 1,000 workload syscalls, {syscalls} syscalls)",
        records as f64 / captured_wall,
        sf_bytes as f64 / (syscalls as f64 / 1000.0)
    );
    println!(
        "{}",
        json!({
            "bench": "agent",
            "rules": bench_rules(),
            "rotate": bench_rotate(),
            "export": bench_export(),
            "export_upload": upload,
            "loops": loops_json,
            "workload_busy_s": {"without_agent": baseline_wall, "with_agent": captured_wall},
            "agent_cpu_s": agent_cpu,
            "kernel_records_in_window": window_kernel,
            "sysflow_records_in_window": window_written,
            "agent_us_per_kernel_record": us_per_kernel_record,
            "agent_us_per_sysflow_record": us_per_sysflow_record,
            "agent_peak_rss_mib": peak_rss_mib,
            "records_written": records,
            "records_per_s": records as f64 / captured_wall,
            "kernel_drops": drops,
            "sf_bytes": sf_bytes,
            "workload_syscalls": syscalls,
            "sf_bytes_per_1000_syscalls": sf_bytes as f64 / (syscalls as f64 / 1000.0),
        })
    );
}
