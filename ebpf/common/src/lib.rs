//! The records, map keys and settings that the eBPF programs (ebpf/probes) and user space
//! (plugin/src/probe) both see. Everything here is `#[repr(C)]` and plain data: the kernel side
//! writes these bytes into a BPF ring buffer or map, user space reads them back.
//!
//! Layout rule for records: a fixed `#[repr(C)]` struct that starts with [`RecordHeader`], followed
//! directly by its variable-length strings in the order the struct's `*_len` fields name them
//! (no NUL terminators, no padding between them). `RecordHeader::size` is the total length.
#![no_std]

/// Capture-mode bits, stored per cgroup id in the `CGROUP_MODES` map (and as the default in
/// `SETTINGS`). Programs look the mode up once per process (cached in task storage) and return
/// at once when their bit is clear.
pub mod capture {
    /// clone, exec, exit: from the sched tracepoints, which cost nothing per syscall.
    pub const PROCESS_LIFECYCLE: u32 = 1 << 0;
    /// open, close, dup and path operations (rename, unlink, mkdir, ...).
    pub const FILE: u32 = 1 << 1;
    /// socket, connect, accept, bind, listen.
    pub const NETWORK: u32 = 1 << 2;
    /// Per-(process, fd) read/write/send/recv counters.
    pub const IO_COUNTERS: u32 = 1 << 3;
    /// set*id, and failed exec and clone calls: these are only seen at the syscall itself.
    pub const PROCESS_SYSCALLS: u32 = 1 << 4;
    /// Everything about processes.
    pub const PROCESS: u32 = PROCESS_LIFECYCLE | PROCESS_SYSCALLS;
    pub const OFF: u32 = 0;
    pub const ALL: u32 = PROCESS | FILE | NETWORK | IO_COUNTERS;
    /// The kinds that need a syscall hook. When no cgroup wants any of them, the syscall hooks
    /// are detached and no thread on the node pays for them.
    pub const SYSCALL_KINDS: u32 = FILE | NETWORK | IO_COUNTERS | PROCESS_SYSCALLS;
    /// Descriptor bookkeeping (close, dup, close_range) matters to each of these.
    pub const FD_KINDS: u32 = FILE | NETWORK | IO_COUNTERS;
}

/// What a record is. The discriminant is `RecordHeader::kind`.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Clone = 1,
    Exec = 2,
    Exit = 3,
    SetId = 4,
    Open = 10,
    /// What one descriptor counted, and why it is reported now ([`FdReportRecord`]).
    FdReport = 11,
    PathOp = 12,
    Dup = 13,
    CloseRange = 14,
    Socket = 20,
    SockOp = 21,
}

impl RecordKind {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Clone,
            2 => Self::Exec,
            3 => Self::Exit,
            4 => Self::SetId,
            10 => Self::Open,
            11 => Self::FdReport,
            12 => Self::PathOp,
            13 => Self::Dup,
            14 => Self::CloseRange,
            20 => Self::Socket,
            21 => Self::SockOp,
            _ => return None,
        })
    }
}

/// `RecordHeader::flags` bits.
pub mod record_flags {
    /// The first string was cut at its capacity.
    pub const STR0_TRUNCATED: u16 = 1 << 0;
    /// The second string (exec args, second path) was cut at its capacity.
    pub const STR1_TRUNCATED: u16 = 1 << 1;
    /// A string could not be read at all (bad user pointer); its length is 0.
    pub const STR_FAULT: u16 = 1 << 2;
}

/// Every record starts with this.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordHeader {
    pub kind: u16,
    pub flags: u16,
    /// Total bytes of the record, header and strings included.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, so user space converts it to wall clock with one
    /// offset taken at start.
    pub ts_ns: u64,
    /// cgroup v2 id (the inode of the cgroup2 directory) of the calling task.
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    /// `start_boottime` of the thread-group leader (ns, CLOCK_BOOTTIME). With `tgid` this is the
    /// stable process identity (SysFlow OID = start time + host pid).
    pub proc_start_ns: u64,
    /// The syscall's return value where there is one (fd, bytes, -errno), else 0.
    pub ret: i64,
}

/// Longest path the kernel side copies (PATH_MAX).
pub const PATH_CAP: usize = 4096;
/// Upper bound of the configurable exec argument capture.
pub const ARGS_CAP: usize = 4096;
/// Size of the per-CPU scratch buffer where variable-length records are assembled. Must be a
/// power of two (the programs mask lengths with `SCRATCH_SIZE - 1`).
pub const SCRATCH_SIZE: usize = 16384;
/// Most ring buffers the programs can spread records over (`Settings::ring_count`).
pub const MAX_RINGS: u32 = 4;

