//! What the agent reads from the host rather than from kernel records: /proc (processes, their
//! descriptors and cgroups), the cgroup2 filesystem (cgroup ids) and /etc (user and group
//! names). One seam with configurable roots, so the stages that read the host are tested on
//! fake trees, without root.

pub mod cgroup;
pub mod proc;
pub mod trust;

use std::path::{Path, PathBuf};

pub use self::{
    cgroup::{CgroupContainer, CgroupError},
    proc::ProcSnapshot,
};

/// A host path the agent needs is not there.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "host.proc {0} is not the host's /proc (no {0}/1/cgroup): mount it there (hostPID, or hostPath /proc)"
    )]
    NoProc(PathBuf),
    #[error(
        "host.cgroup {0} is not a cgroup2 filesystem (no cgroup.controllers): mount the host's /sys/fs/cgroup there"
    )]
    NoCgroup2(PathBuf),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// Where the host's /proc, /etc and cgroup2 filesystem are.
#[derive(Clone, Debug)]
pub struct Host {
    proc: PathBuf,
    etc: PathBuf,
    cgroup2: PathBuf,
}

impl Host {
    /// The host as a DaemonSet pod sees it: its /proc at `proc` (the pod's own with hostPID,
    /// or the host's mounted elsewhere), its cgroup2 filesystem at `cgroup` (default: the
    /// mount /proc/self/mountinfo names), /etc. A path that is not what it should be is an
    /// error that says which mount is missing.
    pub fn at(proc: &Path, cgroup: Option<&Path>) -> Result<Host, HostError> {
        if !proc.join("1/cgroup").exists() {
            return Err(HostError::NoProc(proc.to_path_buf()));
        }
        let cgroup2 = match cgroup {
            Some(path) => path.to_path_buf(),
            None => cgroup::cgroup2_mount(Path::new("/proc/self/mountinfo"))?,
        };
        if !cgroup2.join("cgroup.controllers").exists() {
            return Err(HostError::NoCgroup2(cgroup2));
        }
        Ok(Host::new(proc, "/etc", cgroup2))
    }

    /// This machine: /proc, /etc, and the cgroup2 mount named in /proc/self/mountinfo.
    pub fn system() -> Result<Host, CgroupError> {
        let cgroup2 = cgroup::cgroup2_mount(Path::new("/proc/self/mountinfo"))?;
        Ok(Host::new("/proc", "/etc", cgroup2))
    }

    /// A host whose trees are elsewhere (a fake tree in tests).
    pub fn new(
        proc: impl Into<PathBuf>,
        etc: impl Into<PathBuf>,
        cgroup2: impl Into<PathBuf>,
    ) -> Host {
        Host {
            proc: proc.into(),
            etc: etc.into(),
            cgroup2: cgroup2.into(),
        }
    }

    /// The cgroup2 mount point.
    pub fn cgroup2(&self) -> &Path {
        &self.cgroup2
    }

    /// Everything /proc says about a process; None when it is gone (or a kernel thread).
    pub fn process(&self, pid: u32, with_env: bool) -> Option<ProcSnapshot> {
        proc::snapshot(&self.proc, pid, with_env)
    }

    /// Every process now.
    pub fn pids(&self) -> Vec<u32> {
        proc::all_pids(&self.proc)
    }

    /// What a descriptor points at: a path, `pipe:[ino]`, `socket:[ino]`, `anon_inode:...`.
    pub fn fd_target(&self, pid: u32, fd: i32) -> Option<String> {
        let link = self
            .proc
            .join(pid.to_string())
            .join("fd")
            .join(fd.to_string());
        std::fs::read_link(link)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// A process's cgroup v2 path (the `0::` line of /proc/<pid>/cgroup).
    pub fn cgroup_path_of(&self, pid: u32) -> Option<String> {
        let text = std::fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup")).ok()?;
        cgroup::unified_path(&text).map(str::to_owned)
    }

    /// The id of the cgroup at `path` (relative to the cgroup2 mount, with or without a
    /// leading `/`).
    pub fn cgroup_id(&self, path: &str) -> Result<u64, CgroupError> {
        cgroup::cgroup_id(&self.cgroup2.join(path.trim_start_matches('/')))
    }

    /// The cgroup id of a container from its runtime's `cgroupsPath` (either cgroup driver's
    /// form), or failing that from its process's cgroup.
    pub fn container_cgroup_id(&self, cgroups_path: &str, pid: u32) -> Option<u64> {
        if let Some(dir) = cgroup::cgroups_path_dir(&self.cgroup2, cgroups_path)
            && let Ok(id) = cgroup::cgroup_id(&dir)
        {
            return Some(id);
        }
        if pid > 0 {
            return self.cgroup_id(&self.cgroup_path_of(pid)?).ok();
        }
        None
    }

    /// A file of /etc (passwd, group); empty when it cannot be read.
    pub fn etc_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.etc.join(name)).unwrap_or_default()
    }

    /// The host name, as the kernel has it.
    pub fn hostname(&self) -> Option<String> {
        std::fs::read_to_string(self.proc.join("sys/kernel/hostname"))
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, symlink};

    use super::*;

    /// A fake host: one process (pid 42) with a descriptor and a cgroup, a passwd file, and a
    /// cgroup directory.
    #[test]
    fn a_fake_tree_is_read_like_the_real_one() {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        let pid = proc.join("42");
        std::fs::create_dir_all(pid.join("fd")).unwrap();
        std::fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        std::fs::write(proc.join("sys/kernel/hostname"), "node-7\n").unwrap();
        symlink("/srv/data.log", pid.join("fd/3")).unwrap();
        std::fs::write(pid.join("cgroup"), "0::/kubepods/pod1/c1\n").unwrap();
        let cgroup2 = root.path().join("cgroup");
        std::fs::create_dir_all(cgroup2.join("kubepods/pod1/c1")).unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();

        let host = Host::new(&proc, &etc, &cgroup2);
        assert_eq!(host.fd_target(42, 3).as_deref(), Some("/srv/data.log"));
        assert_eq!(host.fd_target(42, 4), None);
        assert_eq!(
            host.cgroup_path_of(42).as_deref(),
            Some("/kubepods/pod1/c1")
        );
        let id = std::fs::metadata(cgroup2.join("kubepods/pod1/c1"))
            .unwrap()
            .ino();
        assert_eq!(host.cgroup_id("/kubepods/pod1/c1").unwrap(), id);
        assert_eq!(host.container_cgroup_id("", 42), Some(id));
        assert_eq!(host.container_cgroup_id("/kubepods/pod1/c1", 0), Some(id));
        assert_eq!(host.container_cgroup_id("/kubepods/pod1/c2", 0), None);
        assert_eq!(host.etc_file("passwd"), "root:x:0:0::/root:/bin/sh\n");
        assert_eq!(host.etc_file("group"), "");
        assert_eq!(host.hostname().as_deref(), Some("node-7"));
        assert_eq!(host.pids(), vec![42]);
    }
}
