//! Where workload metadata comes from, chosen at run time and re-chosen when it goes away:
//! 1. NRI (containerd with NRI on): exact, registered before each workload starts;
//! 2. containerd's API (NRI off, containerd up): registered after the fact (see containerd_api);
//! 3. nothing (standalone, `--no-nri`, containerd down): containers are known by cgroup path.
//!
//! Connections are retried with backoff; a restarted containerd is picked up again.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{Workloads, containerd_api, nri_source::NriWorkloads};
use crate::nri::{Backoff, NriConfig, Plugin, Stub, stats::NriStats};

#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// None: do not use NRI (`--no-nri`).
    pub nri: Option<NriConfig>,
    /// None: do not fall back to containerd's API.
    pub containerd_socket: Option<PathBuf>,
    pub containerd_namespace: String,
}

/// Which source is feeding the workload table now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ActiveSource {
    None = 0,
    Nri = 1,
    ContainerdApi = 2,
}

#[derive(Default)]
pub struct SourceState(AtomicU8, AtomicBool);

impl SourceState {
    /// Whether the source of pod metadata is decided: containerd's API, or standalone (no
    /// socket at all). NRI counts once connected (`NriStats::connected`).
    pub fn settled(&self) -> bool {
        self.1.load(Relaxed)
    }

    pub fn get(&self) -> ActiveSource {
        match self.0.load(Relaxed) {
            1 => ActiveSource::Nri,
            2 => ActiveSource::ContainerdApi,
            _ => ActiveSource::None,
        }
    }
    fn set(&self, s: ActiveSource) {
        self.0.store(s as u8, Relaxed);
    }
}

/// A containerd-API session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

fn nri_socket_exists(config: &SourceConfig) -> bool {
    config.nri.as_ref().is_some_and(|c| c.socket.exists())
}
/// How often a containerd-API session checks whether NRI became available.
const NRI_RECHECK: Duration = Duration::from_secs(2);

/// Runs until the process ends, or, for a plugin launched by the runtime, until the runtime
/// closes its connection (then it returns: the runtime owns our lifetime).
pub async fn run(
    config: SourceConfig,
    workloads: Arc<Workloads>,
    nri_stats: Arc<NriStats>,
    state: Arc<SourceState>,
) {
    let plugin: Arc<dyn Plugin> = Arc::new(NriWorkloads(workloads.clone()));
    let mut stub = config
        .nri
        .clone()
        .map(|nri_config| Stub::new(nri_config, plugin, nri_stats));
    if let Some(stub) = &stub
        && Stub::launched()
    {
        // The runtime named us after our file in its plugin folder.
        state.set(ActiveSource::Nri);
        match stub.serve_launched().await {
            Ok(end) => {
                warn!("NRI: the runtime that launched us closed the connection ({end}); stopping")
            }
            Err(e) => warn!("NRI: unusable launch socket: {e}"),
        }
        state.set(ActiveSource::None);
        return;
    }
    let mut backoff = Backoff::default();
    let mut last_note = String::new();
    loop {
        let started = Instant::now();
        let note = if let Some(stub) = stub.as_mut().filter(|_| nri_socket_exists(&config)) {
            // The stub reconnects for as long as the runtime's NRI socket is there.
            state.set(ActiveSource::Nri);
            match stub.run().await {
                Some(end) => format!("NRI socket gone after: {end}"),
                None => "NRI socket gone".to_string(),
            }
        } else if let Some(socket) = config.containerd_socket.as_ref().filter(|s| s.exists()) {
            state.set(ActiveSource::ContainerdApi);
            state.1.store(true, Relaxed);
            let nri_socket = config.nri.as_ref().map(|c| c.socket.clone());
            let nri_appeared = async {
                loop {
                    tokio::time::sleep(NRI_RECHECK).await;
                    if nri_socket.as_ref().is_some_and(|s| s.exists()) {
                        break;
                    }
                }
            };
            tokio::select! {
                r = containerd_api::follow(socket, &config.containerd_namespace, workloads.clone()) => match r {
                    Ok(()) => "containerd API session ended".to_string(),
                    Err(e) => format!("containerd API: {e}"),
                },
                _ = nri_appeared => {
                    backoff.reset();
                    "NRI socket appeared: switching from containerd's API to NRI".to_string()
                }
            }
        } else {
            state.1.store(true, Relaxed);
            "no NRI or containerd socket: containers are known by cgroup path only".to_string()
        };
        state.set(ActiveSource::None);
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        // Log each distinct reason once, not on every retry.
        if note != last_note {
            info!("{note}; retrying");
            last_note = note;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
