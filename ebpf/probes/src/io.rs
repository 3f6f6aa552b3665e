//! read/write/send/recv family: each call adds to the per-(tgid, fd) counters in `FD_COUNTERS`.
//! Nothing is sent to user space per call; counters leave the kernel at close (file.rs), when a
//! datagram socket changes peer (here), or when user space reads the map (periodic flush, exit).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use sysflow_common::{
    Endpoint, FdCounters, FdKey, KernelCounter, SockInfo, capture, close_reason, io_ops,
};

use crate::{
    emit::{Caller, caller, now_ns, take_args},
    exit_ret,
    file::emit_close,
    kernel::{
        current_task, file_identity, file_of_fd, is_socket, process_start_ns, sock_info,
        user_sockaddr,
    },
    maps::{FD_COUNTERS, bump},
};

const BPF_NOEXIST: u64 = 1;
const SOCK_DGRAM: u16 = 2;
const EEXIST: i32 = 17;
/// Entries of an mmsghdr vector whose msg_len is summed.
const MMSG_MAX: usize = 8;
const MMSGHDR_SIZE: u64 = 64;
const MMSG_LEN_OFFSET: u64 = 56;

/// Where a call's peer address is, for datagram sockets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    None,
    /// A `struct sockaddr *` argument (sendto dest_addr, recvfrom src_addr).
    SockaddrArg(usize),
    /// `msg_name` of a `struct msghdr *` argument (sendmsg, recvmsg).
    MsghdrArg(usize),
    /// `msg_name` of the first `struct mmsghdr` of the vector argument.
    MmsghdrArg(usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

macro_rules! io_exit {
    ($name:ident, $dir:expr, $op:expr, $peer:expr, $mmsg:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            io_exit(&ctx, $dir, $op, $peer, $mmsg)
        }
    };
}

io_exit!(
    sys_exit_read,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_write,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pread64,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pwrite64,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_readv,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_writev,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_preadv,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pwritev,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_preadv2,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pwritev2,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_sendto,
    Direction::Write,
    io_ops::SEND,
    Peer::SockaddrArg(4),
    false
);
io_exit!(
    sys_exit_recvfrom,
    Direction::Read,
    io_ops::RECV,
    Peer::SockaddrArg(4),
    false
);
io_exit!(
    sys_exit_sendmsg,
    Direction::Write,
    io_ops::SEND,
    Peer::MsghdrArg(1),
    false
);
io_exit!(
    sys_exit_recvmsg,
    Direction::Read,
    io_ops::RECV,
    Peer::MsghdrArg(1),
    false
);
io_exit!(
    sys_exit_sendmmsg,
    Direction::Write,
    io_ops::SEND,
    Peer::MmsghdrArg(1),
    true
);
io_exit!(
    sys_exit_recvmmsg,
    Direction::Read,
    io_ops::RECV,
    Peer::MmsghdrArg(1),
    true
);

#[inline(always)]
fn io_exit(ctx: &TracePointContext, dir: Direction, op: u16, peer: Peer, mmsg: bool) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    let ret = exit_ret(ctx);
    // Failed calls (EAGAIN on a non-blocking socket, EBADF) move no data and are not counted.
    if ret < 0 || !caller.wants(capture::IO_COUNTERS) {
        return 0;
    }
    let (ops, bytes) = if mmsg {
        (ret as u64, mmsg_bytes(args[1], ret as u64))
    } else {
        (1, ret as u64)
    };
    let peer = match peer {
        Peer::None => None,
        Peer::SockaddrArg(i) => user_sockaddr(args[i]),
        Peer::MsghdrArg(i) => msg_name(args[i]),
        Peer::MmsghdrArg(i) => msg_name(args[i]),
    };
    count(&caller, args[0] as i32, dir, op, ops, bytes, peer);
    0
}

/// sendfile moves bytes from `in_fd` (a read) to `out_fd` (a write).
#[tracepoint]
pub fn sys_exit_sendfile64(ctx: TracePointContext) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    let ret = exit_ret(&ctx);
    if ret < 0 || !caller.wants(capture::IO_COUNTERS) {
        return 0;
    }
    let bytes = ret as u64;
    count(
        &caller,
        args[0] as i32,
        Direction::Write,
        io_ops::SENDFILE,
        1,
        bytes,
        None,
    );
    count(
        &caller,
        args[1] as i32,
        Direction::Read,
        io_ops::SENDFILE,
        1,
        bytes,
        None,
    );
    0
}

