//! open family, close, path operations (rename, unlink, mkdir, link, chmod, chown, chdir, ...)
//! and the dup family.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use sysflow_common::{
    AT_FDCWD, CloseRangeRecord, CloseRecord, DupRecord, FdKey, FileIdentity, OpenRecord, PATH_CAP,
    PathOpRecord, RecordKind, capture, close_reason, dup_syscall, open_syscall, path_op,
};

use crate::{
    emit::{Caller, caller, copy_user_str, header, scratch, string_flags, submit, take_args},
    enter_args, exit_ret,
    io::forget_counters,
    kernel::{current_task, file_identity, file_of_fd},
    maps::FD_COUNTERS,
};

const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_CLOEXEC: u32 = 0o2000000;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// Descriptor operations are wanted by file, network and counter capture alike.
const FD_BITS: u32 = capture::FILE | capture::NETWORK | capture::IO_COUNTERS;

macro_rules! open_exit {
    ($name:ident, $syscall:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            open_exit(&ctx, $syscall)
        }
    };
}

open_exit!(sys_exit_open, open_syscall::OPEN);
open_exit!(sys_exit_openat, open_syscall::OPENAT);
open_exit!(sys_exit_openat2, open_syscall::OPENAT2);
open_exit!(sys_exit_creat, open_syscall::CREAT);

#[inline(always)]
fn open_exit(ctx: &TracePointContext, syscall: u8) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    if !caller.wants(capture::FILE) {
        return 0;
    }
    let ret = exit_ret(ctx);
    let (dirfd, path, flags, mode) = match syscall {
        open_syscall::OPEN => (AT_FDCWD, args[0], args[1] as u32, args[2] as u32),
        open_syscall::OPENAT => (args[0] as i32, args[1], args[2] as u32, args[3] as u32),
        open_syscall::OPENAT2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how: [u64; 2] =
                unsafe { bpf_probe_read_user(args[2] as *const [u64; 2]) }.unwrap_or([0; 2]);
            (args[0] as i32, args[1], how[0] as u32, how[1] as u32)
        }
        _ => (
            AT_FDCWD,
            args[0],
            O_CREAT | O_WRONLY | O_TRUNC,
            args[1] as u32,
        ),
    };
    let file = if ret >= 0 {
        // A new descriptor starts with fresh counters, whatever a lost close left behind.
        forget_counters(caller.tgid(), ret as i32);
        file_of_fd(current_task(), ret as i32)
            .map(file_identity)
            .unwrap_or_default()
    } else {
        FileIdentity::default()
    };
    let Some(buf) = scratch() else { return 0 };
    let fixed = size_of::<OpenRecord>();
    let copied = copy_user_str(buf.wrapping_add(fixed), PATH_CAP as u32, path);
    let mut hdr = header(RecordKind::Open, &caller, ret);
    hdr.flags = string_flags(&copied, None);
    unsafe {
        *(buf as *mut OpenRecord) = OpenRecord {
            header: hdr,
            file,
            dirfd,
            flags,
            mode,
            path_len: copied.len,
            syscall,
            _pad: 0,
        }
    };
    submit(buf, fixed + copied.len as usize);
    0
}

/// close is reported at entry, with the descriptor's counters taken out of the map in the same
/// step: after the close another thread may get the same fd number and start counting anew.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let caller = caller();
    if !caller.wants(FD_BITS) {
        return 0;
    }
    let Some(args) = enter_args(&ctx) else {
        return 0;
    };
    emit_close(&caller, args[0] as i32, close_reason::CLOSE, 0);
    0
}

#[tracepoint]
pub fn sys_exit_close_range(ctx: TracePointContext) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    if !caller.wants(FD_BITS) {
        return 0;
    }
    let Some(buf) = scratch() else { return 0 };
    unsafe {
        *(buf as *mut CloseRangeRecord) = CloseRangeRecord {
            header: header(RecordKind::CloseRange, &caller, exit_ret(&ctx)),
            first: args[0] as u32,
            last: args[1] as u32,
            flags: args[2] as u32,
            _pad: 0,
        }
    };
    submit(buf, size_of::<CloseRangeRecord>());
    0
}

