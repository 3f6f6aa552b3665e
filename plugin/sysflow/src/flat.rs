//! Records joined with their entities, and rendered the way `sysprint` (sysflow-tools 0.6.1)
//! renders them: the same join as its `FlattenedSFReader` (tables reset at every header,
//! dangling references left empty) and the same JSON fields, nesting, order and empty values
//! as `sysprint -o json`.

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};

use crate::{
    encoding::{int_to_ipv4, long_to_ipv4, op_flags_str},
    records::*,
};

/// An event or flow with everything it refers to.
#[derive(Clone, Debug)]
pub struct FlatRecord {
    pub record: Record,
    pub header: Option<SfHeader>,
    pub pod: Option<Pod>,
    pub container: Option<Container>,
    pub process: Option<Process>,
    pub parent: Option<Process>,
    pub file: Option<File>,
    pub new_file: Option<File>,
}

/// Joins a record stream (like sysprint's `FlattenedSFReader` without entity output).
#[derive(Default)]
pub struct Flattener {
    header: Option<SfHeader>,
    pods: HashMap<String, Pod>,
    containers: HashMap<String, Container>,
    processes: HashMap<Oid, Process>,
    files: HashMap<Foid, File>,
}

impl Flattener {
    /// Takes the next record; returns the joined view for events and flows.
    pub fn push(&mut self, record: Record) -> Option<FlatRecord> {
        let proc_oid = match &record {
            Record::Header(h) => {
                *self = Flattener {
                    header: Some(h.clone()),
                    ..Flattener::default()
                };
                return None;
            }
            Record::Pod(p) => {
                self.pods.insert(p.id.clone(), p.clone());
                return None;
            }
            Record::Container(c) => {
                self.containers.insert(c.id.clone(), c.clone());
                return None;
            }
            Record::Process(p) => {
                self.processes.insert(p.oid, p.clone());
                return None;
            }
            Record::File(f) => {
                self.files.insert(f.oid, f.clone());
                return None;
            }
            Record::K8sEvent(_) => None,
            Record::ProcessEvent(e) => Some(e.proc_oid),
            Record::NetworkFlow(e) => Some(e.proc_oid),
            Record::FileFlow(e) => Some(e.proc_oid),
            Record::FileEvent(e) => Some(e.proc_oid),
            Record::NetworkEvent(e) => Some(e.proc_oid),
            Record::ProcessFlow(e) => Some(e.proc_oid),
        };
        let process = proc_oid.and_then(|oid| self.processes.get(&oid)).cloned();
        let parent = process
            .as_ref()
            .and_then(|p| p.poid)
            .and_then(|oid| self.processes.get(&oid))
            .cloned();
        let container = process
            .as_ref()
            .and_then(|p| p.container_id.as_ref())
            .and_then(|id| self.containers.get(id))
            .cloned();
        let pod = container
            .as_ref()
            .and_then(|c| c.pod_id.as_ref())
            .and_then(|id| self.pods.get(id))
            .cloned();
        let (file, new_file) = match &record {
            Record::FileFlow(f) => (self.files.get(&f.file_oid).cloned(), None),
            Record::FileEvent(f) => (
                self.files.get(&f.file_oid).cloned(),
                f.new_file_oid.and_then(|o| self.files.get(&o)).cloned(),
            ),
            _ => (None, None),
        };
        Some(FlatRecord {
            record,
            header: self.header.clone(),
            pod,
            container,
            process,
            parent,
            file,
            new_file,
        })
    }
}

