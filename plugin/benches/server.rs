//! `cargo xtask bench server`: what the agent costs a real server. PostgreSQL (Debian's
//! package; a temporary cluster on loopback) under pgbench (select-only and tpcb-like, 8
//! clients, 20 s each), three rounds, each round alternating: without the agent, with the
//! release agent capturing everything, and with the agent running but the server's cgroup
//! switched off while another cgroup is captured (the syscall hooks attached, as on a node
//! where other namespaces are captured). Prints the median transactions per second and the
//! loss against no agent; the last line is one JSON object. Needs root; `cargo xtask bench
//! server` installs PostgreSQL when it is missing.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nri_sysflow::host::cgroup::{cgroup_id, cgroup2_mount};
use serde_json::json;

const AGENT: &str = env!("CARGO_BIN_EXE_nri-sysflow");
const ROUNDS: usize = 3;
const SECONDS: u32 = 20;
const CLIENTS: u32 = 8;
const SCALE: u32 = 10;
const TESTS: [(&str, &[&str]); 2] = [("select_only", &["-S"]), ("tpcb_like", &[])];
const MODES: [&str; 3] = ["no_agent", "capturing_all", "server_off_other_captured"];

/// A cgroup of this benchmark's own.
struct Cgroup {
    path: PathBuf,
    relative: String,
}

