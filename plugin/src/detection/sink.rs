//! The detection rules as a sink: every record the agent writes, with the entities it refers
//! to, goes through a bounded queue to a worker thread that flattens it as sf-processor does,
//! evaluates the rules in force and writes each alert (a record at least one rule matched) as
//! a JSON line to the alert files and, if asked, to stdout. Records go over in batches of up to
//! 512 or 100 ms (at most a second at a trickle), so an alert follows its record by that much.
//! The pipeline never waits for the worker: when the queue is full the batch is dropped and its
//! records counted (`losses_total{what="rules_records_dropped"}`).
//!
//! A batch comes back emptied, to be filled again, with the records the worker found quiet
//! whatever their counters ([`super::quiet`]): their repetitions are counted as evaluated here
//! and not handed over at all.

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::AtomicU64,
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use sysflow::{Record, SfHeader};
use sysflow_rules::{
    Policy,
    engine::{Evaluated, Verdict},
    flat::{Context, Flat},
    json,
};
use tracing::{info, warn};

use super::{
    LoadedRules,
    alert_files::AlertFiles,
    quiet::{QuietKey, QuietRecords},
};
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

/// Jobs for the worker; on the way back, emptied, with the keys of the records it found
/// quiet.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    /// The sink's [`QuietRecords::epoch`] when the first job was gathered.
    epoch: u64,
    quiet: Vec<QuietKey>,
}

pub struct RulesSink {
    tx: Option<SyncSender<Batch>>,
    /// Batches the worker is done with. Reused: a batch allocated afresh grew by copying
    /// itself several times and was freed on the other thread.
    returned: Receiver<Batch>,
    spare: Option<Batch>,
    worker: Option<JoinHandle<()>>,
    losses: Arc<Losses>,
    /// Records known quiet, and the rules' version they were learnt under.
    quiet: QuietRecords,
    rules: Arc<LoadedRules>,
    version: u64,
    evaluated: Counter,
    /// The pipeline's time in this sink.
    handoff: Counter<f64, AtomicU64>,
    /// Records known quiet where they passed, in all (logged at the end).
    known_quiet: u64,
    /// The batch being gathered, its records, and when its first job was gathered.
    pending: Batch,
    pending_records: u64,
    pending_since: Option<Instant>,
}

/// A batch goes to the worker with this many records, or once its first job waited
/// [`SEND_AFTER`] (seen at the next pipeline pass; the pipeline's tick sends what is left
/// every second): waking the worker for each small pipeline pass cost more than evaluating.
const SEND_AT: u64 = 512;
const SEND_AFTER: Duration = Duration::from_millis(100);

/// A batch's room: [`SEND_AT`] records and the entities that come with them. A batch that
/// grew past four times that (a burst in one pipeline pass) is not kept for reuse.
const BATCH_ROOM: usize = 2 * SEND_AT as usize;
/// Batches on their way back: the sink takes them at every pipeline pass.
const RETURNING: usize = 4;

impl RulesSink {
    pub fn start(
        rules: Arc<LoadedRules>,
        config: RulesConfig,
        metrics: DetectionMetrics,
        losses: Arc<Losses>,
    ) -> std::io::Result<RulesSink> {
        let (tx, rx) = mpsc::sync_channel(config.queue_batches.max(1));
        let (returning, returned) = mpsc::sync_channel(RETURNING);
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
        let evaluated = metrics.records_evaluated.clone();
        let handoff = metrics.handoff_seconds.clone();
        let worker = Worker {
            files: AlertFiles::new(&config.dir, config.rotate_every),
            rules: rules.clone(),
            version,
            policy,
            stdout: config.stdout,
            metrics,
            losses: losses.clone(),
            line: String::new(),
            series: HashMap::new(),
            returning,
        };
        let handle = std::thread::Builder::new()
            .name("detection-rules".into())
            .spawn(move || worker.run(rx, header))?;
        Ok(RulesSink {
            tx: Some(tx),
            returned,
            spare: None,
            worker: Some(handle),
            losses,
            quiet: QuietRecords::default(),
            rules,
            version,
            evaluated,
            handoff,
            known_quiet: 0,
            pending: Batch {
                jobs: Vec::with_capacity(BATCH_ROOM),
                ..Batch::default()
            },
            pending_records: 0,
            pending_since: None,
        })
    }

