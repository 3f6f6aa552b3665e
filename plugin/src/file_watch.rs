//! Watching configuration files for a reload: inotify on the folders that hold them (which
//! also sees the symlink swap of a Kubernetes ConfigMap update) and SIGHUP. Changes often come
//! as several events (write, close, rename): a change is reported once they settle.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt as _;
use inotify::{Inotify, WatchMask};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

const SETTLE: Duration = Duration::from_millis(100);

/// Why a reload is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A file in a watched folder changed.
    Changed,
    /// SIGHUP: reload even if nothing seems to have changed.
    Signal,
}

/// The folder to watch for `path`: itself if it is a folder, else the one holding it.
pub fn folder_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Calls `reload` on every change in `folders` and on every SIGHUP, until the process ends.
/// `what` names the files in the log ("the policy", "the detection rules").
pub async fn watch(folders: &[PathBuf], what: &str, mut reload: impl FnMut(Trigger)) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("no SIGHUP reload of {what}: {e}");
            None
        }
    };
    let mut events = match Inotify::init().and_then(|ino| {
        for folder in folders {
            ino.watches().add(
                folder,
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
            warn!("changes to {what} are not watched (SIGHUP still reloads): {e}");
            None
        }
    };
    loop {
        let trigger = tokio::select! {
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                info!("SIGHUP: reloading {what}");
                Trigger::Signal
            }
            event = async { match events.as_mut() { Some(e) => e.next().await, None => std::future::pending().await } } => {
                if event.is_none() {
                    events = None;
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
                Trigger::Changed
            }
        };
        reload(trigger);
    }
}
