//! The state stage on a fake host tree (no root, no kernel): kernel records are made by hand.

use std::{os::unix::fs::symlink, path::Path, sync::Arc};

use sysflow::encoding::op;

use super::*;
use crate::{
    capture::CaptureMode,
    policy::Policy,
    probe::records::{
        CloseEvent, CloseReason, Common, CountersEvent, CountersReason, ExitEvent, FileId,
        IoCounters,
    },
    workloads::WorkloadMeta,
};

const CONTAINER: &str = "4f2c1a0b9e8d7c6b5a49382716051f2e3d4c5b6a79880f1e2d3c4b5a69788796";
/// Boot ns of pid 42's start (start_ticks 50 in its stat file).
const START_NS: u64 = 50 * crate::host::proc::TICK_NS;

/// A host with one process, pid 42 (`/app/server`, cwd `/srv`), in a containerd container's
/// cgroup, with descriptor 3 open on `/srv/data.log`.
fn fake_host(root: &Path) -> Host {
    let pid = root.join("proc/42");
    std::fs::create_dir_all(pid.join("fd")).unwrap();
    std::fs::write(
        pid.join("stat"),
        "42 (server) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 50 0 0",
    )
    .unwrap();
    std::fs::write(pid.join("status"), "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n").unwrap();
    std::fs::write(pid.join("cmdline"), b"/app/server\0--port\x008080\0").unwrap();
    symlink("/app/server", pid.join("exe")).unwrap();
    symlink("/srv", pid.join("cwd")).unwrap();
    symlink("/srv/data.log", pid.join("fd/3")).unwrap();
    std::fs::write(
        pid.join("cgroup"),
        format!("0::/system.slice/cri-containerd-{CONTAINER}.scope\n"),
    )
    .unwrap();
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    Host::new(root.join("proc"), etc, root.join("cgroup"))
}

fn common(ts_ns: u64, cgroup_id: u64) -> Common {
    Common {
        ts_ns,
        cgroup_id,
        tgid: 42,
        tid: 43,
        proc_start_ns: START_NS,
        ret: 0,
    }
}

fn written(bytes: u64) -> IoCounters {
    IoCounters {
        write_bytes: bytes,
        write_ops: 1,
        last_tid: 43,
        file: FileId {
            ino: 9,
            dev: 1,
            mode: 0o100644,
        },
        ..IoCounters::default()
    }
}

fn close(ts_ns: u64, fd: i32, bytes: u64) -> Record {
    Record::Close(CloseEvent {
        common: common(ts_ns, 7),
        fd,
        reason: CloseReason::Close,
        counters: Some(written(bytes)),
    })
}

fn flows(facts: &[Fact]) -> Vec<(i32, i32, i64)> {
    facts
        .iter()
        .filter_map(|f| match f {
            Fact::Flow { fd, flow, .. } => Some((*fd, flow.op_flags, flow.write_bytes)),
            _ => None,
        })
        .collect()
}

fn state(root: &Path, config: StateConfig) -> State {
    // Boot time 0 is wall time 1,000,000 ns.
    State::new(config, fake_host(root), 1_000_000)
}

#[test]
fn a_process_seen_at_start_is_tagged_from_its_cgroup_path_and_its_inherited_write_becomes_a_flow() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(root.path(), StateConfig::default());
    s.seed();
    let facts: Vec<Fact> = s.drain_facts().collect();
    let [
        Fact::Entity(Entity::Container(c)),
        Fact::Entity(Entity::File(f)),
        Fact::Entity(Entity::Process(p)),
    ] = facts.as_slice()
    else {
        panic!("container, file, process: {facts:#?}")
    };
    assert_eq!(
        (c.id.as_str(), c.name.as_str(), c.image.as_str()),
        (CONTAINER, "incomplete", "incomplete:incomplete")
    );
    assert_eq!(f.path, "/srv/data.log");
    assert_eq!(f.container_id.as_deref(), Some(CONTAINER));
    assert_eq!(
        (p.exe.as_str(), p.exe_args.as_str(), p.cwd.as_str()),
        ("/app/server", "--port 8080", "/srv")
    );
    assert_eq!(p.user_name, "root");
    assert_eq!(p.container_id.as_deref(), Some(CONTAINER));

    // One byte written to the inherited descriptor, then closed.
    s.apply(close(2_000, 3, 1));
    let facts: Vec<Fact> = s.drain_facts().collect();
    let [
        Fact::Flow {
            actor,
            fd: 3,
            target:
                FlowTarget::File {
                    foid,
                    open_flags: 0,
                },
            flow,
            end,
        },
    ] = facts.as_slice()
    else {
        panic!("one flow: {facts:#?}")
    };
    assert_eq!(*foid, f.oid);
    assert_eq!(actor.proc, p.oid);
    assert_eq!(actor.container.as_deref(), Some(CONTAINER));
    assert_eq!(
        (flow.op_flags, flow.write_ops, flow.write_bytes, flow.tid),
        (op::WRITE_SEND | op::CLOSE, 1, 1, 43)
    );
    assert_eq!(*end, 1_002_000, "wall clock");
    let stats = s.stats();
    assert_eq!((stats.kernel_records, stats.processes), (1, 1));
}

