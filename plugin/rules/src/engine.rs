//! Evaluating a compiled policy on one record, as sf-processor's engine does: if an enabled
//! filter matches, the record is dropped; otherwise every enabled rule whose prefilter admits
//! the record's type is evaluated, all of them, in compile order (those the index shows cannot
//! match are skipped: they would have been false). A record like an earlier one of its
//! process snapshot gets that one's quiet verdict without being flattened
//! ([`crate::verdicts`]).

use std::{cell::RefCell, rc::Rc};

use sysflow::Record;

use crate::{
    Policy,
    alike::{Alike, TermResults},
    expr::Memo,
    flat::{Context, Flat},
    index::{EntityRules, ones},
};

/// Per record, reused rather than allocated: the candidate rules (bits), scratch bits for the
/// index, and the memo of shared terms. With them, the results alike process snapshots share
/// (per thread, as the contexts whose snapshots hold them).
#[derive(Default)]
struct Scratch {
    candidates: Vec<u64>,
    selected: Vec<u64>,
    record_memo: Vec<u8>,
    alike: Alike,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// An entity's term results and what it knows of the rules (nothing without the entity).
fn split(results: Option<&mut TermResults>) -> (&mut [u8], Option<&mut EntityRules>) {
    match results {
        Some(r) => (&mut r.slots[..], Some(&mut r.rules)),
        None => (&mut [], None),
    }
}

/// What the policy made of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A filter matched: no output in either mode.
    Dropped,
    /// The indexes of the rules that matched, in compile order (possibly none).
    Matched(Vec<usize>),
}

impl Verdict {
    /// Dropped, or matching no rule: nothing to alert on.
    pub fn is_quiet(&self) -> bool {
        match self {
            Verdict::Dropped => true,
            Verdict::Matched(m) => m.is_empty(),
        }
    }
}

/// What evaluating a record from its context came to.
// Returned and taken apart at once: boxing the flat record would allocate for each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Evaluated {
    /// The verdict of an earlier record of the same process snapshot with the same file,
    /// type and flags, which settle it: a filter dropped it, or no rule matched. The record
    /// was not flattened.
    Remembered(Verdict),
    Flat {
        flat: Flat,
        verdict: Verdict,
        /// Whether the record's process snapshot, file, type and flags settle the verdict.
        settled: bool,
    },
}

impl Evaluated {
    pub fn verdict(&self) -> &Verdict {
        match self {
            Evaluated::Remembered(verdict) | Evaluated::Flat { verdict, .. } => verdict,
        }
    }

    /// Whether every record alike in process snapshot, file, type and flags gets no output
    /// in alert mode: dropped or matching no rule, settled by those.
    pub fn settled_quiet(&self) -> bool {
        self.verdict().is_quiet()
            && match self {
                Evaluated::Remembered(_) => true,
                Evaluated::Flat { settled, .. } => *settled,
            }
    }
}

impl Policy {
    /// Evaluates an event or flow joined with the entities `context` holds (None for a
    /// record that is neither, which the context takes in with [`Context::push`]).
    pub fn evaluate_record(&self, context: &mut Context, record: &Record) -> Option<Evaluated> {
        let key = context.record_key(record);
        if let Some((oid, key)) = &key
            && let Some(memo) = context.current_process_memo(*oid, self.id)
            && let Some(verdict) = memo.verdicts.get(key)
        {
            return Some(Evaluated::Remembered(verdict));
        }
        let flat = context.flat_of(record)?;
        let (verdict, settled) = self.evaluate_settled(&flat);
        if settled
            && let Some((_, key)) = key
            && let Some(mut memo) =
                flat.process_memo(self.id, |_| TermResults::new(self.process_terms))
        {
            memo.verdicts.insert(key, &verdict);
        }
        Some(Evaluated::Flat {
            flat,
            verdict,
            settled,
        })
    }

    pub fn evaluate(&self, flat: &Flat) -> Verdict {
        self.evaluate_settled(flat).0
    }