/// Takes the descriptor's counters out of `FD_COUNTERS` and reports them in a close record.
/// Returns whether there were counters. For REPLACED/PEER_CHANGED without counters nothing is
/// written (user space learns of those from the dup or the next datagram).
#[inline(always)]
pub fn emit_close(caller: &Caller, fd: i32, reason: u8, ret: i64) -> bool {
    let key = FdKey {
        tgid: caller.tgid(),
        fd,
    };
    let counters = unsafe { FD_COUNTERS.get(&key) }.copied();
    if counters.is_some() {
        let _ = FD_COUNTERS.remove(&key);
    } else if reason != close_reason::CLOSE {
        return false;
    }
    let Some(buf) = scratch() else {
        return counters.is_some();
    };
    unsafe {
        *(buf as *mut CloseRecord) = CloseRecord {
            header: header(RecordKind::Close, caller, ret),
            fd,
            reason,
            has_counters: counters.is_some() as u8,
            _pad: [0; 2],
            counters: counters.unwrap_or_default(),
        }
    };
    submit(buf, size_of::<CloseRecord>());
    counters.is_some()
}

/// Where a path operation finds its operands among the six syscall arguments (-1: absent).
#[derive(Clone, Copy)]
struct PathArgs {
    dirfd: i8,
    path: i8,
    dirfd2: i8,
    path2: i8,
    fd: i8,
    mode_or_flags: i8,
    uid: i8,
    gid: i8,
}

const NONE: PathArgs = PathArgs {
    dirfd: -1,
    path: -1,
    dirfd2: -1,
    path2: -1,
    fd: -1,
    mode_or_flags: -1,
    uid: -1,
    gid: -1,
};

macro_rules! path_exit {
    ($name:ident, $op:expr, { $($field:ident : $idx:expr),* }) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            path_exit(&ctx, $op, PathArgs { $($field: $idx,)* ..NONE })
        }
    };
}

path_exit!(sys_exit_unlink, path_op::UNLINK, { path: 0 });
path_exit!(sys_exit_unlinkat, path_op::UNLINKAT, { dirfd: 0, path: 1, mode_or_flags: 2 });
path_exit!(sys_exit_rmdir, path_op::RMDIR, { path: 0 });
path_exit!(sys_exit_rename, path_op::RENAME, { path: 0, path2: 1 });
path_exit!(sys_exit_renameat, path_op::RENAMEAT, { dirfd: 0, path: 1, dirfd2: 2, path2: 3 });
path_exit!(sys_exit_renameat2, path_op::RENAMEAT2,
    { dirfd: 0, path: 1, dirfd2: 2, path2: 3, mode_or_flags: 4 });
path_exit!(sys_exit_mkdir, path_op::MKDIR, { path: 0, mode_or_flags: 1 });
path_exit!(sys_exit_mkdirat, path_op::MKDIRAT, { dirfd: 0, path: 1, mode_or_flags: 2 });
path_exit!(sys_exit_link, path_op::LINK, { path: 0, path2: 1 });
path_exit!(sys_exit_linkat, path_op::LINKAT,
    { dirfd: 0, path: 1, dirfd2: 2, path2: 3, mode_or_flags: 4 });
path_exit!(sys_exit_symlink, path_op::SYMLINK, { path: 0, path2: 1 });
path_exit!(sys_exit_symlinkat, path_op::SYMLINKAT, { path: 0, dirfd2: 1, path2: 2 });
path_exit!(sys_exit_chmod, path_op::CHMOD, { path: 0, mode_or_flags: 1 });
path_exit!(sys_exit_fchmod, path_op::FCHMOD, { fd: 0, mode_or_flags: 1 });
path_exit!(sys_exit_fchmodat, path_op::FCHMODAT, { dirfd: 0, path: 1, mode_or_flags: 2 });
// fchmodat2 (Linux 6.6) is what glibc uses for fchmodat with flags.
path_exit!(sys_exit_fchmodat2, path_op::FCHMODAT, { dirfd: 0, path: 1, mode_or_flags: 2 });
path_exit!(sys_exit_chown, path_op::CHOWN, { path: 0, uid: 1, gid: 2 });
path_exit!(sys_exit_fchown, path_op::FCHOWN, { fd: 0, uid: 1, gid: 2 });
path_exit!(sys_exit_lchown, path_op::LCHOWN, { path: 0, uid: 1, gid: 2 });
path_exit!(sys_exit_fchownat, path_op::FCHOWNAT,
    { dirfd: 0, path: 1, uid: 2, gid: 3, mode_or_flags: 4 });
