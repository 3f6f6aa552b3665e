//! End-to-end harness for nri-sysflow: a real containerd 1.7 with NRI enabled and runc, both
//! from Debian's packages; local OCI images (no registry is reachable); pods and containers
//! created through CRI the way kubelet creates them; the agent under test, whose `.sf` output
//! is read with our reader and with the reference `sysprint`; and a real Prometheus scraping
//! its metrics.
//!
//! Everything a run creates (processes, mounts, cgroups, sockets, files) is removed when the
//! [`containerd::Containerd`] value is dropped, also after a failed assertion.

pub mod agent;
pub mod containerd;
pub mod cri;
pub mod daemonset;
pub mod image;
pub mod packages;
pub mod prometheus;
pub mod sf;

use std::{path::PathBuf, time::Duration};

/// Where downloaded packages, extracted binaries and built images are kept between runs.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NRI_SYSFLOW_E2E_CACHE") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/nri-sysflow/e2e")
}

/// The workspace's target directory, where the agent binary is built.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e has a parent")
        .to_path_buf()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut std::process::Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("starting {cmd:?}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TCP server on loopback that answers each connection's 4 bytes with "pong".
pub fn pong_server() -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(false).unwrap();
    let handle = std::thread::spawn(move || {
        let mut got = Vec::new();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < end && got.is_empty() {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut buf = [0u8; 4];
                    use std::io::{Read as _, Write as _};
                    if s.read_exact(&mut buf).is_ok() {
                        got.push(String::from_utf8_lossy(&buf).into_owned());
                        let _ = s.write_all(b"pong");
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        got
    });
    (port, handle)
}
