//! Descriptors: what each process's open descriptors refer to, and the flow in progress on
//! each. Kernel records open, copy and close descriptors; the kernel's I/O counters arrive with
//! closes, and ahead of exits, execs, close_range and flushes, and end or cut the flows.
//!
//! A flow is reported (as a [`Fact::Flow`]) when it ends by close (CLOSE), when its process
//! ends or the agent stops (TRUNCATE), and at every flush for long-lived descriptors (then it
//! starts again: new start time, counters and flags reset). A flow on which nothing was
//! observed (flags only CLOSE and/or TRUNCATE, or none) is never reported, as the collector
//! writes none; nor is a file flow outside its container's path policy.

use sysflow::encoding::{linux_open_flags_to_ppm, op, restype, restype_from_mode};

use super::{
    State,
    facts::{Actor, Fact, FlowTarget},
};
use crate::probe::{
    IoCounters,
    records::{
        CloseEvent, CloseRangeEvent, CloseReason, CountersEvent, CountersReason, DupEvent,
        OpenEvent, SockOp, SockOpEvent, Socket, SocketEvent,
    },
};

/// A flag bit outside the schema's opFlags (bit 30) that marks close-on-exec descriptors in a
/// flow state; never reported.
pub const CLOEXEC_MARK: i32 = 1 << 30;
const O_CLOEXEC: u32 = 0o2000000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const S_IFIFO: u32 = 0o010000;

/// What a descriptor refers to.
#[derive(Clone, Debug, PartialEq)]
pub enum FdKind {
    /// A file, directory, pipe or unix socket (a FileFlow target).
    File {
        /// Shared by the descriptors a fork copies.
        path: std::sync::Arc<str>,
        foid: sysflow::Foid,
        restype: i32,
        /// Falco-numbered open flags; 0 when the open was not seen.
        open_flags: i32,
    },
    /// An IP socket (a NetworkFlow), with its endpoints once connect/accept told them (boxed:
    /// they would make every descriptor's entry half again as large).
    Socket(Option<Box<Socket>>),
}

/// A flow in progress on one descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Wall-clock ns of the flow's start (open/connect/accept, or the last report).
    pub ts: i64,
    pub op_flags: i32,
    pub tid: i64,
    pub read_ops: i64,
    pub write_ops: i64,
    pub read_bytes: i64,
    pub write_bytes: i64,
}

impl FlowState {
    /// A flow starting at `ts` (wall-clock ns) with these flags, no I/O yet.
    pub fn starting(ts: i64, op_flags: i32, tid: i64) -> Self {
        FlowState {
            ts,
            op_flags,
            tid,
            ..FlowState::default()
        }
    }

    /// The same descriptor's next flow, from `now`: only the close-on-exec mark stays.
    fn restarted(&self, now: i64) -> Self {
        FlowState::starting(now, self.op_flags & CLOEXEC_MARK, self.tid)
    }

    /// Adds what the kernel counted on the descriptor.
    fn add(&mut self, c: &IoCounters) {
        self.read_ops += c.read_ops as i64;
        self.write_ops += c.write_ops as i64;
        self.read_bytes += c.read_bytes as i64;
        self.write_bytes += c.write_bytes as i64;
        if c.read_ops > 0 {
            self.op_flags |= op::READ_RECV;
        }
        if c.write_ops > 0 {
            self.op_flags |= op::WRITE_SEND;
        }
        if c.last_tid != 0 {
            self.tid = c.last_tid as i64;
        }
    }

