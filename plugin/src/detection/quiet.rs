//! Records the rules cannot alert on, known on the pipeline's side so they are not handed to
//! the worker at all. The worker reports the records whose verdict was quiet (no rule matched
//! or a filter dropped them) and settled by their process, file, type and flags alone (see
//! `sysflow_rules::verdicts`); a later record alike in those is counted as evaluated where it
//! passes, without being copied, queued or looked at again. Most of a busy node's records
//! repeat: the same process reading the same file, or writing the same log.
//!
//! What the worker reports stands for the entities as they were when it evaluated, so what
//! the sink learns must not outlive them: a process or file that comes again or goes takes
//! its keys with it, a container or pod change or new rules take them all, and a report is
//! taken only for processes and files that did not change since its batch began (the last
//! [`QuietRecords::CHANGES`] changes are kept, stamped; a report older than those is not
//! taken).

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use sysflow::{Foid, Oid, Record};
use sysflow_rules::verdicts::Settling;

use crate::state::{Entity, Forget};

/// A record as far as a settled verdict goes (what the engine's memo keys on, with the
/// file by its OID: the sink forgets keys when a file record passes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuietKey(Settling);

impl QuietKey {
    /// The key of an event or flow the rules evaluate (None for other records).
    pub fn of(record: &Record) -> Option<QuietKey> {
        Settling::of(record).map(QuietKey)
    }

    fn process(&self) -> Oid {
        self.0.process
    }
}

/// A change to what reports stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Process(Oid),
    File(Foid),
    All,
}

/// The keys the worker reported: at most [`QuietRecords::KEYS`], and per process the last
/// [`QuietRecords::PER_PROCESS`] (a file server cycles through many files).
#[derive(Default)]
pub struct QuietRecords {
    keys: HashSet<QuietKey>,
    /// The key last found, while nothing changed: a process repeats one record in a row
    /// (an open and close in a loop, a log line after another).
    last_found: Option<QuietKey>,
    /// Each process's keys, oldest first (a process record takes them all).
    by_process: HashMap<Oid, Vec<QuietKey>>,
    /// Every file a key names (a file record that comes again takes all keys).
    files: HashSet<Foid>,
    /// Moves on with every change.
    epoch: u64,
    /// The last [`QuietRecords::CHANGES`] changes, each with the epoch it moved to, oldest
    /// first.
    changes: VecDeque<(u64, Change)>,
    /// Reports of batches begun before this epoch are not taken: changes since then were
    /// let go, so they cannot be checked.
    floor: u64,
}

impl QuietRecords {
    pub const PER_PROCESS: usize = 256;
    /// Keys in all; past this all are forgotten (and learnt again).
    pub const KEYS: usize = 16384;
    /// Changes kept: seconds of a busy node's, more than a report takes to come back.
    pub const CHANGES: usize = 8192;

    pub fn contains(&mut self, key: &QuietKey) -> bool {
        if self.last_found.as_ref() == Some(key) {
            return true;
        }
        let found = self.keys.contains(key);
        if found {
            self.last_found = Some(*key);
        }
        found
    }