    /// The verdict, and whether the record's process snapshot, file, type and flags settle
    /// it (any record alike in those gets the same).
    fn evaluate_settled(&self, flat: &Flat) -> (Verdict, bool) {
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch {
                candidates,
                selected,
                record_memo,
                alike,
            } = scratch;
            record_memo.clear();
            record_memo.resize(self.shared_terms, 0);
            // The term results of the record's process snapshot and file, if it has them.
            let process = flat
                .process_memo(self.id, |snapshot| {
                    alike.process(self.id, &self.process_reads, self.process_terms, snapshot)
                })
                .map(|m| Rc::clone(&m.results));
            let file = match flat.file_memo(self.id, self.file_terms) {
                Some(memo) => Rc::clone(&memo.results),
                None => alike.no_file(self.id, self.file_terms),
            };
            let mut process = process.as_deref().map(RefCell::borrow_mut);
            let mut file = file.borrow_mut();
            let (process_slots, process_rules) = split(process.as_deref_mut());
            let (file_slots, file_rules) = split(Some(&mut file));
            let memo = &mut Memo {
                record: record_memo,
                process: process_slots,
                file: file_slots,
            };
            if self
                .filters
                .iter()
                .any(|f| f.enabled && f.condition.eval_in(flat, memo))
            {
                return (Verdict::Dropped, self.filters_settled[flat.kind.slot()]);
            }
            let settled = self.index.candidates(
                flat,
                flat.kind.slot(),
                candidates,
                selected,
                [process_rules, file_rules],
                memo,
            );
            let matched = ones(candidates)
                .filter(|&i| self.rules[i].condition.eval_in(flat, memo))
                .collect();
            let filters_settled = self.filters_settled[flat.kind.slot()];
            (Verdict::Matched(matched), settled && filters_settled)
        })
    }
}

/// Whether a record is written: in alert mode only with a match, in enrich mode unless a
/// filter dropped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Alert,
    Enrich,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alert" => Ok(Mode::Alert),
            "enrich" => Ok(Mode::Enrich),
            other => Err(format!("mode {other:?}: expected alert or enrich")),
        }
    }
}