    fn push(&mut self, job: Job) {
        if self.pending.jobs.is_empty() {
            self.pending.epoch = self.quiet.epoch();
        }
        self.pending.jobs.push(job);
    }

    /// Learns what the worker reported and keeps a batch to fill next.
    fn take_returned(&mut self) {
        while let Ok(mut batch) = self.returned.try_recv() {
            self.quiet.learn(batch.epoch, &batch.quiet);
            batch.quiet.clear();
            if self.spare.is_none() {
                self.spare = Some(batch);
            }
        }
    }

    /// Hands the gathered jobs to the worker.
    fn send(&mut self) {
        self.pending_since = None;
        let records = std::mem::take(&mut self.pending_records);
        if self.pending.jobs.is_empty() {
            return;
        }
        let mut next = self.spare.take().unwrap_or_default();
        next.jobs.reserve(BATCH_ROOM);
        let batch = std::mem::replace(&mut self.pending, next);
        let Some(tx) = &self.tx else { return };
        let lost = match tx.try_send(batch) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => {
                "the detection rules' queue is full: records not evaluated"
            }
            Err(TrySendError::Disconnected(_)) => {
                "the detection rules' worker stopped: records not evaluated"
            }
        };
        self.losses.emit(Loss::RulesRecordDropped, records, lost);
        // The worker misses the batch's entities: what it reports no longer stands for them.
        self.quiet.forget_all();
    }
}

impl Sink for RulesSink {
    fn consume(&mut self, items: &[Item]) {
        let started = Instant::now();
        self.hand_over(items, started);
        self.handoff.inc_by(started.elapsed().as_secs_f64());
    }

    fn tick(&mut self, now: Instant) {
        let started = Instant::now();
        self.take_returned();
        self.push(Job::Tick(now));
        self.send();
        self.handoff.inc_by(started.elapsed().as_secs_f64());
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
        info!(
            records = self.known_quiet,
            "detection rules: records known quiet where they passed, not handed to the worker"
        );
        Ok(())
    }
}

