//! `cargo xtask bench capture`: what kernel capture costs the workloads it watches.
//!
//! Four syscall-heavy loops run in a fresh cgroup, each measured in the same invocation:
//! detached (no probe loaded: the baseline), and then for each syscall hook set (the
//! dispatcher, then the tracepoint set):
//!
//! * off: the loop's cgroup off and nothing else captured (the dispatcher set detaches its
//!   syscall hooks, only the sched hooks run; the tracepoint set stays attached);
//! * floor: the syscall hooks attached, but no cgroup wants the loop's syscalls (another cgroup
//!   wants only set*id/exec/clone failures): what any process on the node pays;
//! * off_busy: the loop's cgroup off while another cgroup captures everything (the usual node);
//! * all: the loop's cgroup captured, a consumer draining the rings.
//!
//! Then, in a pass of its own with the kernel's statistics on (`BPF_ENABLE_STATS`, which
//! costs two clock reads per program run), each program's run time per run while capturing
//! all (a tail-called handler counts inside the dispatcher). Then parallel open/close loops find the
//! highest record rate delivered with zero drops, with one ring and with two. Needs root.
//! Prints tables; the last line is one JSON object.

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
    capture::CaptureMode,
    host::cgroup::{cgroup_id, cgroup2_mount},
    probe::{DETACH_GRACE, HookChoice, HookSet, Probe, ProbeConfig},
};
use serde_json::json;
use sysflow_common::capture;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sysflow-workload");
/// Runs of each loop per configuration (the median is taken): the TCP loop's median
/// iteration moves by tens of percent from run to run.
const REPEATS: usize = 5;

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

