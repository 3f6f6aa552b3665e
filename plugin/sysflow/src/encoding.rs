//! Field encodings as the reference collector writes them.

use std::net::Ipv4Addr;

use sha1::{Digest, Sha1};

use crate::records::Foid;

/// FOID = SHA-1 over the bytes of container id + path (container id first; empty for host
/// files). Verified on every File record of the reference traces.
pub fn foid(container_id: Option<&str>, path: &str) -> Foid {
    let mut h = Sha1::new();
    h.update(container_id.unwrap_or("").as_bytes());
    h.update(path.as_bytes());
    Foid(h.finalize().into())
}

/// IPv4 as the collector stores it in an Avro `int`: the four network-order bytes read as a
/// little-endian integer (127.0.0.1 -> 16777343).
pub fn ipv4_to_int(ip: Ipv4Addr) -> i32 {
    i32::from_le_bytes(ip.octets())
}

pub fn int_to_ipv4(v: i32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_le_bytes())
}

/// Pod host/internal IPs are `long`s holding the same 32-bit value.
pub fn ipv4_to_long(ip: Ipv4Addr) -> i64 {
    u32::from_le_bytes(ip.octets()) as i64
}

pub fn long_to_ipv4(v: i64) -> Ipv4Addr {
    Ipv4Addr::from((v as u32).to_le_bytes())
}

/// Operation flags (opFlags bits).
pub mod op {
    pub const CLONE: i32 = 1 << 0;
    pub const EXEC: i32 = 1 << 1;
    pub const EXIT: i32 = 1 << 2;
    pub const SETUID: i32 = 1 << 3;
    pub const SETNS: i32 = 1 << 4;
    pub const ACCEPT: i32 = 1 << 5;
    pub const CONNECT: i32 = 1 << 6;
    pub const OPEN: i32 = 1 << 7;
    pub const READ_RECV: i32 = 1 << 8;
    pub const WRITE_SEND: i32 = 1 << 9;
    pub const CLOSE: i32 = 1 << 10;
    pub const TRUNCATE: i32 = 1 << 11;
    pub const SHUTDOWN: i32 = 1 << 12;
    pub const MMAP: i32 = 1 << 13;
    pub const DIGEST: i32 = 1 << 14;
    pub const MKDIR: i32 = 1 << 15;
    pub const RMDIR: i32 = 1 << 16;
    pub const LINK: i32 = 1 << 17;
    pub const UNLINK: i32 = 1 << 18;
    pub const SYMLINK: i32 = 1 << 19;
    pub const RENAME: i32 = 1 << 20;
}

/// Falco's normalized open flags (PPM_O_*), which FileFlow.openFlags carries.
pub mod open_flags {
    pub const RDONLY: i32 = 1 << 0;
    pub const WRONLY: i32 = 1 << 1;
    pub const RDWR: i32 = RDONLY | WRONLY;
    pub const CREAT: i32 = 1 << 2;
    pub const APPEND: i32 = 1 << 3;
    pub const DSYNC: i32 = 1 << 4;
    pub const EXCL: i32 = 1 << 5;
    pub const NONBLOCK: i32 = 1 << 6;
    pub const SYNC: i32 = 1 << 7;
    pub const TRUNC: i32 = 1 << 8;
    pub const DIRECT: i32 = 1 << 9;
    pub const DIRECTORY: i32 = 1 << 10;
    pub const LARGEFILE: i32 = 1 << 11;
    pub const CLOEXEC: i32 = 1 << 12;
    pub const TMPFILE: i32 = 1 << 13;
}

/// Linux `O_*` flags (generic/x86-64 values) to Falco's PPM_O_* bits.
pub fn linux_open_flags_to_ppm(flags: u32) -> i32 {
    use open_flags as p;
    const O_ACCMODE: u32 = 0o3;
    let mut out = match flags & O_ACCMODE {
        0 => p::RDONLY,
        1 => p::WRONLY,
        _ => p::RDWR,
    };
    let map: [(u32, i32); 12] = [
        (0o100, p::CREAT),
        (0o200, p::EXCL),
        (0o1000, p::TRUNC),
        (0o2000, p::APPEND),
        (0o4000, p::NONBLOCK),
        (0o10000, p::DSYNC),
        (0o4000000, p::SYNC),
        (0o40000, p::DIRECT),
        (0o100000, p::LARGEFILE),
        (0o200000, p::DIRECTORY),
        (0o2000000, p::CLOEXEC),
        (0o20000000, p::TMPFILE),
    ];
    for (linux, ppm) in map {
        if flags & linux != 0 {
            out |= ppm;
        }
    }
    out
}

/// File.restype characters.
pub mod restype {
    pub const FILE: i32 = b'f' as i32;
    pub const DIRECTORY: i32 = b'd' as i32;
    pub const UNIX_SOCKET: i32 = b'u' as i32;
    pub const PIPE: i32 = b'p' as i32;
    pub const UNKNOWN: i32 = b'?' as i32;
}

