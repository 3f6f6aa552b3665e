//! What the state stage hands on: the current version of every entity (to keep until it is
//! forgotten), the entities to forget, and what processes did, with every reference resolved
//! (process OIDs, file FOIDs, containers).

use std::sync::Arc;

use sysflow::{Container, File, Foid, Oid, Pod, Process};

use super::{descriptors::FlowState, processes::ThreadCounts};
use crate::probe::records::Socket;

/// Who did something.
#[derive(Clone, Debug, PartialEq)]
pub struct Actor {
    pub proc: Oid,
    pub tid: i64,
    /// The process's container (None: the host); shared by the container's processes.
    pub container: Option<Arc<str>>,
}

/// The current version of an entity. Sinks keep it until it is forgotten; records refer to
/// it by its id.
#[derive(Clone, Debug, PartialEq)]
pub enum Entity {
    Process(Process),
    File(File),
    Container(Container),
    Pod(Pod),
}

/// An entity no later record refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forget {
    Process(Oid),
    File(Foid),
    Container(String),
    Pod(String),
}

/// What a flow's descriptor refers to.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowTarget {
    File {
        foid: Foid,
        /// Falco-numbered open flags; 0 when the open was not seen.
        open_flags: i32,
    },
    /// An IP socket with its endpoints, as far as they are known.
    Socket(Option<Socket>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    Entity(Entity),
    Forget(Forget),
    /// A clone, exec, exit or setuid (`op` is the SysFlow opFlag).
    ProcessOp {
        actor: Actor,
        ts: i64,
        op: i32,
        args: Vec<String>,
        ret: i32,
    },
    /// A mkdir, rmdir, link, symlink, unlink or rename (`op` is the SysFlow opFlag).
    PathOp {
        actor: Actor,
        ts: i64,
        op: i32,
        file: Foid,
        new_file: Option<Foid>,
        ret: i32,
    },
    /// One descriptor's flow until `end`: it was closed, its process ended (TRUNCATE in the
    /// flags), or its counters were flushed (the flow then starts again).
    Flow {
        actor: Actor,
        fd: i32,
        target: FlowTarget,
        flow: FlowState,
        end: i64,
    },
    /// The thread activity of a process that ended.
    Threads {
        actor: Actor,
        /// When the first thread was cloned (the process's time when none was).
        start: i64,
        end: i64,
        counts: ThreadCounts,
    },
    /// An open that failed (counted per workload; SysFlow has no record for it).
    OpenFailed {
        container: Option<Arc<str>>,
    },
    /// Live processes per container (None: the host), at each tick.
    LiveProcesses(Vec<(Option<Arc<str>>, i64)>),
}
