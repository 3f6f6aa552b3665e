//! FOIDs by container and path: a FOID is a SHA-1 of the container id and the path, computed
//! once per file instead of once per open. Bounded: forgotten all at once when it holds more
//! than its limit (they are recomputed on demand).

use foldhash::HashMap;
use sysflow::{Foid, encoding::foid};

pub struct FoidCache {
    host: HashMap<Box<str>, Foid>,
    containers: HashMap<Box<str>, HashMap<Box<str>, Foid>>,
    len: usize,
    max: usize,
}

impl FoidCache {
    pub fn new(max: usize) -> FoidCache {
        FoidCache {
            host: HashMap::default(),
            containers: HashMap::default(),
            len: 0,
            max: max.max(1),
        }
    }

    /// The FOID of `path` in `container` (None: the host).
    pub fn get(&mut self, container: Option<&str>, path: &str) -> Foid {
        let known = match container {
            None => self.host.get(path),
            Some(c) => self.containers.get(c).and_then(|m| m.get(path)),
        };
        if let Some(oid) = known {
            return *oid;
        }
        let oid = foid(container, path);
        if self.len >= self.max {
            self.host.clear();
            self.containers.clear();
            self.len = 0;
        }
        let map = match container {
            None => &mut self.host,
            Some(c) => self.containers.entry(c.into()).or_default(),
        };
        map.insert(path.into(), oid);
        self.len += 1;
        oid
    }

    /// Forgets a removed container's files.
    pub fn forget_container(&mut self, container: &str) {
        if let Some(m) = self.containers.remove(container) {
            self.len -= m.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_foid_is_the_computed_one_and_the_bound_holds() {
        let mut c = FoidCache::new(2);
        let a = c.get(Some("abc"), "/etc/hosts");
        assert_eq!(a, foid(Some("abc"), "/etc/hosts"));
        assert_eq!(c.get(Some("abc"), "/etc/hosts"), a);
        assert_ne!(
            c.get(None, "/etc/hosts"),
            a,
            "the container is part of the FOID"
        );
        assert_eq!(c.len, 2);
        c.get(None, "/tmp/x");
        assert_eq!(c.len, 1, "cleared at the bound, then the new one");
        c.forget_container("abc");
        assert_eq!(c.get(None, "/tmp/x"), foid(None, "/tmp/x"));
    }
}
