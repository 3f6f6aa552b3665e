//! The process table: every process the agent knows, seeded from /proc at start and kept
//! current from kernel records. A process is identified by (tgid, start time): a kernel record
//! whose start time does not match the entry for its tgid belongs to a new process that reused
//! the pid.

use std::{collections::BTreeSet, sync::Arc};

use foldhash::HashMap;
use sysflow::{Oid, Process, SfObjectState};

use super::{descriptors::FdEntry, room::GiveBackRoom, users::UserNames};
use crate::host::proc::{ProcSnapshot, TICK_NS};

/// Thread activity of a process, for ProcessFlow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadCounts {
    pub first_ts: i64,
    pub cloned: i64,
    pub exited: i64,
    pub clone_errors: i64,
}

#[derive(Clone, Debug)]
pub struct ProcEntry {
    pub tgid: u32,
    pub oid: Oid,
    /// CLOCK_BOOTTIME ns of the start, to tell this process from a later one with its pid.
    pub start_boot_ns: u64,
    /// Seeded from /proc: the start time is only tick-precise.
    pub coarse_start: bool,
    pub poid: Option<Oid>,
    pub parent_tgid: u32,
    pub exe: String,
    pub args: String,
    pub uid: u32,
    pub gid: u32,
    pub tty: bool,
    pub entry: bool,
    pub cwd: String,
    pub env: Vec<String>,
    pub cgroup_id: u64,
    /// Shared with every process of the container (cloned per record for the metrics).
    pub container_id: Option<Arc<str>>,
    /// Wall-clock ns of creation or last change (Process.ts).
    pub ts: i64,
    pub state: SfObjectState,
    pub fds: HashMap<i32, FdEntry>,
    pub threads: ThreadCounts,
    /// When the whole thread group exited: the entry stays for a grace period so late
    /// references (children's parent OID) still resolve. Set through the table, which keeps
    /// its eviction order by it.
    exited_at_ns: Option<i64>,
}

impl ProcEntry {
    /// A process that has not exited, with no descriptors yet.
    pub fn new(
        tgid: u32,
        oid: Oid,
        start_boot_ns: u64,
        parent_tgid: u32,
        poid: Option<Oid>,
    ) -> Self {
        ProcEntry {
            tgid,
            oid,
            start_boot_ns,
            coarse_start: false,
            poid,
            parent_tgid,
            exe: String::new(),
            args: String::new(),
            uid: 0,
            gid: 0,
            tty: false,
            entry: false,
            cwd: String::new(),
            env: Vec::new(),
            cgroup_id: 0,
            container_id: None,
            ts: oid.create_ts,
            state: SfObjectState::Created,
            fds: HashMap::default(),
            threads: ThreadCounts::default(),
            exited_at_ns: None,
        }
    }

    /// Gives back the room of a descriptor table far larger than what it holds. A map never
    /// shrinks by itself: a child keeps the room of its parent's descriptors, a program whose
    /// dynamic loader once opened a fourth file keeps room for seven, a server keeps the room
    /// of its busiest hour. Called once a second, so a process opening and closing in a loop
    /// reallocates at most that often.
    pub fn shrink_idle_fds(&mut self) {
        let (len, room) = (self.fds.len(), self.fds.capacity());
        let oversized = match len {
            0 => room > 0,
            1..=3 => room > 3,
            _ => room > 2 * len,
        };
        if oversized {
            self.fds.shrink_to_fit();
        }
    }

    /// Takes who the process is from what /proc shows: exe, args, ids, tty, cwd, environment
    /// (its descriptors and namespace-init flag are the caller's to take).
    pub fn take_identity(&mut self, s: ProcSnapshot) {
        self.exe = s.exe;
        self.args = s.args.join(" ");
        self.uid = s.uid;
        self.gid = s.gid;
        self.tty = s.tty;
        self.cwd = s.cwd;
        self.env = s.env;
    }

    pub fn exited_at_ns(&self) -> Option<i64> {
        self.exited_at_ns
    }

    /// The SysFlow Process entity of this entry.
    pub fn to_sysflow(&self, names: &UserNames) -> Process {
        Process {
            state: self.state,
            oid: self.oid,
            poid: self.poid,
            ts: self.ts,
            exe: self.exe.clone(),
            exe_args: self.args.clone(),
            uid: self.uid as i32,
            user_name: names.user(self.uid),
            gid: self.gid as i32,
            group_name: names.group(self.gid),
            tty: self.tty,
            container_id: self.container_id.as_deref().map(str::to_owned),
            entry: self.entry,
            cwd: self.cwd.clone(),
            env: self.env.clone(),
        }
    }

    /// Whether a kernel record with this start time belongs to this entry.
    pub fn same_process(&self, start_boot_ns: u64) -> bool {
        if self.coarse_start {
            self.start_boot_ns.abs_diff(start_boot_ns) <= TICK_NS
        } else {
            self.start_boot_ns == start_boot_ns
        }
    }

