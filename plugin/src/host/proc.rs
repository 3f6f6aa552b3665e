//! What /proc says about processes: their identity, command line, credentials, working
//! directory, environment and open descriptors, read from a proc root that tests point at a
//! fake tree.

use std::path::Path;

/// Clock tick of /proc start times (USER_HZ is 100 on every Linux ABI): a process seeded from
/// /proc has its start time only to this precision.
pub const TICK_NS: u64 = 10_000_000;

/// Environment variable names whose values are secrets.
const SECRET_MARKERS: [&str; 9] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "CERT",
];

/// Does a variable (or property) name look like it holds a secret?
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

/// Replaces the value of variables whose names look secret.
pub fn redact_env(vars: impl IntoIterator<Item = String>) -> Vec<String> {
    vars.into_iter()
        .map(|var| match var.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=<redacted>"),
            _ => var,
        })
        .collect()
}

/// Parsed /proc/<pid>/stat fields we use.
struct Stat {
    ppid: u32,
    tty_nr: i64,
    start_ticks: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        tty_nr: f.get(4)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

fn status_ids(text: &str, key: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `vpid == 1` (the last NSpid is the pid inside the innermost pid namespace).
fn is_namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .is_some_and(|v| v == "1")
}

/// Everything /proc says about a process, for seeding.
pub struct ProcSnapshot {
    pub tgid: u32,
    pub parent_tgid: u32,
    pub start_boot_ns: u64,
    pub exe: String,
    /// argv without argv[0], as /proc shows it (not yet redacted).
    pub args: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub tty: bool,
    pub entry: bool,
    pub cwd: String,
    pub env: Vec<String>,
    /// (fd, link target, close-on-exec) of every open descriptor.
    pub fds: Vec<(i32, String, bool)>,
}

impl ProcSnapshot {
    /// A process /proc no longer has: its pid and start time, nothing else.
    pub fn bare(tgid: u32, start_boot_ns: u64) -> ProcSnapshot {
        ProcSnapshot {
            tgid,
            parent_tgid: 0,
            start_boot_ns,
            exe: String::new(),
            args: Vec::new(),
            uid: 0,
            gid: 0,
            tty: false,
            entry: false,
            cwd: String::new(),
            env: Vec::new(),
            fds: Vec::new(),
        }
    }
}

/// Reads `<proc root>/<pid>`; None when the process is gone (or is a kernel thread).
pub fn snapshot(proc_root: &Path, pid: u32, with_env: bool) -> Option<ProcSnapshot> {
    let dir = proc_root.join(pid.to_string());
    let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    if cmdline.is_empty() {
        return None; // a kernel thread
    }
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| argv.first().cloned().unwrap_or_default());
    let env = if with_env {
        let raw = std::fs::read(dir.join("environ")).unwrap_or_default();
        redact_env(
            raw.split(|&b| b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        )
    } else {
        Vec::new()
    };
    let fds = std::fs::read_dir(dir.join("fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((
                        fd,
                        target.to_string_lossy().into_owned(),
                        fd_cloexec(&dir, fd),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ProcSnapshot {
        tgid: pid,
        parent_tgid: stat.ppid,
        start_boot_ns: stat.start_ticks * TICK_NS,
        exe,
        args: argv.get(1..).map(<[String]>::to_vec).unwrap_or_default(),
        uid: status_ids(&status, "Uid:").unwrap_or(0),
        gid: status_ids(&status, "Gid:").unwrap_or(0),
        tty: stat.tty_nr != 0,
        entry: is_namespace_init(&status),
        cwd: std::fs::read_link(dir.join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        env,
        fds,
    })
}

/// Whether a descriptor is close-on-exec: `flags:` in /proc/<pid>/fdinfo/<fd> is octal.
fn fd_cloexec(process_dir: &Path, fd: i32) -> bool {
    const O_CLOEXEC: u32 = 0o2000000;
    std::fs::read_to_string(process_dir.join("fdinfo").join(fd.to_string()))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .is_some_and(|flags| flags & O_CLOEXEC != 0)
}

/// Every process in the proc root now.
pub fn all_pids(proc_root: &Path) -> Vec<u32> {
    std::fs::read_dir(proc_root)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let text = "4242 (my (odd) name) S 1 4242 4242 34816 4242 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!((s.ppid, s.tty_nr, s.start_ticks), (1, 34816, 123456));
    }

    #[test]
    fn secrets_are_redacted() {
        let env = redact_env([
            "PATH=/bin".into(),
            "GITHUB_TOKEN=abc".into(),
            "db_password=x".into(),
            "EMPTY".into(),
        ]);
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "GITHUB_TOKEN=<redacted>",
                "db_password=<redacted>",
                "EMPTY"
            ]
        );
    }

    #[test]
    fn this_process_snapshots_with_its_own_exe_and_fds() {
        let me = snapshot(Path::new("/proc"), std::process::id(), false).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap().to_string_lossy());
        assert!(me.fds.iter().any(|(fd, _, _)| *fd == 0));
        assert!(me.start_boot_ns > 0);
    }
}
