//! Records as sf-processor's reader and flattener present them to its policy engine: entity
//! records (header, containers, pods, processes, files) fill caches; events and flows (PE,
//! NF, FF, FE) and Kubernetes events (KE) become flat records joined with their process,
//! container, pod and files. Network events and process flows never reach the engine.
//!
//! sf-processor's flat record is a fixed array of slots that several record types share, and
//! its attributes read those slots whatever the type. [`Flat`] keeps the same integer slots
//! so every attribute reads what sf-processor's reads: on a network flow `sf.file.openflags`
//! is the source address, on a file event `sf.file.fd` the new file's state, and the flow
//! counters of file and network flows share one slot each, which sf-processor's attributes
//! add to itself (so `sf.flow.wbytes` is twice the bytes written). The process tree is taken
//! on a process's first lookup and kept until the next header, as sf-processor's cache does.
//!
//! One deliberate difference: `sf.opflags` names READ/WRITE or RECV/SEND by the record's own
//! type. sf-processor caches the names by bit mask for the whole run, so whichever record type
//! comes first decides for all (its `GetOpFlags`); see the README.

use std::{
    cell::{OnceCell, RefCell, RefMut},
    fmt::Write as _,
    rc::Rc,
    sync::OnceLock,
};

use foldhash::HashMap;

mod entities;
mod values;

pub use entities::{EntityMemo, FileEntry, ProcessEntry, Tree};
use entities::{MemoKey, borrow_memo};

use sysflow::{Container, Foid, Oid, Pod, Process, Record, SfObjectState};

use crate::{
    alike::TermResults,
    attrs::{Attr, Value},
    expr::Fields,
    golang,
    verdicts::RecordKey,
};

/// The record types the engine sees, with sf-processor's type numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ProcessEvent = 4,
    NetworkFlow = 5,
    FileFlow = 6,
    FileEvent = 7,
    K8sEvent = 11,
}

impl Kind {
    /// The type's index in [`crate::compiler::TYPES`].
    pub fn slot(self) -> usize {
        match self {
            Kind::ProcessEvent => 0,
            Kind::NetworkFlow => 1,
            Kind::FileFlow => 2,
            Kind::FileEvent => 3,
            Kind::K8sEvent => 4,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Kind::ProcessEvent => "PE",
            Kind::NetworkFlow => "NF",
            Kind::FileFlow => "FF",
            Kind::FileEvent => "FE",
            Kind::K8sEvent => "KE",
        }
    }
}

/// The trace header a record was read under.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub version: i64,
    pub exporter: String,
    /// `NA` when the file's header schema has no `ip` field.
    pub ip: String,
    pub filename: String,
}

/// A pod as cached, with the text forms sf-processor derives once per record.
#[derive(Debug)]
pub struct PodEntry {
    pub pod: Pod,
    /// `["a.b.c.d""e.f.g.h"]` (sic: no commas).
    pub host_ip: String,
    pub internal_ip: String,
    /// Go `encoding/json` of the services.
    pub services: String,
}

/// sf-processor's reader state: the entity caches, reset by every header.
#[derive(Default)]
pub struct Context {
    header: Option<Rc<Header>>,
    /// Whether the current file's header schema lacks `ip` (older versions).
    header_without_ip: bool,
    containers: HashMap<String, Rc<Container>>,
    pods: HashMap<String, Rc<PodEntry>>,
    /// By OID, one slot per state (CREATED, MODIFIED, REUP).
    processes: HashMap<Oid, [Option<Rc<ProcessEntry>>; 3]>,
    files: HashMap<Foid, Rc<FileEntry>>,
    /// Per process looked up since the last header: its tree and what it was joined with.
    trees: HashMap<Oid, Joined>,
    /// Moves on with every container and pod change (see [`Joined`]).
    generation: u64,
    /// The last file record's serial ([`FileEntry`]).
    file_serials: u64,
}

/// What a process's records are joined with: its tree (as first looked up, kept until the
/// next header) and, as last looked up, its process record, container and pod, valid while
/// the context's generation is the one they were looked up in (a process record drops its
/// own): one lookup per record instead of four.
struct Joined {
    tree: Rc<Tree>,
    current: Option<Current>,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    process: Rc<ProcessEntry>,
    container: Option<Rc<Container>>,
    pod: Option<Rc<PodEntry>>,
}

