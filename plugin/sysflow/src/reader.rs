//! Reading SysFlow files of every schema version the reference traces use (1000, 1001, 2, 4, 5,
//! and ours with the IPv6 extension).
//!
//! Like the reference readers, it decodes with the writer schema embedded in the file and picks
//! each record's type by the *name* of its union branch, so fields a version lacks get defaults,
//! fields it adds are ignored, and an unknown branch comes back as [`ReadItem::Unknown`]. A corrupt
//! or truncated file yields an error item, never a panic; what came before it is still returned.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufReader, Read},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use apache_avro::{Schema, types::Value};

use crate::records::*;

/// Largest allocation a corrupt length field may ask the Avro decoder for (the collector's
/// blocks are 80 KB uncompressed; a string or block beyond this is treated as corrupt).
const MAX_ALLOCATION: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened.
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not an Avro container file, or its header is damaged.
    #[error("{path}: not a readable Avro container file: {source}")]
    Container {
        path: String,
        source: Box<apache_avro::Error>,
    },
    /// An Avro container file, but not SysFlow (no `rec` union of records).
    #[error("{path}: not SysFlow: {reason}")]
    NotSysFlow { path: String, reason: String },
    /// A block or record could not be decoded (truncated or corrupt data). `offset`: the bytes
    /// of the file read when it failed (the end of the block being decoded).
    #[error("{path}: record {index} (at byte {offset}): {source}")]
    Record {
        path: String,
        index: u64,
        offset: u64,
        source: Box<apache_avro::Error>,
    },
    /// A record decoded but does not have the shape its type needs.
    #[error("{path}: record {index} ({name}): {reason}")]
    Shape {
        path: String,
        index: u64,
        name: String,
        reason: String,
    },
}

/// One item of a SysFlow stream.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "items are consumed one at a time; boxing every record would cost an allocation each"
)]
pub enum ReadItem {
    Record(Record),
    /// A union branch this reader does not know (a future schema version).
    Unknown {
        name: String,
    },
}

/// Counts the bytes the Avro reader takes, so an error can say where in the file it was.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

/// Streams the records of one SysFlow file.
pub struct SysFlowReader<R: Read> {
    avro: apache_avro::Reader<'static, Counting<R>>,
    bytes_read: Arc<AtomicU64>,
    branches: Vec<String>,
    path: String,
    index: u64,
    failed: bool,
}

impl SysFlowReader<BufReader<fs::File>> {
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let file = fs::File::open(path).map_err(|source| ReadError::Open {
            path: path.into(),
            source,
        })?;
        Self::new(BufReader::new(file), &path.display().to_string())
    }
}

impl<R: Read> SysFlowReader<R> {
    /// `name` is used in error messages.
    pub fn new(input: R, name: &str) -> Result<Self, ReadError> {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
        let bytes_read = Arc::new(AtomicU64::new(0));
        let input = Counting {
            inner: input,
            read: bytes_read.clone(),
        };
        let avro = apache_avro::Reader::new(input).map_err(|e| ReadError::Container {
            path: name.into(),
            source: Box::new(e),
        })?;
        let branches =
            union_branches(avro.writer_schema()).map_err(|reason| ReadError::NotSysFlow {
                path: name.into(),
                reason,
            })?;
        Ok(SysFlowReader {
            avro,
            bytes_read,
            branches,
            path: name.into(),
            index: 0,
            failed: false,
        })
    }

    /// Full names of the file's union branches, in order.
    pub fn branch_names(&self) -> &[String] {
        &self.branches
    }

    /// Whether the writer schema's record type `name` (e.g. `SFHeader`) has a field `field`:
    /// older schema versions lack some, and consumers may treat a missing field differently
    /// from an empty one.
    pub fn has_field(&self, name: &str, field: &str) -> bool {
        let Schema::Record(top) = self.avro.writer_schema() else {
            return false;
        };
        let Some(Schema::Union(union)) = top
            .fields
            .iter()
            .find(|f| f.name == "rec")
            .map(|f| &f.schema)
        else {
            return false;
        };
        union.variants().iter().any(|v| match v {
            Schema::Record(r) => r.name.name() == name && r.fields.iter().any(|f| f.name == field),
            _ => false,
        })
    }
}

