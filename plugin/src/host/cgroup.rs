//! cgroup v2 paths and ids, and the containers cgroup paths name. The cgroup2 mount point
//! differs between hosts (/sys/fs/cgroup on a pure-v2 host, /sys/fs/cgroup/unified on a hybrid
//! one), so it is always read from mountinfo. Container ids are recognised in the layouts of
//! containerd, CRI-O and Docker, with either the cgroupfs or the systemd cgroup driver:
//! without runtime metadata that is all standalone mode knows about a container.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sysflow::ContainerType;

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

/// The directory of a container's cgroup under the cgroup2 mount, from the OCI
/// `linux.cgroupsPath` the runtime reports (NRI `cgroups_path`). Two forms exist:
/// * cgroupfs driver: a path, `/kubepods/burstable/pod<uid>/<id>`;
/// * systemd driver: `slice:prefix:name`, e.g. `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`,
///   which systemd places at `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
pub fn cgroups_path_dir(mount: &Path, cgroups_path: &str) -> Option<PathBuf> {
    if cgroups_path.is_empty() {
        return None;
    }
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let relative = match parts.as_slice() {
        [path] => path.trim_start_matches('/').to_string(),
        [slice, prefix, name] if !slice.contains('/') => {
            let unit = if name.ends_with(".slice") || name.ends_with(".scope") {
                (*name).to_string()
            } else if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            let mut dir = expand_slice(slice)?;
            dir.push(unit);
            dir.to_string_lossy().into_owned()
        }
        _ => return None,
    };
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    Some(mount.join(relative))
}

/// systemd's slice nesting: `a-b-c.slice` lives in `a.slice/a-b.slice/a-b-c.slice`; the root
/// slice `-.slice` (or an empty one) is the top.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    if slice.is_empty() || slice == "-.slice" {
        return Some(PathBuf::new());
    }
    let name = slice.strip_suffix(".slice")?;
    if name.is_empty() || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return None;
    }
    let mut dir = PathBuf::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        dir.push(format!("{prefix}.slice"));
    }
    Some(dir)
}

/// A container recognised from its cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupContainer {
    /// The full 64-hex container id.
    pub id: String,
    pub runtime: ContainerType,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Recognises the container of a cgroup v2 path (as /proc/<pid>/cgroup shows it):
/// * `.../kubepods/burstable/pod<uid>/<id>` (cgroupfs driver: containerd or CRI-O via CRI)
/// * `.../cri-containerd-<id>.scope`, `.../crio-<id>.scope`, `.../docker-<id>.scope` (systemd)
/// * `/docker/<id>`, `/crio-<id>`, `/<namespace>/<id>` (plain containerd, e.g. `ctr run`)
pub fn container_of_path(path: &str) -> Option<CgroupContainer> {
    // A container's processes may sit in a sub-cgroup of its own (systemd inside, nested
    // cgroups): the innermost component that is a container wins.
    for component in path.rsplit('/') {
        let name = component.strip_suffix(".scope").unwrap_or(component);
        for (prefix, runtime) in [
            ("cri-containerd-", ContainerType::Containerd),
            ("crio-", ContainerType::Crio),
            ("docker-", ContainerType::Docker),
            ("containerd-", ContainerType::Containerd),
        ] {
            if let Some(id) = name.strip_prefix(prefix)
                && is_container_id(id)
            {
                return Some(CgroupContainer {
                    id: id.into(),
                    runtime,
                });
            }
        }
        if is_container_id(name) {
            let runtime = if path.contains("/docker/") {
                ContainerType::Docker
            } else if path.contains("kubepods") {
                ContainerType::Cri
            } else {
                ContainerType::Containerd
            };
            return Some(CgroupContainer {
                id: name.into(),
                runtime,
            });
        }
    }
    None
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` file (the `0::` line).
pub fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_both_cgroup_driver_forms() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroups_path_dir(mount, "/kubepods/burstable/pod12/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods/burstable/pod12/abc"))
        );
        assert_eq!(
            cgroups_path_dir(
                mount,
                "kubepods-burstable-pod12_34.slice:cri-containerd:abc"
            ),
            Some(PathBuf::from(
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice/cri-containerd-abc.scope"
            ))
        );
        assert_eq!(
            cgroups_path_dir(mount, "system.slice:docker:abc"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/docker-abc.scope"
            ))
        );
        assert_eq!(
            cgroups_path_dir(mount, ":cri-containerd:abc"),
            Some(PathBuf::from("/sys/fs/cgroup/cri-containerd-abc.scope"))
        );
        assert_eq!(cgroups_path_dir(mount, ""), None);
        assert_eq!(cgroups_path_dir(mount, "/a/../../etc"), None);
        assert_eq!(cgroups_path_dir(mount, "bad--name.slice:p:abc"), None);
        assert_eq!(cgroups_path_dir(mount, "a:b"), None);
    }

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

    const ID: &str = "4f2c1a0b9e8d7c6b5a49382716051f2e3d4c5b6a79880f1e2d3c4b5a69788796";

    #[test]
    fn recognises_every_layout() {
        let cases = [
            (
                format!("/kubepods/burstable/pod1234-5678/{ID}"),
                ContainerType::Cri,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-{ID}.scope"
                ),
                ContainerType::Containerd,
            ),
            (
                format!("/kubepods.slice/kubepods-pod12.slice/crio-{ID}.scope"),
                ContainerType::Crio,
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                ContainerType::Docker,
            ),
            (format!("/docker/{ID}"), ContainerType::Docker),
            (format!("/default/{ID}"), ContainerType::Containerd),
            (
                format!("/kubepods/besteffort/pod9/{ID}/init.scope"),
                ContainerType::Cri,
            ),
        ];
        for (path, runtime) in cases {
            assert_eq!(
                container_of_path(&path),
                Some(CgroupContainer {
                    id: ID.into(),
                    runtime
                }),
                "{path}"
            );
        }
        for host in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/kubepods/burstable/pod12",
        ] {
            assert_eq!(container_of_path(host), None, "{host}");
        }
    }

    #[test]
    fn reads_the_unified_line_of_a_hybrid_host() {
        let text = "12:cpu,cpuacct:/docker/x\n1:name=systemd:/\n0::/kubepods/burstable/pod1/abc\n";
        assert_eq!(unified_path(text), Some("/kubepods/burstable/pod1/abc"));
    }
}