#[test]
fn the_runtimes_metadata_names_the_container_and_its_path_policy_filters_file_flows() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(root.path(), StateConfig::default());
    let policy = Policy::parse(
        "default: all\nrules:\n  - namespaces: [shop]\n    mode: all\n    paths: {exclude: [/srv]}\n",
        "p.yaml",
    )
    .unwrap();
    let decision = policy.decide("shop", &Default::default(), &Default::default());
    let container = sysflow::Container {
        id: CONTAINER.into(),
        name: "web".into(),
        image: "nginx:1".into(),
        imageid: String::new(),
        container_type: sysflow::ContainerType::Containerd,
        privileged: false,
        pod_id: None,
    };
    s.apply_workload(WorkloadUpdate::Upsert(Arc::new(WorkloadMeta {
        cgroup_id: 7,
        container: container.clone(),
        pod: None,
        mode: CaptureMode::ALL,
        paths: decision.paths,
    })));
    s.seed();
    let facts: Vec<Fact> = s.drain_facts().collect();
    assert_eq!(facts[0], Fact::Entity(Entity::Container(container)));
    assert!(
        !facts
            .iter()
            .any(|f| matches!(f, Fact::Entity(Entity::Container(c)) if c.name == "incomplete")),
        "no placeholder for a container the runtime named: {facts:#?}"
    );
    s.apply(close(2_000, 3, 10));
    assert_eq!(flows(&s.drain_facts().collect::<Vec<_>>()), []);
    assert_eq!(s.stats().filtered_by_path, 1);
}

#[test]
fn a_removed_container_is_forgotten_at_the_interval_after_next() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(root.path(), StateConfig::default());
    s.apply_workload(WorkloadUpdate::Removed {
        cgroup_id: 7,
        container_id: CONTAINER.into(),
    });
    s.apply_workload(WorkloadUpdate::PodRemoved {
        pod_id: "uid-1".into(),
    });
    s.interval();
    assert_eq!(s.drain_facts().count(), 0, "late records may still come");
    s.interval();
    assert_eq!(
        s.drain_facts().collect::<Vec<_>>(),
        [
            Fact::Forget(Forget::Container(CONTAINER.into())),
            Fact::Forget(Forget::Pod("uid-1".into()))
        ]
    );
}

#[test]
fn exit_truncates_open_flows_and_the_process_is_forgotten_after_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(
        root.path(),
        StateConfig {
            exit_grace_ns: 5_000,
            ..StateConfig::default()
        },
    );
    s.seed();
    let pid42 = s.procs.get(42).unwrap().oid;
    s.drain_facts().for_each(drop);
    // The exit's counters come first, then the exit ends every flow.
    s.apply(Record::Counters(CountersEvent {
        common: common(2_000, 7),
        fd: 3,
        reason: CountersReason::Exit,
        counters: written(5),
    }));
    s.apply(Record::Exit(ExitEvent {
        common: common(3_000, 7),
        exit_code: Some(0),
        signal: None,
        group_dead: true,
    }));
    let facts: Vec<Fact> = s.drain_facts().collect();
    assert_eq!(flows(&facts), [(3, op::WRITE_SEND | op::TRUNCATE, 5)]);
    assert!(matches!(
        facts.last(),
        Some(Fact::ProcessOp {
            op: op::EXIT,
            ret: 0,
            ..
        })
    ));
    s.tick(3_000 + 4_000);
    assert!(
        !s.drain_facts()
            .any(|f| matches!(f, Fact::Forget(Forget::Process(_))))
    );
    s.tick(3_000 + 5_000);
    let facts: Vec<Fact> = s.drain_facts().collect();
    assert!(
        facts.contains(&Fact::Forget(Forget::Process(pid42))),
        "{facts:#?}"
    );
    assert_eq!(s.stats().processes, 0);
}

