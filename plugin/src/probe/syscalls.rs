//! The syscalls the programs follow: for each, the capture kinds that want it, how the
//! dispatcher handles it, and its programs in each hook set. This table is the one place that
//! lists them; numbers come from the libc crate for the architecture this agent is built for.

use sysflow_common::{SYSCALL_TABLE_SIZE, SyscallNumbers, capture, syscall_class};

/// One followed syscall.
#[derive(Clone, Copy, Debug)]
pub struct Followed {
    /// As in the tracepoint names `syscalls/sys_enter_<name>` and `sys_exit_<name>`.
    pub name: &'static str,
    /// `capture` kinds that want it.
    pub kinds: u32,
    /// `syscall_class`: counted inside the dispatcher, or tail-called into its handler.
    pub class: u8,
    /// The tracepoint set's sys_enter program that saves its arguments.
    pub enter: &'static str,
}

impl Followed {
    /// This architecture's number; None where it has no such syscall (open, fork on arm64).
    pub fn nr(&self) -> Option<u32> {
        number(self.name)
    }

    /// The tracepoint set's exit program (also the tracepoint it goes on).
    pub fn exit_program(&self) -> String {
        format!("sys_exit_{}", self.name)
    }

    /// The dispatcher set's handler program (tail-called for `nr`).
    pub fn handler_program(&self) -> String {
        format!("exit_{}", self.name)
    }

    pub fn enter_tracepoint(&self) -> String {
        format!("sys_enter_{}", self.name)
    }
}

/// The syscall's number on the architecture this agent is built for.
fn number(name: &str) -> Option<u32> {
    let nr = match name {
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "execve" => libc::SYS_execve,
        "execveat" => libc::SYS_execveat,
        "setuid" => libc::SYS_setuid,
        "setreuid" => libc::SYS_setreuid,
        "setresuid" => libc::SYS_setresuid,
        "setgid" => libc::SYS_setgid,
        "setregid" => libc::SYS_setregid,
        "setresgid" => libc::SYS_setresgid,
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        "unlinkat" => libc::SYS_unlinkat,
        "renameat2" => libc::SYS_renameat2,
        "mkdirat" => libc::SYS_mkdirat,
        "linkat" => libc::SYS_linkat,
        "symlinkat" => libc::SYS_symlinkat,
        "fchmod" => libc::SYS_fchmod,
        "fchmodat" => libc::SYS_fchmodat,
        "fchmodat2" => libc::SYS_fchmodat2,
        "fchown" => libc::SYS_fchown,
        "fchownat" => libc::SYS_fchownat,
        "chdir" => libc::SYS_chdir,
        "fchdir" => libc::SYS_fchdir,
        "close_range" => libc::SYS_close_range,
        "dup" => libc::SYS_dup,
        "dup3" => libc::SYS_dup3,
        "fcntl" => libc::SYS_fcntl,
        "socket" => libc::SYS_socket,
        "connect" => libc::SYS_connect,
        "accept" => libc::SYS_accept,
        "accept4" => libc::SYS_accept4,
        "bind" => libc::SYS_bind,
        "listen" => libc::SYS_listen,
        "read" => libc::SYS_read,
        "write" => libc::SYS_write,
        "pread64" => libc::SYS_pread64,
        "pwrite64" => libc::SYS_pwrite64,
        "readv" => libc::SYS_readv,
        "writev" => libc::SYS_writev,
        "preadv" => libc::SYS_preadv,
        "pwritev" => libc::SYS_pwritev,
        "preadv2" => libc::SYS_preadv2,
        "pwritev2" => libc::SYS_pwritev2,
        "sendfile64" => libc::SYS_sendfile,
        "sendto" => libc::SYS_sendto,
        "recvfrom" => libc::SYS_recvfrom,
        "sendmsg" => libc::SYS_sendmsg,
        "recvmsg" => libc::SYS_recvmsg,
        "sendmmsg" => libc::SYS_sendmmsg,
        "recvmmsg" => libc::SYS_recvmmsg,
        // The older ABI's own calls; the generic table (arm64) has only the *at forms.
        #[cfg(target_arch = "x86_64")]
        "fork" => libc::SYS_fork,
        #[cfg(target_arch = "x86_64")]
        "vfork" => libc::SYS_vfork,
        #[cfg(target_arch = "x86_64")]
        "open" => libc::SYS_open,
        #[cfg(target_arch = "x86_64")]
        "creat" => libc::SYS_creat,
        #[cfg(target_arch = "x86_64")]
        "unlink" => libc::SYS_unlink,
        #[cfg(target_arch = "x86_64")]
        "rmdir" => libc::SYS_rmdir,
        #[cfg(target_arch = "x86_64")]
        "rename" => libc::SYS_rename,
        #[cfg(target_arch = "x86_64")]
        "renameat" => libc::SYS_renameat,
        #[cfg(target_arch = "x86_64")]
        "mkdir" => libc::SYS_mkdir,
        #[cfg(target_arch = "x86_64")]
        "link" => libc::SYS_link,
        #[cfg(target_arch = "x86_64")]
        "symlink" => libc::SYS_symlink,
        #[cfg(target_arch = "x86_64")]
        "chmod" => libc::SYS_chmod,
        #[cfg(target_arch = "x86_64")]
        "chown" => libc::SYS_chown,
        #[cfg(target_arch = "x86_64")]
        "lchown" => libc::SYS_lchown,
        #[cfg(target_arch = "x86_64")]
        "dup2" => libc::SYS_dup2,
        _ => return None,
    };
    Some(nr as u32)
}

