//! Builds the eBPF programs (ebpf/probes) for bpfel-unknown-none with the pinned nightly and
//! bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//! `cargo xtask setup` installs that toolchain and bpf-linker.
//!
//! `NRI_SYSFLOW_EBPF=stub` leaves an empty object instead (no nightly, no bpf-linker): for the
//! fast test tier, whose tests never load the programs. Such a binary refuses to capture.

use anyhow::{Context as _, anyhow};

/// ebpf/probes/rust-toolchain.toml: `channel = "<the nightly>"`.
const EBPF_TOOLCHAIN_FILE: &str = include_str!("../ebpf/probes/rust-toolchain.toml");

fn ebpf_toolchain() -> anyhow::Result<&'static str> {
    EBPF_TOOLCHAIN_FILE
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|v| v.trim().trim_matches('"'))
        .ok_or_else(|| anyhow!("ebpf/probes/rust-toolchain.toml names no channel"))
}

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=NRI_SYSFLOW_EBPF");
    if std::env::var("NRI_SYSFLOW_EBPF").as_deref() == Ok("stub") {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(out.join("sysflow-ebpf"), b"")?;
        return Ok(());
    }
    let metadata = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output()
        .context("cargo locate-project")?;
    let workspace_manifest = String::from_utf8(metadata.stdout)?;
    let workspace_root = std::path::Path::new(workspace_manifest.trim())
        .parent()
        .ok_or_else(|| anyhow!("workspace manifest has no parent"))?
        .to_path_buf();
    let ebpf_dir = workspace_root.join("ebpf/probes");
    let common_dir = workspace_root.join("ebpf/common");
    println!("cargo::rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sysflow-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(ebpf_toolchain()?),
    )
}
