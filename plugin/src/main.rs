//! The `nri-sysflow` command.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use nri_sysflow::{
    print::{self, Format},
    probe::{Probe, ProbeConfig},
};

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
    /// Print SysFlow files the way sysprint does: one line per event or flow, joined with its
    /// process, container, pod and files.
    Print {
        /// str (table), json (sysprint's fields) or csv.
        #[arg(long, default_value = "str")]
        format: Format,
        /// Only these record types, e.g. PE,FF,NF.
        #[arg(long = "type", value_parser = print::parse_types)]
        types: Option<print::TypeList>,
        /// Files, or directories of .sf files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
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
        Command::Print {
            format,
            types,
            paths,
        } => print_files(&paths, format, types.as_ref().map(|t| t.0.as_slice())),
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

fn print_files(paths: &[PathBuf], format: Format, types: Option<&[String]>) -> anyhow::Result<()> {
    let files = print::expand(paths).context("listing input files")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = match print::print(&files, format, types, &mut out) {
        Ok(s) => s,
        // Output closed early (e.g. piped into head): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    drop(out);
    for e in &summary.errors {
        eprintln!("nri-sysflow print: {e}");
    }
    if !summary.errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
