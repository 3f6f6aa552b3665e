//! Paths: resolution the way the collector does it (a relative path is joined to the
//! directory it is relative to, the cwd or a dirfd, when that is known, then `.` and `..` are
//! folded lexically; when the base is unknown the path stays as given), the working directory,
//! and the path operations that become FileEvents: MKDIR, RMDIR, LINK, SYMLINK, UNLINK,
//! RENAME (chmod and chown have no flag in the schema and change nothing).

use sysflow::encoding::{op, restype};
use sysflow_common::AT_FDCWD;

use super::{
    State,
    descriptors::FdKind,
    facts::{Actor, Fact},
};
use crate::probe::records::{PathOp, PathOpEvent};

const AT_REMOVEDIR: u32 = 0x200;

/// Joins `path` to `base` (when relative) and folds `.`/`..` components.
pub fn resolve(base: Option<&str>, path: &str) -> String {
    if path.is_empty() {
        return base.map(normalize).unwrap_or_default();
    }
    if path.starts_with('/') {
        return normalize(path);
    }
    match base {
        Some(base) if base.starts_with('/') => normalize(&format!("{base}/{path}")),
        _ => path.to_owned(),
    }
}

/// Folds `.`, `..` and repeated slashes of an absolute path.
pub fn normalize(path: &str) -> String {
    // Most paths are already normal: one copy, no splitting.
    if path.len() > 1
        && path.starts_with('/')
        && path[1..].split('/').all(|p| !matches!(p, "" | "." | ".."))
    {
        return path.to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

impl State {
    /// The directory a dirfd refers to, or the cwd for AT_FDCWD.
    pub(super) fn base_dir(&self, tgid: u32, dirfd: i32) -> Option<String> {
        let entry = self.procs.get(tgid)?;
        if dirfd == AT_FDCWD {
            return (!entry.cwd.is_empty()).then(|| entry.cwd.clone());
        }
        match &entry.fds.get(&dirfd)?.kind {
            FdKind::File { path, .. } if path.starts_with('/') => Some(path.to_string()),
            _ => None,
        }
    }

    pub(super) fn on_path_op(&mut self, e: PathOpEvent) {
        let c = &e.common;
        let tgid = self.process_for(c);
        let flag = match e.op {
            PathOp::Unlinkat if e.mode_or_flags & AT_REMOVEDIR != 0 => op::RMDIR,
            PathOp::Unlink | PathOp::Unlinkat => op::UNLINK,
            PathOp::Rmdir => op::RMDIR,
            PathOp::Rename | PathOp::Renameat | PathOp::Renameat2 => op::RENAME,
            PathOp::Mkdir | PathOp::Mkdirat => op::MKDIR,
            PathOp::Link | PathOp::Linkat => op::LINK,
            PathOp::Symlink | PathOp::Symlinkat => op::SYMLINK,
            PathOp::Chdir | PathOp::Fchdir => {
                if c.ret == 0 {
                    let dir = match (&e.op, e.fd) {
                        (PathOp::Fchdir, Some(fd)) => self.base_dir(tgid, fd),
                        _ => Some(resolve(self.base_dir(tgid, AT_FDCWD).as_deref(), &e.path)),
                    };
                    if let (Some(dir), Some(p)) = (dir, self.procs.get_mut(tgid)) {
                        p.cwd = dir;
                    }
                }
                return;
            }
            // No opFlag in the schema for chmod and chown.
            _ => return,
        };
        let ts = self.wall(c.ts_ns);
        let container = self.procs.get(tgid).and_then(|p| p.container_id.clone());
        let base = self.base_dir(tgid, e.dirfd);
        let path = resolve(base.as_deref(), &e.path);
        let rtype = if flag & (op::MKDIR | op::RMDIR) != 0 {
            restype::DIRECTORY
        } else {
            restype::UNKNOWN
        };
        let path2 = (flag & (op::RENAME | op::LINK | op::SYMLINK) != 0).then(|| {
            let base2 = self.base_dir(tgid, e.dirfd2);
            resolve(base2.as_deref(), &e.path2)
        });
        let allowed = |p: &str| self.containers.path_allowed(container.as_deref(), p);
        if !allowed(&path) && path2.as_deref().is_none_or(|p| !allowed(p)) {
            self.stats.filtered_by_path += 1;
            return;
        }
        let (file, _) = self.file(&path, container.as_deref(), rtype, ts);
        let new_file = path2.map(|p| self.file(&p, container.as_deref(), rtype, ts).0);
        let Some(entry) = self.procs.get(tgid) else {
            return;
        };
        self.facts.push(Fact::PathOp {
            actor: Actor {
                proc: entry.oid,
                tid: c.tid as i64,
                container,
            },
            ts,
            op: flag,
            file,
            new_file,
            ret: c.ret as i32,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_the_collector() {
        assert_eq!(
            resolve(Some("/srv/app"), "data/x.log"),
            "/srv/app/data/x.log"
        );
        assert_eq!(
            resolve(Some("/srv/app"), "../tested_file2.txt"),
            "/srv/tested_file2.txt"
        );
        assert_eq!(resolve(Some("/srv"), "/etc//passwd"), "/etc/passwd");
        assert_eq!(resolve(None, "./testing_dir"), "./testing_dir");
        assert_eq!(resolve(Some("/"), ".."), "/");
        assert_eq!(resolve(Some("/tmp/d"), ""), "/tmp/d");
        // The fast path leaves normal paths alone and sends the rest to folding.
        assert_eq!(normalize("/etc/hosts"), "/etc/hosts");
        assert_eq!(normalize("/etc/"), "/etc");
        assert_eq!(normalize("/a/./b/../c"), "/a/c");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/..."), "/...");
    }
}
