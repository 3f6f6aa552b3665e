//! Syscall-level process records: set*id, and exec and clone calls that failed (successful
//! ones are reported by the sched tracepoints, sched.rs).

use core::mem::size_of;

use aya_ebpf::helpers::{bpf_get_current_uid_gid, bpf_probe_read_user};
use sysflow_common::{
    ARGS_CAP, CloneRecord, ExecRecord, ID_UNCHANGED, PATH_CAP, RecordKind, SetIdRecord, capture,
    clone_role, clone_syscall, exec_syscall, record_flags, setid_syscall,
};

use crate::{
    emit::{copy_user_str, header, scratch, string_flags, submit},
    maps::load_config,
    process_state::Call,
    syscalls::syscall_exit,
};

pub const SIGCHLD: u64 = 17;
pub const CLONE_VM: u64 = 0x100;
pub const CLONE_VFORK: u64 = 0x4000;
pub const CLONE_THREAD: u64 = 0x10000;
/// Arguments read from argv of a failed exec.
const FAILED_EXEC_ARGS: usize = 16;

/// The clone flags a clone-family call was made with (clone3 passes them in a struct).
#[inline(always)]
pub fn clone_flags(syscall: u8, args: &[u64; 6]) -> u64 {
    match syscall {
        clone_syscall::CLONE => args[0],
        clone_syscall::CLONE3 => unsafe { bpf_probe_read_user(args[0] as *const u64) }.unwrap_or(0),
        clone_syscall::FORK => SIGCHLD,
        _ => CLONE_VM | CLONE_VFORK | SIGCHLD,
    }
}

syscall_exit!(sys_exit_clone, exit_clone, |call, args, ret| {
    clone_failed(call, args, ret, clone_syscall::CLONE)
});
syscall_exit!(sys_exit_clone3, exit_clone3, |call, args, ret| {
    clone_failed(call, args, ret, clone_syscall::CLONE3)
});
syscall_exit!(sys_exit_fork, exit_fork, |call, args, ret| {
    clone_failed(call, args, ret, clone_syscall::FORK)
});
syscall_exit!(sys_exit_vfork, exit_vfork, |call, args, ret| {
    clone_failed(call, args, ret, clone_syscall::VFORK)
});

/// A clone that created nothing (a successful one is reported by sched_process_fork).
#[inline(always)]
fn clone_failed(call: &Call, args: &[u64; 6], ret: i64, syscall: u8) {
    if ret >= 0 || !call.wants(capture::PROCESS_SYSCALLS) {
        return;
    }
    let Some(buf) = scratch() else { return };
    let flags = clone_flags(syscall, args);
    unsafe {
        *(buf as *mut CloneRecord) = CloneRecord {
            header: header(RecordKind::Clone, call, ret),
            clone_flags: flags,
            child_tid: 0,
            parent_tgid: call.tgid,
            role: clone_role::PARENT,
            syscall,
            is_thread: (flags & CLONE_THREAD != 0) as u8,
            _pad: [0; 5],
        }
    };
    submit(buf, size_of::<CloneRecord>());
}

syscall_exit!(sys_exit_execve, exit_execve, |call, args, ret| {
    exec_failed(call, args, ret, exec_syscall::EXECVE)
});
syscall_exit!(sys_exit_execveat, exit_execveat, |call, args, ret| {
    exec_failed(call, args, ret, exec_syscall::EXECVEAT)
});

/// Success is reported by sched_process_exec; here only failures are, with the filename and
/// argv read from the caller's (still intact) memory.
#[inline(always)]
fn exec_failed(call: &Call, args: &[u64; 6], ret: i64, syscall: u8) {
    if ret >= 0 || !call.wants(capture::PROCESS_SYSCALLS) {
        return;
    }
    let (filename_ptr, argv) = if syscall == exec_syscall::EXECVE {
        (args[0], args[1])
    } else {
        (args[1], args[2])
    };
    let Some(buf) = scratch() else { return };
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
    let mut hdr = header(RecordKind::Exec, call, ret);
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
            old_tid: call.tid,
            filename_len: filename.len,
            args_len,
            syscall,
            open_fds_known: 0,
            _pad: [0; 6],
            open_fds: 0,
        }
    };
    submit(buf, fixed + filename.len as usize + args_len as usize);
}

syscall_exit!(sys_exit_setuid, exit_setuid, |call, args, ret| {
    setid_exit(call, args, ret, setid_syscall::SETUID, 1)
});
syscall_exit!(sys_exit_setreuid, exit_setreuid, |call, args, ret| {
    setid_exit(call, args, ret, setid_syscall::SETREUID, 2)
});
syscall_exit!(sys_exit_setresuid, exit_setresuid, |call, args, ret| {
    setid_exit(call, args, ret, setid_syscall::SETRESUID, 3)
});
syscall_exit!(sys_exit_setgid, exit_setgid, |call, args, ret| {
    setid_exit(call, args, ret, setid_syscall::SETGID, 1)
});
syscall_exit!(sys_exit_setregid, exit_setregid, |call, args, ret| {
    setid_exit(call, args, ret, setid_syscall::SETREGID, 2)
});
syscall_exit!(sys_exit_setresgid, exit_setresgid, |call, args, ret| {
    setid_exit(call, args, ret, setid_syscall::SETRESGID, 3)
});

#[inline(always)]
fn setid_exit(call: &Call, args: &[u64; 6], ret: i64, syscall: u8, nargs: usize) {
    if !call.wants(capture::PROCESS_SYSCALLS) {
        return;
    }
    let id = |i: usize| {
        if i < nargs {
            args[i] as u32
        } else {
            ID_UNCHANGED
        }
    };
    let Some(buf) = scratch() else { return };
    unsafe {
        *(buf as *mut SetIdRecord) = SetIdRecord {
            header: header(RecordKind::SetId, call, ret),
            ids: [id(0), id(1), id(2)],
            syscall,
            _pad: [0; 3],
        }
    };
    submit(buf, size_of::<SetIdRecord>());
}
