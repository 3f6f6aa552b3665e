//! `cargo xtask image`: the agent's OCI image archive, built without a container engine.
//!
//! One layer: the agent statically linked against musl (its eBPF object inside), the CA
//! bundle the exporter's TLS trusts, `/etc/passwd` and `/etc/group` for root, the license, and
//! an SPDX SBOM of every crate compiled into the binary and the eBPF object. The same commit
//! gives the same digest, wherever the checkout is: paths are remapped out of the binary and
//! its eBPF object, every file and the image config carry the commit's time, and the archive
//! writer (tools/oci-archive) is deterministic.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::{Value as Json, json};

use crate::setup::USER_TOOLCHAIN;

const TARGET: &str = "x86_64-unknown-linux-musl";
/// What `ctr images import` names it; kubelet resolves the manifests' `nri-sysflow:<version>`
/// to the same reference.
const REPOSITORY: &str = "docker.io/library/nri-sysflow";
pub const DEFAULT_OUT: &str = "target/oci/nri-sysflow.tar";
/// The port the DaemonSet serves metrics on.
const METRICS_PORT: &str = "9464/tcp";

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn ensure_musl_target() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        USER_TOOLCHAIN,
    ]))?;
    if installed.lines().any(|l| l.trim() == TARGET) {
        return Ok(());
    }
    crate::run(Command::new("rustup").args([
        "target",
        "add",
        "--toolchain",
        USER_TOOLCHAIN,
        TARGET,
    ]))
}

/// `FROM=TO` path remaps (separated by 0x1f) rustc gets when xtask runs as its wrapper.
const REMAP_ENV: &str = "NRI_SYSFLOW_IMAGE_REMAP";

/// When xtask runs as `cargo xtask image`'s RUSTC_WRAPPER: runs the rustc it was given with
/// the remaps added, and returns its exit code. A wrapper is the only way to reach the rustc
/// of the eBPF object's nested build (aya-build sets that build's rustflags itself), whose
/// BTF line info would otherwise record where the checkout and toolchains are.
pub fn rustc_wrapper() -> Option<i32> {
    let remaps = std::env::var(REMAP_ENV).ok()?;
    let mut args = std::env::args_os().skip(1);
    let rustc = args.next()?;
    let status = Command::new(rustc)
        .args(args)
        .args(
            remaps
                .split('\x1f')
                .map(|r| format!("--remap-path-prefix={r}")),
        )
        .status();
    Some(status.map(|s| s.code().unwrap_or(1)).unwrap_or(1))
}

/// The release binary for musl, statically linked. C dependencies (zstd, aws-lc) are compiled
/// with Debian's musl-gcc. Every rustc (the eBPF object's too) runs through xtask with the
/// checkout, cargo's and rustup's folders remapped, so where they are does not reach the bytes.
fn build_binary(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_musl_target()?;
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let folder = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(default))
    };
    let remaps = [
        (root.to_path_buf(), "/src"),
        (folder("CARGO_HOME", ".cargo"), "/cargo"),
        (folder("RUSTUP_HOME", ".rustup"), "/rustup"),
    ]
    .iter()
    .map(|(from, to)| format!("{}={to}", from.display()))
    .collect::<Vec<_>>()
    .join("\x1f");
    crate::run(
        Command::new("cargo")
            .arg(format!("+{USER_TOOLCHAIN}"))
            .args(["build", "--release", "--locked", "--target", TARGET])
            .args(["-p", "nri-sysflow", "--bin", "nri-sysflow"])
            // Symbols stay (readable backtraces); debug info goes (a third of the size), and
            // is not made in the first place (it would triple this build's tree on disk).
            .args(["--config", "profile.release.strip=\"debuginfo\""])
            .args(["--config", "profile.release.debug=false"])
            .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
            .env("RUSTC_WRAPPER", std::env::current_exe()?)
            .env(REMAP_ENV, remaps),
    )?;
    Ok(root.join("target").join(TARGET).join("release/nri-sysflow"))
}

