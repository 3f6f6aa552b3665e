//! Process snapshots alike in everything the policy's process terms read share those terms'
//! results. A node runs the same commands again and again (health probes, cron jobs, a CI
//! runner's shells): each run is a new process with a new snapshot, whose terms would be
//! evaluated afresh although every value they read (names, command lines, ancestors, user,
//! container, pod) is the one the last run had. The values those terms and the index's
//! process anchors read are the key; the results (the terms' memo slots and what the index
//! knows of the rules, see [`crate::index::EntityRules`]) are kept once per key and filled by
//! whichever alike snapshot evaluates a term first.
//!
//! The key is exact (the values themselves, not a hash of them), so alike is equal: a term
//! reads nothing but those values, and gets the same result for every snapshot of the key.
//! A policy whose process terms read a process's identity (`sf.proc.pid`, `sf.proc.oid`, its
//! creation time) has a key per process and so shares nothing, but is evaluated as before.

use std::{cell::RefCell, rc::Rc};

use foldhash::HashMap;

use crate::{
    attrs::{Attr, Operand, Scope, Value},
    expr::{Expr, Fields},
    index::EntityRules,
};

/// The results of an entity's memoized terms ([`Expr::Memoized`]): one byte per slot (0: not
/// yet, 1: false, 2: true), and what the index found of the rules for it.
#[derive(Debug, Default)]
pub struct TermResults {
    pub slots: Vec<u8>,
    pub rules: EntityRules,
}

impl TermResults {
    pub fn new(slots: usize) -> Rc<RefCell<TermResults>> {
        Rc::new(RefCell::new(TermResults {
            slots: vec![0; slots],
            rules: EntityRules::default(),
        }))
    }
}

/// What a policy's process terms read of a snapshot, in a fixed order: each attribute's
/// whole value, or (`exists_only`) only whether it exists (`not sf.pproc.pid exists` asks
/// whether there is a parent, not which).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessReads {
    attrs: Vec<(Attr, bool)>,
}

impl ProcessReads {
    /// What the memoized process terms in `conditions` read, and the process attributes the
    /// index looks up (`anchors`).
    pub fn new<'a>(
        conditions: impl IntoIterator<Item = &'a Expr>,
        anchors: impl IntoIterator<Item = Attr>,
    ) -> ProcessReads {
        let mut reads = ProcessReads::default();
        for attr in anchors {
            reads.add(attr, false);
        }
        for condition in conditions {
            condition.memoized_terms(Scope::Process, &mut |term| {
                term.operands(&mut |operand, exists_only| match operand {
                    Operand::Attr(a) => reads.add(*a, exists_only),
                    // `attr[path]` reads the attribute's text; under `exists` it is a literal.
                    Operand::Path(a, _) if !exists_only => reads.add(*a, false),
                    Operand::Path(..) | Operand::Literal(_) => {}
                })
            });
        }
        reads
    }

    fn add(&mut self, attr: Attr, exists_only: bool) {
        match self.attrs.iter_mut().find(|(a, _)| *a == attr) {
            Some((_, only)) => *only &= exists_only,
            None => self.attrs.push((attr, exists_only)),
        }
    }

    /// Writes the snapshot's key to `key`: for each attribute, whether it exists if only
    /// that is read, else its value, tagged and length-prefixed so that no two different
    /// sequences of values give the same bytes.
    fn key(&self, snapshot: &impl Fields, key: &mut Vec<u8>) {
        key.clear();
        for &(attr, exists_only) in &self.attrs {
            let value = snapshot.value(attr);
            if exists_only {
                key.push(u8::from(value.exists()));
                continue;
            }
            match value {
                Value::Str(s) => {
                    key.push(2);
                    key.extend_from_slice(&(s.len() as u64).to_le_bytes());
                    key.extend_from_slice(s.as_bytes());
                }
                Value::Int(v) => {
                    key.push(3);
                    key.extend_from_slice(&v.to_le_bytes());
                }
                Value::Int32(v) => {
                    key.push(4);
                    key.extend_from_slice(&v.to_le_bytes());
                }
                Value::Bool(b) => key.extend_from_slice(&[5, u8::from(b)]),
                Value::Opaque(b) => key.extend_from_slice(&[6, u8::from(b)]),
            }
        }
    }
}

