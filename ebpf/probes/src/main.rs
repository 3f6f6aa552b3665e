//! nri-sysflow's eBPF programs. Hooks are stable syscall tracepoints (sys_enter_* save the
//! arguments, sys_exit_* report with the return value) plus sched_process_exec/exit. Every
//! program first looks up its cgroup's capture mode and returns at once when it is off.
//!
//! Which tracepoints each program is attached to is decided by user space
//! (plugin/src/probe/attach.rs); a program here only knows its own syscall.
#![no_std]
#![no_main]
// atomic_xadd for the I/O counters (the BPF target has no AtomicU64).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod emit;
mod file;
mod io;
mod kernel;
mod maps;
mod net;
mod process;

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sysflow_common::capture;

/// Syscall tracepoint records: `__syscall_nr` at 8, then the six arguments (8 bytes each) at
/// 16 for sys_enter, the return value at 16 for sys_exit. This layout is stable kernel ABI.
const ENTER_ARGS_OFFSET: usize = 16;
const EXIT_RET_OFFSET: usize = 16;

#[inline(always)]
pub(crate) fn enter_args(ctx: &TracePointContext) -> Option<[u64; 6]> {
    unsafe { ctx.read_at::<[u64; 6]>(ENTER_ARGS_OFFSET) }.ok()
}

#[inline(always)]
pub(crate) fn exit_ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(EXIT_RET_OFFSET) }.unwrap_or(0)
}

/// Saves the arguments when the caller's capture mode has any of `bits`.
#[inline(always)]
fn stash_if(ctx: &TracePointContext, bits: u32) -> u32 {
    let caller = emit::caller();
    if caller.wants(bits)
        && let Some(args) = enter_args(ctx)
    {
        emit::stash_args(caller.pid_tgid, args);
    }
    0
}

/// Attached to the sys_enter of clone/fork and set*id syscalls.
#[tracepoint]
pub fn sys_enter_process(ctx: TracePointContext) -> u32 {
    stash_if(&ctx, capture::PROCESS)
}

/// Attached to the sys_enter of open and path syscalls.
#[tracepoint]
pub fn sys_enter_file(ctx: TracePointContext) -> u32 {
    stash_if(&ctx, capture::FILE)
}

/// Attached to the sys_enter of dup/fcntl: descriptor tracking matters to every capture kind.
#[tracepoint]
pub fn sys_enter_fd(ctx: TracePointContext) -> u32 {
    stash_if(
        &ctx,
        capture::FILE | capture::NETWORK | capture::IO_COUNTERS,
    )
}

/// Attached to the sys_enter of socket syscalls.
#[tracepoint]
pub fn sys_enter_network(ctx: TracePointContext) -> u32 {
    stash_if(&ctx, capture::NETWORK)
}

/// Attached to the sys_enter of read/write/send/recv syscalls.
#[tracepoint]
pub fn sys_enter_io(ctx: TracePointContext) -> u32 {
    stash_if(&ctx, capture::IO_COUNTERS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