    /// Where the changes stand: a batch begun now is told by this.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn changed(&mut self, change: Change) {
        self.epoch += 1;
        self.last_found = None;
        if self.changes.len() == Self::CHANGES
            && let Some((stamp, _)) = self.changes.pop_front()
        {
            self.floor = stamp;
        }
        self.changes.push_back((self.epoch, change));
        match change {
            Change::Process(process) => {
                for key in self.by_process.remove(&process).unwrap_or_default() {
                    self.keys.remove(&key);
                }
            }
            Change::File(oid) => {
                if self.files.contains(&oid) {
                    self.clear();
                }
            }
            Change::All => self.clear(),
        }
    }

    fn clear(&mut self) {
        self.last_found = None;
        self.keys.clear();
        self.by_process.clear();
        self.files.clear();
    }

    /// An entity passes on its way to the worker: the keys it may change go.
    pub fn entity(&mut self, entity: &Entity) {
        self.changed(match entity {
            Entity::Process(p) => Change::Process(p.oid),
            Entity::File(f) => Change::File(f.oid),
            Entity::Container(_) | Entity::Pod(_) => Change::All,
        });
    }

    pub fn forget(&mut self, forget: &Forget) {
        self.changed(match forget {
            Forget::Process(oid) => Change::Process(*oid),
            Forget::File(oid) => Change::File(*oid),
            Forget::Container(_) | Forget::Pod(_) => Change::All,
        });
    }

    /// New rules, or entities the worker never got (a batch dropped).
    pub fn forget_all(&mut self) {
        self.changed(Change::All);
    }

    /// Takes what the worker reported of a batch begun at `epoch`, but for the processes
    /// and files that changed since.
    pub fn learn(&mut self, epoch: u64, keys: &[QuietKey]) {
        if epoch < self.floor || keys.is_empty() {
            return;
        }
        let mut processes = HashSet::default();
        let mut files = HashSet::default();
        for (_, change) in self.changes.iter().rev().take_while(|(at, _)| *at > epoch) {
            match change {
                Change::Process(oid) => {
                    processes.insert(*oid);
                }
                Change::File(oid) => {
                    files.insert(*oid);
                }
                Change::All => return,
            }
        }
        for key in keys {
            if processes.contains(&key.process()) || key.0.file.is_some_and(|f| files.contains(&f))
            {
                continue;
            }
            if self.keys.contains(key) {
                continue;
            }
            if self.keys.len() >= Self::KEYS {
                self.clear();
            }
            let known = self.by_process.entry(key.process()).or_default();
            if known.len() == Self::PER_PROCESS {
                let oldest = known.remove(0);
                self.keys.remove(&oldest);
                self.last_found = None;
            }
            known.push(*key);
            self.keys.insert(*key);
            if let Some(file) = key.0.file {
                self.files.insert(file);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sysflow::{File, FileFlow, Process};

    use super::*;

    const P: Oid = Oid {
        hpid: 10,
        create_ts: 1,
    };
    const Q: Oid = Oid {
        hpid: 11,
        create_ts: 1,
    };

    fn flow(process: Oid, file: u8, op_flags: i32, bytes: i64) -> Record {
        Record::FileFlow(FileFlow {
            proc_oid: process,
            file_oid: Foid([file; 20]),
            op_flags,
            num_r_recv_bytes: bytes,
            ..Default::default()
        })
    }

    fn key(process: Oid, file: u8) -> QuietKey {
        QuietKey::of(&flow(process, file, 1 << 8, 4096)).unwrap()
    }

    fn file(oid: u8) -> Entity {
        Entity::File(File {
            oid: Foid([oid; 20]),
            ..Default::default()
        })
    }

    #[test]
    fn records_alike_but_for_their_counters_share_a_key() {
        let mut quiet = QuietRecords::default();
        quiet.learn(quiet.epoch(), &[key(P, 1)]);
        let mut alike = |r: Record| quiet.contains(&QuietKey::of(&r).unwrap());
        assert!(alike(flow(P, 1, 1 << 8, 1)));
        assert!(!alike(flow(P, 1, 1 << 9, 4096)));
        assert!(!alike(flow(P, 2, 1 << 8, 4096)));
        assert!(!alike(flow(Q, 1, 1 << 8, 4096)));
        // Records the rules do not evaluate have no key.
        assert_eq!(QuietKey::of(&Record::File(File::default())), None);
    }

    /// A report is taken but for what changed since its batch began; what passes takes the
    /// keys it changes.
    #[test]
    fn learns_only_what_did_not_change_since_and_forgets_what_changes() {
        let mut quiet = QuietRecords::default();
        // Another file and another process changed meanwhile: taken.
        let begun = quiet.epoch();
        quiet.entity(&file(9));
        quiet.forget(&Forget::Process(Q));
        quiet.learn(begun, &[key(P, 1)]);
        assert!(quiet.contains(&key(P, 1)));
        // The process changed meanwhile: its keys are not taken, the others' are.
        let begun = quiet.epoch();
        quiet.entity(&Entity::Process(Process {
            oid: P,
            ..Default::default()
        }));
        assert!(!quiet.contains(&key(P, 1)));
        quiet.learn(begun, &[key(P, 1), key(Q, 3)]);
        assert!(!quiet.contains(&key(P, 1)));
        assert!(quiet.contains(&key(Q, 3)));
        // The file changed meanwhile: not taken. A file record for a file a key named takes
        // all keys; one for another file none.
        let begun = quiet.epoch();
        quiet.forget(&Forget::File(Foid([1; 20])));
        quiet.learn(begun, &[key(P, 1), key(Q, 3)]);
        assert!(!quiet.contains(&key(P, 1)));
        assert!(quiet.contains(&key(Q, 3)));
        quiet.entity(&file(7));
        assert!(quiet.contains(&key(Q, 3)));
        quiet.entity(&file(3));
        assert!(!quiet.contains(&key(Q, 3)));
        // A container takes all, and nothing reported from before it is taken.
        quiet.learn(quiet.epoch(), &[key(P, 1)]);
        let begun = quiet.epoch();
        quiet.entity(&Entity::Container(Default::default()));
        assert!(!quiet.contains(&key(P, 1)));
        quiet.learn(begun, &[key(Q, 4)]);
        assert!(!quiet.contains(&key(Q, 4)));
        // So do new rules.
        quiet.learn(quiet.epoch(), &[key(Q, 4)]);
        quiet.forget_all();
        assert!(!quiet.contains(&key(Q, 4)));
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let mut quiet = QuietRecords::default();
        let per_process = QuietRecords::PER_PROCESS as i32;
        let keys: Vec<QuietKey> = (0..per_process + 2)
            .map(|flags| QuietKey::of(&flow(P, 1, flags, 0)).unwrap())
            .collect();
        quiet.learn(0, &keys);
        // The process's last ones.
        assert!(!quiet.contains(&keys[1]));
        assert!(keys[2..].iter().all(|k| quiet.contains(k)));
        assert_eq!(quiet.keys.len(), QuietRecords::PER_PROCESS);
        // The oldest, just found, is let go for a newer one: no longer found.
        assert!(quiet.contains(&keys[2]));
        quiet.learn(0, &[QuietKey::of(&flow(P, 2, 0, 0)).unwrap()]);
        assert!(!quiet.contains(&keys[2]));
        assert!(quiet.contains(keys.last().unwrap()));
        // In all: full at the last one, so all forgotten and it learnt.
        let many: Vec<QuietKey> = (0..(QuietRecords::KEYS - QuietRecords::PER_PROCESS) as i64 + 1)
            .map(|hpid| QuietKey::of(&flow(Oid { hpid, create_ts: 0 }, 1, 1, 0)).unwrap())
            .collect();
        quiet.learn(0, &many);
        assert_eq!(quiet.keys.len(), 1);
        assert_eq!(quiet.by_process.len(), 1);
        assert!(!quiet.contains(&keys[9]));
        assert!(!quiet.contains(keys.last().unwrap()));
        assert!(quiet.contains(many.last().unwrap()));
        // Changes: the oldest let go, and a report from a batch it may have overtaken is not
        // taken.
        let begun = quiet.epoch();
        for _ in 0..QuietRecords::CHANGES {
            quiet.entity(&file(200));
        }
        assert_eq!(quiet.changes.len(), QuietRecords::CHANGES);
        quiet.learn(begun, &[key(Q, 5)]);
        assert!(quiet.contains(&key(Q, 5)));
        quiet.entity(&file(200));
        assert_eq!(quiet.changes.len(), QuietRecords::CHANGES);
        quiet.learn(begun, &[key(Q, 6)]);
        assert!(!quiet.contains(&key(Q, 6)));
        quiet.learn(begun + 1, &[key(Q, 6)]);
        assert!(quiet.contains(&key(Q, 6)));
    }
}
