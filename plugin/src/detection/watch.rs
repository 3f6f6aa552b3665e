//! Reloads the detection rules when a rules file changes (inotify on the folders that hold
//! them, which also sees a ConfigMap's symlink swap) or on SIGHUP. Rules that do not compile
//! are rejected with the error and its position logged; the rules in force stay.

use std::{path::Path, sync::Arc, time::Duration};

use futures::StreamExt as _;
use inotify::{Inotify, WatchMask};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::{Fingerprint, LoadedRules, fingerprint};
use crate::metrics::detection::DetectionMetrics;

/// Changes often come as several events (write, close, rename): act once they settle.
const SETTLE: Duration = Duration::from_millis(100);

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Applied,
    Unchanged,
    Rejected,
}

/// Compiles the rules again if their files changed since `last`; swaps them in if they
/// compile.
pub fn reload(rules: &LoadedRules, last: &mut Fingerprint, metrics: &DetectionMetrics) -> Reload {
    let print = match fingerprint(&rules.paths) {
        Ok(p) => p,
        Err(e) => {
            metrics.reloaded(false);
            error!("detection rules not reloaded, the rules in force stay: {e}");
            return Reload::Rejected;
        }
    };
    if print == *last {
        return Reload::Unchanged;
    }
    // Remembered either way, so an unrelated event does not log the same error again.
    *last = print;
    match sysflow_rules::compile_paths(&rules.paths) {
        Ok(policy) => {
            let enabled = policy.rules.iter().filter(|r| r.enabled).count();
            let lints = policy.lints.len();
            for lint in &policy.lints {
                warn!("detection rules: {lint}");
            }
            metrics.rules_loaded.set(enabled as i64);
            rules.replace(policy);
            metrics.reloaded(true);
            info!(
                rules = enabled,
                warnings = lints,
                "detection rules reloaded"
            );
            Reload::Applied
        }
        Err(e) => {
            metrics.reloaded(false);
            error!("detection rules not reloaded, the rules in force stay: {e}");
            Reload::Rejected
        }
    }
}

/// Watches the rules until the process ends. `initial`: the files of the rules in force.
pub async fn watch(rules: Arc<LoadedRules>, initial: Fingerprint, metrics: DetectionMetrics) {
    let mut last = initial;
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("no SIGHUP reload of the detection rules: {e}");
            None
        }
    };
    let mut events = match Inotify::init().and_then(|ino| {
        for path in &rules.paths {
            let dir = if path.is_dir() {
                path.as_path()
            } else {
                path.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
            };
            ino.watches().add(
                dir,
                WatchMask::CLOSE_WRITE
                    | WatchMask::MOVED_TO
                    | WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MODIFY,
            )?;
        }
        ino.into_event_stream(vec![0u8; 4096])
    }) {
        Ok(stream) => Some(stream),
        Err(e) => {
            warn!("detection rules changes are not watched (SIGHUP still reloads): {e}");
            None
        }
    };
    loop {
        tokio::select! {
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                info!("SIGHUP: reloading the detection rules");
                last.clear();
            }
            event = async { match events.as_mut() { Some(e) => e.next().await, None => std::future::pending().await } } => {
                if event.is_none() {
                    events = None;
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
            }
        }
        if rules.paths.iter().any(|p| !p.exists()) {
            // Mid-swap, or deleted: keep the rules in force until the files are back.
            continue;
        }
        reload(&rules, &mut last, &metrics);
    }
}
