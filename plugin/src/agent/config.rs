//! The agent's configuration: a YAML file (`--config`), every field optional with a default,
//! unknown fields rejected; command-line flags override it.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use sysflow::{Compression, WriterConfig};

use crate::{
    capture::CaptureMode,
    probe::{HookChoice, ProbeConfig},
    state::StateConfig,
};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub output: OutputConfig,
    pub flows: FlowsConfig,
    pub capture: CaptureConfig,
    pub kernel: KernelConfig,
    pub runtime: RuntimeConfig,
    pub metrics: MetricsConfig,
    pub detection: DetectionConfig,
    pub export: ExportConfig,
    pub host: HostConfig,
}

/// Where the host's filesystems are, as a DaemonSet pod mounts them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// The host's /proc (the pod's own /proc with hostPID).
    pub proc: PathBuf,
    /// The host's cgroup2 filesystem (null: the cgroup2 mount /proc/self/mountinfo names).
    pub cgroup: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            proc: PathBuf::from("/proc"),
            cgroup: None,
        }
    }
}

/// Uploads of completed files to an S3-compatible object store, sf-exporter's key layout and
/// metadata; the output folder is the spool (see README, *Export*).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `s3://BUCKET[/PREFIX]` (null: no export).
    pub url: Option<String>,
    /// The store's address, e.g. `http://seaweedfs:8333` (null: AWS S3).
    pub endpoint: Option<String>,
    /// null: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), which most self-hosted stores need;
    /// false: virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Create the bucket when it is missing.
    pub create_bucket: bool,
    /// A key segment after the prefix (sf-exporter's cluster id); empty: none.
    pub cluster: String,
    /// dated: `[prefix/][cluster/][node/][nodeip/]YYYY/MM/DD/<file>` (sf-exporter's); flat:
    /// `[prefix/]<file>`, for a bucket read with `sysprint -i s3` (it reads only the root).
    pub layout: KeyLayoutKind,
    /// What is uploaded besides alert files (always, when rules run): sysflow and/or parquet
    /// (one Parquet file converted from each completed .sf file).
    pub formats: Vec<ExportFormat>,
    /// PEM file of CAs to trust besides the system's roots.
    pub ca_bundle: Option<PathBuf>,
    /// Where credentials mounted from a secret are: `s3_access_key` and `s3_secret_key`
    /// (sf-exporter's names), here or in its `k8s/` subfolder. The AWS variables come first,
    /// the AWS shared credentials file after.
    pub secrets_dir: PathBuf,
    /// At most this many bytes of completed files wait for upload; past it the oldest are
    /// dropped, each counted (export_dropped_files_total, losses_total) and logged.
    pub spool_max_bytes: u64,
    /// Keep uploaded files this long in `<output>/uploaded/` (0: remove at once).
    pub keep_local_secs: u64,
    /// How often the output folder is looked at for completed files.
    pub scan_interval_ms: u64,
    /// Retries after failures wait 1 s, 2 s, 4 s, ... up to this, with jitter.
    pub max_backoff_secs: u64,
    pub request_timeout_secs: u64,
    /// Files larger than one part are uploaded in parts of this size (at least 5).
    pub part_mib: u64,
    /// At shutdown, how long the exporter may go on uploading what is complete.
    pub shutdown_grace_secs: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyLayoutKind {
    Dated,
    Flat,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Sysflow,
    Parquet,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            url: None,
            endpoint: None,
            region: None,
            path_style: true,
            create_bucket: false,
            cluster: String::new(),
            layout: KeyLayoutKind::Dated,
            formats: vec![ExportFormat::Sysflow],
            ca_bundle: None,
            secrets_dir: PathBuf::from("/run/secrets"),
            spool_max_bytes: 10 << 30,
            keep_local_secs: 0,
            scan_interval_ms: 1000,
            max_backoff_secs: 60,
            request_timeout_secs: 60,
            part_mib: 8,
            shutdown_grace_secs: 10,
        }
    }
}

