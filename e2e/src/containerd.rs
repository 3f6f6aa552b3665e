//! A real containerd 1.7 (with or without NRI) running out of a temporary folder, and the
//! cleanup that leaves nothing behind: processes, mounts, cgroups, shim sockets, files.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    cache_dir,
    cri::Cri,
    image::build_busybox_image,
    packages::{self, Tools},
    run, wait_for,
};

pub const PAUSE_IMAGE: &str = "docker.io/sysflow-e2e/pause:1";
pub const BUSYBOX_IMAGE: &str = "docker.io/sysflow-e2e/busybox:1";
/// containerd 1.7 hard-codes its shims' socket directory.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub nri_socket: PathBuf,
    /// Parent of every pod cgroup this instance creates (cgroupfs layout).
    pub cgroup_root: String,
    pub log: PathBuf,
    tools: Tools,
    nri: bool,
    child: Option<Child>,
    run_containerd_existed: bool,
    shim_sockets_before: HashSet<PathBuf>,
}

fn images(tools: &Tools) -> anyhow::Result<Vec<PathBuf>> {
    let dir = cache_dir().join("images");
    std::fs::create_dir_all(&dir)?;
    let pause = dir.join("pause.tar");
    let busybox = dir.join("busybox.tar");
    // Rebuilt every run: cheap, and always from the busybox in the cache.
    build_busybox_image(
        &tools.busybox,
        PAUSE_IMAGE,
        &["/bin/sleep", "2147483647"],
        &pause,
    )?;
    build_busybox_image(&tools.busybox, BUSYBOX_IMAGE, &["/bin/sh"], &busybox)?;
    Ok(vec![pause, busybox])
}

fn ls(dir: &str) -> HashSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

impl Containerd {
    /// Starts containerd (NRI on or off), imports the images; ready for CRI calls.
    pub async fn start(nri: bool) -> anyhow::Result<Containerd> {
        Self::start_with_plugin(nri, None).await
    }

