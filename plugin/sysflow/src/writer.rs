//! Writing SysFlow: Avro Object Container Files with the format's rule enforced.
//!
//! * Entities (pods, containers, processes, files) are handed to the writer with `set_*` and
//!   written lazily, right before the first record that refers to them in the current file:
//!   a process's ancestors first (root first), each process's container before it, each
//!   container's pod before it. A changed entity (e.g. a process after exec) is written again.
//! * Every file starts with an SFHeader. After rotation, entities are written again as `REUP`
//!   when later records refer to them, so each file stands alone.
//! * A block reaches the file in one `write`, so a writer killed at any moment leaves a file
//!   that ends on a block boundary or, when SIGKILL lands inside that write (the kernel stops
//!   it between pages), inside its last block. Files are written as `<name>.sf.partial` and
//!   renamed to `<name>.sf` when complete; leftovers of a crash are cut after their last whole
//!   block and renamed on the next start.
//! * Names are `<node>-<unix seconds>-<sequence>.sf`, fixed width, so they sort in the order
//!   they were written.
//! * A failing output (a full disk, a directory that became unwritable) never stops the writer:
//!   a block that cannot be written whole is taken back and its records are counted as lost
//!   (`WriterStats::records_lost`), entities are written again before the records that follow,
//!   a file that cannot be opened is tried again at most once a second, and writing resumes when
//!   the output does. Files stay readable whole throughout.

use std::{
    collections::HashMap,
    fs::{self, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    avro::container::{BlockOutput, ContainerError, ContainerWriter, FileOutput, StreamOutput},
    records::{Container, File, Foid, Oid, Pod, Process, Record, SfHeader, SfObjectState},
    schema::{SCHEMA_VERSION, WriterSchema},
};

/// Uncompressed bytes per block: the reference collector's COMPRESS_BLOCK_SIZE.
pub const DEFAULT_BLOCK_BYTES: usize = 80_000;
/// The collector's `-G` default in deployments: rotate every 5 minutes.
pub const DEFAULT_ROTATE: Duration = Duration::from_secs(300);
const PARTIAL_SUFFIX: &str = ".sf.partial";
/// How often a file that could not be created is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

mod recovery;
mod settings;

pub use self::recovery::recover_partials;
use self::settings::io_err;
pub use self::settings::{Compression, SysflowWriteError, UnknownCodec, WriterConfig, WriterStats};

struct Tracked<T> {
    value: T,
    version: u64,
    /// The version last written to any file: writing it again (in a later file) is a REUP.
    emitted: Option<u64>,
}

/// The latest known version of every entity, and which versions the current file has.
/// The entity tables are looked up for every record: foldhash (seeded per process) instead of
/// SipHash.
type Table<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Entities are boxed: a map keeps a share of its slots empty, and on a node with thousands of
/// processes an empty slot the size of a pointer costs far less than one the size of a Process.
#[derive(Default)]
struct Entities {
    next_version: u64,
    processes: Table<Oid, Box<Tracked<Process>>>,
    files: Table<Foid, Box<Tracked<File>>>,
    containers: Table<String, Box<Tracked<Container>>>,
    pods: Table<String, Box<Tracked<Pod>>>,
    in_file: InFile,
}

/// Entity versions written to the current file.
#[derive(Default)]
struct InFile {
    processes: Table<Oid, u64>,
    files: Table<Foid, u64>,
    containers: Table<String, u64>,
    pods: Table<String, u64>,
}

/// Forgets `key` in an entity table and in the current file's versions. A table left under a
/// quarter full gives its room back (to twice what it holds: at most once per halving); a map
/// never shrinks by itself, and a burst of short-lived processes or pipes would keep its room.
fn forget<K, Q, V>(table: &mut Table<K, V>, in_file: &mut Table<K, u64>, key: &Q)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    fn give_back_room<K: std::hash::Hash + Eq, V>(map: &mut Table<K, V>) {
        if map.capacity() > 64 && map.len() < map.capacity() / 4 {
            map.shrink_to(map.len() * 2);
        }
    }
    table.remove(key);
    in_file.remove(key);
    give_back_room(table);
    give_back_room(in_file);
}