// Integer slots of sf-processor's flat record (sf-apis flat_constants.go), shared by types.
const REC_TYPE: usize = 0;
const HE_VERSION: usize = 1;
const CONT_TYPE: usize = 2;
const CONT_PRIVILEGED: usize = 3;
const POD_TS: usize = 4;
const POD_RESTARTS: usize = 5;
const KE_KIND: usize = 6;
const KE_ACTION: usize = 7;
const PROC_STATE: usize = 9;
const PROC_CREATETS: usize = 10;
const PROC_HPID: usize = 11;
const POID_CREATETS: usize = 12;
const POID_HPID: usize = 13;
const PROC_TS: usize = 14;
const PROC_UID: usize = 15;
const PROC_GID: usize = 16;
const PROC_TTY: usize = 17;
const PROC_ENTRY: usize = 18;
const FILE_STATE: usize = 19;
const FILE_TS: usize = 20;
const FILE_RESTYPE: usize = 21;
const TS: usize = 22;
const TID: usize = 23;
const OPFLAGS: usize = 24;
/// `ret` of events, `endTs` of flows.
const RET_ENDTS: usize = 25;
/// A flow's fd; a file event's new-file state.
const FD: usize = 26;
/// Read ops of flows; a file event's new-file timestamp.
const ROPS: usize = 27;
/// Write ops of flows; a file event's new-file type.
const WOPS: usize = 28;
const RBYTES: usize = 29;
const WBYTES: usize = 30;
/// A file flow's open flags; a network flow's source address.
const OPENFLAGS_SIP: usize = 31;
const SPORT: usize = 32;
const DIP: usize = 33;
const DPORT: usize = 34;
const PROTO: usize = 35;
const SLOTS: usize = 36;

impl Context {
    /// A new file starts: whether its header schema has the `ip` field.
    pub fn start_file(&mut self, header_has_ip: bool) {
        self.header_without_ip = !header_has_ip;
    }

    /// Takes one record in file order; events and flows come back flattened.
    pub fn push(&mut self, record: Record) -> Option<Flat> {
        match record {
            Record::Header(h) => {
                self.header = Some(Rc::new(Header {
                    version: h.version,
                    exporter: h.exporter,
                    ip: if self.header_without_ip {
                        "NA".into()
                    } else {
                        h.ip
                    },
                    filename: h.filename,
                }));
                self.containers.clear();
                self.pods.clear();
                self.processes.clear();
                self.files.clear();
                self.trees.clear();
                self.generation += 1;
                None
            }
            Record::Container(mut c) => {
                c.name = c.name.trim().to_string();
                c.image = c.image.trim().to_string();
                self.containers.insert(c.id.clone(), Rc::new(c));
                self.generation += 1;
                None
            }
            Record::Pod(mut p) => {
                p.name = p.name.trim().to_string();
                p.node_name = p.node_name.trim().to_string();
                p.namespace = p.namespace.trim().to_string();
                let entry = PodEntry {
                    host_ip: ip_list(&p.host_ip),
                    internal_ip: ip_list(&p.internal_ip),
                    services: golang::services_json(&p.services),
                    pod: p,
                };
                self.pods.insert(entry.pod.id.clone(), Rc::new(entry));
                self.generation += 1;
                None
            }
            Record::Process(mut p) => {
                p.exe = p.exe.trim().to_string();
                p.exe_args = p.exe_args.trim().to_string();
                let slot = state_slot(p.state);
                let oid = p.oid;
                self.processes.entry(oid).or_default()[slot] = Some(Rc::new(ProcessEntry {
                    process: p,
                    cmdline: OnceCell::new(),
                }));
                if let Some(joined) = self.trees.get_mut(&oid) {
                    joined.current = None;
                }
                None
            }
            Record::File(mut f) => {
                f.path = f.path.trim().to_string();
                self.file_serials += 1;
                let entry = FileEntry::new(f, self.file_serials);
                self.files.insert(entry.file.oid, Rc::new(entry));
                None
            }
            other => self.flat_of(&other),
        }
    }

