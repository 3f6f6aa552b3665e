//! The kernel side of the agent, seen from user space: loads the eBPF programs with this
//! kernel's struct offsets, attaches them, sets capture modes per cgroup and reads the ring
//! buffers into typed [`Record`]s. Descriptor counters arrive as records too (closes, exits,
//! and the flushes user space asks for): nothing else is read back from the kernel. Dropping
//! the [`Probe`] detaches every program.

pub mod btf;
mod control;
pub mod hooks;
mod reader;
pub mod records;
mod ring;
mod ring_fill;
pub mod syscalls;
pub mod tracefs;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use aya::{
    EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray},
    programs::ProgramError,
};
pub use control::{CaptureControl, DETACH_GRACE};
pub use hooks::{HookChoice, HookSet, KernelFeatures};
pub use reader::{ReaderStats, RecordReceiver};
pub use records::{IoCounters, Record};
use sysflow_common::{
    FdCounters, FdKey, KernelCounter, LoadConfig, MAX_RINGS, Settings, SyscallRoute,
};
use tracing::{debug, info, warn};

use self::{btf::Btf, control::ControlMaps, hooks::Kernel, tracefs::Tracefs};
use crate::{capture::CaptureMode, internal_events::Losses};

/// The compiled programs (ebpf/probes), built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sysflow-ebpf"));

/// How the probe is sized and what it captures.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Bytes of each ring buffer (a power of two, at least one page).
    pub ring_bytes: u32,
    /// How many ring buffers records are spread over (by CPU), 1 to 4.
    pub ring_count: u32,
    /// Bytes of exec arguments captured per exec (at most 4095).
    pub args_max: u32,
    /// Capacity of the per-(tgid, fd) counter table.
    pub fd_table_entries: u32,
    /// Capacity of the syscalls-in-flight table.
    pub pending_entries: u32,
    /// Capacity of the cgroup -> capture mode table.
    pub cgroup_entries: u32,
    /// Capture mode for cgroups not set explicitly.
    pub default_mode: CaptureMode,
    /// Which syscall hook set to use.
    pub hooks: HookChoice,
    /// Decoded records buffered between the ring readers and the consumer. When full, the
    /// readers wait and the kernel rings fill up; their drops are counted in the kernel.
    pub channel_capacity: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            ring_bytes: 8 << 20,
            ring_count: 1,
            args_max: 1024,
            fd_table_entries: 65536,
            pending_entries: 16384,
            cgroup_entries: 16384,
            default_mode: CaptureMode::ALL,
            hooks: HookChoice::Auto,
            channel_capacity: 65536,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Kernel BTF is needed for struct offsets.
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    /// tracefs is needed to attach tracepoints and read their layouts.
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    /// `ProbeConfig::ring_count` is out of range.
    #[error("ring_count must be 1 to {MAX_RINGS}, got {0}")]
    RingCount(u32),
    /// `ProbeConfig::ring_bytes` is not a power of two of at least a page.
    #[error("ring_bytes must be a power of two of at least 4096, got {0}")]
    RingBytes(u32),
    /// The kernel's BTF (/sys/kernel/btf/vmlinux) is needed to load the typed hooks.
    #[error("cannot read the kernel's BTF for typed hooks: {0}")]
    KernelBtf(#[source] aya::BtfError),
    /// The record stream was already taken (`Probe::records` is called once).
    #[error("the record stream was already taken")]
    RecordsTaken,
    /// A ring buffer could not be mapped into the agent's memory.
    #[error("cannot map ring buffer {map}: {source}")]
    RingMap {
        map: &'static str,
        source: std::io::Error,
    },
    /// The ring buffers could not be registered with the runtime's poller.
    #[error("cannot poll the ring buffers: {0}")]
    RingPoll(#[source] std::io::Error),
    /// The counter-flush iterator could not be created or run.
    #[error("the counter-flush iterator failed to {step}: {source}")]
    FlushIterator {
        step: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The kernel refused to create maps or load the object (permissions, memory).
    #[error("loading the eBPF object failed: {source}{hint}")]
    Load {
        source: Box<aya::EbpfError>,
        hint: &'static str,
    },
    /// This binary was built without its eBPF programs (`NRI_SYSFLOW_EBPF=stub`, the fast test
    /// tier).
    #[error(
        "this binary was built without its eBPF programs (NRI_SYSFLOW_EBPF=stub): rebuild without it to capture"
    )]
    NoPrograms,
    /// The object lacks a program this build expects (a build mismatch).
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    /// The object lacks a map this build expects (a build mismatch).
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    /// The verifier rejected a program.
    #[error("the verifier rejected program {program}: {reason}")]
    Verifier { program: String, reason: String },
    /// Attaching a program to a tracepoint failed.
    #[error("attaching {program} to {tracepoint} failed: {source}")]
    Attach {
        program: String,
        tracepoint: String,
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> ProbeError {
    move |source| ProbeError::Map { map, source }
}

/// What the kernel side counted since load, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    pub records_emitted: u64,
    /// Records lost because their ring buffer was full.
    pub ring_full: u64,
    pub strings_truncated: u64,
    /// I/O counters not kept because the fd table was full.
    pub fd_table_full: u64,
    /// Syscalls not followed because the in-flight table was full (tracepoint hook set).
    pub pending_table_full: u64,
    pub read_faults: u64,
    /// Syscalls not followed because the kernel could not allocate a process's state.
    pub state_unavailable: u64,
    /// Counters of a process that ended without reporting them, found when its pid and fd
    /// number came back (lost).
    pub orphaned_counters: u64,
}

/// Loaded and attached programs with their maps.
pub struct Probe {
    /// Owns the programs and their links (shared with the capture control, which attaches and
    /// detaches the syscall hooks).
    kernel: Arc<Mutex<Kernel>>,
    control: CaptureControl,
    kernel_counters: PerCpuArray<MapData, u64>,
    fd_counters: BpfHashMap<MapData, FdKey, FdCounters>,
    rings: Vec<ring::Ring>,
    /// Fill gauges of the rings.
    ring_fills: Vec<ring_fill::RingFill>,
    boot_to_wall_ns: i128,
    hook_set: HookSet,
    features: KernelFeatures,
    channel_capacity: usize,
}

/// Raises RLIMIT_MEMLOCK for kernels older than 5.11 that charge BPF maps against it. Newer
/// kernels use memcg accounting, and CAP_SYS_RESOURCE may be missing: failure is only a warning.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        warn!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

/// Now, on CLOCK_BOOTTIME (the clock of record timestamps).
pub fn boot_now_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME) as u64
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The last lines of a verifier log: where it gave up and why.
pub(crate) fn verifier_reason(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // The whole log, for whoever debugs the programs.
            if let Some(path) = std::env::var_os("NRI_SYSFLOW_VERIFIER_LOG") {
                let _ = std::fs::write(path, &log);
            }
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty())
                .rev()
                .take(6)
                .collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "{io_error}; verifier log ends with:\n  {}",
                tail.join("\n  ")
            )
        }
        other => other.to_string(),
    }
}

