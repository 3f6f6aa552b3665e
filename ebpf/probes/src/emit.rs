//! How a record gets from the scratch buffer into a ring buffer, and the string copies records
//! are built from.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str,
        bpf_probe_read_user, bpf_probe_read_user_str,
    },
    maps::RingBuf,
};
use sysflow_common::{KernelCounter, RecordHeader, RecordKind, SCRATCH_SIZE};

use crate::{
    maps::{RING0, RING1, RING2, RING3, SCRATCH, bump, load_config},
    process_state::Call,
};

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The per-CPU buffer a record is assembled in.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    SCRATCH.get_ptr_mut(0).map(|p| p as *mut u8)
}

#[inline(always)]
pub fn header(kind: RecordKind, call: &Call, ret: i64) -> RecordHeader {
    RecordHeader {
        kind: kind as u16,
        flags: 0,
        size: 0,
        ts_ns: now_ns(),
        cgroup_id: call.cgroup_id,
        tgid: call.tgid,
        tid: call.tid,
        proc_start_ns: call.start_ns,
        ret,
    }
}

/// Copies the first `len` bytes of `buf` (a record starting with a `RecordHeader`) into the
/// ring of this CPU, after setting the header's size. A full ring is counted, never waited on.
/// Returns whether the record was written.
#[inline(always)]
pub fn submit(buf: *mut u8, len: usize) -> bool {
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
        0 => output(&RING0, data),
        1 => output(&RING1, data),
        2 => output(&RING2, data),
        _ => output(&RING3, data),
    };
    match result {
        Ok(()) => {
            bump(KernelCounter::RecordsEmitted);
            true
        }
        Err(_) => {
            bump(KernelCounter::RingFull);
            false
        }
    }
}

/// Writes without waking the reader (it polls on a short timer) unless the ring is filling up:
/// a wake-up per record would cost a context switch per record.
#[inline(always)]
fn output(ring: &RingBuf, data: &[u8]) -> Result<(), i32> {
    let flags = if ring.query(BPF_RB_AVAIL_DATA as u64) > load_config!(wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    ring.output(data, flags as u64)
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