    /// An event or flow flattened and joined with the entities taken in so far (None for a
    /// record that is neither). For a caller that keeps the record: nothing is moved.
    pub fn flat_of(&mut self, record: &Record) -> Option<Flat> {
        match record {
            Record::ProcessEvent(e) => {
                let mut flat = self.flat(Kind::ProcessEvent, e.proc_oid);
                flat.ints[TS] = e.ts;
                flat.ints[TID] = e.tid;
                flat.ints[OPFLAGS] = e.op_flags.into();
                flat.ints[RET_ENDTS] = e.ret.into();
                Some(flat)
            }
            Record::NetworkFlow(f) => {
                let mut flat = self.flat(Kind::NetworkFlow, f.proc_oid);
                flat.set_flow(FlowSlots {
                    ts: f.ts,
                    tid: f.tid,
                    op_flags: f.op_flags,
                    end_ts: f.end_ts,
                    fd: f.fd,
                    counts: [
                        f.num_r_recv_ops,
                        f.num_w_send_ops,
                        f.num_r_recv_bytes,
                        f.num_w_send_bytes,
                    ],
                    openflags_or_sip: f.sip,
                });
                let i = &mut flat.ints;
                i[SPORT] = f.sport.into();
                i[DIP] = f.dip.into();
                i[DPORT] = f.dport.into();
                i[PROTO] = f.proto.into();
                Some(flat)
            }
            Record::FileFlow(f) => {
                let mut flat = self.flat(Kind::FileFlow, f.proc_oid);
                flat.set_file(self.files.get(&f.file_oid).cloned());
                flat.set_flow(FlowSlots {
                    ts: f.ts,
                    tid: f.tid,
                    op_flags: f.op_flags,
                    end_ts: f.end_ts,
                    fd: f.fd,
                    counts: [
                        f.num_r_recv_ops,
                        f.num_w_send_ops,
                        f.num_r_recv_bytes,
                        f.num_w_send_bytes,
                    ],
                    openflags_or_sip: f.open_flags,
                });
                Some(flat)
            }
            Record::FileEvent(e) => {
                let mut flat = self.flat(Kind::FileEvent, e.proc_oid);
                flat.set_file(self.files.get(&e.file_oid).cloned());
                let new_file = e.new_file_oid.and_then(|oid| self.files.get(&oid).cloned());
                let i = &mut flat.ints;
                i[TS] = e.ts;
                i[TID] = e.tid;
                i[OPFLAGS] = e.op_flags.into();
                i[RET_ENDTS] = e.ret.into();
                if let Some(n) = &new_file {
                    i[FD] = state_slot(n.state) as i64;
                    i[ROPS] = n.ts;
                    i[WOPS] = n.restype.into();
                }
                flat.new_file = new_file;
                Some(flat)
            }
            Record::K8sEvent(k) => {
                let mut flat = Flat::new(Kind::K8sEvent, self.header.clone());
                flat.ints[KE_KIND] = k.kind as i64;
                flat.ints[KE_ACTION] = k.action as i64;
                flat.ints[TS] = k.ts;
                flat.ke_message = k.message.trim_end_matches(['\n', '\0']).to_string();
                Some(flat)
            }
            Record::Header(_)
            | Record::Container(_)
            | Record::Pod(_)
            | Record::Process(_)
            | Record::File(_)
            | Record::NetworkEvent(_)
            | Record::ProcessFlow(_) => None,
        }
    }

    /// The process a flow or event belongs to, and what else a settled verdict depends on
    /// ([`crate::verdicts`]); None for other records.
    pub fn record_key(&self, record: &Record) -> Option<(Oid, RecordKey)> {
        RecordKey::of(record, |oid| self.files.get(oid).map_or(0, |f| f.serial))
    }