const PROCESS: (u32, &str) = (capture::PROCESS_SYSCALLS, "sys_enter_process");
const FILE: (u32, &str) = (capture::FILE, "sys_enter_file");
const FD: (u32, &str) = (capture::FD_KINDS, "sys_enter_fd");
const NETWORK: (u32, &str) = (capture::NETWORK, "sys_enter_network");
const IO: (u32, &str) = (capture::IO_COUNTERS, "sys_enter_io");

macro_rules! followed {
    ($( $name:ident : $family:expr, $class:ident; )*) => {
        &[$(Followed {
            name: stringify!($name),
            kinds: $family.0,
            class: syscall_class::$class,
            enter: $family.1,
        }),*]
    };
}

/// Every followed syscall. close is not here: it is reported on entry, by its own hook.
pub const FOLLOWED: &[Followed] = followed! {
    clone: PROCESS, HANDLER;
    clone3: PROCESS, HANDLER;
    fork: PROCESS, HANDLER;
    vfork: PROCESS, HANDLER;
    execve: PROCESS, HANDLER;
    execveat: PROCESS, HANDLER;
    setuid: PROCESS, HANDLER;
    setreuid: PROCESS, HANDLER;
    setresuid: PROCESS, HANDLER;
    setgid: PROCESS, HANDLER;
    setregid: PROCESS, HANDLER;
    setresgid: PROCESS, HANDLER;
    open: FILE, HANDLER;
    openat: FILE, HANDLER;
    openat2: FILE, HANDLER;
    creat: FILE, HANDLER;
    unlink: FILE, HANDLER;
    unlinkat: FILE, HANDLER;
    rmdir: FILE, HANDLER;
    rename: FILE, HANDLER;
    renameat: FILE, HANDLER;
    renameat2: FILE, HANDLER;
    mkdir: FILE, HANDLER;
    mkdirat: FILE, HANDLER;
    link: FILE, HANDLER;
    linkat: FILE, HANDLER;
    symlink: FILE, HANDLER;
    symlinkat: FILE, HANDLER;
    chmod: FILE, HANDLER;
    fchmod: FILE, HANDLER;
    fchmodat: FILE, HANDLER;
    fchmodat2: FILE, HANDLER;
    chown: FILE, HANDLER;
    fchown: FILE, HANDLER;
    lchown: FILE, HANDLER;
    fchownat: FILE, HANDLER;
    chdir: FILE, HANDLER;
    fchdir: FILE, HANDLER;
    close_range: FD, HANDLER;
    dup: FD, HANDLER;
    dup2: FD, HANDLER;
    dup3: FD, HANDLER;
    fcntl: FD, HANDLER;
    socket: NETWORK, HANDLER;
    connect: NETWORK, HANDLER;
    accept: NETWORK, HANDLER;
    accept4: NETWORK, HANDLER;
    bind: NETWORK, HANDLER;
    listen: NETWORK, HANDLER;
    read: IO, READ;
    write: IO, WRITE;
    pread64: IO, READ;
    pwrite64: IO, WRITE;
    readv: IO, READ;
    writev: IO, WRITE;
    preadv: IO, READ;
    pwritev: IO, WRITE;
    preadv2: IO, READ;
    pwritev2: IO, WRITE;
    sendfile64: IO, HANDLER;
    sendto: IO, SENDTO;
    recvfrom: IO, RECVFROM;
    sendmsg: IO, HANDLER;
    recvmsg: IO, HANDLER;
    sendmmsg: IO, HANDLER;
    recvmmsg: IO, HANDLER;
};

