//! The agent under test: the built `nri-sysflow` binary, run as the DaemonSet would run it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{wait_for, workspace_root};

/// How the agent finds the runtime.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub nri_socket: Option<PathBuf>,
    pub containerd_socket: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    /// Detection rules (`--rules`).
    pub rules: Vec<PathBuf>,
    pub flow_interval_secs: Option<u64>,
    /// Wait for NRI's Synchronize before returning from start.
    pub wait_for_nri: bool,
}

pub struct Agent {
    child: Option<Child>,
    pub out_dir: PathBuf,
    pub log: PathBuf,
    /// Where it serves /metrics (a free loopback port it picked).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The agent binary: `NRI_SYSFLOW_BIN`, or the workspace's debug build.
/// The syscall hook set the agents of this run use: `NRI_SYSFLOW_KERNEL_HOOKS` when set (the
/// suite runs once with each set), else the dispatcher. Never `auto`: a silent fallback would
/// hide a broken dispatcher.
pub fn hook_set() -> &'static str {
    match std::env::var("NRI_SYSFLOW_KERNEL_HOOKS").as_deref() {
        Ok("tracepoint") => "tracepoint",
        _ => "dispatcher",
    }
}

pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("NRI_SYSFLOW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/nri-sysflow"));
    if !path.exists() {
        bail!(
            "{} does not exist: build it first (cargo build -p nri-sysflow --bin nri-sysflow)",
            path.display()
        );
    }
    Ok(path)
}

impl Agent {
    pub fn start(out_dir: &Path, log: &Path, opts: &AgentOptions) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(out_dir)?;
        let mut cmd = Command::new(binary()?);
        // The harness reads the log as text.
        cmd.env("NRI_SYSFLOW_LOG_FORMAT", "text");
        cmd.arg("run").arg("--output").arg(out_dir).args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--hooks",
            hook_set(),
        ]);
        match (&opts.nri_socket, &opts.containerd_socket) {
            (None, None) => {
                cmd.arg("--no-nri");
            }
            (nri, containerd) => {
                // A socket that never exists disables that source.
                cmd.arg("--nri-socket").arg(
                    nri.clone()
                        .unwrap_or_else(|| "/nonexistent/nri.sock".into()),
                );
                cmd.arg("--containerd-socket").arg(
                    containerd
                        .clone()
                        .unwrap_or_else(|| "/nonexistent/containerd.sock".into()),
                );
            }
        }
        if let Some(p) = &opts.policy {
            cmd.arg("--policy").arg(p);
        }
        for rules in &opts.rules {
            cmd.arg("--rules").arg(rules);
        }
        if let Some(s) = opts.flow_interval_secs {
            cmd.arg("--flow-interval").arg(s.to_string());
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting nri-sysflow")?;
        let mut agent = Agent {
            child: Some(child),
            out_dir: out_dir.into(),
            log: log.into(),
            metrics_addr: None,
        };
        agent.wait_log("capturing", Duration::from_secs(120))?;
        let hooks = format!("hooks={}", hook_set());
        if !agent.log_text().contains(&hooks) {
            bail!("the agent does not run {hooks}:\n{}", agent.log_text());
        }
        agent.metrics_addr = agent
            .log_text()
            .lines()
            .filter(|l| l.contains("serving /metrics"))
            .filter_map(|l| l.split("addr=").nth(1))
            .filter_map(|a| a.split_whitespace().next()?.parse().ok())
            .next_back();
        if opts.wait_for_nri {
            agent.wait_log("NRI: synchronized", Duration::from_secs(30))?;
        }
        Ok(agent)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `needle` in the agent's log (counting from the log's start).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let found = wait_for(timeout, || {
            if self.log_text().contains(needle) {
                return Some(true);
            }
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) => Some(false),
                _ => None,
            }
        });
        match found {
            Some(true) => Ok(()),
            Some(false) => bail!(
                "the agent exited before logging {needle:?}:\n{}",
                self.log_text()
            ),
            None => bail!(
                "no {needle:?} in the agent's log within {timeout:?}:\n{}",
                self.log_text()
            ),
        }
    }

    /// The agent's /metrics, as Prometheus text.
    pub fn metrics_text(&self) -> anyhow::Result<String> {
        use std::io::{Read as _, Write as _};
        let addr = self.metrics_addr.context("the agent serves no /metrics")?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }

    /// How often `needle` appears in the log.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// SIGTERM; waits for a clean exit and returns the log.
    pub fn stop(mut self) -> anyhow::Result<String> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_for(Duration::from_secs(90), || child.try_wait().ok().flatten());
        let log = self.log_text();
        match status {
            Some(s) if s.success() => Ok(log),
            Some(s) => bail!("the agent exited with {s}:\n{log}"),
            None => {
                let _ = child.kill();
                bail!("the agent did not stop within 90 s:\n{log}")
            }
        }
    }

    /// SIGKILL, as an OOM kill or a node problem would.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
