//! `nri-sysflow rules check` and `rules run`: detection rules checked, or evaluated over
//! SysFlow files, outside the agent.

use std::{io::Write as _, path::PathBuf};

use sysflow_rules::{
    Policy, compile_paths,
    engine::Mode,
    runner::{self, Format},
};

/// Compiles the rules under `paths`; prints what they hold and every lint. Err: they do not
/// compile (the error names file, line and column).
pub fn check(paths: &[PathBuf]) -> anyhow::Result<Policy> {
    let policy = compile_paths(paths)?;
    let mut out = std::io::stdout().lock();
    let enabled = policy.rules.iter().filter(|r| r.enabled).count();
    writeln!(
        out,
        "{} files: {} rules ({} enabled), {} macros, {} lists, {} filters",
        policy.files.len(),
        policy.rules.len(),
        enabled,
        policy.macros,
        policy.lists,
        policy.filters.len()
    )?;
    for lint in &policy.lints {
        writeln!(
            out,
            "{}:{}: warning: {}",
            lint.file.display(),
            lint.pos,
            lint.message
        )?;
    }
    if !policy.lints.is_empty() {
        writeln!(out, "{} warnings", policy.lints.len())?;
    }
    Ok(policy)
}

/// Evaluates the rules over SysFlow files, in file order, to stdout.
pub fn run(
    policy: &[PathBuf],
    mode: Mode,
    format: Format,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let policy = compile_paths(policy)?;
    let files = runner::trace_files(files)?;
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    let stats = runner::run(&policy, &files, mode, format, &mut out)?;
    tracing::info!(
        records = stats.records,
        evaluated = stats.evaluated,
        dropped = stats.dropped,
        written = stats.written,
        "rules run done"
    );
    Ok(())
}
