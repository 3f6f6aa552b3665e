//! clone/fork, exec, exit and set*id.

use core::mem::size_of;

use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use sysflow_common::{
    ARGS_CAP, CloneRecord, ExecRecord, ExitRecord, ID_UNCHANGED, PATH_CAP, RecordKind, SetIdRecord,
    capture, clone_role, clone_syscall, exec_syscall, record_flags, setid_syscall,
};

use crate::{
    emit::{
        Caller, caller, copy_kernel_str, copy_user, copy_user_str, header, scratch, stash_args,
        string_flags, submit, take_args,
    },
    enter_args, exit_ret,
    kernel::{arg_area, current_task, exit_code, parent_tgid},
    maps::{PENDING_SYSCALLS, load_config},
};

const SIGCHLD: u64 = 17;
const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x10000;
/// Arguments read from argv of a failed exec.
const FAILED_EXEC_ARGS: usize = 16;

#[tracepoint]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    clone_exit(&ctx, clone_syscall::CLONE)
}

#[tracepoint]
pub fn sys_exit_clone3(ctx: TracePointContext) -> u32 {
    clone_exit(&ctx, clone_syscall::CLONE3)
}

#[tracepoint]
pub fn sys_exit_fork(ctx: TracePointContext) -> u32 {
    clone_exit(&ctx, clone_syscall::FORK)
}

#[tracepoint]
pub fn sys_exit_vfork(ctx: TracePointContext) -> u32 {
    clone_exit(&ctx, clone_syscall::VFORK)
}

/// Both sides of a clone return through here: the caller with the child's tid, the new task
/// (on its first return to user space) with 0.
#[inline(always)]
fn clone_exit(ctx: &TracePointContext, syscall: u8) -> u32 {
    let caller = caller();
    let ret = exit_ret(ctx);
    let args = if ret == 0 { None } else { take_args(&caller) };
    if !caller.wants(capture::PROCESS) {
        return 0;
    }
    let Some(buf) = scratch() else { return 0 };
    let task = current_task();
    let record = if ret == 0 {
        CloneRecord {
            header: header(RecordKind::Clone, &caller, 0),
            child_tid: caller.tid(),
            parent_tgid: parent_tgid(task),
            role: clone_role::CHILD,
            syscall,
            is_thread: (caller.tgid() != caller.tid()) as u8,
            ..CloneRecord::default()
        }
    } else {
        let flags = match syscall {
            clone_syscall::CLONE => args.map(|a| a[0]).unwrap_or(0),
            clone_syscall::CLONE3 => args
                .and_then(|a| unsafe { bpf_probe_read_user(a[0] as *const u64) }.ok())
                .unwrap_or(0),
            clone_syscall::FORK => SIGCHLD,
            _ => CLONE_VM | CLONE_VFORK | SIGCHLD,
        };
        CloneRecord {
            header: header(RecordKind::Clone, &caller, ret),
            clone_flags: flags,
            child_tid: if ret > 0 { ret as u32 } else { 0 },
            parent_tgid: caller.tgid(),
            role: clone_role::PARENT,
            syscall,
            is_thread: (flags & CLONE_THREAD != 0) as u8,
            ..CloneRecord::default()
        }
    };
    unsafe { *(buf as *mut CloneRecord) = record };
    submit(buf, size_of::<CloneRecord>());
    0
}

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    exec_enter(&ctx, exec_syscall::EXECVE)
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    exec_enter(&ctx, exec_syscall::EXECVEAT)
}

#[inline(always)]
fn exec_enter(ctx: &TracePointContext, syscall: u8) -> u32 {
    let caller = caller();
    if caller.wants(capture::PROCESS)
        && let Some(mut args) = enter_args(ctx)
    {
        // execve has three arguments and execveat five: the unused sixth slot carries which
        // syscall this was, for sched_process_exec (which cannot tell them apart).
        args[5] = syscall as u64;
        stash_args(caller.pid_tgid, args);
    }
    0
}

/// A successful exec: the filename the kernel resolved the exec from, and argv read from the new
/// image's argument area.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let caller = caller();
    if !caller.wants(capture::PROCESS) {
        return 0;
    }
    let old_tid: u32 =
        unsafe { ctx.read_at::<i32>(load_config!(offsets.tp_exec_old_pid) as usize) }
            .map(|v| v as u32)
            .unwrap_or(caller.tid());
    let old_key = ((caller.tgid() as u64) << 32) | old_tid as u64;
    let syscall = unsafe { PENDING_SYSCALLS.get(&old_key) }
        .map(|p| (p.args[5] & 0xff) as u8)
        .unwrap_or(0);
    if old_tid != caller.tid() {
        // A non-leader thread exec'd and took the leader's pid: its sys_exit will not find this.
        let _ = PENDING_SYSCALLS.remove(&old_key);
    }
    let Some(buf) = scratch() else { return 0 };
    let fixed = size_of::<ExecRecord>();
    let data_loc: u32 =
        unsafe { ctx.read_at(load_config!(offsets.tp_exec_filename) as usize) }.unwrap_or(0);
    let filename_ptr = (ctx_ptr(&ctx) as *const u8).wrapping_add((data_loc & 0xffff) as usize);
    let filename = copy_kernel_str(buf.wrapping_add(fixed), PATH_CAP as u32, filename_ptr);
    let args_dst = buf.wrapping_add(fixed + (filename.len as usize & (PATH_CAP - 1)));
    let mut args_len = 0u32;
    let mut truncated = false;
    if let Some((start, end)) = arg_area(current_task())
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
    let uid_gid = bpf_get_current_uid_gid();
    let mut hdr = header(RecordKind::Exec, &caller, 0);
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
            _pad: [0; 7],
        }
    };
    submit(buf, fixed + filename.len as usize + args_len as usize);
    0
}

