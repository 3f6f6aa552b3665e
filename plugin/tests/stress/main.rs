//! The agent on a bad day, as a user runs it (the built binary, real eBPF): a fork storm in a
//! container, a ring buffer overflowing for half a minute, and more processes than its table
//! holds. Each test asserts that nothing is lost without being counted, that the agent keeps
//! answering, and that it reads back what it wrote; it prints its figures (memory is measured
//! by `cargo xtask bench scale`, not asserted here). Needs root; about two minutes in all.

#[path = "../support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use support::{
    TestCgroup,
    agent::Agent,
    stress::{self, Sleepers, Watcher},
};
use sysflow::{Oid, ProcessEvent, Record, SysFlowReader, encoding::op, reader::ReadItem};

/// Every record of `files`, in order; any unreadable byte fails the test.
fn read_all(files: &[PathBuf]) -> Vec<Record> {
    files
        .iter()
        .flat_map(|f| {
            SysFlowReader::open(f)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
                .map(|item| match item {
                    Ok(ReadItem::Record(r)) => r,
                    other => panic!("{}: {other:?}", f.display()),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The process events of processes of `container`, in `records`.
fn events_in_container<'a>(records: &'a [Record], container: &str) -> Vec<&'a ProcessEvent> {
    let mut container_of: HashMap<Oid, Option<&str>> = HashMap::new();
    let mut events = Vec::new();
    for r in records {
        match r {
            Record::Process(p) => {
                container_of.insert(p.oid, p.container_id.as_deref());
            }
            Record::ProcessEvent(e)
                if container_of.get(&e.proc_oid).copied().flatten() == Some(container) =>
            {
                events.push(e);
            }
            _ => {}
        }
    }
    events
}

/// The path of `cgroup` under the cgroup2 mount, as the config names cgroups.
fn relative(cgroup: &TestCgroup) -> String {
    let mount = nri_sysflow::host::cgroup::cgroup2_mount(Path::new("/proc/self/mountinfo"))
        .expect("cgroup2 mount");
    cgroup
        .path
        .strip_prefix(&mount)
        .unwrap()
        .display()
        .to_string()
}

fn seconds(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Two loops fork and exec /bin/true as fast as they can for 60 s in a container's cgroup
/// (`NRI_SYSFLOW_STORM_SECS` shortens it), with the whole host captured. Every child's exit
/// is in the files, or counted as dropped; /metrics answers every quarter second within 1 s;
/// exited processes kept stay within their bound.
#[test]
fn a_fork_storm_is_captured_whole_or_counted_and_the_agent_keeps_answering() {
    let secs = seconds("NRI_SYSFLOW_STORM_SECS", 60);
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "kernel:\n  max_exited_processes: 2048\n").unwrap();
    let agent = Agent::start(&["--config", config.path().to_str().unwrap()]);
    let id = stress::container_id(1);
    let cgroup = TestCgroup::container("storm", &id);
    let watcher = Watcher::start(agent.child.id(), &agent.metrics, Duration::from_millis(250));
    let forks = stress::fork_storm(&cgroup, 2, secs);
    // The agent catches up, and its counters are copied (once a second).
    std::thread::sleep(Duration::from_secs(3));
    let metrics = stress::scrape(&agent.metrics, Duration::from_secs(5)).unwrap();
    let kernel_dropped = stress::sum(&metrics, "nri_sysflow_kernel_records_dropped_total");
    let lost = stress::sum(&metrics, "nri_sysflow_losses_total");
    let watched = watcher.finish();
    let stopped = agent.stop();
    let records = read_all(&stopped.files);
    let events = events_in_container(&records, &id);
    let exits = events.iter().filter(|e| e.op_flags == op::EXIT).count();
    // Successful ones: starting each loop, `bash` was looked for along PATH first.
    let execs = events
        .iter()
        .filter(|e| e.op_flags == op::EXEC && e.ret == 0)
        .count();
    println!(
        "fork storm, {secs} s: {forks} children ({:.0}/s); in the files: {execs} execs, {exits} \
         exits; dropped in the kernel {kernel_dropped}, lost after it {lost}; peak RSS {:.1} MiB \
         (sampled), process table at most {} entries ({} exited); slowest of {} scrapes {:?}",
        forks as f64 / secs as f64,
        watched.peak_rss_mib,
        watched.peak_processes,
        watched.peak_exited_processes,
        watched.samples,
        watched.slowest_scrape,
    );
    assert!(forks > 1_000 * secs, "the storm was no storm: {forks}");
    assert_eq!(watched.unanswered, 0, "/metrics did not answer within 1 s");
    assert!(watched.samples as u64 >= secs * 3, "{watched:?}");
    // The two loops exit too; each child execs once.
    let expected = forks as usize + 2;
    if kernel_dropped + lost == 0.0 {
        assert_eq!(exits, expected, "every exit is in the files");
        assert_eq!(execs, forks as usize + 2, "every exec (and the loops' own)");
    } else {
        assert!(
            exits <= expected && (expected - exits) as f64 <= kernel_dropped + lost,
            "{exits} exits of {expected}: more missing than counted"
        );
    }
    // Checked as the agent copies it, right after its housekeeping: never over the bound
    // (none of the exited children has a live child of its own to keep it).
    assert!(watched.peak_exited_processes <= 2048.0, "{watched:?}");
    assert!(watched.peak_exited_processes > 0.0, "{watched:?}");
}

/// A small ring, a short queue and three loops of open/close on a 2-core machine: user space
/// cannot keep up for 30 s (`NRI_SYSFLOW_OVERFLOW_SECS`). Only this cgroup is captured, so
/// once it is quiet every record the kernel wrote was read, exactly, and the rest is counted
/// as ring_full. Then capture carries on: a file written afterwards is in the output, whole.
#[test]
fn a_ring_overflowing_for_half_a_minute_counts_every_drop_and_capture_resumes() {
    let secs = seconds("NRI_SYSFLOW_OVERFLOW_SECS", 30);
    let cgroup = TestCgroup::new("overflow");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "capture:\n  default_mode: off\n  cgroups:\n    {}: all\nkernel:\n  ring_bytes: 65536\n  queue_records: 1024\n",
            relative(&cgroup)
        ),
    )
    .unwrap();
    let agent = Agent::start(&["--config", config.path().to_str().unwrap()]);
    let watcher = Watcher::start(agent.child.id(), &agent.metrics, Duration::from_millis(250));
    let loops: Vec<std::process::Child> = (0..3)
        .map(|_| {
            cgroup
                .workload(&["loop-open-for", &secs.to_string(), "/etc/hostname"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let opens: u64 = loops
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            report["ops"].as_u64().unwrap()
        })
        .sum();
    // Quiet: the queue drains and the counters are copied.
    std::thread::sleep(Duration::from_secs(3));
    let during = stress::scrape(&agent.metrics, Duration::from_secs(5)).unwrap();
    let value = |text: &str, series: &str| stress::series(text, series).unwrap_or(0.0);
    let written = value(&during, "nri_sysflow_kernel_records_total");
    let read = value(&during, "nri_sysflow_kernel_records_read_total");
    let ring_full = value(
        &during,
        "nri_sysflow_kernel_records_dropped_total{reason=\"ring_full\"}",
    );
    println!(
        "ring overflow, {secs} s: {opens} open/close pairs; the kernel wrote {written} records \
         and dropped {ring_full} (ring full); the agent read {read}; ring fill {}",
        value(&during, "nri_sysflow_ring_buffer_fill_ratio"),
    );
    assert!(ring_full > 0.0, "the ring never overflowed");
    assert_eq!(read, written, "a record the kernel wrote was not read");
    // Each pair is two records, plus each loop's start and exit: all either written or
    // dropped, and nothing else in this cgroup.
    assert!(
        written + ring_full >= (2 * opens) as f64,
        "{written} + {ring_full}"
    );

    // Capture goes on as before.
    let work = tempfile::tempdir().unwrap();
    let after = work.path().join("after-the-flood.bin");
    let status = cgroup
        .workload(&["write-file", after.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(2));
    let later = stress::scrape(&agent.metrics, Duration::from_secs(5)).unwrap();
    assert_eq!(
        value(
            &later,
            "nri_sysflow_kernel_records_dropped_total{reason=\"ring_full\"}"
        ),
        ring_full,
        "drops after the flood"
    );
    let watched = watcher.finish();
    assert_eq!(watched.unanswered, 0, "/metrics did not answer within 1 s");
    let stopped = agent.stop();
    let records = read_all(&stopped.files);
    let after_foid = records.iter().find_map(|r| match r {
        Record::File(f) if f.path == after.to_str().unwrap() => Some(f.oid),
        _ => None,
    });
    let written_after: Vec<i64> = records
        .iter()
        .filter_map(|r| match r {
            Record::FileFlow(f) if Some(f.file_oid) == after_foid => Some(f.num_w_send_bytes),
            _ => None,
        })
        .collect();
    assert_eq!(written_after, vec![300], "the file written after the flood");
}

/// 10,000 sleeping processes over 100 containers' cgroups, with the process table bounded at
/// 8,192: it fills to exactly that many, the rest are counted as evicted, and the agent keeps
/// answering while it learns them.
#[test]
fn ten_thousand_processes_in_a_hundred_containers_keep_the_process_table_at_its_bound() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "kernel:\n  max_processes: 8192\n").unwrap();
    let agent = Agent::start(&["--config", config.path().to_str().unwrap()]);
    let watcher = Watcher::start(agent.child.id(), &agent.metrics, Duration::from_millis(250));
    let containers: Vec<TestCgroup> = (0..100)
        .map(|n| TestCgroup::container(&format!("many-{n}"), &stress::container_id(100 + n)))
        .collect();
    let sleepers: Vec<Sleepers> = containers.iter().map(|c| Sleepers::start(c, 100)).collect();
    let started: usize = sleepers.iter().map(Sleepers::len).sum();
    std::thread::sleep(Duration::from_secs(3));
    let metrics = stress::scrape(&agent.metrics, Duration::from_secs(5)).unwrap();
    let value = |series: &str| stress::series(&metrics, series).unwrap_or(-1.0);
    let entries = value("nri_sysflow_table_entries{table=\"process\"}");
    let evicted = value("nri_sysflow_table_evictions_total{table=\"process\"}");
    let watched = watcher.finish();
    println!(
        "{started} sleepers in {} containers: process table {entries} entries, {evicted} \
         evicted; peak RSS {:.1} MiB (sampled); slowest of {} scrapes {:?}",
        containers.len(),
        watched.peak_rss_mib,
        watched.samples,
        watched.slowest_scrape,
    );
    assert_eq!(started, 10_000);
    // Sampled four times a second: it filled up and never went beyond (exited processes
    // leaving it make room now and then, so the last value may be a little lower).
    assert_eq!(
        watched.peak_processes, 8192.0,
        "the table filled, and no further"
    );
    assert!(entries <= 8192.0, "{entries}");
    // Every process the agent met beyond the bound pushed one out: at least the sleepers
    // beyond it (each also spawned through a helper, and the host has its own processes).
    assert!(evicted >= (10_000 - 8192) as f64, "{evicted}");
    assert_eq!(watched.unanswered, 0, "/metrics did not answer within 1 s");
    drop(sleepers);
    let stopped = agent.stop();
    assert!(!read_all(&stopped.files).is_empty());
}
