//! Per-(process, fd) I/O counters: read, write, send and recv never cross to user space one by
//! one. A call adds to its descriptor's counters; the counters leave the kernel inside
//! `FdReport` records, each carrying what came since the previous report of that descriptor,
//! when the descriptor is closed (or replaced by dup2, or its datagram peer changes), when the
//! process exits or execs, when close_range closes it, and when user space asks for a flush.
//!
//! Descriptors below `FD_SLOTS` count in the process's slots (task storage: plain adds, no map
//! update). Higher descriptors, and datagram sockets whose calls name their peer (each peer is
//! a flow of its own), count in the `FD_COUNTERS` hash map.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::helpers::generated::bpf_loop;
use sysflow_common::{
    Endpoint, FD_SLOTS, FdCounters, FdKey, FdReportRecord, KernelCounter, RecordKind, SockInfo,
    report_reason,
};

use crate::{
    emit::{header, now_ns, scratch, submit},
    kernel::{file_identity, file_of_fd, is_socket, read, sock_info},
    maps::{ENTRY_SCRATCH, FD_COUNTERS, bump, load_config},
    process_state::{Call, FdSlot, ProcessState, slot_kind},
};

const BPF_NOEXIST: u64 = 1;
const SOCK_DGRAM: u16 = 2;
const EEXIST: i32 = 17;
/// Most descriptors above `FD_SLOTS` walked at one exit or flush (bpf_loop's own limit is 8M).
const MAX_WALK: u32 = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// What one call moved through a descriptor.
#[derive(Clone, Copy)]
pub struct Io {
    pub dir: Direction,
    /// `sysflow_common::io_ops` bit.
    pub op: u16,
    pub ops: u64,
    pub bytes: u64,
}

#[inline(always)]
fn slot_of(state: *mut ProcessState, fd: i32) -> *mut FdSlot {
    // Masked after a volatile read: the compiler would drop the mask where it knows the range
    // from an earlier test on another register, and the verifier would not.
    let fd = unsafe { core::ptr::read_volatile(&fd) } as u32;
    let i = (fd & (FD_SLOTS - 1)) as usize;
    unsafe { &raw mut (*state).slots[i] }
}

/// Adds `n` to a counter other CPUs may be adding to (threads of one process).
#[inline(always)]
fn add_u64(field: *mut u64, n: u64) {
    // The BPF target has no `AtomicU64`; the intrinsic lowers to BPF_ATOMIC add.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, n) };
}

/// The hot path: one call's worth onto its descriptor.
#[inline(always)]
pub fn count(call: &Call, fd: i32, io: &Io) {
    if fd < 0 {
        return;
    }
    if (fd as u32) < FD_SLOTS {
        let slot = slot_of(call.state, fd);
        let mut kind = unsafe { (*slot).kind };
        if kind & slot_kind::HASHED == 0 {
            if kind == 0 {
                kind = start_slot(call, fd, slot);
            }
            if kind != 0 && call.counts_kind(kind) {
                unsafe {
                    let (ops, bytes) = match io.dir {
                        Direction::Read => (&raw mut (*slot).read_ops, &raw mut (*slot).read_bytes),
                        Direction::Write => {
                            (&raw mut (*slot).write_ops, &raw mut (*slot).write_bytes)
                        }
                    };
                    add_u64(ops, io.ops);
                    add_u64(bytes, io.bytes);
                    (*slot).last_tid = call.tid;
                    (*slot).ops_seen |= io.op;
                }
            }
            return;
        }
    }
    count_hashed(call, fd, io, None);
}

/// A call that names its datagram peer (sendto/recvfrom/sendmsg/recvmsg with an address).
#[inline(always)]
pub fn count_with_peer(call: &Call, fd: i32, io: &Io, peer: Option<&(u16, Endpoint)>) {
    match peer {
        None => count(call, fd, io),
        Some(_) if fd >= 0 => count_hashed(call, fd, io, peer),
        Some(_) => {}
    }
}

/// First I/O on a descriptor number since it was assigned: what kind of descriptor it is
/// decides under which capture kind it counts. Returns the kind (0: no such descriptor).
#[inline(always)]
fn start_slot(call: &Call, fd: i32, slot: *mut FdSlot) -> u16 {
    let Some(file) = file_of_fd(call.task, fd) else {
        return 0;
    };
    let kind = if is_socket(&file_identity(file)) {
        slot_kind::SOCKET
    } else {
        slot_kind::FILE
    };
    unsafe {
        (*slot).first_ns = now_ns();
        (*slot).kind = kind;
    }
    kind
}

