//! The agent binary as a user runs it, for tests: started with arguments, its log drained,
//! its /metrics read, stopped with SIGINT. One at a time per test binary (each captures the
//! whole host).

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::require_root;

pub const AGENT: &str = env!("CARGO_BIN_EXE_nri-sysflow");

/// Each agent captures the whole host: two at once would see each other's load.
static ONE_AGENT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running agent; stopped with SIGINT when the test says so (or killed on drop).
pub struct Agent {
    pub _turn: std::sync::MutexGuard<'static, ()>,
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// Where it writes (`dir`, or a directory the test owns).
    pub output: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    pub reader: Option<std::thread::JoinHandle<()>>,
    /// What it printed to stdout (alerts with `--alerts -`), read to the end at exit.
    pub stdout: Option<std::thread::JoinHandle<String>>,
    /// Where it serves /metrics.
    pub metrics: String,
}

/// What the agent printed when it stopped.
pub struct Stopped {
    pub _dir: tempfile::TempDir,
    pub files: Vec<PathBuf>,
    pub ring_drops: u64,
    /// The agent's log (warnings explain a missing record).
    pub log: String,
    pub stdout: String,
}

impl Agent {
    pub fn start(args: &[&str]) -> Agent {
        Self::start_writing_to(None, args)
    }

    /// Starts the agent writing into `output` (a directory of its own when None).
    pub fn start_writing_to(output: Option<&Path>, args: &[&str]) -> Agent {
        Self::start_with(output, args, &[])
    }

    /// Like `start_writing_to`, with these environment variables set for the agent.
    pub fn start_with(output: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Agent {
        Self::start_as(AGENT, output, args, env)
    }

    /// Like `start_with`, running the agent binary at `program` (a benchmark compares builds).
    pub fn start_as(
        program: &str,
        output: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        require_root();
        let turn = ONE_AGENT_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let output = output.unwrap_or(dir.path()).to_path_buf();
        let mut child = Command::new(program)
            .arg("run")
            .arg("--output")
            .arg(&output)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or("info".into()),
            )
            // The tests read the log as text (a pipe would get JSON lines).
            .env("NRI_SYSFLOW_LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready once it logs that it is capturing.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let started = Instant::now();
        let mut line = String::new();
        let mut metrics = None;
        // What it said while starting is kept with the rest of its log.
        let mut early = String::new();
        loop {
            early.push_str(&line);
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "agent exited early:\n{early}"
            );
            if line.contains("serving /metrics") {
                metrics = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .map(str::to_string);
            }
            if line.contains("capturing") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "agent did not start"
            );
        }
        // Keep draining its log so it never blocks on a full pipe.
        early.push_str(&line);
        let log = std::sync::Arc::new(std::sync::Mutex::new(early));
        let sink = log.clone();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        // Line by line, so a test can wait for what the agent says.
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Agent {
            _turn: turn,
            child,
            dir,
            output,
            log,
            reader: Some(reader),
            stdout: Some(stdout),
            metrics: metrics.expect("the agent says where it serves /metrics"),
        }
    }

    /// The value of one series in the agent's /metrics, by its whole name and labels.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = super::stress::scrape(&self.metrics, Duration::from_secs(5)).unwrap();
        super::stress::series(&text, series)
    }

    /// SIGINT, then wait for a clean exit; returns the completed files in write order.
    pub fn stop(mut self) -> Stopped {
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
        // Files only: the exporter keeps uploaded files in a folder of its own.
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.output)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        // Every file completed: SysFlow files, and alert files (left for the caller).
        assert!(
            files
                .iter()
                .all(|f| f.extension().is_some_and(|e| e == "sf" || e == "jsonl")),
            "{files:?}"
        );
        files.retain(|f| f.extension().is_some_and(|e| e == "sf"));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Stopped {
            _dir: dir,
            files,
            ring_drops,
            log,
            stdout: self
                .stdout
                .take()
                .map(|t| t.join().unwrap())
                .unwrap_or_default(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
