//! The kernel side of the agent, seen from user space: loads the eBPF programs with this
//! kernel's struct offsets, attaches them, sets capture modes per cgroup, reads the ring buffers
//! into typed [`Record`]s and reads the in-kernel I/O counters. Dropping the [`Probe`] detaches
//! every program.

pub mod attach;
pub mod btf;
mod reader;
pub mod records;
mod ring_fill;
pub mod tracefs;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub use attach::Family;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        ProgramError, TracePoint,
        trace_point::{TracePointLink, TracePointLinkId},
    },
};
pub use reader::{ReaderStats, RecordReceiver};
pub use records::{IoCounters, Record};
use sysflow_common::{FdCounters, FdKey, KernelCounter, LoadConfig, MAX_RINGS, Settings, capture};
use tracing::{debug, warn};

use self::{btf::Btf, tracefs::Tracefs};

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
    /// Capture mode (sysflow_common::capture bits) for cgroups not set explicitly.
    pub default_mode: u32,
    /// Which hook families to attach.
    pub families: Vec<Family>,
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
            default_mode: capture::ALL,
            families: Family::ALL.to_vec(),
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
    /// The configuration cannot be used.
    #[error("invalid probe configuration: {0}")]
    Config(String),
    /// The kernel refused to create maps or load the object (permissions, memory).
    #[error("loading the eBPF object failed: {source}{hint}")]
    Load {
        source: Box<aya::EbpfError>,
        hint: &'static str,
    },
    /// The object lacks a program this build expects (a build mismatch).
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
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
    /// Syscalls not followed because the in-flight table was full.
    pub pending_table_full: u64,
    pub read_faults: u64,
}

/// I/O counters already reported by a periodic flush, per descriptor: later reports (the next
/// flush, the close) carry only what came after. Keyed by descriptor and the entry's first_ns,
/// so a new entry for a reused fd number never inherits an old baseline.
#[derive(Default)]
pub(crate) struct FlushedCounters {
    reported: HashMap<FdKey, FdCounters>,
}

impl FlushedCounters {
    /// Turns cumulative kernel counters into what was not reported yet. `keep` leaves the new
    /// totals as the baseline (periodic flush); otherwise the baseline is forgotten (close).
    pub(crate) fn delta(&mut self, key: FdKey, now: &FdCounters, keep: bool) -> IoCounters {
        let mut delta = IoCounters::from(now);
        // Only the same entry generation (first_ns) has this baseline: a close of an older
        // entry of the same fd number, still queued in the ring, must not consume it.
        let same_generation = self
            .reported
            .get(&key)
            .is_some_and(|b| b.first_ns == now.first_ns);
        let baseline = match (keep, same_generation) {
            (true, _) => self.reported.insert(key, *now),
            (false, true) => self.reported.remove(&key),
            (false, false) => None,
        };
        if let Some(before) = baseline.filter(|b| b.first_ns == now.first_ns) {
            delta.read_bytes = now.read_bytes.saturating_sub(before.read_bytes);
            delta.read_ops = now.read_ops.saturating_sub(before.read_ops);
            delta.write_bytes = now.write_bytes.saturating_sub(before.write_bytes);
            delta.write_ops = now.write_ops.saturating_sub(before.write_ops);
            delta.first_ns = before.last_ns;
        }
        delta
    }
}

struct ControlMaps {
    cgroup_modes: BpfHashMap<MapData, u64, u32>,
    settings: Array<MapData, Settings>,
}

/// The kernel's capture decisions: a mode per cgroup id, and the mode of every other cgroup.
/// Cloneable and usable from any task; each call is one bpf() syscall under a short lock.
#[derive(Clone)]
pub struct CaptureControl(Arc<Mutex<ControlMaps>>);

