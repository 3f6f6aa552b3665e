//! `BPF_MAP_TYPE_TASK_STORAGE`, which aya-ebpf 0.3 does not wrap: a value per `task_struct`,
//! found through the task itself (no hash lookup), freed by the kernel with the task.
//!
//! The definition is a BTF map (section `.maps`): local storage maps need BTF for their key and
//! value, and `BPF_F_NO_PREALLOC`. User space loads the object with
//! `EbpfLoader::allow_unsupported_maps` (aya has no user-space type for it; nothing there
//! reads it).

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type, task_struct},
    helpers::generated::bpf_task_storage_get,
};

/// Field layout of a BTF map definition, as libbpf and aya read it: each field is a pointer to
/// an array whose length carries the value.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders the loader replaces; nothing dereferences them.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        TaskStorage {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn storage(&self, task: *const u8, flags: u64) -> *mut T {
        // SAFETY: the verifier checks that `task` is a task_struct pointer it trusts.
        unsafe {
            bpf_task_storage_get(
                self as *const Self as *mut c_void,
                task as *mut task_struct,
                ptr::null_mut(),
                flags,
            ) as *mut T
        }
    }

    /// The task's value, created zeroed when it has none (null when the kernel cannot
    /// allocate it).
    #[inline(always)]
    pub fn get_or_create(&self, task: *const u8) -> *mut T {
        self.storage(task, BPF_LOCAL_STORAGE_GET_F_CREATE as u64)
    }

    /// The task's value, or null.
    #[inline(always)]
    pub fn get(&self, task: *const u8) -> *mut T {
        self.storage(task, 0)
    }
}