#[inline(always)]
fn ctx_ptr(ctx: &TracePointContext) -> *mut core::ffi::c_void {
    use aya_ebpf::EbpfContext;
    ctx.as_ptr()
}

#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    exec_exit(&ctx, exec_syscall::EXECVE)
}

#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    exec_exit(&ctx, exec_syscall::EXECVEAT)
}

/// Success was reported by sched_process_exec; here only failures are, with the filename and
/// argv read from the caller's (still intact) memory.
#[inline(always)]
fn exec_exit(ctx: &TracePointContext, syscall: u8) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    let ret = exit_ret(ctx);
    if ret >= 0 || !caller.wants(capture::PROCESS) {
        return 0;
    }
    let (filename_ptr, argv) = if syscall == exec_syscall::EXECVE {
        (args[0], args[1])
    } else {
        (args[1], args[2])
    };
    let Some(buf) = scratch() else { return 0 };
    let fixed = size_of::<ExecRecord>();
    let filename = copy_user_str(buf.wrapping_add(fixed), PATH_CAP as u32, filename_ptr);
    let args_base = buf.wrapping_add(fixed + (filename.len as usize & (PATH_CAP - 1)));
    let max = load_config!(args_max) as usize;
    let mut used = 0usize;
    let mut truncated = false;
    if argv != 0 {
        for i in 0..FAILED_EXEC_ARGS {
            if used >= max {
                truncated = true;
                break;
            }
            let Ok(arg) = (unsafe { bpf_probe_read_user((argv + 8 * i as u64) as *const u64) })
            else {
                break;
            };
            if arg == 0 {
                break;
            }
            let copied = copy_user_str(
                args_base.wrapping_add(used & (ARGS_CAP - 1)),
                ARGS_CAP as u32,
                arg,
            );
            if copied.fault {
                break;
            }
            // Keep the NUL as the separator.
            used += copied.len as usize + 1;
        }
    }
    if used > max {
        used = max;
        truncated = true;
    }
    let uid_gid = bpf_get_current_uid_gid();
    let mut hdr = header(RecordKind::Exec, &caller, ret);
    hdr.flags = string_flags(&filename, None);
    if truncated {
        hdr.flags |= record_flags::STR1_TRUNCATED;
    }
    let args_len = (used & (ARGS_CAP - 1)) as u16;
    unsafe {
        *(buf as *mut ExecRecord) = ExecRecord {
            header: hdr,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            old_tid: caller.tid(),
            filename_len: filename.len,
            args_len,
            syscall,
            _pad: [0; 7],
        }
    };
    submit(buf, fixed + filename.len as usize + args_len as usize);
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let caller = caller();
    // A task killed inside a syscall never reaches its sys_exit: free its slot here.
    let _ = PENDING_SYSCALLS.remove(&caller.pid_tgid);
    if !caller.wants(capture::PROCESS) {
        return 0;
    }
    let offset = load_config!(offsets.tp_exit_group_dead);
    let group_dead = if offset != u32::MAX {
        unsafe { ctx.read_at::<u8>(offset as usize) }.unwrap_or(0) != 0
    } else {
        caller.tgid() == caller.tid()
    };
    emit_exit(&caller, group_dead)
}

#[inline(always)]
fn emit_exit(caller: &Caller, group_dead: bool) -> u32 {
    let Some(buf) = scratch() else { return 0 };
    unsafe {
        *(buf as *mut ExitRecord) = ExitRecord {
            header: header(RecordKind::Exit, caller, 0),
            wait_status: exit_code(current_task()),
            group_dead: group_dead as u8,
            _pad: [0; 3],
        }
    };
    submit(buf, size_of::<ExitRecord>());
    0
}

macro_rules! setid_exit {
    ($name:ident, $syscall:expr, $nargs:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            setid_exit(&ctx, $syscall, $nargs)
        }
    };
}

setid_exit!(sys_exit_setuid, setid_syscall::SETUID, 1);
setid_exit!(sys_exit_setreuid, setid_syscall::SETREUID, 2);
setid_exit!(sys_exit_setresuid, setid_syscall::SETRESUID, 3);
setid_exit!(sys_exit_setgid, setid_syscall::SETGID, 1);
setid_exit!(sys_exit_setregid, setid_syscall::SETREGID, 2);
setid_exit!(sys_exit_setresgid, setid_syscall::SETRESGID, 3);

#[inline(always)]
fn setid_exit(ctx: &TracePointContext, syscall: u8, nargs: usize) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    if !caller.wants(capture::PROCESS) {
        return 0;
    }
    let id = |i: usize| {
        if i < nargs {
            args[i] as u32
        } else {
            ID_UNCHANGED
        }
    };
    let Some(buf) = scratch() else { return 0 };
    unsafe {
        *(buf as *mut SetIdRecord) = SetIdRecord {
            header: header(RecordKind::SetId, &caller, exit_ret(ctx)),
            ids: [id(0), id(1), id(2)],
            syscall,
            _pad: [0; 3],
        }
    };
    submit(buf, size_of::<SetIdRecord>());
    0
}
