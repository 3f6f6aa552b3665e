//! open family, path operations (rename, unlink, mkdir, link, chmod, chown, chdir, ...), the
//! dup family and close_range. (close itself is reported on entry: syscalls.rs.)

use core::mem::size_of;

use aya_ebpf::helpers::bpf_probe_read_user;
use sysflow_common::{
    AT_FDCWD, CloseRangeRecord, DupRecord, FileIdentity, OpenRecord, PATH_CAP, PathOpRecord,
    RecordKind, capture, dup_syscall, open_syscall, path_op, report_reason,
};

use crate::{
    counters::{forget, report, report_range},
    emit::{copy_user_str, header, scratch, string_flags, submit},
    kernel::{file_identity, file_of_fd},
    process_state::Call,
    syscalls::syscall_exit,
};

const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_CLOEXEC: u32 = 0o2000000;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

syscall_exit!(sys_exit_open, exit_open, |call, args, ret| {
    open_exit(call, args, ret, open_syscall::OPEN)
});
syscall_exit!(sys_exit_openat, exit_openat, |call, args, ret| {
    open_exit(call, args, ret, open_syscall::OPENAT)
});
syscall_exit!(sys_exit_openat2, exit_openat2, |call, args, ret| {
    open_exit(call, args, ret, open_syscall::OPENAT2)
});
syscall_exit!(sys_exit_creat, exit_creat, |call, args, ret| {
    open_exit(call, args, ret, open_syscall::CREAT)
});

#[inline(always)]
fn open_exit(call: &Call, args: &[u64; 6], ret: i64, syscall: u8) {
    if !call.wants(capture::FILE) {
        return;
    }
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
        forget(call, ret as i32);
        file_of_fd(call.task, ret as i32)
            .map(file_identity)
            .unwrap_or_default()
    } else {
        FileIdentity::default()
    };
    let Some(buf) = scratch() else { return };
    let fixed = size_of::<OpenRecord>();
    let copied = copy_user_str(buf.wrapping_add(fixed), PATH_CAP as u32, path);
    let mut hdr = header(RecordKind::Open, call, ret);
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
}

syscall_exit!(sys_exit_close_range, exit_close_range, |call, args, ret| {
    close_range_exit(call, args, ret)
});

/// close_range closed descriptors first..=last (unless CLOSE_RANGE_CLOEXEC, which only marks
/// them close-on-exec): their counters leave first, then the record that ends their flows.
#[inline(always)]
fn close_range_exit(call: &Call, args: &[u64; 6], ret: i64) {
    const CLOSE_RANGE_CLOEXEC: u64 = 4;
    if !call.wants(capture::FD_KINDS) {
        return;
    }
    let (first, last, flags) = (args[0] as u32, args[1] as u32, args[2] as u32);
    if ret == 0 && args[2] & CLOSE_RANGE_CLOEXEC == 0 {
        report_range(call, report_reason::CLOSE_RANGE, false, first, last);
    }
    let Some(buf) = scratch() else { return };
    unsafe {
        *(buf as *mut CloseRangeRecord) = CloseRangeRecord {
            header: header(RecordKind::CloseRange, call, ret),
            first,
            last,
            flags,
            _pad: 0,
        }
    };
    submit(buf, size_of::<CloseRangeRecord>());
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
    ($tracepoint:ident, $dispatched:ident, $op:expr, { $($field:ident : $idx:expr),* }) => {
        syscall_exit!($tracepoint, $dispatched, |call, args, ret| {
            path_exit(call, args, ret, $op, PathArgs { $($field: $idx,)* ..NONE })
        });
    };
}

path_exit!(sys_exit_unlink, exit_unlink, path_op::UNLINK, { path: 0 });
path_exit!(sys_exit_unlinkat, exit_unlinkat, path_op::UNLINKAT,
    { dirfd: 0, path: 1, mode_or_flags: 2 });
path_exit!(sys_exit_rmdir, exit_rmdir, path_op::RMDIR, { path: 0 });
path_exit!(sys_exit_rename, exit_rename, path_op::RENAME, { path: 0, path2: 1 });
path_exit!(sys_exit_renameat, exit_renameat, path_op::RENAMEAT,
    { dirfd: 0, path: 1, dirfd2: 2, path2: 3 });
path_exit!(sys_exit_renameat2, exit_renameat2, path_op::RENAMEAT2,
    { dirfd: 0, path: 1, dirfd2: 2, path2: 3, mode_or_flags: 4 });
path_exit!(sys_exit_mkdir, exit_mkdir, path_op::MKDIR, { path: 0, mode_or_flags: 1 });
path_exit!(sys_exit_mkdirat, exit_mkdirat, path_op::MKDIRAT,
    { dirfd: 0, path: 1, mode_or_flags: 2 });
path_exit!(sys_exit_link, exit_link, path_op::LINK, { path: 0, path2: 1 });
path_exit!(sys_exit_linkat, exit_linkat, path_op::LINKAT,
    { dirfd: 0, path: 1, dirfd2: 2, path2: 3, mode_or_flags: 4 });
