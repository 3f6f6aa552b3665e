//! Typed kernel records, decoded from the bytes the programs put in the ring buffers.
//! Decoding checks every length against the buffer: a malformed record is an error, not a panic.

use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use serde::Serialize;
use sysflow_common::{
    CloneRecord, CloseRangeRecord, DupRecord, Endpoint, ExecRecord, ExitRecord, FdCounters,
    FdReportRecord, FileIdentity, OpenRecord, PathOpRecord, RecordHeader, RecordKind, SetIdRecord,
    SockInfo, SockOpRecord, SocketRecord, record_flags,
};

/// The object behind a descriptor: inode number, device and `i_mode` (file type and permissions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct FileId {
    pub ino: u64,
    /// Device as `stat(2)` reports it (`st_dev`).
    pub dev: u64,
    pub mode: u16,
}

impl FileId {
    const S_IFMT: u16 = 0o170000;

    /// `S_IF*` bits of the mode (0 when unknown).
    pub fn file_type(&self) -> u16 {
        self.mode & Self::S_IFMT
    }
}

impl From<FileIdentity> for FileId {
    fn from(f: FileIdentity) -> Self {
        // The kernel keeps dev_t as major << 20 | minor; user space (stat's st_dev) uses the
        // glibc encoding. Convert so the two compare equal.
        let (major, minor) = (f.dev >> 20, f.dev & 0xf_ffff);
        FileId {
            ino: f.ino,
            dev: libc::makedev(major, minor),
            mode: f.mode,
        }
    }
}

