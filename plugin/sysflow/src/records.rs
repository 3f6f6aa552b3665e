//! Typed SysFlow records: the 12 branches of the `rec` union in schema order, with the v5 field
//! names, types and order. The writer encodes them directly ([`crate::avro`]); their `Serialize`
//! impls, with apache-avro's schema-aware serializer, give the same bytes (union branches by
//! index, optionals as union[null, T]) and serve as the tests' reference.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

/// Process identifier: (creation time ns, host pid of the thread-group leader).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Oid {
    #[serde(rename = "createTS")]
    pub create_ts: i64,
    pub hpid: i64,
}

/// File identifier: SHA-1 of container id + path (see [`crate::encoding::foid`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Foid(pub [u8; 20]);

impl Serialize for Foid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// A 16-byte IPv6 address in network order (the extension's `sip6`/`dip6`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ipv6Bytes(pub [u8; 16]);

impl Serialize for Ipv6Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum SfObjectState {
    #[default]
    #[serde(rename = "CREATED")]
    Created,
    #[serde(rename = "MODIFIED")]
    Modified,
    #[serde(rename = "REUP")]
    Reup,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum ContainerType {
    #[serde(rename = "CT_DOCKER")]
    Docker,
    #[serde(rename = "CT_LXC")]
    Lxc,
    #[serde(rename = "CT_LIBVIRT_LXC")]
    LibvirtLxc,
    #[serde(rename = "CT_MESOS")]
    Mesos,
    #[serde(rename = "CT_RKT")]
    Rkt,
    #[serde(rename = "CT_CUSTOM")]
    Custom,
    #[default]
    #[serde(rename = "CT_CRI")]
    Cri,
    #[serde(rename = "CT_CONTAINERD")]
    Containerd,
    #[serde(rename = "CT_CRIO")]
    Crio,
    #[serde(rename = "CT_BPM")]
    Bpm,
}

impl ContainerType {
    pub const SYMBOLS: [&'static str; 10] = [
        "CT_DOCKER",
        "CT_LXC",
        "CT_LIBVIRT_LXC",
        "CT_MESOS",
        "CT_RKT",
        "CT_CUSTOM",
        "CT_CRI",
        "CT_CONTAINERD",
        "CT_CRIO",
        "CT_BPM",
    ];
    const ALL: [ContainerType; 10] = [
        Self::Docker,
        Self::Lxc,
        Self::LibvirtLxc,
        Self::Mesos,
        Self::Rkt,
        Self::Custom,
        Self::Cri,
        Self::Containerd,
        Self::Crio,
        Self::Bpm,
    ];

    pub fn symbol(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }

    pub fn from_symbol(s: &str) -> Option<Self> {
        Self::SYMBOLS
            .iter()
            .position(|x| *x == s)
            .map(|i| Self::ALL[i])
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum K8sComponent {
    #[serde(rename = "K8S_NODES")]
    Nodes,
    #[serde(rename = "K8S_NAMESPACES")]
    Namespaces,
    #[serde(rename = "K8S_PODS")]
    #[default]
    Pods,
    #[serde(rename = "K8S_REPLICATIONCONTROLLERS")]
    ReplicationControllers,
    #[serde(rename = "K8S_SERVICES")]
    Services,
    #[serde(rename = "K8S_EVENTS")]
    Events,
    #[serde(rename = "K8S_REPLICASETS")]
    ReplicaSets,
    #[serde(rename = "K8S_DAEMONSETS")]
    DaemonSets,
    #[serde(rename = "K8S_DEPLOYMENTS")]
    Deployments,
    #[serde(rename = "K8S_UNKNOWN")]
    Unknown,
}

impl K8sComponent {
    pub const SYMBOLS: [&'static str; 10] = [
        "K8S_NODES",
        "K8S_NAMESPACES",
        "K8S_PODS",
        "K8S_REPLICATIONCONTROLLERS",
        "K8S_SERVICES",
        "K8S_EVENTS",
        "K8S_REPLICASETS",
        "K8S_DAEMONSETS",
        "K8S_DEPLOYMENTS",
        "K8S_UNKNOWN",
    ];
    const ALL: [K8sComponent; 10] = [
        Self::Nodes,
        Self::Namespaces,
        Self::Pods,
        Self::ReplicationControllers,
        Self::Services,
        Self::Events,
        Self::ReplicaSets,
        Self::DaemonSets,
        Self::Deployments,
        Self::Unknown,
    ];

    pub fn symbol(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }

    pub fn from_symbol(s: &str) -> Option<Self> {
        Self::SYMBOLS
            .iter()
            .position(|x| *x == s)
            .map(|i| Self::ALL[i])
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum K8sAction {
    #[serde(rename = "K8S_COMPONENT_ADDED")]
    #[default]
    Added,
    #[serde(rename = "K8S_COMPONENT_MODIFIED")]
    Modified,
    #[serde(rename = "K8S_COMPONENT_DELETED")]
    Deleted,
    #[serde(rename = "K8S_COMPONENT_ERROR")]
    Error,
    #[serde(rename = "K8S_COMPONENT_NONEXISTENT")]
    Nonexistent,
    #[serde(rename = "K8S_COMPONENT_UNKNOWN")]
    Unknown,
}

impl K8sAction {
    pub const SYMBOLS: [&'static str; 6] = [
        "K8S_COMPONENT_ADDED",
        "K8S_COMPONENT_MODIFIED",
        "K8S_COMPONENT_DELETED",
        "K8S_COMPONENT_ERROR",
        "K8S_COMPONENT_NONEXISTENT",
        "K8S_COMPONENT_UNKNOWN",
    ];
    const ALL: [K8sAction; 6] = [
        Self::Added,
        Self::Modified,
        Self::Deleted,
        Self::Error,
        Self::Nonexistent,
        Self::Unknown,
    ];

    pub fn symbol(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }

    pub fn from_symbol(s: &str) -> Option<Self> {
        Self::SYMBOLS
            .iter()
            .position(|x| *x == s)
            .map(|i| Self::ALL[i])
    }
}

impl SfObjectState {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Modified => "MODIFIED",
            Self::Reup => "REUP",
        }
    }

    pub fn from_symbol(s: &str) -> Option<Self> {
        Some(match s {
            "CREATED" => Self::Created,
            "MODIFIED" => Self::Modified,
            "REUP" => Self::Reup,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SfHeader {
    pub version: i64,
    pub exporter: String,
    pub ip: String,
    pub filename: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub imageid: String,
    #[serde(rename = "type")]
    pub container_type: ContainerType,
    pub privileged: bool,
    #[serde(rename = "podId")]
    pub pod_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Process {
    pub state: SfObjectState,
    pub oid: Oid,
    pub poid: Option<Oid>,
    pub ts: i64,
    pub exe: String,
    #[serde(rename = "exeArgs")]
    pub exe_args: String,
    pub uid: i32,
    #[serde(rename = "userName")]
    pub user_name: String,
    pub gid: i32,
    #[serde(rename = "groupName")]
    pub group_name: String,
    pub tty: bool,
    #[serde(rename = "containerId")]
    pub container_id: Option<String>,
    pub entry: bool,
    pub cwd: String,
    pub env: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct File {
    pub state: SfObjectState,
    pub oid: Foid,
    pub ts: i64,
    /// ASCII type character: 'f' file, 'd' directory, 'u' unix socket, 'p' pipe, '?' unknown.
    pub restype: i32,
    pub path: String,
    #[serde(rename = "containerId")]
    pub container_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessEvent {
    #[serde(rename = "procOID")]
    pub proc_oid: Oid,
    pub ts: i64,
    pub tid: i64,
    #[serde(rename = "opFlags")]
    pub op_flags: i32,
    pub args: Vec<String>,
    pub ret: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetworkFlow {
    #[serde(rename = "procOID")]
    pub proc_oid: Oid,
    pub ts: i64,
    pub tid: i64,
    #[serde(rename = "opFlags")]
    pub op_flags: i32,
    #[serde(rename = "endTs")]
    pub end_ts: i64,
    pub sip: i32,
    pub sport: i32,
    pub dip: i32,
    pub dport: i32,
    pub proto: i32,
    pub fd: i32,
    #[serde(rename = "numRRecvOps")]
    pub num_r_recv_ops: i64,
    #[serde(rename = "numWSendOps")]
    pub num_w_send_ops: i64,
    #[serde(rename = "numRRecvBytes")]
    pub num_r_recv_bytes: i64,
    #[serde(rename = "numWSendBytes")]
    pub num_w_send_bytes: i64,
    /// Extension (schema with IPv6): source IPv6 address.
    #[serde(skip_serializing)]
    pub sip6: Option<Ipv6Bytes>,
    /// Extension (schema with IPv6): destination IPv6 address.
    #[serde(skip_serializing)]
    pub dip6: Option<Ipv6Bytes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileFlow {
    #[serde(rename = "procOID")]
    pub proc_oid: Oid,
    pub ts: i64,
    pub tid: i64,
    #[serde(rename = "opFlags")]
    pub op_flags: i32,
    #[serde(rename = "openFlags")]
    pub open_flags: i32,
    #[serde(rename = "endTs")]
    pub end_ts: i64,
    #[serde(rename = "fileOID")]
    pub file_oid: Foid,
    pub fd: i32,
    #[serde(rename = "numRRecvOps")]
    pub num_r_recv_ops: i64,
    #[serde(rename = "numWSendOps")]
    pub num_w_send_ops: i64,
    #[serde(rename = "numRRecvBytes")]
    pub num_r_recv_bytes: i64,
    #[serde(rename = "numWSendBytes")]
    pub num_w_send_bytes: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileEvent {
    #[serde(rename = "procOID")]
    pub proc_oid: Oid,
    pub ts: i64,
    pub tid: i64,
    #[serde(rename = "opFlags")]
    pub op_flags: i32,
    #[serde(rename = "fileOID")]
    pub file_oid: Foid,
    pub ret: i32,
    #[serde(rename = "newFileOID")]
    pub new_file_oid: Option<Foid>,
}

/// In the schema but never written: the reference reader crashes on it (its name table says
/// `sysflow.event.NetEvent`). Readable when others wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetworkEvent {
    #[serde(rename = "procOID")]
    pub proc_oid: Oid,
    pub ts: i64,
    pub tid: i64,
    #[serde(rename = "opFlags")]
    pub op_flags: i32,
    pub sip: i32,
    pub sport: i32,
    pub dip: i32,
    pub dport: i32,
    pub proto: i32,
    pub ret: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessFlow {
    #[serde(rename = "procOID")]
    pub proc_oid: Oid,
    pub ts: i64,
    #[serde(rename = "numThreadsCloned")]
    pub num_threads_cloned: i64,
    #[serde(rename = "opFlags")]
    pub op_flags: i32,
    #[serde(rename = "endTs")]
    pub end_ts: i64,
    #[serde(rename = "numThreadsExited")]
    pub num_threads_exited: i64,
    #[serde(rename = "numCloneErrors")]
    pub num_clone_errors: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Port {
    pub port: i32,
    #[serde(rename = "targetPort")]
    pub target_port: i32,
    #[serde(rename = "nodePort")]
    pub node_port: i32,
    pub proto: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    pub id: String,
    pub namespace: String,
    #[serde(rename = "portList")]
    pub port_list: Vec<Port>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Vec<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub ts: i64,
    pub id: String,
    pub name: String,
    #[serde(rename = "nodeName")]
    pub node_name: String,
    /// IPv4 addresses, each as in_addr.s_addr read as a host integer (see encoding).
    #[serde(rename = "hostIP")]
    pub host_ip: Vec<i64>,
    #[serde(rename = "internalIP")]
    pub internal_ip: Vec<i64>,
    pub namespace: String,
    #[serde(rename = "restartCount")]
    pub restart_count: i64,
    pub labels: BTreeMap<String, String>,
    pub selectors: BTreeMap<String, String>,
    pub services: Vec<Service>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct K8sEvent {
    pub kind: K8sComponent,
    pub action: K8sAction,
    pub ts: i64,
    pub message: String,
}

/// One record: a branch of the `rec` union. Variant order is the union's branch order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Record {
    Header(SfHeader),
    Container(Container),
    Process(Process),
    File(File),
    ProcessEvent(ProcessEvent),
    NetworkFlow(NetworkFlow),
    FileFlow(FileFlow),
    FileEvent(FileEvent),
    NetworkEvent(NetworkEvent),
    ProcessFlow(ProcessFlow),
    Pod(Pod),
    K8sEvent(K8sEvent),
}

impl Record {
    /// Index of the record's branch in the `rec` union (0 = SFHeader ... 11 = K8sEvent).
    pub fn branch_index(&self) -> usize {
        match self {
            Record::Header(_) => 0,
            Record::Container(_) => 1,
            Record::Process(_) => 2,
            Record::File(_) => 3,
            Record::ProcessEvent(_) => 4,
            Record::NetworkFlow(_) => 5,
            Record::FileFlow(_) => 6,
            Record::FileEvent(_) => 7,
            Record::NetworkEvent(_) => 8,
            Record::ProcessFlow(_) => 9,
            Record::Pod(_) => 10,
            Record::K8sEvent(_) => 11,
        }
    }

    /// The short code sysprint uses (`H`, `C`, `P`, `F`, `PE`, `NF`, `FF`, `FE`, `NE`, `PF`,
    /// `POD`, `KE`).
    pub fn code(&self) -> &'static str {
        match self {
            Record::Header(_) => "H",
            Record::Container(_) => "C",
            Record::Process(_) => "P",
            Record::File(_) => "F",
            Record::ProcessEvent(_) => "PE",
            Record::NetworkFlow(_) => "NF",
            Record::FileFlow(_) => "FF",
            Record::FileEvent(_) => "FE",
            Record::NetworkEvent(_) => "NE",
            Record::ProcessFlow(_) => "PF",
            Record::Pod(_) => "POD",
            Record::K8sEvent(_) => "KE",
        }
    }
}