type Workloads = Vec<(&'static str, Vec<String>)>;

/// Median ns/op of each workload.
fn measure_all(cgroup: &Cgroup, workloads: &Workloads) -> BTreeMap<&'static str, f64> {
    workloads
        .iter()
        .map(|(name, args)| {
            let runs = (0..REPEATS).map(|_| run_loop(cgroup, args)).collect();
            (*name, median(runs))
        })
        .collect()
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
    let mut rx = probe.records(Default::default()).expect("records");
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

/// One hook set's figures: per workload [floor, off, off_busy, all] ns/op, and the
/// per-program kernel statistics of the capture-all runs.
struct SetFigures {
    rows: BTreeMap<&'static str, [f64; 4]>,
    /// (program, ns per run, runs), busiest first.
    programs: Vec<(String, f64, u64)>,
    drops: u64,
}

fn measure_set(
    set: HookSet,
    rt: &tokio::runtime::Runtime,
    cgroup: &Cgroup,
    other: &Cgroup,
    workloads: &Workloads,
) -> SetFigures {
    let config = ProbeConfig {
        default_mode: CaptureMode::from_bits(capture::OFF),
        hooks: match set {
            HookSet::Dispatcher => HookChoice::Dispatcher,
            HookSet::Tracepoint => HookChoice::Tracepoint,
        },
        ..ProbeConfig::default()
    };
    let mut probe = Probe::load(&config).expect("probe");
    assert_eq!(probe.hook_set(), set);
    let _delivered = drain(&mut probe, rt);
    probe
        .set_cgroup_mode(cgroup.id, CaptureMode::from_bits(capture::OFF))
        .unwrap();
    // The dispatcher detaches while nothing wants syscalls; the tracepoint set stays attached
    // (re-attaching it takes seconds).
    assert_eq!(
        probe.syscall_hooks_attached(),
        set == HookSet::Tracepoint,
        "syscall hooks while nothing wants them"
    );
    let off = measure_all(cgroup, workloads);

    probe
        .set_cgroup_mode(other.id, CaptureMode::from_bits(capture::PROCESS_SYSCALLS))
        .unwrap();
    assert!(probe.syscall_hooks_attached());
    let floor = measure_all(cgroup, workloads);

    probe
        .set_cgroup_mode(other.id, CaptureMode::from_bits(capture::ALL))
        .unwrap();
    let off_busy = measure_all(cgroup, workloads);

    probe
        .set_cgroup_mode(cgroup.id, CaptureMode::from_bits(capture::ALL))
        .unwrap();
    let drops_before = probe.kernel_stats().unwrap().ring_full;
    let all = measure_all(cgroup, workloads);
    let drops = probe.kernel_stats().unwrap().ring_full - drops_before;
    // The kernel's own statistics cost two clock reads per program run: taken in a pass of
    // their own, one run of each loop, so they do not inflate the figures above.
    let stats_on = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let before: BTreeMap<String, (u64, u64)> = probe
        .program_stats()
        .into_iter()
        .map(|(n, t, c)| (n, (t, c)))
        .collect();
    for (_, args) in workloads {
        run_loop(cgroup, args);
    }
    let mut programs: Vec<(String, f64, u64)> = probe
        .program_stats()
        .into_iter()
        .filter_map(|(name, t, c)| {
            let (t0, c0) = before.get(&name).copied().unwrap_or_default();
            let runs = c.saturating_sub(c0);
            (runs > 0).then(|| (name, t.saturating_sub(t0) as f64 / runs as f64, runs))
        })
        .collect();
    drop(stats_on);
    programs.sort_by(|a, b| (b.1 * b.2 as f64).total_cmp(&(a.1 * a.2 as f64)));
    drop(probe);
    let rows = workloads
        .iter()
        .map(|(name, _)| (*name, [floor[name], off[name], off_busy[name], all[name]]))
        .collect();
    SetFigures {
        rows,
        programs,
        drops,
    }
}

fn print_set(
    set: HookSet,
    figures: &SetFigures,
    detached: &BTreeMap<&'static str, f64>,
) -> serde_json::Map<String, serde_json::Value> {
    println!();
    println!("{set} hook set (ns per op; ratios to detached)");
    println!(
        "{:<24} {:>11} {:>11} {:>11} {:>11} {:>11} {:>7} {:>7} {:>7} {:>7}",
        "workload", "detached", "off", "floor", "off_busy", "all", "off", "floor", "busy", "all"
    );
    let mut out = serde_json::Map::new();
    for (name, [floor, off, off_busy, all]) in &figures.rows {
        let d = detached[name];
        println!(
            "{:<24} {:>11.1} {:>11.1} {:>11.1} {:>11.1} {:>11.1} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            name,
            d,
            off,
            floor,
            off_busy,
            all,
            off / d,
            floor / d,
            off_busy / d,
            all / d
        );
        out.insert(
            name.to_string(),
            json!({"detached_ns": d, "floor_ns": floor, "off_ns": off, "off_busy_ns": off_busy,
                   "all_ns": all, "floor_ratio": floor / d, "off_ratio": off / d,
                   "off_busy_ratio": off_busy / d, "all_ratio": all / d}),
        );
    }
    println!("ring drops during the capture-all runs: {}", figures.drops);
    println!(
        "kernel's own statistics, one capture-all run of each loop: {:<11} {:>12} {:>12}",
        "program", "ns per run", "runs"
    );
    for (name, ns, runs) in figures.programs.iter().take(8) {
        println!("{:<70} {ns:>12.1} {runs:>12}", name);
    }
    out
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
    let other = Cgroup::new("other");
    let sink = tcp_sink();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let workloads: Workloads = vec![
        ("rw_1byte", s(&["loop-rw", "200000"])),
        ("open_close", s(&["loop-open", "/etc/hostname", "100000"])),
        ("fork_exec", s(&["loop-fork-exec", "500"])),
        (
            "tcp_connect_send_close",
            s(&["loop-tcp", &sink.to_string(), "3000"]),
        ),
    ];

    let detached_before = measure_all(&cgroup, &workloads);
    let dispatcher = measure_set(HookSet::Dispatcher, &rt, &cgroup, &other, &workloads);
    // Detaching the tracepoint set's links takes a few seconds; let the kernel settle.
    std::thread::sleep(DETACH_GRACE);
    let tracepoint = measure_set(HookSet::Tracepoint, &rt, &cgroup, &other, &workloads);
    std::thread::sleep(DETACH_GRACE);
    // The baseline is measured before and after the probes, and the mean of the two taken:
    // the machine drifts over the minutes the benchmark runs.
    let detached_after = measure_all(&cgroup, &workloads);
    let detached: BTreeMap<&'static str, f64> = detached_before
        .iter()
        .map(|(name, before)| (*name, (before + detached_after[name]) / 2.0))
        .collect();
    println!("detached baseline before / after the probes (ns per op):");
    for (name, before) in &detached_before {
        println!("  {name:<24} {before:>12.1} {:>12.1}", detached_after[name]);
    }

    let mut rates = BTreeMap::new();
    for ring_count in [1u32, 2] {
        let mut probe = Probe::load(&ProbeConfig {
            default_mode: CaptureMode::from_bits(capture::OFF),
            hooks: HookChoice::Dispatcher,
            ring_count,
            ..ProbeConfig::default()
        })
        .expect("probe");
        let delivered = drain(&mut probe, &rt);
        probe
            .set_cgroup_mode(cgroup.id, CaptureMode::from_bits(capture::ALL))
            .unwrap();
        for parallel in [1, 2, 4] {
            rates.insert(
                format!("{ring_count}ring_x{parallel}"),
                rate(&probe, &delivered, &cgroup, parallel),
            );
        }
    }

    let dispatcher_json = print_set(HookSet::Dispatcher, &dispatcher, &detached);
    let tracepoint_json = print_set(HookSet::Tracepoint, &tracepoint, &detached);
    println!();
    println!(
        "{:<14} {:>16} {:>10}",
        "open loops (dispatcher)", "records/s", "drops"
    );
    let mut max_zero_drop: f64 = 0.0;
    let mut rates_json = serde_json::Map::new();
    for (name, (per_sec, drops)) in &rates {
        println!("{name:<23} {per_sec:>16.0} {drops:>10}");
        if *drops == 0 {
            max_zero_drop = max_zero_drop.max(*per_sec);
        }
        rates_json.insert(
            name.clone(),
            json!({"records_per_s": per_sec, "drops": drops}),
        );
    }
    println!("highest record rate delivered with zero drops: {max_zero_drop:.0}/s");
    let programs = |f: &SetFigures| {
        f.programs
            .iter()
            .map(|(n, ns, runs)| json!({"program": n, "ns_per_run": ns, "runs": runs}))
            .collect::<Vec<_>>()
    };
    println!(
        "{}",
        json!({
            "bench": "capture",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "detached_before": detached_before,
            "detached_after": detached_after,
            "workloads": dispatcher_json,
            "tracepoint_workloads": tracepoint_json,
            "programs": programs(&dispatcher),
            "tracepoint_programs": programs(&tracepoint),
            "drops_during_overhead_runs": dispatcher.drops + tracepoint.drops,
            "rates": rates_json,
            "max_zero_drop_records_per_s": max_zero_drop,
        })
    );
}