impl Cgroup {
    fn new(mount: &Path, name: &str) -> Cgroup {
        let path = mount.join(format!("nri-sysflow-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create cgroup");
        cgroup_id(&path).expect("cgroup id");
        let relative = path.strip_prefix(mount).unwrap().display().to_string();
        Cgroup { path, relative }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The newest PostgreSQL's binaries directory.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (cargo xtask bench server installs it)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("pgbench").exists() && d.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("no PostgreSQL with pgbench")
}

/// uid and gid of the `postgres` user (the server refuses to run as root).
fn postgres_user() -> (u32, u32) {
    let name = CString::new("postgres").unwrap();
    // SAFETY: a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no postgres user");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// initdb and start a server inside `cgroup`, listening on loopback.
    fn start(bin: &Path, dir: &Path, cgroup: &Cgroup) -> Server {
        let (uid, gid) = postgres_user();
        let data = dir.join("data");
        chown_tree(dir, uid, gid);
        let status = Command::new(bin.join("initdb"))
            .args(["-D", data.to_str().unwrap(), "-U", "postgres"])
            .args(["--auth=trust", "-E", "UTF8", "--no-sync"])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let procs = cgroup.path.join("cgroup.procs");
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.args(["-D", data.to_str().unwrap(), "-p", &port.to_string()])
            .args(["-k", dir.to_str().unwrap()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "shared_buffers=256MB",
            ])
            // WAL is still written; commits do not wait for the disk (less disk noise).
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe syscalls between fork and exec. Into the cgroup as
        // root first (the backends it forks inherit it), then the postgres user (std's
        // uid()/gid() would drop root before this runs).
        unsafe {
            cmd.pre_exec(move || {
                std::fs::write(&procs, b"0")?;
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("postgres");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Accepting connections before it accepts queries: let recovery finish.
        std::thread::sleep(Duration::from_secs(1));
        Server { child, port }
    }

    fn pgbench(&self, bin: &Path, args: &[&str]) -> String {
        let out = Command::new(bin.join("pgbench"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .arg("postgres")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "pgbench {args:?}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT: fast shutdown.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// "tps = 1234.5 (without initial connection time)"
fn tps(report: &str) -> f64 {
    report
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no tps in {report}"))
}

/// The release agent with `config`, started and ready.
fn start_agent(config: &Path, out: &Path) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = Command::new(AGENT)
        .args(["run", "--no-nri", "--metrics-addr", "off", "--config"])
        .arg(config)
        .arg("--output")
        .arg(out)
        .env("RUST_LOG", "info")
        .env("NRI_SYSFLOW_LOG_FORMAT", "text")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
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
    }
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    (child, log)
}

fn stop_agent(mut child: Child, log: std::thread::JoinHandle<String>) -> String {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    log.lines()
        .find(|l| l.contains("ring drops"))
        .unwrap_or_default()
        .to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the server benchmark runs the agent: run as root"
    );
    let bin = pg_bin();
    let mount = cgroup2_mount(Path::new("/proc/self/mountinfo")).expect("cgroup2");
    let server_cgroup = Cgroup::new(&mount, "postgres");
    let other = Cgroup::new(&mount, "other");
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&bin, work.path(), &server_cgroup);
    let init = Instant::now();
    server.pgbench(&bin, &["-i", "-q", "-s", &SCALE.to_string()]);
    eprintln!(
        "pgbench database (scale {SCALE}) ready in {:.1} s",
        init.elapsed().as_secs_f64()
    );

    let configs = tempfile::tempdir().unwrap();
    let capture_all = configs.path().join("all.yaml");
    std::fs::write(&capture_all, "capture:\n  default_mode: all\n").unwrap();
    let server_off = configs.path().join("off.yaml");
    std::fs::write(
        &server_off,
        format!(
            "capture:\n  default_mode: off\n  cgroups:\n    {}: off\n    {}: all\n",
            server_cgroup.relative, other.relative
        ),
    )
    .unwrap();

    let mut results: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut summaries = Vec::new();
    for round in 0..ROUNDS {
        for mode in MODES {
            let out = tempfile::tempdir().unwrap();
            let agent = match mode {
                "capturing_all" => Some(start_agent(&capture_all, out.path())),
                "server_off_other_captured" => Some(start_agent(&server_off, out.path())),
                _ => None,
            };
            for (test, flags) in TESTS {
                let mut args = vec!["-c", "8", "-j", "2", "-T"];
                let seconds = SECONDS.to_string();
                args.push(&seconds);
                args.extend_from_slice(flags);
                let report = server.pgbench(&bin, &args);
                let t = tps(&report);
                eprintln!("round {round} {mode:<26} {test:<12} {t:>10.1} tps");
                results.entry((test, mode)).or_default().push(t);
            }
            if let Some((child, log)) = agent {
                summaries.push(format!("{mode}: {}", stop_agent(child, log)));
            }
        }
    }

    println!();
    println!(
        "PostgreSQL {} on loopback, pgbench {CLIENTS} clients x {SECONDS} s, scale {SCALE}; median of {ROUNDS} rounds (tps)",
        bin.parent()
            .and_then(|p| p.file_name())
            .unwrap()
            .to_string_lossy()
    );
    println!(
        "{:<12} {:>12} {:>16} {:>8} {:>16} {:>8}",
        "test", "no agent", "capturing all", "loss", "server off*", "loss"
    );
    let mut tests_json = serde_json::Map::new();
    for (test, _) in TESTS {
        let m = |mode| median(results[&(test, mode)].clone());
        let (base, all, off) = (m(MODES[0]), m(MODES[1]), m(MODES[2]));
        let loss = |t: f64| (1.0 - t / base) * 100.0;
        println!(
            "{test:<12} {base:>12.1} {all:>16.1} {:>7.2}% {off:>16.1} {:>7.2}%",
            loss(all),
            loss(off)
        );
        tests_json.insert(
            test.to_string(),
            json!({"no_agent_tps": base, "capturing_all_tps": all, "server_off_tps": off,
                   "capturing_all_loss_pct": loss(all), "server_off_loss_pct": loss(off),
                   "runs": {"no_agent": results[&(test, MODES[0])],
                            "capturing_all": results[&(test, MODES[1])],
                            "server_off": results[&(test, MODES[2])]}}),
        );
    }
    println!("* the server's cgroup off while another cgroup is captured (syscall hooks attached)");
    for s in &summaries {
        println!("agent {s}");
    }
    println!(
        "{}",
        json!({
            "bench": "server",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "clients": CLIENTS, "seconds": SECONDS, "scale": SCALE, "rounds": ROUNDS,
            "tests": tests_json,
        })
    );
}
