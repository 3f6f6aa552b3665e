//! The image archive read back: its index, manifest, config and labels, its files, the static
//! binary inside answering `--version`, the SBOM naming the crates Cargo.lock pins; and a
//! second build of the same commit giving the same digest.

use std::{collections::BTreeMap, process::Command};

use nri_sysflow_e2e::workspace_root;

use super::require_image;

/// `git rev-parse HEAD`, with `-dirty` when tracked files changed (as the label says).
fn revision() -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(workspace_root())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let sha = git(&["rev-parse", "HEAD"]);
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        sha
    } else {
        format!("{sha}-dirty")
    }
}

/// Cargo.lock's packages: name to versions.
fn locked_versions() -> BTreeMap<String, Vec<String>> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            out.entry(n)
                .or_default()
                .push(v.trim_matches('"').to_string());
        }
    }
    out
}

/// ELF program headers hold no PT_INTERP: no dynamic loader, nothing from the host's libc.
fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..4], b"\x7fELF");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let p_type = u32::from_le_bytes(bytes[phoff + i * phentsize..][..4].try_into().unwrap());
        p_type != 3 // PT_INTERP
    })
}

#[test]
fn the_archive_reads_back_with_its_labels_files_and_a_working_static_binary() {
    let archive = require_image();
    let image = oci_archive::read(&archive).expect("the archive reads back");
    let version = env!("CARGO_PKG_VERSION");

    let [manifest] = image.index.manifests().as_slice() else {
        panic!("one manifest")
    };
    let annotations = manifest.annotations().clone().unwrap();
    assert_eq!(
        annotations["io.containerd.image.name"],
        format!("docker.io/library/nri-sysflow:{version}")
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], version);

    let config = image.config.config().clone().unwrap();
    assert_eq!(
        config.entrypoint().clone().unwrap(),
        vec!["/usr/bin/nri-sysflow"]
    );
    assert_eq!(config.cmd().clone().unwrap(), vec!["run"]);
    assert_eq!(config.user().as_deref(), Some("0:0"));
    assert_eq!(
        config.env().clone().unwrap(),
        vec![
            "PATH=/usr/bin",
            "MIMALLOC_PURGE_DELAY=0",
            "MIMALLOC_ARENA_EAGER_COMMIT=0"
        ]
    );
    assert_eq!(config.exposed_ports().clone().unwrap(), vec!["9464/tcp"]);
    let labels = config.labels().clone().unwrap();
    let created = image.config.created().clone().unwrap();
    let expected: BTreeMap<String, String> = [
        ("org.opencontainers.image.title", "nri-sysflow".to_string()),
        ("org.opencontainers.image.version", version.to_string()),
        ("org.opencontainers.image.revision", revision()),
        (
            "org.opencontainers.image.source",
            "https://github.com/nri-sysflow/nri-sysflow".to_string(),
        ),
        (
            "org.opencontainers.image.licenses",
            "Apache-2.0".to_string(),
        ),
        ("org.opencontainers.image.created", created.clone()),
        (
            "org.opencontainers.image.description",
            "Container telemetry agent: eBPF capture attributed per cgroup, written as SysFlow."
                .to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(labels.into_iter().collect::<BTreeMap<_, _>>(), expected);
    // The commit's time, not the build's.
    let commit_time = Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args([
            "log",
            "-1",
            "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
            "--format=%cd",
        ])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert_eq!(
        created,
        String::from_utf8(commit_time.stdout).unwrap().trim()
    );

    // Exactly these files: the binary, CA certificates, the users, the license, the SBOM.
    let files = image.files().unwrap();
    let regular: Vec<(&str, u32)> = files
        .iter()
        .filter(|(_, (_, data))| !data.is_empty())
        .map(|(path, (mode, _))| (path.as_str(), *mode))
        .collect();
    assert_eq!(
        regular,
        vec![
            ("etc/group", 0o644),
            ("etc/passwd", 0o644),
            ("etc/ssl/certs/ca-certificates.crt", 0o644),
            ("usr/bin/nri-sysflow", 0o755),
            ("usr/share/doc/nri-sysflow/LICENSE", 0o644),
            ("usr/share/doc/nri-sysflow/sbom.spdx.json", 0o644),
        ]
    );
    let certs = &files["etc/ssl/certs/ca-certificates.crt"].1;
    assert!(
        String::from_utf8_lossy(certs)
            .matches("BEGIN CERTIFICATE")
            .count()
            > 100,
        "the CA bundle holds the system's roots"
    );

    // The binary: static, and it runs.
    let binary = &files["usr/bin/nri-sysflow"].1;
    assert!(is_static_elf(binary), "the binary needs a dynamic loader");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri-sysflow");
    std::fs::write(&path, binary).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(&path).arg("--version").output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (Some(0), format!("nri-sysflow {version}\n"))
    );

    // The SBOM: SPDX, the agent and every crate at the version Cargo.lock pins, including
    // the eBPF object's.
    let sbom: serde_json::Value =
        serde_json::from_slice(&files["usr/share/doc/nri-sysflow/sbom.spdx.json"].1).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let packages = sbom["packages"].as_array().unwrap();
    let locked = locked_versions();
    for p in packages {
        let (name, v) = (
            p["name"].as_str().unwrap(),
            p["versionInfo"].as_str().unwrap(),
        );
        assert!(
            locked.get(name).is_some_and(|vs| vs.iter().any(|x| x == v)),
            "{name} {v} is not in Cargo.lock"
        );
    }
    let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    for expected in [
        "nri-sysflow",
        "sysflow",
        "aya",
        "tokio",
        "object_store",
        "aya-ebpf",
        "sysflow-ebpf",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from the SBOM"
        );
    }
    // Build-time tools are not in the binary.
    for absent in ["aya-build", "prost-build", "clap_derive"] {
        assert!(!names.contains(&absent), "{absent} is in the SBOM");
    }
}

#[test]
fn a_second_build_of_the_same_commit_gives_the_same_digest() {
    let archive = require_image();
    let first = oci_archive::read(&archive).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("again.tar");
    let out = Command::new("cargo")
        .args(["xtask", "image", "--out"])
        .arg(&again)
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo xtask image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = oci_archive::read(&again).unwrap();
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&archive).unwrap()
    );
    // What the command prints is that digest.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&first.manifest_digest),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
