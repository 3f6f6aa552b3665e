//! Empty programs user space loads (and attaches for a moment) at start-up to learn which
//! program types this kernel accepts, and logs it. BPF trampolines (fentry/fexit, LSM) are the
//! cheaper hooks on kernels that allow them; a trampoline hook set can be built on this check.

use aya_ebpf::{
    macros::{fentry, fexit, lsm},
    programs::{FEntryContext, FExitContext, LsmContext},
};

#[fentry(function = "do_sys_openat2")]
pub fn feature_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit(function = "do_sys_openat2")]
pub fn feature_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[lsm(hook = "file_open")]
pub fn feature_lsm(_ctx: LsmContext) -> i32 {
    0
}