/// The peer address a `struct msghdr` names, if any (`msg_name` is its first field).
#[inline(always)]
fn msg_name(msghdr: u64) -> Option<(u16, Endpoint)> {
    if msghdr == 0 {
        return None;
    }
    let name: u64 = unsafe { bpf_probe_read_user(msghdr as *const u64) }.ok()?;
    user_sockaddr(name)
}

#[inline(always)]
fn mmsg_bytes(vec: u64, count: u64) -> u64 {
    let mut total = 0u64;
    for i in 0..MMSG_MAX {
        if i as u64 >= count {
            break;
        }
        let at = vec + i as u64 * MMSGHDR_SIZE + MMSG_LEN_OFFSET;
        total += unsafe { bpf_probe_read_user(at as *const u32) }.unwrap_or(0) as u64;
    }
    total
}

/// Adds one call's worth to the (tgid, fd) counters, creating the entry on first use.
#[inline(always)]
fn count(
    caller: &Caller,
    fd: i32,
    dir: Direction,
    op: u16,
    ops: u64,
    bytes: u64,
    peer: Option<(u16, Endpoint)>,
) {
    let key = FdKey {
        tgid: caller.tgid(),
        fd,
    };
    let now = now_ns();
    if let Some(entry) = FD_COUNTERS.get_ptr_mut(&key) {
        if let Some((_, endpoint)) = peer
            && unsafe { (*entry).sock.sock_type } == SOCK_DGRAM
            && unsafe { (*entry).sock.remote } != endpoint
        {
            // A datagram socket talking to someone new: what was counted so far belongs to the
            // old peer. Report it and start over with this call.
            emit_close(caller, fd, close_reason::PEER_CHANGED, 0);
        } else {
            add(entry, dir, op, ops, bytes, now, caller.tid());
            return;
        }
    }
    let Some(fresh) = new_entry(caller, fd, now, peer) else {
        return;
    };
    match FD_COUNTERS.insert(&key, &fresh, BPF_NOEXIST) {
        Ok(()) => {}
        // Another thread created it first: add to theirs.
        Err(e) if e == -EEXIST => {}
        Err(_) => {
            bump(KernelCounter::FdTableFull);
            return;
        }
    }
    if let Some(entry) = FD_COUNTERS.get_ptr_mut(&key) {
        add(entry, dir, op, ops, bytes, now, caller.tid());
    }
}

#[inline(always)]
fn add(entry: *mut FdCounters, dir: Direction, op: u16, ops: u64, bytes: u64, now: u64, tid: u32) {
    // Threads of one process may count on the same descriptor at once.
    unsafe {
        let (ops_field, bytes_field) = match dir {
            Direction::Read => (&raw mut (*entry).read_ops, &raw mut (*entry).read_bytes),
            Direction::Write => (&raw mut (*entry).write_ops, &raw mut (*entry).write_bytes),
        };
        // The BPF target has no `AtomicU64`; the intrinsic lowers to BPF_ATOMIC add.
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(ops_field, ops);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes_field, bytes);
        (*entry).last_ns = now;
        (*entry).last_tid = tid;
        (*entry).ops_seen |= op;
    }
}

/// A zeroed entry describing what the descriptor refers to. None when the capture mode does not
/// cover that kind of descriptor (a socket without network capture, a file without file capture).
#[inline(always)]
fn new_entry(
    caller: &Caller,
    fd: i32,
    now: u64,
    peer: Option<(u16, Endpoint)>,
) -> Option<FdCounters> {
    let task = current_task();
    let mut entry = FdCounters {
        first_ns: now,
        last_ns: now,
        cgroup_id: caller.cgroup_id,
        proc_start_ns: process_start_ns(task),
        last_tid: caller.tid(),
        ..FdCounters::default()
    };
    if let Some(file) = file_of_fd(task, fd) {
        entry.file = file_identity(file);
        if is_socket(&entry.file) {
            entry.sock = sock_info(file);
        }
    }
    let socket = is_socket(&entry.file);
    if (socket && !caller.wants(capture::NETWORK)) || (!socket && !caller.wants(capture::FILE)) {
        return None;
    }
    // Only datagrams have per-call peers; a stream socket's recvfrom leaves the address buffer
    // as the caller had it.
    if let Some((family, endpoint)) = peer
        && (entry.sock.sock_type == SOCK_DGRAM || entry.sock.family == 0)
    {
        if entry.sock.family == 0 {
            entry.sock = SockInfo {
                family,
                ..SockInfo::default()
            };
        }
        entry.sock.remote = endpoint;
    }
    Some(entry)
}

/// Drops the counters of a descriptor number that was just (re)assigned.
#[inline(always)]
pub fn forget_counters(tgid: u32, fd: i32) {
    let _ = FD_COUNTERS.remove(&FdKey { tgid, fd });
}
