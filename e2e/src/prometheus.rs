//! A real Prometheus (Debian's package, unpacked into the cache like containerd) scraping the
//! agent from a temporary folder, and the few HTTP API calls the tests make.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value as Json;

use crate::{packages::Tools, wait_for};

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub promtool: PathBuf,
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second as job `nri-sysflow`, with `rules`
    /// loaded.
    pub fn start(tools: &Tools, target: SocketAddr, rules: &Path) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: nri-sysflow\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(&tools.prometheus)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut p = Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            promtool: tools.promtool.clone(),
        };
        if wait_for(Duration::from_secs(30), || p.get("/-/ready").ok()).is_none() {
            bail!("prometheus not ready within 30 s:\n{}", p.log());
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("prometheus exited with {status}:\n{}", p.log());
        }
        Ok(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` (with its query string); the body of a 200 answer.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: no chunked answers to decode.
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP header")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {}\n{body}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    }

    /// An instant query; the `data.result` array.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Json>> {
        let body = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Json = serde_json::from_str(&body)?;
        if v["status"] != "success" {
            bail!("query {expr} failed: {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The values of `label` among the series `selector` selects (Grafana's `label_values`).
    pub fn label_values(&self, label: &str, selector: &str) -> anyhow::Result<Vec<String>> {
        let body = self.get(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            encode(selector)
        ))?;
        let v: Json = serde_json::from_str(&body)?;
        Ok(v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
