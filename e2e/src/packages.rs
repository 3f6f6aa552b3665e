//! containerd 1.7 with NRI, runc and busybox from Debian's packages, downloaded and unpacked
//! into the cache (never installed system-wide): containerd and busybox-static from the
//! trixie suite through a private apt configuration, runc from bookworm (trixie's needs a newer
//! glibc than bookworm has).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cache_dir, run};

/// The unpacked tools.
#[derive(Clone, Debug)]
pub struct Tools {
    /// Holds containerd, ctr and containerd-shim-runc-v2 (put on containerd's PATH).
    pub bin_dir: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub runc: PathBuf,
    pub busybox: PathBuf,
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

impl Tools {
    /// Every binary the harness runs.
    fn binaries(&self) -> [&PathBuf; 6] {
        [
            &self.containerd,
            &self.ctr,
            &self.runc,
            &self.busybox,
            &self.prometheus,
            &self.promtool,
        ]
    }
}

const TRIXIE_PACKAGES: &[&str] = &["containerd", "busybox-static"];
const BOOKWORM_PACKAGES: &[&str] = &["runc", "prometheus"];

/// The Debian mirror this machine's apt uses.
fn mirror() -> anyhow::Result<String> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list")
                && let Ok(t) = std::fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    for text in &texts {
        for line in text.lines().map(str::trim) {
            let url = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.starts_with("http"))
            } else {
                None
            };
            if let Some(url) = url
                && url.contains("debian")
                && !url.contains("security")
            {
                return Ok(url.trim_end_matches('/').to_string());
            }
        }
    }
    bail!("no Debian mirror found in /etc/apt/sources.list(.d)")
}

fn apt(private: Option<&Path>) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "-o", "APT::Sandbox::User=root"]);
    if let Some(dir) = private {
        cmd.arg("-o")
            .arg(format!(
                "Dir::Etc::sourcelist={}",
                dir.join("trixie.list").display()
            ))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", dir.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", dir.join("cache").display()))
            .arg("-o")
            .arg(format!(
                "Dir::State::status={}",
                dir.join("status").display()
            ));
    }
    cmd
}

/// Downloads and unpacks what is missing; returns the tools.
pub fn ensure() -> anyhow::Result<Tools> {
    let cache = cache_dir();
    let root = cache.join("root");
    let tools = Tools {
        bin_dir: root.join("usr/bin"),
        containerd: root.join("usr/bin/containerd"),
        ctr: root.join("usr/bin/ctr"),
        runc: root.join("usr/sbin/runc"),
        busybox: root.join("usr/bin/busybox"),
        prometheus: root.join("usr/bin/prometheus"),
        promtool: root.join("usr/bin/promtool"),
    };
    let marker = cache.join(".unpacked");
    let wanted = format!("{TRIXIE_PACKAGES:?} {BOOKWORM_PACKAGES:?}");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str())
        && tools.binaries().iter().all(|p| p.exists())
    {
        return Ok(tools);
    }
    let apt_dir = cache.join("apt-trixie");
    let debs = cache.join("debs");
    for d in [
        apt_dir.join("lists/partial"),
        apt_dir.join("cache/archives/partial"),
        debs.clone(),
        root.clone(),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(
        apt_dir.join("trixie.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} trixie main\n",
            mirror()?
        ),
    )?;
    std::fs::write(apt_dir.join("status"), "")?;
    run(apt(Some(&apt_dir)).arg("update"))?;
    run(apt(Some(&apt_dir))
        .arg("download")
        .args(TRIXIE_PACKAGES)
        .current_dir(&debs))?;
    if run(apt(None)
        .arg("download")
        .args(BOOKWORM_PACKAGES)
        .current_dir(&debs))
    .is_err()
    {
        // The machine's own lists may be missing on a fresh machine.
        run(apt(None).arg("update"))?;
        run(apt(None)
            .arg("download")
            .args(BOOKWORM_PACKAGES)
            .current_dir(&debs))?;
    }
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|x| x == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        }
    }
    for p in tools.binaries() {
        if !p.exists() {
            bail!("{} missing after unpacking the packages", p.display());
        }
    }
    std::fs::write(&marker, wanted)?;
    Ok(tools)
}
