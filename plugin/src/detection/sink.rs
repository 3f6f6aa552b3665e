//! The detection rules as a sink: every record the agent writes, with the entities it refers
//! to, goes through a bounded queue to a worker thread that flattens it as sf-processor does,
//! evaluates the rules in force and writes each alert (a record at least one rule matched) as
//! a JSON line to the alert files and, if asked, to stdout. Records go over in batches of up to
//! 512 or 100 ms (at most a second at a trickle), so an alert follows its record by that much.
//! The pipeline never waits for the worker: when the queue is full the batch is dropped and its
//! records counted (`losses_total{what="rules_records_dropped"}`).

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    path::PathBuf,
    sync::{
        Arc,
        mpsc::{self, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sysflow::{Record, SfHeader};
use sysflow_rules::{
    Policy,
    engine::{Evaluated, Verdict},
    flat::{Context, Flat},
    json,
};
use tracing::{info, warn};

use super::{LoadedRules, alert_files::AlertFiles};
use crate::{
    flows::Item,
    internal_events::{Loss, Losses},
    metrics::detection::{AlertLabels, DetectionMetrics},
    sink::{Sink, SinkError},
    state::{Entity, Forget},
};

pub struct RulesConfig {
    /// Where the alert files go (the SysFlow output folder).
    pub dir: PathBuf,
    pub rotate_every: Duration,
    /// Also write each alert to stdout.
    pub stdout: bool,
    /// Batches the queue holds (each up to [`SEND_AT`] records).
    pub queue_batches: usize,
    /// The trace header's exporter and address (`sf.node.id`, `sf.node.ip`).
    pub node: String,
    pub node_ip: String,
}

enum Job {
    Entity(Entity),
    Forget(Forget),
    Record(Record),
    Tick(Instant),
}

pub struct RulesSink {
    tx: Option<SyncSender<Vec<Job>>>,
    worker: Option<JoinHandle<()>>,
    losses: Arc<Losses>,
    /// Jobs gathered for the next batch, its records, and when the first was gathered.
    pending: Vec<Job>,
    pending_records: u64,
    pending_since: Option<Instant>,
}

/// A batch goes to the worker with this many records, or once its first job waited
/// [`SEND_AFTER`] (seen at the next pipeline pass; the pipeline's tick sends what is left
/// every second): waking the worker for each small pipeline pass cost more than evaluating.
const SEND_AT: u64 = 512;
const SEND_AFTER: Duration = Duration::from_millis(100);

impl RulesSink {
    pub fn start(
        rules: Arc<LoadedRules>,
        config: RulesConfig,
        metrics: DetectionMetrics,
        losses: Arc<Losses>,
    ) -> std::io::Result<RulesSink> {
        let (tx, rx) = mpsc::sync_channel(config.queue_batches.max(1));
        let (version, policy) = rules.current();
        metrics
            .rules_loaded
            .set(policy.rules.iter().filter(|r| r.enabled).count() as i64);
        let header = SfHeader {
            version: 5,
            exporter: config.node.clone(),
            ip: config.node_ip.clone(),
            filename: String::new(),
        };
        let worker = Worker {
            files: AlertFiles::new(&config.dir, config.rotate_every),
            rules,
            version,
            policy,
            stdout: config.stdout,
            metrics,
            losses: losses.clone(),
            line: String::new(),
            series: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("detection-rules".into())
            .spawn(move || worker.run(rx, header))?;
        Ok(RulesSink {
            tx: Some(tx),
            worker: Some(handle),
            losses,
            pending: Vec::new(),
            pending_records: 0,
            pending_since: None,
        })
    }

    /// Hands the gathered jobs to the worker.
    fn send(&mut self) {
        self.pending_since = None;
        let records = std::mem::take(&mut self.pending_records);
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.losses.emit(
                Loss::RulesRecordDropped,
                records,
                "the detection rules' queue is full: records not evaluated",
            ),
            Err(TrySendError::Disconnected(_)) => self.losses.emit(
                Loss::RulesRecordDropped,
                records,
                "the detection rules' worker stopped: records not evaluated",
            ),
        }
    }
}

impl Sink for RulesSink {
    fn consume(&mut self, items: &[Item]) {
        let before = self.pending.len();
        for item in items {
            match item {
                Item::Entity(e) => self.pending.push(Job::Entity(e.clone())),
                Item::Forget(f) => self.pending.push(Job::Forget(f.clone())),
                Item::Record { record, .. } => {
                    self.pending_records += 1;
                    self.pending.push(Job::Record(record.clone()));
                }
                Item::OpenFailed { .. } | Item::LiveProcesses(_) => {}
            }
        }
        if self.pending.len() == before {
            return;
        }
        let now = Instant::now();
        let since = *self.pending_since.get_or_insert(now);
        if self.pending_records >= SEND_AT || now.duration_since(since) >= SEND_AFTER {
            self.send();
        }
    }

    fn tick(&mut self, now: Instant) {
        self.pending.push(Job::Tick(now));
        self.send();
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.send();
        // Closing the queue ends the worker once it took what is queued.
        self.tx = None;
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            warn!("the detection rules' worker panicked");
        }
        Ok(())
    }
}

struct Worker {
    rules: Arc<LoadedRules>,
    version: u64,
    policy: Arc<Policy>,
    files: AlertFiles,
    stdout: bool,
    metrics: DetectionMetrics,
    losses: Arc<Losses>,
    line: String,
    /// Alert series by container id, removed when the container is forgotten.
    series: HashMap<String, HashSet<AlertLabels>>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Vec<Job>>, header: SfHeader) {
        // The entities the records are joined with, made and dropped on this thread only
        // (shared without atomic counts).
        let mut context = Context::default();
        context.start_file(true);
        context.push(Record::Header(header));
        while let Ok(batch) = rx.recv() {
            if self.rules.version() != self.version {
                (self.version, self.policy) = self.rules.current();
            }
            let start = Instant::now();
            let mut evaluated = 0;
            // By reference: a record is only read, and moving each out of the batch cost more
            // than copying the few entities.
            for job in &batch {
                match job {
                    Job::Entity(e) => {
                        context.push(match e.clone() {
                            Entity::Process(p) => Record::Process(p),
                            Entity::File(f) => Record::File(f),
                            Entity::Container(c) => Record::Container(c),
                            Entity::Pod(p) => Record::Pod(p),
                        });
                    }
                    Job::Forget(Forget::Process(oid)) => context.forget_process(*oid),
                    Job::Forget(Forget::File(oid)) => context.forget_file(*oid),
                    Job::Forget(Forget::Pod(id)) => context.forget_pod(id),
                    Job::Forget(Forget::Container(id)) => {
                        context.forget_container(id);
                        for labels in self.series.remove(id).unwrap_or_default() {
                            self.metrics.alerts.remove(&labels);
                        }
                    }
                    Job::Record(record) => {
                        match self.policy.evaluate_record(&mut context, record) {
                            Some(Evaluated::Flat(flat, Verdict::Matched(matched)))
                                if !matched.is_empty() =>
                            {
                                evaluated += 1;
                                self.alert(&flat, &matched);
                            }
                            Some(_) => evaluated += 1,
                            None => {}
                        }
                    }
                    Job::Tick(now) => {
                        if let Err(e) = self.files.rotate_if_due(*now) {
                            warn!("cannot complete the alert file: {e}");
                        }
                    }
                }
            }
            self.metrics.records_evaluated.inc_by(evaluated);
            self.metrics
                .evaluation_seconds
                .inc_by(start.elapsed().as_secs_f64());
        }
        match self.files.finish() {
            Ok(Some(last)) => info!(file = %last.display(), "alert file completed"),
            Ok(None) => {}
            Err(e) => warn!("cannot complete the alert file: {e}"),
        }
    }

    fn alert(&mut self, flat: &Flat, matched: &[usize]) {
        self.line.clear();
        json::encode(&mut self.line, flat, &self.policy, matched);
        if let Err(e) = self.files.write(&self.line, Instant::now()) {
            self.losses
                .emit(Loss::AlertLost, 1, format_args!("alert not written: {e}"));
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", self.line);
        }
        let (namespace, pod) = flat
            .pod
            .as_deref()
            .map_or((String::new(), String::new()), |p| {
                (p.pod.namespace.clone(), p.pod.name.clone())
            });
        let container = flat.container.as_deref();
        for &i in matched {
            let rule = &self.policy.rules[i];
            let labels = AlertLabels {
                rule: rule.name.clone(),
                priority: rule.priority.name(),
                namespace: namespace.clone(),
                pod: pod.clone(),
                container: container.map_or(String::new(), |c| c.name.clone()),
            };
            self.metrics.alerts.get_or_create(&labels).inc();
            if let Some(c) = container {
                self.series.entry(c.id.clone()).or_default().insert(labels);
            }
        }
    }
}
