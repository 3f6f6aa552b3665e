//! nri-sysflow's eBPF programs.
//!
//! * `sched.rs`: process lifecycle from the sched tracepoints (tp_btf), and cgroup moves.
//! * `syscalls.rs`: the two syscall hook sets (one `sys_exit` dispatcher, or per-syscall
//!   tracepoints) and the close(2) entry hook; the handlers are in `process.rs`, `file.rs`,
//!   `net.rs` and `io.rs`.
//! * `process_state.rs`: each process's cached capture mode and descriptor counters (task
//!   storage); `counters.rs`: counting and reporting them; `flush.rs`: the flush iterator.
//! * `emit.rs`, `kernel.rs`, `maps.rs`: records into the rings, kernel struct reads, maps.
//!
//! Which hooks are attached, and which syscalls the dispatcher follows, is decided by user space
//! (plugin/src/probe/hooks.rs); a program here only knows its own syscall.
#![no_std]
#![no_main]
// atomic_xadd for the I/O counters (the BPF target has no AtomicU64).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod counters;
mod emit;
mod features;
mod file;
mod flush;
mod io;
mod kernel;
mod maps;
mod net;
mod process;
mod process_state;
mod sched;
mod syscalls;
mod task_storage;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