fn count_hashed(call: &Call, fd: i32, io: &Io, peer: Option<&(u16, Endpoint)>) {
    let key = FdKey {
        tgid: call.tgid,
        fd,
    };
    let now = now_ns();
    if let Some(entry) = FD_COUNTERS.get_ptr_mut(&key) {
        let stale = unsafe { (*entry).proc_start_ns } != call.start_ns;
        let new_peer = match peer {
            Some((_, endpoint)) => unsafe {
                (*entry).sock.sock_type == SOCK_DGRAM && (*entry).sock.remote != *endpoint
            },
            None => false,
        };
        if stale {
            // Left by an earlier process with the same pid that ended without reporting it:
            // not ours to report, and lost.
            if FD_COUNTERS.remove(&key).is_ok() {
                bump(KernelCounter::OrphanedCounters);
            }
        } else if new_peer {
            // A datagram socket talking to someone new: what was counted so far belongs to the
            // old peer. Report it and start over with this call.
            report(call, fd, report_reason::PEER_CHANGED, false);
        } else {
            add_entry(entry, io, now, call.tid);
            return;
        }
    }
    if (fd as u32) < FD_SLOTS {
        // Counting moves from the slot to the map: report what the slot has first.
        let slot = slot_of(call.state, fd);
        if unsafe { (*slot).kind } & slot_kind::HASHED == 0 {
            report_slot(call, fd, slot, report_reason::PEER_CHANGED, true);
            unsafe { (*slot).kind = slot_kind::HASHED };
        }
    }
    // Built in a per-CPU buffer: the stack has no room for it beside a report.
    let Some(fresh) = ENTRY_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    if !new_entry(call, fd, now, peer, unsafe { &mut *fresh }) {
        return;
    }
    match FD_COUNTERS.insert(&key, unsafe { &*fresh }, BPF_NOEXIST) {
        Ok(()) => add_u32(unsafe { &raw mut (*call.state).hashed_fds }, 1),
        // Another thread created it first: add to theirs.
        Err(e) if e == -EEXIST => {}
        Err(_) => {
            bump(KernelCounter::FdTableFull);
            return;
        }
    }
    if let Some(entry) = FD_COUNTERS.get_ptr_mut(&key) {
        add_entry(entry, io, now, call.tid);
    }
}

#[inline(always)]
fn add_u32(field: *mut u32, n: u32) {
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(field, n) };
}

#[inline(always)]
fn add_entry(entry: *mut FdCounters, io: &Io, now: u64, tid: u32) {
    unsafe {
        let (ops, bytes) = match io.dir {
            Direction::Read => (&raw mut (*entry).read_ops, &raw mut (*entry).read_bytes),
            Direction::Write => (&raw mut (*entry).write_ops, &raw mut (*entry).write_bytes),
        };
        add_u64(ops, io.ops);
        add_u64(bytes, io.bytes);
        (*entry).last_ns = now;
        (*entry).last_tid = tid;
        (*entry).ops_seen |= io.op;
    }
}

/// Fills `entry` with zero counts and what the descriptor refers to. False when the capture
/// mode does not cover that kind of descriptor (a socket without network capture, a file without
/// file capture).
fn new_entry(
    call: &Call,
    fd: i32,
    now: u64,
    peer: Option<&(u16, Endpoint)>,
    entry: &mut FdCounters,
) -> bool {
    *entry = FdCounters::default();
    entry.first_ns = now;
    entry.last_ns = now;
    entry.cgroup_id = call.cgroup_id;
    entry.proc_start_ns = call.start_ns;
    entry.last_tid = call.tid;
    if let Some(file) = file_of_fd(call.task, fd) {
        entry.file = file_identity(file);
        if is_socket(&entry.file) {
            entry.sock = sock_info(file);
        }
    }
    let kind = if is_socket(&entry.file) {
        slot_kind::SOCKET
    } else {
        slot_kind::FILE
    };
    if !call.counts_kind(kind) {
        return false;
    }
    // Only datagrams have per-call peers; a stream socket's recvfrom leaves the address buffer
    // as the caller had it.
    if let Some((family, endpoint)) = peer
        && (entry.sock.sock_type == SOCK_DGRAM || entry.sock.family == 0)
    {
        if entry.sock.family == 0 {
            entry.sock = SockInfo {
                family: *family,
                ..SockInfo::default()
            };
        }
        entry.sock.remote = *endpoint;
    }
    true
}