/// The results kept per key, for one policy at a time (one thread's: the results are shared
/// without locks), and those of records without a file: every file attribute of such a
/// record is empty (its type is `"\x00"`), so the file terms have one result for them all.
/// Bounded: past [`Alike::KEYS`] keys or [`Alike::BYTES`] of them, all are let go and learnt
/// again (snapshots keep the results they have).
#[derive(Debug, Default)]
pub struct Alike {
    policy: u64,
    processes: HashMap<Box<[u8]>, Rc<RefCell<TermResults>>>,
    bytes: usize,
    /// The key being looked up (reused).
    key: Vec<u8>,
    no_file: Option<Rc<RefCell<TermResults>>>,
}

impl Alike {
    pub const KEYS: usize = 2048;
    pub const BYTES: usize = 2 << 20;

    /// Lets go of another policy's results.
    fn policy(&mut self, policy: u64) {
        if policy != self.policy {
            self.policy = policy;
            self.clear();
            self.no_file = None;
        }
    }

    /// The results a new snapshot of policy `policy` shares with those alike (`reads` gives
    /// their key), new ones if it is the first of its kind.
    pub fn process(
        &mut self,
        policy: u64,
        reads: &ProcessReads,
        slots: usize,
        snapshot: &impl Fields,
    ) -> Rc<RefCell<TermResults>> {
        self.policy(policy);
        reads.key(snapshot, &mut self.key);
        if let Some(results) = self.processes.get(self.key.as_slice()) {
            return results.clone();
        }
        if self.processes.len() >= Self::KEYS || self.bytes + self.key.len() > Self::BYTES {
            self.clear();
        }
        let results = TermResults::new(slots);
        self.bytes += self.key.len();
        self.processes
            .insert(self.key.as_slice().into(), results.clone());
        results
    }

    /// The file term results of policy `policy`'s records without a file.
    pub fn no_file(&mut self, policy: u64, slots: usize) -> Rc<RefCell<TermResults>> {
        self.policy(policy);
        self.no_file
            .get_or_insert_with(|| TermResults::new(slots))
            .clone()
    }