    /// Where the entry sits in the eviction order: exited ones first, longest exited first;
    /// then live ones, oldest first.
    fn eviction_key(&self) -> (bool, i64, u32) {
        match self.exited_at_ns {
            Some(at) => (false, at, self.tgid),
            None => (true, self.oid.create_ts, self.tgid),
        }
    }
}

/// What an insert pushed out of the table.
#[derive(Debug, Default)]
pub struct Displaced {
    /// The earlier process with the same pid.
    pub replaced: Option<ProcEntry>,
    /// The process evicted to stay within capacity.
    pub evicted: Option<ProcEntry>,
}

/// The table, bounded: beyond `capacity`, exited processes are evicted first, longest exited
/// first, then the oldest live ones. The eviction order is kept as an index, so an insert
/// into a full table costs O(log n), not a scan.
pub struct ProcessTable {
    /// Boxed: a map keeps a share of its slots empty, and an empty slot of a few bytes costs
    /// less than one the size of an entry.
    entries: HashMap<u32, Box<ProcEntry>>,
    by_eviction: BTreeSet<(bool, i64, u32)>,
    capacity: usize,
    /// Entries of processes that exited.
    exited: usize,
    pub evictions: u64,
}

impl ProcessTable {
    pub fn new(capacity: usize) -> Self {
        ProcessTable {
            entries: HashMap::default(),
            by_eviction: BTreeSet::new(),
            capacity: capacity.max(1),
            exited: 0,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries of processes that exited (kept for late references).
    pub fn exited_len(&self) -> usize {
        self.exited
    }

    pub fn get(&self, tgid: u32) -> Option<&ProcEntry> {
        self.entries.get(&tgid).map(|e| &**e)
    }

    pub fn get_mut(&mut self, tgid: u32) -> Option<&mut ProcEntry> {
        self.entries.get_mut(&tgid).map(|e| &mut **e)
    }

    pub fn values(&self) -> impl Iterator<Item = &ProcEntry> {
        self.entries.values().map(|e| &**e)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ProcEntry> {
        self.entries.values_mut().map(|e| &mut **e)
    }

    /// Inserts, replacing an earlier process with the same pid and evicting one when full.
    pub fn insert(&mut self, entry: ProcEntry) -> Displaced {
        let mut displaced = Displaced {
            replaced: self.remove(entry.tgid),
            evicted: None,
        };
        if self.entries.len() >= self.capacity
            && let Some(&(_, _, victim)) = self.by_eviction.first()
        {
            displaced.evicted = self.remove(victim);
            self.evictions += 1;
        }
        self.by_eviction.insert(entry.eviction_key());
        self.entries.insert(entry.tgid, Box::new(entry));
        displaced
    }

    pub fn remove(&mut self, tgid: u32) -> Option<ProcEntry> {
        let entry = self.entries.remove(&tgid)?;
        self.entries.give_back_room();
        self.by_eviction.remove(&entry.eviction_key());
        if entry.exited_at_ns.is_some() {
            self.exited -= 1;
        }
        Some(*entry)
    }

    /// The whole thread group of `tgid` exited at `at` (wall-clock ns).
    pub fn mark_exited(&mut self, tgid: u32, at: i64) {
        if let Some(entry) = self.entries.get_mut(&tgid) {
            self.by_eviction.remove(&entry.eviction_key());
            if entry.exited_at_ns.is_none() {
                self.exited += 1;
            }
            entry.exited_at_ns = Some(at);
            self.by_eviction.insert(entry.eviction_key());
        }
    }

    /// Exited processes to forget now, longest exited first: those whose grace period is
    /// over, and as many more as keep at most `max_exited` exited entries. A process that is
    /// still some live process's parent stays either way (its children's ancestry needs it).
    pub fn expired(&self, now_ns: i64, grace_ns: i64, max_exited: usize) -> Expired {
        let over = self.exited.saturating_sub(max_exited);
        let mut due = Expired::default();
        let mut live_parents = None;
        for &(live, at, tgid) in &self.by_eviction {
            let early = due.tgids.len() < over;
            if live || (!early && now_ns - at < grace_ns) {
                break;
            }
            let parents = live_parents.get_or_insert_with(|| self.live_parents());
            if !parents.contains(&tgid) {
                due.tgids.push(tgid);
                due.early += u64::from(now_ns - at < grace_ns);
            }
        }
        due
    }

    fn live_parents(&self) -> foldhash::HashSet<u32> {
        self.entries
            .values()
            .filter(|e| e.exited_at_ns.is_none())
            .map(|e| e.parent_tgid)
            .collect()
    }
}

/// Exited processes due to be forgotten.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub tgids: Vec<u32>,
    /// Of them, those forgotten before their grace period was over, to stay within the bound.
    pub early: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::descriptors::{FdKind, inherited};

    fn process(tgid: u32, created: i64) -> ProcEntry {
        ProcEntry::new(
            tgid,
            Oid {
                create_ts: created,
                hpid: tgid as i64,
            },
            0,
            0,
            None,
        )
    }

    #[test]
    fn a_descriptor_table_with_far_more_room_than_descriptors_is_shrunk() {
        let fd = || inherited(FdKind::Socket(None), 0, false, 1);
        let mut p = process(1, 10);
        // The dynamic loader's fourth descriptor, opened and closed.
        for n in 0..4 {
            p.fds.insert(n, fd());
        }
        p.fds.remove(&3);
        assert_eq!((p.fds.len(), p.fds.capacity()), (3, 7));
        p.shrink_idle_fds();
        assert_eq!(p.fds.capacity(), 3, "room for what it has");
        // Five of seven: not worth a reallocation.
        for n in 3..5 {
            p.fds.insert(n, fd());
        }
        assert_eq!(p.fds.capacity(), 7);
        p.shrink_idle_fds();
        assert_eq!(p.fds.capacity(), 7);
        p.fds.clear();
        p.shrink_idle_fds();
        assert_eq!(p.fds.capacity(), 0, "none left: no table");
    }

    #[test]
    fn a_full_table_evicts_the_longest_exited_first_then_the_oldest() {
        let mut t = ProcessTable::new(3);
        t.insert(process(1, 10));
        t.insert(process(2, 20));
        t.insert(process(3, 30));
        t.mark_exited(3, 100);
        t.mark_exited(2, 200);
        let out = t.insert(process(4, 40));
        assert_eq!(out.evicted.map(|e| e.tgid), Some(3), "exited longest ago");
        let out = t.insert(process(5, 50));
        assert_eq!(out.evicted.map(|e| e.tgid), Some(2));
        let out = t.insert(process(6, 60));
        assert_eq!(out.evicted.map(|e| e.tgid), Some(1), "then the oldest live");
        assert_eq!(t.evictions, 3);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_reused_pid_hands_back_the_earlier_process() {
        let mut t = ProcessTable::new(10);
        t.insert(process(7, 10));
        t.mark_exited(7, 15);
        let out = t.insert(process(7, 20));
        assert_eq!(out.replaced.map(|e| e.oid.create_ts), Some(10));
        assert!(out.evicted.is_none());
        assert_eq!(t.get(7).unwrap().exited_at_ns(), None);
        // The earlier process's place in the eviction order went with it.
        assert_eq!(t.expired(1_000, 0, 100), Expired::default());
        assert_eq!(t.exited_len(), 0);
    }

    #[test]
    fn expiry_waits_for_the_grace_period_and_for_live_children() {
        let mut t = ProcessTable::new(10);
        t.insert(process(1, 10));
        let mut child = process(2, 20);
        child.parent_tgid = 1;
        t.insert(child);
        t.insert(process(3, 30));
        t.mark_exited(1, 100);
        t.mark_exited(3, 100);
        assert_eq!(
            t.expired(150, 100, 100).tgids,
            Vec::<u32>::new(),
            "within the grace period"
        );
        assert_eq!(
            t.expired(200, 100, 100).tgids,
            vec![3],
            "1 still has a live child"
        );
        t.mark_exited(2, 300);
        let mut due = t.expired(400, 100, 100).tgids;
        due.sort_unstable();
        assert_eq!(due, vec![1, 2, 3]);
    }

    #[test]
    fn beyond_the_bound_exited_processes_go_early_longest_exited_first() {
        let mut t = ProcessTable::new(100);
        t.insert(process(1, 1));
        for tgid in 2..=8 {
            let mut child = process(tgid, i64::from(tgid));
            child.parent_tgid = 1;
            t.insert(child);
        }
        // 1 exits first but keeps a live child (8); 2..=7 exit after it, in order.
        t.mark_exited(1, 100);
        for tgid in 2..=7 {
            t.mark_exited(tgid, 100 + i64::from(tgid));
        }
        assert_eq!(t.exited_len(), 7);
        // Within the grace period, a bound of 3: four must go, the parent of a live process
        // skipped.
        assert_eq!(
            t.expired(110, 1_000, 3),
            Expired {
                tgids: vec![2, 3, 4, 5],
                early: 4
            }
        );
        // Past the grace period of some: they go as before, none of them early.
        assert_eq!(
            t.expired(1_104, 1_000, 100),
            Expired {
                tgids: vec![2, 3, 4],
                early: 0
            }
        );
        t.remove(2);
        t.mark_exited(8, 200);
        assert_eq!(t.exited_len(), 7);
        assert_eq!(
            t.expired(2_000, 1_000, 100).tgids.len(),
            7,
            "no live child any more"
        );
    }

    #[test]
    fn a_full_table_keeps_the_newest_of_many_inserts() {
        // 100,000 inserts into a table of 10,000 (the time is printed: with a scan of the
        // table per eviction, as before the index, this took seconds).
        let mut t = ProcessTable::new(10_000);
        let started = std::time::Instant::now();
        for tgid in 0..100_000 {
            t.insert(process(tgid, tgid as i64));
        }
        assert_eq!(t.len(), 10_000);
        assert_eq!(t.evictions, 90_000);
        assert!(t.get(99_999).is_some() && t.get(89_999).is_none());
        eprintln!("100,000 inserts: {:?}", started.elapsed());
    }
}
