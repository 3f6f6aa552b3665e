//! `cargo xtask test`: formatting, lints, then every test. Kernel capture tests load real eBPF
//! programs and need root.

use std::process::Command;

use crate::{cargo, run, setup::EBPF_TOOLCHAIN};

pub fn run_all() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    // Not one workspace-wide clippy: the eBPF crate builds only for the BPF target.
    cargo(&[
        "clippy",
        "-p",
        "nri-sysflow",
        "-p",
        "sysflow-common",
        "-p",
        "sysflow",
        "-p",
        "xtask",
        "-p",
        "nri-sysflow-e2e",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    run(Command::new("cargo")
        .arg(format!("+{EBPF_TOOLCHAIN}"))
        .args([
            "clippy",
            "-p",
            "sysflow-ebpf",
            "--bin",
            "sysflow-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))?;
    crate::fuzz::run_for(30)?;
    cargo(&[
        "test",
        "-p",
        "sysflow-common",
        "-p",
        "sysflow",
        "-p",
        "nri-sysflow",
    ])?;
    // End to end: a real containerd with NRI, pods through CRI, the agent binary. The
    // harness fetches containerd, runc and busybox from Debian itself; scenarios run one at
    // a time.
    cargo(&["build", "-p", "nri-sysflow", "--bin", "nri-sysflow"])?;
    cargo(&[
        "test",
        "-p",
        "nri-sysflow-e2e",
        "--",
        "--test-threads",
        "1",
        "--nocapture",
    ])
}
