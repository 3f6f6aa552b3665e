//! Deterministic workloads for nri-sysflow's capture tests and benchmarks. Each subcommand makes
//! a known sequence of syscalls, so a test can assert the exact records it must produce. Loop
//! subcommands print `{"ops": N, "ns_per_op": X}` for the benchmarks.

use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    process::Command,
    time::Instant,
};

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Work,
}

#[derive(Subcommand)]
enum Work {
    /// exit(CODE).
    Exit { code: i32 },
    /// open(O_WRONLY|O_CREAT|O_TRUNC, 0640), COUNT writes of SIZE bytes, close.
    WriteFile {
        path: PathBuf,
        #[arg(long, default_value_t = 3)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// open read-only, dup, two preads of 50 bytes at offset 10 on the duplicate, close both.
    PreadDup { path: PathBuf },
    /// open(O_WRONLY|O_CREAT|O_TRUNC), write 100 bytes, close_range(fd, ~0, 0), print the fd.
    CloseRange { path: PathBuf },
    /// rename(FROM, TO).
    Rename { from: PathBuf, to: PathBuf },
    /// In DIR: mkdir sub, symlink sub -> lnk, link f -> f2, chmod f 0600, chown f 1:1, unlink
    /// lnk, unlink f2, rmdir sub, chdir DIR.
    PathOps { dir: PathBuf },
    /// connect to ADDR, send SEND bytes, read RECV bytes, close.
    TcpClient {
        addr: SocketAddr,
        #[arg(long)]
        send: usize,
        #[arg(long)]
        recv: usize,
    },
    /// sendto ADDR SEND bytes, recvfrom one reply, close.
    UdpClient {
        addr: SocketAddr,
        #[arg(long)]
        send: usize,
    },
    /// setresuid(UID, UID, UID) and setgid(GID).
    SetIds { uid: u32, gid: u32 },
    /// Start a thread that exits, fork a child that exits with 5, wait for both.
    ForkThread,
    /// open(O_WRONLY|O_CREAT|O_TRUNC), write 100 bytes, print `ready FD`, wait for a line on
    /// stdin, write 200 bytes, exit without closing.
    HoldFile { path: PathBuf },
    /// Write 100 bytes to BEFORE, move this process into the cgroup whose `cgroup.procs` is
    /// PROCS, write 100 bytes to AFTER (each file opened, written once, closed).
    MoveCgroup {
        procs: PathBuf,
        before: PathBuf,
        after: PathBuf,
    },
    /// pipe2(O_CLOEXEC), 10 bytes written to it and read back, print `pipe INODE`, then exec
    /// PROGRAM with ARGS (the exec closes both ends).
    PipeExec {
        program: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark: COUNT 1-byte write+read pairs on a pipe.
    LoopRw { count: u64 },
    /// Benchmark: COUNT open+close of PATH.
    LoopOpen { path: PathBuf, count: u64 },
    /// Open+close of PATH for SECS seconds, as fast as it goes; prints how many.
    LoopOpenFor { secs: u64, path: PathBuf },
    /// Benchmark: COUNT fork+exec of /bin/true, waiting for each (median iteration).
    LoopForkExec { count: u64 },
    /// Benchmark, file-server-like: COUNT times open one of the files in DIR, read it in 16 KiB
    /// chunks, send it over one TCP connection to ADDR, close it.
    ServeFiles {
        dir: PathBuf,
        addr: SocketAddr,
        count: u64,
    },
    /// Benchmark: COUNT connect + 64-byte send + close to ADDR (median iteration).
    LoopTcp { addr: SocketAddr, count: u64 },
}

fn check(rc: libc::c_int, what: &str) {
    if rc < 0 {
        eprintln!("{what}: {}", std::io::Error::last_os_error());
        std::process::exit(100);
    }
}

fn cpath(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

fn report(count: u64, started: Instant) {
    let ns = started.elapsed().as_nanos() as f64 / count.max(1) as f64;
    println!("{{\"ops\": {count}, \"ns_per_op\": {ns:.1}}}");
}

/// For loops whose iterations take microseconds or more: the median iteration, so one rare
/// stall (a loopback SYN retransmit after port reuse costs a whole second) does not decide the
/// figure; the mean is reported beside it.
fn report_median(mut iterations: Vec<u64>) {
    let count = iterations.len();
    let mean = iterations.iter().sum::<u64>() as f64 / count.max(1) as f64;
    iterations.sort_unstable();
    let median = iterations.get(count / 2).copied().unwrap_or(0);
    println!("{{\"ops\": {count}, \"ns_per_op\": {median}, \"mean_ns\": {mean:.1}}}");
}

fn timed(count: u64, mut op: impl FnMut()) {
    let iterations = (0..count)
        .map(|_| {
            let started = Instant::now();
            op();
            started.elapsed().as_nanos() as u64
        })
        .collect();
    report_median(iterations);
}

fn main() {
    match Cli::parse().command {
        Work::Exit { code } => std::process::exit(code),
        Work::WriteFile { path, count, size } => {
            let p = cpath(&path);
            // SAFETY (all libc calls below): valid pointers and lengths from live buffers.
            let fd = unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o640,
                )
            };
            check(fd, "open");
            let buf = vec![b'x'; size];
            for _ in 0..count {
                check(
                    unsafe { libc::write(fd, buf.as_ptr().cast(), size) } as i32,
                    "write",
                );
            }
            check(unsafe { libc::close(fd) }, "close");
        }
        Work::PreadDup { path } => {
            let p = cpath(&path);
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
            check(fd, "open");
            let dup = unsafe { libc::dup(fd) };
            check(dup, "dup");
            let mut buf = [0u8; 50];
            for _ in 0..2 {
                check(
                    unsafe { libc::pread(dup, buf.as_mut_ptr().cast(), 50, 10) } as i32,
                    "pread",
                );
            }
            check(unsafe { libc::close(dup) }, "close dup");
            check(unsafe { libc::close(fd) }, "close");
        }
        Work::CloseRange { path } => {
            let p = cpath(&path);
            let fd = unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o600,
                )
            };
            check(fd, "open");
            check(
                unsafe { libc::write(fd, [b'r'; 100].as_ptr().cast(), 100) } as i32,
                "write",
            );
            let rc = unsafe { libc::syscall(libc::SYS_close_range, fd as u32, u32::MAX, 0u32) };
            check(rc as i32, "close_range");
            println!("{fd}");
        }
        Work::Rename { from, to } => {
            let (a, b) = (cpath(&from), cpath(&to));
            check(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }, "rename");
        }
        Work::PathOps { dir } => {
            let j = |n: &str| cpath(&dir.join(n));
            let (sub, lnk, f, f2) = (j("sub"), j("lnk"), j("f"), j("f2"));
            unsafe {
                check(libc::mkdir(sub.as_ptr(), 0o750), "mkdir");
                check(libc::symlink(sub.as_ptr(), lnk.as_ptr()), "symlink");
                check(libc::link(f.as_ptr(), f2.as_ptr()), "link");
                check(libc::chmod(f.as_ptr(), 0o600), "chmod");
                check(libc::chown(f.as_ptr(), 1, 1), "chown");
                check(libc::unlink(lnk.as_ptr()), "unlink lnk");
                check(libc::unlink(f2.as_ptr()), "unlink f2");
                check(libc::rmdir(sub.as_ptr()), "rmdir");
                check(libc::chdir(cpath(&dir).as_ptr()), "chdir");
            }
        }
        Work::TcpClient { addr, send, recv } => {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(&vec![b'c'; send]).expect("send");
            let mut got = vec![0u8; recv];
            s.read_exact(&mut got).expect("recv");
        }
        Work::UdpClient { addr, send } => {
            let local = if addr.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            let s = UdpSocket::bind(local).expect("bind");
            s.send_to(&vec![b'u'; send], addr).expect("sendto");
            let mut buf = [0u8; 2048];
            s.recv_from(&mut buf).expect("recvfrom");
        }
        Work::SetIds { uid, gid } => unsafe {
            check(libc::setgid(gid), "setgid");
            check(libc::setresuid(uid, uid, uid), "setresuid");
        },
        Work::ForkThread => {
            std::thread::spawn(|| ()).join().expect("thread");
            // SAFETY: the child only calls _exit.
            let pid = unsafe { libc::fork() };
            check(pid, "fork");
            if pid == 0 {
                unsafe { libc::_exit(5) };
            }
            let mut status = 0;
            check(unsafe { libc::waitpid(pid, &mut status, 0) }, "waitpid");
        }
        Work::HoldFile { path } => {
            let p = cpath(&path);
            let fd = unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o600,
                )
            };
            check(fd, "open");
            check(
                unsafe { libc::write(fd, [b'1'; 100].as_ptr().cast(), 100) } as i32,
                "write",
            );
            println!("ready {fd}");
            std::io::stdout().flush().expect("stdout");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).expect("stdin");
            check(
                unsafe { libc::write(fd, [b'2'; 200].as_ptr().cast(), 200) } as i32,
                "write",
            );
            std::process::exit(0);
        }
        Work::MoveCgroup {
            procs,
            before,
            after,
        } => {
            std::fs::write(&before, [b'b'; 100]).expect("write before");
            std::fs::write(&procs, std::process::id().to_string()).expect("move");
            std::fs::write(&after, [b'a'; 100]).expect("write after");
        }
        Work::PipeExec { program, args } => {
            let mut ends = [0; 2];
            check(
                unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) },
                "pipe2",
            );
            check(
                unsafe { libc::write(ends[1], [b'p'; 10].as_ptr().cast(), 10) } as i32,
                "write",
            );
            let mut buf = [0u8; 10];
            check(
                unsafe { libc::read(ends[0], buf.as_mut_ptr().cast(), 10) } as i32,
                "read",
            );
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            check(unsafe { libc::fstat(ends[0], &mut st) }, "fstat");
            println!("pipe {}", st.st_ino);
            std::io::stdout().flush().expect("stdout");
            let err = std::os::unix::process::CommandExt::exec(Command::new(&program).args(&args));
            panic!("exec {}: {err}", program.display());
        }
        Work::LoopRw { count } => {
            let mut fds = [0; 2];
            check(unsafe { libc::pipe(fds.as_mut_ptr()) }, "pipe");
            let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            let mut byte = [7u8];
            let started = Instant::now();
            for _ in 0..count {
                unsafe {
                    libc::write(w.as_raw_fd(), byte.as_ptr().cast(), 1);
                    libc::read(r.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
                }
            }
            report(count * 2, started);
        }
        Work::LoopOpen { path, count } => {
            let p = cpath(&path);
            let started = Instant::now();
            for _ in 0..count {
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
                check(fd, "open");
                unsafe { libc::close(fd) };
            }
            report(count, started);
        }
        Work::LoopOpenFor { secs, path } => {
            let p = cpath(&path);
            let started = Instant::now();
            let until = started + std::time::Duration::from_secs(secs);
            let mut count = 0u64;
            // The clock is read once per 1,000 pairs: a vDSO call, no syscall to capture.
            while Instant::now() < until {
                for _ in 0..1_000 {
                    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
                    check(fd, "open");
                    unsafe { libc::close(fd) };
                }
                count += 1_000;
            }
            report(count, started);
        }
        Work::LoopForkExec { count } => timed(count, || {
            let status = Command::new("/bin/true").status().expect("spawn /bin/true");
            assert!(status.success());
        }),
        Work::ServeFiles { dir, addr, count } => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .expect("read dir")
                .map(|e| e.expect("entry").path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "no files in {}", dir.display());
            let mut out = TcpStream::connect(addr).expect("connect");
            let mut buf = vec![0u8; 16 << 10];
            let started = Instant::now();
            for i in 0..count as usize {
                let mut f = std::fs::File::open(&files[i % files.len()]).expect("open");
                loop {
                    let n = f.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).expect("send");
                }
            }
            report(count, started);
        }
        Work::LoopTcp { addr, count } => {
            let payload = [b'b'; 64];
            timed(count, || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(&payload).expect("send");
            });
        }
    }
}
