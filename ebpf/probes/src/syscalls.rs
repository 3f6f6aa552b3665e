//! The two hook sets a syscall can reach its handler through, sharing the handlers:
//!
//! * **dispatcher** (default): one `tp_btf/sys_exit` program for every syscall. Its first test
//!   is the `SYSCALL_ROUTES` entry of the syscall number (nobody wants it: return); then the
//!   process's cached mode; then read/write-like calls are counted right there, and every other
//!   followed syscall is tail-called into its own handler program, which reads the arguments
//!   from the saved registers. No sys_enter stash.
//! * **tracepoint** (fallback, `kernel.hooks: tracepoint`): a classic `syscalls/sys_enter_X`
//!   program saves the six arguments per thread, and a `syscalls/sys_exit_X` program per
//!   syscall runs the same handler with them.
//!
//! Both sets report close(2) from the classic `sys_enter_close` tracepoint: at exit the number
//! may already belong to another thread's new descriptor, so the counters must leave on entry.
//! For the same reason both report every descriptor's counters from `sys_enter_execve` and
//! `sys_enter_execveat`: the exec closes the close-on-exec ones without a close(2), and after it
//! nothing says what they referred to.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sysflow_common::{
    KernelCounter, SYSCALL_TABLE_SIZE, capture, io_ops, report_reason, syscall_class,
};

use crate::{
    counters::{Direction, Io, count, report, report_range},
    kernel::{current_task, in_compat_syscall, regs_arg, regs_args, regs_nr},
    maps::{PENDING_SYSCALLS, PendingSyscall, SYSCALL_HANDLERS, SYSCALL_ROUTES, bump},
    process_state::Call,
};

/// Syscall tracepoint records: `__syscall_nr` at 8, then the six arguments (8 bytes each) at
/// 16 for sys_enter, the return value at 16 for sys_exit. This layout is stable kernel ABI.
const ENTER_ARGS_OFFSET: usize = 16;
const EXIT_RET_OFFSET: usize = 16;

#[inline(always)]
pub fn enter_args(ctx: &TracePointContext) -> Option<[u64; 6]> {
    unsafe { ctx.read_at::<[u64; 6]>(ENTER_ARGS_OFFSET) }.ok()
}

#[inline(always)]
fn exit_ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(EXIT_RET_OFFSET) }.unwrap_or(0)
}

/// Tracepoint set: runs a handler with the arguments its sys_enter saved.
#[inline(always)]
pub fn from_tracepoint(
    ctx: &TracePointContext,
    handler: impl FnOnce(&Call, &[u64; 6], i64),
) -> u32 {
    let Some(call) = Call::current() else {
        return 0;
    };
    let Some(args) = take_args(&call) else {
        return 0;
    };
    handler(&call, &args, exit_ret(ctx));
    0
}

/// Dispatcher set: runs a handler (tail-called by the dispatcher) with the arguments from the
/// registers the syscall saved.
#[inline(always)]
pub fn from_dispatcher(
    ctx: &BtfTracePointContext,
    handler: impl FnOnce(&Call, &[u64; 6], i64),
) -> u32 {
    let Some(call) = Call::current() else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    handler(&call, &regs_args(regs), ret);
    0
}

/// Defines a syscall's exit handler in both hook sets: `$tracepoint` (classic, on
/// `syscalls/$tracepoint`) and `$dispatched` (tp_btf, tail-called by the dispatcher).
macro_rules! syscall_exit {
    ($tracepoint:ident, $dispatched:ident, |$call:ident, $args:ident, $ret:ident| $body:block) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn $tracepoint(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::syscalls::from_tracepoint(&ctx, |$call, $args, $ret| $body)
        }

        #[aya_ebpf::macros::btf_tracepoint(function = "sys_exit")]
        pub fn $dispatched(ctx: aya_ebpf::programs::BtfTracePointContext) -> u32 {
            $crate::syscalls::from_dispatcher(&ctx, |$call, $args, $ret| $body)
        }
    };
}
pub(crate) use syscall_exit;

