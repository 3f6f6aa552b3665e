//! Verdicts remembered per process snapshot. A live agent's records repeat: a process opens
//! the same file with the same flags again and again, and when every rule a record could
//! match reads nothing of it but its process snapshot, file, type and flags
//! ([`crate::expr::Expr::settled_by_key`]), each repetition gets the verdict the first one
//! got. The quiet verdicts (no rule matched, or a filter dropped the record) are kept on the
//! snapshot's memo with those as key, so a repetition is neither flattened nor evaluated. A
//! match is not remembered: its record is written, which needs it flattened anyway.

use sysflow::{Foid, Oid, Record};

use crate::{engine::Verdict, flat::Kind};

/// What a settled verdict depends on, besides the process snapshot it is kept with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordKey {
    /// The record's file, by its serial in the context (0 without a file).
    pub file: u64,
    pub kind: Kind,
    pub op_flags: i32,
    /// The open flags slot (a network flow's source address).
    pub open_flags: i32,
}

/// What of an event or flow its verdict can be settled by: its process, file, type,
/// operation flags and open flags slot (a network flow's source address). The engine's memo
/// and the agent's known-quiet records both key on these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settling {
    pub process: Oid,
    pub file: Option<Foid>,
    pub kind: Kind,
    pub op_flags: i32,
    pub open_flags: i32,
}

/// Four words instead of each field in turn (the file's 20 bytes hashed as a slice took as
/// long as the rest): the agent's sink looks a key up for every record it passes.
impl std::hash::Hash for Settling {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let file = self.file.map_or(0, |Foid(bytes)| {
            bytes.chunks(8).fold(0u64, |folded, chunk| {
                let mut word = [0; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                folded.rotate_left(21) ^ u64::from_le_bytes(word)
            })
        });
        state.write_u64(self.process.hpid as u64);
        state.write_u64(self.process.create_ts as u64);
        state.write_u64(file);
        let flags = (self.op_flags as u32 as u64) << 32 | self.open_flags as u32 as u64;
        state.write_u64(flags ^ (self.kind as u64).rotate_right(8));
    }
}

impl Settling {
    /// None for a record that is not an event or flow with a process.
    pub fn of(record: &Record) -> Option<Settling> {
        let (process, file, kind, op_flags, open_flags) = match record {
            Record::ProcessEvent(e) => (e.proc_oid, None, Kind::ProcessEvent, e.op_flags, 0),
            Record::NetworkFlow(f) => (f.proc_oid, None, Kind::NetworkFlow, f.op_flags, f.sip),
            Record::FileFlow(f) => {
                let file = Some(f.file_oid);
                (f.proc_oid, file, Kind::FileFlow, f.op_flags, f.open_flags)
            }
            Record::FileEvent(e) => {
                let file = Some(e.file_oid);
                (e.proc_oid, file, Kind::FileEvent, e.op_flags, 0)
            }
            _ => return None,
        };
        Some(Settling {
            process,
            file,
            kind,
            op_flags,
            open_flags,
        })
    }
}

impl RecordKey {
    /// The process a flow or event belongs to, and its key with `file` giving its file's
    /// serial; None for other records.
    pub fn of(record: &Record, file: impl Fn(&Foid) -> u64) -> Option<(Oid, RecordKey)> {
        let s = Settling::of(record)?;
        let key = RecordKey {
            file: s.file.as_ref().map_or(0, file),
            kind: s.kind,
            op_flags: s.op_flags,
            open_flags: s.open_flags,
        };
        Some((s.process, key))
    }
}

/// The quiet verdicts of one process snapshot: the last [`QuietVerdicts::KEPT`] keys, with
/// whether a filter dropped the record (else no rule matched it).
#[derive(Debug, Default)]
pub struct QuietVerdicts {
    entries: Vec<(RecordKey, bool)>,
    /// Where the next entry goes once all are taken (the oldest).
    next: usize,
}

impl QuietVerdicts {
    /// A process's repetitions are usually of one or two files at a time: a few keys cover
    /// them, and the bound keeps ten thousand processes' memos small.
    pub const KEPT: usize = 8;

    pub fn get(&self, key: &RecordKey) -> Option<Verdict> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|&(_, dropped)| {
                if dropped {
                    Verdict::Dropped
                } else {
                    Verdict::Matched(Vec::new())
                }
            })
    }

    /// Keeps a quiet verdict (a match is not kept).
    pub fn insert(&mut self, key: RecordKey, verdict: &Verdict) {
        if !verdict.is_quiet() {
            return;
        }
        let dropped = *verdict == Verdict::Dropped;
        if self.entries.len() < Self::KEPT {
            self.entries.push((key, dropped));
        } else {
            self.entries[self.next] = (key, dropped);
            self.next = (self.next + 1) % Self::KEPT;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(file: u64) -> RecordKey {
        RecordKey {
            file,
            kind: Kind::FileFlow,
            op_flags: 1 << 7,
            open_flags: 0,
        }
    }

    #[test]
    fn keeps_the_last_quiet_verdicts_and_no_match() {
        let mut verdicts = QuietVerdicts::default();
        verdicts.insert(key(1), &Verdict::Dropped);
        verdicts.insert(key(2), &Verdict::Matched(Vec::new()));
        verdicts.insert(key(3), &Verdict::Matched(vec![4]));
        assert_eq!(verdicts.get(&key(1)), Some(Verdict::Dropped));
        assert_eq!(verdicts.get(&key(2)), Some(Verdict::Matched(Vec::new())));
        assert_eq!(verdicts.get(&key(3)), None);
        let other_flags = RecordKey {
            op_flags: 1 << 8,
            ..key(2)
        };
        assert_eq!(verdicts.get(&other_flags), None);
        // Eight more push out the two oldest, and only them.
        for file in 10..18 {
            verdicts.insert(key(file), &Verdict::Matched(Vec::new()));
        }
        assert_eq!(verdicts.get(&key(1)), None);
        assert_eq!(verdicts.get(&key(2)), None);
        assert!((10..18).all(|f| verdicts.get(&key(f)).is_some()));
        verdicts.clear();
        assert_eq!(verdicts.get(&key(17)), None);
    }
}