/// Which clone-family syscall produced a [`CloneRecord`].
pub mod clone_syscall {
    pub const CLONE: u8 = 1;
    pub const CLONE3: u8 = 2;
    pub const FORK: u8 = 3;
    pub const VFORK: u8 = 4;
}

/// `CloneRecord::role`.
pub mod clone_role {
    /// Reported by the caller; `child_tid` is the new task.
    pub const PARENT: u8 = 0;
    /// Reported by the new task on its first return to user space; `parent_tgid` is its parent.
    pub const CHILD: u8 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRecord {
    pub header: RecordHeader,
    /// Linux CLONE_* flags as the caller passed them (parent side); 0 on the child side.
    pub clone_flags: u64,
    pub child_tid: u32,
    pub parent_tgid: u32,
    pub role: u8,
    pub syscall: u8,
    /// The new task shares the caller's thread group (CLONE_THREAD).
    pub is_thread: u8,
    pub _pad: [u8; 5],
}

/// Which exec syscall, for [`ExecRecord`].
pub mod exec_syscall {
    pub const EXECVE: u8 = 1;
    pub const EXECVEAT: u8 = 2;
}

/// A successful exec (`header.ret == 0`, strings taken from the new image) or a failed one
/// (`ret < 0`, strings taken from the caller's arguments).
/// Strings: filename (as passed to exec), then args (NUL-separated argv, `argc` of them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecRecord {
    pub header: RecordHeader,
    pub uid: u32,
    pub gid: u32,
    /// The pid the task had before exec (differs from tgid when a non-leader thread execs).
    pub old_tid: u32,
    pub filename_len: u16,
    pub args_len: u16,
    pub syscall: u8,
    /// 1 when `open_fds` was read (a successful exec whose file table could be read).
    pub open_fds_known: u8,
    pub _pad: [u8; 6],
    /// Which of descriptors 0..64 are open once the exec is done (bit n: descriptor n): the
    /// close-on-exec ones are closed by then, whether or not user space saw their flags.
    pub open_fds: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitRecord {
    pub header: RecordHeader,
    /// The raw wait status (`exit_code` of the task): code in bits 8..16, signal in bits 0..7.
    pub wait_status: i32,
    /// The whole thread group is gone (last thread exited).
    pub group_dead: u8,
    pub _pad: [u8; 3],
}

/// Which set*id syscall, for [`SetIdRecord`].
pub mod setid_syscall {
    pub const SETUID: u8 = 1;
    pub const SETREUID: u8 = 2;
    pub const SETRESUID: u8 = 3;
    pub const SETGID: u8 = 4;
    pub const SETREGID: u8 = 5;
    pub const SETRESGID: u8 = 6;
}

/// An id argument that was not passed (or passed as -1, "unchanged").
pub const ID_UNCHANGED: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SetIdRecord {
    pub header: RecordHeader,
    /// (real, effective, saved) as passed; setuid/setgid fill only `ids[0]`.
    pub ids: [u32; 3],
    pub syscall: u8,
    pub _pad: [u8; 3],
}

/// Identity of the object behind a file descriptor, read from the kernel's file table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileIdentity {
    pub ino: u64,
    pub dev: u32,
    /// `i_mode` of the inode (S_IFREG, S_IFDIR, S_IFSOCK, S_IFIFO, ...); 0 when unknown.
    pub mode: u16,
    pub _pad: u16,
}

/// Which open syscall, for [`OpenRecord`].
pub mod open_syscall {
    pub const OPEN: u8 = 1;
    pub const OPENAT: u8 = 2;
    pub const OPENAT2: u8 = 3;
    pub const CREAT: u8 = 4;
}

/// `AT_FDCWD`: a path relative to the current working directory.
pub const AT_FDCWD: i32 = -100;

/// Strings: path (as passed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenRecord {
    pub header: RecordHeader,
    /// What the returned fd refers to (zeroed when the open failed).
    pub file: FileIdentity,
    /// Directory fd a relative path is resolved against (`AT_FDCWD` for open/creat).
    pub dirfd: i32,
    /// Linux O_* flags as passed.
    pub flags: u32,
    pub mode: u32,
    pub path_len: u16,
    pub syscall: u8,
    pub _pad: u8,
}

