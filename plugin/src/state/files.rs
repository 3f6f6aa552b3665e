//! File entities: the FOID of every file a record referred to, and its File entity, reported
//! once. A FOID is a SHA-1 of the container id and the path, computed once per file instead of
//! once per open. Bounded: past `max_files`, the files no open descriptor refers to are
//! forgotten (they are reported again if they come back); the FOID cache starts over past
//! twice that.
//!
//! Pipes, unnamed sockets and anonymous inodes (`pipe:[…]`, `socket:[…]`, `anon_inode:…`) are
//! different: once the last descriptor on one is gone, nothing can refer to it again. A shell
//! makes several per command, so a busy node would fill the table with dead ones. Every
//! descriptor on such a file shares the table's one `Arc` of its name, and the table forgets
//! the file once it holds the only reference (see [`FileTable::release_unheld`]).

use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use sysflow::{File, Foid, SfObjectState, encoding::foid};

use super::room::GiveBackRoom;

pub struct FileTable {
    foids: FoidCache,
    /// Files reported and not forgotten.
    known: HashSet<Foid>,
    /// The reported pipes, unnamed sockets and anonymous inodes, with the name their
    /// descriptors share.
    unnamed: HashMap<Foid, Arc<str>>,
    max_files: usize,
    pub evictions: u64,
}

/// Whether `path` names an object that exists only while descriptors refer to it (what
/// /proc/<pid>/fd shows for a pipe, an unnamed socket or an anonymous inode), rather than a
/// place in a filesystem.
fn is_unnamed(path: &str) -> bool {
    !path.starts_with('/')
}

impl FileTable {
    pub fn new(max_files: usize) -> FileTable {
        FileTable {
            foids: FoidCache::new(max_files.saturating_mul(2)),
            known: HashSet::default(),
            unnamed: HashMap::default(),
            max_files,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The FOID of `path` in `container` (None: the host) and the name a descriptor on it
    /// keeps, with the File entity to report when it is new.
    pub fn file(
        &mut self,
        path: &str,
        container: Option<&str>,
        restype: i32,
        ts: i64,
    ) -> (Foid, Arc<str>, Option<File>) {
        let (oid, name) = if is_unnamed(path) {
            // Not cached by name: each is opened once, and the cache would keep the dead ones.
            let oid = foid(container, path);
            let name = self.unnamed.entry(oid).or_insert_with(|| path.into());
            (oid, Arc::clone(name))
        } else {
            (self.foids.get(container, path), path.into())
        };
        let new = self.known.insert(oid).then(|| File {
            state: SfObjectState::Created,
            oid,
            ts,
            restype,
            path: path.into(),
            container_id: container.map(str::to_owned),
        });
        (oid, name, new)
    }

    /// Forgets the pipes, unnamed sockets and anonymous inodes no descriptor refers to any
    /// more (the table holds the only reference to their name); returns them.
    pub fn release_unheld(&mut self) -> Vec<Foid> {
        let mut released = Vec::new();
        self.unnamed.retain(|oid, name| {
            let held = Arc::strong_count(name) > 1;
            if !held {
                released.push(*oid);
            }
            held
        });
        for oid in &released {
            self.known.remove(oid);
        }
        self.unnamed.give_back_room();
        self.known.give_back_room();
        released
    }

    /// Past the bound, forgets every file not in `open`; returns the forgotten ones.
    pub fn bound(&mut self, open: impl Fn() -> HashSet<Foid>) -> Vec<Foid> {
        if self.known.len() <= self.max_files {
            return Vec::new();
        }
        let open = open();
        let forgotten: Vec<Foid> = self
            .known
            .iter()
            .filter(|o| !open.contains(*o))
            .copied()
            .collect();
        self.known.retain(|o| open.contains(o));
        self.unnamed.retain(|o, _| open.contains(o));
        self.known.give_back_room();
        self.unnamed.give_back_room();
        self.evictions += forgotten.len() as u64;
        forgotten
    }

    /// A removed container's FOIDs are not needed again.
    pub fn forget_container(&mut self, container: &str) {
        self.foids.forget_container(container);
    }
}

/// FOIDs by container and path. Bounded: cleared all at once when it holds more than its limit
/// (they are recomputed on demand).
struct FoidCache {
    host: HashMap<Box<str>, Foid>,
    containers: HashMap<Box<str>, HashMap<Box<str>, Foid>>,
    len: usize,
    max: usize,
}

impl FoidCache {
    fn new(max: usize) -> FoidCache {
        FoidCache {
            host: HashMap::default(),
            containers: HashMap::default(),
            len: 0,
            max: max.max(1),
        }
    }

    fn get(&mut self, container: Option<&str>, path: &str) -> Foid {
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

    fn forget_container(&mut self, container: &str) {
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

    #[test]
    fn a_file_is_new_once_and_the_table_forgets_closed_files_past_its_bound() {
        let mut t = FileTable::new(2);
        let (a, _, new) = t.file("/a", None, 1, 5);
        assert_eq!(new.map(|f| (f.path, f.ts)), Some(("/a".to_string(), 5)));
        assert!(t.file("/a", None, 1, 6).2.is_none(), "reported once");
        let (b, _, _) = t.file("/b", Some("c1"), 1, 7);
        assert_eq!(
            t.bound(HashSet::default),
            Vec::<Foid>::new(),
            "within the bound"
        );
        t.file("/c", None, 1, 8);
        let mut forgotten = t.bound(|| HashSet::from_iter([b]));
        forgotten.sort();
        let mut expected = vec![a, foid(None, "/c")];
        expected.sort();
        assert_eq!(forgotten, expected, "all but the open one");
        assert_eq!((t.len(), t.evictions), (1, 2));
        assert!(t.file("/a", None, 1, 9).2.is_some(), "reported again");
    }

    #[test]
    fn a_pipe_is_forgotten_once_no_descriptor_holds_its_name_and_a_path_is_not() {
        let mut t = FileTable::new(100);
        let (pipe, read_end, new) = t.file("pipe:[4242]", Some("c1"), 'p' as i32, 5);
        assert_eq!(pipe, foid(Some("c1"), "pipe:[4242]"));
        assert!(new.is_some());
        let (again, write_end, new) = t.file("pipe:[4242]", Some("c1"), 'p' as i32, 6);
        assert_eq!((again, new), (pipe, None), "the other end: the same file");
        assert!(
            Arc::ptr_eq(&read_end, &write_end),
            "one name for every descriptor"
        );
        let (_, path_name, _) = t.file("/etc/hosts", Some("c1"), 'f' as i32, 7);
        drop(path_name);
        let forked = Arc::clone(&read_end);
        drop(read_end);
        drop(write_end);
        assert_eq!(
            t.release_unheld(),
            Vec::<Foid>::new(),
            "a child still has it"
        );
        drop(forked);
        assert_eq!(t.release_unheld(), vec![pipe]);
        assert_eq!(t.len(), 1, "/etc/hosts stays: a path can be opened again");
        assert!(t.file("/etc/hosts", Some("c1"), 'f' as i32, 8).2.is_none());
        assert_eq!(t.release_unheld(), Vec::<Foid>::new());
        assert!(
            t.file("pipe:[4242]", Some("c1"), 'p' as i32, 9).2.is_some(),
            "a new pipe with the inode number again is a new file"
        );
    }
}