fn union_branches(schema: &Schema) -> Result<Vec<String>, String> {
    let Schema::Record(top) = schema else {
        return Err("top-level schema is not a record".into());
    };
    let Some(rec) = top.fields.iter().find(|f| f.name == "rec") else {
        return Err("no field `rec`".into());
    };
    let Schema::Union(union) = &rec.schema else {
        return Err("`rec` is not a union".into());
    };
    Ok(union
        .variants()
        .iter()
        .map(|v| match v {
            Schema::Record(r) => r.name.fullname(None),
            Schema::Ref { name } => name.fullname(None),
            other => format!("{other:?}"),
        })
        .collect())
}

impl<R: Read> Iterator for SysFlowReader<R> {
    type Item = Result<ReadItem, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let value = match self.avro.next()? {
            Ok(v) => v,
            Err(e) => {
                // After a decoding error the stream position is unknown: stop here.
                self.failed = true;
                return Some(Err(ReadError::Record {
                    path: self.path.clone(),
                    index: self.index,
                    offset: self.bytes_read.load(Relaxed),
                    source: Box::new(e),
                }));
            }
        };
        let index = self.index;
        self.index += 1;
        let shape = |name: &str, reason: String| ReadError::Shape {
            path: self.path.clone(),
            index,
            name: name.into(),
            reason,
        };
        let Value::Record(top) = value else {
            return Some(Err(shape("SysFlow", "top level is not a record".into())));
        };
        let Some((_, Value::Union(branch, inner))) = top.into_iter().find(|(n, _)| n == "rec")
        else {
            return Some(Err(shape("SysFlow", "no union field `rec`".into())));
        };
        let name = self
            .branches
            .get(branch as usize)
            .cloned()
            .unwrap_or_else(|| format!("branch {branch}"));
        Some(match decode(&name, *inner) {
            Ok(Some(record)) => Ok(ReadItem::Record(record)),
            Ok(None) => Ok(ReadItem::Unknown { name }),
            Err(reason) => Err(shape(&name, reason)),
        })
    }
}

/// Field access on a decoded Avro record, with defaults for fields a version lacks.
struct Fields(Vec<(String, Value)>);

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

impl Fields {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| unwrap_union(v))
    }

    fn long(&self, name: &str) -> Result<i64, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => {
                as_long(v).ok_or_else(|| format!("field {name}: expected a number, got {v:?}"))
            }
        }
    }

    fn int(&self, name: &str) -> Result<i32, String> {
        let v = self.long(name)?;
        i32::try_from(v).map_err(|_| format!("field {name}: {v} does not fit an int"))
    }

    fn string(&self, name: &str) -> Result<String, String> {
        Ok(self.opt_string(name)?.unwrap_or_default())
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("field {name}: expected a string, got {v:?}")),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(format!("field {name}: expected a boolean, got {v:?}")),
        }
    }

    fn symbol(&self, name: &str) -> Result<String, String> {
        match self.get(name) {
            Some(Value::Enum(_, s)) => Ok(s.clone()),
            v => Err(format!("field {name}: expected an enum, got {v:?}")),
        }
    }

    fn oid(&self, name: &str) -> Result<Oid, String> {
        self.opt_oid(name)?
            .ok_or_else(|| format!("field {name}: missing OID"))
    }

    fn opt_oid(&self, name: &str) -> Result<Option<Oid>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Record(f)) => {
                let f = Fields(f.clone());
                Ok(Some(Oid {
                    create_ts: f.long("createTS")?,
                    hpid: f.long("hpid")?,
                }))
            }
            Some(v) => Err(format!("field {name}: expected an OID record, got {v:?}")),
        }
    }

    fn opt_fixed<const N: usize>(&self, name: &str) -> Result<Option<[u8; N]>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Fixed(_, b)) | Some(Value::Bytes(b)) => b
                .as_slice()
                .try_into()
                .map(Some)
                .map_err(|_| format!("field {name}: expected {N} bytes, got {}", b.len())),
            Some(v) => Err(format!("field {name}: expected fixed bytes, got {v:?}")),
        }
    }

    fn foid(&self, name: &str) -> Result<Foid, String> {
        self.opt_fixed::<20>(name)?
            .map(Foid)
            .ok_or_else(|| format!("field {name}: missing FOID"))
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match unwrap_union(v) {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(format!("field {name}: expected strings, got {v:?}")),
                })
                .collect(),
            Some(v) => Err(format!("field {name}: expected an array, got {v:?}")),
        }
    }

    fn longs(&self, name: &str) -> Result<Vec<i64>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    as_long(unwrap_union(v)).ok_or_else(|| format!("field {name}: expected longs"))
                })
                .collect(),
            Some(v) => Err(format!("field {name}: expected an array, got {v:?}")),
        }
    }

    fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Map(m)) => m
                .iter()
                .map(|(k, v)| match unwrap_union(v) {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    v => Err(format!("field {name}: expected string values, got {v:?}")),
                })
                .collect(),
            Some(v) => Err(format!("field {name}: expected a map, got {v:?}")),
        }
    }

    fn records(&self, name: &str) -> Result<Vec<Fields>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match unwrap_union(v) {
                    Value::Record(f) => Ok(Fields(f.clone())),
                    v => Err(format!("field {name}: expected records, got {v:?}")),
                })
                .collect(),
            Some(v) => Err(format!("field {name}: expected an array, got {v:?}")),
        }
    }
}

