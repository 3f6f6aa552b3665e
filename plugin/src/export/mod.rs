//! Export: completed files leave the node for an S3-compatible object store, nothing lost.
//!
//! The output folder is the spool (`spool.rs`): a file the writer completed waits there until
//! the store confirmed the object (`store.rs`: size and checksum), and only then is removed
//! (or kept a while). So a store that is down, an agent that is killed mid-upload, or one
//! restarted a day later all end the same way: the next pass finds what is still there and
//! uploads it under the same key (`keys.rs`), overwriting any earlier attempt. Failures wait
//! a capped exponential backoff with jitter before the next try. The spool is bounded by
//! bytes; beyond the bound the oldest files are dropped, each counted and logged.
//!
//! With `parquet` among the formats, each completed `.sf` file is converted next to it
//! before it is uploaded, and the Parquet file is shipped like any other.

pub mod credentials;
pub mod keys;
pub mod spool;
pub mod store;

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, time::Instant};
use tracing::{debug, info, warn};

use self::{
    keys::KeyLayout,
    spool::{FileKind, Waiting},
    store::{Store, UploadError},
};
use crate::{
    internal_events::{Loss, Losses},
    log_limit::LogLimiter,
    metrics::export::ExportMetrics,
};

/// What the exporter does, resolved from the configuration.
pub struct ExportSettings {
    pub dir: PathBuf,
    pub bucket: String,
    pub layout: KeyLayout,
    pub metadata: Vec<(&'static str, String)>,
    pub parquet: bool,
    pub sysflow: bool,
    pub create_bucket: bool,
    pub spool_max_bytes: u64,
    pub keep_local: Option<Duration>,
    pub scan_every: Duration,
    pub max_backoff: Duration,
}

/// Tells a running exporter to finish: one last pass until the deadline, then return.
pub type FinishSignal = watch::Sender<Option<Instant>>;

pub struct Exporter {
    settings: ExportSettings,
    store: Store,
    metrics: ExportMetrics,
    losses: Arc<Losses>,
    bucket_ready: bool,
    /// Consecutive failed attempts (the backoff grows with them).
    failures_in_row: u32,
    /// `.sf` files whose conversion failed: shipped as SysFlow only, not converted again.
    unconvertible: HashSet<String>,
    failure_log: LogLimiter,
}

/// How a pass ended.
enum Pass {
    /// Everything waiting was uploaded (or there was nothing).
    Done,
    /// An attempt failed: wait the backoff before the next.
    Failed,
    /// The finish deadline passed.
    OutOfTime,
}

impl Exporter {
    pub fn new(
        settings: ExportSettings,
        store: Store,
        metrics: ExportMetrics,
        losses: Arc<Losses>,
    ) -> Exporter {
        Exporter {
            bucket_ready: !settings.create_bucket,
            settings,
            store,
            metrics,
            losses,
            failures_in_row: 0,
            unconvertible: HashSet::new(),
            failure_log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Runs until `finish` carries a deadline; then uploads what it can until then.
    pub async fn run(mut self, mut finish: watch::Receiver<Option<Instant>>) {
        loop {
            let deadline = *finish.borrow_and_update();
            let outcome = self.pass(deadline).await;
            if let Some(deadline) = deadline {
                // A pass can leave new files behind (the Parquet files it converted).
                if let Pass::Done = outcome
                    && self.waiting_count() == 0
                {
                    return;
                }
                if Instant::now() >= deadline {
                    self.log_left_over();
                    return;
                }
                // Retry at once-a-second while time is left: the store may just be slow.
                tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_secs(1)))
                    .await;
                continue;
            }
            let wait = match outcome {
                Pass::Failed => {
                    self.metrics.retries.inc();
                    self.backoff()
                }
                _ => self.settings.scan_every,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = finish.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// 1 s, 2 s, 4 s, ... capped, times a random factor in [0.5, 1) so that agents that lost
    /// the store together do not come back together.
    fn backoff(&self) -> Duration {
        let exp = self.failures_in_row.saturating_sub(1).min(16);
        let full = Duration::from_secs(1 << exp).min(self.settings.max_backoff);
        full.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }

    fn waiting_count(&self) -> usize {
        spool::scan(&self.settings.dir)
            .map(|w| w.iter().filter(|w| self.ships(w.kind)).count())
            .unwrap_or(0)
    }

    fn log_left_over(&self) {
        let files = self.waiting_count();
        if files > 0 {
            warn!(
                files,
                "export: files not uploaded at shutdown stay in the output folder for the next start"
            );
        }
    }

    fn ships(&self, kind: FileKind) -> bool {
        match kind {
            FileKind::Sysflow => self.settings.sysflow || self.settings.parquet,
            FileKind::Parquet => self.settings.parquet,
            FileKind::Alerts => true,
        }
    }

    async fn pass(&mut self, deadline: Option<Instant>) -> Pass {
        let waiting = match spool::scan(&self.settings.dir) {
            Ok(w) => w,
            Err(e) => {
                self.metrics.failed("local");
                let message = format!("export: cannot list {}: {e}", self.settings.dir.display());
                self.log_failure(&message);
                return Pass::Failed;
            }
        };
        let mut waiting: Vec<Waiting> =
            waiting.into_iter().filter(|w| self.ships(w.kind)).collect();
        self.enforce_bound(&mut waiting);
        self.update_gauges(&waiting);
        if let Some(keep) = self.settings.keep_local {
            let _ = spool::prune_uploaded(&self.settings.dir, keep, SystemTime::now());
        }
        if waiting.is_empty() {
            return Pass::Done;
        }
        if !self.bucket_ready {
            match self.store.create_bucket().await {
                Ok(()) => {
                    info!(bucket = %self.settings.bucket, "export: bucket ready");
                    self.bucket_ready = true;
                }
                Err(e) => {
                    let action = format!("creating bucket {}", self.settings.bucket);
                    return self.failed(&e, &action);
                }
            }
        }
        let mut left = waiting.len();
        let mut left_bytes: u64 = waiting.iter().map(|w| w.bytes).sum();
        // A file the store refused for itself (unreadable here, or held differently there)
        // does not hold up the others; a pass that had one still backs off.
        let mut a_file_failed = false;
        for file in &waiting {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Pass::OutOfTime;
            }
            if file.kind == FileKind::Sysflow && self.settings.parquet {
                self.convert(file).await;
            }
            // With Parquet only, the SysFlow file goes only if it could not be converted:
            // nothing leaves the node unshipped.
            let ship_sysflow = self.settings.sysflow || self.unconvertible.contains(&file.name);
            if file.kind == FileKind::Sysflow && !ship_sysflow {
                // Converted; the SysFlow file itself is not shipped.
                if let Err(e) = spool::release(file, self.settings.keep_local.is_some()) {
                    warn!("export: cannot remove {}: {e}", file.path.display());
                }
            } else {
                let key = self.settings.layout.key(&file.name, file.started);
                debug!(file = %file.name, key, bytes = file.bytes, "export: uploading");
                let sent = self
                    .store
                    .upload(
                        &key,
                        &file.path,
                        file.kind.content_type(),
                        &self.settings.metadata,
                    )
                    .await;
                match sent {
                    Ok(bytes) => {
                        self.metrics.uploaded(file.kind.label(), bytes);
                        self.failures_in_row = 0;
                        info!(file = %file.name, key, bytes, "export: uploaded");
                        if let Err(e) = spool::release(file, self.settings.keep_local.is_some()) {
                            warn!(
                                "export: uploaded, but cannot remove {}: {e}",
                                file.path.display()
                            );
                        }
                    }
                    Err(e) => {
                        let action =
                            format!("uploading {} to bucket {}", file.name, self.settings.bucket);
                        let outcome = self.failed(&e, &action);
                        if !matches!(e.reason(), "local" | "verify") {
                            return outcome;
                        }
                        a_file_failed = true;
                        continue;
                    }
                }
            }
            left -= 1;
            left_bytes -= file.bytes;
            self.metrics.spool_files.set(left as i64);
            self.metrics.spool_bytes.set(left_bytes as i64);
        }
        if a_file_failed {
            Pass::Failed
        } else {
            Pass::Done
        }
    }

    /// Converts a completed `.sf` file into its Parquet file beside it, once.
    async fn convert(&mut self, file: &Waiting) {
        let parquet = file
            .path
            .with_file_name(sysflow_parquet::output_name(&file.path));
        if parquet.exists() || self.unconvertible.contains(&file.name) {
            return;
        }
        let (input, dir) = (file.path.clone(), self.settings.dir.clone());
        let done =
            tokio::task::spawn_blocking(move || sysflow_parquet::convert_file(&input, &dir)).await;
        let problem = match done {
            Ok(Ok(c)) => c.read_error.map(|e| format!("read stopped early: {e}")),
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = problem {
            self.metrics.failed("convert");
            warn!(file = %file.name, "export: Parquet conversion: {problem}");
            self.unconvertible.insert(file.name.clone());
        }
    }

    fn failed(&mut self, e: &UploadError, action: &str) -> Pass {
        let reason = e.reason();
        self.metrics.failed(reason);
        self.failures_in_row += 1;
        let message = format!(
            "export: {action} failed ({reason}): {}; retrying",
            store::with_causes(e)
        );
        self.log_failure(&message);
        Pass::Failed
    }

    fn log_failure(&mut self, message: &str) {
        if let Some(not_logged) = self.failure_log.allow() {
            warn!(not_logged, "{message}");
        }
    }

    /// Drops the oldest files past `spool_max_bytes`, each counted and logged.
    fn enforce_bound(&self, waiting: &mut Vec<Waiting>) {
        let drop = spool::over_limit(waiting, self.settings.spool_max_bytes);
        for file in waiting.drain(..drop) {
            if let Err(e) = std::fs::remove_file(&file.path) {
                warn!("export: cannot drop {}: {e}", file.path.display());
                continue;
            }
            self.metrics.dropped_files.inc();
            self.metrics.dropped_bytes.inc_by(file.bytes);
            self.losses.emit(
                Loss::ExportFileDropped,
                1,
                format_args!(
                    "export: the spool is over {} bytes: dropped {} ({} bytes) without uploading it",
                    self.settings.spool_max_bytes, file.name, file.bytes
                ),
            );
        }
    }

    fn update_gauges(&self, waiting: &[Waiting]) {
        self.metrics.spool_files.set(waiting.len() as i64);
        self.metrics
            .spool_bytes
            .set(waiting.iter().map(|w| w.bytes).sum::<u64>() as i64);
        // Since it was completed: a healthy exporter keeps this near the scan interval.
        let now = SystemTime::now();
        let oldest = waiting
            .iter()
            .map(|w| now.duration_since(w.completed).unwrap_or_default())
            .max();
        self.metrics
            .oldest_waiting_seconds
            .set(oldest.map_or(0, |age| age.as_secs() as i64));
    }
}
