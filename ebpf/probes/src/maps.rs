//! Every map the programs share, and the load-time configuration global.
//!
//! Sizes here are defaults: user space resizes them from its configuration before loading
//! (`EbpfLoader::map_max_entries`), so these constants only matter for a bare load.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf},
};
use sysflow_common::{
    FdCounters, FdKey, KERNEL_COUNTER_COUNT, KernelCounter, KernelOffsets, LoadConfig,
    SCRATCH_SIZE, SYSCALL_TABLE_SIZE, Settings, SyscallNumbers, SyscallRoute,
};

use crate::{process_state::ProcessState, task_storage::TaskStorage};

/// Records go to ring `cpu % ring_count`; user space shrinks the unused ones to one page.
#[map]
pub static RING0: RingBuf = RingBuf::with_byte_size(1 << 22, 0);
#[map]
pub static RING1: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static RING2: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static RING3: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Where variable-length records are assembled before they are copied into a ring: the BPF stack
/// (512 bytes) cannot hold a path.
#[map]
pub static SCRATCH: PerCpuArray<[u8; SCRATCH_SIZE]> = PerCpuArray::with_max_entries(1, 0);

/// Where a new `FD_COUNTERS` entry is built before it is inserted (the BPF stack is too small
/// to hold it beside a report built on the way).
#[map]
pub static ENTRY_SCRATCH: PerCpuArray<FdCounters> = PerCpuArray::with_max_entries(1, 0);

/// Each process's capture gate and descriptor counters, in the task storage of its thread-group
/// leader: found through the task, no hash lookup per syscall.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "PROCESS_STATE")]
pub static PROCESS_STATE: TaskStorage<ProcessState> = TaskStorage::new();

/// Counters of descriptors >= FD_SLOTS, and of datagram sockets whose calls name their peer
/// (each peer gets its own flow), keyed by (tgid, fd).
#[map]
pub static FD_COUNTERS: HashMap<FdKey, FdCounters> = HashMap::with_max_entries(65536, 0);

/// Tracepoint hook set only: a syscall's arguments from its sys_enter to its sys_exit, keyed
/// by pid_tgid (the dispatcher reads them from the saved registers at exit instead).
#[map]
pub static PENDING_SYSCALLS: HashMap<u64, PendingSyscall> = HashMap::with_max_entries(16384, 0);

/// cgroup v2 id -> capture mode bits (sysflow_common::capture).
#[map]
pub static CGROUP_MODES: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// Index 0: runtime settings (default capture mode, mode generation, flush reason).
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Per syscall number: which capture kinds follow it, and how the dispatcher handles it. An
/// array lookup the verifier inlines into plain loads: the first test of every syscall.
#[map]
pub static SYSCALL_ROUTES: Array<SyscallRoute> = Array::with_max_entries(SYSCALL_TABLE_SIZE, 0);

/// Per syscall number: the handler program the dispatcher tail-calls.
#[map]
pub static SYSCALL_HANDLERS: ProgramArray = ProgramArray::with_max_entries(SYSCALL_TABLE_SIZE, 0);

/// Per-CPU counters of what was emitted and what was lost, indexed by `KernelCounter`.
#[map]
pub static KERNEL_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(KERNEL_COUNTER_COUNT, 0);

/// Set by user space at load time (kernel struct offsets, syscall numbers, ring settings).
#[unsafe(no_mangle)]
pub static LOAD_CONFIG: LoadConfig = LoadConfig {
    offsets: KernelOffsets {
        task_group_leader: 0,
        task_real_parent: 0,
        task_tgid: 0,
        task_start_boottime: 0,
        task_exit_code: 0,
        task_files: 0,
        task_mm: 0,
        files_fdt: 0,
        fdtable_max_fds: 0,
        fdtable_fd: 0,
        fdtable_open_fds: 0,
        file_f_inode: 0,
        file_private_data: 0,
        inode_i_mode: 0,
        inode_i_ino: 0,
        inode_i_sb: 0,
        super_block_s_dev: 0,
        socket_sk: 0,
        sock_family: 0,
        sock_rcv_saddr: 0,
        sock_daddr: 0,
        sock_num: 0,
        sock_dport: 0,
        sock_v6_daddr: 0,
        sock_v6_rcv_saddr: 0,
        sock_protocol: 0,
        sock_type: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        task_pid: 0,
        task_flags: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        linux_binprm_filename: 0,
        regs_nr: 0,
        regs_args: [0; 6],
        task_compat_word: 0,
        task_compat_mask: 0,
    },
    syscalls: SyscallNumbers {
        clone: u32::MAX,
        clone3: u32::MAX,
        fork: u32::MAX,
        vfork: u32::MAX,
        execve: u32::MAX,
        execveat: u32::MAX,
    },
    ring_count: 1,
    args_max: 1024,
    wakeup_bytes: 1 << 20,
    exit_has_group_dead: 0,
    _pad: 0,
};

/// Reads one field of `LOAD_CONFIG`. Volatile, so the compiler does not fold the zeros above:
/// the real values are written into the object by the loader (and the verifier, which sees a
/// frozen read-only map, knows them as constants).
macro_rules! load_config {
    ($($field:tt)+) => {{
        // Some call sites are already inside `unsafe`.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(&$crate::maps::LOAD_CONFIG.$($field)+) };
        value
    }};
}
pub(crate) use load_config;

/// A syscall's raw arguments, saved at sys_enter for its sys_exit (tracepoint hook set).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingSyscall {
    pub args: [u64; 6],
}

#[inline(always)]
pub fn bump(counter: KernelCounter) {
    if let Some(p) = KERNEL_COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *p += 1 };
    }
}

/// The current settings (index 0 always exists in an array map).
#[inline(always)]
pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}