fn upsert<K: std::hash::Hash + Eq, T: PartialEq>(
    map: &mut Table<K, Box<Tracked<T>>>,
    next_version: &mut u64,
    key: K,
    value: T,
) {
    match map.get_mut(&key) {
        Some(t) if t.value == value => {}
        Some(t) => {
            *next_version += 1;
            t.value = value;
            t.version = *next_version;
        }
        None => {
            *next_version += 1;
            map.insert(
                key,
                Box::new(Tracked {
                    value,
                    version: *next_version,
                    emitted: None,
                }),
            );
        }
    }
}

/// Where records go.
enum Destination {
    /// One stream, no rotation (tests, benchmarks, pipes).
    Stream,
    /// Rotated files in a directory.
    Directory { dir: PathBuf },
}

/// SFHeader's branch in the record union (the index in `WriterStats::records_by_type`).
const HEADER_BRANCH: usize = 0;

struct OpenFile {
    /// Writes each block whole, or takes it back.
    container: ContainerWriter,
    partial: Option<PathBuf>,
    final_path: Option<PathBuf>,
    opened: SystemTime,
    /// The file's SFHeader record, and whether it still has to be appended: a file starts
    /// with it, and when the block holding it is lost the next block starts with it again.
    header: Record,
    header_due: bool,
}

impl OpenFile {
    fn append(&mut self, record: &Record) -> Result<(), ContainerError> {
        if self.header_due {
            self.header_due = false;
            self.container.append(&self.header)?;
        }
        self.container.append(record)
    }

    fn error(&self, e: ContainerError) -> SysflowWriteError {
        match e {
            ContainerError::Io(source) => SysflowWriteError::Io {
                path: self.partial.clone().unwrap_or_default(),
                source,
            },
            ContainerError::Compress(e) => SysflowWriteError::Compress(e),
        }
    }
}

/// A SysFlow writer. See the module documentation for the rules it keeps.
pub struct SysFlowWriter {
    config: WriterConfig,
    destination: Destination,
    schema: WriterSchema,
    file: Option<OpenFile>,
    entities: Entities,
    stats: WriterStats,
    last_name: Option<(u64, u32)>,
    /// Fixed sync marker (reproducible output for tests); random per file otherwise.
    sync_marker: Option<[u8; 16]>,
    /// When no file could be opened: not before this instant again.
    reopen_at: Option<std::time::Instant>,
}