path_exit!(sys_exit_chdir, path_op::CHDIR, { path: 0 });
path_exit!(sys_exit_fchdir, path_op::FCHDIR, { fd: 0 });

#[inline(always)]
fn path_exit(ctx: &TracePointContext, op: u8, at: PathArgs) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    if !caller.wants(capture::FILE) {
        return 0;
    }
    let arg = |i: i8, absent: u64| {
        if (0..6).contains(&i) {
            args[i as usize]
        } else {
            absent
        }
    };
    let Some(buf) = scratch() else { return 0 };
    let fixed = size_of::<PathOpRecord>();
    let path = copy_user_str(buf.wrapping_add(fixed), PATH_CAP as u32, arg(at.path, 0));
    let path_len = if at.path >= 0 { path.len } else { 0 };
    let path2_dst = buf.wrapping_add(fixed + (path_len as usize & (PATH_CAP - 1)));
    let path2 = copy_user_str(path2_dst, PATH_CAP as u32, arg(at.path2, 0));
    let path2_len = if at.path2 >= 0 { path2.len } else { 0 };
    let mut hdr = header(RecordKind::PathOp, &caller, exit_ret(ctx));
    hdr.flags = match (at.path >= 0, at.path2 >= 0) {
        (true, true) => string_flags(&path, Some(&path2)),
        (true, false) => string_flags(&path, None),
        _ => 0,
    };
    unsafe {
        *(buf as *mut PathOpRecord) = PathOpRecord {
            header: hdr,
            dirfd: arg(at.dirfd, AT_FDCWD as u64) as i32,
            dirfd2: arg(at.dirfd2, AT_FDCWD as u64) as i32,
            fd: arg(at.fd, u64::MAX) as i32,
            mode_or_flags: arg(at.mode_or_flags, 0) as u32,
            uid: arg(at.uid, u64::MAX) as u32,
            gid: arg(at.gid, u64::MAX) as u32,
            path_len,
            path2_len,
            op,
            _pad: [0; 3],
        }
    };
    submit(buf, fixed + path_len as usize + path2_len as usize);
    0
}

macro_rules! dup_exit {
    ($name:ident, $syscall:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            dup_exit(&ctx, $syscall)
        }
    };
}

dup_exit!(sys_exit_dup, dup_syscall::DUP);
dup_exit!(sys_exit_dup2, dup_syscall::DUP2);
dup_exit!(sys_exit_dup3, dup_syscall::DUP3);
dup_exit!(sys_exit_fcntl, dup_syscall::FCNTL_DUPFD);

#[inline(always)]
fn dup_exit(ctx: &TracePointContext, syscall: u8) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    if !caller.wants(FD_BITS) {
        return 0;
    }
    let flags = match syscall {
        dup_syscall::FCNTL_DUPFD => match args[1] {
            F_DUPFD => 0,
            F_DUPFD_CLOEXEC => O_CLOEXEC,
            // Every other fcntl command leaves the descriptor table alone.
            _ => return 0,
        },
        dup_syscall::DUP3 => args[2] as u32,
        _ => 0,
    };
    let ret = exit_ret(ctx);
    let old_fd = args[0] as i32;
    if ret >= 0 && ret as i32 != old_fd {
        // dup2/dup3 onto an open descriptor closed it: report what it had counted.
        if matches!(syscall, dup_syscall::DUP2 | dup_syscall::DUP3) {
            emit_close(&caller, ret as i32, close_reason::REPLACED, 0);
        } else {
            forget_counters(caller.tgid(), ret as i32);
        }
    }
    let Some(buf) = scratch() else { return 0 };
    unsafe {
        *(buf as *mut DupRecord) = DupRecord {
            header: header(RecordKind::Dup, &caller, ret),
            old_fd,
            flags,
            syscall,
            _pad: [0; 7],
        }
    };
    submit(buf, size_of::<DupRecord>());
    0
}
