//! Kernel capture against the real kernel: each test runs a known workload in its own cgroup v2
//! directory and asserts the exact records the probe produced for that cgroup. Needs root.

mod support;

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::{SocketAddr, TcpListener, UdpSocket},
    os::unix::fs::MetadataExt as _,
    process::Stdio,
};

use nri_sysflow::capture::CaptureMode;
use nri_sysflow::probe::{
    DETACH_GRACE, HookSet, ProbeConfig, Record,
    records::{
        CloneSyscall, CloseReason, CountersReason, DupSyscall, OpenSyscall, PathOp, SetIdSyscall,
        SockOp,
    },
};
use support::Session;
use sysflow_common::capture;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;

/// The close of `fd` by `pid` that follows `after_ns` (the dynamic loader opens and closes
/// low fd numbers before main, so the first close of a number is not always ours).
fn close_after(
    records: &[Record],
    pid: u32,
    fd: i32,
    after_ns: u64,
) -> Vec<&nri_sysflow::probe::records::CloseEvent> {
    of(records, |r| match r {
        Record::Close(c) if c.common.tgid == pid && c.fd == fd && c.common.ts_ns > after_ns => {
            Some(c)
        }
        _ => None,
    })
    .into_iter()
    .take(1)
    .collect()
}

fn of<'a, T>(records: &'a [Record], pick: impl Fn(&'a Record) -> Option<&'a T>) -> Vec<&'a T> {
    records.iter().filter_map(pick).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_filename_args_and_failures() {
    let mut s = Session::start("exec", capture::ALL);
    let (pid, status) = s.run(s.cgroup.command("/bin/true").args(["alpha", "beta gamma"]));
    assert!(status.success());
    let missing = s.cgroup.command("/nonexistent/helper").arg("x").spawn();
    assert!(missing.is_err());
    let records = s.collect().await;

    let execs = of(&records, |r| match r {
        Record::Exec(e) => Some(e),
        _ => None,
    });
    let ok: Vec<_> = execs.iter().filter(|e| e.common.ret == 0).collect();
    assert_eq!(ok.len(), 1, "{execs:#?}");
    assert_eq!(ok[0].filename, "/bin/true");
    assert_eq!(ok[0].args, ["/bin/true", "alpha", "beta gamma"]);
    assert_eq!(ok[0].common.tgid, pid);
    assert!(!ok[0].args_truncated && !ok[0].filename_truncated);
    assert_eq!((ok[0].uid, ok[0].gid), (0, 0));

    let failed: Vec<_> = execs.iter().filter(|e| e.common.ret < 0).collect();
    assert_eq!(failed.len(), 1, "{execs:#?}");
    assert_eq!(failed[0].common.ret, -(libc::ENOENT as i64));
    assert_eq!(failed[0].filename, "/nonexistent/helper");
    assert_eq!(failed[0].args, ["/nonexistent/helper", "x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_seven_is_reported_for_the_whole_group() {
    let mut s = Session::start("exit", capture::PROCESS);
    let (pid, status) = s.run(&mut s.cgroup.workload(&["exit", "7"]));
    assert_eq!(status.code(), Some(7));
    let records = s.collect().await;
    let exits = of(&records, |r| match r {
        Record::Exit(e) if e.common.tgid == pid => Some(e),
        _ => None,
    });
    assert_eq!(exits.len(), 1, "{exits:#?}");
    assert_eq!(exits[0].exit_code, Some(7));
    assert_eq!(exits[0].signal, None);
    assert!(exits[0].group_dead);
    // Process-only capture: no file or network records.
    assert!(records.iter().all(|r| matches!(
        r,
        Record::Exec(_) | Record::Exit(_) | Record::Clone(_) | Record::SetId(_)
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writes_of_100_bytes_close_with_one_300_byte_counter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    let mut s = Session::start("write", capture::ALL);
    let (pid, status) = s.run(&mut s.cgroup.workload(&["write-file", path.to_str().unwrap()]));
    assert!(status.success());
    let ino = std::fs::metadata(&path).unwrap().ino();
    let records = s.collect().await;

    let opens = of(&records, |r| match r {
        Record::Open(o) if o.path == path.to_str().unwrap() => Some(o),
        _ => None,
    });
    assert_eq!(opens.len(), 1, "{opens:#?}");
    let open = opens[0];
    assert_eq!(open.common.tgid, pid);
    assert_eq!(
        open.flags as i32,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC
    );
    assert_eq!(open.mode, 0o640);
    assert_eq!(open.syscall, OpenSyscall::Openat);
    assert_eq!(open.dirfd, libc::AT_FDCWD);
    assert_eq!(open.file.ino, ino);
    let fd = open.common.ret as i32;
    assert!(fd >= 0);

    let closes = close_after(&records, pid, fd, open.common.ts_ns);
    assert_eq!(closes.len(), 1, "{records:#?}");
    assert_eq!(closes[0].reason, CloseReason::Close);
    let counters = closes[0].counters.as_ref().expect("counters");
    assert_eq!((counters.write_bytes, counters.write_ops), (300, 3));
    assert_eq!((counters.read_bytes, counters.read_ops), (0, 0));
    assert_eq!(counters.file.ino, ino);
    assert_eq!(counters.file.file_type(), libc::S_IFREG as u16);
    assert!(counters.first_ns <= counters.last_ns && counters.first_ns >= open.common.ts_ns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pread_on_a_dup_is_counted_on_the_duplicate_of_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.bin");
    std::fs::write(&path, vec![b'z'; 200]).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let mut s = Session::start("dup", capture::ALL);
    let (pid, status) = s.run(&mut s.cgroup.workload(&["pread-dup", path.to_str().unwrap()]));
    assert!(status.success());
    let records = s.collect().await;

    let open = of(&records, |r| match r {
        Record::Open(o) if o.path == path.to_str().unwrap() => Some(o),
        _ => None,
    })[0];
    let fd = open.common.ret as i32;
    let dups = of(&records, |r| match r {
        Record::Dup(d) if d.common.tgid == pid => Some(d),
        _ => None,
    });
    assert_eq!(dups.len(), 1);
    assert_eq!(
        (dups[0].syscall.clone(), dups[0].old_fd),
        (DupSyscall::Dup, fd)
    );
    let dup_fd = dups[0].common.ret as i32;
    assert_ne!(dup_fd, fd);

    let close_of = |n: i32| close_after(&records, pid, n, open.common.ts_ns);
    let dup_close = close_of(dup_fd);
    assert_eq!(dup_close.len(), 1);
    let counters = dup_close[0]
        .counters
        .as_ref()
        .expect("counters on the duplicate");
    assert_eq!((counters.read_bytes, counters.read_ops), (100, 2));
    assert_eq!(
        (counters.file.ino, counters.file.dev),
        (meta.ino(), meta.dev())
    );
    let orig_close = close_of(fd);
    assert_eq!(orig_close.len(), 1);
    assert_eq!(
        orig_close[0].counters, None,
        "nothing was read through the original fd"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_path_operations_carry_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, b"a").unwrap();
    std::fs::write(dir.path().join("f"), b"f").unwrap();
    let mut s = Session::start("paths", capture::FILE);
    let (_, status) =
        s.run(
            &mut s
                .cgroup
                .workload(&["rename", a.to_str().unwrap(), b.to_str().unwrap()]),
        );
    assert!(status.success());
    let (_, status) = s.run(
        &mut s
            .cgroup
            .workload(&["path-ops", dir.path().to_str().unwrap()]),
    );
    assert!(status.success());
    let records = s.collect().await;
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let ops: Vec<(PathOp, String, String, i64)> = of(&records, |r| match r {
        Record::PathOp(p) if p.path.starts_with(dir.path().to_str().unwrap()) => Some(p),
        _ => None,
    })
    .into_iter()
    .map(|p| (p.op.clone(), p.path.clone(), p.path2.clone(), p.common.ret))
    .collect();
    assert_eq!(
        ops,
        vec![
            (PathOp::Rename, d("a"), d("b"), 0),
            (PathOp::Mkdir, d("sub"), String::new(), 0),
            (PathOp::Symlink, d("sub"), d("lnk"), 0),
            (PathOp::Link, d("f"), d("f2"), 0),
            (PathOp::Chmod, d("f"), String::new(), 0),
            (PathOp::Chown, d("f"), String::new(), 0),
            (PathOp::Unlink, d("lnk"), String::new(), 0),
            (PathOp::Unlink, d("f2"), String::new(), 0),
            (PathOp::Rmdir, d("sub"), String::new(), 0),
            (
                PathOp::Chdir,
                dir.path().to_str().unwrap().to_owned(),
                String::new(),
                0
            ),
        ]
    );
    let chown = of(&records, |r| match r {
        Record::PathOp(p) if p.op == PathOp::Chown => Some(p),
        _ => None,
    })[0];
    assert_eq!((chown.uid, chown.gid), (Some(1), Some(1)));
    let mkdir = of(&records, |r| match r {
        Record::PathOp(p) if p.op == PathOp::Mkdir => Some(p),
        _ => None,
    })[0];
    assert_eq!(mkdir.mode_or_flags, 0o750);
}

/// A loopback TCP server on `bind` that reads `expect` bytes and answers `reply` bytes.
fn tcp_server(
    bind: &str,
    expect: usize,
    reply: usize,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; expect];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&vec![b's'; reply]).unwrap();
    });
    (addr, handle)
}

async fn tcp_exchange(bind: &str, family: u16) {
    let (server, handle) = tcp_server(bind, 1000, 1000);
    let mut s = Session::start(&format!("tcp{family}"), capture::ALL);
    let (pid, status) = s.run(&mut s.cgroup.workload(&[
        "tcp-client",
        &server.to_string(),
        "--send",
        "1000",
        "--recv",
        "1000",
    ]));
    assert!(status.success());
    handle.join().unwrap();
    let records = s.collect().await;

    let connects = of(&records, |r| match r {
        Record::SockOp(o) if o.op == SockOp::Connect && o.common.tgid == pid => Some(o),
        _ => None,
    });
    assert_eq!(connects.len(), 1, "{connects:#?}");
    let sock = connects[0].sock.as_ref().expect("socket details");
    assert_eq!(connects[0].common.ret, 0);
    assert_eq!((sock.family, sock.protocol), (family, IPPROTO_TCP));
    assert_eq!(sock.remote, Some(server));
    let local = sock.local.expect("local endpoint");
    assert_eq!(local.ip(), server.ip());
    assert_ne!(local.port(), 0, "ephemeral port assigned by connect");

    let closes = close_after(&records, pid, connects[0].fd, connects[0].common.ts_ns);
    assert_eq!(closes.len(), 1);
    let counters = closes[0].counters.as_ref().expect("counters");
    assert_eq!((counters.write_bytes, counters.read_bytes), (1000, 1000));
    assert!(counters.write_ops >= 1 && counters.read_ops >= 1);
    let sock = counters.sock.as_ref().expect("socket on counters");
    assert_eq!((sock.local, sock.remote), (Some(local), Some(server)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv4_connect_has_both_endpoints_and_exact_bytes() {
    tcp_exchange("127.0.0.1:0", AF_INET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv6_connect_has_both_endpoints_and_exact_bytes() {
    tcp_exchange("[::1]:0", AF_INET6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_exchange_counts_datagrams_against_the_peer() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(n, 300);
        server.send_to(&[b'r'; 200], from).unwrap();
    });
    let mut s = Session::start("udp", capture::ALL);
    let (pid, status) =
        s.run(
            &mut s
                .cgroup
                .workload(&["udp-client", &server_addr.to_string(), "--send", "300"]),
        );
    assert!(status.success());
    handle.join().unwrap();
    let records = s.collect().await;

    let binds = of(&records, |r| match r {
        Record::SockOp(o) if o.op == SockOp::Bind && o.common.tgid == pid => Some(o),
        _ => None,
    });
    assert_eq!(binds.len(), 1);
    let bound = binds[0].sock.as_ref().unwrap().local.unwrap();
    let closes = close_after(&records, pid, binds[0].fd, binds[0].common.ts_ns);
    assert_eq!(closes.len(), 1, "{closes:#?}");
    let counters = closes[0].counters.as_ref().unwrap();
    assert_eq!((counters.write_bytes, counters.write_ops), (300, 1));
    assert_eq!((counters.read_bytes, counters.read_ops), (200, 1));
    let sock = counters.sock.as_ref().unwrap();
    assert_eq!((sock.family, sock.protocol), (AF_INET, IPPROTO_UDP));
    assert_eq!(sock.remote, Some(server_addr));
    assert_eq!(sock.local, Some(bound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_family_reports_the_new_ids() {
    let mut s = Session::start("setid", capture::PROCESS);
    let (pid, status) = s.run(&mut s.cgroup.workload(&["set-ids", "65534", "65533"]));
    assert!(status.success());
    let records = s.collect().await;
    let ids: Vec<_> = of(&records, |r| match r {
        Record::SetId(e) if e.common.tgid == pid => Some(e),
        _ => None,
    })
    .into_iter()
    .map(|e| (e.syscall.clone(), e.ids, e.common.ret))
    .collect();
    assert_eq!(
        ids,
        vec![
            (SetIdSyscall::Setgid, [Some(65533), None, None], 0),
            (
                SetIdSyscall::Setresuid,
                [Some(65534), Some(65534), Some(65534)],
                0
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_and_thread_are_told_apart_on_both_sides() {
    let mut s = Session::start("fork", capture::PROCESS);
    let (pid, status) = s.run(&mut s.cgroup.workload(&["fork-thread"]));
    assert!(status.success());
    let records = s.collect().await;
    let clones = of(&records, |r| match r {
        Record::Clone(c) => Some(c),
        _ => None,
    });
    let parent_side: Vec<_> = clones
        .iter()
        .filter(|c| !c.is_child && c.common.tgid == pid)
        .collect();
    assert_eq!(parent_side.len(), 2, "{clones:#?}");
    let thread = parent_side
        .iter()
        .find(|c| c.is_thread)
        .expect("thread clone");
    let fork = parent_side
        .iter()
        .find(|c| !c.is_thread)
        .expect("process clone");
    assert_eq!(thread.syscall, CloneSyscall::Clone3);
    assert_ne!(
        fork.clone_flags & libc::CLONE_THREAD as u64,
        libc::CLONE_THREAD as u64
    );
    let child_pid = fork.child_tid;
    assert_eq!(fork.common.ret, child_pid as i64);

    // The new tasks report themselves too.
    let child_side = clones
        .iter()
        .find(|c| c.is_child && c.common.tgid == child_pid)
        .expect("child side of the fork");
    assert_eq!(child_side.parent_tgid, pid);
    assert!(!child_side.is_thread);
    assert_eq!(child_side.common.ret, 0);
    let thread_side = clones
        .iter()
        .find(|c| c.is_child && c.common.tid == thread.child_tid)
        .expect("child side of the thread");
    assert_eq!(thread_side.common.tgid, pid);
    assert!(thread_side.is_thread);

    let child_exit = of(&records, |r| match r {
        Record::Exit(e) if e.common.tgid == child_pid => Some(e),
        _ => None,
    });
    assert_eq!(child_exit.len(), 1);
    assert_eq!(child_exit[0].exit_code, Some(5));
    let thread_exit = of(&records, |r| match r {
        Record::Exit(e) if e.common.tid == thread.child_tid => Some(e),
        _ => None,
    });
    assert_eq!(thread_exit.len(), 1);
    assert!(
        !thread_exit[0].group_dead,
        "a thread exit does not end the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_set_to_off_yields_no_records_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("off.bin");
    let (server, handle) = tcp_server("127.0.0.1:0", 10, 10);
    let mut s = Session::start("off", capture::OFF);
    // Everything else on the host is captured, to show the probe is live.
    s.probe
        .set_default_mode(CaptureMode::from_bits(capture::ALL))
        .unwrap();
    let (_, status) = s.run(&mut s.cgroup.workload(&["write-file", path.to_str().unwrap()]));
    assert!(status.success());
    let (_, status) = s.run(&mut s.cgroup.workload(&[
        "tcp-client",
        &server.to_string(),
        "--send",
        "10",
        "--recv",
        "10",
    ]));
    assert!(status.success());
    handle.join().unwrap();
    let (_, status) = s.run(s.cgroup.command("/bin/true").arg("off"));
    assert!(status.success());
    s.probe
        .set_default_mode(CaptureMode::from_bits(capture::OFF))
        .unwrap();
    let mine = s.collect().await;
    assert_eq!(mine, vec![], "records from a cgroup set to off");
    assert!(
        s.records
            .stats
            .records
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the rest of the host was captured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_ring_counts_drops_instead_of_hanging() {
    let cgroup = support::TestCgroup::new("drops");
    let config = ProbeConfig {
        ring_bytes: 4096,
        channel_capacity: 1024,
        ..support::probe_config()
    };
    let mut probe = support::load_probe(&config);
    probe
        .set_cgroup_mode(cgroup.id, CaptureMode::from_bits(capture::ALL))
        .unwrap();
    // Nobody reads the ring while the workload runs: it fills after a few dozen records.
    let status = cgroup
        .workload(&["loop-open", "/etc/hostname", "5000"])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the workload finished despite the full ring"
    );
    let stats = probe.kernel_stats().unwrap();
    // 5000 opens and 5000 closes (and the loader's own) were produced; each was either
    // written to the ring or counted as lost.
    assert!(stats.ring_full > 9_000, "{stats:?}");
    assert!(
        stats.records_emitted + stats.ring_full >= 10_000,
        "{stats:?}"
    );
    // Nobody consumed: the ring is (nearly) full, as its own positions say.
    let fill = probe.ring_fill();
    assert!(fill > 0.9 && fill <= 1.0, "ring fill {fill}");
    // What the ring holds is still delivered, intact.
    let losses = std::sync::Arc::new(nri_sysflow::internal_events::Losses::default());
    let mut records = probe.records(losses.clone()).unwrap();
    // The configured queue, in whole batches of the reader.
    assert_eq!(records.capacity(), 1024);
    let mut received = 0;
    while let Ok(Some(r)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), records.recv()).await
    {
        assert_eq!(r.common().cgroup_id, cgroup.id);
        received += 1;
    }
    assert_eq!(received, stats.records_emitted);
    assert_eq!(probe.ring_fill(), 0.0, "everything was consumed");
    assert_eq!(
        losses.count(nri_sysflow::internal_events::Loss::UndecodableKernelRecord),
        0
    );
}

/// The counters reported for (pid, fd) without a close, in order.
fn counters_of(records: &[Record], pid: u32, fd: i32) -> Vec<(CountersReason, u64, u64)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Counters(c) if c.common.tgid == pid && c.fd == fd => {
                Some((c.reason, c.counters.write_bytes, c.counters.write_ops))
            }
            _ => None,
        })
        .collect()
}

/// Starts `hold-file` in the session's cgroup: it writes 100 bytes and waits.
fn hold_file(s: &Session, path: &std::path::Path) -> (std::process::Child, u32, i32) {
    let mut child = s
        .cgroup
        .workload(&["hold-file", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let fd: i32 = line.trim().strip_prefix("ready ").unwrap().parse().unwrap();
    (child, pid, fd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_descriptors_flush_periodically_and_exit_reports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.bin");
    let mut s = Session::start("flush", capture::ALL);
    let (mut child, pid, fd) = hold_file(&s, &path);

    // A flush reports what came since the last report: the first 100 bytes.
    s.probe.flush(false).unwrap();
    let records = s.collect().await;
    assert_eq!(
        counters_of(&records, pid, fd),
        vec![(CountersReason::Flush, 100, 1)]
    );

    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    let records = s.collect().await;
    // The kernel closed the fd at exit without a close(2): the exit reports what came after
    // the flush, right before the exit record.
    assert_eq!(
        counters_of(&records, pid, fd),
        vec![(CountersReason::Exit, 200, 1)]
    );
    let report = records
        .iter()
        .position(|r| matches!(r, Record::Counters(c) if c.common.tgid == pid && c.fd == fd))
        .unwrap();
    let exit = records
        .iter()
        .position(|r| matches!(r, Record::Exit(e) if e.common.tgid == pid && e.group_dead))
        .expect("exit record");
    assert!(report < exit, "counters before the exit record");
    // Nothing is left to report.
    s.probe.flush(false).unwrap();
    assert_eq!(counters_of(&s.collect().await, pid, fd), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_range_reports_the_counters_of_what_it_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cr.bin");
    let mut s = Session::start("close-range", capture::ALL);
    let out = s
        .cgroup
        .workload(&["close-range", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let fd: i32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let records = s.collect().await;
    let ranges = of(&records, |r| match r {
        Record::CloseRange(c) => Some(c),
        _ => None,
    });
    assert_eq!(ranges.len(), 1, "{ranges:#?}");
    assert_eq!(
        (ranges[0].first, ranges[0].last, ranges[0].flags),
        (fd as u32, u32::MAX, 0)
    );
    assert_eq!(ranges[0].common.ret, 0);
    let pid = ranges[0].common.tgid;
    assert_eq!(
        counters_of(&records, pid, fd),
        vec![(CountersReason::CloseRange, 100, 1)]
    );
    let report = records
        .iter()
        .position(|r| matches!(r, Record::Counters(c) if c.common.tgid == pid))
        .unwrap();
    let range = records
        .iter()
        .position(|r| matches!(r, Record::CloseRange(_)))
        .unwrap();
    assert!(report < range, "counters before the close_range record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_change_reaches_a_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.bin");
    let mut s = Session::start("mode-change", capture::OFF);
    // Something else is captured, so the syscall hooks are attached while the cgroup is off.
    s.probe
        .set_default_mode(CaptureMode::from_bits(capture::ALL))
        .unwrap();
    let (mut child, pid, fd) = hold_file(&s, &path);
    s.probe
        .set_default_mode(CaptureMode::from_bits(capture::OFF))
        .unwrap();
    // The process's cached mode (off) is looked up again after the change.
    s.probe
        .set_cgroup_mode(s.cgroup.id, CaptureMode::from_bits(capture::ALL))
        .unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    let records = s.collect().await;
    assert_eq!(
        counters_of(&records, pid, fd),
        vec![(CountersReason::Exit, 200, 1)],
        "only the write after the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_moved_into_a_captured_cgroup_is_captured_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    let mut s = Session::start("moved-to", capture::ALL);
    let off = support::TestCgroup::new("moved-from");
    s.probe
        .set_cgroup_mode(off.id, CaptureMode::from_bits(capture::OFF))
        .unwrap();
    let status = off
        .workload(&[
            "move-cgroup",
            s.cgroup.path.join("cgroup.procs").to_str().unwrap(),
            before.to_str().unwrap(),
            after.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let records = s.collect().await;
    let opened: Vec<&str> = of(&records, |r| match r {
        Record::Open(o) if o.path.starts_with(dir.path().to_str().unwrap()) => Some(o),
        _ => None,
    })
    .into_iter()
    .map(|o| o.path.as_str())
    .collect();
    assert_eq!(opened, vec![after.to_str().unwrap()]);
    let written: u64 = of(&records, |r| match r {
        Record::Close(c) if c.counters.is_some() => c.counters.as_ref(),
        _ => None,
    })
    .into_iter()
    .filter(|c| c.file.ino == std::fs::metadata(&after).unwrap().ino())
    .map(|c| c.write_bytes)
    .sum();
    assert_eq!(written, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_captured_nothing_attached() {
    let mut s = Session::start("idle", capture::PROCESS_LIFECYCLE);
    if support::hook_set() == HookSet::Tracepoint {
        // The fallback keeps its ~130 tracepoints attached: re-attaching takes seconds.
        assert!(s.probe.syscall_hooks_attached());
        return;
    }
    let lifecycle_only = s.probe.attachments();
    // Only the sched hooks: no cgroup wants a syscall-level kind.
    assert!(!s.probe.syscall_hooks_attached());
    assert_eq!(lifecycle_only, 4);
    // Process lifecycle still comes through without them.
    let (pid, status) = s.run(s.cgroup.command("/bin/true").arg("idle"));
    assert!(status.success());
    let records = s.collect().await;
    let execs = of(&records, |r| match r {
        Record::Exec(e) if e.common.tgid == pid => Some(e),
        _ => None,
    });
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].args, ["/bin/true", "idle"]);
    assert!(
        records
            .iter()
            .any(|r| matches!(r, Record::Exit(e) if e.common.tgid == pid)),
        "exit record"
    );

    // A cgroup that wants files attaches the syscall hooks before the call returns.
    let files = support::TestCgroup::new("idle-files");
    let started = std::time::Instant::now();
    s.probe
        .set_cgroup_mode(files.id, CaptureMode::from_bits(capture::FILE))
        .unwrap();
    println!(
        "syscall hooks attached by the mode change in {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert!(s.probe.syscall_hooks_attached());
    assert!(s.probe.attachments() > lifecycle_only);
    // Switched off again: detached after the grace period.
    s.probe
        .set_cgroup_mode(files.id, CaptureMode::from_bits(capture::OFF))
        .unwrap();
    assert!(
        s.probe.syscall_hooks_attached(),
        "kept for the grace period"
    );
    tokio::time::sleep(DETACH_GRACE + std::time::Duration::from_millis(600)).await;
    assert!(!s.probe.syscall_hooks_attached());
    assert_eq!(s.probe.attachments(), lifecycle_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_probe_detaches_every_program() {
    let ids = {
        let s = Session::start("detach", capture::ALL);
        // 4 sched hooks, close and the two exec enters, plus the dispatcher, or an enter and an
        // exit program per followed syscall.
        let attachments = s.probe.attachments();
        match support::hook_set() {
            HookSet::Dispatcher => assert_eq!(attachments, 8),
            HookSet::Tracepoint => assert!(attachments > 100, "{attachments}"),
        }
        s.probe.program_ids()
    };
    assert!(ids.len() > 50, "{ids:?}");
    // Links and program fds are closed; the kernel frees a program after an RCU grace period.
    let mut leftover = ids.clone();
    for _ in 0..50 {
        let loaded: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .collect();
        leftover = ids
            .iter()
            .copied()
            .filter(|id| loaded.contains(id))
            .collect();
        if leftover.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(leftover, Vec::<u32>::new());
}