impl CaptureControl {
    fn maps(&self) -> std::sync::MutexGuard<'_, ControlMaps> {
        // A panic while holding the lock cannot leave the maps half-updated (each update is
        // one syscall), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_cgroup_mode(&self, cgroup_id: u64, mode: u32) -> Result<(), ProbeError> {
        self.maps()
            .cgroup_modes
            .insert(&cgroup_id, &mode, 0)
            .map_err(map_err("CGROUP_MODES"))
    }

    pub fn remove_cgroup(&self, cgroup_id: u64) -> Result<(), ProbeError> {
        match self.maps().cgroup_modes.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("CGROUP_MODES")(e)),
        }
    }

    pub fn set_default_mode(&self, mode: u32) -> Result<(), ProbeError> {
        self.maps()
            .settings
            .set(
                0,
                &Settings {
                    default_mode: mode,
                    _pad: 0,
                },
                0,
            )
            .map_err(map_err("SETTINGS"))
    }

    /// The mode of a cgroup in the kernel map, if it has one.
    pub fn cgroup_mode(&self, cgroup_id: u64) -> Option<u32> {
        self.maps().cgroup_modes.get(&cgroup_id, 0).ok()
    }
}

/// Loaded and attached programs with their maps.
pub struct Probe {
    /// Owns the programs and their links: dropping it detaches everything.
    ebpf: Ebpf,
    control: CaptureControl,
    kernel_counters: PerCpuArray<MapData, u64>,
    fd_counters: BpfHashMap<MapData, FdKey, FdCounters>,
    rings: Vec<RingBuf<MapData>>,
    /// Fill gauges of the rings.
    ring_fills: Vec<ring_fill::RingFill>,
    flushed: Arc<Mutex<FlushedCounters>>,
    boot_to_wall_ns: i128,
    /// Every tracepoint attachment, so Drop can detach them concurrently.
    links: Vec<(&'static str, TracePointLinkId)>,
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
fn verifier_reason(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
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
            return Err(ProbeError::Config(format!(
                "ring_count must be 1 to {MAX_RINGS}, got {}",
                config.ring_count
            )));
        }
        if !config.ring_bytes.is_power_of_two() || config.ring_bytes < 4096 {
            return Err(ProbeError::Config(format!(
                "ring_bytes must be a power of two of at least 4096, got {}",
                config.ring_bytes
            )));
        }
        raise_memlock_limit();
        let btf = Btf::from_sys_fs()?;
        let mut offsets = btf.kernel_offsets()?;
        let tracefs = Tracefs::find_or_mount()?;
        offsets.tp_exec_filename =
            tracefs.field_offset("sched", "sched_process_exec", "filename")?;
        offsets.tp_exec_old_pid = tracefs.field_offset("sched", "sched_process_exec", "old_pid")?;
        // Older kernels' sched_process_exit has no group_dead; the programs then use tid == tgid.
        offsets.tp_exit_group_dead = tracefs
            .field_offset("sched", "sched_process_exit", "group_dead")
            .unwrap_or(u32::MAX);
        let load_config = LoadConfig {
            offsets,
            ring_count: config.ring_count,
            args_max: config.args_max.min(sysflow_common::ARGS_CAP as u32 - 1),
        };
        debug!(?load_config, "kernel offsets");

        let mut loader = EbpfLoader::new();
        loader.override_global("LOAD_CONFIG", &load_config, true);
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

        let mut links = Vec::new();
        for family in &config.families {
            for hook in attach::hooks(*family) {
                let program: &mut TracePoint = ebpf
                    .program_mut(hook.program)
                    .ok_or_else(|| ProbeError::MissingProgram(hook.program.into()))?
                    .try_into()
                    .map_err(|_| ProbeError::MissingProgram(hook.program.into()))?;
                program.load().map_err(|e| ProbeError::Verifier {
                    program: hook.program.into(),
                    reason: verifier_reason(&e),
                })?;
                for tracepoint in hook.tracepoints {
                    if !tracefs.has_event(hook.category, tracepoint) {
                        debug!(%tracepoint, "not on this kernel, skipped");
                        continue;
                    }
                    let link = program
                        .attach(hook.category, tracepoint)
                        .map_err(|source| ProbeError::Attach {
                            program: hook.program.into(),
                            tracepoint: format!("{}/{tracepoint}", hook.category),
                            source: Box::new(source),
                        })?;
                    links.push((hook.program, link));
                }
            }
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| ProbeError::MissingProgram(format!("map {name}")))
        };
        let cgroup_modes = BpfHashMap::try_from(take(&mut ebpf, "CGROUP_MODES")?)
            .map_err(map_err("CGROUP_MODES"))?;
        let mut settings =
            Array::try_from(take(&mut ebpf, "SETTINGS")?).map_err(map_err("SETTINGS"))?;
        let kernel_counters = PerCpuArray::try_from(take(&mut ebpf, "KERNEL_COUNTERS")?)
            .map_err(map_err("KERNEL_COUNTERS"))?;
        let fd_counters = BpfHashMap::try_from(take(&mut ebpf, "FD_COUNTERS")?)
            .map_err(map_err("FD_COUNTERS"))?;
        let mut rings = Vec::new();
        for name in ["RING0", "RING1", "RING2", "RING3"]
            .into_iter()
            .take(config.ring_count as usize)
        {
            rings.push(RingBuf::try_from(take(&mut ebpf, name)?).map_err(map_err("RING"))?);
        }
        settings
            .set(
                0,
                &Settings {
                    default_mode: config.default_mode,
                    _pad: 0,
                },
                0,
            )
            .map_err(map_err("SETTINGS"))?;
        let boot_to_wall_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        let ring_fills = rings
            .iter()
            .filter_map(|ring| {
                ring_fill::RingFill::new(ring, u64::from(config.ring_bytes))
                    .map_err(|e| warn!("ring buffer fill is not measured: {e}"))
                    .ok()
            })
            .collect();
        Ok(Probe {
            ebpf,
            control: CaptureControl(Arc::new(Mutex::new(ControlMaps {
                cgroup_modes,
                settings,
            }))),
            kernel_counters,
            fd_counters,
            rings,
            ring_fills,
            flushed: Arc::default(),
            boot_to_wall_ns,
            links,
        })
    }

    /// How many tracepoint attachments are live.
    pub fn attachments(&self) -> usize {
        self.links.len()
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
    pub fn set_cgroup_mode(&self, cgroup_id: u64, mode: u32) -> Result<(), ProbeError> {
        self.control.set_cgroup_mode(cgroup_id, mode)
    }

    /// Forgets a cgroup: it falls back to the default mode.
    pub fn remove_cgroup(&self, cgroup_id: u64) -> Result<(), ProbeError> {
        self.control.remove_cgroup(cgroup_id)
    }

    pub fn set_default_mode(&self, mode: u32) -> Result<(), ProbeError> {
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
        })
    }

    /// The fullest ring, as a fraction of its size.
    pub fn ring_fill(&self) -> f64 {
        self.ring_fills
            .iter()
            .map(ring_fill::RingFill::fill)
            .fold(0.0, f64::max)
    }

    /// Starts reading the ring buffers on the current tokio runtime. Can be called once; the
    /// readers stop when the receiver is dropped.
    pub fn records(&mut self, capacity: usize) -> Result<RecordReceiver, ProbeError> {
        let rings = std::mem::take(&mut self.rings);
        if rings.is_empty() {
            return Err(ProbeError::Config("records() was already called".into()));
        }

        reader::spawn(rings, capacity, self.flushed.clone())
            .map_err(|e| ProbeError::Config(format!("cannot poll the ring buffers: {e}")))
    }

    /// Periodic flush of long-lived descriptors: what each descriptor counted since the last
    /// report, for those with activity (last I/O) before `active_before_ns`. The kernel entry
    /// stays; a later close reports only what came after.
    pub fn flush_counters(&self, active_before_ns: u64) -> Vec<(FdKey, IoCounters)> {
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut live = HashMap::new();
        for item in self.fd_counters.iter() {
            let Ok((key, counters)) = item else { continue };
            live.insert(key, counters.first_ns);
            if counters.last_ns > active_before_ns {
                continue;
            }
            let delta = flushed.delta(key, &counters, true);
            if delta.read_ops + delta.write_ops > 0 {
                out.push((key, delta));
            }
        }
        // Baselines of entries the kernel no longer has (closed while their close record was
        // lost, or forgotten on fd reuse) would otherwise stay forever.
        flushed
            .reported
            .retain(|key, b| live.get(key) == Some(&b.first_ns));
        out
    }

    /// Takes out the counters of descriptors `matches` selects (e.g. those of processes that
    /// exited: their descriptors were closed by the kernel without a close(2) to report them).
    pub fn take_counters(
        &mut self,
        mut matches: impl FnMut(&FdKey, &FdCounters) -> bool,
    ) -> Vec<(FdKey, IoCounters)> {
        let selected: Vec<(FdKey, FdCounters)> = self
            .fd_counters
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| matches(k, v))
            .collect();
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (key, counters) in selected {
            // Removed in between by a close in the kernel: that close reported it.
            if self.fd_counters.remove(&key).is_ok() {
                out.push((key, flushed.delta(key, &counters, false)));
            }
        }
        out
    }

    /// Takes out the counters of these descriptors, where they exist: a lookup per key, so a
    /// process exit costs as many lookups as the process had descriptors, not a table scan.
    ///
    /// `belongs` decides whether an entry is the one meant: user space handles an event after
    /// the fact, and by then the fd number may have been reused (an entry created after the
    /// event, or by another process with the same pid) — such an entry is left alone.
    pub fn take_fd_counters(
        &mut self,
        keys: &[FdKey],
        belongs: &dyn Fn(&FdCounters) -> bool,
    ) -> Vec<(FdKey, IoCounters)> {
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for key in keys {
            let Ok(counters) = self.fd_counters.get(key, 0) else {
                continue;
            };
            if !belongs(&counters) {
                continue;
            }
            if self.fd_counters.remove(key).is_ok() {
                out.push((*key, flushed.delta(*key, &counters, false)));
            }
        }
        out
    }

    /// Entries in the I/O counter table now.
    pub fn fd_table_len(&self) -> usize {
        self.fd_counters.keys().filter(Result::is_ok).count()
    }

    /// Kernel ids of the loaded programs.
    pub fn program_ids(&self) -> Vec<u32> {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok())
            .map(|info| info.id())
            .collect()
    }
}

