//! Evaluating a compiled policy on one record, as sf-processor's engine does: if an enabled
//! filter matches, the record is dropped; otherwise every enabled rule whose prefilter admits
//! the record's type is evaluated, all of them, in compile order (those the index shows cannot
//! match are skipped: they would have been false).

use crate::{
    Policy,
    expr::Memo,
    flat::{EntityMemo, Flat},
    index::{EntityRules, ones},
};

/// Per record, reused rather than allocated: the candidate rules (bits), scratch bits for the
/// index, and the memo of shared terms.
#[derive(Default)]
struct Scratch {
    candidates: Vec<u64>,
    selected: Vec<u64>,
    record_memo: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// An entity memo's term results and what it knows of the rules (nothing without the entity).
fn split(memo: Option<&mut EntityMemo>) -> (&mut [u8], Option<&mut EntityRules>) {
    match memo {
        Some(m) => (&mut m.slots[..], Some(&mut m.rules)),
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

impl Policy {
    pub fn evaluate(&self, flat: &Flat) -> Verdict {
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch {
                candidates,
                selected,
                record_memo,
            } = scratch;
            record_memo.clear();
            record_memo.resize(self.shared_terms, 0);
            // The memos of the record's process snapshot and file, if it has them.
            let mut process = flat.process_memo(self.id, self.process_terms);
            let mut file = flat.file_memo(self.id, self.file_terms);
            let (process_slots, process_rules) = split(process.as_deref_mut());
            let (file_slots, file_rules) = split(file.as_deref_mut());
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
                return Verdict::Dropped;
            }
            self.index.candidates(
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
            Verdict::Matched(matched)
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
    use crate::{compiler::compile_sources, flat::Context};

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
