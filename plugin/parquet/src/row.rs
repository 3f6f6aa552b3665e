//! One record's columns read straight from the joined record, without building sysprint's
//! JSON first (measured: building and walking that JSON was 9 of every 10 seconds of a
//! conversion). Each value is what sysprint's flat view shows for the field, as
//! `FlatRecord::to_sysprint_json` computes it; the tests compare the two on every reference
//! trace, field by field.

use std::borrow::Cow;

use sysflow::{
    encoding::{int_to_ipv4, op_flags_str},
    flat::{FlatRecord, Operation, env_str, has_cwd_env, has_entry, ipv4_list, services_json},
    records::{Container, File, Pod, Process, Record},
};

/// A column's value for one record.
pub enum Value<'a> {
    Text(Cow<'a, str>),
    Int(Option<i64>),
    Bool(Option<bool>),
    List(Option<Vec<String>>),
    /// JSON text, or null.
    Json(Option<String>),
}

/// A record prepared for its columns.
pub struct Row<'a> {
    pub f: &'a FlatRecord,
    version: Option<i64>,
    op: Operation,
}

impl<'a> Row<'a> {
    pub fn new(f: &'a FlatRecord) -> Row<'a> {
        Row {
            version: f.header.as_ref().map(|h| h.version),
            op: f.operation(),
            f,
        }
    }

    fn process(&self, parent: bool) -> Option<&'a Process> {
        if parent {
            self.f.parent.as_ref()
        } else {
            self.f.process.as_ref()
        }
    }

    fn file(&self) -> Option<&'a File> {
        self.f.file.as_ref()
    }

    fn container(&self) -> Option<&'a Container> {
        self.f.container.as_ref()
    }

    fn pod(&self) -> Option<&'a Pod> {
        self.f.pod.as_ref()
    }
}

fn text<'a>(s: Option<&'a str>) -> Value<'a> {
    Value::Text(Cow::Borrowed(s.unwrap_or_default()))
}

fn owned<'a>(s: Option<String>) -> Value<'a> {
    Value::Text(Cow::Owned(s.unwrap_or_default()))
}

fn int(v: Option<impl Into<i64>>) -> Value<'static> {
    Value::Int(v.map(Into::into))
}

pub fn record_type<'a>(r: &Row<'a>) -> Value<'a> {
    text(Some(r.f.code()))
}

pub fn state<'a>(r: &Row<'a>) -> Value<'a> {
    text(Some(match (r.process(false), r.file()) {
        (Some(p), _) => p.state.symbol(),
        (None, Some(f)) => f.state.symbol(),
        _ => "",
    }))
}

pub fn opflags<'a>(r: &Row<'a>) -> Value<'a> {
    owned(r.op.flags.map(op_flags_str))
}

pub fn opflags_bitmap<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.op.flags)
}

pub fn ret<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.op.ret)
}

pub fn ts<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.op.ts)
}

pub fn end_ts<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.op.end_ts)
}

pub fn tid<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.op.tid)
}

/// The process (or, with `parent`, its parent) fields.
pub fn pid<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    int(r.process(parent).map(|p| p.oid.hpid))
}
pub fn uid<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    int(r.process(parent).map(|p| p.uid))
}
pub fn gid<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    int(r.process(parent).map(|p| p.gid))
}
pub fn user<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    text(r.process(parent).map(|p| p.user_name.as_str()))
}
pub fn group<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    text(r.process(parent).map(|p| p.group_name.as_str()))
}
pub fn cwd<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    text(
        r.process(parent)
            .filter(|_| has_cwd_env(r.version))
            .map(|p| p.cwd.as_str()),
    )
}
pub fn exe<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    text(r.process(parent).map(|p| p.exe.as_str()))
}
pub fn args<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    text(r.process(parent).map(|p| p.exe_args.as_str()))
}
pub fn tty<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    Value::Bool(r.process(parent).map(|p| p.tty))
}
pub fn entry<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    Value::Bool(
        r.process(parent)
            .filter(|_| has_entry(r.version))
            .map(|p| p.entry),
    )
}
pub fn env<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    owned(
        r.process(parent)
            .filter(|_| has_cwd_env(r.version))
            .map(|p| env_str(&p.env)),
    )
}
pub fn createts<'a>(r: &Row<'a>, parent: bool) -> Value<'a> {
    int(r.process(parent).map(|p| p.oid.create_ts))
}

pub fn fd<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.op.fd)
}
pub fn file_path<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.file().map(|f| f.path.as_str()))
}
pub fn file_newpath<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.f.new_file.as_ref().map(|f| f.path.as_str()))
}
pub fn file_type<'a>(r: &Row<'a>) -> Value<'a> {
    owned(
        r.file()
            .map(|f| char::from_u32(f.restype as u32).unwrap_or('?').to_string()),
    )
}
pub fn open_flags<'a>(r: &Row<'a>) -> Value<'a> {
    int(match &r.f.record {
        Record::FileFlow(f) => Some(f.open_flags),
        _ => None,
    })
}

