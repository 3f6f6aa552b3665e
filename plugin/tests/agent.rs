//! `nri-sysflow run` end to end, as a user runs it: the built binary captures the whole host
//! while known workloads run in their own cgroup; it is stopped with SIGINT and its files are
//! checked with our reader and with the reference `sysprint`. Needs root.

mod support;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value as Json;
use support::{TestCgroup, WORKLOAD, require_root};
use sysflow::{Record, SysFlowReader, encoding::op, flat::Flattener, reader::ReadItem};

const AGENT: &str = env!("CARGO_BIN_EXE_nri-sysflow");

/// Each agent captures the whole host: two at once would see each other's load.
static ONE_AGENT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running agent; stopped with SIGINT when the test says so (or killed on drop).
struct Agent {
    _turn: std::sync::MutexGuard<'static, ()>,
    child: Child,
    dir: tempfile::TempDir,
    /// Where it writes (`dir`, or a directory the test owns).
    output: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What the agent printed when it stopped.
struct Stopped {
    _dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    ring_drops: u64,
    /// The agent's log (warnings explain a missing record).
    log: String,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        Self::start_writing_to(None, args)
    }

    /// Starts the agent writing into `output` (a directory of its own when None).
    fn start_writing_to(output: Option<&Path>, args: &[&str]) -> Agent {
        require_root();
        let turn = ONE_AGENT_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let output = output.unwrap_or(dir.path()).to_path_buf();
        let mut child = Command::new(AGENT)
            .arg("run")
            .arg("--output")
            .arg(&output)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or("info".into()),
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready once it logs that it is capturing.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let started = Instant::now();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "agent exited early"
            );
            if line.contains("capturing") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "agent did not start"
            );
        }
        // Keep draining its log so it never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        Agent {
            _turn: turn,
            child,
            dir,
            output,
            log,
            reader: Some(reader),
        }
    }

    /// SIGINT, then wait for a clean exit; returns the completed files in write order.
    fn stop(mut self) -> Stopped {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "agent exited with {status}");
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        // "nri-sysflow: N kernel records, M SysFlow records written, L lost to output errors,
        // D ring drops, peak RSS R MiB, last file F"
        let summary = log
            .lines()
            .find(|l| l.contains("ring drops"))
            .unwrap_or_else(|| panic!("{log}"));
        let ring_drops = summary
            .split(", ")
            .find_map(|p| p.strip_suffix(" ring drops"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{summary}"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.output)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files
                .iter()
                .all(|f| f.extension().is_some_and(|e| e == "sf")),
            "{files:?}"
        );
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Stopped {
            _dir: dir,
            files,
            ring_drops,
            log,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_records(file: &Path) -> Vec<Record> {
    SysFlowReader::open(file)
        .unwrap()
        .map(|i| match i.unwrap() {
            ReadItem::Record(r) => r,
            ReadItem::Unknown { name } => panic!("{name}"),
        })
        .collect()
}

/// Every event and flow of `files`, joined and rendered as sysprint does.
fn ours_json(files: &[PathBuf]) -> Vec<Json> {
    files
        .iter()
        .flat_map(|f| {
            let mut flat = Flattener::default();
            read_records(f)
                .into_iter()
                .filter_map(move |r| flat.push(r))
                .map(|r| r.to_sysprint_json())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn sysprint_json(files: &[PathBuf]) -> Vec<Json> {
    let venv =
        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv");
    let out = Command::new(venv.join("bin/sysprint"))
        .args(["-o", "json"])
        .args(files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Error"), "{stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_files_stand_alone(files: &[PathBuf]) {
    for f in files {
        let records = read_records(f);
        assert!(matches!(records.first(), Some(Record::Header(_))));
        assert_eq!(
            sysflow::check::dangling_references(&records),
            Vec::<String>::new(),
            "{}",
            f.display()
        );
    }
}

/// Records of `pid` and of its direct children.
fn of_tree(records: &[Json], pid: u32) -> Vec<&Json> {
    records
        .iter()
        .filter(|r| r["proc"]["pid"] == pid || r["pproc"]["pid"] == pid)
        .collect()
}

#[test]
fn a_known_workload_yields_exactly_its_records() {
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::new("agent-e2e");
    let work = tempfile::tempdir().unwrap();
    let d = work.path().to_str().unwrap().to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1000];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&[b's'; 1000]).unwrap();
    });
    let script = format!(
        "/bin/true alpha beta\n\
         {WORKLOAD} write-file {d}/data.bin --count 4 --size 1024\n\
         {WORKLOAD} rename {d}/data.bin {d}/data.renamed\n\
         mkdir {d}/sub\n\
         rmdir {d}/sub\n\
         {WORKLOAD} tcp-client 127.0.0.1:{port} --send 1000 --recv 1000\n\
         {WORKLOAD} close-range {d}/ranged.bin\n\
         exit 3\n"
    );
    let status = cgroup
        .command("/bin/sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    server.join().unwrap();
    let stopped = agent.stop();
    assert_eq!(stopped.ring_drops, 0);
    let files = stopped.files;
    assert_files_stand_alone(&files);
    let ours = ours_json(&files);
    let theirs = sysprint_json(&files);
    assert_eq!(ours, theirs, "our reader and sysprint disagree");

    // Find the shell: the process that exec'd /bin/true's parent, whose command line is ours.
    let sh = ours
        .iter()
        .find(|r| r["type"] == "PE" && r["proc"]["exe"] == "/bin/true" && r["opflags"] == "EXEC")
        .expect("exec of /bin/true")["pproc"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let tree = of_tree(&ours, sh);
    let count = |pred: &dyn Fn(&Json) -> bool| tree.iter().filter(|r| pred(r)).count();

    // exec of /bin/true with its arguments, cloned from the shell.
    let true_exec: Vec<_> = tree
        .iter()
        .filter(|r| r["proc"]["exe"] == "/bin/true" && r["opflags"] == "EXEC")
        .collect();
    assert_eq!(true_exec.len(), 1);
    assert_eq!(
        (
            true_exec[0]["proc"]["args"].as_str(),
            true_exec[0]["ret"].as_i64()
        ),
        (Some("alpha beta"), Some(0))
    );
    let true_pid = true_exec[0]["proc"]["pid"].as_u64().unwrap();
    assert_eq!(
        count(&|r| r["opflags"] == "CLONE" && r["proc"]["pid"] == sh && r["ret"] == true_pid),
        1
    );
    let child_clone: Vec<_> = tree
        .iter()
        .filter(|r| r["opflags"] == "CLONE" && r["proc"]["pid"] == true_pid)
        .collect();
    assert_eq!(child_clone.len(), 1);
    assert_eq!(child_clone[0]["ret"], 0);
    assert_eq!(child_clone[0]["pproc"]["pid"], sh);

    // 4096 bytes in 4 writes to the new file: one flow, opened, written, closed.
    let data = format!("{d}/data.bin");
    let flows: Vec<_> = tree
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == data.as_str())
        .collect();
    assert_eq!(flows.len(), 1, "{flows:#?}");
    let f = flows[0];
    assert_eq!(
        f["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND | op::CLOSE) as i64)
    );
    assert_eq!(
        (f["flow"]["wbytes"].as_i64(), f["flow"]["wops"].as_i64()),
        (Some(4096), Some(4))
    );
    assert_eq!(
        (f["flow"]["rbytes"].as_i64(), f["flow"]["rops"].as_i64()),
        (Some(0), Some(0))
    );
    // O_WRONLY|O_CREAT|O_TRUNC in Falco's numbering.
    assert_eq!(f["file"]["openflags"].as_i64(), Some(2 | 4 | 256));

    // rename, mkdir, rmdir.
    let fe: Vec<(String, String, String, i64)> = tree
        .iter()
        .filter(|r| r["type"] == "FE" && r["file"]["path"].as_str().unwrap_or("").starts_with(&d))
        .map(|r| {
            (
                r["opflags"].as_str().unwrap().to_owned(),
                r["file"]["path"].as_str().unwrap().to_owned(),
                r["file"]["newpath"].as_str().unwrap().to_owned(),
                r["ret"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fe,
        vec![
            (
                "RENAME".into(),
                data.clone(),
                format!("{d}/data.renamed"),
                0
            ),
            ("MKDIR".into(), format!("{d}/sub"), String::new(), 0),
            ("RMDIR".into(), format!("{d}/sub"), String::new(), 0),
        ]
    );

    // One TCP connection to the server, 1000 bytes each way.
    let nf: Vec<_> = tree.iter().filter(|r| r["type"] == "NF").collect();
    assert_eq!(nf.len(), 1, "{nf:#?}");
    let n = nf[0];
    assert_eq!(
        (n["net"]["sip"].as_str(), n["net"]["dip"].as_str()),
        (Some("127.0.0.1"), Some("127.0.0.1"))
    );
    assert_eq!(
        (n["net"]["dport"].as_u64(), n["net"]["proto"].as_i64()),
        (Some(port as u64), Some(6))
    );
    assert!(n["net"]["sport"].as_u64().unwrap() > 0);
    assert_eq!(
        (n["flow"]["rbytes"].as_i64(), n["flow"]["wbytes"].as_i64()),
        (Some(1000), Some(1000))
    );
    assert_eq!(
        n["opflags_bitmap"].as_i64(),
        Some((op::CONNECT | op::READ_RECV | op::WRITE_SEND | op::CLOSE) as i64)
    );

    // A descriptor closed by close_range(2) ends its flow as closed, with its bytes.
    let ranged: Vec<_> = tree
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == format!("{d}/ranged.bin").as_str())
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:#?}");
    assert_eq!(
        ranged[0]["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND | op::CLOSE) as i64)
    );
    assert_eq!(ranged[0]["flow"]["wbytes"], 100);

    // The shell exits with 3.
    let exits: Vec<_> = tree
        .iter()
        .filter(|r| r["opflags"] == "EXIT" && r["proc"]["pid"] == sh)
        .collect();
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0]["ret"], 3);
}

#[test]
fn a_long_lived_descriptor_is_reported_every_flow_interval() {
    let agent = Agent::start(&["--flow-interval", "2"]);
    let cgroup = TestCgroup::new("agent-interval");
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("held.bin");
    let mut child = cgroup
        .workload(&["hold-file", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Past at least one flow interval before the second write.
    std::thread::sleep(Duration::from_millis(4500));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    let stopped = agent.stop();
    let files = std::mem::take(&mut stopped.files.clone());
    assert_files_stand_alone(&files);
    let flows: Vec<Json> = ours_json(&files)
        .into_iter()
        .filter(|r| {
            r["type"] == "FF"
                && r["proc"]["pid"] == pid
                && r["file"]["path"] == path.to_str().unwrap()
        })
        .collect();
    let related: Vec<String> = ours_json(&files)
        .iter()
        .filter(|r| r.to_string().contains("held.bin") && r["type"] != "PE")
        .map(|r| {
            format!(
                "{} {} pid={} fd={} w={} ts={}",
                r["type"],
                r["opflags"],
                r["proc"]["pid"],
                r["file"]["fd"],
                r["flow"]["wbytes"],
                r["ts_uts"]
            )
        })
        .collect();
    assert_eq!(
        flows.len(),
        2,
        "{}\n{related:#?}\n{:?}",
        stopped.log,
        flows
            .iter()
            .map(|f| (
                f["opflags"].clone(),
                f["flow"]["wbytes"].clone(),
                f["ts_uts"].clone(),
                f["endts_uts"].clone()
            ))
            .collect::<Vec<_>>()
    );
    let sum = |k: &str| {
        flows
            .iter()
            .map(|f| f["flow"][k].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((sum("wbytes"), sum("wops")), (300, 2));
    assert_eq!(flows[0]["flow"]["wbytes"], 100);
    assert_eq!(
        flows[0]["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND) as i64)
    );
    // The second part ends at exit: the descriptor was never closed.
    assert_eq!(
        flows[1]["opflags_bitmap"].as_i64(),
        Some((op::WRITE_SEND | op::TRUNCATE) as i64)
    );
    assert!(flows[1]["ts_uts"].as_i64() >= flows[0]["endts_uts"].as_i64());
}

#[test]
fn rotation_under_load_keeps_every_reference_resolvable() {
    let agent = Agent::start(&["--rotate", "1", "--flow-interval", "1"]);
    let cgroup = TestCgroup::new("agent-rotate");
    // A descriptor held open across every rotation: its flows are reported in several files.
    let work = tempfile::tempdir().unwrap();
    let held = work.path().join("held.bin");
    let mut holder = cgroup
        .workload(&["hold-file", held.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Load spread over several rotation periods.
    for _ in 0..4 {
        let mut loops: Vec<Child> = (0..2)
            .map(|_| {
                cgroup
                    .workload(&["loop-open", "/etc/hostname", "10000"])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in &mut loops {
            assert!(c.wait().unwrap().success());
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(holder.wait().unwrap().success());
    let stopped = agent.stop();
    assert_eq!(
        stopped.ring_drops, 0,
        "the agent could not keep up: the count below would be off"
    );
    let files = stopped.files;
    assert!(files.len() >= 3, "{files:?}");
    assert_files_stand_alone(&files);
    // Entities referred to after a rotation were re-emitted (REUP) in the new file.
    let reup: usize = files
        .iter()
        .skip(1)
        .map(|f| {
            read_records(f)
                .iter()
                .filter(
                    |r| matches!(r, Record::Process(p) if p.state == sysflow::SfObjectState::Reup),
                )
                .count()
        })
        .sum();
    assert!(reup > 0);
    let hostname_flows = ours_json(&files)
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == "/etc/hostname")
        .count();
    // Every open/close of the loops is one flow, none lost across the rotations.
    assert_eq!(hostname_flows, 80_000);
}

/// Runs `nri-sysflow run ARGS`, expects exit code 1 and one line on stderr; returns it.
fn start_error(args: &[&str]) -> String {
    let out = Command::new(AGENT).arg("run").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

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
fn a_cgroup_switched_off_in_the_config_yields_nothing() {
    let off = TestCgroup::new("agent-cfg-off");
    let on = TestCgroup::new("agent-cfg-on");
    let mount = nri_sysflow::cgroup::cgroup2_mount(Path::new("/proc/self/mountinfo")).unwrap();
    let relative = off.path.strip_prefix(&mount).unwrap().display().to_string();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("capture:\n  cgroups:\n    {relative}: off\n"),
    )
    .unwrap();
    let agent = Agent::start(&["--config", config.path().to_str().unwrap()]);
    let work = tempfile::tempdir().unwrap();
    let (off_file, on_file) = (work.path().join("off.bin"), work.path().join("on.bin"));
    let off_pid = {
        let mut child = off
            .workload(&["write-file", off_file.to_str().unwrap()])
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success());
        child.id()
    };
    let status = on
        .workload(&["write-file", on_file.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = agent.stop();
    let records = ours_json(&stopped.files);
    // Its fork happened in the (captured) test process; nothing after it moved.
    let of_pid: Vec<&Json> = records
        .iter()
        .filter(|r| r["proc"]["pid"] == off_pid && r["opflags"] != "CLONE")
        .collect();
    assert_eq!(
        of_pid,
        Vec::<&Json>::new(),
        "records of the switched-off cgroup"
    );
    let written: Vec<i64> = records
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == on_file.to_str().unwrap())
        .map(|r| r["flow"]["wbytes"].as_i64().unwrap())
        .collect();
    assert_eq!(written, vec![300], "the other cgroup is captured");

    // A cgroup that does not exist is a start-up error naming it.
    std::fs::write(
        config.path(),
        "capture:\n  cgroups:\n    nri-sysflow-no-such-cgroup: all\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = start_error(&[
        "--config",
        config.path().to_str().unwrap(),
        "--no-nri",
        "--output",
        dir.path().to_str().unwrap(),
        "--metrics-addr",
        "off",
    ]);
    assert!(
        err.starts_with("nri-sysflow: capture.cgroups: nri-sysflow-no-such-cgroup:"),
        "{err}"
    );
}

#[test]
fn process_flows_fold_threads_and_shutdown_truncates_open_flows() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "flows:\n  process_flows: true\n").unwrap();
    let agent = Agent::start(&["--config", config.path().to_str().unwrap()]);
    let cgroup = TestCgroup::new("agent-pf");
    let status = cgroup.workload(&["fork-thread"]).status().unwrap();
    assert!(status.success());
    // Still writing through an open descriptor when the agent stops.
    let work = tempfile::tempdir().unwrap();
    let held = work.path().join("open-at-stop.bin");
    let mut holder = cgroup
        .workload(&["hold-file", held.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let holder_pid = holder.id();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let stopped = agent.stop();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_files_stand_alone(&stopped.files);
    let records = ours_json(&stopped.files);
    let forker = records
        .iter()
        .find(|r| r["type"] == "PE" && r["opflags"] == "EXEC" && r["proc"]["args"] == "fork-thread")
        .expect("exec of the workload")["proc"]["pid"]
        .clone();
    let pf: Vec<&Json> = records
        .iter()
        .filter(|r| r["type"] == "PF" && r["proc"]["pid"] == forker)
        .collect();
    assert_eq!(pf.len(), 1, "{pf:#?}");
    assert_eq!(
        (
            pf[0]["pf"]["nthreads"].as_i64(),
            pf[0]["pf"]["nexits"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(pf[0]["opflags"], "CLONEEXIT");
    // The thread clone is folded; the process clone (fork) is still an event (the one with
    // the child's pid; the other CLONE under this pid is the workload's own birth, ret 0).
    assert_eq!(
        records
            .iter()
            .filter(|r| r["type"] == "PE"
                && r["opflags"] == "CLONE"
                && r["proc"]["pid"] == forker
                && r["ret"] != 0)
            .count(),
        1
    );
    let open: Vec<&Json> = records
        .iter()
        .filter(|r| {
            r["type"] == "FF"
                && r["proc"]["pid"] == holder_pid
                && r["file"]["path"] == held.to_str().unwrap()
        })
        .collect();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(
        open[0]["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND | op::TRUNCATE) as i64)
    );
    assert_eq!(open[0]["flow"]["wbytes"], 100);
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