impl SysFlowWriter {
    /// Writes rotated files into `dir` (created if missing). Leftover `.sf.partial` files from a
    /// crash are renamed to `.sf` first: they are readable up to their last block.
    pub fn to_directory(dir: &Path, config: WriterConfig) -> Result<Self, SysflowWriteError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        recover_partials(dir)?;
        let mut w = Self::new(config, Destination::Directory { dir: dir.into() });
        w.open_next()?;
        Ok(w)
    }

    /// Writes one stream (no rotation).
    pub fn to_stream(
        out: Box<dyn Write + Send>,
        config: WriterConfig,
    ) -> Result<Self, SysflowWriteError> {
        let mut w = Self::new(config, Destination::Stream);
        w.start_file(Box::new(StreamOutput(out)), None, None, String::new())?;
        Ok(w)
    }

    /// Like [`Self::to_stream`], with a fixed sync marker instead of a random one, so the same
    /// records give the same bytes (for comparing output in tests).
    #[doc(hidden)]
    pub fn to_stream_with_sync_marker(
        out: Box<dyn Write + Send>,
        config: WriterConfig,
        sync_marker: [u8; 16],
    ) -> Result<Self, SysflowWriteError> {
        let mut w = Self::new(config, Destination::Stream);
        w.sync_marker = Some(sync_marker);
        w.start_file(Box::new(StreamOutput(out)), None, None, String::new())?;
        Ok(w)
    }

    fn new(config: WriterConfig, destination: Destination) -> Self {
        let schema = if config.ipv6_extension {
            WriterSchema::V5Ipv6
        } else {
            WriterSchema::V5
        };
        SysFlowWriter {
            config,
            destination,
            schema,
            file: None,
            entities: Entities::default(),
            stats: WriterStats::default(),
            last_name: None,
            sync_marker: None,
            reopen_at: None,
        }
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Path of the file being written (its final name), when writing to a directory.
    pub fn current_path(&self) -> Option<&Path> {
        self.file.as_ref().and_then(|f| f.final_path.as_deref())
    }

    /// Bytes of the current file so far (complete blocks).
    pub fn current_file_bytes(&self) -> u64 {
        self.file
            .as_ref()
            .map(|f| f.container.written())
            .unwrap_or(0)
    }

    /// Sets (or updates) a process. It is written before the next record that refers to it.
    pub fn set_process(&mut self, process: Process) {
        let e = &mut self.entities;
        upsert(&mut e.processes, &mut e.next_version, process.oid, process);
    }

    pub fn set_file(&mut self, file: File) {
        let e = &mut self.entities;
        upsert(&mut e.files, &mut e.next_version, file.oid, file);
    }

    pub fn set_container(&mut self, container: Container) {
        let e = &mut self.entities;
        upsert(
            &mut e.containers,
            &mut e.next_version,
            container.id.clone(),
            container,
        );
    }

    pub fn set_pod(&mut self, pod: Pod) {
        let e = &mut self.entities;
        upsert(&mut e.pods, &mut e.next_version, pod.id.clone(), pod);
    }

    pub fn process(&self, oid: &Oid) -> Option<&Process> {
        self.entities.processes.get(oid).map(|t| &t.value)
    }

    /// Forgets entities nothing will refer to any more (exited processes, removed containers).
    pub fn forget_process(&mut self, oid: &Oid) {
        forget(
            &mut self.entities.processes,
            &mut self.entities.in_file.processes,
            oid,
        );
    }

    pub fn forget_file(&mut self, oid: &Foid) {
        forget(
            &mut self.entities.files,
            &mut self.entities.in_file.files,
            oid,
        );
    }

    pub fn forget_container(&mut self, id: &str) {
        forget(
            &mut self.entities.containers,
            &mut self.entities.in_file.containers,
            id,
        );
    }

    pub fn forget_pod(&mut self, id: &str) {
        forget(&mut self.entities.pods, &mut self.entities.in_file.pods, id);
    }

    /// Entities the writer holds: (processes, files, containers, pods).
    pub fn entity_counts(&self) -> (usize, usize, usize, usize) {
        let e = &self.entities;
        (
            e.processes.len(),
            e.files.len(),
            e.containers.len(),
            e.pods.len(),
        )
    }

    /// Writes an event or flow, after the entities it refers to.
    pub fn write(&mut self, record: &Record) -> Result<(), SysflowWriteError> {
        // A failed rotation is counted in the stats; the record then goes to the next file if
        // it opened, or is counted as lost.
        let _ = self.rotate_if_due();
        match record {
            Record::Header(_) => return Err(SysflowWriteError::NotWritable("SFHeader")),
            Record::NetworkEvent(_) => return Err(SysflowWriteError::NotWritable("NetworkEvent")),
            Record::Process(p) => {
                self.set_process(p.clone());
                return self.ensure_process(p.oid);
            }
            Record::File(f) => {
                self.set_file(f.clone());
                return self.ensure_file(f.oid);
            }
            Record::Container(c) => {
                self.set_container(c.clone());
                return self.ensure_container(&c.id);
            }
            Record::Pod(p) => {
                self.set_pod(p.clone());
                return self.ensure_pod(&p.id);
            }
            Record::ProcessEvent(e) => self.ensure_process(e.proc_oid)?,
            Record::NetworkFlow(f) => self.ensure_process(f.proc_oid)?,
            Record::ProcessFlow(f) => self.ensure_process(f.proc_oid)?,
            Record::FileFlow(f) => {
                self.ensure_process(f.proc_oid)?;
                self.ensure_file(f.file_oid)?;
            }
            Record::FileEvent(f) => {
                self.ensure_process(f.proc_oid)?;
                self.ensure_file(f.file_oid)?;
                if let Some(new) = f.new_file_oid {
                    self.ensure_file(new)?;
                }
            }
            Record::K8sEvent(_) => {}
        }
        self.append(record)
    }

    fn append(&mut self, record: &Record) -> Result<(), SysflowWriteError> {
        let Some(file) = self.file.as_mut() else {
            self.stats.records_lost += 1;
            return Err(SysflowWriteError::NoOutput(
                self.stats.output_error.clone().unwrap_or_default(),
            ));
        };
        let result = file.append(record).map_err(|e| file.error(e));
        self.account();
        if let Err(e) = &result {
            self.failing(e);
        }
        result
    }

    /// Moves what the current file wrote or gave up into the stats. After a loss the file no
    /// longer has the entities of the lost block: they are written again when next needed.
    fn account(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let written = file.container.take_written();
        let lost = file.container.take_lost();
        for (total, n) in self.stats.records_by_type.iter_mut().zip(written) {
            *total += n;
        }
        if lost.iter().any(|&n| n > 0) {
            // The header is not lost: it goes out again with the next block.
            file.header_due |= lost[HEADER_BRANCH] > 0;
            self.stats.records_lost += lost.iter().sum::<u64>() - lost[HEADER_BRANCH];
            self.entities.in_file = InFile::default();
        }
        if written.iter().any(|&n| n > 0) {
            self.stats.output_error = None;
        }
    }

    /// Notes a failure of the output for `output_error`.
    fn failing(&mut self, e: &SysflowWriteError) {
        self.stats.output_failures += 1;
        self.stats.output_error = Some(e.to_string());
    }

    fn ensure_pod(&mut self, id: &str) -> Result<(), SysflowWriteError> {
        let Some(t) = self.entities.pods.get_mut(id) else {
            return Err(SysflowWriteError::MissingPod(id.into()));
        };
        if self.entities.in_file.pods.get(id) == Some(&t.version) {
            return Ok(());
        }
        let (pod_rec, reup) = (t.value.clone(), t.emitted == Some(t.version));
        t.emitted = Some(t.version);
        self.entities.in_file.pods.insert(id.into(), t.version);
        if reup {
            self.stats.entities_rewritten_after_rotation += 1;
        }
        // Pods have no state field: a re-emitted pod is the same record.
        self.append(&Record::Pod(pod_rec))
    }

    fn ensure_container(&mut self, id: &str) -> Result<(), SysflowWriteError> {
        let Some(t) = self.entities.containers.get(id) else {
            return Err(SysflowWriteError::MissingContainer(id.into()));
        };
        if self.entities.in_file.containers.get(id) == Some(&t.version) {
            return Ok(());
        }
        let pod = t.value.pod_id.clone();
        if let Some(pod) = pod {
            self.ensure_pod(&pod)?;
        }
        let t = self.entities.containers.get_mut(id).expect("checked above");
        let reup = t.emitted == Some(t.version);
        t.emitted = Some(t.version);
        let record = Record::Container(t.value.clone());
        self.entities
            .in_file
            .containers
            .insert(id.into(), t.version);
        if reup {
            self.stats.entities_rewritten_after_rotation += 1;
        }
        self.append(&record)
    }

    fn ensure_process(&mut self, oid: Oid) -> Result<(), SysflowWriteError> {
        // The common case first: the process is already in this file.
        match self.entities.processes.get(&oid) {
            None => return Err(SysflowWriteError::MissingProcess(oid)),
            Some(t) if self.entities.in_file.processes.get(&oid) == Some(&t.version) => {
                return Ok(());
            }
            Some(_) => {}
        }
        // Ancestors first, root first: collect the chain of processes this file lacks.
        let mut chain = Vec::new();
        let mut next = Some(oid);
        while let Some(current) = next {
            let Some(t) = self.entities.processes.get(&current) else {
                self.stats.missing_ancestors += 1;
                break;
            };
            if self.entities.in_file.processes.get(&current) == Some(&t.version)
                || chain.contains(&current)
            {
                break;
            }
            chain.push(current);
            next = t.value.poid;
        }
        for oid in chain.into_iter().rev() {
            let container = self.entities.processes[&oid].value.container_id.clone();
            if let Some(container) = container {
                self.ensure_container(&container)?;
            }
            let t = self.entities.processes.get_mut(&oid).expect("in chain");
            let mut record = t.value.clone();
            if t.emitted == Some(t.version) {
                record.state = SfObjectState::Reup;
                self.stats.entities_rewritten_after_rotation += 1;
            }
            t.emitted = Some(t.version);
            self.entities.in_file.processes.insert(oid, t.version);
            self.append(&Record::Process(record))?;
        }
        Ok(())
    }

    fn ensure_file(&mut self, oid: Foid) -> Result<(), SysflowWriteError> {
        let Some(t) = self.entities.files.get(&oid) else {
            return Err(SysflowWriteError::MissingFile(oid));
        };
        if self.entities.in_file.files.get(&oid) == Some(&t.version) {
            return Ok(());
        }
        if let Some(container) = t.value.container_id.clone() {
            self.ensure_container(&container)?;
        }
        let t = self.entities.files.get_mut(&oid).expect("checked above");
        let mut record = t.value.clone();
        if t.emitted == Some(t.version) {
            record.state = SfObjectState::Reup;
            self.stats.entities_rewritten_after_rotation += 1;
        }
        t.emitted = Some(t.version);
        self.entities.in_file.files.insert(oid, t.version);
        self.append(&Record::File(record))
    }

    /// Pushes buffered records to the file as a block (call it periodically so a quiet node's
    /// records do not wait for a full block).
    pub fn flush(&mut self) -> Result<(), SysflowWriteError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let result = file.container.flush().map_err(|e| file.error(e));
        self.account();
        if let Err(e) = &result {
            self.failing(e);
        }
        result
    }

    /// Rotates when the current file is older than `rotate_after` or larger than
    /// `max_file_bytes`. A no-op for stream output.
    pub fn rotate_if_due(&mut self) -> Result<bool, SysflowWriteError> {
        let Destination::Directory { .. } = self.destination else {
            return Ok(false);
        };
        let Some(file) = self.file.as_ref() else {
            // The last file could not be created: try again (at most once a second).
            if self
                .reopen_at
                .is_none_or(|at| std::time::Instant::now() >= at)
            {
                self.open_next()?;
                return Ok(true);
            }
            return Ok(false);
        };
        let age = SystemTime::now()
            .duration_since(file.opened)
            .unwrap_or_default();
        let size = file.container.written() + file.container.pending();
        let too_big = self.config.max_file_bytes.is_some_and(|max| size >= max);
        if age >= self.config.rotate_after || too_big {
            self.rotate()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Completes the current file and starts the next one (also when completing failed: the
    /// old file then keeps its `.partial` name, for `recover_partials`).
    pub fn rotate(&mut self) -> Result<(), SysflowWriteError> {
        let finished = self.finish_file();
        if let Err(e) = &finished {
            self.failing(e);
        }
        let opened = self.open_next();
        finished.and(opened)
    }

    /// Completes the current file (flushes, renames it to its final name).
    pub fn close(mut self) -> Result<Option<PathBuf>, SysflowWriteError> {
        self.finish()
    }

    /// Completes the current file (its last block written, renamed to its final name) and
    /// opens no other; the stats then count every record of the run. Returns the file's path.
    pub fn finish(&mut self) -> Result<Option<PathBuf>, SysflowWriteError> {
        let path = self.current_path().map(Path::to_owned);
        self.finish_file()?;
        Ok(path)
    }

    fn finish_file(&mut self) -> Result<(), SysflowWriteError> {
        // A failed last block is counted as lost; the file is completed all the same.
        let _ = self.flush();
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let written = file.container.written();
        self.stats.bytes_written += written;
        // Closes the file before it is renamed.
        drop(file.container);
        self.entities.in_file = InFile::default();
        if let (Some(partial), Some(final_path)) = (file.partial, file.final_path) {
            if written == 0 {
                // Not even the header made it (the output failed from the start): nothing to
                // keep.
                fs::remove_file(&partial).map_err(io_err(&partial))?;
                return Ok(());
            }
            fs::rename(&partial, &final_path).map_err(io_err(&partial))?;
        }
        self.stats.files_completed += 1;
        Ok(())
    }

    fn open_next(&mut self) -> Result<(), SysflowWriteError> {
        let Destination::Directory { dir } = &self.destination else {
            return Ok(());
        };
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        // Two files started in the same second get a sequence number.
        let seq = match self.last_name {
            Some((s, n)) if s == secs => n + 1,
            _ => 0,
        };
        self.last_name = Some((secs, seq));
        // Fixed-width parts, so both a name sort and sysprint's sort by the digits in the name
        // give the order the files were written in.
        let name = format!("{}-{secs:010}-{seq:03}", sanitize(&self.config.exporter));
        let final_path = dir.join(format!("{name}.sf"));
        let partial = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .and_then(|f| {
                // A name reused within the second after a failed attempt: start it empty.
                f.set_len(0)?;
                FileOutput::new(f)
            })
            .map_err(io_err(&partial));
        let out = match opened {
            Ok(out) => out,
            Err(e) => {
                self.reopen_at = Some(std::time::Instant::now() + REOPEN_EVERY);
                self.failing(&e);
                return Err(e);
            }
        };
        self.reopen_at = None;
        let filename = final_path.to_string_lossy().into_owned();
        self.start_file(Box::new(out), Some(partial), Some(final_path), filename)
    }

    fn start_file(
        &mut self,
        out: Box<dyn BlockOutput>,
        partial: Option<PathBuf>,
        final_path: Option<PathBuf>,
        filename: String,
    ) -> Result<(), SysflowWriteError> {
        let marker = self.sync_marker.unwrap_or_else(rand::random);
        let container = ContainerWriter::new(
            out,
            self.schema,
            self.config.compression,
            self.config.block_bytes,
            marker,
        );
        let header = Record::Header(SfHeader {
            version: SCHEMA_VERSION,
            exporter: self.config.exporter.clone(),
            ip: self.config.node_ip.clone(),
            filename,
        });
        self.entities.in_file = InFile::default();
        let mut file = OpenFile {
            container,
            partial,
            final_path,
            opened: SystemTime::now(),
            header,
            header_due: false,
        };
        // A new file is a complete SysFlow file (container header, SFHeader) at once. If the
        // output fails now both go out with the next block.
        let appended = file.container.append(&file.header);
        let file = self.file.insert(file);
        let result = appended.map_err(|e| file.error(e));
        self.account();
        result.and_then(|()| self.flush())
    }
}

impl Drop for SysFlowWriter {
    /// Best effort: leave complete blocks on disk. The `.partial` name stays; the next start
    /// (or `recover_partials`) renames it.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// File names carry the node name: keep it to characters safe in any path.
fn sanitize(node: &str) -> String {
    let s: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "node".into() } else { s }
}