    /// Like `start`, with a plugin containerd launches itself: an executable `script` installed
    /// as `<plugin dir>/<file_name>` (NRI's `NN-name`).
    pub async fn start_with_plugin(
        nri: bool,
        plugin: Option<(&str, &str)>,
    ) -> anyhow::Result<Containerd> {
        let tools = packages::ensure()?;
        remove_stale_instances();
        let dir = tempfile::Builder::new()
            .prefix(INSTANCE_PREFIX)
            .tempdir_in("/tmp")?
            .keep();
        let n = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut c = Containerd {
            socket: dir.join("containerd.sock"),
            // In a folder of its own: the agent's pod mounts that folder (/var/run/nri).
            nri_socket: dir.join("nri/nri.sock"),
            cgroup_root: format!("/{n}"),
            log: dir.join("containerd.log"),
            dir,
            tools,
            nri,
            child: None,
            run_containerd_existed: Path::new("/run/containerd").exists(),
            shim_sockets_before: ls(SHIM_SOCKET_DIR),
        };
        c.write_config()?;
        if let Some((file_name, script)) = plugin {
            use std::os::unix::fs::PermissionsExt as _;
            let path = c.dir.join("nri-plugins").join(file_name);
            std::fs::write(&path, script)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        c.spawn().await?;
        for archive in images(&c.tools)? {
            c.import_image(&archive)?;
        }
        Ok(c)
    }

    /// `ctr images import` of an OCI archive into the namespace CRI uses, as an operator loads
    /// an image onto a node without a registry.
    pub fn import_image(&self, archive: &Path) -> anyhow::Result<()> {
        run(Command::new(&self.tools.ctr)
            .arg("--address")
            .arg(&self.socket)
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--platform",
                "linux/amd64",
            ])
            .arg(archive))?;
        Ok(())
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let d = self.dir.display();
        for sub in ["nri", "nri-plugins", "nri-conf", "logs"] {
            std::fs::create_dir_all(self.dir.join(sub))?;
        }
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.nri.v1.nri"]
  disable = {nri_disabled}
  disable_connections = false
  socket_path = "{d}/nri/nri.sock"
  plugin_path = "{d}/nri-plugins"
  plugin_config_path = "{d}/nri-conf"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{d}/runc"
"#,
            nri_disabled = !self.nri,
            pause = PAUSE_IMAGE,
            runc = self.tools.runc.display(),
        );
        std::fs::write(self.dir.join("config.toml"), config)?;
        Ok(())
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let path = format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            self.tools.bin_dir.display()
        );
        let child = Command::new(&self.tools.containerd)
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        self.child = Some(child);
        if wait_for(Duration::from_secs(20), || {
            self.socket.exists().then_some(())
        })
        .is_none()
        {
            bail!(
                "containerd did not create {} within 20 s; log:\n{}",
                self.socket.display(),
                self.log_tail()
            );
        }
        // CRI answers a little after the socket appears.
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut cri) = Cri::connect(&self.socket).await
                && cri.pod_ids().await.is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > end {
                bail!("CRI did not answer within 20 s; log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub async fn cri(&self) -> anyhow::Result<Cri> {
        Cri::connect(&self.socket).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal_and_wait(&mut self, signal: i32, timeout: Duration) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let done = wait_for(timeout, || child.try_wait().ok().flatten());
            if done.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Stops containerd (SIGTERM); pods keep running in their shims.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    }

    /// Restarts containerd on the same state, as a node's service manager would.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }

    /// Removes everything this instance created. Safe to call twice.
    pub fn cleanup(&mut self) {
        self.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
        remove_instance(&self.dir, &self.cgroup_root);
        for socket in ls(SHIM_SOCKET_DIR).difference(&self.shim_sockets_before) {
            let _ = std::fs::remove_file(socket);
        }
        if !self.run_containerd_existed {
            let _ = std::fs::remove_dir_all("/run/containerd");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// What a harness that was killed (SIGKILL, a cancelled CI job) left behind: instances whose
/// containerd is gone. Removed before a new instance starts.
pub fn remove_stale_instances() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(INSTANCE_PREFIX) {
            continue;
        }
        let dir = e.path();
        let config = dir.join("config.toml").display().to_string();
        let alive = processes_where(|cmdline, _| {
            cmdline.contains("containerd --config") && cmdline.contains(&config)
        });
        if alive.is_empty() {
            remove_instance(&dir, &format!("/{name}"));
        }
    }
}

const INSTANCE_PREFIX: &str = "nri-sysflow-e2e-";

/// Pids whose command line and /proc/<pid>/cgroup text match.
fn processes_where(matches: impl Fn(&str, &str) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if matches(&cmdline, &cgroup) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Kills an instance's shims and container processes, unmounts, removes its cgroups and
/// folder.
fn remove_instance(dir: &Path, cgroup_root: &str) {
    let address = dir.join("containerd.sock").display().to_string();
    let ours = |cmdline: &str, cgroup: &str| {
        (cmdline.contains("containerd-shim") && cmdline.contains(&address))
            || cgroup.lines().any(|l| {
                l.split(':')
                    .nth(2)
                    .is_some_and(|p| p.starts_with(cgroup_root))
            })
    };
    for _ in 0..3 {
        let pids = processes_where(ours);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unmount_under(dir);
    remove_cgroups(cgroup_root);
    let _ = std::fs::remove_dir_all(dir);
}

/// mountinfo's mount points (octal escapes undone).
fn mount_points() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?.replace("\\040", " ");
            let fstype = right.split_whitespace().next()?.to_string();
            Some((point, fstype))
        })
        .collect()
}

fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let mut points: Vec<String> = mount_points()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            // SAFETY: valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Removes `root` and everything under it in every cgroup hierarchy (v1 and v2).
fn remove_cgroups(root: &str) {
    for (point, fstype) in mount_points() {
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let dir = PathBuf::from(point).join(root.trim_start_matches('/'));
        remove_cgroup_tree(&dir);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