    /// The memo of process `oid`'s snapshot under policy `policy`, when the process's
    /// records were evaluated under it since the process, its container or pod or the header
    /// last changed (None otherwise): what the next record would be joined with is what the
    /// memo was made for.
    pub fn current_process_memo(&self, oid: Oid, policy: u64) -> Option<RefMut<'_, EntityMemo>> {
        let joined = self.trees.get(&oid)?;
        let current = joined
            .current
            .as_ref()
            .filter(|c| c.generation == self.generation)?;
        let memo = borrow_memo(&joined.tree.memo);
        memo.key
            .as_ref()?
            .is_for(
                policy,
                Some(&current.process),
                current.container.as_ref(),
                current.pod.as_ref(),
                self.header.as_ref(),
            )
            .then_some(memo)
    }

    /// A live source's entities go when the agent forgets them (a trace has its header reset
    /// them instead): caches stay bounded by the agent's own tables.
    pub fn forget_process(&mut self, oid: Oid) {
        self.processes.remove(&oid);
        self.trees.remove(&oid);
    }

    pub fn forget_file(&mut self, oid: Foid) {
        self.files.remove(&oid);
    }

    pub fn forget_container(&mut self, id: &str) {
        self.containers.remove(id);
        self.generation += 1;
    }

    pub fn forget_pod(&mut self, id: &str) {
        self.pods.remove(id);
        self.generation += 1;
    }

    /// MODIFIED first, then CREATED, then REUP.
    fn process(&self, oid: Oid) -> Option<&Rc<ProcessEntry>> {
        let states = self.processes.get(&oid)?;
        states[1]
            .as_ref()
            .or(states[0].as_ref())
            .or(states[2].as_ref())
    }

    /// The process and its ancestors, as they were at the process's first lookup.
    fn tree(&mut self, oid: Oid) -> Rc<Tree> {
        if let Some(joined) = self.trees.get(&oid) {
            return joined.tree.clone();
        }
        let mut tree = Vec::new();
        let mut next = Some(oid);
        while let Some(id) = next {
            // sf-processor recurses without a guard; a cycle in a file must not hang us.
            let Some(p) = self.process(id).filter(|_| tree.len() < 4096) else {
                break;
            };
            next = p.poid;
            tree.push(p.clone());
        }
        let tree = Rc::new(Tree {
            processes: tree,
            lists: Default::default(),
            memo: Default::default(),
        });
        self.trees.insert(
            oid,
            Joined {
                tree: tree.clone(),
                current: None,
            },
        );
        tree
    }

    /// The tree, process record, container and pod records of process `oid` are joined
    /// with (None when the process is unknown).
    fn joined(&mut self, oid: Oid) -> Option<(Rc<Tree>, Current)> {
        if let Some(Joined {
            tree,
            current: Some(current),
        }) = self.trees.get(&oid)
            && current.generation == self.generation
        {
            return Some((tree.clone(), current.clone()));
        }
        let process = self.process(oid).cloned()?;
        let tree = self.tree(oid);
        let container = process
            .container_id
            .as_ref()
            .and_then(|id| self.containers.get(id).cloned());
        let pod = container
            .as_ref()
            .and_then(|c| c.pod_id.as_ref())
            .and_then(|id| self.pods.get(id).cloned());
        let current = Current {
            generation: self.generation,
            process,
            container,
            pod,
        };
        if let Some(joined) = self.trees.get_mut(&oid) {
            joined.current = Some(current.clone());
        }
        Some((tree, current))
    }

    /// A flat record for an event or flow of process `oid`, joined with its process tree,
    /// container and pod (all empty when the process is unknown).
    fn flat(&mut self, kind: Kind, oid: Oid) -> Flat {
        let mut flat = Flat::new(kind, self.header.clone());
        let Some((tree, current)) = self.joined(oid) else {
            return flat;
        };
        let Current {
            process: p,
            container,
            pod,
            ..
        } = current;
        flat.tree = Some(tree);
        let i = &mut flat.ints;
        i[PROC_STATE] = state_slot(p.state) as i64;
        i[PROC_CREATETS] = p.oid.create_ts;
        i[PROC_HPID] = p.oid.hpid;
        if let Some(poid) = p.poid {
            i[POID_CREATETS] = poid.create_ts;
            i[POID_HPID] = poid.hpid;
        }
        i[PROC_TS] = p.ts;
        i[PROC_UID] = p.uid.into();
        i[PROC_GID] = p.gid.into();
        i[PROC_TTY] = p.tty.into();
        i[PROC_ENTRY] = p.entry.into();
        if let Some(c) = &container {
            i[CONT_TYPE] = c.container_type as i64;
            i[CONT_PRIVILEGED] = c.privileged.into();
        }
        if let Some(pod) = &pod {
            i[POD_TS] = pod.pod.ts;
            i[POD_RESTARTS] = pod.pod.restart_count;
        }
        flat.pod = pod;
        flat.container = container;
        flat.process = Some(p);
        flat
    }
}

fn state_slot(state: SfObjectState) -> usize {
    match state {
        SfObjectState::Created => 0,
        SfObjectState::Modified => 1,
        SfObjectState::Reup => 2,
    }
}

