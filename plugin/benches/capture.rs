//! `cargo xtask bench capture`: what kernel capture costs the workloads it watches.
//!
//! Four syscall-heavy loops run in a fresh cgroup, each three ways in the same invocation:
//! detached (no probe: the baseline), attached with the cgroup set to off, and attached
//! capturing everything with a consumer draining the rings. Then parallel open/close loops
//! find the highest record rate delivered with zero drops, with one ring and with one ring per
//! CPU. Needs root. Prints a table; the last line is one JSON object.

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nri_sysflow::{
    cgroup::{cgroup_id, cgroup2_mount},
    probe::{Probe, ProbeConfig},
};
use serde_json::json;
use sysflow_common::capture;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sysflow-workload");
const REPEATS: usize = 3;

struct Cgroup {
    path: PathBuf,
    id: u64,
}

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let mount = cgroup2_mount(Path::new("/proc/self/mountinfo")).expect("cgroup2");
        let path = mount.join(format!("nri-sysflow-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create cgroup");
        let id = cgroup_id(&path).expect("cgroup id");
        Cgroup { path, id }
    }

    /// Starts the workload inside this cgroup.
    fn spawn(&self, args: &[String]) -> std::process::Child {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new(WORKLOAD);
        cmd.args(args).stdout(Stdio::piped()).stdin(Stdio::null());
        // SAFETY: only open/write/close between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd.spawn().expect("spawn workload")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the workload and returns its own ns per operation.
fn run_loop(cgroup: &Cgroup, args: &[String]) -> f64 {
    let mut child = cgroup.spawn(args);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "workload {args:?} failed");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("workload JSON");
    v["ns_per_op"].as_f64().expect("ns_per_op")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn measure(cgroup: &Cgroup, args: &[String]) -> f64 {
    median((0..REPEATS).map(|_| run_loop(cgroup, args)).collect())
}

/// Accepts connections and reads each to EOF, for the TCP loop.
fn tcp_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = Vec::new();
            let _ = conn.read_to_end(&mut buf);
        }
    });
    addr
}

/// Drains the probe's records in the background, counting them.
fn drain(probe: &mut Probe, rt: &tokio::runtime::Runtime) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let _guard = rt.enter();
    let mut rx = probe.records(65536).expect("records");
    rt.spawn(async move {
        while rx.recv().await.is_some() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    count
}

/// Runs `parallel` open/close loops at once; returns (records delivered per second, drops).
fn rate(probe: &Probe, delivered: &AtomicU64, cgroup: &Cgroup, parallel: usize) -> (f64, u64) {
    let args: Vec<String> = ["loop-open", "/etc/hostname", "100000"]
        .map(String::from)
        .to_vec();
    let drops_before = probe.kernel_stats().unwrap().ring_full;
    let before = delivered.load(Ordering::Relaxed);
    let started = Instant::now();
    let children: Vec<_> = (0..parallel).map(|_| cgroup.spawn(&args)).collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    // Let the consumer catch up before reading the counts.
    let mut last = u64::MAX;
    while last != delivered.load(Ordering::Relaxed) {
        last = delivered.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = started.elapsed().as_secs_f64() - 0.2;
    let drops = probe.kernel_stats().unwrap().ring_full - drops_before;
    ((last - before) as f64 / elapsed, drops)
}

fn main() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the capture benchmark loads eBPF: run as root"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cgroup = Cgroup::new("capture");
    let sink = tcp_sink();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let workloads: Vec<(&str, Vec<String>)> = vec![
        ("rw_1byte", s(&["loop-rw", "200000"])),
        ("open_close", s(&["loop-open", "/etc/hostname", "100000"])),
        ("fork_exec", s(&["loop-fork-exec", "500"])),
        (
            "tcp_connect_send_close",
            s(&["loop-tcp", &sink.to_string(), "3000"]),
        ),
    ];

    let mut rows: BTreeMap<&str, [f64; 3]> = BTreeMap::new();
    for (name, args) in &workloads {
        rows.entry(name).or_default()[0] = measure(&cgroup, args);
    }

    let config = ProbeConfig {
        default_mode: capture::OFF,
        ..ProbeConfig::default()
    };
    let mut probe = Probe::load(&config).expect("probe");
    let delivered = drain(&mut probe, &rt);
    probe.set_cgroup_mode(cgroup.id, capture::OFF).unwrap();
    for (name, args) in &workloads {
        rows.get_mut(name).unwrap()[1] = measure(&cgroup, args);
    }
    probe.set_cgroup_mode(cgroup.id, capture::ALL).unwrap();
    let drops_before = probe.kernel_stats().unwrap().ring_full;
    for (name, args) in &workloads {
        rows.get_mut(name).unwrap()[2] = measure(&cgroup, args);
    }
    let drops_in_overhead_runs = probe.kernel_stats().unwrap().ring_full - drops_before;

    let mut rates = BTreeMap::new();
    for parallel in [1, 2, 4] {
        rates.insert(
            format!("1ring_x{parallel}"),
            rate(&probe, &delivered, &cgroup, parallel),
        );
    }
    drop(probe);
    let mut probe = Probe::load(&ProbeConfig {
        ring_count: 2,
        ..config.clone()
    })
    .expect("probe with 2 rings");
    let delivered = drain(&mut probe, &rt);
    probe.set_cgroup_mode(cgroup.id, capture::ALL).unwrap();
    for parallel in [1, 2, 4] {
        rates.insert(
            format!("2rings_x{parallel}"),
            rate(&probe, &delivered, &cgroup, parallel),
        );
    }
    drop(probe);

    println!();
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "workload (ns/op)", "detached", "attached-off", "capture-all", "off/det", "all/det"
    );
    let mut workloads_json = serde_json::Map::new();
    for (name, [detached, off, all]) in &rows {
        println!(
            "{:<24} {:>12.1} {:>12.1} {:>12.1} {:>9.3} {:>9.3}",
            name,
            detached,
            off,
            all,
            off / detached,
            all / detached
        );
        workloads_json.insert(
            name.to_string(),
            json!({"detached_ns": detached, "off_ns": off, "all_ns": all,
                   "off_ratio": off / detached, "all_ratio": all / detached}),
        );
    }
    println!("ring drops during the capture-all runs: {drops_in_overhead_runs}");
    println!();
    println!("{:<14} {:>16} {:>10}", "open loops", "records/s", "drops");
    let mut max_zero_drop: f64 = 0.0;
    let mut rates_json = serde_json::Map::new();
    for (name, (per_sec, drops)) in &rates {
        println!("{name:<14} {per_sec:>16.0} {drops:>10}");
        if *drops == 0 {
            max_zero_drop = max_zero_drop.max(*per_sec);
        }
        rates_json.insert(
            name.clone(),
            json!({"records_per_s": per_sec, "drops": drops}),
        );
    }
    println!("highest record rate delivered with zero drops: {max_zero_drop:.0}/s");
    println!(
        "{}",
        json!({
            "bench": "capture",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "workloads": workloads_json,
            "drops_during_overhead_runs": drops_in_overhead_runs,
            "rates": rates_json,
            "max_zero_drop_records_per_s": max_zero_drop,
        })
    );
}
