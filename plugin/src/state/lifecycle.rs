//! Process lifecycle, following the reference collector's rules:
//! * CLONE under the parent (with the child's pid) and under the child (with 0); the child
//!   inherits the parent's identity and descriptors (each copy a flow of its own).
//! * EXEC after the process is reported again as MODIFIED; close-on-exec descriptors end.
//! * EXIT after every open flow of the process ends with TRUNCATE (and its thread activity
//!   when ProcessFlow is on); the entry stays a grace period for late references.
//! * SETUID with the new user's name; set*gid only changes the process.
//!
//! A record from a process the table does not have (started before the agent, or whose start
//! was lost) makes an entry from /proc, or a bare one when the process is gone.

use sysflow::{Oid, SfObjectState, encoding::op};

use super::{
    State,
    descriptors::{FdEntry, inherited, is_cloexec},
    facts::{Actor, Entity, Fact, Forget},
    processes::{Displaced, ProcEntry},
};
use crate::{
    host::ProcSnapshot,
    probe::records::{CloneEvent, Common, ExecEvent, ExitEvent, SetIdEvent, SetIdSyscall},
};

impl State {
    /// The tgid of a record's process, with an entry for it: the known one if the start time
    /// matches, else one made from /proc (or a bare one when the process is already gone).
    pub(super) fn process_for(&mut self, c: &Common) -> u32 {
        let tgid = c.tgid;
        if let Some(entry) = self.procs.get(tgid)
            && entry.same_process(c.proc_start_ns)
        {
            if entry.cgroup_id != c.cgroup_id {
                // Moved to another cgroup (before exec into a container, for instance).
                let container = self.container_of(c.cgroup_id, tgid);
                if let Some(entry) = self.procs.get_mut(tgid) {
                    entry.cgroup_id = c.cgroup_id;
                    if entry.container_id != container {
                        entry.container_id = container;
                        self.publish(tgid);
                    }
                }
            }
            return tgid;
        }
        self.stats.processes_discovered += 1;
        let snapshot = self
            .host
            .process(tgid, self.config.capture_env)
            .unwrap_or_else(|| ProcSnapshot::bare(tgid, c.proc_start_ns));
        let snapshot = ProcSnapshot {
            start_boot_ns: c.proc_start_ns,
            ..snapshot
        };
        self.insert_snapshot(snapshot, c.cgroup_id, false)
    }

    /// Learns every process running now from /proc, with its descriptors.
    pub fn seed(&mut self) {
        let mut snapshots: Vec<ProcSnapshot> = self
            .host
            .pids()
            .into_iter()
            .filter_map(|pid| self.host.process(pid, self.config.capture_env))
            .collect();
        // Parents before children, so each child finds its parent's OID.
        snapshots.sort_by_key(|s| s.start_boot_ns);
        for s in snapshots {
            // No cgroup id from /proc: the container comes from the cgroup path instead.
            self.insert_snapshot(s, 0, true);
        }
    }

    /// An entry made from what /proc says. `coarse`: the start time is /proc's, tick-precise.
    fn insert_snapshot(&mut self, mut s: ProcSnapshot, cgroup_id: u64, coarse: bool) -> u32 {
        let tgid = s.tgid;
        let parent = self.procs.get(s.parent_tgid).map(|p| p.oid);
        let ts = self.wall(s.start_boot_ns);
        let oid = Oid {
            create_ts: ts,
            hpid: tgid as i64,
        };
        let mut entry = ProcEntry::new(tgid, oid, s.start_boot_ns, s.parent_tgid, parent);
        entry.coarse_start = coarse;
        entry.cgroup_id = cgroup_id;
        entry.container_id = self.container_of(cgroup_id, tgid);
        entry.entry = s.entry;
        let fds = std::mem::take(&mut s.fds);
        self.config
            .redact
            .redact(&s.exe, &mut s.args, &mut self.stats.args_redacted);
        entry.take_identity(s);
        for (fd, target, cloexec) in fds {
            if let Some(kind) = self.kind_from_link(&target, entry.container_id.as_deref(), ts) {
                entry
                    .fds
                    .insert(fd, inherited(kind, ts, cloexec, tgid as i64));
            }
        }
        self.insert(entry);
        tgid
    }