/// restype from an inode's `i_mode` (S_IF* bits).
pub fn restype_from_mode(mode: u32) -> i32 {
    match mode & 0o170000 {
        0o100000 => restype::FILE,
        0o040000 => restype::DIRECTORY,
        0o140000 => restype::UNIX_SOCKET,
        0o010000 => restype::PIPE,
        _ => restype::UNKNOWN,
    }
}

/// Network protocol numbers as NetworkFlow.proto stores them.
pub mod proto {
    pub const ICMP: i32 = 1;
    pub const TCP: i32 = 6;
    pub const UDP: i32 = 17;
    pub const RAW: i32 = 254;
    pub const UNKNOWN: i32 = -1;
}

/// sysprint's rendering of opFlags: event names for events, the 11-column `OACWRNMSCTD`
/// pattern for flows.
pub fn op_flags_str(flags: i32) -> String {
    let mut s = String::new();
    for (bit, name) in [
        (op::MKDIR, "MKDIR"),
        (op::RMDIR, "RMDIR"),
        (op::LINK, "LINK"),
        (op::SYMLINK, "SYMLINK"),
        (op::UNLINK, "UNLINK"),
        (op::RENAME, "RENAME"),
    ] {
        if flags & bit != 0 {
            s.push_str(name);
        }
    }
    if !s.is_empty() {
        return s;
    }
    if flags & op::CLONE != 0 {
        s.push_str("CLONE");
    }
    if flags & op::EXEC != 0 {
        s.push_str("EXEC");
    }
    if flags & op::EXIT != 0 {
        s.push_str("EXIT");
    }
    if flags & op::SETUID != 0 {
        s.push_str("SETUID");
    }
    if !s.is_empty() {
        return s;
    }
    for (bit, c) in [
        (op::OPEN, 'O'),
        (op::ACCEPT, 'A'),
        (op::CONNECT, 'C'),
        (op::WRITE_SEND, 'W'),
        (op::READ_RECV, 'R'),
        (op::SETNS, 'N'),
        (op::MMAP, 'M'),
        (op::SHUTDOWN, 'S'),
        (op::CLOSE, 'C'),
        (op::TRUNCATE, 'T'),
        (op::DIGEST, 'D'),
    ] {
        s.push(if flags & bit != 0 { c } else { ' ' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_stored_as_the_collector_does() {
        assert_eq!(ipv4_to_int(Ipv4Addr::LOCALHOST), 16777343);
        assert_eq!(int_to_ipv4(16777343), Ipv4Addr::LOCALHOST);
        assert_eq!(ipv4_to_long(Ipv4Addr::new(192, 168, 59, 100)), 1681631424);
        assert_eq!(
            int_to_ipv4(ipv4_to_int(Ipv4Addr::new(255, 1, 2, 3))),
            Ipv4Addr::new(255, 1, 2, 3)
        );
    }

    #[test]
    fn foid_hashes_container_id_then_path() {
        // sha1("") for a host file with an empty path; sha1("abc") split across both parts.
        assert_eq!(
            foid(None, "").0,
            [
                0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b, 0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60,
                0x18, 0x90, 0xaf, 0xd8, 0x07, 0x09
            ]
        );
        assert_eq!(foid(Some("a"), "bc"), foid(None, "abc"));
        assert_ne!(foid(Some("bc"), "a"), foid(None, "abc"));
    }

    #[test]
    fn open_flags_use_falco_numbering() {
        use open_flags as p;
        // O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC
        assert_eq!(
            linux_open_flags_to_ppm(0o1 | 0o100 | 0o1000 | 0o2000000),
            p::WRONLY | p::CREAT | p::TRUNC | p::CLOEXEC
        );
        assert_eq!(linux_open_flags_to_ppm(0), p::RDONLY);
        assert_eq!(
            linux_open_flags_to_ppm(0o2 | 0o200000),
            p::RDWR | p::DIRECTORY
        );
        // O_SYNC includes O_DSYNC.
        assert_eq!(
            linux_open_flags_to_ppm(0o4010000),
            p::RDONLY | p::SYNC | p::DSYNC
        );
    }

    #[test]
    fn op_flags_render_like_sysprint() {
        assert_eq!(op_flags_str(op::OPEN | op::MMAP | op::CLOSE), "O     M C  ");
        assert_eq!(
            op_flags_str(op::CONNECT | op::WRITE_SEND | op::READ_RECV | op::TRUNCATE),
            "  CWR    T "
        );
        assert_eq!(op_flags_str(op::RENAME), "RENAME");
        assert_eq!(op_flags_str(op::CLONE | op::EXIT), "CLONEEXIT");
    }
}
