//! Reads of kernel structs (task, file table, inode, socket) at offsets user space took from the
//! running kernel's BTF.
//!
//! Two kinds of read: on the hot path, plain loads through BTF-typed pointers (the current task,
//! the syscall's saved registers), which the verifier checks against the kernel's BTF at load
//! time and which cost no helper call; everywhere else `bpf_probe_read_kernel`, so a stale
//! pointer yields an error (counted), never a fault.

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};
use sysflow_common::{Endpoint, FileIdentity, KernelCounter, SockInfo};

use crate::maps::{bump, load_config};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// Kernel threads and io_uring workers: they make no syscalls of their own.
const PF_IO_WORKER: u32 = 0x10;
const PF_KTHREAD: u32 = 0x0020_0000;

/// The current task as a BTF-typed pointer (loads through it are checked by the verifier).
#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// A field of a BTF-typed kernel object, at an offset the verifier knows (from `LOAD_CONFIG`).
/// A plain load: no helper call.
///
/// # Safety
/// `base` must be a pointer the verifier knows as BTF-typed, and `offset` the offset of a field
/// of type `T` in it.
#[inline(always)]
pub unsafe fn btf_field<T: Copy>(base: *const u8, offset: u32) -> T {
    unsafe { core::ptr::read(base.wrapping_add(offset as usize) as *const T) }
}

/// The thread-group leader of `task` (a BTF-typed task pointer).
#[inline(always)]
pub fn group_leader(task: *const u8) -> *const u8 {
    unsafe { btf_field(task, load_config!(offsets.task_group_leader)) }
}

/// (tgid, tid) of a BTF-typed task pointer.
#[inline(always)]
pub fn task_ids(task: *const u8) -> (u32, u32) {
    unsafe {
        let tgid: i32 = btf_field(task, load_config!(offsets.task_tgid));
        let pid: i32 = btf_field(task, load_config!(offsets.task_pid));
        (tgid as u32, pid as u32)
    }
}

/// Whether the task runs a compat (32-bit) syscall, whose numbers mean other calls.
#[inline(always)]
pub fn in_compat_syscall(task: *const u8) -> bool {
    let mask = load_config!(offsets.task_compat_mask);
    mask != 0
        && unsafe { btf_field::<u32>(task, load_config!(offsets.task_compat_word)) } & mask != 0
}

/// A kernel thread or io_uring worker (never a process of its own to report).
#[inline(always)]
pub fn is_kernel_worker(task: *const u8) -> bool {
    read::<u32>(task, load_config!(offsets.task_flags)).unwrap_or(0) & (PF_KTHREAD | PF_IO_WORKER)
        != 0
}

/// The syscall number saved in a BTF-typed `struct pt_regs`.
#[inline(always)]
pub fn regs_nr(regs: *const u8) -> u64 {
    unsafe { btf_field(regs, load_config!(offsets.regs_nr)) }
}

/// The six syscall arguments saved in a BTF-typed `struct pt_regs`. They are still the caller's
/// at syscall exit (exec replaces them only on success, and reports success elsewhere).
#[inline(always)]
pub fn regs_args(regs: *const u8) -> [u64; 6] {
    unsafe {
        [
            btf_field(regs, load_config!(offsets.regs_args[0])),
            btf_field(regs, load_config!(offsets.regs_args[1])),
            btf_field(regs, load_config!(offsets.regs_args[2])),
            btf_field(regs, load_config!(offsets.regs_args[3])),
            btf_field(regs, load_config!(offsets.regs_args[4])),
            btf_field(regs, load_config!(offsets.regs_args[5])),
        ]
    }
}

/// One syscall argument saved in a BTF-typed `struct pt_regs`.
#[inline(always)]
pub fn regs_arg<const N: usize>(regs: *const u8) -> u64 {
    unsafe { btf_field(regs, load_config!(offsets.regs_args[N])) }
}

/// The user registers of `task` (a BTF-typed task pointer), as a BTF-typed `struct pt_regs`.
#[inline(always)]
pub fn task_regs(task: *const u8) -> *const u8 {
    unsafe { bpf_task_pt_regs(task as *mut _) as *const u8 }
}

/// cgroup v2 id of any task: the inode number of its default-hierarchy cgroup.
#[inline(always)]
pub fn task_cgroup_id(task: *const u8) -> u64 {
    let Some(css_set) = read::<*const u8>(task, load_config!(offsets.task_cgroups)) else {
        return 0;
    };
    let Some(cgroup) = read::<*const u8>(css_set, load_config!(offsets.css_set_dfl_cgrp)) else {
        return 0;
    };
    let Some(kn) = read::<*const u8>(cgroup, load_config!(offsets.cgroup_kn)) else {
        return 0;
    };
    read(kn, load_config!(offsets.kernfs_node_id)).unwrap_or(0)
}

/// Reads a `T` at `base + offset`.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            bump(KernelCounter::ReadFaults);
            None
        }
    }
}

/// `start_boottime` of the current thread group's leader: with the tgid, the process identity.
#[inline(always)]
pub fn process_start_ns(task: *const u8) -> u64 {
    let leader: *const u8 = read(task, load_config!(offsets.task_group_leader)).unwrap_or(task);
    read(leader, load_config!(offsets.task_start_boottime)).unwrap_or(0)
}

/// tgid of the task's real parent.
#[inline(always)]
pub fn parent_tgid(task: *const u8) -> u32 {
    let parent: *const u8 = match read(task, load_config!(offsets.task_real_parent)) {
        Some(p) => p,
        None => return 0,
    };
    read::<i32>(parent, load_config!(offsets.task_tgid)).unwrap_or(0) as u32
}

