//! OCI image layout archives (a tar of `oci-layout`, `index.json` and `blobs/sha256/*`), the
//! format `skopeo copy oci-archive:…`, `crane push` and `ctr images import` take, written
//! without a container engine, and read back for tests.
//!
//! Reproducible: the same inputs give the same bytes. Every tar entry has a fixed owner (0:0)
//! and modification time (the caller's epoch, usually the commit's), entries are written in
//! the order given, gzip carries no name or time, and every JSON document is written with its
//! object keys sorted (oci-spec keeps labels and annotations in hash maps).

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read as _, Write as _},
    path::Path,
    str::FromStr as _,
};

use anyhow::{Context as _, bail};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder,
    ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder, Sha256Digest,
};
use serde_json::Value as Json;
use sha2::{Digest as _, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A layer's files, in the order they are added. Parents must come before their children.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl LayerBuilder {
    /// Entries get `mtime` (seconds since the epoch) as their modification time.
    pub fn new(mtime: u64) -> LayerBuilder {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar, mtime }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> anyhow::Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        let path = format!("{}/", path.trim_end_matches('/'));
        self.tar.append_data(&mut h, path, std::io::empty())?;
        Ok(self)
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data)?;
        Ok(self)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<&mut Self> {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target)?;
        Ok(self)
    }

    /// The uncompressed tar.
    pub fn finish(self) -> anyhow::Result<Vec<u8>> {
        Ok(self.tar.into_inner()?)
    }
}

/// What goes into the image's config and index.
#[derive(Clone, Debug, Default)]
pub struct ImageSpec {
    /// The full reference containerd imports it as, e.g. `docker.io/library/nri-sysflow:0.1.0`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// `uid[:gid]`; empty: the runtime's default (root).
    pub user: String,
    pub working_dir: String,
    /// e.g. `9464/tcp`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// RFC 3339; also the history entry's time.
    pub created: Option<String>,
    /// What made the layers (the history entry).
    pub created_by: String,
    /// Gzip the layers (`tar+gzip`); else plain `tar` layers.
    pub gzip: bool,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// `sha256:…` of the manifest: the digest registries and `image@sha256:…` pins use.
    pub manifest_digest: String,
    pub config_digest: String,
    pub bytes: u64,
}

