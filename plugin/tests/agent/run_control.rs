//! Starting and stopping the agent, and a bad day: start errors, a full disk, a second
//! signal, no root.

use super::*;

#[test]
fn start_errors_are_one_clear_line_with_a_failing_exit_code() {
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "output:\n  rotat_secs: 3\n").unwrap();
    let err = start_error(&["--config", bad.path().to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:2:3", bad.path().display())) && err.contains("rotat_secs"),
        "{err}"
    );

    // The metrics port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let err = start_error(&[
        "--no-nri",
        "--output",
        dir.path().to_str().unwrap(),
        "--metrics-addr",
        &addr,
    ]);
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")) && err.contains("in use"),
        "{err}"
    );
    let err = start_error(&["--metrics-addr", "localhost"]);
    assert!(
        err.contains("--metrics-addr \"localhost\" is not an address"),
        "{err}"
    );

    // Rules that do not compile: the position and what was expected, said once.
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "- rule: r\n  desc: d\n  condition: exists sf.file.path\n",
    )
    .unwrap();
    let err = start_error(&[
        "--no-nri",
        "--output",
        dir.path().to_str().unwrap(),
        "--rules",
        rules.path().to_str().unwrap(),
    ]);
    assert_eq!(
        err.trim_end(),
        format!(
            "nri-sysflow: detection rules: {}:3:14: expected a condition ('not', '(', a macro name or an operand), found 'exists'",
            rules.path().display()
        )
    );

    let err = start_error(&["--output", "/proc/nope"]);
    assert!(
        err.starts_with("nri-sysflow: output directory /proc/nope is not writable"),
        "{err}"
    );
}

/// A size-limited tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "nri-sysflow-test",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 << 10];
    while f.write_all(&chunk).is_ok() {}
    // What still fits in part of a chunk.
    while f.write_all(&[0u8; 512]).is_ok() {}
}

#[test]
fn a_full_disk_is_survived_counted_and_every_file_stays_whole() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    std::fs::create_dir(&output).unwrap();
    let _tmpfs = Tmpfs::mount(&output, "512k");
    let config = root.path().join("agent.yaml");
    // Blocks go out every second and files rotate every two: both happen while the disk is full.
    std::fs::write(&config, "output:\n  flush_secs: 1\n  rotate_secs: 2\n").unwrap();
    let agent = Agent::start_writing_to(Some(&output), &["--config", config.to_str().unwrap()]);
    let cgroup = TestCgroup::new("agent-full");
    let work = tempfile::tempdir().unwrap();
    let write = |name: &str| {
        let path = work.path().join(name);
        let status = cgroup
            .workload(&["write-file", path.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        path
    };

    let filler = output.join("filler");
    fill(&filler);
    for i in 0..20 {
        write(&format!("while-full-{i}.bin"));
    }
    std::thread::sleep(Duration::from_secs(4));
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = write("after-space-returned.bin");
    std::thread::sleep(Duration::from_secs(2));
    let lost_metric = agent.metric(r#"nri_sysflow_losses_total{what="sysflow_records_lost"}"#);
    let stopped = agent.stop();

    // Running all along; the failure said once, the recovery once, with what was lost.
    assert_eq!(
        stopped.log.matches("SysFlow output failing").count(),
        1,
        "{}",
        stopped.log
    );
    let lost: u64 = stopped
        .log
        .lines()
        .find(|l| l.contains("SysFlow output recovered"))
        .and_then(|l| {
            l.split("lost=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{}", stopped.log));
    assert!(lost > 0, "{}", stopped.log);
    // The same count in the metric, and the loss logged as an internal event: at once, then
    // at most once per ten seconds (the disk was full for about six).
    assert_eq!(lost_metric, Some(lost as f64));
    let event_lines = stopped
        .log
        .lines()
        .filter(|l| l.contains("what=\"sysflow_records_lost\""))
        .count();
    assert!((1..=2).contains(&event_lines), "{}", stopped.log);
    // And the exit summary counts the same records (nothing was lost after the recovery).
    assert!(
        stopped.log.contains(&format!(
            " SysFlow records written, {lost} lost to output errors, "
        )),
        "{}",
        stopped.log
    );
    // Every file whole: ours reads each to its end, sysprint reads them all, nothing refers
    // to an entity its file lacks, no .partial is left (Agent::stop checks the names).
    assert!(!stopped.files.is_empty());
    assert_files_stand_alone(&stopped.files);
    let ours = ours_json(&stopped.files);
    assert_eq!(ours, sysprint_json(&stopped.files));
    // Written after space returned: there, with its process.
    let flows: Vec<&Json> = ours
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == after.to_str().unwrap())
        .collect();
    assert_eq!(flows.len(), 1, "{flows:#?}");
    assert_eq!(flows[0]["flow"]["wbytes"], 300);
    assert_eq!(flows[0]["proc"]["exe"], WORKLOAD);
}

#[test]
fn a_second_signal_exits_at_once_and_leaves_readable_files() {
    let mut agent = Agent::start(&[]);
    // Some activity, so the file has blocks beyond the header.
    let cgroup = TestCgroup::new("agent-kill");
    let status = cgroup
        .workload(&["loop-open", "/etc/hostname", "2000"])
        .status()
        .unwrap();
    assert!(status.success());
    let pid = agent.child.id() as i32;
    // Signals do not queue: space them so the second is a delivery of its own. The graceful
    // stop takes longer than this (it drains, writes flows, then detaches for seconds).
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(50));
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = agent.child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    let dir = agent.dir.path().to_owned();
    // Whatever name the file has (.partial if the rename did not happen), it reads cleanly.
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut n = 0;
    for item in SysFlowReader::open(&files[0]).unwrap() {
        item.unwrap();
        n += 1;
    }
    assert!(n >= 1);
    // The next start completes the name of a file left as .partial.
    let recovered = sysflow::writer::recover_partials(&dir).unwrap();
    let names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        names
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "sf")),
        "{names:?} {recovered:?}"
    );
}