impl Mode {
    /// The matched rules to write, or None when the record is not written.
    pub fn output(self, verdict: Verdict) -> Option<Vec<usize>> {
        match (self, verdict) {
            (_, Verdict::Dropped) => None,
            (Mode::Alert, Verdict::Matched(m)) if m.is_empty() => None,
            (_, Verdict::Matched(m)) => Some(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sysflow::{
        File, FileFlow, Foid, NetworkFlow, Oid, Process, Record, SfHeader, SfObjectState,
    };

    use super::*;
    use crate::compiler::compile_sources;

    const RULES: &str = "\
- rule: shell opens
  desc: d
  condition: sf.opflags = OPEN and sf.proc.exe = /bin/sh
  priority: low
- rule: etc touched
  desc: d
  condition: sf.file.path startswith /etc/ and sf.opflags in (READ, RECV)
  priority: low
";

    fn policy(text: &str) -> Policy {
        compile_sources(&[(PathBuf::from("test.yaml"), text.to_string())]).unwrap()
    }

    fn matched<'p>(policy: &'p Policy, flat: &Flat) -> Vec<&'p str> {
        match policy.evaluate(flat) {
            Verdict::Matched(m) => m.iter().map(|&i| policy.rules[i].name.as_str()).collect(),
            Verdict::Dropped => panic!("no filter here"),
        }
    }

    const PID: Oid = Oid {
        hpid: 42,
        create_ts: 7,
    };

    fn process(state: SfObjectState, exe: &str) -> Record {
        Record::Process(Process {
            state,
            oid: PID,
            exe: exe.into(),
            ..Default::default()
        })
    }

    fn file(path: &str) -> Record {
        Record::File(File {
            oid: Foid([1; 20]),
            restype: 'f' as i32,
            path: path.into(),
            ..Default::default()
        })
    }

    fn flow(op_flags: i32) -> Record {
        Record::FileFlow(FileFlow {
            proc_oid: PID,
            file_oid: Foid([1; 20]),
            op_flags,
            ..Default::default()
        })
    }

    const OPEN: i32 = 1 << 7;
    const READ: i32 = 1 << 8;

    /// What is remembered per process snapshot or file is forgotten when the entity or the
    /// policy changes: a later record sees the new process, file and rules.
    #[test]
    fn remembered_terms_follow_the_entities_and_the_policy() {
        let rules = policy(RULES);
        assert_eq!((rules.process_terms, rules.file_terms), (1, 1));
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(process(SfObjectState::Created, "/bin/sh"));
        context.push(file("/etc/passwd"));
        let first = context.push(flow(OPEN | READ)).unwrap();
        assert_eq!(matched(&rules, &first), ["shell opens", "etc touched"]);
        // The same entities, other operations: only the record's own terms differ.
        let second = context.push(flow(OPEN)).unwrap();
        assert_eq!(matched(&rules, &second), ["shell opens"]);
        // The process becomes bash (a new process record, same snapshot of ancestors).
        context.push(process(SfObjectState::Modified, "/bin/bash"));
        let third = context.push(flow(OPEN | READ)).unwrap();
        assert_eq!(matched(&rules, &third), ["etc touched"]);
        // The file record comes again with another path.
        context.push(file("/tmp/x"));
        let fourth = context.push(flow(OPEN | READ)).unwrap();
        assert_eq!(matched(&rules, &fourth), Vec::<&str>::new());
        // Another policy over the same records: its own memos.
        let other = policy(
            &RULES
                .replace("/bin/sh", "/bin/bash")
                .replace("/etc/", "/tmp/"),
        );
        assert_eq!(matched(&other, &fourth), ["shell opens", "etc touched"]);
        assert_eq!(matched(&rules, &fourth), Vec::<&str>::new());
    }

    /// Whether a record's verdict was remembered, and the rules it matched.
    fn outcome(policy: &Policy, context: &mut Context, record: Record) -> (bool, Vec<String>) {
        let names = |m: &[usize]| m.iter().map(|&i| policy.rules[i].name.clone()).collect();
        match policy.evaluate_record(context, &record) {
            Some(Evaluated::Remembered(Verdict::Matched(m))) => (true, names(&m)),
            Some(Evaluated::Flat {
                flat,
                verdict: Verdict::Matched(m),
                ..
            }) => {
                // The same verdict as evaluating the flat record afresh.
                assert_eq!(policy.evaluate(&flat), Verdict::Matched(m.clone()));
                (false, names(&m))
            }
            Some(Evaluated::Remembered(Verdict::Dropped)) => (true, vec!["(dropped)".into()]),
            Some(Evaluated::Flat {
                verdict: Verdict::Dropped,
                ..
            }) => (false, vec!["(dropped)".into()]),
            None => panic!("not an event or flow"),
        }
    }

    /// A record like an earlier one of its process snapshot (same file, type and flags) gets
    /// its quiet verdict unflattened; anything the verdict depends on that changes (the flags,
    /// the process, its container, the file record, the policy) makes it evaluated again, and
    /// a match is never remembered.
    #[test]
    fn quiet_verdicts_are_remembered_until_what_settles_them_changes() {
        let rules = policy(RULES);
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(process(SfObjectState::Created, "/bin/bash"));
        context.push(file("/tmp/x"));
        let quiet = (false, Vec::<String>::new());
        let remembered = (true, Vec::<String>::new());
        assert_eq!(outcome(&rules, &mut context, flow(OPEN | READ)), quiet);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN | READ)), remembered);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), quiet);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), remembered);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN | READ)), remembered);
        // The file record comes again, under /etc: evaluated again, and it matches.
        context.push(file("/etc/passwd"));
        let etc = (false, vec!["etc touched".to_string()]);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN | READ)), etc);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN | READ)), etc);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), quiet);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), remembered);
        // The process becomes /bin/sh: its opens now match.
        context.push(process(SfObjectState::Modified, "/bin/sh"));
        let shell = (false, vec!["shell opens".to_string()]);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), shell);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), shell);
        // A container record changes what every process is joined with.
        context.push(process(SfObjectState::Modified, "/bin/bash"));
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), quiet);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), remembered);
        context.push(Record::Container(sysflow::Container {
            id: "c1".into(),
            ..Default::default()
        }));
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), quiet);
        // Another policy: its own verdicts.
        let other = policy(&RULES.replace("/bin/sh", "/bin/bash"));
        assert_eq!(outcome(&other, &mut context, flow(OPEN)), shell);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), quiet);
        assert_eq!(outcome(&rules, &mut context, flow(OPEN)), remembered);
    }

    /// A rule or filter that reads more of a record than its type and flags (here its byte
    /// counts) keeps every record evaluated; filters' drops are remembered like no match.
    #[test]
    fn verdicts_that_read_the_record_are_not_remembered() {
        let counted = |bytes: i64| {
            Record::FileFlow(FileFlow {
                proc_oid: PID,
                file_oid: Foid([1; 20]),
                op_flags: READ,
                num_r_recv_bytes: bytes,
                ..Default::default()
            })
        };
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(process(SfObjectState::Created, "/bin/cat"));
        context.push(file("/var/log/big"));
        let big = policy(&format!(
            "{RULES}- rule: big read\n  desc: d\n  condition: sf.type = FF and sf.flow.rbytes > 1000\n  priority: low\n"
        ));
        // Counters share a slot and are added to themselves (see the flat module).
        let read = |context: &mut Context, bytes| outcome(&big, context, counted(bytes));
        assert_eq!(read(&mut context, 10), (false, vec![]));
        assert_eq!(read(&mut context, 10), (false, vec![]));
        assert_eq!(
            read(&mut context, 5000),
            (false, vec!["big read".to_string()])
        );
        // The rule is out for other record types: those are remembered.
        let event = || {
            Record::ProcessEvent(sysflow::ProcessEvent {
                proc_oid: PID,
                op_flags: 1 << 1,
                ..Default::default()
            })
        };
        assert_eq!(outcome(&big, &mut context, event()), (false, vec![]));
        assert_eq!(outcome(&big, &mut context, event()), (true, vec![]));
        // A filter on the process: its drops remembered.
        let dropped = (false, vec!["(dropped)".to_string()]);
        let cat = policy(&format!(
            "{RULES}- filter: no_cat\n  condition: sf.proc.exe = /bin/cat\n"
        ));
        assert!(cat.filters_settled.iter().all(|&s| s));
        assert_eq!(outcome(&cat, &mut context, counted(10)), dropped);
        assert_eq!(
            outcome(&cat, &mut context, counted(20)),
            (true, vec!["(dropped)".to_string()])
        );
        // A filter on the counters: nothing remembered, dropped or not.
        let small = policy(&format!(
            "{RULES}- filter: small\n  condition: sf.flow.rbytes < 100\n"
        ));
        assert!(!small.filters_settled.iter().any(|&s| s));
        assert_eq!(outcome(&small, &mut context, counted(10)), dropped);
        assert_eq!(outcome(&small, &mut context, counted(10)), dropped);
        assert_eq!(outcome(&small, &mut context, counted(500)), (false, vec![]));
        assert_eq!(outcome(&small, &mut context, counted(500)), (false, vec![]));
    }

    /// A process's records are joined with its container as it is now: a container record
    /// that comes again (renamed) or goes changes what later records see.
    #[test]
    fn records_are_joined_with_the_current_container() {
        let rules = policy(
            "- rule: web\n  desc: d\n  condition: sf.container.name = web\n  priority: low\n",
        );
        let container = |name: &str| {
            Record::Container(sysflow::Container {
                id: "c1".into(),
                name: name.into(),
                ..Default::default()
            })
        };
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(container("web"));
        context.push(Record::Process(Process {
            oid: PID,
            exe: "/bin/sh".into(),
            container_id: Some("c1".into()),
            ..Default::default()
        }));
        context.push(file("/etc/passwd"));
        let first = context.push(flow(READ)).unwrap();
        assert_eq!(matched(&rules, &first), ["web"]);
        context.push(container("db"));
        let renamed = context.push(flow(READ)).unwrap();
        assert_eq!(renamed.container.as_ref().unwrap().name, "db");
        assert_eq!(matched(&rules, &renamed), Vec::<&str>::new());
        context.push(container("web"));
        assert_eq!(matched(&rules, &context.push(flow(READ)).unwrap()), ["web"]);
        context.forget_container("c1");
        let gone = context.push(flow(READ)).unwrap();
        assert!(gone.container.is_none());
        assert_eq!(matched(&rules, &gone), Vec::<&str>::new());
    }

    /// Flag tests compiled to bit tests answer what testing the comma-joined names does: bits
    /// 8 and 9 named by the record's type, RDWR needing both bits, NONE for no open flag, ""
    /// for flags no name covers.
    #[test]
    fn flag_tests_as_bits_agree_with_the_names() {
        let lists: [&[&str]; 5] = [
            &["READ"],
            &["RECV", "EXEC"],
            &["", "CLONE"],
            &["RDWR", "NONE"],
            &["", "CREAT", "O_CREAT"],
        ];
        let mut text = String::new();
        for (i, names) in lists.iter().enumerate() {
            let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            for attr in ["sf.opflags", "sf.file.openflags"] {
                text += &format!(
                    "- rule: {attr} {i}\n  desc: d\n  condition: {attr} in ({})\n  priority: low\n",
                    quoted.join(", ")
                );
            }
        }
        let rules = policy(&text);
        let mut context = Context::default();
        context.push(Record::Header(SfHeader::default()));
        context.push(process(SfObjectState::Created, "/bin/sh"));
        context.push(file("/etc/passwd"));
        let values = [
            0,
            1,
            2,
            3,
            4,
            1 << 8,
            1 << 9,
            (1 << 8) | 3,
            1 << 13,
            1 << 21,
            -1,
        ];
        let mut checked = 0;
        for flags in values {
            let records = [
                flow(flags),
                Record::FileFlow(FileFlow {
                    proc_oid: PID,
                    file_oid: Foid([1; 20]),
                    open_flags: flags,
                    ..Default::default()
                }),
                Record::NetworkFlow(NetworkFlow {
                    proc_oid: PID,
                    op_flags: flags,
                    ..Default::default()
                }),
            ];
            for record in records {
                let flat = context.push(record).unwrap();
                let expected: Vec<&str> = rules
                    .rules
                    .iter()
                    .filter(|r| {
                        let (attr, i) = r.name.split_once(' ').unwrap();
                        let attr = crate::attrs::Attr::lookup(attr).unwrap();
                        let names = lists[i.parse::<usize>().unwrap()];
                        flat.text(attr).split(',').any(|p| names.contains(&p))
                    })
                    .map(|r| r.name.as_str())
                    .collect();
                assert_eq!(matched(&rules, &flat), expected, "flags {flags:#x}");
                checked += expected.len();
            }
        }
        // Not vacuous: names matched and did not.
        assert!(checked > 10, "{checked}");
    }
}
