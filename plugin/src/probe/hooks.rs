//! Which programs are loaded and where they are attached.
//!
//! * **Lifecycle hooks**, always attached: tp_btf `sched_process_fork`, `sched_process_exec`,
//!   `sched_process_exit` and `cgroup_attach_task`. They cost nothing per syscall.
//! * **Syscall hooks**, one of two sets (`kernel.hooks`). The dispatcher set is attached only
//!   while some cgroup (or the default mode) wants a kind that needs it
//!   (`capture::SYSCALL_KINDS`): attaching any syscall hook puts every thread on the node on
//!   the kernel's slow syscall path. The tracepoint set stays attached (re-attaching its ~130
//!   perf tracepoints takes seconds).
//!   - `dispatcher`: one tp_btf `sys_exit` program that tail-calls per-syscall handlers, plus
//!     the classic `sys_enter_close` and `sys_enter_exec` (on execve and execveat).
//!   - `tracepoint`: a classic `sys_enter_X` (argument stash) and `sys_exit_X` program per
//!     followed syscall, plus `sys_enter_close` and `sys_enter_exec`.
//!
//! The per-syscall table is `syscalls.rs`. A trampoline set (fentry/fexit per syscall, the
//! cheapest hooks where the kernel allows them) would be a third entry here; at start-up the
//! probe checks which program types the kernel accepts (`KernelFeatures`) and logs it.

use std::{collections::BTreeSet, fmt};

use aya::{
    Btf, Ebpf,
    maps::{MapData, ProgramArray},
    programs::{
        BtfTracePoint, FEntry, FExit, Iter, Lsm, ProgramError, TracePoint,
        tp_btf::BtfTracePointLink, trace_point::TracePointLink,
    },
};
use serde::{Deserialize, Serialize};
use sysflow_common::syscall_class;
use tracing::{debug, info};

use super::{ProbeError, syscalls::FOLLOWED, tracefs::Tracefs, verifier_reason};

/// Which syscall hook set to use (`kernel.hooks` in the agent config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookChoice {
    /// The dispatcher, or the tracepoint set if the kernel refuses it.
    #[default]
    Auto,
    Dispatcher,
    Tracepoint,
}

impl std::str::FromStr for HookChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(HookChoice::Auto),
            "dispatcher" => Ok(HookChoice::Dispatcher),
            "tracepoint" => Ok(HookChoice::Tracepoint),
            other => Err(format!(
                "unknown hook set {other:?}: expected auto, dispatcher or tracepoint"
            )),
        }
    }
}

/// The syscall hook set in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookSet {
    Dispatcher,
    Tracepoint,
}

impl fmt::Display for HookSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookSet::Dispatcher => "dispatcher",
            HookSet::Tracepoint => "tracepoint",
        })
    }
}

/// Which program types the running kernel accepted at start-up (loaded and attached).
#[derive(Clone, Debug, Serialize)]
pub struct KernelFeatures {
    /// Empty when accepted, else the kernel's answer.
    pub fentry: Result<(), String>,
    pub fexit: Result<(), String>,
    pub lsm: Result<(), String>,
}

impl fmt::Display for KernelFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |r: &Result<(), String>| match r {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("no ({e})"),
        };
        write!(
            f,
            "fentry {}, fexit {}, BPF LSM {}",
            show(&self.fentry),
            show(&self.fexit),
            show(&self.lsm)
        )
    }
}

/// The sched programs, each on the tp_btf tracepoint of its own name.
const LIFECYCLE: [&str; 4] = [
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "cgroup_attach_task",
];
const DISPATCHER: &str = "sys_exit_dispatch";
const CLOSE: &str = "sys_enter_close";
/// Attached to both exec syscalls' sys_enter (see `EXEC_ENTERS`).
const EXEC_ENTER: &str = "sys_enter_exec";
const EXEC_ENTERS: [&str; 2] = ["sys_enter_execve", "sys_enter_execveat"];
const FLUSH: &str = "flush_counters";

/// An attached program; dropping it detaches.
pub(super) enum Link {
    Btf(#[expect(dead_code, reason = "held for its Drop")] BtfTracePointLink),
    Tracepoint(#[expect(dead_code, reason = "held for its Drop")] TracePointLink),
}

/// Where one syscall hook goes.
enum Attachment {
    Btf(&'static str),
    Tracepoint { program: String, tracepoint: String },
}

/// The loaded object with its attachments.
pub(super) struct Kernel {
    pub ebpf: Ebpf,
    pub set: HookSet,
    /// The dispatcher's handler array: the kernel clears a program array when its last
    /// user-space descriptor closes, so it is kept open here.
    _handlers: Option<ProgramArray<MapData>>,
    lifecycle: Vec<Link>,
    syscall: Vec<Link>,
    plan: Vec<Attachment>,
}

fn tp_btf<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut BtfTracePoint, ProbeError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| ProbeError::MissingProgram(name.into()))
}

fn tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, ProbeError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| ProbeError::MissingProgram(name.into()))
}

