//! Process lifecycle from the sched tracepoints (tp_btf: typed arguments, no syscall hook):
//! fork/clone, exec and exit cost nothing per syscall, only per fork, exec and exit. Plus the
//! cgroup migration hook that keeps each process's cached capture mode honest.

use core::mem::size_of;

use aya_ebpf::{
    helpers::bpf_get_current_uid_gid, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use sysflow_common::{
    ARGS_CAP, CloneRecord, ExecRecord, ExitRecord, PATH_CAP, RecordKind, capture, clone_role,
    clone_syscall, exec_syscall, record_flags, report_reason,
};

use crate::{
    counters::report_range,
    emit::{copy_kernel_str, copy_user, header, scratch, string_flags, submit},
    kernel::{
        arg_area, exit_code, is_kernel_worker, open_fds_low, parent_tgid, read, regs_args, regs_nr,
        task_cgroup_id, task_ids, task_regs,
    },
    maps::{PENDING_SYSCALLS, load_config},
    process::{CLONE_THREAD, clone_flags},
    process_state::{Call, inherit, invalidate, mode_of_cgroup},
};

/// Which clone-family syscall the current task is in, from its saved syscall number.
#[inline(always)]
fn clone_kind(nr: u32) -> u8 {
    if nr == load_config!(syscalls.clone3) {
        clone_syscall::CLONE3
    } else if nr == load_config!(syscalls.fork) {
        clone_syscall::FORK
    } else if nr == load_config!(syscalls.vfork) {
        clone_syscall::VFORK
    } else {
        clone_syscall::CLONE
    }
}

/// A new task: one record under the parent (with the child's tid and the clone flags) and one
/// under the child, both written before the child runs.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let child: *const u8 = ctx.arg(1);
    let Some(call) = Call::current() else {
        return 0;
    };
    if is_kernel_worker(call.task) || is_kernel_worker(child) {
        return 0;
    }
    let (child_tgid, child_tid) = task_ids(child);
    let is_thread = child_tgid == call.tgid;
    let (child_cgroup, child_start) = if is_thread {
        (call.cgroup_id, call.start_ns)
    } else {
        (
            task_cgroup_id(child),
            read(child, load_config!(offsets.task_start_boottime)).unwrap_or(0),
        )
    };
    if !is_thread {
        inherit(child, &call, child_cgroup, child_start);
    }
    let child_mode = if child_cgroup == call.cgroup_id {
        call.mode
    } else {
        mode_of_cgroup(child_cgroup)
    };
    let parent_wants = call.wants(capture::PROCESS_LIFECYCLE);
    let child_wants = child_mode & capture::PROCESS_LIFECYCLE != 0;
    if !parent_wants && !child_wants {
        return 0;
    }
    let regs = task_regs(call.task);
    let syscall = clone_kind(regs_nr(regs) as u32);
    let flags = clone_flags(syscall, &regs_args(regs));
    let Some(buf) = scratch() else { return 0 };
    if parent_wants {
        unsafe {
            *(buf as *mut CloneRecord) = CloneRecord {
                header: header(RecordKind::Clone, &call, child_tid as i64),
                clone_flags: flags,
                child_tid,
                parent_tgid: call.tgid,
                role: clone_role::PARENT,
                syscall,
                is_thread: (is_thread || flags & CLONE_THREAD != 0) as u8,
                _pad: [0; 5],
            }
        };
        submit(buf, size_of::<CloneRecord>());
    }
    if child_wants {
        // The child's identity for its record's header (its own state, if any, is not needed).
        let child_call = Call {
            task: child,
            state: call.state,
            tgid: child_tgid,
            tid: child_tid,
            mode: child_mode,
            cgroup_id: child_cgroup,
            start_ns: child_start,
        };
        unsafe {
            *(buf as *mut CloneRecord) = CloneRecord {
                header: header(RecordKind::Clone, &child_call, 0),
                clone_flags: 0,
                child_tid,
                parent_tgid: parent_tgid(child),
                role: clone_role::CHILD,
                syscall,
                is_thread: is_thread as u8,
                _pad: [0; 5],
            }
        };
        submit(buf, size_of::<CloneRecord>());
    }
    0
}