/// What every record carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Common {
    /// CLOCK_BOOTTIME nanoseconds; see `Probe::boot_to_wall_ns`.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    /// Start time (CLOCK_BOOTTIME ns) of the thread-group leader.
    pub proc_start_ns: u64,
    pub ret: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CloneSyscall {
    Clone,
    Clone3,
    Fork,
    Vfork,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloneEvent {
    pub common: Common,
    /// Reported by the new task (else by the caller).
    pub is_child: bool,
    pub syscall: CloneSyscall,
    pub clone_flags: u64,
    /// The new task's tid (the caller's own tid on the child side).
    pub child_tid: u32,
    pub parent_tgid: u32,
    pub is_thread: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ExecSyscall {
    Unknown,
    Execve,
    Execveat,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecEvent {
    pub common: Common,
    pub syscall: ExecSyscall,
    /// The filename as passed to exec.
    pub filename: String,
    pub filename_truncated: bool,
    pub args: Vec<String>,
    pub args_truncated: bool,
    pub uid: u32,
    pub gid: u32,
    pub old_tid: u32,
    /// Which of descriptors 0..64 are open after the exec (bit n: descriptor n), when the
    /// kernel's file table could be read: the close-on-exec ones are gone.
    pub open_fds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExitEvent {
    pub common: Common,
    /// exit(2) status, when the task exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i32>,
    pub group_dead: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SetIdSyscall {
    Setuid,
    Setreuid,
    Setresuid,
    Setgid,
    Setregid,
    Setresgid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetIdEvent {
    pub common: Common,
    pub syscall: SetIdSyscall,
    /// (real, effective, saved) as passed; None = unchanged or not an argument.
    pub ids: [Option<u32>; 3],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum OpenSyscall {
    Open,
    Openat,
    Openat2,
    Creat,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenEvent {
    pub common: Common,
    pub syscall: OpenSyscall,
    pub dirfd: i32,
    pub path: String,
    pub path_truncated: bool,
    /// Linux O_* flags.
    pub flags: u32,
    pub mode: u32,
    pub file: FileId,
}

/// The I/O one process did through one descriptor since the previous report of that
/// descriptor (the kernel hands out what is new each time; nothing needs subtracting).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoCounters {
    pub read_bytes: u64,
    pub read_ops: u64,
    pub write_bytes: u64,
    pub write_ops: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub cgroup_id: u64,
    pub proc_start_ns: u64,
    pub last_tid: u32,
    /// `sysflow_common::io_ops` bits.
    pub ops_seen: u16,
    pub file: FileId,
    pub sock: Option<Socket>,
}

impl From<&FdCounters> for IoCounters {
    fn from(c: &FdCounters) -> Self {
        IoCounters {
            read_bytes: c.read_bytes,
            read_ops: c.read_ops,
            write_bytes: c.write_bytes,
            write_ops: c.write_ops,
            first_ns: c.first_ns,
            last_ns: c.last_ns,
            cgroup_id: c.cgroup_id,
            proc_start_ns: c.proc_start_ns,
            last_tid: c.last_tid,
            ops_seen: c.ops_seen,
            file: c.file.into(),
            sock: Socket::from_info(&c.sock),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CloseReason {
    Close,
    /// dup2/dup3 onto the descriptor.
    Replaced,
    /// A datagram socket changed peer; the descriptor is still open.
    PeerChanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloseEvent {
    pub common: Common,
    pub fd: i32,
    pub reason: CloseReason,
    pub counters: Option<IoCounters>,
}

/// Why a descriptor's counters were reported without a close of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CountersReason {
    /// The process exited; the exit record follows.
    Exit,
    /// The process exec'd; the exec record follows (close-on-exec descriptors are gone).
    Exec,
    /// close_range closed it; the close_range record follows.
    CloseRange,
    /// Periodic flush: the descriptor is still open.
    Flush,
    /// Flush at shutdown.
    Final,
}

/// A descriptor's counters, reported because of something that happened to its process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CountersEvent {
    pub common: Common,
    pub fd: i32,
    pub reason: CountersReason,
    pub counters: IoCounters,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathOp {
    Unlink,
    Unlinkat,
    Rmdir,
    Rename,
    Renameat,
    Renameat2,
    Mkdir,
    Mkdirat,
    Link,
    Linkat,
    Symlink,
    Symlinkat,
    Chmod,
    Fchmod,
    Fchmodat,
    Chown,
    Fchown,
    Lchown,
    Fchownat,
    Chdir,
    Fchdir,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathOpEvent {
    pub common: Common,
    pub op: PathOp,
    pub dirfd: i32,
    pub path: String,
    pub dirfd2: i32,
    /// New name (rename, link) or link path (symlink; `path` is then the target).
    pub path2: String,
    pub paths_truncated: bool,
    pub fd: Option<i32>,
    pub mode_or_flags: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum DupSyscall {
    Dup,
    Dup2,
    Dup3,
    FcntlDupfd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DupEvent {
    pub common: Common,
    pub syscall: DupSyscall,
    pub old_fd: i32,
    pub flags: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloseRangeEvent {
    pub common: Common,
    pub first: u32,
    pub last: u32,
    /// CLOSE_RANGE_CLOEXEC (4): only marked close-on-exec, nothing closed.
    pub flags: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SocketEvent {
    pub common: Common,
    pub domain: u32,
    pub sock_type: u32,
    pub protocol: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SockOp {
    Connect,
    Accept,
    Accept4,
    Bind,
    Listen,
}

/// An IP socket's family, type, protocol and endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Socket {
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn endpoint(family: u16, ep: &Endpoint) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(
            ep.addr[0], ep.addr[1], ep.addr[2], ep.addr[3],
        )),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(ep.addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, ep.port))
}

impl Socket {
    pub fn from_info(info: &SockInfo) -> Option<Socket> {
        if info.family == 0 {
            return None;
        }
        Some(Socket {
            family: info.family,
            sock_type: info.sock_type,
            protocol: info.protocol,
            local: endpoint(info.family, &info.local),
            remote: endpoint(info.family, &info.remote),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SockOpEvent {
    pub common: Common,
    pub op: SockOp,
    /// The socket the call was made on (the listening socket for accept; the new one is `ret`).
    pub fd: i32,
    pub sock: Option<Socket>,
}

/// One decoded kernel record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Record {
    Clone(CloneEvent),
    Exec(ExecEvent),
    Exit(ExitEvent),
    SetId(SetIdEvent),
    Open(OpenEvent),
    Close(CloseEvent),
    Counters(CountersEvent),
    PathOp(PathOpEvent),
    Dup(DupEvent),
    CloseRange(CloseRangeEvent),
    Socket(SocketEvent),
    SockOp(SockOpEvent),
}

impl Record {
    pub fn common(&self) -> &Common {
        match self {
            Record::Clone(e) => &e.common,
            Record::Exec(e) => &e.common,
            Record::Exit(e) => &e.common,
            Record::SetId(e) => &e.common,
            Record::Open(e) => &e.common,
            Record::Close(e) => &e.common,
            Record::Counters(e) => &e.common,
            Record::PathOp(e) => &e.common,
            Record::Dup(e) => &e.common,
            Record::CloseRange(e) => &e.common,
            Record::Socket(e) => &e.common,
            Record::SockOp(e) => &e.common,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record's fixed part.
    #[error("record of kind {kind} is {len} bytes, shorter than its {need}-byte fixed part")]
    Short { kind: u16, len: usize, need: usize },
    /// The header names a kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    /// The string lengths run past the end of the record.
    #[error("record of kind {kind}: strings need {need} bytes, record has {len}")]
    StringsOverrun { kind: u16, len: usize, need: usize },
}

fn read<T: Copy>(bytes: &[u8], kind: u16) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind,
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: length checked; T is a #[repr(C)] plain-data record valid for any bytes.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// The variable part after a record's fixed struct.
struct Strings<'a> {
    rest: &'a [u8],
    kind: u16,
    need: usize,
    len: usize,
}

impl<'a> Strings<'a> {
    fn after<T>(bytes: &'a [u8], kind: u16) -> Self {
        Strings {
            rest: &bytes[size_of::<T>().min(bytes.len())..],
            kind,
            need: size_of::<T>(),
            len: bytes.len(),
        }
    }

    fn take(&mut self, n: u16) -> Result<&'a [u8], DecodeError> {
        let n = n as usize;
        self.need += n;
        if n > self.rest.len() {
            return Err(DecodeError::StringsOverrun {
                kind: self.kind,
                len: self.len,
                need: self.need,
            });
        }
        let (s, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(s)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn common(h: &RecordHeader) -> Common {
    Common {
        ts_ns: h.ts_ns,
        cgroup_id: h.cgroup_id,
        tgid: h.tgid,
        tid: h.tid,
        proc_start_ns: h.proc_start_ns,
        ret: h.ret,
    }
}

fn id(v: u32) -> Option<u32> {
    (v != sysflow_common::ID_UNCHANGED).then_some(v)
}

/// Decodes one ring-buffer item.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: RecordHeader = read(bytes, 0)?;
    let kind = header.kind;
    // The header's size is what the program meant to send; never trust it past the buffer.
    let bytes = &bytes[..(header.size as usize).clamp(size_of::<RecordHeader>(), bytes.len())];
    let truncated0 = header.flags & record_flags::STR0_TRUNCATED != 0;
    let truncated1 = header.flags & record_flags::STR1_TRUNCATED != 0;
    let c = common(&header);
    Ok(
        match RecordKind::from_u16(kind).ok_or(DecodeError::UnknownKind(kind))? {
            RecordKind::Clone => {
                let r: CloneRecord = read(bytes, kind)?;
                Record::Clone(CloneEvent {
                    common: c,
                    is_child: r.role == sysflow_common::clone_role::CHILD,
                    syscall: match r.syscall {
                        sysflow_common::clone_syscall::CLONE3 => CloneSyscall::Clone3,
                        sysflow_common::clone_syscall::FORK => CloneSyscall::Fork,
                        sysflow_common::clone_syscall::VFORK => CloneSyscall::Vfork,
                        _ => CloneSyscall::Clone,
                    },
                    clone_flags: r.clone_flags,
                    child_tid: r.child_tid,
                    parent_tgid: r.parent_tgid,
                    is_thread: r.is_thread != 0,
                })
            }
            RecordKind::Exec => {
                let r: ExecRecord = read(bytes, kind)?;
                let mut s = Strings::after::<ExecRecord>(bytes, kind);
                let filename = text(s.take(r.filename_len)?);
                let args = s
                    .take(r.args_len)?
                    .split(|&b| b == 0)
                    .map(text)
                    .collect::<Vec<_>>();
                // argv is NUL-terminated: drop the empty piece after the last NUL (a cut argument
                // has no NUL and is kept).
                let args = match args.split_last() {
                    Some((last, rest)) if last.is_empty() => rest.to_vec(),
                    _ => args,
                };
                Record::Exec(ExecEvent {
                    common: c,
                    syscall: match r.syscall {
                        sysflow_common::exec_syscall::EXECVE => ExecSyscall::Execve,
                        sysflow_common::exec_syscall::EXECVEAT => ExecSyscall::Execveat,
                        _ => ExecSyscall::Unknown,
                    },
                    filename,
                    filename_truncated: truncated0,
                    args,
                    args_truncated: truncated1,
                    uid: r.uid,
                    gid: r.gid,
                    old_tid: r.old_tid,
                    open_fds: (r.open_fds_known != 0).then_some(r.open_fds),
                })
            }
            RecordKind::Exit => {
                let r: ExitRecord = read(bytes, kind)?;
                let signal = r.wait_status & 0x7f;
                Record::Exit(ExitEvent {
                    common: c,
                    exit_code: (signal == 0).then_some((r.wait_status >> 8) & 0xff),
                    signal: (signal != 0).then_some(signal),
                    group_dead: r.group_dead != 0,
                })
            }
            RecordKind::SetId => {
                let r: SetIdRecord = read(bytes, kind)?;
                use sysflow_common::setid_syscall as s;
                Record::SetId(SetIdEvent {
                    common: c,
                    syscall: match r.syscall {
                        s::SETREUID => SetIdSyscall::Setreuid,
                        s::SETRESUID => SetIdSyscall::Setresuid,
                        s::SETGID => SetIdSyscall::Setgid,
                        s::SETREGID => SetIdSyscall::Setregid,
                        s::SETRESGID => SetIdSyscall::Setresgid,
                        _ => SetIdSyscall::Setuid,
                    },
                    ids: [id(r.ids[0]), id(r.ids[1]), id(r.ids[2])],
                })
            }
            RecordKind::Open => {
                let r: OpenRecord = read(bytes, kind)?;
                let mut s = Strings::after::<OpenRecord>(bytes, kind);
                use sysflow_common::open_syscall as o;
                Record::Open(OpenEvent {
                    common: c,
                    syscall: match r.syscall {
                        o::OPEN => OpenSyscall::Open,
                        o::OPENAT2 => OpenSyscall::Openat2,
                        o::CREAT => OpenSyscall::Creat,
                        _ => OpenSyscall::Openat,
                    },
                    dirfd: r.dirfd,
                    path: text(s.take(r.path_len)?),
                    path_truncated: truncated0,
                    flags: r.flags,
                    mode: r.mode,
                    file: r.file.into(),
                })
            }
            RecordKind::FdReport => {
                // Without counters the record ends where they would start.
                let head = std::mem::offset_of!(FdReportRecord, counters);
                let whole = size_of::<FdReportRecord>();
                if bytes.len() < head {
                    return Err(DecodeError::Short {
                        kind,
                        len: bytes.len(),
                        need: head,
                    });
                }
                let mut r = FdReportRecord::default();
                let n = bytes.len().min(whole);
                // SAFETY: at most size_of::<FdReportRecord>() bytes into a plain #[repr(C)]
                // record, valid for any bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut r).cast::<u8>(), n)
                };
                let counted = r.has_counters != 0;
                if counted && n < whole {
                    return Err(DecodeError::Short {
                        kind,
                        len: bytes.len(),
                        need: whole,
                    });
                }
                use sysflow_common::report_reason as rr;
                let counters = counted.then(|| IoCounters::from(&r.counters));
                let close = |reason| {
                    Record::Close(CloseEvent {
                        common: c.clone(),
                        fd: r.fd,
                        reason,
                        counters: counters.clone(),
                    })
                };
                let counted = |reason| {
                    Record::Counters(CountersEvent {
                        common: c.clone(),
                        fd: r.fd,
                        reason,
                        counters: counters.clone().unwrap_or_default(),
                    })
                };
                match r.reason {
                    rr::CLOSE => close(CloseReason::Close),
                    rr::REPLACED => close(CloseReason::Replaced),
                    rr::PEER_CHANGED => close(CloseReason::PeerChanged),
                    rr::EXIT => counted(CountersReason::Exit),
                    rr::EXEC => counted(CountersReason::Exec),
                    rr::CLOSE_RANGE => counted(CountersReason::CloseRange),
                    rr::FLUSH => counted(CountersReason::Flush),
                    rr::FINAL => counted(CountersReason::Final),
                    other => return Err(DecodeError::UnknownKind(kind | (other as u16) << 8)),
                }
            }
            RecordKind::PathOp => {
                let r: PathOpRecord = read(bytes, kind)?;
                let mut s = Strings::after::<PathOpRecord>(bytes, kind);
                let path = text(s.take(r.path_len)?);
                let path2 = text(s.take(r.path2_len)?);
                use sysflow_common::path_op as p;
                let op = match r.op {
                    p::UNLINK => PathOp::Unlink,
                    p::UNLINKAT => PathOp::Unlinkat,
                    p::RMDIR => PathOp::Rmdir,
                    p::RENAME => PathOp::Rename,
                    p::RENAMEAT => PathOp::Renameat,
                    p::RENAMEAT2 => PathOp::Renameat2,
                    p::MKDIR => PathOp::Mkdir,
                    p::MKDIRAT => PathOp::Mkdirat,
                    p::LINK => PathOp::Link,
                    p::LINKAT => PathOp::Linkat,
                    p::SYMLINK => PathOp::Symlink,
                    p::SYMLINKAT => PathOp::Symlinkat,
                    p::CHMOD => PathOp::Chmod,
                    p::FCHMOD => PathOp::Fchmod,
                    p::FCHMODAT => PathOp::Fchmodat,
                    p::CHOWN => PathOp::Chown,
                    p::FCHOWN => PathOp::Fchown,
                    p::LCHOWN => PathOp::Lchown,
                    p::FCHOWNAT => PathOp::Fchownat,
                    p::CHDIR => PathOp::Chdir,
                    p::FCHDIR => PathOp::Fchdir,
                    other => return Err(DecodeError::UnknownKind(kind | (other as u16) << 8)),
                };
                Record::PathOp(PathOpEvent {
                    common: c,
                    op,
                    dirfd: r.dirfd,
                    path,
                    dirfd2: r.dirfd2,
                    path2,
                    paths_truncated: truncated0 || truncated1,
                    fd: (r.fd >= 0).then_some(r.fd),
                    mode_or_flags: r.mode_or_flags,
                    uid: id(r.uid),
                    gid: id(r.gid),
                })
            }
            RecordKind::Dup => {
                let r: DupRecord = read(bytes, kind)?;
                use sysflow_common::dup_syscall as d;
                Record::Dup(DupEvent {
                    common: c,
                    syscall: match r.syscall {
                        d::DUP2 => DupSyscall::Dup2,
                        d::DUP3 => DupSyscall::Dup3,
                        d::FCNTL_DUPFD => DupSyscall::FcntlDupfd,
                        _ => DupSyscall::Dup,
                    },
                    old_fd: r.old_fd,
                    flags: r.flags,
                })
            }
            RecordKind::CloseRange => {
                let r: CloseRangeRecord = read(bytes, kind)?;
                Record::CloseRange(CloseRangeEvent {
                    common: c,
                    first: r.first,
                    last: r.last,
                    flags: r.flags,
                })
            }
            RecordKind::Socket => {
                let r: SocketRecord = read(bytes, kind)?;
                Record::Socket(SocketEvent {
                    common: c,
                    domain: r.domain,
                    sock_type: r.sock_type,
                    protocol: r.protocol,
                })
            }
            RecordKind::SockOp => {
                let r: SockOpRecord = read(bytes, kind)?;
                use sysflow_common::sock_op as so;
                Record::SockOp(SockOpEvent {
                    common: c,
                    op: match r.op {
                        so::ACCEPT => SockOp::Accept,
                        so::ACCEPT4 => SockOp::Accept4,
                        so::BIND => SockOp::Bind,
                        so::LISTEN => SockOp::Listen,
                        _ => SockOp::Connect,
                    },
                    fd: r.fd,
                    sock: Socket::from_info(&r.sock),
                })
            }
        },
    )
}

#[cfg(test)]
mod tests;