/// IP endpoint: IPv4 in the first 4 bytes (network order) or IPv6 in all 16; port in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}

/// What the kernel knows about a socket: family, type, protocol and both ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    /// AF_INET, AF_INET6, AF_UNIX, ...; 0 when not a socket or unknown.
    pub family: u16,
    /// SOCK_STREAM, SOCK_DGRAM, ...
    pub sock_type: u16,
    /// IPPROTO_TCP, IPPROTO_UDP, ...
    pub protocol: u16,
    pub _pad: u16,
    pub local: Endpoint,
    pub remote: Endpoint,
}

/// Descriptors 0 to `FD_SLOTS - 1` count in the process's own slots (task storage, no map
/// update per call); higher ones in the `FD_COUNTERS` hash map.
pub const FD_SLOTS: u32 = 64;

/// `FdCounters::ops_seen` bits: which kinds of I/O syscalls touched the descriptor.
pub mod io_ops {
    pub const READ: u16 = 1 << 0;
    pub const WRITE: u16 = 1 << 1;
    pub const RECV: u16 = 1 << 2;
    pub const SEND: u16 = 1 << 3;
    pub const SENDFILE: u16 = 1 << 4;
}

/// Key of the `FD_COUNTERS` map (descriptors >= `FD_SLOTS`, and datagram sockets with per-call
/// peers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: i32,
}

/// What one process did through one descriptor since its previous report, with what the
/// descriptor refers to. The value of the `FD_COUNTERS` map, and the payload of an
/// [`FdReportRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdCounters {
    pub read_bytes: u64,
    pub read_ops: u64,
    pub write_bytes: u64,
    pub write_ops: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub cgroup_id: u64,
    /// The owning process's start time: lets user space tell a stale entry of a dead process from
    /// one of a new process that reused the pid.
    pub proc_start_ns: u64,
    pub file: FileIdentity,
    /// Socket details when the fd is a socket. For datagram sockets `remote` is the peer of the
    /// counted datagrams (sendto/recvfrom address), a new peer starts a new counter.
    pub sock: SockInfo,
    pub last_tid: u32,
    pub ops_seen: u16,
    pub _pad: u16,
}

/// Why an [`FdReportRecord`] was written. The first three are closes of one descriptor; the
/// others report a descriptor's counters because of something else that happened to it.
pub mod report_reason {
    /// close(2), reported on entry: after the call another thread may get the same number.
    pub const CLOSE: u8 = 1;
    /// dup2/dup3 onto an open descriptor closed it implicitly.
    pub const REPLACED: u8 = 2;
    /// A datagram socket started talking to another peer: the counters so far belong to the old
    /// peer; the descriptor stays open.
    pub const PEER_CHANGED: u8 = 3;
    /// The process exited (the kernel closes every descriptor); written before the exit record.
    pub const EXIT: u8 = 4;
    /// The process exec'd: close-on-exec descriptors are gone, the others stay open. Written
    /// before the exec record.
    pub const EXEC: u8 = 5;
    /// close_range(2) closed it; written before the close_range record.
    pub const CLOSE_RANGE: u8 = 6;
    /// Periodic flush asked for by user space: what came since the last report; still open.
    pub const FLUSH: u8 = 7;
    /// Flush at shutdown: what came since the last report; the agent ends the flow itself.
    pub const FINAL: u8 = 8;
}

/// One descriptor's counters leaving the kernel: the counts are what came since the previous
/// report of the same descriptor (the kernel keeps no totals user space has to subtract). A
/// report without counters (`has_counters == 0`: a close of a descriptor nothing was counted on)
/// ends where `counters` would start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FdReportRecord {
    pub header: RecordHeader,
    pub fd: i32,
    /// `report_reason`.
    pub reason: u8,
    /// `counters` holds what the descriptor counted (else nothing was read or written since the
    /// last report, or counters are off for this cgroup; a CLOSE is still reported).
    pub has_counters: u8,
    pub _pad: [u8; 2],
    pub counters: FdCounters,
}

