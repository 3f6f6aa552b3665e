//! Single-layer OCI image archives, built from a busybox-static binary, for
//! `ctr images import`: no registry is reachable from this machine kind.

use std::path::Path;

use anyhow::Context as _;
use oci_archive::{ImageSpec, LayerBuilder};

/// Tools the workloads use; each is a symlink to busybox.
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "echo", "mkdir", "rmdir", "mv", "rm", "nc", "true", "false", "ls", "dd",
    "head", "touch", "seq",
];

/// The layer: /bin/busybox, its applets, and the directories a container needs.
fn busybox_layer(busybox: &Path) -> anyhow::Result<Vec<u8>> {
    let binary =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let mut layer = LayerBuilder::new(0);
    for (path, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("data", 0o777),
    ] {
        layer.dir(path, mode)?;
    }
    layer.file("bin/busybox", 0o755, &binary)?;
    for applet in APPLETS {
        layer.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    layer
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?
        .file("etc/group", 0o644, b"root:x:0:\n")?
        // A credentials file, for the detection rules' scenarios.
        .file("etc/shadow", 0o640, b"root:*:19000:0:99999:7:::\n")?;
    layer.finish()
}

/// Writes an OCI image layout archive of a busybox image named `name` (e.g.
/// `docker.io/sysflow-e2e/busybox:1`) whose entrypoint is `entrypoint`.
pub fn build_busybox_image(
    busybox: &Path,
    name: &str,
    entrypoint: &[&str],
    out: &Path,
) -> anyhow::Result<()> {
    let spec = ImageSpec {
        name: name.to_string(),
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".to_string()],
        working_dir: "/".to_string(),
        ..ImageSpec::default()
    };
    oci_archive::write(&spec, &[busybox_layer(busybox)?], out)?;
    Ok(())
}
