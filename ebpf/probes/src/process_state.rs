//! The per-process state every hook starts from: the capture mode of the process's cgroup
//! (cached, so a syscall costs no hash lookup) and the descriptor counters of its low fds.
//!
//! It lives in the task storage of the thread-group leader, so all threads of a process share
//! it (cgroup v2 keeps the threads of a process in one cgroup, threaded subtrees aside). The
//! cached mode is refreshed when its generation differs from `Settings::generation` (user space
//! bumps it after any mode change) and when the process moves to another cgroup
//! (`cgroup_attach_task` resets the generation).

use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;
use sysflow_common::{FD_SLOTS, KernelCounter, capture};

use crate::{
    kernel::{current_task, group_leader, process_start_ns, task_ids},
    maps::{CGROUP_MODES, PROCESS_STATE, bump, settings},
};

/// `FdSlot::kind` bits.
pub mod slot_kind {
    /// The descriptor is not a socket (files, pipes, ...): counted under FILE capture.
    pub const FILE: u16 = 1 << 0;
    /// A socket: counted under NETWORK capture.
    pub const SOCKET: u16 = 1 << 1;
    /// Counts in `FD_COUNTERS` instead (a datagram socket whose calls name their peer).
    pub const HASHED: u16 = 1 << 2;
}

/// What a process did through one descriptor below `FD_SLOTS` since its last report. The
/// syscall path only adds to it; reports subtract what they carried away.
#[repr(C)]
pub struct FdSlot {
    pub read_bytes: u64,
    pub read_ops: u64,
    pub write_bytes: u64,
    pub write_ops: u64,
    /// When counting started on this descriptor (CLOCK_BOOTTIME ns).
    pub first_ns: u64,
    pub last_tid: u32,
    /// `sysflow_common::io_ops` bits.
    pub ops_seen: u16,
    /// `slot_kind` bits; 0: not yet looked at since the descriptor number was (re)assigned.
    pub kind: u16,
}

#[repr(C)]
pub struct ProcessState {
    /// `Settings::generation` the cached mode was read at (0: never, or invalidated).
    pub generation: u32,
    pub mode: u32,
    pub cgroup_id: u64,
    /// Start time of the thread-group leader: with the tgid, the process identity.
    pub start_ns: u64,
    /// Entries this process has in `FD_COUNTERS`, so exit and flush know whether to look.
    pub hashed_fds: u32,
    pub _pad: u32,
    pub slots: [FdSlot; FD_SLOTS as usize],
}

/// The process a hook runs for, with its capture mode.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    /// BTF-typed pointer to the task (the current one, or the one an iterator visits).
    pub task: *const u8,
    pub state: *mut ProcessState,
    pub tgid: u32,
    pub tid: u32,
    pub mode: u32,
    pub cgroup_id: u64,
    pub start_ns: u64,
}

impl Call {
    /// The current task's process, its state created on first use. None only when the kernel
    /// cannot allocate the state (counted).
    #[inline(always)]
    pub fn current() -> Option<Call> {
        Self::of_current_task(current_task())
    }

    /// As [`Call::current`], with the current task already in hand.
    #[inline(always)]
    pub fn of_current_task(task: *const u8) -> Option<Call> {
        let state = PROCESS_STATE.get_or_create(group_leader(task));
        if state.is_null() {
            bump(KernelCounter::StateUnavailable);
            return None;
        }
        let generation = settings()?.generation;
        // SAFETY: a non-null task storage value of this map's type.
        let s = unsafe { &mut *state };
        if s.generation != generation {
            refresh(s, task, generation);
        }
        let (tgid, tid) = task_ids(task);
        Some(Call {
            task,
            state,
            tgid,
            tid,
            mode: s.mode,
            cgroup_id: s.cgroup_id,
            start_ns: s.start_ns,
        })
    }

    /// A process seen from outside (the flush iterator): `leader` is its BTF-typed leader task.
    /// None when the process has no state (it never made a followed syscall).
    #[inline(always)]
    pub fn of_leader(leader: *const u8) -> Option<Call> {
        let state = PROCESS_STATE.get(leader);
        if state.is_null() {
            return None;
        }
        let s = unsafe { &*state };
        let (tgid, _) = task_ids(leader);
        Some(Call {
            task: leader,
            state,
            tgid,
            tid: 0,
            mode: s.mode,
            cgroup_id: s.cgroup_id,
            start_ns: s.start_ns,
        })
    }

    #[inline(always)]
    pub fn wants(&self, bits: u32) -> bool {
        self.mode & bits != 0
    }

    #[inline(always)]
    pub fn pid_tgid(&self) -> u64 {
        ((self.tgid as u64) << 32) | self.tid as u64
    }

    /// Whether counters of a descriptor of this kind are kept under the process's mode.
    #[inline(always)]
    pub fn counts_kind(&self, kind: u16) -> bool {
        let needed = if kind & slot_kind::SOCKET != 0 {
            capture::NETWORK
        } else {
            capture::FILE
        };
        self.mode & capture::IO_COUNTERS != 0 && self.mode & needed != 0
    }
}

/// The capture mode of a cgroup: its own entry, or the default.
#[inline(always)]
pub fn mode_of_cgroup(cgroup_id: u64) -> u32 {
    match unsafe { CGROUP_MODES.get(&cgroup_id) } {
        Some(mode) => *mode,
        None => settings().map(|s| s.default_mode).unwrap_or(0),
    }
}

/// Looks the current task's cgroup up again: the slow path, once per process and generation.
#[inline(always)]
fn refresh(s: &mut ProcessState, task: *const u8, generation: u32) {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    s.mode = mode_of_cgroup(cgroup_id);
    s.cgroup_id = cgroup_id;
    s.start_ns = process_start_ns(task);
    s.generation = generation;
}

/// Gives a new process the state of its parent (same cgroup, same mode), so its first syscall
/// takes the fast path. Its descriptor slots start empty: each inherited descriptor is a flow
/// of its own in the child.
#[inline(always)]
pub fn inherit(child: *const u8, parent: &Call, child_cgroup: u64, child_start_ns: u64) {
    let state = PROCESS_STATE.get_or_create(child);
    if state.is_null() {
        return;
    }
    let Some(generation) = settings().map(|s| s.generation) else {
        return;
    };
    let s = unsafe { &mut *state };
    s.mode = if child_cgroup == parent.cgroup_id {
        parent.mode
    } else {
        mode_of_cgroup(child_cgroup)
    };
    s.cgroup_id = child_cgroup;
    s.start_ns = child_start_ns;
    s.generation = generation;
}

/// The process moved to another cgroup: its cached mode is stale.
#[inline(always)]
pub fn invalidate(task: *const u8) {
    let state = PROCESS_STATE.get(group_leader(task));
    if !state.is_null() {
        unsafe { (*state).generation = 0 };
    }
}