fn network_flow<'a>(r: &Row<'a>) -> Option<&'a sysflow::records::NetworkFlow> {
    match &r.f.record {
        Record::NetworkFlow(f) => Some(f),
        _ => None,
    }
}
pub fn net_proto<'a>(r: &Row<'a>) -> Value<'a> {
    int(network_flow(r).map(|f| f.proto))
}
pub fn net_sport<'a>(r: &Row<'a>) -> Value<'a> {
    int(network_flow(r).map(|f| f.sport))
}
pub fn net_dport<'a>(r: &Row<'a>) -> Value<'a> {
    int(network_flow(r).map(|f| f.dport))
}
pub fn net_sip<'a>(r: &Row<'a>) -> Value<'a> {
    owned(network_flow(r).map(|f| int_to_ipv4(f.sip).to_string()))
}
pub fn net_dip<'a>(r: &Row<'a>) -> Value<'a> {
    owned(network_flow(r).map(|f| int_to_ipv4(f.dip).to_string()))
}

pub fn res<'a>(r: &Row<'a>) -> Value<'a> {
    match &r.f.record {
        // The path alone borrows; the other cases build their text.
        Record::FileFlow(_) | Record::FileEvent(_) if r.f.new_file.is_none() => file_path(r),
        _ => owned(Some(r.f.resource())),
    }
}

/// Read bytes, read ops, written bytes, written ops of a file or network flow.
fn counters(r: &Row<'_>) -> Option<[i64; 4]> {
    match &r.f.record {
        Record::FileFlow(f) => Some([
            f.num_r_recv_bytes,
            f.num_r_recv_ops,
            f.num_w_send_bytes,
            f.num_w_send_ops,
        ]),
        Record::NetworkFlow(f) => Some([
            f.num_r_recv_bytes,
            f.num_r_recv_ops,
            f.num_w_send_bytes,
            f.num_w_send_ops,
        ]),
        _ => None,
    }
}
pub fn counter<'a>(r: &Row<'a>, which: usize) -> Value<'a> {
    int(counters(r).map(|c| c[which]))
}

/// Threads cloned, threads exited, clone errors of a process flow.
pub fn process_flow<'a>(r: &Row<'a>, which: usize) -> Value<'a> {
    int(match &r.f.record {
        Record::ProcessFlow(f) => Some(
            [
                f.num_threads_cloned,
                f.num_threads_exited,
                f.num_clone_errors,
            ][which],
        ),
        _ => None,
    })
}

pub fn container_id<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.container().map(|c| c.id.as_str()))
}
pub fn container_name<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.container().map(|c| c.name.as_str()))
}
pub fn container_imageid<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.container().map(|c| c.imageid.as_str()))
}
pub fn container_image<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.container().map(|c| c.image.as_str()))
}
pub fn container_type<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.container().map(|c| c.container_type.symbol()))
}
pub fn container_privileged<'a>(r: &Row<'a>) -> Value<'a> {
    Value::Bool(r.container().map(|c| c.privileged))
}

pub fn pod_id<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.pod().map(|p| p.id.as_str()))
}
pub fn pod_name<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.pod().map(|p| p.name.as_str()))
}
pub fn pod_node<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.pod().map(|p| p.node_name.as_str()))
}
pub fn pod_host_ip<'a>(r: &Row<'a>) -> Value<'a> {
    Value::List(r.pod().map(|p| ipv4_list(&p.host_ip)))
}
pub fn pod_internal_ip<'a>(r: &Row<'a>) -> Value<'a> {
    Value::List(r.pod().map(|p| ipv4_list(&p.internal_ip)))
}
pub fn pod_namespace<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.pod().map(|p| p.namespace.as_str()))
}
pub fn pod_restarts<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.pod().map(|p| p.restart_count))
}
pub fn pod_services<'a>(r: &Row<'a>) -> Value<'a> {
    Value::Json(r.pod().map(|pod| services_json(pod).to_string()))
}

pub fn node_id<'a>(r: &Row<'a>) -> Value<'a> {
    text(r.f.header.as_ref().map(|h| h.exporter.as_str()))
}
pub fn node_ip<'a>(r: &Row<'a>) -> Value<'a> {
    text(
        r.f.header
            .as_ref()
            .filter(|h| h.version != 1000)
            .map(|h| h.ip.as_str()),
    )
}
pub fn filename<'a>(r: &Row<'a>) -> Value<'a> {
    text(
        r.f.header
            .as_ref()
            .filter(|h| (3..1000).contains(&h.version))
            .map(|h| h.filename.as_str()),
    )
}
pub fn schema<'a>(r: &Row<'a>) -> Value<'a> {
    int(r.version)
}

fn k8s_event<'a>(r: &Row<'a>) -> Option<&'a sysflow::records::K8sEvent> {
    match &r.f.record {
        Record::K8sEvent(e) => Some(e),
        _ => None,
    }
}
pub fn k8s_action<'a>(r: &Row<'a>) -> Value<'a> {
    text(k8s_event(r).map(|e| e.action.symbol()))
}
pub fn k8s_kind<'a>(r: &Row<'a>) -> Value<'a> {
    text(k8s_event(r).map(|e| e.kind.symbol()))
}
pub fn k8s_msg<'a>(r: &Row<'a>) -> Value<'a> {
    text(k8s_event(r).map(|e| e.message.as_str()))
}
