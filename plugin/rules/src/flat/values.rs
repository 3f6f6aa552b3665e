//! What each attribute reads from a flat record: the slot, entity or derived value
//! sf-processor's field mapper reads for it, as the Go type that decides how it compares.

use super::*;

impl Fields for Flat {
    fn open_flags(&self) -> i64 {
        self.ints[OPENFLAGS_SIP]
    }

    fn op_flags(&self) -> Option<(i32, bool)> {
        (self.kind != Kind::K8sEvent)
            .then(|| (self.ints[OPFLAGS] as i32, self.kind == Kind::NetworkFlow))
    }

    fn value(&self, attr: Attr) -> Value<'_> {
        use Attr::*;
        let i = &self.ints;
        let d = || &**self.derived.get_or_init(Box::default);
        let proc_str =
            |f: fn(&Process) -> &str| s(self.process.as_deref().map_or("", |p| f(&p.process)));
        // The ancestor lists, made once per process snapshot ("" without one).
        let list = |at: usize, make: fn(&Tree) -> String| -> &str {
            self.tree
                .as_deref()
                .map_or("", |t| t.lists[at].get_or_init(|| make(t)).as_str())
        };
        let parent_str = |f: fn(&Process) -> &str| s(self.parent().map_or("", f));
        let container_str = |f: fn(&Container) -> &str| s(self.container.as_deref().map_or("", f));
        let pod_str = |f: fn(&PodEntry) -> &str| s(self.pod.as_deref().map_or("", f));
        match attr {
            Type => s(self.kind.code()),
            OpFlags => s(cached(&d().opflags, || self.opflags().join(","))),
            Ret => Value::Int(
                if matches!(self.kind, Kind::ProcessEvent | Kind::FileEvent) {
                    i[RET_ENDTS]
                } else {
                    0
                },
            ),
            Ts => Value::Int(i[TS]),
            EndTs => Value::Int(match self.kind {
                Kind::FileFlow | Kind::NetworkFlow => i[RET_ENDTS],
                Kind::K8sEvent => i[TS],
                _ => 0,
            }),
            ProcOid => s(cached(&d().proc_oid, || {
                oid_hash(i[PROC_HPID], i[PROC_CREATETS])
            })),
            ProcPid => Value::Int(i[PROC_HPID]),
            ProcName => s(golang::base(self.exe())),
            ProcExe => proc_str(|p| &p.exe),
            ProcArgs => proc_str(|p| &p.exe_args),
            ProcUid => Value::Int(i[PROC_UID]),
            ProcUser => proc_str(|p| &p.user_name),
            ProcTid => Value::Int(i[TID]),
            ProcGid => Value::Int(i[PROC_GID]),
            ProcGroup => proc_str(|p| &p.group_name),
            ProcCreateTs => Value::Int(i[PROC_CREATETS]),
            ProcTty => Value::Int(i[PROC_TTY]),
            ProcEntry => Value::Int(i[PROC_ENTRY]),
            // Without a process: " " (the exe and arguments are empty, the space is not).
            ProcCmdline => s(self.process.as_deref().map_or(" ", ProcessEntry::cmdline)),
            ProcAName => s(list(0, |t| join(t.iter().map(|p| golang::base(&p.exe))))),
            ProcAExe => s(list(1, |t| join(t.iter().map(|p| p.exe.as_str().into())))),
            ProcACmdline => s(list(2, |t| join(t.iter().map(|p| cmdline(p).into())))),
            ProcAPid => s(list(3, |t| {
                join(t.iter().map(|p| p.oid.hpid.to_string().into()))
            })),
            PProcOid => s(cached(&d().pproc_oid, || {
                oid_hash(i[POID_HPID], i[POID_CREATETS])
            })),
            PProcPid => Value::Int(i[POID_HPID]),
            PProcCreateTs => Value::Int(i[POID_CREATETS]),
            PProcName => s(self.parent().map_or("".into(), |p| golang::base(&p.exe))),
            PProcExe => parent_str(|p| &p.exe),
            PProcArgs => parent_str(|p| &p.exe_args),
            PProcUser => parent_str(|p| &p.user_name),
            PProcGroup => parent_str(|p| &p.group_name),
            PProcCmdline => s(cached(&d().pproc_cmdline, || {
                self.parent().map_or(String::new(), cmdline)
            })),
            PProcUid => self.parent().map_or(Value::Int(0), |p| Value::Int32(p.uid)),
            PProcGid => self.parent().map_or(Value::Int(0), |p| Value::Int32(p.gid)),
            PProcTty => self.parent().map_or(Value::Int(0), |p| Value::Bool(p.tty)),
            PProcEntry => self
                .parent()
                .map_or(Value::Int(0), |p| Value::Bool(p.entry)),
            FileName => s(golang::base(self.file_path(false))),
            FilePath => s(self.sym(false).0),
            FileSymlink => s(self.sym(false).1),
            FileOid => s(self.file_oid(false)),
            FileDirectory => s(self.directory(false)),
            FileNewName => s(golang::base(self.file_path(true))),
            FileNewPath => s(self.sym(true).0),
            FileNewSymlink => s(self.sym(true).1),
            FileNewOid => s(self.file_oid(true)),
            FileNewDirectory => s(self.directory(true)),
            FileType => s(match golang::ascii_rune(i[FILE_RESTYPE]) {
                Some(c) => c,
                None => cached(&d().file_type, || golang::rune_string(i[FILE_RESTYPE])),
            }),
            FileIsOpenWrite => Value::Bool(golang::is_open_write(i[OPENFLAGS_SIP])),
            FileIsOpenRead => Value::Bool(golang::is_open_read(i[OPENFLAGS_SIP])),
            FileFd => Value::Int(i[FD]),
            FileOpenFlags => s(cached(&d().openflags, || self.openflags().join(","))),
            NetProto => Value::Int(i[PROTO]),
            NetSport => Value::Int(i[SPORT]),
            NetDport => Value::Int(i[DPORT]),
            NetPort => s(cached(&d().port, || format!("{},{}", i[SPORT], i[DPORT]))),
            NetSip => s(cached(&d().sip, || ipv4(i[OPENFLAGS_SIP]))),
            NetDip => s(cached(&d().dip, || ipv4(i[DIP]))),
            NetIp => s(cached(&d().ip, || {
                format!("{},{}", ipv4(i[OPENFLAGS_SIP]), ipv4(i[DIP]))
            })),
            // The file and network counters share a slot, which sf-processor adds to itself.
            FlowRBytes => Value::Int(2 * i[RBYTES]),
            FlowROps => Value::Int(2 * i[ROPS]),
            FlowWBytes => Value::Int(2 * i[WBYTES]),
            FlowWOps => Value::Int(2 * i[WOPS]),
            ContainerId => container_str(|c| &c.id),
            ContainerName => container_str(|c| &c.name),
            ContainerImageId => container_str(|c| &c.imageid),
            ContainerImage => container_str(|c| &c.image),
            ContainerType => s(golang::container_type(i[CONT_TYPE])),
            ContainerPrivileged => Value::Int(i[CONT_PRIVILEGED]),
            PodTs => Value::Int(i[POD_TS]),
            PodId => pod_str(|p| &p.pod.id),
            PodName => pod_str(|p| &p.pod.name),
            PodNodeName => pod_str(|p| &p.pod.node_name),
            PodNamespace => pod_str(|p| &p.pod.namespace),
            PodRestartCount => Value::Int(i[POD_RESTARTS]),
            PodHostIpJson => pod_str(|p| &p.host_ip),
            PodInternalIpJson => pod_str(|p| &p.internal_ip),
            PodServicesJson => pod_str(|p| &p.services),
            PodHostIp | PodInternalIp | PodServices => Value::Opaque(self.pod.is_some()),
            KeAction => s(golang::k8s_action(i[KE_ACTION])),
            KeKind => s(golang::k8s_kind(i[KE_KIND])),
            KeMessage => s(self.ke_message.as_str()),
            NodeId => s(self.header.as_deref().map_or("", |h| &h.exporter)),
            NodeIp => s(self.header.as_deref().map_or("", |h| &h.ip)),
            MetaSchema => Value::Int(i[HE_VERSION]),
            MetaTraceName => s(golang::base(
                self.header.as_deref().map_or("", |h| &h.filename),
            )),
            EvtDir => s(">,<"),
        }
    }
}