fn as_long(v: &Value) -> Option<i64> {
    Some(match v {
        Value::Long(x)
        | Value::TimestampMillis(x)
        | Value::TimestampMicros(x)
        | Value::TimestampNanos(x)
        | Value::LocalTimestampMillis(x)
        | Value::LocalTimestampMicros(x)
        | Value::LocalTimestampNanos(x)
        | Value::TimeMicros(x) => *x,
        Value::Int(x) | Value::Date(x) | Value::TimeMillis(x) => *x as i64,
        _ => return None,
    })
}

/// Decodes one union branch by its full name. Ok(None): a name this reader does not know.
fn decode(name: &str, value: Value) -> Result<Option<Record>, String> {
    let Value::Record(fields) = value else {
        return Err(format!("{name} is not a record"));
    };
    let f = Fields(fields);
    let short = name.rsplit('.').next().unwrap_or(name);
    Ok(Some(match short {
        "SFHeader" => Record::Header(SfHeader {
            version: f.long("version")?,
            exporter: f.string("exporter")?,
            ip: f.string("ip")?,
            filename: f.string("filename")?,
        }),
        "Container" => Record::Container(Container {
            id: f.string("id")?,
            name: f.string("name")?,
            image: f.string("image")?,
            imageid: f.string("imageid")?,
            container_type: ContainerType::from_symbol(&f.symbol("type")?)
                .ok_or("unknown container type")?,
            privileged: f.boolean("privileged")?,
            pod_id: f.opt_string("podId")?,
        }),
        "Process" => Record::Process(Process {
            state: SfObjectState::from_symbol(&f.symbol("state")?).ok_or("unknown state")?,
            oid: f.oid("oid")?,
            poid: f.opt_oid("poid")?,
            ts: f.long("ts")?,
            exe: f.string("exe")?,
            exe_args: f.string("exeArgs")?,
            uid: f.int("uid")?,
            user_name: f.string("userName")?,
            gid: f.int("gid")?,
            group_name: f.string("groupName")?,
            tty: f.boolean("tty")?,
            container_id: f.opt_string("containerId")?,
            entry: f.boolean("entry")?,
            cwd: f.string("cwd")?,
            env: f.strings("env")?,
        }),
        "File" => Record::File(File {
            state: SfObjectState::from_symbol(&f.symbol("state")?).ok_or("unknown state")?,
            oid: f.foid("oid")?,
            ts: f.long("ts")?,
            restype: f.int("restype")?,
            path: f.string("path")?,
            container_id: f.opt_string("containerId")?,
        }),
        "ProcessEvent" => Record::ProcessEvent(ProcessEvent {
            proc_oid: f.oid("procOID")?,
            ts: f.long("ts")?,
            tid: f.long("tid")?,
            op_flags: f.int("opFlags")?,
            args: f.strings("args")?,
            ret: f.int("ret")?,
        }),
        "NetworkFlow" => Record::NetworkFlow(NetworkFlow {
            proc_oid: f.oid("procOID")?,
            ts: f.long("ts")?,
            tid: f.long("tid")?,
            op_flags: f.int("opFlags")?,
            end_ts: f.long("endTs")?,
            sip: f.int("sip")?,
            sport: f.int("sport")?,
            dip: f.int("dip")?,
            dport: f.int("dport")?,
            proto: f.int("proto")?,
            fd: f.int("fd")?,
            num_r_recv_ops: f.long("numRRecvOps")?,
            num_w_send_ops: f.long("numWSendOps")?,
            num_r_recv_bytes: f.long("numRRecvBytes")?,
            num_w_send_bytes: f.long("numWSendBytes")?,
            sip6: f.opt_fixed::<16>("sip6")?.map(Ipv6Bytes),
            dip6: f.opt_fixed::<16>("dip6")?.map(Ipv6Bytes),
        }),
        "FileFlow" => Record::FileFlow(FileFlow {
            proc_oid: f.oid("procOID")?,
            ts: f.long("ts")?,
            tid: f.long("tid")?,
            op_flags: f.int("opFlags")?,
            open_flags: f.int("openFlags")?,
            end_ts: f.long("endTs")?,
            file_oid: f.foid("fileOID")?,
            fd: f.int("fd")?,
            num_r_recv_ops: f.long("numRRecvOps")?,
            num_w_send_ops: f.long("numWSendOps")?,
            num_r_recv_bytes: f.long("numRRecvBytes")?,
            num_w_send_bytes: f.long("numWSendBytes")?,
        }),
        "FileEvent" => Record::FileEvent(FileEvent {
            proc_oid: f.oid("procOID")?,
            ts: f.long("ts")?,
            tid: f.long("tid")?,
            op_flags: f.int("opFlags")?,
            file_oid: f.foid("fileOID")?,
            ret: f.int("ret")?,
            new_file_oid: f.opt_fixed::<20>("newFileOID")?.map(Foid),
        }),
        "NetworkEvent" => Record::NetworkEvent(NetworkEvent {
            proc_oid: f.oid("procOID")?,
            ts: f.long("ts")?,
            tid: f.long("tid")?,
            op_flags: f.int("opFlags")?,
            sip: f.int("sip")?,
            sport: f.int("sport")?,
            dip: f.int("dip")?,
            dport: f.int("dport")?,
            proto: f.int("proto")?,
            ret: f.int("ret")?,
        }),
        "ProcessFlow" => Record::ProcessFlow(ProcessFlow {
            proc_oid: f.oid("procOID")?,
            ts: f.long("ts")?,
            num_threads_cloned: f.long("numThreadsCloned")?,
            op_flags: f.int("opFlags")?,
            end_ts: f.long("endTs")?,
            num_threads_exited: f.long("numThreadsExited")?,
            num_clone_errors: f.long("numCloneErrors")?,
        }),
        "Pod" => Record::Pod(Pod {
            ts: f.long("ts")?,
            id: f.string("id")?,
            name: f.string("name")?,
            node_name: f.string("nodeName")?,
            host_ip: f.longs("hostIP")?,
            internal_ip: f.longs("internalIP")?,
            namespace: f.string("namespace")?,
            restart_count: f.long("restartCount")?,
            labels: f.string_map("labels")?,
            selectors: f.string_map("selectors")?,
            services: f
                .records("services")?
                .into_iter()
                .map(|s| {
                    Ok(Service {
                        name: s.string("name")?,
                        id: s.string("id")?,
                        namespace: s.string("namespace")?,
                        port_list: s
                            .records("portList")?
                            .into_iter()
                            .map(|p| {
                                Ok(Port {
                                    port: p.int("port")?,
                                    target_port: p.int("targetPort")?,
                                    node_port: p.int("nodePort")?,
                                    proto: p.string("proto")?,
                                })
                            })
                            .collect::<Result<_, String>>()?,
                        cluster_ip: s.longs("clusterIP")?,
                    })
                })
                .collect::<Result<_, String>>()?,
        }),
        "K8sEvent" => Record::K8sEvent(K8sEvent {
            kind: K8sComponent::from_symbol(&f.symbol("kind")?).ok_or("unknown k8s kind")?,
            action: K8sAction::from_symbol(&f.symbol("action")?).ok_or("unknown k8s action")?,
            ts: f.long("ts")?,
            message: f.string("message")?,
        }),
        _ => return Ok(None),
    }))
}