    fn clear(&mut self) {
        self.processes.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sysflow::{NetworkFlow, Oid, Process, ProcessEvent, Record, SfHeader};

    use super::*;
    use crate::{
        Policy,
        compiler::compile_sources,
        engine::{Evaluated, Verdict},
        flat::Context,
    };

    const EXEC: i32 = 1 << 1;

    fn policy(text: &str) -> Policy {
        compile_sources(&[(PathBuf::from("test.yaml"), text.to_string())]).unwrap()
    }

    fn oid(pid: i64) -> Oid {
        Oid {
            hpid: pid,
            create_ts: 1000 + pid,
        }
    }

    fn process(pid: i64, parent: Option<i64>, exe: &str) -> Record {
        Record::Process(Process {
            oid: oid(pid),
            poid: parent.map(oid),
            exe: exe.into(),
            exe_args: "-c true".into(),
            ..Default::default()
        })
    }

    /// The rules an exec of `pid` matched.
    fn exec(policy: &Policy, context: &mut Context, pid: i64) -> Vec<String> {
        let record = Record::ProcessEvent(ProcessEvent {
            proc_oid: oid(pid),
            op_flags: EXEC,
            ..Default::default()
        });
        match policy.evaluate_record(context, &record) {
            Some(Evaluated::Flat {
                verdict: Verdict::Matched(m),
                ..
            }) => m.iter().map(|&i| policy.rules[i].name.clone()).collect(),
            other => panic!("exec of {pid}: {other:?}"),
        }
    }

    fn results(policy: &Policy, context: &Context, pid: i64) -> Rc<RefCell<TermResults>> {
        let memo = context.current_process_memo(oid(pid), policy.id).unwrap();
        memo.results.clone()
    }

    /// A server (pid 10) runs the same shell twice (11, 12), then another program (13); an
    /// orphan runs the shell (14). The two runs alike in what the terms read share their
    /// results, whatever their pids; the others have their own, and every verdict is the
    /// one evaluating afresh gives.
    #[test]
    fn snapshots_alike_in_what_the_terms_read_share_their_results() {
        let rules = policy(
            "\
- rule: shell in server
  desc: d
  condition: sf.opflags = EXEC and sf.proc.exe = /bin/sh and sf.pproc.name = nginx
  priority: high
- rule: orphan
  desc: d
  condition: sf.opflags = EXEC and not sf.pproc.pid exists
  priority: low
",
        );
        assert_eq!(
            rules.process_reads.attrs,
            [
                (Attr::ProcExe, false),
                (Attr::PProcName, false),
                (Attr::PProcPid, true)
            ]
        );
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(process(10, None, "/usr/sbin/nginx"));
        for (pid, parent, exe) in [
            (11, Some(10), "/bin/sh"),
            (12, Some(10), "/bin/sh"),
            (13, Some(10), "/bin/true"),
            (14, None, "/bin/sh"),
        ] {
            context.push(process(pid, parent, exe));
        }
        assert_eq!(exec(&rules, &mut context, 11), ["shell in server"]);
        assert_eq!(exec(&rules, &mut context, 12), ["shell in server"]);
        assert_eq!(exec(&rules, &mut context, 13), Vec::<String>::new());
        assert_eq!(exec(&rules, &mut context, 14), ["orphan"]);
        let shared =
            |a, b| Rc::ptr_eq(&results(&rules, &context, a), &results(&rules, &context, b));
        assert!(shared(11, 12));
        assert!(!shared(11, 13));
        assert!(!shared(11, 14));
    }

    /// A term that reads a process's identity makes it part of the key: nothing is shared,
    /// and the pid a rule names is told from its twin's.
    #[test]
    fn a_term_reading_the_pid_keys_on_it() {
        let rules = policy(
            "\
- rule: pid 12 shell
  desc: d
  condition: sf.opflags = EXEC and sf.proc.exe = /bin/sh and sf.proc.pid = 12
  priority: high
",
        );
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(process(11, None, "/bin/sh"));
        context.push(process(12, None, "/bin/sh"));
        assert_eq!(exec(&rules, &mut context, 11), Vec::<String>::new());
        assert_eq!(exec(&rules, &mut context, 12), ["pid 12 shell"]);
        let (a, b) = (results(&rules, &context, 11), results(&rules, &context, 12));
        assert!(!Rc::ptr_eq(&a, &b));
    }

    /// Records without a file share one result per file term: a rule asking for no file
    /// matches network flows, one asking for a path matches none, and a file flow of a file
    /// the context never saw is a record without a file.
    #[test]
    fn records_without_a_file_share_the_file_terms_results() {
        let rules = policy(
            "\
- rule: fileless send
  desc: d
  condition: sf.opflags contains SEND and not sf.file.path exists and sf.net.dport = 53
  priority: low
- rule: etc read
  desc: d
  condition: sf.file.path startswith /etc and sf.opflags contains READ
  priority: low
",
        );
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(process(20, None, "/usr/bin/dig"));
        let flow = |dport, op_flags| {
            Record::NetworkFlow(NetworkFlow {
                proc_oid: oid(20),
                op_flags,
                dport,
                ..Default::default()
            })
        };
        let names = |record: Record, context: &mut Context| {
            let flat = context.flat_of(&record).unwrap();
            match rules.evaluate(&flat) {
                Verdict::Matched(m) => m.iter().map(|&i| rules.rules[i].name.as_str()).collect(),
                Verdict::Dropped => vec!["(dropped)"],
            }
        };
        const SEND: i32 = 1 << 9;
        const READ: i32 = 1 << 8;
        assert_eq!(names(flow(53, SEND), &mut context), ["fileless send"]);
        assert_eq!(names(flow(80, SEND), &mut context), Vec::<&str>::new());
        assert_eq!(names(flow(53, SEND), &mut context), ["fileless send"]);
        let unknown_file = Record::FileFlow(sysflow::FileFlow {
            proc_oid: oid(20),
            file_oid: sysflow::Foid([9; 20]),
            op_flags: READ,
            ..Default::default()
        });
        assert_eq!(names(unknown_file, &mut context), Vec::<&str>::new());
    }
}