/// The numbers the sched programs compare against (u32::MAX where there is no such syscall).
pub fn numbers() -> SyscallNumbers {
    let nr = |name: &str| {
        FOLLOWED
            .iter()
            .find(|f| f.name == name)
            .and_then(Followed::nr)
            .unwrap_or(u32::MAX)
    };
    SyscallNumbers {
        clone: nr("clone"),
        clone3: nr("clone3"),
        fork: nr("fork"),
        vfork: nr("vfork"),
        execve: nr("execve"),
        execveat: nr("execveat"),
    }
}

/// The routes of every syscall number for the capture kinds some cgroup wants now: a syscall no
/// one wants gets kinds 0, and the dispatcher returns on its first test.
pub fn routes(wanted: u32) -> Vec<(u32, sysflow_common::SyscallRoute)> {
    FOLLOWED
        .iter()
        .filter_map(|f| {
            let nr = f.nr().filter(|nr| *nr < SYSCALL_TABLE_SIZE)?;
            Some((
                nr,
                sysflow_common::SyscallRoute {
                    kinds: (f.kinds & wanted) as u8,
                    class: f.class,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn numbers_are_unique_and_inside_the_table() {
        let mut seen = HashSet::new();
        for f in FOLLOWED {
            if let Some(nr) = f.nr() {
                assert!(nr < SYSCALL_TABLE_SIZE, "{} = {nr}", f.name);
                assert!(seen.insert(nr), "{} shares number {nr}", f.name);
            }
        }
        assert!(!FOLLOWED.iter().any(|f| f.name == "close"));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_numbers_are_the_kernel_abi() {
        let nr = |name: &str| FOLLOWED.iter().find(|f| f.name == name).unwrap().nr();
        assert_eq!(nr("read"), Some(0));
        assert_eq!(nr("openat"), Some(257));
        assert_eq!(nr("sendfile64"), Some(40));
        assert_eq!(nr("clone3"), Some(435));
        assert_eq!(nr("fchmodat2"), Some(452));
        assert_eq!(numbers().execveat, 322);
    }

    #[test]
    fn routes_follow_only_what_is_wanted() {
        let file_only = routes(capture::FILE);
        let openat = file_only
            .iter()
            .find(|(nr, _)| *nr == libc::SYS_openat as u32)
            .unwrap();
        assert_eq!(openat.1.kinds as u32, capture::FILE);
        let read = file_only
            .iter()
            .find(|(nr, _)| *nr == libc::SYS_read as u32)
            .unwrap();
        assert_eq!(read.1.kinds, 0, "read is not followed without I/O counters");
        assert_eq!(read.1.class, syscall_class::READ);
        // dup matters to every descriptor kind.
        let dup = routes(capture::IO_COUNTERS)
            .into_iter()
            .find(|(nr, _)| *nr == libc::SYS_dup as u32)
            .unwrap();
        assert_eq!(dup.1.kinds as u32, capture::IO_COUNTERS);
    }
}