#[test]
fn not_root_is_refused_with_one_line() {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(AGENT)
        .args(["run", "--output"])
        .arg(dir.path())
        .env("NRI_SYSFLOW_LOG_FORMAT", "text")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "nri-sysflow: must run as root: loading eBPF programs needs CAP_BPF and CAP_PERFMON\n"
    );
}

/// GET `path` from the agent's metrics port: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

#[test]
fn as_a_pod_it_answers_liveness_and_readiness_and_takes_its_node_name_from_the_downward_api() {
    let agent = Agent::start_with(
        None,
        &["--no-nri", "--rotate", "1"],
        &[("NODE_NAME", "node-7")],
    );
    assert_eq!(http_get(&agent.metrics, "/healthz"), (200, "ok\n".into()));
    // Standalone (no runtime socket) is a decided metadata source: ready within a tick or two.
    let start = std::time::Instant::now();
    let mut ready = http_get(&agent.metrics, "/readyz");
    while ready.0 != 200 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        ready = http_get(&agent.metrics, "/readyz");
    }
    assert_eq!(ready, (200, "ready\n".into()));
    assert_eq!(http_get(&agent.metrics, "/nothing-here").0, 404);
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = agent.stop();
    let names: Vec<String> = stopped
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("node-7-")),
        "{names:?}"
    );
}

#[test]
fn a_missing_host_mount_is_one_line_and_the_log_is_json_lines_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "host:\n  proc: /nonexistent/proc\n").unwrap();
    let err = start_error(&["--no-nri", "--config", config.to_str().unwrap()]);
    assert_eq!(
        err,
        "nri-sysflow: host.proc /nonexistent/proc is not the host's /proc (no /nonexistent/proc/1/cgroup): mount it there (hostPID, or hostPath /proc)\n"
    );
    std::fs::write(&config, "host:\n  cgroup: /tmp\n").unwrap();
    let err = start_error(&["--no-nri", "--config", config.to_str().unwrap()]);
    assert_eq!(
        err,
        "nri-sysflow: host.cgroup /tmp is not a cgroup2 filesystem (no cgroup.controllers): mount the host's /sys/fs/cgroup there\n"
    );

    // stderr is a pipe here: without --log-format the log is JSON lines.
    let out = Command::new(AGENT)
        .args([
            "run",
            "--no-nri",
            "--metrics-addr",
            "off",
            "--duration",
            "1",
            "--output",
        ])
        .arg(dir.path().join("out"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8(out.stderr).unwrap();
    let capturing = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|j| j["fields"]["message"] == "capturing")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(capturing["level"], "INFO");
    assert!(
        ["dispatcher", "tracepoint"].contains(&capturing["fields"]["hooks"].as_str().unwrap()),
        "{capturing}"
    );
}

