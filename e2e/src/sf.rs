//! The agent's output, read two ways: our reader (joined like sysprint's flattened reader)
//! and the reference `sysprint` itself.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::Value as Json;
use sysflow::{
    ReadItem, Record, SysFlowReader,
    flat::{FlatRecord, Flattener},
};

/// The completed `.sf` files of a directory, oldest first.
pub fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sf"))
        .collect();
    files.sort();
    Ok(files)
}

pub fn records(file: &Path) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for item in SysFlowReader::open(file)? {
        match item.with_context(|| format!("reading {}", file.display()))? {
            ReadItem::Record(r) => out.push(r),
            ReadItem::Unknown { name } => bail!("{}: unknown record {name}", file.display()),
        }
    }
    Ok(out)
}

/// Every event and flow of every file, joined with its process, container, pod and files.
pub fn flat(dir: &Path) -> anyhow::Result<Vec<FlatRecord>> {
    let mut out = Vec::new();
    for f in files(dir)? {
        let records = records(&f)?;
        let dangling = sysflow::check::dangling_references(&records);
        if !dangling.is_empty() {
            bail!("{}: dangling references {dangling:?}", f.display());
        }
        let mut flattener = Flattener::default();
        out.extend(records.into_iter().filter_map(|r| flattener.push(r)));
    }
    Ok(out)
}

/// `sysprint -o json` over the directory's files, one JSON object per event or flow.
pub fn sysprint(dir: &Path) -> anyhow::Result<Vec<Json>> {
    let files = files(dir)?;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let venv = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".local/share/nri-sysflow/venv");
    let out = std::process::Command::new(venv.join("bin/sysprint"))
        .args(["-o", "json"])
        .args(&files)
        .output()
        .context("running sysprint (cargo xtask setup installs it)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("Error") {
        bail!("sysprint failed: {stderr}");
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).context("sysprint JSON"))
        .collect()
}

/// The container name of a joined record ("" for host records).
pub fn container_name(r: &FlatRecord) -> &str {
    r.container.as_ref().map(|c| c.name.as_str()).unwrap_or("")
}

pub fn pod_name(r: &FlatRecord) -> &str {
    r.pod.as_ref().map(|p| p.name.as_str()).unwrap_or("")
}

pub fn pod_namespace(r: &FlatRecord) -> &str {
    r.pod.as_ref().map(|p| p.namespace.as_str()).unwrap_or("")
}

pub fn exe(r: &FlatRecord) -> &str {
    r.process.as_ref().map(|p| p.exe.as_str()).unwrap_or("")
}

pub fn exe_args(r: &FlatRecord) -> &str {
    r.process
        .as_ref()
        .map(|p| p.exe_args.as_str())
        .unwrap_or("")
}

/// (destination port, bytes sent, bytes received) of every NetworkFlow among `records`.
pub fn network_flows<'a>(
    records: impl IntoIterator<Item = &'a FlatRecord>,
) -> Vec<(i32, i64, i64)> {
    records
        .into_iter()
        .filter_map(|r| match &r.record {
            Record::NetworkFlow(n) => Some((n.dport, n.num_w_send_bytes, n.num_r_recv_bytes)),
            _ => None,
        })
        .collect()
}

/// Every alert of the `alerts-*` files in `dir` (the one being written included: its lines are
/// flushed whole), in file order.
pub fn alerts(dir: &Path) -> anyhow::Result<Vec<Json>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with("alerts-")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f)?.lines() {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}: not a JSON line: {line}", f.display()))?,
            );
        }
    }
    Ok(out)
}