impl ExportConfig {
    /// The bucket and key prefix of `url`.
    pub fn bucket_and_prefix(&self) -> Option<Result<(String, String), String>> {
        let url = self.url.as_deref()?;
        let Some(rest) = url.strip_prefix("s3://") else {
            return Some(Err(format!("{url:?} is not s3://BUCKET[/PREFIX]")));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(format!("{url:?} names no bucket")));
        }
        Some(Ok((
            bucket.to_string(),
            prefix.trim_matches('/').to_string(),
        )))
    }
}

/// Detection rules (sf-processor's policy language) evaluated on the records written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Rules files, or folders of them compiled together in lexical order (empty: no rules).
    pub rules: Vec<PathBuf>,
    /// Also write each alert to stdout, one JSON line each.
    pub alerts_stdout: bool,
    /// Batches of records (up to 512 each) waiting for the rules' worker, at most; past it
    /// they are dropped and counted (losses_total{what="rules_records_dropped"}).
    pub queue_batches: usize,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            rules: Vec::new(),
            alerts_stdout: false,
            queue_batches: 64,
        }
    }
}

/// Prometheus metrics.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (null: not served). The DaemonSet uses 0.0.0.0:9464.
    pub addr: Option<std::net::SocketAddr>,
    /// How long a removed container's series stay, so the last values are scraped.
    pub series_grace_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            series_grace_secs: 300,
        }
    }
}

