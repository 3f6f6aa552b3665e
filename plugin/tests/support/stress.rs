//! Loads for the stress tests and `cargo xtask bench scale`: a fork storm, thousands of
//! sleeping processes spread over container cgroups, and a watcher that samples the agent
//! (its resident memory, its tables, how long /metrics takes to answer) while they run.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::TestCgroup;

/// A 64-hex-digit container id, unique to this test process and `n`.
pub fn container_id(n: u32) -> String {
    format!("{:08x}{n:056x}", std::process::id())
}

/// One shell loop running /bin/true as fast as it can for `$1` seconds, then printing how
/// many it ran: every iteration is a fork, an exec and an exit.
const FORK_LOOP: &str = "end=$((SECONDS+$1)); n=0; while [ $SECONDS -lt $end ]; do /bin/true; n=$((n+1)); done; echo $n";

/// `loops` fork loops in `cgroup` for `secs` seconds; the children they started in all.
pub fn fork_storm(cgroup: &TestCgroup, loops: usize, secs: u64) -> u64 {
    let children: Vec<Child> = (0..loops)
        .map(|_| {
            cgroup
                .command("bash")
                .args(["-c", FORK_LOOP, "storm", &secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a fork loop")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("fork loop");
            assert!(out.status.success(), "fork loop: {:?}", out.status);
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("fork loop printed {text:?}"))
        })
        .sum()
}

/// Processes sleeping in a cgroup (each `/bin/sleep`, moved in before its exec), killed and
/// reaped on drop.
pub struct Sleepers(Vec<Child>);

impl Sleepers {
    pub fn start(cgroup: &TestCgroup, count: usize) -> Sleepers {
        Sleepers(
            (0..count)
                .map(|_| {
                    cgroup
                        .command("sleep")
                        .arg("3600")
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("start a sleeper")
                })
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// A /proc size field's value (`   1234 kB`) in MiB; 0 when it does not parse.
fn kb_as_mib(field: &str) -> f64 {
    field
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The agent's resident memory now (VmRSS), MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map_or(0.0, kb_as_mib)
}

/// Where the agent's resident memory is, MiB, from /proc/<pid>/smaps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Proportional set size: each page once (what the agent's cgroup is charged for).
    pub pss: f64,
    /// The BPF maps mapped into the agent: the ring buffers (their data pages once, and a page
    /// of each position).
    pub bpf_maps: f64,
    /// The agent's own binary (code and read-only data).
    pub binary: f64,
    /// Anonymous memory: the heap, thread stacks.
    pub anonymous: f64,
}

pub fn memory(pid: u32) -> Memory {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let exe = exe.to_string_lossy();
    let mut m = Memory::default();
    let mut mapping = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, dev, inode, then the name if any.
            mapping = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let v = kb_as_mib(v);
            if mapping.starts_with("anon_inode:bpf-map") {
                m.bpf_maps += v;
            } else if mapping == exe {
                m.binary += v;
            }
        } else if let Some(v) = line.strip_prefix("Pss:") {
            m.pss += kb_as_mib(v);
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            m.anonymous += kb_as_mib(v);
        }
    }
    m
}

/// The agent's /metrics text, or why it did not answer within `limit`.
pub fn scrape(addr: &str, limit: Duration) -> std::io::Result<String> {
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// The value of one series (whole name and labels) in a /metrics text.
pub fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Entries of one of the agent's tables (`process`, `exited_process`, ...) in a /metrics text.
pub fn table_entries(text: &str, table: &str) -> f64 {
    series(
        text,
        &format!("nri_sysflow_table_entries{{table=\"{table}\"}}"),
    )
    .unwrap_or(0.0)
}

/// The sum of every series of a metric in a /metrics text.
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the watcher saw.
#[derive(Debug, Default)]
pub struct Watched {
    pub samples: usize,
    pub peak_rss_mib: f64,
    /// Scrapes not answered within the limit (or refused).
    pub unanswered: usize,
    pub slowest_scrape: Duration,
    pub peak_processes: f64,
    pub peak_exited_processes: f64,
}

/// Samples the agent every `every` until finished: its RSS, and a scrape of /metrics that
/// must answer within a second.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Watched>,
}

pub const SCRAPE_LIMIT: Duration = Duration::from_secs(1);

impl Watcher {
    pub fn start(pid: u32, metrics: &str, every: Duration) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let metrics = metrics.to_string();
        let thread = std::thread::spawn(move || {
            let mut w = Watched::default();
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                w.samples += 1;
                w.peak_rss_mib = w.peak_rss_mib.max(rss_mib(pid));
                match scrape(&metrics, SCRAPE_LIMIT) {
                    Ok(text) => {
                        w.slowest_scrape = w.slowest_scrape.max(started.elapsed());
                        w.peak_processes = w.peak_processes.max(table_entries(&text, "process"));
                        w.peak_exited_processes = w
                            .peak_exited_processes
                            .max(table_entries(&text, "exited_process"));
                    }
                    Err(_) => w.unanswered += 1,
                }
                std::thread::sleep(every.saturating_sub(started.elapsed()));
            }
            w
        });
        Watcher { stop, thread }
    }

    pub fn finish(self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("watcher")
    }
}
