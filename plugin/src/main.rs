//! The `nri-sysflow` command.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use nri_sysflow::probe::{Probe, ProbeConfig};

#[derive(Parser)]
#[command(
    name = "nri-sysflow",
    version,
    about = "Container telemetry agent writing SysFlow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the kernel records the probe captures, one JSON object per line (for debugging the
    /// capture itself; `run` writes SysFlow).
    Trace {
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Only records of this cgroup v2 id.
        #[arg(long)]
        cgroup_id: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Trace {
            duration,
            cgroup_id,
        } => trace(duration, cgroup_id).await,
    }
}

async fn trace(duration: Option<u64>, cgroup_id: Option<u64>) -> anyhow::Result<()> {
    let mut probe = Probe::load(&ProbeConfig::default()).context("cannot start the probe")?;
    let mut records = probe.records(65536)?;
    let deadline = tokio::time::sleep(Duration::from_secs(duration.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            record = records.recv() => {
                let Some(record) = record else { break };
                if cgroup_id.is_some_and(|id| id != record.common().cgroup_id) {
                    continue;
                }
                println!("{}", serde_json::to_string(&record)?);
            }
        }
    }
    eprintln!("{}", serde_json::to_string(&probe.kernel_stats()?)?);
    Ok(())
}
