//! Harness for tests that load the real programs into the running kernel (they need root):
//! a fresh cgroup v2 directory per test, a probe that captures only that cgroup, and helpers to
//! run a workload inside it and collect exactly its records.
#![allow(dead_code)]

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use nri_sysflow::{
    cgroup::{cgroup_id, cgroup2_mount},
    probe::{Probe, ProbeConfig, Record, RecordReceiver},
};
use sysflow_common::capture;

pub const WORKLOAD: &str = env!("CARGO_BIN_EXE_sysflow-workload");

/// Tests load real eBPF and need root; say so clearly instead of failing obscurely.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "kernel capture tests load eBPF programs and must run as root"
    );
}

/// A cgroup v2 directory that exists for one test.
pub struct TestCgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl TestCgroup {
    pub fn new(name: &str) -> TestCgroup {
        let mount = cgroup2_mount(Path::new("/proc/self/mountinfo")).expect("cgroup2 mount");
        let path = mount.join(format!("nri-sysflow-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create test cgroup");
        let id = cgroup_id(&path).expect("cgroup id");
        TestCgroup { path, id }
    }

    /// A command whose process moves itself into this cgroup before exec.
    pub fn command(&self, program: &str) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new(program);
        // SAFETY: only async-signal-safe work (open/write/close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn workload(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(WORKLOAD);
        cmd.args(args);
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Exited members can linger as zombies for a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove test cgroup {}", self.path.display());
    }
}

/// A loaded probe capturing one test cgroup with `mode` (everything else is off).
pub struct Session {
    pub probe: Probe,
    pub records: RecordReceiver,
    pub cgroup: TestCgroup,
}

impl Session {
    pub fn start(name: &str, mode: u32) -> Session {
        Self::start_with(name, mode, ProbeConfig::default())
    }

    pub fn start_with(name: &str, mode: u32, mut config: ProbeConfig) -> Session {
        require_root();
        config.default_mode = capture::OFF;
        let cgroup = TestCgroup::new(name);
        let mut probe = Probe::load(&config).unwrap_or_else(|e| panic!("probe load: {e}"));
        probe.set_cgroup_mode(cgroup.id, mode).expect("set mode");
        let records = probe.records(config.channel_capacity).expect("records");
        Session {
            probe,
            records,
            cgroup,
        }
    }

    /// Runs a command in the cgroup to completion and returns (pid, status).
    pub fn run(&self, cmd: &mut Command) -> (u32, ExitStatus) {
        let mut child = cmd.spawn().expect("spawn workload");
        let pid = child.id();
        let status = child.wait().expect("wait workload");
        (pid, status)
    }

    /// Records of the test cgroup, gathered until none arrived for `quiet`.
    pub async fn collect(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let id = self.cgroup.id;
        while let Ok(Some(record)) =
            tokio::time::timeout(Duration::from_millis(400), self.records.recv()).await
        {
            if record.common().cgroup_id == id {
                out.push(record);
            }
        }
        out
    }
}