    /// Adds a process to the table and reports it; what it displaced is forgotten.
    fn insert(&mut self, entry: ProcEntry) {
        let tgid = entry.tgid;
        let Displaced { replaced, evicted } = self.procs.insert(entry);
        for gone in replaced.into_iter().chain(evicted) {
            self.facts.push(Fact::Forget(Forget::Process(gone.oid)));
        }
        self.stats.processes_evicted = self.procs.evictions;
        self.publish(tgid);
    }

    /// Reports the current version of a process.
    pub(super) fn publish(&mut self, tgid: u32) {
        if let Some(entry) = self.procs.get(tgid) {
            let process = entry.to_sysflow(&self.users);
            self.facts.push(Fact::Entity(Entity::Process(process)));
        }
    }

    fn process_op(&mut self, tgid: u32, c: &Common, op: i32, args: Vec<String>, ret: i64) {
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        let fact = Fact::ProcessOp {
            actor: Actor {
                proc: entry.oid,
                tid: c.tid as i64,
                container: entry.container_id.clone(),
            },
            ts: self.wall(c.ts_ns),
            op,
            args,
            ret: ret.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        };
        self.facts.push(fact);
    }

    pub(super) fn on_clone(&mut self, e: CloneEvent) {
        let c = &e.common;
        if e.is_thread {
            if self.config.process_flows && !e.is_child {
                let tgid = self.process_for(c);
                let ts = self.wall(c.ts_ns);
                if let Some(entry) = self.procs.get_mut(tgid) {
                    let t = &mut entry.threads;
                    if t.first_ts == 0 {
                        t.first_ts = ts;
                    }
                    if c.ret < 0 {
                        t.clone_errors += 1;
                    } else {
                        t.cloned += 1;
                    }
                }
            }
            return;
        }
        if !e.is_child {
            let tgid = self.process_for(c);
            self.process_op(tgid, c, op::CLONE, vec![], c.ret);
            return;
        }
        // The new process reports itself: it inherits its parent's identity and descriptors.
        let ts = self.wall(c.ts_ns);
        let parent = self.procs.get(e.parent_tgid).cloned();
        let oid = Oid {
            create_ts: self.wall(c.proc_start_ns),
            hpid: c.tgid as i64,
        };
        let mut entry = ProcEntry::new(
            c.tgid,
            oid,
            c.proc_start_ns,
            e.parent_tgid,
            parent.as_ref().map(|p| p.oid),
        );
        entry.ts = ts;
        entry.cgroup_id = c.cgroup_id;
        entry.container_id = self.container_of(c.cgroup_id, c.tgid);
        match parent {
            Some(p) => {
                entry.exe = p.exe;
                entry.args = p.args;
                entry.uid = p.uid;
                entry.gid = p.gid;
                entry.tty = p.tty;
                entry.cwd = p.cwd;
                entry.env = p.env;
                // Each inherited descriptor is a flow of its own in the child.
                for (fd, f) in &p.fds {
                    entry.fds.insert(
                        *fd,
                        inherited(f.kind.clone(), ts, is_cloexec(f), c.tid as i64),
                    );
                }
            }
            None => {
                if let Some(mut s) = self.host.process(c.tgid, self.config.capture_env) {
                    self.config
                        .redact
                        .redact(&s.exe, &mut s.args, &mut self.stats.args_redacted);
                    entry.take_identity(s);
                }
            }
        }
        self.insert(entry);
        self.process_op(c.tgid, c, op::CLONE, vec![], 0);
    }