/// A descriptor number was just (re)assigned (open, socket, accept, dup): it starts with no
/// counters, whatever a close the probe did not see left behind.
#[inline(always)]
pub fn forget(call: &Call, fd: i32) {
    if fd < 0 {
        return;
    }
    let hashed = if (fd as u32) < FD_SLOTS {
        let slot = slot_of(call.state, fd);
        let hashed = unsafe { (*slot).kind } & slot_kind::HASHED != 0;
        reset_slot(slot);
        hashed
    } else {
        true
    };
    if hashed
        && FD_COUNTERS
            .remove(&FdKey {
                tgid: call.tgid,
                fd,
            })
            .is_ok()
    {
        add_u32(unsafe { &raw mut (*call.state).hashed_fds }, u32::MAX);
    }
}

#[inline(always)]
fn reset_slot(slot: *mut FdSlot) {
    // Field by field (volatile, so it does not become a memset call the verifier must follow).
    unsafe {
        core::ptr::write_volatile(&raw mut (*slot).read_bytes, 0);
        core::ptr::write_volatile(&raw mut (*slot).read_ops, 0);
        core::ptr::write_volatile(&raw mut (*slot).write_bytes, 0);
        core::ptr::write_volatile(&raw mut (*slot).write_ops, 0);
        core::ptr::write_volatile(&raw mut (*slot).first_ns, 0);
        core::ptr::write_volatile(&raw mut (*slot).last_tid, 0);
        core::ptr::write_volatile(&raw mut (*slot).ops_seen, 0);
        core::ptr::write_volatile(&raw mut (*slot).kind, 0);
    }
}

/// Whether a report ends the descriptor (its number may be reused next).
#[inline(always)]
fn ends(reason: u8) -> bool {
    matches!(
        reason,
        report_reason::CLOSE
            | report_reason::REPLACED
            | report_reason::EXIT
            | report_reason::CLOSE_RANGE
    )
}

/// Reports a descriptor's counters (what came since its last report) and, when `reason` ends
/// it, forgets them. `identity`: the descriptor still refers to its file, so what it is can be
/// read now (not after dup2 replaced it or close_range closed it). A CLOSE is reported even
/// without counters; other reasons only when there is something to report. Returns whether a
/// record was written.
#[inline(always)]
pub fn report(call: &Call, fd: i32, reason: u8, identity: bool) -> bool {
    if fd >= 0 && (fd as u32) < FD_SLOTS {
        let slot = slot_of(call.state, fd);
        if unsafe { (*slot).kind } & slot_kind::HASHED == 0 {
            return report_slot(call, fd, slot, reason, identity);
        }
    }
    report_hashed(call, fd, reason, identity)
}

fn report_slot(call: &Call, fd: i32, slot: *mut FdSlot, reason: u8, identity: bool) -> bool {
    let (read_bytes, read_ops, write_bytes, write_ops, kind) = unsafe {
        (
            (*slot).read_bytes,
            (*slot).read_ops,
            (*slot).write_bytes,
            (*slot).write_ops,
            (*slot).kind,
        )
    };
    // Reports follow the mode in force, as the syscall path does: counts a process made before
    // it moved into a cgroup that does not want them are dropped, not reported there.
    let pending = read_ops + write_ops > 0;
    let counted = pending && call.counts_kind(kind);
    // What the descriptor refers to matters only when there is something to report, or to
    // know whether an exec closed it.
    let file = if identity && (counted || reason == report_reason::EXEC) {
        file_of_fd(call.task, fd)
    } else {
        None
    };
    let mut written = false;
    if counted || reason == report_reason::CLOSE {
        let Some(buf) = scratch() else {
            return false;
        };
        let r = buf as *mut FdReportRecord;
        unsafe {
            write_report_head(r, call, fd, reason, counted, (*slot).last_tid);
            if counted {
                let c = &raw mut (*r).counters;
                (*c).read_bytes = read_bytes;
                (*c).read_ops = read_ops;
                (*c).write_bytes = write_bytes;
                (*c).write_ops = write_ops;
                (*c).first_ns = (*slot).first_ns;
                (*c).last_ns = (*r).header.ts_ns;
                (*c).last_tid = (*slot).last_tid;
                (*c).ops_seen = (*slot).ops_seen;
                if let Some(file) = file {
                    (*c).file = file_identity(file);
                    if is_socket(&(*c).file) {
                        (*c).sock = sock_info(file);
                    }
                }
            }
        }
        written = submit(buf, report_len(counted));
    }
    if ends(reason) || (reason == report_reason::EXEC && file.is_none()) {
        reset_slot(slot);
    } else if pending && (written || !counted) {
        // What was reported (or dropped) leaves the slot; adds that came meanwhile stay.
        unsafe {
            add_u64(&raw mut (*slot).read_bytes, read_bytes.wrapping_neg());
            add_u64(&raw mut (*slot).read_ops, read_ops.wrapping_neg());
            add_u64(&raw mut (*slot).write_bytes, write_bytes.wrapping_neg());
            add_u64(&raw mut (*slot).write_ops, write_ops.wrapping_neg());
        }
    }
    written
}