/// How many threads close tracepoint links at once when the probe is dropped.
const DETACH_THREADS: usize = 32;

impl Drop for Probe {
    /// Closing a tracepoint link waits for an RCU grace period (~80 ms here); closing 130 of them
    /// one by one took 9 s. Closed concurrently they share grace periods.
    fn drop(&mut self) {
        let mut taken: Vec<TracePointLink> = Vec::with_capacity(self.links.len());
        for (name, id) in self.links.drain(..) {
            let Some(program) = self.ebpf.program_mut(name) else {
                continue;
            };
            let program: Result<&mut TracePoint, _> = program.try_into();
            if let Ok(program) = program
                && let Ok(link) = program.take_link(id)
            {
                taken.push(link);
            }
        }
        let chunk = taken.len().div_ceil(DETACH_THREADS).max(1);
        std::thread::scope(|scope| {
            let mut rest = taken;
            while !rest.is_empty() {
                let batch: Vec<TracePointLink> = rest.drain(..chunk.min(rest.len())).collect();
                scope.spawn(move || drop(batch));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(first_ns: u64, write_bytes: u64, write_ops: u64) -> FdCounters {
        FdCounters {
            first_ns,
            last_ns: first_ns + write_ops,
            write_bytes,
            write_ops,
            ..FdCounters::default()
        }
    }

    #[test]
    fn a_flush_then_a_close_report_only_what_is_new() {
        let key = FdKey { tgid: 1, fd: 3 };
        let mut f = FlushedCounters::default();
        let first = f.delta(key, &counters(10, 100, 1), true);
        assert_eq!(
            (first.write_bytes, first.write_ops, first.first_ns),
            (100, 1, 10)
        );
        let close = f.delta(key, &counters(10, 300, 2), false);
        assert_eq!(
            (close.write_bytes, close.write_ops, close.first_ns),
            (200, 1, 11)
        );
        assert!(f.reported.is_empty());
    }

    #[test]
    fn a_late_close_of_an_older_entry_keeps_the_baseline() {
        let key = FdKey { tgid: 1, fd: 3 };
        let mut f = FlushedCounters::default();
        f.delta(key, &counters(50, 100, 1), true);
        // A close of the previous entry of fd 3 (first_ns 5) arrives after the flush.
        let old = f.delta(key, &counters(5, 832, 1), false);
        assert_eq!(old.write_bytes, 832);
        let close = f.delta(key, &counters(50, 300, 2), false);
        assert_eq!((close.write_bytes, close.write_ops), (200, 1));
    }
}