    /// Whether anything was observed: an open, connect, accept, read or write.
    fn observed(&self) -> bool {
        self.op_flags & !(op::CLOSE | op::TRUNCATE | CLOEXEC_MARK) != 0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FdEntry {
    pub kind: FdKind,
    pub flow: FlowState,
}

impl FdEntry {
    fn starting(kind: FdKind, ts: i64, op_flags: i32, tid: i64) -> Self {
        FdEntry {
            kind,
            flow: FlowState::starting(ts, op_flags, tid),
        }
    }
}

/// The kernel's view of a socket at its first I/O has both ends (and a datagram's peer);
/// without either end it adds nothing to what connect/accept told.
fn with_endpoints(sock: Option<&Socket>) -> Option<&Socket> {
    sock.filter(|s| s.local.is_some() || s.remote.is_some())
}

impl State {
    pub(super) fn on_open(&mut self, e: OpenEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret < 0 {
            let container = self.procs.get(tgid).and_then(|p| p.container_id.clone());
            self.facts.push(Fact::OpenFailed { container });
            return;
        }
        let base = self.base_dir(tgid, e.dirfd);
        let path = super::paths::resolve(base.as_deref(), &e.path);
        let ts = self.wall(c.ts_ns);
        let container = self.procs.get(tgid).and_then(|p| p.container_id.clone());
        let rtype = if e.file.mode == 0 {
            restype::FILE
        } else {
            restype_from_mode(u32::from(e.file.mode))
        };
        let (foid, path) = self.file(&path, container.as_deref(), rtype, ts);
        let mut op_flags = op::OPEN;
        if e.flags & O_CLOEXEC != 0 {
            op_flags |= CLOEXEC_MARK;
        }
        let kind = FdKind::File {
            path,
            foid,
            restype: rtype,
            open_flags: linux_open_flags_to_ppm(e.flags),
        };
        if let Some(entry) = self.procs.get_mut(tgid) {
            entry.fds.insert(
                c.ret as i32,
                FdEntry::starting(kind, ts, op_flags, c.tid as i64),
            );
        }
    }

    pub(super) fn on_close(&mut self, e: CloseEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let end = self.wall(c.ts_ns);
        match e.reason {
            CloseReason::PeerChanged => {
                // The descriptor stays open: report the old peer's share and restart the flow.
                let Some(counters) = &e.counters else { return };
                let mut f = self.fd_entry(tgid, e.fd, counters, end);
                f.flow.add(counters);
                self.report_flow(tgid, e.fd, &f, Some(counters), end);
                if let Some(live) = self.procs.get_mut(tgid).and_then(|p| p.fds.get_mut(&e.fd)) {
                    live.flow = live.flow.restarted(end);
                }
            }
            CloseReason::Close | CloseReason::Replaced => {
                let known = self.procs.get_mut(tgid).and_then(|p| p.fds.remove(&e.fd));
                let mut f = match (known, &e.counters) {
                    (Some(f), _) => f,
                    (None, Some(counters)) => self.fd_entry(tgid, e.fd, counters, end),
                    (None, None) => return,
                };
                if let Some(counters) = &e.counters {
                    f.flow.add(counters);
                }
                f.flow.op_flags |= op::CLOSE;
                self.report_flow(tgid, e.fd, &f, e.counters.as_ref(), end);
            }
        }
    }

    /// A descriptor's counters reported because of something else: a flush reports the flow
    /// so far and restarts it; ahead of an exit, exec, close_range or shutdown they are added
    /// to the flow, which that record then ends.
    pub(super) fn on_counters(&mut self, e: CountersEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let now = self.wall(c.ts_ns);
        let mut f = self.fd_entry(tgid, e.fd, &e.counters, now);
        f.flow.add(&e.counters);
        if let FdKind::Socket(seen) = &mut f.kind
            && let Some(sock) = with_endpoints(e.counters.sock.as_ref())
        {
            *seen = Some(Box::new(sock.clone()));
        }
        if e.reason == CountersReason::Flush {
            self.report_flow(tgid, e.fd, &f, Some(&e.counters), now);
            f.flow = f.flow.restarted(now);
        }
        if let Some(p) = self.procs.get_mut(tgid) {
            p.fds.insert(e.fd, f);
        }
    }

    pub(super) fn on_dup(&mut self, e: DupEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let new_fd = c.ret as i32;
        if c.ret < 0 || new_fd == e.old_fd {
            return;
        }
        let ts = self.wall(c.ts_ns);
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let Some(old) = entry.fds.get(&e.old_fd) else {
            return;
        };
        let op_flags = if e.flags & O_CLOEXEC != 0 {
            CLOEXEC_MARK
        } else {
            0
        };
        let copy = FdEntry::starting(old.kind.clone(), ts, op_flags, c.tid as i64);
        entry.fds.insert(new_fd, copy);
    }

    /// close_range closed every descriptor in the range without a close(2) each: end the flows
    /// of the ones this process has, with the counters reported just before this record.
    pub(super) fn on_close_range(&mut self, e: CloseRangeEvent) {
        const CLOSE_RANGE_CLOEXEC: u32 = 4;
        let c = &e.common;
        let tgid = self.process_for(c);
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let in_range = |fd: &i32| *fd >= 0 && (e.first..=e.last).contains(&(*fd as u32));
        if e.flags & CLOSE_RANGE_CLOEXEC != 0 {
            for (_, f) in entry.fds.iter_mut().filter(|(fd, _)| in_range(fd)) {
                f.flow.op_flags |= CLOEXEC_MARK;
            }
            return;
        }
        if c.ret != 0 {
            return;
        }
        let fds: Vec<i32> = entry.fds.keys().copied().filter(in_range).collect();
        let end = self.wall(c.ts_ns);
        self.end_flows(tgid, fds, end, op::CLOSE);
    }

    pub(super) fn on_socket(&mut self, e: SocketEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        if c.ret < 0 || !matches!(e.domain as u16, AF_INET | AF_INET6) {
            return;
        }
        let ts = self.wall(c.ts_ns);
        let op_flags = if e.sock_type & O_CLOEXEC != 0 {
            CLOEXEC_MARK
        } else {
            0
        };
        if let Some(entry) = self.procs.get_mut(tgid) {
            entry.fds.insert(
                c.ret as i32,
                FdEntry::starting(FdKind::Socket(None), ts, op_flags, c.tid as i64),
            );
        }
    }

    pub(super) fn on_sock_op(&mut self, e: SockOpEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let ts = self.wall(c.ts_ns);
        let (fd, flag) = match e.op {
            SockOp::Connect => (e.fd, op::CONNECT),
            SockOp::Accept | SockOp::Accept4 if c.ret >= 0 => (c.ret as i32, op::ACCEPT),
            _ => return,
        };
        if e.sock
            .as_ref()
            .is_some_and(|s| !matches!(s.family, AF_INET | AF_INET6))
        {
            return;
        }
        let Some(entry) = self.procs.get_mut(tgid) else {
            return;
        };
        let f = entry.fds.entry(fd).or_insert_with(|| FdEntry {
            kind: FdKind::Socket(None),
            flow: FlowState::default(),
        });
        f.kind = FdKind::Socket(e.sock.clone().map(Box::new));
        f.flow.ts = ts;
        f.flow.tid = c.tid as i64;
        f.flow.op_flags |= flag;
    }

    /// Ends the flows of these descriptors of `tgid` (in fd order) with `flag` (CLOSE or
    /// TRUNCATE), with what was counted on them: what process exit, exec (close-on-exec),
    /// close_range and shutdown have in common.
    pub(super) fn end_flows(&mut self, tgid: u32, mut fds: Vec<i32>, end: i64, flag: i32) {
        fds.sort_unstable();
        for fd in fds {
            if let Some(mut f) = self.procs.get_mut(tgid).and_then(|p| p.fds.remove(&fd)) {
                f.flow.op_flags |= flag;
                self.report_flow(tgid, fd, &f, None, end);
            }
        }
    }

    /// Reports the flow of one descriptor until `end`, if anything was observed on it and its
    /// container's policy keeps its path. `counters` are the kernel's, when they came with
    /// the record that ends or cuts the flow.
    fn report_flow(
        &mut self,
        tgid: u32,
        fd: i32,
        f: &FdEntry,
        counters: Option<&IoCounters>,
        end: i64,
    ) {
        if !f.flow.observed() {
            return;
        }
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        let target = match &f.kind {
            FdKind::File {
                path,
                foid,
                open_flags,
                ..
            } => {
                if !self
                    .containers
                    .path_allowed(entry.container_id.as_deref(), path)
                {
                    self.stats.filtered_by_path += 1;
                    return;
                }
                FlowTarget::File {
                    foid: *foid,
                    open_flags: *open_flags,
                }
            }
            FdKind::Socket(seen) => FlowTarget::Socket(
                with_endpoints(counters.and_then(|k| k.sock.as_ref()))
                    .or(seen.as_deref())
                    .cloned(),
            ),
        };
        let flow = FlowState {
            op_flags: f.flow.op_flags & !CLOEXEC_MARK,
            ..f.flow.clone()
        };
        self.facts.push(Fact::Flow {
            actor: Actor {
                proc: entry.oid,
                tid: flow.tid,
                container: entry.container_id.clone(),
            },
            fd,
            target,
            flow,
            end,
        });
    }

    /// The process's entry for `fd`, or one made from what the kernel's counters say about a
    /// descriptor the agent did not see opening (inherited before the agent started, etc.).
    fn fd_entry(&mut self, tgid: u32, fd: i32, counters: &IoCounters, ts: i64) -> FdEntry {
        if let Some(f) = self.procs.get(tgid).and_then(|p| p.fds.get(&fd)) {
            return f.clone();
        }
        let kind = match &counters.sock {
            Some(s) if matches!(s.family, AF_INET | AF_INET6) => {
                FdKind::Socket(Some(Box::new(s.clone())))
            }
            _ => {
                let container = self.procs.get(tgid).and_then(|p| p.container_id.clone());
                let path = match self.host.fd_target(tgid, fd) {
                    Some(target) => target,
                    None if counters.sock.is_some() => format!("socket:[{}]", counters.file.ino),
                    None if u32::from(counters.file.file_type()) == S_IFIFO => {
                        format!("pipe:[{}]", counters.file.ino)
                    }
                    None => format!("anon_inode:[{}:{}]", counters.file.dev, counters.file.ino),
                };
                let rtype = restype_from_mode(u32::from(counters.file.mode));
                let (foid, path) = self.file(&path, container.as_deref(), rtype, ts);
                FdKind::File {
                    path,
                    foid,
                    restype: rtype,
                    open_flags: 0,
                }
            }
        };
        let start = if counters.first_ns == 0 {
            ts
        } else {
            self.wall(counters.first_ns)
        };
        FdEntry {
            kind,
            flow: FlowState {
                ts: start,
                tid: counters.last_tid as i64,
                ..FlowState::default()
            },
        }
    }

    /// A descriptor's kind from what /proc/<pid>/fd links to: a path, a pipe, a socket.
    pub(super) fn kind_from_link(
        &mut self,
        target: &str,
        container: Option<&str>,
        ts: i64,
    ) -> Option<FdKind> {
        let (path, restype) = if target.starts_with('/') {
            (target.to_owned(), restype::FILE)
        } else if target.starts_with("pipe:") {
            (target.to_owned(), restype::PIPE)
        } else if target.starts_with("socket:") {
            return Some(FdKind::Socket(None));
        } else {
            return None;
        };
        let (foid, path) = self.file(&path, container, restype, ts);
        Some(FdKind::File {
            path,
            foid,
            restype,
            open_flags: 0,
        })
    }
}

/// A descriptor seen in /proc at start-up, or inherited: its own flow from `ts`, keeping only
/// the close-on-exec mark.
pub(super) fn inherited(kind: FdKind, ts: i64, cloexec: bool, tid: i64) -> FdEntry {
    FdEntry::starting(kind, ts, if cloexec { CLOEXEC_MARK } else { 0 }, tid)
}

/// Whether a flow state carries the close-on-exec mark.
pub(super) fn is_cloexec(f: &FdEntry) -> bool {
    f.flow.op_flags & CLOEXEC_MARK != 0
}
