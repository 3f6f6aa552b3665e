//! Single-layer OCI image archives, built from a busybox-static binary, for
//! `ctr images import`: no registry is reachable from this machine kind.

use std::{collections::HashMap, io::Write as _, path::Path, str::FromStr as _};

use anyhow::Context as _;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

/// Tools the workloads use; each is a symlink to busybox.
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "echo", "mkdir", "rmdir", "mv", "rm", "nc", "true", "false", "ls", "dd",
    "head", "touch", "seq",
];

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The layer: /bin/busybox, its applets, and the directories a container needs.
fn busybox_layer(busybox: &Path) -> anyhow::Result<Vec<u8>> {
    let binary =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, path, std::io::empty())
    };
    for (path, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("proc/", 0o555),
        ("sys/", 0o555),
        ("root/", 0o700),
        ("tmp/", 0o1777),
        ("data/", 0o777),
    ] {
        dir(&mut tar, path, mode)?;
    }
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_size(binary.len() as u64);
    h.set_mtime(0);
    tar.append_data(&mut h, "bin/busybox", binary.as_slice())?;
    for applet in APPLETS {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    for (path, text, mode) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
        // A credentials file, for the detection rules' scenarios.
        ("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_size(text.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, path, text.as_bytes())?;
    }
    Ok(tar.into_inner()?)
}

/// Writes an OCI image layout archive of a busybox image named `name` (e.g.
/// `docker.io/sysflow-e2e/busybox:1`) whose entrypoint is `entrypoint`.
pub fn build_busybox_image(
    busybox: &Path,
    name: &str,
    entrypoint: &[&str],
    out: &Path,
) -> anyhow::Result<()> {
    let layer = busybox_layer(busybox)?;
    let layer_digest = sha256_hex(&layer);
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .entrypoint(entrypoint.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .env(vec!["PATH=/bin".to_string()])
                .working_dir("/".to_string())
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{layer_digest}")])
                .build()?,
        )
        .build()?
        .to_string()?;
    let config_digest = sha256_hex(config.as_bytes());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config.len() as u64,
            Sha256Digest::from_str(&config_digest)?,
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayer,
            layer.len() as u64,
            Sha256Digest::from_str(&layer_digest)?,
        )])
        .build()?
        .to_string()?;
    let manifest_digest = sha256_hex(manifest.as_bytes());
    let mut manifest_desc = Descriptor::new(
        MediaType::ImageManifest,
        manifest.len() as u64,
        Sha256Digest::from_str(&manifest_digest)?,
    );
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    manifest_desc.set_annotations(Some(HashMap::from([
        // containerd's import takes the full name from its own annotation.
        ("io.containerd.image.name".to_string(), name.to_string()),
        (
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        ),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()?
        .to_string()?;

    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, path, data)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), index.as_bytes())?;
    add(format!("blobs/sha256/{layer_digest}"), &layer)?;
    add(format!("blobs/sha256/{config_digest}"), config.as_bytes())?;
    add(
        format!("blobs/sha256/{manifest_digest}"),
        manifest.as_bytes(),
    )?;
    let bytes = tar.into_inner()?;
    let mut f =
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&bytes)?;
    Ok(())
}
