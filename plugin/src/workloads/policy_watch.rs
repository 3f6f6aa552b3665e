//! Reloads the policy file when it changes (inotify on its directory, which also sees the
//! symlink swap of a Kubernetes ConfigMap update) or on SIGHUP. A policy that does not
//! validate is rejected with every problem logged; the one in force stays.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use futures::StreamExt as _;
use inotify::{Inotify, WatchMask};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::Workloads;
use crate::policy::{Policy, PolicyLoadError};

/// Changes often come as several events (write, close, rename): act once they settle.
const SETTLE: Duration = Duration::from_millis(100);

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    Applied,
    Unchanged,
    Rejected(PolicyLoadError),
}

/// Reads the file and applies it if it is valid and different from `last`.
pub fn reload(path: &Path, last: &mut Option<String>, workloads: &Workloads) -> Reload {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(source) => {
            workloads.stats.policy_reloads_failed.fetch_add(1, Relaxed);
            let reason = PolicyLoadError::Read {
                path: path.into(),
                source,
            };
            error!("policy not reloaded, the previous one stays in force: {reason}");
            return Reload::Rejected(reason);
        }
    };
    if last.as_deref() == Some(text.as_str()) {
        return Reload::Unchanged;
    }
    match Policy::parse(&text, &path.display().to_string()) {
        Ok(policy) => {
            let rules = policy.rule_count();
            workloads.set_policy(policy);
            workloads.stats.policy_reloads_ok.fetch_add(1, Relaxed);
            info!(path = %path.display(), rules, "policy reloaded and applied to running containers");
            *last = Some(text);
            Reload::Applied
        }
        Err(errors) => {
            workloads.stats.policy_reloads_failed.fetch_add(1, Relaxed);
            error!("policy not reloaded, the previous one stays in force:\n{errors}");
            // Remember the bad text so an unrelated event does not log it again.
            *last = Some(text);
            Reload::Rejected(errors.into())
        }
    }
}

/// Watches `path` until the process ends. `initial` is the text of the policy in force.
pub async fn watch(path: PathBuf, initial: String, workloads: Arc<Workloads>) {
    let mut last = Some(initial);
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("no SIGHUP reload: {e}");
            None
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut events = match Inotify::init().and_then(|ino| {
        ino.watches().add(
            &dir,
            WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MODIFY,
        )?;
        ino.into_event_stream(vec![0u8; 4096])
    }) {
        Ok(stream) => Some(stream),
        Err(e) => {
            warn!(dir = %dir.display(), "policy changes are not watched (SIGHUP still reloads): {e}");
            None
        }
    };
    loop {
        tokio::select! {
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                info!("SIGHUP: reloading the policy");
                last = None;
            }
            event = async { match events.as_mut() { Some(e) => e.next().await, None => std::future::pending().await } } => {
                if event.is_none() {
                    events = None;
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
            }
        }
        if !path.exists() {
            // Mid-swap, or deleted: keep the policy in force until a file is back.
            continue;
        }
        reload(&path, &mut last, &workloads);
    }
}
