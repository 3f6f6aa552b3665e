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
    )?;
    let object = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("sysflow-ebpf");
    strip_dwarf(&object)
}

/// Drops the DWARF sections (`.debug_*` and their relocations) from the eBPF object. The
/// programs are compiled with full debug info only so that bpf-linker can derive BTF from it;
/// once `.BTF` and `.BTF.ext` (types, and the line info the verifier quotes) are written, the
/// DWARF is dead weight: 5 of the object's 6.3 MB, embedded in the agent's binary and paged in
/// when aya parses the object at start-up.
fn strip_dwarf(path: &std::path::Path) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut builder = object::build::elf::Builder::read(data.as_slice())
        .with_context(|| format!("parsing {}", path.display()))?;
    let dwarf: Vec<_> = builder
        .sections
        .iter()
        .filter(|s| s.name.as_slice().starts_with(b".debug"))
        .map(|s| s.id())
        .collect();
    for section in builder.sections.iter_mut() {
        let relocates_dwarf = section.sh_info_section.is_some_and(|t| dwarf.contains(&t));
        if dwarf.contains(&section.id()) || relocates_dwarf {
            section.delete = true;
        }
    }
    builder.delete_orphans();
    // LLVM names the sections from the symbol string table; the writer wants its own table.
    if !builder
        .sections
        .iter()
        .any(|s| matches!(s.data, object::build::elf::SectionData::SectionString))
    {
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = object::build::elf::SectionData::SectionString;
    }
    let mut stripped = Vec::with_capacity(data.len());
    builder
        .write(&mut stripped)
        .with_context(|| format!("writing {} without DWARF", path.display()))?;
    // A new file renamed over the old: the object aya-build left may be a hard link into its
    // own target tree.
    let temporary = path.with_extension("stripped");
    std::fs::write(&temporary, stripped)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))
}
