//! The attributes a condition can name: sf-processor's exported `sf.*` table and the Falco
//! aliases it accepts in conditions, each resolved per record. Any other operand is a literal
//! (misspelt attributes included: sf-processor never rejects them; the compiler lints them).

use std::borrow::Cow;

use crate::parser::trim_bounding_quotes;

macro_rules! attrs {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// An attribute sf-processor exports (its JSON field names) or accepts in conditions.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Attr { $($variant),* }

        /// Exported names, in declaration order.
        const NAMES: &[(&str, Attr)] = &[$(($name, Attr::$variant)),*];
    };
}

attrs! {
    Type = "sf.type",
    OpFlags = "sf.opflags",
    Ret = "sf.ret",
    Ts = "sf.ts",
    EndTs = "sf.endts",
    ProcOid = "sf.proc.oid",
    ProcPid = "sf.proc.pid",
    ProcName = "sf.proc.name",
    ProcExe = "sf.proc.exe",
    ProcArgs = "sf.proc.args",
    ProcUid = "sf.proc.uid",
    ProcUser = "sf.proc.user",
    ProcTid = "sf.proc.tid",
    ProcGid = "sf.proc.gid",
    ProcGroup = "sf.proc.group",
    ProcCreateTs = "sf.proc.createts",
    ProcTty = "sf.proc.tty",
    ProcEntry = "sf.proc.entry",
    ProcCmdline = "sf.proc.cmdline",
    ProcAName = "sf.proc.aname",
    ProcAExe = "sf.proc.aexe",
    ProcACmdline = "sf.proc.acmdline",
    ProcAPid = "sf.proc.apid",
    PProcOid = "sf.pproc.oid",
    PProcPid = "sf.pproc.pid",
    PProcName = "sf.pproc.name",
    PProcExe = "sf.pproc.exe",
    PProcArgs = "sf.pproc.args",
    PProcUid = "sf.pproc.uid",
    PProcUser = "sf.pproc.user",
    PProcGid = "sf.pproc.gid",
    PProcGroup = "sf.pproc.group",
    PProcCreateTs = "sf.pproc.createts",
    PProcTty = "sf.pproc.tty",
    PProcEntry = "sf.pproc.entry",
    PProcCmdline = "sf.pproc.cmdline",
    FileName = "sf.file.name",
    FilePath = "sf.file.path",
    FileSymlink = "sf.file.symlink",
    FileOid = "sf.file.oid",
    FileDirectory = "sf.file.directory",
    FileNewName = "sf.file.newname",
    FileNewPath = "sf.file.newpath",
    FileNewSymlink = "sf.file.newsymlink",
    FileNewOid = "sf.file.newoid",
    FileNewDirectory = "sf.file.newdirectory",
    FileType = "sf.file.type",
    FileIsOpenWrite = "sf.file.is_open_write",
    FileIsOpenRead = "sf.file.is_open_read",
    FileFd = "sf.file.fd",
    FileOpenFlags = "sf.file.openflags",
    NetProto = "sf.net.proto",
    NetSport = "sf.net.sport",
    NetDport = "sf.net.dport",
    NetPort = "sf.net.port",
    NetSip = "sf.net.sip",
    NetDip = "sf.net.dip",
    NetIp = "sf.net.ip",
    FlowRBytes = "sf.flow.rbytes",
    FlowROps = "sf.flow.rops",
    FlowWBytes = "sf.flow.wbytes",
    FlowWOps = "sf.flow.wops",
    ContainerId = "sf.container.id",
    ContainerName = "sf.container.name",
    ContainerImageId = "sf.container.imageid",
    ContainerImage = "sf.container.image",
    ContainerType = "sf.container.type",
    ContainerPrivileged = "sf.container.privileged",
    PodTs = "sf.pod.ts",
    PodId = "sf.pod.id",
    PodName = "sf.pod.name",
    PodNodeName = "sf.pod.nodename",
    PodNamespace = "sf.pod.namespace",
    PodRestartCount = "sf.pod.restartcnt",
    PodHostIpJson = "sf.pod.hostip",
    PodHostIp = "sf.pod.hostip+",
    PodInternalIpJson = "sf.pod.internalip",
    PodInternalIp = "sf.pod.internalip+",
    PodServicesJson = "sf.pod.services",
    PodServices = "sf.pod.services+",
    KeAction = "sf.ke.action",
    KeKind = "sf.ke.kind",
    KeMessage = "sf.ke.message",
    NodeId = "sf.node.id",
    NodeIp = "sf.node.ip",
    MetaSchema = "sf.meta.schema",
    MetaTraceName = "sf.meta.tracename",
    // Falco's evt.dir: the constant ">,<" (sf-processor has no exported name for it).
    EvtDir = "evt.dir",
}

