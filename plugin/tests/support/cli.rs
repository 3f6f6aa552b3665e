//! The agent binary run as a command-line tool, and the shared inputs beside the repository
//! (the reference traces and the policy-language conformance kit).
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_nri-sysflow");

/// Runs `nri-sysflow args...`: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `shared/<name>` searched upwards from this crate (any checkout layout with `shared/` beside
/// it), unless `env` names the folder; `marker` is a file it must hold.
fn shared(name: &str, marker: &str, env: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(env) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared").join(name))
        .find(|d| d.join(marker).exists())
        .unwrap_or_else(|| panic!("shared/{name} not found beside the repository (or set {env})"))
}

/// `shared/reference-traces` (or `SYSFLOW_REFERENCE_TRACES`).
pub fn reference_dir() -> PathBuf {
    shared(
        "reference-traces",
        "MANIFEST.md",
        "SYSFLOW_REFERENCE_TRACES",
    )
}

/// `shared/policy-kit` (or `SYSFLOW_POLICY_KIT`).
pub fn kit() -> PathBuf {
    shared("policy-kit", "LANGUAGE.md", "SYSFLOW_POLICY_KIT")
}