#[test]
fn beyond_the_most_exited_processes_kept_one_is_forgotten_before_its_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(
        root.path(),
        StateConfig {
            exit_grace_ns: 1_000_000_000_000,
            max_exited_processes: 0,
            ..StateConfig::default()
        },
    );
    s.seed();
    let pid42 = s.procs.get(42).unwrap().oid;
    s.apply(Record::Exit(ExitEvent {
        common: common(3_000, 7),
        exit_code: Some(0),
        signal: None,
        group_dead: true,
    }));
    assert_eq!(s.stats().exited_processes, 1);
    s.drain_facts().for_each(drop);
    s.tick(3_001);
    let facts: Vec<Fact> = s.drain_facts().collect();
    assert!(
        facts.contains(&Fact::Forget(Forget::Process(pid42))),
        "{facts:#?}"
    );
    let stats = s.stats();
    assert_eq!(
        (
            stats.processes,
            stats.exited_processes,
            stats.exited_processes_evicted
        ),
        (0, 0, 1)
    );
}

#[test]
fn a_process_evicted_from_a_full_table_is_forgotten_downstream() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(
        root.path(),
        StateConfig {
            max_processes: 1,
            ..StateConfig::default()
        },
    );
    s.seed();
    let first = s.procs.get(42).unwrap().oid;
    s.drain_facts().for_each(drop);
    // A record from pid 42 started a second later: the pid was reused (a tick of /proc's
    // start time would still be the same process).
    let mut c = common(9_000, 7);
    c.proc_start_ns = START_NS + 1_000_000_000;
    s.apply(Record::Close(CloseEvent {
        common: c,
        fd: 3,
        reason: CloseReason::Close,
        counters: None,
    }));
    let facts: Vec<Fact> = s.drain_facts().collect();
    assert_eq!(facts[0], Fact::Forget(Forget::Process(first)), "{facts:#?}");
    assert_eq!(s.stats().processes_discovered, 1);
}

#[test]
fn processes_met_in_a_cgroup_before_the_runtime_registered_it_are_retagged() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(root.path(), StateConfig::default());
    // The cgroup path tells nothing (a sandbox's pause process, before RunPodSandbox).
    std::fs::remove_file(root.path().join("proc/42/cgroup")).unwrap();
    s.seed();
    s.apply(close(2_000, 3, 1));
    s.drain_facts().for_each(drop);
    let sandbox = "a".repeat(64);
    s.apply_workload(WorkloadUpdate::Upsert(Arc::new(WorkloadMeta {
        cgroup_id: 7,
        container: sysflow::Container {
            id: sandbox.clone(),
            name: "POD".into(),
            image: String::new(),
            imageid: String::new(),
            container_type: sysflow::ContainerType::Containerd,
            privileged: false,
            pod_id: None,
        },
        pod: None,
        mode: CaptureMode::ALL,
        paths: Arc::default(),
    })));
    let facts: Vec<Fact> = s.drain_facts().collect();
    let Some(Fact::Entity(Entity::Process(p))) = facts.last() else {
        panic!("the process again: {facts:#?}")
    };
    assert_eq!(
        (p.oid.hpid, p.container_id.as_deref()),
        (42, Some(sandbox.as_str()))
    );
}

#[test]
fn a_pipe_is_forgotten_downstream_once_its_last_descriptor_is_closed_and_a_path_stays() {
    let root = tempfile::tempdir().unwrap();
    let mut s = state(root.path(), StateConfig::default());
    symlink("pipe:[777]", root.path().join("proc/42/fd/4")).unwrap();
    s.seed();
    let files: Vec<(Foid, String)> = s
        .drain_facts()
        .filter_map(|f| match f {
            Fact::Entity(Entity::File(f)) => Some((f.oid, f.path)),
            _ => None,
        })
        .collect();
    let [(log, log_path), (pipe, pipe_path)] = files.as_slice() else {
        panic!("two files: {files:?}")
    };
    assert_eq!(
        (log_path.as_str(), pipe_path.as_str()),
        ("/srv/data.log", "pipe:[777]")
    );
    s.tick(2_000);
    assert_eq!(
        s.drain_facts()
            .filter(|f| matches!(f, Fact::Forget(Forget::File(_))))
            .count(),
        0,
        "both are open"
    );
    // The pipe's write end and the log closed: the pipe's flow comes first, then the pipe is
    // forgotten at the next tick; the log's path is kept, it can be opened again.
    s.apply(close(3_000, 4, 2));
    s.apply(close(3_500, 3, 1));
    let facts: Vec<Fact> = s.drain_facts().collect();
    assert_eq!(
        flows(&facts),
        [
            (4, op::WRITE_SEND | op::CLOSE, 2),
            (3, op::WRITE_SEND | op::CLOSE, 1)
        ]
    );
    s.tick(4_000);
    let forgotten: Vec<Fact> = s
        .drain_facts()
        .filter(|f| matches!(f, Fact::Forget(Forget::File(_))))
        .collect();
    assert_eq!(forgotten, [Fact::Forget(Forget::File(*pipe))]);
    assert_ne!(pipe, log);
    assert_eq!(s.stats().files, 1, "the log's path stays known");
}
