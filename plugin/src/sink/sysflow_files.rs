//! The SysFlow file sink: entities and records into the writer, which writes rotated `.sf`
//! files; flushed every `output.flush_secs`. A failing output is logged once when it starts
//! and once when it recovers (with what was lost). What the writer counts as lost or
//! dangling becomes internal events (`Loss::SysflowRecordLost`, `Loss::MissingAncestor`), as
//! do the records it refuses.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sysflow::{SysFlowWriter, writer::WriterStats};
use tracing::{info, warn};

use super::{Sink, SinkError};
use crate::{
    flows::Item,
    internal_events::{Loss, Losses},
    state::{Entity, Forget},
};

/// What the file sink did, for metrics and the run's summary.
#[derive(Clone, Debug, Default)]
pub struct FileSinkStats {
    pub writer: WriterStats,
    /// The last file completed, once the sink finished.
    pub last_file: Option<PathBuf>,
    /// Entities the writer holds: processes, files, containers, pods.
    pub entities: (usize, usize, usize, usize),
}

/// A copy of the sink's statistics, refreshed at every tick and at the end.
pub type FileSinkReport = Arc<Mutex<FileSinkStats>>;

pub struct FileSink {
    writer: SysFlowWriter,
    flush_every: Duration,
    last_flush: Option<Instant>,
    losses: Arc<Losses>,
    /// The writer's loss counts as of the last look, to emit what they grew by.
    reported: ReportedLosses,
    watch: OutputWatch,
    report: FileSinkReport,
}

impl FileSink {
    pub fn new(writer: SysFlowWriter, flush_every: Duration, losses: Arc<Losses>) -> Self {
        FileSink {
            writer,
            flush_every,
            last_flush: None,
            losses,
            reported: ReportedLosses::default(),
            watch: OutputWatch::default(),
            report: FileSinkReport::default(),
        }
    }

    /// A handle on the statistics, for health metrics and the summary.
    pub fn report(&self) -> FileSinkReport {
        self.report.clone()
    }

    /// Emits what the writer lost since the last look.
    fn emit_losses(&mut self) {
        let stats = self.writer.stats();
        let lost = stats.records_lost - self.reported.records_lost;
        let missing = stats.missing_ancestors - self.reported.missing_ancestors;
        self.reported = ReportedLosses {
            records_lost: stats.records_lost,
            missing_ancestors: stats.missing_ancestors,
        };
        if lost > 0 {
            let why = stats.output_error.as_deref().unwrap_or("the output failed");
            self.losses.emit(
                Loss::SysflowRecordLost,
                lost,
                format_args!("SysFlow records lost: {why}"),
            );
        }
        self.losses.emit(
            Loss::MissingAncestor,
            missing,
            "process written with a parent the writer never got (dangling parent OID)",
        );
    }

    fn publish(&self, last_file: Option<PathBuf>) {
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        r.writer = self.writer.stats().clone();
        r.entities = self.writer.entity_counts();
        if last_file.is_some() {
            r.last_file = last_file;
        }
    }
}

impl Sink for FileSink {
    fn consume(&mut self, items: &[Item]) {
        for item in items {
            match item {
                Item::Entity(Entity::Process(p)) => self.writer.set_process(p.clone()),
                Item::Entity(Entity::File(f)) => self.writer.set_file(f.clone()),
                Item::Entity(Entity::Container(c)) => self.writer.set_container(c.clone()),
                Item::Entity(Entity::Pod(p)) => self.writer.set_pod(p.clone()),
                Item::Forget(Forget::Process(oid)) => self.writer.forget_process(oid),
                Item::Forget(Forget::File(foid)) => self.writer.forget_file(foid),
                Item::Forget(Forget::Container(id)) => self.writer.forget_container(id),
                Item::Forget(Forget::Pod(id)) => self.writer.forget_pod(id),
                Item::Record { record, .. } => {
                    // Output failures are the writer's to count (emitted below).
                    if let Err(e) = self.writer.write(record)
                        && !e.is_output_failure()
                    {
                        self.losses.emit(
                            Loss::SysflowRecordRefused,
                            1,
                            format_args!("SysFlow record refused: {e}"),
                        );
                    }
                }
                Item::OpenFailed { .. } | Item::LiveProcesses(_) => {}
            }
        }
        self.emit_losses();
    }

    fn tick(&mut self, now: Instant) {
        // Failures are the writer's to count and the watch's to report (once, not per tick).
        let _ = self.writer.rotate_if_due();
        let last = *self.last_flush.get_or_insert(now);
        if now.duration_since(last) >= self.flush_every {
            let _ = self.writer.flush();
            self.last_flush = Some(now);
        }
        self.watch.report(self.writer.stats());
        self.emit_losses();
        self.publish(None);
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        let last = self.writer.finish();
        self.watch.report(self.writer.stats());
        self.emit_losses();
        let last = last?;
        self.publish(last);
        Ok(())
    }
}

#[derive(Default)]
struct ReportedLosses {
    records_lost: u64,
    missing_ancestors: u64,
}

/// Says once that the output started failing, and once that it recovered, with the records
/// lost in between (they are counted either way).
#[derive(Default)]
struct OutputWatch {
    failing: bool,
    /// Records lost as of the last report that found the output working.
    lost_while_working: u64,
}

impl OutputWatch {
    fn report(&mut self, stats: &WriterStats) {
        match (&stats.output_error, self.failing) {
            (Some(e), false) => {
                warn!("SysFlow output failing, records are counted as lost until it recovers: {e}");
                self.failing = true;
            }
            (None, true) => {
                info!(
                    lost = stats.records_lost - self.lost_while_working,
                    "SysFlow output recovered"
                );
                self.failing = false;
            }
            _ => {}
        }
        if !self.failing {
            self.lost_while_working = stats.records_lost;
        }
    }
}

#[cfg(test)]
mod tests {
    use sysflow::{Oid, Process, ProcessEvent, Record, SfObjectState, WriterConfig, encoding::op};

    use super::*;

    fn process() -> Process {
        Process {
            state: SfObjectState::Created,
            oid: Oid {
                create_ts: 1,
                hpid: 1,
            },
            poid: None,
            ts: 1,
            exe: "/bin/true".into(),
            exe_args: String::new(),
            uid: 0,
            user_name: "root".into(),
            gid: 0,
            group_name: "root".into(),
            tty: false,
            container_id: None,
            entry: false,
            cwd: "/".into(),
            env: Vec::new(),
        }
    }

    fn file_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn records_reach_the_disk_at_the_configured_flush_cadence_not_every_tick() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SysFlowWriter::to_directory(dir.path(), WriterConfig::default()).unwrap();
        let mut sink = FileSink::new(writer, Duration::from_secs(5), Arc::default());
        let start = Instant::now();
        sink.tick(start);
        let event = Record::ProcessEvent(ProcessEvent {
            proc_oid: process().oid,
            ts: 2,
            tid: 1,
            op_flags: op::EXEC,
            args: Vec::new(),
            ret: 0,
        });
        sink.consume(&[
            Item::Entity(Entity::Process(process())),
            Item::Record {
                record: event,
                container: None,
            },
        ]);
        let before = file_bytes(dir.path());
        for s in 1..5 {
            sink.tick(start + Duration::from_secs(s));
            assert_eq!(file_bytes(dir.path()), before, "no flush {s} s in");
        }
        sink.tick(start + Duration::from_secs(5));
        assert!(file_bytes(dir.path()) > before, "flushed 5 s in");
        assert_eq!(
            sink.report().lock().unwrap().writer.records_by_type[4],
            1,
            "one ProcessEvent"
        );
    }
}
