//! Reloads the policy file when it changes (inotify on its directory, which also sees the
//! symlink swap of a Kubernetes ConfigMap update) or on SIGHUP. A policy that does not
//! validate is rejected with every problem logged; the one in force stays.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
};

use tracing::{error, info};

use super::Workloads;
use crate::{
    file_watch::{self, Trigger, folder_of},
    policy::{Policy, PolicyLoadError},
};

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    Applied,
    Unchanged,
    Rejected(PolicyLoadError),
}

/// Reads the file and applies it if it is valid and different from `last`.
pub fn reload(path: &Path, last: &mut Option<String>, workloads: &Workloads) -> Reload {
    let text = match crate::host::trust::read_trusted(path) {
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
    file_watch::watch(&[folder_of(&path)], "the policy", |trigger| {
        if trigger == Trigger::Signal {
            last = None;
        }
        if !path.exists() {
            // Mid-swap, or deleted: keep the policy in force until a file is back.
            return;
        }
        reload(&path, &mut last, &workloads);
    })
    .await;
}
