//! socket, connect, accept, bind, listen. Both endpoints come from the kernel's socket once the
//! call has returned, so an ephemeral local port is already assigned.

use core::mem::size_of;

use sysflow_common::{RecordKind, SockOpRecord, SocketRecord, capture, sock_op};

use crate::{
    counters::forget,
    emit::{header, scratch, submit},
    kernel::{file_of_fd, sock_info, user_sockaddr},
    process_state::Call,
    syscalls::syscall_exit,
};

syscall_exit!(sys_exit_socket, exit_socket, |call, args, ret| {
    socket_exit(call, args, ret)
});

#[inline(always)]
fn socket_exit(call: &Call, args: &[u64; 6], ret: i64) {
    if !call.wants(capture::NETWORK) {
        return;
    }
    if ret >= 0 {
        forget(call, ret as i32);
    }
    let Some(buf) = scratch() else { return };
    unsafe {
        *(buf as *mut SocketRecord) = SocketRecord {
            header: header(RecordKind::Socket, call, ret),
            domain: args[0] as u32,
            sock_type: args[1] as u32,
            protocol: args[2] as u32,
            _pad: 0,
        }
    };
    submit(buf, size_of::<SocketRecord>());
}

syscall_exit!(sys_exit_connect, exit_connect, |call, args, ret| {
    sock_exit(call, args, ret, sock_op::CONNECT)
});
syscall_exit!(sys_exit_accept, exit_accept, |call, args, ret| {
    sock_exit(call, args, ret, sock_op::ACCEPT)
});
syscall_exit!(sys_exit_accept4, exit_accept4, |call, args, ret| {
    sock_exit(call, args, ret, sock_op::ACCEPT4)
});
syscall_exit!(sys_exit_bind, exit_bind, |call, args, ret| {
    sock_exit(call, args, ret, sock_op::BIND)
});
syscall_exit!(sys_exit_listen, exit_listen, |call, args, ret| {
    sock_exit(call, args, ret, sock_op::LISTEN)
});

#[inline(always)]
fn sock_exit(call: &Call, args: &[u64; 6], ret: i64, op: u8) {
    if !call.wants(capture::NETWORK) {
        return;
    }
    let fd = args[0] as i32;
    let accepted = matches!(op, sock_op::ACCEPT | sock_op::ACCEPT4);
    if accepted && ret >= 0 {
        forget(call, ret as i32);
    }
    // The new connection for accept, the socket itself otherwise.
    let described = if accepted { ret as i32 } else { fd };
    let mut sock = file_of_fd(call.task, described)
        .map(sock_info)
        .unwrap_or_default();
    // A failed connect has no remote in the kernel any more: take the address that was asked for.
    if op == sock_op::CONNECT
        && sock.remote.port == 0
        && let Some((family, remote)) = user_sockaddr(args[1])
    {
        if sock.family == 0 {
            sock.family = family;
        }
        sock.remote = remote;
    }
    let Some(buf) = scratch() else { return };
    unsafe {
        *(buf as *mut SockOpRecord) = SockOpRecord {
            header: header(RecordKind::SockOp, call, ret),
            fd,
            op,
            _pad: [0; 3],
            sock,
        }
    };
    submit(buf, size_of::<SockOpRecord>());
}
