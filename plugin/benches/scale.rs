//! `cargo xtask bench scale`: the agent's resident memory as the node gets busy, beside the
//! same agent idle, measured in the same run. Needs root.
//!
//! 1. Idle: the agent capturing the whole host, after it settled (the baseline).
//! 2. Containers: 100 cgroups named as containerd names a container's, one sleeping process in
//!    each; then 99 more in each, 10,000 in all. RSS per container and per process, and where
//!    the RSS is (BPF maps, the binary, the heap) beside the proportional size (PSS).
//! 3. Fork storm, with a fresh agent (and its idle RSS): two shell loops running /bin/true as
//!    fast as they can in one container's cgroup for 60 s (`NRI_SYSFLOW_BENCH_STORM_SECS`):
//!    peak RSS sampled every 250 ms, the process table's peak (and its exited entries),
//!    records dropped, the slowest /metrics.
//!
//! The agent is the release build (`NRI_SYSFLOW_BENCH_AGENT` names another binary, e.g. an
//! earlier commit's, to compare). The last line is one JSON object.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use support::{
    TestCgroup,
    agent::Agent,
    stress::{self, Sleepers, Watcher},
};

/// RSS once it has stopped moving: the largest of a few samples a second apart, after `wait`.
fn settled_rss(pid: u32, wait: Duration) -> f64 {
    std::thread::sleep(wait);
    (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            stress::rss_mib(pid)
        })
        .fold(0.0, f64::max)
}

/// The peak RSS (VmHWM) the agent reported in its summary line at exit, MiB.
fn peak_rss(stopped: support::agent::Stopped) -> f64 {
    stopped
        .log
        .lines()
        .find_map(|l| l.split("peak RSS ").nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn table(metrics: &str, name: &str) -> f64 {
    let text = stress::scrape(metrics, Duration::from_secs(5)).unwrap_or_default();
    stress::table_entries(&text, name)
}

fn main() {
    let storm_secs: u64 = std::env::var("NRI_SYSFLOW_BENCH_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let agent_bin = std::env::var("NRI_SYSFLOW_BENCH_AGENT")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_nri-sysflow").to_string());
    let agent = Agent::start_as(&agent_bin, None, &[], &[]);
    let pid = agent.child.id();

    let idle = settled_rss(pid, Duration::from_secs(2));
    let processes_idle = table(&agent.metrics, "process");
    let idle_parts = stress::memory(pid);
    println!(
        "idle agent: {idle:.1} MiB (BPF maps {:.1}, the binary {:.1}, anonymous {:.1}; PSS \
         {:.1}), {processes_idle} processes known",
        idle_parts.bpf_maps, idle_parts.binary, idle_parts.anonymous, idle_parts.pss
    );

    let containers: Vec<TestCgroup> = (0..100)
        .map(|n| TestCgroup::container(&format!("scale-{n}"), &stress::container_id(n)))
        .collect();
    let mut sleepers: Vec<Sleepers> = containers.iter().map(|c| Sleepers::start(c, 1)).collect();
    let with_containers = settled_rss(pid, Duration::from_secs(2));
    let per_container_kib = (with_containers - idle) * 1024.0 / 100.0;
    println!(
        "100 containers, one process each: {with_containers:.1} MiB ({per_container_kib:.1} KiB \
         per container with its process)"
    );
    sleepers.extend(containers.iter().map(|c| Sleepers::start(c, 99)));
    let with_processes = settled_rss(pid, Duration::from_secs(2));
    let processes_many = table(&agent.metrics, "process");
    let files_many = table(&agent.metrics, "file");
    let per_process_kib = (with_processes - with_containers) * 1024.0 / 9_900.0;
    let parts = stress::memory(pid);
    println!(
        "10,000 processes in 100 containers: {with_processes:.1} MiB ({per_process_kib:.2} KiB \
         per process; {processes_many} processes and {files_many} files in the tables)"
    );
    println!(
        "  where it is: BPF maps (the ring) {:.1} MiB, the binary {:.1}, anonymous (heap) {:.1}; \
         proportional (PSS, each page once) {:.1} MiB",
        parts.bpf_maps, parts.binary, parts.anonymous, parts.pss
    );
    drop(sleepers);
    drop(containers);
    let many_hwm = peak_rss(agent.stop());
    println!("agent's own peak RSS (VmHWM) so far: {many_hwm:.1} MiB");

    // The storm with an agent of its own: a heap grown by the phase before would hide its peak.
    let agent = Agent::start_as(&agent_bin, None, &[], &[]);
    let pid = agent.child.id();
    let storm_idle = settled_rss(pid, Duration::from_secs(2));
    let cgroup = TestCgroup::container("scale-storm", &stress::container_id(1000));
    let watcher = Watcher::start(pid, &agent.metrics, Duration::from_millis(250));
    let forks = stress::fork_storm(&cgroup, 2, storm_secs);
    std::thread::sleep(Duration::from_secs(3));
    let watched = watcher.finish();
    let metrics = stress::scrape(&agent.metrics, Duration::from_secs(5)).unwrap_or_default();
    let dropped = stress::sum(&metrics, "nri_sysflow_kernel_records_dropped_total")
        + stress::sum(&metrics, "nri_sysflow_losses_total");
    println!(
        "fork storm, {storm_secs} s, 2 loops: {forks} children ({:.0}/s); peak RSS {:.1} MiB \
         (idle before: {storm_idle:.1}); process table at most {} ({} exited); {dropped} \
         records dropped; slowest of {} scrapes {:?} ({} unanswered within 1 s)",
        forks as f64 / storm_secs as f64,
        watched.peak_rss_mib,
        watched.peak_processes,
        watched.peak_exited_processes,
        watched.samples,
        watched.slowest_scrape,
        watched.unanswered,
    );
    let storm_hwm = peak_rss(agent.stop());
    println!("agent's own peak RSS (VmHWM) through the storm: {storm_hwm:.1} MiB");
    println!(
        "{}",
        json!({
            "idle_rss_mib": idle,
            "idle_pss_mib": idle_parts.pss,
            "containers_rss_mib": with_containers,
            "rss_per_container_kib": per_container_kib,
            "processes_rss_mib": with_processes,
            "rss_per_process_kib": per_process_kib,
            "processes_in_table": processes_many,
            "files_in_table": files_many,
            "processes_pss_mib": parts.pss,
            "processes_bpf_maps_mib": parts.bpf_maps,
            "processes_binary_mib": parts.binary,
            "processes_anonymous_mib": parts.anonymous,
            "storm_secs": storm_secs,
            "storm_children": forks,
            "storm_peak_rss_mib": watched.peak_rss_mib,
            "storm_peak_processes": watched.peak_processes,
            "storm_peak_exited_processes": watched.peak_exited_processes,
            "storm_dropped": dropped,
            "storm_slowest_scrape_ms": watched.slowest_scrape.as_secs_f64() * 1e3,
            "storm_unanswered_scrapes": watched.unanswered,
            "storm_idle_rss_mib": storm_idle,
            "many_peak_rss_mib": many_hwm,
            "storm_peak_hwm_mib": storm_hwm,
        })
    );
}
