//! Which program goes on which tracepoint, per capture family. This table is the one place that
//! lists the hooks; the programs themselves (ebpf/probes) only know their own syscall.

/// A group of hooks that is loaded and attached as a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// clone/fork, exec, exit, set*id.
    Process,
    /// open family, close, dup, path operations.
    File,
    /// socket, connect, accept, bind, listen.
    Network,
    /// read/write/send/recv counters.
    Io,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Process, Family::File, Family::Network, Family::Io];
}

/// One program and the tracepoints it goes on.
pub struct Hook {
    pub program: &'static str,
    pub category: &'static str,
    /// Tracepoint names. Syscalls this architecture or kernel does not have (open, fork on
    /// arm64; openat2 or fchmodat2 on older kernels) are skipped at attach time.
    pub tracepoints: &'static [&'static str],
}

const PROCESS_ENTER: &[&str] = &[
    "sys_enter_clone",
    "sys_enter_clone3",
    "sys_enter_fork",
    "sys_enter_vfork",
    "sys_enter_setuid",
    "sys_enter_setreuid",
    "sys_enter_setresuid",
    "sys_enter_setgid",
    "sys_enter_setregid",
    "sys_enter_setresgid",
];

const FILE_ENTER: &[&str] = &[
    "sys_enter_open",
    "sys_enter_openat",
    "sys_enter_openat2",
    "sys_enter_creat",
    "sys_enter_unlink",
    "sys_enter_unlinkat",
    "sys_enter_rmdir",
    "sys_enter_rename",
    "sys_enter_renameat",
    "sys_enter_renameat2",
    "sys_enter_mkdir",
    "sys_enter_mkdirat",
    "sys_enter_link",
    "sys_enter_linkat",
    "sys_enter_symlink",
    "sys_enter_symlinkat",
    "sys_enter_chmod",
    "sys_enter_fchmod",
    "sys_enter_fchmodat",
    "sys_enter_fchmodat2",
    "sys_enter_chown",
    "sys_enter_fchown",
    "sys_enter_lchown",
    "sys_enter_fchownat",
    "sys_enter_chdir",
    "sys_enter_fchdir",
];

const FD_ENTER: &[&str] = &[
    "sys_enter_close_range",
    "sys_enter_dup",
    "sys_enter_dup2",
    "sys_enter_dup3",
    "sys_enter_fcntl",
];

const NETWORK_ENTER: &[&str] = &[
    "sys_enter_socket",
    "sys_enter_connect",
    "sys_enter_accept",
    "sys_enter_accept4",
    "sys_enter_bind",
    "sys_enter_listen",
];

const IO_ENTER: &[&str] = &[
    "sys_enter_read",
    "sys_enter_write",
    "sys_enter_pread64",
    "sys_enter_pwrite64",
    "sys_enter_readv",
    "sys_enter_writev",
    "sys_enter_preadv",
    "sys_enter_pwritev",
    "sys_enter_preadv2",
    "sys_enter_pwritev2",
    "sys_enter_sendfile64",
    "sys_enter_sendto",
    "sys_enter_recvfrom",
    "sys_enter_sendmsg",
    "sys_enter_recvmsg",
    "sys_enter_sendmmsg",
    "sys_enter_recvmmsg",
];

/// Exit programs are named after the one tracepoint they go on.
macro_rules! exits {
    ($($name:literal),* $(,)?) => {
        &[$(Hook { program: $name, category: "syscalls", tracepoints: &[$name] }),*]
    };
}

const PROCESS_HOOKS: &[Hook] = &[
    Hook {
        program: "sys_enter_process",
        category: "syscalls",
        tracepoints: PROCESS_ENTER,
    },
    Hook {
        program: "sys_enter_execve",
        category: "syscalls",
        tracepoints: &["sys_enter_execve"],
    },
    Hook {
        program: "sys_enter_execveat",
        category: "syscalls",
        tracepoints: &["sys_enter_execveat"],
    },
    Hook {
        program: "sched_process_exec",
        category: "sched",
        tracepoints: &["sched_process_exec"],
    },
    Hook {
        program: "sched_process_exit",
        category: "sched",
        tracepoints: &["sched_process_exit"],
    },
];

