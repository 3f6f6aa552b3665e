//! `nri-sysflow run` end to end, as a user runs it: the built binary captures the whole host
//! while known workloads run in their own cgroup; it is stopped with SIGINT and its files are
//! checked with our reader and with the reference `sysprint`. Needs root.

#[path = "../support/mod.rs"]
mod support;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value as Json;
use support::{TestCgroup, WORKLOAD};
use sysflow::{Record, SysFlowReader, encoding::op, flat::Flattener, reader::ReadItem};

use support::agent::{AGENT, Agent};

fn read_records(file: &Path) -> Vec<Record> {
    SysFlowReader::open(file)
        .unwrap()
        .map(|i| match i.unwrap() {
            ReadItem::Record(r) => r,
            ReadItem::Unknown { name } => panic!("{name}"),
        })
        .collect()
}

/// Every event and flow of `files`, joined and rendered as sysprint does.
fn ours_json(files: &[PathBuf]) -> Vec<Json> {
    files
        .iter()
        .flat_map(|f| {
            let mut flat = Flattener::default();
            read_records(f)
                .into_iter()
                .filter_map(move |r| flat.push(r))
                .map(|r| r.to_sysprint_json())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn sysprint_json(files: &[PathBuf]) -> Vec<Json> {
    let venv =
        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv");
    let out = Command::new(venv.join("bin/sysprint"))
        .args(["-o", "json"])
        .args(files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Error"), "{stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_files_stand_alone(files: &[PathBuf]) {
    for f in files {
        let records = read_records(f);
        assert!(matches!(records.first(), Some(Record::Header(_))));
        assert_eq!(
            sysflow::check::dangling_references(&records),
            Vec::<String>::new(),
            "{}",
            f.display()
        );
    }
}

/// Records of `pid` and of its direct children.
fn of_tree(records: &[Json], pid: u32) -> Vec<&Json> {
    records
        .iter()
        .filter(|r| r["proc"]["pid"] == pid || r["pproc"]["pid"] == pid)
        .collect()
}

#[test]
fn a_known_workload_yields_exactly_its_records() {
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::new("agent-e2e");
    let work = tempfile::tempdir().unwrap();
    let d = work.path().to_str().unwrap().to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1000];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&[b's'; 1000]).unwrap();
    });
    let script = format!(
        "/bin/true alpha beta\n\
         {WORKLOAD} write-file {d}/data.bin --count 4 --size 1024\n\
         {WORKLOAD} rename {d}/data.bin {d}/data.renamed\n\
         mkdir {d}/sub\n\
         rmdir {d}/sub\n\
         {WORKLOAD} tcp-client 127.0.0.1:{port} --send 1000 --recv 1000\n\
         {WORKLOAD} close-range {d}/ranged.bin\n\
         {WORKLOAD} pipe-exec /bin/sleep 0\n\
         exit 3\n"
    );
    let out = cgroup
        .command("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let pipe = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pipe ").map(|ino| format!("pipe:[{ino}]")))
        .expect("the pipe's inode");
    server.join().unwrap();
    let stopped = agent.stop();
    assert_eq!(stopped.ring_drops, 0);
    let files = stopped.files;
    assert_files_stand_alone(&files);
    let ours = ours_json(&files);
    let theirs = sysprint_json(&files);
    assert_eq!(ours, theirs, "our reader and sysprint disagree");

    // Find the shell: the process that exec'd /bin/true's parent, whose command line is ours.
    let sh = ours
        .iter()
        .find(|r| r["type"] == "PE" && r["proc"]["exe"] == "/bin/true" && r["opflags"] == "EXEC")
        .expect("exec of /bin/true")["pproc"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let tree = of_tree(&ours, sh);
    let count = |pred: &dyn Fn(&Json) -> bool| tree.iter().filter(|r| pred(r)).count();

    // exec of /bin/true with its arguments, cloned from the shell.
    let true_exec: Vec<_> = tree
        .iter()
        .filter(|r| r["proc"]["exe"] == "/bin/true" && r["opflags"] == "EXEC")
        .collect();
    assert_eq!(true_exec.len(), 1);
    assert_eq!(
        (
            true_exec[0]["proc"]["args"].as_str(),
            true_exec[0]["ret"].as_i64()
        ),
        (Some("alpha beta"), Some(0))
    );
    let true_pid = true_exec[0]["proc"]["pid"].as_u64().unwrap();
    assert_eq!(
        count(&|r| r["opflags"] == "CLONE" && r["proc"]["pid"] == sh && r["ret"] == true_pid),
        1
    );
    let child_clone: Vec<_> = tree
        .iter()
        .filter(|r| r["opflags"] == "CLONE" && r["proc"]["pid"] == true_pid)
        .collect();
    assert_eq!(child_clone.len(), 1);
    assert_eq!(child_clone[0]["ret"], 0);
    assert_eq!(child_clone[0]["pproc"]["pid"], sh);

    // 4096 bytes in 4 writes to the new file: one flow, opened, written, closed.
    let data = format!("{d}/data.bin");
    let flows: Vec<_> = tree
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == data.as_str())
        .collect();
    assert_eq!(flows.len(), 1, "{flows:#?}");
    let f = flows[0];
    assert_eq!(
        f["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND | op::CLOSE) as i64)
    );
    assert_eq!(
        (f["flow"]["wbytes"].as_i64(), f["flow"]["wops"].as_i64()),
        (Some(4096), Some(4))
    );
    assert_eq!(
        (f["flow"]["rbytes"].as_i64(), f["flow"]["rops"].as_i64()),
        (Some(0), Some(0))
    );
    // O_WRONLY|O_CREAT|O_TRUNC in Falco's numbering.
    assert_eq!(f["file"]["openflags"].as_i64(), Some(2 | 4 | 256));

    // rename, mkdir, rmdir.
    let fe: Vec<(String, String, String, i64)> = tree
        .iter()
        .filter(|r| r["type"] == "FE" && r["file"]["path"].as_str().unwrap_or("").starts_with(&d))
        .map(|r| {
            (
                r["opflags"].as_str().unwrap().to_owned(),
                r["file"]["path"].as_str().unwrap().to_owned(),
                r["file"]["newpath"].as_str().unwrap().to_owned(),
                r["ret"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fe,
        vec![
            (
                "RENAME".into(),
                data.clone(),
                format!("{d}/data.renamed"),
                0
            ),
            ("MKDIR".into(), format!("{d}/sub"), String::new(), 0),
            ("RMDIR".into(), format!("{d}/sub"), String::new(), 0),
        ]
    );

    // One TCP connection to the server, 1000 bytes each way.
    let nf: Vec<_> = tree.iter().filter(|r| r["type"] == "NF").collect();
    assert_eq!(nf.len(), 1, "{nf:#?}");
    let n = nf[0];
    assert_eq!(
        (n["net"]["sip"].as_str(), n["net"]["dip"].as_str()),
        (Some("127.0.0.1"), Some("127.0.0.1"))
    );
    assert_eq!(
        (n["net"]["dport"].as_u64(), n["net"]["proto"].as_i64()),
        (Some(port as u64), Some(6))
    );
    assert!(n["net"]["sport"].as_u64().unwrap() > 0);
    assert_eq!(
        (n["flow"]["rbytes"].as_i64(), n["flow"]["wbytes"].as_i64()),
        (Some(1000), Some(1000))
    );
    assert_eq!(
        n["opflags_bitmap"].as_i64(),
        Some((op::CONNECT | op::READ_RECV | op::WRITE_SEND | op::CLOSE) as i64)
    );

    // A descriptor closed by close_range(2) ends its flow as closed, with its bytes.
    let ranged: Vec<_> = tree
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == format!("{d}/ranged.bin").as_str())
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:#?}");
    assert_eq!(
        ranged[0]["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND | op::CLOSE) as i64)
    );
    assert_eq!(ranged[0]["flow"]["wbytes"], 100);

    // A close-on-exec pipe the agent learned of from its I/O (it saw no open): both ends'
    // flows end as closed at the exec, as the kernel closed them, not truncated when the
    // program the process became exits.
    let pipe_flows: Vec<(i64, i64, i64, String)> = tree
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == pipe.as_str())
        .map(|r| {
            (
                r["opflags_bitmap"].as_i64().unwrap(),
                r["flow"]["wbytes"].as_i64().unwrap(),
                r["flow"]["rbytes"].as_i64().unwrap(),
                r["file"]["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pipe_flows,
        [
            ((op::READ_RECV | op::CLOSE) as i64, 0, 10, "p".to_owned()),
            ((op::WRITE_SEND | op::CLOSE) as i64, 10, 0, "p".to_owned()),
        ],
        "read end (fd 3) first, then the write end"
    );
    let pipe_pid = tree
        .iter()
        .find(|r| r["file"]["path"] == pipe.as_str())
        .unwrap()["proc"]["pid"]
        .clone();
    let exec_ts = tree
        .iter()
        .find(|r| {
            r["opflags"] == "EXEC"
                && r["proc"]["pid"] == pipe_pid
                && r["proc"]["exe"] == "/bin/sleep"
        })
        .expect("the exec of /bin/sleep")["ts_uts"]
        .as_i64()
        .unwrap();
    for f in tree.iter().filter(|r| r["file"]["path"] == pipe.as_str()) {
        assert!(
            f["endts_uts"].as_i64().unwrap() <= exec_ts,
            "exec at {exec_ts}: {f:#?}"
        );
    }

    // The shell exits with 3.
    let exits: Vec<_> = tree
        .iter()
        .filter(|r| r["opflags"] == "EXIT" && r["proc"]["pid"] == sh)
        .collect();
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0]["ret"], 3);
}

fn start_error(args: &[&str]) -> String {
    let out = Command::new(AGENT)
        .arg("run")
        .args(args)
        .env("NRI_SYSFLOW_LOG_FORMAT", "text")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

mod detection;
mod flows;
mod run_control;