/// Falco names sf-processor maps onto its own attributes (query only, never exported).
const ALIASES: &[(&str, Attr)] = &[
    ("evt.type", Attr::OpFlags),
    ("evt.rawres", Attr::Type),
    ("evt.rawtime", Attr::Ts),
    ("evt.is_open_read", Attr::FileIsOpenRead),
    ("evt.is_open_write", Attr::FileIsOpenWrite),
    ("evt.arg.uid", Attr::ProcUid),
    ("fd.typechar", Attr::FileType),
    ("fd.directory", Attr::FileDirectory),
    ("fd.name", Attr::FileName),
    ("fd.filename", Attr::FileName),
    ("fd.proto", Attr::NetProto),
    ("fd.lproto", Attr::NetProto),
    ("fd.l4proto", Attr::NetProto),
    ("fd.rproto", Attr::NetProto),
    ("fd.sproto", Attr::NetProto),
    ("fd.cproto", Attr::NetProto),
    ("fd.sport", Attr::NetSport),
    ("fd.dport", Attr::NetDport),
    ("fd.sip", Attr::NetSip),
    ("fd.dip", Attr::NetDip),
    ("fd.ip", Attr::NetIp),
    ("fd.port", Attr::NetPort),
    ("fd.num", Attr::FileFd),
    ("user.name", Attr::ProcUser),
    ("proc.user", Attr::ProcUser),
    ("proc.pid", Attr::ProcPid),
    ("proc.tid", Attr::ProcTid),
    ("proc.gid", Attr::ProcGid),
    ("proc.uid", Attr::ProcUid),
    ("proc.group", Attr::ProcGroup),
    ("proc.exe", Attr::ProcExe),
    ("proc.name", Attr::ProcName),
    ("proc.args", Attr::ProcArgs),
    ("proc.cmdline", Attr::ProcCmdline),
    // sf-processor maps these two onto the parent's fields.
    ("proc.tty", Attr::PProcTty),
    ("proc.createtime", Attr::PProcCreateTs),
    ("proc.aname", Attr::ProcAName),
    ("proc.apid", Attr::ProcAPid),
    ("proc.ppid", Attr::PProcPid),
    ("proc.pgid", Attr::PProcGid),
    ("proc.puid", Attr::PProcUid),
    ("proc.pgroup", Attr::PProcGroup),
    ("proc.ptty", Attr::PProcTty),
    ("proc.puser", Attr::PProcUser),
    ("proc.pexe", Attr::PProcExe),
    ("proc.pargs", Attr::PProcArgs),
    ("proc.pname", Attr::PProcName),
    ("proc.pcmdline", Attr::PProcCmdline),
    ("proc.pcreatetime", Attr::PProcCreateTs),
    ("container.id", Attr::ContainerId),
    ("container.image.id", Attr::ContainerImageId),
    ("container.image", Attr::ContainerImage),
    ("container.name", Attr::ContainerName),
    ("container.type", Attr::ContainerType),
    ("container.privileged", Attr::ContainerPrivileged),
];

impl Attr {
    /// The attribute a condition's operand names, if it names one.
    pub fn lookup(name: &str) -> Option<Attr> {
        NAMES
            .iter()
            .chain(ALIASES)
            .find(|(n, _)| *n == name)
            .map(|&(_, a)| a)
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }

    /// What the value depends on (see [`Scope`]).
    pub fn scope(self) -> Scope {
        use Attr::*;
        match self {
            ProcOid | ProcPid | ProcName | ProcExe | ProcArgs | ProcUid | ProcUser | ProcGid
            | ProcGroup | ProcCreateTs | ProcTty | ProcEntry | ProcCmdline | ProcAName
            | ProcAExe | ProcACmdline | ProcAPid | PProcOid | PProcPid | PProcName | PProcExe
            | PProcArgs | PProcUid | PProcUser | PProcGid | PProcGroup | PProcCreateTs
            | PProcTty | PProcEntry | PProcCmdline | ContainerId | ContainerName
            | ContainerImageId | ContainerImage | ContainerType | ContainerPrivileged | PodTs
            | PodId | PodName | PodNodeName | PodNamespace | PodRestartCount | PodHostIpJson
            | PodHostIp | PodInternalIpJson | PodInternalIp | PodServicesJson | PodServices
            | NodeId | NodeIp | MetaSchema | MetaTraceName | EvtDir => Scope::Process,
            FileName | FilePath | FileSymlink | FileOid | FileDirectory | FileType => Scope::File,
            Type | OpFlags | Ret | Ts | EndTs | ProcTid | FileNewName | FileNewPath
            | FileNewSymlink | FileNewOid | FileNewDirectory | FileIsOpenWrite | FileIsOpenRead
            | FileFd | FileOpenFlags | NetProto | NetSport | NetDport | NetPort | NetSip
            | NetDip | NetIp | FlowRBytes | FlowROps | FlowWBytes | FlowWOps | KeAction
            | KeKind | KeMessage => Scope::Record,
        }
    }

