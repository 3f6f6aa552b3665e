//! The entities flat records share (a process with its ancestors, a file), with what is made
//! once per entity for all its records: text forms, parsed paths, and the memos of terms that
//! read only the entity.

use std::{
    cell::{OnceCell, RefCell, RefMut},
    fmt::Write as _,
    rc::Rc,
};

use sysflow::{Container, File, Process};

use super::{Header, PodEntry};
use crate::{alike::TermResults, golang, verdicts::QuietVerdicts};

/// A process as cached, with its command line (`exe args`, always with the space) made once
/// for all its records.
#[derive(Debug)]
pub struct ProcessEntry {
    pub process: Process,
    pub(super) cmdline: OnceCell<String>,
}

impl std::ops::Deref for ProcessEntry {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl ProcessEntry {
    pub fn cmdline(&self) -> &str {
        self.cmdline
            .get_or_init(|| format!("{} {}", self.exe, self.exe_args))
    }
}

/// A process and its ancestors as first looked up (sf-processor keeps this snapshot until the
/// next header), with the comma-joined lists its attributes read, made once per snapshot: every
/// record of the process shares them.
#[derive(Debug)]
pub struct Tree {
    pub processes: Vec<Rc<ProcessEntry>>,
    /// aname, aexe, acmdline, apid.
    pub(super) lists: [OnceCell<String>; 4],
    pub(super) memo: RefCell<EntityMemo>,
}

/// What a policy found of one entity (a process snapshot or a file) when evaluating terms
/// that read only it ([`crate::expr::Expr::Memoized`]): valid while the policy and the
/// entities those terms read are the ones in `key`. The key holds the entities, so none is
/// freed and its address reused by another while the results stand for it.
#[derive(Debug, Default)]
pub struct EntityMemo {
    pub(super) key: Option<MemoKey>,
    /// The terms' results; a process snapshot's are shared with the snapshots alike in what
    /// the terms read ([`crate::alike`]).
    pub results: Rc<RefCell<TermResults>>,
    /// A process snapshot's quiet verdicts (see [`crate::verdicts`]; a file's stays empty).
    pub verdicts: QuietVerdicts,
}

impl EntityMemo {
    /// The memo for the key `is` accepts, emptied (its key and results made by `make`) if it
    /// was made for another.
    pub(super) fn for_key(
        &mut self,
        is: impl FnOnce(&MemoKey) -> bool,
        make: impl FnOnce() -> (MemoKey, Rc<RefCell<TermResults>>),
    ) -> &mut EntityMemo {
        if !self.key.as_ref().is_some_and(is) {
            let (key, results) = make();
            self.key = Some(key);
            self.results = results;
            self.verdicts.clear();
        }
        self
    }
}

/// A policy and the process-wide entities a snapshot's terms read (None for a file's memo).
#[derive(Debug)]
pub(super) struct MemoKey {
    pub(super) policy: u64,
    pub(super) process: Option<Rc<ProcessEntry>>,
    pub(super) container: Option<Rc<Container>>,
    pub(super) pod: Option<Rc<PodEntry>>,
    pub(super) header: Option<Rc<Header>>,
}

impl MemoKey {
    /// Whether the memo was made under `policy` for a snapshot joined with these entities.
    pub(super) fn is_for(
        &self,
        policy: u64,
        process: Option<&Rc<ProcessEntry>>,
        container: Option<&Rc<Container>>,
        pod: Option<&Rc<PodEntry>>,
        header: Option<&Rc<Header>>,
    ) -> bool {
        self.policy == policy
            && same(self.process.as_ref(), process)
            && same(self.container.as_ref(), container)
            && same(self.pod.as_ref(), pod)
            && same(self.header.as_ref(), header)
    }
}

/// Whether both are the same entity (or both none).
fn same<T>(a: Option<&Rc<T>>, b: Option<&Rc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Rc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A file as cached, with the values its attributes derive from its path made once for all
/// its records.
#[derive(Debug)]
pub struct FileEntry {
    pub file: File,
    /// Tells this file record from any other of its context, even one at the same address
    /// after this one is freed (remembered verdicts name files by it).
    pub(super) serial: u64,
    /// The path and symlink of a `src->dst` path; None (the usual case): the path as it is.
    sym: OnceCell<Option<(String, String)>>,
    /// The directory, when `filepath.Dir` has to clean the path.
    directory: OnceCell<String>,
    oid: OnceCell<String>,
    pub(super) memo: RefCell<EntityMemo>,
}

impl std::ops::Deref for FileEntry {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl FileEntry {
    pub(super) fn new(file: File, serial: u64) -> FileEntry {
        FileEntry {
            file,
            serial,
            sym: OnceCell::new(),
            directory: OnceCell::new(),
            oid: OnceCell::new(),
            memo: RefCell::default(),
        }
    }

    /// (path, symlink), a `src->dst` path split.
    pub(super) fn sym(&self) -> (&str, &str) {
        let raw = self.path.as_str();
        let parsed = self.sym.get_or_init(|| {
            // Only a path starting with a hex digit can have the prefix.
            if raw.starts_with(|c: char| c.is_ascii_hexdigit()) {
                let (path, link) = golang::sym_path(raw);
                (!link.is_empty()).then_some((path, link))
            } else {
                None
            }
        });
        match parsed {
            Some((path, link)) => (path, link),
            None => (raw, ""),
        }
    }

    /// `filepath.Dir` of the (parsed) path, borrowed from it when it is already clean.
    pub(super) fn directory(&self) -> &str {
        let path = self.sym().0;
        golang::dir_if_clean(path)
            .unwrap_or_else(|| self.directory.get_or_init(|| golang::dir(path)))
    }

    pub(super) fn oid(&self) -> &str {
        self.oid.get_or_init(|| hex(&self.file.oid.0))
    }
}

impl std::ops::Deref for Tree {
    type Target = [Rc<ProcessEntry>];
    fn deref(&self) -> &[Rc<ProcessEntry>] {
        &self.processes
    }
}

/// The memo of an entity, for the record being evaluated (one at a time: the context and its
/// records stay on one thread, so no lock and no atomic count is paid per record).
pub(super) fn borrow_memo(memo: &RefCell<EntityMemo>) -> RefMut<'_, EntityMemo> {
    memo.borrow_mut()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