/// Which path operation, for [`PathOpRecord`].
pub mod path_op {
    pub const UNLINK: u8 = 1;
    pub const UNLINKAT: u8 = 2;
    pub const RMDIR: u8 = 3;
    pub const RENAME: u8 = 4;
    pub const RENAMEAT: u8 = 5;
    pub const RENAMEAT2: u8 = 6;
    pub const MKDIR: u8 = 7;
    pub const MKDIRAT: u8 = 8;
    pub const LINK: u8 = 9;
    pub const LINKAT: u8 = 10;
    pub const SYMLINK: u8 = 11;
    pub const SYMLINKAT: u8 = 12;
    pub const CHMOD: u8 = 13;
    pub const FCHMOD: u8 = 14;
    pub const FCHMODAT: u8 = 15;
    pub const CHOWN: u8 = 16;
    pub const FCHOWN: u8 = 17;
    pub const LCHOWN: u8 = 18;
    pub const FCHOWNAT: u8 = 19;
    pub const CHDIR: u8 = 20;
    pub const FCHDIR: u8 = 21;
}

/// A path operation. Strings: path, then path2 (the new name of rename/link, the link path of
/// symlink, whose `path` is the link target).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PathOpRecord {
    pub header: RecordHeader,
    /// Directory fd for `path` (`AT_FDCWD` when the syscall has none).
    pub dirfd: i32,
    /// Directory fd for `path2`.
    pub dirfd2: i32,
    /// The fd operated on by fchmod/fchown/fchdir, else -1.
    pub fd: i32,
    /// mode (mkdir, chmod) or flags (unlinkat, renameat2, linkat, fchownat).
    pub mode_or_flags: u32,
    pub uid: u32,
    pub gid: u32,
    pub path_len: u16,
    pub path2_len: u16,
    pub op: u8,
    pub _pad: [u8; 3],
}

/// Which dup-family syscall, for [`DupRecord`].
pub mod dup_syscall {
    pub const DUP: u8 = 1;
    pub const DUP2: u8 = 2;
    pub const DUP3: u8 = 3;
    pub const FCNTL_DUPFD: u8 = 4;
}

/// A descriptor duplicated: `header.ret` is the new fd (or -errno).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DupRecord {
    pub header: RecordHeader,
    pub old_fd: i32,
    /// O_CLOEXEC for dup3 / F_DUPFD_CLOEXEC, else 0.
    pub flags: u32,
    pub syscall: u8,
    pub _pad: [u8; 7],
}

/// close_range(2): descriptors `first..=last` were closed (unless `flags` has
/// CLOSE_RANGE_CLOEXEC, which only marks them close-on-exec). Their counters stay in
/// `FD_COUNTERS` for user space to take, since a range can be every possible fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseRangeRecord {
    pub header: RecordHeader,
    pub first: u32,
    pub last: u32,
    pub flags: u32,
    pub _pad: u32,
}

/// socket(2): `header.ret` is the fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketRecord {
    pub header: RecordHeader,
    pub domain: u32,
    /// SOCK_* type with SOCK_NONBLOCK/SOCK_CLOEXEC bits as passed.
    pub sock_type: u32,
    pub protocol: u32,
    pub _pad: u32,
}

/// Which socket operation, for [`SockOpRecord`].
pub mod sock_op {
    pub const CONNECT: u8 = 1;
    pub const ACCEPT: u8 = 2;
    pub const ACCEPT4: u8 = 3;
    pub const BIND: u8 = 4;
    pub const LISTEN: u8 = 5;
}

/// connect/accept/bind/listen. `fd` is the socket the call was made on; for accept `header.ret`
/// is the new connection's fd and `sock` describes the new connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockOpRecord {
    pub header: RecordHeader,
    pub fd: i32,
    pub op: u8,
    pub _pad: [u8; 3],
    pub sock: SockInfo,
}

/// Indexes of the per-CPU `KERNEL_COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCounter {
    /// Records written to a ring buffer.
    RecordsEmitted = 0,
    /// Records lost because the ring buffer had no room.
    RingFull = 1,
    /// Strings cut at their capacity.
    StringsTruncated = 2,
    /// I/O counters not kept because `FD_COUNTERS` was full.
    FdTableFull = 3,
    /// Syscalls not followed because `PENDING_SYSCALLS` was full (tracepoint hook set).
    PendingTableFull = 4,
    /// Reads of kernel or user memory that failed (record sent with what could be read).
    ReadFaults = 5,
    /// Syscalls not followed because the kernel could not allocate the process's state.
    StateUnavailable = 6,
    /// `FD_COUNTERS` entries of a process that ended without reporting them, found when its
    /// pid and descriptor number came back: their counts are lost.
    OrphanedCounters = 7,
}

pub const KERNEL_COUNTER_COUNT: u32 = 8;

