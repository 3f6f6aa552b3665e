//! `cargo xtask test`: formatting, lints, then every test. Kernel capture tests load real eBPF
//! programs and need root.

use std::{path::Path, process::Command};

use crate::{cargo, run, setup::ebpf_toolchain};

/// User-space crates (the eBPF crate builds only for the BPF target).
const USER_SPACE_CLIPPY: [&str; 21] = [
    "clippy",
    "-p",
    "nri-sysflow",
    "-p",
    "sysflow-parquet",
    "-p",
    "sysflow-common",
    "-p",
    "sysflow",
    "-p",
    "sysflow-rules",
    "-p",
    "xtask",
    "-p",
    "nri-sysflow-e2e",
    "-p",
    "oci-archive",
    "--all-targets",
    "--",
    "-D",
    "warnings",
];

/// The fast tier: no root, no nightly, no bpf-linker (the agent gets an empty eBPF object).
pub fn run_quick(root: &Path) -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    crate::layout::check(root)?;
    let stub = |args: &[&str]| {
        run(Command::new("cargo")
            .arg(format!("+{}", crate::setup::USER_TOOLCHAIN))
            .args(args)
            .env("NRI_SYSFLOW_EBPF", "stub"))
    };
    stub(&USER_SPACE_CLIPPY)?;
    stub(&[
        "test",
        "-p",
        "sysflow-common",
        "-p",
        "sysflow",
        "-p",
        "nri-sysflow",
        "-p",
        "sysflow-rules",
        "--lib",
        "--test",
        "compile",
        "--test",
        "alerts",
        "--test",
        "print",
        "--test",
        "rules_cli",
        "--test",
        "redact",
        "--test",
        "hostile_files",
        "--test",
        "corrupt",
        "--test",
        "encoding",
        "--test",
        "full_output",
        "--test",
        "reference",
        "--test",
        "roundtrip",
        "--test",
        "writer",
    ])
}

pub fn run_all(root: &Path) -> anyhow::Result<()> {
    disk_report("start");
    cargo(&["fmt", "--all", "--check"])?;
    crate::layout::check(root)?;
    cargo(&USER_SPACE_CLIPPY)?;
    run(Command::new("cargo")
        .arg(format!("+{}", ebpf_toolchain()))
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
    disk_report("fuzzing");
    crate::fuzz::run_for(30)?;
    disk_report("the workspace's tests");
    // The kernel suites run with the syscall dispatcher (the default), then again with the
    // tracepoint hook set forced.
    cargo(&[
        "test",
        "-p",
        "sysflow-common",
        "-p",
        "sysflow",
        "-p",
        "sysflow-rules",
        "-p",
        "sysflow-parquet",
        "-p",
        "nri-sysflow",
    ])?;
    with_hooks(
        "tracepoint",
        &[
            "test",
            "-p",
            "nri-sysflow",
            "--test",
            "capture",
            "--test",
            "agent",
            "--test",
            "metrics",
        ],
    )?;
    // End to end: a real containerd with NRI, pods through CRI, the agent binary. The
    // harness fetches containerd, runc and busybox from Debian itself; scenarios run one at
    // a time, once per hook set.
    disk_report("end to end");
    cargo(&["build", "-p", "nri-sysflow", "--bin", "nri-sysflow"])?;
    let e2e = [
        "test",
        "-p",
        "nri-sysflow-e2e",
        "--lib",
        "--test",
        "e2e",
        "--test",
        "dashboards",
        "--",
        "--test-threads",
        "1",
        "--nocapture",
    ];
    with_hooks("dispatcher", &e2e)?;
    with_hooks("tracepoint", &e2e)?;
    // The shipped image, read back, rebuilt, and run in containerd as the DaemonSet's pod
    // (with the agent's default hook set, as a cluster runs it).
    disk_report("the image");
    crate::image::build(root, &root.join(crate::image::DEFAULT_OUT))?;
    cargo(&[
        "test",
        "-p",
        "nri-sysflow-e2e",
        "--test",
        "deploy",
        "--",
        "--test-threads",
        "1",
        "--nocapture",
    ])
}

/// Prints the disk space left where the builds go, before a phase: a full disk fails a build
/// with a bare "No space left on device", and these lines say which phase filled it.
fn disk_report(phase: &str) {
    let free = Command::new("df")
        .args(["--output=avail,size", "-h", "."])
        .output();
    if let Ok(out) = free {
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().nth(1).unwrap_or("?").trim();
        eprintln!("== disk before {phase} (free, size): {line}");
    }
}

/// `cargo +<toolchain> args...` with the agent's syscall hook set forced.
fn with_hooks(hooks: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("== syscall hooks: {hooks}");
    run(Command::new("cargo")
        .arg(format!("+{}", crate::setup::USER_TOOLCHAIN))
        .args(args)
        .env("NRI_SYSFLOW_KERNEL_HOOKS", hooks))
}
