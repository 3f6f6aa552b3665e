//! sf-processor's JSON encoding of a flat record, byte for byte: the version, the record's own
//! fields, then the sections in name order (container, file, flow, k8s, meta, net, node, pod,
//! pproc, proc) with their fields sorted by name, each present only where sf-processor writes
//! it, then the matched rules and their tags.
//!
//! Two differences, both where sf-processor writes something wrong: opflags are named by the
//! record's own type (see `flat`), and a record whose process is unknown gets empty ancestor
//! lists (`"aname":[]`) where sf-processor writes nothing after the colon (invalid JSON).

use std::fmt::Write as _;

use crate::{
    Policy,
    attrs::Attr,
    flat::{Flat, Kind, ipv4},
    golang::{self, json_string},
    parser::trim_bounding_quotes,
};

/// The `version` every record starts with (sf-processor's JSON schema version).
const JSON_SCHEMA_VERSION: u32 = 5;

/// What sf-processor writes for a missing parent's text fields: a string holding two quotes.
const NO_PARENT: &str = "\"\\\"\\\"\"";

/// Appends one record (no newline).
pub fn encode(out: &mut String, flat: &Flat, policy: &Policy, matched: &[usize]) {
    let _ = write!(out, "{{\"version\":{JSON_SCHEMA_VERSION},");
    let _ = write!(out, "\"endts\":{},", flat.int(Attr::EndTs));
    out.push_str("\"opflags\":");
    names(out, &flat.opflags());
    let _ = write!(
        out,
        ",\"ret\":{},\"ts\":{},",
        flat.int(Attr::Ret),
        flat.ts()
    );
    out.push_str("\"type\":");
    json_string(out, flat.kind.code());

    let mut s = Sections { out, open: false };
    let ke = flat.kind == Kind::K8sEvent;
    if !ke && !flat.text(Attr::ContainerId).is_empty() {
        s.open("container");
        s.str("id", &flat.text(Attr::ContainerId));
        s.str("image", &flat.text(Attr::ContainerImage));
        s.str("imageid", &flat.text(Attr::ContainerImageId));
        s.str("name", &flat.text(Attr::ContainerName));
        s.int("privileged", flat.int(Attr::ContainerPrivileged));
        s.str("type", &flat.text(Attr::ContainerType));
    }
    if matches!(flat.kind, Kind::FileFlow | Kind::FileEvent) {
        s.open("file");
        s.str("directory", &flat.text(Attr::FileDirectory));
        s.int("fd", flat.int(Attr::FileFd));
        s.bool("is_open_read", flat.int(Attr::FileIsOpenRead) != 0);
        s.bool("is_open_write", flat.int(Attr::FileIsOpenWrite) != 0);
        s.str("name", &flat.text(Attr::FileName));
        s.str("newdirectory", &flat.text(Attr::FileNewDirectory));
        s.str("newname", &flat.text(Attr::FileNewName));
        s.str("newoid", &flat.text(Attr::FileNewOid));
        s.str("newpath", trim_bounding_quotes(flat.raw_new_path()));
        s.str("newsymlink", &flat.text(Attr::FileNewSymlink));
        s.str("oid", &flat.text(Attr::FileOid));
        s.key("openflags");
        names(s.out, &flat.openflags());
        s.str("path", &flat.text(Attr::FilePath));
        s.str("symlink", &flat.text(Attr::FileSymlink));
        s.str("type", &flat.text(Attr::FileType));
    }
    if matches!(flat.kind, Kind::FileFlow | Kind::NetworkFlow) {
        s.open("flow");
        s.int("rbytes", flat.int(Attr::FlowRBytes));
        s.int("rops", flat.int(Attr::FlowROps));
        s.int("wbytes", flat.int(Attr::FlowWBytes));
        s.int("wops", flat.int(Attr::FlowWOps));
    }
    if ke {
        s.open("k8s");
        s.str("action", &flat.text(Attr::KeAction));
        s.str("kind", &flat.text(Attr::KeKind));
        s.str("message", &flat.text(Attr::KeMessage));
    }
    s.open("meta");
    s.int("schema", flat.int(Attr::MetaSchema));
    s.str("tracename", &flat.text(Attr::MetaTraceName));
    if flat.kind == Kind::NetworkFlow {
        let (sip, dip) = (flat.text(Attr::NetSip), flat.text(Attr::NetDip));
        s.open("net");
        s.str("dip", &dip);
        s.int("dport", flat.int(Attr::NetDport));
        s.key("ip");
        s.out.push('[');
        json_string(s.out, &sip);
        s.out.push(',');
        json_string(s.out, &dip);
        s.out.push(']');
        let _ = write!(
            s.out,
            ",\"port\":[{},{}]",
            flat.int(Attr::NetSport),
            flat.int(Attr::NetDport)
        );
        s.int("proto", flat.int(Attr::NetProto));
        s.str("sip", &sip);
        s.int("sport", flat.int(Attr::NetSport));
    }
    s.open("node");
    s.str("id", &flat.text(Attr::NodeId));
    s.str("ip", &flat.text(Attr::NodeIp));
    if !ke
        && let Some(pod) = flat
            .pod
            .as_deref()
            .filter(|p| !trim_bounding_quotes(&p.pod.id).is_empty())
    {
        let p = &pod.pod;
        s.open("pod");
        s.key("hostip");
        ip_array(s.out, &p.host_ip);
        s.str("id", &flat.text(Attr::PodId));
        s.key("internalip");
        ip_array(s.out, &p.internal_ip);
        s.str("name", &flat.text(Attr::PodName));
        s.str("namespace", &flat.text(Attr::PodNamespace));
        s.str("nodename", &flat.text(Attr::PodNodeName));
        s.int("restartcnt", flat.int(Attr::PodRestartCount));
        s.key("services");
        services(s.out, &p.services);
        s.int("ts", flat.int(Attr::PodTs));
    }
    if !ke && flat.int(Attr::PProcPid) != 0 {
        let parent = flat.tree.as_deref().and_then(|t| t.get(1));
        s.open("pproc");
        match parent {
            Some(p) => {
                s.str("args", trim_bounding_quotes(&p.exe_args));
                s.key("cmdline");
                command_line(s.out, &p.exe, &p.exe_args);
            }
            None => {
                s.raw("args", NO_PARENT);
                s.raw("cmdline", NO_PARENT);
            }
        }
        s.int("createts", flat.int(Attr::PProcCreateTs));
        s.bool("entry", parent.is_some_and(|p| p.entry));
        match parent {
            Some(p) => s.str("exe", trim_bounding_quotes(&p.exe)),
            None => s.raw("exe", NO_PARENT),
        }
        s.int("gid", parent.map_or(0, |p| p.gid.into()));
        match parent {
            Some(p) => {
                s.str("group", trim_bounding_quotes(&p.group_name));
                s.str("name", trim_bounding_quotes(&golang::base(&p.exe)));
            }
            None => {
                s.raw("group", NO_PARENT);
                s.raw("name", NO_PARENT);
            }
        }
        s.str("oid", &flat.text(Attr::PProcOid));
        s.int("pid", flat.int(Attr::PProcPid));
        s.bool("tty", parent.is_some_and(|p| p.tty));
        s.int("uid", parent.map_or(0, |p| p.uid.into()));
        match parent {
            Some(p) => s.str("user", trim_bounding_quotes(&p.user_name)),
            None => s.raw("user", NO_PARENT),
        }
    }
    if !ke {
        let tree: &[_] = flat.tree.as_deref().map_or(&[], |t| t);
        s.open("proc");
        s.key("acmdline");
        array(s.out, tree, |out, p| command_line(out, &p.exe, &p.exe_args));
        s.key("aexe");
        array(s.out, tree, |out, p| {
            json_string(out, trim_bounding_quotes(&p.exe))
        });
        s.key("aname");
        array(s.out, tree, |out, p| {
            json_string(out, trim_bounding_quotes(&golang::base(&p.exe)));
        });
        s.key("apid");
        array(s.out, tree, |out, p| {
            let _ = write!(out, "{}", p.oid.hpid);
        });
        s.str("args", &flat.text(Attr::ProcArgs));
        s.str("cmdline", &flat.text(Attr::ProcCmdline));
        s.int("createts", flat.int(Attr::ProcCreateTs));
        s.bool("entry", flat.int(Attr::ProcEntry) == 1);
        s.str("exe", &flat.text(Attr::ProcExe));
        s.int("gid", flat.int(Attr::ProcGid));
        s.str("group", &flat.text(Attr::ProcGroup));
        s.str("name", &flat.text(Attr::ProcName));
        s.str("oid", &flat.text(Attr::ProcOid));
        s.int("pid", flat.int(Attr::ProcPid));
        s.int("tid", flat.int(Attr::ProcTid));
        s.bool("tty", flat.int(Attr::ProcTty) == 1);
        s.int("uid", flat.int(Attr::ProcUid));
        s.str("user", &flat.text(Attr::ProcUser));
    }
    out.push('}');

    if !matched.is_empty() {
        out.push_str(",\"policies\":[");
        for (n, &i) in matched.iter().enumerate() {
            let rule = &policy.rules[i];
            if n > 0 {
                out.push(',');
            }
            out.push_str("{\"id\":");
            json_string(out, &rule.name);
            out.push_str(",\"desc\":");
            json_string(out, &rule.desc);
            let _ = write!(out, ",\"priority\":{}}}", rule.priority as u8);
        }
        out.push(']');
        let tags: Vec<&str> = matched
            .iter()
            .flat_map(|&i| policy.rules[i].tags.iter().map(String::as_str))
            .collect();
        if !tags.is_empty() {
            out.push_str(",\"tags\":[");
            for (n, tag) in tags.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                json_string(out, tag);
            }
            out.push(']');
        }
    }
    out.push('}');
}

