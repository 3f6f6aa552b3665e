//! Container ids from cgroup paths, for containerd, CRI-O and Docker layouts, with either the
//! cgroupfs or the systemd cgroup driver. Without runtime metadata this is all standalone mode
//! knows about a container; the NRI plugin adds names, images and pods.

use std::collections::HashMap;

use sysflow::ContainerType;

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

/// cgroup id -> container (or host), resolved once per cgroup through a member process.
#[derive(Default)]
pub struct ContainerResolver {
    by_cgroup: HashMap<u64, Option<CgroupContainer>>,
}

/// Bound on remembered cgroups; past it the cache starts over (resolution is cheap).
const MAX_CGROUPS: usize = 65_536;

impl ContainerResolver {
    /// The container of `cgroup_id`, reading `/proc/<tgid>/cgroup` the first time.
    pub fn resolve(&mut self, cgroup_id: u64, tgid: u32) -> Option<CgroupContainer> {
        if let Some(known) = self.by_cgroup.get(&cgroup_id) {
            return known.clone();
        }
        let text = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
        let found = unified_path(&text).and_then(container_of_path);
        if self.by_cgroup.len() >= MAX_CGROUPS {
            self.by_cgroup.clear();
        }
        self.by_cgroup.insert(cgroup_id, found.clone());
        found
    }

    /// Tells the resolver what a cgroup is (e.g. from NRI, or from a test).
    pub fn insert(&mut self, cgroup_id: u64, container: Option<CgroupContainer>) {
        self.by_cgroup.insert(cgroup_id, container);
    }

    pub fn knows(&self, cgroup_id: u64) -> bool {
        self.by_cgroup.contains_key(&cgroup_id)
    }

    pub fn forget(&mut self, cgroup_id: u64) {
        self.by_cgroup.remove(&cgroup_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
