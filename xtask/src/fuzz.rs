//! `cargo xtask fuzz`: runs the cargo-fuzz targets for a bounded time each: the SysFlow reader,
//! seeded with the reference traces; the detection rules' parser and compiler, seeded with the
//! conformance kit's policy files; and the agent's inputs from outside: the NRI connection as
//! the runtime's bytes (mux frames, ttrpc messages, prost requests), the capture policy parser
//! and the config parser, seeded with the shipped files. A crash, a leak, a hang or an
//! allocation over the RSS limit fails it.

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
    // Big inputs make each run slow; 16 KB still spans a header and several blocks.
    run(fuzz_run("plugin/sysflow", "reader", seconds)?
        .args(["-max_len=16384", "-rss_limit_mb=1024"]))?;
    fuzz_policy(seconds)?;
    fuzz_agent(seconds)
}

/// The agent's own parsers of what comes from outside, built without its eBPF object.
fn fuzz_agent(seconds: u64) -> anyhow::Result<()> {
    let seeds: [(&str, &[&str]); 3] = [
        ("nri_frames", &[]),
        ("capture_policy", &["deploy/node/policy.yaml"]),
        (
            "agent_config",
            &["deploy/agent.yaml", "deploy/node/agent.yaml"],
        ),
    ];
    for (target, files) in seeds {
        let corpus = Path::new("plugin/fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        for file in files {
            seed(Path::new(file), &corpus)?;
        }
        run(fuzz_run("plugin", target, seconds)?
            .args(["-max_len=8192", "-rss_limit_mb=1024", "-timeout=10"])
            .env("NRI_SYSFLOW_EBPF", "stub"))?;
    }
    Ok(())
}

/// The detection rules' parser and compiler on any text, seeded with real policy files.
fn fuzz_policy(seconds: u64) -> anyhow::Result<()> {
    let corpus = Path::new("plugin/rules/fuzz/corpus/policy");
    std::fs::create_dir_all(corpus)?;
    for dir in ["deploy/rules", "../shared/policy-kit/policies"] {
        copy_yaml(Path::new(dir), corpus)?;
    }
    // A slow input is a finding too: reported (and saved) after 10 s, not waited on.
    run(fuzz_run("plugin/rules", "policy", seconds)?.args([
        "-max_len=8192",
        "-rss_limit_mb=1024",
        "-timeout=10",
    ]))
}

/// `cargo fuzz run TARGET` of the fuzz crate under `crate_dir` for `seconds`; libFuzzer's
/// options follow. Every fuzz crate builds into one target folder, so what they share (the
/// SysFlow crate, serde, tokio, all under the sanitizer) is built and stored once.
fn fuzz_run(crate_dir: &str, target: &str, seconds: u64) -> anyhow::Result<Command> {
    let target_dir = crate::workspace_root()?.join("target/fuzz");
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{}", ebpf_toolchain()))
        .args(["fuzz", "run", "--target-dir"])
        .arg(target_dir)
        .args([target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .current_dir(crate_dir);
    Ok(cmd)
}

/// Copies the .yaml files under `dir` (recursively) into `corpus`, named by their path.
fn copy_yaml(dir: &Path, corpus: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            copy_yaml(&path, corpus)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            seed(&path, corpus)?;
        }
    }
    Ok(())
}

/// Copies `file` into `corpus`, named by its path.
fn seed(file: &Path, corpus: &Path) -> anyhow::Result<()> {
    let name = file.to_string_lossy().replace(['/', '.'], "_");
    std::fs::copy(file, corpus.join(name))
        .with_context(|| format!("seeding {}", file.display()))?;
    Ok(())
}