const PROCESS_EXITS: &[Hook] = exits!(
    "sys_exit_clone",
    "sys_exit_clone3",
    "sys_exit_fork",
    "sys_exit_vfork",
    "sys_exit_execve",
    "sys_exit_execveat",
    "sys_exit_setuid",
    "sys_exit_setreuid",
    "sys_exit_setresuid",
    "sys_exit_setgid",
    "sys_exit_setregid",
    "sys_exit_setresgid",
);

const FILE_HOOKS: &[Hook] = &[
    Hook {
        program: "sys_enter_file",
        category: "syscalls",
        tracepoints: FILE_ENTER,
    },
    Hook {
        program: "sys_enter_fd",
        category: "syscalls",
        tracepoints: FD_ENTER,
    },
    Hook {
        program: "sys_enter_close",
        category: "syscalls",
        tracepoints: &["sys_enter_close"],
    },
];

const FILE_EXITS: &[Hook] = exits!(
    "sys_exit_open",
    "sys_exit_openat",
    "sys_exit_openat2",
    "sys_exit_creat",
    "sys_exit_unlink",
    "sys_exit_unlinkat",
    "sys_exit_rmdir",
    "sys_exit_rename",
    "sys_exit_renameat",
    "sys_exit_renameat2",
    "sys_exit_mkdir",
    "sys_exit_mkdirat",
    "sys_exit_link",
    "sys_exit_linkat",
    "sys_exit_symlink",
    "sys_exit_symlinkat",
    "sys_exit_chmod",
    "sys_exit_fchmod",
    "sys_exit_fchmodat",
    "sys_exit_fchmodat2",
    "sys_exit_chown",
    "sys_exit_fchown",
    "sys_exit_lchown",
    "sys_exit_fchownat",
    "sys_exit_chdir",
    "sys_exit_fchdir",
    "sys_exit_close_range",
    "sys_exit_dup",
    "sys_exit_dup2",
    "sys_exit_dup3",
    "sys_exit_fcntl",
);

const NETWORK_HOOKS: &[Hook] = &[Hook {
    program: "sys_enter_network",
    category: "syscalls",
    tracepoints: NETWORK_ENTER,
}];

const NETWORK_EXITS: &[Hook] = exits!(
    "sys_exit_socket",
    "sys_exit_connect",
    "sys_exit_accept",
    "sys_exit_accept4",
    "sys_exit_bind",
    "sys_exit_listen",
);

const IO_HOOKS: &[Hook] = &[Hook {
    program: "sys_enter_io",
    category: "syscalls",
    tracepoints: IO_ENTER,
}];

const IO_EXITS: &[Hook] = exits!(
    "sys_exit_read",
    "sys_exit_write",
    "sys_exit_pread64",
    "sys_exit_pwrite64",
    "sys_exit_readv",
    "sys_exit_writev",
    "sys_exit_preadv",
    "sys_exit_pwritev",
    "sys_exit_preadv2",
    "sys_exit_pwritev2",
    "sys_exit_sendfile64",
    "sys_exit_sendto",
    "sys_exit_recvfrom",
    "sys_exit_sendmsg",
    "sys_exit_recvmsg",
    "sys_exit_sendmmsg",
    "sys_exit_recvmmsg",
);

/// Every hook of a family.
pub fn hooks(family: Family) -> impl Iterator<Item = &'static Hook> {
    let (hooks, exits) = match family {
        Family::Process => (PROCESS_HOOKS, PROCESS_EXITS),
        Family::File => (FILE_HOOKS, FILE_EXITS),
        Family::Network => (NETWORK_HOOKS, NETWORK_EXITS),
        Family::Io => (IO_HOOKS, IO_EXITS),
    };
    hooks.iter().chain(exits.iter())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_exit_has_its_enter_in_the_same_family() {
        for family in Family::ALL {
            let hooks: Vec<_> = hooks(family).collect();
            let enters: HashSet<&str> = hooks
                .iter()
                .filter(|h| h.program.starts_with("sys_enter"))
                .flat_map(|h| h.tracepoints.iter().copied())
                .collect();
            for exit in hooks.iter().filter(|h| h.program.starts_with("sys_exit")) {
                let enter = exit.program.replace("sys_exit_", "sys_enter_");
                assert!(
                    enters.contains(enter.as_str()),
                    "{family:?}: {enter} missing"
                );
            }
        }
    }

    #[test]
    fn no_program_is_listed_twice() {
        let mut seen = HashSet::new();
        for family in Family::ALL {
            for hook in hooks(family) {
                assert!(seen.insert(hook.program), "{} listed twice", hook.program);
            }
        }
    }
}