impl RulesSink {
    /// Gathers what the worker needs of `items` (entities, and records not known quiet),
    /// and sends the batch when it is full or old enough (`now`).
    fn hand_over(&mut self, items: &[Item], now: Instant) {
        let version = self.rules.version();
        if version != self.version {
            self.version = version;
            self.quiet.forget_all();
        }
        self.take_returned();
        let before = self.pending.jobs.len();
        let mut known_quiet = 0;
        for item in items {
            match item {
                Item::Entity(e) => {
                    self.quiet.entity(e);
                    self.push(Job::Entity(e.clone()));
                }
                Item::Forget(f) => {
                    self.quiet.forget(f);
                    self.push(Job::Forget(f.clone()));
                }
                Item::Record { record, .. } => {
                    if QuietKey::of(record).is_some_and(|k| self.quiet.contains(&k)) {
                        known_quiet += 1;
                        continue;
                    }
                    self.pending_records += 1;
                    self.push(Job::Record(record.clone()));
                }
                Item::OpenFailed { .. } | Item::LiveProcesses(_) => {}
            }
        }
        if known_quiet > 0 {
            self.evaluated.inc_by(known_quiet);
            self.known_quiet += known_quiet;
        }
        if self.pending.jobs.len() == before {
            return;
        }
        let since = *self.pending_since.get_or_insert(now);
        if self.pending_records >= SEND_AT || now.duration_since(since) >= SEND_AFTER {
            self.send();
        }
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
    /// Where evaluated batches go back to the sink, emptied.
    returning: SyncSender<Batch>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Batch>, header: SfHeader) {
        // The entities the records are joined with, made and dropped on this thread only
        // (shared without atomic counts).
        let mut context = Context::default();
        context.start_file(true);
        context.push(Record::Header(header));
        while let Ok(mut batch) = rx.recv() {
            if self.rules.version() != self.version {
                (self.version, self.policy) = self.rules.current();
            }
            let start = Instant::now();
            let mut evaluated = 0;
            // By reference: a record is only read, and moving each out of the batch cost more
            // than copying the few entities.
            for job in &batch.jobs {
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
                        let Some(outcome) = self.policy.evaluate_record(&mut context, record)
                        else {
                            continue;
                        };
                        evaluated += 1;
                        if outcome.settled_quiet() {
                            batch.quiet.extend(QuietKey::of(record));
                        } else if let Evaluated::Flat {
                            flat,
                            verdict: Verdict::Matched(matched),
                            ..
                        } = &outcome
                            && !matched.is_empty()
                        {
                            self.alert(flat, matched);
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
            if batch.jobs.capacity() > 4 * BATCH_ROOM {
                batch.jobs = Vec::new();
            }
            batch.jobs.clear();
            // Full (the sink has spares) or gone (it finished): dropped here.
            let _ = self.returning.try_send(batch);
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

#[cfg(test)]
mod tests {
    use std::{fs, slice};

    use sysflow::{File, FileFlow, Foid, Oid, Process};

    use super::*;

    const P: Oid = Oid {
        hpid: 300,
        create_ts: 9,
    };
    const LOG: Foid = Foid([4; 20]);

    fn rule(name: &str, path: &str) -> String {
        format!(
            "- rule: {name}\n  desc: d\n  condition: sf.type = FF and sf.file.path = {path}\n  priority: high\n"
        )
    }

    fn process(exe: &str) -> Item {
        Item::Entity(Entity::Process(Process {
            oid: P,
            exe: exe.into(),
            ..Default::default()
        }))
    }

    /// Records the worker found quiet are not handed over again, but for what changed since:
    /// the process, or the rules (whose new version alerts on the same record).
    #[test]
    fn quiet_records_stay_on_the_pipeline_until_what_settled_them_changes() {
        let work = tempfile::tempdir().unwrap();
        let rules_file = work.path().join("rules.yaml");
        fs::write(&rules_file, rule("Secret read", "/etc/secret")).unwrap();
        let (rules, _) = LoadedRules::load(vec![rules_file]).unwrap();
        let metrics = DetectionMetrics::default();
        let config = RulesConfig {
            dir: work.path().to_path_buf(),
            rotate_every: Duration::from_secs(3600),
            stdout: false,
            queue_batches: 4,
            node: "node-1".into(),
            node_ip: "10.0.0.1".into(),
        };
        let losses = Arc::new(Losses::default());
        let mut sink = RulesSink::start(rules.clone(), config, metrics.clone(), losses).unwrap();
        sink.consume(&[
            process("/usr/bin/tail"),
            Item::Entity(Entity::File(File {
                oid: LOG,
                restype: 'f' as i32,
                path: "/var/log/app.log".into(),
                ..Default::default()
            })),
        ]);
        let read = Item::Record {
            record: Record::FileFlow(FileFlow {
                proc_oid: P,
                file_oid: LOG,
                op_flags: 1 << 8,
                num_r_recv_bytes: 4096,
                ..Default::default()
            }),
            container: None,
        };
        // Handed over until the worker's report comes back.
        let mut passed = 0;
        let started = Instant::now();
        while sink.known_quiet == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "never learnt");
            sink.consume(slice::from_ref(&read));
            sink.tick(Instant::now());
            passed += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.known_quiet, 1);
        for _ in 0..100 {
            sink.consume(slice::from_ref(&read));
        }
        assert_eq!(sink.known_quiet, 101);
        // The process comes again: its next record goes to the worker (waited for, so the
        // rules below are not yet in force when the worker takes it).
        sink.consume(&[process("/usr/bin/less"), read.clone()]);
        sink.tick(Instant::now());
        assert_eq!(sink.known_quiet, 101);
        while metrics.records_evaluated.get() < passed + 101 {
            assert!(started.elapsed() < Duration::from_secs(20), "not evaluated");
            std::thread::sleep(Duration::from_millis(5));
        }
        // New rules that alert on it: it goes to the worker, which alerts.
        rules.replace(
            sysflow_rules::compiler::compile_sources(&[(
                PathBuf::from("new.yaml"),
                rule("Log read", "/var/log/app.log"),
            )])
            .unwrap(),
        );
        sink.consume(slice::from_ref(&read));
        assert_eq!(sink.known_quiet, 101);
        sink.finish().unwrap();
        assert_eq!(metrics.records_evaluated.get(), passed + 102);
        let alerts = |rule: &str| {
            metrics
                .alerts
                .get_or_create(&AlertLabels {
                    rule: rule.into(),
                    priority: "high",
                    namespace: String::new(),
                    pod: String::new(),
                    container: String::new(),
                })
                .get()
        };
        assert_eq!((alerts("Secret read"), alerts("Log read")), (0, 1));
    }
}