path_exit!(sys_exit_symlink, exit_symlink, path_op::SYMLINK, { path: 0, path2: 1 });
path_exit!(sys_exit_symlinkat, exit_symlinkat, path_op::SYMLINKAT,
    { path: 0, dirfd2: 1, path2: 2 });
path_exit!(sys_exit_chmod, exit_chmod, path_op::CHMOD, { path: 0, mode_or_flags: 1 });
path_exit!(sys_exit_fchmod, exit_fchmod, path_op::FCHMOD, { fd: 0, mode_or_flags: 1 });
path_exit!(sys_exit_fchmodat, exit_fchmodat, path_op::FCHMODAT,
    { dirfd: 0, path: 1, mode_or_flags: 2 });
// fchmodat2 (Linux 6.6) is what glibc uses for fchmodat with flags.
path_exit!(sys_exit_fchmodat2, exit_fchmodat2, path_op::FCHMODAT,
    { dirfd: 0, path: 1, mode_or_flags: 2 });
path_exit!(sys_exit_chown, exit_chown, path_op::CHOWN, { path: 0, uid: 1, gid: 2 });
path_exit!(sys_exit_fchown, exit_fchown, path_op::FCHOWN, { fd: 0, uid: 1, gid: 2 });
path_exit!(sys_exit_lchown, exit_lchown, path_op::LCHOWN, { path: 0, uid: 1, gid: 2 });
path_exit!(sys_exit_fchownat, exit_fchownat, path_op::FCHOWNAT,
    { dirfd: 0, path: 1, uid: 2, gid: 3, mode_or_flags: 4 });
path_exit!(sys_exit_chdir, exit_chdir, path_op::CHDIR, { path: 0 });
path_exit!(sys_exit_fchdir, exit_fchdir, path_op::FCHDIR, { fd: 0 });

#[inline(always)]
fn path_exit(call: &Call, args: &[u64; 6], ret: i64, op: u8, at: PathArgs) {
    if !call.wants(capture::FILE) {
        return;
    }
    let arg = |i: i8, absent: u64| {
        if (0..6).contains(&i) {
            args[i as usize]
        } else {
            absent
        }
    };
    let Some(buf) = scratch() else { return };
    let fixed = size_of::<PathOpRecord>();
    let path = copy_user_str(buf.wrapping_add(fixed), PATH_CAP as u32, arg(at.path, 0));
    let path_len = if at.path >= 0 { path.len } else { 0 };
    let path2_dst = buf.wrapping_add(fixed + (path_len as usize & (PATH_CAP - 1)));
    let path2 = copy_user_str(path2_dst, PATH_CAP as u32, arg(at.path2, 0));
    let path2_len = if at.path2 >= 0 { path2.len } else { 0 };
    let mut hdr = header(RecordKind::PathOp, call, ret);
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
}

syscall_exit!(sys_exit_dup, exit_dup, |call, args, ret| {
    dup_exit(call, args, ret, dup_syscall::DUP)
});
syscall_exit!(sys_exit_dup2, exit_dup2, |call, args, ret| {
    dup_exit(call, args, ret, dup_syscall::DUP2)
});
syscall_exit!(sys_exit_dup3, exit_dup3, |call, args, ret| {
    dup_exit(call, args, ret, dup_syscall::DUP3)
});
syscall_exit!(sys_exit_fcntl, exit_fcntl, |call, args, ret| {
    dup_exit(call, args, ret, dup_syscall::FCNTL_DUPFD)
});

#[inline(always)]
fn dup_exit(call: &Call, args: &[u64; 6], ret: i64, syscall: u8) {
    if !call.wants(capture::FD_KINDS) {
        return;
    }
    let flags = match syscall {
        dup_syscall::FCNTL_DUPFD => match args[1] {
            F_DUPFD => 0,
            F_DUPFD_CLOEXEC => O_CLOEXEC,
            // Every other fcntl command leaves the descriptor table alone.
            _ => return,
        },
        dup_syscall::DUP3 => args[2] as u32,
        _ => 0,
    };
    let old_fd = args[0] as i32;
    if ret >= 0 && ret as i32 != old_fd {
        // dup2/dup3 onto an open descriptor closed it: report what it had counted (the number
        // now refers to the duplicate, so what it was cannot be read any more).
        if matches!(syscall, dup_syscall::DUP2 | dup_syscall::DUP3) {
            report(call, ret as i32, report_reason::REPLACED, false);
        }
        forget(call, ret as i32);
    }
    let Some(buf) = scratch() else { return };
    unsafe {
        *(buf as *mut DupRecord) = DupRecord {
            header: header(RecordKind::Dup, call, ret),
            old_fd,
            flags,
            syscall,
            _pad: [0; 7],
        }
    };
    submit(buf, size_of::<DupRecord>());
}
