//! The process table: every process the agent knows, seeded from /proc at start and kept current
//! from kernel records. A process is identified by (tgid, start time): a kernel record whose
//! start time does not match the entry for its tgid belongs to a new process that reused the pid.

use foldhash::HashMap;

use sysflow::{Foid, Oid, Process, SfObjectState};

use crate::probe::records::Socket;

use super::users::UserNames;

/// Clock tick of /proc start times (USER_HZ is 100 on every Linux ABI): a process seeded from
/// /proc has its start time only to this precision.
const TICK_NS: u64 = 10_000_000;

/// Environment variable names whose values are secrets.
const SECRET_MARKERS: [&str; 9] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "CERT",
];

/// Replaces the value of variables whose names look secret.
pub fn redact_env(vars: impl IntoIterator<Item = String>) -> Vec<String> {
    vars.into_iter()
        .map(|var| match var.split_once('=') {
            Some((name, _))
                if SECRET_MARKERS
                    .iter()
                    .any(|m| name.to_ascii_uppercase().contains(m)) =>
            {
                format!("{name}=<redacted>")
            }
            _ => var,
        })
        .collect()
}

/// What a descriptor refers to.
#[derive(Clone, Debug, PartialEq)]
pub enum FdKind {
    /// A file, directory, pipe or unix socket (a FileFlow target).
    File {
        path: String,
        foid: Foid,
        restype: i32,
        /// Falco-numbered open flags; 0 when the open was not seen.
        open_flags: i32,
    },
    /// An IP socket (a NetworkFlow), with its endpoints once connect/accept told them.
    Socket(Option<Socket>),
}

/// A flow in progress on one descriptor: what is reported when it is exported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Wall-clock ns of the flow's start (open/connect/accept, or the last export).
    pub ts: i64,
    pub op_flags: i32,
    pub tid: i64,
    pub read_ops: i64,
    pub write_ops: i64,
    pub read_bytes: i64,
    pub write_bytes: i64,
}