impl Probe {
    /// Loads the programs into the kernel and attaches the configured families.
    pub fn load(config: &ProbeConfig) -> Result<Probe, ProbeError> {
        if !(1..=MAX_RINGS).contains(&config.ring_count) {
            return Err(ProbeError::RingCount(config.ring_count));
        }
        if !config.ring_bytes.is_power_of_two() || config.ring_bytes < 4096 {
            return Err(ProbeError::RingBytes(config.ring_bytes));
        }
        raise_memlock_limit();
        // Parsed for the offsets and dropped at once: aya parses the same BTF again below, and
        // both at once would add to the agent's peak memory.
        let offsets = Btf::from_sys_fs()?.kernel_offsets()?;
        let tracefs = Tracefs::find_or_mount()?;
        // The tracepoint gained its group_dead argument with the record field (6.x); older
        // kernels' programs compare tid and tgid instead.
        let exit_has_group_dead = tracefs
            .field_offset("sched", "sched_process_exit", "group_dead")
            .is_ok();
        let load_config = LoadConfig {
            offsets,
            syscalls: syscalls::numbers(),
            ring_count: config.ring_count,
            args_max: config.args_max.min(sysflow_common::ARGS_CAP as u32 - 1),
            // The reader polls every few milliseconds; it is woken early only when a ring is a
            // quarter full.
            wakeup_bytes: u64::from(config.ring_bytes / 4),
            exit_has_group_dead: exit_has_group_dead as u32,
            _pad: 0,
        };
        debug!(?load_config, "kernel offsets");

        let mut loader = EbpfLoader::new();
        loader.override_global("LOAD_CONFIG", &load_config, true);
        // PROCESS_STATE is task storage, which aya has no user-space type for (nothing there
        // reads it).
        loader.allow_unsupported_maps();
        for (i, name) in ["RING0", "RING1", "RING2", "RING3"].into_iter().enumerate() {
            let bytes = if (i as u32) < config.ring_count {
                config.ring_bytes
            } else {
                4096
            };
            loader.map_max_entries(name, bytes);
        }
        loader
            .map_max_entries("FD_COUNTERS", config.fd_table_entries)
            .map_max_entries("PENDING_SYSCALLS", config.pending_entries)
            .map_max_entries("CGROUP_MODES", config.cgroup_entries);
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoPrograms);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|source| {
            let hint = if unsafe { libc::geteuid() } != 0 {
                " (loading eBPF programs needs root, or CAP_BPF with CAP_PERFMON)"
            } else {
                ""
            };
            ProbeError::Load {
                source: Box::new(source),
                hint,
            }
        })?;

        let take = |ebpf: &mut aya::Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
        };
        let cgroup_modes = BpfHashMap::try_from(take(&mut ebpf, "CGROUP_MODES")?)
            .map_err(map_err("CGROUP_MODES"))?;
        let settings_map =
            Array::try_from(take(&mut ebpf, "SETTINGS")?).map_err(map_err("SETTINGS"))?;
        let routes: Array<MapData, SyscallRoute> =
            Array::try_from(take(&mut ebpf, "SYSCALL_ROUTES")?)
                .map_err(map_err("SYSCALL_ROUTES"))?;
        let kernel_counters = PerCpuArray::try_from(take(&mut ebpf, "KERNEL_COUNTERS")?)
            .map_err(map_err("KERNEL_COUNTERS"))?;
        let fd_counters = BpfHashMap::try_from(take(&mut ebpf, "FD_COUNTERS")?)
            .map_err(map_err("FD_COUNTERS"))?;
        let mut rings = Vec::new();
        for name in ["RING0", "RING1", "RING2", "RING3"]
            .into_iter()
            .take(config.ring_count as usize)
        {
            let Map::RingBuf(data) = take(&mut ebpf, name)? else {
                return Err(ProbeError::MissingMap(name));
            };
            rings.push(
                ring::Ring::new(data, config.ring_bytes)
                    .map_err(|source| ProbeError::RingMap { map: name, source })?,
            );
        }

        let aya_btf = aya::Btf::from_sys_fs().map_err(ProbeError::KernelBtf)?;
        let mut kernel = Kernel::load(ebpf, config.hooks, &aya_btf, &tracefs)?;
        let features = kernel.check_features(&aya_btf);
        info!(hooks = %kernel.set, "kernel accepts: tp_btf yes, task storage yes, {features}");
        drop(aya_btf);
        kernel.attach_lifecycle()?;
        let hook_set = kernel.set;
        let kernel = Arc::new(Mutex::new(kernel));
        let control = CaptureControl::new(
            ControlMaps {
                cgroup_modes,
                settings_map,
                routes,
                settings: Settings::default(),
                modes: HashMap::new(),
                routed: None,
                unwanted_since: None,
                keep_attached: hook_set == HookSet::Tracepoint,
            },
            kernel.clone(),
        );
        // Writes the routes and the first generation, and attaches the syscall hooks if the
        // default mode wants them.
        control.set_default_mode(config.default_mode)?;
        let boot_to_wall_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        let ring_fills = rings
            .iter()
            .filter_map(|ring| {
                ring_fill::RingFill::new(ring, u64::from(config.ring_bytes))
                    .map_err(|e| warn!("ring buffer fill is not measured: {e}"))
                    .ok()
            })
            .collect();
        // Loading parsed the kernel's BTF and the object (tens of MiB, all freed by now): give
        // the freed heap back to the system. (The static musl build's allocator, mimalloc,
        // returns freed memory by itself.)
        // SAFETY: no preconditions.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
        Ok(Probe {
            kernel,
            control,
            kernel_counters,
            fd_counters,
            rings,
            ring_fills,
            boot_to_wall_ns,
            hook_set,
            features,
            channel_capacity: config.channel_capacity,
        })
    }

    /// The syscall hook set in use.
    pub fn hook_set(&self) -> HookSet {
        self.hook_set
    }

    /// Which program types the kernel accepted at start-up.
    pub fn features(&self) -> &KernelFeatures {
        &self.features
    }

    /// Whether the syscall hooks are attached now (they are not while no cgroup wants a
    /// syscall-level capture kind).
    pub fn syscall_hooks_attached(&self) -> bool {
        self.control.syscall_hooks_attached()
    }

    /// How many attachments are live.
    pub fn attachments(&self) -> usize {
        self.kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .attachments()
    }

    /// Nanoseconds to add to a CLOCK_BOOTTIME timestamp to get wall-clock time.
    pub fn boot_to_wall_offset_ns(&self) -> i128 {
        self.boot_to_wall_ns
    }

    /// Converts a record timestamp (CLOCK_BOOTTIME) to nanoseconds since the Unix epoch.
    pub fn boot_to_wall_ns(&self, boot_ns: u64) -> i64 {
        (boot_ns as i128 + self.boot_to_wall_ns) as i64
    }

    /// Sets the capture mode of one cgroup (takes effect for the next syscall).
    pub fn set_cgroup_mode(&self, cgroup_id: u64, mode: CaptureMode) -> Result<(), ProbeError> {
        self.control.set_cgroup_mode(cgroup_id, mode)
    }

    /// Forgets a cgroup: it falls back to the default mode.
    pub fn remove_cgroup(&self, cgroup_id: u64) -> Result<(), ProbeError> {
        self.control.remove_cgroup(cgroup_id)
    }

    pub fn set_default_mode(&self, mode: CaptureMode) -> Result<(), ProbeError> {
        self.control.set_default_mode(mode)
    }

    /// A handle on the capture-mode maps that other tasks (NRI handlers) can use.
    pub fn control(&self) -> CaptureControl {
        self.control.clone()
    }

    pub fn kernel_stats(&self) -> Result<KernelStats, ProbeError> {
        let sum = |counter: KernelCounter| -> Result<u64, ProbeError> {
            let values = self
                .kernel_counters
                .get(&(counter as u32), 0)
                .map_err(map_err("KERNEL_COUNTERS"))?;
            Ok(values.iter().sum())
        };
        Ok(KernelStats {
            records_emitted: sum(KernelCounter::RecordsEmitted)?,
            ring_full: sum(KernelCounter::RingFull)?,
            strings_truncated: sum(KernelCounter::StringsTruncated)?,
            fd_table_full: sum(KernelCounter::FdTableFull)?,
            pending_table_full: sum(KernelCounter::PendingTableFull)?,
            read_faults: sum(KernelCounter::ReadFaults)?,
            state_unavailable: sum(KernelCounter::StateUnavailable)?,
            orphaned_counters: sum(KernelCounter::OrphanedCounters)?,
        })
    }

    /// The fullest ring, as a fraction of its size.
    pub fn ring_fill(&self) -> f64 {
        self.ring_fills
            .iter()
            .map(ring_fill::RingFill::fill)
            .fold(0.0, f64::max)
    }

    /// Starts reading the ring buffers on the current tokio runtime, into a queue of
    /// `ProbeConfig::channel_capacity` records. Can be called once; the readers stop when the
    /// receiver is dropped.
    /// Items that do not decode are counted in `losses`.
    pub fn records(&mut self, losses: Arc<Losses>) -> Result<RecordReceiver, ProbeError> {
        let rings = std::mem::take(&mut self.rings);
        if rings.is_empty() {
            return Err(ProbeError::RecordsTaken);
        }
        reader::spawn(rings, self.channel_capacity, losses).map_err(ProbeError::RingPoll)
    }

    /// Asks the kernel to report every descriptor's counters since its last report (FLUSH
    /// reports, or FINAL ones at shutdown); they arrive through the record stream.
    pub fn flush(&self, final_flush: bool) -> Result<(), ProbeError> {
        self.control.flush(final_flush)
    }

    /// Entries in the hashed descriptor counter table now (descriptors >= FD_SLOTS and
    /// datagram peers). Walking it costs a syscall per entry.
    pub fn fd_table_len(&self) -> usize {
        self.fd_counters.keys().filter(Result::is_ok).count()
    }

    /// (name, run time ns, runs) of every loaded program, from the kernel's own statistics
    /// (counted only while `aya::sys::enable_stats(Stats::RunTime)` is held). Tail-called
    /// handlers count inside the program that called them.
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((
                    name.to_string(),
                    info.run_time().as_nanos() as u64,
                    info.run_count(),
                ))
            })
            .collect()
    }

    /// Kernel ids of the loaded programs.
    pub fn program_ids(&self) -> Vec<u32> {
        self.kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok())
            .map(|info| info.id())
            .collect()
    }
}

/// How many threads close links at once.
const DETACH_THREADS: usize = 32;

/// Drops links concurrently: closing a tracepoint link waits for an RCU grace period (~80 ms
/// here); closing 130 of them one by one took 9 s, concurrently they share grace periods.
fn detach_all(links: Vec<hooks::Link>) {
    let chunk = links.len().div_ceil(DETACH_THREADS).max(1);
    std::thread::scope(|scope| {
        let mut rest = links;
        while !rest.is_empty() {
            let batch: Vec<hooks::Link> = rest.drain(..chunk.min(rest.len())).collect();
            scope.spawn(move || drop(batch));
        }
    });
}

impl Drop for Probe {
    fn drop(&mut self) {
        let links = self
            .kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_all();
        detach_all(links);
    }
}
