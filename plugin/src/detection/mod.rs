//! Detection rules (sf-processor's policy language, the `sysflow-rules` crate) in the agent:
//! the rules in force and their reloading (`watch`), the sink that evaluates every record the
//! agent writes on a worker thread of its own (`sink`, with the records known quiet in
//! `quiet`), the alert files (`alert_files`), and the command-line tools (`cli`).

pub mod alert_files;
pub mod cli;
pub mod quiet;
pub mod sink;
pub mod watch;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use sysflow_rules::{
    CompileError, Policy,
    compiler::{compile_sources, read_sources},
};

/// The rules in force, swapped whole on a reload; the worker picks a new version up at its
/// next batch.
pub struct LoadedRules {
    pub paths: Vec<PathBuf>,
    policy: Mutex<Arc<Policy>>,
    version: AtomicU64,
}

/// Every rules file under `paths`, read, each refused when other users may write it.
pub fn read_trusted_sources(paths: &[PathBuf]) -> Result<Fingerprint, CompileError> {
    let sources = read_sources(paths)?;
    for (path, _) in &sources {
        crate::host::trust::refuse_if_writable_by_others(path).map_err(|error| {
            CompileError::Read {
                path: path.clone(),
                error,
            }
        })?;
    }
    Ok(sources)
}

/// The text of every rules file, as compiled (also tells a change from an event that changed
/// nothing).
pub type Fingerprint = Vec<(PathBuf, String)>;

impl LoadedRules {
    /// Compiles the rules under `paths`; at start-up an error stops the agent.
    pub fn load(paths: Vec<PathBuf>) -> Result<(Arc<LoadedRules>, Fingerprint), CompileError> {
        let print = read_trusted_sources(&paths)?;
        let policy = compile_sources(&print)?;
        Ok((
            Arc::new(LoadedRules {
                paths,
                policy: Mutex::new(Arc::new(policy)),
                version: AtomicU64::new(1),
            }),
            print,
        ))
    }

    /// The rules in force and their version.
    pub fn current(&self) -> (u64, Arc<Policy>) {
        let policy = self
            .policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.version.load(Relaxed), policy)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Relaxed)
    }

    pub fn replace(&self, policy: Policy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        self.version.fetch_add(1, Relaxed);
    }
}
