//! A set of records with one of every writable type and edge values (empty strings, extreme
//! ints, IPv4 and IPv6 endpoints, long paths, unicode), shared by the conformance tests.
#![allow(dead_code)]

use std::{collections::BTreeMap, net::Ipv4Addr};

use sysflow::{encoding::*, *};

pub struct Sample {
    pub pods: Vec<Pod>,
    pub containers: Vec<Container>,
    pub processes: Vec<Process>,
    pub files: Vec<File>,
    pub events: Vec<Record>,
}

pub const LONG_PATH_LEN: usize = 4000;

pub fn sample() -> Sample {
    let pod = Pod {
        ts: 1_700_000_000_000_000_000,
        id: "c75101e7-eed0-4a1e-9c1b-000000000001".into(),
        name: "web-7d9f".into(),
        node_name: "node-α".into(),
        host_ip: vec![ipv4_to_long(Ipv4Addr::new(192, 168, 59, 100))],
        internal_ip: vec![
            ipv4_to_long(Ipv4Addr::new(10, 244, 0, 7)),
            ipv4_to_long(Ipv4Addr::new(255, 255, 255, 255)),
        ],
        namespace: "shop".into(),
        restart_count: i64::MAX,
        labels: BTreeMap::from([
            ("app".into(), "web".into()),
            ("tier".into(), "frontend ✓".into()),
        ]),
        selectors: BTreeMap::new(),
        services: vec![Service {
            name: "web".into(),
            id: "svc-1".into(),
            namespace: "shop".into(),
            port_list: vec![Port {
                port: 80,
                target_port: 8080,
                node_port: 30080,
                proto: "TCP".into(),
            }],
            cluster_ip: vec![ipv4_to_long(Ipv4Addr::new(10, 96, 0, 10))],
        }],
    };
    let container = Container {
        id: "0123456789ab".into(),
        name: "web".into(),
        image: "registry.local/web:1.2".into(),
        imageid: "sha256:feedface".into(),
        container_type: ContainerType::Cri,
        privileged: true,
        pod_id: Some(pod.id.clone()),
    };
    let bare = Container {
        id: "ba5eba11cafe".into(),
        name: String::new(),
        image: String::new(),
        imageid: String::new(),
        container_type: ContainerType::Containerd,
        privileged: false,
        pod_id: None,
    };
    let init = Process {
        state: SfObjectState::Created,
        oid: Oid {
            create_ts: 1,
            hpid: 1,
        },
        poid: None,
        ts: 1,
        exe: "/sbin/init".into(),
        exe_args: String::new(),
        uid: 0,
        user_name: "root".into(),
        gid: 0,
        group_name: "root".into(),
        tty: false,
        container_id: None,
        entry: false,
        cwd: "/".into(),
        env: vec![],
    };
    let shell = Process {
        state: SfObjectState::Created,
        oid: Oid {
            create_ts: 1_700_000_000_123_456_789,
            hpid: 4242,
        },
        poid: Some(init.oid),
        ts: 1_700_000_000_123_456_789,
        exe: "/bin/sh".into(),
        exe_args: "-c echo héllo".into(),
        uid: i32::MAX,
        user_name: "ユーザー".into(),
        gid: i32::MIN,
        group_name: String::new(),
        tty: true,
        container_id: Some(container.id.clone()),
        entry: true,
        cwd: "/srv/ünïcode".into(),
        env: vec!["PATH=/bin".into(), "TOKEN=<redacted>".into()],
    };
    let worker = Process {
        state: SfObjectState::Modified,
        oid: Oid {
            create_ts: 1_700_000_000_200_000_000,
            hpid: i32::MAX as i64,
        },
        poid: Some(shell.oid),
        ts: 1_700_000_000_300_000_000,
        exe: "/usr/bin/worker".into(),
        exe_args: "--threads 4".into(),
        uid: 1000,
        user_name: "app".into(),
        gid: 1000,
        group_name: "app".into(),
        tty: false,
        container_id: Some(bare.id.clone()),
        entry: false,
        cwd: "/".into(),
        env: vec![],
    };
    let long_path = format!("/data/{}", "d".repeat(LONG_PATH_LEN - 6));
    let mk_file = |path: &str, cid: Option<&str>, restype: i32| File {
        state: SfObjectState::Created,
        oid: foid(cid, path),
        ts: 1_700_000_000_400_000_000,
        restype,
        path: path.into(),
        container_id: cid.map(str::to_owned),
    };
    let f1 = mk_file("/etc/passwd", Some(&container.id), restype::FILE);
    let f2 = mk_file(&long_path, None, restype::FILE);
    let f3 = mk_file("/tmp/new-名前", Some(&container.id), restype::FILE);
    let f4 = mk_file("/run/sock", None, restype::UNIX_SOCKET);
    let events = vec![
        Record::ProcessEvent(ProcessEvent {
            proc_oid: shell.oid,
            ts: 1_700_000_000_500_000_000,
            tid: 4242,
            op_flags: op::EXEC,
            args: vec![],
            ret: 0,
        }),
        Record::ProcessEvent(ProcessEvent {
            proc_oid: worker.oid,
            ts: 1_700_000_000_500_000_001,
            tid: i64::MAX,
            op_flags: op::SETUID,
            args: vec!["app".into(), "".into()],
            ret: i32::MIN,
        }),
        Record::FileFlow(FileFlow {
            proc_oid: shell.oid,
            ts: 1_700_000_000_600_000_000,
            tid: 4243,
            op_flags: op::OPEN | op::READ_RECV | op::CLOSE,
            open_flags: open_flags::RDONLY | open_flags::CLOEXEC,
            end_ts: 1_700_000_000_600_000_999,
            file_oid: f1.oid,
            fd: 3,
            num_r_recv_ops: 2,
            num_w_send_ops: 0,
            num_r_recv_bytes: 1234,
            num_w_send_bytes: 0,
        }),
        Record::FileFlow(FileFlow {
            proc_oid: worker.oid,
            ts: 0,
            tid: 0,
            op_flags: op::WRITE_SEND | op::TRUNCATE,
            open_flags: 0,
            end_ts: i64::MAX,
            file_oid: f2.oid,
            fd: i32::MAX,
            num_r_recv_ops: 0,
            num_w_send_ops: i64::MAX,
            num_r_recv_bytes: 0,
            num_w_send_bytes: i64::MAX,
        }),
        Record::FileEvent(FileEvent {
            proc_oid: shell.oid,
            ts: 1_700_000_000_700_000_000,
            tid: 4242,
            op_flags: op::RENAME,
            file_oid: f1.oid,
            ret: 0,
            new_file_oid: Some(f3.oid),
        }),
        Record::FileEvent(FileEvent {
            proc_oid: shell.oid,
            ts: 1_700_000_000_700_000_001,
            tid: 4242,
            op_flags: op::UNLINK,
            file_oid: f4.oid,
            ret: -2,
            new_file_oid: None,
        }),
        Record::NetworkFlow(NetworkFlow {
            proc_oid: shell.oid,
            ts: 1_700_000_000_800_000_000,
            tid: 4242,
            op_flags: op::CONNECT | op::WRITE_SEND | op::READ_RECV | op::CLOSE,
            end_ts: 1_700_000_000_900_000_000,
            sip: ipv4_to_int(Ipv4Addr::LOCALHOST),
            sport: 40556,
            dip: ipv4_to_int(Ipv4Addr::new(10, 0, 0, 255)),
            dport: 8080,
            proto: proto::TCP,
            fd: 5,
            num_r_recv_ops: 1,
            num_w_send_ops: 1,
            num_r_recv_bytes: 1000,
            num_w_send_bytes: 1000,
            sip6: None,
            dip6: None,
        }),
        Record::NetworkFlow(NetworkFlow {
            proc_oid: worker.oid,
            ts: 1_700_000_000_800_000_001,
            tid: 7,
            op_flags: op::ACCEPT | op::READ_RECV,
            end_ts: 1_700_000_000_800_000_002,
            sip: 0,
            sport: 65535,
            dip: 0,
            dport: 443,
            proto: proto::UDP,
            fd: 6,
            num_r_recv_ops: 3,
            num_w_send_ops: 0,
            num_r_recv_bytes: 300,
            num_w_send_bytes: 0,
            sip6: Some(Ipv6Bytes(std::net::Ipv6Addr::LOCALHOST.octets())),
            dip6: Some(Ipv6Bytes(
                "2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            )),
        }),
        Record::ProcessFlow(ProcessFlow {
            proc_oid: worker.oid,
            ts: 1_700_000_001_000_000_000,
            num_threads_cloned: 4,
            op_flags: op::CLONE | op::EXIT,
            end_ts: 1_700_000_002_000_000_000,
            num_threads_exited: 3,
            num_clone_errors: 1,
        }),
        Record::K8sEvent(K8sEvent {
            kind: K8sComponent::Pods,
            action: K8sAction::Modified,
            ts: 1_700_000_003_000_000_000,
            message: "{\"type\":\"MODIFIED\"}".into(),
        }),
    ];
    Sample {
        pods: vec![pod],
        containers: vec![container, bare],
        processes: vec![init, shell, worker],
        files: vec![f1, f2, f3, f4],
        events,
    }
}

/// Writes the sample through `writer` (entities set, then events written).
pub fn write_sample(writer: &mut SysFlowWriter, s: &Sample) {
    for p in &s.pods {
        writer.set_pod(p.clone());
    }
    for c in &s.containers {
        writer.set_container(c.clone());
    }
    for p in &s.processes {
        writer.set_process(p.clone());
    }
    for f in &s.files {
        writer.set_file(f.clone());
    }
    for e in &s.events {
        writer.write(e).unwrap();
    }
}
