//! `cargo xtask fuzz`: runs the SysFlow reader's cargo-fuzz target for a bounded time, seeded
//! with the reference traces. A crash, a leak or an allocation over the RSS limit fails it.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::{run, setup::ebpf_toolchain};

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    crate::cargo(&["install", "cargo-fuzz@0.13.2", "--locked"])
}

pub fn run_for(seconds: u64) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = Path::new("plugin/sysflow/fuzz");
    let corpus = fuzz_dir.join("corpus/reader");
    std::fs::create_dir_all(&corpus)?;
    let traces = Path::new("../shared/reference-traces");
    if traces.is_dir() {
        for entry in std::fs::read_dir(traces).context("reading reference traces")? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "sf") {
                std::fs::copy(&path, corpus.join(path.file_name().unwrap_or_default()))?;
            }
        }
    }
    run(Command::new("cargo")
        .arg(format!("+{}", ebpf_toolchain()))
        .args(["fuzz", "run", "reader", "--"])
        .arg(format!("-max_total_time={seconds}"))
        // Big inputs make each run slow; 16 KB still spans a header and several blocks.
        .args(["-max_len=16384", "-rss_limit_mb=1024"])
        .current_dir("plugin/sysflow"))
}