#[test]
fn secrets_in_command_lines_are_redacted_and_counted_and_the_output_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    // An output folder others could read: the agent narrows it.
    let parent = tempfile::tempdir().unwrap();
    let output = parent.path().join("out");
    std::fs::create_dir(&output).unwrap();
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start_writing_to(Some(&output), &[]);
    let cgroup = TestCgroup::new("redact");
    let status = cgroup
        .command("/bin/true")
        .args([
            "--password=hunter2",
            "--user",
            "bob",
            "https://alice:s3cret@db.example/x",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // Health metrics are copied once a second.
    let series =
        |pattern: &str| format!("nri_sysflow_args_redacted_total{{pattern=\"{pattern}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.metric(&series("url_password")) != Some(1.0) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        [
            "flag",
            "assignment",
            "url_password",
            "client_flag",
            "auth_header"
        ]
        .map(|p| agent.metric(&series(p))),
        [Some(1.0), Some(0.0), Some(1.0), Some(0.0), Some(0.0)]
    );
    let stopped = agent.stop();

    let mut args_of_true = Vec::new();
    for file in &stopped.files {
        for record in sysflow::SysFlowReader::open(file).unwrap() {
            if let Ok(sysflow::reader::ReadItem::Record(sysflow::Record::Process(p))) = record {
                assert!(
                    !p.exe_args.contains("hunter2") && !p.exe_args.contains("s3cret"),
                    "a secret was recorded: {}",
                    p.exe_args
                );
                if p.exe.ends_with("/true") && p.exe_args.starts_with("--password") {
                    args_of_true.push(p.exe_args);
                }
            }
        }
    }
    assert!(
        args_of_true
            .iter()
            .all(|a| a == "--password=<redacted> --user bob https://alice:<redacted>@db.example/x"),
        "{args_of_true:?}"
    );
    assert!(!args_of_true.is_empty(), "no Process record of /bin/true");
    // Files 0600 in a 0700 folder.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&output), 0o700);
    assert!(!stopped.files.is_empty());
    for file in std::fs::read_dir(&output).unwrap() {
        let path = file.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn killed_while_rotating_every_second_the_next_start_leaves_every_file_whole() {
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let config = root.path().join("agent.yaml");
    std::fs::write(&config, "output:\n  flush_secs: 1\n  rotate_secs: 1\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let mut agent = Agent::start_writing_to(Some(&output), &["--config", &config]);
    // Load the whole time, so blocks and rotations are under way when the kill comes.
    let cgroup = TestCgroup::new("agent-rotating-kill");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(3300) {
        let status = cgroup
            .workload(&["loop-open", "/etc/hostname", "2000"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    drop(agent);
    let names = |suffix: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&output)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        v.sort();
        v
    };
    let reads_whole = |file: &Path| {
        let mut n = 0;
        for item in SysFlowReader::open(file).unwrap() {
            item.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            n += 1;
        }
        n
    };
    // Under a final name, only whole files.
    let completed = names(".sf");
    assert!(completed.len() >= 2, "{completed:?}");
    for f in &completed {
        assert!(reads_whole(f) >= 1);
    }
    // The file being written when killed (none if the kill fell between a rename and the
    // next file's start).
    assert!(names(".sf.partial").len() <= 1);

    // The next start recovers it; every file reads whole and none is left partial.
    let agent = Agent::start_writing_to(Some(&output), &["--config", &config]);
    let stopped = agent.stop();
    assert!(names(".sf.partial").is_empty(), "{:?}", stopped.files);
    for f in names(".sf") {
        reads_whole(&f);
    }
    assert!(names(".sf").len() > completed.len());
}