/// The one syscall hook of the dispatcher set.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_dispatch(ctx: BtfTracePointContext) -> u32 {
    let regs: *const u8 = ctx.arg(0);
    let nr = regs_nr(regs);
    if nr >= SYSCALL_TABLE_SIZE as u64 {
        return 0;
    }
    let (kinds, class) = match SYSCALL_ROUTES.get(nr as u32) {
        Some(route) => (route.kinds, route.class),
        None => return 0,
    };
    if kinds == 0 {
        return 0;
    }
    let task = current_task();
    if in_compat_syscall(task) {
        return 0;
    }
    let Some(call) = Call::of_current_task(task) else {
        return 0;
    };
    if call.mode & kinds as u32 == 0 {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    let io = |dir, op| Io {
        dir,
        op,
        ops: 1,
        bytes: ret as u64,
    };
    match class {
        syscall_class::READ if ret >= 0 => {
            count(
                &call,
                regs_arg::<0>(regs) as i32,
                &io(Direction::Read, io_ops::READ),
            );
        }
        syscall_class::WRITE if ret >= 0 => {
            count(
                &call,
                regs_arg::<0>(regs) as i32,
                &io(Direction::Write, io_ops::WRITE),
            );
        }
        syscall_class::SENDTO if regs_arg::<4>(regs) == 0 => {
            if ret >= 0 {
                count(
                    &call,
                    regs_arg::<0>(regs) as i32,
                    &io(Direction::Write, io_ops::SEND),
                );
            }
        }
        syscall_class::RECVFROM if regs_arg::<4>(regs) == 0 => {
            if ret >= 0 {
                count(
                    &call,
                    regs_arg::<0>(regs) as i32,
                    &io(Direction::Read, io_ops::RECV),
                );
            }
        }
        syscall_class::READ | syscall_class::WRITE => {}
        _ => unsafe { SYSCALL_HANDLERS.tail_call(&ctx, nr as u32) },
    }
    0
}

/// Saves the current syscall's six raw arguments for its exit program (tracepoint set).
#[inline(always)]
fn stash_args(pid_tgid: u64, args: [u64; 6]) {
    if PENDING_SYSCALLS
        .insert(&pid_tgid, &PendingSyscall { args }, 0)
        .is_err()
    {
        bump(KernelCounter::PendingTableFull);
    }
}

/// Takes (and forgets) the arguments saved at sys_enter. None when the enter was not seen (the
/// cgroup was off then, or the probe attached mid-call).
#[inline(always)]
fn take_args(call: &Call) -> Option<[u64; 6]> {
    // An off process stashed nothing: skip the lookup. An entry left from before a mode change
    // is overwritten by the thread's next stash, or freed when it exits.
    if call.mode & capture::SYSCALL_KINDS == 0 {
        return None;
    }
    let key = call.pid_tgid();
    let args = unsafe { PENDING_SYSCALLS.get(&key) }.map(|p| p.args);
    if args.is_some() {
        let _ = PENDING_SYSCALLS.remove(&key);
    }
    args
}

/// Saves the arguments when the caller's capture mode has any of `bits` (tracepoint set).
#[inline(always)]
fn stash_if(ctx: &TracePointContext, bits: u32) -> u32 {
    if let Some(call) = Call::current()
        && call.wants(bits)
        && let Some(args) = enter_args(ctx)
    {
        stash_args(call.pid_tgid(), args);
    }
    0
}

/// Attached to the sys_enter of set*id, exec and clone-family syscalls (tracepoint set).
#[tracepoint]
pub fn sys_enter_process(ctx: TracePointContext) -> u32 {
    stash_if(&ctx, capture::PROCESS_SYSCALLS)
}

/// Attached to the sys_enter of open and path syscalls.
#[tracepoint]
pub fn sys_enter_file(ctx: TracePointContext) -> u32 {
    stash_if(&ctx, capture::FILE)
}

/// Attached to the sys_enter of dup/fcntl/close_range: descriptor tracking matters to every
/// capture kind.
#[tracepoint]
pub fn sys_enter_fd(ctx: TracePointContext) -> u32 {
    stash_if(&ctx, capture::FD_KINDS)
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

/// execve/execveat, in both hook sets: every counted descriptor's counters leave before the
/// exec, with what each refers to, while the close-on-exec ones are still open.
/// `sched_process_exec` then reports what came between this and the exec itself.
#[tracepoint]
pub fn sys_enter_exec(_ctx: TracePointContext) -> u32 {
    let Some(call) = Call::current() else {
        return 0;
    };
    if call.wants(capture::FD_KINDS) {
        report_range(&call, report_reason::EXEC, true, 0, u32::MAX);
    }
    0
}

/// close(2), in both hook sets: the descriptor's counters leave with the close record, taken
/// while the number still belongs to it.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let Some(call) = Call::current() else {
        return 0;
    };
    if !call.wants(capture::FD_KINDS) {
        return 0;
    }
    let Some(args) = enter_args(&ctx) else {
        return 0;
    };
    report(&call, args[0] as i32, report_reason::CLOSE, true);
    0
}