fn verifier(program: &str) -> impl FnOnce(ProgramError) -> ProbeError + '_ {
    move |e| ProbeError::Verifier {
        program: program.into(),
        reason: verifier_reason(&e),
    }
}

fn attach_err(program: &str, hook: &str) -> impl FnOnce(ProgramError) -> ProbeError {
    let (program, hook) = (program.to_string(), hook.to_string());
    move |source| ProbeError::Attach {
        program,
        tracepoint: hook,
        source: Box::new(source),
    }
}

impl Kernel {
    /// Loads the lifecycle programs, the flush iterator and the chosen syscall hook set (falling
    /// back to the tracepoint set when `auto` and the dispatcher is refused). Nothing is
    /// attached yet.
    pub fn load(
        mut ebpf: Ebpf,
        choice: HookChoice,
        btf: &Btf,
        tracefs: &Tracefs,
    ) -> Result<Kernel, ProbeError> {
        for name in LIFECYCLE {
            tp_btf(&mut ebpf, name)?
                .load(name, btf)
                .map_err(verifier(name))?;
        }
        let flush: &mut Iter = ebpf
            .program_mut(FLUSH)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| ProbeError::MissingProgram(FLUSH.into()))?;
        flush.load("task", btf).map_err(verifier(FLUSH))?;
        tracepoint(&mut ebpf, CLOSE)?
            .load()
            .map_err(verifier(CLOSE))?;
        tracepoint(&mut ebpf, EXEC_ENTER)?
            .load()
            .map_err(verifier(EXEC_ENTER))?;
        let (set, handlers) = match choice {
            HookChoice::Tracepoint => (HookSet::Tracepoint, None),
            HookChoice::Dispatcher => (HookSet::Dispatcher, Some(load_dispatcher(&mut ebpf, btf)?)),
            HookChoice::Auto => match load_dispatcher(&mut ebpf, btf) {
                Ok(handlers) => (HookSet::Dispatcher, Some(handlers)),
                Err(e) => {
                    info!(
                        "the syscall dispatcher cannot be used here ({e}); using the tracepoint hook set"
                    );
                    (HookSet::Tracepoint, None)
                }
            },
        };
        let mut plan = Vec::new();
        if set == HookSet::Dispatcher {
            plan.push(Attachment::Btf(DISPATCHER));
        } else {
            load_tracepoint_set(&mut ebpf, tracefs, &mut plan)?;
        }
        plan.push(Attachment::Tracepoint {
            program: CLOSE.into(),
            tracepoint: CLOSE.into(),
        });
        for tp in EXEC_ENTERS {
            plan.push(Attachment::Tracepoint {
                program: EXEC_ENTER.into(),
                tracepoint: tp.into(),
            });
        }
        Ok(Kernel {
            ebpf,
            set,
            _handlers: handlers,
            lifecycle: Vec::new(),
            syscall: Vec::new(),
            plan,
        })
    }

    pub fn attach_lifecycle(&mut self) -> Result<(), ProbeError> {
        for name in LIFECYCLE {
            let program = tp_btf(&mut self.ebpf, name)?;
            let id = program.attach().map_err(attach_err(name, name))?;
            let link = program.take_link(id).map_err(attach_err(name, name))?;
            self.lifecycle.push(Link::Btf(link));
        }
        Ok(())
    }

    pub fn syscall_hooks_attached(&self) -> bool {
        !self.syscall.is_empty()
    }

    /// Attaches the syscall hooks (no-op when attached).
    pub fn attach_syscall_hooks(&mut self) -> Result<(), ProbeError> {
        if self.syscall_hooks_attached() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut links = Vec::with_capacity(self.plan.len());
        for attachment in &self.plan {
            match attachment {
                Attachment::Btf(name) => {
                    let program = tp_btf(&mut self.ebpf, name)?;
                    let id = program.attach().map_err(attach_err(name, "sys_exit"))?;
                    let link = program
                        .take_link(id)
                        .map_err(attach_err(name, "sys_exit"))?;
                    links.push(Link::Btf(link));
                }
                Attachment::Tracepoint {
                    program,
                    tracepoint: tp,
                } => {
                    let p = tracepoint(&mut self.ebpf, program)?;
                    let id = p
                        .attach("syscalls", tp)
                        .map_err(attach_err(program, &format!("syscalls/{tp}")))?;
                    let link = p
                        .take_link(id)
                        .map_err(attach_err(program, &format!("syscalls/{tp}")))?;
                    links.push(Link::Tracepoint(link));
                }
            }
        }
        self.syscall = links;
        info!(
            set = %self.set,
            links = self.syscall.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "syscall hooks attached"
        );
        Ok(())
    }

    /// Takes the syscall hooks' links out; dropping them detaches (slow: do it off any path
    /// that must be quick).
    pub fn take_syscall_hooks(&mut self) -> Vec<Link> {
        std::mem::take(&mut self.syscall)
    }

    /// Every link, for the final detach.
    pub fn take_all(&mut self) -> Vec<Link> {
        let mut all = std::mem::take(&mut self.syscall);
        all.append(&mut self.lifecycle);
        all
    }

    pub fn attachments(&self) -> usize {
        self.lifecycle.len() + self.syscall.len()
    }

    /// Runs the flush iterator once: every process's descriptor counters are reported into the
    /// rings.
    pub fn run_flush(&mut self) -> Result<(), ProbeError> {
        use std::io::Read as _;
        let flush: &mut Iter = self
            .ebpf
            .program_mut(FLUSH)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| ProbeError::MissingProgram(FLUSH.into()))?;
        let id = flush.attach().map_err(attach_err(FLUSH, "iter/task"))?;
        let link = flush
            .take_link(id)
            .map_err(attach_err(FLUSH, "iter/task"))?;
        let mut file = link.into_file().map_err(|e| ProbeError::FlushIterator {
            step: "create",
            source: e.into(),
        })?;
        // The program writes into the rings, not the iterator: reading only runs it.
        let mut sink = Vec::new();
        file.read_to_end(&mut sink)
            .map_err(|e| ProbeError::FlushIterator {
                step: "run",
                source: e.into(),
            })?;
        Ok(())
    }

    /// Loads the empty feature programs and attaches each for a moment.
    pub fn check_features(&mut self, btf: &Btf) -> KernelFeatures {
        KernelFeatures {
            fentry: accepted::<FEntry, _>(
                &mut self.ebpf,
                "feature_fentry",
                |p| p.load("do_sys_openat2", btf),
                |p| p.attach(),
            ),
            fexit: accepted::<FExit, _>(
                &mut self.ebpf,
                "feature_fexit",
                |p| p.load("do_sys_openat2", btf),
                |p| p.attach(),
            ),
            lsm: accepted::<Lsm, _>(
                &mut self.ebpf,
                "feature_lsm",
                |p| p.load("file_open", btf),
                |p| p.attach(),
            ),
        }
    }
}