/// Writes `"section":{` and its fields, closing the previous section.
struct Sections<'o> {
    out: &'o mut String,
    /// Whether a field was written in the current section.
    open: bool,
}

impl Sections<'_> {
    fn open(&mut self, name: &str) {
        if self.open {
            self.out.push_str("},");
        } else {
            self.out.push(',');
        }
        let _ = write!(self.out, "\"{name}\":{{");
        self.open = false;
    }

    fn key(&mut self, name: &str) {
        if self.open {
            self.out.push(',');
        }
        let _ = write!(self.out, "\"{name}\":");
        self.open = true;
    }

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        json_string(self.out, value);
    }

    fn raw(&mut self, name: &str, value: &str) {
        self.key(name);
        self.out.push_str(value);
    }

    fn int(&mut self, name: &str, value: i64) {
        self.key(name);
        let _ = write!(self.out, "{value}");
    }

    fn bool(&mut self, name: &str, value: bool) {
        self.key(name);
        self.out.push_str(if value { "true" } else { "false" });
    }
}

fn names(out: &mut String, names: &[&str]) {
    out.push('[');
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{n}\"");
    }
    out.push(']');
}

fn array<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

/// `exe` and, if any, ` args`, each trimmed of bounding quotes, as one JSON string.
fn command_line(out: &mut String, exe: &str, args: &str) {
    let (exe, args) = (trim_bounding_quotes(exe), trim_bounding_quotes(args));
    if args.is_empty() {
        json_string(out, exe);
    } else {
        json_string(out, &format!("{exe} {args}"));
    }
}

/// sf-processor writes pod addresses without commas between them.
fn ip_array(out: &mut String, ips: &[i64]) {
    out.push('[');
    for &ip in ips {
        json_string(out, &ipv4(ip));
    }
    out.push(']');
}

/// sf-processor's own services writer (no commas between services, lowercase port keys).
fn services(out: &mut String, services: &[sysflow::Service]) {
    out.push('[');
    for s in services {
        out.push_str("{\"id\":");
        json_string(out, &s.id);
        out.push_str(",\"name\":");
        json_string(out, &s.name);
        out.push_str(",\"namespace\":");
        json_string(out, &s.namespace);
        out.push_str(",\"clusterIP\":");
        ip_array(out, &s.cluster_ip);
        out.push_str(",\"ports\":[");
        for (i, p) in s.port_list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"port\":{},\"targetport\":{},\"nodeport\":{},\"proto\":",
                p.port, p.target_port, p.node_port
            );
            json_string(out, &p.proto);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
}