/// A JSON document with every object's keys sorted, so hash-map order never reaches the bytes.
fn canonical_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    fn sort(v: Json) -> Json {
        match v {
            Json::Object(map) => {
                let sorted: BTreeMap<String, Json> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                Json::Object(sorted.into_iter().collect())
            }
            Json::Array(items) => Json::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    Ok(serde_json::to_string(&sort(serde_json::to_value(value)?))?)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    // No file name and mtime 0 in the gzip header (GzBuilder's defaults).
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(9));
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

fn descriptor(media_type: MediaType, blob: &[u8]) -> anyhow::Result<Descriptor> {
    Ok(Descriptor::new(
        media_type,
        blob.len() as u64,
        Sha256Digest::from_str(&sha256_hex(blob))?,
    ))
}

/// Writes the archive of an image made of `layers` (uncompressed tars, lowest first) to `out`.
pub fn write(spec: &ImageSpec, layers: &[Vec<u8>], out: &Path) -> anyhow::Result<Written> {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut layer_descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(layer)));
        let (media_type, blob) = if spec.gzip {
            (MediaType::ImageLayerGzip, gzip(layer)?)
        } else {
            (MediaType::ImageLayer, layer.clone())
        };
        layer_descriptors.push(descriptor(media_type, &blob)?);
        blobs.push(blob);
    }

    let mut config = ConfigBuilder::default();
    if !spec.entrypoint.is_empty() {
        config = config.entrypoint(spec.entrypoint.clone());
    }
    if !spec.cmd.is_empty() {
        config = config.cmd(spec.cmd.clone());
    }
    if !spec.env.is_empty() {
        config = config.env(spec.env.clone());
    }
    if !spec.user.is_empty() {
        config = config.user(spec.user.clone());
    }
    if !spec.working_dir.is_empty() {
        config = config.working_dir(spec.working_dir.clone());
    }
    if !spec.exposed_ports.is_empty() {
        config = config.exposed_ports(spec.exposed_ports.clone());
    }
    if !spec.labels.is_empty() {
        config = config.labels(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    let mut image = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()?,
        );
    let mut history = HistoryBuilder::default().created_by(spec.created_by.clone());
    if let Some(created) = &spec.created {
        image = image.created(created.clone());
        history = history.created(created.clone());
    }
    if !spec.created_by.is_empty() {
        image = image.history(vec![history.build()?]);
    }
    let config = canonical_json(&image.build()?)?;
    let config_descriptor = descriptor(MediaType::ImageConfig, config.as_bytes())?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor.clone())
        .layers(layer_descriptors)
        .build()?;
    let manifest = canonical_json(&manifest)?;
    let mut manifest_descriptor = descriptor(MediaType::ImageManifest, manifest.as_bytes())?;
    let tag = spec
        .name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t)
        .unwrap_or("latest");
    manifest_descriptor.set_annotations(Some(HashMap::from([
        // containerd's import names the image from its own annotation; skopeo and crane
        // from the OCI one.
        ("io.containerd.image.name".to_string(), spec.name.clone()),
        (
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        ),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()?;
    let index = canonical_json(&index)?;

    let mut entries: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index.into_bytes()),
    ];
    for blob in blobs
        .into_iter()
        .chain([config.clone().into_bytes(), manifest.clone().into_bytes()])
    {
        entries.push((format!("blobs/sha256/{}", sha256_hex(&blob)), blob));
    }
    let mut tar = LayerBuilder::new(0);
    tar.dir("blobs", 0o755)?.dir("blobs/sha256", 0o755)?;
    for (path, data) in &entries {
        tar.file(path, 0o644, data)?;
    }
    let bytes = tar.finish()?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Written aside and renamed: an interrupted build never leaves a truncated archive.
    let partial = out.with_extension("tar.partial");
    std::fs::write(&partial, &bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(Written {
        manifest_digest: format!("sha256:{}", sha256_hex(manifest.as_bytes())),
        config_digest: format!("sha256:{}", sha256_hex(config.as_bytes())),
        bytes: bytes.len() as u64,
    })
}

/// An archive read back: its documents and its layers, uncompressed.
pub struct ReadImage {
    pub index: ImageIndex,
    pub manifest: ImageManifest,
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    /// Each layer's uncompressed tar, lowest first.
    pub layers: Vec<Vec<u8>>,
}

impl ReadImage {
    /// The layers' files, the upper layer winning: path (no leading `/`) to (mode, content;
    /// a symlink's content is its target).
    pub fn files(&self) -> anyhow::Result<BTreeMap<String, (u32, Vec<u8>)>> {
        let mut files = BTreeMap::new();
        for layer in &self.layers {
            let mut archive = tar::Archive::new(layer.as_slice());
            for entry in archive.entries()? {
                let mut entry = entry?;
                let path = entry.path()?.display().to_string();
                let mode = entry.header().mode()?;
                let mut data = Vec::new();
                match entry.header().entry_type() {
                    tar::EntryType::Symlink => {
                        let target = entry.link_name()?.context("symlink without target")?;
                        data = target.display().to_string().into_bytes();
                    }
                    _ => {
                        entry.read_to_end(&mut data)?;
                    }
                }
                files.insert(path.trim_end_matches('/').to_string(), (mode, data));
            }
        }
        Ok(files)
    }
}

/// Reads an archive `write` (or any single-manifest OCI layout tar) produced, checking every
/// blob's digest and size against its descriptor.
pub fn read(path: &Path) -> anyhow::Result<ReadImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut contents: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in tar::Archive::new(bytes.as_slice()).entries()? {
        let mut entry = entry?;
        let name = entry.path()?.display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        contents.insert(name, data);
    }
    let blob = |d: &Descriptor| -> anyhow::Result<&Vec<u8>> {
        let hex = d.digest().digest();
        let data = contents
            .get(&format!("blobs/sha256/{hex}"))
            .with_context(|| format!("{}: no blob {hex}", path.display()))?;
        if sha256_hex(data) != hex || data.len() as u64 != d.size() {
            bail!(
                "{}: blob {hex} does not match its descriptor",
                path.display()
            );
        }
        Ok(data)
    };
    let index: ImageIndex = serde_json::from_slice(
        contents
            .get("index.json")
            .with_context(|| format!("{}: no index.json", path.display()))?,
    )?;
    let [manifest_descriptor] = index.manifests().as_slice() else {
        bail!("{}: expected one manifest in index.json", path.display());
    };
    let manifest: ImageManifest = serde_json::from_slice(blob(manifest_descriptor)?)?;
    let config: ImageConfiguration = serde_json::from_slice(blob(manifest.config())?)?;
    let mut layers = Vec::new();
    for d in manifest.layers() {
        let data = blob(d)?;
        layers.push(match d.media_type() {
            MediaType::ImageLayerGzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(data.as_slice()).read_to_end(&mut out)?;
                out
            }
            MediaType::ImageLayer => data.clone(),
            other => bail!("{}: layer media type {other} not supported", path.display()),
        });
    }
    Ok(ReadImage {
        manifest_digest: manifest_descriptor.digest().to_string(),
        index,
        manifest,
        config,
        layers,
    })
}
