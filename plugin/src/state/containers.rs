//! Containers: which container (or the host) each cgroup belongs to, what each container's
//! policy keeps of file paths, and the container ids records share.
//!
//! A cgroup the runtime told about (an NRI or containerd-API upsert) is known for as long as
//! the container lives. Any other cgroup is resolved once, through a member process's cgroup
//! path, and cached; the cache starts over past its bound (resolution is cheap).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use sysflow::ContainerType;

use crate::{host::CgroupContainer, policy::PathFilter};

/// Bound on cgroups resolved from paths.
const MAX_RESOLVED: usize = 65_536;

/// A cgroup the runtime registered.
pub struct Adopted {
    /// Its container's shared id.
    pub id: Arc<str>,
    /// Processes met in the cgroup before were not given this container: retag them.
    pub retag: bool,
}

#[derive(Default)]
pub struct ContainerTable {
    /// Cgroups the runtime registered: container id.
    adopted: HashMap<u64, Arc<str>>,
    /// Cgroups resolved from a process's cgroup path (None: the host).
    resolved: HashMap<u64, Option<Arc<str>>>,
    /// Every container reported, by id: its shared id (one allocation per container).
    ids: HashSet<Arc<str>>,
    /// File path prefixes each container's policy keeps (containers without one keep all).
    path_filters: HashMap<Arc<str>, Arc<PathFilter>>,
}

impl ContainerTable {
    /// The container of a cgroup, if the table has met the cgroup before.
    pub fn of_cgroup(&self, cgroup_id: u64) -> Option<Option<Arc<str>>> {
        if let Some(id) = self.adopted.get(&cgroup_id) {
            return Some(Some(id.clone()));
        }
        self.resolved.get(&cgroup_id).cloned()
    }

    /// Remembers what a cgroup's path said (cgroup id 0: nothing to remember).
    pub fn remember(&mut self, cgroup_id: u64, container: Option<Arc<str>>) {
        if cgroup_id == 0 {
            return;
        }
        if self.resolved.len() >= MAX_RESOLVED {
            self.resolved.clear();
        }
        self.resolved.insert(cgroup_id, container);
    }

    /// The shared id of a container recognised from its cgroup path; `true` when the table
    /// had not met it (its placeholder entity is then due).
    pub fn intern(&mut self, found: &CgroupContainer) -> (Arc<str>, bool) {
        match self.ids.get(found.id.as_str()) {
            Some(id) => (id.clone(), false),
            None => {
                let id: Arc<str> = Arc::from(found.id.as_str());
                self.ids.insert(id.clone());
                (id, true)
            }
        }
    }

    /// Takes in what the runtime says about a cgroup's container.
    pub fn adopt(&mut self, cgroup_id: u64, id: &str, paths: &Arc<PathFilter>) -> Adopted {
        let (id, _) = self.intern(&CgroupContainer {
            id: id.to_owned(),
            runtime: ContainerType::Containerd,
        });
        // Records came from the cgroup before the runtime registered it, and their processes
        // were given what its path said (or nothing).
        let retag = self
            .resolved
            .remove(&cgroup_id)
            .is_some_and(|before| before.as_ref() != Some(&id));
        self.adopted.insert(cgroup_id, id.clone());
        if paths.is_everything() {
            self.path_filters.remove(&id);
        } else {
            self.path_filters.insert(id.clone(), paths.clone());
        }
        Adopted { id, retag }
    }

    /// Whether a file path passes its container's policy.
    pub fn path_allowed(&self, container: Option<&str>, path: &str) -> bool {
        container
            .and_then(|c| self.path_filters.get(c))
            .is_none_or(|f| f.allows(path))
    }

    /// A removed container: no later record refers to it.
    pub fn forget(&mut self, cgroup_id: u64, id: &str) {
        self.adopted.remove(&cgroup_id);
        self.resolved.remove(&cgroup_id);
        self.ids.remove(id);
        self.path_filters.remove(id);
    }

    /// Containers known.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2c1a0b9e8d7c6b5a49382716051f2e3d4c5b6a79880f1e2d3c4b5a69788796";

    #[test]
    fn an_adopted_cgroup_outlives_the_resolution_cache_until_forgotten() {
        let mut t = ContainerTable::default();
        let everything = Arc::new(PathFilter::default());
        t.remember(7, None);
        let Adopted { id, retag } = t.adopt(7, ID, &everything);
        assert!(retag, "met before, untagged");
        assert!(!t.adopt(7, ID, &everything).retag);
        for cgroup in 100..100 + MAX_RESOLVED as u64 + 1 {
            t.remember(cgroup, None);
        }
        assert_eq!(t.of_cgroup(7), Some(Some(id.clone())));
        assert_eq!(t.of_cgroup(100), None, "the cache started over");
        let (again, new) = t.intern(&CgroupContainer {
            id: ID.into(),
            runtime: ContainerType::Cri,
        });
        assert!(Arc::ptr_eq(&id, &again) && !new);
        t.forget(7, ID);
        assert_eq!(t.of_cgroup(7), None);
        assert!(t.is_empty());
    }

    #[test]
    fn a_cgroup_id_of_zero_is_never_cached() {
        let mut t = ContainerTable::default();
        t.remember(0, None);
        assert_eq!(t.of_cgroup(0), None);
    }
}