/// The commit the image is built from: (revision, RFC 3339 time, epoch seconds). A tree with
/// changes is labelled `<sha>-dirty`.
fn commit(root: &Path) -> anyhow::Result<(String, String, u64)> {
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(root).args(args));
    let sha = git(&["rev-parse", "HEAD"])?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    let epoch: u64 = git(&["log", "-1", "--format=%ct"])?.parse()?;
    let time = output(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args([
                "log",
                "-1",
                "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
                "--format=%cd",
            ])
            .env("TZ", "UTC"),
    )?;
    let revision = if dirty { format!("{sha}-dirty") } else { sha };
    Ok((revision, time, epoch))
}

fn metadata(platform: &str) -> anyhow::Result<Json> {
    let text = output(
        Command::new("cargo")
            .arg(format!("+{USER_TOOLCHAIN}"))
            .args(["metadata", "--locked", "--format-version", "1"])
            .args(["--filter-platform", platform]),
    )?;
    Ok(serde_json::from_str(&text)?)
}

/// The packages `root_name` is compiled from: itself and its normal dependencies, transitively
/// (build scripts and proc macros run at build time and are not in the binary).
fn compiled_packages(metadata: &Json, root_name: &str) -> anyhow::Result<Vec<Json>> {
    let packages: BTreeMap<&str, &Json> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Json> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let start = packages
        .iter()
        .find(|(_, p)| p["name"] == root_name)
        .map(|(id, _)| *id)
        .with_context(|| format!("cargo metadata: no package {root_name}"))?;
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            let proc_macro = packages
                .get(dep["pkg"].as_str().unwrap_or(""))
                .is_some_and(|p| {
                    p["targets"].as_array().into_iter().flatten().any(|t| {
                        t["kind"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
                    })
                });
            if let Some(pkg) = dep["pkg"].as_str()
                && normal
                && !proc_macro
                && seen.insert(pkg)
            {
                todo.push(pkg);
            }
        }
    }
    Ok(seen
        .into_iter()
        .filter_map(|id| packages.get(id).map(|p| (*p).clone()))
        .collect())
}

