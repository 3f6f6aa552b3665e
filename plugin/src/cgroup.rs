//! cgroup v2 paths and ids. The cgroup2 mount point differs between hosts (/sys/fs/cgroup on a
//! pure-v2 host, /sys/fs/cgroup/unified on a hybrid one), so it is always read from mountinfo.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// mountinfo could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup2 filesystem in {0}: this agent needs the unified (v2) hierarchy")]
    NoCgroup2(PathBuf),
    /// A cgroup directory could not be inspected.
    #[error("cgroup {path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Finds the cgroup2 mount point in a mountinfo file (normally /proc/self/mountinfo).
pub fn cgroup2_mount(mountinfo: &Path) -> Result<PathBuf, CgroupError> {
    let text = std::fs::read_to_string(mountinfo).map_err(|source| CgroupError::Read {
        path: mountinfo.into(),
        source,
    })?;
    parse_cgroup2_mount(&text).ok_or_else(|| CgroupError::NoCgroup2(mountinfo.into()))
}

/// mountinfo lines: `id parent major:minor root mountpoint options [optional...] - fstype ...`.
fn parse_cgroup2_mount(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// bpf_get_current_cgroup_id() returns for tasks in it.
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Stat {
            path: dir.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_hybrid_and_the_pure_v2_mount() {
        let hybrid = "25 18 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
            26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
            27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn unescapes_spaces_in_mount_points() {
        let line = "30 1 0:26 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(line),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
    }

    #[test]
    fn this_machine_has_a_cgroup2_mount_whose_id_is_its_inode() {
        let mount = cgroup2_mount(Path::new("/proc/self/mountinfo")).unwrap();
        assert!(cgroup_id(&mount).unwrap() > 0);
    }
}