#[inline(always)]
pub fn exit_code(task: *const u8) -> i32 {
    read(task, load_config!(offsets.task_exit_code)).unwrap_or(0)
}

/// `(arg_start, arg_end)` of the task's memory map: where argv lives after exec.
#[inline(always)]
pub fn arg_area(task: *const u8) -> Option<(u64, u64)> {
    let mm: *const u8 = read(task, load_config!(offsets.task_mm))?;
    let start: u64 = read(mm, load_config!(offsets.mm_arg_start))?;
    let end: u64 = read(mm, load_config!(offsets.mm_arg_end))?;
    Some((start, end))
}

/// The `struct file *` behind `fd` in the task's file table.
#[inline(always)]
pub fn file_of_fd(task: *const u8, fd: i32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    let files: *const u8 = read(task, load_config!(offsets.task_files))?;
    let fdt: *const u8 = read(files, load_config!(offsets.files_fdt))?;
    let max_fds: u32 = read(fdt, load_config!(offsets.fdtable_max_fds))?;
    if fd as u32 >= max_fds {
        return None;
    }
    let fd_array: *const u8 = read(fdt, load_config!(offsets.fdtable_fd))?;
    let file: *const u8 = read(fd_array, (fd as u32).wrapping_mul(8))?;
    if file.is_null() { None } else { Some(file) }
}

/// Which of descriptors 0..64 the task has open: the first word of its file table's
/// `open_fds` bitmap.
#[inline(always)]
pub fn open_fds_low(task: *const u8) -> Option<u64> {
    let files: *const u8 = read(task, load_config!(offsets.task_files))?;
    let fdt: *const u8 = read(files, load_config!(offsets.files_fdt))?;
    let open_fds: *const u8 = read(fdt, load_config!(offsets.fdtable_open_fds))?;
    read(open_fds, 0)
}

#[inline(always)]
pub fn file_identity(file: *const u8) -> FileIdentity {
    let mut id = FileIdentity::default();
    let Some(inode) = read::<*const u8>(file, load_config!(offsets.file_f_inode)) else {
        return id;
    };
    id.mode = read(inode, load_config!(offsets.inode_i_mode)).unwrap_or(0);
    id.ino = read(inode, load_config!(offsets.inode_i_ino)).unwrap_or(0);
    if let Some(sb) = read::<*const u8>(inode, load_config!(offsets.inode_i_sb)) {
        id.dev = read(sb, load_config!(offsets.super_block_s_dev)).unwrap_or(0);
    }
    id
}

#[inline(always)]
pub fn is_socket(id: &FileIdentity) -> bool {
    id.mode & S_IFMT == S_IFSOCK
}

/// Family, type, protocol and both endpoints of the socket behind `file`.
#[inline(always)]
pub fn sock_info(file: *const u8) -> SockInfo {
    let mut info = SockInfo::default();
    let Some(socket) = read::<*const u8>(file, load_config!(offsets.file_private_data)) else {
        return info;
    };
    let Some(sk) = read::<*const u8>(socket, load_config!(offsets.socket_sk)) else {
        return info;
    };
    info.family = read(sk, load_config!(offsets.sock_family)).unwrap_or(0);
    info.sock_type = read(sk, load_config!(offsets.sock_type)).unwrap_or(0);
    info.protocol = read(sk, load_config!(offsets.sock_protocol)).unwrap_or(0);
    info.local.port = read(sk, load_config!(offsets.sock_num)).unwrap_or(0);
    info.remote.port = u16::from_be(read(sk, load_config!(offsets.sock_dport)).unwrap_or(0));
    if info.family == AF_INET {
        let l: [u8; 4] = read(sk, load_config!(offsets.sock_rcv_saddr)).unwrap_or([0; 4]);
        let r: [u8; 4] = read(sk, load_config!(offsets.sock_daddr)).unwrap_or([0; 4]);
        info.local.addr[..4].copy_from_slice(&l);
        info.remote.addr[..4].copy_from_slice(&r);
    } else if info.family == AF_INET6 {
        info.local.addr = read(sk, load_config!(offsets.sock_v6_rcv_saddr)).unwrap_or([0; 16]);
        info.remote.addr = read(sk, load_config!(offsets.sock_v6_daddr)).unwrap_or([0; 16]);
    }
    info
}

/// Parses a user-space `sockaddr_in`/`sockaddr_in6` into (family, endpoint).
#[inline(always)]
pub fn user_sockaddr(ptr: u64) -> Option<(u16, Endpoint)> {
    use aya_ebpf::helpers::bpf_probe_read_user;
    if ptr == 0 {
        return None;
    }
    // family (2), port (2, network order), then v4 address or v6 flowinfo (4) + address (16).
    let head: [u8; 8] = unsafe { bpf_probe_read_user(ptr as *const [u8; 8]) }.ok()?;
    let family = u16::from_ne_bytes([head[0], head[1]]);
    let mut ep = Endpoint {
        port: u16::from_be_bytes([head[2], head[3]]),
        ..Endpoint::default()
    };
    if family == AF_INET {
        ep.addr[..4].copy_from_slice(&head[4..8]);
    } else if family == AF_INET6 {
        ep.addr = unsafe { bpf_probe_read_user((ptr + 8) as *const [u8; 16]) }.ok()?;
    } else {
        return None;
    }
    Some((family, ep))
}
