//! SysFlow records as Avro binary data, encoded straight from the typed records.
//!
//! The schema is fixed (v5, or v5 with the IPv6 extension), so each type writes its fields in
//! schema order with no schema walk, no intermediate value and no allocation. The output is
//! byte for byte what apache-avro's schema-aware serde path produces for the same record (the
//! `datum` tests and `tests/encoding.rs` check every branch and edge value against it).

use std::collections::BTreeMap;

use super::binary::*;
use crate::{records::*, schema::WriterSchema};

/// Appends one `SysFlow` datum (the top-level record: its only field is the `rec` union) for
/// `record`, encoded with `schema`.
pub fn encode_datum(out: &mut Vec<u8>, record: &Record, schema: WriterSchema) {
    put_index(out, record.branch_index());
    match record {
        Record::Header(r) => r.encode(out),
        Record::Container(r) => r.encode(out),
        Record::Process(r) => r.encode(out),
        Record::File(r) => r.encode(out),
        Record::ProcessEvent(r) => r.encode(out),
        Record::NetworkFlow(r) => encode_network_flow(out, r, schema),
        Record::FileFlow(r) => r.encode(out),
        Record::FileEvent(r) => r.encode(out),
        Record::NetworkEvent(r) => r.encode(out),
        Record::ProcessFlow(r) => r.encode(out),
        Record::Pod(r) => r.encode(out),
        Record::K8sEvent(r) => r.encode(out),
    }
}

/// A value whose Avro type is fixed by where the SysFlow schema uses it. Rust types map to one
/// Avro type each: i64 long, i32 int, String string, Foid fixed(20), Ipv6Bytes bytes,
/// Option union [null, T], Vec array, BTreeMap map of strings, enums by symbol index.
trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
}

impl Encode for i64 {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        put_long(out, *self);
    }
}

impl Encode for i32 {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        put_int(out, *self);
    }
}

impl Encode for bool {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        put_bool(out, *self);
    }
}

impl Encode for String {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, self);
    }
}

impl Encode for Foid {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        put_fixed(out, &self.0);
    }
}

/// The extension's `sip6`/`dip6` are plain `bytes`, not a named fixed.
impl Encode for Ipv6Bytes {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.0);
    }
}

/// Every optional field in the schema is `["null", T]`: null is branch 0.
impl<T: Encode> Encode for Option<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => put_index(out, 0),
            Some(value) => {
                put_index(out, 1);
                value.encode(out);
            }
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        put_block_list(out, self.iter(), |out, item| item.encode(out));
    }
}

/// Maps in key order, as serde walks a BTreeMap.
impl Encode for BTreeMap<String, String> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_block_list(out, self.iter(), |out, (key, value)| {
            put_str(out, key);
            put_str(out, value);
        });
    }
}

/// The record enums are declared in the order of their schema symbols, so the discriminant is
/// the symbol index (the tests write every symbol).
macro_rules! encode_as_symbol_index {
    ($($enum:ty),*) => {$(
        impl Encode for $enum {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                put_index(out, *self as usize);
            }
        }
    )*};
}
encode_as_symbol_index!(SfObjectState, ContainerType, K8sComponent, K8sAction);

/// A record type: its fields in schema order. The destructuring names every field, so a field
/// added to a struct but not here does not compile.
macro_rules! encode_fields {
    ($($record:ident { $($field:ident),* $(,)? })*) => {$(
        impl Encode for $record {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                let $record { $($field),* } = self;
                $($field.encode(out);)*
            }
        }
    )*};
}

encode_fields! {
    Oid { create_ts, hpid }
    SfHeader { version, exporter, ip, filename }
    Container { id, name, image, imageid, container_type, privileged, pod_id }
    Process {
        state, oid, poid, ts, exe, exe_args, uid, user_name, gid, group_name, tty,
        container_id, entry, cwd, env,
    }
    File { state, oid, ts, restype, path, container_id }
    ProcessEvent { proc_oid, ts, tid, op_flags, args, ret }
    FileFlow {
        proc_oid, ts, tid, op_flags, open_flags, end_ts, file_oid, fd, num_r_recv_ops,
        num_w_send_ops, num_r_recv_bytes, num_w_send_bytes,
    }
    FileEvent { proc_oid, ts, tid, op_flags, file_oid, ret, new_file_oid }
    NetworkEvent { proc_oid, ts, tid, op_flags, sip, sport, dip, dport, proto, ret }
    ProcessFlow {
        proc_oid, ts, num_threads_cloned, op_flags, end_ts, num_threads_exited,
        num_clone_errors,
    }
    Port { port, target_port, node_port, proto }
    Service { name, id, namespace, port_list, cluster_ip }
    Pod {
        ts, id, name, node_name, host_ip, internal_ip, namespace, restart_count, labels,
        selectors, services,
    }
    K8sEvent { kind, action, ts, message }
}

/// NetworkFlow: the v5 fields, then the extension's two trailing fields when the schema has
/// them (plain v5 has no place for them, so they are left out).
fn encode_network_flow(out: &mut Vec<u8>, flow: &NetworkFlow, schema: WriterSchema) {
    let NetworkFlow {
        proc_oid,
        ts,
        tid,
        op_flags,
        end_ts,
        sip,
        sport,
        dip,
        dport,
        proto,
        fd,
        num_r_recv_ops,
        num_w_send_ops,
        num_r_recv_bytes,
        num_w_send_bytes,
        sip6,
        dip6,
    } = flow;
    proc_oid.encode(out);
    ts.encode(out);
    tid.encode(out);
    op_flags.encode(out);
    end_ts.encode(out);
    sip.encode(out);
    sport.encode(out);
    dip.encode(out);
    dport.encode(out);
    proto.encode(out);
    fd.encode(out);
    num_r_recv_ops.encode(out);
    num_w_send_ops.encode(out);
    num_r_recv_bytes.encode(out);
    num_w_send_bytes.encode(out);
    if schema == WriterSchema::V5Ipv6 {
        sip6.encode(out);
        dip6.encode(out);
    }
}
