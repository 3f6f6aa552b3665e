//! `nri-sysflow run`: capture, turn kernel records into SysFlow, write rotated files.
//!
//! Standalone mode (the embedded default): everything on the host is captured and containers
//! are recognised from cgroup paths. The first SIGINT/SIGTERM (or `--duration`) ends the run
//! cleanly: open flows are written as truncated and the current file is completed. A second
//! signal exits at once; the files on disk are still readable (up to their last block) and the
//! next start completes their names.

pub mod config;
mod health;
mod memory;

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use sysflow::SysFlowWriter;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};
use tracing::{debug, info, warn};

use self::config::AgentConfig;
use crate::{
    capture::CaptureMode,
    detection::{
        LoadedRules, alert_files,
        sink::{RulesConfig, RulesSink},
    },
    host::{CgroupError, Host},
    internal_events::Losses,
    metrics::{Metrics, server, workload::WorkloadSeries},
    nri::stats::NriStats,
    pipeline::Pipeline,
    policy::{Policy, PolicyErrors},
    probe::{Probe, boot_now_ns},
    sink::{
        Fanout, SinkError,
        sysflow_files::{FileSink, FileSinkReport},
        workload_metrics::MetricsSink,
    },
    state::State,
    workloads::{
        Workloads,
        source::{self, SourceConfig, SourceState},
    },
};