/// Where pod and container metadata come from (see `workloads::source`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Use containerd's NRI socket when it is there.
    pub nri: bool,
    /// containerd's NRI socket (external plugin mode).
    pub nri_socket: PathBuf,
    pub plugin_name: String,
    /// Two digits; NRI calls plugins in ascending index order.
    pub plugin_index: String,
    /// Without NRI, follow containerd's own API on this socket (null: do not).
    pub containerd_socket: Option<PathBuf>,
    /// containerd namespace of Kubernetes pods.
    pub containerd_namespace: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let nri = crate::nri::NriConfig::default();
        RuntimeConfig {
            nri: true,
            nri_socket: nri.socket,
            plugin_name: nri.plugin_name,
            plugin_index: nri.plugin_index,
            containerd_socket: Some("/run/containerd/containerd.sock".into()),
            containerd_namespace: "k8s.io".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Where .sf files are written.
    pub dir: PathBuf,
    /// Start a new file after this many seconds.
    pub rotate_secs: u64,
    /// Start a new file at this size (MiB); none by default.
    pub max_file_mib: Option<u64>,
    /// deflate (the collector's), zstd, snappy or none.
    pub compression: String,
    /// SFHeader.exporter and file name prefix; the host name by default.
    pub node_name: Option<String>,
    /// SFHeader.ip (the collector writes an empty string when unknown).
    pub node_ip: String,
    /// Carry IPv6 endpoints in NetworkFlow's extension fields (see README).
    pub ipv6_extension: bool,
    /// Flush buffered records to the file at least this often.
    pub flush_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Long-lived descriptors are reported this often.
    pub interval_secs: u64,
    /// Fold thread clones and exits into ProcessFlow records.
    pub process_flows: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// off, lifecycle, process, process+file, all, or flows-without-io (no read/write
    /// counters), or kinds joined with + (see `capture::CaptureMode`); for everything, when
    /// there is no policy file.
    pub default_mode: CaptureMode,
    /// Per-namespace capture policy (see deploy/policy.yaml); reloaded when it changes.
    pub policy: Option<PathBuf>,
    /// Record process environments (secret-looking values redacted).
    pub env: bool,
    /// Bytes of exec arguments captured.
    pub args_max: u32,
    /// Replace secrets in command lines by `<redacted>` (see `redact`; `nri-sysflow
    /// redact-check ARG...` shows what a command line becomes).
    pub redact_args: bool,
    /// Flags whose value is a secret, besides the built-in ones (e.g. `--vault-token`).
    pub redact_flags: Vec<String>,
    /// Capture modes of particular cgroups outside Kubernetes (systemd services, a database
    /// under its own cgroup), by path under the cgroup2 mount, e.g.
    /// `system.slice/postgresql.service: off`. They must exist when the agent starts; the
    /// default (or the policy's host mode) applies to every other cgroup.
    pub cgroups: std::collections::BTreeMap<String, CaptureMode>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    pub ring_bytes: u32,
    pub ring_count: u32,
    pub fd_table_entries: u32,
    /// Decoded records queued between the ring readers and the pipeline. When it is full the
    /// readers wait and the rings fill (their drops are counted by the kernel).
    pub queue_records: usize,
    pub max_processes: usize,
    /// Exited processes kept known (10 s each at most) for late references; beyond, the
    /// longest exited are forgotten first.
    pub max_exited_processes: usize,
    /// Syscall hook set: auto (the dispatcher where the kernel allows it), dispatcher or
    /// tracepoint.
    pub hooks: HookChoice,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("/var/lib/nri-sysflow"),
            rotate_secs: 300,
            max_file_mib: None,
            compression: "deflate".into(),
            node_name: None,
            node_ip: String::new(),
            ipv6_extension: true,
            flush_secs: 5,
        }
    }
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            interval_secs: 30,
            process_flows: false,
        }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            default_mode: CaptureMode::ALL,
            policy: None,
            env: false,
            args_max: 1024,
            redact_args: true,
            redact_flags: Vec::new(),
            cgroups: Default::default(),
        }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        let probe = ProbeConfig::default();
        KernelConfig {
            ring_bytes: probe.ring_bytes,
            ring_count: probe.ring_count,
            fd_table_entries: probe.fd_table_entries,
            queue_records: probe.channel_capacity,
            max_processes: StateConfig::default().max_processes,
            max_exited_processes: StateConfig::default().max_exited_processes,
            hooks: probe.hooks,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML syntax or a field of the wrong type, unknown field, ...
    #[error("config {path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value out of range.
    #[error("config {path}: {field}: {message}")]
    Value {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

impl AgentConfig {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = crate::host::trust::read_trusted(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// A config from its text (`path` names it in errors), checked.
    pub fn parse(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        let config: AgentConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            // The location is ours to print, not again at the end of the message.
            let message = e.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            ConfigError::Syntax {
                path: path.into(),
                line,
                column,
                message,
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn validate(&self, path: &std::path::Path) -> Result<(), ConfigError> {
        let bad = |field, message: String| ConfigError::Value {
            path: path.into(),
            field,
            message,
        };
        self.output
            .compression
            .parse::<Compression>()
            .map_err(|e| bad("output.compression", e.to_string()))?;
        if self.output.rotate_secs == 0 {
            return Err(bad("output.rotate_secs", "must be at least 1".into()));
        }
        if self.flows.interval_secs == 0 {
            return Err(bad("flows.interval_secs", "must be at least 1".into()));
        }
        if !self.kernel.ring_bytes.is_power_of_two() || self.kernel.ring_bytes < 4096 {
            return Err(bad(
                "kernel.ring_bytes",
                "must be a power of two of at least 4096".into(),
            ));
        }
        if !(1..=4).contains(&self.kernel.ring_count) {
            return Err(bad("kernel.ring_count", "must be 1 to 4".into()));
        }
        if self.detection.queue_batches == 0 {
            return Err(bad("detection.queue_batches", "must be at least 1".into()));
        }
        if let Some(Err(e)) = self.export.bucket_and_prefix() {
            return Err(bad("export.url", e));
        }
        if self.export.part_mib < 5 {
            return Err(bad(
                "export.part_mib",
                "must be at least 5 (S3's smallest part)".into(),
            ));
        }
        if self.export.scan_interval_ms == 0 || self.export.max_backoff_secs == 0 {
            return Err(bad(
                "export.scan_interval_ms/max_backoff_secs",
                "must be at least 1".into(),
            ));
        }
        if self.export.url.is_some() && self.export.formats.is_empty() {
            return Err(bad(
                "export.formats",
                "name sysflow, parquet or both".into(),
            ));
        }
        self.nri_config()
            .validate()
            .map_err(|e| bad("runtime.plugin_name/plugin_index", e.to_string()))?;
        Ok(())
    }

    /// `output.node_name`, else the node's name from the downward API (`NODE_NAME`), else
    /// the host name.
    pub fn node_name(&self) -> String {
        self.output
            .node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "local".into())
            })
    }

    pub fn writer_config(&self) -> WriterConfig {
        WriterConfig {
            exporter: self.node_name(),
            node_ip: self.output.node_ip.clone(),
            compression: self.output.compression.parse().unwrap_or_default(),
            ipv6_extension: self.output.ipv6_extension,
            rotate_after: Duration::from_secs(self.output.rotate_secs),
            max_file_bytes: self.output.max_file_mib.map(|m| m << 20),
            ..WriterConfig::default()
        }
    }

    pub fn probe_config(&self) -> ProbeConfig {
        ProbeConfig {
            ring_bytes: self.kernel.ring_bytes,
            ring_count: self.kernel.ring_count,
            args_max: self.capture.args_max,
            fd_table_entries: self.kernel.fd_table_entries,
            default_mode: self.capture.default_mode,
            channel_capacity: self.kernel.queue_records,
            hooks: self.kernel.hooks,
            ..ProbeConfig::default()
        }
    }

    pub fn nri_config(&self) -> crate::nri::NriConfig {
        crate::nri::NriConfig {
            socket: self.runtime.nri_socket.clone(),
            plugin_name: self.runtime.plugin_name.clone(),
            plugin_index: self.runtime.plugin_index.clone(),
        }
    }

    pub fn state_config(&self) -> StateConfig {
        StateConfig {
            capture_env: self.capture.env,
            process_flows: self.flows.process_flows,
            max_processes: self.kernel.max_processes,
            max_exited_processes: self.kernel.max_exited_processes,
            redact: crate::redact::ArgRedactor::new(
                self.capture.redact_args,
                &self.capture.redact_flags,
            ),
            ..StateConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<AgentConfig, ConfigError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        AgentConfig::load(f.path())
    }

    #[test]
    fn a_partial_file_keeps_defaults_for_the_rest() {
        let c = load("output:\n  dir: /data\n  rotate_secs: 60\nflows:\n  interval_secs: 10\n")
            .unwrap();
        assert_eq!(c.output.dir, PathBuf::from("/data"));
        assert_eq!((c.output.rotate_secs, c.flows.interval_secs), (60, 10));
        assert_eq!(c.capture, CaptureConfig::default());
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = load("output:\n  dir: /data\n  rotat_secs: 60\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":3:3:") && e.contains("unknown field `rotat_secs`"),
            "{e}"
        );
        let e = load("flows:\n  interval_secs: soon\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:18:") && e.contains("invalid type"), "{e}");
        let e = load("capture:\n  default_mode: most\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2:3: capture: unknown capture mode \"most\": expected off,")
                && !e.contains("at line"),
            "{e}"
        );
        let e = load("capture:\n  cgroups:\n    system.slice/db.service: sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":3:5: capture.cgroups: unknown capture mode \"sometimes\""),
            "{e}"
        );
        let e = load("kernel:\n  hooks: trampoline\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2:10:") && e.contains("unknown variant `trampoline`"),
            "{e}"
        );
    }

    #[test]
    fn the_example_in_deploy_is_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.yaml");
        assert_eq!(AgentConfig::load(&path).unwrap(), AgentConfig::default());
    }
}
