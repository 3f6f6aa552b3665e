//! `cargo xtask bench <which>`: builds optimised and runs one benchmark. Each prints its figures
//! side by side with a baseline measured in the same run, and ends with one JSON line.

use std::process::Command;

use crate::cargo;

/// The agent benchmark counts the workload's syscalls with strace.
fn ensure_strace() -> anyhow::Result<()> {
    let present = Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    crate::run(Command::new("apt-get").arg("update"))?;
    crate::run(Command::new("apt-get").args(["install", "-y", "strace"]))
}

/// The server benchmark runs Debian's PostgreSQL (server and pgbench).
fn ensure_postgresql() -> anyhow::Result<()> {
    let present = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .any(|d| d.path().join("bin/pgbench").exists())
        })
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    crate::run(Command::new("apt-get").arg("update"))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// Kernel capture overhead per operation (detached / attached but off / capturing all),
    /// the highest record rate without drops, and one ring vs several.
    Capture,
    /// SysFlow write/read throughput and bytes per record, beside fastavro on the same records.
    Sysflow,
    /// The whole agent under a heavy mixed workload, beside the workload without it.
    Agent,
    /// Pod start-up on a real containerd with and without the NRI plugin, and the plugin's
    /// handler latency.
    Nri,
    /// PostgreSQL under pgbench without the agent, with it capturing everything, and with the
    /// server's cgroup switched off while another cgroup is captured.
    Server,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Capture => cargo(&["bench", "-p", "nri-sysflow", "--bench", "capture"]),
        Which::Sysflow => cargo(&["bench", "-p", "sysflow", "--bench", "format"]),
        Which::Agent => {
            ensure_strace()?;
            cargo(&["bench", "-p", "nri-sysflow", "--bench", "agent"])
        }
        Which::Server => {
            ensure_postgresql()?;
            cargo(&["bench", "-p", "nri-sysflow", "--bench", "server"])
        }
        Which::Nri => {
            cargo(&[
                "build",
                "--release",
                "-p",
                "nri-sysflow",
                "--bin",
                "nri-sysflow",
            ])?;
            let agent = crate::workspace_root()?.join("target/release/nri-sysflow");
            crate::run(
                Command::new("cargo")
                    .arg(format!("+{}", crate::setup::USER_TOOLCHAIN))
                    .args(["bench", "-p", "nri-sysflow-e2e", "--bench", "nri"])
                    .env("NRI_SYSFLOW_BIN", agent),
            )
        }
    }
}