/// At shutdown, how long records still arriving are taken before the files are completed.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Loading eBPF needs privileges.
    #[error("must run as root: loading eBPF programs needs CAP_BPF and CAP_PERFMON")]
    NotRoot,
    /// The output directory cannot be used.
    #[error("output directory {path} is not writable: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The SysFlow writer could not start.
    #[error("cannot start writing SysFlow: {0}")]
    Writer(#[from] sysflow::SysflowWriteError),
    /// The kernel side could not start.
    #[error("cannot start kernel capture: {0}")]
    Probe(#[from] crate::probe::ProbeError),
    /// The capture policy file cannot be read.
    #[error("cannot read the capture policy {path}: {source}")]
    PolicyRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The capture policy is invalid.
    #[error("invalid capture policy:\n{0}")]
    Policy(#[from] PolicyErrors),
    /// The detection rules do not compile (the error names file, line and column).
    #[error("detection rules: {0}")]
    Rules(#[from] sysflow_rules::CompileError),
    /// The detection rules' worker could not start.
    #[error("cannot start the detection rules' worker: {0}")]
    RulesWorker(std::io::Error),
    /// SIGINT and SIGTERM cannot be handled (the run could not end cleanly).
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signals(std::io::Error),
    /// No cgroup2 hierarchy to attribute records to.
    #[error("{0}")]
    Cgroup(#[from] CgroupError),
    /// A cgroup named in `capture.cgroups` does not exist.
    #[error("capture.cgroups: {path}: {source}")]
    ConfiguredCgroup { path: String, source: CgroupError },
    /// The last file could not be completed at the end of the run.
    #[error("{0}")]
    Finish(#[from] SinkError),
    /// The export settings are wrong (the store is never contacted at start: a store that is
    /// down is survived, a configuration that cannot work is not).
    #[error("export: {0}")]
    ExportCredentials(#[from] crate::export::credentials::CredentialsError),
    #[error("export: {0}")]
    ExportStore(#[from] crate::export::store::StoreSetupError),
    /// A host mount the agent needs is missing.
    #[error("{0}")]
    Host(#[from] crate::host::HostError),
    /// The metrics address cannot be served.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    pub kernel_records: u64,
    pub records_written: u64,
    /// SysFlow records the output could not take (a full disk, a failing device).
    pub records_lost: u64,
    pub files_completed: u64,
    pub ring_drops: u64,
    pub last_file: Option<PathBuf>,
    /// Peak resident memory of the agent (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// NRI events and handler latency, when NRI was used.
    pub nri: Option<String>,
    /// Containers registered after their first process ran (containerd-API fallback).
    pub late_registrations: u64,
}

/// VmHWM of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// The output holds every workload's command lines and paths: files 0600 in a 0700 folder.
/// The umask covers every file any stage creates (SysFlow, alerts, Parquet, `uploaded/`); a
/// folder that already exists is narrowed; its mode before, if it was.
fn check_output_dir(dir: &Path) -> Result<Option<u32>, StartError> {
    use std::os::unix::fs::PermissionsExt as _;
    let err = |source| StartError::Output {
        path: dir.into(),
        source,
    };
    // SAFETY: umask has no preconditions; the agent has created no file yet.
    unsafe { libc::umask(0o077) };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o777;
    let narrowed = mode & 0o077 != 0;
    if narrowed {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    let probe_file = dir.join(format!(".nri-sysflow-write-test-{}", std::process::id()));
    std::fs::write(&probe_file, b"").map_err(err)?;
    let _ = std::fs::remove_file(&probe_file);
    Ok(narrowed.then_some(mode))
}

/// Waits for SIGINT or SIGTERM; a second one exits the process at once.
fn stop_signal() -> std::io::Result<oneshot::Receiver<()>> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        info!(
            "stopping: writing open flows and completing the current file (again to quit at once)"
        );
        let _ = tx.send(());
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        eprintln!("nri-sysflow: second signal, exiting now");
        std::process::exit(130);
    });
    Ok(rx)
}

pub async fn run(
    config: AgentConfig,
    duration: Option<Duration>,
) -> Result<RunSummary, StartError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(StartError::NotRoot);
    }
    let narrowed_from = check_output_dir(&config.output.dir)?;
    // The policy first: a bad one stops the start before anything is loaded.
    let (policy, policy_text) = match &config.capture.policy {
        Some(path) => {
            let text = crate::host::trust::read_trusted(path).map_err(|source| {
                StartError::PolicyRead {
                    path: path.clone(),
                    source,
                }
            })?;
            (
                Policy::parse(&text, &path.display().to_string())?,
                Some(text),
            )
        }
        None => (Policy::uniform(config.capture.default_mode), None),
    };
    // Detection rules likewise: rules that do not compile stop the start here.
    let detection_rules = if config.detection.rules.is_empty() {
        None
    } else {
        Some(LoadedRules::load(config.detection.rules.clone())?)
    };
    let metrics = Arc::new(Metrics::new());
    let metrics_export = metrics.export.clone();
    let losses = Arc::new(Losses::default());
    let exporter = export_settings(&config)?.map(|(settings, store)| {
        crate::export::Exporter::new(settings, store, metrics_export.clone(), losses.clone())
    });
    let host = Host::at(&config.host.proc, config.host.cgroup.as_deref())?;
    let configured_cgroups = configured_cgroups(&config, &host)?;
    if let Some(addr) = config.metrics.addr {
        server::start(addr, metrics.clone())
            .await
            .map_err(|source| StartError::Metrics { addr, source })?;
    }
    let recovered = sysflow::writer::recover_partials(&config.output.dir)?;
    if !recovered.is_empty() {
        info!(
            count = recovered.len(),
            "completed the names of files a previous run left"
        );
    }
    let writer = SysFlowWriter::to_directory(&config.output.dir, config.writer_config())?;
    let files = FileSink::new(
        writer,
        Duration::from_secs(config.output.flush_secs.max(1)),
        losses.clone(),
    );
    let files_report = files.report();
    let workload_metrics = MetricsSink::new(
        WorkloadSeries::new(metrics.workload.clone()),
        Duration::from_secs(config.metrics.series_grace_secs),
    );
    let mut probe = Probe::load(&config.probe_config())?;
    let state = State::new(
        config.state_config(),
        host.clone(),
        probe.boot_to_wall_offset_ns(),
    );
    let mut sinks = Fanout::default().with(files).with(workload_metrics);
    let mut rules_watch = None;
    if let Some((rules, fingerprint)) = detection_rules {
        for lint in &rules.current().1.lints {
            warn!("detection rules: {lint}");
        }
        let recovered = alert_files::recover_partials(&config.output.dir).map_err(|source| {
            StartError::Output {
                path: config.output.dir.clone(),
                source,
            }
        })?;
        if !recovered.is_empty() {
            info!(
                count = recovered.len(),
                "completed the names of alert files a previous run left"
            );
        }
        let sink = RulesSink::start(
            rules.clone(),
            RulesConfig {
                dir: config.output.dir.clone(),
                rotate_every: Duration::from_secs(config.output.rotate_secs),
                stdout: config.detection.alerts_stdout,
                queue_batches: config.detection.queue_batches,
                node: config.node_name(),
                node_ip: config.output.node_ip.clone(),
            },
            metrics.detection.clone(),
            losses.clone(),
        )
        .map_err(StartError::RulesWorker)?;
        sinks = sinks.with(sink);
        rules_watch = Some(tokio::spawn(crate::detection::watch::watch(
            rules,
            fingerprint,
            metrics.detection.clone(),
        )));
    }
    let mut pipeline = Pipeline::new(state, sinks);
    let (workloads, updates) = Workloads::new(
        policy,
        Some(probe.control()),
        host,
        config.node_name(),
        config.output.node_ip.parse().ok(),
        losses.clone(),
    );
    for (path, id, mode) in &configured_cgroups {
        probe.set_cgroup_mode(*id, *mode)?;
        info!(cgroup = %path, id, %mode, "capture mode from the configuration");
    }
    let mut records = probe.records(losses.clone())?;
    let (finish_export, finish_rx) = tokio::sync::watch::channel(None);
    let export_task = exporter.map(|e| tokio::spawn(e.run(finish_rx)));
    // After attaching, so a process starting now is seen either here or by the probe.
    pipeline.seed();
    // The always-on programs are attached (Probe::load attaches them or fails).
    metrics.readiness.set_probes_attached(true);
    let nri_stats = Arc::new(NriStats::default());
    let _ = nri_stats
        .histogram
        .set(metrics.health.nri_handler_seconds.clone());
    let source_state = Arc::new(SourceState::default());
    let launched = std::env::var_os("NRI_PLUGIN_SOCKET").is_some() && config.runtime.nri;
    let mut source_task = tokio::spawn(source::run(
        SourceConfig {
            nri: config.runtime.nri.then(|| config.nri_config()),
            containerd_socket: config.runtime.containerd_socket.clone(),
            containerd_namespace: config.runtime.containerd_namespace.clone(),
        },
        workloads.clone(),
        nri_stats.clone(),
        source_state.clone(),
    ));
    let mut source_running = true;
    let policy_watch = match (&config.capture.policy, policy_text) {
        (Some(path), Some(text)) => Some(tokio::spawn(crate::workloads::policy_watch::watch(
            path.clone(),
            text,
            workloads.clone(),
        ))),
        _ => None,
    };
    // Signals are handled before "capturing" is said: a stop right after it is a clean one.
    let mut stop = stop_signal().map_err(StartError::Signals)?;
    // Said once started: a start error stays one line.
    if let Some(mode) = narrowed_from {
        info!(
            "output folder {} narrowed from mode {mode:04o} to 0700 (its files hold every workload's command lines)",
            config.output.dir.display()
        );
    }
    info!(
        processes = pipeline.state_stats().processes,
        hooks = %probe.hook_set(),
        attachments = probe.attachments(),
        output = %config.output.dir.display(),
        "capturing"
    );
    match memory::page_out_binary() {
        Ok(bytes) => debug!(
            mib = bytes >> 20,
            "start-up pages of the binary handed back"
        ),
        Err(e) => debug!("start-up pages of the binary stay resident: {e}"),
    }

    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let flow_interval = Duration::from_secs(config.flows.interval_secs);
    let mut flows =
        tokio::time::interval_at(tokio::time::Instant::now() + flow_interval, flow_interval);
    let mut status = StatusLine::new(std::io::stderr().is_terminal());
    let mut kernel_fd_entries = 0;
    let mut output_failures = 0;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = &mut deadline => break,
            _ = &mut source_task, if source_running => {
                source_running = false;
                // Only a runtime-launched plugin's source ends: the runtime closed on us.
                if launched {
                    break;
                }
            }
            _ = updates.ready() => pipeline.workload_updates(updates.drain()),
            _ = flows.tick() => {
                // The kernel reports every descriptor's counters into the record stream; each
                // report ends or cuts its flow as it arrives.
                if let Err(e) = probe.flush(false) {
                    warn!("periodic flush of the kernel's counters failed: {e}");
                }
                pipeline.interval();
                // Walking the kernel table costs a syscall per entry: at the flow interval only.
                kernel_fd_entries = probe.fd_table_len();
            }
            _ = tick.tick() => {
                pipeline.tick(boot_now_ns(), Instant::now());
                let drops = probe.kernel_stats().map(|s| s.ring_full).unwrap_or(0);
                let state = pipeline.state_stats();
                status.show(&files_report, state.processes, drops);
                let sources = health::Sources {
                    probe: &probe,
                    losses: &losses,
                    state: &state,
                    files: &files_report,
                    queue_length: records.queued() as usize,
                    records_read: records.stats.records.load(Relaxed),
                    kernel_fd_entries,
                    nri: &nri_stats,
                    workloads: &workloads,
                    source: source_state.get(),
                    source_settled: source_state.settled(),
                };
                health::update(&metrics.health, &sources);
                output_failures =
                    health::update_readiness(&metrics.readiness, &sources, output_failures);
            }
            batch = records.recv_batch() => {
                let Some(batch) = batch else { break };
                // A container's metadata is queued before its workload runs: taking the
                // queue after the batch and before applying it tags its first records.
                let waiting = updates.drain();
                if !waiting.is_empty() {
                    pipeline.workload_updates(waiting);
                }
                pipeline.records(batch);
            }
        }
    }
    status.clear();
    source_task.abort();
    if let Some(task) = policy_watch {
        task.abort();
    }
    if let Some(task) = rules_watch {
        task.abort();
    }
    pipeline.workload_updates(updates.drain());
    // Every descriptor's counters so far into the stream, then take what the kernel produced
    // and end every open flow. Bounded: on a busy node records never stop arriving.
    if let Err(e) = probe.flush(true) {
        warn!("final flush of the kernel's counters failed: {e}");
    }
    let drain_until = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
    while let Ok(Some(batch)) = tokio::time::timeout_at(
        drain_until.min(tokio::time::Instant::now() + Duration::from_millis(100)),
        records.recv_batch(),
    )
    .await
    {
        pipeline.records(batch);
    }
    let kernel_records = pipeline.state_stats().kernel_records;
    let ring_drops = probe.kernel_stats().map(|s| s.ring_full).unwrap_or(0);
    pipeline.finish(boot_now_ns())?;
    if let Some(task) = export_task {
        // What is complete now goes up while the grace lasts; the rest waits for the next start.
        let grace = Duration::from_secs(config.export.shutdown_grace_secs);
        let _ = finish_export.send(Some(tokio::time::Instant::now() + grace));
        if tokio::time::timeout(grace + Duration::from_secs(5), task)
            .await
            .is_err()
        {
            warn!(
                "export: still busy at the end of the shutdown grace; the rest waits for the next start"
            );
        }
    }
    let files = files_report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    drop(records);
    // Detaching takes a few seconds (the kernel serializes it); the files are complete already.
    drop(probe);
    Ok(RunSummary {
        kernel_records,
        records_written: files.writer.records_by_type.iter().sum(),
        records_lost: files.writer.records_lost,
        files_completed: files.writer.files_completed + 1,
        ring_drops,
        last_file: files.last_file,
        peak_rss_mib: peak_rss_mib(),
        nri: (nri_stats.connections.load(Relaxed) > 0).then(|| nri_stats.summary()),
        late_registrations: workloads.stats.late_registrations.load(Relaxed),
    })
}

/// The exporter's settings and store client, when `export.url` is set. Nothing is sent yet.
fn export_settings(
    config: &AgentConfig,
) -> Result<Option<(crate::export::ExportSettings, crate::export::store::Store)>, StartError> {
    use crate::export::{ExportSettings, credentials, keys, store};
    let Some(Ok((bucket, prefix))) = config.export.bucket_and_prefix() else {
        // validate() refused a malformed URL already.
        return Ok(None);
    };
    let e = &config.export;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let found = credentials::find(&e.secrets_dir, |v| std::env::var(v).ok(), home.as_deref())?;
    match &found {
        Some(c) => info!(source = %c.source, "export: credentials"),
        None => info!("export: no credentials found; the store client's own chain applies"),
    }
    let store = store::Store::new(&store::StoreConfig {
        bucket: bucket.clone(),
        endpoint: e.endpoint.clone(),
        region: e.region.clone(),
        path_style: e.path_style,
        ca_bundle: e.ca_bundle.clone(),
        request_timeout: Duration::from_secs(e.request_timeout_secs.max(1)),
        part_bytes: (e.part_mib << 20) as usize,
        credentials: found,
    })?;
    let node = config.node_name();
    let node_ip = config.output.node_ip.clone();
    use config::ExportFormat;
    Ok(Some((
        ExportSettings {
            dir: config.output.dir.clone(),
            bucket,
            layout: keys::KeyLayout {
                prefix,
                cluster: e.cluster.clone(),
                node: node.clone(),
                node_ip: node_ip.clone(),
                dated: e.layout == config::KeyLayoutKind::Dated,
            },
            metadata: keys::metadata(&node, &node_ip, |v| std::env::var(v).ok()),
            parquet: e.formats.contains(&ExportFormat::Parquet),
            sysflow: e.formats.contains(&ExportFormat::Sysflow),
            create_bucket: e.create_bucket,
            spool_max_bytes: e.spool_max_bytes,
            keep_local: (e.keep_local_secs > 0).then(|| Duration::from_secs(e.keep_local_secs)),
            scan_every: Duration::from_millis(e.scan_interval_ms),
            max_backoff: Duration::from_secs(e.max_backoff_secs),
        },
        store,
    )))
}

/// The cgroups named in `capture.cgroups`: (path, id, mode). Checked before anything is
/// loaded, so a missing one is a start-up error of its own.
fn configured_cgroups(
    config: &AgentConfig,
    host: &Host,
) -> Result<Vec<(String, u64, CaptureMode)>, StartError> {
    config
        .capture
        .cgroups
        .iter()
        .map(|(path, mode)| {
            let id = host
                .cgroup_id(path)
                .map_err(|source| StartError::ConfiguredCgroup {
                    path: path.clone(),
                    source,
                })?;
            Ok((path.clone(), id, *mode))
        })
        .collect()
}

/// A one-line live status on a terminal: records/s, drops, files written.
struct StatusLine {
    enabled: bool,
    last: Instant,
    last_records: u64,
}

impl StatusLine {
    fn new(enabled: bool) -> Self {
        StatusLine {
            enabled,
            last: Instant::now(),
            last_records: 0,
        }
    }

    fn show(&mut self, files: &FileSinkReport, processes: usize, drops: u64) {
        if !self.enabled {
            return;
        }
        let stats = files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .writer
            .clone();
        let written: u64 = stats.records_by_type.iter().sum();
        let rate = (written - self.last_records.min(written)) as f64
            / self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        self.last_records = written;
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r\x1b[2K{rate:>9.0} records/s  {written} written  {drops} kernel drops  {} files  {} processes",
            stats.files_completed + 1,
            processes
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}
