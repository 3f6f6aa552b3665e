//! Builds the eBPF programs (ebpf/probes) for bpfel-unknown-none with the pinned nightly and
//! bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//! `cargo xtask setup` installs that toolchain and bpf-linker.

use anyhow::{Context as _, anyhow};

/// The nightly the eBPF crate is built with. bpf-linker must be linked against this nightly's
/// LLVM (xtask/src/setup.rs builds it so); change both together.
const EBPF_TOOLCHAIN: &str = "nightly-2026-10-01";

fn main() -> anyhow::Result<()> {
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
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