/// sf-processor's text form of a pod's address list.
fn ip_list(ips: &[i64]) -> String {
    let mut out = String::from("[");
    for &ip in ips {
        let _ = write!(out, "\"{}\"", ipv4(ip));
    }
    out.push(']');
    out
}

/// sf-apis `GetIPStr`: the low byte first.
pub fn ipv4(ip: i64) -> String {
    let v = ip as i32 as u32;
    format!(
        "{}.{}.{}.{}",
        v & 0xff,
        (v >> 8) & 0xff,
        (v >> 16) & 0xff,
        (v >> 24) & 0xff
    )
}

/// What a file flow and a network flow both put in the flat record.
struct FlowSlots {
    ts: i64,
    tid: i64,
    op_flags: i32,
    end_ts: i64,
    fd: i32,
    /// Read ops, write ops, bytes read, bytes written.
    counts: [i64; 4],
    /// A file flow's open flags, a network flow's source address.
    openflags_or_sip: i32,
}

/// One record as the engine sees it.
#[derive(Debug)]
pub struct Flat {
    pub kind: Kind,
    ints: [i64; SLOTS],
    header: Option<Rc<Header>>,
    pub process: Option<Rc<ProcessEntry>>,
    /// The process and its ancestors, as first looked up (None: the process is unknown).
    pub tree: Option<Rc<Tree>>,
    pub container: Option<Rc<Container>>,
    pub pod: Option<Rc<PodEntry>>,
    file: Option<Rc<FileEntry>>,
    new_file: Option<Rc<FileEntry>>,
    ke_message: String,
    /// Text values derived from the slots, made at their first use: a record is evaluated by
    /// every rule, and most rules read the same few attributes.
    /// (Boxed, made at the first: most records need none, and a flat record is made and
    /// dropped per record.)
    derived: OnceCell<Box<Derived>>,
}

#[derive(Debug, Default)]
struct Derived {
    opflags: OnceCell<String>,
    openflags: OnceCell<String>,
    proc_oid: OnceCell<String>,
    pproc_oid: OnceCell<String>,
    pproc_cmdline: OnceCell<String>,
    file_type: OnceCell<String>,
    sip: OnceCell<String>,
    dip: OnceCell<String>,
    ip: OnceCell<String>,
    port: OnceCell<String>,
}

impl Flat {
    fn new(kind: Kind, header: Option<Rc<Header>>) -> Flat {
        let mut ints = [0; SLOTS];
        ints[REC_TYPE] = kind as i64;
        ints[HE_VERSION] = header.as_ref().map_or(0, |h| h.version);
        Flat {
            kind,
            ints,
            header,
            process: None,
            tree: None,
            container: None,
            pod: None,
            file: None,
            new_file: None,
            ke_message: String::new(),
            derived: OnceCell::new(),
        }
    }

    /// The slots file and network flows share.
    fn set_flow(&mut self, f: FlowSlots) {
        let i = &mut self.ints;
        i[TS] = f.ts;
        i[TID] = f.tid;
        i[OPFLAGS] = f.op_flags.into();
        i[RET_ENDTS] = f.end_ts;
        i[FD] = f.fd.into();
        [i[ROPS], i[WOPS], i[RBYTES], i[WBYTES]] = f.counts;
        i[OPENFLAGS_SIP] = f.openflags_or_sip.into();
    }