/// Whether the kernel loads and attaches program `name` (attached for a moment only).
fn accepted<P, L>(
    ebpf: &mut Ebpf,
    name: &str,
    load: impl FnOnce(&mut P) -> Result<(), ProgramError>,
    attach: impl FnOnce(&mut P) -> Result<L, ProgramError>,
) -> Result<(), String>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    let program: &mut P = ebpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or("program missing")?;
    load(program).map_err(|e| match e {
        // No verifier log when the kernel refuses the program type outright.
        ProgramError::LoadError { io_error, .. } => io_error.to_string(),
        other => other.to_string(),
    })?;
    attach(program).map(drop).map_err(|e| e.to_string())
}

/// The dispatcher and the handler program of every syscall it tail-calls, in the handler array.
fn load_dispatcher(ebpf: &mut Ebpf, btf: &Btf) -> Result<ProgramArray<MapData>, ProbeError> {
    tp_btf(ebpf, DISPATCHER)?
        .load("sys_exit", btf)
        .map_err(verifier(DISPATCHER))?;
    let mut handlers: ProgramArray<MapData> = ProgramArray::try_from(
        ebpf.take_map("SYSCALL_HANDLERS")
            .ok_or(ProbeError::MissingMap("SYSCALL_HANDLERS"))?,
    )
    .map_err(|source| ProbeError::Map {
        map: "SYSCALL_HANDLERS",
        source,
    })?;
    for followed in FOLLOWED {
        // Plain read/write-like calls are counted inside the dispatcher.
        let Some(nr) = followed.nr() else { continue };
        if matches!(followed.class, syscall_class::READ | syscall_class::WRITE) {
            continue;
        }
        let name = followed.handler_program();
        let program = tp_btf(ebpf, &name)?;
        program.load("sys_exit", btf).map_err(verifier(&name))?;
        let fd = program
            .fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
            .map_err(verifier(&name))?;
        handlers.set(nr, &fd, 0).map_err(|source| ProbeError::Map {
            map: "SYSCALL_HANDLERS",
            source,
        })?;
    }
    Ok(handlers)
}

/// Enter (stash) and exit programs of every followed syscall this kernel has.
fn load_tracepoint_set(
    ebpf: &mut Ebpf,
    tracefs: &Tracefs,
    plan: &mut Vec<Attachment>,
) -> Result<(), ProbeError> {
    let mut enters_loaded = BTreeSet::new();
    for followed in FOLLOWED {
        let exit = followed.exit_program();
        let enter_tp = followed.enter_tracepoint();
        if !tracefs.has_event("syscalls", &exit) || !tracefs.has_event("syscalls", &enter_tp) {
            debug!(syscall = followed.name, "not on this kernel, skipped");
            continue;
        }
        if enters_loaded.insert(followed.enter) {
            tracepoint(ebpf, followed.enter)?
                .load()
                .map_err(verifier(followed.enter))?;
        }
        tracepoint(ebpf, &exit)?.load().map_err(verifier(&exit))?;
        plan.push(Attachment::Tracepoint {
            program: followed.enter.into(),
            tracepoint: enter_tp,
        });
        plan.push(Attachment::Tracepoint {
            program: exit.clone(),
            tracepoint: exit,
        });
    }
    Ok(())
}