/// Bytes of a report: a close with nothing counted ends before its counters.
#[inline(always)]
fn report_len(counted: bool) -> usize {
    if counted {
        size_of::<FdReportRecord>()
    } else {
        core::mem::offset_of!(FdReportRecord, counters)
    }
}

/// The fixed part of a report in the scratch buffer (its counters, when `counted`, zeroed but
/// for the process's identity).
#[inline(always)]
unsafe fn write_report_head(
    r: *mut FdReportRecord,
    call: &Call,
    fd: i32,
    reason: u8,
    counted: bool,
    last_tid: u32,
) {
    unsafe {
        (*r).header = header(RecordKind::FdReport, call, 0);
        if call.tid == 0 {
            // Reported from outside the process (flush): the thread that counted last.
            (*r).header.tid = last_tid;
        }
        (*r).fd = fd;
        (*r).reason = reason;
        (*r).has_counters = counted as u8;
        (*r)._pad = [0; 2];
        if counted {
            (*r).counters = FdCounters {
                cgroup_id: call.cgroup_id,
                proc_start_ns: call.start_ns,
                ..FdCounters::default()
            };
        }
    }
}

fn report_hashed(call: &Call, fd: i32, reason: u8, identity: bool) -> bool {
    let key = FdKey {
        tgid: call.tgid,
        fd,
    };
    // Kept as a pointer: copying the entry out as an Option trips the verifier (see
    // count_hashed).
    let entry = FD_COUNTERS
        .get_ptr_mut(&key)
        .filter(|e| unsafe { (**e).proc_start_ns } == call.start_ns);
    let (read_bytes, read_ops, write_bytes, write_ops, socket) = match entry {
        Some(e) => unsafe {
            (
                (*e).read_bytes,
                (*e).read_ops,
                (*e).write_bytes,
                (*e).write_ops,
                is_socket(&(*e).file),
            )
        },
        None => (0, 0, 0, 0, false),
    };
    // As for slots: only what the mode in force wants is reported.
    let kind = if socket {
        slot_kind::SOCKET
    } else {
        slot_kind::FILE
    };
    let pending = read_ops + write_ops > 0;
    let counted = pending && call.counts_kind(kind);
    let still_open = identity && file_of_fd(call.task, fd).is_some();
    let mut written = false;
    if counted || reason == report_reason::CLOSE {
        let Some(buf) = scratch() else {
            return false;
        };
        let r = buf as *mut FdReportRecord;
        unsafe {
            write_report_head(r, call, fd, reason, counted, 0);
            if let Some(e) = entry
                && counted
            {
                core::ptr::copy_nonoverlapping(e as *const FdCounters, &raw mut (*r).counters, 1);
                (*r).counters.read_bytes = read_bytes;
                (*r).counters.read_ops = read_ops;
                (*r).counters.write_bytes = write_bytes;
                (*r).counters.write_ops = write_ops;
                (*r).counters.last_ns = (*r).header.ts_ns;
                if call.tid == 0 {
                    (*r).header.tid = (*r).counters.last_tid;
                }
            }
        }
        written = submit(buf, report_len(counted));
    }
    let Some(e) = entry else {
        return written;
    };
    let gone = ends(reason)
        || reason == report_reason::PEER_CHANGED
        || (reason == report_reason::EXEC && !still_open);
    if gone {
        if FD_COUNTERS.remove(&key).is_ok() {
            add_u32(unsafe { &raw mut (*call.state).hashed_fds }, u32::MAX);
        }
        if fd >= 0 && (fd as u32) < FD_SLOTS && reason != report_reason::PEER_CHANGED {
            reset_slot(slot_of(call.state, fd));
        }
    } else if pending && (written || !counted) {
        // What was reported (or dropped) leaves the entry; adds that came meanwhile stay.
        unsafe {
            add_u64(&raw mut (*e).read_bytes, read_bytes.wrapping_neg());
            add_u64(&raw mut (*e).read_ops, read_ops.wrapping_neg());
            add_u64(&raw mut (*e).write_bytes, write_bytes.wrapping_neg());
            add_u64(&raw mut (*e).write_ops, write_ops.wrapping_neg());
            (*e).first_ns = now_ns();
        }
    }
    written
}