    pub(super) fn on_exec(&mut self, e: ExecEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret < 0 {
            self.process_op(tgid, c, op::EXEC, vec![], c.ret);
            return;
        }
        // The exec closed the close-on-exec descriptors without a close(2); their counters
        // came before this record (from sys_enter_exec, and what was left from here).
        self.close_cloexec(tgid, c, e.open_fds);
        let ts = self.wall(c.ts_ns);
        let env = if self.config.capture_env {
            self.host
                .process(tgid, true)
                .map(|s| s.env)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        entry.exe = super::paths::resolve(Some(&entry.cwd), &e.filename);
        let mut args = e.args.get(1..).map(<[String]>::to_vec).unwrap_or_default();
        self.config
            .redact
            .redact(&entry.exe, &mut args, &mut self.stats.args_redacted);
        entry.args = args.join(" ");
        entry.uid = e.uid;
        entry.gid = e.gid;
        entry.env = env;
        entry.state = SfObjectState::Modified;
        entry.ts = ts;
        self.publish(tgid);
        self.process_op(tgid, c, op::EXEC, vec![], 0);
    }

    /// Ends the flows of the descriptors the exec closed: those the kernel no longer has open
    /// (`open_fds`, for descriptors below 64) and those marked close-on-exec. The kernel's word
    /// is what counts: the agent does not see the flags of descriptors it learned from their
    /// I/O (pipes, inherited ones), and a program that kept them would otherwise hold them (and
    /// their files) until it exits.
    fn close_cloexec(&mut self, tgid: u32, c: &Common, open_fds: Option<u64>) {
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        let closed_by_exec = |fd: i32, f: &FdEntry| match open_fds {
            Some(open) if (0..64).contains(&fd) => open & (1u64 << fd) == 0,
            _ => is_cloexec(f),
        };
        let cloexec: Vec<i32> = entry
            .fds
            .iter()
            .filter(|(fd, f)| closed_by_exec(**fd, f))
            .map(|(fd, _)| *fd)
            .collect();
        if !cloexec.is_empty() {
            let end = self.wall(c.ts_ns);
            self.end_flows(tgid, cloexec, end, op::CLOSE);
        }
    }

    pub(super) fn on_exit(&mut self, e: ExitEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if !e.group_dead {
            if self.config.process_flows
                && let Some(entry) = self.procs.get_mut(tgid)
            {
                entry.threads.exited += 1;
            }
            return;
        }
        let end = self.wall(c.ts_ns);
        // Every flow of the process ends here, truncated, with the counters reported just
        // before this record.
        let fds: Vec<i32> = self
            .procs
            .get(tgid)
            .map(|p| p.fds.keys().copied().collect())
            .unwrap_or_default();
        self.end_flows(tgid, fds, end, op::TRUNCATE);
        // Kept for late references only: its (now empty) descriptor table goes.
        if let Some(entry) = self.procs.get_mut(tgid) {
            entry.fds.shrink_to_fit();
        }
        if self.config.process_flows {
            self.report_threads(tgid, end);
        }
        let ret = e.exit_code.unwrap_or_else(|| -e.signal.unwrap_or(0));
        self.process_op(tgid, c, op::EXIT, vec![], i64::from(ret));
        self.procs.mark_exited(tgid, end);
    }

    fn report_threads(&mut self, tgid: u32, end: i64) {
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let counts = std::mem::take(&mut entry.threads);
        if counts.cloned + counts.exited + counts.clone_errors == 0 {
            return;
        }
        let fact = Fact::Threads {
            actor: Actor {
                proc: entry.oid,
                tid: tgid as i64,
                container: entry.container_id.clone(),
            },
            start: if counts.first_ts != 0 {
                counts.first_ts
            } else {
                entry.ts
            },
            end,
            counts,
        };
        self.facts.push(fact);
    }

    pub(super) fn on_setid(&mut self, e: SetIdEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret != 0 {
            return;
        }
        let is_uid = matches!(
            e.syscall,
            SetIdSyscall::Setuid | SetIdSyscall::Setreuid | SetIdSyscall::Setresuid
        );
        // The effective id: the only argument of set[ug]id, the second of the others.
        let new_id = match e.syscall {
            SetIdSyscall::Setuid | SetIdSyscall::Setgid => e.ids[0],
            _ => e.ids[1],
        };
        let ts = self.wall(c.ts_ns);
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        if let Some(id) = new_id {
            if is_uid {
                entry.uid = id;
            } else {
                entry.gid = id;
            }
        }
        entry.state = SfObjectState::Modified;
        entry.ts = ts;
        self.publish(tgid);
        if is_uid {
            // The collector renders the argument as Falco does: the user name.
            let arg = new_id
                .map(|id| {
                    let name = self.users.user(id);
                    if name.is_empty() {
                        id.to_string()
                    } else {
                        name
                    }
                })
                .unwrap_or_default();
            self.process_op(tgid, c, op::SETUID, vec![arg], 0);
        }
    }
}