    /// Whether the value is always a 64-bit integer (what `<`, `<=`, `>`, `>=` compare).
    pub fn always_int64(self) -> bool {
        use Attr::*;
        matches!(
            self,
            Ret | Ts
                | EndTs
                | ProcPid
                | ProcUid
                | ProcTid
                | ProcGid
                | ProcCreateTs
                | ProcTty
                | ProcEntry
                | PProcPid
                | PProcCreateTs
                | FileFd
                | NetProto
                | NetSport
                | NetDport
                | FlowRBytes
                | FlowROps
                | FlowWBytes
                | FlowWOps
                | ContainerPrivileged
                | PodTs
                | PodRestartCount
                | MetaSchema
        )
    }
}

/// What an attribute's value depends on: many records share a process snapshot or a file, so
/// a term that reads only one of them has the same answer for all their records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The process, its ancestors, its container and pod, or the trace header: the same for
    /// every record of a process snapshot.
    Process,
    /// The record's file (not the new file of a rename or link).
    File,
    /// The record itself: type, thread, operation, flags, counters, addresses, new file.
    Record,
}

/// A value as sf-processor's mapper returns it: the Go type decides how it prints, compares
/// and whether it "exists".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// A parent's uid or gid from the process cache (not 64-bit: numeric comparisons see 0).
    Int32(i32),
    Bool(bool),
    /// A pod's address or service list (the `+` attributes): no text, exists with a pod.
    Opaque(bool),
}

impl<'a> Value<'a> {
    /// sf-processor's `exists`: not its Go type's zero (so uid 0 does not exist).
    pub fn exists(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(v) => *v != 0,
            Value::Int32(v) => *v != 0,
            Value::Bool(b) | Value::Opaque(b) => *b,
        }
    }

    /// sf-processor's `MapStr`.
    pub fn into_text(self, attr: Attr) -> Cow<'a, str> {
        match self {
            Value::Str(Cow::Borrowed(s)) => Cow::Borrowed(trim_bounding_quotes(s)),
            Value::Str(Cow::Owned(s)) => {
                let t = trim_bounding_quotes(&s);
                if t.len() == s.len() {
                    Cow::Owned(s)
                } else {
                    Cow::Owned(t.to_string())
                }
            }
            Value::Int(v) if matches!(attr, Attr::ProcTty | Attr::ProcEntry) => {
                Cow::Borrowed(if v != 0 { "true" } else { "false" })
            }
            Value::Int(v) => Cow::Owned(v.to_string()),
            Value::Int32(v) => Cow::Owned(v.to_string()),
            Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Value::Opaque(_) => Cow::Borrowed(""),
        }
    }
}

/// A literal operand, settled at compile time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Literal {
    /// As written.
    pub raw: String,
    /// Trimmed of bounding quotes (what string operators compare).
    pub text: String,
    /// The raw text as a number, or 0 (quotes included: `"5"` is 0).
    pub int: i64,
    /// `text` split at commas, as string operators compare it.
    pub parts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    Attr(Attr),
    /// `attr[json.path]`: the path read from the attribute's text.
    Path(Attr, String),
    Literal(Literal),
}

impl Operand {
    pub fn parse(text: &str) -> Operand {
        if let Some(a) = Attr::lookup(text) {
            return Operand::Attr(a);
        }
        if let Some((base, rest)) = text.split_once('[')
            && let Some(a) = Attr::lookup(base)
        {
            // sf-processor drops the last character, whatever it is.
            let mut path = rest.to_string();
            path.pop();
            return Operand::Path(a, path);
        }
        // sf-processor cuts a literal at its first `[` before comparing it as text.
        let before_bracket = text.split('[').next().unwrap_or(text);
        let trimmed = trim_bounding_quotes(before_bracket);
        Operand::Literal(Literal {
            raw: text.to_string(),
            text: trimmed.to_string(),
            int: text.parse().unwrap_or(0),
            parts: trimmed.split(',').map(str::to_string).collect(),
        })
    }

    /// Whether numeric comparisons see the value itself (not 0).
    pub fn is_int64(&self) -> bool {
        match self {
            Operand::Attr(a) => a.always_int64(),
            Operand::Path(..) => false,
            Operand::Literal(l) => l.raw.parse::<i64>().is_ok(),
        }
    }
}

/// gjson's `Get(json, path).String()` for the paths policies use: dot-separated keys and
/// array indexes (`items.0.namespace`, `0.clusterip.0`). Not JSON, or no such value: "".
pub fn json_path(json: &str, path: &str) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(json) else {
        return String::new();
    };
    for key in path.split('.') {
        let next = match &mut value {
            serde_json::Value::Object(fields) => fields.remove(key),
            serde_json::Value::Array(items) => key
                .parse::<usize>()
                .ok()
                .filter(|&i| i < items.len())
                .map(|i| items.swap_remove(i)),
            _ => None,
        };
        match next {
            Some(v) => value = v,
            None => return String::new(),
        }
    }
    // Strings unquoted, null empty, anything else as its JSON text.
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}
