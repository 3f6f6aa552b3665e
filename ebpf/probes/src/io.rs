//! read/write/send/recv family: each call adds to its descriptor's counters (counters.rs);
//! nothing is sent to user space per call. The dispatcher counts plain read/write/send/recv
//! itself; these handlers cover the tracepoint set and the calls that need more than the
//! return value: vectors of messages, sendfile's two descriptors, and datagram peers.

use aya_ebpf::helpers::bpf_probe_read_user;
use sysflow_common::{Endpoint, capture, io_ops};

use crate::{
    counters::{Direction, Io, count, count_with_peer},
    kernel::user_sockaddr,
    process_state::Call,
    syscalls::syscall_exit,
};

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

macro_rules! io_exit {
    ($tracepoint:ident, $dispatched:ident, $dir:expr, $op:expr, $peer:expr, $mmsg:expr) => {
        syscall_exit!($tracepoint, $dispatched, |call, args, ret| {
            io_exit(call, args, ret, $dir, $op, $peer, $mmsg)
        });
    };
}

io_exit!(
    sys_exit_read,
    exit_read,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_write,
    exit_write,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pread64,
    exit_pread64,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pwrite64,
    exit_pwrite64,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_readv,
    exit_readv,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_writev,
    exit_writev,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_preadv,
    exit_preadv,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pwritev,
    exit_pwritev,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_preadv2,
    exit_preadv2,
    Direction::Read,
    io_ops::READ,
    Peer::None,
    false
);
io_exit!(
    sys_exit_pwritev2,
    exit_pwritev2,
    Direction::Write,
    io_ops::WRITE,
    Peer::None,
    false
);
io_exit!(
    sys_exit_sendto,
    exit_sendto,
    Direction::Write,
    io_ops::SEND,
    Peer::SockaddrArg(4),
    false
);
io_exit!(
    sys_exit_recvfrom,
    exit_recvfrom,
    Direction::Read,
    io_ops::RECV,
    Peer::SockaddrArg(4),
    false
);
io_exit!(
    sys_exit_sendmsg,
    exit_sendmsg,
    Direction::Write,
    io_ops::SEND,
    Peer::MsghdrArg(1),
    false
);
io_exit!(
    sys_exit_recvmsg,
    exit_recvmsg,
    Direction::Read,
    io_ops::RECV,
    Peer::MsghdrArg(1),
    false
);
io_exit!(
    sys_exit_sendmmsg,
    exit_sendmmsg,
    Direction::Write,
    io_ops::SEND,
    Peer::MmsghdrArg(1),
    true
);
io_exit!(
    sys_exit_recvmmsg,
    exit_recvmmsg,
    Direction::Read,
    io_ops::RECV,
    Peer::MmsghdrArg(1),
    true
);

#[inline(always)]
fn io_exit(
    call: &Call,
    args: &[u64; 6],
    ret: i64,
    dir: Direction,
    op: u16,
    peer: Peer,
    mmsg: bool,
) {
    // Failed calls (EAGAIN on a non-blocking socket, EBADF) move no data and are not counted.
    if ret < 0 || !call.wants(capture::IO_COUNTERS) {
        return;
    }
    let (ops, bytes) = if mmsg {
        (ret as u64, mmsg_bytes(args[1], ret as u64))
    } else {
        (1, ret as u64)
    };
    let io = Io {
        dir,
        op,
        ops,
        bytes,
    };
    let peer = match peer {
        Peer::None => None,
        Peer::SockaddrArg(i) => user_sockaddr(args[i]),
        Peer::MsghdrArg(i) => msg_name(args[i]),
        Peer::MmsghdrArg(i) => msg_name(args[i]),
    };
    count_with_peer(call, args[0] as i32, &io, peer.as_ref());
}

syscall_exit!(sys_exit_sendfile64, exit_sendfile64, |call, args, ret| {
    sendfile_exit(call, args, ret)
});

/// sendfile moves bytes from `in_fd` (a read) to `out_fd` (a write).
#[inline(always)]
fn sendfile_exit(call: &Call, args: &[u64; 6], ret: i64) {
    if ret < 0 || !call.wants(capture::IO_COUNTERS) {
        return;
    }
    let moved = |dir| Io {
        dir,
        op: io_ops::SENDFILE,
        ops: 1,
        bytes: ret as u64,
    };
    count(call, args[0] as i32, &moved(Direction::Write));
    count(call, args[1] as i32, &moved(Direction::Read));
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