    /// The text a condition compares for `attr` (sf-processor's `MapStr`).
    pub fn text(&self, attr: Attr) -> std::borrow::Cow<'_, str> {
        self.value(attr).into_text(attr)
    }

    fn set_file(&mut self, file: Option<Rc<FileEntry>>) {
        if let Some(f) = &file {
            self.ints[FILE_STATE] = state_slot(f.state) as i64;
            self.ints[FILE_TS] = f.ts;
            self.ints[FILE_RESTYPE] = f.restype.into();
        }
        self.file = file;
    }

    /// The memo of the process snapshot's terms under policy `policy`, made afresh (with the
    /// term results `results` gives) if it was made for another policy or other entities;
    /// None when the process is unknown.
    pub fn process_memo(
        &self,
        policy: u64,
        results: impl FnOnce(&Flat) -> Rc<RefCell<TermResults>>,
    ) -> Option<RefMut<'_, EntityMemo>> {
        let mut memo = borrow_memo(&self.tree.as_ref()?.memo);
        memo.for_key(
            |k| {
                k.is_for(
                    policy,
                    self.process.as_ref(),
                    self.container.as_ref(),
                    self.pod.as_ref(),
                    self.header.as_ref(),
                )
            },
            || {
                let key = MemoKey {
                    policy,
                    process: self.process.clone(),
                    container: self.container.clone(),
                    pod: self.pod.clone(),
                    header: self.header.clone(),
                };
                (key, results(self))
            },
        );
        Some(memo)
    }

    /// The memo of the file's terms under policy `policy` (`slots` of them); None without a
    /// file.
    pub fn file_memo(&self, policy: u64, slots: usize) -> Option<RefMut<'_, EntityMemo>> {
        let mut memo = borrow_memo(&self.file.as_ref()?.memo);
        memo.for_key(
            |k| k.policy == policy,
            || {
                let key = MemoKey {
                    policy,
                    process: None,
                    container: None,
                    pod: None,
                    header: None,
                };
                (key, TermResults::new(slots))
            },
        );
        Some(memo)
    }

    /// The file's (path, symlink), `src->dst target` paths split.
    fn sym(&self, new: bool) -> (&str, &str) {
        self.file_entry(new).map_or(("", ""), FileEntry::sym)
    }

    /// `filepath.Dir` of the (parsed) path.
    fn directory(&self, new: bool) -> &str {
        static NO_FILE: OnceLock<String> = OnceLock::new();
        match self.file_entry(new) {
            Some(f) => f.directory(),
            None => NO_FILE.get_or_init(|| golang::dir("")),
        }
    }

    fn file_entry(&self, new: bool) -> Option<&FileEntry> {
        if new { &self.new_file } else { &self.file }.as_deref()
    }

    pub fn ts(&self) -> i64 {
        self.ints[TS]
    }

    pub fn pid(&self) -> i64 {
        self.ints[PROC_HPID]
    }

    pub fn int(&self, attr: Attr) -> i64 {
        match self.value(attr) {
            Value::Int(v) => v,
            Value::Int32(v) => v.into(),
            Value::Bool(b) => b.into(),
            _ => 0,
        }
    }

    fn exe(&self) -> &str {
        self.process.as_deref().map_or("", |p| &p.exe)
    }

    fn parent(&self) -> Option<&Process> {
        self.tree
            .as_deref()
            .and_then(|t| t.get(1))
            .map(|p| &p.process)
    }

    fn file_path(&self, new: bool) -> &str {
        self.file_entry(new).map_or("", |f| &f.path)
    }

    fn file_oid(&self, new: bool) -> &str {
        self.file_entry(new).map_or("", FileEntry::oid)
    }

    /// sf-processor's opflags names, READ/WRITE or RECV/SEND by this record's type.
    pub fn opflags(&self) -> Vec<&'static str> {
        if self.kind == Kind::K8sEvent {
            return Vec::new();
        }
        golang::op_flag_names(self.ints[OPFLAGS] as i32, self.kind == Kind::NetworkFlow)
    }

    /// The open flags slot's names (on a network flow: of the source address).
    pub fn openflags(&self) -> Vec<&'static str> {
        golang::open_flag_names(self.ints[OPENFLAGS_SIP])
    }

    pub fn header(&self) -> Option<&Header> {
        self.header.as_deref()
    }

    /// The raw (unparsed) path of the new file, which the JSON output writes as is.
    pub fn raw_new_path(&self) -> &str {
        self.file_path(true)
    }
}

/// sf-processor's OID attribute: xxHash64 of the pid and creation time in decimal, in hex.
pub fn oid_hash(hpid: i64, create_ts: i64) -> String {
    let text = format!("{hpid}{create_ts}");
    format!("{:016x}", xxhash_rust::xxh64::xxh64(text.as_bytes(), 0))
}

fn cached(cell: &OnceCell<String>, make: impl FnOnce() -> String) -> &str {
    cell.get_or_init(make)
}

fn s<'a>(text: impl Into<std::borrow::Cow<'a, str>>) -> Value<'a> {
    Value::Str(text.into())
}

fn join<'a>(items: impl Iterator<Item = std::borrow::Cow<'a, str>>) -> String {
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out
}

/// `exe`, or `exe args` when there are arguments (sf-processor's ancestor command lines).
fn cmdline(p: &Process) -> String {
    if p.exe_args.is_empty() {
        p.exe.clone()
    } else {
        format!("{} {}", p.exe, p.exe_args)
    }
}