/// What a walk over a process's descriptors reports, and where.
#[repr(C)]
struct Walk {
    call: Call,
    /// Descriptor numbers first..=last.
    first: u32,
    last: u32,
    /// Added to the callback's index to get the descriptor number.
    base: u32,
    reason: u8,
    identity: u8,
    _pad: [u8; 2],
}

/// Reports every descriptor of `call`'s process in first..=last that has counters (or, for
/// the hashed ones, an entry): the slots, then the `FD_COUNTERS` entries of higher numbers. A
/// loop helper walks them, so the verifier checks the body once.
pub fn report_range(call: &Call, reason: u8, identity: bool, first: u32, last: u32) {
    let mut walk = Walk {
        call: *call,
        first,
        last,
        base: 0,
        reason,
        identity: identity as u8,
        _pad: [0; 2],
    };
    let ctx = &raw mut walk as *mut c_void;
    unsafe { bpf_loop(FD_SLOTS, report_at as *mut c_void, ctx, 0) };
    if unsafe { (*call.state).hashed_fds } == 0 || last < FD_SLOTS {
        return;
    }
    let max_fds = open_fd_limit(call.task);
    let end = if last < max_fds { last + 1 } else { max_fds };
    let start = if first > FD_SLOTS { first } else { FD_SLOTS };
    if end <= start {
        return;
    }
    let count = end - start;
    // Through the pointer the loop helper reads.
    unsafe { (*(ctx as *mut Walk)).base = start };
    unsafe {
        bpf_loop(
            if count > MAX_WALK { MAX_WALK } else { count },
            report_hashed_at as *mut c_void,
            ctx,
            0,
        )
    };
}

/// Size of the task's descriptor table (0 when it has none, e.g. while exiting).
#[inline(always)]
fn open_fd_limit(task: *const u8) -> u32 {
    let Some(files) = read::<*const u8>(task, load_config!(offsets.task_files)) else {
        return 0;
    };
    let Some(fdt) = read::<*const u8>(files, load_config!(offsets.files_fdt)) else {
        return 0;
    };
    read::<u32>(fdt, load_config!(offsets.fdtable_max_fds)).unwrap_or(0)
}

/// bpf_loop body over the slots: index = descriptor number.
#[inline(never)]
extern "C" fn report_at(index: u32, ctx: *mut c_void) -> i64 {
    let walk = unsafe { &*(ctx as *const Walk) };
    let fd = index;
    if fd < walk.first || fd > walk.last || fd >= FD_SLOTS {
        return 0;
    }
    let slot = slot_of(walk.call.state, fd as i32);
    let kind = unsafe { (*slot).kind };
    if kind == 0 {
        return 0;
    }
    report(&walk.call, fd as i32, walk.reason, walk.identity != 0);
    0
}

/// bpf_loop body over descriptors above the slots; stops once no hashed entry is left.
#[inline(never)]
extern "C" fn report_hashed_at(index: u32, ctx: *mut c_void) -> i64 {
    let walk = unsafe { &*(ctx as *const Walk) };
    if unsafe { (*walk.call.state).hashed_fds } == 0 {
        return 1;
    }
    let fd = walk.base.wrapping_add(index);
    if unsafe {
        FD_COUNTERS.get(&FdKey {
            tgid: walk.call.tgid,
            fd: fd as i32,
        })
    }
    .is_some()
    {
        report_hashed(&walk.call, fd as i32, walk.reason, walk.identity != 0);
    }
    0
}
