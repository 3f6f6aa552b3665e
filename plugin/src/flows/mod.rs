//! The flows stage: a pure translation of the state stage's facts into SysFlow records
//! (ProcessEvent, FileEvent, FileFlow, NetworkFlow, ProcessFlow), each tagged with its
//! container for the sinks that count per workload. It keeps no state but a count.

pub mod network;

use std::sync::Arc;

use sysflow::{FileEvent, FileFlow, ProcessEvent, ProcessFlow, Record as SfRecord, encoding::op};

use crate::state::{Entity, Fact, FlowTarget, Forget};

/// What the sinks consume.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// The current version of an entity: keep it until it is forgotten.
    Entity(Entity),
    Forget(Forget),
    /// A SysFlow record of a process in `container` (None: the host).
    Record {
        record: SfRecord,
        container: Option<Arc<str>>,
    },
    /// An open that failed (SysFlow has no record for it).
    OpenFailed {
        container: Option<Arc<str>>,
    },
    /// Live processes per container, at each tick.
    LiveProcesses(Vec<(Option<Arc<str>>, i64)>),
}

#[derive(Default)]
pub struct Flows {
    /// FileFlow and NetworkFlow records made.
    pub flows_exported: u64,
}

impl Flows {
    /// Appends what `fact` becomes to `out`.
    pub fn translate(&mut self, fact: Fact, out: &mut Vec<Item>) {
        let item =
            match fact {
                Fact::Entity(e) => Item::Entity(e),
                Fact::Forget(f) => Item::Forget(f),
                Fact::OpenFailed { container } => Item::OpenFailed { container },
                Fact::LiveProcesses(live) => Item::LiveProcesses(live),
                Fact::ProcessOp {
                    actor,
                    ts,
                    op,
                    args,
                    ret,
                } => Item::Record {
                    record: SfRecord::ProcessEvent(ProcessEvent {
                        proc_oid: actor.proc,
                        ts,
                        tid: actor.tid,
                        op_flags: op,
                        args,
                        ret,
                    }),
                    container: actor.container,
                },
                Fact::PathOp {
                    actor,
                    ts,
                    op,
                    file,
                    new_file,
                    ret,
                } => Item::Record {
                    record: SfRecord::FileEvent(FileEvent {
                        proc_oid: actor.proc,
                        ts,
                        tid: actor.tid,
                        op_flags: op,
                        file_oid: file,
                        ret,
                        new_file_oid: new_file,
                    }),
                    container: actor.container,
                },
                Fact::Flow {
                    actor,
                    fd,
                    target,
                    flow,
                    end,
                } => {
                    self.flows_exported += 1;
                    let record =
                        match target {
                            FlowTarget::File { foid, open_flags } => SfRecord::FileFlow(FileFlow {
                                proc_oid: actor.proc,
                                ts: flow.ts,
                                tid: flow.tid,
                                op_flags: flow.op_flags,
                                // The open's flags belong to the flow that saw the open.
                                open_flags: if flow.op_flags & op::OPEN != 0 {
                                    open_flags
                                } else {
                                    0
                                },
                                end_ts: end.max(flow.ts),
                                file_oid: foid,
                                fd,
                                num_r_recv_ops: flow.read_ops,
                                num_w_send_ops: flow.write_ops,
                                num_r_recv_bytes: flow.read_bytes,
                                num_w_send_bytes: flow.write_bytes,
                            }),
                            FlowTarget::Socket(sock) => SfRecord::NetworkFlow(
                                network::network_flow(actor.proc, fd, &flow, end, sock.as_ref()),
                            ),
                        };
                    Item::Record {
                        record,
                        container: actor.container,
                    }
                }
                Fact::Threads {
                    actor,
                    start,
                    end,
                    counts,
                } => {
                    let mut op_flags = 0;
                    if counts.cloned + counts.clone_errors > 0 {
                        op_flags |= op::CLONE;
                    }
                    if counts.exited > 0 {
                        op_flags |= op::EXIT;
                    }
                    Item::Record {
                        record: SfRecord::ProcessFlow(ProcessFlow {
                            proc_oid: actor.proc,
                            ts: start,
                            num_threads_cloned: counts.cloned,
                            op_flags,
                            end_ts: end,
                            num_threads_exited: counts.exited,
                            num_clone_errors: counts.clone_errors,
                        }),
                        container: actor.container,
                    }
                }
            };
        out.push(item);
    }
}

#[cfg(test)]
mod tests {
    use sysflow::{Foid, Oid};

    use super::*;
    use crate::state::{Actor, FlowState, ThreadCounts};

    fn actor() -> Actor {
        Actor {
            proc: Oid {
                create_ts: 100,
                hpid: 42,
            },
            tid: 43,
            container: Some(Arc::from("c1")),
        }
    }

    fn one(fact: Fact) -> Item {
        let mut out = Vec::new();
        Flows::default().translate(fact, &mut out);
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[test]
    fn a_file_flow_keeps_its_open_flags_only_when_it_saw_the_open() {
        let file = FlowTarget::File {
            foid: Foid([7; 20]),
            open_flags: 3,
        };
        let mut flow = FlowState::starting(1_000, op::OPEN | op::WRITE_SEND | op::CLOSE, 43);
        flow.write_ops = 1;
        flow.write_bytes = 1;
        let fact = |flow: &FlowState| Fact::Flow {
            actor: actor(),
            fd: 3,
            target: file.clone(),
            flow: flow.clone(),
            end: 2_000,
        };
        let Item::Record {
            record: SfRecord::FileFlow(f),
            container,
        } = one(fact(&flow))
        else {
            panic!("a FileFlow")
        };
        assert_eq!(
            (f.open_flags, f.num_w_send_bytes, f.fd, f.end_ts),
            (3, 1, 3, 2_000)
        );
        assert_eq!(container.as_deref(), Some("c1"));
        flow.op_flags = op::WRITE_SEND;
        let Item::Record {
            record: SfRecord::FileFlow(f),
            ..
        } = one(fact(&flow))
        else {
            panic!("a FileFlow")
        };
        assert_eq!(f.open_flags, 0);
    }

    #[test]
    fn thread_activity_becomes_a_process_flow_with_clone_and_exit_flags() {
        let item = one(Fact::Threads {
            actor: actor(),
            start: 5,
            end: 9,
            counts: ThreadCounts {
                first_ts: 5,
                cloned: 0,
                exited: 2,
                clone_errors: 1,
            },
        });
        let Item::Record {
            record: SfRecord::ProcessFlow(p),
            ..
        } = item
        else {
            panic!("a ProcessFlow")
        };
        assert_eq!(p.op_flags, op::CLONE | op::EXIT);
        assert_eq!(
            (p.ts, p.end_ts, p.num_threads_exited, p.num_clone_errors),
            (5, 9, 2, 1)
        );
    }
}
