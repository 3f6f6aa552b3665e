//! The periodic flush user space asks for: a task iterator (`iter/task`) that visits every
//! process and reports what each descriptor counted since its last report. User space runs it
//! by reading the iterator; the reports arrive through the ring buffers like any record.

use core::ffi::c_void;

use sysflow_common::report_reason;

use crate::{counters::report_range, kernel::group_leader, maps::settings, process_state::Call};

/// `struct bpf_iter__task`: the iterator's metadata, then the task (null at the end).
#[repr(C)]
struct TaskIterContext {
    meta: *const c_void,
    task: *const u8,
}

#[unsafe(link_section = "iter/task")]
#[unsafe(no_mangle)]
pub fn flush_counters(ctx: *mut c_void) -> i32 {
    let task = unsafe { (*(ctx as *const TaskIterContext)).task };
    // Every thread is visited; the counters belong to the process (its leader).
    if task.is_null() || group_leader(task) != task {
        return 0;
    }
    let Some(call) = Call::of_leader(task) else {
        return 0;
    };
    let reason = match settings() {
        Some(s) if s.flush_reason == report_reason::FINAL as u32 => report_reason::FINAL,
        _ => report_reason::FLUSH,
    };
    report_range(&call, reason, true, 0, u32::MAX);
    0
}