impl FlowState {
    /// A flow starting at `ts` (wall-clock ns) with these flags, no I/O yet.
    pub fn starting(ts: i64, op_flags: i32, tid: i64) -> Self {
        FlowState {
            ts,
            op_flags,
            tid,
            ..FlowState::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FdEntry {
    pub kind: FdKind,
    pub flow: FlowState,
}

/// Thread activity of a process, for ProcessFlow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadCounts {
    pub first_ts: i64,
    pub cloned: i64,
    pub exited: i64,
    pub clone_errors: i64,
}

#[derive(Clone, Debug)]
pub struct ProcEntry {
    pub tgid: u32,
    pub oid: Oid,
    /// CLOCK_BOOTTIME ns of the start, to tell this process from a later one with its pid.
    pub start_boot_ns: u64,
    /// Seeded from /proc: the start time is only tick-precise.
    pub coarse_start: bool,
    pub poid: Option<Oid>,
    pub parent_tgid: u32,
    pub exe: String,
    pub args: String,
    pub uid: u32,
    pub gid: u32,
    pub tty: bool,
    pub entry: bool,
    pub cwd: String,
    pub env: Vec<String>,
    pub cgroup_id: u64,
    /// Shared with every process of the container (cloned per record for the metrics).
    pub container_id: Option<std::sync::Arc<str>>,
    /// Wall-clock ns of creation or last change (Process.ts).
    pub ts: i64,
    pub state: SfObjectState,
    pub fds: HashMap<i32, FdEntry>,
    pub threads: ThreadCounts,
    /// Set when the whole thread group exited: the entry stays for a grace period so late
    /// references (children's parent OID) still resolve.
    pub exited_at_ns: Option<i64>,
}

impl ProcEntry {
    /// The SysFlow Process entity of this entry.
    pub fn to_sysflow(&self, names: &UserNames) -> Process {
        Process {
            state: self.state,
            oid: self.oid,
            poid: self.poid,
            ts: self.ts,
            exe: self.exe.clone(),
            exe_args: self.args.clone(),
            uid: self.uid as i32,
            user_name: names.user(self.uid),
            gid: self.gid as i32,
            group_name: names.group(self.gid),
            tty: self.tty,
            container_id: self.container_id.as_deref().map(str::to_owned),
            entry: self.entry,
            cwd: self.cwd.clone(),
            env: self.env.clone(),
        }
    }

    /// Whether a kernel record with this start time belongs to this entry.
    pub fn same_process(&self, start_boot_ns: u64) -> bool {
        if self.coarse_start {
            self.start_boot_ns.abs_diff(start_boot_ns) <= TICK_NS
        } else {
            self.start_boot_ns == start_boot_ns
        }
    }
}

/// Parsed /proc/<pid>/stat fields we use.
struct Stat {
    ppid: u32,
    tty_nr: i64,
    start_ticks: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        tty_nr: f.get(4)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

fn status_ids(text: &str, key: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `vpid == 1` (the last NSpid is the pid inside the innermost pid namespace).
fn is_namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .is_some_and(|v| v == "1")
}

/// Everything /proc says about a process, for seeding.
pub struct ProcSnapshot {
    pub tgid: u32,
    pub parent_tgid: u32,
    pub start_boot_ns: u64,
    pub exe: String,
    pub args: String,
    pub uid: u32,
    pub gid: u32,
    pub tty: bool,
    pub entry: bool,
    pub cwd: String,
    pub env: Vec<String>,
    /// (fd, link target, close-on-exec) of every open descriptor.
    pub fds: Vec<(i32, String, bool)>,
}

/// Reads /proc/<pid>; None when the process is gone (or is a kernel thread).
pub fn snapshot(pid: u32, with_env: bool) -> Option<ProcSnapshot> {
    let dir = format!("/proc/{pid}");
    let stat = parse_stat(&std::fs::read_to_string(format!("{dir}/stat")).ok()?)?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let cmdline = std::fs::read(format!("{dir}/cmdline")).ok()?;
    if cmdline.is_empty() {
        return None; // a kernel thread
    }
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let exe = std::fs::read_link(format!("{dir}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| argv.first().cloned().unwrap_or_default());
    let env = if with_env {
        let raw = std::fs::read(format!("{dir}/environ")).unwrap_or_default();
        redact_env(
            raw.split(|&b| b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        )
    } else {
        Vec::new()
    };
    let fds = std::fs::read_dir(format!("{dir}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((
                        fd,
                        target.to_string_lossy().into_owned(),
                        fd_cloexec(pid, fd),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ProcSnapshot {
        tgid: pid,
        parent_tgid: stat.ppid,
        start_boot_ns: stat.start_ticks * TICK_NS,
        exe,
        args: argv.get(1..).map(|a| a.join(" ")).unwrap_or_default(),
        uid: status_ids(&status, "Uid:").unwrap_or(0),
        gid: status_ids(&status, "Gid:").unwrap_or(0),
        tty: stat.tty_nr != 0,
        entry: is_namespace_init(&status),
        cwd: std::fs::read_link(format!("{dir}/cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        env,
        fds,
    })
}

/// Whether a descriptor is close-on-exec: `flags:` in /proc/<pid>/fdinfo/<fd> is octal.
fn fd_cloexec(pid: u32, fd: i32) -> bool {
    const O_CLOEXEC: u32 = 0o2000000;
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .is_some_and(|flags| flags & O_CLOEXEC != 0)
}

/// Every process currently in /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The table, bounded: beyond `capacity`, exited processes are evicted first, oldest first.
pub struct ProcessTable {
    entries: HashMap<u32, ProcEntry>,
    capacity: usize,
    pub evictions: u64,
}

impl ProcessTable {
    pub fn new(capacity: usize) -> Self {
        ProcessTable {
            entries: HashMap::default(),
            capacity,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, tgid: u32) -> Option<&ProcEntry> {
        self.entries.get(&tgid)
    }

    pub fn get_mut(&mut self, tgid: u32) -> Option<&mut ProcEntry> {
        self.entries.get_mut(&tgid)
    }

    pub fn values(&self) -> impl Iterator<Item = &ProcEntry> {
        self.entries.values()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ProcEntry> {
        self.entries.values_mut()
    }

    /// Inserts (replacing an older process with the same pid). Returns the replaced entry.
    pub fn insert(&mut self, entry: ProcEntry) -> Option<ProcEntry> {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&entry.tgid) {
            self.evict_one();
        }
        self.entries.insert(entry.tgid, entry)
    }

    pub fn remove(&mut self, tgid: u32) -> Option<ProcEntry> {
        self.entries.remove(&tgid)
    }

    /// Evicts the process that exited longest ago; with none exited, the oldest one.
    fn evict_one(&mut self) {
        let victim = self
            .entries
            .values()
            .min_by_key(|e| (e.exited_at_ns.is_none(), e.exited_at_ns.unwrap_or(e.ts)))
            .map(|e| e.tgid);
        if let Some(tgid) = victim {
            self.entries.remove(&tgid);
            self.evictions += 1;
        }
    }

    /// Exited processes whose grace period is over and that no live process has as parent.
    pub fn expired(&self, now_ns: i64, grace_ns: i64) -> Vec<u32> {
        let live_parents: std::collections::HashSet<u32> = self
            .entries
            .values()
            .filter(|e| e.exited_at_ns.is_none())
            .map(|e| e.parent_tgid)
            .collect();
        self.entries
            .values()
            .filter(|e| {
                e.exited_at_ns.is_some_and(|t| now_ns - t >= grace_ns)
                    && !live_parents.contains(&e.tgid)
            })
            .map(|e| e.tgid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let text = "4242 (my (odd) name) S 1 4242 4242 34816 4242 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!((s.ppid, s.tty_nr, s.start_ticks), (1, 34816, 123456));
    }

    #[test]
    fn secrets_are_redacted() {
        let env = redact_env([
            "PATH=/bin".into(),
            "GITHUB_TOKEN=abc".into(),
            "db_password=x".into(),
            "EMPTY".into(),
        ]);
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "GITHUB_TOKEN=<redacted>",
                "db_password=<redacted>",
                "EMPTY"
            ]
        );
    }

    #[test]
    fn this_process_snapshots_with_its_own_exe_and_fds() {
        let me = snapshot(std::process::id(), false).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap().to_string_lossy());
        assert!(me.fds.iter().any(|(fd, _, _)| *fd == 0));
        assert!(me.start_boot_ns > 0);
    }

    #[test]
    fn a_full_table_evicts_the_longest_exited_first() {
        let mut t = ProcessTable::new(2);
        let mk = |tgid, exited| ProcEntry {
            tgid,
            oid: Oid {
                create_ts: tgid as i64,
                hpid: tgid as i64,
            },
            start_boot_ns: 0,
            coarse_start: false,
            poid: None,
            parent_tgid: 0,
            exe: String::new(),
            args: String::new(),
            uid: 0,
            gid: 0,
            tty: false,
            entry: false,
            cwd: String::new(),
            env: vec![],
            cgroup_id: 0,
            container_id: None,
            ts: 0,
            state: SfObjectState::Created,
            fds: HashMap::default(),
            threads: ThreadCounts::default(),
            exited_at_ns: exited,
        };
        t.insert(mk(1, None));
        t.insert(mk(2, Some(5)));
        t.insert(mk(3, None));
        assert!(t.get(2).is_none() && t.get(1).is_some() && t.get(3).is_some());
        assert_eq!(t.evictions, 1);
    }
}
