//! Who is calling, whether to capture it, and how a record gets from the scratch buffer into a
//! ring buffer.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{
        bpf_get_current_cgroup_id, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
    },
};
use sysflow_common::{KernelCounter, RecordHeader, RecordKind, SCRATCH_SIZE};

use crate::{
    kernel::{current_task, process_start_ns},
    maps::{
        CGROUP_MODES, PENDING_SYSCALLS, PendingSyscall, RING0, RING1, RING2, RING3, SCRATCH,
        SETTINGS, bump, load_config,
    },
};

/// The task a program runs for, and the capture mode of its cgroup.
pub struct Caller {
    pub pid_tgid: u64,
    pub cgroup_id: u64,
    pub mode: u32,
}

impl Caller {
    #[inline(always)]
    pub fn tgid(&self) -> u32 {
        (self.pid_tgid >> 32) as u32
    }

    #[inline(always)]
    pub fn tid(&self) -> u32 {
        self.pid_tgid as u32
    }

    #[inline(always)]
    pub fn wants(&self, bits: u32) -> bool {
        self.mode & bits != 0
    }
}

/// Looks up the calling task's cgroup in `CGROUP_MODES` (or the default). This is the first thing
/// every program does: a cgroup set to off costs one helper call and one hash lookup.
#[inline(always)]
pub fn caller() -> Caller {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let mode = match unsafe { CGROUP_MODES.get(&cgroup_id) } {
        Some(mode) => *mode,
        None => SETTINGS.get(0).map(|s| s.default_mode).unwrap_or(0),
    };
    Caller {
        pid_tgid: bpf_get_current_pid_tgid(),
        cgroup_id,
        mode,
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Saves the current syscall's six raw arguments for its exit program.
#[inline(always)]
pub fn stash_args(pid_tgid: u64, args: [u64; 6]) {
    if PENDING_SYSCALLS
        .insert(&pid_tgid, &PendingSyscall { args }, 0)
        .is_err()
    {
        bump(KernelCounter::PendingTableFull);
    }
}

/// Takes (and forgets) the arguments saved at sys_enter. None when the enter was not seen (the
/// cgroup was off then, or the probe attached mid-call).
#[inline(always)]
pub fn take_args(caller: &Caller) -> Option<[u64; 6]> {
    // An off cgroup stashed nothing: skip the lookup. An entry left from before a mode change is
    // overwritten by the thread's next stash, or freed when it exits.
    if caller.mode == 0 {
        return None;
    }
    let args = unsafe { PENDING_SYSCALLS.get(&caller.pid_tgid) }.map(|p| p.args);
    if args.is_some() {
        let _ = PENDING_SYSCALLS.remove(&caller.pid_tgid);
    }
    args
}

/// The per-CPU buffer a record is assembled in.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    SCRATCH.get_ptr_mut(0).map(|p| p as *mut u8)
}

#[inline(always)]
pub fn header(kind: RecordKind, caller: &Caller, ret: i64) -> RecordHeader {
    RecordHeader {
        kind: kind as u16,
        flags: 0,
        size: 0,
        ts_ns: now_ns(),
        cgroup_id: caller.cgroup_id,
        tgid: caller.tgid(),
        tid: caller.tid(),
        proc_start_ns: process_start_ns(current_task()),
        ret,
    }
}

/// Copies the first `len` bytes of `buf` (a record starting with a `RecordHeader`) into the
/// ring of this CPU, after setting the header's size. A full ring is counted, never waited on.
#[inline(always)]
pub fn submit(buf: *mut u8, len: usize) {
    let len = len & (SCRATCH_SIZE - 1);
    unsafe { (*(buf as *mut RecordHeader)).size = len as u32 };
    let data = unsafe { core::slice::from_raw_parts(buf as *const u8, len) };
    let rings = load_config!(ring_count);
    let ring = if rings > 1 {
        (unsafe { bpf_get_smp_processor_id() }) % rings
    } else {
        0
    };
    let result = match ring {
        0 => RING0.output(data, 0),
        1 => RING1.output(data, 0),
        2 => RING2.output(data, 0),
        _ => RING3.output(data, 0),
    };
    match result {
        Ok(()) => bump(KernelCounter::RecordsEmitted),
        Err(_) => bump(KernelCounter::RingFull),
    }
}

/// Result of copying one string into a record.
pub struct Copied {
    /// Bytes copied, without the terminating NUL.
    pub len: u16,
    pub truncated: bool,
    pub fault: bool,
}

impl Copied {
    const FAULT: Copied = Copied {
        len: 0,
        truncated: false,
        fault: true,
    };

    #[inline(always)]
    fn from_ret(ret: i64, cap: u32) -> Copied {
        if ret <= 0 {
            return Copied::FAULT;
        }
        let truncated = ret as u32 >= cap;
        if truncated {
            bump(KernelCounter::StringsTruncated);
        }
        Copied {
            len: (ret - 1) as u16,
            truncated,
            fault: false,
        }
    }
}

/// Copies a NUL-terminated user string (at most `cap` bytes with the NUL) to `dst`.
#[inline(always)]
pub fn copy_user_str(dst: *mut u8, cap: u32, src: u64) -> Copied {
    if src == 0 {
        return Copied::FAULT;
    }
    let ret = unsafe { bpf_probe_read_user_str(dst as *mut _, cap, src as *const _) };
    Copied::from_ret(ret, cap)
}

/// Copies a NUL-terminated kernel string (at most `cap` bytes with the NUL) to `dst`.
#[inline(always)]
pub fn copy_kernel_str(dst: *mut u8, cap: u32, src: *const u8) -> Copied {
    let ret = unsafe { bpf_probe_read_kernel_str(dst as *mut _, cap, src as *const _) };
    Copied::from_ret(ret, cap)
}

/// Copies `len` bytes of user memory (`len` already bounded by the caller).
#[inline(always)]
pub fn copy_user(dst: *mut u8, len: u32, src: u64) -> bool {
    unsafe { bpf_probe_read_user(dst as *mut _, len, src as *const _) == 0 }
}

/// Header flags for the first and second strings of a record.
#[inline(always)]
pub fn string_flags(first: &Copied, second: Option<&Copied>) -> u16 {
    use sysflow_common::record_flags::*;
    let mut flags = 0;
    if first.truncated {
        flags |= STR0_TRUNCATED;
    }
    let mut fault = first.fault;
    if let Some(second) = second {
        if second.truncated {
            flags |= STR1_TRUNCATED;
        }
        fault |= second.fault;
    }
    if fault {
        flags |= STR_FAULT;
    }
    flags
}