/// An SPDX 2.3 document listing every crate in the binary (`workspace`: cargo metadata for
/// the musl target) and in its eBPF object.
fn sbom(workspace: &Json, version: &str, revision: &str, created: &str) -> anyhow::Result<String> {
    let mut crates: BTreeMap<(String, String), Json> = BTreeMap::new();
    let ebpf = metadata("bpfel-unknown-none")?;
    for (metadata, root) in [(workspace, "nri-sysflow"), (&ebpf, "sysflow-ebpf")] {
        for p in compiled_packages(metadata, root)? {
            let key = (
                p["name"].as_str().unwrap_or("").to_string(),
                p["version"].as_str().unwrap_or("").to_string(),
            );
            crates.insert(key, p);
        }
    }
    let mut packages = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Package-nri-sysflow",
    })];
    for ((name, version), p) in &crates {
        let id = format!("SPDXRef-Package-{name}-{version}").replace(['_', '+'], "-");
        let id = if name == "nri-sysflow" {
            "SPDXRef-Package-nri-sysflow".to_string()
        } else {
            id
        };
        let from_registry = p["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("registry+"));
        let license = p["license"]
            .as_str()
            // The old `A/B` form is not an SPDX expression.
            .map(|l| l.replace('/', " OR "))
            .unwrap_or_else(|| "NOASSERTION".to_string());
        packages.push(json!({
            "name": name,
            "SPDXID": id,
            "versionInfo": version,
            "downloadLocation": if from_registry {
                format!("https://crates.io/api/v1/crates/{name}/{version}/download")
            } else {
                "NOASSERTION".to_string()
            },
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:cargo/{name}@{version}"),
            }],
        }));
        if name != "nri-sysflow" {
            relationships.push(json!({
                "spdxElementId": "SPDXRef-Package-nri-sysflow",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
        }
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("nri-sysflow-{version}"),
        "documentNamespace": format!("https://spdx.org/spdxdocs/nri-sysflow-{version}-{revision}"),
        "creationInfo": {"created": created, "creators": ["Tool: cargo xtask image"]},
        "packages": packages,
        "relationships": relationships,
    });
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

/// Builds the binary and writes the archive to `out`; prints its digest.
pub fn build(root: &Path, out: &Path) -> anyhow::Result<()> {
    let binary = std::fs::read(build_binary(root)?).context("reading the musl binary")?;
    let workspace = metadata(TARGET)?;
    let agent = workspace["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "nri-sysflow")
        .context("cargo metadata: no nri-sysflow package")?;
    let version = agent["version"].as_str().context("no version")?.to_string();
    let (revision, created, epoch) = commit(root)?;
    let ca_bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt")
        .context("reading /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates)")?;

    let mut layer = oci_archive::LayerBuilder::new(epoch);
    layer
        .dir("etc", 0o755)?
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
        )?
        .dir("etc/ssl", 0o755)?
        .dir("etc/ssl/certs", 0o755)?
        .file("etc/ssl/certs/ca-certificates.crt", 0o644, &ca_bundle)?
        .dir("root", 0o700)?
        .dir("tmp", 0o1777)?
        .dir("usr", 0o755)?
        .dir("usr/bin", 0o755)?
        .file("usr/bin/nri-sysflow", 0o755, &binary)?
        .dir("usr/share", 0o755)?
        .dir("usr/share/doc", 0o755)?
        .dir("usr/share/doc/nri-sysflow", 0o755)?
        .file(
            "usr/share/doc/nri-sysflow/LICENSE",
            0o644,
            &std::fs::read(root.join("LICENSE")).context("reading LICENSE")?,
        )?
        .file(
            "usr/share/doc/nri-sysflow/sbom.spdx.json",
            0o644,
            sbom(&workspace, &version, &revision, &created)?.as_bytes(),
        )?
        .dir("var", 0o755)?
        .dir("var/lib", 0o755)?
        // The default output folder (the DaemonSet mounts a host path over it).
        .dir("var/lib/nri-sysflow", 0o700)?;

    let string = |k: &str| agent[k].as_str().unwrap_or("").to_string();
    let labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".into(),
            "nri-sysflow".into(),
        ),
        (
            "org.opencontainers.image.description".into(),
            string("description"),
        ),
        ("org.opencontainers.image.version".into(), version.clone()),
        ("org.opencontainers.image.revision".into(), revision.clone()),
        (
            "org.opencontainers.image.source".into(),
            string("repository"),
        ),
        (
            "org.opencontainers.image.licenses".into(),
            string("license"),
        ),
        ("org.opencontainers.image.created".into(), created.clone()),
    ]);
    let spec = oci_archive::ImageSpec {
        name: format!("{REPOSITORY}:{version}"),
        entrypoint: vec!["/usr/bin/nri-sysflow".into()],
        cmd: vec!["run".into()],
        env: vec![
            "PATH=/usr/bin".into(),
            // mimalloc (the static build's allocator) returns freed memory at once and commits
            // its arenas as they fill: measured, peak RSS fell from 104 to 58 MiB at the same
            // CPU (`cargo xtask bench image`, which runs the binary with this environment).
            "MIMALLOC_PURGE_DELAY=0".into(),
            "MIMALLOC_ARENA_EAGER_COMMIT=0".into(),
        ],
        // Root: loading eBPF programs needs CAP_BPF and CAP_PERFMON at least, reading every
        // process's /proc entries CAP_SYS_PTRACE; the DaemonSet runs it privileged.
        user: "0:0".into(),
        working_dir: "/".into(),
        exposed_ports: vec![METRICS_PORT.into()],
        labels,
        created: Some(created),
        created_by: "cargo xtask image".into(),
        gzip: true,
    };
    let written = oci_archive::write(&spec, &[layer.finish()?], out)?;
    println!(
        "{}: {} {} ({} bytes, revision {revision})",
        out.display(),
        spec.name,
        written.manifest_digest,
        written.bytes
    );
    Ok(())
}