/// Runtime settings, index 0 of the `SETTINGS` array; user space may change them at any time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Capture mode for cgroups not in `CGROUP_MODES`.
    pub default_mode: u32,
    /// Bumped by user space after every change of a capture mode: a process whose cached mode
    /// carries another generation looks its cgroup up again.
    pub generation: u32,
    /// `report_reason` the flush iterator writes (FLUSH or FINAL).
    pub flush_reason: u32,
    pub _pad: u32,
}

/// `SyscallRoute::class`: how the syscall dispatcher handles a syscall it follows.
pub mod syscall_class {
    /// Tail call into the syscall's own handler program.
    pub const HANDLER: u8 = 0;
    /// Bytes read from `arg0` (read, pread64, readv, preadv, preadv2).
    pub const READ: u8 = 1;
    /// Bytes written to `arg0` (write, pwrite64, writev, pwritev, pwritev2).
    pub const WRITE: u8 = 2;
    /// send/sendto: bytes sent on `arg0`; with a destination address (`arg4`), the handler.
    pub const SENDTO: u8 = 3;
    /// recv/recvfrom: bytes received on `arg0`; with a source address (`arg4`), the handler.
    pub const RECVFROM: u8 = 4;
}

/// Entry `nr` of the `SYSCALL_ROUTES` array: whether the syscall dispatcher follows syscall
/// `nr`, for which capture kinds, and how. Filled by user space from its per-architecture
/// table; all zero means not followed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallRoute {
    /// `capture` bits a process's mode needs for this syscall to be handled (0: nobody wants
    /// it now, return at once).
    pub kinds: u8,
    /// `syscall_class`.
    pub class: u8,
}

/// Size of the syscall tables (`SYSCALL_ROUTES`, the handler program array). Numbers at or
/// above it (x32, or none) are never followed.
pub const SYSCALL_TABLE_SIZE: u32 = 512;

/// Offsets of the kernel struct fields the programs read, taken from the running kernel's BTF
/// (and the tracefs format files) at load time and handed over as a global variable, so one
/// build of the programs runs on kernels with different struct layouts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_group_leader: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_start_boottime: u32,
    pub task_exit_code: u32,
    pub task_files: u32,
    pub task_mm: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub fdtable_open_fds: u32,
    pub file_f_inode: u32,
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub super_block_s_dev: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    pub sock_rcv_saddr: u32,
    pub sock_daddr: u32,
    pub sock_num: u32,
    pub sock_dport: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    pub sock_protocol: u32,
    pub sock_type: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub task_pid: u32,
    pub task_flags: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub linux_binprm_filename: u32,
    /// Where the syscall number and the six arguments are in `struct pt_regs`, on this
    /// architecture (the first argument is `orig_x0` on arm64: `x0` holds the return value at
    /// exit).
    pub regs_nr: u32,
    pub regs_args: [u32; 6],
    /// The word of `task_struct` that says a task runs a compat (32-bit) syscall, and the mask
    /// of that bit (0: no compat check). Their syscall numbers mean other calls.
    pub task_compat_word: u32,
    pub task_compat_mask: u32,
}

/// Syscall numbers the sched programs need (they read which syscall the task is in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallNumbers {
    pub clone: u32,
    pub clone3: u32,
    /// u32::MAX where the architecture has none (arm64 has no fork and vfork).
    pub fork: u32,
    pub vfork: u32,
    pub execve: u32,
    pub execveat: u32,
}

/// Load-time constants (a read-only global of the programs). The verifier sees them as
/// constants, so offsets into BTF-typed structs are checked against the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadConfig {
    pub offsets: KernelOffsets,
    pub syscalls: SyscallNumbers,
    /// How many of the `MAX_RINGS` ring buffers are used (records go to ring `cpu % ring_count`).
    pub ring_count: u32,
    /// Bytes of exec arguments captured (<= ARGS_CAP).
    pub args_max: u32,
    /// Records are written without waking the reader up, unless the ring holds more than this
    /// many bytes: the reader polls on a short timer instead of waking up per record.
    pub wakeup_bytes: u64,
    /// The kernel's sched_process_exit tracepoint passes `group_dead` (6.x); else the programs
    /// compare tid and tgid.
    pub exit_has_group_dead: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: all of these are #[repr(C)] plain-old-data with explicit padding fields.
    unsafe impl aya::Pod for FdKey {}
    unsafe impl aya::Pod for FdCounters {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for SyscallRoute {}
    unsafe impl aya::Pod for LoadConfig {}
}
