//! The kernel's capture decisions, and the hooks that follow from them.
//!
//! A mode per cgroup id (`CGROUP_MODES`) and a default for every other cgroup (`SETTINGS`).
//! Every change recomputes which capture kinds anyone wants: the syscall dispatcher's routes
//! follow only those syscalls, and the syscall hooks are attached while any syscall-level kind
//! is wanted — at once, before the change returns — and detached once none has been wanted
//! for `DETACH_GRACE` (detaching waits for the kernel, so a background thread does it). Each
//! change bumps the settings generation, so every process looks its cgroup's mode up again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError};
use sysflow_common::{Settings, SyscallRoute, capture, report_reason};
use tracing::{info, warn};

use super::{ProbeError, hooks::Kernel, map_err, syscalls};
use crate::capture::CaptureMode;

/// How long the syscall hooks stay attached after the last syscall-level capture ended: a
/// policy reload that switches a namespace off and on again does not detach and re-attach.
pub const DETACH_GRACE: Duration = Duration::from_secs(1);
const KEEPER_TICK: Duration = Duration::from_millis(200);

pub(super) struct ControlMaps {
    pub cgroup_modes: BpfHashMap<MapData, u64, u32>,
    pub settings_map: Array<MapData, Settings>,
    pub routes: Array<MapData, SyscallRoute>,
    /// What `SETTINGS` holds.
    pub settings: Settings,
    /// What `CGROUP_MODES` holds.
    pub modes: HashMap<u64, u32>,
    /// The kinds the routes were last written for.
    pub routed: Option<u32>,
    /// Since when no syscall-level kind is wanted (None: some is).
    pub unwanted_since: Option<Instant>,
    /// Keep the syscall hooks attached even when nothing wants them: the tracepoint set's
    /// ~130 perf tracepoints take seconds to attach again (measured: over 4 s here), which
    /// would leave a gap in the capture of a container switched on.
    pub keep_attached: bool,
}

/// A handle other tasks (NRI handlers, the policy watcher) use to change capture modes. Each
/// call is a few bpf() syscalls under a short lock; the first that makes a syscall-level kind
/// wanted also attaches the syscall hooks (about a millisecond for the dispatcher).
#[derive(Clone)]
pub struct CaptureControl {
    pub(super) maps: Arc<Mutex<ControlMaps>>,
    pub(super) kernel: Arc<Mutex<Kernel>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the maps consistent (one syscall each): a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CaptureControl {
    pub(super) fn new(maps: ControlMaps, kernel: Arc<Mutex<Kernel>>) -> CaptureControl {
        let control = CaptureControl {
            maps: Arc::new(Mutex::new(maps)),
            kernel,
        };
        spawn_keeper(
            Arc::downgrade(&control.maps),
            Arc::downgrade(&control.kernel),
        );
        control
    }

    pub fn set_cgroup_mode(&self, cgroup_id: u64, mode: CaptureMode) -> Result<(), ProbeError> {
        let mode = mode.bits();
        let mut m = lock(&self.maps);
        m.cgroup_modes
            .insert(&cgroup_id, &mode, 0)
            .map_err(map_err("CGROUP_MODES"))?;
        m.modes.insert(cgroup_id, mode);
        self.publish(&mut m)
    }

    pub fn remove_cgroup(&self, cgroup_id: u64) -> Result<(), ProbeError> {
        let mut m = lock(&self.maps);
        match m.cgroup_modes.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("CGROUP_MODES")(e)),
        }
        if m.modes.remove(&cgroup_id).is_some() {
            self.publish(&mut m)?;
        }
        Ok(())
    }

    pub fn set_default_mode(&self, mode: CaptureMode) -> Result<(), ProbeError> {
        let mut m = lock(&self.maps);
        m.settings.default_mode = mode.bits();
        self.publish(&mut m)
    }

    /// The mode of a cgroup in the kernel map, if it has one.
    pub fn cgroup_mode(&self, cgroup_id: u64) -> Option<CaptureMode> {
        lock(&self.maps)
            .cgroup_modes
            .get(&cgroup_id, 0)
            .ok()
            .map(CaptureMode::from_bits)
    }

    /// Whether the syscall hooks are attached now.
    pub fn syscall_hooks_attached(&self) -> bool {
        lock(&self.kernel).syscall_hooks_attached()
    }

    /// The union of every mode in force: what anyone on the node wants captured.
    fn wanted(m: &ControlMaps) -> u32 {
        m.modes
            .values()
            .fold(m.settings.default_mode, |all, mode| all | mode)
    }

    /// Makes routes, hooks and the generation follow the maps.
    fn publish(&self, m: &mut ControlMaps) -> Result<(), ProbeError> {
        let wanted = Self::wanted(m);
        if m.routed != Some(wanted) {
            for (nr, route) in syscalls::routes(wanted) {
                m.routes
                    .set(nr, &route, 0)
                    .map_err(map_err("SYSCALL_ROUTES"))?;
            }
            m.routed = Some(wanted);
        }
        if wanted & capture::SYSCALL_KINDS != 0 || m.keep_attached {
            m.unwanted_since = None;
            lock(&self.kernel).attach_syscall_hooks()?;
        } else if m.unwanted_since.is_none() {
            m.unwanted_since = Some(Instant::now());
        }
        // Zero means "never looked up" in a process's state: skip it.
        m.settings.generation = m.settings.generation.wrapping_add(1).max(1);
        let settings = m.settings;
        m.settings_map
            .set(0, &settings, 0)
            .map_err(map_err("SETTINGS"))
    }

    /// Runs the flush iterator: every descriptor's counters since its last report are written
    /// into the rings, as FLUSH reports, or FINAL ones at shutdown (`final_flush`).
    pub fn flush(&self, final_flush: bool) -> Result<(), ProbeError> {
        let mut m = lock(&self.maps);
        let reason = if final_flush {
            report_reason::FINAL
        } else {
            report_reason::FLUSH
        };
        if m.settings.flush_reason != reason as u32 {
            m.settings.flush_reason = reason as u32;
            let settings = m.settings;
            m.settings_map
                .set(0, &settings, 0)
                .map_err(map_err("SETTINGS"))?;
        }
        lock(&self.kernel).run_flush()
    }
}

/// Detaches the syscall hooks once nothing has wanted them for `DETACH_GRACE`. Ends with the
/// probe.
fn spawn_keeper(maps: Weak<Mutex<ControlMaps>>, kernel: Weak<Mutex<Kernel>>) {
    let spawned = std::thread::Builder::new()
        .name("hook-keeper".into())
        .spawn(move || {
            loop {
                std::thread::sleep(KEEPER_TICK);
                let (Some(maps), Some(kernel)) = (maps.upgrade(), kernel.upgrade()) else {
                    return;
                };
                let m = lock(&maps);
                let due = m
                    .unwanted_since
                    .is_some_and(|since| since.elapsed() >= DETACH_GRACE);
                if !due {
                    continue;
                }
                let links = lock(&kernel).take_syscall_hooks();
                drop(m);
                if !links.is_empty() {
                    info!(
                        links = links.len(),
                        "nothing wants the syscall hooks: detached"
                    );
                    super::detach_all(links);
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the hook keeper ({e}): syscall hooks stay attached while idle");
    }
}
