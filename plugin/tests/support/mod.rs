//! Harness for tests that load the real programs into the running kernel (they need root):
//! a fresh cgroup v2 directory per test, a probe that captures only that cgroup, and helpers to
//! run a workload inside it and collect exactly its records.
#![allow(dead_code)]

pub mod agent;
pub mod cli;
pub mod seaweed;
pub mod stress;

use std::{
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use nri_sysflow::{
    capture::CaptureMode,
    host::cgroup::{cgroup_id, cgroup2_mount},
    probe::{HookChoice, HookSet, Probe, ProbeConfig, Record, RecordReceiver},
};
use sysflow_common::capture;

pub const WORKLOAD: &str = env!("CARGO_BIN_EXE_sysflow-workload");

/// The syscall hook set the tests load: the dispatcher, unless `NRI_SYSFLOW_KERNEL_HOOKS`
/// says `tracepoint` (`cargo xtask test` runs the kernel suites once with each). Never `auto`:
/// a silent fallback would hide a broken dispatcher.
pub fn hook_set() -> HookSet {
    match std::env::var("NRI_SYSFLOW_KERNEL_HOOKS").as_deref() {
        Ok("tracepoint") => HookSet::Tracepoint,
        _ => HookSet::Dispatcher,
    }
}

/// A probe configuration for tests: everything off by default, the hook set of `hook_set`.
pub fn probe_config() -> ProbeConfig {
    ProbeConfig {
        default_mode: CaptureMode::from_bits(capture::OFF),
        hooks: match hook_set() {
            HookSet::Dispatcher => HookChoice::Dispatcher,
            HookSet::Tracepoint => HookChoice::Tracepoint,
        },
        ..ProbeConfig::default()
    }
}

/// Loads the probe and checks it runs the hook set asked for.
pub fn load_probe(config: &ProbeConfig) -> Probe {
    require_root();
    let probe = Probe::load(config).unwrap_or_else(|e| panic!("probe load: {e}"));
    assert_eq!(probe.hook_set(), hook_set());
    probe
}

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
    /// The test's own folder around a container's cgroup, removed with it.
    parent: Option<PathBuf>,
}

impl TestCgroup {
    pub fn new(name: &str) -> TestCgroup {
        let path = fresh_cgroup(name);
        let id = cgroup_id(&path).expect("cgroup id");
        TestCgroup {
            path,
            id,
            parent: None,
        }
    }

    /// A cgroup named as containerd's systemd driver names a container's
    /// (`cri-containerd-<id>.scope`, `id` 64 hex digits), in a folder of the test's: the agent
    /// takes its processes for that container's with no runtime telling it.
    pub fn container(name: &str, id: &str) -> TestCgroup {
        let outer = fresh_cgroup(name);
        let path = outer.join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir(&path).expect("create container cgroup");
        TestCgroup {
            id: cgroup_id(&path).expect("cgroup id"),
            path,
            parent: Some(outer),
        }
    }

    /// A command whose process is moved into this cgroup before exec, by this process: the
    /// child tells its pid through one pipe and waits in poll(2) (a syscall no hook follows)
    /// until a helper thread has written the pid to `cgroup.procs` and answered through the
    /// other. Had the child moved itself, its write would end inside the cgroup and be counted
    /// there by hooks that run at syscall exit.
    pub fn command(&self, program: &str) -> Command {
        let (pid_rx, pid_tx) = cloexec_pipe();
        let (go_rx, go_tx) = cloexec_pipe();
        let procs = self.path.join("cgroup.procs");
        // Ends when the child has been moved, or when the command is dropped unspawned (its
        // pipe ends close with it).
        std::thread::spawn(move || {
            let mut pid = [0u8; 4];
            if (&pid_rx).read_exact(&mut pid).is_ok() {
                let pid = u32::from_ne_bytes(pid);
                std::fs::write(&procs, pid.to_string()).expect("move the child into the cgroup");
                let _ = (&go_tx).write_all(&[1]);
            }
        });
        let (pid_tx, go_rx) = (Arc::new(pid_tx), Arc::new(go_rx));
        let mut cmd = Command::new(program);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let pid = libc::getpid() as u32;
                let sent = libc::write(pid_tx.as_raw_fd(), pid.to_ne_bytes().as_ptr().cast(), 4);
                if sent != 4 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut wait = libc::pollfd {
                    fd: go_rx.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&mut wait, 1, 10_000) != 1 {
                    return Err(std::io::Error::other("not moved into the test cgroup"));
                }
                Ok(())
            });
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

/// A new, empty cgroup named after the test process and `name`, under the cgroup2 mount.
fn fresh_cgroup(name: &str) -> PathBuf {
    let mount = cgroup2_mount(Path::new("/proc/self/mountinfo")).expect("cgroup2 mount");
    let path = mount.join(format!("nri-sysflow-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir(&path);
    std::fs::create_dir(&path).expect("create test cgroup");
    path
}

/// (read end, write end), both closed on exec.
fn cloexec_pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two new descriptors nothing else owns.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Exited members can linger as zombies for a moment.
        for path in std::iter::once(&self.path).chain(&self.parent) {
            let removed = (0..50).any(|_| {
                std::fs::remove_dir(path).is_ok() || {
                    std::thread::sleep(Duration::from_millis(20));
                    false
                }
            });
            if !removed {
                eprintln!("could not remove test cgroup {}", path.display());
            }
        }
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
        Self::start_with(name, mode, probe_config())
    }

    pub fn start_with(name: &str, mode: u32, mut config: ProbeConfig) -> Session {
        config.default_mode = CaptureMode::from_bits(capture::OFF);
        let cgroup = TestCgroup::new(name);
        let mut probe = load_probe(&config);
        probe
            .set_cgroup_mode(cgroup.id, CaptureMode::from_bits(mode))
            .expect("set mode");
        let records = probe.records(Default::default()).expect("records");
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