/// A successful exec: what every descriptor counted since `sys_enter_exec` reported them (the
/// close-on-exec ones are closed now, their slots are cleared), the bitmap of what is still
/// open, then the exec with the filename the kernel resolved it from and argv read from the new
/// image's argument area.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    let old_pid: i32 = ctx.arg(1);
    let bprm: *const u8 = ctx.arg(2);
    let Some(call) = Call::current() else {
        return 0;
    };
    let old_tid = old_pid as u32;
    if old_tid != call.tid {
        // A non-leader thread exec'd and took the leader's pid: its sys_exit (tracepoint set)
        // will not find what its sys_enter saved.
        let _ = PENDING_SYSCALLS.remove(&(((call.tgid as u64) << 32) | old_tid as u64));
    }
    report_range(&call, report_reason::EXEC, true, 0, u32::MAX);
    if !call.wants(capture::PROCESS_LIFECYCLE) {
        return 0;
    }
    let nr = regs_nr(task_regs(call.task)) as u32;
    let syscall = if nr == load_config!(syscalls.execveat) {
        exec_syscall::EXECVEAT
    } else if nr == load_config!(syscalls.execve) {
        exec_syscall::EXECVE
    } else {
        0
    };
    let Some(buf) = scratch() else { return 0 };
    let fixed = size_of::<ExecRecord>();
    let filename_ptr: *const u8 =
        read(bprm, load_config!(offsets.linux_binprm_filename)).unwrap_or(core::ptr::null());
    let filename = copy_kernel_str(buf.wrapping_add(fixed), PATH_CAP as u32, filename_ptr);
    let args_dst = buf.wrapping_add(fixed + (filename.len as usize & (PATH_CAP - 1)));
    let mut args_len = 0u32;
    let mut truncated = false;
    if let Some((start, end)) = arg_area(call.task)
        && end > start
    {
        let max = load_config!(args_max);
        let want = end - start;
        let take = if want > max as u64 { max as u64 } else { want };
        truncated = take < want;
        let take = (take as u32) & (ARGS_CAP as u32 - 1);
        if copy_user(args_dst, take, start) {
            args_len = take;
        }
    }
    let open_fds = open_fds_low(call.task);
    let uid_gid = bpf_get_current_uid_gid();
    let mut hdr = header(RecordKind::Exec, &call, 0);
    hdr.flags = string_flags(&filename, None);
    if truncated {
        hdr.flags |= record_flags::STR1_TRUNCATED;
    }
    unsafe {
        *(buf as *mut ExecRecord) = ExecRecord {
            header: hdr,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            old_tid,
            filename_len: filename.len,
            args_len: args_len as u16,
            syscall,
            open_fds_known: open_fds.is_some() as u8,
            _pad: [0; 6],
            open_fds: open_fds.unwrap_or(0),
        }
    };
    submit(buf, fixed + filename.len as usize + args_len as usize);
    0
}

/// A task exits. When it is the last of its process, every descriptor's counters are reported
/// first (the kernel is about to close them all), while the file table can still be read.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let task = crate::kernel::current_task();
    let (tgid, tid) = task_ids(task);
    // A task killed inside a syscall never reaches its sys_exit: free its slot (tracepoint set).
    let _ = PENDING_SYSCALLS.remove(&(((tgid as u64) << 32) | tid as u64));
    if is_kernel_worker(task) {
        return 0;
    }
    let group_dead = if load_config!(exit_has_group_dead) != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        tgid == tid
    };
    let Some(call) = Call::of_current_task(task) else {
        return 0;
    };
    if group_dead {
        report_range(&call, report_reason::EXIT, true, 0, u32::MAX);
    }
    if !call.wants(capture::PROCESS_LIFECYCLE) {
        return 0;
    }
    let Some(buf) = scratch() else { return 0 };
    unsafe {
        *(buf as *mut ExitRecord) = ExitRecord {
            header: header(RecordKind::Exit, &call, 0),
            wait_status: exit_code(task),
            group_dead: group_dead as u8,
            _pad: [0; 3],
        }
    };
    submit(buf, size_of::<ExitRecord>());
    0
}

/// A task moves to another cgroup: its process looks its capture mode up again on its next
/// followed syscall.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: BtfTracePointContext) -> u32 {
    let task: *const u8 = ctx.arg(2);
    invalidate(task);
    0
}
