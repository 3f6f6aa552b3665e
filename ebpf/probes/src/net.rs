//! socket, connect, accept, bind, listen. Both endpoints come from the kernel's socket once the
//! call has returned, so an ephemeral local port is already assigned.

use core::mem::size_of;

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sysflow_common::{RecordKind, SockOpRecord, SocketRecord, capture, sock_op};

use crate::{
    emit::{caller, header, scratch, submit, take_args},
    exit_ret,
    io::forget_counters,
    kernel::{current_task, file_of_fd, sock_info, user_sockaddr},
};

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    if !caller.wants(capture::NETWORK) {
        return 0;
    }
    let ret = exit_ret(&ctx);
    if ret >= 0 {
        forget_counters(caller.tgid(), ret as i32);
    }
    let Some(buf) = scratch() else { return 0 };
    unsafe {
        *(buf as *mut SocketRecord) = SocketRecord {
            header: header(RecordKind::Socket, &caller, ret),
            domain: args[0] as u32,
            sock_type: args[1] as u32,
            protocol: args[2] as u32,
            _pad: 0,
        }
    };
    submit(buf, size_of::<SocketRecord>());
    0
}

macro_rules! sock_exit {
    ($name:ident, $op:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            sock_exit(&ctx, $op)
        }
    };
}

sock_exit!(sys_exit_connect, sock_op::CONNECT);
sock_exit!(sys_exit_accept, sock_op::ACCEPT);
sock_exit!(sys_exit_accept4, sock_op::ACCEPT4);
sock_exit!(sys_exit_bind, sock_op::BIND);
sock_exit!(sys_exit_listen, sock_op::LISTEN);

#[inline(always)]
fn sock_exit(ctx: &TracePointContext, op: u8) -> u32 {
    let caller = caller();
    let Some(args) = take_args(&caller) else {
        return 0;
    };
    if !caller.wants(capture::NETWORK) {
        return 0;
    }
    let ret = exit_ret(ctx);
    let fd = args[0] as i32;
    let accepted = matches!(op, sock_op::ACCEPT | sock_op::ACCEPT4);
    if accepted && ret >= 0 {
        forget_counters(caller.tgid(), ret as i32);
    }
    // The new connection for accept, the socket itself otherwise.
    let described = if accepted { ret as i32 } else { fd };
    let mut sock = file_of_fd(current_task(), described)
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
    let Some(buf) = scratch() else { return 0 };
    unsafe {
        *(buf as *mut SockOpRecord) = SockOpRecord {
            header: header(RecordKind::SockOp, &caller, ret),
            fd,
            op,
            _pad: [0; 3],
            sock,
        }
    };
    submit(buf, size_of::<SockOpRecord>());
    0
}