/// `datetime.utcfromtimestamp(float(ts) / 1e9).isoformat()`, as sysprint computes it: through
/// a double, microseconds rounded half-to-even, shown only when not zero.
pub fn iso8601(ts_ns: i64) -> String {
    let t = ts_ns as f64 / 1e9;
    let mut secs = t.trunc();
    let mut us = ((t - secs) * 1e6).round_ties_even();
    if us >= 1_000_000.0 {
        secs += 1.0;
        us -= 1_000_000.0;
    } else if us < 0.0 {
        secs -= 1.0;
        us += 1_000_000.0;
    }
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if us as i64 == 0 {
        base
    } else {
        format!("{base}.{:06}", us as i64)
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

/// Which optional Process fields a schema version has (sysprint shows '' for absent ones).
pub fn has_entry(version: Option<i64>) -> bool {
    version != Some(1000)
}

pub fn has_cwd_env(version: Option<i64>) -> bool {
    matches!(version, Some(v) if (5..1000).contains(&v))
}

/// A process environment as sysprint shows it: the non-empty entries joined with `;`.
pub fn env_str(env: &[String]) -> String {
    env.iter()
        .filter(|e| !e.is_empty() && *e != "=")
        .cloned()
        .collect::<Vec<_>>()
        .join(";")
}

fn opt<T: Into<Json>>(v: Option<T>, empty: Json) -> Json {
    v.map(Into::into).unwrap_or(empty)
}

/// What the record itself carries beside its entities: op flags, times, thread, return code,
/// descriptor (each only for the record types that have it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    pub flags: Option<i32>,
    pub ts: Option<i64>,
    pub tid: Option<i64>,
    pub ret: Option<i32>,
    pub fd: Option<i32>,
    /// Flows only.
    pub end_ts: Option<i64>,
}

/// Addresses as sysprint shows them (dotted quads).
pub fn ipv4_list(v: &[i64]) -> Vec<String> {
    v.iter().map(|ip| long_to_ipv4(*ip).to_string()).collect()
}

/// A pod's services as sysprint shows them.
pub fn services_json(pod: &Pod) -> Json {
    Json::from(
        pod.services
            .iter()
            .map(|s| {
                json!({
                    "name": s.name, "id": s.id, "namespace": s.namespace,
                    "portList": s.port_list.iter().map(|p| json!({
                        "port": p.port, "targetPort": p.target_port,
                        "nodePort": p.node_port, "proto": p.proto,
                    })).collect::<Vec<_>>(),
                    "clusterIP": ipv4_list(&s.cluster_ip),
                })
            })
            .collect::<Vec<_>>(),
    )
}

impl FlatRecord {
    /// The record's own operation fields.
    pub fn operation(&self) -> Operation {
        let event = |flags, ts, tid, ret| Operation {
            flags: Some(flags),
            ts: Some(ts),
            tid: Some(tid),
            ret: Some(ret),
            ..Operation::default()
        };
        let flow = |flags, ts, tid, fd, end_ts| Operation {
            flags: Some(flags),
            ts: Some(ts),
            tid: Some(tid),
            fd: Some(fd),
            end_ts: Some(end_ts),
            ..Operation::default()
        };
        match &self.record {
            Record::ProcessEvent(e) => event(e.op_flags, e.ts, e.tid, e.ret),
            Record::FileEvent(e) => event(e.op_flags, e.ts, e.tid, e.ret),
            Record::NetworkEvent(e) => event(e.op_flags, e.ts, e.tid, e.ret),
            Record::FileFlow(f) => flow(f.op_flags, f.ts, f.tid, f.fd, f.end_ts),
            Record::NetworkFlow(f) => flow(f.op_flags, f.ts, f.tid, f.fd, f.end_ts),
            Record::ProcessFlow(f) => Operation {
                flags: Some(f.op_flags),
                ts: Some(f.ts),
                end_ts: Some(f.end_ts),
                ..Operation::default()
            },
            Record::K8sEvent(e) => Operation {
                ts: Some(e.ts),
                ..Operation::default()
            },
            _ => Operation::default(),
        }
    }

    /// sysprint's `res` column: the file path (and the new path), or the connection.
    pub fn resource(&self) -> String {
        match &self.record {
            Record::FileFlow(_) | Record::FileEvent(_) => {
                let mut s = self
                    .file
                    .as_ref()
                    .map(|f| f.path.clone())
                    .unwrap_or_default();
                if let Some(n) = &self.new_file {
                    s.push_str(", ");
                    s.push_str(&n.path);
                }
                s
            }
            Record::NetworkFlow(f) => format!(
                "{}:{}-{}:{}",
                int_to_ipv4(f.sip),
                f.sport,
                int_to_ipv4(f.dip),
                f.dport
            ),
            _ => String::new(),
        }
    }

    /// sysprint's `type` column.
    pub fn code(&self) -> &'static str {
        self.record.code()
    }

    /// The nested JSON object `sysprint -o json` prints for this record.
    pub fn to_sysprint_json(&self) -> Json {
        let r = &self.record;
        let version = self.header.as_ref().map(|h| h.version);
        let Operation {
            flags: op_flags,
            ts,
            tid,
            ret,
            fd,
            end_ts,
        } = self.operation();
        let is_flow = end_ts.is_some();
        let p = self.process.as_ref();
        let pp = self.parent.as_ref();
        let state = match (p, &self.file) {
            (Some(p), _) => p.state.symbol().into(),
            (None, Some(f)) => f.state.symbol().into(),
            _ => String::new(),
        };
        let proc_fields = |p: Option<&Process>, parent: bool| -> Map<String, Json> {
            let mut m = Map::new();
            let s = |f: fn(&Process) -> String| opt(p.map(f), json!(""));
            let int = |f: fn(&Process) -> i64| opt(p.map(f), Json::Null);
            if parent {
                m.insert("pid".into(), int(|p| p.oid.hpid));
                m.insert("gid".into(), int(|p| p.gid as i64));
                m.insert("uid".into(), int(|p| p.uid as i64));
                m.insert("group".into(), s(|p| p.group_name.clone()));
                m.insert("tty".into(), opt(p.map(|p| p.tty), json!("")));
                m.insert(
                    "entry".into(),
                    opt(p.filter(|_| has_entry(version)).map(|p| p.entry), json!("")),
                );
                m.insert(
                    "env".into(),
                    opt(
                        p.filter(|_| has_cwd_env(version)).map(|p| env_str(&p.env)),
                        json!(""),
                    ),
                );
                m.insert("user".into(), s(|p| p.user_name.clone()));
                m.insert(
                    "cwd".into(),
                    opt(
                        p.filter(|_| has_cwd_env(version)).map(|p| p.cwd.clone()),
                        json!(""),
                    ),
                );
                m.insert("exe".into(), s(|p| p.exe.clone()));
                m.insert("args".into(), s(|p| p.exe_args.clone()));
                m.insert(
                    "createts".into(),
                    opt(p.map(|p| p.oid.create_ts), json!("")),
                );
            } else {
                m.insert("pid".into(), int(|p| p.oid.hpid));
                m.insert("tid".into(), opt(tid, Json::Null));
                m.insert("uid".into(), int(|p| p.uid as i64));
                m.insert("user".into(), s(|p| p.user_name.clone()));
                m.insert("gid".into(), int(|p| p.gid as i64));
                m.insert("group".into(), s(|p| p.group_name.clone()));
                m.insert(
                    "cwd".into(),
                    opt(
                        p.filter(|_| has_cwd_env(version)).map(|p| p.cwd.clone()),
                        json!(""),
                    ),
                );
                m.insert("exe".into(), s(|p| p.exe.clone()));
                m.insert("args".into(), s(|p| p.exe_args.clone()));
                m.insert("tty".into(), opt(p.map(|p| p.tty), json!("")));
                m.insert(
                    "entry".into(),
                    opt(p.filter(|_| has_entry(version)).map(|p| p.entry), json!("")),
                );
                m.insert(
                    "env".into(),
                    opt(
                        p.filter(|_| has_cwd_env(version)).map(|p| env_str(&p.env)),
                        json!(""),
                    ),
                );
                m.insert("createts".into(), int(|p| p.oid.create_ts));
            }
            m
        };
        let nf = match r {
            Record::NetworkFlow(f) => Some(f),
            _ => None,
        };
        let ff = match r {
            Record::FileFlow(f) => Some(f),
            _ => None,
        };
        let res = self.resource();
        let (rb, ro, wb, wo) = match r {
            Record::FileFlow(f) => (
                Some(f.num_r_recv_bytes),
                Some(f.num_r_recv_ops),
                Some(f.num_w_send_bytes),
                Some(f.num_w_send_ops),
            ),
            Record::NetworkFlow(f) => (
                Some(f.num_r_recv_bytes),
                Some(f.num_r_recv_ops),
                Some(f.num_w_send_bytes),
                Some(f.num_w_send_ops),
            ),
            _ => (None, None, None, None),
        };
        let pf = match r {
            Record::ProcessFlow(f) => Some(f),
            _ => None,
        };
        let c = self.container.as_ref();
        let pod = self.pod.as_ref();
        let ips = |v: &[i64]| Json::from(ipv4_list(v));
        let services = pod.map(services_json);
        let h = self.header.as_ref();
        let ke = match r {
            Record::K8sEvent(e) => Some(e),
            _ => None,
        };
        let mut out = Map::new();
        out.insert("version".into(), json!("4"));
        out.insert("type".into(), json!(self.code()));
        out.insert("state".into(), json!(state));
        out.insert("opflags".into(), opt(op_flags.map(op_flags_str), json!("")));
        out.insert("opflags_bitmap".into(), opt(op_flags, json!("")));
        out.insert("ret".into(), opt(ret, Json::Null));
        out.insert("ts".into(), opt(ts.map(iso8601), json!("")));
        out.insert("ts_uts".into(), opt(ts, Json::Null));
        out.insert(
            "endts".into(),
            opt(end_ts.filter(|_| is_flow).map(iso8601), json!("")),
        );
        out.insert("endts_uts".into(), opt(end_ts, Json::Null));
        out.insert("proc".into(), Json::Object(proc_fields(p, false)));
        out.insert("pproc".into(), Json::Object(proc_fields(pp, true)));
        out.insert(
            "file".into(),
            json!({
                "fd": opt(fd, json!("")),
                "path": self.file.as_ref().map(|f| f.path.clone()).unwrap_or_default(),
                "newpath": self.new_file.as_ref().map(|f| f.path.clone()).unwrap_or_default(),
                "type": self.file.as_ref().map(|f| char::from_u32(f.restype as u32).unwrap_or('?').to_string()).unwrap_or_default(),
                "openflags": opt(ff.map(|f| f.open_flags), json!("")),
            }),
        );
        out.insert(
            "net".into(),
            json!({
                "proto": opt(nf.map(|f| f.proto), json!("")),
                "sport": opt(nf.map(|f| f.sport), Json::Null),
                "dport": opt(nf.map(|f| f.dport), Json::Null),
                "sip": opt(nf.map(|f| int_to_ipv4(f.sip).to_string()), json!("")),
                "dip": opt(nf.map(|f| int_to_ipv4(f.dip).to_string()), json!("")),
            }),
        );
        out.insert("res".into(), json!(res));
        out.insert(
            "flow".into(),
            json!({"rbytes": opt(rb, Json::Null), "rops": opt(ro, Json::Null),
                   "wbytes": opt(wb, Json::Null), "wops": opt(wo, Json::Null)}),
        );
        out.insert(
            "pf".into(),
            json!({"nthreads": opt(pf.map(|f| f.num_threads_cloned), Json::Null),
                   "nexits": opt(pf.map(|f| f.num_threads_exited), Json::Null),
                   "nerrors": opt(pf.map(|f| f.num_clone_errors), Json::Null)}),
        );
        out.insert(
            "container".into(),
            json!({
                "id": c.map(|c| c.id.clone()).unwrap_or_default(),
                "name": c.map(|c| c.name.clone()).unwrap_or_default(),
                "imageid": c.map(|c| c.imageid.clone()).unwrap_or_default(),
                "image": c.map(|c| c.image.clone()).unwrap_or_default(),
                "type": c.map(|c| c.container_type.symbol()).unwrap_or_default(),
                "privileged": opt(c.map(|c| c.privileged), json!("")),
            }),
        );
        out.insert(
            "pod".into(),
            json!({
                "id": pod.map(|p| p.id.clone()).unwrap_or_default(),
                "name": pod.map(|p| p.name.clone()).unwrap_or_default(),
                "nname": pod.map(|p| p.node_name.clone()).unwrap_or_default(),
                "hostip": opt(pod.map(|p| ips(&p.host_ip)), json!("")),
                "internalip": opt(pod.map(|p| ips(&p.internal_ip)), json!("")),
                "ns": pod.map(|p| p.namespace.clone()).unwrap_or_default(),
                "rstrtcnt": opt(pod.map(|p| p.restart_count), Json::Null),
                "services": services.unwrap_or(json!("")),
            }),
        );
        out.insert(
            "node".into(),
            json!({
                "id": h.map(|h| h.exporter.clone()).unwrap_or_default(),
                "ip": h.filter(|h| h.version != 1000).map(|h| h.ip.clone()).unwrap_or_default(),
            }),
        );
        out.insert(
            "filename".into(),
            json!(
                h.filter(|h| (3..1000).contains(&h.version))
                    .map(|h| h.filename.clone())
                    .unwrap_or_default()
            ),
        );
        out.insert("schema".into(), opt(h.map(|h| h.version), json!("")));
        out.insert("tags".into(), json!([]));
        out.insert(
            "k8s".into(),
            json!({
                "action": ke.map(|e| e.action.symbol()).unwrap_or_default(),
                "kind": ke.map(|e| e.kind.symbol()).unwrap_or_default(),
                "msg": ke.map(|e| e.message.clone()).unwrap_or_default(),
            }),
        );
        Json::Object(out)
    }

    /// One row of sysprint's default table columns: start time, type, command, args, parent
    /// pid, pid, tid, op flags, resource, bytes read, bytes written, container id.
    pub fn table_row(&self) -> Vec<String> {
        let j = self.to_sysprint_json();
        let s = |v: &Json| match v {
            Json::Null => String::new(),
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        vec![
            s(&j["ts_uts"]),
            s(&j["type"]),
            s(&j["proc"]["exe"]),
            s(&j["proc"]["args"]),
            s(&j["pproc"]["pid"]),
            s(&j["proc"]["pid"]),
            s(&j["proc"]["tid"]),
            s(&j["opflags"]),
            s(&j["res"]),
            s(&j["flow"]["rbytes"]),
            s(&j["flow"]["wbytes"]),
            s(&j["container"]["id"]),
        ]
    }
}

/// Column titles of [`FlatRecord::table_row`], as sysprint names them.
pub const TABLE_COLUMNS: [&str; 12] = [
    "Start Time",
    "T",
    "Cmd",
    "Args",
    "PPID",
    "PID",
    "TID",
    "Op Flags",
    "Resource",
    "NoBRead",
    "NoBWrite",
    "Cont ID",
];

/// Flattens a nested sysprint JSON object into dotted keys (`proc.exe`), for CSV.
pub fn dotted(json: &Json) -> Vec<(String, Json)> {
    let mut out = Vec::new();
    if let Json::Object(m) = json {
        for (k, v) in m {
            match v {
                Json::Object(inner) => {
                    for (ik, iv) in inner {
                        out.push((format!("{k}.{ik}"), iv.clone()));
                    }
                }
                other => out.push((k.clone(), other.clone())),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_like_python_utcfromtimestamp() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00");
        assert_eq!(
            iso8601(1_700_000_000_500_000_000),
            "2023-11-14T22:13:20.500000"
        );
        // Through a double: 1553543280704111050 ns is 1553543280.7041110... s.
        assert_eq!(
            iso8601(1_553_543_280_704_111_050),
            "2019-03-25T19:48:00.704111"
        );
        assert_eq!(iso8601(-1_000_000_000), "1969-12-31T23:59:59");
        assert_eq!(iso8601(951_782_400_000_000_000), "2000-02-29T00:00:00");
    }
}
